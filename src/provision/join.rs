//! `join`: this machine, not in the cluster yet, asks a member to slave it.
//!
//! The member is reached first, and nothing changes on this machine until it has been:
//! 1. a TCP probe of the member's SSH port: a refusal, a silence or an unknown name ends the
//!    join at once, with what to check;
//! 2. the member is reached as the user reaches it with plain ssh (the user's keys or agent),
//!    its host key pinned in our `known_hosts` on first contact (kept only once the login
//!    worked);
//! 3. over that session the member's raptiformica key (made there if missing) is read, and the
//!    member says which address this machine comes from;
//! 4. only then, here: sshd must answer (it is started if it is not running) and the member's
//!    key is authorized for root;
//! 5. the member slaves this machine, pinning the host key this machine read from its own
//!    sshd (`slave --host-key`): pinned both ways, nothing trusted on first use.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::context::Context;
use crate::remote::on_node::on_node;
use crate::remote::reach::hop;
use crate::remote::reach::{self, Silence, Unreachable};
use crate::remote::ssh::Remote;
use crate::sys::progress::Progress;
use crate::sys::quote::quote;

/// How long the member may take to slave this machine.
const SLAVE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long the member's SSH port may take to accept a TCP connection (a refusal ends the
/// wait at once).
const REACH_TIMEOUT: Duration = Duration::from_secs(5);
/// This machine's sshd.
const SSHD_PORT: u16 = 22;
const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key.pub";

pub struct JoinOptions {
    pub server_type: Option<String>,
    /// Who to reach the member as (`join user@host --sudo`: a sudo user there).
    pub login: crate::remote::login::Login,
    /// The user the member logs in as here, with sudo without a password (`--user`), for a
    /// machine that refuses root logins; None: root.
    pub user: Option<String>,
}

pub async fn join(ctx: &Context, progress: &Progress, host: &str, port: u16, opts: &JoinOptions) -> anyhow::Result<()> {
    let who = hop(host, port);
    let step = progress.step(&who, "reach");
    reach::probe(host, port, REACH_TIMEOUT).await.map_err(unreachable)?;
    step.done("answers");

    let step = progress.step(&who, "connect");
    let remote = Remote::connect_as_user(&ctx.paths.cache_dir.join("known_hosts"), &opts.login, host, port).await?;
    step.done("host key pinned");

    let result = join_through(ctx, progress, &remote, &who, opts).await;
    remote.close().await;
    result
}

/// A member that does not answer, with what to check (`join`, `attach`).
pub fn unreachable(u: Unreachable) -> anyhow::Error {
    let hint = match u.why {
        Silence::Refused => "is the member's sshd running, and is the port right (-p)?",
        Silence::Unresolved(_) => "is the member's name right?",
        Silence::NotSsh(_) => "is the member up, and is the port right (-p)? it must be its SSH port",
        _ => "is the member's address right, is it up, and does no firewall drop SSH (and is the port right, -p)?",
    };
    anyhow::anyhow!("{u}: {hint}\nnothing was changed on this machine")
}

/// Over the member's session: the key exchange, then (only now) this machine's sshd and the
/// member's key authorized here, then the member slaves this machine.
async fn join_through(
    ctx: &Context,
    progress: &Progress,
    remote: &Remote,
    who: &str,
    opts: &JoinOptions,
) -> anyhow::Result<()> {
    let step = progress.step(who, "exchange keys");
    let (member_key, me) = exchange(remote).await?;
    // Through sudo the member's SSH_CONNECTION is gone: the address this machine leaves from.
    let me = match me {
        Some(me) => me,
        None => source_address(&remote.host, remote.port)
            .context("cannot tell the address the member reaches this machine at")?,
    };
    step.done(&format!("the member reaches this machine at {me}"));
    if let Some(user) = &opts.user {
        crate::sys::process::blocking(|| user_can_sudo(user))?;
    }

    let step = progress.step("local", "sshd");
    let how = crate::sys::process::blocking(ensure_sshd)?;
    step.done(&how);
    let host_key = own_host_key()?;
    let step = progress.step("local", "authorize the member's key");
    crate::sys::process::blocking(|| authorize(&member_key, opts.user.as_deref()))?;
    step.done(opts.user.as_deref().unwrap_or("root"));

    let step = progress.step(who, &format!("slave {me} from the member"));
    let target = match &opts.user {
        Some(u) => format!("{u}@{me} --sudo"),
        None => me.clone(),
    };
    let mut command = format!(
        "raptiformica slave {target} --port {SSHD_PORT} --host-key {}",
        quote(&host_key)
    );
    if let Some(s) = &opts.server_type {
        command.push_str(&format!(" --server-type {}", quote(s)));
    }
    slave_on_member(ctx, remote, &command).await?;
    step.done("");
    Ok(())
}

