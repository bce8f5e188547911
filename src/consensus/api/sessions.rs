//! Sessions and the locks held with them.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::json;

use super::*;

impl ConsulApi {
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

    /// Releases the lock `key` held by `session`.
    pub async fn release(&self, key: &str, session: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/kv/{}?release={session}", self.base, encode_path(key));
        self.http.put(&url).send().await.with_context(|| format!("PUT {url}"))?;
        Ok(())
    }
}
