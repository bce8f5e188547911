//! `raptiformica destroy` and `raptiformica prune`: remove the instances this host started
//! (`destroy` also the machines of its cluster that nodes spawned with their engines).

use anyhow::bail;

use crate::compute::{self, Instance};
use crate::config::context::Context;
use crate::mesh::neighbours;

/// Removes every instance (`stale_only`: only those whose `detect_stale_instance` fails).
/// `destroy`: every instance, then what `--purge-*` names.
pub fn destroy(ctx: &Context, args: crate::cli::args::DestroyArgs) -> anyhow::Result<()> {
    // Checked first: a refusal leaves everything as it was.
    if args.purge_artifacts {
        super::clean::refuse_own_binary(&ctx.paths.artifacts_dir)?;
    }
    let removed = remove_held(ctx, false, args.force);
    super::clean::purge(ctx, args.purge_artifacts, args.purge_modules)?;
    removed
}

/// `prune`: the instances whose machine is gone.
pub fn remove(ctx: &Context, stale_only: bool) -> anyhow::Result<()> {
    remove_held(ctx, stale_only, false)
}

/// Removes this workstation's instances (`stale_only`: those that are gone); `destroy` then
/// the machines of the cluster the nodes spawned on this host's engines, never those another
/// workstation holds unless `force`.
fn remove_held(ctx: &Context, stale_only: bool, force: bool) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let instances = Instance::list(&ctx.paths.machines_dir());
    let mut failures = 0;
    let mut removed = 0;
    let mut gone: Vec<String> = Vec::new();
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
                let forgotten = match instance.host.as_deref() {
                    Some(host) => neighbours::forget_locally(&ctx.paths, host, instance.port.unwrap_or(22)),
                    None => Ok(Vec::new()),
                };
                match forgotten {
                    Ok(ids) => gone.extend(ids),
                    Err(e) => eprintln!(
                        "warning: instance {} is gone but still listed as a neighbour: {e:#}",
                        instance.id
                    ),
                }
            }
            Err(e) => {
                failures += 1;
                eprintln!("cannot remove instance {}: {e:#}", instance.id);
            }
        }
    }
    // The cluster forgets them too, so that no node keeps them as peers or members to wait for.
    if !gone.is_empty() && !neighbours::all(&ctx.config()?.mapping).iter().all(|n| n.host.is_none()) {
        let told = crate::remote::ssh::Identity::ensure(ctx).and_then(|identity| {
            crate::cli::runtime::runtime()?.block_on(crate::remote::nodes::forget_neighbours(ctx, &identity, &gone))
        });
        match told {
            Ok(node) => eprintln!("the cluster forgot {} neighbour(s) (through node {node})", gone.len()),
            Err(e) => eprintln!(
                "warning: the cluster still lists {} as neighbour(s); the agents evict them once failed: {e:#}",
                gone.join(", ")
            ),
        }
    }
    // The machines of the cluster that nodes spawned with their engines (the workstation has no
    // instance directory of those): each back-end that can removes them by the cluster's label.
    let attached = crate::cluster::attach::record(ctx).is_some();
    if !stale_only && attached && !force {
        eprintln!(
            "the machines the cluster's nodes spawned are left to the workstation that built it (this one attached; \
             `destroy --force` removes them too)"
        );
    }
    if !stale_only && (!attached || force) && !crate::config::shared::consul_configured(&ctx.paths) {
        let mut done = std::collections::BTreeSet::new();
        for ty in compute::compute_types(&config) {
            let Some(script) = ty.commands.get("clean_up_cluster") else {
                continue;
            };
            if !done.insert(script.clone()) {
                continue;
            }
            match compute::clean_up_cluster(ctx, &ty, force) {
                Ok(Some(done)) => {
                    let n = done.removed.len();
                    removed += n;
                    if n > 0 {
                        eprintln!("removed {n} more machine(s) of the cluster ({})", ty.compute);
                    }
                    if !done.kept.is_empty() {
                        let holders: std::collections::BTreeSet<&str> =
                            done.kept.iter().map(|(_, by)| by.as_str()).collect();
                        eprintln!(
                            "kept {} machine(s) other workstations hold ({}; {}): `destroy --force` removes them too",
                            done.kept.len(),
                            holders.into_iter().collect::<Vec<_>>().join(", "),
                            ty.compute
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    failures += 1;
                    eprintln!("cannot remove the machines nodes spawned ({}): {e:#}", ty.compute);
                }
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
