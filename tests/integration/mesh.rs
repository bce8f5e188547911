//! End to end on the real Docker engine: three spawns make a consul cluster over yggdrasil,
//! the shared config lives in consul's KV and is read back on another node, the overlay
//! carries traffic, a fourth spawn joins with no manual step, and a node without a TUN device
//! gets an error that names the docker flags.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{docker, members, node_containers};
use crate::docker::{DOCKER, DockerTest};
use crate::harness::{TestEnv, docker_available, text};

fn alive(members: &[Value]) -> usize {
    members.iter().filter(|m| m["status"] == "alive").count()
}

fn wait_for_alive(env: &TestEnv, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = members(env);
        if alive(&m) >= n || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn three_spawns_form_a_cluster_share_config_and_a_fourth_joins() {
    let Some(env) = DockerTest::start() else {
        return;
    };

    // Fewer than three nodes: `members` from the host says why there are none.
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    let m = wait_for_alive(&env, 3);
    assert_eq!(alive(&m), 3, "{m:?}");
    assert_eq!(m.iter().filter(|m| m["type"] == "server").count(), 3, "{m:?}");
    assert_eq!(
        m.iter().filter(|m| m["raft"] == "leader").count(),
        1,
        "one leader: {m:?}"
    );

    let ids = node_containers(&env);
    assert_eq!(ids.len(), 3);
    // The shared config is in consul's KV: set on one node, read on another.
    let out = docker(&[
        "exec",
        &ids[0],
        "raptiformica",
        "config",
        "set",
        "raptiformica/test/probe",
        "v-42",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = docker(&[
        "exec",
        &ids[1],
        "raptiformica",
        "config",
        "get",
        "raptiformica/test/probe",
    ]);
    assert_eq!(text(&out.stdout).trim(), "v-42", "{}", text(&out.stderr));
    let out = docker(&["exec", &ids[2], "raptiformica", "--json", "config", "--origins"]);
    let origins: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(origins["raptiformica/test/probe"]["layer"], "consul", "{origins}");
    // The gossip key reached every node through the shared config, and consul uses it.
    let out = docker(&[
        "exec",
        &ids[2],
        "sh",
        "-c",
        "grep -c '\"encrypt\"' /root/.raptiformica.d/mesh/consul.json",
    ]);
    assert_eq!(text(&out.stdout).trim(), "1");

    // With its consul away, a node keeps a write in its cache and pushes it once consul is back.
    let out = docker(&[
        "exec",
        &ids[2],
        "sh",
        "-c",
        // The agent would restart consul at once: stop it (and its keeper) first.
        "cd /root/.raptiformica.d/mesh && kill $(cat keeper.pid) $(cat agent.pid) && sleep 0.2 && kill $(cat consul.pid)",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let out = docker(&[
        "exec",
        &ids[2],
        "raptiformica",
        "config",
        "set",
        "raptiformica/test/offline",
        "later",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("goes to the cluster later"),
        "{}",
        text(&out.stderr)
    );
    let out = docker(&["exec", &ids[2], "raptiformica", "--json", "mesh", "--no-after-mesh"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(report["consul_daemon"], "started", "{report} {}", text(&out.stderr));
    let out = docker(&[
        "exec",
        &ids[0],
        "raptiformica",
        "config",
        "get",
        "raptiformica/test/offline",
    ]);
    assert_eq!(text(&out.stdout).trim(), "later", "{}", text(&out.stderr));

    // Each node reaches the others over the overlay.
    let addresses: Vec<String> = ids
        .iter()
        .map(|id| {
            let out = docker(&["exec", id, "raptiformica", "mesh", "--identity-only"]);
            let identity: Value = serde_json::from_slice(&out.stdout).unwrap();
            identity["address"].as_str().unwrap().to_string()
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let other = &addresses[(i + 1) % addresses.len()];
        let out = docker(&["exec", id, "ping", "-6", "-c", "1", "-W", "3", other]);
        assert!(out.status.success(), "{id} -> {other}: {}", text(&out.stdout));
    }

    // Meshing again changes nothing and keeps the daemons.
    let out = docker(&["exec", &ids[0], "raptiformica", "--json", "mesh"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["overlay_daemon"], "running, unchanged", "{report}");
    assert_eq!(report["consul_daemon"], "running, unchanged", "{report}");
    assert_eq!(report["kv"]["state"], "synced", "{report}");

    // A fourth node joins as a client, with no manual step; the others peer with it.
    env.ok(&["spawn", "--compute-type", "docker"]);
    let m = wait_for_alive(&env, 4);
    assert_eq!(alive(&m), 4, "{m:?}");
    assert_eq!(m.iter().filter(|m| m["type"] == "client").count(), 1, "{m:?}");
    let ids = node_containers(&env);
    let fourth = ids
        .iter()
        .find(|id| {
            let out = docker(&["exec", id, "raptiformica", "--json", "mesh", "--no-after-mesh"]);
            serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|r| r["consul_role"] == "client")
        })
        .expect("a client node");
    let out = docker(&[
        "exec",
        fourth,
        "raptiformica",
        "config",
        "get",
        "raptiformica/test/probe",
    ]);
    assert_eq!(text(&out.stdout).trim(), "v-42");
    // The overlay may route through other nodes first (bounded peering): give it a moment.
    let reached = crate::cluster::wait_until(std::time::Duration::from_secs(20), || {
        docker(&["exec", fourth, "ping", "-6", "-c", "1", "-W", "2", &addresses[0]])
            .status
            .success()
    });
    assert!(
        reached.is_some(),
        "the 4th node does not reach {} over the overlay",
        addresses[0]
    );
    eprintln!("4th node reached the first over the overlay after {reached:?}");

    // Destroyed machines are no longer neighbours: nothing asks them any more.
    env.ok(&["destroy"]);
    assert!(
        !env.cache_file().exists()
            || !std::fs::read_to_string(env.cache_file())
                .unwrap()
                .contains("meshnet/neighbours/")
    );
    let err = env.fails(&["members"]);
    assert!(err.contains("knows no nodes"), "{err}");
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_node_without_a_tun_device_is_told_which_docker_flags_to_add() {
    if !docker_available() {
        return;
    }
    let _serial = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    // A bare container of the base image: no /dev/net/tun, IPv6 off (docker's defaults).
    let env = TestEnv::new();
    let bin = crate::harness::bin();
    if !env.run(&["artifacts", "list"]).status.success() {
        env.ok(&["artifacts", "fetch"]);
    }
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("artifacts")
        .display()
        .to_string();
    let image = std::process::Command::new("sh")
        .arg(crate::harness::root().join("compute/docker/ensure_image.sh"))
        .env("RAPTIFORMICA_CACHE_DIR", env.cache())
        .output()
        .unwrap();
    assert!(image.status.success(), "{}", text(&image.stderr));
    let out = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        "-v",
        &format!("{}:/usr/local/bin/raptiformica:ro", bin.display()),
        "-v",
        &format!("{artifacts}:/art:ro"),
        "-v",
        &format!("{}:/usr/etc/raptiformica:ro", crate::harness::root().display()),
        "raptiformica-base:bookworm",
        "-c",
        "PATH=/art:$PATH raptiformica mesh --no-after-mesh",
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("/dev/net/tun") && err.contains("--device /dev/net/tun --cap-add NET_ADMIN"),
        "{err}"
    );
}
