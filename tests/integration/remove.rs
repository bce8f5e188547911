//! `remove NODE`: a machine that no longer answers leaves the members and the neighbours on
//! every node, from the workstation (through a node, its instance cleaned up here) or from a
//! node; a machine that answers is refused without --force (on the real Docker engine; fails in
//! CI without one, skips elsewhere).

use std::time::Duration;

use serde_json::Value;

use crate::cluster::{docker, ip_on, node_containers, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

/// The members as node `id` sees them: (name, status, type).
fn members_on(id: &str) -> Vec<(String, String, String)> {
    let out = docker(&["exec", id, "raptiformica", "--json", "members"]);
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("node"), s("status"), s("type"))
        })
        .collect()
}

/// Whether node `id` sees the member `name` failed.
fn failed_on(id: &str, name: &str) -> bool {
    members_on(id).iter().any(|(n, s, _)| n == name && s == "failed")
}

/// Whether node `id` still knows the machine at `ip` as a failed member or a neighbour.
fn still_known_on(id: &str, ip: &str, name: &str) -> bool {
    let neighbours = sh(id, "raptiformica --json config get raptiformica/meshnet/neighbours");
    failed_on(id, name) || neighbours.contains(&format!("\"{ip}\""))
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_dead_machine_is_removed_from_the_workstation_or_a_node_and_a_live_one_needs_force() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    // The agents would evict a failed member after 30 s: here only `remove` may.
    env.ok(&["config", "set", "raptiformica/agent/eviction_grace", "900"]);
    env.ok(&["spawn", "--compute-type", "docker", "--count", "5"]);
    let nodes = running_nodes(&env);
    assert_eq!(nodes.len(), 5);
    let server = nodes[0].clone();
    assert!(
        wait_until(Duration::from_secs(90), || {
            members_on(&server).iter().filter(|(_, s, _)| s == "alive").count() == 5
        })
        .is_some(),
        "{:?}",
        members_on(&server)
    );
    // The two clients, by container, address and name.
    let name_of = |id: &str| {
        sh(
            id,
            "sed -n 's/.*\"node_name\": *\"\\([^\"]*\\)\".*/\\1/p' /root/.raptiformica.d/mesh/consul.json",
        )
    };
    let clients: Vec<(String, String, String)> = nodes
        .iter()
        .map(|id| (id.clone(), ip_on(id, "raptiformica"), name_of(id)))
        .filter(|(_, _, name)| members_on(&server).iter().any(|(n, _, t)| n == name && t == "client"))
        .collect();
    assert_eq!(clients.len(), 2, "{:?}", members_on(&server));
    let server = nodes
        .iter()
        .find(|id| !clients.iter().any(|(c, _, _)| c == *id))
        .unwrap()
        .clone();

    // A machine that answers is refused without --force, and nothing changes.
    let (c1, ip1, name1) = &clients[0];
    let err = env.fails(&["remove", ip1]);
    assert!(err.contains("answers") && err.contains("--force"), "{err}");
    assert!(members_on(&server).iter().any(|(n, s, _)| n == name1 && s == "alive"));

    // Dead: removed from the workstation, through a node; its instance is cleaned up here.
    assert!(docker(&["rm", "-f", c1]).status.success());
    // Seen failed by every other node: `remove` from here runs on whichever node answers, and one
    // that has not heard of the failure yet (gossip takes a second or two) rightly refuses a live
    // member.
    let failed_on_all = || nodes.iter().filter(|id| *id != c1).all(|id| failed_on(id, name1));
    assert!(wait_until(Duration::from_secs(60), failed_on_all).is_some());
    let out = env.run(&["remove", ip1]);
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("removed {name1}")) && said.contains("failed before") && said.contains("cleaned up"),
        "{said}"
    );
    // Once more: it is named nowhere now.
    let err = env.fails(&["remove", ip1]);
    assert!(err.contains("no node is named"), "{err}");
    let gone = wait_until(Duration::from_secs(30), || {
        nodes
            .iter()
            .filter(|id| *id != c1)
            .all(|id| !still_known_on(id, ip1, name1))
    });
    assert!(
        gone.is_some(),
        "{name1} ({ip1}) is still known: {:?}",
        members_on(&server)
    );
    assert!(
        !node_containers(&env).contains(c1),
        "its instance was not cleaned up here"
    );
    assert_eq!(node_containers(&env).len(), 4);

    // Dead: removed from a node.
    let (c2, ip2, name2) = &clients[1];
    assert!(docker(&["rm", "-f", c2]).status.success());
    assert!(wait_until(Duration::from_secs(60), || failed_on(&server, name2)).is_some());
    let out = docker(&["exec", &server, "raptiformica", "remove", ip2]);
    assert!(out.status.success(), "remove on a node: {}", text(&out.stderr));
    let gone = wait_until(Duration::from_secs(30), || {
        nodes
            .iter()
            .filter(|id| *id != c1 && *id != c2)
            .all(|id| !still_known_on(id, ip2, name2))
    });
    assert!(
        gone.is_some(),
        "{name2} ({ip2}) is still known: {:?}",
        members_on(&server)
    );
    // The three servers stay, a quorum.
    assert_eq!(
        members_on(&server)
            .iter()
            .filter(|(_, s, t)| s == "alive" && t == "server")
            .count(),
        3
    );
}
