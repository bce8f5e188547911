//! The workstations that drive a cluster, in its shared config: `raptiformica/workstations/
//! <name>/ssh_key` (and `host`, `attached_at`). Every node's agent authorizes each listed key
//! for its login (root, and the sudo user a node was slaved as) in a block of its
//! `authorized_keys` it manages alone, so a second workstation (`attach`) reaches every node,
//! also those that join later. Writing a key there takes the cluster's token (root on a node, a
//! workstation), and the key is written as `type base64` only: no `command=` or other option.
//! Unsetting a workstation's entry revokes its key everywhere.
//!
//! A workstation's name is made once per cache dir (`<cache-dir>/workstation`:
//! `<hostname>-<6 hex>`): two cache dirs on one host are two workstations, and the machines
//! each spawns record it as their holder (`held_by`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::Mapping;
use crate::config::known;
use crate::sys::paths::Paths;

/// Where the workstations live in the shared config.
pub const WORKSTATIONS: &str = "raptiformica/workstations";
/// The file holding this cache dir's workstation name.
const NAME_FILE: &str = "workstation";
/// The lines around the block of `authorized_keys` the agent manages.
const BEGIN: &str = "# raptiformica workstations: begin (written by the agent from the shared config; do not edit)";
const END: &str = "# raptiformica workstations: end";

/// The shared config's key of workstation `name`'s `field`.
pub fn key(name: &str, field: &str) -> String {
    format!("{WORKSTATIONS}/{name}/{field}")
}

/// This cache dir's workstation name, made once (`<hostname>-<6 hex>`).
pub fn own_name(paths: &Paths) -> anyhow::Result<String> {
    let file = paths.cache_dir.join(NAME_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let name = text.trim();
        known::check_label(name).map_err(|e| anyhow::anyhow!("`{}`: {e}", file.display()))?;
        return Ok(name.to_string());
    }
    let host: String = host_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let name = format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    crate::sys::fs_atomic::write_atomic_creating(&file, format!("{name}\n").as_bytes())
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(name)
}

/// This machine's host name (`unknown` when it is none a label may hold).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| known::check_label(h).is_ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The registered workstations' keys, `(name, "type base64")`, sorted by name; an entry whose
/// name or key fails its check is left out with a warning.
pub fn keys(mapping: &Mapping) -> Vec<(String, String)> {
    let below = format!("{WORKSTATIONS}/");
    let mut out = Vec::new();
    for (k, v) in mapping.range(below.clone()..) {
        let Some(rest) = k.strip_prefix(&below) else { break };
        let Some((name, "ssh_key")) = rest.split_once('/') else {
            continue;
        };
        match known::check(k, v) {
            Ok(()) => out.push((name.to_string(), v.as_str().unwrap_or_default().to_string())),
            Err(e) => known::warn_once(format!("ignoring a workstation's key: {e}")),
        }
    }
    out
}

/// The block of `authorized_keys` for `keys`.
pub fn block(keys: &[(String, String)]) -> String {
    let mut text = format!("{BEGIN}\n");
    for (name, key) in keys {
        text.push_str(&format!("{key} raptiformica-workstation:{name}\n"));
    }
    text.push_str(END);
    text.push('\n');
    text
}

/// `existing` with its managed block replaced by `block` (added at the end when it has none;
/// taken out when `keys` is empty). Lines outside the block are kept as they are.
pub fn with_block(existing: &str, keys: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in existing.lines() {
        if line == BEGIN {
            inside = true;
        } else if line == END && inside {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !keys.is_empty() {
        out.push_str(&block(keys));
    }
    out
}

/// A login's `authorized_keys` and its owner (uid, gid), from `/etc/passwd`.
pub fn authorized_keys_of(user: &str) -> Option<(PathBuf, u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[0] == user).then(|| {
            let uid = f[2].parse().ok()?;
            let gid = f[3].parse().ok()?;
            Some((Path::new(f[5]).join(".ssh/authorized_keys"), uid, gid))
        })?
    })
}

