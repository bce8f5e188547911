//! End to end: a replicated state machine on 3 nodes. 200 entries appended concurrently from
//! two nodes give every node the same state in the same order, also a node whose agent was
//! killed during the appends; after compaction a 4th node restores the snapshot and reaches
//! the same state; an entry `apply` refuses stops the machine and is reported; bad input
//! changes nothing; each append is in the log once (a retry with its id appends nothing, an
//! append whose --wait ran out is not tried again); an agent killed mid-apply does not apply
//! the entry twice at once, and redelivers it flagged; one agent per node.

use std::time::{Duration, Instant};

use crate::cluster::{count, docker, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

/// The SQLite database of the example module, row by row: the entries in the order applied,
/// then the keys and values.
fn state(id: &str) -> String {
    sh(
        id,
        "sqlite3 /var/lib/raptiformica-kv/kv.db 'SELECT idx, op, key FROM applied ORDER BY idx; \
         SELECT key, value FROM kv ORDER BY key' 2>/dev/null",
    )
}

/// `raptiformica ARGS` on the node `id`.
fn on(id: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["exec", id, "raptiformica"];
    all.extend_from_slice(args);
    docker(&all)
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn concurrent_appends_give_every_node_the_same_state_and_a_late_node_restores_the_snapshot() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    // The example a user copies: a key-value store in SQLite.
    let example = crate::harness::root().join("examples/sqlite-kv");
    env.ok(&["modules", "install", example.to_str().unwrap()]);
    // A slow machine that logs when each apply starts (and whether it is a redelivery) and ends.
    env.module(
        "slow/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "state": {"slow": {"apply":
  "echo \"$RAPTIFORMICA_STATE_INDEX ${RAPTIFORMICA_STATE_REDELIVERY:-0} start\" >> /tmp/slow.log; sleep 4; echo \"$RAPTIFORMICA_STATE_INDEX end\" >> /tmp/slow.log"}}}"#,
    );
    // A machine whose snapshot takes 20 s (one is due every 2 entries): long enough for the
    // test to delete its lock under it on a loaded machine (docker exec takes seconds there).
    env.module(
        "snap/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "state": {"snap": {"snapshot_every": 2,
  "apply": "cat >> /tmp/snap.data", "snapshot": "sleep 20; cat /tmp/snap.data", "restore": "cat > /tmp/snap.data"}}}"#,
    );
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(60), || count(&env, "alive", None) == 3).is_some());
    let nodes = running_nodes(&env);

    // Bad input changes nothing.
    let err = text(&on(&nodes[0], &["state", "append", "nosuch", "set x 1"]).stderr);
    assert!(err.contains("no state machine `nosuch`") && err.contains("kv"), "{err}");
    let big = sh(
        &nodes[0],
        "head -c 400000 /dev/zero | tr '\\0' x > /tmp/big; raptiformica state append kv @/tmp/big 2>&1; true",
    );
    assert!(big.contains("at most"), "{big}");

    // Two appenders, 100 entries each, while the third node's agent is killed once.
    let t = Instant::now();
    let appender = |id: &str, tag: &str| {
        std::process::Command::new("docker")
            .args([
                "exec",
                id,
                "sh",
                "-c",
                &format!(
                    "for i in $(seq 100); do raptiformica state append kv \"set {tag}$i $i\" >/dev/null || exit 1; done"
                ),
            ])
            .spawn()
            .expect("docker exec")
    };
    let mut a = appender(&nodes[0], "a");
    let mut b = appender(&nodes[1], "b");
    std::thread::sleep(Duration::from_secs(1));
    let agent = sh(&nodes[2], "pgrep -f '[r]aptiformica agent' | head -n 1");
    sh(&nodes[2], &format!("kill -9 {agent}"));
    assert!(
        a.wait().unwrap().success() && b.wait().unwrap().success(),
        "an appender failed"
    );
    eprintln!("200 concurrent appends in {:?}", t.elapsed());
    let out = docker(&[
        "exec",
        &nodes[0],
        "raptiformica",
        "state",
        "append",
        "kv",
        "delete a1",
        "--wait",
    ]);
    assert!(out.status.success(), "append --wait: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "201");

    let reference = state(&nodes[0]);
    let applied: Vec<&str> = reference.lines().take(201).collect();
    assert_eq!(applied.len(), 201, "{reference}");
    assert_eq!(applied[200], "201|delete|a1");
    // Each appender's entries in its own order, interleaved in one total order.
    for tag in ["a", "b"] {
        let mine: Vec<&str> = applied
            .iter()
            .filter_map(|l| l.split('|').nth(2))
            .filter(|k| k.starts_with(tag))
            .collect();
        let mut expected: Vec<String> = (1..=100).map(|i| format!("{tag}{i}")).collect();
        if tag == "a" {
            expected.push("a1".into()); // the delete
        }
        assert_eq!(mine, expected);
    }
    assert_eq!(
        reference.lines().count(),
        201 + 199,
        "201 entries applied, 199 keys left"
    );
    for n in &nodes[1..] {
        assert_eq!(state(n), reference, "the state on {n} differs");
    }

    // Compacted (a snapshot every 100): a 4th node restores it and replays the rest.
    let status = text(&docker(&["exec", &nodes[0], "raptiformica", "--json", "state", "status", "kv"]).stdout);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["snapshot"].as_u64().is_some_and(|s| s >= 100), "{status}");
    env.ok(&["spawn", "--compute-type", "docker"]);
    let fourth = running_nodes(&env)
        .into_iter()
        .find(|n| !nodes.contains(n))
        .expect("a 4th node");
    let caught_up = wait_until(Duration::from_secs(60), || state(&fourth) == reference);
    assert!(
        caught_up.is_some(),
        "the 4th node did not reach the same state: {}",
        sh(&fourth, "tail -n 3 /root/.raptiformica.d/mesh/agent.log")
    );
    let log = sh(
        &fourth,
        "grep -c 'restored the snapshot' /root/.raptiformica.d/mesh/agent.log",
    );
    assert_eq!(log, "1", "the 4th node restored a snapshot once");

    // An entry its `apply` refuses stops the machine on every node (never skipped), and
    // `state status` says so; what came before stays applied.
    let out = docker(&["exec", &nodes[0], "raptiformica", "state", "append", "kv", "bogus"]);
    assert!(out.status.success());
    let stopped = wait_until(Duration::from_secs(30), || {
        let status = text(&docker(&["exec", &nodes[0], "raptiformica", "--json", "state", "status", "kv"]).stdout);
        serde_json::from_str::<serde_json::Value>(&status).is_ok_and(|s| {
            s["nodes"].as_array().is_some_and(|ns| {
                ns.len() == 4
                    && ns.iter().all(|n| {
                        n["applied"] == 201
                            && n["lag"] == 1
                            && n["failure"].as_str().is_some_and(|f| f.contains("entry 202"))
                    })
            })
        })
    });
    assert!(
        stopped.is_some(),
        "{}",
        text(&docker(&["exec", &nodes[0], "raptiformica", "state", "status", "kv"]).stdout)
    );
    let table = text(&docker(&["exec", &nodes[0], "raptiformica", "state", "status", "kv"]).stdout);
    assert!(table.contains("STOPPED"), "{table}");
    assert_eq!(
        state(&nodes[1]),
        reference,
        "nothing after the refused entry was applied"
    );

    // Each append is in the log once. From the workstation (through a node over SSH), an
    // append whose --wait runs out (the machine is stopped at 202) says so, with exit status
    // 3 and its index, and is not tried again on the next node.
    let index = || {
        let status = text(&docker(&["exec", &nodes[0], "raptiformica", "--json", "state", "status", "kv"]).stdout);
        serde_json::from_str::<serde_json::Value>(&status).unwrap()["index"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(index(), 202);
    let out = env.run(&["state", "append", "kv", "set w 1", "--wait", "--timeout", "2"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(text(&out.stdout).trim(), "203");
    assert!(err.contains("appended at 203; not yet applied everywhere"), "{err}");
    assert_eq!(
        index(),
        203,
        "the append that was not applied in time was appended again"
    );
    // A retry with the same id, on another node, appends nothing and answers the same index;
    // so does a retry of a multi-transaction append (70 lines: two transactions).
    let append = |node: &str, args: &[&str]| {
        let out = on(node, &[&["state", "append", "kv"], args].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let with_id = |node: &str| append(node, &["set d 1", "--id", "retry-1"]);
    assert_eq!(with_id(&nodes[0]), "204");
    assert_eq!(with_id(&nodes[1]), "204");
    assert_eq!(index(), 204);
    sh(&nodes[0], "seq 70 | sed 's/^/set l /' > /tmp/lines");
    sh(&nodes[1], "seq 70 | sed 's/^/set l /' > /tmp/lines");
    let lines = |node: &str| append(node, &["@/tmp/lines", "--each-line", "--id", "lines-1"]);
    assert_eq!(lines(&nodes[0]), "274");
    assert_eq!(lines(&nodes[1]), "274");
    assert_eq!(index(), 274);
    let bad = text(&on(&nodes[0], &["state", "append", "kv", "x", "--id", "a/b"]).stderr);
    assert!(bad.contains("not an append id"), "{bad}");
    assert_eq!(index(), 274);

    // Each entry is applied once per node, also when the agent is killed mid-apply: the
    // restarted agent waits for the apply still running, then redelivers that entry, flagged;
    // never two applies at once. A second agent on a node is refused.
    let out = docker(&["exec", &nodes[0], "raptiformica", "state", "append", "slow", "one"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let victim = &nodes[1];
    let started = wait_until(Duration::from_secs(60), || {
        sh(victim, "cat /tmp/slow.log 2>/dev/null") == "1 0 start"
    });
    assert!(started.is_some(), "{}", sh(victim, "cat /tmp/slow.log 2>&1"));
    let agent = sh(victim, "cat /root/.raptiformica.d/mesh/agent.pid");
    sh(victim, &format!("kill -9 {agent}"));
    let done = wait_until(Duration::from_secs(90), || {
        sh(victim, "cat /tmp/slow.log")
            .lines()
            .filter(|l| l.ends_with("end"))
            .count()
            == 2
    });
    let log = sh(victim, "cat /tmp/slow.log");
    assert!(done.is_some(), "no redelivery after the restart:\n{log}");
    assert_eq!(
        log, "1 0 start\n1 end\n1 1 start\n1 end",
        "applied twice at once, or not flagged"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(sh(victim, "cat /tmp/slow.log"), log, "applied a third time");
    for other in [&nodes[0], &nodes[2]] {
        let ok = wait_until(Duration::from_secs(30), || {
            sh(other, "cat /tmp/slow.log") == "1 0 start\n1 end"
        });
        assert!(ok.is_some(), "{other}: {}", sh(other, "cat /tmp/slow.log"));
    }
    // (bounded: one that wrongly starts would run for good)
    // A node that loses the log's lock while it takes a snapshot stores nothing (here the
    // lock key is deleted under it; the store's transaction checks the lock's session).
    let kv = |args: &str| {
        sh(
            &nodes[0],
            &format!("CONSUL_HTTP_TOKEN=$(cat /root/.raptiformica.d/consul_token) consul kv {args} 2>&1"),
        )
    };
    for entry in ["a", "b"] {
        assert!(on(&nodes[0], &["state", "append", "snap", entry]).status.success());
    }
    // Held: the key has a session (an empty answer from a busy `docker exec`, or a key a
    // holder released, is no lock to delete).
    let locked = wait_until(Duration::from_secs(30), || {
        kv("get -detailed raptiformica-state/snap/lock").lines().any(|l| {
            l.strip_prefix("Session")
                .is_some_and(|s| !s.trim().is_empty() && s.trim() != "-")
        })
    });
    assert!(locked.is_some(), "no node took the lock for the snapshot");
    let deleted = kv("delete raptiformica-state/snap/lock");
    assert!(deleted.contains("Success"), "the lock was not deleted: {deleted}");
    // Any of the four may hold it: the late one too.
    let everyone: Vec<&String> = nodes.iter().chain([&fourth]).collect();
    let said = wait_until(Duration::from_secs(45), || {
        everyone
            .iter()
            .any(|n| sh(n, "raptiformica agent --status").contains("lock was lost"))
    });
    assert!(
        said.is_some(),
        "the holder did not notice it lost the lock:\n{}",
        everyone
            .iter()
            .map(|n| format!(
                "{n}:\n{}\n{}",
                // The snapshot's lines only (the kv machine's stop repeats every few seconds).
                sh(n, "raptiformica agent --status 2>&1 | grep -i -e snap -e lock"),
                sh(n, "grep -i 'snap' /root/.raptiformica.d/mesh/agent.log | tail -n 15")
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let snap = text(&on(&nodes[0], &["--json", "state", "status", "snap"]).stdout);
    let snap: serde_json::Value = serde_json::from_str(&snap).unwrap();
    assert!(
        snap["snapshot"].is_null(),
        "a snapshot was stored without the lock: {snap}"
    );

    let second = docker(&["exec", &nodes[0], "timeout", "20", "raptiformica", "agent"]);
    let err = text(&second.stderr);
    let first = sh(&nodes[0], "cat /root/.raptiformica.d/mesh/agent.pid");
    assert!(
        !second.status.success() && err.contains("already runs") && err.contains(&format!("pid {first}")),
        "{err}"
    );
}
