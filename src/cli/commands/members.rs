//! `raptiformica members`: the cluster's members, from the local agent or through a node.

use crate::cli::args::{MembersArgs, OutputFormat};
use crate::cli::runtime::runtime;
use crate::cluster::members;
use crate::config::context::Context;
use crate::consensus::members::Member;

pub fn run(ctx: &Context, args: MembersArgs) -> anyhow::Result<()> {
    let json = ctx.json || args.output == OutputFormat::Json;
    if args.rejoin {
        let (joined, of) = runtime()?.block_on(members::rejoin(ctx))?;
        println!("joined {joined} of {of} neighbour(s)");
        return Ok(());
    }
    let members = runtime()?.block_on(members::members(ctx, json))?;
    if json {
        super::print_json(&members);
    } else {
        let rows: Vec<Vec<String>> = members.iter().map(Member::row).collect();
        super::print_table(&Member::HEADER, &rows);
    }
    Ok(())
}
