//! What every command is handed: the resolved paths and output choices.

use crate::config::{self, Config};
use crate::sys::paths::Paths;
use crate::sys::process::Shell;

/// The state of one run of the binary.
#[derive(Debug, Clone)]
pub struct Context {
    pub paths: Paths,
    /// `-v` count: 0 quiet, 1 stream command output, 2+ debug logs.
    pub verbose: u8,
    /// Print data as JSON.
    pub json: bool,
    /// The public key(s) new instances authorize for root, once the SSH identity is known.
    pub public_key_file: Option<std::path::PathBuf>,
    /// `spawn --no-package`: compute commands get `RAPTIFORMICA_NO_PACKAGE=1` and start from
    /// the plain base image even when a packaged one exists.
    pub no_package: bool,
    /// `spawn --with-engine`: compute commands get `RAPTIFORMICA_WITH_ENGINE=1` and hand the new
    /// machine a compute engine of its own (see the README: it is root on the engine's host).
    pub with_engine: bool,
    /// The cache was refreshed from consul's KV when this command started ([`config::shared::sync`]).
    pub synced: bool,
}

impl Context {
    /// Loads the effective config (modules and the mutable cache; files only).
    pub fn config(&self) -> anyhow::Result<Config> {
        Ok(if self.synced {
            config::load_synced(&self.paths)?
        } else {
            config::load(&self.paths)?
        })
    }

    /// A shell command run from the install dir, with the `RAPTIFORMICA_*` environment every
    /// module command can rely on, streamed under `-v`.
    pub fn shell(&self, label: impl Into<String>, script: impl Into<String>) -> Shell {
        let mut shell = Shell::new(label, script)
            .env("RAPTIFORMICA_CACHE_DIR", self.paths.cache_dir.display().to_string())
            .echo(self.verbose > 0);
        if let Some(dir) = &self.paths.install_dir {
            shell = shell
                .cwd(dir)
                .env("RAPTIFORMICA_INSTALL_DIR", dir.display().to_string());
        }
        if let Some(key) = &self.public_key_file {
            shell = shell.env("RAPTIFORMICA_PUBLIC_KEY_FILE", key.display().to_string());
        }
        if let Ok(exe) = std::env::current_exe() {
            shell = shell.env("RAPTIFORMICA_BIN", exe.display().to_string());
        }
        shell
    }
}
