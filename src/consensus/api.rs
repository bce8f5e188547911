//! Talking to the local consul agent over HTTP: the KV through consulrs, the endpoints it lacks
//! (members, raft configuration, join, transactions) with the same reqwest.
//!
//! Values are stored as JSON text (`"abc"`, `42`, `[..]`); a value that is not JSON (written by
//! hand with `consul kv put`) reads as a string.

use std::net::Ipv6Addr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use consulrs::api::kv::requests::ReadKeyRequest;
use consulrs::client::{ConsulClient, ConsulClientSettings};
use consulrs::error::ClientError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SharedStore;
use crate::sys::mapping::Mapping;
use crate::sys::mapping::PREFIX;

/// The local agent's HTTP address (consul binds its API to loopback only).
pub const LOCAL_HTTP: &str = "http://127.0.0.1:8500";
/// Written last when the KV has been seeded: until it is there, what the KV holds is not the
/// shared config yet (a seed of many keys takes several transactions).
pub const SEEDED_KEY: &str = "raptiformica-meta/seeded";
/// Consul refuses transactions of more operations than this.
const TXN_OPS: usize = 64;

/// One member as `/v1/agent/members` gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentMember {
    pub name: String,
    pub addr: String,
    pub port: u16,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
    pub status: Serf,
    #[serde(default)]
    pub protocol_cur: u8,
}

/// A member's status as serf gives it (a number in consul's API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(from = "u8")]
pub enum Serf {
    None,
    Alive,
    Leaving,
    Left,
    Failed,
    Unknown(u8),
}

impl From<u8> for Serf {
    fn from(n: u8) -> Self {
        match n {
            0 => Serf::None,
            1 => Serf::Alive,
            2 => Serf::Leaving,
            3 => Serf::Left,
            4 => Serf::Failed,
            other => Serf::Unknown(other),
        }
    }
}

impl Serf {
    /// Serf's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Serf::None => "none",
            Serf::Alive => "alive",
            Serf::Leaving => "leaving",
            Serf::Left => "left",
            Serf::Failed => "failed",
            Serf::Unknown(_) => "unknown",
        }
    }
}

impl AgentMember {
    /// Serf's status names.
    pub fn status_name(&self) -> &'static str {
        self.status.name()
    }

    pub fn alive(&self) -> bool {
        self.status == Serf::Alive
    }

    pub fn failed(&self) -> bool {
        self.status == Serf::Failed
    }
}

/// One server in the raft configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    pub node: String,
    pub leader: bool,
    pub voter: bool,
}

/// The cluster's ACL token, sent by every client this process makes (see [`use_token`]).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every consul client of this process send `token` (read once at start from the
/// cache dir; see [`acl`](super::acl)). The snapshot's scratch consul, which must never see
/// it, is asked with a client of its own (`snapshot::scratch_api`).
pub fn use_token(token: String) {
    let _ = TOKEN.set(token);
}

/// The token [`use_token`] set (tests check that it goes nowhere it must not).
#[cfg(test)]
pub(crate) fn current_token() -> Option<&'static str> {
    TOKEN.get().map(String::as_str)
}

/// A client of one consul agent's HTTP API.
pub struct ConsulApi {
    http: reqwest::Client,
    base: String,
    kv: ConsulClient,
}

impl ConsulApi {
    /// The agent on this machine.
    pub fn local() -> anyhow::Result<Self> {
        Self::new(LOCAL_HTTP, Duration::from_secs(5))
    }

    /// The agent at `base`; every request gives up after `timeout`.
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = TOKEN.get() {
            let mut value =
                reqwest::header::HeaderValue::from_str(token).context("the consul token is not a header value")?;
            value.set_sensitive(true);
            headers.insert("X-Consul-Token", value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_millis(500))
            .timeout(timeout)
            .no_proxy()
            .use_rustls_tls()
            .build()
            .context("cannot build the HTTP client")?;
        let settings = ConsulClientSettings {
            address: base.to_string(),
            ca_certs: Vec::new(),
            client_cert: None,
            client_key: None,
            token: None,
            verify: true,
            version: 1,
        };
        let kv = ConsulClient {
            http: rustify::clients::reqwest::Client::new(base, http.clone()),
            settings,
        };
        Ok(Self {
            http,
            base: base.to_string(),
            kv,
        })
    }

