//! `TestEnv`: a temp HOME and cache dir, an environment scrubbed of our variables, and the
//! binary built by cargo. The temp dir is kept (and its path printed) when a test fails.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use std::process::Command;

pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("raptiformica-test.")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Self { dir }
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn cache_file(&self) -> PathBuf {
        self.cache().join("mutable_config.json")
    }

    pub fn modules(&self) -> PathBuf {
        self.cache().join("modules")
    }

    /// Writes a file below the temp dir (parents created) and returns its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes a user module file below `<cache>/modules/`.
    pub fn module(&self, rel: &str, text: &str) -> PathBuf {
        self.write(&format!("cache/modules/{rel}"), text)
    }

    /// The binary with our env scrubbed, HOME and the cache dir in the temp dir.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(bin());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("RAPTIFORMICA_") {
                cmd.env_remove(k);
            }
        }
        // No ssh-agent of whoever runs the tests: a test that needs one starts its own.
        cmd.env_remove("SSH_AUTH_SOCK");
        cmd.env("HOME", self.dir.path().join("home"))
            // A packaged image the user (or an acceptance check) made is not ours to start
            // from: the tests see only the packages they make themselves.
            .env("RAPTIFORMICA_DOCKER_PACKAGED_REPO", "raptiformica-test-packaged")
            .env("RAPTIFORMICA_CACHE_DIR", self.cache())
            // Shared by every test: fetched once (under a lock), not once per temp cache.
            .env(
                "RAPTIFORMICA_ARTIFACTS_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts"),
            );
        cmd
    }

    /// Runs with `args`, returns the output whatever the exit code. A run that outlasts
    /// [`RUN_LIMIT`] fails the test, naming it.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd();
        cmd.args(args);
        bounded(cmd, RUN_LIMIT, &format!("raptiformica {}", args.join(" ")))
    }

    /// Runs with `args`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "`raptiformica {}` failed:\n{}",
            args.join(" "),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs with `args`, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "`raptiformica {}` succeeded:\n{}",
            args.join(" "),
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    /// `config --json` as a JSON object.
    pub fn mapping(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str::<serde_json::Value>(&self.ok(&["config", "--json"]))
            .expect("config --json prints JSON")
            .as_object()
            .expect("an object")
            .clone()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = self.dir.path().to_path_buf();
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()));
            eprintln!("test failed: its files are kept in {}", kept.display());
        }
    }
}

/// True when the Docker engine answers. In CI (`CI=true`) a missing engine fails the test;
/// elsewhere the test is skipped with a message.
pub fn docker_available() -> bool {
    let ok = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Docker engine is required in CI, and it does not answer"
        );
        eprintln!("SKIPPED: no Docker engine on this machine");
    }
    ok
}

/// The longest a test waits for one run of the binary (a spawn on a cold machine builds the
/// images first).
pub const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Runs `cmd` to its end, or fails the test once `limit` has passed: the command is killed and
/// the failure names it with what it printed so far, so a hang is a red test that says where,
/// never a CI run that ends at its time limit without a word.
pub fn bounded(mut cmd: Command, limit: Duration, what: &str) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    // Each pipe is read on its own thread into a shared buffer, so what was printed so far is
    // at hand even when the pipe never closes.
    type Pipe = (std::sync::Arc<std::sync::Mutex<Vec<u8>>>, std::sync::mpsc::Receiver<()>);
    let drain = |mut pipe: Box<dyn Read + Send>| -> Pipe {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                shared.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let _ = tx.send(());
        });
        (buf, rx)
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A pipe is done once every writer closed it; something the command started that still
    // holds it after the grace is a bug of its own (a daemon must not keep its caller's output).
    let grace = Duration::from_secs(10);
    let closed = |p: &Pipe| p.1.recv_timeout(grace).is_ok();
    let (out_closed, err_closed) = (closed(&out), closed(&err));
    let take = |p: &Pipe| std::mem::take(&mut *p.0.lock().unwrap());
    let (stdout, stderr) = (take(&out), take(&err));
    match status {
        Some(status) if out_closed && err_closed => Output { status, stdout, stderr },
        status => panic!(
            "`{what}` {} within {}s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            if status.is_some() {
                "ended but something it started kept its output open"
            } else {
                "did not finish and was killed"
            },
            limit.as_secs(),
            text(&stdout),
            text(&stderr)
        ),
    }
}

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_raptiformica"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The project's root (where the built-in modules are).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
