//! Where things live: the cache dir of this user and the install dir of the built-in modules.

use std::path::{Path, PathBuf};

/// The install prefix on slaved machines, as in the original project.
pub const INSTALL_PREFIX: &str = "/usr/etc/raptiformica";

/// The folders of an install dir that hold built-in modules, in load order: ours
/// (`compute/`, `provisioning/`, `modules/`) and those of the original's module tree
/// (`compute/`, `server/`, `platform/`), so `--install-dir` may name either.
pub const BUILTIN_FOLDERS: [&str; 5] = ["compute", "server", "platform", "provisioning", "modules"];

/// Resolved locations for one run.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `~/.raptiformica.d` unless `--cache-dir`/`RAPTIFORMICA_CACHE_DIR` says otherwise.
    pub cache_dir: PathBuf,
    /// The folder holding `compute/`, `provisioning/` and `modules/`; `None` when no built-in
    /// modules could be found.
    pub install_dir: Option<PathBuf>,
    /// Where the node binaries are kept (`<cache>/artifacts` unless set).
    pub artifacts_dir: PathBuf,
}

impl Paths {
    /// Resolves the paths from the flags (which clap already filled from the environment).
    pub fn resolve(cache_dir: Option<PathBuf>, install_dir: Option<PathBuf>, home: Option<PathBuf>) -> Self {
        let cache_dir =
            cache_dir.unwrap_or_else(|| home.unwrap_or_else(|| PathBuf::from("/root")).join(".raptiformica.d"));
        let install_dir = install_dir.or_else(|| {
            let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
            find_install_dir(&exe).or_else(|| {
                let prefix = Path::new(INSTALL_PREFIX);
                is_install_dir(prefix).then(|| prefix.to_path_buf())
            })
        });
        let artifacts_dir = cache_dir.join("artifacts");
        Self {
            cache_dir,
            install_dir,
            artifacts_dir,
        }
    }

    /// `<cache>/modules`: user modules, loaded after the built-in ones.
    pub fn user_modules_dir(&self) -> PathBuf {
        self.cache_dir.join("modules")
    }

    /// `<cache>/var/machines`: one directory per instance this host started.
    pub fn machines_dir(&self) -> PathBuf {
        self.cache_dir.join("var").join("machines")
    }

    /// The built-in module folders that exist, in load order.
    pub fn builtin_dirs(&self) -> Vec<PathBuf> {
        let Some(root) = &self.install_dir else {
            return Vec::new();
        };
        BUILTIN_FOLDERS
            .iter()
            .map(|f| root.join(f))
            .filter(|p| p.is_dir())
            .collect()
    }
}

/// An install dir is recognised by its `compute/` and `provisioning/` folders.
fn is_install_dir(dir: &Path) -> bool {
    dir.join("compute").is_dir() && dir.join("provisioning").is_dir()
}

/// The binary's own folder or one of its ancestors (a cargo build lives in
/// `<checkout>/target/release/`), up to three levels up.
fn find_install_dir(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .take(4)
        .find(|d| is_install_dir(d))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_checkout_above_target_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("compute")).unwrap();
        std::fs::create_dir_all(d.path().join("provisioning")).unwrap();
        let exe = d.path().join("target/release/raptiformica");
        assert_eq!(find_install_dir(&exe).as_deref(), Some(d.path()));
        assert_eq!(find_install_dir(Path::new("/nonexistent/a/b/c/d/e")), None);
    }
}
