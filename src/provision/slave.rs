//! Slaving: make an existing machine a raptiformica node over SSH.
//!
//! Steps, each with its own progress line and error context: connect (pinned host key),
//! upload (this binary, the module folders, the artifacts and the cached mutable config, only
//! what changed), provision (the server type's provisioners, run on the machine), the
//! `after_slave` hooks, then assimilation (recording the node as a neighbour in the shared
//! config and the `after_assimilate` hooks). Slaving the same machine again is safe and fast.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::config::context::Context;
use crate::config::{Config, Mapping, MutableCache, mapping::PREFIX};
use crate::mesh::{OverlayIdentity, neighbours};
use crate::modules::hooks;
use crate::modules::server_type;
use crate::provision::artifacts;
use crate::remote::on_node::{REMOTE_BIN, REMOTE_CACHE, on_node};
use crate::remote::ssh::{Identity, Remote, RemoteOutput};
pub use crate::sys::node_id::node_id;
use crate::sys::paths::{BUILTIN_FOLDERS, INSTALL_PREFIX};
use crate::sys::progress::Progress;
use crate::sys::quote::quote;

/// How long `raptiformica mesh` may run on a node (it waits up to 30 s for a leader).
const MESH_TIMEOUT: Duration = Duration::from_secs(180);

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
    let remote = Remote::connect_patiently(identity, host, port, &opts.via, opts.patience)
        .await
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
            if let Some(id) = alive_member(ctx, &remote).await {
                step.done(&format!("node {id} is an alive member: unchanged"));
                return Ok(report);
            }
            step.done("not an alive member: meshing");
        }
        let fired = crate::sys::process::blocking(|| hooks::fire(ctx, config, "after_slave"));
        tracing::info!("after_slave: {} handler(s) ran", fired.ran);

        if opts.assimilate {
            let step = progress.step(&who, "assimilate and mesh");
            let summary = assimilate(ctx, identity, &remote, Some(&server))
                .await
                .with_context(|| format!("slaving {who} failed at step `assimilate`"))?;
            crate::sys::process::blocking(|| hooks::fire(ctx, config, "after_assimilate"));
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
    let who = format!("{host}:{port}");
    let step = progress.step(&who, "connect");
    let remote = Remote::connect(identity, host, port).await?;
    step.done("");
    let result = async {
        let out = remote.sh(&on_node("raptiformica --version"), None).await?;
        if !out.success() {
            bail!("raptiformica is not installed on {who}: slave it instead (`raptiformica slave {host} -p {port}`)");
        }
        let step = progress.step(&who, "assimilate and mesh");
        let summary = assimilate(ctx, identity, &remote, None).await?;
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

/// One file to put on the target.
struct Upload {
    local: PathBuf,
    remote: String,
    sum: String,
}

/// What goes to a target: this binary and the artifacts into its cache's `artifacts/`, the
/// built-in module folders into the install prefix, the user modules and the mutable cache
/// into its cache dir.
/// Also returns the config snapshot's temp file, which must live until the upload is packed.
fn upload_set(ctx: &Context) -> anyhow::Result<(Vec<Upload>, Option<tempfile::NamedTempFile>)> {
    let mut snapshot = None;
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    // The running binary, also after it was replaced on disk (a long-running agent outlives
    // an upgrade or a rebuild): /proc/self/exe still reads it.
    let proc_exe = PathBuf::from("/proc/self/exe");
    let exe = if proc_exe.is_file() {
        proc_exe
    } else {
        std::env::current_exe().context("cannot find this binary")?
    };
    files.push((exe, format!("{REMOTE_CACHE}/artifacts/raptiformica")));
    let art = artifacts::dir(ctx);
    for name in artifacts::BINARIES.iter().copied().chain([artifacts::SUMS, "VERSIONS"]) {
        if art.join(name).is_file() {
            files.push((art.join(name), format!("{REMOTE_CACHE}/artifacts/{name}")));
        }
    }
    if let Some(install) = &ctx.paths.install_dir {
        for folder in BUILTIN_FOLDERS {
            walk(&install.join(folder), &format!("{INSTALL_PREFIX}/{folder}"), &mut files);
        }
    }
    walk(
        &ctx.paths.user_modules_dir(),
        &format!("{REMOTE_CACHE}/modules"),
        &mut files,
    );
    let token = crate::consensus::acl::token_file(&ctx.paths);
    if token.is_file() {
        files.push((token, format!("{REMOTE_CACHE}/{}", crate::consensus::acl::TOKEN_FILE)));
    }
    let cache = MutableCache::new(&ctx.paths.cache_dir);
    if let Some(mapping) = cache.read()? {
        // A snapshot of its own for each upload (concurrent slaves must not share one), sent
        // beside the target's cache and renamed into place there under its lock.
        let var = ctx.paths.cache_dir.join("var");
        std::fs::create_dir_all(&var)?;
        let mut tmp = tempfile::Builder::new().prefix(".outgoing_config.").tempfile_in(&var)?;
        std::io::Write::write_all(&mut tmp, &crate::config::cache::to_bytes(&mapping))?;
        files.push((
            tmp.path().to_path_buf(),
            format!("{REMOTE_CACHE}/mutable_config.json.incoming"),
        ));
        snapshot = Some(tmp);
    }
    let sums = std::fs::read_to_string(art.join(artifacts::SUMS)).unwrap_or_default();
    let uploads = files
        .into_iter()
        .map(|(local, remote)| {
            // Artifacts are big: trust their recorded sums rather than hashing them each time.
            let name = local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let recorded = (local.parent() == Some(art.as_path()))
                .then(|| {
                    sums.lines()
                        .find_map(|l| l.strip_suffix(&format!("  {name}")).map(str::to_string))
                })
                .flatten();
            let sum = match recorded {
                Some(s) => s,
                None => artifacts::sha256_file(&local)?,
            };
            Ok(Upload { local, remote, sum })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((uploads, snapshot))
}

fn walk(dir: &Path, remote: &str, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "var" {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            walk(&path, &format!("{remote}/{name}"), out);
        } else if path.is_file() {
            out.push((path, format!("{remote}/{name}")));
        }
    }
}

/// The machine's node id when it is an alive member of the cluster as its own consul agent
/// sees it, and this machine's config records it as reached the way we reached it now.
async fn alive_member(ctx: &Context, remote: &Remote) -> Option<String> {
    let out = remote
        .sh(
            &on_node(&format!(
                "cat /etc/ssh/ssh_host_ed25519_key.pub && cat {REMOTE_CACHE}/{} 2>/dev/null | tr -d '\\n'; echo; \
                 raptiformica --json members",
                crate::provision::advertise::FILE
            )),
            None,
        )
        .await
        .ok()
        .filter(RemoteOutput::success)?;
    let mut lines = out.stdout.splitn(3, '\n');
    let (first, advertised, rest) = (lines.next()?, lines.next()?, lines.next()?);
    let id = node_id(&first.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
    let (host, port) = match crate::provision::advertise::parse_reported(advertised) {
        Some(a) => (a.host, a.port),
        None => (remote.host.clone(), remote.port),
    };
    let members: Value = serde_json::from_str(rest).ok()?;
    let alive = members
        .as_array()?
        .iter()
        .any(|m| m["node"] == id.as_str() && m["status"] == "alive");
    let config = ctx.config().ok()?;
    let recorded = neighbours::all(&config.mapping).into_iter().find(|n| n.id == id)?;
    let same_way =
        recorded.host.as_deref() == Some(host.as_str()) && recorded.ssh_port == port && recorded.ssh_via == remote.via;
    (alive && same_way).then_some(id)
}

/// Uploads what differs on the target, then links the binaries onto its PATH. Returns a
/// summary, how many files went up, and a digest of what the provisioners run from (see
/// [`provisioned_digest`]).
async fn upload(ctx: &Context, remote: &Remote) -> anyhow::Result<(String, usize, String)> {
    // Hashing and packing are local blocking work: off the async workers.
    let (set, _snapshot) = crate::sys::process::blocking(|| upload_set(ctx))?;
    let digest = provisioned_digest(set.iter().map(|u| (u.sum.as_str(), u.remote.as_str())));
    // Which files does the target lack, or hold another version of?
    let mut manifest = tempfile::tempfile()?;
    for u in &set {
        std::io::Write::write_all(&mut manifest, format!("{} {}\n", u.sum, u.remote).as_bytes())?;
    }
    std::io::Seek::rewind(&mut manifest)?;
    let diff = remote.sh(&crate::remote::files::diff_script(), Some(manifest)).await?;
    if !diff.success() {
        bail!("cannot compare files on the target: {}", diff.stderr.trim());
    }
    let wanted: std::collections::HashSet<&str> = diff.stdout.lines().collect();
    let needed: Vec<&Upload> = set.iter().filter(|u| wanted.contains(u.remote.as_str())).collect();
    let bytes: u64 = needed
        .iter()
        .filter_map(|u| std::fs::metadata(&u.local).ok())
        .map(|m| m.len())
        .sum();
    if !needed.is_empty() {
        let file = crate::sys::process::blocking(|| -> anyhow::Result<std::fs::File> {
            let mut archive = tar::Builder::new(tempfile::tempfile()?);
            archive.follow_symlinks(true);
            for u in &needed {
                archive
                    .append_path_with_name(&u.local, u.remote.trim_start_matches('/'))
                    .with_context(|| format!("cannot pack `{}`", u.local.display()))?;
            }
            let mut file = archive.into_inner()?;
            std::io::Seek::rewind(&mut file)?;
            Ok(file)
        })?;
        let out = remote.sh("tar -x -f - -C / --no-same-owner", Some(file)).await?;
        if !out.success() {
            bail!("unpacking on the target failed: {}", out.stderr.trim());
        }
    }
    remote
        .run(
            "installing the binaries",
            &format!(
                r#"set -e
                chmod 700 {REMOTE_CACHE}
                if [ -f {REMOTE_CACHE}/consul_token ]; then chmod 600 {REMOTE_CACHE}/consul_token; fi
                mkdir -p {REMOTE_BIN}
                for b in raptiformica consul yggdrasil yggdrasilctl; do
                  if [ -f {REMOTE_CACHE}/artifacts/$b ]; then chmod 755 {REMOTE_CACHE}/artifacts/$b; ln -sfn {REMOTE_CACHE}/artifacts/$b {REMOTE_BIN}/$b; fi
                done
                if [ -f {REMOTE_CACHE}/mutable_config.json.incoming ]; then
                  chmod 600 {REMOTE_CACHE}/mutable_config.json.incoming
                  flock {REMOTE_CACHE}/mutable_config.json.lock mv -f {REMOTE_CACHE}/mutable_config.json.incoming {REMOTE_CACHE}/mutable_config.json
                fi
                {record}
                {REMOTE_BIN}/raptiformica --version"#,
                record = crate::remote::files::record_script()
            ),
        )
        .await?;
    let summary = if needed.is_empty() {
        format!("all {} files already there", set.len())
    } else {
        format!("{} of {} files, {:.1} MB", needed.len(), set.len(), bytes as f64 / 1e6)
    };
    // The config snapshot goes up every time (the target renames it into place): it is not a
    // change of what the machine runs.
    let changed = needed.iter().filter(|u| !u.remote.ends_with(".incoming")).count();
    Ok((summary, changed, digest))
}

/// Where a target records the provisioners that ran to completion, one file each
/// (`<server>/<provisioner>`) holding the digest they ran with. Delete it to force a re-run.
pub const PROVISIONED_DIR: &str = "var/provisioned";

/// A digest of the uploaded files a provisioner runs from (path and checksum of each; not the
/// mutable config or the ACL token, which change without changing what gets installed).
/// A machine started from a packaged image holds the same files, so its provisioners are
/// skipped (issue 9); a new binary, artifact or module file makes them run again.
fn provisioned_digest<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<String> = files
        .filter(|(_, path)| !path.ends_with(".incoming") && !path.ends_with(crate::consensus::acl::TOKEN_FILE))
        .map(|(sum, path)| format!("{sum} {path}\n"))
        .collect();
    lines.sort();
    sha256_hex(lines.concat().as_bytes())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs one provisioner on the target: its `source` checked out (if set), then `bootstrap`.
/// Skipped (returns false) when the target's record says it already ran with the same
/// bootstrap and uploaded files; a provisioner with a `source` always runs (its checkout
/// may have moved on).
async fn provision(
    ctx: &Context,
    remote: &Remote,
    server: &str,
    p: &server_type::Provisioner,
    uploaded: &str,
) -> anyhow::Result<bool> {
    let Some(bootstrap) = &p.bootstrap else {
        bail!(
            "provisioner `{server}/{}` has no `bootstrap` command (`{PREFIX}/server/{server}/{}/bootstrap`)",
            p.name,
            p.name
        );
    };
    let checkout = match &p.source {
        Some(source) => {
            let dir = format!("/usr/etc/{}", p.name);
            format!(
                "if [ -d {dir}/.git ]; then git -C {dir} pull -q --ff-only; else git clone -q {src} {dir}; fi\ncd {dir}\n",
                dir = quote(&dir),
                src = quote(source)
            )
        }
        None => format!("cd {INSTALL_PREFIX}\n"),
    };
    let script = format!(
        "set -e\nexport PATH={REMOTE_BIN}:$PATH RAPTIFORMICA_INSTALL_DIR={INSTALL_PREFIX} RAPTIFORMICA_CACHE_DIR={REMOTE_CACHE}\n{checkout}{bootstrap}\n"
    );
    let record = quote(&format!("{REMOTE_CACHE}/{PROVISIONED_DIR}/{server}/{}", p.name));
    let digest = sha256_hex(format!("{script}\n{uploaded}").as_bytes());
    // One round trip: compare the record, else run the bootstrap in a subshell (its `exit`
    // ends only that) and record it once it succeeded.
    let skip = if p.source.is_none() {
        format!("if [ \"$(cat {record} 2>/dev/null)\" = {digest} ]; then echo {ALREADY}; exit 0; fi\n")
    } else {
        String::new()
    };
    let wrapped = format!(
        "{skip}rm -f {record}\n(\n{script})\nrc=$?\n[ $rc -eq 0 ] || exit $rc\nmkdir -p \"$(dirname {record})\"\necho {digest} > {record}\n"
    );
    let out = remote
        .run_limited(&format!("`{server}/{}` bootstrap", p.name), &wrapped, None, p.timeout)
        .await?;
    if out.stdout.trim() == ALREADY {
        return Ok(false);
    }
    if ctx.verbose > 0 {
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            eprintln!("  | {line}");
        }
    }
    Ok(true)
}

/// What the provision script prints when its record matches.
const ALREADY: &str = "raptiformica:already-provisioned";

/// Records the node as a neighbour in the shared config (its SSH address, pinned host key,
/// overlay identity and consul role, under an id derived from its host key, stable across
/// re-slaves and address changes), then meshes it and re-meshes every other known node with
/// the new neighbour, concurrently. Returns a summary.
async fn assimilate(
    ctx: &Context,
    identity: &Identity,
    remote: &Remote,
    server: Option<&str>,
) -> anyhow::Result<String> {
    let out = remote
        .run(
            "reading the host key",
            &format!(
                "cat /etc/ssh/ssh_host_ed25519_key.pub; cat {REMOTE_CACHE}/{} 2>/dev/null || true",
                crate::provision::advertise::FILE
            ),
        )
        .await?;
    let (first, rest) = out.stdout.split_once('\n').unwrap_or((&out.stdout, ""));
    let host_key = first.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let id = node_id(&host_key);
    // The address the node advertises (NAT, a port forward) wins over the one we used.
    let (host, port) = match crate::provision::advertise::parse_reported(rest) {
        Some(a) => (a.host, a.port),
        None => (remote.host.clone(), remote.port),
    };
    let out = remote
        .run(
            "reading the overlay identity",
            &on_node("raptiformica mesh --identity-only"),
        )
        .await?;
    let overlay: OverlayIdentity = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("`raptiformica mesh --identity-only` printed no identity")?;

    let payload = crate::config::edit::update(&ctx.paths, |mapping| {
        // A machine re-created at the same address has a new key: drop its old entry.
        neighbours::remove_where(mapping, |n| {
            n.id != id && n.host.as_deref() == Some(host.as_str()) && n.ssh_port == port
        });
        let role = match mapping
            .get(&neighbours::key(&id, "consul_role"))
            .and_then(Value::as_str)
        {
            Some(r @ ("server" | "client")) => r.to_string(),
            _ => neighbours::role_for_new(mapping, &id, crate::mesh::plan::servers(mapping)?)
                .as_str()
                .to_string(),
        };
        let fields = [
            ("host", host.clone()),
            ("ssh_port", port.to_string()),
            ("ssh_host_key", host_key.clone()),
            ("yggdrasil_public_key", overlay.public_key.clone()),
            ("yggdrasil_address", overlay.address.to_string()),
            ("yggdrasil_port", overlay.port.to_string()),
            ("consul_role", role),
        ];
        for (field, value) in fields {
            mapping.insert(neighbours::key(&id, field), Value::from(value));
        }
        if let Some(server) = server {
            // Which server type it is: events can be meant for one (`event fire --server-type`).
            mapping.insert(neighbours::key(&id, "server_type"), Value::from(server));
        }
        let via = neighbours::key(&id, "ssh_via");
        if remote.via.is_empty() {
            mapping.remove(&via);
        } else {
            mapping.insert(via, Value::from(remote.via.join(",")));
        }
        // What every node must learn: the whole neighbour list.
        let below = format!("{}/", neighbours::NEIGHBOURS);
        let payload: Mapping = mapping
            .iter()
            .filter(|(k, _)| k.starts_with(&below))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(payload)
    })?;
    let bytes = serde_json::to_vec(&payload)?;
    let others: Vec<neighbours::Neighbour> = neighbours::all(&payload)
        .into_iter()
        .filter(|n| n.id != id && n.host.is_some())
        .collect();

    // Before consensus, every known node is told (there is no KV to learn it from). From then
    // on one node that syncs it into consul's KV is enough: the agents follow the KV.
    if others.len() < crate::mesh::plan::QUORUM {
        let remesh = others.iter().map(|n| remesh_one(identity, n, &bytes));
        let (own, remeshed) = tokio::join!(mesh_on(remote, &bytes), futures_util::future::join_all(remesh));
        let summary = own?;
        let failed: Vec<String> = remeshed
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| format!("{e:#}"))
            .collect();
        for f in &failed {
            tracing::warn!("{f}");
        }
        return Ok(format!(
            "{summary}; {} of {} other node(s) re-meshed",
            others.len() - failed.len(),
            others.len()
        ));
    }
    // Only the new node's entry: the cluster knows the rest better than this machine's cache.
    let own_prefix = format!("{}/{id}/", neighbours::NEIGHBOURS);
    let entry: Mapping = payload
        .iter()
        .filter(|(k, _)| k.starts_with(&own_prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let entry = serde_json::to_vec(&entry)?;
    let tell_one = async {
        let mut errors = Vec::new();
        for n in &others {
            match remesh_one(identity, n, &entry).await {
                Ok(lines) if lines.contains("shared config: in consul's KV") => {
                    return Ok(n.id.clone());
                }
                Ok(lines) => errors.push(format!("{}: its consul did not take the change ({lines})", n.id)),
                Err(e) => errors.push(format!("{e:#}")),
            }
            if errors.len() >= 3 {
                break;
            }
        }
        Err(errors)
    };
    let (own, told) = tokio::join!(mesh_on(remote, &bytes), tell_one);
    let summary = own?;
    match told {
        Ok(id) => Ok(format!("{summary}; the cluster learnt it through node {id}")),
        Err(errors) => {
            for e in &errors {
                tracing::warn!("{e}");
            }
            Ok(format!(
                "{summary}; no other node took it into the shared config yet ({} tried)",
                errors.len()
            ))
        }
    }
}

/// `mesh` on another known node with the new neighbour list.
async fn remesh_one(identity: &Identity, n: &neighbours::Neighbour, bytes: &[u8]) -> anyhow::Result<String> {
    let host = n.host.clone().expect("filtered");
    let other = Remote::connect_known(identity, &host, n.ssh_port, n.ssh_host_key.as_deref(), &n.ssh_via).await?;
    let result = mesh_on(&other, bytes).await;
    other.close().await;
    result.with_context(|| format!("re-meshing {host}:{}", n.ssh_port))
}

/// Runs `raptiformica mesh` on a node with the neighbour list on stdin; returns its last line.
async fn mesh_on(remote: &Remote, payload: &[u8]) -> anyhow::Result<String> {
    let mut file = tempfile::tempfile()?;
    std::io::Write::write_all(&mut file, payload)?;
    std::io::Seek::rewind(&mut file)?;
    let out = remote
        .run_limited(
            "`raptiformica mesh`",
            &on_node("raptiformica mesh --with-config -"),
            Some(file),
            MESH_TIMEOUT,
        )
        .await?;
    Ok(out
        .stdout
        .lines()
        .filter(|l| l.starts_with("consul:") || l.starts_with("overlay:") || l.starts_with("shared config:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provisioned_digest_ignores_order_config_and_token() {
        let base = [
            ("aa", "/root/.raptiformica.d/artifacts/consul"),
            ("bb", "/usr/etc/raptiformica/x"),
        ];
        let d = provisioned_digest(base.into_iter());
        assert_eq!(d, provisioned_digest(base.into_iter().rev()));
        let with_config = base.into_iter().chain([
            ("cc", "/root/.raptiformica.d/mutable_config.json.incoming"),
            ("dd", "/root/.raptiformica.d/consul_token"),
        ]);
        assert_eq!(d, provisioned_digest(with_config));
        let changed = [
            ("ab", "/root/.raptiformica.d/artifacts/consul"),
            ("bb", "/usr/etc/raptiformica/x"),
        ];
        assert_ne!(d, provisioned_digest(changed.into_iter()));
    }
}