    /// The agent's address, as given.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let url = format!("{}/v1/{path}", self.base);
        let resp = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default().trim());
        }
        resp.json()
            .await
            .with_context(|| format!("GET {url}: unexpected reply"))
    }

    /// The leader's address, or None while there is none.
    pub async fn leader(&self) -> anyhow::Result<Option<String>> {
        let leader: String = self.get("status/leader").await?;
        Ok(Some(leader).filter(|l| !l.is_empty()))
    }

    /// The members this agent sees (LAN pool).
    pub async fn members(&self) -> anyhow::Result<Vec<AgentMember>> {
        self.get("agent/members").await
    }

    /// The names of the members that are alive.
    pub async fn alive_members(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .members()
            .await?
            .into_iter()
            .filter(|m| m.alive())
            .map(|m| m.name)
            .collect())
    }

    /// The raft servers (needs a leader).
    pub async fn raft(&self) -> anyhow::Result<Vec<RaftServer>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Configuration {
            servers: Vec<RaftServer>,
        }
        let c: Configuration = self.get("operator/raft/configuration").await?;
        Ok(c.servers)
    }

    /// Asks the agent to join the member at `addr` (serf LAN).
    pub async fn join(&self, addr: Ipv6Addr) -> anyhow::Result<()> {
        let url = format!("{}/v1/agent/join/{addr}", self.base);
        let resp = self.http.put(&url).send().await.with_context(|| format!("PUT {url}"))?;
        if !resp.status().is_success() {
            bail!("joining {addr}: {}", resp.text().await.unwrap_or_default().trim());
        }
        Ok(())
    }

    /// GET `path` as a blocking query: returns once consul's index for it differs from
    /// `index` (0: at once) or `wait` passed; also returns the index to wait on next.
    pub async fn blocking<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        index: u64,
        wait: Duration,
    ) -> anyhow::Result<(T, u64)> {
        self.blocking_as(path, index, wait, None).await
    }

    /// [`ConsulApi::blocking`] with `token` instead of ours, if given.
    async fn blocking_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        index: u64,
        wait: Duration,
        token: Option<&str>,
    ) -> anyhow::Result<(T, u64)> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = format!("{}/v1/{path}{sep}index={index}&wait={}s", self.base, wait.as_secs());
        let mut request = self.http.get(&url);
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(token).context("a token that is not a header value")?;
            value.set_sensitive(true);
            request = request.header("X-Consul-Token", value);
        }
        let resp = request.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default().trim());
        }
        let new_index = consul_index(&resp);
        let body = resp
            .json()
            .await
            .with_context(|| format!("GET {url}: unexpected reply"))?;
        Ok((body, new_index))
    }

    /// Every key under `raptiformica/` with the KV's index (`X-Consul-Index`) of the read.
    pub async fn read_all_indexed(&self) -> anyhow::Result<(Mapping, u64)> {
        let (pairs, index) = self.entries(&format!("{PREFIX}/")).await?;
        let mut out = Mapping::new();
        for p in pairs {
            if let Some(v) = p.value {
                out.insert(p.key, v);
            }
        }
        Ok((out, index))
    }

    /// The KV's index for every key under `raptiformica/`, read cheaply (only the top-level
    /// key names travel): it changes whenever any shared key is written or deleted, so a
    /// reader can keep its copy of the config until it does.
    pub async fn config_index(&self) -> anyhow::Result<u64> {
        let (_, index): (Vec<String>, u64) = self.kv_get(&format!("{PREFIX}/?keys&separator=/")).await?;
        Ok(index)
    }

    /// `key` and the keys below `key/` with their values (a subtree, not a string prefix).
    pub async fn read_tree(&self, key: &str) -> anyhow::Result<Mapping> {
        let below = format!("{key}/");
        let (pairs, _) = self.entries(key).await?;
        Ok(pairs
            .into_iter()
            .filter(|p| p.key == key || p.key.starts_with(&below))
            .filter_map(|p| Some((p.key, p.value?)))
            .collect())
    }

    /// `key` and the keys below `key/`, each with its `ModifyIndex`.
    pub async fn tree_indexes(&self, key: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let below = format!("{key}/");
        let (pairs, _) = self.entries(key).await?;
        Ok(pairs
            .into_iter()
            .filter(|p| p.key == key || p.key.starts_with(&below))
            .map(|p| (p.key, p.modify_index))
            .collect())
    }

    /// The KV entries whose keys start with `prefix` (a string prefix, as consul's `recurse`),
    /// with the index of the read. Keys that break the key rule are left out with a warning.
    async fn entries(&self, prefix: &str) -> anyhow::Result<(Vec<Entry>, u64)> {
        let (raw, index) = self.kv_pairs(&format!("{}?recurse", encode_path(prefix))).await?;
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            if let Err(e) = crate::sys::mapping::check_key(&r.key) {
                tracing::warn!("consul's KV: ignoring a key: {e}");
                continue;
            }
            let value = match r.value {
                Some(_) => Some(decode(&r.bytes()?)),
                None => None,
            };
            out.push(Entry {
                key: r.key,
                value,
                modify_index: r.modify_index,
            });
        }
        Ok((out, index))
    }

    /// Runs `ops` as one transaction (at most [`TXN_OPS`]): true when applied, false when it
    /// was rolled back (a check failed).
    pub async fn txn_once(&self, ops: Vec<Value>) -> anyhow::Result<bool> {
        anyhow::ensure!(
            ops.len() <= TXN_OPS,
            "a transaction of {} operations is too large",
            ops.len()
        );
        self.txn(ops).await
    }

    /// Whether the KV's seeding was completed (see [`SEEDED_KEY`]).
    pub async fn is_seeded(&self) -> anyhow::Result<bool> {
        Ok(self.get_value(SEEDED_KEY).await?.is_some())
    }

    /// One key's value, None when it is absent.
    pub async fn get_value(&self, key: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}/v1/kv/{}?raw", self.base, encode_path(key));
        let resp = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(decode(&resp.bytes().await?))),
            s => bail!("GET {url}: {s}: {}", resp.text().await.unwrap_or_default().trim()),
        }
    }

    /// The local agent's own member entry and config (`/v1/agent/self`).
    pub async fn agent_self(&self) -> anyhow::Result<Value> {
        self.get("agent/self").await
    }

    /// Forces a failed member out of the cluster (serf `force-leave`).
    pub async fn force_leave(&self, node: &str) -> anyhow::Result<()> {
        self.put_ok(&format!("agent/force-leave/{}", encode_segment(node)), None)
            .await
            .map(|_| ())
    }

    /// Makes the agent token (`accessor`, `secret`) with the agent policy, unless it exists.
    /// True when it was made now.
    pub async fn ensure_agent_token(&self, accessor: &str, secret: &str) -> anyhow::Result<bool> {
        use super::acl::{AGENT_POLICY, AGENT_RULES};
        if self
            .get::<Value>(&format!("acl/token/{}", encode_segment(accessor)))
            .await
            .is_ok()
        {
            // A cluster made by an older version: its policy may lack rules added since.
            if let Ok(p) = self.get::<Value>(&format!("acl/policy/name/{AGENT_POLICY}")).await
                && p["Rules"].as_str() != Some(AGENT_RULES)
                && let Some(id) = p["ID"].as_str()
            {
                let policy = json!({"ID": id, "Name": AGENT_POLICY, "Description": "raptiformica: what consul agents do", "Rules": AGENT_RULES});
                self.put_ok(&format!("acl/policy/{id}"), Some(policy))
                    .await
                    .context("cannot update the agent policy")?;
            }
            return Ok(false);
        }
        let policy =
            json!({"Name": AGENT_POLICY, "Description": "raptiformica: what consul agents do", "Rules": AGENT_RULES});
        if let Err(e) = self.put_ok("acl/policy", Some(policy)).await
            && !format!("{e:#}").contains("already exists")
        {
            return Err(e.context("cannot make the agent policy"));
        }
        let token = json!({
            "AccessorID": accessor,
            "SecretID": secret,
            "Description": "raptiformica: consul agents",
            "Policies": [{"Name": AGENT_POLICY}],
        });
        self.put_ok("acl/token", Some(token)).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot make the agent token: {}",
                e.to_string().replace(secret, "<secret>")
            )
        })?;
        Ok(true)
    }

    /// A session that expires after `ttl` unless renewed; its locks are released then.
    pub async fn create_session(&self, name: &str, ttl: Duration) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let body =
            json!({"Name": name, "TTL": format!("{}s", ttl.as_secs()), "Behavior": "release", "LockDelay": "1s"});
        let text = self.put_ok("session/create", Some(body)).await?;
        let c: Created = serde_json::from_str(&text).context("session/create: unexpected reply")?;
        Ok(c.id)
    }

    /// Renews a session; false when it is gone (expired or destroyed).
    pub async fn renew_session(&self, id: &str) -> anyhow::Result<bool> {
        let url = format!("{}/v1/session/renew/{id}", self.base);
        let resp = self.http.put(&url).send().await.with_context(|| format!("PUT {url}"))?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!("PUT {url}: {s}: {}", resp.text().await.unwrap_or_default().trim()),
        }
    }

    pub async fn destroy_session(&self, id: &str) -> anyhow::Result<()> {
        self.put_ok(&format!("session/destroy/{id}"), None).await.map(|_| ())
    }

    /// Tries to take the lock `key` for `session`; true when it is ours.
    pub async fn acquire(&self, key: &str, session: &str, holder: &str) -> anyhow::Result<bool> {
        let url = format!("{}/v1/kv/{}?acquire={session}", self.base, encode_path(key));
        let resp = self
            .http
            .put(&url)
            .body(holder.to_string())
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        if !resp.status().is_success() {
            bail!(
                "PUT {url}: {}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default().trim()
            );
        }
        Ok(resp.text().await?.trim() == "true")
    }

    /// Fires the user event `name` with `payload`, to the nodes whose name matches
    /// `node_filter` (a regex; None: every node). Returns the event's id.
    pub async fn fire_event(&self, name: &str, payload: Vec<u8>, node_filter: Option<&str>) -> anyhow::Result<String> {
        let mut url = format!("{}/v1/event/fire/{}", self.base, encode_segment(name));
        if let Some(f) = node_filter {
            url.push_str(&format!("?node={}", encode_segment(f)));
        }
        let resp = self
            .http
            .put(&url)
            .body(payload)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("consul refused the event `{name}`: {status}: {}", text.trim());
        }
        let v: Value = serde_json::from_str(&text).with_context(|| format!("PUT {url}: unexpected reply"))?;
        Ok(v["ID"].as_str().unwrap_or_default().to_string())
    }

    /// The user events this agent received (its recent buffer), oldest first, blocking until
    /// the list differs from `index` or `wait` passes.
    /// `token` must grant `event` read (the agent token does; see [`super::acl::AGENT_RULES`]).
    pub async fn events(
        &self,
        index: u64,
        wait: Duration,
        token: &str,
    ) -> anyhow::Result<(Vec<crate::consensus::event::RawEvent>, u64)> {
        self.blocking_as("event/list", index, wait, Some(token)).await
    }

    /// One key's raw bytes and `ModifyIndex`, None when it is absent.
    pub async fn get_raw(&self, key: &str) -> anyhow::Result<Option<(Vec<u8>, u64)>> {
        Ok(self.watch_raw(key, 0, Duration::ZERO).await?.0)
    }

    /// As [`ConsulApi::get_raw`], blocking until the key's index differs from `index` or
    /// `wait` passes; also returns the index to wait on next.
    pub async fn watch_raw(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
    ) -> anyhow::Result<(Option<(Vec<u8>, u64)>, u64)> {
        let mut path = encode_path(key);
        if index > 0 {
            path.push_str(&format!("?index={index}&wait={}s", wait.as_secs()));
        }
        let (raw, next) = self.kv_pairs(&path).await?;
        match raw.into_iter().next() {
            Some(pair) => Ok((Some((pair.bytes()?, pair.modify_index)), next)),
            None => Ok((None, next)),
        }
    }

    /// Every key below `prefix` (a string prefix) with its raw bytes, sorted by key.
    pub async fn list_raw(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut out = self.list_raw_unsorted(prefix.to_string()).await?;
        out.sort();
        Ok(out)
    }

    /// As [`ConsulApi::list_raw`], in consul's order (owned prefix: for many reads at once).
    pub async fn list_raw_unsorted(&self, prefix: String) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let (raw, _) = self.kv_pairs(&format!("{}?recurse", encode_path(&prefix))).await?;
        raw.into_iter().map(|p| Ok((p.key.clone(), p.bytes()?))).collect()
    }

    /// The keys starting with `prefix`, without their values.
    pub async fn list_keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        Ok(self.kv_get(&format!("{}?keys", encode_path(prefix))).await?.0)
    }

    /// GET `/v1/kv/<path>` (the path with its query): the pairs (none for a 404) and the
    /// index of the read.
    async fn kv_pairs(&self, path: &str) -> anyhow::Result<(Vec<RawPair>, u64)> {
        self.kv_get(path).await
    }

    /// GET `/v1/kv/<path>` (the path with its query): the reply (its default for a 404, no
    /// such key) and the index of the read (`X-Consul-Index`).
    async fn kv_get<T: serde::de::DeserializeOwned + Default>(&self, path: &str) -> anyhow::Result<(T, u64)> {
        let url = format!("{}/v1/kv/{path}", self.base);
        let resp = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let index = consul_index(&resp);
        match resp.status().as_u16() {
            404 => return Ok((T::default(), index)),
            200 => {}
            s => bail!("GET {url}: {s}: {}", resp.text().await.unwrap_or_default().trim()),
        }
        let reply = resp
            .json()
            .await
            .with_context(|| format!("GET {url}: unexpected reply"))?;
        Ok((reply, index))
    }

    /// The servers' health as autopilot sees it (`/v1/operator/autopilot/health`: each
    /// server's `Name`, `Leader`, `LastContact`, `Healthy`).
    /// consul answers 429 (with the same body) while the servers are not all healthy.
    pub async fn autopilot_health(&self) -> anyhow::Result<Value> {
        let url = format!("{}/v1/operator/autopilot/health", self.base);
        let resp = self.http.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() && status.as_u16() != 429 {
            bail!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default().trim());
        }
        resp.json()
            .await
            .with_context(|| format!("GET {url}: unexpected reply"))
    }

    /// Every KV pair as consul holds it: key, value (base64, as consul gives it) and flags.
    pub async fn export_kv(&self) -> anyhow::Result<Vec<ExportedPair>> {
        Ok(self.kv_get("?recurse").await?.0)
    }

    /// Sets every pair (values as base64), in transactions of [`TXN_OPS`].
    pub async fn import_kv(&self, pairs: &[ExportedPair]) -> anyhow::Result<()> {
        let ops: Vec<Value> = pairs
            .iter()
            .map(|p| json!({"KV": {"Verb": "set", "Key": p.key, "Value": p.value.clone().unwrap_or_default(), "Flags": p.flags}}))
            .collect();
        anyhow::ensure!(self.txn(ops).await?, "consul refused to write the keys");
        Ok(())
    }

    /// A snapshot of the servers' whole state (`GET /v1/snapshot`, from the leader): the
    /// gzipped archive consul makes, as is.
    pub async fn save_snapshot(&self) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}/v1/snapshot", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: {status}: {}", resp.text().await.unwrap_or_default().trim());
        }
        Ok(resp.bytes().await.with_context(|| format!("GET {url}"))?.to_vec())
    }

    /// Replaces the servers' whole state with a snapshot (`PUT /v1/snapshot`).
    pub async fn restore_snapshot(&self, archive: Vec<u8>) -> anyhow::Result<()> {
        let url = format!("{}/v1/snapshot", self.base);
        let resp = self
            .http
            .put(&url)
            .timeout(Duration::from_secs(300))
            .body(archive)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("PUT {url}: {status}: {}", resp.text().await.unwrap_or_default().trim());
        }
        Ok(())
    }

    /// Releases the lock `key` held by `session`.
    pub async fn release(&self, key: &str, session: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/kv/{}?release={session}", self.base, encode_path(key));
        self.http.put(&url).send().await.with_context(|| format!("PUT {url}"))?;
        Ok(())
    }

    /// PUT `path` (with an optional JSON body); the reply's text on success.
    async fn put_ok(&self, path: &str, body: Option<Value>) -> anyhow::Result<String> {
        let url = format!("{}/v1/{path}", self.base);
        let mut req = self.http.put(&url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("PUT {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("PUT {url}: {status}: {}", text.trim());
        }
        Ok(text)
    }

    /// Runs KV operations as transactions of at most [`TXN_OPS`]; false if one was rolled back
    /// because a check-and-set failed. Retried on server errors: a transaction that failed
    /// during a leader change may still have been committed, and all our operations are
    /// idempotent or check-and-set.
    async fn txn(&self, ops: Vec<Value>) -> anyhow::Result<bool> {
        let url = format!("{}/v1/txn", self.base);
        let mut all_applied = true;
        for batch in ops.chunks(TXN_OPS) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let resp = self.http.put(&url).json(&batch).send().await;
                match resp {
                    Ok(r) if r.status().is_success() => break,
                    // 409: rolled back, e.g. a check-and-set lost.
                    Ok(r) if r.status().as_u16() == 409 => {
                        all_applied = false;
                        break;
                    }
                    Ok(r) if r.status().is_server_error() && attempt < 5 => {
                        tracing::debug!("txn: {} (retrying)", r.status());
                    }
                    Ok(r) => bail!(
                        "PUT {url}: {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default().trim()
                    ),
                    Err(e) if attempt < 5 => tracing::debug!("txn: {e} (retrying)"),
                    Err(e) => return Err(e).with_context(|| format!("PUT {url}")),
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
        Ok(all_applied)
    }
}

/// The index a reply carries (`X-Consul-Index`) for the next blocking query; 0 when none.
fn consul_index(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A KV pair as consul exports it (`/v1/kv/?recurse`), its value still base64.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExportedPair {
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub flags: u64,
}

/// A KV pair as consul's `/v1/kv` gives it, its value still base64.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
}

impl RawPair {
    fn bytes(&self) -> anyhow::Result<Vec<u8>> {
        match &self.value {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .with_context(|| format!("consul's KV: the value of `{}` is not base64", self.key)),
            None => Ok(Vec::new()),
        }
    }
}

/// One path segment, percent-encoded (everything but unreserved characters).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A KV key as a URL path: each segment percent-encoded, `/` kept between them.
pub fn encode_path(key: &str) -> String {
    key.split('/').map(encode_segment).collect::<Vec<_>>().join("/")
}

/// One KV entry as read with its index.
struct Entry {
    key: String,
    /// None for a "folder" key.
    value: Option<Value>,
    modify_index: u64,
}

/// A value as stored in the KV.
pub fn encode(value: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

/// A value read from the KV: JSON text, else the raw string.
pub fn decode(raw: &[u8]) -> Value {
    serde_json::from_slice(raw).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
}

fn kv_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::APIError { code, message } => {
            anyhow::anyhow!("consul answered {code}: {}", message.unwrap_or_default().trim())
        }
        ClientError::RestClientError { source } => anyhow::anyhow!("cannot reach consul: {source}"),
        other => anyhow::anyhow!("consul KV: {other}"),
    }
}

