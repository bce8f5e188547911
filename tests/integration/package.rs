//! `package` on the real Docker engine (issue 9): the packaged image is made with its labels
//! and without the packaging machine's identity or secrets, nothing of the run is left, spawns
//! from it upload only the config and skip provisioning with identities of their own, and
//! `spawn --no-package` starts from the base image. The image gets a name of this test's own
//! (RAPTIFORMICA_DOCKER_PACKAGED_REPO), so a user's packaged image is neither used nor removed.

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
    assert_eq!(std::fs::read_dir(&machines).map_or(0, |d| d.count()), 0);
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
        ["artifacts", "var", "provisioned", "complete"],
        "{listing}{}",
        text(&out.stderr)
    );

    // Spawns from it: the packaged image, only the config uploaded, provisioning skipped,
    // each with a host key of its own.
    let (out, log) = ok(&["--json", "spawn", "--compute-type", "docker", "--no-assimilate", "--count", "2"]);
    assert_eq!(log.matches("upload: 1 of ").count(), 2, "{log}");
    assert_eq!(log.matches("already provisioned").count(), 2, "{log}");
    let started: Value = serde_json::from_str(&out).unwrap();
    let container = |id: &str| {
        std::fs::read_to_string(machines.join(id).join("container_id"))
            .unwrap()
            .trim()
            .to_string()
    };
    let mut keys = Vec::new();
    for s in started.as_array().unwrap() {
        let cid = container(s["id"].as_str().unwrap());
        assert_eq!(inspect(&cid, "{{.Config.Image}}"), image.0);
        keys.push(sh(&cid, "cat /etc/ssh/ssh_host_ed25519_key.pub"));
    }
    assert!(keys[0].starts_with("ssh-ed25519 ") && keys[0] != keys[1], "{keys:?}");
    let commands_log = std::fs::read_to_string(machines.join(started[0]["id"].as_str().unwrap()).join("commands.log"));
    assert!(
        commands_log.unwrap_or_default().contains(&format!("using packaged image {}", image.0)),
        "the back-end does not say which image it used"
    );

    // --no-package: the base image, provisioned from scratch.
    let (out, log) = ok(&["--json", "spawn", "--compute-type", "docker", "--no-assimilate", "--no-package"]);
    let started: Value = serde_json::from_str(&out).unwrap();
    let cid = container(started[0]["id"].as_str().unwrap());
    assert_eq!(inspect(&cid, "{{.Config.Image}}"), BASE_IMAGE);
    assert!(
        log.contains("provision headless/raptiformica:") && !log.contains("already provisioned"),
        "{log}"
    );
}
