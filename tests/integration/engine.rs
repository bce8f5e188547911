//! End to end: one machine handed the host's docker engine (`spawn --with-engine`) grows the
//! cluster to three by itself (the original's headline example, with docker): the machines it
//! spawns are siblings on the same engine and network, join the cluster and have the engine too,
//! and exactly the missing two are made. A machine spawned without the engine has none; the
//! workstation's `destroy` removes the machines the node spawned too.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{docker, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

/// Removes the containers a machine spawned (should `destroy` miss them, the test still
/// leaves nothing behind).
struct SpawnedBy(String);

impl Drop for SpawnedBy {
    fn drop(&mut self) {
        let ids = text(
            &docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=raptiformica.spawner={}", self.0),
            ])
            .stdout,
        );
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// Whether `spawn --check-available` on the machine `id` lists docker as available.
fn docker_available_on(id: &str) -> bool {
    let out = sh(id, "raptiformica --json spawn --check-available 2>/dev/null");
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_default()
        .iter()
        .any(|t| t["compute_type"] == "docker" && t["available"] == true)
}

/// The alive members as the machine `id` sees them.
fn alive_on(id: &str) -> usize {
    let m: Vec<Value> = serde_json::from_str(&sh(id, "raptiformica --json members 2>/dev/null")).unwrap_or_default();
    m.iter().filter(|m| m["status"] == "alive").count()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn one_machine_with_the_engine_grows_the_cluster_to_three_by_itself() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--with-engine"]);
    let t = Instant::now();
    let first = running_nodes(&env).pop().expect("the machine with the engine");
    let hostname = text(&docker(&["inspect", "-f", "{{.Config.Hostname}}", &first]).stdout)
        .trim()
        .to_string();
    let spawned = SpawnedBy(hostname);
    let label = format!("label=raptiformica.spawner={}", spawned.0);
    assert!(
        docker_available_on(&first),
        "{}",
        sh(&first, "raptiformica spawn --check-available 2>&1")
    );

    // Three alive, of which the node spawned exactly the missing two.
    let three = wait_until(Duration::from_secs(180), || alive_on(&first) == 3);
    assert!(
        three.is_some(),
        "not grown to three: {}\n{}",
        sh(&first, "raptiformica members 2>&1"),
        sh(&first, "raptiformica agent --status 2>&1")
    );
    eprintln!("grown to 3 alive {:?} after the first machine was slaved", t.elapsed());
    std::thread::sleep(Duration::from_secs(10));
    let siblings: Vec<String> = text(&docker(&["ps", "-q", "--filter", &label]).stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(
        siblings.len(),
        2,
        "the node spawned {} machines, not the 2 missing",
        siblings.len()
    );
    assert_eq!(alive_on(&first), 3);
    for s in &siblings {
        assert!(docker_available_on(s), "the machine {s} a node spawned has no engine");
        let grandchildren = text(
            &docker(&[
                "ps",
                "-q",
                "--filter",
                &format!("label=raptiformica.spawner={}", sh(s, "hostname")),
            ])
            .stdout,
        );
        assert!(
            grandchildren.trim().is_empty(),
            "{s} spawned machines too: {grandchildren}"
        );
    }

    // A machine spawned without the engine has none.
    env.ok(&["spawn", "--compute-type", "docker"]);
    let plain = running_nodes(&env)
        .into_iter()
        .find(|n| *n != first)
        .expect("the plain machine");
    assert!(
        !docker_available_on(&plain),
        "a machine spawned without --with-engine has an engine"
    );
    assert_eq!(sh(&plain, "test -S /var/run/docker.sock && echo socket"), "");

    // The workstation's destroy removes the machines the node spawned too (the cluster's label).
    let err = env.ok(&["destroy"]);
    let left = text(&docker(&["ps", "-aq", "--filter", &label]).stdout);
    assert!(left.trim().is_empty(), "destroy left the node's spawns: {left} ({err})");
    for id in [&first, &plain] {
        assert!(!docker(&["inspect", id]).status.success(), "{id} is left");
    }
}
