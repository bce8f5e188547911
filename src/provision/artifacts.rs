//! Artifacts: the binaries a node needs besides raptiformica itself (consul 1.8.7 from Debian
//! bullseye, yggdrasil and yggdrasilctl from bookworm), gathered once into
//! `<cache-dir>/artifacts/` with their SHA-256 sums. Slaving copies them to the target's cache
//! too, so a slaved node can slave the next one with no internet.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sha2::{Digest, Sha256};

use crate::config::context::Context;

/// The binaries `artifacts fetch` provides.
pub const BINARIES: [&str; 3] = ["consul", "yggdrasil", "yggdrasilctl"];
/// The checksum file, in `sha256sum` format.
pub const SUMS: &str = "SHA256SUMS";

/// The folder of the artifacts dir that holds their packed set (see [`packed_set`]).
pub const PACKED: &str = "packed";
/// The zstd level and window of the packed set a workstation makes: 77 MB of binaries in about
/// 17 MB, packed once in about 30 s on two cores (gzip made 24 MB).
const PACKED_LEVEL: i32 = 19;
const PACKED_WINDOW_LOG: u32 = 27;
/// The level of a set a node makes (one spawning machines with its engine, which shares no
/// artifacts with it): 22 MB in about a second, not half a minute of a node's CPU.
const PACKED_LEVEL_FAST: i32 = 3;

/// The binaries of `dir` as one zstd-compressed tar, made once per set of sums and kept as
/// `dir/packed/<digest>.tar.zst` (its name is the digest of `SHA256SUMS`); a node that received
/// it keeps it and sends the same file on. `best`: at the level that sends the fewest bytes (a
/// workstation's uploads), else at a fast one (a node's). None when `dir` has no sums.
pub fn packed_set(dir: &Path, best: bool) -> anyhow::Result<Option<PathBuf>> {
    let Ok(sums) = std::fs::read(dir.join(SUMS)) else {
        return Ok(None);
    };
    let packed = dir.join(PACKED);
    let path = packed.join(format!("{}.tar.zst", &crate::sys::digest::sha256_hex(&sums)[..16]));
    if path.is_file() {
        return Ok(Some(path));
    }
    std::fs::create_dir_all(&packed).with_context(|| format!("cannot create `{}`", packed.display()))?;
    let lock = std::fs::File::create(packed.join(".lock"))?;
    lock.lock()?;
    if path.is_file() {
        return Ok(Some(path)); // packed by another process meanwhile
    }
    let mut tmp = tempfile::Builder::new().prefix(".packing.").tempfile_in(&packed)?;
    {
        let mut zst =
            zstd::stream::Encoder::new(tmp.as_file_mut(), if best { PACKED_LEVEL } else { PACKED_LEVEL_FAST })?;
        if best {
            zst.long_distance_matching(true)?;
            zst.window_log(PACKED_WINDOW_LOG)?;
        }
        zst.multithread(2)?;
        let mut archive = tar::Builder::new(zst);
        archive.follow_symlinks(true);
        for b in BINARIES {
            archive
                .append_path_with_name(dir.join(b), b)
                .with_context(|| format!("cannot pack `{}`", dir.join(b).display()))?;
        }
        archive.into_inner()?.finish()?;
    }
    tmp.persist(&path)
        .with_context(|| format!("cannot keep `{}`", path.display()))?;
    // Older sets (of binaries since replaced) go.
    for e in std::fs::read_dir(&packed)?.flatten() {
        if e.path() != path && e.path().extension().is_some_and(|x| x == "zst") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(Some(path))
}

/// The artifacts dir of this host.
pub fn dir(ctx: &Context) -> PathBuf {
    ctx.paths.artifacts_dir.clone()
}

/// True when every binary is there.
pub fn complete(ctx: &Context) -> bool {
    BINARIES.iter().all(|b| dir(ctx).join(b).is_file())
}

/// Gathers the artifacts (with the install dir's `provisioning/fetch_artifacts.sh`) and writes
/// their checksums.
pub fn fetch(ctx: &Context) -> anyhow::Result<()> {
    let install = ctx
        .paths
        .install_dir
        .as_ref()
        .context("no install dir: cannot find provisioning/fetch_artifacts.sh")?;
    let script = install.join("provisioning/fetch_artifacts.sh");
    let dest = dir(ctx);
    ctx.shell("artifacts fetch", "sh \"$SCRIPT\" \"$DEST\"")
        .env("SCRIPT", script.display().to_string())
        .env("DEST", dest.display().to_string())
        .timeout(std::time::Duration::from_secs(900))
        .run()?;
    write_sums(&dest)
}

/// Fetches the artifacts when any is missing.
pub fn ensure(ctx: &Context) -> anyhow::Result<()> {
    if complete(ctx) {
        return Ok(());
    }
    let dir = dir(ctx);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let lock = std::fs::File::create(dir.join(".fetch.lock"))?;
    lock.lock()?;
    // Another process may have fetched them while we waited.
    if complete(ctx) && dir.join(SUMS).is_file() {
        Ok(())
    } else {
        fetch(ctx)
    }
}

/// Writes `SHA256SUMS` for the binaries in `dir`.
pub fn write_sums(dir: &Path) -> anyhow::Result<()> {
    let mut text = String::new();
    for b in BINARIES {
        text.push_str(&format!("{}  {b}\n", sha256_file(&dir.join(b))?));
    }
    std::fs::write(dir.join(SUMS), text).with_context(|| format!("cannot write `{}`", dir.join(SUMS).display()))
}

/// Checks every binary against `SHA256SUMS`; returns (name, sum, ok).
pub fn verify(dir: &Path) -> anyhow::Result<Vec<(String, String, bool)>> {
    let sums = std::fs::read_to_string(dir.join(SUMS))
        .with_context(|| format!("no `{}`: run `raptiformica artifacts fetch`", dir.join(SUMS).display()))?;
    let mut out = Vec::new();
    for line in sums.lines() {
        let Some((sum, name)) = line.split_once("  ") else {
            bail!("malformed line in {SUMS}: {line}")
        };
        let actual = sha256_file(&dir.join(name)).unwrap_or_default();
        out.push((name.to_string(), sum.to_string(), actual == sum));
    }
    Ok(out)
}

/// The hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(crate::sys::digest::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_detect_a_changed_binary() {
        let d = tempfile::tempdir().unwrap();
        for b in BINARIES {
            std::fs::write(d.path().join(b), b).unwrap();
        }
        write_sums(d.path()).unwrap();
        assert!(verify(d.path()).unwrap().iter().all(|(_, _, ok)| *ok));
        std::fs::write(d.path().join("consul"), "tampered").unwrap();
        let v = verify(d.path()).unwrap();
        assert!(v.iter().any(|(n, _, ok)| n == "consul" && !ok));
        assert_eq!(sha256_file(&d.path().join("consul")).unwrap().len(), 64);
    }
}
