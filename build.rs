//! Marks the build `no_docker` when no Docker engine answers (and CI is not set), so that the
//! end-to-end tests that need one show as ignored, not as passed. In CI (`CI=true`) they always
//! run, and fail without an engine. Likewise `no_vagrant` when vagrant is not installed.

#![allow(clippy::disallowed_methods)] // the build script asks docker and vagrant directly

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(no_docker)");
    println!("cargo::rustc-check-cfg=cfg(no_vagrant)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=DOCKER_HOST");
    // The engine's socket changes when the engine (re)starts; a missing one re-runs this.
    println!("cargo::rerun-if-changed=/var/run/docker.sock");
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ci && !engine {
        println!("cargo::rustc-cfg=no_docker");
    }
    // The vagrant back-end's test also needs vagrant and libvirt (compute/vagrant/setup.sh).
    println!("cargo::rerun-if-changed=/usr/bin/vagrant");
    let vagrant = Command::new("vagrant")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ci && (!engine || !vagrant) {
        println!("cargo::rustc-cfg=no_vagrant");
    }
    // The web map's browser test also needs Debian's chromium.
    println!("cargo::rustc-check-cfg=cfg(no_browser)");
    println!("cargo::rerun-if-changed=/usr/bin/chromium");
    let browser = Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ci && (!engine || !browser) {
        println!("cargo::rustc-cfg=no_browser");
    }
}
