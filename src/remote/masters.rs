//! The SSH master processes this process starts, and their end.
//!
//! Every [`super::ssh::Remote`] is an `ssh -M` master (ControlPersist) that outlives the
//! process unless it is told to exit. A session that is dropped or closed tells it; a master
//! whose start was abandoned half-way (a connect given up on, a runtime shut down, a command
//! killed by a signal) was never told. So every master's control socket lives in a directory
//! of this process's own, `$TMPDIR/raptiformica-ssh.<pid>.<start time>`, and:
//! - when the command ends (returns, fails, panics, or is stopped by SIGINT/SIGTERM/SIGHUP),
//!   [`Guard`] stops every ssh process still using that directory and removes it;
//! - a directory whose process is gone (it was SIGKILLed) is swept by the next command.
//!
//! A process is ours when it is an `ssh` whose `-S` control path lies in such a directory:
//! nothing else is ever signalled. Finding them reads every process's command line (at 100
//! docker nodes this host runs about 900 processes): a command whose every master was closed
//! (told to exit, and it said so) skips that.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Masters this process started that are not known to have exited: a start under way, a
/// session dropped or a close that failed all leave it above 0.
static UNSETTLED: AtomicUsize = AtomicUsize::new(0);

/// A master this process started was closed: `ssh -O exit` succeeded.
pub(super) fn closed() {
    let _ = UNSETTLED.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

/// The prefix of every process's control directory name.
const PREFIX: &str = "raptiformica-ssh.";

/// This process's control directory (made on first use, 0700).
pub fn control_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(own_name());
        if let Err(e) = make_private_dir(&dir) {
            tracing::warn!("cannot make the ssh control directory `{}`: {e}", dir.display());
        }
        dir
    })
    .clone()
}

/// Stops every ssh master of this process (and of dead ones) when dropped: hold one for the
/// whole command.
pub struct Guard(());

impl Guard {
    /// Sweeps what killed commands left, then guards this one.
    pub fn new() -> Self {
        sweep_orphans(&std::env::temp_dir());
        Self(())
    }
}

impl Default for Guard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if UNSETTLED.load(Ordering::SeqCst) == 0 {
            let _ = std::fs::remove_dir_all(std::env::temp_dir().join(own_name()));
            return;
        }
        sweep_own();
    }
}

/// Starts the master in a task of its own: when the caller gives up half-way (a timeout, a race
/// another node won), the start still completes and the session is dropped, which stops the
/// master. A start cut short would leave it running with no one to stop it (until
/// [`Guard`] sweeps it at the command's end).
pub(super) async fn launch(builder: openssh::SessionBuilder, host: &str) -> anyhow::Result<openssh::Session> {
    let host = host.to_string();
    UNSETTLED.fetch_add(1, Ordering::SeqCst);
    match tokio::spawn(async move { builder.connect(&host).await }).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e)) => Err(anyhow::anyhow!("{e:#} ({e:?})")),
        Err(e) => Err(anyhow::anyhow!("the ssh start was cut short: {e}")),
    }
}

/// Stops this process's ssh processes and removes its control directory. Returns how many
/// were stopped.
pub fn sweep_own() -> usize {
    let dir = std::env::temp_dir().join(own_name());
    sweep_dir(&dir)
}

/// Stops the ssh processes of control directories under `tmp` whose raptiformica process is
/// gone, and removes those directories. Returns how many processes were stopped.
pub fn sweep_orphans(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut stopped = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((pid, start)) = parse_name(&name) else {
            continue;
        };
        if process_start(pid).is_some_and(|s| s == start) {
            continue; // its process still runs: its own guard will sweep it
        }
        stopped += sweep_dir(&entry.path());
    }
    stopped
}

/// Stops the ssh processes whose control path lies in `dir` (SIGTERM, SIGKILL after 1 s),
/// then removes `dir`.
fn sweep_dir(dir: &Path) -> usize {
    let pids = users_of(dir);
    for &pid in &pids {
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while pids.iter().any(|&p| process_start(p).is_some()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids.iter().filter(|&&p| process_start(p).is_some()) {
        signal(pid, libc::SIGKILL);
    }
    if dir.exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
    pids.len()
}

/// The `ssh` processes whose `-S` control path (or `ControlPath=`) lies in `dir`.
fn users_of(dir: &Path) -> Vec<i32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut prefix = dir.as_os_str().as_encoded_bytes().to_vec();
    prefix.push(b'/');
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| uses_control_dir(&cmdline, &prefix))
        })
        .collect()
}

