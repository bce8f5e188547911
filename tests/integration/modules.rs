//! `modules install|uninstall|list`, the types they add to `--help`, `clean --modules`, and
//! (on docker) a module's server type and hook on a real node.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::docker::DockerTest;
use crate::harness::{TestEnv, root, text};

const HEADLESS_BOOTSTRAP: &str = "raptiformica/server/headless/raptiformica/bootstrap";

/// A module folder outside the cache: a server type `acceptworker` and, when `overrides`, a
/// new value for the built-in headless bootstrap.
fn worker_module(env: &TestEnv, name: &str, overrides: bool) -> PathBuf {
    let mut doc = serde_json::json!({
        "raptiformica_api_version": "0.1",
        "server": {"acceptworker": {"acceptprov": {"bootstrap": "touch /tmp/acceptworker-provisioned"}}}
    });
    if overrides {
        doc["server"]["headless"] = serde_json::json!({"raptiformica": {"bootstrap": "echo overridden"}});
    }
    let file = env.write(&format!("src/{name}/raptiformica.json"), &doc.to_string());
    file.parent().unwrap().to_path_buf()
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn install_list_help_and_uninstall_restore_the_builtin_value() {
    let env = TestEnv::new();
    let builtin = env.mapping()[HEADLESS_BOOTSTRAP].clone();
    assert!(!env.ok(&["slave", "--help"]).contains("acceptworker"));
    let src = worker_module(&env, "mymod", true);

    env.ok(&["modules", "install", arg(&src)]);
    let m = env.mapping();
    assert_eq!(m[HEADLESS_BOOTSTRAP], "echo overridden");
    assert!(m.contains_key("raptiformica/server/acceptworker/acceptprov/bootstrap"));
    // The keys are in the shared layer (the cache a slave uploads), not only the module layer.
    let cached = std::fs::read_to_string(env.cache_file()).unwrap();
    assert!(cached.contains("acceptworker") && cached.contains("echo overridden"));
    assert!(env.modules().join("mymod/raptiformica.json").is_file());

    let table = env.ok(&["modules", "list"]);
    let row = table.lines().find(|l| l.starts_with("mymod")).expect(&table);
    assert!(row.contains(arg(&src)) && row.contains("acceptworker"), "{table}");
    let listed: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "modules", "list"])).unwrap();
    assert_eq!(listed[0]["name"], "mymod");
    assert_eq!(
        listed[0]["server_types"],
        serde_json::json!(["acceptworker", "headless"])
    );
    for sub in ["slave", "spawn", "deploy"] {
        assert!(env.ok(&[sub, "--help"]).contains("acceptworker"), "{sub} --help");
    }
    assert!(env.ok(&["help", "spawn"]).contains("acceptworker"));
    // Installing again replaces it, and nothing is left beside it.
    env.ok(&["modules", "install", arg(&src)]);
    assert_eq!(visible_and_hidden(&env.modules()), vec![".lock", "mymod"]);

    let err = env.fails(&["modules", "uninstall", "nosuch"]);
    assert!(
        err.contains("no module `nosuch`") && err.contains("installed: mymod"),
        "{err}"
    );
    env.ok(&["modules", "uninstall", "mymod"]);
    let m = env.mapping();
    assert_eq!(m[HEADLESS_BOOTSTRAP], builtin, "the built-in value is back");
    assert!(!m.keys().any(|k| k.contains("acceptworker")));
    assert!(!env.modules().join("mymod").exists());
    assert!(!env.ok(&["slave", "--help"]).contains("acceptworker"));
    assert!(env.ok(&["modules", "list"]).is_empty());
}

#[test]
fn uninstall_keeps_a_key_changed_after_the_install() {
    let env = TestEnv::new();
    let src = worker_module(&env, "mymod", false);
    env.ok(&["modules", "install", arg(&src)]);
    env.ok(&["config", "set", "server/acceptworker/acceptprov/bootstrap", "mine"]);
    let out = env.run(&["modules", "uninstall", "mymod"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("kept `raptiformica/server/acceptworker/acceptprov/bootstrap`"));
    assert_eq!(
        env.mapping()["raptiformica/server/acceptworker/acceptprov/bootstrap"],
        "mine"
    );
}

#[test]
fn the_original_plugin_format_installs_unchanged() {
    let env = TestEnv::new();
    let kodi = root().join("tests/fixtures/compat/notify-kodi");
    env.ok(&["modules", "install", arg(&kodi)]);
    let original = std::fs::read(kodi.join("raptiformica.json")).unwrap();
    let installed = std::fs::read(env.modules().join("notify-kodi/raptiformica.json")).unwrap();
    assert_eq!(original, installed);
    let m = env.mapping();
    assert!(
        m.contains_key("raptiformica/platform/default/hooks/after_mesh/notify_kodi_on_meshnet_join/command"),
        "{m:?}"
    );
    let listed: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "modules", "list"])).unwrap();
    assert_eq!(listed[0]["hooks"], 5);
}

