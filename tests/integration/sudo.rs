//! `slave user@host --sudo`: a machine that refuses root logins is slaved as a sudo user and
//! becomes an alive member; its entry records the user, so later contacts log in the same way;
//! a user without sudo is told so, naming the user and the host (on the real Docker engine;
//! fails in CI without one, skips elsewhere).

use std::time::Duration;

use crate::cluster::{Plain, count, docker, ip_on, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::text;

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_machine_without_root_login_is_slaved_as_a_sudo_user() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--count", "2"]);
    let mut plain = Plain::default();
    let p = plain.run(&env, "raptiformica");
    // sudo from Debian's mirror (the one the image was built from), a sudo user and one
    // without sudo, both with our key; root may no longer log in.
    let setup = sh(
        &p,
        "(timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq sudo) \
         >/tmp/apt.log 2>&1 || { tail -n 5 /tmp/apt.log; exit 1; }; \
         for u in ops nosudo; do useradd -m -s /bin/sh $u && mkdir -p /home/$u/.ssh && \
           cp /root/.ssh/authorized_keys /home/$u/.ssh/ && chown -R $u /home/$u/.ssh && chmod 700 /home/$u/.ssh; done && \
         echo 'ops ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/ops && chmod 440 /etc/sudoers.d/ops && \
         rm /root/.ssh/authorized_keys && echo 'PermitRootLogin no' >>/etc/ssh/sshd_config && \
         kill -HUP $(pidof sshd | tr ' ' '\\n' | sort -n | head -n 1) && echo set-up",
    );
    assert!(setup.ends_with("set-up"), "the test's set-up failed: {setup}");
    let ip = ip_on(&p, "raptiformica");

    let err = env.fails(&["slave", &format!("ops@{ip}")]);
    assert!(err.contains("--sudo"), "{err}");
    let err = env.fails(&["slave", &format!("nosudo@{ip}"), "--sudo"]);
    assert!(err.contains(&format!("nosudo@{ip}")) && err.contains("sudo"), "{err}");
    let err = env.fails(&["slave", &ip]);
    assert!(err.contains("refused"), "root got in: {err}");

    env.ok(&["slave", &format!("ops@{ip}"), "--sudo"]);
    assert!(
        wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some(),
        "{:?}",
        crate::cluster::members(&env)
    );
    // What runs as root there runs as root; the entry records the user for later contacts.
    assert_eq!(sh(&p, "stat -c %U /root/.raptiformica.d/mesh/consul.json"), "root");
    let m = env.mapping();
    let users: Vec<&str> = m
        .iter()
        .filter(|(k, _)| k.ends_with("/ssh_user"))
        .filter_map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(users, ["ops"], "{m:?}");
    // Slaving it again works the same way (root still cannot log in).
    let out = env.run(&["slave", &format!("ops@{ip}"), "--sudo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A user whose sudo wants a password: told to give it; a wrong one is refused; the right
    // one, asked once (here on stdin), gives it sudo without a password there, which later
    // contacts use. The password is nowhere in this host's files.
    let password = "pw-7f3a9c-secret";
    let setup = sh(
        &p,
        &format!(
            "useradd -m -s /bin/sh pw && echo 'pw:{password}' | chpasswd && mkdir -p /home/pw/.ssh && \
             cp /home/ops/.ssh/authorized_keys /home/pw/.ssh/ && chown -R pw /home/pw/.ssh && chmod 700 /home/pw/.ssh && \
             echo 'pw ALL=(ALL) ALL' >/etc/sudoers.d/pw && chmod 440 /etc/sudoers.d/pw && echo set-up"
        ),
    );
    assert!(setup.ends_with("set-up"), "the test's set-up failed: {setup}");
    let err = env.fails(&["slave", &format!("pw@{ip}"), "--sudo"]);
    assert!(err.contains("--ask-sudo-password"), "{err}");
    let with_stdin = |line: &str| {
        let file = env.write("password.txt", &format!("{line}\n"));
        let mut cmd = env.cmd();
        cmd.args(["slave", &format!("pw@{ip}"), "--sudo", "--ask-sudo-password"])
            .stdin(std::fs::File::open(&file).unwrap());
        // Not `bounded`: it gives the command no stdin.
        let out = cmd.output().expect("the binary runs");
        std::fs::remove_file(&file).unwrap();
        out
    };
    let out = with_stdin("not-the-password");
    assert!(!out.status.success(), "a wrong password was taken");
    assert!(
        text(&out.stderr).contains("did not take the password"),
        "{}",
        text(&out.stderr)
    );
    let out = with_stdin(password);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        sh(&p, "cat /etc/sudoers.d/raptiformica-pw"),
        "pw ALL=(ALL) NOPASSWD:ALL"
    );
    assert!(
        wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some(),
        "{:?}",
        crate::cluster::members(&env)
    );
    let leaked = std::process::Command::new("grep")
        .args(["-rIl", password])
        .arg(env.dir.path())
        .output()
        .unwrap();
    assert!(
        text(&leaked.stdout).trim().is_empty(),
        "the password is in {}",
        text(&leaked.stdout)
    );
    // Later contacts log in as pw with sudo -n.
    let out = env.run(&["slave", &format!("pw@{ip}"), "--sudo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // join with sudo users on both sides: a new machine that refuses root logins asks the
    // member (reached as pw, through sudo) to slave it as its own sudo user.
    let q = plain.run(&env, "raptiformica");
    let setup = sh(
        &q,
        "(timeout 300 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq sudo) \
         >/tmp/apt.log 2>&1 || { tail -n 5 /tmp/apt.log; exit 1; }; \
         useradd -m -s /bin/sh ops && echo 'ops ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/ops && chmod 440 /etc/sudoers.d/ops && \
         rm -f /root/.ssh/authorized_keys && echo 'PermitRootLogin no' >>/etc/ssh/sshd_config && \
         kill -HUP $(pidof sshd | tr ' ' '\\n' | sort -n | head -n 1) && \
         ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519 && echo set-up",
    );
    assert!(setup.ends_with("set-up"), "the test's set-up failed: {setup}");
    let to = format!("{q}:/usr/local/bin/raptiformica");
    assert!(
        docker(&["cp", crate::harness::bin().to_str().unwrap(), &to])
            .status
            .success()
    );
    let q_key = sh(&q, "cat /root/.ssh/id_ed25519.pub");
    assert_eq!(
        sh(
            &p,
            &format!("echo '{q_key}' >> /home/pw/.ssh/authorized_keys && echo ok")
        ),
        "ok"
    );
    let out = docker(&[
        "exec",
        &q,
        "raptiformica",
        "join",
        &format!("pw@{ip}"),
        "--sudo",
        "--user",
        "ops",
    ]);
    assert!(out.status.success(), "join failed: {}", text(&out.stderr));
    assert!(
        wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 4).is_some(),
        "{:?}",
        crate::cluster::members(&env)
    );
    let entries = sh(
        &p,
        "raptiformica --json config get raptiformica/meshnet/neighbours 2>/dev/null",
    );
    assert!(
        entries.contains("\"ops\""),
        "the joined machine's login is not recorded: {entries}"
    );
}
