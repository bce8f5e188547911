//! Talking to the local consul agent over HTTP: the KV through consulrs, the endpoints it lacks
//! (members, raft configuration, join, transactions) with the same reqwest.
//!
//! Values are stored as JSON text (`"abc"`, `42`, `[..]`); a value that is not JSON (written by
//! hand with `consul kv put`) reads as a string.

mod agent;
mod events;
mod kv;
mod sessions;
mod snapshot;

pub use agent::{AgentMember, RaftServer, Serf};
pub use kv::{ExportedPair, decode, encode, encode_path, encode_segment};

use std::time::Duration;

use anyhow::{Context as _, bail};
use consulrs::client::{ConsulClient, ConsulClientSettings};
use serde_json::Value;

/// The local agent's HTTP address (consul binds its API to loopback only).
pub const LOCAL_HTTP: &str = "http://127.0.0.1:8500";
/// How long the agent's watches of the servers' state (the neighbours, the members' health)
/// wait when nothing changes. A blocking query that runs out is answered with the whole result
/// again: at a minute, every node fetched every neighbour's entry (about 3 KB a node) every
/// minute for nothing, 320 KB/s from the servers across the overlay with 73 nodes at rest.
/// A change still answers at once; a lost server fails the query within consul's keepalives.
pub const WATCH_WAIT: Duration = Duration::from_secs(300);

/// The HTTP timeout of a blocking query that waits `wait`: consul adds up to `wait / 16` to
/// spread the wake-ups.
pub fn blocking_timeout(wait: Duration) -> Duration {
    wait + wait / 16 + Duration::from_secs(10)
}

/// Written last when the KV has been seeded: until it is there, what the KV holds is not the
/// shared config yet (a seed of many keys takes several transactions).
pub const SEEDED_KEY: &str = "raptiformica-meta/seeded";
/// Consul refuses transactions of more operations than this.
pub(super) const TXN_OPS: usize = 64;

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

/// Whether `e` comes from a request to consul that timed out (not one it answered or refused):
/// a busy agent or busy servers, which a caller may wait out.
pub fn timed_out(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
    })
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
            headers.insert("X-Consul-Token", token_header(token)?);
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

    pub(super) async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
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

    /// PUT `path` (with an optional JSON body); the reply's text on success.
    pub(super) async fn put_ok(&self, path: &str, body: Option<Value>) -> anyhow::Result<String> {
        self.put_ok_as(path, body, None).await
    }

    /// [`Self::put_ok`] with `token` instead of ours, if given.
    pub(super) async fn put_ok_as(
        &self,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> anyhow::Result<String> {
        let url = format!("{}/v1/{path}", self.base);
        let mut req = self.http.put(&url);
        if let Some(token) = token {
            req = req.header("X-Consul-Token", token_header(token)?);
        }
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
}

/// `token` as a header value, marked sensitive (kept out of debug output).
pub(super) fn token_header(token: &str) -> anyhow::Result<reqwest::header::HeaderValue> {
    let mut value = reqwest::header::HeaderValue::from_str(token).context("a token that is not a header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The index a reply carries (`X-Consul-Index`) for the next blocking query; 0 when none.
pub(super) fn consul_index(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::SharedStore as _;
    use base64::Engine as _;
    use serde_json::json;

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

    #[tokio::test]
    async fn a_consul_that_does_not_answer_in_time_is_slow_one_that_refuses_is_not() {
        // An agent that takes the connection and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api = ConsulApi::new(
            &format!("http://{}", silent.local_addr().unwrap()),
            Duration::from_millis(200),
        )
        .unwrap();
        let e = api.is_seeded().await.unwrap_err();
        assert!(timed_out(&e), "{e:#}");
        // An agent that answers 403 (a token it does not know).
        let refusing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = refusing.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut s, _) = refusing.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = "ACL not found";
            let reply = format!("HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            s.write_all(reply.as_bytes()).await.unwrap();
        });
        let api = ConsulApi::new(&format!("http://{addr}"), Duration::from_secs(5)).unwrap();
        let e = api.is_seeded().await.unwrap_err();
        assert!(!timed_out(&e), "{e:#}");
        assert!(format!("{e:#}").contains("ACL not found"), "{e:#}");
    }
}
