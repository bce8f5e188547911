//! The cluster's members as consul users know them (`consul members`), plus each server's
//! raft state.

use serde::{Deserialize, Serialize};

use super::SharedStore as _;
use super::api::{AgentMember, ConsulApi};

/// One row of `raptiformica members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    pub address: String,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub build: String,
    pub protocol: String,
    pub dc: String,
    /// `leader`, `follower` or `non-voter` for servers in the raft configuration, else empty.
    #[serde(default)]
    pub raft: String,
    /// What an agent is doing to this node right now (`evict`, `promote`, `replace`), else
    /// empty.
    #[serde(default)]
    pub agent: String,
    /// The back-end instance it is and whose engine holds it (`docker/headless, held by
    /// HOST`), from its neighbour entry; empty for a machine slaved as it was.
    #[serde(default)]
    pub machine: String,
}

impl Member {
    fn from_agent(m: &AgentMember, raft: &[super::api::RaftServer]) -> Self {
        let tag = |k: &str| m.tags.get(k).cloned().unwrap_or_default();
        let kind = match tag("role").as_str() {
            "consul" => "server",
            "node" => "client",
            other => other,
        }
        .to_string();
        let raft = raft
            .iter()
            .find(|s| s.node == m.name)
            .map(|s| match (s.leader, s.voter) {
                (true, _) => "leader",
                (false, true) => "follower",
                (false, false) => "non-voter",
            })
            .unwrap_or("")
            .to_string();
        Member {
            node: m.name.clone(),
            address: if m.addr.contains(':') {
                format!("[{}]:{}", m.addr, m.port)
            } else {
                format!("{}:{}", m.addr, m.port)
            },
            status: m.status_name().to_string(),
            kind,
            build: tag("build").split(':').next().unwrap_or_default().to_string(),
            protocol: if m.protocol_cur > 0 {
                m.protocol_cur.to_string()
            } else {
                tag("vsn")
            },
            dc: tag("dc"),
            raft,
            agent: String::new(),
            machine: String::new(),
        }
    }

    /// The table's columns.
    pub const HEADER: [&'static str; 10] = [
        "Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Raft", "Agent", "Machine",
    ];

    pub fn row(&self) -> Vec<String> {
        vec![
            self.node.clone(),
            self.address.clone(),
            self.status.clone(),
            self.kind.clone(),
            self.build.clone(),
            self.protocol.clone(),
            self.dc.clone(),
            if self.raft.is_empty() {
                "-".into()
            } else {
                self.raft.clone()
            },
            if self.agent.is_empty() {
                "-".into()
            } else {
                self.agent.clone()
            },
            if self.machine.is_empty() {
                "-".into()
            } else {
                self.machine.clone()
            },
        ]
    }
}

/// Where the acting agent marks the node it works on (outside the shared config).
pub const ACTING_KEY: &str = "raptiformica-agent/acting";

/// Marks `node` as the one an agent (`by`) is acting on, or clears the mark.
pub async fn mark_acting(api: &ConsulApi, acting: Option<(&str, &str, &str)>) {
    let result = match acting {
        Some((node, action, by)) => {
            let value = serde_json::json!({"node": node, "action": action, "by": by});
            api.set_many(&crate::sys::mapping::Mapping::from([(ACTING_KEY.to_string(), value)]))
                .await
        }
        None => api.delete_tree(ACTING_KEY).await,
    };
    if let Err(e) = result {
        tracing::debug!("cannot mark the acting node: {e:#}");
    }
}

/// The members the local agent sees, sorted by node name. The raft column stays empty while
/// its servers know no leader. Raft and the acting mark are read `stale`: without a leader a
/// consistent read waits 7 s for one, and an island's view is wanted at once (a poll watching
/// lost servers would see them alive for those seconds).
pub async fn local(api: &ConsulApi) -> anyhow::Result<Vec<Member>> {
    let (members, raft, acting) = tokio::join!(api.members(), api.raft_as_known(), api.get_value_as_known(ACTING_KEY));
    let raft = raft.ok().filter(|r| r.iter().any(|s| s.leader)).unwrap_or_default();
    let mut out: Vec<Member> = members?.iter().map(|m| Member::from_agent(m, &raft)).collect();
    if let Ok(Some(acting)) = acting {
        let node = acting["node"].as_str().unwrap_or_default();
        for m in out.iter_mut().filter(|m| m.node == node) {
            m.agent = format!(
                "{} by {}",
                acting["action"].as_str().unwrap_or("acting"),
                acting["by"].as_str().unwrap_or("an agent")
            );
        }
    }
    out.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::api::RaftServer;

    #[test]
    fn rows_read_like_consul_members() {
        let agent: AgentMember = serde_json::from_value(serde_json::json!({
            "Name": "n1", "Addr": "200::1", "Port": 8301, "Status": 1, "ProtocolCur": 2,
            "Tags": {"role": "consul", "build": "1.8.7:abc", "dc": "raptiformica", "vsn": "2"}
        }))
        .unwrap();
        let raft = [RaftServer {
            node: "n1".into(),
            leader: true,
            voter: true,
        }];
        let m = Member::from_agent(&agent, &raft);
        assert_eq!(
            m.row(),
            [
                "n1",
                "[200::1]:8301",
                "alive",
                "server",
                "1.8.7",
                "2",
                "raptiformica",
                "leader",
                "-",
                "-"
            ]
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["status"], "alive");
        assert_eq!(json["type"], "server");
    }
}
