//! `join` reaches the member before it changes anything here: in a plain container (no sshd
//! running, no host keys), a join to a port nothing listens on fails at once, naming the
//! address and the fix, and leaves /etc/ssh, /root and the processes as they were.

use std::time::{Duration, Instant};

use crate::cluster::docker;
use crate::docker::DockerTest;
use crate::harness::{bin, text};

const IMAGE: &str = "raptiformica-base:bookworm";

/// A container, removed when the test ends (even on failure).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

impl Container {
    /// What `join` must leave alone: the ssh config and host keys, root's home (the cache dir
    /// and authorized_keys), and whether sshd (or the ssh-keygen before it) runs.
    fn state(&self) -> String {
        let out = docker(&[
            "exec",
            &self.0,
            "sh",
            "-c",
            "ls -A /etc/ssh /root; echo sshd: $(pgrep -c sshd); echo ssh-keygen: $(pgrep -c ssh-keygen)",
        ]);
        text(&out.stdout)
    }
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn join_reaches_the_member_before_it_changes_anything_here() {
    let Some(_env) = DockerTest::start() else {
        return;
    };
    let out = docker(&[
        "run",
        "-d",
        "--label",
        "raptiformica.test=plain",
        "--entrypoint",
        "sleep",
        IMAGE,
        "600",
    ]);
    assert!(out.status.success(), "docker run: {}", text(&out.stderr));
    let c = Container(text(&out.stdout).trim().to_string());
    let to = format!("{}:/usr/local/bin/raptiformica", c.0);
    assert!(docker(&["cp", bin().to_str().unwrap(), &to]).status.success());
    let before = c.state();
    assert!(
        before.contains("sshd_config") && before.contains("sshd: 0"),
        "not a plain machine without sshd: {before}"
    );

    let t = Instant::now();
    let out = docker(&["exec", &c.0, "raptiformica", "join", "127.0.0.1", "-p", "1"]);
    let took = t.elapsed();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "join succeeded: {err}");
    assert!(took < Duration::from_secs(3), "join took {took:?} to fail: {err}");
    assert!(
        err.contains("nothing answers on 127.0.0.1:1") && err.contains("(-p)"),
        "{err}"
    );
    assert_eq!(
        c.state(),
        before,
        "join changed this machine before reaching the member: {err}"
    );
}
