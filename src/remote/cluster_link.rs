//! Reaching the cluster's consul from a machine that is not a node (the host that spawned the
//! cluster): an SSH tunnel to one member's HTTP API, preferring a member that sees a leader (so
//! never an island's view). The workstation agent, `ui` and `snapshot` use it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use crate::config::Config;
use crate::consensus::api::ConsulApi;
use crate::mesh::neighbours;
use crate::remote::ssh::{Identity, Remote};

/// A tunnel to one member's consul.
pub struct Link {
    /// The member's node id.
    pub node: String,
    pub remote: Remote,
    /// Its consul, through the tunnel.
    pub api: ConsulApi,
}

impl Link {
    /// Closes the SSH session (and the tunnel with it).
    pub async fn close(self) {
        self.remote.close().await;
    }
}

/// How many nodes are dialed at once when looking for one to watch the cluster through.
const DIAL_AT_ONCE: usize = 4;

/// How long the probe of a node's consul (does it see a leader?) may take.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A tunnel to a node whose consul sees a leader (else to one that answers). Nodes are dialed
/// a few at a time, those last seen failed (`shun`) last and apart: a dead one costs its
/// connect timeout, which the others need not wait for. Requests through the link give up
/// after `timeout`.
pub async fn connect(identity: &Identity, config: &Config, shun: &HashSet<String>, timeout: Duration) -> Option<Link> {
    let mut candidates: Vec<_> = neighbours::all(&config.mapping)
        .into_iter()
        .filter(|n| n.host.is_some())
        .collect();
    // The shunned ones in waves of their own, after the others: a wave waits for its slowest.
    let (shunned, fresh): (Vec<_>, Vec<_>) = candidates.drain(..).partition(|n| shun.contains(&n.id));
    let waves: Vec<&[neighbours::Neighbour]> = fresh.chunks(DIAL_AT_ONCE).chain(shunned.chunks(DIAL_AT_ONCE)).collect();
    let mut fallback = None;
    for wave in waves {
        let links = futures_util::future::join_all(wave.iter().map(|n| async move {
            let host = n.host.clone().expect("filtered");
            let link = async {
                let remote = Remote::connect_known(identity, n).await?;
                let port = remote.forward_local(SocketAddr::from(([127, 0, 0, 1], 8500))).await?;
                let api = ConsulApi::new(&format!("http://127.0.0.1:{port}"), timeout)?;
                let leads = matches!(tokio::time::timeout(PROBE_LIMIT, api.leader()).await, Ok(Ok(Some(_))));
                anyhow::Ok((
                    Link {
                        node: n.id.clone(),
                        remote,
                        api,
                    },
                    leads,
                ))
            }
            .await;
            if let Err(e) = &link {
                tracing::debug!("no tunnel through {host}: {e:#}");
            }
            link.ok()
        }))
        .await;
        let mut found = None;
        for (l, leads) in links.into_iter().flatten() {
            if leads && found.is_none() {
                found = Some(l);
            } else if fallback.is_none() {
                fallback = Some(l);
            } else {
                l.remote.close().await;
            }
        }
        if found.is_some() {
            if let Some(f) = fallback {
                f.remote.close().await;
            }
            return found;
        }
    }
    fallback
}

/// The cluster's consul as this machine reaches it: the local agent on a node, else a tunnel
/// to a member (kept open as long as this lives).
pub enum Reached {
    /// This machine is a node: its own agent.
    Local(ConsulApi),
    /// A tunnel to a member, on a machine that is not a node.
    Tunnel(Link),
}

impl Reached {
    /// The consul that answers.
    pub fn api(&self) -> &ConsulApi {
        match self {
            Reached::Local(api) => api,
            Reached::Tunnel(link) => &link.api,
        }
    }

    /// Which node answers: `this node`, or `node <id> (through SSH)`.
    pub fn through(&self) -> String {
        match self {
            Reached::Tunnel(l) => format!("node {} (through SSH)", l.node),
            Reached::Local(_) => "this node".into(),
        }
    }

    pub async fn close(self) {
        if let Reached::Tunnel(l) = self {
            l.close().await;
        }
    }
}

/// Reaches the cluster's consul from here (see [`Reached`]).
pub async fn reach(ctx: &crate::config::context::Context) -> anyhow::Result<Reached> {
    reach_avoiding(ctx, &HashSet::new()).await
}

/// Reaches the cluster's consul from here, dialing the nodes in `shun` (ids) last.
pub async fn reach_avoiding(ctx: &crate::config::context::Context, shun: &HashSet<String>) -> anyhow::Result<Reached> {
    if crate::config::shared::consul_configured(&ctx.paths) {
        return Ok(Reached::Local(ConsulApi::local()?));
    }
    let config = ctx.config()?;
    if !neighbours::all(&config.mapping).iter().any(|n| n.host.is_some()) {
        anyhow::bail!(
            "this machine runs no consul agent and knows no nodes (none under `{}`); spawn or slave machines first",
            neighbours::NEIGHBOURS
        );
    }
    let identity = Identity::ensure(ctx)?;
    let link = connect(&identity, &config, shun, Duration::from_secs(60))
        .await
        .context("no known node could be reached over SSH")?;
    Ok(Reached::Tunnel(link))
}
