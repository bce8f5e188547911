//! SSH to machines: the identity, pinned host keys, and a multiplexed session per host.
//!
//! Every contact goes through the `openssh` crate (one ControlMaster per host) with our own
//! ssh config file, `<cache-dir>/ssh_config`: root login (or a user who runs what needs root
//! through `sudo -n`, see [`Login`]), our key, no agent forwarding, no passwords, and host keys pinned in `<cache-dir>/known_hosts` (`accept-new`: the first
//! contact records the key, every later contact must match it, and a changed key is a hard
//! error). Host keys are never ignored.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use openssh::{KnownHosts, Session, SessionBuilder};

use crate::config::context::Context;
use crate::sys::process::Shell;

pub use super::login::Login;
pub use super::pins::forget;
use super::pins::{forget_unlocked, keep_new_pins, trial_pins, with_lock};

/// How long to wait for the TCP connection and the SSH handshake of one attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// This host's SSH identity and pins, all in the cache dir.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `<cache>/id_ed25519` (0600), made once.
    pub key: PathBuf,
    /// The public key(s) a new instance authorizes for root.
    pub public_key_file: PathBuf,
    /// `<cache>/known_hosts`: the pinned host keys.
    pub known_hosts: PathBuf,
    /// `<cache>/ssh_config`: the options every contact uses.
    pub config: PathBuf,
}

impl Identity {
    /// Makes sure the key pair and the ssh config exist. With an ssh-agent that holds keys,
    /// those are authorized on new instances too.
    pub fn ensure(ctx: &Context) -> anyhow::Result<Self> {
        let dir = &ctx.paths.cache_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
        let key = dir.join("id_ed25519");
        if !key.exists() {
            ctx.shell(
                "ssh key generation",
                "ssh-keygen -q -t ed25519 -N '' -C raptiformica -f \"$KEY\"",
            )
            .env("KEY", key.display().to_string())
            .run()?;
            tracing::info!("generated the instance key `{}`", key.display());
        }
        set_mode(&key, 0o600)?;
        let mut public = std::fs::read_to_string(key.with_extension("pub"))
            .with_context(|| format!("cannot read `{}.pub`", key.display()))?;
        // An agent's keys, when one runs (no shell and ssh-add otherwise: every command to a
        // node comes here first).
        if std::env::var_os("SSH_AUTH_SOCK").is_some()
            && let Ok(out) = Shell::new("ssh-agent keys", "ssh-add -L").output()
            && out.success()
        {
            public.push_str(&out.stdout);
        }
        let public_key_file = dir.join("authorized_keys.pub");
        write_if_changed(&public_key_file, &public)?;
        let known_hosts = dir.join("known_hosts");
        let config = dir.join("ssh_config");
        let mut text = String::from("# Written by raptiformica for its own SSH contacts.\nHost *\n");
        // Paths in double quotes: a cache dir with a space must not break every contact.
        for (k, v) in [
            ("User", "root"),
            ("IdentityFile", &config_quote(&key)?),
            ("UserKnownHostsFile", &config_quote(&known_hosts)?),
            ("GlobalKnownHostsFile", "/dev/null"),
            ("StrictHostKeyChecking", "accept-new"),
            ("HashKnownHosts", "no"),
            ("CheckHostIP", "no"),
            ("PasswordAuthentication", "no"),
            ("KbdInteractiveAuthentication", "no"),
            ("ForwardAgent", "no"),
            ("BatchMode", "yes"),
            ("ConnectTimeout", &CONNECT_TIMEOUT.as_secs().to_string()),
            ("ServerAliveInterval", "10"),
            ("ServerAliveCountMax", "3"),
            ("LogLevel", "ERROR"),
        ] {
            let _ = writeln!(text, "    {k} {v}");
        }
        write_if_changed(&config, &text)?;
        Ok(Self {
            key,
            public_key_file,
            known_hosts,
            config,
        })
    }

