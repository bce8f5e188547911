//! One agent per machine: the agent holds an exclusive lock on `agent.lock` (beside its other
//! files) for as long as it runs, with its pid in it. A second `raptiformica agent` started
//! meanwhile (by hand, by a keeper that lost track, by systemd) exits at once, naming the
//! first one's pid: two agents would apply the same state machine entries at the same time and
//! act on the cluster twice. The lock goes with the process, however it ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

/// The held lock; dropped when the agent ends.
#[derive(Debug)]
pub struct Only {
    _file: File,
}

/// Takes the machine's agent lock in `dir`, or fails naming the agent that holds it.
pub fn take(dir: &Path) -> anyhow::Result<Only> {
    std::fs::create_dir_all(dir)?;
    let path = lock_path(dir);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open the agent's lock `{}`: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            anyhow::bail!(
                "an agent already runs on this machine (pid {}; it holds `{}`): one agent per machine. \
                 `raptiformica agent --status` tells what it does; stop it first to start another",
                pid.trim(),
                path.display()
            );
        }
        Err(TryLockError::Error(e)) => anyhow::bail!("cannot lock `{}`: {e}", path.display()),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(Only { _file: file })
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join("agent.lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_agent_is_refused_with_the_first_ones_pid_and_may_start_once_it_ended() {
        let d = tempfile::tempdir().unwrap();
        let first = take(d.path()).unwrap();
        let err = take(d.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())) && err.contains("agent.lock"),
            "{err}"
        );
        drop(first);
        take(d.path()).expect("free again once the first ended");
    }
}
