//! The top layer: the cluster's shared config in consul's KV.
//!
//! Only a node that takes part in consensus (it has a rendered consul config under
//! `<cache-dir>/mesh/`) asks its local agent. Reads go to consul first; what it returns is
//! cached (the mutable cache becomes a copy of the KV), so that the node can still bootstrap
//! machines when consul is gone. Writes go to consul when it answers, else only to the cache,
//! and the keys written are remembered in `<cache-dir>/var/pending_shared.json` and pushed
//! before the next read that reaches consul.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{Mapping, MutableCache};
use crate::consensus::SharedStore;
use crate::consensus::api::{ConsulApi, LOCAL_HTTP};
use crate::paths::Paths;

/// How long a read or write waits for the local agent before the cache is used instead.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The node's mesh state dir (overlay keys, daemon configs, consul data).
pub fn mesh_dir(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("mesh")
}

/// Whether this machine runs (or is meant to run) a consul agent.
pub fn consul_configured(paths: &Paths) -> bool {
    mesh_dir(paths).join("consul.json").is_file()
}

fn pending_file(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("var").join("pending_shared.json")
}

/// Runs `fut` to completion on a thread of its own, so that it works from sync code and from
/// inside a runtime alike.
pub fn block_on<F: std::future::Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds")
                .block_on(fut)
        })
        .join()
        .expect("the consul thread does not panic")
    })
}

/// The KV's mapping, when this node has consul and it answers with a non-empty KV. Writes made
/// while consul was away are pushed first.
pub fn read(paths: &Paths) -> Option<Mapping> {
    if !consul_configured(paths) {
        return None;
    }
    block_on(async {
        let api = ConsulApi::new(LOCAL_HTTP, TIMEOUT).ok()?;
        read_with(paths, &api).await
    })
}

/// [`read`] for async callers with a client of their own (the agent): no thread, no runtime.
pub async fn read_with(paths: &Paths, api: &ConsulApi) -> Option<Mapping> {
    if !consul_configured(paths) {
        return None;
    }
    let result = async {
        push_pending(paths, api).await?;
        // A KV still being seeded is not the shared config yet.
        if !api.is_seeded().await? {
            return Ok(Mapping::new());
        }
        api.read_all().await
    }
    .await;
    match result {
        Ok(m) if !m.is_empty() => Some(m),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("shared config not read from consul, using the cache: {e:#}");
            None
        }
    }
}

/// Where a write ended up.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Consul has it (and the cache).
    Consul,
    /// Only the cache; pushed to consul later.
    CacheOnly,
    /// This machine is not in a cluster: the cache is the shared config.
    Local,
}

/// Writes `set` and removes the trees under `removed` in consul, or records them as pending.
/// The cache must already hold the change.
pub fn write(paths: &Paths, set: &Mapping, removed: &[String]) -> Written {
    if !consul_configured(paths) {
        return Written::Local;
    }
    let result = block_on(async {
        let api = ConsulApi::new(LOCAL_HTTP, TIMEOUT)?;
        push_pending(paths, &api).await?;
        api.set_many(set).await?;
        for key in removed {
            api.delete_tree(key).await?;
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => Written::Consul,
        Err(e) => {
            tracing::warn!("consul is not reachable ({e:#}); the change is kept in the cache and pushed later");
            let keys: Vec<String> = set.keys().cloned().chain(removed.iter().cloned()).collect();
            if let Err(e) = add_pending(paths, &keys) {
                tracing::warn!("cannot record the pending change: {e:#}");
            }
            Written::CacheOnly
        }
    }
}

fn read_pending(paths: &Paths) -> BTreeSet<String> {
    std::fs::read(pending_file(paths))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn add_pending(paths: &Paths, keys: &[String]) -> anyhow::Result<()> {
    let mut pending = read_pending(paths);
    pending.extend(keys.iter().cloned());
    let file = pending_file(paths);
    std::fs::create_dir_all(file.parent().expect("has a parent"))?;
    super::cache::write_atomic(&file, &serde_json::to_vec_pretty(&pending)?)?;
    Ok(())
}

/// Pushes the keys written while consul was away: their cached values, or their removal.
pub async fn push_pending(paths: &Paths, api: &ConsulApi) -> anyhow::Result<()> {
    let pending = read_pending(paths);
    if pending.is_empty() {
        return Ok(());
    }
    let cached = MutableCache::new(&paths.cache_dir).read()?.unwrap_or_default();
    let mut set = Mapping::new();
    for key in &pending {
        let below = format!("{key}/");
        let tree: Vec<_> = cached
            .iter()
            .filter(|(k, _)| *k == key || k.starts_with(&below))
            .collect();
        if tree.is_empty() {
            api.delete_tree(key).await?;
        } else {
            set.extend(tree.into_iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    api.set_many(&set).await?;
    tracing::info!("pushed {} change(s) made while consul was away", pending.len());
    let _ = std::fs::remove_file(pending_file(paths));
    Ok(())
}
