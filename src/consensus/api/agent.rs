//! The agent's and raft's endpoints: members, the leader, the raft configuration, join,
//! force-leave, the agent's token, autopilot's health.

use std::net::Ipv6Addr;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;

/// One member as `/v1/agent/members` gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentMember {
    pub name: String,
    pub addr: String,
    pub port: u16,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    pub status: Serf,
    #[serde(default)]
    pub protocol_cur: u8,
}

/// A member's status as serf gives it (a number in consul's API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "u8")]
pub enum Serf {
    None,
    Alive,
    Leaving,
    Left,
    Failed,
    Unknown(u8),
}

impl From<u8> for Serf {
    fn from(n: u8) -> Self {
        match n {
            0 => Serf::None,
            1 => Serf::Alive,
            2 => Serf::Leaving,
            3 => Serf::Left,
            4 => Serf::Failed,
            other => Serf::Unknown(other),
        }
    }
}

impl Serf {
    /// Serf's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Serf::None => "none",
            Serf::Alive => "alive",
            Serf::Leaving => "leaving",
            Serf::Left => "left",
            Serf::Failed => "failed",
            Serf::Unknown(_) => "unknown",
        }
    }
}

impl AgentMember {
    /// Serf's status names.
    pub fn status_name(&self) -> &'static str {
        self.status.name()
    }

    pub fn alive(&self) -> bool {
        self.status == Serf::Alive
    }

    pub fn failed(&self) -> bool {
        self.status == Serf::Failed
    }

    /// A consul server (its gossip tag `role` says `consul`).
    pub fn server(&self) -> bool {
        self.tags.get("role").is_some_and(|r| r == "consul")
    }
}

/// One server in the raft configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    pub node: String,
    pub leader: bool,
    pub voter: bool,
}

impl ConsulApi {
    /// The leader's address, or None while there is none.
    pub async fn leader(&self) -> anyhow::Result<Option<String>> {
        let leader: String = self.get("status/leader").await?;
        Ok(Some(leader).filter(|l| !l.is_empty()))
    }

    /// The members this agent sees (LAN pool).
    pub async fn members(&self) -> anyhow::Result<Vec<AgentMember>> {
        self.get("agent/members").await
    }

    /// The names of the members that are alive.
    pub async fn alive_members(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .members()
            .await?
            .into_iter()
            .filter(|m| m.alive())
            .map(|m| m.name)
            .collect())
    }

    /// The raft servers (needs a leader).
    pub async fn raft(&self) -> anyhow::Result<Vec<RaftServer>> {
        self.raft_configuration("operator/raft/configuration").await
    }

    /// The raft servers as a server this agent reaches knows them (`stale`): answers at once
    /// without a leader (consul holds a consistent read up to 7 s), where no server is then
    /// marked leader. For showing, not for deciding.
    pub async fn raft_as_known(&self) -> anyhow::Result<Vec<RaftServer>> {
        self.raft_configuration("operator/raft/configuration?stale").await
    }

    async fn raft_configuration(&self, path: &str) -> anyhow::Result<Vec<RaftServer>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Configuration {
            servers: Vec<RaftServer>,
        }
        let c: Configuration = self.get(path).await?;
        Ok(c.servers)
    }

    /// Asks the agent to join the member at `addr` (serf LAN).
    pub async fn join(&self, addr: Ipv6Addr) -> anyhow::Result<()> {
        let url = format!("{}/v1/agent/join/{addr}", self.base);
        let resp = self.http.put(&url).send().await.with_context(|| format!("PUT {url}"))?;
        if !resp.status().is_success() {
            bail!("joining {addr}: {}", resp.text().await.unwrap_or_default().trim());
        }
        Ok(())
    }

    /// The local agent's own member entry and config (`/v1/agent/self`).
    pub async fn agent_self(&self) -> anyhow::Result<Value> {
        self.get("agent/self").await
    }

    /// Makes the local agent leave the cluster gracefully and shut down (`/v1/agent/leave`),
    /// with `token` (the cluster's token: the agent master token, which may do that).
    pub async fn leave(&self, token: Option<&str>) -> anyhow::Result<()> {
        self.put_ok_as("agent/leave", None, token).await.map(|_| ())
    }

    /// Forces a failed member out of the cluster (serf `force-leave`), with `token` (the
    /// cluster's token is refused there: see [`crate::consensus::acl::evict_token`]).
    pub async fn force_leave(&self, node: &str, token: Option<&str>) -> anyhow::Result<()> {
        self.put_ok_as(&format!("agent/force-leave/{}", encode_segment(node)), None, token)
            .await
            .map(|_| ())
    }

    /// Makes the agent token (`accessor`, `secret`) with the agent policy, unless it exists.
    /// True when it was made now.
    pub async fn ensure_agent_token(&self, accessor: &str, secret: &str) -> anyhow::Result<bool> {
        use crate::consensus::acl::{AGENT_POLICY, AGENT_RULES};
        if self
            .get::<Value>(&format!("acl/token/{}", encode_segment(accessor)))
            .await
            .is_ok()
        {
            // A cluster made by an older version: its policy may lack rules added since.
            if let Ok(p) = self.get::<Value>(&format!("acl/policy/name/{AGENT_POLICY}")).await
                && p["Rules"].as_str() != Some(AGENT_RULES)
                && let Some(id) = p["ID"].as_str()
            {
                let policy = json!({"ID": id, "Name": AGENT_POLICY, "Description": "raptiformica: what consul agents do", "Rules": AGENT_RULES});
                self.put_ok(&format!("acl/policy/{id}"), Some(policy))
                    .await
                    .context("cannot update the agent policy")?;
            }
            return Ok(false);
        }
        let policy =
            json!({"Name": AGENT_POLICY, "Description": "raptiformica: what consul agents do", "Rules": AGENT_RULES});
        if let Err(e) = self.put_ok("acl/policy", Some(policy)).await
            && !format!("{e:#}").contains("already exists")
        {
            return Err(e.context("cannot make the agent policy"));
        }
        let token = json!({
            "AccessorID": accessor,
            "SecretID": secret,
            "Description": "raptiformica: consul agents",
            "Policies": [{"Name": AGENT_POLICY}],
        });
        self.put_ok("acl/token", Some(token)).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot make the agent token: {}",
                e.to_string().replace(secret, "<secret>")
            )
        })?;
        Ok(true)
    }

    /// The servers' health as autopilot sees it (`/v1/operator/autopilot/health`: each
    /// server's `Name`, `Leader`, `LastContact`, `Healthy`).
    /// consul answers 429 (with the same body) while the servers are not all healthy.
    pub async fn autopilot_health(&self) -> anyhow::Result<Value> {
        let url = format!("{}/v1/operator/autopilot/health", self.base);
        let resp = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() && status.as_u16() != 429 {
            bail!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default().trim());
        }
        resp.json()
            .await
            .with_context(|| format!("GET {url}: unexpected reply"))
    }
}
