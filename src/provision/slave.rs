//! Slaving: make an existing machine a raptiformica node over SSH.
//!
//! Steps, each with its own progress line and error context: connect (pinned host key),
//! upload (this binary, the module folders, the artifacts and the cached mutable config, only
//! what changed), provision (the server type's provisioners, run on the machine), the
//! `after_slave` hooks, then assimilation (recording the node as a neighbour in the shared
//! config and the `after_assimilate` hooks). Slaving the same machine again is safe and fast.

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::Config;
use crate::config::context::Context;
use crate::modules::hooks;
use crate::modules::server_type;
use crate::provision::artifacts;
use crate::remote::on_node::on_node;
use crate::remote::ssh::{Identity, Remote};
use crate::sys::progress::Progress;

use super::assimilate::{alive_member, assimilate};
use super::bootstrap::provision;
use super::upload::upload;

/// What to do when slaving.
#[derive(Debug, Clone)]
pub struct SlaveOptions {
    pub server_type: Option<String>,
    pub provision: bool,
    pub assimilate: bool,
    /// How long to keep retrying the first SSH contact (a machine still booting).
    pub patience: Duration,
    /// Jump hosts to reach the machine through (`host:port`, outermost first); recorded in
    /// its neighbour entry so that every later contact takes the same way.
    pub via: Vec<String>,
    /// The machine's host key (`type base64`), vouched for by someone who read it there
    /// (`join`): pinned before the first contact instead of trusted on first use.
    pub host_key: Option<String>,
    /// Leave a machine alone that needs nothing (no file to upload, nothing to provision)
    /// and is an alive member already: no re-mesh (`deploy` re-run on a healthy network).
    pub skip_if_healthy: bool,
    /// The back-end instance it is (set by `spawn`): recorded in its neighbour entry.
    pub machine: Option<crate::mesh::neighbours::Machine>,
    /// Fire the `after_assimilate` hooks (`--no-after-assimilate` says no).
    pub after_assimilate: bool,
    /// Fire the `after_mesh` hooks on the nodes meshed (`--no-after-mesh` says no).
    pub after_mesh: bool,
    /// Who to log in as (`slave user@host --sudo`): recorded in its neighbour entry
    /// (`ssh_user`), so that every later contact logs in the same way.
    pub login: crate::remote::ssh::Login,
    /// The sudo password of a user whose sudo wants one (`--ask-sudo-password`): used once, to
    /// give the user sudo without a password there (see `remote::sudo`).
    pub sudo_password: Option<crate::remote::sudo::SudoPassword>,
}

impl SlaveOptions {
    /// For a machine a compute back-end just started: of `server` type, reached directly,
    /// provisioned and assimilated, its first SSH contact retried for `patience`.
    pub fn fresh(server: &str, patience: Duration) -> Self {
        Self {
            server_type: Some(server.to_string()),
            provision: true,
            assimilate: true,
            patience,
            via: Vec::new(),
            host_key: None,
            skip_if_healthy: false,
            machine: None,
            after_assimilate: true,
            after_mesh: true,
            login: Default::default(),
            sudo_password: None,
        }
    }
}

/// What slaving did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlaveReport {
    /// Files uploaded (0: everything was there).
    pub uploaded: usize,
    /// Provisioners that ran.
    pub provisioned: usize,
    /// Whether it was (re-)meshed.
    pub meshed: bool,
}

impl SlaveReport {
    /// Nothing was done: the machine was complete and a healthy member.
    pub fn unchanged(&self) -> bool {
        self.uploaded == 0 && self.provisioned == 0 && !self.meshed
    }
}

