//! Firing and listing the cluster's events: on a node through its consul agent (it is the
//! event's origin), elsewhere through a known node, which fires it (and is its origin).

use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;

use super::{Forwarded, through_a_node};
use crate::config::context::Context;
use crate::config::shared;
use crate::consensus::api::ConsulApi;
use crate::consensus::event::{self, Event};
use crate::sys::quote::quote;

/// What firing did.
#[derive(Debug)]
pub enum Fired {
    /// Fired here: consul's id of the event.
    Here(String),
    /// Fired by a node; what it printed.
    Through(Forwarded),
}

/// Fires event `name` with `payload`, for every node (or the node `node`, or the nodes of
/// `server_type`). Checked first: the name, the node id, and that it fits in consul's event.
pub async fn fire(
    ctx: &Context,
    name: &str,
    node: Option<&str>,
    server_type: Option<&str>,
    payload: &[u8],
) -> anyhow::Result<Fired> {
    event::check_name(name)?;
    if let Some(n) = node
        && (n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        anyhow::bail!("`--node {n}`: a node id is letters, digits, `-` and `_` (see `raptiformica members`)");
    }
    let filter = node.map(|n| format!("^{n}$"));
    if !shared::consul_configured(&ctx.paths) {
        event::check_size(
            name,
            filter.as_deref(),
            &event::envelope(Some(&"x".repeat(16)), server_type, payload),
        )?;
        let mut command = format!("raptiformica event fire {}", quote(name));
        if let Some(n) = node {
            command.push_str(&format!(" --node {}", quote(n)));
        }
        if let Some(s) = server_type {
            command.push_str(&format!(" --server-type {}", quote(s)));
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
        let command = format!("printf %s {} | base64 -d | {command} --payload -", quote(&encoded));
        return Ok(Fired::Through(through_a_node(ctx, "fire the event", &command).await?));
    }
    let api = ConsulApi::local()?;
    // This node's name in consul is its id: the origin the handlers see.
    let me = api.agent_self().await?["Config"]["NodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let bytes = event::envelope(
        Some(&me).filter(|m| !m.is_empty()).map(String::as_str),
        server_type,
        payload,
    );
    event::check_size(name, filter.as_deref(), &bytes)?;
    Ok(Fired::Here(api.fire_event(name, bytes, filter.as_deref()).await?))
}

/// The recent events (consul keeps the last 256).
pub async fn list(ctx: &Context) -> anyhow::Result<Vec<Event>> {
    if shared::consul_configured(&ctx.paths) {
        let api = ConsulApi::local()?;
        let token = crate::consensus::acl::read_token(&ctx.paths).context("no cluster token on this node")?;
        let (_, token) = crate::consensus::acl::agent_token(&token);
        let (raw, _) = api.events(0, Duration::ZERO, &token).await?;
        return Ok(raw.iter().map(Event::from_raw).collect());
    }
    let out = through_a_node(ctx, "list the events", "raptiformica --json event list").await?;
    let values: Vec<serde_json::Value> =
        serde_json::from_str(&out.stdout).context("the node's event list is not JSON")?;
    Ok(values
        .into_iter()
        .map(|v| Event {
            id: v["id"].as_str().unwrap_or_default().into(),
            name: v["name"].as_str().unwrap_or_default().into(),
            ltime: v["ltime"].as_u64().unwrap_or_default(),
            origin: v["origin"].as_str().map(str::to_string),
            server_type: v["server_type"].as_str().map(str::to_string),
            node: v["node"].as_str().map(str::to_string),
            payload: Vec::new(),
            payload_text: v["payload"].as_str().unwrap_or_default().into(),
        })
        .collect())
}
