//! What a node's overlay should be, from the shared config: the cluster's settings for the
//! mesh (keys, the number of servers and of links) and each node's [`OverlayPlan`].

use std::collections::BTreeSet;

use anyhow::bail;

use super::neighbours;
use super::{Peer, peering};
use crate::config::Mapping;

/// The gossip encryption key's place in the shared config (the original's name).
pub const GOSSIP_KEY: &str = "raptiformica/meshnet/consul/password";
/// How many voting consul servers (3 or 5).
pub const SERVERS_KEY: &str = "raptiformica/meshnet/consul/servers";
/// yggdrasil's underlay port.
pub const PORT_KEY: &str = "raptiformica/meshnet/yggdrasil/port";
/// How many overlay links each node keeps.
pub const LINKS_KEY: &str = "raptiformica/meshnet/yggdrasil/links";

/// yggdrasil's underlay port unless `meshnet/yggdrasil/port` says otherwise.
pub const DEFAULT_PORT: u16 = 12345;

/// Nodes needed before consul starts.
pub const QUORUM: usize = crate::consensus::agent::BOOTSTRAP_EXPECT;

/// The number of voting servers from the config: 3 or 5.
pub fn servers(mapping: &Mapping) -> anyhow::Result<usize> {
    match mapping.get(SERVERS_KEY) {
        None => Ok(3),
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
            Some(n @ (3 | 5)) => Ok(n as usize),
            _ => {
                bail!("`{SERVERS_KEY}` must be 3 or 5, not {v}; fix it with `raptiformica config set {SERVERS_KEY} 3`")
            }
        },
    }
}

/// What a node's overlay should do: see [`overlay_plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayPlan {
    /// The peers to dial.
    pub dial: Vec<Peer>,
    /// The keys of every peer it links with: its overlay must admit them (they dial it).
    pub admit: Vec<String>,
    /// The keys it admits: every neighbour's.
    pub allowed: Vec<String>,
    /// Ring peers it does not dial: they do not admit it (they dial it instead).
    pub refused_by: Vec<Peer>,
}

/// The overlay links of node `id` (bounded, see [`peering`](super::peering)). A neighbour in
/// `down` is replaced (by the next one along the ring, or by the ring when too few hubs are
/// up), and kept: if this node is the one cut
/// off, everyone looks down from here, and dropping them all would leave nobody to dial when
/// the cut heals. A peer whose published admissions (see [`admits_upto`]) leave this node out
/// is not dialed (it would refuse, and yggdrasil would redial it every second for ever): it
/// dials this node instead.
pub fn overlay_plan(mapping: &Mapping, id: &str, down: &BTreeSet<String>) -> anyhow::Result<OverlayPlan> {
    let all = neighbours::all(mapping);
    let links = links(mapping)?;
    let mut chosen = peering::choose(id, &all, links, down);
    let none = BTreeSet::new();
    let mut kept = peering::choose(id, &all, links, &none);
    if peering::uses_ring(id, &all, down) {
        // Too few hubs up: the ring peers, down or not, as well (if every node looks down
        // from here, the hubs are not the only way back).
        kept.extend(peering::ring_peers(id, &all, links, &none));
    }
    for n in kept {
        if !chosen.iter().any(|c| c.id == n.id) {
            chosen.push(n);
        }
    }
    let peer = |n: &neighbours::Neighbour| {
        Some(Peer {
            public_key: n.overlay_public_key.clone()?,
            host: n.host.clone()?,
            port: n.overlay_port.unwrap_or(DEFAULT_PORT),
        })
    };
    let unknown = neighbours::Neighbour::unknown(id);
    let me = all.iter().find(|n| n.id == id).unwrap_or(&unknown);
    let (dial, refused_by): (Vec<_>, Vec<_>) = chosen.iter().partition(|n| n.admits(me));
    let dial = dial.into_iter().filter_map(&peer).collect();
    let refused_by = refused_by.into_iter().filter_map(peer).collect();
    let admit = chosen.iter().filter_map(|n| n.overlay_public_key.clone()).collect();
    let allowed = all
        .iter()
        .filter(|n| n.on_overlay())
        .filter_map(|n| n.overlay_public_key.clone())
        .collect();
    Ok(OverlayPlan {
        dial,
        admit,
        allowed,
        refused_by,
    })
}

/// Node `id`'s ring peers, up or down, without the hubs (see [`peering`](super::peering)).
pub fn ring(mapping: &Mapping, id: &str) -> Vec<neighbours::Neighbour> {
    let all = neighbours::all(mapping);
    let links = links(mapping).unwrap_or(peering::DEFAULT_LINKS);
    peering::ring_peers(id, &all, links, &BTreeSet::new())
        .into_iter()
        .cloned()
        .collect()
}

