//! Bounded peering: each node keeps a few overlay links, not one to every other node.
//!
//! The nodes form a ring ordered by id (ids are hashes of host keys, so the ring is a random
//! order that every node computes alike). A node links with its nearest `links / 2`
//! successors and `links / 2` predecessors that are not known to be down, and dials them
//! (both sides of a pair dial each other, so a node that joined after the other still gets
//! its link: the older side admits only the keys it started with). Every node linking with
//! its ring neighbours keeps the overlay connected; skipping the down ones replaces a lost
//! link with the next node along the ring. With `links + 1` nodes or fewer, everyone links
//! with everyone.
//!
//! The consul servers are hubs besides: every node links with each of them and they with
//! every node. Consul's packets (gossip to random members, every client's RPCs to the
//! servers) then cross at most two links, where across a ring of N nodes they crossed about
//! N/8 and every overlay daemon on the way forwarded them: at 45 nodes that forwarding was
//! most of the cluster's CPU at rest.
//!
//! While at least [`MIN_HUBS`] hubs are up, a node that is not one links with the hubs only.
//! yggdrasil 0.4 takes as a node's parent in its spanning tree the peer it first heard the
//! root from, not the nearest: with ring links besides, most clients hung below another client
//! and the tree grew 6-7 levels deep at 50-60 nodes, and whenever a link near its top changed
//! (a busy or restarted node) the whole subtree below left the tree for 7 s (yggdrasil's
//! "bad news" wait): under a batch of joins, that is when consul's probes failed and members
//! flapped. With the hubs only, every client is one link below a hub. The ring is the
//! fallback: with fewer hubs up a node links with its ring peers as well, so losing the hubs
//! never cuts the others apart.

use std::collections::BTreeSet;

use super::neighbours::{Neighbour, Role};

/// The default number of ring links per node (one on each side), besides the hubs.
pub const DEFAULT_LINKS: usize = 2;

/// The hubs a node must have up to link with them only (see the module's documentation).
pub const MIN_HUBS: usize = 2;

/// The neighbours `me` links with, among `ring` (any order; those without an overlay
/// identity or an address are left out), skipping the ids in `down`: the hubs while at least
/// [`MIN_HUBS`] are up, else its ring peers and the hubs up (every node, if `me` is a hub).
pub fn choose<'a>(me: &str, ring: &'a [Neighbour], links: usize, down: &BTreeSet<String>) -> Vec<&'a Neighbour> {
    let me_hub = is_hub(me, ring);
    let linkable = linkable(me, ring, down);
    if !ring_in_use(me_hub, &linkable) {
        let mut hubs: Vec<&Neighbour> = linkable.into_iter().filter(|n| hub(n)).collect();
        hubs.sort_by(|a, b| a.id.cmp(&b.id));
        return hubs;
    }
    let mut chosen = ring_peers(me, ring, links, down);
    for n in linkable {
        if (me_hub || hub(n)) && !chosen.iter().any(|c| c.id == n.id) {
            chosen.push(n);
        }
    }
    chosen.sort_by(|a, b| a.id.cmp(&b.id));
    chosen
}

/// Whether `me` links with its ring peers, given the ids in `down`: a hub always does (it
/// links with every node), another node when fewer than [`MIN_HUBS`] hubs are up.
pub fn uses_ring(me: &str, ring: &[Neighbour], down: &BTreeSet<String>) -> bool {
    ring_in_use(is_hub(me, ring), &linkable(me, ring, down))
}

fn ring_in_use(me_hub: bool, linkable: &[&Neighbour]) -> bool {
    me_hub || linkable.iter().filter(|n| hub(n)).count() < MIN_HUBS
}

fn is_hub(me: &str, ring: &[Neighbour]) -> bool {
    ring.iter().any(|n| n.id == me && hub(n))
}

fn hub(n: &Neighbour) -> bool {
    n.consul_role == Some(Role::Server)
}

