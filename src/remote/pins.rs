//! The pinned host keys (`<cache-dir>/known_hosts`): a contact's new pins kept only once it
//! succeeded, keys forgotten, all under the file's lock.

use std::path::Path;

use anyhow::Context as _;

use super::ssh::Identity;
use crate::sys::process::Shell;

/// A private copy of `known_hosts` (empty when there is none) for a contact whose new pins
/// are kept only if it succeeds.
pub(super) fn trial_pins(known_hosts: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let trial = tempfile::Builder::new()
        .prefix("raptiformica-known_hosts.")
        .tempfile()
        .context("cannot make a temporary known_hosts file")?;
    match std::fs::read(known_hosts) {
        Ok(pins) => {
            std::fs::write(trial.path(), pins).with_context(|| format!("cannot copy `{}`", known_hosts.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", known_hosts.display())),
    }
    Ok(trial)
}

/// Appends to `known_hosts` the lines of `trial` it does not have yet (the pins a successful
/// contact recorded).
pub(super) fn keep_new_pins(trial: &Path, known_hosts: &Path) -> anyhow::Result<()> {
    let learned = std::fs::read_to_string(trial).with_context(|| format!("cannot read `{}`", trial.display()))?;
    if let Some(dir) = known_hosts.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    }
    with_lock(known_hosts, || {
        let pinned = std::fs::read_to_string(known_hosts).unwrap_or_default();
        let mut new = String::new();
        for line in learned.lines().filter(|l| !l.trim().is_empty()) {
            if !pinned.lines().any(|p| p == line) {
                new.push_str(line);
                new.push('\n');
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        if !pinned.is_empty() && !pinned.ends_with('\n') {
            new.insert(0, '\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(known_hosts)
            .with_context(|| format!("cannot write `{}`", known_hosts.display()))?;
        std::io::Write::write_all(&mut file, new.as_bytes())
            .with_context(|| format!("cannot write `{}`", known_hosts.display()))
    })
}

/// Forgets the pinned key(s) of `host:port` in `known_hosts`.
pub fn forget(known_hosts: &Path, host: &str, port: u16) -> anyhow::Result<()> {
    with_lock(known_hosts, || forget_unlocked(known_hosts, host, port))
}

pub(super) fn forget_unlocked(known_hosts: &Path, host: &str, port: u16) -> anyhow::Result<()> {
    if !known_hosts.exists() {
        return Ok(());
    }
    Shell::new(
        "forgetting a host key",
        "ssh-keygen -q -R \"$NAME\" -f \"$FILE\" >/dev/null 2>&1; rm -f \"$FILE.old\"",
    )
    .env("NAME", Identity::pin_name(host, port))
    .env("FILE", known_hosts.display().to_string())
    .run()?;
    Ok(())
}

/// Runs `f` holding the exclusive lock of `known_hosts` (`<file>.lock`): concurrent spawns
/// pin and forget keys without losing each other's lines.
pub(super) fn with_lock<T>(known_hosts: &Path, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut name = known_hosts.as_os_str().to_owned();
    name.push(".lock");
    let lock =
        std::fs::File::create(&name).with_context(|| format!("cannot create `{}`", Path::new(&name).display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock `{}`", Path::new(&name).display()))?;
    f()
}
