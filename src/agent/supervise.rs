//! Supervision: the agent keeps the node's daemons (yggdrasil, consul) running.
//!
//! Each daemon is watched through a pidfd (an exit wakes the agent at once, also for a daemon
//! started by `mesh` or by an earlier agent, which is not our child). An exited daemon is
//! started again with its rendered config at once; one that keeps dying within 30 s of its
//! start is restarted after 1, 2, 4 ... up to 30 s. The end of its log goes into the agent's
//! log. Restarts take the mesh lock, so that they never race a `mesh` run that restarts the
//! daemon itself.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::status::Recorder;
use crate::sys::daemon::{Daemon, process_named};

/// A daemon the agent keeps running.
pub struct Supervised {
    pub name: &'static str,
    pub daemon: Daemon,
    /// The rendered config: while it exists, the daemon must run.
    pub config: PathBuf,
    /// Starts it from its rendered config.
    pub start: Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync>,
}

/// How long a daemon must have run for its next exit to be restarted at once.
const STABLE: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps `s` running until the agent stops. `mesh_lock` is the mesh dir's lock file.
pub async fn supervise(s: Supervised, mesh_lock: PathBuf, rec: Recorder) {
    let mut last_start: Option<Instant> = None;
    let mut backoff = Duration::ZERO;
    loop {
        if !s.config.is_file() {
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        if let Some(pid) = s.daemon.pid() {
            wait_exit(pid, s.name).await;
            reap(pid);
            rec.event(
                "exit",
                format!(
                    "{} (pid {pid}) exited; its log ends with:\n{}",
                    s.name,
                    indent(&s.daemon.log_tail(5))
                ),
            );
        }
        // Backoff only while it keeps dying soon after a start.
        backoff = match last_start {
            Some(t) if t.elapsed() < STABLE => (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF),
            _ => Duration::ZERO,
        };
        if !backoff.is_zero() {
            tracing::warn!("{} keeps exiting: next start in {}s", s.name, backoff.as_secs());
            tokio::time::sleep(backoff).await;
        }
        let (start, daemon, config, lock) = (s.start.clone(), s.daemon.clone(), s.config.clone(), mesh_lock.clone());
        let started = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<i32>> {
            let file = File::create(&lock)?;
            file.lock()?;
            // A `mesh` run may have started it (or removed its config) meanwhile.
            if daemon.pid().is_some() || !config.is_file() {
                return Ok(None);
            }
            start()?;
            Ok(daemon.pid())
        })
        .await;
        last_start = Some(Instant::now());
        match started {
            Ok(Ok(Some(pid))) => rec.event("restart", format!("{} started again (pid {pid})", s.name)),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => rec.event("error", format!("cannot start {}: {e:#}", s.name)),
            Err(e) => rec.event("error", format!("starting {} panicked: {e}", s.name)),
        }
    }
}

/// Waits until `pid` exits: on its pidfd, else (an old kernel) by looking every second.
async fn wait_exit(pid: i32, name: &str) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: a fresh fd that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the OwnedFd is a valid open pidfd, owned by the AsyncFd until it is dropped.
        if let Ok(afd) = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) } {
            let _ = afd.readable().await;
            return;
        }
    }
    while process_named(pid, name) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Collects the exit status of a daemon that was our child (else nothing to do).
fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on one pid with WNOHANG never blocks; ECHILD for a non-child is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::paths::Paths;

    #[tokio::test]
    async fn a_killed_daemon_is_started_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::new("sleep", dir.path());
        let config = dir.path().join("sleep.conf");
        std::fs::write(&config, "").unwrap();
        let d2 = d.clone();
        let start: Arc<dyn Fn() -> anyhow::Result<()> + Send + Sync> =
            Arc::new(move || d2.start(std::path::Path::new("/bin/sleep"), &["60".into()]).map(|_| ()));
        start().unwrap();
        let first = d.pid().unwrap();
        let paths = Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        let rec = Recorder::new(&paths, "node");
        let task = tokio::spawn(supervise(
            Supervised {
                name: "sleep",
                daemon: d.clone(),
                config,
                start,
            },
            dir.path().join("mesh.lock"),
            rec.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        // SAFETY: kill on the pid we started.
        unsafe { libc::kill(first, libc::SIGKILL) };
        let t = Instant::now();
        let second = loop {
            if let Some(p) = d.pid().filter(|p| *p != first) {
                break p;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(t.elapsed() < Duration::from_secs(2), "restart took {:?}", t.elapsed());
        let kinds = || -> Vec<String> { rec.snapshot().events.iter().map(|e| e.kind.clone()).collect() };
        for _ in 0..20 {
            if kinds().contains(&"restart".to_string()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let kinds = kinds();
        assert!(
            kinds.contains(&"exit".to_string()) && kinds.contains(&"restart".to_string()),
            "{kinds:?}"
        );
        task.abort();
        d.stop(Duration::from_secs(1));
        assert!(!process_named(second, "sleep"));
    }
}
