//! The consul agent on a node: its config, rendered from the shared config, and its daemon.
//!
//! Servers (3 or 5 per cluster) vote; every further node is a client, so the cluster is not
//! capped by raft's size. Consul binds to the node's overlay address, gossip is encrypted with
//! the cluster's key, and elections use `raft_multiplier` 2 (twice the fastest).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::sys::daemon::{self, Applied, Daemon, Written};

/// How many servers bootstrap a new cluster.
pub const BOOTSTRAP_EXPECT: usize = 3;
/// The datacenter name (one per cluster: consul 1.8.7's WAN pool does not work over IPv6).
pub const DATACENTER: &str = "raptiformica";

/// What a node's consul config is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    pub node_name: String,
    /// From the overlay identity: the same node keeps its id across restarts and re-slaves.
    pub node_id: String,
    pub bind: Ipv6Addr,
    pub server: bool,
    /// The other nodes' overlay addresses (servers first).
    pub retry_join: Vec<Ipv6Addr>,
    /// Gossip encryption key (base64 of 16, 24 or 32 bytes).
    pub encrypt: String,
    /// The cluster's ACL token (ACLs default deny); None: ACLs off.
    pub acl_token: Option<String>,
}

/// The consul agent with its state in `dir`.
#[derive(Debug, Clone)]
pub struct ConsulAgent {
    dir: PathBuf,
    daemon: Daemon,
}

impl ConsulAgent {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            daemon: Daemon::new("consul", dir),
        }
    }

    /// The rendered config; its presence means this node takes part in consensus.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("consul.json")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("consul")
    }

    pub fn pid(&self) -> Option<i32> {
        self.daemon.pid()
    }

    /// The daemon (pid and log files).
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// Stops consul (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(&self, grace: Duration) -> bool {
        self.daemon.stop(grace)
    }

    /// The rendered config, if any.
    pub fn rendered(&self) -> Option<Value> {
        std::fs::read(self.config_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// The config for `s`.
    pub fn render(&self, s: &AgentSettings) -> Value {
        let mut c = json!({
            "server": s.server,
            "node_name": s.node_name,
            "node_id": s.node_id,
            "datacenter": DATACENTER,
            "data_dir": self.data_dir(),
            "bind_addr": s.bind.to_string(),
            "advertise_addr": s.bind.to_string(),
            "client_addr": "127.0.0.1",
            "retry_join": s.retry_join.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "retry_interval": "1s",
            "encrypt": s.encrypt,
            // Raft's timers at twice the fastest (consul's default is 5): a leader steps down
            // after 1 s without hearing from a quorum, where 500 ms made a busy host (a batch
            // of new nodes on two cores: "failed to contact ... 500-940 ms") elect a new leader
            // every few seconds and fail the writes in flight. A lost leader is replaced in
            // about 2-4 s instead of 1-2 s.
            "performance": {"raft_multiplier": 2},
            // A new server becomes a voter once it has kept up for a few seconds; on a busy
            // small machine raft's last contact often exceeds the default 200 ms, which kept
            // replacements non-voters (and a later loss fatal).
            "autopilot": {"last_contact_threshold": "2s", "server_stabilization_time": "5s", "cleanup_dead_servers": true},
            "ports": {"serf_wan": -1},
            "disable_update_check": true,
            "disable_remote_exec": true,
            // Network coordinates (for `?near=` sorting and `consul rtt`, which we do not use)
            // cost every node an update every 15-30 s and the servers a raft write every 5 s.
            "disable_coordinates": true,
            // Each node probes one other every 1.2 s (consul: 1 s), and a silent one is declared
            // failed after a shorter suspicion (3 × log10(N) probe intervals, up to 6 times that
            // when no other node confirms it; consul: 4 ×): a sixth fewer probes crossing the
            // overlay, and a dead node seen failed no later than with consul's defaults, alone
            // (21.6 s at most, consul 24 s) or among many (3.6 × log10(N) s, consul 4 ×).
            // While there is news (a batch of new nodes, members flapping) each node gossips
            // to 3 random members every second (consul: every 200 ms): each such packet crosses
            // the overlay to a random node (a new overlay session each, often), which made every
            // node's consul and yggdrasil work three times their rest cost in a batch; news
            // still reaches a hundred nodes in a few seconds (log3(100) rounds, and probes
            // carry it too), and a suspicion's confirmations travel the same way, which the
            // suspicion's length (seconds, above) dwarfs.
            "gossip_lan": {"probe_interval": "1200ms", "probe_timeout": "1s", "suspicion_mult": 3, "gossip_interval": "1s"},
            "enable_local_script_checks": true,
            "log_level": "INFO",
            "ui": false,
        });
        if let Some(token) = &s.acl_token {
            c["acl"] = super::acl::render(token, s.server);
        }
        if s.server {
            c["bootstrap_expect"] = json!(BOOTSTRAP_EXPECT);
            // A stopped server stays a raft member: the quorum does not shrink under a restart.
            c["leave_on_terminate"] = json!(false);
        }
        c
    }

    /// Writes the config and starts consul, or restarts it when a setting it cannot reload
    /// changed. A new `retry_join` alone needs nothing: the new nodes join the running ones.
    pub fn apply(&self, s: &AgentSettings) -> anyhow::Result<Applied> {
        std::fs::create_dir_all(self.data_dir())?;
        let next = self.render(s);
        // 0600: it holds the gossip key.
        let Written::Running(previous) = self.daemon.write_config(&self.config_file(), &next, || self.start())? else {
            return Ok(Applied::Started);
        };
        if previous.is_some_and(|p| without_joins(&p) == without_joins(&next)) {
            return Ok(Applied::Unchanged);
        }
        self.daemon.restart(Duration::from_secs(10), || self.start())
    }

    /// Starts consul with the rendered config (the agent's restart after an exit).
    pub fn start(&self) -> anyhow::Result<()> {
        let bin = daemon::find_program("consul")
            .context("consul is not installed here (slaving installs it; see `raptiformica artifacts`)")?;
        self.daemon
            .start_go(
                &bin,
                &["agent".into(), format!("-config-file={}", self.config_file().display())],
            )
            .map(|_| ())
    }

    /// The end of consul's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        self.daemon.log_tail(n)
    }
}

