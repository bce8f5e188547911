//! The KV: reads (whole trees, blocking queries, raw values), transactions, and how keys and
//! values are encoded.

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use consulrs::api::kv::requests::ReadKeyRequest;
use consulrs::error::ClientError;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::*;
use crate::consensus::SharedStore;
use crate::sys::mapping::Mapping;
use crate::sys::mapping::PREFIX;

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
    #[serde(default)]
    create_index: u64,
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

/// The entries of a KV reply, values decoded; keys that break the key rule are left out with
/// a warning.
fn decoded(raw: Vec<RawPair>) -> anyhow::Result<Vec<Entry>> {
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
    Ok(out)
}

/// The keys of `raw` below `below` (`key/`) with their values.
fn subtree(raw: Vec<RawPair>, below: &str) -> anyhow::Result<Mapping> {
    Ok(decoded(raw)?
        .into_iter()
        .filter(|p| p.key.starts_with(below))
        .filter_map(|p| Some((p.key, p.value?)))
        .collect())
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

impl ConsulApi {
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
    pub(super) async fn blocking_as<T: serde::de::DeserializeOwned>(
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
            request = request.header("X-Consul-Token", super::token_header(token)?);
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

    /// Waits (a blocking query, `stale`: any server answers) until the subtree below `key/`
    /// changes or `wait` runs out: its keys and values, and the index for the next call (the
    /// same index: nothing changed). A subtree with no key is an error (consul's 404).
    pub async fn watch_tree(&self, key: &str, index: u64, wait: Duration) -> anyhow::Result<(Mapping, u64)> {
        let below = format!("{key}/");
        let (raw, next): (Vec<RawPair>, u64) = self.blocking(&format!("kv/{below}?recurse&stale"), index, wait).await?;
        Ok((subtree(raw, &below)?, next))
    }

    /// As [`ConsulApi::watch_tree`], where a subtree with no key is an empty one (a blocking
    /// query on it waits for its first key).
    pub async fn watch_subtree(&self, key: &str, index: u64, wait: Duration) -> anyhow::Result<(Mapping, u64)> {
        let below = format!("{key}/");
        let path = format!(
            "{}?recurse&stale&index={index}&wait={}s",
            encode_path(&below),
            wait.as_secs()
        );
        let (raw, next): (Vec<RawPair>, u64) = self.kv_pairs(&path).await?;
        Ok((subtree(raw, &below)?, next))
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
        Ok((decoded(raw)?, index))
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

    /// GET `url`. A read is safe to repeat: a connection the agent dropped (a busy machine:
    /// "connection reset by peer" failed a new node's `assimilate` at 50 nodes) is tried
    /// again, a few times, before it is an error; a timeout is not.
    async fn get_again(&self, url: &str) -> anyhow::Result<reqwest::Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.http.get(url).send().await {
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < 4 && !e.is_timeout() => {
                    tracing::debug!("GET {url}: {e} (retrying)");
                    tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("GET {url}")),
            }
        }
    }

    /// One key's value, None when it is absent.
    pub async fn get_value(&self, key: &str) -> anyhow::Result<Option<Value>> {
        self.value_at(key, "").await
    }

    /// As [`ConsulApi::get_value`], from any server (`stale`): answers at once without a
    /// leader, maybe a little behind. For showing, not for deciding.
    pub async fn get_value_as_known(&self, key: &str) -> anyhow::Result<Option<Value>> {
        self.value_at(key, "&stale").await
    }

    async fn value_at(&self, key: &str, query: &str) -> anyhow::Result<Option<Value>> {
        let url = format!("{}/v1/kv/{}?raw{query}", self.base, encode_path(key));
        let resp = self.get_again(&url).await?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(decode(&resp.bytes().await?))),
            s => bail!("GET {url}: {s}: {}", resp.text().await.unwrap_or_default().trim()),
        }
    }

    /// One key's raw bytes and `ModifyIndex`, None when it is absent.
    pub async fn get_raw(&self, key: &str) -> anyhow::Result<Option<(Vec<u8>, u64)>> {
        Ok(self.watch_raw(key, 0, Duration::ZERO).await?.0)
    }

    /// The index at which `key` was created (kept when the key is written again), None when
    /// it is absent.
    pub async fn created_at(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let (raw, _) = self.kv_pairs(&encode_path(key)).await?;
        Ok(raw.into_iter().next().map(|pair| pair.create_index))
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
    pub(super) async fn kv_get<T: serde::de::DeserializeOwned + Default>(
        &self,
        path: &str,
    ) -> anyhow::Result<(T, u64)> {
        let url = format!("{}/v1/kv/{path}", self.base);
        let resp = self.get_again(&url).await?;
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

    /// Runs KV operations as transactions of at most [`TXN_OPS`]; false if one was rolled back
    /// because a check-and-set failed. Retried on server errors: a transaction that failed
    /// during a leader change may still have been committed, and all our operations are
    /// idempotent or check-and-set.
    pub(super) async fn txn(&self, ops: Vec<Value>) -> anyhow::Result<bool> {
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
