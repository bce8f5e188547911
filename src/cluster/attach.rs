//! `attach`: a second workstation takes up a cluster another one built, through any member.
//!
//! 1. The member is reached as the user reaches it with plain ssh (the user's own keys or
//!    ssh-agent), its host key pinned on first contact (or checked against `--host-key`).
//! 2. Over that session: the cluster's token is read (it never shows: it travels in the
//!    session, lands in `<cache-dir>/consul_token`, 0600), and the member's consul is reached
//!    through a tunnel, which must see a leader.
//! 3. This cache dir's workstation name and key (made here if missing) are registered in the
//!    shared config (`raptiformica/workstations/<name>/`): every node's agent authorizes the
//!    key (see [`crate::agent::access`]), so this workstation reaches every node with a key of
//!    its own, also those that join later.
//! 4. Only then, here: the cluster's shared config is taken into the cache as the cluster's
//!    data, never its commands (see [`crate::config::trust`]); the known hosts come with the
//!    neighbours' recorded host keys, pinned on each first contact.
//! 5. The member's agent authorizing the key is waited for, so the next command works without
//!    the user's key.
//!
//! Instances stay with the workstation that started them: each records itself as their holder
//! (`held_by`), and `destroy` here removes only this workstation's (see `instances`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::context::Context;
use crate::config::{Mapping, edit, trust};
use crate::consensus::SharedStore as _;
use crate::consensus::api::ConsulApi;
use crate::mesh::neighbours;
use crate::remote::login::Login;
use crate::remote::on_node::on_node;
use crate::remote::reach::{self, hop};
use crate::remote::ssh::{Identity, Remote};
use crate::remote::workstations;
use crate::sys::progress::Progress;

/// The record of an attach: `<cache-dir>/attached.json`.
const RECORD: &str = "attached.json";
/// How long the member's SSH port may take to accept a TCP connection.
const REACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the member's agent may take to authorize our key.
const AUTHORIZE_PATIENCE: Duration = Duration::from_secs(60);

/// What an attach found and did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attached {
    /// The member it went through: its node id, host and port, and the login.
    pub node: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// This workstation's name in the shared config.
    pub workstation: String,
    /// When (unix seconds).
    pub at: u64,
    /// The nodes the shared config lists, and the members alive then.
    #[serde(skip)]
    pub nodes: usize,
    #[serde(skip)]
    pub alive: usize,
}

/// This cache dir's attach record, if it attached to a cluster (rather than building one).
pub fn record(ctx: &Context) -> Option<Attached> {
    let text = std::fs::read_to_string(record_file(ctx)).ok()?;
    serde_json::from_str(&text).ok()
}

fn record_file(ctx: &Context) -> PathBuf {
    ctx.paths.cache_dir.join(RECORD)
}

/// Attaches this cache dir to the cluster `host:port` is a member of.
pub async fn attach(
    ctx: &Context,
    progress: &Progress,
    login: &Login,
    host: &str,
    port: u16,
    host_key: Option<&str>,
) -> anyhow::Result<Attached> {
    refuse_own_cluster(ctx)?;
    let who = hop(host, port);
    let step = progress.step(&who, "reach");
    reach::probe(host, port, REACH_TIMEOUT)
        .await
        .map_err(crate::provision::join::unreachable)?;
    step.done("answers");

    let identity = Identity::ensure(ctx)?;
    if let Some(key) = host_key {
        identity.pin(host, port, key)?;
    }
    let step = progress.step(&who, "connect");
    let remote = Remote::connect_as_user(&identity.known_hosts, login, host, port).await?;
    step.done("host key pinned");
    let result = attach_through(ctx, progress, &identity, &remote, &who).await;
    remote.close().await;
    result
}

/// A cache dir that built a cluster of its own (it knows nodes and never attached) keeps it.
fn refuse_own_cluster(ctx: &Context) -> anyhow::Result<()> {
    if record(ctx).is_some() {
        return Ok(());
    }
    let config = ctx.config()?;
    let known = neighbours::all(&config.mapping).len();
    if known > 0 {
        bail!(
            "this cache dir (`{}`) already drives a cluster of its own ({known} node(s) under `{}`): attach from \
             another one (--cache-dir DIR, or RAPTIFORMICA_CACHE_DIR)",
            ctx.paths.cache_dir.display(),
            neighbours::NEIGHBOURS
        );
    }
    Ok(())
}

