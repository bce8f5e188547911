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
