//! `raptiformica state append|status`: on a node through its consul agent, elsewhere through
//! the first known node that answers over SSH.

use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine as _;
use serde_json::json;

use super::{print_json, print_table};
use crate::cli::args::StateAction;
use crate::config::context::Context;
use crate::config::shared;
use crate::consensus::api::ConsulApi;
use crate::consensus::state_log::{self, Log};
use crate::remote::ssh::Identity;
use crate::sys::quote::quote;

pub fn run(ctx: &Context, action: StateAction) -> anyhow::Result<()> {
    match action {
        StateAction::Append {
            name,
            entry,
            each_line,
            wait,
            timeout,
        } => append(
            ctx,
            &name,
            &entry,
            each_line,
            wait.then(|| Duration::from_secs(timeout)),
        ),
        StateAction::Status { name } => status(ctx, &name),
    }
}

/// Runs `command` on a known node (this machine is not one); prints what it printed.
fn through_a_node(ctx: &Context, what: &str, command: &str) -> anyhow::Result<()> {
    let identity = Identity::ensure(ctx)?;
    let (id, out) = crate::cli::runtime::runtime()?.block_on(crate::remote::nodes::on_a_node(
        ctx,
        &identity,
        what,
        command,
        &[],
    ))?;
    print!("{}", out.stdout);
    tracing::info!("through node {id}");
    Ok(())
}

fn append(ctx: &Context, name: &str, entry: &str, each_line: bool, wait: Option<Duration>) -> anyhow::Result<()> {
    state_log::check_name(name)?;
    let bytes = state_log::read_input(entry)?;
    if !each_line && bytes.len() > state_log::MAX_ENTRY {
        bail!(
            "the entry is {} KB; an entry may be at most {} KB (consul's transactions take 512 KB)",
            bytes.len() / 1024,
            state_log::MAX_ENTRY / 1024
        );
    }
    if !shared::consul_configured(&ctx.paths) {
        crate::modules::state_machine::find(&ctx.config()?, name)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let mut command = format!(
            "printf %s {} | base64 -d | raptiformica{} state append {} -",
            quote(&encoded),
            if ctx.json { " --json" } else { "" },
            quote(name)
        );
        if each_line {
            command.push_str(" --each-line");
        }
        if let Some(w) = wait {
            command.push_str(&format!(" --wait --timeout {}", w.as_secs()));
        }
        return through_a_node(ctx, "append to the log", &command);
    }
    let api = ConsulApi::local()?;
    let log = Log::new(name);
    crate::cli::runtime::runtime()?.block_on(async {
        // Declared? One key of the shared config answers (loading the whole config would cost
        // more than the append); only a miss loads it, for the error that lists the machines.
        let declared = api
            .get_value(&format!("{}/state/{name}/apply", crate::config::mapping::PREFIX))
            .await
            .ok()
            .flatten()
            .is_some();
        if !declared {
            crate::modules::state_machine::find(&ctx.config()?, name)?;
        }
        let index = if each_line {
            let entries: Vec<Vec<u8>> = bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            anyhow::ensure!(!entries.is_empty(), "--each-line: no line to append");
            log.append_many(&api, &entries).await?
        } else {
            log.append(&api, &bytes).await?
        };
        if let Some(limit) = wait {
            wait_applied(&api, &log, index, limit).await?;
        }
        if ctx.json {
            print_json(&json!({"name": name, "index": index}));
        } else {
            println!("{index}");
        }
        anyhow::Ok(())
    })
}

/// Waits until every alive member has applied `index`.
async fn wait_applied(api: &ConsulApi, log: &Log, index: u64, limit: Duration) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        let alive = api.alive_members().await?;
        let progress = log.progress(api).await?;
        let behind: Vec<String> = alive
            .iter()
            .filter(|n| !progress.iter().any(|(p, at, _)| p == *n && *at >= index))
            .cloned()
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        if t.elapsed() >= limit {
            let failed: Vec<String> = progress
                .iter()
                .filter_map(|(n, at, why)| why.as_ref().map(|w| format!("{n} stopped at {at}: {w}")))
                .collect();
            bail!(
                "entry {index} is appended, but not applied on {} after {}s{}",
                behind.join(", "),
                limit.as_secs(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!("\n{}", failed.join("\n"))
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(ctx: &Context, name: &str) -> anyhow::Result<()> {
    state_log::check_name(name)?;
    let config = ctx.config()?;
    let machine = crate::modules::state_machine::find(&config, name)?;
    if !shared::consul_configured(&ctx.paths) {
        let command = format!(
            "raptiformica{} state status {}",
            if ctx.json { " --json" } else { "" },
            quote(name)
        );
        return through_a_node(ctx, "read the log's status", &command);
    }
    let api = ConsulApi::local()?;
    let log = Log::new(name);
    let (index, snapshot, progress, members) = crate::cli::runtime::runtime()?.block_on(async {
        let (index, _) = log.watch_index(&api, 0, Duration::ZERO).await?;
        let snapshot = log.snapshot(&api).await?.map(|(at, _)| at);
        let progress = log.progress(&api).await?;
        let members = api.members().await.unwrap_or_default();
        anyhow::Ok((index, snapshot, progress, members))
    })?;
    let status_of = |node: &str| {
        members
            .iter()
            .find(|m| m.name == node)
            .map_or("gone", |m| m.status_name())
    };
    if ctx.json {
        let nodes: Vec<_> = progress
            .iter()
            .map(|(n, at, why)| {
                json!({"node": n, "applied": at, "lag": index.saturating_sub(*at), "member": status_of(n), "failure": why})
            })
            .collect();
        print_json(
            &json!({"name": name, "index": index, "snapshot": snapshot, "snapshot_every": machine.snapshot_every, "nodes": nodes}),
        );
        return Ok(());
    }
    println!(
        "state machine `{name}`: log index {index}, snapshot {}, every {} entries",
        snapshot.map_or("none".into(), |s| format!("at {s}")),
        machine.snapshot_every
    );
    let rows: Vec<Vec<String>> = progress
        .iter()
        .map(|(n, at, why)| {
            vec![
                n.clone(),
                at.to_string(),
                index.saturating_sub(*at).to_string(),
                status_of(n).to_string(),
                why.as_deref().map_or("ok".into(), |w| {
                    format!("STOPPED: {}", w.lines().next().unwrap_or_default())
                }),
            ]
        })
        .collect();
    print_table(&["NODE", "APPLIED", "LAG", "MEMBER", "STATE"], &rows);
    Ok(())
}
