//! `raptiformica deploy INVENTORY`: slave every host of a file, N at a time, then a summary.
//! The hosts must answer first: nothing is fetched or written before one does.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{print_json, print_table};
use crate::cli::args::DeployArgs;
use crate::config::context::Context;
use crate::deploy::inventory::Inventory;
use crate::deploy::preflight;
use crate::deploy::rollout::{self, Outcome, Plan, Result};
use crate::provision::slave;
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: DeployArgs) -> anyhow::Result<()> {
    // The whole file is checked before anything starts.
    let inventory = Inventory::load(&args.inventory)?;
    // A server type from one of --modules is known only once they are installed.
    if args.modules.is_empty() {
        check_server_type(ctx, args.server_type.as_deref())?;
    }
    let progress = Progress::new(ctx.json);
    let patience = Duration::from_secs(args.ssh_wait);
    let runtime = crate::cli::runtime::runtime()?;
    // Reach the hosts before the artifacts are fetched and the cluster's secrets written.
    let reached = runtime.block_on(preflight::probe_first_hops(&inventory, patience, &progress));
    if !reached.answered {
        let outcomes = rollout::unreached(&inventory, &reached.unreachable);
        report(ctx, &outcomes);
        return conclude(
            &outcomes,
            Some("no host answered, so nothing was fetched and no secret written"),
        );
    }
    for source in &args.modules {
        super::modules::install(ctx, source)
            .with_context(|| format!("installing the module `{source}` (--modules)"))?;
    }
    if !args.modules.is_empty() {
        check_server_type(ctx, args.server_type.as_deref())?;
    }
    slave::prepare(ctx, &progress)?;
    let identity = Identity::ensure(ctx)?;
    let config = Arc::new(ctx.config()?);
    let plan = Plan {
        concurrent: args.concurrent as usize,
        server_type: args.server_type,
        provision: !args.steps.no_provision,
        assimilate: !args.steps.no_assimilate,
        after_assimilate: !args.steps.no_after_assimilate,
        after_mesh: !args.steps.no_after_mesh,
        patience,
        unreachable: reached.unreachable,
    };
    let outcomes = runtime.block_on(rollout::rollout(ctx, &config, &identity, &progress, &inventory, &plan));
    report(ctx, &outcomes);
    conclude(&outcomes, None)
}

/// The summary: JSON, or a table of host, result, time and the first line of the reason.
fn report(ctx: &Context, outcomes: &[Outcome]) {
    if ctx.json {
        print_json(&outcomes);
        return;
    }
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let (result, detail) = match &o.result {
                Result::Slaved => ("slaved", String::new()),
                Result::Unchanged => ("unchanged", String::new()),
                Result::Skipped(why) => ("skipped", why.clone()),
                Result::Failed(why) => ("FAILED", why.lines().next().unwrap_or_default().to_string()),
            };
            vec![
                o.host.clone(),
                result.into(),
                format!("{:.1}s", o.took.as_secs_f64()),
                detail,
            ]
        })
        .collect();
    print_table(&["HOST", "RESULT", "TIME", "DETAIL"], &rows);
}

/// Ok when no host failed; else each failure in full, and an error naming them (exit 1),
/// with `note` after.
fn conclude(outcomes: &[Outcome], note: Option<&str>) -> anyhow::Result<()> {
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_failure()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for o in &failed {
        if let Result::Failed(why) | Result::Skipped(why) = &o.result {
            eprintln!("{}: {why}", o.host);
        }
    }
    anyhow::bail!(
        "{} of {} host(s) failed: {}{}",
        failed.len(),
        outcomes.len(),
        failed.iter().map(|o| o.host.as_str()).collect::<Vec<_>>().join(", "),
        note.map(|n| format!("; {n}")).unwrap_or_default()
    )
}

/// Refuses a server type the config does not know.
fn check_server_type(ctx: &Context, server_type: Option<&str>) -> anyhow::Result<()> {
    let config = ctx.config()?;
    if let Some(s) = server_type
        && !crate::modules::server_type::server_types(&config).contains_key(s)
    {
        anyhow::bail!("there is no server type `{s}` (see `raptiformica config get server`)");
    }
    Ok(())
}
