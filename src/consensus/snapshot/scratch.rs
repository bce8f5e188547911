//! The scratch consul a restore reads a snapshot's KV with (issue "trust boundaries", item 4):
//! a `consul agent -dev` (in memory, joined to nothing) that no other local user can reach.
//!
//! The snapshot holds the cluster's secrets (the gossip key in the KV, the ACL tokens), and
//! the keys read back are written into the cluster, so a local user must neither read the
//! scratch nor write into it. Everything of the scratch lives in a fresh 0700 directory:
//!
//! - its HTTP API is a unix socket in that directory (no TCP port), asked by
//!   [`ScratchApi`] with the scratch's own token, never the cluster's;
//! - its configuration (0600) turns ACLs on with `default_policy = "deny"` and a fresh master
//!   token, encrypts serf's gossip with a fresh key, and turns DNS, gRPC, HTTPS and the WAN
//!   pool off: the secrets are in that file, none on the command line or in the environment;
//! - the two TCP ports consul 1.8 cannot do without (the server's RPC and raft port, serf's
//!   LAN port, on loopback) take only what proves it is the scratch: RPC and raft need TLS with
//!   the client certificate made for this scratch alone (see [`super::cert`];
//!   `verify_incoming_rpc`: without it any local user could read the KV over RPC, or join raft
//!   and write into it), serf needs the gossip key.
//!
//! consul takes no port 0 for those two: they are chosen free beforehand, and if another
//! program binds one first consul cannot start and other ports are tried. Nothing of ours ever
//! connects to them.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::json;

use super::cert;
use super::scratch_api::ScratchApi;
use crate::consensus::agent::DATACENTER;
use crate::consensus::api::ExportedPair;
use crate::sys::process::{Program, Running};

/// The scratch's node name.
const NODE: &str = "raptiformica-snapshot-scratch";
/// Its configuration, in its directory.
const CONFIG: &str = "scratch.json";
/// Its HTTP API, in its directory.
const SOCKET: &str = "http.sock";
/// What consul prints, in its directory (quoted in errors, gone with the directory).
const LOG: &str = "consul.log";
/// Its TLS certificate (also its CA) and key, in its directory.
const CERT: &str = "tls.pem";
const KEY: &str = "tls-key.pem";
/// How long consul may take to elect itself and make our token.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often a start is tried on other ports when another program took ours first.
const ATTEMPTS: usize = 3;
/// How many lines of consul's log an error quotes.
const LOG_LINES: usize = 15;

/// A throw-away consul only this process can reach, killed and its directory removed when
/// dropped.
pub struct Scratch {
    // Dropped in this order: the process is gone before its directory.
    consul: Running,
    api: ScratchApi,
    dir: tempfile::TempDir,
}

/// What only the scratch and we know, in its 0600 config file.
struct Secrets {
    /// The master token (a UUID, as consul wants).
    token: String,
    /// Serf's gossip key (32 random bytes, base64).
    gossip_key: String,
}

impl Secrets {
    fn fresh() -> anyhow::Result<Self> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key)
            .map_err(|e| anyhow::anyhow!("no randomness for the scratch consul's gossip key: {e}"))?;
        Ok(Self {
            token: uuid::Uuid::new_v4().to_string(),
            gossip_key: base64::engine::general_purpose::STANDARD.encode(key),
        })
    }
}

/// One try at starting the scratch.
enum Attempt {
    Ready(Scratch),
    /// Another program had bound one of the ports: consul's log says which.
    PortTaken(String),
}

impl Scratch {
    /// Starts a scratch consul and waits until it answers with its token.
    pub async fn start(consul: &Path) -> anyhow::Result<Self> {
        Self::start_with(consul, free_ports).await
    }

    /// [`Scratch::start`] on the ports `ports` gives, asking again when they were taken.
    async fn start_with(consul: &Path, mut ports: impl FnMut() -> std::io::Result<[u16; 2]>) -> anyhow::Result<Self> {
        let mut log = String::new();
        for attempt in 1..=ATTEMPTS {
            let ports = ports().context("no free loopback port for the scratch consul")?;
            match Self::start_on(consul, ports).await? {
                Attempt::Ready(scratch) => return Ok(scratch),
                Attempt::PortTaken(l) => {
                    tracing::debug!("the scratch consul's ports {ports:?} were taken (attempt {attempt})");
                    log = l;
                }
            }
        }
        bail!(
            "the scratch consul could not bind its loopback ports in {ATTEMPTS} tries: another program bound \
             them first (run the restore again); its log:\n{log}"
        )
    }

