//! yggdrasil 0.4.7 as the [`Overlay`]: keys from `yggdrasil -genconf`, a full config rendered
//! from the shared config, the daemon started detached, and peers changed at run time through
//! its admin socket.
//!
//! Files in the node's mesh state dir (all 0600): `yggdrasil.generated.json` (the generated
//! config, the only place the private key lives), `yggdrasil.conf` (the rendered config) and
//! `identity.json` (public key and address), plus the daemon's pid, log and admin socket.

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::Ipv6Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{NewKeys, Overlay, OverlayIdentity, Peer, address_is_up, preflight, uri_host};
use crate::sys::daemon::Applied;
use crate::sys::daemon::{self, Daemon, Written};
use crate::sys::fs_atomic::write_atomic;
use crate::sys::process::Program;

/// The TUN interface's name.
pub const IF_NAME: &str = "ygg0";

/// yggdrasil in the state dir `dir`, listening on `port`.
#[derive(Debug, Clone)]
pub struct Yggdrasil {
    dir: PathBuf,
    port: u16,
    daemon: Daemon,
}

impl Yggdrasil {
    pub fn new(dir: &Path, port: u16) -> Self {
        Self {
            dir: dir.to_path_buf(),
            port,
            daemon: Daemon::new("yggdrasil", dir),
        }
    }

    fn generated(&self) -> PathBuf {
        self.dir.join("yggdrasil.generated.json")
    }

    /// The daemon (pid and log files).
    pub fn daemon(&self) -> &Daemon {
        &self.daemon
    }

    /// The rendered config; its presence means this node is on the overlay.
    pub fn rendered(&self) -> PathBuf {
        self.dir.join("yggdrasil.conf")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("yggdrasil.sock")
    }

    fn binary() -> anyhow::Result<PathBuf> {
        daemon::find_program("yggdrasil")
            .context("yggdrasil is not installed here (slaving installs it; see `raptiformica artifacts`)")
    }

    /// The full config for these peers: the generated one with our settings over it.
    fn render(&self, generated: &Value, peers: &[Peer], allowed: &[String]) -> Value {
        let mut config = generated.clone();
        let uris: BTreeSet<String> = peers.iter().map(peer_uri).collect();
        let allowed: BTreeSet<&String> = allowed.iter().collect();
        let obj = config.as_object_mut().expect("checked when read");
        obj.insert("Peers".into(), json!(uris));
        obj.insert("InterfacePeers".into(), json!({}));
        obj.insert("Listen".into(), json!([format!("tcp://[::]:{}", self.port)]));
        obj.insert(
            "AdminListen".into(),
            json!(format!("unix://{}", self.socket().display())),
        );
        obj.insert("MulticastInterfaces".into(), json!([]));
        obj.insert("AllowedPublicKeys".into(), json!(allowed));
        obj.insert("IfName".into(), json!(IF_NAME));
        obj.insert("IfMTU".into(), json!(65535));
        obj.insert("NodeInfoPrivacy".into(), json!(true));
        config
    }

    fn read_generated(&self) -> anyhow::Result<Value> {
        let path = self.generated();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .ok()
            .filter(|v: &Value| v.get("PrivateKey").is_some_and(Value::is_string) && v.get("PublicKey").is_some())
            .with_context(|| {
                format!(
                    "`{}` is not a yggdrasil config with keys; delete it to make this node a new overlay identity",
                    path.display()
                )
            })?;
        Ok(value)
    }

