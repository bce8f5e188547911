//! End to end: one machine handed the host's docker engine (`spawn --with-engine`) grows the
//! cluster to three by itself (the original's headline example, with docker): the machines it
//! spawns are siblings on the same engine and network, join the cluster and have the engine too,
//! and exactly the missing two are made. Two of three lost (the survivor one a node spawned,
//! no workstation agent): the survivor's engine is the evidence to rebuild on, and it spawns
//! the missing servers itself. The workstation's `destroy` removes the machines nodes spawned
//! too. A machine spawned without the engine has none.

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
    // Every machine on record: which back-end instance, whose engine holds it (the node's
    // id, a member's name; the workstation's name, per cache dir, for the one spawned here).
    let workstation = std::fs::read_to_string(env.cache().join("workstation")).unwrap_or_default();
    let holders = || {
        let m: Vec<Value> =
            serde_json::from_str(&sh(&first, "raptiformica --json members 2>/dev/null")).unwrap_or_default();
        let names: Vec<&str> = m.iter().filter_map(|m| m["node"].as_str()).collect();
        let held = |by: &dyn Fn(&str) -> bool| {
            m.iter()
                .filter_map(|m| m["machine"].as_str()?.split_once(", held by "))
                .filter(|(ty, holder)| *ty == "docker/headless" && by(holder))
                .count()
        };
        (held(&|h| names.contains(&h)), held(&|h| h == workstation.trim()))
    };
    let on_record = wait_until(Duration::from_secs(60), || holders() == (2, 1));
    assert!(
        on_record.is_some(),
        "members does not say which machine holds which ({:?}): {}",
        holders(),
        sh(&first, "raptiformica members 2>&1")
    );
    let label_of = |id: &str| {
        text(&docker(&["inspect", "-f", "{{index .Config.Labels \"raptiformica.cluster\"}}", id]).stdout)
            .trim()
            .to_string()
    };
    let cluster_label = label_of(&first);
    assert_eq!(cluster_label.len(), 16, "the first machine has no cluster label");
    for s in &siblings {
        assert_eq!(label_of(s), cluster_label, "{s} is labelled with another cluster");
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

    // Two of three lost, the survivor one that a node spawned, no workstation agent: the
    // survivor's engine says the lost machines are gone, so it rebuilds consensus, then spawns
    // the two missing servers itself. The shared config is kept.
    let set = sh(
        &first,
        "raptiformica config set raptiformica/test/keep before-loss && echo set",
    );
    assert_eq!(set, "set");
    let (survivor, lost) = (&siblings[0], &siblings[1]);
    for id in [&first, lost] {
        assert!(docker(&["rm", "-f", id]).status.success());
    }
    let t = Instant::now();
    let cluster = |id: &str| {
        let m: Vec<Value> =
            serde_json::from_str(&sh(id, "raptiformica --json members 2>/dev/null")).unwrap_or_default();
        let n = |s: &str| m.iter().filter(|m| m["status"] == s).count();
        (n("alive"), n("failed"))
    };
    // The loss seen first (members fail or show it): until then the cluster looks whole.
    let seen = wait_until(Duration::from_secs(60), || cluster(survivor) != (3, 0));
    assert!(seen.is_some(), "the loss was never seen: {:?}", cluster(survivor));
    let healed = wait_until(Duration::from_secs(300), || cluster(survivor) == (3, 0));
    assert!(
        healed.is_some(),
        "not healed: {:?}\n{}\n{}",
        cluster(survivor),
        sh(survivor, "raptiformica members 2>&1"),
        sh(survivor, "raptiformica agent --status 2>&1")
    );
    eprintln!("2 of 3 lost to 3 alive again in {:?} with no workstation", t.elapsed());
    let status = sh(survivor, "raptiformica agent --status 2>&1");
    assert!(status.contains("compute engine runs no machine"), "{status}");
    let ours = text(&docker(&["ps", "-q", "--filter", "label=raptiformica.cluster"]).stdout);
    let of_cluster = text(
        &docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=raptiformica.cluster={}", cluster_label),
        ])
        .stdout,
    );
    assert_eq!(
        of_cluster.split_whitespace().count(),
        3,
        "containers of the cluster: {of_cluster} (all: {ours})"
    );
    for id in of_cluster.split_whitespace() {
        assert_eq!(
            sh(id, "raptiformica config get raptiformica/test/keep"),
            "before-loss",
            "on {id}"
        );
    }

    // The workstation's destroy removes the machines the node spawned too (the cluster's label).
    let err = env.ok(&["destroy"]);
    let left = text(&docker(&["ps", "-aq", "--filter", &label]).stdout);
    assert!(left.trim().is_empty(), "destroy left the node's spawns: {left} ({err})");
    let left = text(
        &docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=raptiformica.cluster={}", cluster_label),
        ])
        .stdout,
    );
    assert!(left.trim().is_empty(), "destroy left machines of the cluster: {left}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_machine_spawned_without_the_engine_has_none() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--no-slave"]);
    let plain = crate::cluster::node_containers(&env).pop().expect("the machine");
    assert!(
        !docker_available_on(&plain),
        "a machine spawned without --with-engine has an engine"
    );
    assert_eq!(sh(&plain, "test -S /var/run/docker.sock && echo socket"), "");
    // Only this host's artifacts and binary, read-only: nothing of the engine.
    let mounts = text(
        &docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Destination}} {{.RW}}\n{{end}}",
            &plain,
        ])
        .stdout,
    );
    for mount in mounts.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            mount.starts_with("/usr/lib/raptiformica/host-artifacts") && mount.ends_with(" false"),
            "{mounts}"
        );
    }
}