    /// The `ssh` command line that reaches `host` as we do, logged in as `login` (for `ssh
    /// --info-only`).
    pub fn command_line(&self, login: &Login, host: &str, port: u16) -> Vec<String> {
        vec![
            "ssh".into(),
            "-F".into(),
            self.config.display().to_string(),
            "-p".into(),
            port.to_string(),
            format!("{}@{host}", login.user),
        ]
    }

    /// The known_hosts name of `host:port`.
    pub fn pin_name(host: &str, port: u16) -> String {
        if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        }
    }

    /// Forgets the pinned key(s) of `host:port` (a machine we removed, or re-created).
    pub fn forget(&self, host: &str, port: u16) -> anyhow::Result<()> {
        forget(&self.known_hosts, host, port)
    }

    /// Pins `host_keys` (lines of `type base64 [comment]`) for `host:port`, replacing any older
    /// pin: used for a machine the compute back-end just created and vouched for.
    pub fn pin(&self, host: &str, port: u16, host_keys: &str) -> anyhow::Result<usize> {
        let name = Self::pin_name(host, port);
        let mut lines = String::new();
        for key in host_keys
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
        {
            let mut parts = key.split_whitespace();
            if let (Some(kind), Some(blob)) = (parts.next(), parts.next()) {
                let _ = writeln!(lines, "{name} {kind} {blob}");
            }
        }
        if lines.is_empty() {
            bail!("no host key to pin for `{name}` (got {host_keys:?})");
        }
        with_lock(&self.known_hosts, || {
            forget_unlocked(&self.known_hosts, host, port)?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.known_hosts)
                .with_context(|| format!("cannot write `{}`", self.known_hosts.display()))?;
            std::io::Write::write_all(&mut file, lines.as_bytes())?;
            Ok(lines.lines().count())
        })
    }

    /// Pins the host key the cluster recorded for a known node (`type base64`), unless it is
    /// pinned already: every later contact then checks it (no trust on first use).
    pub fn pin_recorded(&self, host: &str, port: u16, host_key: &str) -> anyhow::Result<()> {
        let mut parts = host_key.split_whitespace();
        let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
            bail!("the recorded host key of {host}:{port} is not `type base64`: {host_key:?}");
        };
        let line = format!("{} {kind} {blob}", Self::pin_name(host, port));
        let pinned = std::fs::read_to_string(&self.known_hosts).unwrap_or_default();
        if pinned.lines().any(|l| l.trim() == line) {
            return Ok(());
        }
        self.pin(host, port, host_key).map(|_| ())
    }
}

/// A live, multiplexed SSH session to one machine.
pub struct Remote {
    pub host: String,
    pub port: u16,
    /// Who it logged in as.
    pub login: Login,
    /// The jump hosts it was reached through, outermost first (`host:port` each, see [`hop`]).
    pub via: Vec<String>,
    session: Session,
}

/// What a remote command did.
#[derive(Debug)]
pub struct RemoteOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl RemoteOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl Remote {
    /// Connects to `root@host:port`. A host key that differs from the pinned one, a refused
    /// login or an unreachable host each give an error that says which, and what to do.
    pub async fn connect(identity: &Identity, host: &str, port: u16) -> anyhow::Result<Self> {
        Self::connect_via(identity, host, port, &[]).await
    }

    /// Connects to `root@host:port` through the jump hosts `via` (outermost first, each
    /// `host:port`): ssh's ProxyJump, with our ssh config, key and pins for every hop.
    pub async fn connect_via(identity: &Identity, host: &str, port: u16, via: &[String]) -> anyhow::Result<Self> {
        Self::connect_as(identity, &Login::default(), host, port, via).await
    }

    /// [`Remote::connect_via`] as `login`: a sudo user is checked at once (`sudo -n true`), so
    /// that one without sudo, or whose sudo wants a password, is told before anything runs.
    pub async fn connect_as(
        identity: &Identity,
        login: &Login,
        host: &str,
        port: u16,
        via: &[String],
    ) -> anyhow::Result<Self> {
        super::sudo::check(Self::open(identity, login, host, port, via).await?).await
    }

