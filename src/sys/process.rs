//! The only place that starts local processes.
//!
//! [`Shell`] runs a command line with `sh -c` in a chosen directory, with a timeout that kills
//! the whole process group, its output captured, appended to a log file and (under `-v`)
//! streamed to stderr. A failure is an error that quotes the command, its exit status and the
//! last lines it printed, because the last lines are what a user needs to see.

#![allow(clippy::disallowed_methods)] // the one place that may start processes

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How many output lines an error quotes.
pub const TAIL_LINES: usize = 15;

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The last [`TAIL_LINES`] lines of stderr then stdout, indented for an error message.
    pub fn tail(&self) -> String {
        tail(&format!("{}{}", self.stdout, self.stderr))
    }
}

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{label}: could not start `{command}`: {source}")]
    Spawn {
        label: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{label}: `{command}` {status}{}", fmt_tail(.tail))]
    Failed {
        label: String,
        command: String,
        status: String,
        tail: String,
    },
    #[error("{label}: `{command}` did not finish within {}s and was killed{}", .timeout.as_secs(), fmt_tail(.tail))]
    TimedOut {
        label: String,
        command: String,
        timeout: Duration,
        tail: String,
    },
}

fn fmt_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::from(" (it printed nothing)")
    } else {
        format!("; its last output:\n{tail}")
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Called with each line a command prints on stderr, as it comes (progress of a long step).
#[derive(Clone)]
pub struct LineSink(pub Arc<dyn Fn(&str) + Send + Sync>);

impl fmt::Debug for LineSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LineSink")
    }
}

/// A shell command line to run locally.
#[derive(Debug, Clone)]
pub struct Shell {
    label: String,
    script: String,
    cwd: Option<PathBuf>,
    env: Vec<(String, String)>,
    timeout: Duration,
    log: Option<PathBuf>,
    echo: bool,
    input: Option<Arc<Vec<u8>>>,
    on_stderr: Option<LineSink>,
    on_spawn: Option<SpawnSink>,
}

/// Called with the process group of a command once it started (a group of its own, led by
/// the shell): a caller that must find it again after a restart records it.
#[derive(Clone)]
pub struct SpawnSink(pub Arc<dyn Fn(i32) + Send + Sync>);

impl fmt::Debug for SpawnSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpawnSink")
    }
}

/// Whether any process of the process group `group` is left.
pub fn group_alive(group: i32) -> bool {
    // SAFETY: plain syscall; signal 0 only checks that the group exists.
    group > 1 && unsafe { libc::kill(-group, 0) } == 0
}

/// Kills every process of the process group `group`.
pub fn kill_group(group: i32) {
    if group > 1 {
        // SAFETY: plain syscall on a group we started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

impl fmt::Display for Shell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(cwd) = &self.cwd {
            write!(f, "cd {} && ", cwd.display())?;
        }
        f.write_str(&self.script)
    }
}

