//! `raptiformica state append|status`: on a node through its consul agent, elsewhere through
//! the first known node that answers over SSH.

use std::time::Duration;

use serde_json::json;

use super::{print_json, print_table};
use crate::cli::args::StateAction;
use crate::cli::runtime::runtime;
use crate::cluster::Forwarded;
use crate::cluster::state::{self, Reply};
use crate::config::context::Context;
use crate::consensus::state_log;
use crate::sys::exit::FailWith;

pub fn run(ctx: &Context, action: StateAction) -> anyhow::Result<()> {
    match action {
        StateAction::Append {
            name,
            entry,
            each_line,
            wait,
            timeout,
            id,
        } => {
            // A bad name or id is refused before the entry is read (stdin may be a terminal).
            state_log::check_name(&name)?;
            if let Some(id) = &id {
                state_log::check_id(id)?;
            }
            let bytes = state_log::read_input(&entry)?;
            let wait = wait.then(|| Duration::from_secs(timeout));
            let print = |index: u64| match ctx.json {
                true => print_json(&json!({"name": name, "index": index})),
                false => println!("{index}"),
            };
            match runtime()?.block_on(state::append(ctx, &name, &bytes, each_line, wait, id.as_deref()))? {
                Reply::Through(out) => forwarded(&out),
                Reply::Here(state::Appended {
                    index,
                    not_applied: None,
                }) => print(index),
                Reply::Here(state::Appended {
                    index,
                    not_applied: Some(why),
                }) => {
                    print(index);
                    return Err(FailWith {
                        code: state::NOT_YET_APPLIED,
                        message: format!("appended at {index}; not yet applied everywhere: {why}"),
                    }
                    .into());
                }
            }
            Ok(())
        }
        StateAction::Status { name } => status(ctx, &name),
    }
}

/// What the node that ran the command printed.
fn forwarded(out: &Forwarded) {
    print!("{}", out.stdout);
    tracing::info!("through node {}", out.node);
}

fn status(ctx: &Context, name: &str) -> anyhow::Result<()> {
    state_log::check_name(name)?;
    let machine = crate::modules::state_machine::find(&ctx.config()?, name)?;
    let s = match runtime()?.block_on(state::status(ctx, name))? {
        Reply::Through(out) => {
            forwarded(&out);
            return Ok(());
        }
        Reply::Here(s) => s,
    };
    if ctx.json {
        let nodes: Vec<_> = s
            .progress
            .iter()
            .map(|(n, at, why)| {
                json!({"node": n, "applied": at, "lag": s.index.saturating_sub(*at), "member": s.member(n), "failure": why})
            })
            .collect();
        print_json(
            &json!({"name": name, "index": s.index, "snapshot": s.snapshot, "snapshot_every": machine.snapshot_every, "nodes": nodes}),
        );
        return Ok(());
    }
    println!(
        "state machine `{name}`: log index {}, snapshot {}, every {} entries",
        s.index,
        s.snapshot.map_or("none".into(), |at| format!("at {at}")),
        machine.snapshot_every
    );
    let rows: Vec<Vec<String>> = s
        .progress
        .iter()
        .map(|(n, at, why)| {
            vec![
                n.clone(),
                at.to_string(),
                s.index.saturating_sub(*at).to_string(),
                s.member(n).to_string(),
                why.as_deref().map_or("ok".into(), |w| {
                    format!("STOPPED: {}", w.lines().next().unwrap_or_default())
                }),
            ]
        })
        .collect();
    print_table(&["NODE", "APPLIED", "LAG", "MEMBER", "STATE"], &rows);
    Ok(())
}
