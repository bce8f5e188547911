//! The compute back-end contract, driven by a test module whose commands are real shell
//! commands on this host (the docker back-end has its own end-to-end tests).

use crate::harness::{TestEnv, text};

/// A compute type `local/headless` whose instances are marker files in `<tmp>/instances`.
fn local_module(env: &TestEnv, start: &str) {
    local_module_on(env, start, 2222);
}

fn local_module_on(env: &TestEnv, start: &str, port: u16) {
    let state = env.dir.path().join("instances");
    std::fs::create_dir_all(&state).unwrap();
    let s = state.display();
    env.module(
        "local/raptiformica.toml",
        &format!(
            r#"raptiformica_api_version = "0.1"
[compute.local.headless]
available = "true"
start_instance = '''{start}'''
get_hostname = "echo 127.0.0.1"
get_port = "echo {port}"
detect_stale_instance = 'test -f "{s}/$(basename "$PWD")"'
clean_up_instance_command = 'rm -f "{s}/$(basename "$PWD")"; echo cleaned >> "{s}/cleanups"'
[compute.never.headless]
available = "false"
start_instance = "true"
[platform.default.hooks.after_start_instance.mark]
command = 'echo "$RAPTIFORMICA_CACHE_DIR" >> "{s}/hook-fired"'
"#
        ),
    );
}

#[test]
fn check_available_lists_each_type() {
    let env = TestEnv::new();
    local_module(&env, "true");
    let out = env.ok(&["spawn", "--check-available"]);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_string()
    };
    assert!(line("local ").ends_with("yes"), "{out}");
    assert!(line("never ").ends_with("no"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["--json", "spawn", "--check-available"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|r| r["compute_type"] == "local" && r["available"] == true)
    );
}

#[test]
fn start_runs_in_its_own_directory_and_destroy_removes_it() {
    let env = TestEnv::new();
    local_module(
        &env,
        r#"echo starting; touch "../../../../../../instances/$(basename "$PWD")""#,
    );
    // The instance dir is <cache>/var/machines/local/headless/<id>; the marker is made relative
    // to it, so the command provably ran there.
    let out = env.ok(&[
        "--json",
        "spawn",
        "--compute-type",
        "local",
        "--count",
        "2",
        "--no-slave",
    ]);
    let started: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<String> = started
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let dir = env.cache().join("var/machines/local/headless").join(id);
        assert!(dir.join("instance.json").is_file());
        assert!(
            std::fs::read_to_string(dir.join("commands.log"))
                .unwrap()
                .contains("starting")
        );
        assert!(
            env.dir.path().join("instances").join(id).is_file(),
            "start_instance did not run in the instance dir"
        );
    }
    assert_eq!(started[0]["host"], "127.0.0.1");
    assert_eq!(started[0]["port"], 2222);
    // The pins of removed machines are forgotten: their addresses will serve other machines.
    std::fs::write(
        env.cache().join("known_hosts"),
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIosr1su6g4xUpiCRSSlzeDyWB4QtUbp/9NRskv7qTQi\n",
    )
    .unwrap();
    let fired = std::fs::read_to_string(env.dir.path().join("instances/hook-fired")).unwrap();
    assert_eq!(fired.lines().count(), 2, "after_start_instance fires once per instance");
    // prune keeps live instances and removes the one that is gone
    std::fs::remove_file(env.dir.path().join("instances").join(&ids[0])).unwrap();
    env.ok(&["prune"]);
    assert!(!env.cache().join("var/machines/local/headless").join(&ids[0]).exists());
    assert!(env.cache().join("var/machines/local/headless").join(&ids[1]).exists());
    env.ok(&["destroy"]);
    assert!(!env.cache().join("var/machines/local/headless").join(&ids[1]).exists());
    assert!(!env.dir.path().join("instances").join(&ids[1]).exists());
    assert!(
        !std::fs::read_to_string(env.cache().join("known_hosts"))
            .unwrap()
            .contains("[127.0.0.1]:2222")
    );
    let err = text(&env.run(&["destroy"]).stderr);
    assert!(err.contains("no instances"), "{err}");
}

