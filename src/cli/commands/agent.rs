//! `raptiformica agent`: run the agent, or tell what it did.

use crate::agent::{self, daemons, status};
use crate::cli::args::AgentArgs;
use crate::config::context::Context;

pub fn run(ctx: &Context, args: AgentArgs) -> anyhow::Result<()> {
    if args.recover {
        let done = crate::cli::runtime::runtime()?.block_on(agent::recover::ask(&ctx.paths))?;
        println!("{done}");
        return Ok(());
    }
    if !args.status {
        return crate::cli::runtime::runtime()?.block_on(async {
            // On a node, the map (`agent/ui_listen`) is served beside the agent.
            if agent::Mode::of(&ctx.paths) == agent::Mode::Node {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::ui::serve_node_map(ctx).await {
                        tracing::error!("{e:#}");
                    }
                });
            }
            agent::run(ctx).await
        });
    }
    let file = status::file(&ctx.paths);
    let Some(s) = status::read(&file) else {
        anyhow::bail!(
            "no agent has run here (no `{}`); on a node `mesh` starts it, elsewhere run `raptiformica agent`",
            file.display()
        );
    };
    let running = crate::sys::daemon::process_named(s.pid as i32, "raptiformica");
    let kept = daemons::keeper(&ctx.paths).pid();
    if ctx.json {
        let mut v = serde_json::to_value(&s)?;
        v["running"] = running.into();
        v["keeper_pid"] = kept.into();
        super::print_json(&v);
        return Ok(());
    }
    println!(
        "agent ({}): {}, started {}",
        s.mode,
        if running {
            format!("running, pid {}", s.pid)
        } else {
            "not running".to_string()
        },
        ago(s.started_at)
    );
    if let Some(node) = &s.acting_on {
        println!("acting on: {node}");
    }
    if let Some(why) = s.waiting.as_ref().filter(|_| running) {
        println!("waiting: {why}");
    }
    if s.events.is_empty() {
        println!("nothing done yet");
    }
    for e in s.events.iter().rev().take(20).rev() {
        println!("{:>10}  {:<14} {}", ago(e.at), e.kind, e.detail);
    }
    Ok(())
}

fn ago(at: u64) -> String {
    let secs = status::now().saturating_sub(at);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}
