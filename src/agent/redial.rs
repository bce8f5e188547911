//! Redialing overlay peers without piling up yggdrasil's own retries. Each dial of a peer that
//! answers and then refuses us (it does not admit our key yet) starts a loop in yggdrasil
//! 0.4.7 that dials it again every second, for ever. So a peer that answers on its port and
//! stays unlinked is dialed again only after a doubling wait (2 s, 4 s, ... up to 5 min). A
//! peer that does not answer (an outage: the dial fails, no loop) is dialed every 2 s, so
//! links come back within seconds when the outage ends. A live link resets the count.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::mesh::Peer;

const FIRST: Duration = Duration::from_secs(2);
const LONGEST: Duration = Duration::from_secs(300);

/// When each unlinked peer (by key) was last dialed, and how many times in a row.
#[derive(Debug, Default)]
pub struct Redials {
    tried: HashMap<String, (Instant, u32)>,
}

impl Redials {
    /// The peers to dial now among `peers`, given the keys with a live link and whether a peer
    /// answers on its port; records them as dialed.
    pub fn due(
        &mut self,
        peers: &[Peer],
        linked: &BTreeSet<String>,
        now: Instant,
        answers: impl Fn(&Peer) -> bool,
    ) -> Vec<Peer> {
        self.tried
            .retain(|k, _| !linked.contains(k) && peers.iter().any(|p| &p.public_key == k));
        let mut due = Vec::new();
        for p in peers.iter().filter(|p| !linked.contains(&p.public_key)) {
            let ready = match self.tried.get(&p.public_key) {
                None => true,
                Some((at, n)) => now.duration_since(*at) >= wait(*n),
            };
            if ready {
                // Only a peer that answers can refuse us (and so start a loop).
                let n = match self.tried.get(&p.public_key) {
                    Some((_, n)) if answers(p) => n + 1,
                    None if answers(p) => 1,
                    _ => 0,
                };
                self.tried.insert(p.public_key.clone(), (now, n));
                due.push(p.clone());
            }
        }
        due
    }
}

/// The longest wait between two consul joins of one ring peer that is not an alive member.
const REJOIN_LONGEST: Duration = Duration::from_secs(16);

/// Consul joins of ring peers that are not alive members, spaced: the first at once, then
/// after 2 s, 4 s, 8 s, and every 16 s. A member that only looks failed because its machine is
/// too busy to answer probes was joined by each of its ring peers every 2 s (a full exchange
/// of the member list each time), which kept a loaded cluster loaded. Alive again: the count
/// starts over. (consul itself also tries failed members again every 30 s.)
#[derive(Debug, Default)]
pub struct Rejoins {
    tried: HashMap<String, (Instant, u32)>,
}

impl Rejoins {
    /// Which of `not_alive` (node ids) to join now; records them as joined.
    pub fn due(&mut self, not_alive: &[String], now: Instant) -> BTreeSet<String> {
        self.tried.retain(|id, _| not_alive.contains(id));
        let mut due = BTreeSet::new();
        for id in not_alive {
            let ready = self
                .tried
                .get(id)
                .is_none_or(|(at, n)| now.duration_since(*at) >= wait(*n).min(REJOIN_LONGEST));
            if ready {
                let n = self.tried.get(id).map_or(1, |(_, n)| n + 1);
                self.tried.insert(id.clone(), (now, n));
                due.insert(id.clone());
            }
        }
        due
    }
}

/// Whether a peer's overlay port takes a TCP connection within 300 ms (blocking, briefly).
pub fn answers(p: &Peer) -> bool {
    use std::net::ToSocketAddrs as _;
    let Ok(Some(addr)) = (p.host.as_str(), p.port).to_socket_addrs().map(|mut a| a.next()) else {
        return false;
    };
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The wait after `n` dials in a row of a peer that answered.
fn wait(n: u32) -> Duration {
    FIRST.saturating_mul(1 << n.saturating_sub(1).min(16)).min(LONGEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(k: &str) -> Peer {
        Peer {
            public_key: k.into(),
            host: "h".into(),
            port: 1,
        }
    }

    #[test]
    fn a_refusing_peer_is_dialed_less_and_less_often_and_a_link_resets_it() {
        let mut r = Redials::default();
        let peers = [peer("a"), peer("b")];
        let linked: BTreeSet<String> = ["b".to_string()].into();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let keys = |v: Vec<Peer>| v.into_iter().map(|p| p.public_key).collect::<Vec<_>>();
        let answers = |_: &Peer| true;
        assert_eq!(
            keys(r.due(&peers, &linked, at(0), answers)),
            ["a"],
            "a linked peer is left alone"
        );
        assert!(r.due(&peers, &linked, at(1), answers).is_empty());
        assert_eq!(keys(r.due(&peers, &linked, at(2), answers)), ["a"]);
        // Now the wait is 4 s, then 8 s.
        assert!(r.due(&peers, &linked, at(5), answers).is_empty());
        assert_eq!(keys(r.due(&peers, &linked, at(6), answers)), ["a"]);
        assert!(r.due(&peers, &linked, at(13), answers).is_empty());
        assert_eq!(keys(r.due(&peers, &linked, at(14), answers)), ["a"]);
        // Linked once: the count starts again.
        let both: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(r.due(&peers, &both, at(15), answers).is_empty());
        assert_eq!(keys(r.due(&peers, &linked, at(16), answers)), ["a"]);
        assert_eq!(wait(40), LONGEST);
    }

    #[test]
    fn a_member_that_stays_down_is_joined_less_and_less_often_and_alive_resets_it() {
        let mut r = Rejoins::default();
        let t0 = Instant::now();
        let down = ["a".to_string()];
        let joined_at: Vec<u64> = (0..60)
            .filter(|s| !r.due(&down, t0 + Duration::from_secs(*s)).is_empty())
            .collect();
        assert_eq!(joined_at, [0, 2, 6, 14, 30, 46], "2 s, 4 s, 8 s, then every 16 s");
        // Alive for a moment: joined at once when it is down again.
        assert!(r.due(&[], t0 + Duration::from_secs(61)).is_empty());
        assert_eq!(r.due(&down, t0 + Duration::from_secs(62)).len(), 1);
    }

    #[test]
    fn a_peer_that_does_not_answer_is_dialed_every_two_seconds() {
        let mut r = Redials::default();
        let peers = [peer("a")];
        let none = BTreeSet::new();
        let t0 = Instant::now();
        for s in (0..60).step_by(2) {
            let due = r.due(&peers, &none, t0 + Duration::from_secs(s), |_| false);
            assert_eq!(due.len(), 1, "at {s} s");
        }
    }
}