impl SharedStore for ConsulApi {
    async fn read_all(&self) -> anyhow::Result<Mapping> {
        let mut opts = ReadKeyRequest::builder();
        opts.recurse(true);
        let pairs = match consulrs::kv::read(&self.kv, &format!("{PREFIX}/"), Some(&mut opts)).await {
            Ok(r) => r.response,
            Err(ClientError::APIError { code: 404, .. }) => return Ok(Mapping::new()),
            Err(e) => return Err(kv_error(e)),
        };
        let mut out = Mapping::new();
        for pair in pairs {
            let raw: Vec<u8> = match pair.value {
                Some(v) => v.try_into().map_err(kv_error)?,
                None => continue, // a "folder" key
            };
            // A key written by hand that breaks the key rule is left out, not the whole KV.
            if let Err(e) = crate::sys::mapping::check_key(&pair.key) {
                tracing::warn!("consul's KV: ignoring a key: {e}");
                continue;
            }
            out.insert(pair.key, decode(&raw));
        }
        Ok(out)
    }

    async fn set_many(&self, entries: &Mapping) -> anyhow::Result<()> {
        let ops = entries
            .iter()
            .map(|(k, v)| json!({"KV": {"Verb": "set", "Key": k, "Value": encode(v)}}))
            .collect();
        if !self.txn(ops).await? {
            bail!("consul rolled back the write of {} key(s)", entries.len());
        }
        Ok(())
    }

