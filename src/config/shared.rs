//! The top layer: the cluster's shared config in consul's KV, and how a node's cache follows it.
//!
//! Only a node that takes part in consensus (it has a rendered consul config under
//! `<cache-dir>/mesh/`) asks its local agent. The sync algorithm:
//!
//! 1. **The KV is the truth while it is reachable.** A read that reaches consul first pushes
//!    the pending changes (3.), then reads the whole KV (only once its seeding is complete,
//!    see [`SEEDED_KEY`](crate::consensus::api::SEEDED_KEY)) and caches it, with the KV index
//!    of that read in `<cache-dir>/var/kv_index`. Keys still pending keep their local values
//!    in the cache, so a change made meanwhile is never overwritten by the copy.
//! 2. **A change** (`config set`/`unset`, a node's own entry) is made under the cache's
//!    exclusive lock: consul gets it first; the cache gets it; when consul did not answer, the
//!    pending record (`<cache-dir>/var/pending_shared.json`) gets the key, the operation and
//!    the KV index the cache was based on, in the same locked section.
//! 3. **Pushing** (under the cache's lock): for each pending key, the KV's current entries at
//!    and below it are read. If the cluster changed any of them after the recorded index, the
//!    cluster's value wins: the local change is dropped and named in the log. Otherwise the
//!    change goes up in one transaction that checks those entries are unchanged
//!    (check-and-set); if the check fails the cluster's value wins too. A key leaves the record
//!    once pushed or dropped; keys recorded meanwhile stay.
//! 4. A transaction that consul rolls back is an error, never "stored".

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::cache::CacheLock;
use super::{Mapping, MutableCache};
use crate::consensus::SharedStore;
use crate::consensus::api::{ConsulApi, LOCAL_HTTP};
use crate::sys::paths::Paths;

/// How long a read or write waits for the local agent before the cache is used instead (an
/// election after a partition can hold a write for some seconds).
const TIMEOUT: Duration = Duration::from_secs(8);

/// The node's mesh state dir (overlay keys, daemon configs, consul data).
pub fn mesh_dir(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("mesh")
}

/// Whether this machine is a node: `mesh` rendered its overlay (or consul) here, also before
/// its consul runs (a lone node, a cluster of two). A workstation has neither.
pub fn is_node(paths: &Paths) -> bool {
    let dir = mesh_dir(paths);
    dir.join("yggdrasil.conf").is_file() || dir.join("consul.json").is_file()
}

/// Whether this machine runs (or is meant to run) a consul agent.
pub fn consul_configured(paths: &Paths) -> bool {
    mesh_dir(paths).join("consul.json").is_file()
}

fn pending_file(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("var").join("pending_shared.json")
}

/// What the KV held at one read: the mapping and the KV's index of the read.
pub type Snapshot = (Mapping, u64);

/// The KV's mapping, when this node has consul and it answers with a seeded, non-empty KV.
/// Reads only: the changes made while consul was away are pushed by [`push_pending`], a step
/// of its own.
pub async fn read(paths: &Paths) -> Option<Snapshot> {
    if !consul_configured(paths) {
        return None;
    }
    let api = ConsulApi::new(LOCAL_HTTP, TIMEOUT).ok()?;
    read_with(paths, &api).await
}

/// The steps a command takes on a node before it loads the config: the changes made while
/// consul was away are pushed (3.), then the KV is read and cached (1.). True when the cache
/// now holds the KV; false on a machine that is not a node, or when consul did not answer (the
/// cache is used as it is).
pub async fn sync(paths: &Paths) -> bool {
    if !consul_configured(paths) {
        return false;
    }
    let Ok(api) = ConsulApi::new(LOCAL_HTTP, TIMEOUT) else {
        return false;
    };
    if let Err(e) = push_pending(paths, &api).await {
        tracing::debug!("pending changes not pushed yet: {e:#}");
    }
    // The KV has not moved since the cache took it: one small read instead of the whole KV
    // (a big shared config is thousands of keys, and commands on a node read it often).
    let cached = read_index(paths);
    if cached != 0
        && MutableCache::new(&paths.cache_dir).path().is_file()
        && api.config_index().await.is_ok_and(|now| now == cached)
    {
        return true;
    }
    let Some(kv) = read_with(paths, &api).await else {
        return false;
    };
    take(paths, Some(kv)).is_some()
}