async fn attach_through(
    ctx: &Context,
    progress: &Progress,
    identity: &Identity,
    remote: &Remote,
    who: &str,
) -> anyhow::Result<Attached> {
    let step = progress.step(who, "read the cluster's token");
    let token = read_token(remote).await?;
    if let Some(ours) = crate::consensus::acl::read_token(&ctx.paths)
        && ours != token
    {
        bail!(
            "this cache dir (`{}`) holds the token of another cluster: attach from another one (--cache-dir DIR)",
            ctx.paths.cache_dir.display()
        );
    }
    crate::consensus::api::use_token(token.clone());
    step.done("");

    let step = progress.step(who, "reach its consul");
    let port = remote
        .forward_local(std::net::SocketAddr::from(([127, 0, 0, 1], 8500)))
        .await?;
    let api = ConsulApi::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30))?;
    if api.leader().await.ok().flatten().is_none() {
        bail!("the consul of {who} sees no leader: attach through another member, or once the cluster has healed");
    }
    let node = api.agent_self().await?["Config"]["NodeName"]
        .as_str()
        .map(str::to_string)
        .context("the member's consul does not say its node name")?;
    let kv = api.read_all().await?;
    crate::sys::mapping::validate(&kv).map_err(|e| anyhow::anyhow!("the cluster's shared config is not valid: {e}"))?;
    let alive = api.alive_members().await.map(|m| m.len()).unwrap_or(0);
    step.done(&format!("node {node}, {alive} alive member(s)"));

    let step = progress.step(who, "register this workstation's key");
    let name = workstations::own_name(&ctx.paths)?;
    let key = public_key(identity)?;
    let at = crate::sys::clock::unix_now();
    let mut entry = Mapping::new();
    entry.insert(workstations::key(&name, "ssh_key"), Value::from(key.clone()));
    entry.insert(workstations::key(&name, "host"), Value::from(workstations::host_name()));
    entry.insert(workstations::key(&name, "attached_at"), Value::from(at.to_string()));
    crate::config::known::check_all(&entry).map_err(|e| anyhow::anyhow!("{e}"))?;
    api.set_many(&entry).await?;
    step.done(&name);

    // Only now, here: the token, the cluster's data, the record.
    let step = progress.step("local", "take the shared config");
    let file = crate::consensus::acl::token_file(&ctx.paths);
    crate::sys::fs_atomic::write_atomic_creating(&file, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    let mut taken = kv;
    taken.extend(entry);
    let refused = edit::adopt_cluster(&ctx.paths, &taken)?;
    if let Some(notice) = trust::refused_notice(&refused) {
        tracing::warn!("{notice}");
    }
    let nodes = neighbours::all(&taken).len();
    let attached = Attached {
        node,
        host: remote.host.clone(),
        port: remote.port,
        user: remote.login.user.clone(),
        workstation: name,
        at,
        nodes,
        alive,
    };
    let text = serde_json::to_string_pretty(&attached).expect("serializable") + "\n";
    crate::sys::fs_atomic::write_atomic(&record_file(ctx), text.as_bytes())?;
    step.done(&format!("{nodes} node(s) known"));

    let step = progress.step(who, "wait for the key on the member");
    wait_authorized(remote, &key).await?;
    step.done("authorized");
    Ok(attached)
}

/// The cluster's token as the member keeps it; an error says why a machine is no member.
async fn read_token(remote: &Remote) -> anyhow::Result<String> {
    let out = remote
        .run(
            "reading the cluster's token",
            &on_node(
                r#"command -v raptiformica >/dev/null || { echo "raptiformica is not installed on this machine: is it a cluster member?" >&2; exit 3; }
                [ -f "$RAPTIFORMICA_CACHE_DIR/mesh/consul.json" ] || { echo "this machine runs no consul of a cluster: is it meshed (raptiformica members)?" >&2; exit 3; }
                cat "$RAPTIFORMICA_CACHE_DIR/consul_token""#,
            ),
        )
        .await?;
    let token = out.stdout.trim();
    uuid::Uuid::parse_str(token).context("the member's token file does not hold a token")?;
    Ok(token.to_string())
}

/// This workstation's public key, `type base64`.
fn public_key(identity: &Identity) -> anyhow::Result<String> {
    let file = identity.key.with_extension("pub");
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read `{}`", file.display()))?;
    Ok(crate::sys::digest::host_key_fields(&text))
}

/// Waits until the member's agent has authorized `key` for root (and for the login, when it
/// is another user).
async fn wait_authorized(remote: &Remote, key: &str) -> anyhow::Result<()> {
    let blob = key.split_whitespace().nth(1).unwrap_or(key);
    let mut files = vec!["/root/.ssh/authorized_keys".to_string()];
    if !remote.login.is_root() {
        files.push(format!("~{}/.ssh/authorized_keys", remote.login.user));
    }
    let script = files
        .iter()
        .map(|f| format!("grep -qF {} {f}", crate::sys::quote::quote(blob)))
        .collect::<Vec<_>>()
        .join(" && ");
    let deadline = tokio::time::Instant::now() + AUTHORIZE_PATIENCE;
    loop {
        if remote.sh(&script, None).await?.success() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "the member's agent did not authorize this workstation's key within {} s (is its agent running? \
                 `raptiformica agent --status` there); the key is registered and every node's agent takes it up",
                AUTHORIZE_PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
