//! Consul roles as the rules act on them: which servers vote, and promoting a client.

use std::collections::HashMap;
use std::time::Duration;

use crate::sys::clock::unix_now;

use serde_json::Value;

use super::status::Recorder;
use crate::config::Mapping;
use crate::config::context::Context;
use crate::consensus::SharedStore;
use crate::consensus::api::ConsulApi;
use crate::mesh::neighbours;

/// The field that records when a node was promoted (unix seconds).
const PROMOTED_AT: &str = "promoted_at";

/// The voting servers in the raft configuration (None when it cannot be read: no leader).
pub async fn voters(api: &ConsulApi) -> Option<Vec<String>> {
    let raft = api.raft().await.ok()?;
    Some(raft.into_iter().filter(|s| s.voter).map(|s| s.node).collect())
}

/// Records `node` as a server in the shared config, with the time of the promotion; its own
/// agent restarts consul as one.
pub async fn promote(api: &ConsulApi, node: &str) -> anyhow::Result<()> {
    api.set_many(&Mapping::from([
        (neighbours::key(node, "consul_role"), Value::from("server")),
        (neighbours::key(node, PROMOTED_AT), Value::from(unix_now())),
    ]))
    .await
}

/// The nodes recorded as servers because an agent promoted them, with how long ago that was.
/// Until such a node serves, the rules count it as a server on its way (see `rules::decide`).
pub async fn promotions(api: &ConsulApi) -> anyhow::Result<HashMap<String, Duration>> {
    Ok(promotions_in(&api.read_tree(neighbours::NEIGHBOURS).await?, unix_now()))
}

fn promotions_in(mapping: &Mapping, now: u64) -> HashMap<String, Duration> {
    neighbours::all(mapping)
        .into_iter()
        .filter(|n| n.consul_role == Some(neighbours::Role::Server))
        .filter_map(|n| {
            let at = match mapping.get(&neighbours::key(&n.id, PROMOTED_AT))? {
                Value::String(s) => s.parse().ok()?,
                v => v.as_u64()?,
            };
            Some((n.id, Duration::from_secs(now.saturating_sub(at))))
        })
        .collect()
}

/// A client recorded as server in the shared config (promoted by an agent) re-renders its
/// consul config: `mesh` does, and restarts consul as a server. Whether it tried.
pub async fn follow_recorded((ctx, rec): (&Context, &Recorder), cached: &Mapping, me: &str) -> bool {
    let recorded = cached.get(&neighbours::key(me, "consul_role")).and_then(Value::as_str);
    if recorded != Some("server") {
        return false;
    }
    let opts = crate::node::mesh::MeshOptions {
        with_config: Mapping::new(),
        wait: Duration::from_secs(15),
        after_mesh: false,
    };
    match crate::node::mesh::mesh(ctx, &opts).await {
        Ok(r) => rec.event(
            "promote",
            format!(
                "this node is a consul server now (consul {})",
                r.consul_daemon.unwrap_or_default()
            ),
        ),
        Err(e) => rec.event("error", format!("promotion to server failed: {e:#}")),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nodes_recorded_as_servers_with_a_time_are_promotions() {
        let m = Mapping::from([
            (neighbours::key("a", "consul_role"), Value::from("server")),
            (neighbours::key("a", PROMOTED_AT), Value::from(1_000)),
            (neighbours::key("b", "consul_role"), Value::from("server")),
            (neighbours::key("c", "consul_role"), Value::from("client")),
            (neighbours::key("c", PROMOTED_AT), Value::from(1_000)),
            (neighbours::key("d", "consul_role"), Value::from("server")),
            (neighbours::key("d", PROMOTED_AT), Value::from("1040")),
        ]);
        let p = promotions_in(&m, 1_042);
        assert_eq!(
            p,
            HashMap::from([
                ("a".to_string(), Duration::from_secs(42)),
                ("d".to_string(), Duration::from_secs(2))
            ])
        );
    }
}
