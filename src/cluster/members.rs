//! The cluster's members: from the local consul agent on a node, else through the known nodes
//! over SSH (all asked at once; one that sees a leader speaks for the cluster).

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::context::Context;
use crate::config::shared;
use crate::consensus::api::ConsulApi;
use crate::consensus::members::{self, Member};
use crate::mesh::neighbours;
use crate::remote::ssh::{Identity, Remote};

/// The members as consul shows them, with each server's raft state. `quiet`: do not say on
/// stderr which node answered (the output is JSON for a script).
pub async fn members(ctx: &Context, quiet: bool) -> anyhow::Result<Vec<Member>> {
    if shared::consul_configured(&ctx.paths) {
        let api = ConsulApi::local()?;
        return members::local(&api).await.context(
            "the local consul agent does not answer; `raptiformica mesh` starts it \
             (its log is <cache-dir>/mesh/consul.log)",
        );
    }
    if shared::mesh_dir(&ctx.paths).join("identity.json").is_file() {
        bail!(
            "this node is on the overlay but consul is not started yet: it starts once {} nodes are known \
             (see `raptiformica mesh`)",
            crate::mesh::plan::QUORUM
        );
    }
    through_a_node(ctx, quiet).await
}

/// How many nodes are asked at first, and at most at once.
const FIRST_ASKS: usize = 2;
const MOST_ASKS: usize = 4;

/// How long to wait for an answer before asking one more node.
const ASK_ANOTHER_AFTER: Duration = Duration::from_millis(1500);

/// Asks the known nodes over SSH, servers first, a few at a time: two at once, one more
/// whenever one fails or none answered for a while. The first that sees a leader speaks for
/// the cluster. A cluster of a hundred costs two SSH sessions, not a hundred.
async fn through_a_node(ctx: &Context, quiet: bool) -> anyhow::Result<Vec<Member>> {
    use futures_util::StreamExt as _;
    let config = ctx.config()?;
    let mut nodes: Vec<_> = neighbours::all(&config.mapping)
        .into_iter()
        .filter(|n| n.host.is_some())
        .collect();
    if nodes.is_empty() {
        bail!(
            "this machine runs no consul agent and knows no nodes (none under `{}`); \
             spawn or slave machines first",
            neighbours::NEIGHBOURS
        );
    }
    // Servers first (they see the leader), the rest after; stable within each.
    nodes.sort_by_key(|n| n.consul_role != Some(neighbours::Role::Server));
    let identity = Identity::ensure(ctx)?;
    let ask = |n: &neighbours::Neighbour| {
        let (identity, n) = (&identity, n.clone());
        async move {
            let host = n.host.clone().expect("filtered");
            let answer = async {
                let remote = Remote::connect_known(identity, &n).await?;
                let out = remote
                    .run(
                        "raptiformica members",
                        &crate::remote::on_node::on_node("raptiformica members --json"),
                    )
                    .await;
                remote.close().await;
                let members: Vec<Member> =
                    serde_json::from_str(&out?.stdout).context("its `members --json` printed no member list")?;
                anyhow::Ok(members)
            }
            .await;
            (n, host, answer)
        }
    };
    let mut waiting = nodes.iter();
    let mut asks = futures_util::stream::FuturesUnordered::new();
    asks.extend(waiting.by_ref().take(FIRST_ASKS).map(&ask));
    let mut failures = Vec::new();
    let mut leaderless: Option<(String, Vec<Member>)> = None;
    while !asks.is_empty() {
        let more = asks.len() < MOST_ASKS && waiting.len() > 0;
        tokio::select! {
            Some((n, host, answer)) = asks.next() => {
                match answer {
                    // A node that sees a leader speaks for the cluster; an island does not.
                    Ok(members) if members.iter().any(|m| m.raft == "leader") => {
                        if !quiet || ctx.verbose > 0 {
                            eprintln!("members as seen by node {} ({host})", n.id);
                        }
                        return Ok(members);
                    }
                    Ok(members) => {
                        if leaderless.is_none() {
                            leaderless = Some((format!("{} ({host})", n.id), members));
                        }
                    }
                    Err(e) => failures.push(format!("  {} ({host}:{}): {e:#}", n.id, n.ssh_port)),
                }
                asks.extend(waiting.next().map(&ask));
            }
            () = tokio::time::sleep(ASK_ANOTHER_AFTER), if more => {
                asks.extend(waiting.next().map(&ask));
            }
        }
    }
    if let Some((who, members)) = leaderless {
        eprintln!(
            "warning: no node that answered sees a consul leader; this is the view of node {who}, \
             which may be an island"
        );
        return Ok(members);
    }
    bail!(
        "no node answered (with 3 nodes known consul forms a cluster; fewer and there are no members yet):\n{}",
        failures.join("\n")
    )
}

/// `members --rejoin`: this node's agent joins every known neighbour again. Returns how many
/// it joined, of how many, and why the others failed.
pub async fn rejoin(ctx: &Context) -> anyhow::Result<(usize, usize)> {
    if !shared::consul_configured(&ctx.paths) {
        bail!(
            "this machine runs no consul agent; run `members --rejoin` on a node \
             (e.g. `raptiformica ssh MACHINE -- raptiformica members --rejoin`)"
        );
    }
    let config = ctx.config()?;
    let overlay = crate::node::mesh::overlay(ctx, &config.mapping)?;
    let me = crate::mesh::Overlay::identity(&overlay)?;
    let addresses: Vec<_> = neighbours::all(&config.mapping)
        .into_iter()
        .filter_map(|n| n.overlay_address)
        .filter(|a| *a != me.address)
        .collect();
    let api = ConsulApi::new(crate::consensus::api::LOCAL_HTTP, Duration::from_secs(10))?;
    let mut results = Vec::new();
    for a in &addresses {
        results.push(api.join(*a).await);
    }
    let mut joined = 0;
    for (addr, r) in addresses.iter().zip(results) {
        match r {
            Ok(()) => joined += 1,
            Err(e) => tracing::warn!("{addr}: {e:#}"),
        }
    }
    if joined == 0 && !addresses.is_empty() {
        bail!("could not join any of {} neighbour(s)", addresses.len());
    }
    Ok((joined, addresses.len()))
}
