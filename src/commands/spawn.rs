//! `raptiformica spawn`: start machines through a compute back-end.

use anyhow::{Context as _, bail};
use serde::Serialize;

use super::{print_json, print_table};
use crate::cli::SpawnArgs;
use crate::compute::{self, ComputeType};
use crate::config::Config;
use crate::context::Context;
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
    let mut started = Vec::new();
    for n in 1..=args.count {
        eprintln!("starting instance {n}/{} with compute type `{}`", args.count, ty.name());
        let instance = compute::start(ctx, &ty)?;
        eprintln!(
            "started instance {} at {}:{}",
            instance.id,
            instance.host.as_deref().unwrap_or("?"),
            instance.port.unwrap_or(22)
        );
        hooks::fire(ctx, &config, "after_start_instance");
        started.push(instance);
    }
    if ctx.json {
        print_json(&started);
    }
    Ok(())
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
