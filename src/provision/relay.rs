//! `slave --from-member`: a member of the cluster slaves the machine, so the upload (the
//! binary, the artifacts, the modules: 22 MB from nothing) comes from the member, nearer the
//! machine than a workstation behind a home uplink, and this workstation sends next to nothing.
//!
//! 1. The machine is reached from here as a slave would (its host key pinned on first contact,
//!    or checked against `--host-key`; as root or a sudo user), and its host key is read there.
//! 2. A known member that answers gives its raptiformica key (made there if missing).
//! 3. That key is authorized on the machine for the login, from here.
//! 4. The member uploads and provisions (`slave --no-assimilate`), pinning the host key read in
//!    1 (nothing trusted on first use on the member either), as the same login.
//! 5. This workstation assimilates the machine as `slave` would (its entry, `mesh` there and on
//!    the other nodes before consensus): a few KB, and the nodes need no key of each other.

use anyhow::{Context as _, bail};

use super::slave::SlaveOptions;
use crate::config::context::Context;
use crate::mesh::neighbours;
use crate::remote::login::Login;
use crate::remote::ssh::{Identity, Remote};
use crate::sys::progress::Progress;
use crate::sys::quote::quote;

/// How many members are asked before giving up.
const TRIES: usize = 3;

/// Has a member slave `host:port` (see the module's doc). Returns the member's node id.
pub async fn slave_from_member(
    ctx: &Context,
    identity: &Identity,
    progress: &Progress,
    host: &str,
    port: u16,
    opts: &SlaveOptions,
) -> anyhow::Result<String> {
    if !opts.via.is_empty() {
        bail!("--from-member reaches the machine from a member directly: leave out --via");
    }
    let who = crate::remote::reach::hop(host, port);
    let step = progress.step(&who, "connect");
    if let Some(key) = &opts.host_key {
        identity.pin(host, port, key)?;
    }
    let target = Remote::connect_as(identity, &opts.login, host, port, &[])
        .await
        .with_context(|| format!("slaving {who} failed at step `connect`"))?;
    step.done("host key pinned");
    let result = async {
        let host_key = target
            .run("reading its host key", "cat /etc/ssh/ssh_host_ed25519_key.pub")
            .await
            .map(|out| crate::sys::digest::host_key_fields(&out.stdout))?;
        let step = progress.step(&who, "find a member");
        let (member, member_key) = a_member(ctx, identity).await?;
        step.done(&format!("node {}", member.id));
        let step = progress.step(&who, "authorize the member's key");
        authorize(&target, &opts.login, &member_key).await?;
        step.done("");
        anyhow::Ok((host_key, member))
    }
    .await;
    target.close().await;
    let (host_key, member) = result?;

    let step = progress.step(&who, &format!("slave from node {}", member.id));
    let command = slave_command(host, port, &host_key, opts);
    let remote = Remote::connect_known(identity, &member).await?;
    let slaved = super::join::slave_on_member(ctx, &remote, &command).await;
    remote.close().await;
    slaved?;
    step.done("");
    if opts.assimilate {
        super::slave::inject_as(
            ctx,
            identity,
            progress,
            (host, port, &opts.login),
            opts.server_type.as_deref(),
            opts.after_mesh,
        )
        .await?;
        if opts.after_assimilate {
            let config = ctx.config()?;
            crate::sys::process::blocking(|| crate::modules::hooks::fire(ctx, &config, "after_assimilate"));
        }
    }
    Ok(member.id)
}

/// The first known member (of up to [`TRIES`]) that answers, and its raptiformica key.
async fn a_member(ctx: &Context, identity: &Identity) -> anyhow::Result<(neighbours::Neighbour, String)> {
    let config = ctx.config()?;
    let mut failures = Vec::new();
    for n in neighbours::all(&config.mapping)
        .into_iter()
        .filter(|n| n.host.is_some())
        .take(TRIES)
    {
        let asked = async {
            let remote = Remote::connect_known(identity, &n).await?;
            let key = super::join::member_key(&remote).await;
            remote.close().await;
            key
        }
        .await;
        match asked {
            Ok(key) => return Ok((n, key)),
            Err(e) => failures.push(format!("  {}: {e:#}", n.id)),
        }
    }
    if failures.is_empty() {
        bail!(
            "this machine knows no member to serve the machine (none under `{}`): slave it without --from-member",
            neighbours::NEIGHBOURS
        );
    }
    bail!("no member answered:\n{}", failures.join("\n"))
}

/// Authorizes `key` (`type base64`) on the machine for `login` (once).
async fn authorize(target: &Remote, login: &Login, key: &str) -> anyhow::Result<()> {
    crate::config::known::check_public_key(key).map_err(|e| anyhow::anyhow!("the member's key: {e}"))?;
    let blob = key.split_whitespace().nth(1).unwrap_or(key);
    let script = format!(
        r#"set -e
        u={user}
        h=$(getent passwd "$u" | cut -d: -f6)
        [ -n "$h" ] || {{ echo "no user $u" >&2; exit 1; }}
        mkdir -p "$h/.ssh" && chmod 700 "$h/.ssh"
        touch "$h/.ssh/authorized_keys" && chmod 600 "$h/.ssh/authorized_keys"
        grep -qF {blob} "$h/.ssh/authorized_keys" || printf '%s raptiformica-member\n' {key} >>"$h/.ssh/authorized_keys"
        chown "$u" "$h/.ssh" "$h/.ssh/authorized_keys""#,
        user = quote(&login.user),
        blob = quote(blob),
        key = quote(key)
    );
    target.run("authorizing the member's key", &script).await.map(drop)
}

/// The `raptiformica slave` line the member runs.
fn slave_command(host: &str, port: u16, host_key: &str, opts: &SlaveOptions) -> String {
    let target = if opts.login.is_root() {
        host.to_string()
    } else {
        format!("{}@{host}", opts.login.user)
    };
    let mut command = format!(
        "raptiformica slave {} --port {port} --host-key {}",
        quote(&target),
        quote(host_key)
    );
    if opts.login.sudo {
        command.push_str(" --sudo");
    }
    if let Some(s) = &opts.server_type {
        command.push_str(&format!(" --server-type {}", quote(s)));
    }
    if !opts.provision {
        command.push_str(" --no-provision");
    }
    // This workstation assimilates it (see the module's doc).
    command.push_str(" --no-assimilate");
    command
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_member_slaves_as_we_would() {
        let mut opts = SlaveOptions::fresh("headless", Duration::ZERO);
        opts.login = Login {
            user: "ops".into(),
            sudo: true,
        };
        opts.after_mesh = false;
        let line = slave_command("10.0.0.5", 2222, "ssh-ed25519 AAAAkey", &opts);
        assert_eq!(
            line,
            "raptiformica slave 'ops@10.0.0.5' --port 2222 --host-key 'ssh-ed25519 AAAAkey' --sudo \
             --server-type 'headless' --no-assimilate"
        );
        let root = slave_command(
            "10.0.0.5",
            22,
            "ssh-ed25519 AAAAkey",
            &SlaveOptions::fresh("x", Duration::ZERO),
        );
        assert!(
            root.starts_with("raptiformica slave '10.0.0.5' --port 22 ") && !root.contains("--sudo"),
            "{root}"
        );
    }
}
