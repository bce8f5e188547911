//! `package` on the real Docker engine (issue 9): the packaged image is made with its labels
//! and without the packaging machine's identity or secrets, nothing of the run is left, spawns
//! from it upload only the config and the token and skip provisioning with identities of their own, and
//! `spawn --no-package` starts from the base image. The image gets a name of this test's own
//! (RAPTIFORMICA_DOCKER_PACKAGED_REPO), so a user's packaged image is neither used nor removed.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::cluster::{docker, sh};
use crate::docker::DockerTest;
use crate::harness::text;

/// The docker back-end reads the packaged images' repository from this variable.
const REPO_VAR: &str = "RAPTIFORMICA_DOCKER_PACKAGED_REPO";
const BASE_IMAGE: &str = "raptiformica-base:bookworm";

/// Removes the test's packaged image when dropped (declared before the `DockerTest`, so the
/// machines started from it are destroyed first).
struct PackagedImage(String);

impl Drop for PackagedImage {
    fn drop(&mut self) {
        let _ = docker(&["image", "rm", "-f", &self.0]);
    }
}

fn inspect(object: &str, format: &str) -> String {
    let out = docker(&["inspect", "--format", format, object]);
    assert!(out.status.success(), "docker inspect {object}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

/// The instance directories below `machines`.
fn instance_dirs(machines: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(machines)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The container of an instance directory.
fn container(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("container_id"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
#[cfg_attr(no_docker, ignore = "needs a Docker engine; none answered when the tests were built")]
fn docker_package_then_spawn_from_it() {
    let repo = format!("raptiformica-packaged-test-{}", std::process::id());
    let image = PackagedImage(format!("{repo}:headless"));
    let Some(env) = DockerTest::start() else {
        return;
    };
    let run = |args: &[&str]| -> Output { env.cmd().env(REPO_VAR, &repo).args(args).output().unwrap() };
    let ok = |args: &[&str]| -> (String, String) {
        let out = run(args);
        assert!(
            out.status.success(),
            "`raptiformica {}` failed:\n{}",
            args.join(" "),
            text(&out.stderr)
        );
        (text(&out.stdout), text(&out.stderr))
    };

    let (made, log) = ok(&["package", "--compute-type", "docker"]);
    assert_eq!(made.trim(), image.0, "{log}");
    assert!(log.contains("provision headless/raptiformica:"), "{log}");

    // Labelled, made from the current base, without the packaging machine's key in its env.
    let labels: Value = serde_json::from_str(&inspect(&image.0, "{{json .Config.Labels}}")).unwrap();
    assert_eq!(labels["raptiformica.packaged"], "1", "{labels}");
    assert_eq!(labels["raptiformica.server_type"], "headless", "{labels}");
    assert_eq!(
        labels["raptiformica.entrypoint"].as_str().unwrap(),
        inspect(BASE_IMAGE, "{{index .Config.Labels \"raptiformica.entrypoint\"}}")
    );
    let image_env = inspect(&image.0, "{{json .Config.Env}}");
    assert!(!image_env.contains("ssh-ed25519"), "{image_env}");

    // Nothing of the packaging run is left: no instance dir, no container of this env.
    let machines = env.cache().join("var/machines/docker/headless");
    assert_eq!(instance_dirs(&machines).len(), 0);
    let instances = docker(&["ps", "-a", "--format", "{{.Label \"raptiformica.instance\"}}"]);
    let cache = env.cache().display().to_string();
    assert!(
        !text(&instances.stdout).lines().any(|l| l.starts_with(&cache)),
        "a container of the packaging run is left"
    );

    // The identity and the secrets are gone, the uploaded files and the record kept.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        &image.0,
        "-c",
        "c=/root/.raptiformica.d; ls /etc/ssh/ssh_host_* 2>/dev/null; \
         ls -A /root/.ssh 2>/dev/null; ls -A $c; ls -A $c/var; \
         test -x $c/artifacts/raptiformica && test -s $c/artifacts/consul && \
         test -s $c/var/provisioned/headless/raptiformica && echo complete",
    ]);
    let listing = text(&out.stdout);
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["artifacts", "var", "provisioned", "uploaded.manifest", "complete"],
        "{listing}{}",
        text(&out.stderr)
    );

    // Spawns from it: the packaged image, only the config uploaded, provisioning skipped,
    // each with a host key of its own.
    // (Progress lines go to stderr, but not under --json.)
    let (_, log) = ok(&["spawn", "--compute-type", "docker", "--no-assimilate", "--count", "2"]);
    // Only the config and the ACL token (a secret the image does not keep) go up.
    assert_eq!(log.matches("upload: 2 of ").count(), 2, "{log}");
    assert_eq!(log.matches("already provisioned").count(), 2, "{log}");
    let instances = instance_dirs(&machines);
    assert_eq!(instances.len(), 2);
    let mut keys = Vec::new();
    for dir in &instances {
        let cid = container(dir);
        assert_eq!(inspect(&cid, "{{.Config.Image}}"), image.0);
        keys.push(sh(&cid, "cat /etc/ssh/ssh_host_ed25519_key.pub"));
        let commands_log = std::fs::read_to_string(dir.join("commands.log")).unwrap();
        assert!(
            commands_log.contains(&format!("using packaged image {}", image.0)),
            "the back-end does not say which image it used:\n{commands_log}"
        );
    }
    assert!(keys[0].starts_with("ssh-ed25519 ") && keys[0] != keys[1], "{keys:?}");

    // --no-package: the base image, provisioned from scratch.
    let (_, log) = ok(&["spawn", "--compute-type", "docker", "--no-assimilate", "--no-package"]);
    let new: Vec<_> = instance_dirs(&machines)
        .into_iter()
        .filter(|d| !instances.contains(d))
        .collect();
    let cid = container(&new[0]);
    assert_eq!(inspect(&cid, "{{.Config.Image}}"), BASE_IMAGE);
    assert!(
        log.contains("provision headless/raptiformica:") && !log.contains("already provisioned"),
        "{log}"
    );
    // From nothing but the upload: no artifact shared from this host.
    assert_eq!(
        sh(&cid, "test -f /root/.raptiformica.d/artifacts/consul && ! test -L /root/.raptiformica.d/artifacts/consul && echo file").trim(),
        "file"
    );
    assert_eq!(
        inspect(&cid, "{{index .Config.Labels \"raptiformica.shared_artifacts\"}}"),
        ""
    );
}
