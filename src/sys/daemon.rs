//! Long-running node daemons (yggdrasil, consul) without an init system: started detached in
//! their own session, tracked by a pid file, logging to a file, stopped by signal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The Go runtime's number of processors: see [`Daemon::start_go`].
const GO_PROCESSORS: &str = "GOMAXPROCS";

/// One daemon: its name (the process name checked in `/proc`), pid file and log file.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub name: &'static str,
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
}

impl Daemon {
    /// The daemon `name` with its files in `dir`.
    pub fn new(name: &'static str, dir: &Path) -> Self {
        Self::with_stem(name, name, dir)
    }

    /// The process `name` with its pid and log files named after `stem` (two roles of one
    /// program, e.g. the agent and its keeper).
    pub fn with_stem(name: &'static str, stem: &str, dir: &Path) -> Self {
        Self {
            name,
            pid_file: dir.join(format!("{stem}.pid")),
            log_file: dir.join(format!("{stem}.log")),
        }
    }

    /// The pid of the running daemon: the pid file names a live process of that name (not a
    /// zombie, not a recycled pid of another program).
    pub fn pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pid_file).ok()?.trim().parse().ok()?;
        process_named(pid, self.name).then_some(pid)
    }

    /// How long the running daemon has run (since its pid file was written); None when it
    /// does not run.
    pub fn running_for(&self) -> Option<Duration> {
        self.pid()?;
        std::fs::metadata(&self.pid_file).ok()?.modified().ok()?.elapsed().ok()
    }

    /// Starts `program args` detached (own session, stdin closed, output appended to the log)
    /// and records its pid. Fails if it exits within the first moments.
    pub fn start(&self, program: &Path, args: &[String]) -> anyhow::Result<i32> {
        self.start_with(program, args, &[])
    }

    /// [`Daemon::start`] for a program written in Go (consul, yggdrasil): its runtime gets one
    /// processor (`GOMAXPROCS=1`) unless our environment sets one. With a processor per core,
    /// an idle daemon's scheduler spins on the other core at every timer and packet, looking
    /// for work: a hundred such daemons on a small machine spent more on that than on their
    /// work. One processor still uses every core for system calls; a node's consul and
    /// overlay need a fraction of one core (a server's, 10-35 % in a batch of new nodes).
    pub fn start_go(&self, program: &Path, args: &[String]) -> anyhow::Result<i32> {
        let env: &[(&str, &str)] = if std::env::var_os(GO_PROCESSORS).is_some() {
            &[]
        } else {
            &[(GO_PROCESSORS, "1")]
        };
        self.start_with(program, args, env)
    }

    fn start_with(&self, program: &Path, args: &[String], env: &[(&str, &str)]) -> anyhow::Result<i32> {
        if let Some(dir) = self.pid_file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Detached: the end of an SSH session or of this process does not signal it.
        let mut to_run = crate::sys::process::Program::new(self.name, program).args(args.iter().cloned());
        for (k, v) in env {
            to_run = to_run.env(*k, *v);
        }
        let mut child = to_run
            .inherit_env()
            .detached()
            .output_to(&self.log_file)
            .start()
            .with_context(|| format!("cannot start `{}`", program.display()))?;
        let pid = child.id() as i32;
        crate::sys::fs_atomic::write_atomic(&self.pid_file, format!("{pid}\n").as_bytes())?;
        let mut exited = None;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            exited = child.try_wait()?;
            if exited.is_some() {
                break;
            }
        }
        if let Some(status) = exited {
            bail!(
                "{} exited right after its start ({status}); its log `{}` ends with:\n{}",
                self.name,
                self.log_file.display(),
                self.log_tail(12)
            );
        }
        Ok(pid)
    }

    /// The first half of applying a daemon's rendered config, the same for every daemon:
    /// `next` is written to `file` (whole, 0600: it may hold a key) and a daemon that does not
    /// run is started with it. For a running one, what the file held before comes back, for
    /// the caller to choose between nothing, a change at run time and [`Self::restart`].
    pub fn write_config(
        &self,
        file: &Path,
        next: &serde_json::Value,
        start: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Written> {
        let previous = std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        crate::sys::fs_atomic::write_atomic(file, &serde_json::to_vec_pretty(next)?)?;
        if self.pid().is_none() {
            start()?;
            return Ok(Written::Started);
        }
        Ok(Written::Running(previous))
    }

    /// Stops the daemon (see [`Self::stop`]) and starts it again with `start`.
    pub fn restart(&self, grace: Duration, start: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Applied> {
        self.stop(grace);
        start()?;
        Ok(Applied::Restarted)
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after `grace`. True if one was running.
    pub fn stop(&self, grace: Duration) -> bool {
        let Some(pid) = self.pid() else { return false };
        // SAFETY: plain kill(2) on a pid we just checked to be our daemon.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !process_named(pid, self.name) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(50));
        true
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Whether `pid` is a live (not zombie) process whose name is `name`.
pub fn process_named(pid: i32, name: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may hold spaces, so split at the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next().unwrap_or("");
    // The kernel keeps 15 characters of the name.
    let short: String = name.chars().take(15).collect();
    comm == short && state != "Z" && state != "X"
}

/// Resident memory of `pid` in kB, from `/proc/<pid>/status`.
pub fn rss_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Finds `program` on PATH (or beside this binary, where the artifacts are linked).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/bin", "/usr/sbin"].map(PathBuf::from));
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.into_iter().map(|d| d.join(program)).find(|p| p.is_file())
}

/// What [`Daemon::write_config`] did.
#[derive(Debug)]
pub enum Written {
    /// The daemon did not run: it was started with the new config.
    Started,
    /// It runs; the config it was started with (None: none, or unreadable).
    Running(Option<serde_json::Value>),
}

/// What applying a daemon's rendered config did (the overlay's, consul's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Started,
    Restarted,
    /// Running already; peers added and removed at run time.
    PeersChanged {
        added: usize,
        removed: usize,
    },
    Unchanged,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Applied::Started => f.write_str("started"),
            Applied::Restarted => f.write_str("restarted"),
            Applied::PeersChanged { added, removed } => write!(f, "running, {added} peer(s) added, {removed} removed"),
            Applied::Unchanged => f.write_str("running, unchanged"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_tracks_and_stops_a_detached_process() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::new("sleep", dir.path());
        assert_eq!(d.pid(), None);
        let pid = d.start(Path::new("/bin/sleep"), &["30".into()]).unwrap();
        assert_eq!(d.pid(), Some(pid));
        assert!(rss_kb(pid).is_some());
        assert!(d.stop(Duration::from_secs(2)));
        assert_eq!(d.pid(), None);
    }

    #[test]
    fn a_go_daemon_gets_one_processor_unless_the_environment_names_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::new("sleep", dir.path());
        let pid = d.start_go(Path::new("/bin/sleep"), &["30".into()]).unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        d.stop(Duration::from_secs(2));
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let want = match std::env::var(GO_PROCESSORS) {
            Ok(ours) => format!("{GO_PROCESSORS}={ours}"),
            Err(_) => format!("{GO_PROCESSORS}=1"),
        };
        assert!(vars.contains(&want.as_bytes()), "{GO_PROCESSORS} not passed on");
        assert_eq!(
            vars.iter().filter(|v| v.starts_with(GO_PROCESSORS.as_bytes())).count(),
            1
        );
    }

    #[test]
    fn a_process_that_dies_at_once_is_an_error_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::new("sh", dir.path());
        let err = d
            .start(
                Path::new("/bin/sh"),
                &["-c".into(), "echo broken config >&2; exit 3".into()],
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken config"), "{err}");
    }
}