/// Slaves `host:port`.
pub async fn slave(
    ctx: &Context,
    config: &Config,
    identity: &Identity,
    progress: &Progress,
    host: &str,
    port: u16,
    opts: &SlaveOptions,
) -> anyhow::Result<SlaveReport> {
    let who = format!("{host}:{port}");
    let server = match &opts.server_type {
        Some(s) => s.clone(),
        None => server_type::server_types(config)
            .into_keys()
            .next()
            .context("no server type in the config")?,
    };
    let provisioners = server_type::server_types(config)
        .remove(&server)
        .with_context(|| format!("there is no server type `{server}` (see `raptiformica config get server`)"))?;

    let step = progress.step(&who, "connect");
    if let Some(key) = &opts.host_key {
        identity.pin(host, port, key)?;
    }
    let remote = match &opts.sudo_password {
        Some(password) => {
            crate::remote::sudo::connect_granting(
                identity,
                &opts.login,
                (host, port, &opts.via),
                opts.patience,
                password,
            )
            .await
        }
        None => Remote::connect_patiently(identity, &opts.login, host, port, &opts.via, opts.patience).await,
    }
    .with_context(|| format!("slaving {who} failed at step `connect`"))?;
    step.done("host key pinned");

    let result = async {
        let mut report = SlaveReport::default();
        let step = progress.step(&who, "upload");
        let (summary, changed, uploaded) = upload(ctx, &remote)
            .await
            .with_context(|| format!("slaving {who} failed at step `upload`"))?;
        report.uploaded = changed;
        step.done(&summary);

        if opts.provision {
            for p in &provisioners {
                let step = progress.step(&who, &format!("provision {server}/{}", p.name));
                let ran = provision(ctx, &remote, &server, p, &uploaded)
                    .await
                    .with_context(|| format!("slaving {who} failed at step `provision` ({server}/{})", p.name))?;
                if ran {
                    report.provisioned += 1;
                }
                step.done(if ran { "" } else { "already provisioned" });
            }
        }
        if opts.skip_if_healthy && report.uploaded == 0 && report.provisioned == 0 && opts.assimilate {
            let step = progress.step(&who, "check membership");
            if let Some(id) = alive_member(config, &remote).await {
                step.done(&format!("node {id} is an alive member: unchanged"));
                return Ok(report);
            }
            step.done("not an alive member: meshing");
        }
        let fired = crate::sys::process::blocking(|| hooks::fire(ctx, config, "after_slave"));
        tracing::info!("after_slave: {} handler(s) ran", fired.ran);

        if opts.assimilate {
            let step = progress.step(&who, "assimilate and mesh");
            let summary = assimilate(
                ctx,
                identity,
                &remote,
                Some(&server),
                opts.machine.as_ref(),
                opts.after_mesh,
            )
            .await
            .with_context(|| format!("slaving {who} failed at step `assimilate`"))?;
            if opts.after_assimilate {
                crate::sys::process::blocking(|| hooks::fire(ctx, config, "after_assimilate"));
            }
            report.meshed = true;
            step.done(&summary);
        }
        anyhow::Ok(report)
    }
    .await;
    remote.close().await;
    result
}

/// Registers a machine that runs raptiformica already (slaved before, by another cluster or
/// by hand) as a neighbour and meshes it, without uploading or provisioning anything:
/// `inject`. Returns the assimilation summary.
pub async fn inject(
    ctx: &Context,
    identity: &Identity,
    progress: &Progress,
    host: &str,
    port: u16,
) -> anyhow::Result<String> {
    let login = crate::remote::ssh::Login::default();
    inject_as(ctx, identity, progress, (host, port, &login), None, true).await
}

/// [`inject`] as `login`, recording it as of `server` type (a machine a member just uploaded
/// to and provisioned, `slave --from-member`), firing the `after_mesh` hooks if `after_mesh`.
pub async fn inject_as(
    ctx: &Context,
    identity: &Identity,
    progress: &Progress,
    (host, port, login): (&str, u16, &crate::remote::ssh::Login),
    server: Option<&str>,
    after_mesh: bool,
) -> anyhow::Result<String> {
    let who = format!("{host}:{port}");
    let step = progress.step(&who, "connect");
    let remote = Remote::connect_as(identity, login, host, port, &[]).await?;
    step.done("");
    let result = async {
        let out = remote.sh(&on_node("raptiformica --version"), None).await?;
        if !out.success() {
            bail!("raptiformica is not installed on {who}: slave it instead (`raptiformica slave {host} -p {port}`)");
        }
        let step = progress.step(&who, "assimilate and mesh");
        let summary = assimilate(ctx, identity, &remote, server, None, after_mesh).await?;
        step.done(&summary);
        Ok(summary)
    }
    .await;
    remote.close().await;
    result
}

/// What every slave needs locally first: the artifacts, and a config cache to hand on.
pub fn prepare(ctx: &Context, progress: &Progress) -> anyhow::Result<()> {
    if !artifacts::complete(ctx) {
        let step = progress.step("local", "fetch artifacts (first time only)");
        artifacts::ensure(ctx)?;
        step.done("");
    }
    // A cache to upload, complete and valid: the effective config as it is now, with the
    // cluster's gossip key and ACL token made once, here, before any node needs them.
    crate::consensus::acl::ensure_token(&ctx.paths)?;
    crate::config::edit::update(&ctx.paths, |m| {
        if !m.contains_key(crate::mesh::plan::GOSSIP_KEY) {
            m.insert(
                crate::mesh::plan::GOSSIP_KEY.into(),
                crate::consensus::agent::new_gossip_key()?.into(),
            );
        }
        Ok(())
    })
}
