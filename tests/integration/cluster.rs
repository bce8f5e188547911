//! Helpers for the end-to-end cluster tests: docker, the nodes a test started, members.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{TestEnv, text};

/// The longest one docker command of a test may take.
pub const DOCKER_LIMIT: Duration = Duration::from_secs(10 * 60);

/// `docker ARGS`, bounded by [`DOCKER_LIMIT`]: a command that hangs fails the test, named.
pub fn docker(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new("docker");
    cmd.args(args);
    crate::harness::bounded(cmd, DOCKER_LIMIT, &format!("docker {}", args.join(" ")))
}

/// A shell script's trimmed stdout on a node.
pub fn sh(id: &str, script: &str) -> String {
    text(&docker(&["exec", id, "sh", "-c", script]).stdout)
        .trim()
        .to_string()
}

/// `raptiformica agent` on the host, killed when dropped.
pub struct HostAgent(Child);

impl HostAgent {
    pub fn start(env: &TestEnv) -> Self {
        let log = std::fs::File::create(env.cache().join("host-agent.log")).unwrap();
        let child = env
            .cmd()
            .arg("agent")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the agent starts");
        HostAgent(child)
    }
}

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The base image the docker back-end runs (sshd, no raptiformica).
pub const IMAGE: &str = "raptiformica-base:bookworm";

/// Plain machines: containers of the base image we did not spawn (sshd, the env's key only),
/// and the networks a test made for them, removed when the test ends.
#[derive(Default)]
pub struct Plain {
    pub ids: Vec<String>,
    pub networks: Vec<String>,
}

impl Plain {
    /// A plain machine on `network` that authorizes `env`'s key (`<cache>/id_ed25519.pub`).
    pub fn run(&mut self, env: &TestEnv, network: &str) -> String {
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
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
    }
}

/// The address of container `id` on `network`.
pub fn ip_on(id: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    text(&docker(&["inspect", "-f", &f, id]).stdout).trim().to_string()
}

/// The containers this env started (their ids from the instance dirs).
pub fn node_containers(env: &TestEnv) -> Vec<String> {
    let mut ids = Vec::new();
    for e in walkdir::WalkDir::new(env.cache().join("var/machines"))
        .into_iter()
        .flatten()
    {
        if e.file_name() == "container_id" {
            ids.push(std::fs::read_to_string(e.path()).unwrap().trim().to_string());
        }
    }
    ids
}

/// Those of them that run.
pub fn running_nodes(env: &TestEnv) -> Vec<String> {
    node_containers(env)
        .into_iter()
        .filter(|id| text(&docker(&["inspect", "-f", "{{.State.Running}}", id]).stdout).trim() == "true")
        .collect()
}

/// `members --json` from the host.
pub fn members(env: &TestEnv) -> Vec<Value> {
    let out = env.run(&["members", "--json"]);
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
}

/// How many members have `status` (and the type `kind`, if given).
pub fn count(env: &TestEnv, status: &str, kind: Option<&str>) -> usize {
    members(env)
        .iter()
        .filter(|m| m["status"] == status && kind.is_none_or(|k| m["type"] == k))
        .count()
}

/// How many servers vote in raft (`leader` or `follower`). A server stays a non-voter for its
/// first ~10 s, and consul's autopilot force-leaves a failed non-voter at once (it shows
/// `left`, not `failed`): a test that kills a server waits for this first.
pub fn voters(env: &TestEnv) -> usize {
    members(env)
        .iter()
        .filter(|m| m["raft"] == "leader" || m["raft"] == "follower")
        .count()
}

/// Polls `f` until it holds (how long that took) or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}