    async fn start_on(consul: &Path, ports: [u16; 2]) -> anyhow::Result<Attempt> {
        let dir = private_dir()?;
        let secrets = Secrets::fresh()?;
        let identity = cert::make(DATACENTER)?;
        write_private(&dir.path().join(CERT), identity.cert_pem.as_bytes())?;
        write_private(&dir.path().join(KEY), identity.key_pem.as_bytes())?;
        let config = dir.path().join(CONFIG);
        let text = serde_json::to_vec_pretty(&config_json(dir.path(), ports, &secrets))?;
        write_private(&config, &text)?;
        let program = Program::new("the snapshot's scratch consul", consul)
            .args(["agent", "-dev", "-config-file"])
            .args([config.display().to_string()])
            .cwd(dir.path())
            .output_to(dir.path().join(LOG));
        let running = program.spawn()?;
        let api = ScratchApi::new(&dir.path().join(SOCKET), secrets.token.clone());
        let mut scratch = Self {
            consul: running,
            api,
            dir,
        };
        let started = Instant::now();
        loop {
            if scratch.api.ready().await {
                return Ok(Attempt::Ready(scratch));
            }
            if let Some(end) = scratch.consul.ended() {
                let log = scratch.log_tail();
                if log.contains("address already in use") {
                    return Ok(Attempt::PortTaken(log));
                }
                bail!(
                    "the scratch consul (`{program}`) {end} before it was ready; is `{}` consul 1.8? Its log:\n{log}",
                    consul.display()
                );
            }
            if started.elapsed() > READY_WITHIN {
                bail!(
                    "the scratch consul (`{program}`) was not ready within {} s; its log:\n{}",
                    READY_WITHIN.as_secs(),
                    scratch.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Replaces the scratch's state with the snapshot `archive`. Our token still works after:
    /// the snapshot brings the cluster's ACL tables, and consul's leader makes the configured
    /// master token again once the restore is in (before it answers).
    pub async fn restore(&self, archive: Vec<u8>) -> anyhow::Result<()> {
        self.api
            .restore_snapshot(archive)
            .await
            .with_context(|| format!("the scratch consul refused the snapshot; its log:\n{}", self.log_tail()))
    }

    /// Every KV pair the scratch holds.
    pub async fn export_kv(&self) -> anyhow::Result<Vec<ExportedPair>> {
        self.api
            .export_kv()
            .await
            .with_context(|| format!("cannot read the scratch consul's KV; its log:\n{}", self.log_tail()))
    }

    /// The last lines consul printed, indented.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(LOG)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let start = lines.len().saturating_sub(LOG_LINES);
        lines[start..]
            .iter()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A fresh directory only we can enter (made 0700, not changed after), in the temp dir. A unix
/// socket's path has at most 107 bytes: with a long `TMPDIR` it goes to `/tmp`.
fn private_dir() -> anyhow::Result<tempfile::TempDir> {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() > 64 {
        PathBuf::from("/tmp")
    } else {
        base
    };
    let dir = tempfile::Builder::new()
        .prefix("raptiformica-snapshot.")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .with_context(|| {
            format!(
                "cannot make a private directory in `{}` for the scratch consul",
                base.display()
            )
        })?;
    // The mode is asked of mkdir, which may only narrow it: checked.
    let mode = std::fs::metadata(dir.path())?.permissions().mode() & 0o777;
    anyhow::ensure!(mode == 0o700, "`{}` was made {mode:o}, not 0700", dir.path().display());
    Ok(dir)
}

/// Writes `bytes` to a new file only we can read.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

/// The scratch's configuration (see the module's documentation).
fn config_json(dir: &Path, ports: [u16; 2], secrets: &Secrets) -> serde_json::Value {
    json!({
        "node_name": NODE,
        "datacenter": DATACENTER,
        "bind_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        // HTTP on the socket only: consul binds no TCP port for it then.
        "addresses": {"http": format!("unix://{}", dir.join(SOCKET).display())},
        "unix_sockets": {"mode": "600"},
        "ports": {
            "server": ports[0],
            "serf_lan": ports[1],
            "serf_wan": -1,
            "dns": -1,
            "grpc": -1,
            "https": -1,
        },
        "acl": {
            "enabled": true,
            "default_policy": "deny",
            "down_policy": "deny",
            "enable_token_persistence": false,
            // The agent's own calls (its node in the catalog) too, else it logs refusals.
            "tokens": {"master": secrets.token, "agent": secrets.token},
        },
        "encrypt": secrets.gossip_key,
        "verify_incoming_rpc": true,
        "verify_outgoing": true,
        "verify_server_hostname": true,
        // Its own CA: no other certificate is accepted.
        "ca_file": dir.join(CERT),
        "cert_file": dir.join(CERT),
        "key_file": dir.join(KEY),
        // consul 1.8's leader sets its CA up again after a restore and can crash there on
        // another cluster's CA state; only the KV is wanted.
        "connect": {"enabled": false},
        "ui": false,
        "disable_update_check": true,
        "disable_remote_exec": true,
        "log_level": "warn",
    })
}

/// Two loopback TCP ports free now: held together so that they differ, released for consul
/// to bind (another program may bind one first: see [`Scratch::start_with`]).
fn free_ports() -> std::io::Result<[u16; 2]> {
    let a = std::net::TcpListener::bind("127.0.0.1:0")?;
    let b = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpStream;

    use hyper::Method;

    use super::*;

    /// What the tests set as the cluster's management token (`use_token`).
    pub(in crate::consensus::snapshot) const CLUSTER_TOKEN: &str = "cluster-management-token-5d1c0e7a";

    /// The consul binary: the artifacts the integration tests fetch (or the ones named by
    /// `RAPTIFORMICA_ARTIFACTS_DIR`, or this user's), else the PATH's. Missing: skipped with a
    /// message, except in CI, where it is fetched (under the artifacts' lock).
    fn consul() -> Option<PathBuf> {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/artifacts");
        let mut dirs = vec![shared.clone()];
        dirs.extend(std::env::var_os("RAPTIFORMICA_ARTIFACTS_DIR").map(PathBuf::from));
        dirs.extend(std::env::var_os("HOME").map(|h| Path::new(&h).join(".raptiformica.d/artifacts")));
        let found = dirs.iter().map(|d| d.join("consul")).find(|c| c.is_file()).or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|p| p.join("consul"))
                .find(|p| p.is_file())
        });
        if found.is_some() {
            return found;
        }
        if std::env::var("CI").as_deref() == Ok("true") {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut paths =
                crate::sys::paths::Paths::resolve(Some(root.join("target/tmp/cache")), Some(root.into()), None);
            paths.artifacts_dir = shared.clone();
            let ctx = crate::config::context::Context {
                paths,
                verbose: 0,
                json: false,
                public_key_file: None,
                no_package: false,
                with_engine: false,
                synced: false,
            };
            crate::provision::artifacts::ensure(&ctx).expect("consul is needed in CI: `artifacts fetch` failed");
            return Some(shared.join("consul"));
        }
        eprintln!(
            "SKIPPED: no consul binary (run `raptiformica artifacts fetch --artifacts-dir target/tmp/artifacts`)"
        );
        None
    }

    /// What the scratch was configured with.
    fn config_of(scratch: &Scratch) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(scratch.dir.path().join(CONFIG)).unwrap()).unwrap()
    }

