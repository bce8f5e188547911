//! End to end: a replicated state machine on 3 nodes. 200 entries appended concurrently from
//! two nodes give every node the same state in the same order, also a node whose agent was
//! killed during the appends; after compaction a 4th node restores the snapshot and reaches
//! the same state; bad input changes nothing.

use std::time::{Duration, Instant};

use crate::cluster::{count, docker, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

const MODULE: &str = r#"{"raptiformica_api_version": "0.1",
 "state": {"acc": {"apply": "cat >> /root/acc.state && echo >> /root/acc.state",
                   "snapshot": "cat /root/acc.state 2>/dev/null || true",
                   "restore": "cat > /root/acc.state",
                   "snapshot_every": 50}}}"#;

fn state(id: &str) -> String {
    sh(id, "cat /root/acc.state 2>/dev/null")
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn concurrent_appends_give_every_node_the_same_state_and_a_late_node_restores_the_snapshot() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.module("probe/raptiformica.json", MODULE);
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(60), || count(&env, "alive", None) == 3).is_some());
    let nodes = running_nodes(&env);

    // Bad input changes nothing.
    let err = text(&docker(&["exec", &nodes[0], "raptiformica", "state", "append", "nosuch", "x"]).stderr);
    assert!(
        err.contains("no state machine `nosuch`") && err.contains("acc"),
        "{err}"
    );
    let big = sh(
        &nodes[0],
        "head -c 400000 /dev/zero | tr '\\0' x > /tmp/big; raptiformica state append acc @/tmp/big 2>&1; true",
    );
    assert!(big.contains("at most"), "{big}");

    // Two appenders, 100 entries each, while the third node's agent is killed once.
    let t = Instant::now();
    let appender = |id: &str, tag: &str| {
        std::process::Command::new("docker")
            .args([
                "exec",
                id,
                "sh",
                "-c",
                &format!("for i in $(seq 100); do raptiformica state append acc {tag}$i >/dev/null || exit 1; done"),
            ])
            .spawn()
            .expect("docker exec")
    };
    let mut a = appender(&nodes[0], "a");
    let mut b = appender(&nodes[1], "b");
    std::thread::sleep(Duration::from_secs(1));
    let agent = sh(&nodes[2], "pgrep -f '[r]aptiformica agent' | head -n 1");
    sh(&nodes[2], &format!("kill -9 {agent}"));
    assert!(
        a.wait().unwrap().success() && b.wait().unwrap().success(),
        "an appender failed"
    );
    eprintln!("200 concurrent appends in {:?}", t.elapsed());
    let out = docker(&[
        "exec",
        &nodes[0],
        "raptiformica",
        "state",
        "append",
        "acc",
        "last",
        "--wait",
    ]);
    assert!(out.status.success(), "append --wait: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "201");

    let reference = state(&nodes[0]);
    assert_eq!(reference.lines().count(), 201);
    // Each appender's entries in its own order, interleaved in one total order.
    for tag in ["a", "b"] {
        let mine: Vec<&str> = reference.lines().filter(|l| l.starts_with(tag)).collect();
        let expected: Vec<String> = (1..=100).map(|i| format!("{tag}{i}")).collect();
        assert_eq!(mine, expected);
    }
    for n in &nodes[1..] {
        assert_eq!(state(n), reference, "the state on {n} differs");
    }

    // Compacted (a snapshot every 50): a 4th node restores it and replays the rest.
    let status = text(&docker(&["exec", &nodes[0], "raptiformica", "--json", "state", "status", "acc"]).stdout);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["snapshot"].as_u64().is_some_and(|s| s >= 150), "{status}");
    env.ok(&["spawn", "--compute-type", "docker"]);
    let fourth = running_nodes(&env)
        .into_iter()
        .find(|n| !nodes.contains(n))
        .expect("a 4th node");
    let caught_up = wait_until(Duration::from_secs(60), || state(&fourth) == reference);
    assert!(
        caught_up.is_some(),
        "the 4th node did not reach the same state: {}",
        sh(&fourth, "tail -n 3 /root/.raptiformica.d/mesh/agent.log")
    );
    let log = sh(
        &fourth,
        "grep -c 'restored the snapshot' /root/.raptiformica.d/mesh/agent.log",
    );
    assert_eq!(log, "1", "the 4th node restored a snapshot once");
}
