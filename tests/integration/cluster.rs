//! Helpers for the end-to-end cluster tests: docker, the nodes a test started, members.

use std::process::Output;
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