    fn set_cluster_token() -> &'static str {
        crate::consensus::api::use_token(CLUSTER_TOKEN.into());
        crate::consensus::api::current_token().expect("a cluster token")
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// A snapshot whose KV holds `marker` (as the gossip key): made by another scratch, so
    /// it brings other ACL tables and another master token, as a cluster's does.
    async fn snapshot_holding(consul: &Path, marker: &str) -> Vec<u8> {
        let other = Scratch::start(consul).await.unwrap();
        let put = other
            .api
            .request(
                Method::PUT,
                "/v1/kv/raptiformica/meshnet/consul/password",
                marker.as_bytes().to_vec(),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(put.0, 200, "{}", String::from_utf8_lossy(&put.1));
        let (status, archive) = other
            .api
            .request(Method::GET, "/v1/snapshot", Vec::new(), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(status, 200);
        archive
    }

    /// The loopback TCP ports process `pid` listens on (its sockets in `/proc`).
    fn listening_ports(pid: u32) -> Vec<u16> {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|l| {
                let l = l.display().to_string();
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
            })
            .collect();
        let mut ports = Vec::new();
        for table in ["tcp", "tcp6"] {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                // local address, state (0A: listening), inode
                if cols.len() > 9 && cols[3] == "0A" && inodes.iter().any(|i| i == cols[9]) {
                    let port = cols[1].rsplit(':').next().unwrap();
                    ports.push(u16::from_str_radix(port, 16).unwrap());
                }
            }
        }
        ports.sort();
        ports.dedup();
        ports
    }

