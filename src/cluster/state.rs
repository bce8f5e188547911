//! Replicated state machines from any machine: appending to a log (and waiting until it is
//! applied everywhere) and reading a log's progress, on a node through its consul agent, else
//! through a known node.

use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine as _;

use super::{Forwarded, through_a_node, through_a_node_settled};
use crate::config::context::Context;
use crate::config::shared;
use crate::consensus::api::{AgentMember, ConsulApi};
use crate::consensus::state_log::{self, Log};
use crate::sys::exit::FailWith;
use crate::sys::quote::quote;

/// Where an answer came from.
#[derive(Debug)]
pub enum Reply<T> {
    Here(T),
    /// A node ran the same command (with `--json` when this one has it); what it printed.
    Through(Forwarded),
}

/// An append done here: the index of its last entry and, when `--wait` ran out, why it is not
/// applied everywhere yet.
#[derive(Debug)]
pub struct Appended {
    pub index: u64,
    pub not_applied: Option<String>,
}

/// The exit code of `state append --wait` when the entry is appended (its index printed) but
/// not yet applied everywhere within the limit: the append stands and is never tried again.
pub const NOT_YET_APPLIED: i32 = 3;

/// Appends `bytes` to the log of machine `name` (one entry, or one per line with `each_line`)
/// as the append `id` (chosen here when None; a retry with the same id appends nothing again)
/// and returns the index of the last entry. With `wait`, it then waits until every alive
/// member applied it; past that limit it fails with [`NOT_YET_APPLIED`], naming the index.
pub async fn append(
    ctx: &Context,
    name: &str,
    bytes: &[u8],
    each_line: bool,
    wait: Option<Duration>,
    id: Option<&str>,
) -> anyhow::Result<Reply<Appended>> {
    state_log::check_name(name)?;
    if let Some(id) = id {
        state_log::check_id(id)?;
    }
    if !each_line && bytes.len() > state_log::MAX_ENTRY {
        bail!(
            "the entry is {} KB; an entry may be at most {} KB (consul's transactions take 512 KB)",
            bytes.len() / 1024,
            state_log::MAX_ENTRY / 1024
        );
    }
    // Chosen once, here: every node this is tried on appends it as the same append.
    let id = id.map_or_else(state_log::new_id, str::to_string);
    if !shared::consul_configured(&ctx.paths) {
        crate::modules::state_machine::find(&ctx.config()?, name)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        let mut command = format!(
            "printf %s {} | base64 -d | raptiformica{} state append {} - --id {}",
            quote(&encoded),
            if ctx.json { " --json" } else { "" },
            quote(name),
            quote(&id)
        );
        if each_line {
            command.push_str(" --each-line");
        }
        if let Some(w) = wait {
            command.push_str(&format!(" --wait --timeout {}", w.as_secs()));
        }
        let out = through_a_node_settled(ctx, "append to the log", &command, &[], &[NOT_YET_APPLIED]).await?;
        if out.code == Some(NOT_YET_APPLIED) {
            // The node printed the index; its error says what is left.
            print!("{}", out.stdout);
            let said = out.stderr.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or("");
            return Err(FailWith {
                code: NOT_YET_APPLIED,
                message: format!("{said} (through node {})", out.node),
            }
            .into());
        }
        return Ok(Reply::Through(out));
    }
    let api = ConsulApi::local()?;
    let log = Log::new(name);
    // Declared? One key of the shared config answers (loading the whole config would cost more
    // than the append); only a miss loads it, for the error that lists the machines.
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
        log.append_many(&api, &entries, &id).await?
    } else {
        log.append(&api, bytes, &id).await?
    };
    let not_applied = match wait {
        Some(limit) => wait_applied(&api, &log, index, limit)
            .await
            .err()
            .map(|e| format!("{e:#}")),
        None => None,
    };
    Ok(Reply::Here(Appended { index, not_applied }))
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
                "not applied on {} after {}s{}",
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

/// A log's state: its index, the index of its snapshot, each node's applied index (and why
/// it stopped, if it did), and the members, to tell which nodes are gone.
pub struct Status {
    pub index: u64,
    pub snapshot: Option<u64>,
    pub progress: Vec<(String, u64, Option<String>)>,
    pub members: Vec<AgentMember>,
}

impl Status {
    /// The member status of `node` (`gone` when it is no member).
    pub fn member(&self, node: &str) -> &'static str {
        self.members
            .iter()
            .find(|m| m.name == node)
            .map_or("gone", |m| m.status_name())
    }
}

/// The state of the log of machine `name`.
pub async fn status(ctx: &Context, name: &str) -> anyhow::Result<Reply<Status>> {
    state_log::check_name(name)?;
    if !shared::consul_configured(&ctx.paths) {
        let command = format!(
            "raptiformica{} state status {}",
            if ctx.json { " --json" } else { "" },
            quote(name)
        );
        return Ok(Reply::Through(
            through_a_node(ctx, "read the log's status", &command).await?,
        ));
    }
    let api = ConsulApi::local()?;
    let log = Log::new(name);
    let (index, _) = log.watch_index(&api, 0, Duration::ZERO).await?;
    let snapshot = log.snapshot(&api).await?.map(|(at, _)| at);
    let progress = log.progress(&api).await?;
    let members = api.members().await.unwrap_or_default();
    Ok(Reply::Here(Status {
        index,
        snapshot,
        progress,
        members,
    }))
}
