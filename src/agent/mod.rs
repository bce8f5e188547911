//! `raptiformica agent`: the long-running process that keeps a cluster alive. One file per
//! duty:
//! - [`keeper`], [`service`]: keep the agent itself running on a node (restarted within
//!   seconds): the keeper, or a systemd unit where systemd runs;
//! - [`supervise`]: restarts yggdrasil and consul when they exit, with backoff;
//! - [`access`]: the workstations' keys in the shared config authorized for this node's logins;
//! - [`membership`]: blocking queries on the members' health drive `cluster_change`;
//! - [`follow`]: the neighbours in the KV and the members' health drive the overlay links;
//! - [`node`]: the node's periodic duties (rejoin, eviction, rebuild, role); [`redial`]: how
//!   often an unlinked overlay peer is dialed again;
//! - [`grow`]: a node with an engine that knows fewer machines than `min_servers` spawns them;
//!   [`heal`]: one replaces lost servers under the rules lock, without the workstation;
//! - [`recover`]: rebuilding consensus from survivors with `raft/peers.json`;
//! - [`roles`]: who votes, and promoting a client to server;
//! - [`rules`], [`settings`]: what the agent enforces (`min_servers`) and its config keys;
//! - [`workstation`]: the agent on the host that spawned the cluster (replaces lost machines);
//!   [`renumber`]: it finds its machines again after the network was renumbered;
//! - [`state`]: applying the state machines' logs, each entry once ([`in_flight`]: the apply
//!   under way, for a restart);
//! - [`status`]: what it did, for `agent --status`; [`single`]: one agent per machine;
//! - [`wipe`]: `clean` on a node, which stops all of it and removes what slaving installed.

pub mod access;
pub mod daemons;
pub mod events;
pub mod follow;
pub mod grow;
pub mod heal;
pub mod in_flight;
pub mod keeper;
pub mod membership;
pub mod node;
pub mod own_entry;
pub mod pace;
pub mod recover;
pub mod redial;
pub mod renumber;
pub mod report;
pub mod roles;
pub mod rules;
pub mod service;
pub mod settings;
pub mod single;
pub mod state;
pub mod status;
pub mod supervise;
pub mod wipe;
pub mod workstation;

use crate::config::context::Context;
use crate::config::shared;
use crate::sys::paths::Paths;

/// Where an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A node: it has an overlay identity (it was meshed).
    Node,
    /// The host that spawned or slaved the cluster.
    Workstation,
}

impl Mode {
    pub fn of(paths: &Paths) -> Self {
        if shared::is_node(paths) {
            Mode::Node
        } else {
            Mode::Workstation
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Node => "node",
            Mode::Workstation => "workstation",
        }
    }
}

/// Runs the agent in the foreground until it is killed.
pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let mode = Mode::of(&ctx.paths);
    let _only = single::take(&match mode {
        Mode::Node => shared::mesh_dir(&ctx.paths),
        Mode::Workstation => ctx.paths.cache_dir.join("var"),
    })?;
    if mode == Mode::Node {
        let pid_file = daemons::agent(&ctx.paths).pid_file;
        crate::sys::fs_atomic::write_atomic(&pid_file, format!("{}\n", std::process::id()).as_bytes())?;
    }
    let rec = status::Recorder::new(&ctx.paths, mode.as_str());
    rec.event(
        "start",
        format!("agent {} started (pid {})", mode.as_str(), std::process::id()),
    );
    // What hook handlers and module commands print goes into the agent's log.
    let ctx = Context {
        verbose: ctx.verbose.max(1),
        ..ctx.clone()
    };
    match mode {
        Mode::Node => node::run(ctx, rec).await,
        // Its duties are one loop: stopping drops it where it waits (an action under way ends
        // with it, as it would if the host went down; its cluster lock expires with its session).
        Mode::Workstation => tokio::select! {
            r = workstation::run(ctx, rec.clone()) => r,
            _ = crate::sys::signals::stop_requested() => {
                rec.event("stop", format!("agent stopped (pid {})", std::process::id()));
                Ok(())
            }
        },
    }
}
