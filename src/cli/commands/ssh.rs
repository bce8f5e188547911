//! `raptiformica ssh [MACHINE] [-- CMD...]`: a shell or a command on a machine.

use anyhow::{Context as _, bail};

use crate::cli::args::SshArgs;
use crate::compute::Instance;
use crate::config::context::Context;
use crate::mesh::neighbours::{self, Neighbour};
use crate::remote::ssh::{Identity, Login};
use crate::sys::process;

pub fn run(ctx: &Context, args: SshArgs) -> anyhow::Result<()> {
    let (host, port, node) = target(ctx, args.machine.as_deref())?;
    crate::config::known::check_host(&host).map_err(|e| anyhow::anyhow!("cannot reach that machine: {e}"))?;
    let identity = Identity::ensure(ctx)?;
    // A known node: the host key the cluster recorded for it (no trust on first use), and the
    // login it was slaved with (a sudo user runs the command through sudo).
    let login = match &node {
        Some(n) => {
            if let Some(key) = &n.ssh_host_key {
                identity.pin_recorded(&host, port, key)?;
            }
            Login::recorded(n.ssh_user.as_deref())
        }
        None => Login::default(),
    };
    let mut argv = identity.command_line(&login, &host, port);
    if args.info_only {
        println!("{}", shell_line(&argv)?);
        return Ok(());
    }
    if !args.command.is_empty() {
        argv.push("--".into());
        if login.sudo {
            argv.extend(["sudo".to_string(), "-n".into(), "-H".into()]);
        }
        argv.extend(args.command);
    }
    let status = process::run_interactive(&argv).context("cannot run `ssh`")?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(crate::sys::exit::ExitWith(code).into()),
        None => bail!("ssh was killed by a signal"),
    }
}

/// `argv` as one line that a shell reads back as exactly these words (each quoted where it
/// needs to be), safe to paste and to use as `$(raptiformica ssh --info-only) CMD`.
fn shell_line(argv: &[String]) -> anyhow::Result<String> {
    shlex::try_join(argv.iter().map(String::as_str)).context("a word of the ssh command line holds a NUL byte")
}

/// The machine to reach: an instance (by id prefix or host), a known node (by id prefix or
/// host), the first instance, or something that looks like a host; its host and port, and its
/// neighbour entry when it is a known node.
fn target(ctx: &Context, machine: Option<&str>) -> anyhow::Result<(String, u16, Option<Neighbour>)> {
    let instances: Vec<Instance> = Instance::list(&ctx.paths.machines_dir())
        .into_iter()
        .filter(|i| i.host.is_some())
        .collect();
    let Some(m) = machine else {
        return match instances.first() {
            Some(i) => Ok((i.host.clone().expect("filtered"), i.port.unwrap_or(22), None)),
            None => bail!("no machine to reach: this host started none (`raptiformica spawn`); name a host instead"),
        };
    };
    if let Some(i) = instances
        .iter()
        .find(|i| i.id.starts_with(m) || i.host.as_deref() == Some(m))
    {
        return Ok((i.host.clone().expect("filtered"), i.port.unwrap_or(22), None));
    }
    let nodes: Vec<Neighbour> = match ctx.config() {
        Ok(config) => neighbours::all(&config.mapping)
            .into_iter()
            .filter(|n| n.host.is_some())
            .collect(),
        Err(e) => {
            tracing::warn!("cannot read the known nodes: {e:#}");
            Vec::new()
        }
    };
    if let Some(n) = nodes
        .iter()
        .find(|n| n.id.starts_with(m) || n.host.as_deref() == Some(m))
    {
        return Ok((n.host.clone().expect("filtered"), n.ssh_port, Some(n.clone())));
    }
    if looks_like_host(m) {
        return Ok((m.to_string(), 22, None));
    }
    let known: Vec<String> = instances
        .iter()
        .map(|i| format!("  instance {} ({})", i.id, i.host.as_deref().unwrap_or_default()))
        .chain(nodes.iter().map(|n| {
            format!(
                "  node {} ({}:{})",
                n.id,
                n.host.as_deref().unwrap_or_default(),
                n.ssh_port
            )
        }))
        .collect();
    bail!(
        "no instance or known node matches `{m}`, and it is not a host name that resolves; {}",
        if known.is_empty() {
            "this machine knows no machines (`raptiformica spawn` or `slave` one)".to_string()
        } else {
            format!("known machines:\n{}", known.join("\n"))
        }
    )
}

/// An address or a name that resolves: it may be used as a host. Names without a dot or a
/// colon are looked up (`localhost`, a name from /etc/hosts).
fn looks_like_host(m: &str) -> bool {
    use std::net::ToSocketAddrs as _;
    m.contains(['.', ':']) || (m, 22).to_socket_addrs().is_ok_and(|mut a| a.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_info_line_reads_back_as_the_same_words() {
        let argv: Vec<String> = [
            "ssh",
            "-F",
            "/tmp/a dir/ssh_config",
            "-p",
            "22",
            "root@10.0.0.1",
            "it's",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let line = shell_line(&argv).unwrap();
        assert_eq!(shlex::split(&line).unwrap(), argv);
        assert!(
            line.starts_with("ssh -F ") && line.contains(" -p 22 root@10.0.0.1 "),
            "{line}"
        );
    }

    #[test]
    fn addresses_and_resolving_names_look_like_hosts() {
        for host in ["10.0.0.1", "example.org", "fe80::1", "localhost"] {
            assert!(looks_like_host(host), "{host}");
        }
        assert!(!looks_like_host("nosuch-raptiformica-machine"));
    }
}
