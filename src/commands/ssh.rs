//! `raptiformica ssh [MACHINE] [-- CMD...]`: a shell or a command on a machine.

use anyhow::{Context as _, bail};

use crate::cli::SshArgs;
use crate::compute::Instance;
use crate::context::Context;
use crate::process;
use crate::ssh::Identity;

pub fn run(ctx: &Context, args: SshArgs) -> anyhow::Result<()> {
    let (host, port) = target(ctx, args.machine.as_deref())?;
    let identity = Identity::ensure(ctx)?;
    let mut argv = identity.command_line(&host, port);
    if args.info_only {
        println!("{}", argv.join(" "));
        return Ok(());
    }
    if !args.command.is_empty() {
        argv.push("--".into());
        argv.extend(args.command);
    }
    let status = process::run_interactive(&argv).context("cannot run `ssh`")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(crate::ExitWith(code).into()),
        None => bail!("ssh was killed by a signal"),
    }
}

/// The machine to reach: an instance (by id prefix or host), the first instance, or a host.
fn target(ctx: &Context, machine: Option<&str>) -> anyhow::Result<(String, u16)> {
    let instances: Vec<Instance> = Instance::list(&ctx.paths.machines_dir())
        .into_iter()
        .filter(|i| i.host.is_some())
        .collect();
    let found = match machine {
        None => instances.first(),
        Some(m) => instances
            .iter()
            .find(|i| i.id.starts_with(m) || i.host.as_deref() == Some(m)),
    };
    match (found, machine) {
        (Some(i), _) => Ok((i.host.clone().expect("filtered"), i.port.unwrap_or(22))),
        (None, Some(host)) => Ok((host.to_string(), 22)),
        (None, None) => {
            bail!("no machine to reach: this host started none (`raptiformica spawn`); name a host instead")
        }
    }
}
