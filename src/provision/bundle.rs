//! The files a machine lacks, packed for the trip, kept in the cache and reused for every
//! machine that lacks the same files (a batch of new machines lacks the same binary, artifacts
//! and modules: packed once).
//!
//! Two archives: this binary alone as a gzip-compressed tar ([`Codec::Gzip`]), which every
//! target unpacks (`tar -z`) before anything of ours is there; then the rest as a
//! zstd-compressed tar ([`Codec::Zstd`]), which that binary unpacks there ([`unpack`]). The
//! artifacts go in the rest as their packed set (`artifacts::packed_set`: zstd at level 19
//! with a long window, made once), which [`unpack`] also expands into the artifacts folder.
//!
//! Uncompressed, a new machine took 94 MB through SSH; gzip made it about 30 MB; this, 23 MB
//! (a stripped binary of 14 MB in 6, the artifacts' 77 MB in 17).

use std::fs::File;
use std::io::{Read, Seek as _, Write as _};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::remote::on_node::REMOTE_CACHE;
use crate::sys::paths::INSTALL_PREFIX;

/// How many packed archives the cache keeps (newest first); older ones are removed.
const KEEP: usize = 3;
/// The zstd level of a bundle: fast, since what is big in it (the artifacts) comes packed.
const ZSTD_LEVEL: i32 = 3;

/// One file to pack: where it is here, and where it goes on the target (absolute).
pub struct Entry<'a> {
    pub local: &'a Path,
    pub remote: &'a str,
}

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Unpacked by the target's own `tar -z`.
    Gzip,
    /// Unpacked by our binary on the target ([`unpack`]).
    Zstd,
}

impl Codec {
    fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => "tar.gz",
            Codec::Zstd => "tar.zst",
        }
    }
}

/// The packed archive of `entries` in `dir`, opened at its start: packed now (under a lock, so
/// that concurrent uploads pack it once) unless an earlier upload left it there. `digest`
/// names the files (their sums and places, see `upload::provisioned_digest`): the archive's
/// name.
pub fn packed(dir: &Path, digest: &str, entries: &[Entry], codec: Codec) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join(format!("{digest}.{}", codec.extension()));
    let lock = File::create(dir.join(".lock"))?;
    lock.lock()?;
    if let Ok(file) = File::open(&path) {
        return Ok(file);
    }
    let mut tmp = tempfile::Builder::new().prefix(".packing.").tempfile_in(dir)?;
    match codec {
        Codec::Gzip => {
            let gz = flate2::write::GzEncoder::new(tmp.as_file_mut(), flate2::Compression::default());
            append(tar::Builder::new(gz), entries)?.finish()?.flush()?;
        }
        Codec::Zstd => {
            let zst = zstd::stream::Encoder::new(tmp.as_file_mut(), ZSTD_LEVEL)?;
            append(tar::Builder::new(zst), entries)?.finish()?.flush()?;
        }
    }
    tmp.persist(&path)
        .with_context(|| format!("cannot keep `{}`", path.display()))?;
    prune(dir, &path);
    let mut file = File::open(&path)?;
    file.rewind()?;
    Ok(file)
}

/// `entries` into `archive`, at their remote paths (relative to `/`); the finished writer.
fn append<W: std::io::Write>(mut archive: tar::Builder<W>, entries: &[Entry]) -> anyhow::Result<W> {
    archive.follow_symlinks(true);
    for e in entries {
        archive
            .append_path_with_name(e.local, e.remote.trim_start_matches('/'))
            .with_context(|| format!("cannot pack `{}`", e.local.display()))?;
    }
    Ok(archive.into_inner()?)
}

/// Removes all but the [`KEEP`] newest archives (never `keep`).
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut archives: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gz" || x == "zst") && p != keep)
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    archives.sort_by_key(|a| std::cmp::Reverse(a.0));
    for (_, old) in archives.into_iter().skip(KEEP - 1) {
        let _ = std::fs::remove_file(old);
    }
}

/// Where a packed set of artifacts lands on a target, below its cache dir: it is expanded
/// into the artifacts folder beside it (and kept, so the node sends it on when it slaves).
pub fn packed_set_remote(name: &str) -> String {
    format!("{REMOTE_CACHE}/artifacts/{}/{name}", super::artifacts::PACKED)
}

/// Unpacks a [`Codec::Zstd`] bundle read from `input` below `root` (`/` on a node): only
/// files below the node's cache dir and the install prefix, each written whole (a temp file
/// renamed into place, mode from the archive, owned by whoever runs this). A packed set of
/// artifacts is also expanded into its artifacts folder. Returns how many files it wrote.
pub fn unpack(input: impl Read, root: &Path) -> anyhow::Result<usize> {
    let allowed = [REMOTE_CACHE, INSTALL_PREFIX].map(|p| PathBuf::from(p.trim_start_matches('/')));
    let mut archive = tar::Archive::new(zstd::stream::Decoder::new(input)?);
    let mut written = 0;
    let set_dir = PathBuf::from(packed_set_remote("").trim_start_matches('/'));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if !path.components().all(|c| matches!(c, Component::Normal(_))) || !allowed.iter().any(|a| path.starts_with(a))
        {
            bail!(
                "refusing `{}` in the bundle: only files below {REMOTE_CACHE} and {INSTALL_PREFIX}",
                path.display()
            );
        }
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        let dest = root.join(&path);
        write_whole(&mut entry, &dest, mode)?;
        written += 1;
        if path.parent() == Some(set_dir.as_path()) && path.extension().is_some_and(|x| x == "zst") {
            let artifacts = dest.parent().and_then(Path::parent).context("no artifacts folder")?;
            written += expand_set(&dest, artifacts)?;
        }
    }
    Ok(written)
}

