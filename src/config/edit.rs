//! Changes to the mutable layer: `config set` and `config unset`.
//!
//! Each change is one read-modify-write of the cache under its exclusive lock, so concurrent
//! changes from several processes are all kept. The cache is written as the full effective
//! mapping (modules overlaid with what was cached), so it can seed a new node or consul's KV.

use anyhow::bail;
use serde_json::Value;

use super::{MutableCache, load_modules, mapping, shared};
use crate::sys::paths::Paths;

/// Sets `key` (already normalized) to `value` in the mutable cache.
/// On a node in a cluster the change goes to consul's KV too (or is pushed later).
pub async fn set(paths: &Paths, key: &str, value: Value) -> anyhow::Result<shared::Written> {
    let modules = load_modules(paths).0.mapping;
    let one = mapping::Mapping::from([(key.to_string(), value.clone())]);
    let ((), written) = shared::commit(paths, &one, &[], |cached| {
        let mut next = below_cache(&modules, cached);
        mapping::check_settable(&next, key).map_err(anyhow::Error::msg)?;
        super::known::check(key, &value).map_err(refused)?;
        next.insert(key.to_string(), value);
        Ok((next, ()))
    })
    .await?;
    Ok(written)
}

/// Sets every key of `entries` in the mutable cache and in the shared config (a node's own
/// neighbour entry, what a slaver handed over).
pub async fn set_many(paths: &Paths, entries: &mapping::Mapping) -> anyhow::Result<shared::Written> {
    let modules = load_modules(paths).0.mapping;
    super::known::check_all(entries).map_err(refused)?;
    let ((), written) = shared::commit(paths, entries, &[], |cached| {
        let mut next = below_cache(&modules, cached);
        next.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok((next, ()))
    })
    .await?;
    Ok(written)
}

/// Sets `set` and removes the keys `removed` (each with what lies below it) in one change of
/// the shared config: the mutable cache and, on a node, consul's KV. A module being installed
/// or removed (`modules`) changes its keys this way.
pub async fn apply(paths: &Paths, set: &mapping::Mapping, removed: &[String]) -> anyhow::Result<shared::Written> {
    let modules = load_modules(paths).0.mapping;
    super::known::check_all(set).map_err(refused)?;
    let ((), written) = shared::commit(paths, set, removed, |cached| {
        let mut next = below_cache(&modules, cached);
        for key in removed {
            mapping::remove_subtree(&mut next, key);
        }
        next.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok((next, ()))
    })
    .await?;
    Ok(written)
}

/// Changes the mutable cache with `change`, which sees the modules overlaid with the cache,
/// all under one exclusive lock.
pub fn update<T>(paths: &Paths, change: impl FnOnce(&mut mapping::Mapping) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let modules = load_modules(paths).0.mapping;
    MutableCache::new(&paths.cache_dir).update(|cached| {
        let mut next = below_cache(&modules, cached);
        let out = change(&mut next)?;
        Ok((next, out))
    })
}

/// Takes the cluster's shared config `kv` into the cache of a machine that is not a node (the
/// workstation): the cluster's data, this machine's own commands (see [`super::trust`]), under
/// one exclusive lock. Returns the command keys of the cluster that were not taken.
pub fn adopt_cluster(paths: &Paths, kv: &mapping::Mapping) -> anyhow::Result<Vec<String>> {
    let modules = load_modules(paths).0.mapping;
    MutableCache::new(&paths.cache_dir).update(|cached| {
        let adopted = super::trust::adopt(&below_cache(&modules, cached), kv);
        Ok((adopted.mapping, adopted.refused))
    })
}

/// Removes `key` and what lies below `key/` from the mutable cache only (for a change that is
/// in consul's KV already, or a machine that is gone). Nothing to do without a cache.
pub fn forget_tree(paths: &Paths, key: &str) -> anyhow::Result<()> {
    let cache = MutableCache::new(&paths.cache_dir);
    if cache.read()?.is_none() {
        return Ok(());
    }
    cache.update(|cached| {
        let mut m = cached.unwrap_or_default();
        mapping::remove_subtree(&mut m, key);
        Ok((m, ()))
    })
}

/// What `unset` did.
#[derive(Debug, PartialEq)]
pub enum Unset {
    /// The keys were removed; none of them has a module value.
    Removed(usize),
    /// The keys were removed from the cache; these keys fall back to their module values.
    FellBack(Vec<String>),
}

/// Removes `key` and every key below it from the mutable cache (and the shared config).
pub async fn unset(paths: &Paths, key: &str) -> anyhow::Result<Unset> {
    let modules = load_modules(paths).0.mapping;
    let on_node = shared::consul_configured(paths);
    let (result, written) = shared::commit(paths, &mapping::Mapping::new(), &[key.to_string()], |cached| {
        match unset_in(&modules, key, cached.clone()) {
            Ok((next, r)) => Ok((next, Ok(r))),
            // On a node, consul's KV may hold the key although this cache does not (yet).
            Err(e) if on_node => Ok((below_cache(&modules, cached), Err(e))),
            Err(e) => Err(e),
        }
    })
    .await?;
    match (result, written) {
        (Ok(r), _) => Ok(r),
        (Err(_), shared::Written::Consul) => Ok(Unset::Removed(0)),
        (Err(e), _) => Err(e),
    }
}

/// The cache without `key` and what lies below it, and what that did.
fn unset_in(
    modules: &mapping::Mapping,
    key: &str,
    cached: Option<mapping::Mapping>,
) -> anyhow::Result<(mapping::Mapping, Unset)> {
    let Some(cached) = cached else {
        if mapping::subtree(modules, key).next().is_some() {
            bail!(
                "`{key}` comes from a module, not the mutable layer; override it with `config set` or remove the module"
            );
        }
        bail!("`{key}` is not set");
    };
    let gone: Vec<String> = mapping::subtree(&cached, key).map(|(k, _)| k.clone()).collect();
    if gone.is_empty() {
        bail!("`{key}` is not set");
    }
    let mut rest = cached;
    for k in &gone {
        rest.remove(k);
    }
    // Below the cache there are only the modules: keys they define show their value again.
    let mut next = modules.clone();
    next.extend(rest);
    let fell_back: Vec<String> = gone.iter().filter(|k| modules.contains_key(*k)).cloned().collect();
    let result = if fell_back.is_empty() {
        Unset::Removed(gone.len())
    } else {
        Unset::FellBack(fell_back)
    };
    Ok((next, result))
}

/// A value refused by its key's check, with the fix.
fn refused(why: String) -> anyhow::Error {
    anyhow::anyhow!("refused: {why}; nothing was changed (set a valid value, or `raptiformica config unset` the key)")
}

/// The modules overlaid with the cache: the mapping a change to the cache starts from. The
/// module files are read before the cache's lock is taken, so the lock is held only briefly.
fn below_cache(modules: &mapping::Mapping, cached: Option<mapping::Mapping>) -> mapping::Mapping {
    let mut next = modules.clone();
    if let Some(cached) = cached {
        next.extend(cached);
    }
    next
}
