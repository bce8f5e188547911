//! Rebuild from survivors: when the other servers failed for good and there is no leader, the
//! live servers recover consul the documented way (outage recovery): each writes
//! `raft/peers.json` naming the live servers as voters and restarts, keeping its raft data and
//! so the KV. consul's data is never wiped.

use std::fs::File;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::consensus::agent::ConsulAgent;
use crate::consensus::api::AgentMember;

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
    crate::config::cache::write_atomic(
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
