//! `clean` on a node: back to a machine that was never slaved (the original's `clean`).
//!
//! In this order, so that nothing brings back what went before it: the agent's keeper and
//! the agent (or its systemd unit), then consul, which leaves the cluster first (the others
//! see it `left`, not `failed`, and a server leaves raft, so the quorum shrinks with it
//! instead of waiting for it), then yggdrasil; then what slaving installed: the module
//! folders under `/usr/etc/raptiformica`, the links in `/usr/local/bin`, a sudo user's drop-in
//! `/etc/sudoers.d/raptiformica-<user>` (`slave --ask-sudo-password`), and the cache dir
//! with the node's state (overlay keys, consul's data, the cached config, the token, the
//! artifacts). `slave` from a workstation brings the machine back as a new node of the same
//! id (the id comes from its SSH host key, which stays).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::context::Context;
use crate::config::shared::mesh_dir;
use crate::consensus::agent::ConsulAgent;
use crate::consensus::api::{ConsulApi, LOCAL_HTTP};
use crate::mesh::yggdrasil::Yggdrasil;
use crate::remote::on_node::{LINKED, REMOTE_BIN};
use crate::sys::paths::INSTALL_PREFIX;

/// How long consul may take to leave before it is stopped anyway.
const LEAVE_WAIT: Duration = Duration::from_secs(20);

/// Stops the node's daemons and removes what slaving installed; says what it did, a line each.
pub async fn wipe(ctx: &Context) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let paths = &ctx.paths;
    if super::service::systemd_runs() && super::service::remove()? {
        done.push(format!(
            "stopped and removed the agent's systemd unit {}",
            super::service::UNIT
        ));
    }
    if super::keeper::stop(paths) {
        done.push("stopped the agent and its keeper".to_string());
    }
    let dir = mesh_dir(paths);
    let consul = ConsulAgent::new(&dir);
    if consul.pid().is_some() {
        let token = crate::consensus::acl::read_token(paths);
        // A server's leave takes raft's removal of it and the gossip's spreading: seconds.
        let left = match ConsulApi::new(LOCAL_HTTP, LEAVE_WAIT) {
            Ok(api) => api.leave(token.as_deref()).await,
            Err(e) => Err(e),
        };
        match left {
            Ok(()) => done.push("consul left the cluster (the others see it `left`)".to_string()),
            Err(e) => done.push(format!(
                "consul could not leave ({e:#}): the others will see it failed and evict it"
            )),
        }
        consul.stop(LEAVE_WAIT);
        done.push("stopped consul".to_string());
    }
    let ygg = Yggdrasil::new(&dir, crate::mesh::plan::DEFAULT_PORT);
    if ygg.daemon().stop(Duration::from_secs(5)) {
        done.push("stopped yggdrasil".to_string());
    }
    if remove_dir(Path::new(INSTALL_PREFIX))? {
        done.push(format!("removed {INSTALL_PREFIX}"));
    }
    let links = remove_links(Path::new(REMOTE_BIN), &paths.cache_dir)?;
    if !links.is_empty() {
        done.push(format!("removed the links {} in {REMOTE_BIN}", links.join(", ")));
    }
    // A sudo user's passwordless sudo that `slave --ask-sudo-password` gave it.
    for dropin in sudo_drop_ins(Path::new("/etc/sudoers.d")) {
        std::fs::remove_file(&dropin).map_err(|e| anyhow::anyhow!("cannot remove `{}`: {e}", dropin.display()))?;
        done.push(format!("removed {}", dropin.display()));
    }
    if remove_dir(&paths.cache_dir)? {
        done.push(format!(
            "removed {} (the node's keys, consul's data, the cached config, the artifacts)",
            paths.cache_dir.display()
        ));
    }
    Ok(done)
}

/// The sudoers drop-ins of ours in `dir` (see `remote::sudo`).
fn sudo_drop_ins(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("raptiformica-"))
        .map(|e| e.path())
        .collect()
}

/// Removes the links in `bin` that slaving made, those that lead into `cache`.
fn remove_links(bin: &Path, cache: &Path) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in LINKED {
        let link = bin.join(name);
        let Ok(target) = std::fs::read_link(&link) else {
            continue;
        };
        if target.starts_with(cache) {
            std::fs::remove_file(&link).map_err(|e| anyhow::anyhow!("cannot remove `{}`: {e}", link.display()))?;
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

/// Removes `dir` and everything in it; false when it did not exist.
pub fn remove_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot remove `{}`: {e}", PathBuf::from(dir).display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_links_into_the_cache_go() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, cache) = (dir.path().join("bin"), dir.path().join("cache"));
        std::fs::create_dir_all(cache.join("artifacts")).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(cache.join("artifacts/consul"), bin.join("consul")).unwrap();
        std::os::unix::fs::symlink("/opt/other/yggdrasil", bin.join("yggdrasil")).unwrap();
        std::fs::write(bin.join("raptiformica"), "a file, not ours to remove").unwrap();
        assert_eq!(remove_links(&bin, &cache).unwrap(), ["consul"]);
        assert!(bin.join("yggdrasil").symlink_metadata().is_ok());
        assert!(bin.join("raptiformica").is_file());
        assert!(!remove_dir(&dir.path().join("nothing")).unwrap());
        assert!(remove_dir(&cache).unwrap() && !cache.exists());
    }
}