/// Runs `command` (a `raptiformica slave ...` line) on the member; its output shows under -v.
pub(super) async fn slave_on_member(ctx: &Context, remote: &Remote, command: &str) -> anyhow::Result<()> {
    let out = remote
        .run_limited(
            "`raptiformica slave` on the member",
            &on_node(command),
            None,
            SLAVE_TIMEOUT,
        )
        .await?;
    if ctx.verbose > 0 {
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            eprintln!("  | {line}");
        }
    }
    Ok(())
}

/// Reads the member's raptiformica key (made there if missing) and the address the member
/// sees this machine at; changes nothing here.
async fn exchange(remote: &Remote) -> anyhow::Result<(String, Option<String>)> {
    let script = format!("{MEMBER_KEY}\necho \"from ${{SSH_CONNECTION%% *}}\"");
    let out = remote.run("reading the member's key", &on_node(&script)).await?;
    parse_exchange(&out.stdout)
}

/// Prints `key <the member's raptiformica public key>`, made there if missing.
const MEMBER_KEY: &str = r#"command -v raptiformica >/dev/null || { echo "raptiformica is not installed on this machine: is it a cluster member?" >&2; exit 3; }
k="$RAPTIFORMICA_CACHE_DIR/id_ed25519"
[ -f "$k" ] || { mkdir -p "$RAPTIFORMICA_CACHE_DIR" && ssh-keygen -q -t ed25519 -N '' -C raptiformica -f "$k"; } >&2
echo "key $(cat "$k.pub")""#;

/// The member's raptiformica public key (`type base64`), made there if missing (`slave
/// --from-member`).
pub async fn member_key(remote: &Remote) -> anyhow::Result<String> {
    let out = remote.run("reading the member's key", &on_node(MEMBER_KEY)).await?;
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .map(crate::sys::digest::host_key_fields)
        .filter(|k| k.starts_with("ssh-"))
        .context("the member printed no public key")
}

/// This machine's host key (`type base64`), as its sshd presents it.
fn own_host_key() -> anyhow::Result<String> {
    let host_key = std::fs::read_to_string(HOST_KEY)
        .with_context(|| format!("cannot read this machine's host key `{HOST_KEY}`"))?;
    Ok(crate::sys::digest::host_key_fields(&host_key))
}

/// The member's public key and the address it sees this machine at (None when it cannot
/// tell: no SSH_CONNECTION under sudo), from the exchange script.
fn parse_exchange(stdout: &str) -> anyhow::Result<(String, Option<String>)> {
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key "))
        .map(str::trim)
        .filter(|k| k.starts_with("ssh-"))
        .context("the member printed no public key")?;
    let me = stdout
        .lines()
        .find_map(|l| l.strip_prefix("from "))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    Ok((key.to_string(), me))
}

/// The address this machine reaches `host:port` from (a TCP connection's local end).
fn source_address(host: &str, port: u16) -> Option<String> {
    use std::net::ToSocketAddrs as _;
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let stream = std::net::TcpStream::connect_timeout(&addr, REACH_TIMEOUT).ok()?;
    Some(stream.local_addr().ok()?.ip().to_string())
}

/// Whether `user` may run commands as root with sudo without a password here (what the member
/// runs as that user needs root); an error saying what to add.
fn user_can_sudo(user: &str) -> anyhow::Result<()> {
    crate::config::known::check_user(user).map_err(anyhow::Error::msg)?;
    if crate::remote::workstations::authorized_keys_of(user).is_none() {
        bail!("there is no user `{user}` on this machine; nothing was changed here");
    }
    let sudo = crate::sys::process::Shell::new("the user's sudo", "runuser -u \"$U\" -- sudo -n true")
        .env("U", user)
        .output()?;
    if !sudo.success() {
        bail!(
            "{user} cannot run commands as root with sudo without a password here\nhint: a line `{user} ALL=(ALL) \
             NOPASSWD:ALL` in /etc/sudoers.d/{user}; nothing was changed on this machine"
        );
    }
    Ok(())
}