/// Caches `kv`, a read of the KV (pending keys keep their local values), and returns what was
/// cached: the shared layer to load the config over. None when there is no read, or it is
/// unusable (named in the log) or cannot be cached.
pub fn take(paths: &Paths, kv: Option<Snapshot>) -> Option<Mapping> {
    let (kv, index) = kv?;
    if let Err(e) = super::mapping::validate(&kv) {
        tracing::warn!("consul's KV holds an unusable shared config ({e}); using the cache");
        return None;
    }
    match cache_snapshot(paths, (kv, index)) {
        Ok(cached) => Some(cached),
        Err(e) => {
            tracing::warn!("cannot cache the shared config: {e:#}");
            None
        }
    }
}

/// [`read`] for async callers with a client of their own (the agent): no thread, no runtime.
pub async fn read_with(paths: &Paths, api: &ConsulApi) -> Option<Snapshot> {
    if !consul_configured(paths) {
        return None;
    }
    let result = async {
        // A KV still being seeded is not the shared config yet.
        if !api.is_seeded().await? {
            return Ok((Mapping::new(), 0));
        }
        api.read_all_indexed().await
    }
    .await;
    match result {
        Ok((m, i)) if !m.is_empty() => Some((m, i)),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!("shared config not read from consul, using the cache: {e:#}");
            None
        }
    }
}

/// Caches what the KV held (1.): the pending keys keep their local values. Returns what was
/// cached.
pub fn cache_snapshot(paths: &Paths, (kv, index): Snapshot) -> anyhow::Result<Mapping> {
    let cache = MutableCache::new(&paths.cache_dir);
    let held = cache.lock_exclusive()?;
    let current = cache.read_locked(&held)?;
    let pending = read_pending(paths);
    let mut next = kv;
    if let Some(local) = &current {
        keep_pending(&mut next, local, &pending);
    }
    if current.as_ref() != Some(&next) {
        cache.write_locked(&held, &next)?;
    }
    write_index(paths, index)?;
    Ok(next)
}

/// Caches one subtree of the KV as read (`tree`: the keys under `key/`), the rest of the cache
/// as it is; pending keys keep their local values. Returns what was cached. The cache's KV
/// index stays as it was: the next full read is not skipped for it. For the agent, whose
/// watch brings the neighbours on every change: reading the whole KV for each (on every
/// node) was the servers' heaviest load while a cluster grew.
pub fn cache_tree(paths: &Paths, key: &str, tree: Mapping) -> anyhow::Result<Mapping> {
    let cache = MutableCache::new(&paths.cache_dir);
    let held = cache.lock_exclusive()?;
    let Some(current) = cache.read_locked(&held)? else {
        anyhow::bail!("nothing is cached yet to put `{key}` in");
    };
    let mut next = current.clone();
    super::mapping::remove_subtree(&mut next, key);
    next.extend(tree);
    keep_pending(&mut next, &current, &read_pending(paths));
    if next != current {
        cache.write_locked(&held, &next)?;
    }
    Ok(next)
}

