//! `raptiformica event fire|list`: on a node through its consul agent, elsewhere through the
//! first known node that answers over SSH.

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;

use super::{print_json, print_table};
use crate::cli::args::EventAction;
use crate::config::context::Context;
use crate::config::shared;
use crate::consensus::api::ConsulApi;
use crate::consensus::event::{self as events, Event};
use crate::remote::ssh::Identity;
use crate::sys::quote::quote;

pub fn run(ctx: &Context, action: EventAction) -> anyhow::Result<()> {
    match action {
        EventAction::Fire {
            name,
            node,
            server_type,
            payload,
        } => fire(ctx, &name, node.as_deref(), server_type.as_deref(), payload.as_deref()),
        EventAction::List => list(ctx),
    }
}

fn fire(
    ctx: &Context,
    name: &str,
    node: Option<&str>,
    server_type: Option<&str>,
    payload: Option<&str>,
) -> anyhow::Result<()> {
    events::check_name(name)?;
    if let Some(n) = node
        && (n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        anyhow::bail!("`--node {n}`: a node id is letters, digits, `-` and `_` (see `raptiformica members`)");
    }
    let payload = match payload {
        None => Vec::new(),
        Some("-") => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("cannot read the payload from stdin")?;
            b
        }
        Some(p) if p.starts_with('@') => {
            std::fs::read(&p[1..]).with_context(|| format!("cannot read the payload file `{}`", &p[1..]))?
        }
        Some(p) => p.as_bytes().to_vec(),
    };
    let filter = node.map(|n| format!("^{n}$"));
    if !shared::consul_configured(&ctx.paths) {
        // The workstation: a node fires it (and is its origin).
        events::check_size(
            name,
            filter.as_deref(),
            &events::envelope(Some(&"x".repeat(16)), server_type, &payload),
        )?;
        let mut command = format!("raptiformica event fire {}", quote(name));
        if let Some(n) = node {
            command.push_str(&format!(" --node {}", quote(n)));
        }
        if let Some(s) = server_type {
            command.push_str(&format!(" --server-type {}", quote(s)));
        }
        let encoded = base64::engine::general_purpose::STANDARD.encode(&payload);
        let command = format!("printf %s {} | base64 -d | {command} --payload -", quote(&encoded));
        let identity = Identity::ensure(ctx)?;
        let (id, out) = crate::cli::runtime::runtime()?.block_on(crate::remote::nodes::on_a_node(
            ctx,
            &identity,
            "fire the event",
            &command,
            &[],
        ))?;
        print!("{}", out.stdout);
        eprintln!("fired through node {id}");
        return Ok(());
    }
    let api = ConsulApi::local()?;
    let id = crate::cli::runtime::runtime()?.block_on(async {
        // This node's name in consul is its id: the origin the handlers see.
        let me = api.agent_self().await?["Config"]["NodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let bytes = events::envelope(
            Some(&me).filter(|m| !m.is_empty()).map(String::as_str),
            server_type,
            &payload,
        );
        events::check_size(name, filter.as_deref(), &bytes)?;
        api.fire_event(name, bytes, filter.as_deref()).await
    })?;
    if ctx.json {
        print_json(&serde_json::json!({"id": id, "name": name}));
    } else {
        println!("{id}");
    }
    Ok(())
}

fn list(ctx: &Context) -> anyhow::Result<()> {
    let events: Vec<Event> = if shared::consul_configured(&ctx.paths) {
        let api = ConsulApi::local()?;
        let token = crate::consensus::acl::read_token(&ctx.paths).context("no cluster token on this node")?;
        let (_, token) = crate::consensus::acl::agent_token(&token);
        let (raw, _) = crate::cli::runtime::runtime()?.block_on(api.events(0, Duration::ZERO, &token))?;
        raw.iter().map(Event::from_raw).collect()
    } else {
        let identity = Identity::ensure(ctx)?;
        let (_, out) = crate::cli::runtime::runtime()?.block_on(crate::remote::nodes::on_a_node(
            ctx,
            &identity,
            "list the events",
            "raptiformica --json event list",
            &[],
        ))?;
        let values: Vec<serde_json::Value> =
            serde_json::from_str(&out.stdout).context("the node's event list is not JSON")?;
        values
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
            .collect()
    };
    if ctx.json {
        print_json(&events);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let mut payload: String = e.payload_text.chars().take(40).collect();
            payload = payload.replace('\n', "\\n");
            vec![
                e.id.chars().take(8).collect(),
                e.name.clone(),
                e.ltime.to_string(),
                e.origin.clone().unwrap_or_else(|| "-".into()),
                e.node
                    .clone()
                    .or_else(|| e.server_type.clone())
                    .unwrap_or_else(|| "all".into()),
                payload,
            ]
        })
        .collect();
    print_table(&["ID", "NAME", "LTIME", "ORIGIN", "FOR", "PAYLOAD"], &rows);
    Ok(())
}
