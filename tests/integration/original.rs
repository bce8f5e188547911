//! The original's command line (issue 28): `install NAME [--remove]`, `destroy --purge-*`,
//! `package --check-available`, and `--no-after-assimilate` / `--no-after-mesh` really skipping
//! their hooks, the `notify_cluster_change` event running the `cluster_change` hooks on every
//! node, and `clean` wiping a node back to fresh; a mutable_config.json the original wrote
//! migrating to ours, and the original's platform modules, whose hooks call its Python scripts,
//! running our commands on the nodes (on the real Docker engine; fails in CI without one, skips
//! elsewhere).

use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Plain, count, ip_on, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::{TestEnv, root, text};

#[test]
fn install_and_remove_as_the_original_did_and_destroy_purges_what_it_names() {
    let env = TestEnv::new();
    let plugin = env.write(
        "src/probe/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "platform": {"default": {"hooks": {"after_mesh": {"mark": {"predicate": "true", "command": "true"}}}}}}"#,
    );
    let folder = plugin.parent().unwrap().to_str().unwrap().to_string();
    env.ok(&["install", &folder]);
    assert!(env.modules().join("probe/raptiformica.json").is_file());
    assert_eq!(
        env.ok(&["config", "get", "platform/default/hooks/after_mesh/mark/command"])
            .trim(),
        "true"
    );
    // Removed by what it was installed from, as the original's `install NAME --remove`.
    env.ok(&["install", &folder, "--remove"]);
    assert!(!env.modules().join("probe").exists());
    env.ok(&["install", &folder]);
    env.ok(&["install", "probe", "--remove"]);
    assert!(!env.modules().join("probe").exists());

    // destroy --purge-artifacts --purge-modules: this host's downloads and modules go too.
    // (An artifacts folder of this test's own: the shared one serves every test.)
    env.ok(&["install", &folder]);
    let artifacts = env.dir.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("consul"), "not really consul").unwrap();
    let destroy = |args: &[&str]| {
        env.cmd()
            .env("RAPTIFORMICA_ARTIFACTS_DIR", &artifacts)
            .arg("destroy")
            .args(args)
            .output()
            .unwrap()
    };
    let out = destroy(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(artifacts.join("consul").exists() && env.modules().join("probe").exists());
    let out = destroy(&["--purge-artifacts", "--purge-modules"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!artifacts.exists(), "artifacts left");
    assert!(!env.modules().join("probe").exists(), "modules left");
    assert!(text(&out.stderr).contains("removed"), "{}", text(&out.stderr));
}

#[test]
fn the_originals_short_cache_dir_is_taken_from_home_and_o_json_works_everywhere() {
    let env = TestEnv::new();
    let home = env.dir.path().join("home");
    let cwd = tempfile::tempdir().unwrap();
    let out = env
        .cmd()
        .current_dir(cwd.path())
        .args(["-c", ".old-cache", "config", "set", "a/b", "c"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(home.join(".old-cache/mutable_config.json").is_file(), "not under $HOME");
    assert!(
        std::fs::read_dir(cwd.path()).unwrap().next().is_none(),
        "written in the current directory"
    );
    let out = env
        .cmd()
        .args(["-c", ".old-cache", "-o", "json", "config", "get", "a/b"])
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("-o json prints JSON");
    assert_eq!(value, serde_json::json!("c"), "{}", text(&out.stdout));
}

#[test]
fn package_check_available_names_the_types_that_can_bake_an_image() {
    let env = TestEnv::new();
    let out = env.cmd().args(["package", "--check-available"]).output().unwrap();
    let table = text(&out.stdout);
    assert!(table.contains("COMPUTE TYPE") && table.contains("docker"), "{table}");
    // It only reports: no machine was started, nothing was written for a cluster.
    assert!(!env.cache().join("var/machines").exists());
}

const HOOKS: &str = r#"{"raptiformica_api_version": "0.1",
 "platform": {"default": {"hooks": {
   "after_mesh": {"mark": {"predicate": "true", "command": "touch /tmp/after_mesh.ran"}},
   "after_assimilate": {"mark": {"predicate": "true", "command": "touch \"$RAPTIFORMICA_CACHE_DIR/after_assimilate.ran\""}},
   "cluster_change": {"count": {"predicate": "true", "command": "echo x >> /tmp/cluster_change.count"}}}}}}"#;

/// How often `cluster_change` ran on node `id`.
fn changes(id: &str) -> usize {
    sh(id, "cat /tmp/cluster_change.count 2>/dev/null | wc -l")
        .parse()
        .unwrap_or(0)
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn no_after_mesh_and_no_after_assimilate_skip_their_hooks_on_every_node() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let plugin = env.write("src/probe/raptiformica.json", HOOKS);
    env.ok(&["install", plugin.parent().unwrap().to_str().unwrap()]);
    env.ok(&[
        "spawn",
        "--compute-type",
        "docker",
        "--count",
        "3",
        "--no-after-mesh",
        "--no-after-assimilate",
    ]);
    assert!(wait_until(Duration::from_secs(60), || count(&env, "alive", None) == 3).is_some());
    let nodes = running_nodes(&env);
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        assert_eq!(
            sh(n, "test -e /tmp/after_mesh.ran && echo ran"),
            "",
            "after_mesh ran on {n}"
        );
    }
    let marker = env.cache().join("after_assimilate.ran");
    assert!(!marker.exists(), "after_assimilate ran despite --no-after-assimilate");

    // The original's trigger: a notify_cluster_change event runs cluster_change on every node.
    std::thread::sleep(Duration::from_secs(5));
    let before: Vec<usize> = nodes.iter().map(|n| changes(n)).collect();
    let out = crate::cluster::docker(&[
        "exec",
        &nodes[0],
        "raptiformica",
        "event",
        "fire",
        "notify_cluster_change",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let everywhere = wait_until(Duration::from_secs(30), || {
        nodes.iter().zip(&before).all(|(n, b)| changes(n) > *b)
    });
    assert!(
        everywhere.is_some(),
        "cluster_change did not run on every node: before {before:?}"
    );

    // Without the flags the same hooks run: slaving one node again fires both.
    let out = crate::cluster::docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &nodes[2],
    ]);
    let ip = text(&out.stdout).trim().to_string();
    env.ok(&["slave", &ip]);
    assert_eq!(sh(&nodes[2], "test -e /tmp/after_mesh.ran && echo ran"), "ran");
    assert!(marker.exists(), "after_assimilate did not run");

    // `clean` on a node wipes it back to fresh: its daemons stop, it leaves (the others see it
    // `left`, not `failed`), what slaving installed goes; `slave` makes it a node again.
    let name = sh(
        &nodes[2],
        "sed -n 's/.*\"node_name\": *\"\\([^\"]*\\)\".*/\\1/p' /root/.raptiformica.d/mesh/consul.json",
    );
    assert!(!name.is_empty());
    let out = crate::cluster::docker(&["exec", &nodes[2], "raptiformica", "clean"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(
        said.contains("consul left the cluster") && said.contains("removed /usr/etc/raptiformica"),
        "{said}"
    );
    let stopped = wait_until(Duration::from_secs(20), || {
        sh(
            &nodes[2],
            "pidof consul yggdrasil; pgrep -f '[r]aptiformica (agent|.*keeper)'",
        )
        .is_empty()
    });
    assert!(stopped.is_some(), "still running: {}", sh(&nodes[2], "ps -eo args"));
    assert_eq!(
        sh(
            &nodes[2],
            "ls -d /usr/etc/raptiformica /root/.raptiformica.d /usr/local/bin/consul 2>/dev/null"
        ),
        ""
    );
    let left = wait_until(Duration::from_secs(20), || {
        let out = crate::cluster::docker(&["exec", &nodes[0], "raptiformica", "--json", "members"]);
        let members: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        members
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["node"] == name.as_str() && m["status"] == "left"))
    });
    assert!(left.is_some(), "{name} is not `left` on the others");
    env.ok(&["slave", &ip]);
    // Its new consul takes the name the old one left (consul lets a left name be taken by a
    // new node once the old one is reaped from the catalog): up to a few minutes on a busy
    // machine.
    let back = wait_until(Duration::from_secs(240), || count(&env, "alive", None) == 3);
    assert!(
        back.is_some(),
        "the cleaned node is not alive again: {:?}\n{}",
        crate::cluster::members(&env),
        sh(
            &nodes[2],
            "tail -n 20 /root/.raptiformica.d/mesh/consul.log; tail -n 10 /root/.raptiformica.d/mesh/agent.log"
        )
    );
    eprintln!("the cleaned node alive again after {back:?}");
}

/// A `mutable_config.json` as the original wrote it for a cluster of its own (sorted keys,
/// indent 4): every value of its module files, its cjdns secret, its consul password, and one
/// neighbour at `host` keyed by its cjdns public key.
fn the_originals_cache(host: &str, consul_password: &str) -> String {
    let mut m = serde_json::Map::new();
    let tree = root().join("tests/fixtures/compat/original");
    for f in crate::config::walk(&tree) {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        crate::config::flatten("raptiformica", &doc, &mut m);
    }
    m.remove("raptiformica/raptiformica_api_version");
    let pk = "2dl8qlsbz2sz1bhr8mj4tkbhlmgh4zzjjl3t3r7ryk1n56fyzm10.k";
    let n = format!("raptiformica/meshnet/neighbours/{pk}");
    for (k, v) in [
        (
            "raptiformica/meshnet/cjdns/password".to_string(),
            "5a5e1fe2b2b94f0c8e5f0a7b1c2d3e4f",
        ),
        ("raptiformica/meshnet/consul/password".to_string(), consul_password),
        (format!("{n}/host"), host),
        (format!("{n}/ssh_port"), "22"),
        (format!("{n}/uuid"), "0e3d3c4e5a7b4c2d9f1e2a3b4c5d6e7f"),
        (format!("{n}/cjdns_port"), "4863"),
        (format!("{n}/cjdns_public_key"), pk),
        (
            format!("{n}/cjdns_ipv6_address"),
            "fc2a:2c86:8d3b:43e4:6e4f:1a40:d06c:2b5d",
        ),
    ] {
        m.insert(k, Value::from(v));
    }
    let sorted: std::collections::BTreeMap<String, Value> = m.into_iter().collect();
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    serde::Serialize::serialize(&sorted, &mut serde_json::Serializer::with_formatter(&mut out, fmt)).unwrap();
    String::from_utf8(out).unwrap()
}

/// The user of the original brings their `~/.raptiformica.d`: its mutable_config.json (cjdns
/// neighbours, the original's commands) and its platform modules. The cache is migrated once
/// (a copy kept), its neighbour is slaved as ours and two spawned machines join it; the
/// original's consul password is the cluster's gossip key, and on every node the original's
/// `cluster_change` hooks run our commands without a failure.
#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn an_original_cache_and_platform_modules_migrate_and_form_a_cluster() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    // The user's key, which the original's machines authorise.
    std::fs::create_dir_all(env.cache()).unwrap();
    let key = env.cache().join("id_ed25519");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut plain = Plain::default();
    let old = plain.run(&env, "raptiformica");
    let ip = ip_on(&old, "raptiformica");
    // The original's consul password: a uuid4's hex, 24 bytes as base64, a key consul takes.
    let password = "8c0e8f1a2b3c4d5e6f708192a3b4c5d6";
    let original = the_originals_cache(&ip, password);
    std::fs::write(env.cache_file(), &original).unwrap();
    crate::config::copy_dir(
        &root().join("tests/fixtures/compat/original/platform"),
        &env.modules().join("original-platform"),
    );

    let out = env.run(&["config", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert_eq!(
        said.matches("was written by the original raptiformica").count(),
        1,
        "{said}"
    );
    assert!(
        said.contains("1 neighbour(s) carried over") && said.contains("cjdns"),
        "{said}"
    );
    for module in ["consensus.json", "garbage_collection.json"] {
        assert_eq!(said.matches(module).count(), 1, "one notice naming {module}: {said}");
    }
    let copy = env.cache().join("mutable_config.json.original");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        original,
        "the copy is the file as it was"
    );
    let m: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!m.keys().any(|k| k.contains("cjdns")), "{m:?}");
    assert!(
        !m.values().any(|v| v
            .as_str()
            .is_some_and(|c| c.contains(".py") || c.contains("modules/compute/"))),
        "a command of the original is left"
    );
    let neighbours: Vec<(&String, &Value)> = m
        .iter()
        .filter(|(k, _)| k.starts_with("raptiformica/meshnet/neighbours/"))
        .collect();
    let fields: Vec<&str> = neighbours.iter().map(|(k, _)| k.rsplit('/').next().unwrap()).collect();
    assert_eq!(fields, ["host", "ssh_port", "uuid"], "{neighbours:?}");
    assert_eq!(neighbours[0].1, &Value::from(ip.as_str()));
    let again = env.run(&["config"]);
    assert!(
        !text(&again.stderr).contains("was written by the original"),
        "migrated twice: {}",
        text(&again.stderr)
    );

    // The original's machine becomes a node of ours; two new ones join it.
    env.ok(&["slave", &ip]);
    env.ok(&["spawn", "--compute-type", "docker", "--count", "2"]);
    assert!(wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some());
    let m = env.mapping();
    let ids: std::collections::BTreeSet<&str> = m
        .keys()
        .filter_map(|k| k.strip_prefix("raptiformica/meshnet/neighbours/"))
        .filter_map(|k| k.split('/').next())
        .collect();
    assert_eq!(ids.len(), 3, "the carried-over entry became the slaved node's: {ids:?}");
    let mut nodes = running_nodes(&env);
    nodes.push(old.clone());
    for n in &nodes {
        assert_eq!(
            sh(
                n,
                &format!("grep -c '\"encrypt\": *\"{password}\"' /root/.raptiformica.d/mesh/consul.json")
            ),
            "1",
            "consul's gossip key on {n}"
        );
        let out = crate::cluster::docker(&["exec", n, "raptiformica", "hook", "cluster_change"]);
        let said = text(&out.stderr);
        assert!(out.status.success() && said.contains(" 0 failed"), "on {n}: {said}");
        assert!(
            said.contains("consensus.json") && said.contains("prune"),
            "the module's notice on {n}: {said}"
        );
        assert_eq!(
            sh(
                n,
                "grep -c 'raptiformica_[a-z_]*\\.py: ' /root/.raptiformica.d/mesh/agent.log"
            ),
            "0",
            "a script of the original ran on {n}"
        );
    }
}
