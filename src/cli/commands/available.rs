//! `spawn --check-available` and `package --check-available`: which compute types work on this
//! host, as a table (or JSON), exit 1 when none does.

use anyhow::bail;
use serde::Serialize;

use super::{print_json, print_table};
use crate::compute;
use crate::config::Config;
use crate::config::context::Context;

#[derive(Serialize)]
struct Availability {
    compute_type: String,
    server_type: String,
    available: bool,
    /// What the `available` check printed: how the type runs here, or what is missing.
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

/// Which compute types are available here (and have the command `needs`, when given); exit 1
/// if none is.
pub fn check(ctx: &Context, config: &Config, needs: Option<&str>) -> anyhow::Result<()> {
    let rows: Vec<Availability> = compute::compute_types(config)
        .into_iter()
        .map(|t| {
            let (available, detail) = match needs {
                Some(cmd) if !t.commands.contains_key(cmd) => (false, format!("it has no `{cmd}` command")),
                _ => t.availability(ctx),
            };
            Availability {
                available,
                detail,
                compute_type: t.compute,
                server_type: t.server,
            }
        })
        .collect();
    if ctx.json {
        print_json(&rows);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.compute_type.clone(),
                    r.server_type.clone(),
                    if r.available { "yes" } else { "no" }.into(),
                    r.detail.clone(),
                ]
            })
            .collect();
        print_table(&["COMPUTE TYPE", "SERVER TYPE", "AVAILABLE", "DETAIL"], &table);
    }
    if rows.iter().any(|r| r.available) {
        Ok(())
    } else {
        match needs {
            Some(cmd) => bail!("no compute type with a `{cmd}` command is available on this host"),
            None => bail!("no compute type is available on this host"),
        }
    }
}
