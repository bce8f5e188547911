//! Snapshots of the cluster a user can take home (`snapshot save|restore`): consul's own
//! snapshot (`/v1/snapshot`), saved as is.
//!
//! A restore is meant for another cluster (the usual case after a disaster), which has its own
//! membership, keys and ACL tokens: replacing its servers' state with the snapshot would lock
//! its nodes out (their tokens would be gone). So the snapshot is restored into a scratch consul
//! (see [`scratch`]: a `-dev` agent in a private directory, reachable by no other local user,
//! gone afterwards), its KV read back, and the pairs written into the cluster, except those that
//! belong to a cluster's identity and runtime (see [`is_restored`]): the cluster keeps its
//! `meshnet` section (neighbours, gossip key, consul and overlay settings), its ACLs and
//! sessions, its agents' locks and its seeding marker.

mod cert;
mod scratch;
mod scratch_api;

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::consensus::api::ExportedPair;
use crate::consensus::state_log;
use crate::sys::digest::hex;

pub use scratch::Scratch;

/// Key prefixes a restore leaves as the cluster has them.
pub const KEPT: [&str; 4] = [
    // Membership and keys: neighbours, the gossip key, consul's and the overlay's settings.
    "raptiformica/meshnet/",
    // The agents' locks and what they are doing: the old cluster's runtime.
    "raptiformica-agent/",
    // The seeding marker of this cluster's KV.
    "raptiformica-meta/",
    // What the old cluster's nodes reported for the web map.
    "raptiformica-status/",
];

/// Whether a restore writes `key`: everything but the [`KEPT`] prefixes and the old cluster's
/// runtime of the state machines (which node applied what, which failed, who held the
/// snapshot lock: nodes of another cluster).
pub fn is_restored(key: &str) -> bool {
    !KEPT.iter().any(|p| key.starts_with(p)) && !state_log::is_cluster_runtime(key)
}

/// The state machines whose logs `pairs` hold (each with its `index` key).
pub fn state_logs(pairs: &[ExportedPair]) -> Vec<String> {
    pairs
        .iter()
        .filter_map(|p| state_log::log_of_index_key(&p.key))
        .collect()
}

/// What consul's `meta.json` in a snapshot says.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Meta {
    #[serde(rename = "ID")]
    pub id: String,
    pub index: u64,
    pub term: u64,
    #[serde(default)]
    pub size: u64,
}