fn without_joins(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(o) = c.as_object_mut() {
        o.remove("retry_join");
    }
    c
}

/// A new gossip key: 32 random bytes, base64.
pub fn new_gossip_key() -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the gossip key: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::digest::consul_node_id as node_id;

    fn settings(server: bool) -> AgentSettings {
        AgentSettings {
            node_name: "n1".into(),
            node_id: node_id("key"),
            bind: "200::1".parse().unwrap(),
            server,
            retry_join: vec!["200::2".parse().unwrap()],
            encrypt: new_gossip_key().unwrap(),
            acl_token: Some("00000000-0000-4000-8000-000000000000".into()),
        }
    }

    #[test]
    fn servers_bootstrap_and_stay_members_clients_do_not_vote() {
        let a = ConsulAgent::new(Path::new("/s"));
        let s = a.render(&settings(true));
        assert_eq!(s["bootstrap_expect"], 3);
        assert_eq!(s["leave_on_terminate"], false);
        assert_eq!(s["performance"]["raft_multiplier"], 2);
        assert_eq!(s["ports"]["serf_wan"], -1);
        assert_eq!(s["disable_coordinates"], true);
        assert_eq!(s["gossip_lan"]["suspicion_mult"], 3);
        // A lone survivor's suspicion may last 6 × 3 × the interval: no longer than consul's
        // defaults (6 × 4 × 1 s).
        assert_eq!(s["gossip_lan"]["probe_interval"], "1200ms");
        assert_eq!(s["bind_addr"], "200::1");
        assert_eq!(s["retry_join"], json!(["200::2"]));
        assert_eq!(s["acl"]["default_policy"], "deny");
        let c = a.render(&settings(false));
        assert_eq!(c["server"], false);
        assert!(c.get("bootstrap_expect").is_none());
    }

    #[test]
    fn node_ids_are_stable_uuids_and_gossip_keys_are_32_bytes() {
        let id = node_id("abc");
        assert_eq!(id, node_id("abc"));
        assert_ne!(id, node_id("abd"));
        assert_eq!(id.len(), 36);
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(new_gossip_key().unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(new_gossip_key().unwrap(), new_gossip_key().unwrap());
    }
}
