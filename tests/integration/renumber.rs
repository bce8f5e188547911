//! Renumbering: every node leaves the network at once and comes back on a new address (its
//! old one taken by another machine); with the workstation agent running, the cluster comes
//! back by itself with its shared config intact, and the new addresses are in it (on the real
//! Docker engine; fails in CI without one, skips elsewhere).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::cluster::{HostAgent, Plain, count, docker, ip_on, running_nodes, sh, wait_until};
use crate::docker::DockerTest;

const NET: &str = "raptiformica";

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn every_node_on_a_new_address_at_once_comes_back_with_its_shared_config() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some());
    env.ok(&["config", "set", "raptiformica/test/before-move", "kept"]);
    let nodes = running_nodes(&env);
    let read = |n: &String| sh(n, "raptiformica config get raptiformica/test/before-move 2>/dev/null") == "kept";
    assert!(wait_until(Duration::from_secs(30), || nodes.iter().all(read)).is_some());
    let _agent = HostAgent::start(&env);
    std::thread::sleep(Duration::from_secs(5));

    // Every node off the network at once; other machines take addresses, so none comes back
    // where it was (docker hands out the lowest free one).
    let before: BTreeSet<String> = nodes.iter().map(|n| ip_on(n, NET)).collect();
    for n in &nodes {
        assert!(docker(&["network", "disconnect", NET, n]).status.success());
    }
    let mut placeholders = Plain::default();
    for _ in 0..nodes.len() {
        placeholders.run(&env, NET);
    }
    for n in &nodes {
        assert!(docker(&["network", "connect", NET, n]).status.success());
    }
    let moved = std::time::Instant::now();
    let after: BTreeSet<String> = nodes.iter().map(|n| ip_on(n, NET)).collect();
    assert!(
        before.is_disjoint(&after),
        "a node came back at its old address: {before:?} -> {after:?}"
    );

    let back = wait_until(Duration::from_secs(120), || count(&env, "alive", None) == 3);
    let log = std::fs::read_to_string(env.cache().join("host-agent.log")).unwrap_or_default();
    assert!(
        back.is_some(),
        "not 3 alive within 2 minutes of the move: {:?}\nworkstation agent:\n{log}",
        crate::cluster::members(&env)
    );
    eprintln!("3 alive {:.0?} after the move", moved.elapsed());
    // The shared config came through (raft's state kept), and takes the new addresses.
    for n in &nodes {
        assert_eq!(
            sh(n, "raptiformica config get raptiformica/test/before-move 2>/dev/null"),
            "kept",
            "on {n}"
        );
    }
    let has_new = || {
        let hosts = sh(
            &nodes[0],
            "raptiformica --json config get raptiformica/meshnet/neighbours 2>/dev/null",
        );
        after.iter().all(|ip| hosts.contains(&format!("\"{ip}\"")))
    };
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), has_new).is_some(),
        "the shared config does not have the new addresses after {:.0?}",
        t.elapsed()
    );
}
