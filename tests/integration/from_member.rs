//! `slave --from-member`: a member uploads to a fresh machine and provisions it, this
//! workstation only reaches it and assimilates it: it sends next to nothing to the machine
//! (counted by iptables on the way out), and the machine becomes an alive member (on the real
//! Docker engine; fails in CI without one, skips elsewhere).

use std::process::Command;
use std::time::Duration;

use crate::cluster::{Plain, count, ip_on, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

/// Counts what this host sends to one address (an iptables chain of its own, removed when
/// dropped).
struct Counter {
    chain: String,
    ip: String,
}

impl Counter {
    fn start(ip: &str) -> Self {
        let chain = format!("rfm{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("iptables")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        assert!(ok(&["-N", &chain]), "iptables -N (the test runs as root)");
        assert!(ok(&["-I", "OUTPUT", "1", "-d", ip, "-j", &chain]));
        Self {
            chain,
            ip: ip.to_string(),
        }
    }

    fn bytes(&self) -> u64 {
        let out = Command::new("iptables").args(["-nvxL", "OUTPUT"]).output().unwrap();
        text(&out.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 8 && f[2] == self.chain && f[8] == self.ip)
            .and_then(|f| f[1].parse().ok())
            .expect("the counting rule")
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = Command::new("iptables")
            .args(["-D", "OUTPUT", "-d", &self.ip, "-j", &self.chain])
            .output();
        let _ = Command::new("iptables").args(["-X", &self.chain]).output();
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_member_serves_a_new_machine_and_this_host_sends_next_to_nothing() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--count", "2"]);
    let mut plain = Plain::default();
    let p = plain.run(&env, "raptiformica");
    let ip = ip_on(&p, "raptiformica");
    assert!(
        wait_until(Duration::from_secs(60), || sh(&p, "pidof sshd >/dev/null && echo up")
            == "up")
        .is_some()
    );

    let counter = Counter::start(&ip);
    let out = env.run(&["-v", "slave", &ip, "--from-member"]);
    let sent = counter.bytes();
    drop(counter);
    let log = text(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("upload: ") && log.contains("slaved"),
        "the member's upload is not shown: {log}"
    );
    assert!(
        sent < 1024 * 1024,
        "this host sent {sent} bytes to the machine (want next to nothing)"
    );
    eprintln!("this host sent {sent} bytes to the machine a member served");
    assert!(
        wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some(),
        "{:?}",
        crate::cluster::members(&env)
    );
    // The member's key is authorized there, tagged; the entry is a node's like any other.
    assert!(sh(&p, "grep -c raptiformica-member /root/.ssh/authorized_keys") == "1");
}
