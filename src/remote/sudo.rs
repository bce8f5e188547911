//! A sudo user whose sudo wants a password (`slave user@host --sudo --ask-sudo-password`): the
//! password is asked once, here, on the terminal (or read as one line from stdin when there is
//! none), handed to sudo on its stdin once (`sudo -S`, never on a command line or in a log), to
//! give the user sudo without a password on that machine: a drop-in
//! `/etc/sudoers.d/raptiformica-<user>` (checked with `visudo -c` before it is put in place), so
//! every later contact, from any workstation or node, runs `sudo -n` as for a NOPASSWD user.
//! `clean` on the node removes it.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::login::Login;
use super::ssh::{Identity, Remote};
use crate::sys::quote::quote;

/// A sudo password, only ever in memory; it never prints.
#[derive(Clone)]
pub struct SudoPassword(String);

impl std::fmt::Debug for SudoPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SudoPassword(<secret>)")
    }
}

impl SudoPassword {
    /// Asks for `user@host`'s sudo password on the terminal, without echo; without a
    /// terminal, reads one line from stdin.
    pub fn ask(user: &str, host: &str) -> anyhow::Result<Self> {
        let password = if std::io::stdin().is_terminal() {
            rpassword::prompt_password(format!("[sudo] password for {user}@{host}: "))
                .context("cannot read the sudo password from the terminal")?
        } else {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the sudo password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        };
        if password.is_empty() {
            bail!("no sudo password was given for {user}@{host}");
        }
        Ok(Self(password))
    }

    /// What goes on sudo's stdin.
    pub(super) fn line(&self) -> String {
        format!("{}\n", self.0)
    }
}

/// Connects as `login` (a sudo user), first giving it sudo without a password there with
/// `password` when its sudo asks for one; then as [`Remote::connect_as`].
pub async fn connect_granting(
    identity: &Identity,
    login: &Login,
    (host, port, via): (&str, u16, &[String]),
    patience: Duration,
    password: &SudoPassword,
) -> anyhow::Result<Remote> {
    let plain = Login {
        user: login.user.clone(),
        sudo: false,
    };
    let remote = Remote::connect_patiently(identity, &plain, host, port, via, patience).await?;
    let granted = async {
        if remote.sh("sudo -n true", None).await?.success() {
            return Ok(());
        }
        let user = quote(&login.user);
        let script = format!(
            "t=$(mktemp) && printf '%s ALL=(ALL) NOPASSWD:ALL\\n' {user} >\"$t\" && visudo -cqf \"$t\" && \
             install -m 0440 \"$t\" /etc/sudoers.d/raptiformica-{user}; rc=$?; rm -f \"$t\"; exit $rc"
        );
        let out = remote.sudo_with_password(password, &script).await?;
        if !out.success() {
            bail!(
                "{}@{host}:{port}: sudo did not take the password, or the user may not use sudo ({})",
                login.user,
                out.stderr.trim()
            );
        }
        anyhow::Ok(())
    }
    .await;
    remote.close().await;
    granted?;
    Remote::connect_as(identity, login, host, port, via).await
}

/// For a sudo login: whether sudo runs a command as root without a password (`sudo -n`),
/// else an error naming the user and the host, with the sudoers line to add (the session is
/// closed then).
pub(super) async fn check(remote: Remote) -> anyhow::Result<Remote> {
    if !remote.login.sudo {
        return Ok(remote);
    }
    let out = remote.sh("true", None).await?;
    if out.success() {
        return Ok(remote);
    }
    let (user, host, port) = (remote.login.user.clone(), remote.host.clone(), remote.port);
    remote.close().await;
    bail!(
        "{user}@{host}:{port} cannot run commands as root with sudo: {}\nhint: give {user} sudo \
         without a password (a line `{user} ALL=(ALL) NOPASSWD:ALL` in /etc/sudoers.d/{user}; `slave \
         --ask-sudo-password` does it with the password, once), or log in as root",
        out.stderr.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_prints() {
        let p = SudoPassword("hunter2".into());
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(p.line(), "hunter2\n");
    }
}
