//! The layered config through the real binary.

use serde_json::{Value, json};

use crate::harness::{TestEnv, root, text};

#[test]
fn builtin_modules_load_with_their_origin() {
    let env = TestEnv::new();
    let m = env.mapping();
    assert!(
        m.contains_key("raptiformica/compute/docker/headless/start_instance"),
        "{m:?}"
    );
    assert!(m.contains_key("raptiformica/server/headless/raptiformica/bootstrap"));
    let table = env.ok(&["config"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("raptiformica/compute/docker/headless/get_port"))
        .unwrap();
    assert!(line.contains("builtin compute/docker/raptiformica.toml"), "{line}");
}

#[test]
fn user_modules_override_builtin_key_by_key_json_and_toml() {
    let env = TestEnv::new();
    let builtin = env.mapping();
    env.module(
        "a/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1",
        "compute": {"docker": {"headless": {"get_port": "echo 2222"}}}, "extra": {"from": "json"}}"#,
    );
    env.module(
        "b/mod.toml",
        "raptiformica_api_version = \"0.1\"\n[extra]\nfrom = \"toml\"\nnumber = 7\n",
    );
    env.module(
        "b/ignored.json",
        r#"{"no_version": true, "extra": {"from": "ignored"}}"#,
    );
    let m = env.mapping();
    assert_eq!(m["raptiformica/compute/docker/headless/get_port"], json!("echo 2222"));
    // b/ sorts after a/: the TOML file wins where both set a key.
    assert_eq!(m["raptiformica/extra/from"], json!("toml"));
    assert_eq!(m["raptiformica/extra/number"], json!(7));
    // The other built-in keys are untouched.
    assert_eq!(
        m["raptiformica/compute/docker/headless/start_instance"],
        builtin["raptiformica/compute/docker/headless/start_instance"]
    );
    let table = env.ok(&["config"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("raptiformica/extra/from") && l.contains("user module b/mod.toml")),
        "{table}"
    );
    // The mutable layer beats both.
    env.ok(&["config", "set", "extra/from", "cli"]);
    assert_eq!(env.ok(&["config", "get", "raptiformica/extra/from"]), "cli\n");
    let table = env.ok(&["config"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("raptiformica/extra/from") && l.contains("mutable cache")),
        "{table}"
    );
}

/// Every module file of the original project (and one of its plugins) loads as a user module,
/// and each of its values lands at the key the original put it at; except the original's own
/// commands (its Python scripts, its module tree), which cannot run here: a hook calling one of
/// its scripts runs ours or is skipped, a compute or server type calling them is left out (the
/// built-in one applies), and one notice names each module that held such commands.
#[test]
fn compat_modules_load_at_the_original_keys_and_their_python_commands_are_mapped() {
    let mut dirs = vec![root().join("tests/fixtures/compat")];
    let shared = root().join("../shared/compat");
    if shared.is_dir() {
        dirs.push(shared);
    }
    let python = |v: &Value| {
        v.as_str()
            .is_some_and(|c| c.contains("PYTHONPATH") || c.contains(".py") || c.contains("modules/compute/"))
    };
    // The entry a key belongs to (a handler, a compute or server type), as the loader sees it.
    let entry = |k: &str| {
        let segs: Vec<&str> = k.split('/').collect();
        let n = match segs.get(1) {
            Some(&"platform") => 6,
            Some(&"compute" | &"server") => 4,
            _ => segs.len(),
        };
        segs[..n.min(segs.len())].join("/")
    };
    for compat in dirs {
        let env = TestEnv::new();
        let mut expected = serde_json::Map::new();
        let mut files = 0;
        let mut with_python = Vec::new();
        for plugin in std::fs::read_dir(&compat)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            let target = env.modules().join(plugin.file_name());
            copy_dir(&plugin.path(), &target);
            for f in walk(&plugin.path())
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
            {
                files += 1;
                let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
                let mut one = serde_json::Map::new();
                flatten("raptiformica", &doc, &mut one);
                let python_entries: Vec<String> =
                    one.iter().filter(|(_, v)| python(v)).map(|(k, _)| entry(k)).collect();
                if !python_entries.is_empty() {
                    with_python.push(target.join(f.strip_prefix(plugin.path()).unwrap()));
                }
                expected.extend(one.into_iter().filter(|(k, _)| !python_entries.contains(&entry(k))));
            }
        }
        assert!(files >= 7, "expected the compat fixtures in {}", compat.display());
        assert!(with_python.len() >= 4, "{with_python:?}");
        let out = env.run(&["config", "--json"]);
        let stderr = text(&out.stderr);
        // One notice per module that held the original's commands, and no other warning.
        for f in &with_python {
            assert_eq!(
                stderr.matches(&format!("the module `{}`", f.display())).count(),
                1,
                "{stderr}"
            );
        }
        assert_eq!(
            stderr.lines().filter(|l| l.contains("WARN")).count(),
            with_python.len(),
            "{stderr}"
        );
        let m: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
        for (k, v) in &expected {
            assert_eq!(m.get(k), Some(v), "key {k} from {}", compat.display());
        }
        let hooks = "raptiformica/platform/default/hooks/cluster_change";
        assert_eq!(
            m[&format!("{hooks}/clean_up_gone_resources/command")],
            json!("\"$RAPTIFORMICA_BIN\" prune --verbose")
        );
        assert!(
            !m.contains_key(&format!("{hooks}/rejoin_peers/command")),
            "the agent rejoins"
        );
        assert!(!m.values().any(python), "a command of the original is left");
        for k in [
            "raptiformica/compute/docker/headless/start_instance",
            "raptiformica/compute/vagrant/headless/get_hostname",
            "raptiformica/platform/default/hooks/cluster_change/notify_kodi_on_cluster_change/predicate",
            "raptiformica/server/headless/raptiformica/bootstrap",
            "raptiformica/raptiformica_api_version",
        ] {
            assert!(m.contains_key(k), "{k} missing");
        }
    }
}

