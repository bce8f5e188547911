//! This node's own neighbour entry in the shared config, as its agent keeps it: put back when
//! the KV lost it (evicted while the node was cut off, or lost with a rebuilt store), and the
//! admissions of its running overlay published.

use serde_json::{Value, json};

use super::status::Recorder;
use crate::config::Mapping;
use crate::consensus::SharedStore;
use crate::consensus::api::{ConsulApi, encode};
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

/// Publishes which nodes this node's running overlay admits (`yggdrasil_admits_upto`, see
/// [`admits_upto`](crate::mesh::plan::admits_upto)), so that the others do not dial it
/// before it admits them (see `crate::mesh::plan::overlay_plan`), and when its own key
/// entered the KV (`yggdrasil_since`), which the others' admissions are told in. An earlier
/// version's list (`yggdrasil_admits`) goes in the same write. `published`: what was
/// published from here (the cache may not show it yet: each write wakes every node's watch).
pub async fn publish_admits(
    api: &ConsulApi,
    overlay: &Yggdrasil,
    cached: &Mapping,
    me: &str,
    published: &mut Published,
) {
    let Some(admitted) = overlay.admitted() else {
        return;
    };
    let mut ops = Vec::new();
    let since_key = neighbours::key(me, "yggdrasil_since");
    if !cached.contains_key(&since_key) && !published.since {
        match api.created_at(&neighbours::key(me, "yggdrasil_public_key")).await {
            Ok(Some(since)) => ops.push(set(&since_key, since.to_string())),
            Ok(None) => return, // our entry is not in the KV (yet, or any more: see `keep`)
            Err(e) => return tracing::debug!("cannot read when our overlay key was written: {e:#}"),
        }
    }
    let value = crate::mesh::plan::admits_upto(cached, me, &admitted);
    let key = neighbours::key(me, "yggdrasil_admits_upto");
    let in_cache = cached.get(&key).and_then(Value::as_str);
    if in_cache != Some(value.as_str()) && published.upto.as_deref() != Some(value.as_str()) {
        ops.push(set(&key, value.clone()));
    }
    let listed = neighbours::key(me, "yggdrasil_admits");
    if cached.contains_key(&listed) && !published.list_removed {
        ops.push(json!({"KV": {"Verb": "delete", "Key": listed}}));
    }
    if ops.is_empty() {
        return;
    }
    match api.txn_once(ops).await {
        Ok(true) => {
            *published = Published {
                since: true,
                upto: Some(value),
                list_removed: true,
            }
        }
        Ok(false) => tracing::debug!("admissions not published: the write was rolled back"),
        Err(e) => tracing::debug!("admissions not published yet: {e:#}"),
    }
}

/// What [`publish_admits`] wrote from here.
#[derive(Debug, Default)]
pub struct Published {
    since: bool,
    upto: Option<String>,
    list_removed: bool,
}

/// A transaction's `set` of `key` to the string `value`.
fn set(key: &str, value: String) -> Value {
    json!({"KV": {"Verb": "set", "Key": key, "Value": encode(&Value::from(value))}})
}
