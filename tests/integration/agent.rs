//! End to end on the real Docker engine: the agent on every node. A killed consul is back and
//! alive, a killed agent is back, a restarted container comes back, a user module's `cluster_change` handler stays quiet in calm
//! and a handler whose predicate fails never runs, and `agent --status` tells what it did.
//! Fails in CI (CI=true) when the engine is missing; skips elsewhere.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::{count, docker, node_containers, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn the_agent_restarts_consul_and_itself_and_hooks_stay_quiet_in_calm() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.module(
        "probe/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1",
 "platform": {"default": {"hooks": {"cluster_change": {
   "count": {"predicate": "true", "command": "echo x >> /tmp/cluster_change.count"},
   "never": {"predicate": "false", "command": "touch /tmp/predicate-ignored"}}}}}}"#,
    );
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(60), || count(&env, "alive", None) == 3).is_some());
    let ids = node_containers(&env);
    assert_eq!(ids.len(), 3);
    for id in &ids {
        assert!(
            !sh(id, "pgrep -f '[r]aptiformica agent'").is_empty(),
            "no agent on {id}"
        );
    }

    // consul killed: restarted by the agent, alive again.
    let before = sh(&ids[1], "pidof consul");
    sh(&ids[1], "kill -9 $(pidof consul)");
    let back = wait_until(Duration::from_secs(10), || {
        let now = sh(&ids[1], "pidof consul");
        !now.is_empty() && now != before
    });
    let back = back.expect("consul not restarted within 10 s");
    eprintln!("consul back after {back:?}");
    assert!(wait_until(Duration::from_secs(30), || count(&env, "alive", None) == 3).is_some());
    let status: Value = serde_json::from_str(&sh(&ids[1], "raptiformica --json agent --status")).unwrap();
    assert_eq!(status["mode"], "node", "{status}");
    assert!(
        status["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "restart" && e["detail"].as_str().unwrap().starts_with("consul")),
        "{status}"
    );

    // The agent killed: its keeper starts it again.
    let agent = sh(&ids[1], "pgrep -f '[r]aptiformica agent' | head -n 1");
    sh(&ids[1], &format!("kill -9 {agent}"));
    let back = wait_until(Duration::from_secs(10), || {
        let now = sh(&ids[1], "pgrep -f '[r]aptiformica agent' | head -n 1");
        !now.is_empty() && now != agent
    });
    eprintln!("agent back after {:?}", back.expect("agent not back within 10 s"));

    // The container restarted (a reboot): the entrypoint starts the keeper, the agent brings
    // yggdrasil and consul back, the node is alive again.
    assert!(docker(&["restart", "-t", "1", &ids[1]]).status.success());
    let back = wait_until(Duration::from_secs(60), || {
        count(&env, "alive", None) == 3 && !sh(&ids[1], "pidof consul").is_empty()
    });
    eprintln!(
        "restarted node alive after {:?}",
        back.expect("the restarted node did not come back")
    );

    // ACLs deny a local unprivileged user; root (holding the cluster's token) reads and writes.
    for args in [
        vec!["kv", "get", "raptiformica/meshnet/consul/password"],
        vec![
            "kv",
            "put",
            "raptiformica/platform/default/hooks/after_mesh/x/command",
            "id",
        ],
    ] {
        let mut all = vec!["exec", "-u", "nobody", &ids[1], "consul"];
        all.extend(args.iter().copied());
        let out = docker(&all);
        assert!(
            !out.status.success(),
            "nobody ran consul {args:?}: {}",
            text(&out.stdout)
        );
    }
    assert_eq!(sh(&ids[1], "stat -c %a /root/.raptiformica.d/consul_token"), "600");
    // consul's own agent has a token of its own, not the cluster's: it exists with the agent
    // policy only.
    let agent_token = sh(
        &ids[1],
        r#"grep -o '"agent": *"[^"]*"' /root/.raptiformica.d/mesh/consul.json | cut -d'"' -f4"#,
    );
    assert_eq!(
        agent_token.len(),
        36,
        "no agent token in consul's config: {agent_token:?}"
    );
    assert_ne!(agent_token, sh(&ids[1], "cat /root/.raptiformica.d/consul_token"));
    let read_own = || {
        docker(&[
            "exec",
            "-e",
            &format!("CONSUL_HTTP_TOKEN={agent_token}"),
            &ids[1],
            "consul",
            "acl",
            "token",
            "read",
            "-self",
        ])
    };
    // The node agents make it once the new cluster's ACLs leave their first legacy mode.
    wait_until(Duration::from_secs(30), || read_own().status.success());
    let own = read_own();
    assert!(
        own.status.success(),
        "the agent token does not exist: {}",
        text(&own.stderr)
    );
    let own = text(&own.stdout);
    assert!(
        own.contains("raptiformica-agent") && !own.contains("global-management"),
        "{own}"
    );

    // The shared config: a `..` key is refused (it used to wipe the KV), and unsetting `a`
    // leaves its sibling `ab`.
    let out = docker(&["exec", &ids[0], "raptiformica", "config", "set", "..", "x"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(".."), "{}", text(&out.stderr));
    for (k, v) in [("test/a", "1"), ("test/ab", "2")] {
        assert!(
            docker(&["exec", &ids[0], "raptiformica", "config", "set", k, v])
                .status
                .success()
        );
    }
    assert!(
        docker(&["exec", &ids[0], "raptiformica", "config", "unset", "test/a"])
            .status
            .success()
    );
    assert_eq!(sh(&ids[2], "raptiformica config get test/ab"), "2");
    assert_eq!(sh(&ids[2], "raptiformica config get test/a 2>/dev/null"), "");
    assert!(!sh(&ids[2], "raptiformica config get server 2>/dev/null").is_empty());

    // Calm: cluster_change stays quiet; a failing predicate keeps its command from running.
    std::thread::sleep(Duration::from_secs(5));
    let count = || sh(&ids[0], "cat /tmp/cluster_change.count 2>/dev/null | wc -l");
    let c0 = count();
    std::thread::sleep(Duration::from_secs(30));
    assert_eq!(count(), c0, "cluster_change fired in calm");
    assert_eq!(sh(&ids[0], "test -e /tmp/predicate-ignored && echo yes"), "");

    // A change: a node's consul stopped for good (agent and keeper first) fires it once.
    sh(
        &ids[2],
        "cd /root/.raptiformica.d/mesh && kill $(cat keeper.pid) $(cat agent.pid); sleep 0.2; kill -9 $(pidof consul)",
    );
    let fired = wait_until(Duration::from_secs(20), || count() != c0);
    eprintln!("cluster_change after {:?}", fired.expect("cluster_change did not fire"));
    std::thread::sleep(Duration::from_secs(5));
    let fires: usize = count().parse().unwrap();
    let c0: usize = c0.parse().unwrap();
    assert!(fires - c0 <= 2, "one change, {} fires", fires - c0);
}

/// The agent has a shutdown path: SIGTERM (systemd's stop, the keeper's) ends it cleanly and
/// promptly, and its status says so. Here the workstation's agent, with no cluster to watch.
#[test]
fn sigterm_stops_the_agent_cleanly() {
    let env = crate::harness::TestEnv::new();
    let mut child = env
        .cmd()
        .arg("agent")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = env.cache().join("var").join("agent-status.json");
    let started = wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.contains("started"))
    });
    assert!(started.is_some(), "the agent never recorded its start");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut code = None;
    wait_until(Duration::from_secs(10), || {
        code = child.try_wait().unwrap();
        code.is_some()
    });
    let code = code.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the agent did not stop within 10 s of SIGTERM")
    });
    assert!(code.success(), "the agent ended with {code}");
    let recorded = std::fs::read_to_string(&status).unwrap();
    assert!(recorded.contains("agent stopped"), "{recorded}");
}