    /// msgpack, as much as the probes need: a map of string keys to strings, small unsigned
    /// integers, booleans, bytes or maps.
    enum Mp<'a> {
        S(&'a str),
        U(u8),
        B(bool),
        Bin(&'a [u8]),
        M(Vec<(&'a str, Mp<'a>)>),
    }

    fn msgpack(v: &Mp, out: &mut Vec<u8>) {
        let str_ = |s: &str, out: &mut Vec<u8>| {
            if s.len() < 32 {
                out.push(0xa0 | s.len() as u8);
            } else {
                out.extend_from_slice(&[0xd9, s.len() as u8]);
            }
            out.extend_from_slice(s.as_bytes());
        };
        match v {
            Mp::S(s) => str_(s, out),
            Mp::U(n) => out.extend_from_slice(&[0xcc, *n]),
            Mp::B(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
            Mp::Bin(b) => {
                out.extend_from_slice(&[0xc4, b.len() as u8]);
                out.extend_from_slice(b);
            }
            Mp::M(fields) => {
                out.push(0x80 | fields.len() as u8);
                for (k, v) in fields {
                    str_(k, out);
                    msgpack(v, out);
                }
            }
        }
    }

    /// Sends `bytes` to loopback `port` and returns what comes back within a second.
    fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
        let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
            return Vec::new();
        };
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = conn.write_all(bytes);
        let mut reply = Vec::new();
        let mut buf = [0; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        reply
    }

    /// What a local user gets from `port` without a token of the scratch: asked over HTTP for
    /// the KV (with the cluster's token, as a squatter would replay it), over consul's RPC
    /// (first byte 0) for the KV, and over raft (first byte 1) for a vote.
    fn probe(port: u16) -> Vec<(&'static str, Vec<u8>)> {
        let http = format!("GET /v1/kv/?recurse HTTP/1.0\r\nHost: x\r\nX-Consul-Token: {CLUSTER_TOKEN}\r\n\r\n");
        let mut rpc = vec![0u8];
        msgpack(
            &Mp::M(vec![("ServiceMethod", Mp::S("KVS.List")), ("Seq", Mp::U(0))]),
            &mut rpc,
        );
        let args = vec![
            ("Datacenter", Mp::S(DATACENTER)),
            ("Key", Mp::S("")),
            ("AllowStale", Mp::B(true)),
        ];
        msgpack(&Mp::M(args), &mut rpc);
        // raft's RequestVote (rpc type 1) for term 0: harmless, and answered with `Granted`
        // (its embedded `RPCHeader` is inlined by consul's msgpack).
        let mut raft = vec![1u8, 1];
        let vote = vec![
            ("ProtocolVersion", Mp::U(3)),
            ("Term", Mp::U(0)),
            ("Candidate", Mp::Bin(b"127.0.0.1:1")),
            ("LastLogIndex", Mp::U(0)),
            ("LastLogTerm", Mp::U(0)),
        ];
        msgpack(&Mp::M(vote), &mut raft);
        vec![
            ("HTTP", exchange(port, http.as_bytes())),
            ("RPC", exchange(port, &rpc)),
            ("raft", exchange(port, &raft)),
        ]
    }

    fn contains(hay: &[u8], needle: &str) -> bool {
        hay.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    /// Whether a probe's reply gave something away: the marker, an HTTP answer, an RPC answer
    /// or a raft vote.
    fn leak(reply: &[u8], marker: &str) -> Option<&'static str> {
        [
            (
                contains(reply, marker) || contains(reply, &b64(marker)),
                "the KV's secret",
            ),
            (reply.starts_with(b"HTTP/"), "an HTTP answer"),
            (contains(reply, "ServiceMethod"), "an RPC answer"),
            (contains(reply, "Granted"), "a raft answer"),
        ]
        .into_iter()
        .find_map(|(hit, what)| hit.then_some(what))
    }

    #[test]
    fn the_config_keeps_the_scratch_to_itself() {
        let secrets = Secrets::fresh().unwrap();
        let other = Secrets::fresh().unwrap();
        assert_ne!(secrets.token, other.token);
        assert_ne!(secrets.gossip_key, other.gossip_key);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&secrets.gossip_key)
                .unwrap()
                .len(),
            32
        );
        let c = config_json(Path::new("/d"), [7001, 7002], &secrets);
        assert_eq!(c["addresses"]["http"], "unix:///d/http.sock");
        assert_eq!(c["ports"]["server"], 7001);
        assert_eq!(c["ports"]["serf_lan"], 7002);
        for off in ["serf_wan", "dns", "grpc", "https"] {
            assert_eq!(c["ports"][off], -1, "{off}");
        }
        assert!(c["ports"].get("http").is_none(), "no TCP port for HTTP");
        assert_eq!(c["acl"]["enabled"], true);
        assert_eq!(c["acl"]["default_policy"], "deny");
        assert_eq!(c["acl"]["tokens"]["master"], secrets.token.as_str());
        assert_ne!(secrets.token, CLUSTER_TOKEN);
        assert_eq!(c["encrypt"], secrets.gossip_key.as_str());
        assert_eq!(c["verify_incoming_rpc"], true);
        assert_eq!(c["ca_file"], "/d/tls.pem");
        assert_eq!(c["cert_file"], "/d/tls.pem");
        assert_eq!(c["key_file"], "/d/tls-key.pem");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restored_scratch_answers_us_alone() {
        let Some(consul) = consul() else { return };
        let cluster = set_cluster_token();
        let marker = format!("gossip-key-{}", uuid::Uuid::new_v4());
        let archive = snapshot_holding(&consul, &marker).await;

        let scratch = Scratch::start(&consul).await.unwrap();
        scratch.restore(archive).await.unwrap();
        // The snapshot replaced the ACL tables; our token was made again and reads the KV.
        let pairs = scratch.export_kv().await.unwrap();
        let value = pairs.iter().find(|p| p.key == "raptiformica/meshnet/consul/password");
        assert_eq!(value.and_then(|p| p.value.clone()), Some(b64(&marker)), "{pairs:?}");
        // Without our token the socket gives nothing either.
        let anonymous = ScratchApi::new(&scratch.dir.path().join(SOCKET), String::new());
        assert!(anonymous.export_kv().await.unwrap().is_empty());

        let dir = scratch.dir.path();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&dir.join(CONFIG)), 0o600);
        assert_eq!(mode(&dir.join(KEY)), 0o600);

        // No secret where other local users look: the command line, the environment (none).
        let config = config_of(&scratch);
        let (token, gossip_key) = (config["acl"]["tokens"]["master"].as_str(), config["encrypt"].as_str());
        let (token, gossip_key) = (token.unwrap(), gossip_key.unwrap());
        assert_ne!(token, cluster);
        let pid = scratch.consul.id();
        let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).into_owned();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        for secret in [cluster, token, gossip_key] {
            assert!(!cmdline.contains(secret), "{cmdline}");
        }
        assert!(environ.is_empty(), "{}", String::from_utf8_lossy(&environ));

        // Its only TCP ports are the server's and serf's (no HTTP, DNS, gRPC or WAN), and
        // neither gives anything to a local user.
        let ports = listening_ports(pid);
        let mut expected =
            [&config["ports"]["server"], &config["ports"]["serf_lan"]].map(|p| p.as_u64().unwrap() as u16);
        expected.sort();
        assert_eq!(ports, expected);
        for port in ports {
            for (asked, reply) in probe(port) {
                if let Some(what) = leak(&reply, &marker) {
                    panic!(
                        "port {port} gave {what} to {asked}: {}",
                        String::from_utf8_lossy(&reply)
                    );
                }
            }
        }
        let log = scratch.log_tail();
        assert!(log.contains("Non-TLS connection attempted"), "{log}");
    }

    /// The control of the test above: the same probes against a consul run as the scratch
    /// was before (`-dev` with HTTP, RPC and raft open on loopback, no ACLs) get everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_probes_read_an_open_consul() {
        let Some(consul) = consul() else { return };
        let marker = format!("gossip-key-{}", uuid::Uuid::new_v4());
        let d = tempfile::tempdir().unwrap();
        let [http, server] = free_ports().unwrap();
        let [lan, _] = free_ports().unwrap();
        let port = |p: u16| p.to_string();
        let _open = Program::new("an open consul", &consul)
            .args([
                "agent",
                "-dev",
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
                "-datacenter",
                DATACENTER,
            ])
            .args([
                "-http-port",
                &port(http),
                "-server-port",
                &port(server),
                "-serf-lan-port",
                &port(lan),
            ])
            .args([
                "-serf-wan-port",
                "-1",
                "-dns-port",
                "-1",
                "-grpc-port",
                "-1",
                "-hcl",
                "connect { enabled = false }",
            ])
            .output_to(d.path().join("log"))
            .spawn()
            .unwrap();
        let put = format!(
            "PUT /v1/kv/raptiformica/meshnet/consul/password HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n\r\n{marker}",
            marker.len()
        );
        let started = Instant::now();
        while !exchange(http, put.as_bytes()).trim_ascii_end().ends_with(b"true") {
            assert!(
                started.elapsed() < READY_WITHIN,
                "{}",
                std::fs::read_to_string(d.path().join("log")).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let leaks: Vec<(u16, &str, &str)> = [http, server]
            .into_iter()
            .flat_map(|p| probe(p).into_iter().map(move |(asked, reply)| (p, asked, reply)))
            .filter_map(|(p, asked, reply)| Some((p, asked, leak(&reply, &marker)?)))
            .collect();
        assert!(leaks.contains(&(http, "HTTP", "the KV's secret")), "{leaks:?}");
        assert!(leaks.contains(&(server, "RPC", "the KV's secret")), "{leaks:?}");
        assert!(leaks.contains(&(server, "raft", "a raft answer")), "{leaks:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_squatter_on_the_scratchs_ports_gets_nothing() {
        let Some(consul) = consul() else { return };
        set_cluster_token();
        // Another local user bound the ports we chose in the moment before consul did.
        let squatters = [
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        ];
        let taken = squatters.each_ref().map(|l| l.local_addr().unwrap().port());
        for l in &squatters {
            l.set_nonblocking(true).unwrap();
        }

        // Every try on them: a clear error, after consul failed to bind.
        let err = Scratch::start_with(&consul, || Ok(taken))
            .await
            .err()
            .expect("taken ports");
        let err = format!("{err:#}");
        assert!(
            err.contains("could not bind its loopback ports") && err.contains("address already in use"),
            "{err}"
        );
        // Once: other ports are tried and the scratch works.
        let mut offered = 0;
        let scratch = Scratch::start_with(&consul, || {
            offered += 1;
            if offered == 1 { Ok(taken) } else { free_ports() }
        })
        .await
        .unwrap();
        assert_eq!(offered, 2);
        let config = config_of(&scratch);
        assert_ne!(
            [&config["ports"]["server"], &config["ports"]["serf_lan"]],
            taken.map(serde_json::Value::from).each_ref()
        );
        assert!(scratch.export_kv().await.unwrap().is_empty());

        // Nothing ever connected to the squatters: no request, no token, no snapshot.
        for l in &squatters {
            match l.accept() {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
                Ok((mut conn, from)) => {
                    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    let mut got = Vec::new();
                    let _ = conn.read_to_end(&mut got);
                    panic!(
                        "{from} connected to a squatted port and sent: {}",
                        String::from_utf8_lossy(&got)
                    );
                }
            }
        }
    }
}
