//! Rebuild from survivors: when the other servers are gone for good and there is no leader,
//! the live servers recover consul the documented way (outage recovery): each writes
//! `raft/peers.json` naming the live servers as voters and restarts, keeping its raft data and
//! so the KV. consul's data is never wiped.
//!
//! # The rule: no rebuild without evidence
//!
//! A server that lost its leader cannot tell "the other servers are gone" from "I am the one
//! cut off": both look the same from inside (silence, timeouts, refused connections). A server
//! cut off that rebuilt on its own would start a second cluster, and when the cut heals one of
//! the two histories is lost (the majority's, in the case that was measured). So a survivor
//! rebuilds only with evidence that the lost servers are gone ([`decide`]):
//!
//! 1. **Asked**: someone who knows asked with `raptiformica agent --recover` on the survivor
//!    (an operator, or the workstation's agent once its compute back-end said the machines
//!    are gone). That leaves a [request](request_file) the node agent honours at its next
//!    tick, so one process does every recovery.
//! 2. **An engine says so**: this node holds a compute engine (`spawn --with-engine`) whose
//!    back-end runs no machine at any lost server's address (`host_gone`): removed, not cut
//!    off (a container that runs, cut off, is not gone).
//! 3. **A majority of the known machines**: this node sees more than half of the cluster's
//!    known machines (servers and clients; the members serf knows and the shared config's
//!    neighbours) alive, while the lost servers have been failed for `agent/recovery_grace`
//!    and none of them answers on its SSH port. A node that sees a majority alive is on the
//!    majority's side of any cut; the machines it cannot reach are on the other.
//!
//! It refuses (and says why in `agent --status`, the `Agent` column of `members` on this node,
//! and its report on the web map):
//! - while quorum is not lost (a majority of the servers alive: consul elects by itself);
//! - when it sees half or fewer of the known machines alive: it may be the one cut off. In a
//!   cluster of three servers and no clients this is every case of two lost servers: only an
//!   operator or the workstation's agent can tell, so it waits for them;
//! - before the lost servers have been failed for the grace, and for the grace after a
//!   rebuild (the new configuration gets time to elect);
//! - when a lost server answers, or this node's own network is down.
//!
//! # A server that returns after a rebuild
//!
//! It joins the rebuilt cluster and its old raft state does not come back: its peers are the
//! old configuration, of which it alone cannot make a majority (the survivor is in the rebuilt
//! configuration and, having a leader, refuses its votes), so it never elects itself and never
//! acknowledges a write of its own. Serf brings it back into the member list, the rebuilt
//! cluster's leader adds it to the raft configuration, and raft replaces its log with the
//! leader's (a follower drops entries that conflict with its leader's). The one case this
//! cannot cover is the one the rule exists for: servers that still held a majority of the old
//! configuration between them while someone rebuilt elsewhere with `agent --recover`: that is
//! two clusters by an operator's choice, and why the rule never guesses.

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
    if super::daemons::agent(paths).pid().is_none() {
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
                super::daemons::agent(paths).log_file.display()
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

/// What a server that lost its leader knows when it considers a rebuild.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Situation {
    /// `agent --recover` asked for it (someone who knows the lost servers are gone).
    pub requested: bool,
    pub alive_servers: usize,
    pub failed_servers: usize,
    /// Every failed server has been failed for the grace, and the last rebuild (if any) is
    /// older than the grace.
    pub past_grace: bool,
    /// Machines (servers and clients) this node sees alive, itself included.
    pub alive_machines: usize,
    /// The cluster's known machines: serf's members that did not leave, and the shared
    /// config's neighbours.
    pub known_machines: usize,
    /// This node's own compute engine says no machine runs at any lost server's address.
    pub engine_says_gone: bool,
}

/// What to do about a lost quorum.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Quorum is not lost: nothing to rebuild.
    NotLost,
    /// Rebuild now; the evidence.
    Rebuild(String),
    /// Hold back; why (shown to the operator).
    Wait(String),
}