impl Shell {
    /// `label` says what the command is for (`start_instance of docker/headless`); it heads
    /// every message about it.
    pub fn new(label: impl Into<String>, script: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            script: script.into(),
            cwd: None,
            env: vec![("LC_ALL".into(), "C".into())],
            timeout: Duration::from_secs(1200),
            log: None,
            echo: false,
            input: None,
            on_stderr: None,
            on_spawn: None,
        }
    }

    /// Calls `sink` with each stderr line as it is printed.
    pub fn on_stderr(mut self, sink: LineSink) -> Self {
        self.on_stderr = Some(sink);
        self
    }

    /// Feeds `bytes` to the command's stdin (else it reads nothing).
    /// Calls `sink` with the command's process group once it started.
    pub fn on_spawn(mut self, sink: SpawnSink) -> Self {
        self.on_spawn = Some(sink);
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.input = Some(Arc::new(bytes.into()));
        self
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Adds an environment variable (on top of ours).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Kills the command (and everything it started) after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Appends the command and all its output to `file`.
    pub fn log_to(mut self, file: impl AsRef<Path>) -> Self {
        self.log = Some(file.as_ref().to_path_buf());
        self
    }

    /// Streams the output to our stderr as it comes (for `-v`).
    pub fn echo(mut self, echo: bool) -> Self {
        self.echo = echo;
        self
    }

    /// Runs the command; a nonzero exit is an error.
    pub fn run(&self) -> Result<Output, ProcessError> {
        let out = self.output()?;
        if out.success() {
            Ok(out)
        } else {
            Err(ProcessError::Failed {
                label: self.label.clone(),
                command: self.to_string(),
                status: describe(out.status),
                tail: out.tail(),
            })
        }
    }

    /// Runs the command and returns what it did, whatever its exit status (for predicates).
    pub fn output(&self) -> Result<Output, ProcessError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&self.script);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0);
        let log = self.open_log();
        if let Some(log) = &log {
            let mut l = log.lock().expect("log lock");
            let _ = writeln!(l, "$ {self}");
        }
        let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            label: self.label.clone(),
            command: self.to_string(),
            source,
        })?;
        if let Some(sink) = &self.on_spawn {
            (sink.0)(child.id() as i32);
        }
        if let (Some(bytes), Some(mut stdin)) = (self.input.clone(), child.stdin.take()) {
            // A command that does not read it all just closes the pipe: no error of ours.
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let (tx, rx) = mpsc::channel();
        let (out_buf, err_buf) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
        let readers = [
            spawn_reader(
                child.stdout.take().expect("piped"),
                out_buf.clone(),
                log.clone(),
                self.echo,
                None,
                tx.clone(),
            ),
            spawn_reader(
                child.stderr.take().expect("piped"),
                err_buf.clone(),
                log.clone(),
                self.echo,
                self.on_stderr.clone(),
                tx,
            ),
        ];
        drop(readers);
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if started.elapsed() >= self.timeout => {
                    // SAFETY: plain syscall on the group we created; no memory is involved.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    break Err(());
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(source) => {
                    return Err(ProcessError::Spawn {
                        label: self.label.clone(),
                        command: self.to_string(),
                        source,
                    });
                }
            }
        };
        // A daemon started in the background may hold the pipes open for good: wait a grace
        // period for the end of both, then take what was printed so far.
        let deadline = Instant::now() + Duration::from_secs(2);
        for _ in 0..2 {
            if rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                break;
            }
        }
        let taken = |b: &Arc<Mutex<String>>| std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()));
        let (stdout, stderr) = (taken(&out_buf), taken(&err_buf));
        if let Some(log) = &log {
            let mut l = log.lock().expect("log lock");
            let _ = match status {
                Ok(s) => writeln!(l, "# {}", describe(s)),
                Err(()) => writeln!(l, "# killed after {}s", self.timeout.as_secs()),
            };
        }
        match status {
            Ok(status) => Ok(Output { status, stdout, stderr }),
            Err(()) => Err(ProcessError::TimedOut {
                label: self.label.clone(),
                command: self.to_string(),
                timeout: self.timeout,
                tail: tail(&format!("{stdout}{stderr}")),
            }),
        }
    }

    fn open_log(&self) -> Option<Arc<Mutex<File>>> {
        let path = self.log.as_ref()?;
        match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                tracing::warn!("cannot write the log `{}`: {e}", path.display());
                None
            }
        }
    }
}

fn spawn_reader(
    pipe: impl Read + Send + 'static,
    all: Arc<Mutex<String>>,
    log: Option<Arc<Mutex<File>>>,
    echo: bool,
    sink: Option<LineSink>,
    done: mpsc::Sender<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
            let text = String::from_utf8_lossy(&line);
            if let Some(log) = &log {
                let _ = log.lock().expect("log lock").write_all(text.as_bytes());
            }
            if echo {
                eprint!("  | {text}");
            }
            if let Some(sink) = &sink {
                (sink.0)(text.trim_end());
            }
            all.lock().unwrap_or_else(|e| e.into_inner()).push_str(&text);
            line.clear();
        }
        let _ = done.send(());
    })
}

