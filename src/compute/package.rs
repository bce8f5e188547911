//! Packaging (`raptiformica package`, issue 9): bake a provisioned machine image through a
//! compute back-end, so that later spawns skip the upload and the provisioning.
//!
//! The core stays generic. It starts one instance of the compute type (from the plain base,
//! never from an older package), slaves it without meshing it (upload and provision only),
//! runs the type's `package` command in the instance's directory, and cleans the instance up
//! whatever happened, also on Ctrl-C. The command is the back-end's business: the docker one
//! (`compute/docker/package.sh`) strips the node's identity and saves the image, and
//! `start_instance.sh` uses it from then on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use serde::Serialize;

use crate::compute::{self, ComputeType, Instance};
use crate::config::Config;
use crate::config::context::Context;
use crate::provision::slave::{self, SlaveOptions};
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

/// Who the progress lines are about.
const WHO: &str = "package";
/// How long the packaging machine may take to answer SSH.
const SSH_PATIENCE: Duration = Duration::from_secs(60);

/// What `package` made.
#[derive(Debug, Serialize)]
pub struct Packaged {
    pub compute_type: String,
    pub server_type: String,
    /// What the `package` command printed last on stdout (for docker, the image's name).
    pub image: String,
}

/// Starts, provisions and packages one machine of `ty`, then removes it. The caller has run
/// [`slave::prepare`] and set `ctx.public_key_file` to `identity`'s.
pub async fn package(
    ctx: &Context,
    config: &Arc<Config>,
    ty: &ComputeType,
    identity: &Identity,
    progress: &Progress,
) -> anyhow::Result<Packaged> {
    // Before anything starts: a type without the command cannot be packaged.
    ty.command("package")?;
    // A package is made from the plain base, never stacked on an older package.
    let ctx = &Context {
        no_package: true,
        with_engine: false,
        ..ctx.clone()
    };
    let instance = crate::compute::spawner::start(ctx, ty, progress, WHO).await?;

    let work = provision_and_package(ctx, config, ty, identity, progress, &instance);
    let mut interrupted = false;
    let outcome = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => {
            interrupted = true;
            Err(anyhow!("interrupted"))
        }
    };
    // Whatever happened, the packaging machine goes: nothing is left running.
    let step = progress.step(WHO, "clean up the packaging machine");
    let cleaned = {
        let (ctx, ty, instance) = (ctx.clone(), ty.clone(), instance.clone());
        tokio::task::spawn_blocking(move || compute::clean_up(&ctx, &ty, &instance)).await?
    };
    match (outcome, cleaned) {
        (Ok(image), Ok(())) => {
            step.done("");
            Ok(Packaged {
                compute_type: ty.compute.clone(),
                server_type: ty.server.clone(),
                image,
            })
        }
        (Err(_), Ok(())) if interrupted => {
            step.done("");
            eprintln!("packaging `{}` interrupted; its machine was removed", ty.name());
            Err(crate::sys::exit::ExitWith(130).into())
        }
        (Err(e), Ok(())) => {
            step.done("");
            Err(e.context(format!("packaging `{}` failed (its machine was removed)", ty.name())))
        }
        (outcome, Err(c)) => {
            let c = c.context(format!(
                "cannot remove the packaging machine `{}`; remove it with `raptiformica destroy`",
                instance.dir.display()
            ));
            if let Err(e) = outcome {
                eprintln!("error: packaging `{}` failed: {e:#}", ty.name());
            }
            Err(c)
        }
    }
}

/// Upload and provision (no mesh), then the `package` command; returns what it printed.
async fn provision_and_package(
    ctx: &Context,
    config: &Config,
    ty: &ComputeType,
    identity: &Identity,
    progress: &Progress,
    instance: &Instance,
) -> anyhow::Result<String> {
    let (host, port) = (instance.host.clone().unwrap_or_default(), instance.port.unwrap_or(22));
    // A brand-new machine: any older pin for its address belonged to another machine.
    match &instance.host_keys {
        Some(keys) => {
            identity.pin(&host, port, keys)?;
        }
        None => identity.forget(&host, port)?,
    }
    let opts = SlaveOptions {
        assimilate: false,
        ..SlaveOptions::fresh(&ty.server, SSH_PATIENCE)
    };
    slave::slave(ctx, config, identity, progress, &host, port, &opts).await?;

    let step = progress.step(
        WHO,
        &format!("strip the node's identity and save the image ({})", ty.name()),
    );
    let out = {
        let (ctx, ty, instance) = (ctx.clone(), ty.clone(), instance.clone());
        tokio::task::spawn_blocking(move || {
            compute::instance_shell(&ctx, &ty, &instance, "package")?
                .timeout(compute::PACKAGE_TIMEOUT)
                .run()
                .map_err(anyhow::Error::from)
        })
        .await??
    };
    let image = out.stdout.lines().last().unwrap_or_default().trim().to_string();
    if image.is_empty() {
        bail!(
            "`package` of `{}` succeeded but printed nothing on stdout (it should print what it made, e.g. the image's name)",
            ty.name()
        );
    }
    step.done(&image);
    Ok(image)
}