/// The rule at the top of this file, as a table over what the node knows.
pub fn decide(s: &Situation) -> Verdict {
    if !quorum_lost(s.alive_servers, s.failed_servers) {
        return Verdict::NotLost;
    }
    if s.requested {
        return Verdict::Rebuild("known gone".into());
    }
    if s.engine_says_gone {
        return Verdict::Rebuild("known gone: this node's compute engine runs no machine at their addresses".into());
    }
    let servers = s.alive_servers + s.failed_servers;
    if s.alive_machines * 2 <= s.known_machines {
        return Verdict::Wait(format!(
            "quorum lost ({} of {servers} servers alive), and this node sees only {} of {} known \
             machines: it may be the one cut off, so it waits for evidence that the lost servers \
             are gone (`raptiformica agent --recover` here, or the workstation's agent)",
            s.alive_servers, s.alive_machines, s.known_machines
        ));
    }
    if !s.past_grace {
        return Verdict::Wait(format!(
            "quorum lost ({} of {servers} servers alive); waiting out agent/recovery_grace before \
             a rebuild",
            s.alive_servers
        ));
    }
    Verdict::Rebuild(format!(
        "{} of {} known machines see them lost",
        s.alive_machines, s.known_machines
    ))
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

/// The cluster's known machines: the members serf knows that did not leave, and the
/// neighbours of the shared config it may have forgotten.
pub fn known_machines(
    members: &[crate::consensus::api::AgentMember],
    neighbours: &[crate::mesh::neighbours::Neighbour],
) -> usize {
    let mut known: std::collections::BTreeSet<&str> = members
        .iter()
        .filter(|m| m.alive() || m.failed())
        .map(|m| m.name.as_str())
        .collect();
    known.extend(neighbours.iter().map(|n| n.id.as_str()));
    known.len()
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

    fn situation(requested: bool, servers: (usize, usize), machines: (usize, usize), past_grace: bool) -> Situation {
        Situation {
            requested,
            alive_servers: servers.0,
            failed_servers: servers.1,
            past_grace,
            alive_machines: machines.0,
            known_machines: machines.1,
            engine_says_gone: false,
        }
    }

    fn rebuilds(v: &Verdict) -> bool {
        matches!(v, Verdict::Rebuild(_))
    }

    #[test]
    fn the_rebuild_rule_as_a_table() {
        // (asked, (alive, failed) servers, (alive, known) machines, past the grace) => rebuild?
        let table = [
            // Quorum kept: never, asked or not.
            (situation(false, (2, 1), (2, 3), true), false),
            (situation(true, (2, 1), (2, 3), true), false),
            // Asked by someone who knows: at once, whatever this node sees.
            (situation(true, (1, 2), (1, 3), false), true),
            // Three servers, no clients, two lost: the survivor cannot tell, it waits.
            (situation(false, (1, 2), (1, 3), true), false),
            // The one cut off from a five-node cluster sees one of five: it waits.
            (situation(false, (1, 2), (1, 5), true), false),
            // On the majority's side (itself and two clients of five), past the grace: rebuild.
            (situation(false, (1, 2), (3, 5), true), true),
            // ... but not before the grace.
            (situation(false, (1, 2), (3, 5), false), false),
            // Exactly half is not a majority.
            (situation(false, (1, 2), (3, 6), true), false),
            // Machines serf forgot still count: the neighbours keep them known.
            (situation(false, (1, 2), (2, 5), true), false),
        ];
        for (i, (s, want)) in table.iter().enumerate() {
            let got = decide(s);
            assert_eq!(rebuilds(&got), *want, "row {i}: {s:?} gave {got:?}");
            if *s != situation(false, (2, 1), (2, 3), true) && s.alive_servers < 2 && !want {
                assert!(
                    matches!(&got, Verdict::Wait(why) if !why.is_empty()),
                    "row {i}: {got:?}"
                );
            }
        }
        // This node's engine says the lost machines are gone: at once, as if asked.
        let engine = Situation {
            engine_says_gone: true,
            ..situation(false, (1, 2), (1, 3), false)
        };
        assert!(rebuilds(&decide(&engine)));
        let kept = Situation {
            engine_says_gone: true,
            ..situation(false, (2, 1), (2, 3), true)
        };
        assert_eq!(decide(&kept), Verdict::NotLost);
        let Verdict::Wait(why) = decide(&situation(false, (1, 2), (1, 3), true)) else {
            unreachable!()
        };
        assert!(
            why.contains("1 of 3 known machines") && why.contains("agent --recover"),
            "{why}"
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
