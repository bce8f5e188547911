//! End to end: `deploy` of plain machines (containers we did not spawn, sshd and our key only),
//! one of them reachable only through another; a re-run changes nothing; a bad inventory is
//! refused before anything starts; a fourth plain machine `join`s through a member.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{docker, wait_until};
use crate::docker::DockerTest;
use crate::harness::{TestEnv, bin, text};

const IMAGE: &str = "raptiformica-base:bookworm";
const HIDDEN: &str = "raptiformica-test-hidden";

/// Plain containers and the hidden network, removed when the test ends.
struct Plain {
    ids: Vec<String>,
}

impl Plain {
    fn run(&mut self, env: &TestEnv, network: &str) -> String {
        let key = std::fs::read_to_string(env.cache().join("id_ed25519.pub")).unwrap();
        let out = docker(&[
            "run",
            "-d",
            "--init",
            "--cap-add",
            "NET_ADMIN",
            "--device",
            "/dev/net/tun",
            "--sysctl",
            "net.ipv6.conf.all.disable_ipv6=0",
            "--sysctl",
            "net.ipv6.conf.default.disable_ipv6=0",
            "--label",
            "raptiformica.test=plain",
            "-e",
            &format!("RAPTIFORMICA_AUTHORIZED_KEYS={}", key.trim()),
            "--network",
            network,
            IMAGE,
        ]);
        assert!(out.status.success(), "docker run: {}", text(&out.stderr));
        let id = text(&out.stdout).trim().to_string();
        self.ids.push(id.clone());
        id
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = docker(&["rm", "-f", id]);
        }
        let _ = docker(&["network", "rm", HIDDEN]);
    }
}

fn ip_on(id: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    text(&docker(&["inspect", "-f", &f, id]).stdout).trim().to_string()
}

/// Alive members as the node `id` sees them.
fn alive_on(id: &str) -> usize {
    let out = docker(&["exec", id, "raptiformica", "--json", "members"]);
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_default()
        .iter()
        .filter(|m| m["status"] == "alive")
        .count()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn deploy_through_a_jump_host_rerun_unchanged_and_a_plain_machine_joins() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    // A bad inventory is refused before anything starts (no machine is needed for that).
    let bad = env.write("bad.json", r#"[{"dst": "127.0.0.1", "port": "22"}, {"port": "22"}]"#);
    let err = env.fails(&["deploy", bad.to_str().unwrap()]);
    assert!(err.contains("entry 2") && err.contains("dst"), "{err}");

    // The base image, and our key (made by any command that needs it).
    env.ok(&["spawn", "--compute-type", "docker", "--no-slave"]);
    env.ok(&["destroy"]);
    let mut plain = Plain { ids: Vec::new() };
    let _ = docker(&["network", "rm", HIDDEN]);
    assert!(docker(&["network", "create", HIDDEN]).status.success());
    let a = plain.run(&env, "raptiformica");
    let j = plain.run(&env, "raptiformica");
    assert!(docker(&["network", "connect", HIDDEN, &j]).status.success());
    let h = plain.run(&env, HIDDEN);
    let (ipa, ipj, iph) = (ip_on(&a, "raptiformica"), ip_on(&j, "raptiformica"), ip_on(&h, HIDDEN));
    let inventory = env.write(
        "inventory.json",
        &format!(
            r#"[{{"dst": "{ipa}", "port": 22}}, {{"dst": "{ipj}", "port": "22"}}, {{"dst": "{iph}", "via": "{ipj}"}}]"#
        ),
    );
    let inventory = inventory.to_str().unwrap();
    let t = Instant::now();
    env.ok(&["deploy", inventory]);
    eprintln!("deployed 3 hosts in {:?}", t.elapsed());
    assert!(
        wait_until(Duration::from_secs(60), || alive_on(&a) == 3).is_some(),
        "not 3 alive members: {}",
        text(&docker(&["exec", &a, "raptiformica", "members"]).stdout)
    );
    // The hidden host is a member although only `j` reaches it.
    assert_eq!(alive_on(&h), 3);

    let t = Instant::now();
    let out = env.ok(&["--json", "deploy", inventory]);
    eprintln!("re-deployed in {:?}", t.elapsed());
    let outcomes: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(|o| o["result"] == "unchanged"), "{out}");

    // A fourth plain machine joins through a member, with the user's key.
    let p = plain.run(&env, "raptiformica");
    assert!(
        docker(&[
            "cp",
            bin().to_str().unwrap(),
            &format!("{p}:/usr/local/bin/raptiformica")
        ])
        .status
        .success()
    );
    assert!(
        docker(&["exec", &p, "install", "-d", "-m", "700", "/root/.ssh"])
            .status
            .success()
    );
    let key = env.cache().join("id_ed25519");
    assert!(
        docker(&["cp", key.to_str().unwrap(), &format!("{p}:/root/.ssh/id_ed25519")])
            .status
            .success()
    );
    let joined = docker(&["exec", &p, "raptiformica", "join", &ipa]);
    assert!(joined.status.success(), "join: {}", text(&joined.stderr));
    assert!(
        wait_until(Duration::from_secs(60), || alive_on(&a) == 4).is_some(),
        "the joined machine is not alive: {}",
        text(&docker(&["exec", &a, "raptiformica", "members"]).stdout)
    );
}
