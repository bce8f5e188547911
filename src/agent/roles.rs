//! Consul roles as the rules act on them: which servers vote, and promoting a client.

use serde_json::Value;

use crate::config::Mapping;
use crate::consensus::SharedStore;
use crate::consensus::api::ConsulApi;
use crate::mesh::neighbours;

/// The voting servers in the raft configuration (None when it cannot be read: no leader).
pub async fn voters(api: &ConsulApi) -> Option<Vec<String>> {
    let raft = api.raft().await.ok()?;
    Some(raft.into_iter().filter(|s| s.voter).map(|s| s.node).collect())
}

/// Records `node` as a server in the shared config; its own agent restarts consul as one.
pub async fn promote(api: &ConsulApi, node: &str) -> anyhow::Result<()> {
    api.set_many(&Mapping::from([(
        neighbours::key(node, "consul_role"),
        Value::from("server"),
    )]))
    .await
}
