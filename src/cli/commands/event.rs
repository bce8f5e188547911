//! `raptiformica event fire|list`: on a node through its consul agent, elsewhere through the
//! first known node that answers over SSH.

use std::io::Read as _;

use anyhow::Context as _;

use super::{print_json, print_table};
use crate::cli::args::EventAction;
use crate::cli::runtime::runtime;
use crate::cluster::events::{self, Fired};
use crate::config::context::Context;

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
    // A bad name is refused before the payload is read (stdin may be a terminal).
    crate::consensus::event::check_name(name)?;
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
    match runtime()?.block_on(events::fire(ctx, name, node, server_type, &payload))? {
        Fired::Through(out) => {
            print!("{}", out.stdout);
            eprintln!("fired through node {}", out.node);
        }
        Fired::Here(id) if ctx.json => print_json(&serde_json::json!({"id": id, "name": name})),
        Fired::Here(id) => println!("{id}"),
    }
    Ok(())
}

fn list(ctx: &Context) -> anyhow::Result<()> {
    let events = runtime()?.block_on(events::list(ctx))?;
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