/// Authorizes `key` here (once) for root, or for `user` (checked by [`user_can_sudo`]).
fn authorize(key: &str, user: Option<&str>) -> anyhow::Result<()> {
    let (file, owner) = match user {
        None => {
            let home = std::env::var_os("HOME").map_or_else(|| "/root".into(), std::path::PathBuf::from);
            (home.join(".ssh/authorized_keys"), None)
        }
        Some(user) => {
            let (file, uid, gid) = crate::remote::workstations::authorized_keys_of(user)
                .with_context(|| format!("there is no user `{user}` on this machine"))?;
            (file, Some((uid, gid)))
        }
    };
    authorize_in(&file, owner, key)
}

/// Adds `key` to the `authorized_keys` `file` unless it is there (see
/// [`crate::remote::workstations::write_authorized_keys`] for `owner`).
fn authorize_in(file: &std::path::Path, owner: Option<(u32, u32)>, key: &str) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(file).unwrap_or_default();
    let blob = key.split_whitespace().nth(1).unwrap_or(key);
    if !text.lines().any(|l| l.split_whitespace().any(|w| w == blob)) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(key);
        text.push('\n');
    }
    crate::remote::workstations::write_authorized_keys(file, owner, &text)
}

/// Whether an sshd, or the ssh-keygen that comes before it, runs here.
fn starting_sshd() -> bool {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .any(|pid| {
                    crate::sys::daemon::process_named(pid, "sshd")
                        || crate::sys::daemon::process_named(pid, "ssh-keygen")
                })
        })
        .unwrap_or(false)
}

/// Makes sure sshd answers on this machine; starts it if it does not. Says which.
fn ensure_sshd() -> anyhow::Result<String> {
    let answers = || reach::answers_blocking(([127, 0, 0, 1], SSHD_PORT).into(), Duration::from_secs(2));
    if answers() {
        return Ok("running".into());
    }
    // An sshd that is starting (a machine that just booted: its host keys being made) answers
    // in a moment; a second one started now would take the port and make the first one exit.
    // So wait a little in any case, longer while an sshd (or ssh-keygen) runs.
    let patience = if starting_sshd() { 40 } else { 12 };
    for _ in 0..patience {
        std::thread::sleep(Duration::from_millis(250));
        if answers() {
            return Ok("running".into());
        }
    }
    let out = crate::sys::process::Shell::new(
        "starting sshd",
        "mkdir -p /run/sshd && ssh-keygen -A >/dev/null && \
         { service ssh start >/dev/null 2>&1 || /usr/sbin/sshd; }",
    )
    .output()?;
    for _ in 0..20 {
        if answers() {
            return Ok("started".into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "sshd does not answer on port {SSHD_PORT} here and could not be started ({})\n\
         hint: install openssh-server and start it; the member slaves this machine over SSH",
        format!("{}{}", out.stdout, out.stderr).trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exchange_gives_the_key_and_the_address() {
        let (k, me) = parse_exchange("noise\nkey ssh-ed25519 AAAA raptiformica\nfrom 172.18.0.5\n").unwrap();
        assert_eq!(
            (k.as_str(), me.as_deref()),
            ("ssh-ed25519 AAAA raptiformica", Some("172.18.0.5"))
        );
        assert_eq!(parse_exchange("key ssh-ed25519 AAAA\nfrom \n").unwrap().1, None);
        assert!(parse_exchange("from 1.2.3.4\n").is_err());
    }

    #[test]
    fn a_key_is_authorized_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(".ssh");
        let file = dir.join("authorized_keys");
        authorize_in(&file, None, "ssh-ed25519 AAAA member").unwrap();
        authorize_in(&file, None, "ssh-ed25519 AAAA member").unwrap();
        authorize_in(&file, None, "ssh-ed25519 BBBB other").unwrap();
        let text = std::fs::read_to_string(dir.join("authorized_keys")).unwrap();
        assert_eq!(text, "ssh-ed25519 AAAA member\nssh-ed25519 BBBB other\n");
        let mode = std::fs::metadata(dir.join("authorized_keys"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "a folder made here is private");
    }
}
