//! End to end on the real Docker engine: spawn, ssh, the binaries on the target, idempotent
//! slave, a forged host key refused, a wrong port named, destroy leaving nothing. Fails in CI
//! (CI=true) when the engine is missing; skips elsewhere.

use std::sync::{Mutex, MutexGuard};

use crate::harness::{TestEnv, docker_available, text};

/// Docker tests share the engine and the `raptiformica` network: one at a time.
pub static DOCKER: Mutex<()> = Mutex::new(());

/// An end-to-end test on docker: one at a time (the engine and the network are shared), in a
/// fresh env whose machines are destroyed when it ends, even on failure. `None` when there is
/// no engine (outside CI; in CI that fails).
pub struct DockerTest {
    env: TestEnv,
    _serial: MutexGuard<'static, ()>,
    _cluster_lock: Option<std::fs::File>,
}

/// The lock the acceptance checks hold while they run clusters on this machine
/// (`../shared/acceptance/lib.sh`): taken too, so a check and a test never share the network.
fn cluster_lock() -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    let dir = std::env::var_os("TMPDIR").unwrap_or_else(|| "/tmp".into());
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(std::path::Path::new(&dir).join("raptiformica-cluster.lock"))
        .ok()?;
    // SAFETY: flock on a descriptor this function owns; it blocks until the lock is free.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
    locked.then_some(file)
}

impl DockerTest {
    pub fn start() -> Option<Self> {
        if !docker_available() {
            return None;
        }
        let serial = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
        Some(Self {
            env: TestEnv::new(),
            _serial: serial,
            _cluster_lock: cluster_lock(),
        })
    }
}

impl std::ops::Deref for DockerTest {
    type Target = TestEnv;
    fn deref(&self) -> &TestEnv {
        &self.env
    }
}

impl Drop for DockerTest {
    fn drop(&mut self) {
        let _ = self.env.run(&["destroy"]);
    }
}

