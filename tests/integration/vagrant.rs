//! The vagrant back-end for real (issue 15): Debian's vagrant with libvirt, VMs in software
//! emulation where KVM guests do not boot. Two VMs and one docker container form one cluster
//! that `members` shows alive; `destroy` leaves no VM, disk or container behind. Needs
//! `compute/vagrant/setup.sh` to have run (runtests.sh runs it); fails in CI without it.

use std::time::Duration;

use crate::cluster::{count, wait_until};
use crate::docker::{DockerTest, containers};
use crate::harness::text;

fn virsh(args: &[&str]) -> String {
    let out = std::process::Command::new("virsh")
        .arg("-c")
        .arg("qemu:///system")
        .args(args)
        .output()
        .expect("virsh runs");
    text(&out.stdout)
}

/// The libvirt domains and volumes whose names hold one of `ids` (this test's instances).
fn leftovers(ids: &[String]) -> Vec<String> {
    let mut found: Vec<String> = virsh(&["list", "--all", "--name"])
        .lines()
        .chain(virsh(&["vol-list", "default"]).lines())
        .filter(|l| ids.iter().any(|id| l.contains(id.as_str())))
        .map(str::to_string)
        .collect();
    found.sort();
    found
}

#[test]
#[cfg_attr(
    no_vagrant,
    ignore = "needs vagrant and libvirt (compute/vagrant/setup.sh) and a Docker engine"
)]
fn two_vagrant_machines_and_a_docker_one_form_a_cluster_and_destroy_leaves_nothing() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let available = env.ok(&["--json", "spawn", "--check-available"]);
    let rows: serde_json::Value = serde_json::from_str(&available).unwrap();
    let vagrant = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["compute_type"] == "vagrant")
        .expect("vagrant is a compute type");
    assert_eq!(vagrant["available"], true, "{available}");
    let detail = vagrant["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("libvirt, "), "the check says how VMs run: {detail}");

    // Two VMs at once (the first one creates the network and copies the box, the other waits).
    let out = env.ok(&["--json", "spawn", "--compute-type", "vagrant", "--count", "2"]);
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<String> = started
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert_eq!(leftovers(&ids).iter().filter(|l| l.ends_with("-default")).count(), 2);

    // Their host keys came from their serial consoles and were pinned before the first contact.
    let pins = std::fs::read_to_string(env.cache().join("known_hosts")).unwrap();
    for m in started.as_array().unwrap() {
        let host = m["host"].as_str().unwrap();
        assert!(
            pins.lines().any(|l| l.starts_with(&format!("{host} ssh-ed25519 "))),
            "{pins}"
        );
    }
    let on_vm = env.ok(&["ssh", &ids[0][..12], "--", "raptiformica --version; cat /proc/cmdline"]);
    assert!(
        on_vm.starts_with("raptiformica ") && on_vm.contains("raptiformica-vm-init"),
        "{on_vm}"
    );

    // A docker container joins them; the three form one consul cluster over the overlay.
    env.ok(&["spawn", "--compute-type", "docker"]);
    let formed = wait_until(Duration::from_secs(180), || count(&env, "alive", None) == 3);
    assert!(formed.is_some(), "members: {}", env.ok(&["members"]));
    assert_eq!(count(&env, "alive", Some("server")), 3);

    env.ok(&["destroy"]);
    assert_eq!(leftovers(&ids), Vec::<String>::new(), "VMs or disks left after destroy");
    let ours = env.cache().display().to_string();
    let labelled = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Label \"raptiformica.instance\"}}"])
        .output()
        .unwrap();
    assert!(
        !text(&labelled.stdout).lines().any(|l| l.starts_with(&ours)),
        "a container left after destroy: {:?}",
        containers()
    );
}