    async fn open(identity: &Identity, login: &Login, host: &str, port: u16, via: &[String]) -> anyhow::Result<Self> {
        let mut builder = SessionBuilder::default();
        builder
            .config_file(&identity.config)
            .known_hosts_check(KnownHosts::Add)
            .user_known_hosts_file(&identity.known_hosts)
            .keyfile(&identity.key)
            .user(login.user.clone())
            .port(port)
            .connect_timeout(CONNECT_TIMEOUT)
            .control_directory(super::masters::control_dir());
        if !via.is_empty() {
            builder.jump_hosts(via.iter().map(|h| format!("root@{h}")));
        }
        match super::masters::launch(builder, host).await {
            Ok(session) => Ok(Self {
                host: host.into(),
                port,
                login: login.clone(),
                via: via.to_vec(),
                session,
            }),
            Err(e) => {
                // Through a jump host, whether this machine reaches the target says nothing.
                let probe = if via.is_empty() {
                    probe_tcp(host, port).await
                } else {
                    None
                };
                let err = explain_connect_error(identity, host, port, &format!("{e:#}"), probe);
                if via.is_empty() {
                    Err(err)
                } else {
                    Err(err.context(format!("through the jump host(s) {}", via.join(", "))))
                }
            }
        }
    }

    /// Connects to `root@host:port` (or as `login`) as the user would with plain `ssh`: the
    /// user's own ssh config, keys and agent (not our instance key), the host key pinned in our
    /// `known_hosts` on first contact and checked on every later one (`join` and `attach`, from
    /// a machine that is not a node). ssh records a new host key before the login, so it works
    /// on a copy of the pins, and a new pin is kept only once the login succeeded: a failed
    /// contact leaves `known_hosts` as it was. A sudo login is checked as in [`Remote::connect_as`].
    pub async fn connect_as_user(known_hosts: &Path, login: &Login, host: &str, port: u16) -> anyhow::Result<Self> {
        let trial = trial_pins(known_hosts)?;
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Add)
            .user_known_hosts_file(trial.path())
            .user(login.user.clone())
            .port(port)
            .connect_timeout(CONNECT_TIMEOUT)
            .control_directory(super::masters::control_dir());
        let remote = match super::masters::launch(builder, host).await {
            Ok(session) => match keep_new_pins(trial.path(), known_hosts) {
                Ok(()) => Self {
                    host: host.into(),
                    port,
                    login: login.clone(),
                    via: Vec::new(),
                    session,
                },
                Err(e) => {
                    let _ = session.close().await;
                    return Err(e);
                }
            },
            Err(e) => {
                let cause = format!("{e:#}");
                let user = &login.user;
                let what = if cause.contains("IDENTIFICATION HAS CHANGED")
                    || cause.contains("Host key verification failed")
                {
                    format!(
                        "the host key of {host}:{port} does not match the key pinned in `{}`: refusing to connect",
                        known_hosts.display()
                    )
                } else if cause.contains("Permission denied") {
                    let home = if login.is_root() {
                        "/root".to_string()
                    } else {
                        format!("~{user}")
                    };
                    format!(
                        "{user}@{host}:{port} refused your keys\nhint: `ssh {user}@{host} -p {port}` must work with your \
                         keys or ssh-agent (authorize your public key in its {home}/.ssh/authorized_keys)"
                    )
                } else if let Some(problem) = probe_tcp(host, port).await {
                    format!("cannot reach {host}:{port}: {problem}\nhint: check the address and the port")
                } else {
                    format!("ssh to {host}:{port} failed")
                };
                return Err(anyhow::anyhow!("{what}\ncause: {}", cause.trim()));
            }
        };
        super::sudo::check(remote).await
    }

    /// Connects to a known node, checking the host key the cluster recorded for it (pinned
    /// first), not trusting whatever key answers; through its recorded jump hosts, if any, and
    /// as the login it records (`Login::recorded`).
    pub async fn connect_known(identity: &Identity, n: &crate::mesh::neighbours::Neighbour) -> anyhow::Result<Self> {
        let host = n
            .host
            .as_deref()
            .with_context(|| format!("node {} has no host on record", n.id))?;
        if let Some(key) = &n.ssh_host_key {
            identity.pin_recorded(host, n.ssh_port, key)?;
        }
        let login = Login::recorded(n.ssh_user.as_deref());
        Self::open(identity, &login, host, n.ssh_port, &n.ssh_via).await
    }

    /// Connects, retrying for up to `patience` (a machine that is still booting).
    pub async fn connect_patiently(
        identity: &Identity,
        login: &Login,
        host: &str,
        port: u16,
        via: &[String],
        patience: Duration,
    ) -> anyhow::Result<Self> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match Self::connect_as(identity, login, host, port, via).await {
                Ok(r) => return Ok(r),
                // A wrong host key or a user without sudo will not fix itself: fail at once.
                Err(e)
                    if tokio::time::Instant::now() >= deadline
                        || format!("{e:#}").contains("host key")
                        || format!("{e:#}").contains("with sudo") =>
                {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!("ssh to {host}:{port} not ready yet: {e:#}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Forwards a free local TCP port on loopback to `target` as seen from the machine (an
    /// SSH tunnel over this session). Returns the local port.
    pub async fn forward_local(&self, target: std::net::SocketAddr) -> anyhow::Result<u16> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let local: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        self.session
            .request_port_forward(openssh::ForwardType::Local, local, target)
            .await
            .with_context(|| format!("cannot forward a port to {target} through {}:{}", self.host, self.port))?;
        Ok(port)
    }

    /// Whether the session still works.
    pub async fn is_alive(&self) -> bool {
        self.session.check().await.is_ok()
    }

    /// Runs a shell script on the machine (with `sh -c`), stdin from `input` if given.
    pub async fn sh(&self, script: &str, input: Option<std::fs::File>) -> anyhow::Result<RemoteOutput> {
        // A sudo user runs it as root (-n: never a password prompt; -H: root's home).
        let mut cmd = if self.login.sudo {
            let mut c = self.session.command("sudo");
            c.args(["-n", "-H", "sh"]);
            c
        } else {
            self.session.command("sh")
        };
        cmd.arg("-c").arg(script);
        if let Some(file) = input {
            cmd.stdin(openssh::Stdio::from(std::os::fd::OwnedFd::from(file)));
        } else {
            cmd.stdin(openssh::Stdio::null());
        }
        let out = cmd
            .output()
            .await
            .with_context(|| format!("ssh to {}:{} broke while running a command", self.host, self.port))?;
        Ok(RemoteOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `script` as root through sudo with `password` on sudo's stdin (`sudo -S`, no
    /// prompt): never on a command line, in the environment or in a log.
    pub async fn sudo_with_password(
        &self,
        password: &super::sudo::SudoPassword,
        script: &str,
    ) -> anyhow::Result<RemoteOutput> {
        use tokio::io::AsyncWriteExt as _;
        let mut cmd = self.session.command("sudo");
        cmd.args(["-S", "-p", "", "-H", "sh", "-c"])
            .arg(script)
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let broke = || format!("ssh to {}:{} broke while running sudo", self.host, self.port);
        let mut child = cmd.spawn().await.with_context(broke)?;
        if let Some(mut stdin) = child.stdin().take() {
            stdin.write_all(password.line().as_bytes()).await.with_context(broke)?;
            stdin.shutdown().await.with_context(broke)?;
        }
        let out = child.wait_with_output().await.with_context(broke)?;
        Ok(RemoteOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs a script that must succeed; the error quotes its last output lines.
    pub async fn run(&self, what: &str, script: &str) -> anyhow::Result<RemoteOutput> {
        self.run_with_input(what, script, None).await
    }

    /// As [`Remote::run`], with stdin from `input`.
    pub async fn run_with_input(
        &self,
        what: &str,
        script: &str,
        input: Option<std::fs::File>,
    ) -> anyhow::Result<RemoteOutput> {
        let out = self.sh(script, input).await?;
        self.checked(what, out, &[])
    }

    /// `out` when the script succeeded or ended with one of the `settled` exit codes (an
    /// answer its caller takes, not a failure to try elsewhere); else an error naming the
    /// step, the machine and the script's last output.
    pub fn checked(&self, what: &str, out: RemoteOutput, settled: &[i32]) -> anyhow::Result<RemoteOutput> {
        if out.success() || out.code.is_some_and(|c| settled.contains(&c)) {
            return Ok(out);
        }
        let all = format!("{}{}", out.stdout, out.stderr);
        let lines: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(crate::sys::process::TAIL_LINES)..].join("\n    ");
        bail!(
            "{what} on {}:{} exited with status {}{}",
            self.host,
            self.port,
            out.code.map_or("unknown".into(), |c| c.to_string()),
            if tail.is_empty() {
                " (it printed nothing)".into()
            } else {
                format!("; its last output:\n    {tail}")
            }
        )
    }

    /// As [`Remote::run_with_input`], ended after `limit`: the script runs in a session of its
    /// own on the machine, and on timeout that whole process group is killed there, so nothing
    /// of a hung step is left running. The error names the step and the limit.
    pub async fn run_limited(
        &self,
        what: &str,
        script: &str,
        input: Option<std::fs::File>,
        limit: Duration,
    ) -> anyhow::Result<RemoteOutput> {
        let pgid_file = format!("/tmp/raptiformica-step-{}.pgid", uuid::Uuid::new_v4().simple());
        let wrapped = format!(
            "setsid -w sh -c 'echo $$ >\"$1\"; shift; exec sh -c \"$1\"' step {file} {script}; rc=$?; rm -f {file}; exit $rc",
            file = crate::sys::quote::quote(&pgid_file),
            script = crate::sys::quote::quote(script),
        );
        match tokio::time::timeout(limit, self.run_with_input(what, &wrapped, input)).await {
            Ok(result) => result,
            Err(_) => {
                // `kill -KILL -PGID`: dash's kill takes no `--` (it failed, and went unnoticed).
                let kill = format!(
                    "f={f}; [ -s \"$f\" ] || {{ echo 'no process group recorded' >&2; exit 3; }}; \
                     kill -KILL -\"$(cat \"$f\")\"; rc=$?; rm -f \"$f\"; exit $rc",
                    f = crate::sys::quote::quote(&pgid_file)
                );
                let killed = tokio::time::timeout(Duration::from_secs(15), self.sh(&kill, None)).await;
                let how = match killed {
                    Ok(Ok(o)) if o.success() => "its process group on the machine was killed",
                    _ => "killing its process group on the machine failed too",
                };
                bail!(
                    "{what} on {}:{} timed out after {}s; {how}",
                    self.host,
                    self.port,
                    limit.as_secs()
                )
            }
        }
    }

    /// Closes the master connection.
    pub async fn close(self) {
        if self.session.close().await.is_ok() {
            super::masters::closed();
        }
    }
}

/// `path` as an ssh_config value: in double quotes (which ssh_config cannot escape, so a path
/// holding one is refused).
fn config_quote(path: &Path) -> anyhow::Result<String> {
    let text = path.display().to_string();
    if text.contains('"') {
        bail!("`{text}` holds a double quote, which ssh_config cannot express: use a cache dir without one");
    }
    Ok(format!("\"{text}\""))
}

/// Why a TCP connection to `host:port` fails, if it does (to explain an ssh failure).
async fn probe_tcp(host: &str, port: u16) -> Option<String> {
    crate::remote::reach::probe(host, port, CONNECT_TIMEOUT)
        .await
        .err()
        .map(|u| u.why.to_string())
}

/// What a failed SSH contact means, with ssh's own words (`cause`) kept at the end.
fn explain_connect_error(
    identity: &Identity,
    host: &str,
    port: u16,
    cause: &str,
    tcp_problem: Option<String>,
) -> anyhow::Error {
    let kh = identity.known_hosts.display();
    let cause = cause.trim();
    let what = if cause.contains("IDENTIFICATION HAS CHANGED") || cause.contains("Host key verification failed") {
        format!(
            "the host key of {host}:{port} does not match the key pinned in `{kh}`: refusing to connect \
             (someone may be impersonating the machine)\n\
             hint: if the machine was legitimately re-created, forget the old key with \
             `ssh-keygen -R '{}' -f {kh}`",
            Identity::pin_name(host, port)
        )
    } else if cause.contains("Permission denied") {
        format!(
            "root@{host}:{port} refused our key `{}`\nhint: authorize `{}` in the machine's /root/.ssh/authorized_keys",
            identity.key.display(),
            identity.public_key_file.display()
        )
    } else if let Some(problem) = tcp_problem {
        format!("cannot reach {host}:{port}: {problem}\nhint: check the address and the port, and that sshd runs there")
    } else {
        format!("ssh to {host}:{port} failed")
    };
    anyhow::anyhow!("{what}\ncause: {cause}")
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of `{}`", path.display()))
}

fn write_if_changed(path: &Path, text: &str) -> anyhow::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    crate::sys::fs_atomic::write_atomic(path, text.as_bytes())
        .with_context(|| format!("cannot write `{}`", path.display()))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests run ssh and sh directly
mod tests {
    use super::*;

    #[test]
    fn a_login_is_root_or_a_user_through_sudo() {
        assert_eq!(
            Login::split("192.0.2.1", true).unwrap(),
            (Login::default(), "192.0.2.1".to_string())
        );
        let (ops, host) = Login::split("ops@192.0.2.1", true).unwrap();
        assert_eq!((ops.user.as_str(), ops.sudo, host.as_str()), ("ops", true, "192.0.2.1"));
        assert!(!Login::split("root@h", true).unwrap().0.sudo, "root needs no sudo");
        assert!(!Login::split("ops@h", false).unwrap().0.sudo);
        for bad in ["@h", "-oProxyCommand=x@h", "a b@h", "o;p@h"] {
            assert!(Login::split(bad, true).is_err(), "{bad}");
        }
        assert_eq!(Login::recorded(None), Login::default());
        assert_eq!(Login::recorded(Some("root")), Login::default());
        assert!(Login::recorded(Some("ops")).sudo);
    }

    fn identity(dir: &Path) -> Identity {
        Identity {
            key: dir.join("id_ed25519"),
            public_key_file: dir.join("id_ed25519.pub"),
            known_hosts: dir.join("known_hosts"),
            config: dir.join("ssh_config"),
        }
    }

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFqw/6zEYakaaCZwy6sOWe445FZOdvYrb6M7St3bWcIP";
    const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDMNUBv6HFT7ZotG5201c9nhyQToYkueoJqUslnlC+e2";

    #[test]
    fn connect_errors_keep_ssh_s_own_words() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(dir.path());
        let denied = explain_connect_error(&id, "h", 22, "root@h: Permission denied (publickey).", None).to_string();
        assert!(
            denied.contains("refused our key") && denied.contains("Permission denied (publickey)"),
            "{denied}"
        );
        let other = explain_connect_error(
            &id,
            "h",
            22,
            "kex_exchange_identification: read: Connection reset",
            None,
        );
        assert!(other.to_string().contains("Connection reset"), "{other}");
        let tcp = explain_connect_error(&id, "h", 22, "ssh: connect: No route to host", Some("no route".into()));
        assert!(
            tcp.to_string().contains("cannot reach h:22: no route") && tcp.to_string().contains("No route to host")
        );
    }

    #[test]
    fn ssh_config_paths_are_quoted() {
        assert_eq!(config_quote(Path::new("/a b/id")).unwrap(), "\"/a b/id\"");
        assert!(config_quote(Path::new("/a\"b")).is_err());
        // ssh itself reads the quoted path with its space.
        let dir = tempfile::tempdir().unwrap();
        let spaced = dir.path().join("my cache");
        std::fs::create_dir_all(&spaced).unwrap();
        let config = spaced.join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host *\n    IdentityFile {}\n",
                config_quote(&spaced.join("id_ed25519")).unwrap()
            ),
        )
        .unwrap();
        let out = std::process::Command::new("ssh")
            .args(["-G", "-F"])
            .arg(&config)
            .arg("example.invalid")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            text.lines()
                .any(|l| l == format!("identityfile {}", spaced.join("id_ed25519").display())),
            "{text}"
        );
    }

    #[test]
    fn concurrent_pins_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(dir.path());
        for i in 0..12 {
            id.pin(&format!("10.0.0.{i}"), 22, KEY_B).unwrap();
        }
        // Re-pinning rewrites the file (the old line goes) while the others append.
        std::thread::scope(|s| {
            for i in 0..12 {
                let id = &id;
                s.spawn(move || id.pin(&format!("10.0.0.{i}"), 22, KEY_A).unwrap());
            }
        });
        let text = std::fs::read_to_string(&id.known_hosts).unwrap();
        for i in 0..12 {
            assert!(
                text.contains(&format!("10.0.0.{i} {KEY_A}")),
                "10.0.0.{i} lost:\n{text}"
            );
        }
        assert_eq!(text.lines().count(), 12);
    }

    #[test]
    fn a_trial_contact_keeps_only_the_new_pins() {
        let dir = tempfile::tempdir().unwrap();
        let known_hosts = dir.path().join("cache/known_hosts");
        // No known_hosts yet: the copy is empty, and nothing is made until pins are kept.
        let trial = trial_pins(&known_hosts).unwrap();
        assert_eq!(std::fs::read_to_string(trial.path()).unwrap(), "");
        assert!(!dir.path().join("cache").exists());
        std::fs::write(trial.path(), format!("10.0.0.1 {KEY_A}\n")).unwrap();
        keep_new_pins(trial.path(), &known_hosts).unwrap();
        assert_eq!(
            std::fs::read_to_string(&known_hosts).unwrap(),
            format!("10.0.0.1 {KEY_A}\n")
        );
        // A second contact copies the pins, learns one more; only that one is appended.
        let trial = trial_pins(&known_hosts).unwrap();
        let mut text = std::fs::read_to_string(trial.path()).unwrap();
        text.push_str(&format!("[10.0.0.2]:2222 {KEY_B}\n"));
        std::fs::write(trial.path(), text).unwrap();
        keep_new_pins(trial.path(), &known_hosts).unwrap();
        assert_eq!(
            std::fs::read_to_string(&known_hosts).unwrap(),
            format!("10.0.0.1 {KEY_A}\n[10.0.0.2]:2222 {KEY_B}\n")
        );
    }

    #[test]
    fn a_recorded_key_is_pinned_once_and_replaces_another() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(dir.path());
        id.pin("10.0.0.1", 2222, KEY_B).unwrap();
        id.pin_recorded("10.0.0.1", 2222, KEY_A).unwrap();
        id.pin_recorded("10.0.0.1", 2222, KEY_A).unwrap();
        let text = std::fs::read_to_string(&id.known_hosts).unwrap();
        assert_eq!(text.trim(), format!("[10.0.0.1]:2222 {KEY_A}"));
        assert!(id.pin_recorded("10.0.0.1", 22, "garbage").is_err());
    }
}
