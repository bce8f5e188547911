//! Snapshots of the cluster a user can take home (`snapshot save|restore`): consul's own
//! snapshot (`/v1/snapshot`), saved as is.
//!
//! A restore is meant for another cluster (the usual case after a disaster), which has its own
//! membership, keys and ACL tokens: replacing its servers' state with the snapshot would lock
//! its nodes out (their tokens would be gone). So the snapshot is restored into a scratch consul
//! (a `-dev` agent on loopback, gone afterwards), its KV read back, and the pairs written into
//! the cluster, except those that belong to a cluster's identity and runtime (see
//! [`is_restored`]): the cluster keeps its `meshnet` section (neighbours, gossip key, consul and
//! overlay settings), its ACLs and sessions, its agents' locks and its seeding marker.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::consensus::agent::DATACENTER;
use crate::consensus::api::{ConsulApi, ExportedPair};
use crate::consensus::state_log;

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The KV pairs of a snapshot, read through a scratch consul.
pub async fn kv_of(consul: &Path, archive: Vec<u8>) -> anyhow::Result<Vec<ExportedPair>> {
    let scratch = Scratch::start(consul).await?;
    // A request may meet a kept-alive connection the agent just closed: the restore is
    // idempotent, so it is tried again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        match scratch.api.restore_snapshot(archive.clone()).await {
            Ok(()) => break,
            Err(e) if attempt < 3 => tracing::debug!("the scratch consul's restore: {e:#} (trying again)"),
            Err(e) => {
                let log = std::fs::read_to_string(scratch._dir.path().join("consul.log")).unwrap_or_default();
                return Err(e.context(format!(
                    "the scratch consul refused the snapshot; its log: {}",
                    log.trim()
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The restore is in once the KV answers with it.
    scratch.api.export_kv().await
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

/// A throw-away consul (`agent -dev`, in memory, on loopback ports of its own, joined to
/// nothing), killed when dropped.
struct Scratch {
    child: Child,
    _dir: tempfile::TempDir,
    api: ConsulApi,
}

impl Scratch {
    async fn start(consul: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("raptiformica-snapshot.").tempdir()?;
        let ports = free_ports(4)?;
        let log = std::fs::File::create(dir.path().join("consul.log"))?;
        let port = |i: usize| ports[i].to_string();
        let child = Command::new(consul)
            .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1"])
            .args(["-node", "raptiformica-snapshot-scratch", "-datacenter", DATACENTER])
            .args([
                "-http-port",
                &port(0),
                "-serf-lan-port",
                &port(1),
                "-serf-wan-port",
                &port(2),
            ])
            .args(["-server-port", &port(3), "-dns-port", "-1", "-grpc-port", "-1"])
            // Connect off: consul 1.8's leader sets up its CA again after a restore and can
            // crash there on another cluster's CA state; only the KV is wanted.
            .args(["-hcl", "connect { enabled = false }"])
            .args(["-log-level", "warn"])
            .env_remove("CONSUL_HTTP_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `{}`", consul.display()))?;
        let api = ConsulApi::new(&format!("http://127.0.0.1:{}", ports[0]), Duration::from_secs(60))?;
        let mut scratch = Self { child, _dir: dir, api };
        let started = Instant::now();
        loop {
            if matches!(scratch.api.leader().await, Ok(Some(_))) {
                return Ok(scratch);
            }
            if let Ok(Some(status)) = scratch.child.try_wait() {
                let log = std::fs::read_to_string(scratch._dir.path().join("consul.log")).unwrap_or_default();
                bail!("the scratch consul ended ({status}): {}", log.trim());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the scratch consul did not elect itself within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // Held together, so that the n are distinct; released just before consul binds them.
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
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