#[test]
fn malformed_module_is_skipped_with_a_warning_naming_it() {
    let env = TestEnv::new();
    env.module(
        "good/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "extra": {"good": 1}}"#,
    );
    env.module(
        "broken/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "server": "#,
    );
    env.module(
        "bad-toml/raptiformica.toml",
        "raptiformica_api_version = \"0.1\"\n[server\n",
    );
    let out = env.run(&["config", "--json"]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("broken/raptiformica.json") && stderr.contains("EOF"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad-toml/raptiformica.toml") && stderr.contains("line 2"),
        "{stderr}"
    );
    let m: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["raptiformica/extra/good"], json!(1));
    assert!(m.contains_key("raptiformica/compute/docker/headless/get_port"));
}

#[test]
fn set_get_unset_round_trip() {
    let env = TestEnv::new();
    env.ok(&["config", "set", "raptiformica/test/a", "hello world"]);
    env.ok(&["config", "set", "test/n", "42", "--json-value"]);
    assert_eq!(env.ok(&["config", "get", "test/a"]), "hello world\n");
    assert_eq!(env.ok(&["--json", "config", "get", "test/n"]).trim(), "42");
    assert_eq!(
        env.ok(&["config", "get", "test"]),
        "raptiformica/test/a = hello world\nraptiformica/test/n = 42\n"
    );
    // The cache is the flat mapping, complete enough to seed another node.
    let cached: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(env.cache_file()).unwrap()).unwrap();
    assert_eq!(cached["raptiformica/test/a"], json!("hello world"));
    assert!(cached.contains_key("raptiformica/compute/docker/headless/get_port"));
    // A value can shadow a module's and be unset to show the module's again.
    let port = env.ok(&["config", "get", "compute/docker/headless/get_port"]);
    env.ok(&["config", "set", "compute/docker/headless/get_port", "echo 2200"]);
    assert_eq!(
        env.ok(&["config", "get", "compute/docker/headless/get_port"]),
        "echo 2200\n"
    );
    let out = env.run(&["config", "unset", "compute/docker/headless/get_port"]);
    assert!(text(&out.stderr).contains("falls back to its module value"));
    assert_eq!(env.ok(&["config", "get", "compute/docker/headless/get_port"]), port);
    env.ok(&["config", "unset", "test"]);
    assert!(env.fails(&["config", "get", "test/a"]).contains("is not set"));
    assert!(env.fails(&["config", "unset", "test/a"]).contains("is not set"));
}

#[test]
fn set_refuses_to_break_the_tree_shape() {
    let env = TestEnv::new();
    let err = env.fails(&["config", "set", "compute/docker", "x"]);
    assert!(err.contains("is a section"), "{err}");
    let err = env.fails(&["config", "set", "compute/docker/headless/get_port/x", "x"]);
    assert!(err.contains("is a value"), "{err}");
    assert!(env.fails(&["config", "set", "a//b", "x"]).contains("empty segment"));
    for blank in [" a/b", "a/b "] {
        assert!(
            env.fails(&["config", "set", blank, "x"]).contains("whitespace"),
            "{blank:?}"
        );
    }
}

