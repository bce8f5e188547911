//! The overlay network every node runs, behind the [`Overlay`] seam (yggdrasil today).
//!
//! An overlay gives each node an IPv6 address derived from a key generated on the node (the
//! private key never leaves it) and routes between the nodes over whatever underlay links
//! exist. Peers come only from the shared config: no multicast discovery, and only the
//! cluster's keys are admitted.

pub mod neighbours;
pub mod peering;
pub mod plan;
pub mod preflight;
pub mod yggdrasil;

use std::net::Ipv6Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys::daemon::Applied;

/// What a node tells the cluster about itself on the overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayIdentity {
    pub public_key: String,
    pub address: Ipv6Addr,
    /// The underlay port its peers dial.
    pub port: u16,
}

/// A peer to link with: its key and how to reach it on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub public_key: String,
    pub host: String,
    pub port: u16,
}

/// What the overlay does about a peer whose key the running daemon does not admit yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeys {
    /// Restart to admit it (a short outage of this node's links).
    Restart,
    /// Leave it for the next start: the link comes from this node's own dial, which the new
    /// peer admits. For consul servers, whose links carry raft: a restart can cost an election.
    Later,
}

/// An overlay implementation.
pub trait Overlay {
    /// Its name, as used in the shared config's keys.
    fn name(&self) -> &'static str;
    /// This node's identity; the keys are generated on first use.
    fn identity(&self) -> anyhow::Result<OverlayIdentity>;
    /// Renders the config for the plan (dialing `plan.dial`, admitting only `plan.allowed`) and
    /// starts the daemon, or changes the running daemon's peers (restarting it, if `new_keys`
    /// allows, when it does not admit a key of `plan.admit`).
    fn apply(&self, plan: &plan::OverlayPlan, new_keys: NewKeys) -> anyhow::Result<Applied>;
    /// Waits until this node's overlay address is up.
    fn wait_address(&self, timeout: Duration) -> anyhow::Result<()>;
    /// The pid of the running daemon.
    fn pid(&self) -> Option<i32>;
}

/// Whether `address` is configured on any interface of this machine (`/proc/net/if_inet6`).
pub fn address_is_up(address: Ipv6Addr) -> bool {
    let want: String = address.octets().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::read_to_string("/proc/net/if_inet6")
        .map(|t| t.lines().any(|l| l.split_whitespace().next() == Some(want.as_str())))
        .unwrap_or(false)
}

/// `host` as it goes into a URI: IPv6 literals in brackets.
pub fn uri_host(host: &str) -> String {
    if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_and_a_random_address_is_not() {
        if std::path::Path::new("/proc/net/if_inet6").exists() && address_is_up(Ipv6Addr::LOCALHOST) {
            assert!(!address_is_up("200:1234::1".parse().unwrap()));
        }
        assert_eq!(uri_host("::1"), "[::1]");
        assert_eq!(uri_host("172.18.0.2"), "172.18.0.2");
    }
}
