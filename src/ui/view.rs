//! What the web map shows, gathered from one consul: the members with their roles, raft state,
//! addresses and agents' actions; the overlay's links (from the nodes' reports); recent events
//! and agent actions; the shared config as a tree with its secrets masked.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::agent::report::{self, Report};
use crate::agent::status;
use crate::consensus::api::ConsulApi;
use crate::consensus::event::Event;
use crate::consensus::members::{self, Member};
use crate::mesh::neighbours::{self, Neighbour};
use crate::sys::mapping::{self, Mapping};

/// How many events the view carries.
const EVENTS: usize = 100;

/// One member, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub node: String,
    pub address: String,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub raft: String,
    /// The underlay address it is reached at.
    pub host: String,
    pub overlay: String,
    /// The leader's last contact with it (servers), as consul's autopilot says.
    pub last_contact: String,
    /// What an agent is doing to it now.
    pub agent: String,
    /// Its agent's last action.
    pub last_action: Option<status::Event>,
    /// The back-end instance it is and whose engine holds it; empty for a machine slaved
    /// as it was.
    pub machine: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OverlayNode {
    pub node: String,
    pub overlay: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Link {
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Overlay {
    pub nodes: Vec<OverlayNode>,
    pub links: Vec<Link>,
}

/// An event, a hook run or an agent's action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Happening {
    pub at: u64,
    pub node: String,
    /// `event` (a cluster event), `hook` or `agent`.
    pub source: String,
    pub kind: String,
    pub detail: String,
}

/// Everything the page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    pub updated_at: u64,
    /// How long gathering it took, in milliseconds.
    pub took_ms: u64,
    pub through: String,
    pub error: Option<String>,
    pub members: Vec<NodeView>,
    pub overlay: Overlay,
    pub events: Vec<Happening>,
    pub config: Value,
}

/// What the collector keeps between views: when it first saw each cluster event (consul's
/// events carry no time), and the shared config with the KV index it was read at (read again
/// only when the index moved).
#[derive(Default)]
pub struct Seen {
    events: HashMap<String, u64>,
    config: Option<(u64, Mapping)>,
}

impl Seen {
    /// The shared config: the copy kept, unless the KV's `index` moved since it was read.
    async fn config(&mut self, api: &ConsulApi, index: u64) -> anyhow::Result<Mapping> {
        let fresh = matches!(&self.config, Some((at, _)) if *at == index && index != 0);
        if !fresh {
            let (config, at) = api.read_all_indexed().await?;
            self.config = Some((at.max(index), config));
        }
        Ok(self.config.as_ref().expect("just read").1.clone())
    }
}

/// Gathers the view from `api`; `agent_token` reads the event list.
pub async fn collect(api: &ConsulApi, agent_token: &str, seen: &mut Seen) -> anyhow::Result<View> {
    let started = std::time::Instant::now();
    let (members, index, reports, health, events) = tokio::join!(
        members::local(api),
        api.config_index(),
        api.read_tree(report::PREFIX),
        api.autopilot_health(),
        api.events(0, Duration::ZERO, agent_token),
    );
    let members = members?;
    let reports = reports.unwrap_or_default();
    let last_contact = health.map(|h| last_contacts(&h)).unwrap_or_default();
    let now = status::now();
    let events: Vec<Event> = events
        .map(|(raw, _)| raw.iter().map(Event::from_raw).collect())
        .unwrap_or_default();
    for e in &events {
        seen.events.entry(e.id.clone()).or_insert(now);
    }
    let config = seen.config(api, index?).await?;
    let mut view = build(&members, &config, &reports, &last_contact, &events, seen, now);
    view.took_ms = started.elapsed().as_millis() as u64;
    Ok(view)
}

