//! The pace of the agent's tick: every [`TICK`] while anything moves, every [`REST`] once the
//! node has seen the same settled cluster for [`CALM_AFTER`].
//!
//! At rest the tick found nothing to do, and each one still asked consul for every member
//! (about 40 KB of JSON with a hundred nodes, serialized by consul and parsed by the agent)
//! and read the node's overlay links: with a hundred nodes the agents and the consul answering
//! them were about a quarter of the cluster's CPU at rest. A change of the members' health
//! (the membership watch, a blocking query: it costs nothing while nothing changes) wakes the
//! tick at once, and anything unsettled (a member failed or leaving, no leader, the shared
//! config changed) keeps the quick pace; so a failure is acted on as before, and only a change
//! the watch cannot see (a promotion recorded in the KV, a change queued while consul was away)
//! waits up to [`REST`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::consensus::api::{AgentMember, Serf};

/// The tick while anything moves.
pub const TICK: Duration = Duration::from_secs(2);
/// The tick at rest.
pub const REST: Duration = Duration::from_secs(10);
/// How long the same settled cluster must be seen before the tick slows down.
pub const CALM_AFTER: Duration = Duration::from_secs(30);

/// What decides the pace.
#[derive(Debug, Default)]
pub struct Pace {
    /// What the last tick saw, and since when it has been the same and settled.
    seen: Option<(u64, Instant)>,
}

impl Pace {
    /// Records what a tick saw at `now`: `settled` (every member alive or gone for good, a
    /// leader known), and `what` (anything whose change should keep the quick pace: the
    /// members and their status, the leader, the cached config's version).
    pub fn saw(&mut self, settled: bool, what: impl Hash, now: Instant) {
        if !settled {
            self.seen = None;
            return;
        }
        let mut h = DefaultHasher::new();
        what.hash(&mut h);
        let print = h.finish();
        match self.seen {
            Some((p, _)) if p == print => {}
            _ => self.seen = Some((print, now)),
        }
    }

    /// Something happened that the ticks did not see (a wake from the membership watch, a
    /// tick that failed): the quick pace again.
    pub fn wake(&mut self) {
        self.seen = None;
    }

    /// Whether the tick is at rest at `now`.
    pub fn at_rest(&self, now: Instant) -> bool {
        self.seen
            .is_some_and(|(_, since)| now.duration_since(since) >= CALM_AFTER)
    }

    /// How long after a tick the next one is due, at `now`.
    pub fn period(&self, now: Instant) -> Duration {
        if self.at_rest(now) { REST } else { TICK }
    }
}

/// Each member's name and status, by name: consul lists the members in no set order (a Go
/// map's), and a fingerprint in its order changed at every tick, so the tick never came to
/// rest (a hundred nodes asked for every member every 2 s instead of every 10 s).
pub fn statuses(members: &[AgentMember]) -> Vec<(&str, Serf)> {
    let mut s: Vec<(&str, Serf)> = members.iter().map(|m| (m.name.as_str(), m.status)).collect();
    s.sort_unstable_by(|a, b| a.0.cmp(b.0));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_slows_only_after_the_same_settled_cluster_for_a_while() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = Pace::default();
        assert_eq!(p.period(t0), TICK, "nothing seen yet");
        p.saw(true, ("a", 1), at(0));
        assert_eq!(p.period(at(0)), TICK);
        p.saw(true, ("a", 1), at(29));
        assert_eq!(p.period(at(29)), TICK, "not calm long enough");
        p.saw(true, ("a", 1), at(30));
        assert_eq!(p.period(at(30)), REST);
        // Another member, another config version: calm again from there.
        p.saw(true, ("a", 2), at(40));
        assert_eq!(p.period(at(40)), TICK);
        p.saw(true, ("a", 2), at(70));
        assert_eq!(p.period(at(70)), REST);
    }

    #[test]
    fn anything_unsettled_or_a_wake_keeps_the_quick_pace() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = Pace::default();
        p.saw(true, 7, at(0));
        p.saw(true, 7, at(31));
        assert!(p.at_rest(at(31)));
        p.saw(false, 7, at(32));
        assert_eq!(p.period(at(32)), TICK, "a failed member, no leader");
        p.saw(true, 7, at(33));
        assert_eq!(p.period(at(62)), TICK, "calm counts again from the settled tick");
        assert_eq!(p.period(at(63)), REST);
        p.wake();
        assert_eq!(p.period(at(64)), TICK, "woken by the membership watch");
    }

    fn member(name: &str, status: Serf) -> AgentMember {
        AgentMember {
            name: name.to_string(),
            addr: "200::1".to_string(),
            port: 8301,
            tags: Default::default(),
            status,
            protocol_cur: 2,
        }
    }

    #[test]
    fn the_same_members_in_another_order_let_the_tick_come_to_rest() {
        let one = [
            member("a", Serf::Alive),
            member("b", Serf::Alive),
            member("c", Serf::Left),
        ];
        let other = [one[2].clone(), one[0].clone(), one[1].clone()];
        let t0 = Instant::now();
        let mut pace = Pace::default();
        pace.saw(true, (statuses(&one), "leader"), t0);
        pace.saw(true, (statuses(&other), "leader"), t0 + CALM_AFTER);
        assert!(pace.at_rest(t0 + CALM_AFTER), "consul's order is no change");
        let failed = [
            member("a", Serf::Alive),
            member("b", Serf::Failed),
            member("c", Serf::Left),
        ];
        pace.saw(true, (statuses(&failed), "leader"), t0 + CALM_AFTER);
        assert!(!pace.at_rest(t0 + CALM_AFTER), "a status that changed is one");
    }
}
