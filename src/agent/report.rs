//! Publishing what this node sees, for the web map (`raptiformica ui`): the overlay peers it
//! has a live link with and its agent's recent actions, as `raptiformica-status/nodes/<id>` in
//! consul's KV (outside the shared config). Checked every [`EVERY`], written only when it
//! changed, so a calm cluster writes nothing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::status::{Event, Recorder};
use crate::consensus::SharedStore;
use crate::consensus::api::ConsulApi;
use crate::mesh::yggdrasil::Yggdrasil;

/// Where the nodes' reports live.
pub const PREFIX: &str = "raptiformica-status/nodes";
/// How often the report is checked.
const EVERY: Duration = Duration::from_secs(10);
/// How many of the agent's actions it carries (newest last).
const RECENT: usize = 10;

/// One node's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The overlay public keys of the peers it has a live link with, sorted.
    pub linked_keys: Vec<String>,
    /// Its agent's last actions (restarts, evictions, promotions, hooks), oldest first.
    pub actions: Vec<Event>,
    /// What its agent holds back from, and why (see `agent --status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// The report of the agent's state now.
pub fn report(linked_keys: impl IntoIterator<Item = String>, rec: &Recorder) -> Report {
    let mut linked_keys: Vec<String> = linked_keys.into_iter().collect();
    linked_keys.sort();
    let status = rec.snapshot();
    // A change of the members is news every node has alike, not an action of this one: with
    // it, each change made every node write its report (a raft commit each, a hundred per
    // change at a hundred nodes).
    let events: Vec<Event> = status
        .events
        .into_iter()
        .filter(|e| e.kind != "cluster_change")
        .collect();
    let actions = events[events.len().saturating_sub(RECENT)..].to_vec();
    Report {
        linked_keys,
        actions,
        waiting: status.waiting,
    }
}

/// Publishes this node's report while the agent runs.
pub async fn publish(ygg: Yggdrasil, me: String, rec: Recorder) {
    let key = format!("{PREFIX}/{me}");
    let mut published: Option<Report> = None;
    loop {
        let y = ygg.clone();
        let linked = tokio::task::spawn_blocking(move || y.linked_keys()).await;
        let linked = match linked {
            Ok(Ok(keys)) => keys,
            _ => Default::default(),
        };
        let now = report(linked, &rec);
        if published.as_ref() != Some(&now) {
            let value = serde_json::to_value(&now).expect("serializable");
            let written = match ConsulApi::local() {
                Ok(api) => api
                    .set_many(&crate::sys::mapping::Mapping::from([(key.clone(), value)]))
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            if written {
                published = Some(now);
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_carries_the_nodes_own_actions_not_the_members_changes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::sys::paths::Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        let rec = Recorder::new(&paths, "node");
        rec.event("restart", "consul");
        rec.event("cluster_change", "a joined (passing)");
        let r = report(["k2".to_string(), "k1".to_string()], &rec);
        assert_eq!(r.linked_keys, ["k1", "k2"]);
        let kinds: Vec<&str> = r.actions.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(kinds, ["restart"]);
        assert_eq!(report(Vec::new(), &rec), report(Vec::new(), &rec));
        rec.event("cluster_change", "b joined (passing)");
        assert_eq!(report(Vec::new(), &rec).actions.len(), 1, "no new report for a change");
    }
}
