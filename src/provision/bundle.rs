//! The files a machine lacks, packed for the trip: a gzip-compressed tar, kept in the cache
//! and reused for every machine that lacks the same files (a batch of new machines lacks the
//! same binary, artifacts and modules: one archive, packed once). gzip, because every target
//! unpacks it (`tar -z`) before anything of ours is there.
//!
//! Uncompressed, a new machine took 94 MB through SSH; the cipher on both ends, `tar` and the
//! copies of the files cost more than half a core of this 2-core machine for the first 20 s of
//! a batch of 10. Compressed: about 30 MB.

use std::fs::File;
use std::io::{Seek as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// How many packed archives the cache keeps (newest first); older ones are removed.
const KEEP: usize = 3;

/// One file to pack: where it is here, and where it goes on the target (absolute).
pub struct Entry<'a> {
    pub local: &'a Path,
    pub remote: &'a str,
}

/// The packed archive of `entries` in `dir`, opened at its start: packed now (under a lock, so
/// that concurrent uploads pack it once) unless an earlier upload left it there. `digest`
/// names the files (their sums and places, see `upload::provisioned_digest`): the archive's
/// name.
pub fn packed(dir: &Path, digest: &str, entries: &[Entry]) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let path = dir.join(format!("{digest}.tar.gz"));
    let lock = File::create(dir.join(".lock"))?;
    lock.lock()?;
    if let Ok(file) = File::open(&path) {
        return Ok(file);
    }
    let mut tmp = tempfile::Builder::new().prefix(".packing.").tempfile_in(dir)?;
    {
        let gz = flate2::write::GzEncoder::new(tmp.as_file_mut(), flate2::Compression::default());
        let mut archive = tar::Builder::new(gz);
        archive.follow_symlinks(true);
        for e in entries {
            archive
                .append_path_with_name(e.local, e.remote.trim_start_matches('/'))
                .with_context(|| format!("cannot pack `{}`", e.local.display()))?;
        }
        archive.into_inner()?.finish()?.flush()?;
    }
    tmp.persist(&path)
        .with_context(|| format!("cannot keep `{}`", path.display()))?;
    prune(dir, &path);
    let mut file = File::open(&path)?;
    file.rewind()?;
    Ok(file)
}

/// Removes all but the [`KEEP`] newest archives (never `keep`).
fn prune(dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut archives: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gz") && p != keep)
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    archives.sort_by_key(|a| std::cmp::Reverse(a.0));
    for (_, old) in archives.into_iter().skip(KEEP - 1) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack(file: File) -> Vec<(String, Vec<u8>)> {
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
        let files = unpack(packed(&cache, "d1", &entries).unwrap());
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
        assert_eq!(unpack(packed(&cache, "d1", &entries).unwrap())[1].1, b"module");
        // Another sum: another archive.
        let other = [Entry {
            local: &b,
            remote: "/usr/etc/raptiformica/x",
        }];
        assert_eq!(unpack(packed(&cache, "d2", &other).unwrap())[0].1, b"changed");
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
}
