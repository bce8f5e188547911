//! End to end: events on a 3-node cluster. A broadcast runs its handler once on every node
//! (payload on stdin, name/id/origin in the environment), a targeted one on its node only, one
//! for another server type nowhere; a handler whose predicate fails does not run; bad names
//! and oversized payloads are refused before anything is sent; slow handlers of different
//! events run at the same time; events consul's buffer dropped before the agent took them are
//! reported.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{count, sh, wait_until};
use crate::docker::DockerTest;

const MODULE: &str = r#"{"raptiformica_api_version": "0.1",
 "platform": {"default": {"events": {"ping": {
   "h": {"predicate": "true",
         "command": "{ cat; echo \" $RAPTIFORMICA_EVENT_NAME $RAPTIFORMICA_EVENT_ORIGIN ${RAPTIFORMICA_EVENT_ID:+has-id}\"; } >> /tmp/ping.log"},
   "never": {"predicate": "false", "command": "touch /tmp/never-ran"}},
  "slow": {"h": {"predicate": "true", "command": "date +%s.%N >> /tmp/slow.start; sleep 4"}}}}}}"#;

/// Lines of /tmp/ping.log holding `word` on node `id`.
fn hits(id: &str, word: &str) -> usize {
    sh(id, &format!("grep -c '{word}' /tmp/ping.log 2>/dev/null || true"))
        .parse()
        .unwrap_or(0)
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn broadcast_targeted_and_filtered_events_run_their_handlers_where_they_should() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.module("probe/raptiformica.json", MODULE);
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(60), || count(&env, "alive", None) == 3).is_some());
    let nodes = crate::cluster::running_nodes(&env);
    assert_eq!(nodes.len(), 3);

    // Bad input is refused before anything is sent.
    assert!(env.fails(&["event", "fire", "no spaces"]).contains("letters, digits"));
    let big = "x".repeat(600);
    assert!(
        env.fails(&["event", "fire", "ping", "--payload", &big])
            .contains("bytes")
    );

    // A broadcast from a node: once on every node, with its payload, name and origin.
    let t = Instant::now();
    let out = crate::cluster::docker(&[
        "exec",
        &nodes[0],
        "raptiformica",
        "event",
        "fire",
        "ping",
        "--payload",
        "hello",
    ]);
    assert!(out.status.success(), "{}", crate::harness::text(&out.stderr));
    let everywhere = wait_until(Duration::from_secs(10), || nodes.iter().all(|n| hits(n, "hello") == 1));
    assert!(
        everywhere.is_some(),
        "not handled once on every node: {:?}",
        nodes.iter().map(|n| sh(n, "cat /tmp/ping.log")).collect::<Vec<_>>()
    );
    eprintln!("broadcast handled on 3 nodes {:?} after it was fired", t.elapsed());
    let line = sh(&nodes[1], "grep hello /tmp/ping.log");
    assert!(line.starts_with("hello ping ") && line.ends_with("has-id"), "{line}");
    for n in &nodes {
        assert_eq!(
            sh(n, "test -e /tmp/never-ran && echo ran"),
            "",
            "a handler with a false predicate ran on {n}"
        );
    }

    // Targeted at one node (fired from the workstation, through a node): that node only.
    let members: Vec<Value> = serde_json::from_str(&env.ok(&["--json", "members"])).unwrap();
    let target = members[2]["node"].as_str().unwrap().to_string();
    env.ok(&["event", "fire", "ping", "--node", &target, "--payload", "targeted"]);
    // And one for a server type no node has: nowhere.
    env.ok(&["event", "fire", "ping", "--server-type", "nosuch", "--payload", "typed"]);
    env.ok(&["event", "fire", "ping", "--payload", "after"]);
    assert!(wait_until(Duration::from_secs(10), || nodes.iter().all(|n| hits(n, "after") == 1)).is_some());
    let targeted: usize = nodes.iter().map(|n| hits(n, "targeted")).sum();
    assert_eq!(targeted, 1, "a targeted event runs on its node only");
    let typed: usize = nodes.iter().map(|n| hits(n, "typed")).sum();
    assert_eq!(typed, 0, "an event for another server type runs nowhere");

    // A restarted agent does not run the events it already handled again.
    let agent = sh(&nodes[0], "pgrep -f '[r]aptiformica agent' | head -n 1");
    sh(&nodes[0], &format!("kill -9 {agent}"));
    let back = wait_until(Duration::from_secs(15), || {
        let now = sh(&nodes[0], "pgrep -f '[r]aptiformica agent' | head -n 1");
        !now.is_empty() && now != agent
    });
    assert!(back.is_some(), "the agent is not back");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hits(&nodes[0], "hello"), 1, "{}", sh(&nodes[0], "cat /tmp/ping.log"));

    let listed: Vec<Value> = serde_json::from_str(&env.ok(&["--json", "event", "list"])).unwrap();
    assert!(
        listed.iter().any(|e| e["name"] == "ping" && e["payload"] == "hello"),
        "{listed:?}"
    );

    // Slow handlers of different events run at the same time: three events whose handler
    // takes 4 s all start within a few seconds (one at a time, the last would start 8 s after
    // the first).
    sh(&nodes[0], "for i in 1 2 3; do raptiformica event fire slow; done");
    let starts = |n: &str| -> Vec<f64> {
        sh(n, "cat /tmp/slow.start 2>/dev/null")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    let all = wait_until(Duration::from_secs(30), || starts(&nodes[1]).len() == 3);
    assert!(all.is_some(), "{:?}", starts(&nodes[1]));
    let s = starts(&nodes[1]);
    let spread = s.iter().cloned().fold(f64::MIN, f64::max) - s.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread < 3.5, "the handlers ran one after another: started {s:?}");

    // Events consul's buffer (256) dropped before the agent took them are reported, not
    // passed over: the agent is stopped while 300 events are fired, then started again.
    let victim = &nodes[2];
    sh(
        victim,
        "cd /root/.raptiformica.d/mesh && kill $(cat keeper.pid) $(cat agent.pid)",
    );
    let fired = sh(
        &nodes[0],
        "n=0; for i in $(seq 300); do raptiformica event fire burst >/dev/null 2>&1 && n=$((n + 1)); done; echo $n",
    );
    assert_eq!(fired, "300");
    // Gossip carries the burst to the stopped node over some seconds (a few events a packet,
    // a packet every gossip interval): its agent starts once its consul's buffer is all
    // bursts, which (300 fired) means the first ones were dropped. Started earlier, the agent
    // takes the rest as they come and nothing is missed.
    let bursts = || {
        sh(
            victim,
            "raptiformica --json event list | grep -c '\"name\": \"burst\"' || true",
        )
        .parse::<usize>()
        .unwrap_or(0)
    };
    let full = wait_until(Duration::from_secs(90), || bursts() >= 256);
    assert!(
        full.is_some(),
        "the stopped node's consul holds {} burst events of 300",
        bursts()
    );
    crate::cluster::docker(&["exec", "-d", victim, "raptiformica", "keeper"]);
    let reported = wait_until(Duration::from_secs(60), || {
        sh(victim, "raptiformica agent --status").contains("may have been missed")
    });
    assert!(
        reported.is_some(),
        "no gap reported:\n{}",
        sh(victim, "raptiformica agent --status")
    );
}