#[test]
fn a_malformed_or_empty_module_is_refused_and_leaves_nothing() {
    let env = TestEnv::new();
    let good = worker_module(&env, "good", false);
    env.ok(&["modules", "install", arg(&good)]);
    let cache_before = std::fs::read(env.cache_file()).unwrap();
    let before = visible_and_hidden(&env.modules());

    env.write("src/bad/ok.json", r#"{"raptiformica_api_version": "0.1", "a": 1}"#);
    env.write(
        "src/bad/sub/broken.json",
        "{\"raptiformica_api_version\": \"0.1\",\n  \"server\": {\n}}}",
    );
    let bad = env.dir.path().join("src/bad");
    let err = env.fails(&["modules", "install", arg(&bad)]);
    assert!(
        err.contains(&format!("{}/sub/broken.json", bad.display())) && err.contains("line 3"),
        "{err}"
    );
    env.write("src/empty/package.json", r#"{"name": "not a module"}"#);
    let err = env.fails(&["modules", "install", arg(&env.dir.path().join("src/empty"))]);
    assert!(err.contains("no module file"), "{err}");
    let err = env.fails(&["modules", "install", "./no/such/thing"]);
    assert!(err.contains("user/repo"), "{err}");

    assert_eq!(visible_and_hidden(&env.modules()), before, "nothing left in modules/");
    assert_eq!(std::fs::read(env.cache_file()).unwrap(), cache_before);
}

#[test]
fn installs_from_a_git_url() {
    let env = TestEnv::new();
    let src = worker_module(&env, "work", false);
    let bare = env.dir.path().join("repos/gitmod.git");
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    };
    git(&src, &["init", "-q"]);
    git(&src, &["add", "."]);
    git(&src, &["commit", "-qm", "module"]);
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(&src, &["clone", "-q", "--bare", ".", arg(&bare)]);

    let url = format!("file://{}", bare.display());
    env.ok(&["modules", "install", &url]);
    assert!(env.modules().join("gitmod/raptiformica.json").is_file());
    let listed: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "modules", "list"])).unwrap();
    assert_eq!(listed[0]["source"], url.as_str());
    let err = env.fails(&["modules", "install", "file:///nonexistent/repo.git"]);
    assert!(
        err.contains("cannot clone") && err.contains("file:///nonexistent/repo.git"),
        "{err}"
    );
    assert_eq!(visible_and_hidden(&env.modules()), vec![".lock", "gitmod"]);
}

#[test]
fn clean_modules_and_artifacts() {
    let env = TestEnv::new();
    let src = worker_module(&env, "mymod", false);
    env.ok(&["modules", "install", arg(&src)]);
    let artifacts = env.dir.path().join("own-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("consul"), "x").unwrap();
    let out = env
        .cmd()
        .args(["clean", "--modules", "--artifacts", "--artifacts-dir", arg(&artifacts)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stderr);
    assert!(said.contains("1 module(s): mymod"), "{said}");
    assert!(!env.modules().exists() && !artifacts.exists() && !env.cache_file().exists());
    assert!(!env.ok(&["slave", "--help"]).contains("acceptworker"));
}

#[test]
fn ssh_to_an_unknown_machine_and_dot_dot_keys_are_refused() {
    let env = TestEnv::new();
    let err = env.fails(&["ssh", "nosuch-machine", "--", "true"]);
    assert!(
        err.contains("no instance or known node matches `nosuch-machine`"),
        "{err}"
    );
    let err = env.fails(&["config", "set", "a/../b", "1"]);
    assert!(err.contains("`..` segment"), "{err}");
}

/// The names in `dir`, hidden ones included, sorted.
fn visible_and_hidden(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn docker_a_module_server_type_provisions_and_its_hook_fires() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let module = serde_json::json!({
        "raptiformica_api_version": "0.1",
        "server": {"acceptworker": {
            "acceptprov": {"bootstrap": "touch /tmp/acceptworker-provisioned"},
            // The headless provisioning too, so that the machine still becomes a node.
            "raptiformica": {"bootstrap": "sh \"$RAPTIFORMICA_INSTALL_DIR/provisioning/headless/bootstrap.sh\""}
        }},
        "platform": {"default": {"hooks": {"after_mesh": {"acceptmodule_mark": {
            "predicate": "/bin/true", "command": "touch /tmp/acceptmodule-after-mesh"
        }}}}}
    });
    let src = env.write("src/acceptmodule/raptiformica.json", &module.to_string());
    env.ok(&["modules", "install", arg(src.parent().unwrap())]);

    let out = env.ok(&["--json", "spawn", "--compute-type", "docker", "--no-slave"]);
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (id, host) = (
        started[0]["id"].as_str().unwrap().to_string(),
        started[0]["host"].as_str().unwrap().to_string(),
    );
    let port = started[0]["port"].as_u64().unwrap_or(22).to_string();
    env.ok(&["slave", &host, "--port", &port, "--server-type", "acceptworker"]);
    let on_node = env.ok(&[
        "ssh",
        &id,
        "--",
        "ls",
        "/tmp/acceptworker-provisioned",
        "/tmp/acceptmodule-after-mesh",
        "/root/.raptiformica.d/modules/acceptmodule/raptiformica.json",
    ]);
    assert_eq!(on_node.lines().count(), 3, "{on_node}");

    // This host is not a node but knows one: a module installed now reaches the cluster
    // through it, and so does its removal.
    let src = env.write(
        "src/pushed/raptiformica.json",
        r#"{"raptiformica_api_version": "0.1", "extra": {"pushed": "yes"}}"#,
    );
    let out = env.run(&["modules", "install", arg(src.parent().unwrap())]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("through node"), "{}", text(&out.stderr));
    let get = ["ssh", &id, "--", "raptiformica", "config", "get", "extra/pushed"];
    assert!(env.ok(&get).contains("yes"));
    env.ok(&["modules", "uninstall", "pushed"]);
    env.fails(&get);
}
