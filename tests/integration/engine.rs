//! End to end: a machine handed the host's docker engine (`spawn --with-engine`) can spawn a
//! machine itself: the new one is a sibling container on the same engine and network, joins the
//! cluster, and has the engine too; a machine spawned without it has none; the workstation's
//! `destroy` removes the node's spawn too.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::{docker, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

/// Removes the containers a machine spawned (the workstation's `destroy` knows only its own).
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

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_machine_with_the_engine_spawns_a_sibling_that_joins_and_has_the_engine_too() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--with-engine"]);
    let first = running_nodes(&env).pop().expect("the machine with the engine");
    let hostname = text(&docker(&["inspect", "-f", "{{.Config.Hostname}}", &first]).stdout)
        .trim()
        .to_string();
    let _siblings = SpawnedBy(hostname);
    assert!(
        docker_available_on(&first),
        "{}",
        sh(&first, "raptiformica spawn --check-available 2>&1")
    );

    // It spawns a machine by itself: a sibling on the host's engine, slaved and meshed by it.
    let out = docker(&["exec", &first, "raptiformica", "spawn", "--compute-type", "docker"]);
    assert!(out.status.success(), "spawn on the machine: {}", text(&out.stderr));
    let label = format!("label=raptiformica.spawner={}", _siblings.0);
    let sibling = text(&docker(&["ps", "-q", "--filter", &label]).stdout)
        .trim()
        .to_string();
    assert!(
        !sibling.is_empty(),
        "no container spawned by the machine runs on the host's engine"
    );
    let two = wait_until(Duration::from_secs(60), || {
        let m: Vec<Value> = serde_json::from_str(&sh(&first, "raptiformica --json members")).unwrap_or_default();
        m.iter().filter(|m| m["status"] == "alive").count() == 2
    });
    assert!(two.is_some(), "{}", sh(&first, "raptiformica members 2>&1"));
    assert!(
        docker_available_on(&sibling),
        "the machine a machine spawned has no engine"
    );

    // A machine spawned without the engine has none.
    env.ok(&["spawn", "--compute-type", "docker"]);
    let plain = running_nodes(&env)
        .into_iter()
        .find(|n| *n != first && *n != sibling)
        .expect("the plain machine");
    assert!(
        !docker_available_on(&plain),
        "a machine spawned without --with-engine has an engine"
    );
    assert_eq!(sh(&plain, "test -S /var/run/docker.sock && echo socket"), "");

    // The workstation's destroy removes the machine a node spawned too (by the cluster's label).
    let err = env.ok(&["destroy"]);
    let left = text(&docker(&["ps", "-aq", "--filter", &label]).stdout);
    assert!(left.trim().is_empty(), "destroy left the node's spawn: {left} ({err})");
    for id in [&first, &plain] {
        assert!(!docker(&["inspect", id]).status.success(), "{id} is left");
    }
}