/// The pending keys of `next` (a copy of the KV) back to their `local` values (or removed).
fn keep_pending(next: &mut Mapping, local: &Mapping, pending: &Pending) {
    for (key, change) in &pending.changes {
        super::mapping::remove_subtree(next, key);
        if change.op == Op::Set {
            next.extend(super::mapping::tree(local, key));
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

/// One change of the shared config (2.): under the cache's exclusive lock, `change` edits the
/// cached mapping (it gets what is cached, None when nothing is), consul gets `set` and the
/// removal of the trees under `removed`, and when consul does not answer the change is
/// recorded as pending. Nothing is written when `change` fails.
pub async fn commit<T>(
    paths: &Paths,
    set: &Mapping,
    removed: &[String],
    change: impl FnOnce(Option<Mapping>) -> anyhow::Result<(Mapping, T)>,
) -> anyhow::Result<(T, Written)> {
    let cache = MutableCache::new(&paths.cache_dir);
    let held = cache.lock_exclusive()?;
    let current = cache.read_locked(&held)?;
    let (next, out) = change(current)?;
    let written = if !consul_configured(paths) {
        Written::Local
    } else {
        let result = async {
            let api = ConsulApi::new(LOCAL_HTTP, TIMEOUT)?;
            push_pending_locked(paths, &api, &next, &held).await?;
            if !set.is_empty() {
                api.set_many(set).await?;
            }
            for key in removed {
                api.delete_tree(key).await?;
            }
            anyhow::Ok(())
        }
        .await;
        match result {
            Ok(()) => Written::Consul,
            Err(e) => {
                tracing::warn!("consul is not reachable ({e:#}); the change is kept in the cache and pushed later");
                Written::CacheOnly
            }
        }
    };
    cache.write_locked(&held, &next)?;
    if written == Written::CacheOnly {
        let base = read_index(paths);
        let mut pending = read_pending(paths);
        for key in set.keys() {
            pending.changes.insert(key.clone(), Change { op: Op::Set, base });
        }
        for key in removed {
            // A removal replaces what was pending below it.
            let below = format!("{key}/");
            pending.changes.retain(|k, _| !k.starts_with(&below));
            pending.changes.insert(key.clone(), Change { op: Op::Delete, base });
        }
        write_pending(paths, &pending)?;
    }
    Ok((out, written))
}

/// What a pending change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    /// Sets the key (and what the cache holds below it) to the cached values.
    Set,
    /// Removes the key and what lies below it.
    Delete,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Change {
    op: Op,
    /// The KV index the cache was based on when the change was made (0: unknown).
    base: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Pending {
    changes: BTreeMap<String, Change>,
}

fn index_file(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("var").join("kv_index")
}

fn read_index(paths: &Paths) -> u64 {
    std::fs::read_to_string(index_file(paths))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_index(paths: &Paths, index: u64) -> anyhow::Result<()> {
    // Reads are frequent and the index moves only with writes: no write (and fsync) for the
    // same index.
    if read_index(paths) == index {
        return Ok(());
    }
    let file = index_file(paths);
    crate::sys::fs_atomic::write_atomic_creating(&file, format!("{index}\n").as_bytes())?;
    Ok(())
}

/// The pending record; an unreadable one (an older format) counts as empty, with a warning.
fn read_pending(paths: &Paths) -> Pending {
    let Ok(bytes) = std::fs::read(pending_file(paths)) else {
        return Pending::default();
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(
            "ignoring the unreadable pending record `{}`: {e}",
            pending_file(paths).display()
        );
        Pending::default()
    })
}

fn write_pending(paths: &Paths, pending: &Pending) -> anyhow::Result<()> {
    let file = pending_file(paths);
    if pending.changes.is_empty() {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => return Ok(()),
        }
    }
    crate::sys::fs_atomic::write_atomic_creating(&file, &serde_json::to_vec_pretty(pending)?)?;
    Ok(())
}

/// Forgets the pending record and the KV index (`clean`).
pub fn forget_sync_state(paths: &Paths) {
    let _ = std::fs::remove_file(pending_file(paths));
    let _ = std::fs::remove_file(index_file(paths));
}

/// Pushes the pending changes (3.), taking the cache's lock.
pub async fn push_pending(paths: &Paths, api: &ConsulApi) -> anyhow::Result<()> {
    if !pending_file(paths).exists() {
        return Ok(());
    }
    let cache = MutableCache::new(&paths.cache_dir);
    let held = cache.lock_exclusive()?;
    let cached = cache.read_locked(&held)?.unwrap_or_default();
    push_pending_locked(paths, api, &cached, &held).await
}

/// Pushes the pending changes with the cache's lock held; `cached` is what the cache holds.
async fn push_pending_locked(
    paths: &Paths,
    api: &ConsulApi,
    cached: &Mapping,
    _held: &CacheLock,
) -> anyhow::Result<()> {
    let mut pending = read_pending(paths);
    if pending.changes.is_empty() {
        return Ok(());
    }
    let (mut pushed, mut dropped) = (0, Vec::new());
    for (key, change) in pending.changes.clone() {
        let there = api.tree_indexes(&key).await?;
        let changed_since = change.base > 0 && there.iter().any(|(_, i)| *i > change.base);
        let applied = if changed_since {
            false
        } else {
            // Check that nothing moved since we looked, then apply: one transaction.
            let mut ops: Vec<Value> = there
                .iter()
                .map(|(k, i)| json!({"KV": {"Verb": "check-index", "Key": k, "Index": i}}))
                .collect();
            match change.op {
                Op::Set => {
                    let local = super::mapping::tree(cached, &key);
                    for (k, _) in &there {
                        if !local.contains_key(k) {
                            ops.push(json!({"KV": {"Verb": "delete", "Key": k}}));
                        }
                    }
                    for (k, v) in &local {
                        ops.push(json!({"KV": {"Verb": "set", "Key": k, "Value": crate::consensus::api::encode(v)}}));
                    }
                }
                Op::Delete => {
                    ops.push(json!({"KV": {"Verb": "delete", "Key": key}}));
                    ops.push(json!({"KV": {"Verb": "delete-tree", "Key": format!("{key}/")}}));
                }
            }
            if ops.len() <= 64 {
                api.txn_once(ops).await?
            } else {
                // Too large for one transaction: without the checks, in parts.
                let rest: Vec<Value> = ops.into_iter().filter(|o| o["KV"]["Verb"] != "check-index").collect();
                let mut all = true;
                for part in rest.chunks(64) {
                    all &= api.txn_once(part.to_vec()).await?;
                }
                all
            }
        };
        if applied {
            pushed += 1;
        } else {
            dropped.push(key.clone());
        }
        pending.changes.remove(&key);
    }
    write_pending(paths, &pending)?;
    if pushed > 0 {
        tracing::info!("pushed {pushed} change(s) made while consul was away");
    }
    for key in &dropped {
        tracing::warn!(
            "the cluster changed `{key}` while this node was away: its value wins, this node's change to it was dropped"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(extra: &[(&str, &str)]) -> Mapping {
        let mut m = crate::config::mapping::flatten(&json!({
            "server": {"s": {"p": {"bootstrap": "b"}}},
            "compute": {"c": {"s": {"get_port": "echo 22"}}},
            "platform": {"default": {"hooks": {"h": {"x": {"command": "true"}}}}}
        }));
        for (k, v) in extra {
            m.insert(format!("raptiformica/{k}"), Value::from(*v));
        }
        m
    }

    #[test]
    fn caching_the_kv_keeps_the_pending_local_changes() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        let cache = MutableCache::new(&paths.cache_dir);
        cache
            .update(|_| Ok((complete(&[("a", "local"), ("gone", "x"), ("gone/below", "y")]), ())))
            .unwrap();
        let mut pending = Pending::default();
        pending
            .changes
            .insert("raptiformica/a".into(), Change { op: Op::Set, base: 7 });
        pending.changes.insert(
            "raptiformica/gone".into(),
            Change {
                op: Op::Delete,
                base: 7,
            },
        );
        write_pending(&paths, &pending).unwrap();

        let kv = complete(&[("a", "cluster"), ("b", "new"), ("gone/below", "cluster")]);
        let cached = cache_snapshot(&paths, (kv, 42)).unwrap();
        assert_eq!(
            cached["raptiformica/a"],
            json!("local"),
            "a pending set keeps its local value"
        );
        assert_eq!(
            cached["raptiformica/b"],
            json!("new"),
            "the cluster's other changes come down"
        );
        assert!(
            !cached.contains_key("raptiformica/gone/below"),
            "a pending removal stays removed"
        );
        assert_eq!(cache.read().unwrap().unwrap(), cached);
        assert_eq!(read_index(&paths), 42);

        // Nothing pending: the cache becomes the KV's copy; an emptied record leaves no file.
        write_pending(&paths, &Pending::default()).unwrap();
        assert!(!pending_file(&paths).exists());
        let kv = complete(&[("a", "cluster")]);
        assert_eq!(cache_snapshot(&paths, (kv.clone(), 43)).unwrap(), kv);
    }

    #[test]
    fn caching_a_subtree_replaces_it_alone_and_keeps_the_pending_changes_and_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        assert!(
            cache_tree(&paths, "raptiformica/n", Mapping::new()).is_err(),
            "no cache yet"
        );
        let cache = MutableCache::new(&paths.cache_dir);
        let local = complete(&[("n/mine/host", "local"), ("n/old/host", "h1"), ("other", "kept")]);
        cache_snapshot(&paths, (local, 42)).unwrap();
        let mut pending = Pending::default();
        pending
            .changes
            .insert("raptiformica/n/mine".into(), Change { op: Op::Set, base: 42 });
        write_pending(&paths, &pending).unwrap();

        let tree = Mapping::from([
            ("raptiformica/n/mine/host".to_string(), json!("cluster")),
            ("raptiformica/n/new/host".to_string(), json!("h2")),
        ]);
        let cached = cache_tree(&paths, "raptiformica/n", tree).unwrap();
        assert_eq!(cached["raptiformica/n/mine/host"], json!("local"), "pending: kept");
        assert_eq!(cached["raptiformica/n/new/host"], json!("h2"));
        assert!(
            !cached.contains_key("raptiformica/n/old/host"),
            "gone from the KV: gone"
        );
        assert_eq!(cached["raptiformica/other"], json!("kept"), "outside the subtree: kept");
        assert_eq!(cache.read().unwrap().unwrap(), cached);
        assert_eq!(read_index(&paths), 42, "not a full read: the index stays");
    }
}