    async fn seed(&self, mapping: &Mapping) -> anyhow::Result<bool> {
        // Each key only where it is absent, so that a seed resumed after a seeder died, or
        // racing another, never overwrites what is there; the marker goes last.
        let mut all_ours = true;
        let ops: Vec<Value> = mapping
            .iter()
            .map(|(k, v)| json!({"KV": {"Verb": "cas", "Key": k, "Value": encode(v), "Index": 0}}))
            .collect();
        for batch in ops.chunks(TXN_OPS) {
            if !self.txn(batch.to_vec()).await? {
                // One key of the batch was there already: set the absent ones one by one.
                all_ours = false;
                for op in batch {
                    let _ = self.txn(vec![op.clone()]).await?;
                }
            }
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let marker = json!({"KV": {"Verb": "set", "Key": SEEDED_KEY, "Value": encode(&Value::from(at))}});
        self.txn(vec![marker]).await?;
        Ok(all_ours)
    }

    async fn delete_tree(&self, key: &str) -> anyhow::Result<()> {
        // consul's `recurse` is a string prefix: `a` would take `ab` too. The key itself and
        // what lies below `key/` are removed, in one transaction.
        let ops = vec![
            json!({"KV": {"Verb": "delete", "Key": key}}),
            json!({"KV": {"Verb": "delete-tree", "Key": format!("{key}/")}}),
        ];
        if !self.txn(ops).await? {
            bail!("deleting `{key}` was rolled back");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_foreign_text_reads_as_a_string() {
        for v in [json!("42"), json!(42), json!(["a", 1]), json!(true)] {
            let raw = base64::engine::general_purpose::STANDARD.decode(encode(&v)).unwrap();
            assert_eq!(decode(&raw), v);
        }
        assert_eq!(decode(b"plain text"), json!("plain text"));
    }

    #[tokio::test]
    async fn an_agent_that_is_not_there_is_a_quick_clear_error() {
        // A closed port on loopback: refused at once.
        let api = ConsulApi::new("http://127.0.0.1:9", Duration::from_secs(1)).unwrap();
        let started = std::time::Instant::now();
        let err = format!("{:#}", api.read_all().await.unwrap_err());
        assert!(err.contains("cannot reach consul"), "{err}");
        assert!(api.leader().await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
