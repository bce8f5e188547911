//! State machines declared by modules: `state/<name>/{apply, apply_batch, snapshot, restore,
//! snapshot_every}`. `apply` reads one entry on stdin; `apply_batch` (optional) applies many
//! at once, all or none: the entries are files named by their index (20 digits, so their names
//! sort in log order) in the folder `$RAPTIFORMICA_STATE_ENTRIES`; `snapshot` writes the whole
//! state on stdout; `restore` reads a snapshot on stdin. The cluster keeps their log (see
//! [`crate::consensus::state_log`]) and every node's agent applies it.

use std::collections::BTreeMap;

use crate::config::{Config, mapping::PREFIX};

/// Entries between two snapshots unless `snapshot_every` says otherwise.
pub const SNAPSHOT_EVERY: u64 = 1000;

/// One declared state machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub name: String,
    pub apply: String,
    /// Applies a run of entries in one go, all or none (one process, one transaction,
    /// instead of one process per entry).
    pub apply_batch: Option<String>,
    pub snapshot: Option<String>,
    pub restore: Option<String>,
    pub snapshot_every: u64,
}

/// The state machines in `config`, by name (those without `apply` are left out).
pub fn machines(config: &Config) -> BTreeMap<String, Machine> {
    let prefix = format!("{PREFIX}/state/");
    crate::sys::mapping::children(&config.mapping, &prefix)
        .into_iter()
        .filter_map(|name| {
            let field = |f: &str| config.get_str(&format!("{prefix}{name}/{f}")).map(str::to_string);
            let every = config
                .mapping
                .get(&format!("{prefix}{name}/snapshot_every"))
                .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
                .filter(|n| *n > 0)
                .unwrap_or(SNAPSHOT_EVERY);
            Some((
                name.to_string(),
                Machine {
                    name: name.to_string(),
                    apply: field("apply")?,
                    apply_batch: field("apply_batch"),
                    snapshot: field("snapshot"),
                    restore: field("restore"),
                    snapshot_every: every,
                },
            ))
        })
        .collect()
}

/// The machine `name`, or an error that lists the declared ones.
pub fn find(config: &Config, name: &str) -> anyhow::Result<Machine> {
    let all = machines(config);
    all.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = all.keys().map(String::as_str).collect();
        anyhow::anyhow!(
            "there is no state machine `{name}` ({}); a module declares one as `state.{name}.apply` (and \
             `snapshot`, `restore`)",
            if known.is_empty() {
                "none is declared".to_string()
            } else {
                format!("declared: {}", known.join(", "))
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping;
    use serde_json::json;

    #[test]
    fn machines_come_from_the_config_with_their_defaults() {
        let config = Config {
            mapping: mapping::flatten(&json!({"state": {
                "acc": {"apply": "a", "apply_batch": "ab", "snapshot": "s", "restore": "r", "snapshot_every": 40},
                "kv": {"apply": "b", "snapshot_every": "7"},
                "half": {"snapshot": "s"}}})),
            ..Default::default()
        };
        let m = machines(&config);
        assert_eq!(m.keys().collect::<Vec<_>>(), ["acc", "kv"]);
        assert_eq!(m["acc"].snapshot_every, 40);
        assert_eq!(m["kv"].snapshot_every, 7);
        assert_eq!(m["kv"].restore, None);
        assert_eq!(m["acc"].apply_batch.as_deref(), Some("ab"));
        assert_eq!(m["kv"].apply_batch, None);
        let err = find(&config, "nope").unwrap_err().to_string();
        assert!(err.contains("acc, kv"), "{err}");
    }
}