/// The alive and failed members as the machine `id` sees them.
fn cluster_on(id: &str) -> (usize, usize) {
    let m: Vec<Value> = serde_json::from_str(&sh(id, "raptiformica --json members 2>/dev/null")).unwrap_or_default();
    let n = |s: &str| m.iter().filter(|m| m["status"] == s).count();
    (n("alive"), n("failed"))
}

/// Whether `id` has noticed a loss in a cluster of three: a member failed, or one fewer alive
/// (consul's autopilot turns a failed server into `left` within seconds, so `failed` alone may
/// never be seen by a poll). An empty answer (members not answering) notices nothing.
fn loss_seen_on(id: &str) -> bool {
    let (alive, failed) = cluster_on(id);
    alive + failed > 0 && (failed >= 1 || alive < 3)
}

/// The running containers labelled `label`.
fn labelled(label: &str) -> Vec<String> {
    text(&docker(&["ps", "-q", "--filter", &format!("label={label}")]).stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A module of the node's own that makes its docker engine's `available` check fail: the
/// engine is gone, as far as the node can tell (a broken socket says the same).
const NO_ENGINE_MODULE: &str = r#"mkdir -p /root/.raptiformica.d/modules/no-engine && printf '%s' '{"raptiformica_api_version": "0.1", "compute": {"docker": {"headless": {"available": "echo the engine is gone >&2; false"}}}}' > /root/.raptiformica.d/modules/no-engine/raptiformica.json && echo broken"#;

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_node_whose_engine_is_gone_leaves_the_spawning_to_another_and_one_node_spawns() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--with-engine"]);
    let first = running_nodes(&env).pop().expect("the machine with the engine");
    let host_of = |id: &str| {
        text(&docker(&["inspect", "-f", "{{.Config.Hostname}}", id]).stdout)
            .trim()
            .to_string()
    };
    let _spawned = SpawnedBy(host_of(&first));
    let grown = wait_until(Duration::from_secs(180), || alive_on(&first) == 3);
    assert!(
        grown.is_some(),
        "not grown to three: {}",
        sh(&first, "raptiformica members 2>&1")
    );
    let cluster_label = text(
        &docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"raptiformica.cluster\"}}",
            &first,
        ])
        .stdout,
    )
    .trim()
    .to_string();
    let of_cluster = format!("raptiformica.cluster={cluster_label}");
    let siblings = labelled(&format!("raptiformica.spawner={}", host_of(&first)));
    assert_eq!(siblings.len(), 2, "{siblings:?}");
    let (broken, lost) = (&siblings[0], &siblings[1]);
    // Whoever spawns the replacements spawns here: every one of them removed in the end.
    let _by_broken = SpawnedBy(host_of(broken));

    // 1. One node's engine is gone: `spawn --check-available` says so, and when a server is
    //    lost that node leaves the spawning to the one whose engine answers.
    assert_eq!(sh(broken, NO_ENGINE_MODULE), "broken");
    assert!(
        !docker_available_on(broken),
        "the broken engine is still listed as available"
    );
    let check = sh(broken, "raptiformica spawn --check-available 2>&1");
    assert!(check.contains("docker"), "{check}");
    assert!(docker(&["rm", "-f", lost]).status.success());
    let t = Instant::now();
    // The loss seen first: until then the cluster still looks whole.
    let seen = wait_until(Duration::from_secs(60), || loss_seen_on(&first));
    assert!(
        seen.is_some(),
        "the loss of {lost} was never seen: {:?}",
        cluster_on(&first)
    );
    let healed = wait_until(Duration::from_secs(300), || cluster_on(&first) == (3, 0));
    assert!(
        healed.is_some(),
        "not healed with one engine left: {:?}\n{}\n{}",
        cluster_on(&first),
        sh(&first, "raptiformica agent --status 2>&1"),
        sh(broken, "raptiformica agent --status 2>&1")
    );
    eprintln!("one of 3 lost, one engine left: 3 alive again in {:?}", t.elapsed());
    let status = sh(broken, "raptiformica agent --status 2>&1");
    assert!(
        status.contains("has no compute engine that answers"),
        "the node without an engine does not say so: {status}"
    );
    assert!(
        labelled(&format!("raptiformica.spawner={}", host_of(broken))).is_empty(),
        "the node whose engine is gone spawned"
    );
    std::thread::sleep(Duration::from_secs(20));
    let machines = labelled(&of_cluster);
    assert_eq!(
        machines.len(),
        3,
        "containers of the cluster after one loss: {machines:?}"
    );

    // 2. Two nodes with an engine both want to replace a lost server: one does.
    assert_eq!(
        sh(broken, "rm -r /root/.raptiformica.d/modules/no-engine && echo fixed"),
        "fixed"
    );
    assert!(docker_available_on(broken));
    assert!(docker(&["rm", "-f", &first]).status.success());
    let survivor = machines.iter().find(|m| *m != &first).expect("a survivor").clone();
    let t = Instant::now();
    let seen = wait_until(Duration::from_secs(60), || loss_seen_on(&survivor));
    assert!(
        seen.is_some(),
        "the loss of {first} was never seen: {:?}",
        cluster_on(&survivor)
    );
    let healed = wait_until(Duration::from_secs(300), || cluster_on(&survivor) == (3, 0));
    assert!(
        healed.is_some(),
        "not healed with two engines: {:?}\n{}\nthe cluster's machines: {:?}\n{}",
        cluster_on(&survivor),
        sh(&survivor, "raptiformica agent --status 2>&1; raptiformica members 2>&1"),
        labelled(&of_cluster),
        labelled(&of_cluster)
            .iter()
            .filter(|m| *m != &survivor)
            .map(|m| format!(
                "{m}:\n{}",
                sh(
                    m,
                    "raptiformica agent --status 2>&1 | tail -n 15; tail -n 5 /root/.raptiformica.d/mesh/agent.log"
                )
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!("one of 3 lost, two engines: 3 alive again in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_secs(30));
    let machines = labelled(&of_cluster);
    assert_eq!(
        machines.len(),
        3,
        "two nodes with an engine replaced one lost server with {} machines",
        machines.len() - 2
    );
    // Still 3 alive (a loaded node's members view may blink for a probe or two: waited for).
    let steady = wait_until(Duration::from_secs(60), || cluster_on(&survivor) == (3, 0));
    assert!(
        steady.is_some(),
        "after the heal the cluster did not stay 3 alive: {:?}\n{}\n{}",
        cluster_on(&survivor),
        sh(&survivor, "raptiformica members 2>&1"),
        sh(&survivor, "raptiformica agent --status 2>&1")
    );
    env.ok(&["destroy"]);
    let left: Vec<String> = labelled(&of_cluster)
        .iter()
        .map(|m| text(&docker(&["inspect", "-f", "{{.Name}} {{.Created}} {{.Config.Labels}}", m]).stdout))
        .collect();
    assert!(left.is_empty(), "destroy left machines of the cluster: {left:?}");
}