/// Writes `keys` into the managed block of `file` (owned by `uid:gid`, 0600, in a 0700
/// `.ssh`), replacing the file whole; nothing is written when the block is as it should be.
/// Returns whether it changed.
pub fn apply(file: &Path, uid: u32, gid: u32, keys: &[(String, String)]) -> anyhow::Result<bool> {
    let existing = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", file.display())),
    };
    if keys.is_empty() && !existing.lines().any(|l| l == BEGIN) {
        return Ok(false);
    }
    let next = with_block(&existing, keys);
    if next == existing {
        return Ok(false);
    }
    write_authorized_keys(file, Some((uid, gid)), &next)?;
    Ok(true)
}

/// Writes `text` as the `authorized_keys` `file`, replacing it whole (0600, as sshd wants it),
/// owned by `owner` (uid, gid) when given, else by whoever runs this. Its folder is made (0700,
/// the same owner) when missing; one that exists is the user's and left as it is, and nothing
/// here follows a link a user could have put in its place (this runs as root).
pub fn write_authorized_keys(file: &Path, owner: Option<(u32, u32)>, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{PermissionsExt, lchown};
    let dir = file.parent().context("authorized_keys has no folder")?;
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        if let Some((uid, gid)) = owner {
            lchown(dir, Some(uid), Some(gid)).with_context(|| format!("cannot chown `{}`", dir.display()))?;
        }
    }
    // Written whole and renamed into place: the file is ours, whatever stood at its path.
    crate::sys::fs_atomic::write_atomic(file, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        lchown(file, Some(uid), Some(gid)).with_context(|| format!("cannot chown `{}`", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOne";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITwo";

    #[test]
    fn only_checked_keys_are_listed() {
        let mut m = Mapping::new();
        m.insert(key("a-1", "ssh_key"), json!(K1));
        m.insert(key("a-1", "host"), json!("a"));
        m.insert(key("b", "ssh_key"), json!(format!("command=\"id\" {K2}")));
        m.insert(key("c", "ssh_key"), json!(format!("{K2}\n{K1}")));
        m.insert(key("d", "ssh_key"), json!(K2));
        m.insert("raptiformica/x".into(), json!(K2));
        assert_eq!(
            keys(&m),
            vec![("a-1".to_string(), K1.to_string()), ("d".to_string(), K2.to_string())]
        );
    }

    #[test]
    fn the_block_is_replaced_and_the_rest_kept() {
        let own = "ssh-ed25519 AAAAOwnKey user@laptop\n";
        let one = vec![("a".to_string(), K1.to_string())];
        let first = with_block(own, &one);
        assert!(first.starts_with(own) && first.contains(&format!("{K1} raptiformica-workstation:a\n")));
        let two = vec![("a".to_string(), K1.to_string()), ("b".to_string(), K2.to_string())];
        let second = with_block(&first, &two);
        assert_eq!(second.matches(BEGIN).count(), 1);
        assert!(second.starts_with(own) && second.contains(K2));
        assert_eq!(with_block(&second, &two), second, "stable");
        assert_eq!(with_block(&second, &[]), own, "revoked: the block goes, the rest stays");
    }

    #[test]
    fn applied_privately_and_only_on_a_change() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("home/.ssh/authorized_keys");
        let me = std::fs::metadata(d.path()).unwrap();
        let one = vec![("a".to_string(), K1.to_string())];
        assert!(apply(&file, me.uid(), me.gid(), &one).unwrap());
        assert!(!apply(&file, me.uid(), me.gid(), &one).unwrap());
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir = std::fs::metadata(file.parent().unwrap()).unwrap();
        assert_eq!(dir.permissions().mode() & 0o777, 0o700);
        assert!(apply(&file, me.uid(), me.gid(), &[]).unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
    }

    #[test]
    fn a_name_is_made_once_per_cache_dir() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(d.path().to_path_buf()), None, None);
        let name = own_name(&paths).unwrap();
        assert_eq!(own_name(&paths).unwrap(), name);
        assert!(known::check_label(&name).is_ok());
        let other = tempfile::tempdir().unwrap();
        assert_ne!(
            own_name(&Paths::resolve(Some(other.path().to_path_buf()), None, None)).unwrap(),
            name
        );
    }
}