/// The number of overlay links per node from the config (2 to 64).
pub fn links(mapping: &Mapping) -> anyhow::Result<usize> {
    match mapping.get(LINKS_KEY) {
        None => Ok(peering::DEFAULT_LINKS),
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())) {
            Some(n @ 2..=64) => Ok(n as usize),
            _ => bail!(
                "`{LINKS_KEY}` must be a whole number from 2 to 64, not {v}; fix it with `raptiformica config set {LINKS_KEY} {}`",
                peering::DEFAULT_LINKS
            ),
        },
    }
}

/// What a node publishes as `yggdrasil_admits_upto`, its running overlay admitting the keys
/// `admitted` (empty: every key): `all`, or the highest `yggdrasil_since` up to which it
/// admits every other neighbour (0: none known). A node's overlay admits the keys it knew when
/// it started, so this is the since of the last node before the first one it does not admit.
/// A node not known here yet counts as not admitted by the others until this is published
/// again (every few seconds, from a fresh copy): never more than the overlay admits.
pub fn admits_upto(mapping: &Mapping, me: &str, admitted: &BTreeSet<String>) -> String {
    if admitted.is_empty() {
        return neighbours::ADMITS_ALL.to_string();
    }
    let mut stamped: Vec<(u64, bool)> = neighbours::all(mapping)
        .into_iter()
        .filter(|n| n.id != me)
        .filter_map(|n| {
            let since = n.overlay_since?;
            Some((since, n.overlay_public_key.is_some_and(|k| admitted.contains(&k))))
        })
        .collect();
    // A key not admitted sorts first among equals: its since is no longer admitted.
    stamped.sort();
    let upto = stamped
        .iter()
        .take_while(|(_, admitted)| *admitted)
        .last()
        .map_or(0, |(since, _)| *since);
    upto.to_string()
}

