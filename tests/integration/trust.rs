//! Trust boundaries through the real binary, no cluster needed: data that ends up on an `ssh`
//! command line is refused where it is written and ignored where it is read, `ssh --info-only`
//! prints a line a shell reads back word for word, and an empty cache dir path is refused.

use std::process::Command;

use crate::harness::{TestEnv, text};

#[test]
fn bad_neighbour_data_is_refused_at_config_set_naming_the_key() {
    let env = TestEnv::new();
    let before = std::fs::read(env.cache_file()).ok();
    for (key, value) in [
        ("meshnet/neighbours/bogus/host", "127.0.0.1 -oProxyCommand=touch /tmp/x"),
        ("meshnet/neighbours/bogus/host", "-oProxyCommand=x"),
        ("meshnet/neighbours/bogus/ssh_port", "abc"),
        ("meshnet/neighbours/bogus/ssh_port", "70000"),
        ("meshnet/neighbours/bogus/ssh_via", "jump:22 -oProxyCommand=x"),
        ("meshnet/yggdrasil/port", "0"),
        ("agent/ui_listen", "0.0.0.0:8420"),
    ] {
        let err = env.fails(&["config", "set", key, "--", value]);
        assert!(
            err.contains(&format!("raptiformica/{key}")) && err.contains("refused"),
            "{key}={value}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(env.cache_file()).ok(),
        before,
        "a refused value changed the cache"
    );
    env.ok(&["config", "set", "meshnet/neighbours/good/host", "10.0.0.7"]);
    env.ok(&["config", "set", "meshnet/neighbours/good/ssh_port", "2222"]);
    env.ok(&["config", "set", "agent/ui_listen", "127.0.0.1:8420"]);
}

#[test]
fn ssh_info_only_is_safe_in_a_shell_even_for_a_host_written_behind_the_clis_back() {
    let env = TestEnv::new();
    env.ok(&["config", "set", "test/seed", "1"]);
    let marker = env.cache().join("proxy-command-ran");
    // Written into the cache directly, as a node could write it into consul's KV.
    let mut m: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&std::fs::read(env.cache_file()).unwrap()).unwrap();
    m.insert(
        "raptiformica/meshnet/neighbours/evil/host".into(),
        format!("127.0.0.1 -oProxyCommand='touch {}'", marker.display()).into(),
    );
    m.insert("raptiformica/meshnet/neighbours/evil/ssh_port".into(), "22".into());
    m.insert("raptiformica/meshnet/neighbours/fine/host".into(), "10.9.8.7".into());
    m.insert("raptiformica/meshnet/neighbours/fine/ssh_port".into(), "2222".into());
    std::fs::write(env.cache_file(), serde_json::to_vec(&m).unwrap()).unwrap();

    let out = env.run(&["ssh", "evil", "--info-only"]);
    let line = text(&out.stdout);
    if !line.trim().is_empty() {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("{} true", line.trim()))
            .output();
    }
    assert!(
        !marker.exists(),
        "`ssh evil --info-only` ran a command through the shell: {line}"
    );
    assert!(
        !out.status.success(),
        "a neighbour with a bad host was reachable: {line}"
    );
    assert!(
        text(&out.stderr).contains("neighbour evil is ignored"),
        "{}",
        text(&out.stderr)
    );

    // A good neighbour's line reads back as the words ssh gets, the options before the host.
    let line = env.ok(&["ssh", "fine", "--info-only"]);
    let words = shlex::split(line.trim()).expect("the line is shell words");
    assert_eq!(words[0], "ssh");
    let at = words
        .iter()
        .position(|w| w == "root@10.9.8.7")
        .expect("the destination");
    assert_eq!(at, words.len() - 1, "{words:?}");
    assert!(words.windows(2).any(|w| w == ["-p", "2222"]), "{words:?}");
}

#[test]
fn an_empty_cache_dir_path_is_refused_and_nothing_is_written() {
    let env = TestEnv::new();
    let cwd = tempfile::tempdir().unwrap();
    for (flag, envvar) in [(Some(""), None), (None, Some(""))] {
        let mut cmd = env.cmd();
        cmd.current_dir(cwd.path()).env("HOME", cwd.path());
        if let Some(v) = envvar {
            cmd.env("RAPTIFORMICA_CACHE_DIR", v);
        }
        if let Some(v) = flag {
            cmd.args(["--cache-dir", v]);
        }
        let out = cmd.args(["config", "set", "a/b", "c"]).output().unwrap();
        assert!(!out.status.success(), "an empty cache dir path was accepted");
        assert!(
            text(&out.stderr).contains("cache dir path is empty"),
            "{}",
            text(&out.stderr)
        );
        let left: Vec<_> = std::fs::read_dir(cwd.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "it wrote into the current directory: {left:?}");
    }
}
