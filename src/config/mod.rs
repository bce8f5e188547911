//! The layered config, the heart of the tool.
//!
//! Layers, lowest first, each overriding the ones before key by key:
//! 1. built-in modules (`compute/`, `provisioning/`, `modules/` of the install dir),
//! 2. user modules (`<cache-dir>/modules/`),
//! 3. the mutable cache (`<cache-dir>/mutable_config.json`),
//! 4. consul's KV, once the node is in a cluster.
//!
//! Loading is a pure function of the files named by [`Paths`] (no network, no writes); every
//! key remembers the layer (and file) that gave it its value, so `raptiformica config` can say
//! where a value came from. On a node, the cache is its copy of consul's KV, refreshed by one
//! explicit async step ([`shared::sync`]) that the command line takes before a command runs.

pub mod cache;
pub mod context;
pub mod edit;
pub mod known;
pub mod module;
pub mod original;
pub mod shared;
pub mod trust;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use crate::sys::mapping::{self, Mapping};
pub use cache::MutableCache;

use crate::sys::paths::Paths;

/// A config layer, in override order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Builtin,
    UserModule,
    MutableCache,
    Consul,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Builtin => "builtin",
            Layer::UserModule => "user module",
            Layer::MutableCache => "mutable cache",
            Layer::Consul => "consul",
        })
    }
}

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin {
    pub layer: Layer,
    /// The module file, or the cache file.
    pub file: Option<PathBuf>,
}

/// The effective config: the merged mapping and each key's origin.
#[derive(Debug, Default)]
pub struct Config {
    pub mapping: Mapping,
    pub origins: BTreeMap<String, Origin>,
}

impl Config {
    /// Lays `layer` over what is there: keys it has win. A key whose value the layer merely
    /// repeats keeps its older origin, so the origin names the layer that set the value.
    fn overlay(&mut self, layer: Layer, file: Option<&PathBuf>, mapping: &Mapping) {
        for (key, value) in mapping {
            if self.mapping.get(key) != Some(value) {
                self.mapping.insert(key.clone(), value.clone());
                self.origins.insert(
                    key.clone(),
                    Origin {
                        layer,
                        file: file.cloned(),
                    },
                );
            }
        }
    }

    /// The value at `key` as a string, if it is one.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.mapping.get(key).and_then(|v| v.as_str())
    }
}

/// The module layers only (built-in, then user modules), with a warning per skipped file.
pub fn load_modules(paths: &Paths) -> (Config, Vec<String>) {
    let mut config = Config::default();
    let mut warnings = Vec::new();
    let layers = [
        (Layer::Builtin, paths.builtin_dirs()),
        (Layer::UserModule, vec![paths.user_modules_dir()]),
    ];
    for (layer, dirs) in layers {
        for dir in dirs {
            let mut found = module::Discovery::default();
            module::discover(&dir, &mut found);
            for m in &found.modules {
                let mut mapping = m.mapping.clone();
                if let Some(n) = original::clean(&mut mapping).notice(&format!("the module `{}`", m.path.display())) {
                    known::warn_once(n);
                }
                config.overlay(layer, Some(&m.path), &mapping);
            }
            warnings.extend(found.warnings);
        }
    }
    (config, warnings)
}

/// What tells one version of the files [`load`] reads from another, without parsing them:
/// every module file's and the mutable cache's path, inode, modification time and length.
/// Equal stamps, the same config (a file rewritten within the clock's resolution with the
/// same length aside; every write of the cache is a new file, a new inode).
pub fn stamp(paths: &Paths) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for dir in paths.builtin_dirs().into_iter().chain([paths.user_modules_dir()]) {
        dir.hash(&mut h);
        module::stamp(&dir, &mut h);
    }
    let cache = MutableCache::new(&paths.cache_dir);
    module::stamp(cache.path(), &mut h);
    h.finish()
}

/// The effective config from the files on this machine: modules, then the mutable cache (on
/// a node, its copy of consul's KV: see [`shared::sync`], the step that refreshes it).
/// Reads files only: no network, no writes.
pub fn load(paths: &Paths) -> Result<Config, cache::CacheError> {
    load_over(paths, None)
}

