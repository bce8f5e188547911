//! `raptiformica mesh`: join this node to the overlay and consensus.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::args::MeshArgs;
use crate::config::context::Context;
use crate::config::{Mapping, mapping};
use crate::mesh::Overlay as _;
use crate::node::mesh::{self as node, KvSync, MeshOptions};

pub fn run(ctx: &Context, args: MeshArgs) -> anyhow::Result<()> {
    if args.identity_only {
        let config = ctx.config()?;
        let overlay = node::overlay(ctx, &config.mapping)?;
        let identity = overlay.identity()?;
        let mut out = serde_json::to_value(&identity)?;
        out["node_id"] = node::own_id(&identity).into();
        println!("{out}");
        return Ok(());
    }
    let with_config = match &args.with_config {
        None => Mapping::new(),
        Some(path) => read_mapping(path)?,
    };
    let opts = MeshOptions {
        with_config,
        wait: Duration::from_secs(args.wait),
        after_mesh: !args.no_after_mesh,
    };
    let report = crate::cli::runtime::runtime()?.block_on(node::mesh(ctx, &opts))?;
    // The agent keeps this node in the cluster from now on (its keeper restarts it).
    let agent = if args.no_agent {
        "not started (--no-agent)".to_string()
    } else {
        crate::agent::keeper::ensure_running(&ctx.paths)?.unwrap_or_else(|| "running".to_string())
    };
    if ctx.json {
        let mut v = serde_json::to_value(&report)?;
        v["agent"] = agent.into();
        super::print_json(&v);
        return Ok(());
    }
    println!(
        "overlay: {} ({}), {} peer(s)",
        report.overlay.address, report.overlay_daemon, report.peers
    );
    match (&report.consul_role, &report.consul_daemon) {
        (Some(role), Some(daemon)) => println!(
            "consul: {} ({daemon}), leader {}",
            role.as_str(),
            report.leader.as_deref().unwrap_or("not elected yet")
        ),
        _ => println!(
            "consul: not started, {} of {} nodes known",
            report.nodes_known,
            crate::mesh::plan::QUORUM
        ),
    }
    println!("agent: {agent}");
    println!(
        "shared config: {}",
        match report.kv {
            KvSync::NoConsensusYet => "in the local cache until the cluster has consensus".to_string(),
            KvSync::NoLeader => "no leader yet: kept in the cache, pushed on a later run".to_string(),
            KvSync::Seeded { keys, seconds } => format!("seeded consul's KV with {keys} keys in {seconds:.2}s"),
            KvSync::Synced { keys } => format!("in consul's KV ({keys} keys), cached"),
            KvSync::Pending => "consul is slow to answer: kept in the cache, the agent pushes it".to_string(),
        }
    );
    Ok(())
}

/// A flat mapping from a file or stdin; every key must be under `raptiformica/`.
fn read_mapping(path: &std::path::Path) -> anyhow::Result<Mapping> {
    let name = path.display().to_string();
    let text = if name == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read `{name}`"))?
    };
    let map: Mapping = serde_json::from_str(&text)
        .with_context(|| format!("--with-config `{name}` is not a flat JSON mapping of `raptiformica/...` keys"))?;
    if let Some(bad) = map.keys().find(|k| !k.starts_with(&format!("{}/", mapping::PREFIX))) {
        anyhow::bail!(
            "--with-config `{name}`: key `{bad}` is not under `{}/`",
            mapping::PREFIX
        );
    }
    Ok(map)
}
