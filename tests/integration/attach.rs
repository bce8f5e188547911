//! `attach`: a second workstation (another cache dir) takes up a cluster through one member
//! with the user's own key (an ssh-agent's), gets a key of its own that every node's agent
//! authorizes, then lists the members, sets a key the nodes read and spawns a node that joins,
//! without the user's key; each workstation's `destroy` removes only its own machines (on the
//! real Docker engine; fails in CI without one, skips elsewhere).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::{count, docker, ip_on, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::{TestEnv, bounded, text};

/// The second workstation: its machines are destroyed when the test ends, even on failure.
struct Second(TestEnv);

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.0.run(&["destroy", "--force"]);
    }
}

/// An ssh-agent of the test's own, holding one key; stopped when dropped.
struct Agent {
    child: Child,
    socket: PathBuf,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .args(["-D", "-a"])
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("ssh-agent");
        assert!(
            wait_until(Duration::from_secs(10), || socket.exists()).is_some(),
            "ssh-agent made no socket"
        );
        let added = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap();
        assert!(added.status.success(), "ssh-add: {}", text(&added.stderr));
        Self { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The second public key's base64 part.
fn blob(pub_file: &Path) -> String {
    let text = std::fs::read_to_string(pub_file).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn a_second_workstation_attaches_drives_the_cluster_and_keeps_to_its_own_machines() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    let second = Second(TestEnv::new());
    let w2 = &second.0;
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some());
    let nodes = running_nodes(&env);
    let member = ip_on(&nodes[0], "raptiformica");

    // The cache dir that built the cluster keeps it.
    let err = env.fails(&["attach", &member]);
    assert!(err.contains("a cluster of its own"), "{err}");

    // The user's own key, authorized by hand on every node, held by an ssh-agent.
    let user_key = w2.dir.path().join("userkey");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&user_key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let user_pub = std::fs::read_to_string(user_key.with_extension("pub")).unwrap();
    for n in &nodes {
        let script = format!("echo '{}' >> /root/.ssh/authorized_keys && echo added", user_pub.trim());
        assert_eq!(sh(n, &script), "added");
    }
    // Without it: refused, and nothing of the cluster is taken here.
    let err = w2.fails(&["attach", &member]);
    assert!(err.contains("refused your keys"), "{err}");
    assert!(!w2.cache().join("consul_token").exists());

    let agent = Agent::start(w2.dir.path(), &user_key);
    let mut cmd = w2.cmd();
    cmd.args(["attach", &member]).env("SSH_AUTH_SOCK", &agent.socket);
    let out = bounded(cmd, Duration::from_secs(120), "raptiformica attach");
    assert!(out.status.success(), "attach failed:\n{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("attached as workstation"),
        "{}",
        text(&out.stderr)
    );
    drop(agent);

    // The token private, the gossip key never shown.
    let mode = std::fs::metadata(w2.cache().join("consul_token")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    assert_eq!(
        w2.ok(&["config", "get", "raptiformica/meshnet/consul/password"]).trim(),
        "<secret>"
    );
    // Every node's agent authorized the second workstation's own key, not only the member's.
    let own = blob(&w2.cache().join("id_ed25519.pub"));
    let authorized = |n: &String| sh(n, "cat /root/.ssh/authorized_keys").contains(&own);
    assert!(
        wait_until(Duration::from_secs(30), || nodes.iter().all(authorized)).is_some(),
        "the second workstation's key is not on every node"
    );

    // From here with its own key only: members, a key the nodes read, a spawn that joins.
    assert_eq!(count(w2, "alive", None), 3);
    let stderr = text(
        &w2.run(&["config", "set", "raptiformica/test/from-second", "yes"])
            .stderr,
    );
    assert!(stderr.contains("the cluster has the change"), "{stderr}");
    let read = || {
        sh(
            &nodes[1],
            "raptiformica config get raptiformica/test/from-second 2>/dev/null",
        ) == "yes"
    };
    assert!(
        wait_until(Duration::from_secs(30), read).is_some(),
        "a node does not read the key"
    );
    w2.ok(&["spawn", "--compute-type", "docker"]);
    assert!(
        wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 4).is_some(),
        "{:?}",
        crate::cluster::members(&env)
    );
    let mine = running_nodes(w2);
    assert_eq!(mine.len(), 1);
    let name = std::fs::read_to_string(w2.cache().join("workstation")).unwrap();
    let label = text(
        &docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"raptiformica.workstation\"}}",
            &mine[0],
        ])
        .stdout,
    );
    assert_eq!(label.trim(), name.trim());
    let held = sh(
        &nodes[1],
        "raptiformica --json config get raptiformica/meshnet/neighbours",
    );
    assert!(held.contains(&format!("\"{}\"", name.trim())), "{held}");

    // The first workstation revokes the second's key (an entry it never took): gone everywhere.
    let stderr = text(
        &env.run(&["config", "unset", &format!("raptiformica/workstations/{}", name.trim())])
            .stderr,
    );
    assert!(stderr.contains("the cluster has the change"), "{stderr}");
    assert!(
        wait_until(Duration::from_secs(30), || !nodes.iter().any(authorized)).is_some(),
        "a revoked key is still authorized on a node"
    );

    // The first workstation's destroy keeps the second's machine; the second's removes it.
    let out = env.run(&["destroy"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("kept 1 machine(s) other workstations hold"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        running_nodes(w2),
        mine,
        "the first workstation removed the second's machine"
    );
    w2.ok(&["destroy"]);
    assert!(
        !docker(&["inspect", &mine[0]]).status.success(),
        "the second's machine is left"
    );
}