#[test]
fn corrupt_cache_is_refused_and_left_byte_for_byte() {
    let corruptions: [&[u8]; 5] = [
        b"{\"raptiformica/server/headless\": tru",
        b"",
        b"{}",
        b"[\"raptiformica/server/x\"]",
        b"{\"raptiformica/server/a/b/bootstrap\": \"x\", \"raptiformica/compute/c/s/get_port\": \"echo 22\"}",
    ];
    for bad in corruptions {
        let env = TestEnv::new();
        std::fs::create_dir_all(env.cache()).unwrap();
        std::fs::write(env.cache_file(), bad).unwrap();
        for args in [
            &["config", "set", "raptiformica/x", "y"][..],
            &["config", "unset", "raptiformica/x"],
            &["config", "get", "raptiformica/x"],
            &["config"],
            &["spawn", "--check-available"],
        ] {
            let err = env.fails(args);
            assert!(
                err.contains("mutable_config.json") && err.contains("raptiformica clean"),
                "{args:?}: {err}"
            );
            assert_eq!(
                std::fs::read(env.cache_file()).unwrap(),
                bad,
                "{args:?} changed the cache"
            );
        }
        env.ok(&["clean"]);
        assert!(!env.cache_file().exists());
        env.ok(&["config", "set", "raptiformica/x", "y"]);
        assert_eq!(env.ok(&["config", "get", "x"]), "y\n");
    }
}

#[test]
fn concurrent_sets_from_eight_processes_lose_no_write() {
    let env = TestEnv::new();
    for round in 0..3 {
        let children: Vec<_> = (0..8)
            .map(|i| {
                let mut cmd = env.cmd();
                cmd.args([
                    "config",
                    "set",
                    &format!("raptiformica/race/r{round}/k{i}"),
                    &format!("v{i}"),
                ]);
                cmd.spawn().unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
    }
    let m = env.mapping();
    for round in 0..3 {
        for i in 0..8 {
            assert_eq!(
                m.get(&format!("raptiformica/race/r{round}/k{i}")),
                Some(&json!(format!("v{i}"))),
                "lost r{round}/k{i}"
            );
        }
    }
}

#[test]
fn example_cache_is_a_valid_cache() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.cache()).unwrap();
    std::fs::copy(root().join("mutable_config.json.example"), env.cache_file()).unwrap();
    let m = env.mapping();
    assert!(m.contains_key("raptiformica/compute/docker/headless/start_instance"));
}

pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()))
        } else {
            out.push(e.path())
        }
    }
    out
}

/// The test's own flattening, independent of the crate's.
pub fn flatten(prefix: &str, v: &Value, out: &mut serde_json::Map<String, Value>) {
    match v {
        Value::Object(o) => o.iter().for_each(|(k, v)| flatten(&format!("{prefix}/{k}"), v, out)),
        leaf => {
            out.insert(prefix.into(), leaf.clone());
        }
    }
}

#[test]
fn bad_agent_rule_values_are_refused_naming_the_key() {
    let env = TestEnv::new();
    for bad in ["three", "0", "-2"] {
        let err = env.fails(&["config", "set", "agent/rules/min_servers", "--", bad]);
        assert!(err.contains("raptiformica/agent/rules/min_servers"), "{bad}: {err}");
    }
    let err = env.fails(&["config", "set", "meshnet/yggdrasil/links", "1"]);
    assert!(err.contains("raptiformica/meshnet/yggdrasil/links"), "{err}");
    env.ok(&["config", "set", "agent/rules/min_servers", "5"]);
    assert_eq!(env.ok(&["config", "get", "agent/rules/min_servers"]).trim(), "5");
}

#[test]
fn secrets_are_masked_unless_asked_for() {
    let env = TestEnv::new();
    env.ok(&["config", "set", "meshnet/consul/password", "s3cr3t-gossip"]);
    let all = env.ok(&["config"]);
    assert!(!all.contains("s3cr3t-gossip") && all.contains("<secret>"), "{all}");
    let json = env.ok(&["--json", "config"]);
    assert!(!json.contains("s3cr3t-gossip"), "{json}");
    assert_eq!(env.ok(&["config", "get", "meshnet/consul/password"]).trim(), "<secret>");
    assert!(!env.ok(&["config", "get", "meshnet/consul"]).contains("s3cr3t-gossip"));
    assert_eq!(
        env.ok(&["config", "get", "--show-secrets", "meshnet/consul/password"])
            .trim(),
        "s3cr3t-gossip"
    );
    assert!(env.ok(&["config", "--show-secrets"]).contains("s3cr3t-gossip"));
}