/// Whether a NUL-separated command line is an `ssh` with its control path under `prefix`.
fn uses_control_dir(cmdline: &[u8], prefix: &[u8]) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let is_ssh = args
        .first()
        .is_some_and(|a| a.rsplit(|b| *b == b'/').next() == Some(b"ssh".as_slice()));
    is_ssh
        && args.windows(2).any(|w| {
            (w[0] == b"-S" && w[1].starts_with(prefix))
                || (w[0] == b"-o"
                    && w[1]
                        .strip_prefix(b"ControlPath=")
                        .is_some_and(|p| p.starts_with(prefix)))
        })
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid read from /proc; at worst the process is already gone.
    unsafe { libc::kill(pid, sig) };
}

/// `raptiformica-ssh.<pid>.<start time>` of this process.
fn own_name() -> String {
    let pid = std::process::id() as i32;
    format!("{PREFIX}{pid}.{}", process_start(pid).unwrap_or(0))
}

fn parse_name(name: &str) -> Option<(i32, u64)> {
    let (pid, start) = name.strip_prefix(PREFIX)?.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`): with the
/// pid, it names one process even after its pid is reused. None: no such process.
fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    let state = after.split_whitespace().next()?;
    if state == "Z" || state == "X" {
        return None; // a zombie has ended
    }
    after.split_whitespace().nth(19)?.parse().ok()
}

fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the test starts a stand-in process directly
mod tests {
    use super::*;

    #[test]
    fn only_ssh_with_its_control_path_in_the_dir_is_ours() {
        let p = b"/tmp/raptiformica-ssh.1.2/";
        let master = b"ssh\0-E\0/tmp/raptiformica-ssh.1.2/.c/log\0-S\0/tmp/raptiformica-ssh.1.2/.c/master\0-M\0h\0";
        assert!(uses_control_dir(master, p));
        assert!(uses_control_dir(
            b"/usr/bin/ssh\0-o\0ControlPath=/tmp/raptiformica-ssh.1.2/x\0h\0",
            p
        ));
        // Another process's directory, another program, or the path elsewhere on the line.
        assert!(!uses_control_dir(
            b"ssh\0-S\0/tmp/raptiformica-ssh.1.23/.c/master\0h\0",
            p
        ));
        assert!(!uses_control_dir(b"sleep\0-S\0/tmp/raptiformica-ssh.1.2/x\0", p));
        assert!(!uses_control_dir(b"ssh\0host\0cat /tmp/raptiformica-ssh.1.2/x\0", p));
    }

    #[test]
    fn names_carry_the_pid_and_start_time() {
        let me = std::process::id() as i32;
        let name = own_name();
        assert_eq!(parse_name(&name), Some((me, process_start(me).unwrap())));
        assert_eq!(parse_name("raptiformica-ssh.12.x"), None);
        assert_eq!(parse_name("other.12.34"), None);
        assert!(process_start(me).unwrap() > 0);
    }

    #[test]
    fn a_dead_process_s_masters_are_stopped_and_a_live_one_s_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // A stand-in master: a shell whose argv reads `ssh ... -S <dir>/.c/master`, with its
        // control path in a dead process's directory (pid 1 never started at tick 1) and one
        // in our own.
        let dead = tmp.path().join(format!("{PREFIX}1.1"));
        let live = tmp.path().join(own_name());
        let mut children = Vec::new();
        for dir in [&dead, &live] {
            std::fs::create_dir_all(dir).unwrap();
            let child = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "exec -a ssh /bin/sh -c 'sleep 30; :' -S {}/.c/master",
                    dir.display()
                ))
                .spawn()
                .unwrap();
            children.push(child);
        }
        // Wait until both run as `ssh` (slow on a loaded machine: 5 s was seen to be too short).
        let deadline = Instant::now() + Duration::from_secs(30);
        while (users_of(&dead).is_empty() || users_of(&live).is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(users_of(&dead).len(), 1);
        assert_eq!(sweep_orphans(tmp.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists(), "a live process's directory is its own to sweep");
        let status = children[0].wait().unwrap();
        assert!(!status.success(), "the orphan was stopped");
        assert_eq!(sweep_dir(&live), 1);
        assert!(!children[1].wait().unwrap().success());
    }
}
