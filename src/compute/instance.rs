//! The directory of one instance: `<cache-dir>/var/machines/<compute>/<server>/<uuid>/`.
//!
//! It is where the compute type's commands run (and keep their state, such as a container id),
//! and it holds `commands.log` and `instance.json` (host and port once started). Its name is
//! the instance's id.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The log of every command run for the instance.
pub const LOG_FILE: &str = "commands.log";
/// What we know of the instance.
pub const META_FILE: &str = "instance.json";

/// One instance this host started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub compute: String,
    pub server: String,
    #[serde(skip)]
    pub dir: PathBuf,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The host keys the back-end vouched for (`get_host_key`), pinned before first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_keys: Option<String>,
}

impl Instance {
    /// Makes a fresh directory for a new instance.
    pub fn create(machines_dir: &Path, compute: &str, server: &str) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = machines_dir.join(compute).join(server).join(&id);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the instance directory `{}`", dir.display()))?;
        Ok(Self {
            id,
            compute: compute.into(),
            server: server.into(),
            dir,
            host: None,
            port: None,
            host_keys: None,
        })
    }

    /// Writes `instance.json`.
    pub fn save(&self) -> anyhow::Result<()> {
        let path = self.dir.join(META_FILE);
        let text = serde_json::to_string_pretty(self).expect("serializable");
        std::fs::write(&path, text + "\n").with_context(|| format!("cannot write `{}`", path.display()))
    }

    /// Every instance directory under `machines_dir`, oldest first.
    pub fn list(machines_dir: &Path) -> Vec<Self> {
        let mut found = Vec::new();
        for compute in subdirs(machines_dir) {
            for server in subdirs(&compute) {
                for dir in subdirs(&server) {
                    found.push(Self::load(&compute, &server, dir));
                }
            }
        }
        found.sort_by_key(|i| std::fs::metadata(&i.dir).and_then(|m| m.modified()).ok());
        found
    }

    fn load(compute: &Path, server: &Path, dir: PathBuf) -> Self {
        let name = |p: &Path| p.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let saved: Option<Self> = std::fs::read_to_string(dir.join(META_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let mut instance = saved.unwrap_or_else(|| Self {
            id: name(&dir),
            compute: name(compute),
            server: name(server),
            dir: PathBuf::new(),
            host: None,
            port: None,
            host_keys: None,
        });
        instance.dir = dir;
        instance
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_save_list() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Instance::create(d.path(), "docker", "headless").unwrap();
        a.host = Some("10.0.0.2".into());
        a.port = Some(22);
        a.save().unwrap();
        let b = Instance::create(d.path(), "vagrant", "headless").unwrap();
        let all = Instance::list(d.path());
        assert_eq!(all.len(), 2);
        assert!(all.contains(&a) && all.iter().any(|i| i.id == b.id && i.host.is_none()));
        assert_eq!(a.dir, d.path().join("docker/headless").join(&a.id));
    }
}
