//! What goes up to a target, and only what it lacks: this binary, the artifacts, the module
//! folders, the cached config; and the digest its provisioners run from.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::config::MutableCache;
use crate::config::context::Context;
use crate::provision::{artifacts, bundle};
use crate::remote::on_node::{REMOTE_BIN, REMOTE_CACHE};
use crate::remote::ssh::Remote;
use crate::sys::paths::{BUILTIN_FOLDERS, INSTALL_PREFIX};

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

/// Uploads what differs on the target, then links the binaries onto its PATH. Returns a
/// summary, how many files went up, and a digest of what the provisioners run from (see
/// [`provisioned_digest`]).
pub(super) async fn upload(ctx: &Context, remote: &Remote) -> anyhow::Result<(String, usize, String)> {
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
    // What every new machine lacks alike (this binary, the artifacts, the modules) goes in two
    // compressed archives, packed once for all of them (see `bundle`); this machine's config
    // snapshot and the token (small, and different each time) go as they are.
    let (varying, fixed): (Vec<&Upload>, Vec<&Upload>) = needed.iter().partition(|u| varies(&u.remote));
    let mut sent = 0u64;
    if !fixed.is_empty() {
        let dir = ctx.paths.cache_dir.join("var").join("uploads");
        let name = provisioned_digest(fixed.iter().map(|u| (u.sum.as_str(), u.remote.as_str())));
        // This binary first, in what the target's own `tar` unpacks; it unpacks the rest.
        let me = format!("{REMOTE_CACHE}/artifacts/raptiformica");
        let (boot, rest) = crate::sys::process::blocking(|| pack(ctx, &dir, &name, &fixed, &me))?;
        if let Some(file) = boot {
            sent += file.metadata().map(|m| m.len()).unwrap_or(0);
            let out = remote.sh("tar -x -z -f - -C / --no-same-owner", Some(file)).await?;
            if !out.success() {
                bail!("unpacking this binary on the target failed: {}", out.stderr.trim());
            }
        }
        if let Some(file) = rest {
            sent += file.metadata().map(|m| m.len()).unwrap_or(0);
            let out = remote.sh(&format!("{me} unpack"), Some(file)).await?;
            if !out.success() {
                bail!("unpacking on the target failed: {}", out.stderr.trim());
            }
        }
    }
    if !varying.is_empty() {
        let file = crate::sys::process::blocking(|| -> anyhow::Result<std::fs::File> {
            let mut archive = tar::Builder::new(tempfile::tempfile()?);
            for u in &varying {
                archive
                    .append_path_with_name(&u.local, u.remote.trim_start_matches('/'))
                    .with_context(|| format!("cannot pack `{}`", u.local.display()))?;
            }
            let mut file = archive.into_inner()?;
            std::io::Seek::rewind(&mut file)?;
            Ok(file)
        })?;
        sent += file.metadata().map(|m| m.len()).unwrap_or(0);
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
                for b in {linked}; do
                  a={REMOTE_CACHE}/artifacts/$b
                  if [ -f $a ]; then [ -x $a ] || chmod 755 $a; ln -sfn $a {REMOTE_BIN}/$b; fi
                done
                if [ -f {REMOTE_CACHE}/mutable_config.json.incoming ]; then
                  chmod 600 {REMOTE_CACHE}/mutable_config.json.incoming
                  flock {REMOTE_CACHE}/mutable_config.json.lock mv -f {REMOTE_CACHE}/mutable_config.json.incoming {REMOTE_CACHE}/mutable_config.json
                fi
                {record}
                {REMOTE_BIN}/raptiformica --version"#,
                record = crate::remote::files::record_script(),
                linked = crate::remote::on_node::LINKED.join(" ")
            ),
        )
        .await?;
    let summary = if needed.is_empty() {
        format!("all {} files already there", set.len())
    } else {
        format!(
            "{} of {} files, {:.1} MB ({:.1} MB sent)",
            needed.len(),
            set.len(),
            bytes as f64 / 1e6,
            sent as f64 / 1e6
        )
    };
    // The config snapshot goes up every time (the target renames it into place): it is not a
    // change of what the machine runs.
    let changed = needed.iter().filter(|u| !u.remote.ends_with(".incoming")).count();
    Ok((summary, changed, digest))
}

/// A digest of the uploaded files a provisioner runs from (path and checksum of each; not the
/// mutable config or the ACL token, which change without changing what gets installed).
/// A machine started from a packaged image holds the same files, so its provisioners are
/// skipped (issue 9); a new binary, artifact or module file makes them run again.
fn provisioned_digest<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<String> = files
        .filter(|(_, path)| !varies(path))
        .map(|(sum, path)| format!("{sum} {path}\n"))
        .collect();
    lines.sort();
    sha256_hex(lines.concat().as_bytes())
}

/// The bundles of `fixed` in `dir` (see [`bundle`]), named after `name`: this binary (`me` on
/// the target) alone as gzip, then the rest as zstd, the artifacts as their packed set.
fn pack(
    ctx: &Context,
    dir: &Path,
    name: &str,
    fixed: &[&Upload],
    me: &str,
) -> anyhow::Result<(Option<std::fs::File>, Option<std::fs::File>)> {
    let (boot, rest): (Vec<&Upload>, Vec<&Upload>) = fixed.iter().partition(|u| u.remote == me);
    let boot = (!boot.is_empty())
        .then(|| bundle::packed(dir, &format!("{name}.boot"), &entries(&boot), bundle::Codec::Gzip))
        .transpose()?;
    let is_artifact = |remote: &str| {
        artifacts::BINARIES
            .iter()
            .any(|b| remote == format!("{REMOTE_CACHE}/artifacts/{b}"))
    };
    // On a node, fast: it spawns next to itself, and its CPU serves the cluster.
    let set = match rest.iter().any(|u| is_artifact(&u.remote)) {
        true => artifacts::packed_set(
            &artifacts::dir(ctx),
            !crate::config::shared::consul_configured(&ctx.paths),
        )?,
        false => None,
    };
    let set_remote = set
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| bundle::packed_set_remote(&n.to_string_lossy()));
    let mut list = entries(&rest);
    if let (Some(set), Some(set_remote)) = (&set, &set_remote) {
        list.retain(|e| !is_artifact(e.remote));
        list.push(bundle::Entry {
            local: set,
            remote: set_remote,
        });
    }
    let rest = (!list.is_empty())
        .then(|| bundle::packed(dir, name, &list, bundle::Codec::Zstd))
        .transpose()?;
    Ok((boot, rest))
}

/// The bundle entries of `uploads`.
fn entries<'a>(uploads: &[&'a Upload]) -> Vec<bundle::Entry<'a>> {
    uploads
        .iter()
        .map(|u| bundle::Entry {
            local: &u.local,
            remote: &u.remote,
        })
        .collect()
}

/// Whether the file at `remote` differs from one upload to the next (the config snapshot,
/// the ACL token) rather than with what the machine runs.
fn varies(remote: &str) -> bool {
    remote.ends_with(".incoming") || remote.ends_with(crate::consensus::acl::TOKEN_FILE)
}

pub(super) use crate::sys::digest::sha256_hex;

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
