//! The rules the agent enforces, as a pure decision over what it sees. Today one rule:
//! `min_servers` voting consul servers alive.
//!
//! - Enough servers: nothing to do.
//! - No leader and quorum lost (fewer servers alive than a majority of those alive and
//!   failed): consensus is rebuilt on the survivors first (a new server cannot join a cluster
//!   without a leader); the workstation asks for it once it knows the lost machines are gone.
//!   No leader otherwise (an election): wait.
//! - Too few and a client is alive: promote it (cheap, no new machine; the first by name),
//!   once the shortage has lasted [`PROMOTION_SETTLE`] or a lost machine is known gone: a
//!   server a busy machine's gossip calls failed for a moment comes back, and a client promoted
//!   meanwhile would make a fourth server for good.
//! - Too few, no client, and the lost servers failed past the grace or their machines are
//!   known to be gone (or the cluster has been short for the grace, e.g. the lost ones were
//!   evicted already): replace them by spawning
//!   (only an agent with a compute back-end can; nodes leave that to the workstation). A
//!   shortage younger than the grace is waited out: a promoted client restarting as a server
//!   leaves the members for a moment.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::consensus::api::AgentMember;

/// A member as the rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub name: String,
    /// A consul server (tagged so), voting or not yet.
    pub server: bool,
    /// In raft's configuration as a voter (true when the configuration could not be read).
    pub voter: bool,
    pub alive: bool,
    /// How long it has been failed, if it is.
    pub failed_for: Option<Duration>,
    /// Failed, and its machine is known to be gone (the compute back-end says so): no grace.
    pub gone: bool,
    /// A client an agent promoted this long ago, not serving yet (its consul restarts as a
    /// server: it leaves the members for a moment, then joins as a non-voter).
    pub promoted_for: Option<Duration>,
}

/// How long a promoted client is waited for before another one is promoted in its place.
pub const PROMOTION_PATIENCE: Duration = Duration::from_secs(120);

/// How long servers must be short before a client is promoted (unless a lost one is known
/// gone). consul marks a server failed after a few seconds of missed probes; on a loaded
/// machine one that was only slow refutes it within seconds.
pub const PROMOTION_SETTLE: Duration = Duration::from_secs(15);

/// The members that count (alive or failed; left ones do not), with how long each failed one
/// has been failed (`failed_since`: when this agent first saw it failed).
/// `voters`: the voting servers in the raft configuration, when it could be read; a server
/// that does not vote (yet) does not count as one. `gone`: failed members whose machines are
/// known to be gone. `promoted`: the nodes agents promoted, with how long ago (a promoted
/// client that left to restart as a server counts too).
pub fn seen(
    members: &[AgentMember],
    failed_since: &HashMap<String, Instant>,
    voters: Option<&[String]>,
    gone: &HashSet<String>,
    promoted: &HashMap<String, Duration>,
) -> Vec<Seen> {
    members
        .iter()
        .map(|m| {
            let server = m.tags.get("role").map(String::as_str) == Some("consul");
            let promoted_for = (!server).then(|| promoted.get(&m.name).copied()).flatten();
            (m, server, promoted_for)
        })
        .filter(|(m, _, promoted_for)| m.alive() || m.failed() || promoted_for.is_some())
        .map(|(m, server, promoted_for)| Seen {
            name: m.name.clone(),
            server,
            voter: voters.is_none_or(|v| v.contains(&m.name)),
            alive: m.alive(),
            failed_for: failed_since.get(&m.name).map(|t| t.elapsed()),
            gone: m.failed() && gone.contains(&m.name),
            promoted_for,
        })
        .collect()
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    /// Why the agent waits.
    Wait(String),
    Promote(String),
    /// Quorum is lost: the survivors rebuild consensus, if `lost` are gone for good.
    Recover {
        lost: Vec<String>,
    },
    /// Spawn `count` servers; `lost` are the failed servers they replace (to prune).
    Replace {
        lost: Vec<String>,
        count: usize,
    },
}

