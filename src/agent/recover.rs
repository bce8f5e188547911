//! Rebuild from survivors: when the other servers failed for good and there is no leader, the
//! live servers recover consul the documented way (outage recovery): each writes
//! `raft/peers.json` naming the live servers as voters and restarts, keeping its raft data and
//! so the KV. consul's data is never wiped.
//!
//! A survivor cannot tell "the others are gone" from "I am the one cut off", so on its own it
//! waits `agent/recovery_grace`. Someone who knows the lost machines are gone (the workstation
//! agent, which asks the compute back-end; or an operator) asks for it at once with
//! `raptiformica agent --recover` on the survivor: that leaves a [request](request_file) the
//! node agent honours at its next tick, so one process does every recovery.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::consensus::agent::ConsulAgent;
use crate::consensus::api::AgentMember;

/// How long a recovery request stands (one the agent could not honour is not kept for later).
pub const REQUEST_STANDS: Duration = Duration::from_secs(120);

/// Where `agent --recover` leaves its request for the node agent.
pub fn request_file(mesh_dir: &Path) -> PathBuf {
    mesh_dir.join("recover.request")
}

/// Whether a recovery was asked for within [`REQUEST_STANDS`].
pub fn requested(mesh_dir: &Path) -> bool {
    std::fs::metadata(request_file(mesh_dir))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age < REQUEST_STANDS)
}

/// Withdraws the request (honoured, or not applicable).
pub fn withdraw(mesh_dir: &Path) {
    let _ = std::fs::remove_file(request_file(mesh_dir));
}

