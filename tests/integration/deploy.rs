//! End to end: `deploy` of plain machines (containers we did not spawn, sshd and our key only),
//! one of them reachable only through another; a re-run changes nothing; a bad inventory is
//! refused before anything starts; a fourth plain machine `join`s through a member. And an
//! inventory whose hosts do not answer fetches nothing and writes no secret (no docker needed).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Plain, docker, ip_on, wait_until};
use crate::docker::DockerTest;
use crate::harness::{TestEnv, bin, text};

const HIDDEN: &str = "raptiformica-test-hidden";

/// Alive members as the node `id` sees them.
fn alive_on(id: &str) -> usize {
    let out = docker(&["exec", id, "raptiformica", "--json", "members"]);
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_default()
        .iter()
        .filter(|m| m["status"] == "alive")
        .count()
}

/// Whether `dir` holds anything (a missing dir holds nothing).
fn holds_anything(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// The cluster's secrets `slave::prepare` writes: the ACL token, the gossip key in the cache.
fn secrets_written(env: &TestEnv) -> Vec<String> {
    let mut found = Vec::new();
    if env.cache().join("consul_token").exists() {
        found.push("consul_token".to_string());
    }
    let cache = std::fs::read_to_string(env.cache_file()).unwrap_or_default();
    if cache.contains("raptiformica/meshnet/consul/password") {
        found.push(format!("the gossip key in {}", env.cache_file().display()));
    }
    found
}

#[test]
fn an_unreachable_host_fetches_nothing_and_writes_no_secret() {
    let env = TestEnv::new();
    let inventory = env.write("inv.json", r#"[{"dst": "127.0.0.1", "port": 1}]"#);
    let inventory = inventory.to_str().unwrap();
    // Artifacts in `<cache>/artifacts`, as by default; a fetch that started anyway must not
    // download 75 MB: the mirror it would use refuses at once.
    let run = |extra: &[(&str, &std::path::Path)], args: &[&str]| {
        let mut cmd = env.cmd();
        cmd.env_remove("RAPTIFORMICA_ARTIFACTS_DIR")
            .env("RAPTIFORMICA_DEBIAN_MIRROR", "http://127.0.0.1:1/debian");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let t = Instant::now();
        let out = cmd.args(["deploy", inventory]).args(args).output().unwrap();
        (out, t.elapsed())
    };

    // With the default --ssh-wait (30 s): a refusing host is given up after 10 s.
    let (out, took) = run(&[], &[]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}\n{err}");
    assert!(
        err.contains("nothing answers on 127.0.0.1:1") && err.contains("the port in the inventory"),
        "{err}"
    );
    assert!(
        err.contains("1 of 1 host(s) failed: 127.0.0.1:1") && err.contains("nothing was fetched"),
        "{err}"
    );
    let table = text(&out.stdout);
    assert!(table.contains("127.0.0.1:1") && table.contains("FAILED"), "{table}");
    let artifacts = env.cache().join("artifacts");
    assert!(
        !holds_anything(&artifacts),
        "artifacts fetched into {}",
        artifacts.display()
    );
    assert_eq!(secrets_written(&env), Vec::<String>::new());

    // With the artifacts there already (nothing to fetch), no secret is written either.
    let fake = env.dir.path().join("fake-artifacts");
    std::fs::create_dir_all(&fake).unwrap();
    for b in ["consul", "yggdrasil", "yggdrasilctl"] {
        std::fs::write(fake.join(b), "#!/bin/sh\n").unwrap();
    }
    let (out, _) = run(&[("RAPTIFORMICA_ARTIFACTS_DIR", &fake)], &["--ssh-wait", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(secrets_written(&env), Vec::<String>::new());

    // The original's --modules are installed only once a host answers.
    let module = env.write(
        "src/probe/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "server": {"probe": {"p": {"bootstrap": "true"}}}}"#,
    );
    let module = module.parent().unwrap().to_str().unwrap();
    let (out, _) = run(&[], &["--ssh-wait", "2", "--modules", module]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(!holds_anything(&env.modules()), "a module was installed for no host");
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
    let mut plain = Plain::default();
    let _ = docker(&["network", "rm", HIDDEN]);
    assert!(docker(&["network", "create", HIDDEN]).status.success());
    plain.networks.push(HIDDEN.into());
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
    // With a module to install first (the original's --modules): a provisioner of its own
    // runs on every host after the built-in ones.
    let module = env.write(
        "src/marker/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1",
            "server": {"headless": {"zz_marker": {"bootstrap": "touch /tmp/marker-module.ran"}}}}"#,
    );
    let t = Instant::now();
    env.ok(&[
        "deploy",
        inventory,
        "--modules",
        module.parent().unwrap().to_str().unwrap(),
    ]);
    eprintln!("deployed 3 hosts in {:?}", t.elapsed());
    assert!(env.modules().join("marker").is_dir(), "the module was not installed");
    for id in [&a, &j, &h] {
        let out = docker(&["exec", id, "test", "-e", "/tmp/marker-module.ran"]);
        assert!(out.status.success(), "the module's provisioner did not run on {id}");
    }
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
