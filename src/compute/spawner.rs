//! Starting machines through a compute back-end and slaving them: what `spawn` does for each
//! instance, and what the agent does to replace a lost machine.

use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::compute::{self, ComputeType, Instance};
use crate::config::Config;
use crate::config::context::Context;
use crate::modules::{hooks, server_type};
use crate::provision::slave::{self, SlaveOptions};
use crate::remote::ssh::Identity;
use crate::sys::process::LineSink;
use crate::sys::progress::Progress;

/// Starts one instance through the compute back-end, with its progress line (`start`
/// removes a half-started instance itself, also when interrupted).
pub async fn start(ctx: &Context, ty: &ComputeType, progress: &Progress, who: &str) -> anyhow::Result<Instance> {
    let step = progress.step(who, &format!("start ({})", ty.name()));
    let instance = {
        let (ctx, ty) = (ctx.clone(), ty.clone());
        let note = LineSink(Arc::new(step.notifier()));
        tokio::task::spawn_blocking(move || compute::start(&ctx, &ty, Some(note))).await??
    };
    let (host, port) = (
        instance.host.as_deref().unwrap_or_default(),
        instance.port.unwrap_or(22),
    );
    step.done(&format!("{host}:{port}, id {}", &instance.id[..12]));
    Ok(instance)
}