/// `raptiformica agent --recover`: asks this node's agent to rebuild consensus now, waits
/// until it did and a leader is back, and says what happened.
pub async fn ask(paths: &crate::sys::paths::Paths) -> anyhow::Result<String> {
    use crate::config::shared;
    use crate::consensus::api::ConsulApi;
    let dir = shared::mesh_dir(paths);
    let consul = ConsulAgent::new(&dir);
    let Some(rendered) = consul.rendered() else {
        anyhow::bail!(
            "this machine runs no consul (`{}` is missing): run it on a server node of the cluster",
            consul.config_file().display()
        );
    };
    if rendered["server"].as_bool() != Some(true) {
        anyhow::bail!(
            "this node is a consul client: only a server can rebuild consensus; run it on a surviving server"
        );
    }
    if super::keeper::agent(paths).pid().is_none() {
        anyhow::bail!("no agent runs on this node: `raptiformica mesh` starts it (it does the recovery)");
    }
    let api = ConsulApi::local()?;
    let leader = async || api.leader().await.ok().flatten();
    if let Some(l) = leader().await {
        anyhow::bail!("consul here sees a leader ({l}): quorum is not lost, nothing to recover");
    }
    let asked = super::status::now();
    crate::sys::fs_atomic::write_atomic(&request_file(&dir), format!("{asked}\n").as_bytes())?;
    let status_file = super::status::file(paths);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = super::status::read(&status_file).and_then(|s| {
            s.events
                .into_iter()
                .rev()
                .find(|e| e.at >= asked && (e.kind == "recover" || e.detail.contains("recovery")))
        });
        if let Some(e) = answer {
            break e;
        }
        if std::time::Instant::now() >= deadline {
            withdraw(&dir);
            anyhow::bail!(
                "the agent did not act on the request within 60 s; see `{}`",
                super::keeper::agent(paths).log_file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if answer.kind != "recover" || !answer.detail.starts_with("quorum lost") {
        anyhow::bail!("{}", answer.detail);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Some(l) = leader().await {
            return Ok(format!("{}; leader {l}", answer.detail));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "{}, but no leader within 30 s; see `raptiformica members`",
        answer.detail
    )
}

/// A server as raft knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftPeer {
    pub id: String,
    pub address: String,
}

/// The raft peer of a server member: its node id tag and `[addr]:port` of its server RPC.
pub fn raft_peer(m: &AgentMember) -> Option<RaftPeer> {
    let id = m.tags.get("id")?.clone();
    let port = m.tags.get("port").map(String::as_str).unwrap_or("8300");
    let host = if m.addr.contains(':') {
        format!("[{}]", m.addr)
    } else {
        m.addr.clone()
    };
    Some(RaftPeer {
        id,
        address: format!("{host}:{port}"),
    })
}

/// Why the lost servers' machines (`hosts`: their underlay addresses and SSH ports) may not be
/// gone, if they may not: this node's own network is down ("network is unreachable": it is
/// the one cut off), or one of them answers (the machine is up; its own agent brings consul
/// back). A refused connection, an unreachable host or silence count as gone.
pub async fn not_gone(hosts: &[(String, u16)]) -> Option<String> {
    for (host, port) in hosts {
        let dial = tokio::net::TcpStream::connect((host.as_str(), *port));
        match tokio::time::timeout(Duration::from_secs(5), dial).await {
            Ok(Ok(_)) => return Some(format!("{host}:{port} answers")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NetworkUnreachable => {
                return Some(format!("this node's network is down ({host}: {e})"));
            }
            _ => {}
        }
    }
    None
}

/// `raft/peers.json` (raft protocol 3) naming `peers` as voters.
pub fn peers_json(peers: &[RaftPeer]) -> Value {
    Value::Array(
        peers
            .iter()
            .map(|p| json!({"id": p.id, "address": p.address, "non_voter": false}))
            .collect(),
    )
}

/// Whether the live servers lost quorum: fewer alive than a majority of alive + failed.
pub fn quorum_lost(alive_servers: usize, failed_servers: usize) -> bool {
    let total = alive_servers + failed_servers;
    total > 0 && alive_servers > 0 && alive_servers < total / 2 + 1
}

/// Stops consul, writes `peers.json`, starts consul again, all under the mesh lock.
pub fn recover(consul: &ConsulAgent, peers: &[RaftPeer], mesh_lock: PathBuf) -> anyhow::Result<()> {
    let lock = File::create(&mesh_lock)?;
    lock.lock()?;
    consul.stop(Duration::from_secs(10));
    let raft = consul.data_dir().join("raft");
    std::fs::create_dir_all(&raft).with_context(|| format!("cannot create `{}`", raft.display()))?;
    crate::sys::fs_atomic::write_atomic(
        &raft.join("peers.json"),
        &serde_json::to_vec_pretty(&peers_json(peers))?,
    )?;
    consul.start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_file_names_the_live_servers_as_voters() {
        let m: AgentMember = serde_json::from_value(json!({
            "Name": "n1", "Addr": "200::1", "Port": 8301, "Status": 1,
            "Tags": {"role": "consul", "id": "abc", "port": "8300"}
        }))
        .unwrap();
        let p = raft_peer(&m).unwrap();
        assert_eq!(p.address, "[200::1]:8300");
        assert_eq!(
            peers_json(&[p]),
            json!([{"id": "abc", "address": "[200::1]:8300", "non_voter": false}])
        );
    }

    #[tokio::test]
    async fn a_machine_that_answers_is_not_gone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let why = not_gone(&[("127.0.0.1".into(), port)]).await;
        assert!(why.is_some_and(|w| w.contains("answers")));
        drop(listener);
        assert_eq!(not_gone(&[("127.0.0.1".into(), port)]).await, None, "refused: gone");
    }

    #[test]
    fn a_request_stands_until_withdrawn_or_old() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!requested(dir.path()));
        crate::sys::fs_atomic::write_atomic(&request_file(dir.path()), b"x").unwrap();
        assert!(requested(dir.path()));
        let old = SystemTime::now() - REQUEST_STANDS - Duration::from_secs(1);
        File::options()
            .write(true)
            .open(request_file(dir.path()))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!requested(dir.path()), "a stale request is ignored");
        withdraw(dir.path());
        assert!(!request_file(dir.path()).exists());
    }

    #[test]
    fn quorum_is_a_majority_of_the_known_servers() {
        assert!(quorum_lost(1, 2));
        assert!(!quorum_lost(2, 1));
        assert!(quorum_lost(2, 3));
        assert!(!quorum_lost(3, 2));
        assert!(!quorum_lost(0, 3), "no live server: nothing to recover from");
        assert!(!quorum_lost(1, 0));
    }
}