/// Runs blocking work (a local command, hashing or packing files) from async code without
/// stalling the other tasks of the runtime's worker: on a multi-threaded runtime the worker
/// hands its tasks to the others meanwhile (`block_in_place`); elsewhere it just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `exited with status 3` / `was killed by signal 9`.
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".into(),
    }
}

/// A program started directly (no shell) to run in the background while we work with it (a
/// scratch consul): see [`Program::spawn`]. Its environment is only what [`Program::env`]
/// gives, none of ours (no `CONSUL_HTTP_TOKEN`, no `RAPTIFORMICA_*` leaks into it), and its
/// arguments are readable by every local user in `/proc/<pid>/cmdline`: never pass a secret
/// as one (a file in a private directory is the place).
#[derive(Debug, Clone)]
pub struct Program {
    label: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    output: Option<PathBuf>,
    inherit_env: bool,
    detached: bool,
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.program.display())?;
        self.args.iter().try_for_each(|a| write!(f, " {a}"))
    }
}

impl Program {
    /// `label` says what the program is for (`the snapshot's scratch consul`).
    pub fn new(label: impl Into<String>, program: impl AsRef<Path>) -> Self {
        Self {
            label: label.into(),
            program: program.as_ref().to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            output: None,
            inherit_env: false,
            detached: false,
        }
    }

    /// Keeps our environment (with what [`Program::env`] adds) instead of an empty one.
    pub fn inherit_env(mut self) -> Self {
        self.inherit_env = true;
        self
    }

    /// Runs in a session of its own (`setsid`): the end of our SSH session or of this process
    /// does not signal it (a daemon).
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    /// Adds arguments (public: see [`Program`]).
    pub fn args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable; the program sees no other.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Appends its stdout and stderr to `file` (created 0600), else they are dropped.
    pub fn output_to(mut self, file: impl AsRef<Path>) -> Self {
        self.output = Some(file.as_ref().to_path_buf());
        self
    }

    /// Starts the program (stdin closed); it runs until the [`Running`] is dropped. It stays
    /// in our process group, so a Ctrl-C on the terminal ends it with us.
    pub fn spawn(&self) -> Result<Running, ProcessError> {
        Ok(Running {
            label: self.label.clone(),
            child: self.start()?,
        })
    }