/// Starts one machine and slaves it (`opts`); one that cannot be slaved is cleaned up. Its
/// neighbour entry records the instance and whose engine holds it (`held_by`).
#[allow(clippy::too_many_arguments)]
pub async fn spawn_one(
    ctx: &Context,
    config: &Arc<Config>,
    ty: &ComputeType,
    identity: &Identity,
    progress: &Progress,
    who: &str,
    opts: &Option<SlaveOptions>,
    held_by: &str,
) -> anyhow::Result<Instance> {
    let instance = start(ctx, ty, progress, who).await?;
    let (host, port) = (instance.host.clone().unwrap_or_default(), instance.port.unwrap_or(22));
    let slaved = async {
        // A brand-new machine: any older pin for its address belonged to another machine.
        match &instance.host_keys {
            Some(keys) => {
                identity.pin(&host, port, keys)?;
            }
            None => identity.forget(&host, port)?,
        }
        let (c, cfg) = (ctx.clone(), config.clone());
        tokio::task::spawn_blocking(move || hooks::fire(&c, &cfg, "after_start_instance")).await?;
        match opts {
            Some(opts) => {
                // On record in its neighbour entry: which back-end instance, whose engine.
                let opts = SlaveOptions {
                    machine: Some(crate::mesh::neighbours::Machine {
                        compute_type: ty.name(),
                        instance: instance.id.clone(),
                        held_by: held_by.to_string(),
                    }),
                    ..opts.clone()
                };
                slave::slave(ctx, config, identity, progress, &host, port, &opts)
                    .await
                    .map(|_| ())
            }
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = slaved {
        let (c, t, i) = (ctx.clone(), ty.clone(), instance.clone());
        if let Err(c) = tokio::task::spawn_blocking(move || compute::clean_up(&c, &t, &i)).await? {
            tracing::warn!("cleaning up instance {} failed too: {c:#}", instance.id);
        }
        // A machine that got as far as being a neighbour is forgotten, here and in the cluster.
        if let Ok(ids) = crate::mesh::neighbours::forget_locally(&ctx.paths, &host, port)
            && !ids.is_empty()
            && let Err(f) = crate::remote::nodes::forget_neighbours(ctx, identity, &ids).await
        {
            tracing::warn!("the cluster still lists the failed machine as a neighbour: {f:#}");
        }
        return Err(e);
    }
    Ok(instance)
}

/// Machines to start together.
pub struct Batch<'a> {
    pub ty: &'a ComputeType,
    /// `<label> 1`, `<label> 2`, ... in progress lines and errors.
    pub label: &'a str,
    pub count: usize,
    /// How to slave them (None: only start them).
    pub opts: &'a Option<SlaveOptions>,
    /// The node whose agent spawns them (its id, recorded as their holder); None: this
    /// machine's user (its workstation name is recorded, see `remote::workstations`).
    pub from_node: Option<&'a str>,
}

/// Starts the batch's instances concurrently and slaves each. One result per instance, in
/// the order they finish.
pub async fn spawn_many(
    ctx: &Context,
    config: &Arc<Config>,
    identity: &Identity,
    progress: &Progress,
    batch: Batch<'_>,
) -> Vec<anyhow::Result<Instance>> {
    let Batch {
        ty,
        label,
        count,
        opts,
        from_node,
    } = batch;
    // A workstation records its own name (see `remote::workstations`): two workstations,
    // even on one host, each destroy only their own machines.
    let held_by = from_node.map_or_else(
        || {
            crate::remote::workstations::own_name(&ctx.paths)
                .unwrap_or_else(|_| crate::remote::workstations::host_name())
        },
        str::to_string,
    );
    let mut tasks = tokio::task::JoinSet::new();
    for n in 1..=count {
        let (ctx, config, ty, identity, progress, opts) = (
            ctx.clone(),
            config.clone(),
            ty.clone(),
            identity.clone(),
            progress.clone(),
            opts.clone(),
        );
        let who = format!("{label} {n}");
        let held_by = held_by.clone();
        tasks.spawn(async move {
            spawn_one(&ctx, &config, &ty, &identity, &progress, &who, &opts, &held_by)
                .await
                .with_context(|| format!("{who} of {}", ty.name()))
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.map_err(anyhow::Error::from).and_then(|r| r));
    }
    results
}

/// The compute type to use: the one asked for, or the first available (alphabetically), for
/// the server type asked for or the first available one.
pub fn choose(
    ctx: &Context,
    config: &Config,
    compute: Option<&str>,
    server: Option<&str>,
) -> anyhow::Result<ComputeType> {
    let servers = server_type::server_types(config);
    let server = match server {
        Some(s) => {
            if !servers.contains_key(s) {
                let known: Vec<&str> = servers.keys().map(String::as_str).collect();
                bail!("there is no server type `{s}` (known: {})", known.join(", "));
            }
            s.to_string()
        }
        // The first available server type that the chosen compute type (if any) can start.
        None => {
            let startable: Vec<String> = compute::compute_types(config)
                .into_iter()
                .filter(|t| compute.is_none_or(|c| t.compute == c))
                .map(|t| t.server)
                .collect();
            // An unknown compute type starts nothing: let `compute::find` name the known ones.
            servers
                .iter()
                .filter(|(name, _)| startable.is_empty() || startable.contains(name))
                .find(|(_, provs)| server_type::is_available(ctx, provs))
                .map(|(name, _)| name.clone())
                .with_context(|| match compute {
                    Some(c) => format!(
                        "no available server type can be started by compute type `{c}` \
                         (add `raptiformica/compute/{c}/<server type>/...` in a module)"
                    ),
                    None => "no server type is available: add one under `raptiformica/server/` in a module".to_string(),
                })?
        }
    };
    match compute {
        Some(c) => {
            let ty = compute::find(config, c, &server)?;
            if !ty.is_available(ctx) {
                bail!(
                    "compute type `{}` is not available on this host (its `available` check failed: `{}`)",
                    ty.name(),
                    ty.commands.get("available").map(String::as_str).unwrap_or("")
                );
            }
            Ok(ty)
        }
        None => compute::compute_types(config)
            .into_iter()
            .filter(|t| t.server == server)
            .find(|t| t.is_available(ctx))
            .with_context(|| format!("no compute type for server type `{server}` is available on this host (see `spawn --check-available`)")),
    }
}

/// The config a machine spawns with. On a node the compute commands are those of its own
/// modules, never the shared config's (see [`crate::config::trust::own_compute`]): they run
/// with the engine a node may hold. Elsewhere the config as it is.
pub fn spawning_config(ctx: &Context) -> anyhow::Result<Config> {
    let mut config = ctx.config()?;
    if crate::config::shared::is_node(&ctx.paths) {
        let (modules, _) = crate::config::load_modules(&ctx.paths);
        let set_aside = crate::config::trust::own_compute(&mut config, &modules);
        if set_aside > 0 {
            tracing::warn!(
                "{set_aside} compute key(s) of the shared config differ from this node's modules and were not used: \
                 a node spawns only with the compute commands it was slaved with"
            );
        }
    }
    Ok(config)
}

/// What a node's agent spawns with to grow or heal the cluster: the first available compute
/// type of its own modules (None: this machine has no engine).
pub fn engine_type(ctx: &Context) -> Option<(Config, ComputeType)> {
    let config = spawning_config(ctx).ok()?;
    let ty = choose(ctx, &config, None, None).ok()?;
    Some((config, ty))
}

/// Spawns `count` machines of `ty` from a node, each handed an engine too (`spawn
/// --with-engine`), quietly; one result each.
pub async fn spawn_from_node(
    ctx: &Context,
    config: Config,
    ty: &ComputeType,
    count: usize,
    label: &str,
    me: &str,
) -> anyhow::Result<Vec<anyhow::Result<Instance>>> {
    let progress = Progress::new(true);
    {
        let (c, p) = (ctx.clone(), progress.clone());
        tokio::task::spawn_blocking(move || slave::prepare(&c, &p)).await??;
    }
    let identity = {
        let c = ctx.clone();
        tokio::task::spawn_blocking(move || Identity::ensure(&c)).await??
    };
    let ctx = Context {
        public_key_file: Some(identity.public_key_file.clone()),
        with_engine: true,
        ..ctx.clone()
    };
    // With the gossip key and token slave::prepare may have made.
    let config = Arc::new(spawning_config(&ctx).unwrap_or(config));
    let opts = Some(SlaveOptions::fresh(&ty.server, std::time::Duration::from_secs(60)));
    let batch = Batch {
        ty,
        label,
        count,
        opts: &opts,
        from_node: Some(me),
    };
    Ok(spawn_many(&ctx, &config, &identity, &progress, batch).await)
}
