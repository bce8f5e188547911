//! `raptiformica destroy` and `raptiformica prune`: remove the instances this host started.

use anyhow::bail;

use crate::compute::{self, Instance};
use crate::context::Context;
use crate::mesh::neighbours;

/// Drops the neighbour entries of a removed instance from this machine's shared config, so
/// that nothing keeps dialing or asking a machine that is gone.
fn forget_neighbour(ctx: &Context, instance: &Instance) -> anyhow::Result<()> {
    let Some(host) = instance.host.as_deref() else {
        return Ok(());
    };
    let port = instance.port.unwrap_or(22);
    crate::config::edit::update(&ctx.paths, |mapping| {
        neighbours::remove_where(mapping, |n| n.host.as_deref() == Some(host) && n.ssh_port == port);
        Ok(())
    })
}

/// Removes every instance (`stale_only`: only those whose `detect_stale_instance` fails).
pub fn remove(ctx: &Context, stale_only: bool) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let instances = Instance::list(&ctx.paths.machines_dir());
    let mut failures = 0;
    let mut removed = 0;
    for instance in &instances {
        let ty = match compute::find(&config, &instance.compute, &instance.server) {
            Ok(ty) => ty,
            Err(e) => {
                failures += 1;
                eprintln!("cannot remove instance {}: {e:#}", instance.id);
                continue;
            }
        };
        if stale_only {
            match compute::is_stale(ctx, &ty, instance) {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    failures += 1;
                    eprintln!("cannot check instance {}: {e:#}", instance.id);
                    continue;
                }
            }
        }
        match compute::clean_up(ctx, &ty, instance) {
            Ok(()) => {
                removed += 1;
                eprintln!("removed instance {} ({})", instance.id, ty.name());
                if let Err(e) = forget_neighbour(ctx, instance) {
                    eprintln!(
                        "warning: instance {} is gone but still listed as a neighbour: {e:#}",
                        instance.id
                    );
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("cannot remove instance {}: {e:#}", instance.id);
            }
        }
    }
    if removed == 0 && failures == 0 {
        eprintln!("no {}instances to remove", if stale_only { "stale " } else { "" });
    }
    if failures > 0 {
        bail!(
            "{failures} instance(s) could not be removed; their directories are kept under `{}`",
            ctx.paths.machines_dir().display()
        );
    }
    Ok(())
}
