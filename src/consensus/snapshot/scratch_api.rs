//! The scratch consul's HTTP API over its unix socket (see [`super::scratch`]).
//!
//! A client of its own, not [`ConsulApi`](crate::consensus::api::ConsulApi): that one sends the
//! cluster's management token (set process-wide by `use_token`) with every request, and the
//! scratch must never see it. This one sends only the scratch's own token, and only through
//! the socket in the scratch's private directory: it has no TCP path at all. One connection per
//! request (a handful per restore), so no kept-alive connection can go stale under us.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::{Body, Method, Request, StatusCode};

use crate::consensus::api::ExportedPair;

/// The scratch's `Host`: it listens on a unix socket, any name does.
const HOST: &str = "scratch-consul";

/// A client of one scratch consul.
pub struct ScratchApi {
    socket: PathBuf,
    /// The scratch's master token (a fresh one, never the cluster's).
    token: String,
}

impl ScratchApi {
    /// The agent listening on `socket`, asked with `token`.
    pub fn new(socket: &Path, token: String) -> Self {
        Self {
            socket: socket.to_path_buf(),
            token,
        }
    }

    /// `method path` with `body`; the status and body of the reply, within `timeout`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> anyhow::Result<(StatusCode, Vec<u8>)> {
        let what = format!("{method} {path} on the scratch consul ({})", self.socket.display());
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(&self.socket).await?;
            let (mut sender, connection) = hyper::client::conn::handshake(stream).await?;
            // The connection is driven until the reply is read, then dropped with it.
            let driver = tokio::spawn(connection);
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, HOST)
                .header("X-Consul-Token", &self.token)
                .body(Body::from(body))?;
            let reply = sender.send_request(request).await?;
            let status = reply.status();
            let bytes = hyper::body::to_bytes(reply.into_body()).await?;
            driver.abort();
            anyhow::Ok((status, bytes.to_vec()))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(reply) => reply.with_context(|| what.clone()),
            Err(_) => bail!("{what}: no answer within {} s", timeout.as_secs()),
        }
    }

    /// Whether the agent is ready for us: it has a leader and knows our token (the leader
    /// makes it from the configuration once elected).
    pub async fn ready(&self) -> bool {
        let ask = |path| self.request(Method::GET, path, Vec::new(), Duration::from_secs(5));
        // The leader first: until there is one, asking for the token only fills consul's log
        // (quoted in our errors) with refusals.
        match ask("/v1/status/leader").await {
            // `"127.0.0.1:8300"`, or `""` while there is none.
            Ok((StatusCode::OK, leader)) if leader.len() > 2 => {}
            _ => return false,
        }
        matches!(ask("/v1/acl/token/self").await, Ok((StatusCode::OK, _)))
    }

    /// Replaces the scratch's whole state with a snapshot (`PUT /v1/snapshot`).
    pub async fn restore_snapshot(&self, archive: Vec<u8>) -> anyhow::Result<()> {
        let (status, body) = self
            .request(Method::PUT, "/v1/snapshot", archive, Duration::from_secs(300))
            .await?;
        if !status.is_success() {
            bail!("PUT /v1/snapshot: {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        Ok(())
    }

    /// Every KV pair (`/v1/kv/?recurse`), values still base64.
    pub async fn export_kv(&self) -> anyhow::Result<Vec<ExportedPair>> {
        let (status, body) = self
            .request(Method::GET, "/v1/kv/?recurse", Vec::new(), Duration::from_secs(300))
            .await?;
        match status {
            // An empty KV.
            StatusCode::NOT_FOUND => Ok(Vec::new()),
            StatusCode::OK => serde_json::from_slice(&body).context("GET /v1/kv/?recurse: unexpected reply"),
            _ => bail!(
                "GET /v1/kv/?recurse: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP server on a unix socket that records what it is sent and answers `reply`.
    async fn recording_server(socket: &Path, reply: &'static str) -> tokio::task::JoinHandle<Vec<String>> {
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Ok(Ok((mut conn, _))) = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
            {
                let mut request = Vec::new();
                let mut buf = [0; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8_lossy(&request).into_owned());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/json\r\n\r\n{reply}",
                    reply.len()
                );
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        })
    }

    #[tokio::test]
    async fn the_scratch_client_sends_its_own_token_never_the_clusters() {
        // The cluster's token is set for every ConsulApi of this process, as `raptiformica`
        // does at start; the scratch's client must not pick it up.
        crate::consensus::api::use_token(super::super::scratch::tests::CLUSTER_TOKEN.into());
        let cluster = crate::consensus::api::current_token().expect("set").to_string();
        let d = tempfile::tempdir().unwrap();
        let socket = d.path().join("http.sock");
        let server = recording_server(&socket, r#"[{"Key":"a","Value":"Yg==","Flags":3}]"#).await;
        let api = ScratchApi::new(&socket, "scratch-own-token".into());
        assert!(api.ready().await);
        let pairs = api.export_kv().await.unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].key.as_str(), pairs[0].flags), ("a", 3));
        api.restore_snapshot(b"archive".to_vec()).await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        for request in &seen {
            let lower = request.to_ascii_lowercase();
            assert!(lower.contains("x-consul-token: scratch-own-token\r\n"), "{request}");
            assert!(
                !request.contains(&cluster),
                "the cluster's token went to the scratch: {request}"
            );
        }
    }

    #[tokio::test]
    async fn a_scratch_that_is_not_there_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let api = ScratchApi::new(&d.path().join("http.sock"), "t".into());
        assert!(!api.ready().await);
        let err = format!("{:#}", api.export_kv().await.unwrap_err());
        assert!(
            err.contains("GET /v1/kv/?recurse on the scratch consul") && err.contains("http.sock"),
            "{err}"
        );
    }
}