/// [`load`] on a node whose cache was just refreshed from consul's KV ([`shared::sync`]): the
/// shared keys show as consul's.
pub fn load_synced(paths: &Paths) -> Result<Config, cache::CacheError> {
    let shared = MutableCache::new(&paths.cache_dir).read()?;
    match shared {
        Some(m) => load_over(paths, Some(m)),
        None => load_over(paths, None),
    }
}

/// The effective config over `shared`, the shared config as this machine last took it from
/// consul (see [`shared::take`]); None: the mutable cache. Reads files only.
pub fn load_over(paths: &Paths, shared: Option<Mapping>) -> Result<Config, cache::CacheError> {
    let (mut config, warnings) = load_modules(paths);
    for w in warnings {
        tracing::warn!("{w}");
    }
    if paths.install_dir.is_none() {
        tracing::warn!(
            "no built-in modules found (looked beside the binary and in `{}`); set --install-dir",
            crate::sys::paths::INSTALL_PREFIX
        );
    }
    let cache = MutableCache::new(&paths.cache_dir);
    // The original's commands, from wherever they come (see `original`), are mapped or left out.
    let cleaned = |mut m: Mapping, source: &str| {
        if let Some(n) = original::clean(&mut m).notice(source) {
            known::warn_once(n);
        }
        m
    };
    match shared {
        Some(m) => config.overlay(Layer::Consul, None, &cleaned(m, "consul's KV")),
        None => {
            if let Some(m) = cache.read()? {
                let source = format!("the mutable cache `{}`", cache.path().display());
                config.overlay(
                    Layer::MutableCache,
                    Some(&cache.path().to_path_buf()),
                    &cleaned(m, &source),
                );
            }
        }
    }
    Ok(config)
}

/// The shared layer alone: the mutable cache (on a node, its copy of consul's KV); None when
/// there is none. What `modules uninstall` compares a module's values with, since the module
/// layers below it are not shared.
pub fn shared_layer(paths: &Paths) -> anyhow::Result<Option<Mapping>> {
    Ok(MutableCache::new(&paths.cache_dir).read()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_layers_win_and_origin_names_the_layer_that_set_the_value() {
        let mut c = Config::default();
        let a = PathBuf::from("a.toml");
        c.overlay(
            Layer::Builtin,
            Some(&a),
            &mapping::flatten(&json!({"k": 1, "same": "s"})),
        );
        c.overlay(Layer::UserModule, None, &mapping::flatten(&json!({"k": 2})));
        c.overlay(
            Layer::MutableCache,
            None,
            &mapping::flatten(&json!({"k": 2, "same": "s", "new": true})),
        );
        assert_eq!(c.mapping["raptiformica/k"], json!(2));
        assert_eq!(c.origins["raptiformica/k"].layer, Layer::UserModule);
        assert_eq!(
            c.origins["raptiformica/same"],
            Origin {
                layer: Layer::Builtin,
                file: Some(a)
            }
        );
        assert_eq!(c.origins["raptiformica/new"].layer, Layer::MutableCache);
    }

    #[test]
    fn the_stamp_changes_with_a_module_or_the_cache_and_only_then() {
        let root = tempfile::tempdir().unwrap();
        let install = root.path().join("install");
        for f in ["compute", "provisioning", "modules"] {
            std::fs::create_dir_all(install.join(f)).unwrap();
        }
        let paths = Paths::resolve(Some(root.path().join("cache")), Some(install.clone()), None);
        let module = install.join("modules").join("m.toml");
        std::fs::write(&module, "raptiformica_api_version = \"1\"\n").unwrap();
        let first = stamp(&paths);
        assert_eq!(stamp(&paths), first, "nothing changed");
        std::fs::write(&module, "raptiformica_api_version = \"1\"\n[state.a]\n").unwrap();
        let second = stamp(&paths);
        assert_ne!(second, first, "a module file changed");
        std::fs::create_dir_all(root.path().join("cache")).unwrap();
        let cache = MutableCache::new(&root.path().join("cache"));
        std::fs::write(cache.path(), "{}").unwrap();
        assert_ne!(stamp(&paths), second, "the cache was written");
        std::fs::create_dir_all(install.join("modules").join("var")).unwrap();
        std::fs::write(install.join("modules").join("var").join("x.toml"), "x").unwrap();
        let third = stamp(&paths);
        std::fs::write(install.join("modules").join("var").join("x.toml"), "xy").unwrap();
        assert_eq!(stamp(&paths), third, "var/ is not read for modules");
    }
}
