//! The keeper: a small parent that keeps `raptiformica agent` running on a node.
//!
//! `mesh` starts it (detached, `<cache-dir>/mesh/keeper.pid`); it runs the agent as its child
//! with the agent's output appended to `<cache-dir>/mesh/agent.log`, and starts it again when
//! it exits: after 1 s, backing off to 8 s while it keeps dying within 10 s of its start. Its
//! command line is `raptiformica keeper`, so that it is told apart from the agent it keeps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::sys::paths::Paths;

use super::daemons::{agent, keeper};

/// Starts the keeper (or, where systemd runs, the agent's unit) unless it runs. Says what was
/// started, if anything.
pub fn ensure_running(paths: &Paths) -> anyhow::Result<Option<String>> {
    if super::service::systemd_runs() {
        return Ok(super::service::ensure(paths)?.then(|| format!("started (systemd unit {})", super::service::UNIT)));
    }
    let k = keeper(paths);
    if k.pid().is_some() {
        return Ok(None);
    }
    let exe = std::env::current_exe().context("cannot find this binary to start the agent's keeper")?;
    let args = vec![
        "--cache-dir".to_string(),
        paths.cache_dir.display().to_string(),
        "keeper".to_string(),
    ];
    let pid = k.start(&exe, &args)?;
    Ok(Some(format!("started (keeper pid {pid})")))
}

/// Stops the keeper, then the agent. True if either ran.
pub fn stop(paths: &Paths) -> bool {
    let k = keeper(paths).stop(Duration::from_secs(3));
    let a = agent(paths).stop(Duration::from_secs(5));
    k || a
}

/// The keeper's loop: runs the agent, restarts it when it exits. Never returns normally.
pub fn run(paths: &Paths) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    // Started by hand or at boot, the keeper still tells `mesh` that it runs.
    let k = keeper(paths);
    if let Some(dir) = k.pid_file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::sys::fs_atomic::write_atomic(&k.pid_file, format!("{}\n", std::process::id()).as_bytes())?;
    let a = agent(paths);
    let mut delay = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let status = run_once(&exe, paths, &a.log_file, &a.pid_file);
        let ran = started.elapsed();
        delay = if ran < Duration::from_secs(10) {
            (delay * 2).min(Duration::from_secs(8))
        } else {
            Duration::from_secs(1)
        };
        match status {
            Ok(s) => eprintln!(
                "keeper: the agent exited ({s}) after {:.1}s; starting it again in {}s",
                ran.as_secs_f64(),
                delay.as_secs()
            ),
            Err(e) => eprintln!(
                "keeper: cannot run the agent: {e:#}; trying again in {}s",
                delay.as_secs()
            ),
        }
        std::thread::sleep(delay);
    }
}

fn run_once(exe: &Path, paths: &Paths, log: &PathBuf, pid_file: &Path) -> anyhow::Result<std::process::ExitStatus> {
    // The cache dir goes by the environment, so that the command line reads
    // `raptiformica agent` (what `pgrep -f 'raptiformica agent'` finds).
    let mut child = crate::sys::process::Program::new("raptiformica agent", exe)
        .inherit_env()
        .env("RAPTIFORMICA_CACHE_DIR", paths.cache_dir.display().to_string())
        .args(["agent"])
        .output_to(log)
        .start()
        .context("cannot start `raptiformica agent`")?;
    crate::sys::fs_atomic::write_atomic(pid_file, format!("{}\n", child.id()).as_bytes())?;
    Ok(child.wait()?)
}