/// Only the ring: `me`'s nearest `links / 2` on each side (everyone, in a ring that small).
pub fn ring_peers<'a>(me: &str, ring: &'a [Neighbour], links: usize, down: &BTreeSet<String>) -> Vec<&'a Neighbour> {
    let mut others = linkable(me, ring, down);
    others.sort_by(|a, b| a.id.cmp(&b.id));
    let half = (links / 2).max(1);
    if others.len() <= 2 * half {
        return others;
    }
    // Where `me` sits in the ring: the first id after it.
    let start = others.partition_point(|n| n.id.as_str() < me);
    let n = others.len();
    let mut chosen: Vec<&Neighbour> = Vec::with_capacity(2 * half);
    for i in 0..half {
        chosen.push(others[(start + i) % n]);
    }
    for i in 1..=half {
        let p = others[(start + n - i) % n];
        if !chosen.iter().any(|c| c.id == p.id) {
            chosen.push(p);
        }
    }
    chosen.sort_by(|a, b| a.id.cmp(&b.id));
    chosen
}

/// The other nodes a link could go to: on the overlay, with an address, not down.
fn linkable<'a>(me: &str, ring: &'a [Neighbour], down: &BTreeSet<String>) -> Vec<&'a Neighbour> {
    ring.iter()
        .filter(|n| n.id != me && n.on_overlay() && n.host.is_some() && !down.contains(&n.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> Neighbour {
        Neighbour {
            host: Some(format!("h-{id}")),
            overlay_public_key: Some(format!("k-{id}")),
            overlay_address: Some("200::1".parse().unwrap()),
            ..Neighbour::unknown(id)
        }
    }

    fn ids(v: &[&Neighbour]) -> Vec<String> {
        v.iter().map(|n| n.id.clone()).collect()
    }

    #[test]
    fn small_clusters_link_everyone() {
        let ring: Vec<Neighbour> = ["a", "b", "c", "d", "e"].map(node).into();
        assert_eq!(ids(&choose("a", &ring, 4, &BTreeSet::new())), ["b", "c", "d", "e"]);
    }

    #[test]
    fn ring_neighbours_on_both_sides_and_the_down_ones_are_skipped() {
        let ring: Vec<Neighbour> = (0..10).map(|i| node(&format!("n{i}"))).collect();
        assert_eq!(ids(&choose("n0", &ring, 4, &BTreeSet::new())), ["n1", "n2", "n8", "n9"]);
        let down = BTreeSet::from(["n1".to_string(), "n9".to_string()]);
        assert_eq!(ids(&choose("n0", &ring, 4, &down)), ["n2", "n3", "n7", "n8"]);
    }

    #[test]
    fn every_node_keeps_few_links_and_the_overlay_stays_connected() {
        let ring: Vec<Neighbour> = (0..50).map(|i| node(&format!("{:04x}", i * 7919 % 65536))).collect();
        let down = BTreeSet::from([ring[3].id.clone(), ring[17].id.clone()]);
        let alive: Vec<&Neighbour> = ring.iter().filter(|n| !down.contains(&n.id)).collect();
        assert!(alive.iter().all(|n| choose(&n.id, &ring, 4, &down).len() <= 4));
        // Links are used both ways: an edge if either side chose the other.
        let edges = edges(&ring, 4, &down);
        assert!(diameter(&ring, &edges, &down).is_some(), "every live node reached");
        let degree = |id: &str| edges.iter().filter(|(a, b)| a == id || b == id).count();
        assert!(alive.iter().all(|n| degree(&n.id) <= 6), "bounded degree");
    }

    /// The links both ways: an edge where either side chose the other.
    fn edges(ring: &[Neighbour], links: usize, down: &BTreeSet<String>) -> BTreeSet<(String, String)> {
        let mut edges = BTreeSet::new();
        for n in ring.iter().filter(|n| !down.contains(&n.id)) {
            for c in choose(&n.id, ring, links, down) {
                edges.insert((n.id.clone().min(c.id.clone()), n.id.clone().max(c.id.clone())));
            }
        }
        edges
    }

    /// The most links a packet crosses between two live nodes (None: not connected).
    fn diameter(ring: &[Neighbour], edges: &BTreeSet<(String, String)>, down: &BTreeSet<String>) -> Option<usize> {
        let live: Vec<&String> = ring.iter().map(|n| &n.id).filter(|id| !down.contains(*id)).collect();
        let mut worst = 0;
        for from in &live {
            let mut dist = std::collections::BTreeMap::from([((*from).clone(), 0usize)]);
            let mut queue = std::collections::VecDeque::from([(*from).clone()]);
            while let Some(x) = queue.pop_front() {
                let d = dist[&x];
                for (a, b) in edges {
                    let other = if *a == x {
                        b
                    } else if *b == x {
                        a
                    } else {
                        continue;
                    };
                    if !dist.contains_key(other) {
                        dist.insert(other.clone(), d + 1);
                        queue.push_back(other.clone());
                    }
                }
            }
            if dist.len() < live.len() {
                return None;
            }
            worst = worst.max(dist.values().copied().max().unwrap_or(0));
        }
        Some(worst)
    }

    #[test]
    fn the_servers_are_hubs_two_links_apart_from_anyone_and_the_ring_holds_without_them() {
        let mut ring: Vec<Neighbour> = (0..100).map(|i| node(&format!("{:04x}", i * 7919 % 65536))).collect();
        let none = BTreeSet::new();
        // A plain ring of 100 with one link on each side: paths of up to 50 links.
        assert_eq!(diameter(&ring, &edges(&ring, 2, &none), &none), Some(50));
        for i in [10, 40, 70] {
            ring[i].consul_role = Some(Role::Server);
        }
        let e = edges(&ring, 2, &none);
        assert_eq!(diameter(&ring, &e, &none), Some(2), "any two nodes meet at a hub");
        let degree = |id: &str| e.iter().filter(|(a, b)| a == id || b == id).count();
        for (i, n) in ring.iter().enumerate() {
            if [10, 40, 70].contains(&i) {
                assert_eq!(degree(&n.id), 99, "a hub links with every node");
            } else {
                assert_eq!(degree(&n.id), 3, "a client: the 3 hubs only");
            }
        }
        // A hub sees a client as any client does: the client is chosen by the hub too.
        let client = &ring[5].id;
        assert!(choose(&ring[10].id, &ring, 2, &none).iter().any(|n| &n.id == client));
        // One hub down: the two others suffice; two down: the ring and the last hub.
        let one: BTreeSet<String> = [ring[10].id.clone()].into();
        assert_eq!(choose(client, &ring, 2, &one).len(), 2);
        let two: BTreeSet<String> = [10, 40].map(|i| ring[i].id.clone()).into();
        let chosen = choose(client, &ring, 2, &two);
        assert_eq!(chosen.len(), 3, "{:?}", ids(&chosen));
        assert!(chosen.iter().any(|n| n.id == ring[70].id));
        assert!(diameter(&ring, &edges(&ring, 2, &two), &two).is_some());
        // Every hub down: the ring (around the down ones) still connects the rest.
        let down: BTreeSet<String> = [10, 40, 70].map(|i| ring[i].id.clone()).into();
        assert!(diameter(&ring, &edges(&ring, 2, &down), &down).is_some());
        // The ring alone, for rejoining: no hubs in it.
        assert_eq!(ring_peers(client, &ring, 2, &none).len(), 2);
    }

    #[test]
    fn a_node_not_yet_in_the_ring_finds_its_place() {
        let ring: Vec<Neighbour> = ["b", "d", "f", "h", "j", "l"].map(node).into();
        assert_eq!(ids(&choose("e", &ring, 2, &BTreeSet::new())), ["d", "f"]);
    }
}