    /// Sends one admin request and returns its `response`.
    fn admin(&self, request: &str, arguments: Value) -> anyhow::Result<Value> {
        let sock = self.socket();
        let mut stream = UnixStream::connect(&sock)
            .with_context(|| format!("cannot reach yggdrasil's admin socket `{}`", sock.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        let body = json!({"request": request, "arguments": arguments, "keepalive": false});
        stream.write_all(serde_json::to_string(&body)?.as_bytes())?;
        let mut de = serde_json::Deserializer::from_reader(BufReader::new(&stream));
        let reply: Value =
            serde::Deserialize::deserialize(&mut de).context("no reply from yggdrasil's admin socket")?;
        if reply["status"] != "success" {
            bail!("yggdrasil `{request}` failed: {}", reply["error"]);
        }
        Ok(reply["response"].clone())
    }

    /// Dials `peers` now, instead of at yggdrasil's next once-a-minute round (after an outage
    /// its own retries stop after three failed dials, and `addpeer` alone does nothing for a
    /// peer it knows already: the peer is removed and added again, which dials it). Dial only
    /// peers without a live link (see [`Self::linked_keys`]). Returns how many were dialed.
    pub fn redial(&self, peers: &[Peer]) -> anyhow::Result<usize> {
        let mut dialed = 0;
        for p in peers {
            let uri = peer_uri(p);
            let _ = self.admin("removepeer", json!({"uri": uri}));
            if self.admin("addpeer", json!({"uri": uri})).is_ok() {
                dialed += 1;
            }
        }
        Ok(dialed)
    }

    /// The keys of the peers this node has a live link with.
    pub fn linked_keys(&self) -> anyhow::Result<BTreeSet<String>> {
        let response = self.admin("getpeers", json!({}))?;
        Ok(linked_keys(&response))
    }

    /// Where the keys the running daemon admits are recorded (yggdrasil 0.4.7 reads
    /// `AllowedPublicKeys` once, at start).
    fn admitted_file(&self) -> PathBuf {
        self.dir.join("yggdrasil.admitted.json")
    }

    /// The keys the running daemon admits; `None` when unknown (an empty set admits every
    /// key: an empty list in yggdrasil's config).
    pub fn admitted(&self) -> Option<BTreeSet<String>> {
        let bytes = std::fs::read(self.admitted_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Starts yggdrasil with the rendered config (the agent's restart after an exit).
    pub fn start(&self) -> anyhow::Result<()> {
        preflight::check_tun()?;
        let _ = std::fs::remove_file(self.socket());
        let rendered: Value = serde_json::from_slice(&std::fs::read(self.rendered())?)
            .with_context(|| format!("`{}` is not JSON", self.rendered().display()))?;
        write_atomic(
            &self.admitted_file(),
            &serde_json::to_vec(&string_set(&rendered, "AllowedPublicKeys"))?,
        )?;
        self.daemon.start_go(
            &Self::binary()?,
            &[
                "-useconffile".into(),
                self.rendered().display().to_string(),
                "-logto".into(),
                "stdout".into(),
            ],
        )?;
        Ok(())
    }
}

/// Whether an `addpeer` failed only because the running daemon has that peer already (a
/// redial added it back, or an earlier run stopped half-way): what was wanted.
fn already_configured(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("already configured")
}

/// `tcp://host:port` of a peer.
fn peer_uri(p: &Peer) -> String {
    format!("tcp://{}:{}", uri_host(&p.host), p.port)
}

/// The config without the parts that can change at run time.
fn static_part(config: &Value) -> Value {
    let mut c = config.clone();
    if let Some(obj) = c.as_object_mut() {
        obj.remove("Peers");
        obj.remove("AllowedPublicKeys");
    }
    c
}

/// The keys in a `getpeers` response (`{"peers": [{"key": ..}, ..]}`; older builds answer
/// with an object keyed by address).
fn linked_keys(response: &Value) -> BTreeSet<String> {
    let entries: Vec<&Value> = match &response["peers"] {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) => o.values().collect(),
        _ => Vec::new(),
    };
    entries
        .into_iter()
        .filter_map(|p| p["key"].as_str().map(str::to_string))
        .collect()
}

/// Whether a daemon admitting `admitted` refuses one of `peers` (which then cannot dial it:
/// yggdrasil redials a refused peer every second, for ever). Unknown (a daemon started by an
/// older version) counts as refusing: one restart records it.
fn refuses_a_peer(admitted: Option<&BTreeSet<String>>, keys: &[String]) -> bool {
    admitted.is_none_or(|a| !a.is_empty() && keys.iter().any(|k| !a.contains(k)))
}

fn string_set(config: &Value, key: &str) -> BTreeSet<String> {
    config[key]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

impl Overlay for Yggdrasil {
    fn name(&self) -> &'static str {
        "yggdrasil"
    }

    fn identity(&self) -> anyhow::Result<OverlayIdentity> {
        std::fs::create_dir_all(&self.dir)?;
        let id_file = self.dir.join("identity.json");
        if let Some(id) = std::fs::read(&id_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<OverlayIdentity>(&b).ok())
            .filter(|id| id.port == self.port && self.generated().is_file())
        {
            return Ok(id);
        }
        let bin = Self::binary()?;
        if !self.generated().is_file() {
            let out = Program::new("yggdrasil -genconf", &bin)
                .args(["-genconf", "-json"])
                .inherit_env()
                .output()
                .with_context(|| format!("cannot run `{}`", bin.display()))?;
            if !out.status.success() {
                bail!(
                    "`yggdrasil -genconf` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let _: Value = serde_json::from_slice(&out.stdout).context("`yggdrasil -genconf -json` printed no JSON")?;
            write_atomic(&self.generated(), &out.stdout)?;
        }
        let generated = self.read_generated()?;
        let out = Program::new("yggdrasil -address", &bin)
            .args([
                "-useconffile".to_string(),
                self.generated().display().to_string(),
                "-address".into(),
            ])
            .inherit_env()
            .output()?;
        let address: Ipv6Addr = String::from_utf8_lossy(&out.stdout).trim().parse().with_context(|| {
            format!(
                "`yggdrasil -address` gave no address: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        let id = OverlayIdentity {
            public_key: generated["PublicKey"].as_str().unwrap_or_default().to_string(),
            address,
            port: self.port,
        };
        write_atomic(&id_file, &serde_json::to_vec_pretty(&id)?)?;
        Ok(id)
    }

    fn apply(&self, plan: &super::plan::OverlayPlan, new_keys: NewKeys) -> anyhow::Result<Applied> {
        let (peers, allowed) = (&plan.dial, &plan.allowed);
        let generated = self.read_generated()?;
        let next = self.render(&generated, peers, allowed);
        let Written::Running(previous) = self.daemon.write_config(&self.rendered(), &next, || self.start())? else {
            return Ok(Applied::Started);
        };
        // A peer the daemon does not admit dials in and is refused, every second (the link
        // itself comes from our dial, which it admits): restart with the keys (the daemon reads
        // them at start only) where that is harmless. With ring peering that is the few nodes
        // next to a new one.
        let admits_all = new_keys == NewKeys::Later || !refuses_a_peer(self.admitted().as_ref(), &plan.admit);
        let Some(previous) = previous.filter(|p| admits_all && static_part(p) == static_part(&next)) else {
            return self.daemon.restart(Duration::from_secs(3), || self.start());
        };
        // Same daemon settings: change the peers at run time. Keys of nodes that are not our
        // peers are admitted on the next start.
        let (old, new) = (string_set(&previous, "Peers"), string_set(&next, "Peers"));
        let added: Vec<&String> = new.difference(&old).collect();
        let removed: Vec<&String> = old.difference(&new).collect();
        // A peer dialed before we knew it refuses us: yggdrasil redials it every second for
        // ever, whatever `removepeer` says; only a restart ends that, where one is harmless.
        let refused: BTreeSet<String> = plan.refused_by.iter().map(peer_uri).collect();
        if new_keys == NewKeys::Restart && removed.iter().any(|u| refused.contains(*u)) {
            return self.daemon.restart(Duration::from_secs(3), || self.start());
        }
        // Each peer on its own: one that fails does not keep the others out (the rendered
        // file already lists them all, so a later run would see nothing left to add).
        let mut failed = Vec::new();
        for uri in &added {
            if let Err(e) = self.admin("addpeer", json!({"uri": uri}))
                && !already_configured(&e)
            {
                failed.push(format!("{uri}: {e:#}"));
            }
        }
        for uri in &removed {
            if let Err(e) = self.admin("removepeer", json!({"uri": uri})) {
                tracing::debug!("removepeer {uri}: {e:#}");
            }
        }
        if !failed.is_empty() {
            bail!("yggdrasil did not take every new peer:\n  {}", failed.join("\n  "));
        }
        Ok(if added.is_empty() && removed.is_empty() {
            Applied::Unchanged
        } else {
            Applied::PeersChanged {
                added: added.len(),
                removed: removed.len(),
            }
        })
    }

    fn wait_address(&self, timeout: Duration) -> anyhow::Result<()> {
        let id = self.identity()?;
        let deadline = Instant::now() + timeout;
        loop {
            if address_is_up(id.address) {
                return Ok(());
            }
            if self.daemon.pid().is_none() {
                bail!(
                    "yggdrasil stopped; its log `{}` ends with:\n{}",
                    self.daemon.log_file.display(),
                    self.daemon.log_tail(12)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "yggdrasil did not bring up {} on {IF_NAME} within {:?}; its log ends with:\n{}",
                    id.address,
                    timeout,
                    self.daemon.log_tail(12)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pid(&self) -> Option<i32> {
        self.daemon.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_the_daemon_has_already_is_no_failure() {
        let e = anyhow::anyhow!("yggdrasil `addpeer` failed: \"peer already configured\"");
        assert!(already_configured(&e));
        let e = anyhow::anyhow!("yggdrasil `addpeer` failed: \"invalid URI\"");
        assert!(!already_configured(&e));
    }

    #[test]
    fn render_keeps_keys_and_sets_peers_and_allowed_keys() {
        let y = Yggdrasil::new(Path::new("/state"), 12345);
        let generated =
            json!({"PrivateKey": "p", "PublicKey": "k", "MulticastInterfaces": [{"Regex": ".*"}], "Peers": []});
        let peers = [
            Peer {
                public_key: "b".into(),
                host: "172.18.0.3".into(),
                port: 12345,
            },
            Peer {
                public_key: "c".into(),
                host: "fd00::3".into(),
                port: 1,
            },
        ];
        let c = y.render(&generated, &peers, &["k".into(), "b".into(), "c".into()]);
        assert_eq!(c["PrivateKey"], "p");
        assert_eq!(c["MulticastInterfaces"], json!([]));
        assert_eq!(c["Peers"], json!(["tcp://172.18.0.3:12345", "tcp://[fd00::3]:1"]));
        assert_eq!(c["AllowedPublicKeys"], json!(["b", "c", "k"]));
        assert_eq!(c["AdminListen"], "unix:///state/yggdrasil.sock");
        assert_eq!(static_part(&c), static_part(&y.render(&generated, &[], &[])));
    }

    #[test]
    fn a_peer_whose_key_is_not_admitted_needs_a_restart() {
        let peer = |k: &str| k.to_string();
        let admitted: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(!refuses_a_peer(Some(&admitted), &[peer("a"), peer("b")]));
        assert!(refuses_a_peer(Some(&admitted), &[peer("a"), peer("c")]));
        assert!(
            !refuses_a_peer(Some(&BTreeSet::new()), &[peer("c")]),
            "an empty list admits all"
        );
        assert!(refuses_a_peer(None, &[peer("c")]), "unknown: restarted once to know");
    }

    #[test]
    fn linked_keys_read_both_getpeers_shapes() {
        let list = json!({"peers": [{"key": "a", "remote": "tcp://h:1"}, {"key": "b"}]});
        assert_eq!(linked_keys(&list), ["a".to_string(), "b".to_string()].into());
        let map = json!({"peers": {"200::1": {"key": "c"}}});
        assert_eq!(linked_keys(&map), ["c".to_string()].into());
        assert!(linked_keys(&json!({})).is_empty());
    }
}