/// The cluster's id: the first 16 hex digits of the SHA-256 of its gossip key, which every
/// machine of the cluster holds and no other cluster shares (the key itself never shows).
pub fn cluster_id(gossip_key: &str) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(format!("raptiformica cluster {gossip_key}").as_bytes());
    sum.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_cluster_id_is_stable_short_and_hides_the_key() {
        let a = super::cluster_id("c2VjcmV0LWtleS1vbmU=");
        assert_eq!(a, super::cluster_id("c2VjcmV0LWtleS1vbmU="));
        assert_ne!(a, super::cluster_id("b3RoZXIta2V5"));
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()) && !a.contains("c2Vj"));
    }
    use super::*;
    use crate::mesh::neighbours;
    use serde_json::Value;

    fn ring(n: usize) -> Mapping {
        let mut m = Mapping::new();
        for i in 0..n {
            let id = format!("n{i:02}");
            for (f, v) in [
                ("host", format!("10.0.0.{i}")),
                ("yggdrasil_public_key", format!("k{i:02}")),
                ("yggdrasil_address", format!("200::{i}")),
            ] {
                m.insert(format!("{}/{id}/{f}", neighbours::NEIGHBOURS), Value::from(v));
            }
        }
        m
    }

    fn keys(peers: &[Peer]) -> Vec<&str> {
        let mut k: Vec<&str> = peers.iter().map(|p| p.public_key.as_str()).collect();
        k.sort();
        k
    }

    #[test]
    fn a_down_peer_is_replaced_along_the_ring_and_kept() {
        let m = ring(10);
        let plan = overlay_plan(&m, "n05", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k04", "k06"]);
        assert_eq!(plan.allowed.len(), 10);
        let down: BTreeSet<String> = ["n06".to_string()].into();
        let plan = overlay_plan(&m, "n05", &down).unwrap();
        assert_eq!(keys(&plan.dial), ["k04", "k06", "k07"]);
    }

    #[test]
    fn every_node_dials_the_servers_and_a_server_dials_everyone() {
        let mut m = ring(10);
        m.insert(neighbours::key("n01", "consul_role"), Value::from("server"));
        m.insert(neighbours::key("n05", "consul_role"), Value::from("client"));
        let plan = overlay_plan(&m, "n05", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k01", "k04", "k06"]);
        let plan = overlay_plan(&m, "n01", &BTreeSet::new()).unwrap();
        assert_eq!(plan.dial.len(), 9);
        // With a wider ring, as `meshnet/yggdrasil/links` may say.
        m.insert(LINKS_KEY.to_string(), Value::from(4));
        let plan = overlay_plan(&m, "n05", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k01", "k03", "k04", "k06", "k07"]);
    }

    #[test]
    fn with_the_hubs_up_a_client_dials_them_only_and_the_ring_when_they_are_down() {
        let mut m = ring(10);
        for s in ["n01", "n04", "n08"] {
            m.insert(neighbours::key(s, "consul_role"), Value::from("server"));
        }
        let none = BTreeSet::new();
        assert_eq!(
            keys(&overlay_plan(&m, "n05", &none).unwrap().dial),
            ["k01", "k04", "k08"]
        );
        assert_eq!(
            overlay_plan(&m, "n04", &none).unwrap().dial.len(),
            9,
            "a hub dials everyone"
        );
        // Two hubs down: the ring peers besides, and the down hubs kept.
        let down: BTreeSet<String> = ["n01".to_string(), "n04".to_string()].into();
        assert_eq!(
            keys(&overlay_plan(&m, "n05", &down).unwrap().dial),
            ["k01", "k03", "k04", "k06", "k08"]
        );
        // Everyone down from here (the hubs gone, or this node cut off): hubs and ring peers.
        let all: BTreeSet<String> = (0..10).map(|i| format!("n{i:02}")).filter(|id| id != "n05").collect();
        assert_eq!(
            keys(&overlay_plan(&m, "n05", &all).unwrap().dial),
            ["k01", "k04", "k06", "k08"],
            "n04 is a hub and n05's ring predecessor (skipping nobody: all down)"
        );
    }

    #[test]
    fn a_node_that_sees_everyone_down_still_dials_its_peers() {
        let m = ring(3);
        let down: BTreeSet<String> = ["n00".to_string(), "n02".to_string()].into();
        let plan = overlay_plan(&m, "n01", &down).unwrap();
        assert_eq!(keys(&plan.dial), ["k00", "k02"]);
    }

    #[test]
    fn a_peer_that_does_not_admit_us_is_not_dialed_but_still_admitted() {
        let mut m = ring(3);
        m.insert(
            format!("{}/n00/yggdrasil_admits", neighbours::NEIGHBOURS),
            Value::from("n02"),
        );
        m.insert(
            format!("{}/n02/yggdrasil_admits", neighbours::NEIGHBOURS),
            Value::from("n00,n01"),
        );
        let plan = overlay_plan(&m, "n01", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k02"], "n00 refuses n01: it dials n01 instead");
        let mut admit = plan.admit.clone();
        admit.sort();
        assert_eq!(admit, ["k00", "k02"]);
    }

    /// `ring(n)` with each node's key written at index 10 × (i + 1).
    fn stamped(n: usize) -> Mapping {
        let mut m = ring(n);
        for i in 0..n {
            m.insert(
                neighbours::key(&format!("n{i:02}"), "yggdrasil_since"),
                Value::from(format!("{}", 10 * (i + 1))),
            );
        }
        m
    }

    fn admitted(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn a_node_publishes_the_index_up_to_which_it_admits_every_node() {
        let m = stamped(5);
        // Started knowing n00..n02: admits up to n02's index, not the later n03 and n04.
        assert_eq!(admits_upto(&m, "n01", &admitted(&["k00", "k02"])), "30");
        assert_eq!(admits_upto(&m, "n04", &admitted(&["k00", "k01", "k02", "k03"])), "40");
        // A gap stops it: n01 is not admitted, so neither is anyone after it.
        assert_eq!(admits_upto(&m, "n04", &admitted(&["k00", "k02", "k03"])), "10");
        assert_eq!(admits_upto(&m, "n04", &admitted(&["k01"])), "0");
        assert_eq!(admits_upto(&m, "n04", &BTreeSet::new()), neighbours::ADMITS_ALL);
        // A node whose index is not known yet is left out: it counts as not admitted.
        let mut m = stamped(5);
        m.remove(&neighbours::key("n03", "yggdrasil_since"));
        assert_eq!(admits_upto(&m, "n04", &admitted(&["k00", "k01", "k02"])), "30");
    }

    #[test]
    fn a_node_dials_a_peer_only_when_the_peer_admits_its_index() {
        let mut m = stamped(3);
        m.insert(neighbours::key("n00", "yggdrasil_admits_upto"), Value::from("10"));
        m.insert(neighbours::key("n02", "yggdrasil_admits_upto"), Value::from("20"));
        let plan = overlay_plan(&m, "n01", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k02"], "n00 started before n01's key: it dials n01");
        assert_eq!(keys(&plan.refused_by), ["k00"]);
        // Without its own index known, a node is admitted only by those that admit all.
        m.remove(&neighbours::key("n01", "yggdrasil_since"));
        m.insert(neighbours::key("n00", "yggdrasil_admits_upto"), Value::from("all"));
        let plan = overlay_plan(&m, "n01", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k00"]);
        // Ours replaces an earlier version's list.
        m.insert(neighbours::key("n02", "yggdrasil_admits"), Value::from("n00,n01"));
        let plan = overlay_plan(&m, "n01", &BTreeSet::new()).unwrap();
        assert_eq!(keys(&plan.dial), ["k00"], "the list is not read beside ours");
        m.remove(&neighbours::key("n02", "yggdrasil_admits_upto"));
        let plan = overlay_plan(&m, "n01", &BTreeSet::new()).unwrap();
        assert_eq!(
            keys(&plan.dial),
            ["k00", "k02"],
            "an earlier version's list alone is read"
        );
    }
}
