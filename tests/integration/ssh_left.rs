//! No `ssh` of ours outlives the command that started it: not when the command ends normally,
//! not when it gives up on a contact, not when it is stopped by a signal half-way through one.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::TestEnv;

/// The `ssh` processes whose command line names `cache` (our ssh config and key are there).
pub fn ssh_of(cache: &Path) -> Vec<String> {
    let needle = cache.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ssh = args.first().is_some_and(|a| a == "ssh" || a.ends_with("/ssh"));
        if is_ssh && args.iter().any(|a| a.contains(&needle)) {
            found.push(args.join(" "));
        }
    }
    found
}

/// Polls until no ssh of `cache` is left (true) or `limit` passes.
pub fn none_left(cache: &Path, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if ssh_of(cache).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A TCP port on loopback that accepts and never speaks: an SSH contact to it hangs in the
/// handshake until its timeout.
fn silent_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut s = stream.try_clone().unwrap();
            held.push(stream);
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    port
}

#[test]
fn a_command_stopped_during_an_ssh_contact_leaves_no_ssh_behind() {
    let env = TestEnv::new();
    let port = silent_port();
    // A known node at the silent port: `members` asks it over SSH, and hangs there.
    env.ok(&["config", "set", "meshnet/neighbours/0123456789abcdef/host", "127.0.0.1"]);
    env.ok(&[
        "config",
        "set",
        "meshnet/neighbours/0123456789abcdef/ssh_port",
        &port.to_string(),
    ]);
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = env
            .cmd()
            .args(["members"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while ssh_of(&env.cache()).is_empty() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!ssh_of(&env.cache()).is_empty(), "members never started ssh");
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + signal), "it exits as the signal would have");
        assert!(
            none_left(&env.cache(), Duration::from_secs(2)),
            "ssh left after signal {signal}: {:?}",
            ssh_of(&env.cache())
        );
    }
    // Given up at its own timeout: nothing left either.
    let out = env.run(&["members"]);
    assert!(!out.status.success());
    assert!(
        none_left(&env.cache(), Duration::from_secs(2)),
        "{:?}",
        ssh_of(&env.cache())
    );
}