/// Checks that `archive` is a consul snapshot (a gzipped tar of `meta.json`, `state.bin` and
/// `SHA256SUMS` whose sums match) and returns its metadata; any other file is refused with
/// what is wrong, before anything changes.
pub fn check(archive: &[u8]) -> anyhow::Result<Meta> {
    let not = |why: String| anyhow::anyhow!("not a consul snapshot: {why}");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut sums: Option<String> = None;
    let mut meta: Option<Vec<u8>> = None;
    let mut hashed: Vec<(String, String)> = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| not(format!("not a gzipped tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| not(format!("not a gzipped tar archive ({e})")))?;
        let name = entry.path().map_err(|e| not(e.to_string()))?.display().to_string();
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        let mut small = Vec::new();
        loop {
            let n = entry.read(&mut buf).map_err(|e| not(format!("{name}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if name != "state.bin" && small.len() < 1 << 20 {
                small.extend_from_slice(&buf[..n]);
            }
        }
        match name.as_str() {
            "SHA256SUMS" => sums = Some(String::from_utf8_lossy(&small).into_owned()),
            "meta.json" => meta = Some(small),
            _ => {}
        }
        hashed.push((name, hex(&hasher.finalize())));
    }
    let sums = sums.ok_or_else(|| not("it has no SHA256SUMS".into()))?;
    let meta = meta.ok_or_else(|| not("it has no meta.json".into()))?;
    if !hashed.iter().any(|(n, _)| n == "state.bin") {
        return Err(not("it has no state.bin".into()));
    }
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| not(format!("a bad SHA256SUMS line {line:?}")))?;
        let name = name.trim_start_matches([' ', '*']);
        match hashed.iter().find(|(n, _)| n == name) {
            Some((_, actual)) if actual.eq_ignore_ascii_case(sum) => {}
            Some(_) => return Err(not(format!("{name} does not match its SHA-256 sum (damaged?)"))),
            None => return Err(not(format!("SHA256SUMS names {name}, which it lacks"))),
        }
    }
    serde_json::from_slice(&meta).map_err(|e| not(format!("meta.json: {e}")))
}

/// The KV pairs of a snapshot, read through a scratch consul (stopped on return).
pub async fn kv_of(consul: &Path, archive: Vec<u8>) -> anyhow::Result<Vec<ExportedPair>> {
    let scratch = Scratch::start(consul).await?;
    scratch.restore(archive).await?;
    scratch.export_kv().await
}

/// The consul binary to run a scratch agent with: the one on the PATH (a node), else the
/// artifact this machine fetched for its nodes.
pub fn consul_binary(artifacts_dir: &Path) -> anyhow::Result<PathBuf> {
    let artifact = artifacts_dir.join("consul");
    if artifact.is_file() {
        return Ok(artifact);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("consul"))
            .find(|p| p.is_file())
    });
    on_path.context("no consul binary here to read the snapshot with; `raptiformica artifacts fetch` gets one")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            for (name, data) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o600);
                h.set_cksum();
                tar.append_data(&mut h, name, *data).unwrap();
            }
            tar.into_inner().unwrap().finish().unwrap();
        }
        out
    }

    fn sum(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    #[test]
    fn a_consul_shaped_archive_passes_with_its_metadata() {
        let meta = br#"{"Version":1,"ID":"2-13-1","Index":13,"Term":2,"Size":5}"#;
        let state = b"state";
        let sums = format!("{}  meta.json\n{}  state.bin\n", sum(meta), sum(state));
        let a = archive(&[
            ("meta.json", meta),
            ("state.bin", state),
            ("SHA256SUMS", sums.as_bytes()),
        ]);
        let m = check(&a).unwrap();
        assert_eq!((m.index, m.term, m.id.as_str()), (13, 2, "2-13-1"));
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        let e = check(b"garbage\n").unwrap_err().to_string();
        assert!(e.contains("not a consul snapshot") && e.contains("gzipped tar"), "{e}");

        let meta = br#"{"ID":"x","Index":1,"Term":1}"#;
        let sums = format!("{}  meta.json\n{}  state.bin\n", sum(meta), sum(b"other"));
        let a = archive(&[
            ("meta.json", meta),
            ("state.bin", b"state"),
            ("SHA256SUMS", sums.as_bytes()),
        ]);
        let e = check(&a).unwrap_err().to_string();
        assert!(e.contains("state.bin does not match"), "{e}");

        let a = archive(&[("meta.json", meta), ("SHA256SUMS", b"")]);
        assert!(check(&a).unwrap_err().to_string().contains("no state.bin"));
        let a = archive(&[("hello.txt", b"hi")]);
        assert!(check(&a).unwrap_err().to_string().contains("no SHA256SUMS"));
    }

    #[test]
    fn a_restore_keeps_the_clusters_identity_and_runtime() {
        for kept in [
            "raptiformica/meshnet/consul/password",
            "raptiformica/meshnet/neighbours/abc/host",
            "raptiformica-agent/lock/rules",
            "raptiformica-meta/seeded",
            "raptiformica-state/kv/applied/node1",
            "raptiformica-state/kv/failed/node1",
            "raptiformica-state/kv/lock",
        ] {
            assert!(!is_restored(kept), "{kept}");
        }
        for restored in [
            "raptiformica/acceptance/keep",
            "raptiformica/compute/docker/headless/start_instance",
            "raptiformica-state/kv/entries/00000000000000000001",
            "raptiformica-state/kv/index",
            "raptiformica-state/kv/snapshot/data",
            "some/user/key",
        ] {
            assert!(is_restored(restored), "{restored}");
        }
    }

    #[test]
    fn the_state_logs_in_a_snapshot_are_named() {
        let pair = |k: &str| ExportedPair {
            key: k.into(),
            value: None,
            flags: 0,
        };
        let pairs = [
            pair("raptiformica-state/kv/index"),
            pair("raptiformica-state/kv/entries/00000000000000000001"),
            pair("raptiformica-state/acc/index"),
            pair("raptiformica-state/acc/snapshot/index"),
            pair("raptiformica/state/kv/apply"),
        ];
        assert_eq!(state_logs(&pairs), ["kv", "acc"]);
    }
}
