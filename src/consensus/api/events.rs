//! Consul's user events: firing one, listing the recent ones.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::*;

impl ConsulApi {
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
    /// `token` must grant `event` read (the agent token does; see [`crate::consensus::acl::AGENT_RULES`]).
    pub async fn events(
        &self,
        index: u64,
        wait: Duration,
        token: &str,
    ) -> anyhow::Result<(Vec<crate::consensus::event::RawEvent>, u64)> {
        self.blocking_as("event/list", index, wait, Some(token)).await
    }
}
