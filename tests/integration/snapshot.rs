//! `snapshot save` / `restore` on real clusters (issue 12): a KV value written before the save
//! reads back on every node of a new cluster after the restore, while the new cluster keeps its
//! own neighbours and members; a state machine's log comes along and is applied by the new
//! nodes (not the old nodes' progress); a file that is not a consul snapshot, a restore without
//! `--yes` where nobody can be asked, and a restore over a log the cluster already has change
//! nothing.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::cluster::{count, running_nodes, sh, wait_until};
use crate::docker::DockerTest;

const KEY: &str = "raptiformica/test/snapshot/keep";
const NEIGHBOURS: &str = "raptiformica/meshnet/neighbours";

fn get_on(node: &str, key: &str) -> String {
    sh(
        node,
        &format!("raptiformica config get --show-secrets {key} 2>/dev/null"),
    )
    .trim_matches('"')
    .to_string()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_snapshot_brings_the_kv_back_into_a_new_cluster_which_keeps_its_own_keys() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let cluster = || {
        env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
        assert!(wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some());
        let nodes = running_nodes(&env);
        assert_eq!(nodes.len(), 3);
        nodes
    };
    env.module(
        "acc/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1",
            "state": {"acc": {"apply": "cat >> /root/acc.state && echo >> /root/acc.state",
                       "snapshot": "cat /root/acc.state 2>/dev/null || true",
                       "restore": "cat > /root/acc.state"}}}"#,
    );
    let old = cluster();
    sh(&old[0], &format!("raptiformica config set {KEY} in-snapshot"));
    for entry in ["one", "two"] {
        let out = crate::cluster::docker(&[
            "exec",
            &old[0],
            "raptiformica",
            "state",
            "append",
            "acc",
            entry,
            "--wait",
        ]);
        assert!(out.status.success(), "{}", crate::harness::text(&out.stderr));
    }
    assert_eq!(get_on(&old[1], KEY), "in-snapshot");
    let ids = |env: &crate::harness::TestEnv| -> Vec<String> {
        crate::cluster::members(env)
            .iter()
            .filter_map(|m| m["node"].as_str().map(str::to_string))
            .collect()
    };
    let old_ids = ids(&env);
    assert_eq!(old_ids.len(), 3);

    let file = env.dir.path().join("cluster.snap");
    let log = env.ok(&["snapshot", "save", file.to_str().unwrap()]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "it holds the cluster's secrets");
    assert!(std::fs::metadata(&file).unwrap().len() > 100, "{log}");

    let bad = env.write("bad.snap", "garbage\n");
    let err = env.fails(&["snapshot", "restore", bad.to_str().unwrap(), "--yes"]);
    assert!(err.contains("not a consul snapshot"), "{err}");

    env.ok(&["destroy"]);
    let new = cluster();
    let new_ids = ids(&env);
    assert!(new_ids.iter().all(|id| !old_ids.contains(id)));
    assert_eq!(get_on(&new[0], KEY), "");

    // Nobody to ask and no --yes: nothing changes.
    let err = env.fails(&["snapshot", "restore", file.to_str().unwrap()]);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(get_on(&new[1], KEY), "");

    env.ok(&["snapshot", "restore", file.to_str().unwrap(), "--yes"]);
    for node in &new {
        let back = wait_until(Duration::from_secs(30), || get_on(node, KEY) == "in-snapshot");
        assert!(back.is_some(), "{node}: {:?}", get_on(node, KEY));
        // The new cluster keeps its own neighbours: none of the old cluster's comes back.
        let neighbours = get_on(node, NEIGHBOURS);
        assert!(
            new_ids.iter().all(|id| neighbours.contains(id.as_str())),
            "{neighbours}"
        );
        assert!(
            old_ids.iter().all(|id| !neighbours.contains(id.as_str())),
            "{neighbours}"
        );
    }
    assert_eq!(count(&env, "alive", None), 3, "and its members");

    // The state machine's log came along: the new nodes apply it, and only they are listed.
    for node in &new {
        let applied = wait_until(Duration::from_secs(30), || {
            sh(node, "cat /root/acc.state 2>/dev/null") == "one\ntwo"
        });
        assert!(
            applied.is_some(),
            "{node}: {:?}",
            sh(node, "cat /root/acc.state 2>/dev/null")
        );
    }
    let status = sh(&new[0], "raptiformica state status acc --json");
    assert!(old_ids.iter().all(|id| !status.contains(id.as_str())), "{status}");

    // Restoring it again would mix two histories of that log: refused.
    let err = env.fails(&["snapshot", "restore", file.to_str().unwrap(), "--yes"]);
    assert!(err.contains("already has the log of state machine `acc`"), "{err}");
}