/// The view from what was read (pure, for tests).
pub fn build(
    members: &[Member],
    config: &Mapping,
    reports: &Mapping,
    last_contact: &HashMap<String, String>,
    events: &[Event],
    seen: &Seen,
    now: u64,
) -> View {
    let known: BTreeMap<String, Neighbour> = neighbours::all(config).into_iter().map(|n| (n.id.clone(), n)).collect();
    let prefix = format!("{}/", report::PREFIX);
    let reports: BTreeMap<String, Report> = reports
        .iter()
        .filter_map(|(k, v)| {
            let id = k.strip_prefix(&prefix).filter(|id| !id.contains('/'))?;
            Some((id.to_string(), serde_json::from_value(v.clone()).ok()?))
        })
        .collect();
    let nodes = members
        .iter()
        .map(|m| {
            let n = known.get(&m.node);
            NodeView {
                node: m.node.clone(),
                address: m.address.clone(),
                status: m.status.clone(),
                kind: m.kind.clone(),
                raft: m.raft.clone(),
                host: n.and_then(|n| n.host.clone()).unwrap_or_default(),
                overlay: n
                    .and_then(|n| n.overlay_address)
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                last_contact: last_contact.get(&m.node).cloned().unwrap_or_default(),
                // What an agent does to it now, else what its own agent holds back from.
                agent: if m.agent.is_empty() {
                    reports
                        .get(&m.node)
                        .and_then(|r| r.waiting.as_ref())
                        .map(|w| format!("waiting: {w}"))
                        .unwrap_or_default()
                } else {
                    m.agent.clone()
                },
                last_action: reports.get(&m.node).and_then(|r| r.actions.last().cloned()),
                machine: n
                    .and_then(|n| n.machine.as_ref())
                    .map(neighbours::Machine::describe)
                    .unwrap_or_default(),
            }
        })
        .collect();
    View {
        updated_at: now,
        took_ms: 0,
        through: String::new(),
        error: None,
        members: nodes,
        overlay: overlay(&known, &reports),
        events: happenings(events, seen, &reports),
        config: masked_tree(config),
    }
}

/// The overlay: every known node, and a link for each live peering a node reported.
fn overlay(known: &BTreeMap<String, Neighbour>, reports: &BTreeMap<String, Report>) -> Overlay {
    let by_key: HashMap<&str, &str> = known
        .values()
        .filter_map(|n| Some((n.overlay_public_key.as_deref()?, n.id.as_str())))
        .collect();
    let mut links = BTreeSet::new();
    for (id, r) in reports {
        for key in &r.linked_keys {
            if let Some(peer) = by_key.get(key.as_str()).filter(|p| **p != id) {
                let (a, b) = if id.as_str() < *peer {
                    (id.as_str(), *peer)
                } else {
                    (*peer, id.as_str())
                };
                links.insert(Link {
                    a: a.into(),
                    b: b.into(),
                });
            }
        }
    }
    Overlay {
        nodes: known
            .values()
            .map(|n| OverlayNode {
                node: n.id.clone(),
                overlay: n.overlay_address.map(|a| a.to_string()).unwrap_or_default(),
                key: n.overlay_public_key.clone().unwrap_or_default(),
            })
            .collect(),
        links: links.into_iter().collect(),
    }
}

/// Cluster events and the nodes' agent actions (hook runs among them), newest first.
fn happenings(events: &[Event], seen: &Seen, reports: &BTreeMap<String, Report>) -> Vec<Happening> {
    let mut all: Vec<Happening> = events
        .iter()
        .map(|e| Happening {
            at: seen.events.get(&e.id).copied().unwrap_or_default(),
            node: e.node.clone().unwrap_or_default(),
            source: "event".into(),
            kind: e.name.clone(),
            detail: format!(
                "from {}, {} bytes",
                e.origin.as_deref().unwrap_or("an unknown node"),
                e.payload_text.len()
            ),
        })
        .collect();
    for (id, r) in reports {
        all.extend(r.actions.iter().map(|a| Happening {
            at: a.at,
            node: id.clone(),
            source: if a.kind == "hook" { "hook" } else { "agent" }.into(),
            kind: a.kind.clone(),
            detail: a.detail.clone(),
        }));
    }
    all.sort_by(|x, y| y.at.cmp(&x.at).then_with(|| x.node.cmp(&y.node)));
    all.truncate(EVENTS);
    all
}

