//! The original's command line (issue 28): `install NAME [--remove]`, `destroy --purge-*`,
//! `package --check-available`, and `--no-after-assimilate` / `--no-after-mesh` really skipping
//! their hooks, the `notify_cluster_change` event running the `cluster_change` hooks on every
//! node, and `clean` wiping a node back to fresh (on the real Docker engine; fails in CI
//! without one, skips elsewhere).

use std::time::Duration;

use crate::cluster::{count, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::{TestEnv, text};

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
    let back = wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3);
    assert!(
        back.is_some(),
        "the cleaned node is not alive again: {:?}",
        crate::cluster::members(&env)
    );
}