#[test]
fn failed_start_quotes_the_output_and_leaves_nothing_behind() {
    let env = TestEnv::new();
    local_module(&env, "echo pulling image; echo 'no space left on device' >&2; exit 7");
    let err = env.fails(&["spawn", "--compute-type", "local", "--no-slave"]);
    assert!(err.contains("start_instance of `local/headless`"), "{err}");
    assert!(
        err.contains("exited with status 7") && err.contains("no space left on device"),
        "{err}"
    );
    assert_cleaned_up_once(&env);
}

#[test]
fn unknown_or_unavailable_types_are_named() {
    let env = TestEnv::new();
    local_module(&env, "true");
    let err = env.fails(&["spawn", "--compute-type", "nope"]);
    assert!(
        err.contains("no compute type `nope`") && err.contains("local/headless"),
        "{err}"
    );
    let err = env.fails(&["spawn", "--compute-type", "never"]);
    assert!(err.contains("not available"), "{err}");
    let err = env.fails(&["spawn", "--server-type", "nope"]);
    assert!(err.contains("no server type `nope`"), "{err}");
}

#[test]
fn an_instance_that_cannot_be_slaved_is_cleaned_up() {
    let env = TestEnv::new();
    // Nothing listens on port 1 of loopback: the slave's connect step is refused.
    local_module_on(&env, r#"touch "../../../../../../instances/$(basename "$PWD")""#, 1);
    let err = env.fails(&["spawn", "--compute-type", "local", "--ssh-wait", "1"]);
    assert!(
        err.contains("at step `connect`") && err.contains("127.0.0.1:1") && err.contains("refused"),
        "{err}"
    );
    assert_cleaned_up_once(&env);
}

#[test]
fn slave_of_a_closed_port_names_the_step() {
    let env = TestEnv::new();
    let err = env.fails(&["slave", "127.0.0.1", "--port", "1", "--no-assimilate"]);
    assert!(
        err.contains("slaving 127.0.0.1:1 failed at step `connect`") && err.contains("Connection refused"),
        "{err}"
    );
}

/// The failed instance's clean-up ran exactly once and its directory is gone.
fn assert_cleaned_up_once(env: &TestEnv) {
    let machines = env.cache().join("var/machines/local/headless");
    assert_eq!(
        std::fs::read_dir(&machines).unwrap().count(),
        0,
        "instance dir left behind"
    );
    let cleanups = std::fs::read_to_string(env.dir.path().join("instances/cleanups")).unwrap();
    assert_eq!(cleanups.lines().count(), 1, "clean-up ran once");
}

/// The Debian mirror both images are built from is read off this host's apt sources (deb822
/// and one-line formats), skipping the security archive and other vendors' repositories.
#[test]
fn the_image_builders_read_the_mirror_from_apt_sources() {
    let env = TestEnv::new();
    let apt = env.dir.path().join("apt");
    std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
    let mirror = |apt: &std::path::Path| {
        let out = std::process::Command::new("sh")
            .arg(crate::harness::root().join("compute/docker/ensure_image.sh"))
            .arg("--print-mirror")
            .env("APT_SOURCES_DIR", apt)
            .env_remove("RAPTIFORMICA_DEBIAN_MIRROR")
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout).trim().to_string())
    };
    std::fs::write(
        apt.join("sources.list.d/debian.sources"),
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
         Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )
    .unwrap();
    std::fs::write(
        apt.join("sources.list.d/other.list"),
        "deb [signed-by=/usr/share/keyrings/vendor.gpg] http://vendor.example/apt bookworm main\n",
    )
    .unwrap();
    assert_eq!(mirror(&apt), (true, "http://mirror.example/debian".to_string()));
    // The one-line format only.
    std::fs::remove_file(apt.join("sources.list.d/debian.sources")).unwrap();
    std::fs::write(
        apt.join("sources.list"),
        "# deb http://old.example/debian bookworm main\ndeb http://line.example/debian bookworm main contrib\n",
    )
    .unwrap();
    assert_eq!(mirror(&apt), (true, "http://line.example/debian".to_string()));
    // None at all: a clear failure, not an empty mirror.
    std::fs::remove_file(apt.join("sources.list")).unwrap();
    assert_eq!(mirror(&apt), (false, String::new()));
}