    /// Starts the program (stdin closed) and hands over the child, which outlives the handle
    /// (a daemon, the agent under its keeper).
    pub fn start(&self) -> Result<std::process::Child, ProcessError> {
        let (stdout, stderr) = match &self.output {
            Some(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                let file = OpenOptions::new()
                    .mode(0o600)
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| self.spawn_error(e))?;
                let copy = file.try_clone().map_err(|e| self.spawn_error(e))?;
                (Stdio::from(copy), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let mut cmd = self.command();
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        cmd.spawn().map_err(|e| self.spawn_error(e))
    }

    /// Runs the program to its end and returns what it printed, whatever its exit status.
    pub fn output(&self) -> Result<std::process::Output, ProcessError> {
        let mut cmd = self.command();
        cmd.stdin(Stdio::null());
        cmd.output().map_err(|e| self.spawn_error(e))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if !self.inherit_env {
            cmd.env_clear();
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        if self.detached {
            // SAFETY: setsid is async-signal-safe; it detaches the child from our session.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        cmd
    }

    fn spawn_error(&self, source: std::io::Error) -> ProcessError {
        ProcessError::Spawn {
            label: self.label.clone(),
            command: self.to_string(),
            source,
        }
    }
}

/// A program started by [`Program::spawn`], killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Running {
    label: String,
    child: std::process::Child,
}

impl Running {
    /// Its process id (to look at it in `/proc`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// How it ended (`exited with status 1`), or None while it runs.
    pub fn ended(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(describe(status)),
            Ok(None) => None,
            Err(e) => Some(format!("cannot be waited for ({e})")),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            tracing::debug!("stopping {} (pid {})", self.label, self.child.id());
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs a program with our terminal (stdin, stdout, stderr inherited), e.g. an interactive
/// `ssh`; returns its exit status.
pub fn run_interactive(argv: &[String]) -> std::io::Result<ExitStatus> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    Command::new(program).args(args).status()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_env_and_cwd() {
        let d = tempfile::tempdir().unwrap();
        let out = Shell::new("t", "echo out; echo err >&2; pwd; echo $X")
            .cwd(d.path())
            .env("X", "y")
            .run()
            .unwrap();
        assert!(out.stdout.contains("out\n") && out.stdout.ends_with("y\n"));
        assert!(
            out.stdout
                .contains(&d.path().canonicalize().unwrap().display().to_string())
        );
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn failure_quotes_status_and_last_lines() {
        let err = Shell::new("step one", "for i in $(seq 40); do echo line$i; done; exit 3")
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("step one: `"), "{err}");
        assert!(
            err.contains("exited with status 3") && err.contains("line40") && !err.contains("line20\n"),
            "{err}"
        );
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let started = Instant::now();
        let d = tempfile::tempdir().unwrap();
        let pid_file = d.path().join("bg.pid");
        let err = Shell::new("slow", "sleep 30 & echo $! > \"$PIDFILE\"; sleep 30; echo never")
            .env("PIDFILE", pid_file.display().to_string())
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(err, ProcessError::TimedOut { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The background child went with the group, not only `sh` (gone, or a zombie).
        let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state.rsplit(") ").next().unwrap_or("").chars().next();
        assert!(
            matches!(state, None | Some('Z')),
            "the background sleep {pid} still runs"
        );
    }

    #[test]
    fn blocking_work_does_not_stall_the_other_tasks() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let other = rt.block_on(async {
            let started = Instant::now();
            let slow = tokio::spawn(async { blocking(|| std::thread::sleep(Duration::from_millis(600))) });
            tokio::task::yield_now().await;
            let quick = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                started.elapsed()
            });
            let quick = quick.await.unwrap();
            slow.await.unwrap();
            quick
        });
        assert!(other < Duration::from_millis(400), "the other task waited {other:?}");
        assert_eq!(blocking(|| 7), 7, "outside a runtime it just runs");
    }

    #[test]
    fn a_background_child_holding_the_pipe_does_not_hide_the_output() {
        let started = Instant::now();
        let out = Shell::new("bg", "echo printed; sleep 5 &").run().unwrap();
        assert_eq!(out.stdout.trim(), "printed");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_program_sees_none_of_our_environment_and_ends_with_its_handle() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        // `PATH` is ours (every test process has it): the program must not see it.
        let mut running = Program::new("env", "/usr/bin/env")
            .env("ONLY", "this")
            .output_to(&out)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while running.ended().is_none() && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(running.ended().as_deref(), Some("exited with status 0"));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ONLY=this\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

        let running = Program::new("sleep", "/bin/sleep").args(["30"]).spawn().unwrap();
        let pid = running.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(running);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed and reaped");

        let err = Program::new("nothing", "/nonexistent/prog")
            .args(["-x"])
            .spawn()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("nothing: could not start `/nonexistent/prog -x`"),
            "{err}"
        );
    }

    #[test]
    fn log_file_keeps_command_and_output() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        Shell::new("t", "echo hello").log_to(&log).run().unwrap();
        let _ = Shell::new("t", "echo bye; false").log_to(&log).run();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("$ echo hello\nhello\n# exited with status 0"), "{text}");
        assert!(text.contains("bye\n# exited with status 1"), "{text}");
    }
}
