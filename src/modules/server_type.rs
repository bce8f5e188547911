//! Server types: what a slaved machine gets installed and run.
//!
//! `raptiformica/server/<type>/<provisioner>/{bootstrap, source?, available?}`; a type may
//! have several provisioners, run in name order.

use std::collections::BTreeMap;

use crate::config::context::Context;
use crate::config::{Config, mapping::PREFIX};

/// How long a predicate (`available`) may take.
pub const PREDICATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One provisioner of a server type.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioner {
    pub name: String,
    pub bootstrap: Option<String>,
    pub source: Option<String>,
    pub available: Option<String>,
    /// How long `bootstrap` may run on the machine (`timeout`, seconds).
    pub timeout: std::time::Duration,
}

/// A provisioner's `bootstrap` may run this long unless it sets `timeout`.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Server type name to its provisioners.
pub fn server_types(config: &Config) -> BTreeMap<String, Vec<Provisioner>> {
    let prefix = format!("{PREFIX}/server/");
    let mut types: BTreeMap<String, BTreeMap<String, Provisioner>> = BTreeMap::new();
    for (key, value) in config.mapping.range(prefix.clone()..) {
        let Some(rest) = key.strip_prefix(&prefix) else { break };
        let mut parts = rest.splitn(3, '/');
        let (Some(ty), Some(prov), Some(field)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let entry = types
            .entry(ty.into())
            .or_default()
            .entry(prov.into())
            .or_insert_with(|| Provisioner {
                name: prov.into(),
                bootstrap: None,
                source: None,
                available: None,
                timeout: DEFAULT_TIMEOUT,
            });
        if field == "timeout" {
            match value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n| *n > 0)
            {
                Some(n) => entry.timeout = std::time::Duration::from_secs(n),
                None => tracing::warn!(
                    "`{key}` must be a number of seconds, not {value}; using {} s",
                    DEFAULT_TIMEOUT.as_secs()
                ),
            }
            continue;
        }
        let value = value.as_str().map(str::to_string);
        match field {
            "bootstrap" => entry.bootstrap = value,
            "source" => entry.source = value,
            "available" => entry.available = value,
            _ => {}
        }
    }
    types.into_iter().map(|(k, v)| (k, v.into_values().collect())).collect()
}

/// True when every provisioner's `available` predicate passes on this host.
pub fn is_available(ctx: &Context, provisioners: &[Provisioner]) -> bool {
    provisioners.iter().filter_map(|p| p.available.as_deref()).all(|cmd| {
        ctx.shell("server type check", cmd)
            .timeout(PREDICATE_TIMEOUT)
            .output()
            .is_ok_and(|o| o.success())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping;
    use serde_json::json;

    #[test]
    fn groups_provisioners_per_type() {
        let config = Config {
            mapping: mapping::flatten(&json!({"server": {"headless": {
                "z": {"bootstrap": "b2"}, "a": {"bootstrap": "b1", "source": "git://x"}}}})),
            ..Default::default()
        };
        let types = server_types(&config);
        let h = &types["headless"];
        assert_eq!(h.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "z"]);
        assert_eq!(h[0].source.as_deref(), Some("git://x"));
    }
}
