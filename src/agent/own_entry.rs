//! This node's own neighbour entry in the shared config, as its agent keeps it: put back when
//! the KV lost it (evicted while the node was cut off, or lost with a rebuilt store), and the
//! admissions of its running overlay published.

use serde_json::Value;

use super::status::Recorder;
use crate::config::Mapping;
use crate::consensus::SharedStore;
use crate::consensus::api::ConsulApi;
use crate::mesh::neighbours;
use crate::mesh::yggdrasil::Yggdrasil;

/// Writes `entry` (this node's neighbour entry as the agent found it at start) back into the
/// KV when the KV has none for `me`.
pub async fn keep(api: &ConsulApi, entry: &Mapping, me: &str, rec: &Recorder) {
    let probe = neighbours::key(me, "yggdrasil_public_key");
    if let Ok(None) = api.get_value(&probe).await {
        match api.set_many(entry).await {
            Ok(()) => rec.event("rejoin", format!("own neighbour entry {me} written back")),
            Err(e) => tracing::debug!("cannot write our neighbour entry back: {e:#}"),
        }
    }
}

/// Publishes which nodes this node's running overlay admits (`yggdrasil_admits`), so that the
/// others do not dial it before it admits them (see `crate::mesh::plan::overlay_plan`).
/// `published`: what was last published from here.
pub async fn publish_admits(
    api: &ConsulApi,
    overlay: &Yggdrasil,
    cached: &Mapping,
    me: &str,
    published: &mut Option<String>,
) {
    let Some(admitted) = overlay.admitted() else {
        return;
    };
    let value = crate::mesh::plan::admits(cached, me, &admitted);
    let key = neighbours::key(me, "yggdrasil_admits");
    let in_cache = cached.get(&key).and_then(Value::as_str);
    if in_cache == Some(value.as_str()) || published.as_deref() == Some(value.as_str()) {
        return;
    }
    match api.set_many(&Mapping::from([(key, Value::from(value.clone()))])).await {
        Ok(()) => *published = Some(value),
        Err(e) => tracing::debug!("admissions not published yet: {e:#}"),
    }
}
