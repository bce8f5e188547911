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

/// Once a node answered without a leader, how much longer a view with a leader is waited for.
/// The other asks may only be connecting to nodes that are gone (10 s each): waiting them out
/// would show the island's view of many seconds ago (a poll watching failed servers sees them
/// alive for longer than consul takes to mark them).
const LEADER_GRACE: Duration = Duration::from_millis(2000);

/// Asks the known nodes over SSH, servers first, a few at a time: two at once, one more
/// whenever one fails or none answered for a while. The first that sees a leader speaks for
/// the cluster. A cluster of a hundred costs two SSH sessions, not a hundred.
async fn through_a_node(ctx: &Context, quiet: bool) -> anyhow::Result<Vec<Member>> {
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
            let who = format!("{} ({}:{})", n.id, n.host.as_deref().unwrap_or_default(), n.ssh_port);
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
            (who, answer)
        }
    };
    match ask_until_a_leader(&nodes, ask).await {
        Asked::Leader(who, members) => {
            if !quiet || ctx.verbose > 0 {
                eprintln!("members as seen by node {who}");
            }
            Ok(members)
        }
        Asked::Leaderless(who, members) => {
            eprintln!(
                "warning: no node that answered sees a consul leader; this is the view of node {who}, \
                 which may be an island"
            );
            Ok(members)
        }
        Asked::Nobody(failures) => bail!(
            "no node answered (with 3 nodes known consul forms a cluster; fewer and there are no members yet):\n{}",
            failures.join("\n")
        ),
    }
}

/// What asking the nodes gave: a view with a leader, else the first leaderless one, else why
/// each node failed. Each names the node (`id (host:port)`).
#[derive(Debug)]
enum Asked {
    Leader(String, Vec<Member>),
    Leaderless(String, Vec<Member>),
    Nobody(Vec<String>),
}

/// Asks `nodes` in order, a few at a time: [`FIRST_ASKS`] at once, one more whenever one
/// answers or fails or none answered for [`ASK_ANOTHER_AFTER`], at most [`MOST_ASKS`] open.
/// The first view with a leader is taken at once; after a leaderless one the others get
/// [`LEADER_GRACE`] to show a leader.
async fn ask_until_a_leader<N, A, F>(nodes: &[N], ask: A) -> Asked
where
    A: Fn(&N) -> F,
    F: std::future::Future<Output = (String, anyhow::Result<Vec<Member>>)>,
{
    use futures_util::StreamExt as _;
    let mut waiting = nodes.iter();
    let mut asks = futures_util::stream::FuturesUnordered::new();
    asks.extend(waiting.by_ref().take(FIRST_ASKS).map(&ask));
    let mut failures = Vec::new();
    let mut leaderless: Option<(String, Vec<Member>)> = None;
    let grace = tokio::time::sleep(Duration::MAX);
    tokio::pin!(grace);
    while !asks.is_empty() {
        let more = asks.len() < MOST_ASKS && waiting.len() > 0;
        tokio::select! {
            Some((who, answer)) = asks.next() => {
                match answer {
                    // A node that sees a leader speaks for the cluster; an island does not.
                    Ok(members) if members.iter().any(|m| m.raft == "leader") => {
                        return Asked::Leader(who, members);
                    }
                    Ok(members) => {
                        if leaderless.is_none() {
                            leaderless = Some((who, members));
                            grace.as_mut().reset(tokio::time::Instant::now() + LEADER_GRACE);
                        }
                    }
                    Err(e) => failures.push(format!("  {who}: {e:#}")),
                }
                asks.extend(waiting.next().map(&ask));
            }
            () = tokio::time::sleep(ASK_ANOTHER_AFTER), if more => {
                asks.extend(waiting.next().map(&ask));
            }
            () = &mut grace => break,
        }
    }
    match leaderless {
        Some((who, members)) => Asked::Leaderless(who, members),
        None => Asked::Nobody(failures),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn view(leader: bool) -> Vec<Member> {
        let raft = if leader { "leader" } else { "follower" };
        vec![
            serde_json::from_value(serde_json::json!({"node": "a", "address": "[200::1]:8301",
                "status": "alive", "type": "server", "build": "1.8.7", "protocol": "2",
                "dc": "raptiformica", "raft": raft}))
            .unwrap(),
        ]
    }

    /// A node that answers after `secs` with a view, with or without a leader, or never
    /// (a connect to a machine that is gone).
    #[derive(Clone, Copy)]
    enum Node {
        Answers(u64, bool),
        Fails(u64),
        Hangs,
    }

    async fn ask(nodes: &[Node]) -> (Asked, Duration) {
        let started = Instant::now();
        let nodes: Vec<(usize, Node)> = nodes.iter().copied().enumerate().collect();
        let asked = ask_until_a_leader(&nodes, |&(i, n)| async move {
            let who = format!("n{i}");
            match n {
                Node::Answers(secs, leader) => {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    (who, Ok(view(leader)))
                }
                Node::Fails(secs) => {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    (who, Err(anyhow::anyhow!("connect timed out")))
                }
                Node::Hangs => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    (who, Err(anyhow::anyhow!("never")))
                }
            }
        })
        .await;
        (asked, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_leaderless_view_is_taken_after_a_grace_not_after_the_dead_nodes_connects() {
        // Two servers gone (their connects never end), the survivor an island answering at 1 s.
        let (asked, took) = ask(&[Node::Hangs, Node::Hangs, Node::Answers(1, false)]).await;
        assert!(matches!(&asked, Asked::Leaderless(who, _) if who == "n2"), "{asked:?}");
        // Asked third after 1.5 s, answers at 2.5 s, then the grace of 2 s.
        assert!(took <= Duration::from_millis(4600), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_view_with_a_leader_within_the_grace_wins_over_an_earlier_leaderless_one() {
        let (asked, took) = ask(&[Node::Answers(1, false), Node::Answers(2, true)]).await;
        assert!(matches!(&asked, Asked::Leader(who, _) if who == "n1"), "{asked:?}");
        assert!(took < Duration::from_millis(2100), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_view_with_a_leader_is_taken_at_once_and_failures_are_skipped() {
        let (asked, took) = ask(&[Node::Fails(1), Node::Hangs, Node::Answers(0, true), Node::Hangs]).await;
        assert!(matches!(&asked, Asked::Leader(who, _) if who == "n2"), "{asked:?}");
        assert!(took <= Duration::from_millis(1100), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_node_fails_each_is_named() {
        let (asked, _) = ask(&[Node::Fails(1), Node::Fails(2), Node::Fails(1)]).await;
        let Asked::Nobody(failures) = asked else {
            panic!("{asked:?}")
        };
        assert_eq!(failures.len(), 3, "{failures:?}");
        assert!(
            failures.iter().any(|f| f.contains("n1: connect timed out")),
            "{failures:?}"
        );
    }
}