/// The shared config as a nested tree, secrets masked.
pub fn masked_tree(config: &Mapping) -> Value {
    let mut root = serde_json::Map::new();
    for (key, value) in config {
        let value = mapping::shown(key, value, false).into_owned();
        let mut node = &mut root;
        let parts: Vec<&str> = key.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                node.insert((*part).to_string(), value.clone());
            } else {
                let next = node
                    .entry((*part).to_string())
                    .or_insert_with(|| Value::Object(Default::default()));
                if !next.is_object() {
                    *next = Value::Object(Default::default());
                }
                node = next.as_object_mut().expect("made an object");
            }
        }
    }
    Value::Object(root)
}

/// Each server's last contact with the leader, from `/v1/operator/autopilot/health`.
fn last_contacts(health: &Value) -> HashMap<String, String> {
    health["Servers"]
        .as_array()
        .map(|servers| {
            servers
                .iter()
                .filter_map(|s| {
                    let name = s["Name"].as_str()?.to_string();
                    let contact = if s["Leader"].as_bool() == Some(true) {
                        "leader".to_string()
                    } else {
                        s["LastContact"].as_str().unwrap_or_default().to_string()
                    };
                    Some((name, contact))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(node: &str, status: &str, kind: &str) -> Member {
        serde_json::from_value(
            json!({"node": node, "address": "[200::1]:8301", "status": status, "type": kind,
            "build": "1.8.7", "protocol": "2", "dc": "raptiformica", "raft": "", "agent": ""}),
        )
        .unwrap()
    }

    fn config() -> Mapping {
        let n = neighbours::NEIGHBOURS;
        Mapping::from([
            (format!("{n}/a/host"), json!("172.18.0.2")),
            (format!("{n}/a/yggdrasil_public_key"), json!("ka")),
            (format!("{n}/a/yggdrasil_address"), json!("200::a")),
            (format!("{n}/b/host"), json!("172.18.0.3")),
            (format!("{n}/b/yggdrasil_public_key"), json!("kb")),
            (format!("{n}/b/yggdrasil_address"), json!("200::b")),
            ("raptiformica/meshnet/consul/password".into(), json!("c2VjcmV0Z29zc2lw")),
            ("raptiformica/compute/docker/headless/get_port".into(), json!("echo 22")),
        ])
    }

    #[test]
    fn the_view_joins_members_neighbours_reports_and_masks_secrets() {
        let reports = Mapping::from([
            (
                format!("{}/a", report::PREFIX),
                json!({"linked_keys": ["kb", "unknown"], "actions": [{"at": 5, "kind": "restart", "detail": "consul"}]}),
            ),
            (
                format!("{}/b", report::PREFIX),
                json!({"linked_keys": ["ka"], "actions": []}),
            ),
        ]);
        let contacts = HashMap::from([("b".to_string(), "12ms".to_string())]);
        let events = [Event {
            id: "e1".into(),
            name: "ping".into(),
            ltime: 1,
            origin: Some("a".into()),
            server_type: None,
            node: None,
            payload: Vec::new(),
            payload_text: "hello".into(),
        }];
        let seen = Seen {
            events: HashMap::from([("e1".to_string(), 9)]),
            config: None,
        };
        let v = build(
            &[member("a", "alive", "server"), member("b", "failed", "server")],
            &config(),
            &reports,
            &contacts,
            &events,
            &seen,
            10,
        );
        assert_eq!(v.members[0].host, "172.18.0.2");
        assert_eq!(v.members[0].overlay, "200::a");
        assert_eq!(v.members[0].last_action.as_ref().unwrap().kind, "restart");
        assert_eq!(v.members[1].last_contact, "12ms");
        assert_eq!(v.members[1].status, "failed");
        assert_eq!(
            v.overlay.links,
            [Link {
                a: "a".into(),
                b: "b".into()
            }],
            "one undirected link"
        );
        assert_eq!(v.events[0].kind, "ping");
        assert_eq!(v.events[0].at, 9);
        assert_eq!(v.events[1].source, "agent");
        let text = serde_json::to_string(&v).unwrap();
        assert!(
            !text.contains("c2VjcmV0Z29zc2lw"),
            "the gossip key never leaves: {text}"
        );
        assert_eq!(v.config["raptiformica"]["meshnet"]["consul"]["password"], "<secret>");
        assert_eq!(
            v.config["raptiformica"]["compute"]["docker"]["headless"]["get_port"],
            "echo 22"
        );
    }
}