/// Expands the packed set `set` into `artifacts`: plain file names only.
fn expand_set(set: &Path, artifacts: &Path) -> anyhow::Result<usize> {
    let file = File::open(set).with_context(|| format!("cannot read `{}`", set.display()))?;
    let mut archive = tar::Archive::new(zstd::stream::Decoder::new(file)?);
    let mut written = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let name = match path.components().collect::<Vec<_>>().as_slice() {
            [Component::Normal(n)] => n.to_os_string(),
            _ => bail!(
                "refusing `{}` in the packed artifacts `{}`",
                path.display(),
                set.display()
            ),
        };
        let mode = entry.header().mode().unwrap_or(0o755) & 0o777;
        write_whole(&mut entry, &artifacts.join(name), mode)?;
        written += 1;
    }
    Ok(written)
}

/// Writes what `from` reads to `dest` whole: a temp file beside it, then renamed over it (a
/// link there is replaced, never written through).
fn write_whole(from: &mut impl Read, dest: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = dest.parent().context("a file with no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut tmp = tempfile::Builder::new().prefix(".unpacking.").tempfile_in(dir)?;
    std::io::copy(from, tmp.as_file_mut()).with_context(|| format!("cannot write `{}`", dest.display()))?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.persist(dest)
        .with_context(|| format!("cannot put `{}` in place", dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack_gz(file: File) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut body).unwrap();
                (path, body)
            })
            .collect()
    }

    #[test]
    fn packed_once_reused_and_unpacks_to_the_same_files() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, vec![7u8; 100_000]).unwrap();
        std::fs::write(&b, b"module").unwrap();
        let cache = d.path().join("bundles");
        let entries = [
            Entry {
                local: &a,
                remote: "/root/.raptiformica.d/artifacts/consul",
            },
            Entry {
                local: &b,
                remote: "/usr/etc/raptiformica/x",
            },
        ];
        let files = unpack_gz(packed(&cache, "d1", &entries, Codec::Gzip).unwrap());
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[0],
            ("root/.raptiformica.d/artifacts/consul".to_string(), vec![7u8; 100_000])
        );
        assert_eq!(files[1].1, b"module");
        let path = cache.join("d1.tar.gz");
        assert!(path.metadata().unwrap().len() < 10_000, "compressed");
        // The same files again: the kept archive, not packed anew (changing the source here
        // would show in a new one).
        std::fs::write(&b, b"changed").unwrap();
        assert_eq!(
            unpack_gz(packed(&cache, "d1", &entries, Codec::Gzip).unwrap())[1].1,
            b"module"
        );
        // Another sum: another archive.
        let other = [Entry {
            local: &b,
            remote: "/usr/etc/raptiformica/x",
        }];
        assert_eq!(
            unpack_gz(packed(&cache, "d2", &other, Codec::Gzip).unwrap())[0].1,
            b"changed"
        );
    }

    #[test]
    fn only_the_newest_archives_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let cache = d.path().join("bundles");
        let sums: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        for s in &sums {
            packed(
                &cache,
                s,
                &[Entry {
                    local: &f,
                    remote: "/x",
                }],
                Codec::Gzip,
            )
            .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "gz"))
            .count();
        assert_eq!(left, KEEP);
        assert!(cache.join("s4.tar.gz").is_file());
    }

    #[test]
    fn a_zstd_bundle_unpacks_below_the_nodes_folders_and_expands_the_packed_artifacts() {
        let d = tempfile::tempdir().unwrap();
        let art = d.path().join("art");
        std::fs::create_dir_all(&art).unwrap();
        for b in crate::provision::artifacts::BINARIES {
            std::fs::write(art.join(b), format!("#!/bin/sh\necho {b}\n").repeat(1000)).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(art.join(b), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        crate::provision::artifacts::write_sums(&art).unwrap();
        let set = crate::provision::artifacts::packed_set(&art, true).unwrap().unwrap();
        assert_eq!(
            crate::provision::artifacts::packed_set(&art, false).unwrap().unwrap(),
            set,
            "packed once"
        );
        let module = d.path().join("m.toml");
        std::fs::write(&module, "raptiformica_api_version = \"0.1\"\n").unwrap();
        let set_remote = packed_set_remote(&set.file_name().unwrap().to_string_lossy());
        let entries = [
            Entry {
                local: &set,
                remote: &set_remote,
            },
            Entry {
                local: &module,
                remote: "/usr/etc/raptiformica/modules/m.toml",
            },
        ];
        let bundle = packed(&d.path().join("bundles"), "b", &entries, Codec::Zstd).unwrap();
        let root = d.path().join("root");
        assert_eq!(
            unpack(bundle, &root).unwrap(),
            5,
            "the set, its three binaries, the module"
        );
        for b in crate::provision::artifacts::BINARIES {
            let got = root.join("root/.raptiformica.d/artifacts").join(b);
            assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(art.join(b)).unwrap(), "{b}");
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(got.metadata().unwrap().permissions().mode() & 0o777, 0o755);
        }
        assert!(root.join("usr/etc/raptiformica/modules/m.toml").is_file());
        assert!(
            root.join(set_remote.trim_start_matches('/')).is_file(),
            "the set is kept"
        );

        // Anything else is refused.
        let outside = [Entry {
            local: &module,
            remote: "/etc/cron.d/x",
        }];
        let bad = packed(&d.path().join("bundles"), "bad", &outside, Codec::Zstd).unwrap();
        let e = unpack(bad, &root).unwrap_err().to_string();
        assert!(e.contains("refusing `etc/cron.d/x`"), "{e}");
        assert!(!root.join("etc").exists());
    }
}
