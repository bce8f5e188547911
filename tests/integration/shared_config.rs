//! End to end on the real Docker engine: the shared config keeps what it is given. A
//! plugin-sized module (300 keys) seeds every node with no node refusing a half-seeded store;
//! a node cut off the network keeps its change and pushes it when it is back, and reads what
//! the cluster wrote meanwhile; a pruned node leaves every node's neighbours. Fails in CI
//! (CI=true) when the engine is missing; ignored elsewhere.

use std::time::Duration;

use crate::cluster::{docker, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

fn get(id: &str, key: &str) -> String {
    text(&docker(&["exec", id, "raptiformica", "config", "get", key]).stdout)
        .trim()
        .to_string()
}

fn set(id: &str, key: &str, value: &str) -> std::process::Output {
    docker(&["exec", id, "raptiformica", "config", "set", key, value])
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_big_module_seeds_every_node_a_cut_node_syncs_both_ways_and_a_pruned_node_leaves() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let mut module = String::from("raptiformica_api_version = \"0.1\"\n");
    for i in 0..150 {
        module.push_str(&format!(
            "[platform.default.hooks.after_mesh.h{i:03}]\ncommand = \"true\"\npredicate = \"false\"\n"
        ));
    }
    env.module("many/raptiformica.toml", &module);

    // Seeding 300 keys: no node finds the store half-seeded, every node has the last key.
    let out = env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(!out.contains("unusable") && !out.contains("lacks the section"), "{out}");
    let ids = running_nodes(&env);
    assert_eq!(ids.len(), 3);
    let last = "raptiformica/platform/default/hooks/after_mesh/h149/command";
    for id in &ids {
        assert!(
            wait_until(Duration::from_secs(30), || get(id, last) == "true").is_some(),
            "the module's last key is missing on {id}"
        );
    }

    // A node off the network for 30 s: its change waits in its cache, the cluster's change is
    // made meanwhile; once it is back each side reads the other's.
    let (cut, other) = (&ids[2], &ids[0]);
    assert!(docker(&["network", "disconnect", "raptiformica", cut]).status.success());
    std::thread::sleep(Duration::from_secs(5));
    let away = set(cut, "raptiformica/test/offline", "from-away");
    assert!(away.status.success(), "{}", text(&away.stderr));
    std::thread::sleep(Duration::from_secs(25));
    let here = set(other, "raptiformica/test/while-away", "from-cluster");
    assert!(here.status.success(), "{}", text(&here.stderr));
    assert!(docker(&["network", "connect", "raptiformica", cut]).status.success());
    let synced = wait_until(Duration::from_secs(90), || {
        get(other, "raptiformica/test/offline") == "from-away"
            && get(cut, "raptiformica/test/while-away") == "from-cluster"
    });
    eprintln!("cut node synced both ways after {synced:?}");
    assert!(
        synced.is_some(),
        "the change made while cut off, or the cluster's, did not cross"
    );

    // A pruned node leaves the shared neighbours of every node.
    let gone_id = sh(cut, "cat /root/.raptiformica.d/mesh/consul.json")
        .split("\"node_name\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .map(str::to_string)
        .expect("the cut node's consul node name");
    assert!(docker(&["rm", "-f", cut]).status.success());
    env.ok(&["prune"]);
    let left = wait_until(Duration::from_secs(30), || {
        [&ids[0], &ids[1]].iter().all(|id| {
            !text(
                &docker(&[
                    "exec",
                    id,
                    "raptiformica",
                    "--json",
                    "config",
                    "get",
                    "raptiformica/meshnet/neighbours",
                ])
                .stdout,
            )
            .contains(&gone_id)
        })
    });
    assert!(left.is_some(), "the pruned node {gone_id} is still a shared neighbour");
}