pub fn containers() -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", "network=raptiformica"])
        .output()
        .expect("docker ps");
    text(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn docker_spawn_ssh_reslave_forged_key_destroy() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let before = containers();

    let out = env.ok(&["--json", "spawn", "--compute-type", "docker", "--no-assimilate"]);
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    let host = started[0]["host"].as_str().unwrap().to_string();
    let id = started[0]["id"].as_str().unwrap().to_string();
    let cid_file = env
        .cache()
        .join("var/machines/docker/headless")
        .join(&id)
        .join("container_id");
    let cid = std::fs::read_to_string(&cid_file).unwrap().trim().to_string();
    let on_network = |cid: &str| containers().iter().any(|c| cid.starts_with(c.as_str()));
    assert!(
        !before.iter().any(|c| cid.starts_with(c.as_str())) && on_network(&cid),
        "a new container on the raptiformica network"
    );

    // The host key was pinned from the back-end before the first contact.
    let pins = std::fs::read_to_string(env.cache().join("known_hosts")).unwrap();
    assert!(
        pins.lines().any(|l| l.starts_with(&format!("{host} ssh-ed25519 "))),
        "{pins}"
    );
    let key_mode = std::fs::metadata(env.cache().join("id_ed25519")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );

    let info = env.ok(&["ssh", "--info-only"]);
    assert!(info.contains(&format!("root@{host}")) && info.contains("-F "), "{info}");
    assert!(
        env.ok(&["ssh", "--", "raptiformica", "--version"])
            .starts_with("raptiformica ")
    );
    assert!(
        env.ok(&["ssh", &id[..8], "--", "consul", "version"])
            .contains("Consul v1.8.7")
    );
    env.ok(&["ssh", "--", "yggdrasil", "-version"]);
    // This host's artifacts and binary, shared read-only, not uploaded.
    for b in ["consul", "yggdrasil", "raptiformica"] {
        let link = env.ok(&["ssh", "--", &format!("readlink /root/.raptiformica.d/artifacts/{b}")]);
        assert!(link.starts_with("/usr/lib/raptiformica/host-artifacts"), "{b}: {link}");
    }
    let err = env.fails(&["ssh", "--", "touch /usr/lib/raptiformica/host-artifacts/consul"]);
    assert!(err.contains("Read-only"), "{err}");
    env.ok(&["ssh", "--", "test -s /root/.raptiformica.d/mutable_config.json && test -f /usr/etc/raptiformica/compute/docker/raptiformica.toml"]);
    assert_eq!(
        env.run(&["ssh", "--", "exit 3"]).status.code(),
        Some(3),
        "the remote exit status is passed on"
    );

    // Slaving again is safe and uploads only what changed (the config).
    let out = env.run(&["slave", &host, "--no-assimilate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("upload: 1 of "), "{}", text(&out.stderr));

    // A wrong port is named, with the reason.
    let err = env.fails(&["slave", &host, "--port", "2222", "--no-assimilate"]);
    assert!(err.contains("at step `connect`") && err.contains("refused"), "{err}");

    // A forged pin: the real machine no longer matches it, so it is refused.
    let good = std::fs::read_to_string(env.cache().join("known_hosts")).unwrap();
    let forged_key = env.dir.path().join("forged");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&forged_key)
        .status()
        .unwrap();
    assert!(ok.success());
    let forged_pub = std::fs::read_to_string(forged_key.with_extension("pub")).unwrap();
    let forged_pub: Vec<&str> = forged_pub.split_whitespace().take(2).collect();
    let forged: String = good
        .lines()
        .map(|l| format!("{} {}\n", l.split(' ').next().unwrap(), forged_pub.join(" ")))
        .collect();
    std::fs::write(env.cache().join("known_hosts"), forged).unwrap();
    let err = env.fails(&["slave", &host, "--no-assimilate"]);
    assert!(
        err.contains("does not match the key pinned") && err.contains("ssh-keygen -R"),
        "{err}"
    );
    std::fs::write(env.cache().join("known_hosts"), good).unwrap();

    // Assimilating registers the node as a neighbour in the shared config.
    env.ok(&["slave", &host]);
    let neighbours = env.ok(&["config", "get", "meshnet/neighbours"]);
    assert!(neighbours.contains(&format!("/host = {host}")), "{neighbours}");

    env.ok(&["destroy"]);
    assert!(!on_network(&cid), "destroy left the container");
    assert_eq!(
        std::fs::read_dir(env.cache().join("var/machines/docker/headless"))
            .unwrap()
            .count(),
        0
    );
    let pins = std::fs::read_to_string(env.cache().join("known_hosts")).unwrap();
    assert!(
        !pins.contains(&format!("{host} ")),
        "the destroyed machine's pin is kept: {pins}"
    );
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_hung_bootstrap_ends_at_its_timeout_with_nothing_left_running() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    // A server type that only hangs; docker cannot start it, so `spawn` without
    // --server-type still picks one it can.
    env.module(
        "hang/raptiformica.toml",
        "raptiformica_api_version = \"0.1\"\n[server.hang.base]\nbootstrap = \"sleep 100000\"\ntimeout = 3\n",
    );
    let out = env.ok(&["--json", "spawn", "--compute-type", "docker", "--no-assimilate"]);
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    let host = started[0]["host"].as_str().unwrap().to_string();
    let port = started[0]["port"].as_u64().unwrap_or(22).to_string();
    let t = std::time::Instant::now();
    let err = env.fails(&["slave", &host, "-p", &port, "--server-type", "hang", "--no-assimilate"]);
    assert!(err.contains("timed out after 3s"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(60), "{:?}", t.elapsed());
    // One remote command line (the remote shell parses it): the whole process table, so that
    // an empty answer cannot pass for "nothing left".
    let table = env.ok(&["ssh", "--", "ps -eo pid,pgid,args"]);
    assert!(table.contains("sshd"), "no process table: {table}");
    assert!(
        !table.contains("sleep 100000"),
        "the hung bootstrap is still running:\n{table}"
    );
}
