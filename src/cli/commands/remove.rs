//! `raptiformica remove NODE [--force]`: a machine that no longer answers leaves the cluster.

use crate::cli::args::RemoveArgs;
use crate::cli::runtime::runtime;
use crate::cluster::remove;
use crate::config::context::Context;

pub fn run(ctx: &Context, args: RemoveArgs) -> anyhow::Result<()> {
    let removed = runtime()?.block_on(remove::remove(ctx, &args.node, args.force))?;
    if ctx.json {
        super::print_json(&removed);
        return Ok(());
    }
    eprintln!(
        "removed {} ({}, {} before) through {}: forced out of the members, its neighbour entry gone{}",
        removed.id,
        removed.host.as_deref().unwrap_or("no known host"),
        removed.was,
        removed.through,
        removed
            .instance
            .as_ref()
            .map(|i| format!(", instance {i} cleaned up"))
            .unwrap_or_default()
    );
    Ok(())
}
