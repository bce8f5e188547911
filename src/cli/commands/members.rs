//! `raptiformica members`: the cluster's members, from the local agent or through a node.

use crate::cli::args::MembersArgs;
use crate::cli::runtime::runtime;
use crate::cluster::members;
use crate::config::context::Context;
use crate::consensus::members::Member;

pub fn run(ctx: &Context, args: MembersArgs) -> anyhow::Result<()> {
    let json = ctx.json;
    if args.rejoin {
        let (joined, of) = runtime()?.block_on(members::rejoin(ctx))?;
        println!("joined {joined} of {of} neighbour(s)");
        return Ok(());
    }
    let mut members = runtime()?.block_on(members::members(ctx, json))?;
    mark_own_wait(ctx, &mut members);
    mark_machines(ctx, &mut members);
    if json {
        super::print_json(&members);
    } else {
        let rows: Vec<Vec<String>> = members.iter().map(Member::row).collect();
        super::print_table(&Member::HEADER, &rows);
    }
    Ok(())
}

/// On a node, its own row's `Agent` column says what its agent holds back from (a rebuild
/// without evidence, say), when nothing else is acting on it.
fn mark_own_wait(ctx: &Context, members: &mut [Member]) {
    use crate::agent::status;
    if !crate::config::shared::consul_configured(&ctx.paths) {
        return;
    }
    let Some(s) = status::read(&status::file(&ctx.paths)) else {
        return;
    };
    let Some(why) = s
        .waiting
        .filter(|_| crate::sys::daemon::process_named(s.pid as i32, "raptiformica"))
    else {
        return;
    };
    let consul = crate::consensus::agent::ConsulAgent::new(&crate::config::shared::mesh_dir(&ctx.paths));
    let Some(me) = consul
        .rendered()
        .and_then(|r| r["node_name"].as_str().map(str::to_string))
    else {
        return;
    };
    for m in members.iter_mut().filter(|m| m.node == me && m.agent.is_empty()) {
        m.agent = format!("waiting: {why}");
    }
}

/// Each member's machine (back-end instance and engine holder), from the neighbours this
/// machine knows, where the node that answered did not say already.
fn mark_machines(ctx: &Context, members: &mut [Member]) {
    let Ok(config) = ctx.config() else {
        return;
    };
    let known = crate::mesh::neighbours::all(&config.mapping);
    for m in members.iter_mut().filter(|m| m.machine.is_empty()) {
        if let Some(machine) = known.iter().find(|n| n.id == m.node).and_then(|n| n.machine.as_ref()) {
            m.machine = machine.describe();
        }
    }
}
