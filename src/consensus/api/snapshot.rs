//! Consul's snapshots: saving one, restoring one.

use std::time::Duration;

use anyhow::{Context as _, bail};

use super::*;

impl ConsulApi {
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
}
