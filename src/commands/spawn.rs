//! `raptiformica spawn`: start machines through a compute back-end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{print_json, print_table};
use crate::cli::SpawnArgs;
use crate::compute::{self, ComputeType, Instance};
use crate::config::Config;
use crate::context::Context;
use crate::progress::Progress;
use crate::slave::{self, SlaveOptions};
use crate::ssh::Identity;
use crate::{hooks, server_type};

#[derive(Serialize)]
struct Availability {
    compute_type: String,
    server_type: String,
    available: bool,
}

pub fn run(ctx: &Context, args: SpawnArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    if args.check_available {
        return check_available(ctx, &config);
    }
    let ty = choose(ctx, &config, args.compute_type.as_deref(), args.server_type.as_deref())?;
    let progress = Progress::new(ctx.json);
    if !args.no_slave {
        super::slave::prepare(ctx, &progress)?;
    }
    let identity = Identity::ensure(ctx)?;
    let ctx = Context {
        public_key_file: Some(identity.public_key_file.clone()),
        ..ctx.clone()
    };
    let config = Arc::new(ctx.config()?);
    let opts = (!args.no_slave).then(|| SlaveOptions {
        server_type: Some(ty.server.clone()),
        provision: !args.steps.no_provision,
        assimilate: !args.steps.no_assimilate,
        patience: Duration::from_secs(args.ssh_wait),
    });
    let results = crate::runtime()?.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 1..=args.count {
            let (ctx, config, ty, identity, progress, opts) = (
                ctx.clone(),
                config.clone(),
                ty.clone(),
                identity.clone(),
                progress.clone(),
                opts.clone(),
            );
            tasks.spawn(async move {
                let who = format!("instance {n}");
                spawn_one(&ctx, &config, &ty, &identity, &progress, &who, &opts)
                    .await
                    .with_context(|| format!("{who} of {}", ty.name()))
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            results.push(joined.map_err(anyhow::Error::from).and_then(|r| r));
        }
        results
    });
    let mut started = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(i) => started.push(i),
            Err(e) => errors.push(e),
        }
    }
    if ctx.json {
        print_json(&started);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => {
            for e in &errors {
                eprintln!("error: {e:#}");
            }
            bail!("{n} of {} instances failed (each was cleaned up)", args.count)
        }
    }
}

/// Starts one instance and slaves it; an instance that cannot be slaved is cleaned up.
async fn spawn_one(
    ctx: &Context,
    config: &Arc<Config>,
    ty: &ComputeType,
    identity: &Identity,
    progress: &Progress,
    who: &str,
    opts: &Option<SlaveOptions>,
) -> anyhow::Result<Instance> {
    let step = progress.step(who, &format!("start ({})", ty.name()));
    let instance = {
        let (ctx, ty) = (ctx.clone(), ty.clone());
        tokio::task::spawn_blocking(move || compute::start(&ctx, &ty)).await??
    };
    let (host, port) = (instance.host.clone().unwrap_or_default(), instance.port.unwrap_or(22));
    step.done(&format!("{host}:{port}, id {}", &instance.id[..12]));
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
            Some(opts) => slave::slave(ctx, config, identity, progress, &host, port, opts).await,
            None => Ok(()),
        }
    }
    .await;
    if let Err(e) = slaved {
        let (c, t, i) = (ctx.clone(), ty.clone(), instance.clone());
        if let Err(c) = tokio::task::spawn_blocking(move || compute::clean_up(&c, &t, &i)).await? {
            tracing::warn!("cleaning up instance {} failed too: {c:#}", instance.id);
        }
        return Err(e);
    }
    Ok(instance)
}

fn check_available(ctx: &Context, config: &Config) -> anyhow::Result<()> {
    let rows: Vec<Availability> = compute::compute_types(config)
        .into_iter()
        .map(|t| Availability {
            available: t.is_available(ctx),
            compute_type: t.compute,
            server_type: t.server,
        })
        .collect();
    if ctx.json {
        print_json(&rows);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.compute_type.clone(),
                    r.server_type.clone(),
                    if r.available { "yes" } else { "no" }.into(),
                ]
            })
            .collect();
        print_table(&["COMPUTE TYPE", "SERVER TYPE", "AVAILABLE"], &table);
    }
    if rows.iter().any(|r| r.available) {
        Ok(())
    } else {
        bail!("no compute type is available on this host")
    }
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
        None => servers
            .iter()
            .find(|(_, provs)| server_type::is_available(ctx, provs))
            .map(|(name, _)| name.clone())
            .context("no server type is available: add one under `raptiformica/server/` in a module")?,
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
