//! The command line itself: help, version, completions, usage errors.

use crate::harness::TestEnv;

#[test]
fn help_explains_every_subcommand() {
    let env = TestEnv::new();
    let top = env.ok(&["--help"]);
    for word in [
        "Decentralized server orchestration",
        "config",
        "spawn",
        "destroy",
        "prune",
        "completions",
        "--cache-dir",
        "--json",
        "layered",
    ] {
        assert!(top.contains(word), "--help lacks {word}:\n{top}");
    }
    for (sub, phrase) in [
        (&["config"][..], "layer it came from"),
        (&["config", "set"], "mutable layer"),
        (&["spawn"], "--check-available"),
        (&["destroy"], "clean_up_instance_command"),
        (&["prune"], "detect_stale_instance"),
        (&["clean"], "corrupt"),
        (&["hook"], "hook"),
        (&["completions"], "bash"),
        (&["join"], "member"),
        (&["deploy"], "via"),
        (&["modules", "install"], "user/repo"),
        (&["package"], "packaged image"),
        (&["advertise"], "NAT"),
        (&["inject"], "neighbour"),
        (&["slave"], "--via"),
        (&["ui"], "raptiformica ui --login-url"),
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let help = env.ok(&args);
        assert!(help.contains(phrase), "`{}` lacks {phrase:?}:\n{help}", args.join(" "));
    }
}

#[test]
fn version_and_completions() {
    let env = TestEnv::new();
    assert!(env.ok(&["--version"]).starts_with("raptiformica "));
    assert!(env.ok(&["completions", "bash"]).contains("complete"));
    assert!(env.ok(&["completions", "zsh"]).contains("#compdef raptiformica"));
}

#[test]
fn usage_errors_exit_2() {
    let env = TestEnv::new();
    let out = env.run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = env.run(&["spawn", "--count", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn advertise_records_the_address_in_the_file_and_the_node_s_entry() {
    let key = std::path::Path::new("/etc/ssh/ssh_host_ed25519_key.pub");
    if !key.is_file() {
        return; // the command needs this machine's host key, as on a node
    }
    let env = TestEnv::new();
    env.ok(&["advertise", "203.0.113.7", "-p", "2222"]);
    let file = std::fs::read_to_string(env.cache().join("advertised.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(
        (v["host"].as_str(), v["port"].as_u64()),
        (Some("203.0.113.7"), Some(2222))
    );
    let m = env.mapping();
    let hosts: Vec<&String> = m
        .iter()
        .filter(|(k, v)| k.ends_with("/host") && k.contains("meshnet/neighbours/") && v.as_str() == Some("203.0.113.7"))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(hosts.len(), 1, "{m:?}");
    let port_key = hosts[0].replace("/host", "/ssh_port");
    assert_eq!(m[&port_key], "2222");
    assert!(env.fails(&["advertise", "not a host"]).contains("not a host name"));
}

#[test]
fn a_user_other_than_root_without_sudo_is_refused_before_anything_is_made() {
    let env = TestEnv::new();
    for args in [
        &["slave", "deploy@192.0.2.7"][..],
        &["join", "deploy@192.0.2.7"],
        &["attach", "deploy@192.0.2.7"],
    ] {
        let err = env.fails(args);
        assert!(
            err.contains("`deploy@192.0.2.7` logs in as deploy: add --sudo"),
            "{args:?}: {err}"
        );
    }
    assert!(
        !env.cache().join("workstation").exists(),
        "attach named no workstation before its check"
    );
}