pub fn decide(
    members: &[Seen],
    has_leader: bool,
    min_servers: usize,
    grace: Duration,
    short_for: Duration,
) -> Decision {
    let alive_servers = members.iter().filter(|m| m.server && m.voter && m.alive).count();
    if alive_servers >= min_servers {
        return Decision::Nothing;
    }
    if let Some(joining) = members.iter().find(|m| m.server && !m.voter && m.alive) {
        return Decision::Wait(format!(
            "server {} joined and is not voting yet (autopilot makes it a voter once it keeps up)",
            joining.name
        ));
    }
    if !has_leader {
        let alive = members.iter().filter(|m| m.server && m.alive).count();
        let mut lost: Vec<String> = members
            .iter()
            .filter(|m| m.server && !m.alive)
            .map(|m| m.name.clone())
            .collect();
        if super::recover::quorum_lost(alive, lost.len()) {
            lost.sort();
            return Decision::Recover { lost };
        }
        return Decision::Wait(format!(
            "{alive_servers} of {min_servers} servers alive and no leader: consensus is rebuilt first"
        ));
    }
    if let Some(on_its_way) = members
        .iter()
        .find(|m| !m.server && m.promoted_for.is_some_and(|p| p < PROMOTION_PATIENCE))
    {
        return Decision::Wait(format!(
            "client {} was promoted {}s ago and is restarting as a server",
            on_its_way.name,
            on_its_way.promoted_for.unwrap_or_default().as_secs()
        ));
    }
    // A client promoted long ago that still does not serve is passed over.
    let mut clients: Vec<&Seen> = members
        .iter()
        .filter(|m| !m.server && m.alive && m.promoted_for.is_none())
        .collect();
    clients.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(c) = clients.first() {
        let known_gone = members.iter().any(|m| m.server && m.gone);
        if short_for < PROMOTION_SETTLE && !known_gone {
            return Decision::Wait(format!(
                "{alive_servers} of {min_servers} servers alive for {}s; client {} is promoted after {}s \
                 unless the lost server comes back",
                short_for.as_secs(),
                c.name,
                PROMOTION_SETTLE.as_secs()
            ));
        }
        return Decision::Promote(c.name.clone());
    }
    let failed: Vec<&Seen> = members.iter().filter(|m| m.server && m.failed_for.is_some()).collect();
    if let Some(young) = failed
        .iter()
        .find(|m| !m.gone && m.failed_for.is_some_and(|f| f < grace))
    {
        return Decision::Wait(format!(
            "server {} failed {}s ago; replaced after {}s",
            young.name,
            young.failed_for.unwrap_or_default().as_secs(),
            grace.as_secs()
        ));
    }
    let mut lost: Vec<String> = failed.iter().map(|m| m.name.clone()).collect();
    lost.sort();
    if lost.is_empty() && short_for < grace {
        return Decision::Wait(format!(
            "{alive_servers} of {min_servers} servers alive for {}s; a machine is spawned after {}s",
            short_for.as_secs(),
            grace.as_secs()
        ));
    }
    Decision::Replace {
        lost,
        count: min_servers - alive_servers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, server: bool, alive: bool, failed: Option<u64>) -> Seen {
        Seen {
            name: name.into(),
            server,
            voter: server,
            alive,
            failed_for: failed.map(Duration::from_secs),
            gone: false,
            promoted_for: None,
        }
    }
    const G: Duration = Duration::from_secs(30);

    #[test]
    fn enough_servers_is_calm() {
        let ms = [
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, true, None),
        ];
        assert_eq!(decide(&ms, true, 3, G, G), Decision::Nothing);
    }

    #[test]
    fn a_client_is_promoted_before_any_spawn() {
        let ms = [
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, false, Some(2)),
            m("e", false, true, None),
            m("d", false, true, None),
        ];
        assert_eq!(decide(&ms, true, 3, G, G), Decision::Promote("d".into()));
    }

    #[test]
    fn a_young_shortage_is_waited_out_before_a_promotion_unless_the_machine_is_gone() {
        let mut ms = vec![
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, false, Some(2)),
            m("d", false, true, None),
        ];
        let young = PROMOTION_SETTLE - Duration::from_secs(1);
        // c may be a busy server its peers called failed for a moment: d is not promoted yet.
        assert!(matches!(decide(&ms, true, 3, G, young), Decision::Wait(_)));
        assert_eq!(decide(&ms, true, 3, G, PROMOTION_SETTLE), Decision::Promote("d".into()));
        ms[2].gone = true;
        assert_eq!(decide(&ms, true, 3, G, young), Decision::Promote("d".into()));
    }

    #[test]
    fn a_promoted_client_is_waited_for_not_doubled() {
        let mut ms = vec![
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, false, Some(9)),
            m("d", false, false, None),
            m("e", false, true, None),
        ];
        // d was promoted and left to restart its consul as a server: e is not promoted too.
        ms[3].promoted_for = Some(Duration::from_secs(5));
        assert!(matches!(decide(&ms, true, 3, G, G), Decision::Wait(_)));
        // d alive again but still a client (its consul not restarted yet): still waited for.
        ms[3].alive = true;
        assert!(matches!(decide(&ms, true, 3, G, G), Decision::Wait(_)));
        // Past the patience, d is passed over and e promoted.
        ms[3].promoted_for = Some(PROMOTION_PATIENCE);
        assert_eq!(decide(&ms, true, 3, G, G), Decision::Promote("e".into()));
    }

    #[test]
    fn without_clients_a_lost_server_is_replaced_after_the_grace() {
        let mut ms = vec![
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, false, Some(5)),
        ];
        assert!(matches!(decide(&ms, true, 3, G, G), Decision::Wait(_)));
        ms[2].gone = true;
        assert_eq!(
            decide(&ms, true, 3, G, G),
            Decision::Replace {
                lost: vec!["c".into()],
                count: 1
            },
            "a machine known gone is replaced at once"
        );
        ms[2].gone = false;
        ms[2].failed_for = Some(Duration::from_secs(31));
        assert_eq!(
            decide(&ms, true, 3, G, G),
            Decision::Replace {
                lost: vec!["c".into()],
                count: 1
            }
        );
        // A higher minimum with nothing lost spawns the difference.
        let ms = [
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, true, None),
        ];
        assert_eq!(decide(&ms, true, 5, G, G), Decision::Replace { lost: vec![], count: 2 });
        // ... but not while the shortage is young (a promoted client restarting, say).
        assert!(matches!(
            decide(&ms, true, 5, G, Duration::from_secs(3)),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn a_joining_server_is_waited_for_not_replaced_twice() {
        let mut joining = m("c", true, true, None);
        joining.voter = false;
        let ms = [m("a", true, true, None), m("b", true, true, None), joining];
        assert!(matches!(decide(&ms, true, 3, G, G), Decision::Wait(_)));
    }

    #[test]
    fn no_leader_and_quorum_lost_asks_for_the_rebuild() {
        let ms = [
            m("a", true, true, None),
            m("b", true, false, Some(9)),
            m("c", true, false, Some(9)),
        ];
        assert_eq!(
            decide(&ms, false, 3, G, G),
            Decision::Recover {
                lost: vec!["b".into(), "c".into()]
            }
        );
        // One of three lost and no leader: an election, not a loss of quorum.
        let ms = [
            m("a", true, true, None),
            m("b", true, true, None),
            m("c", true, false, Some(9)),
        ];
        assert!(matches!(decide(&ms, false, 3, G, G), Decision::Wait(_)));
    }
}
