//! `raptiformica hook NAME`: fire a hook's handlers by hand.

use super::print_json;
use crate::config::context::Context;
use crate::modules::hooks;

pub fn run(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let fired = hooks::fire(ctx, &config, name);
    if ctx.json {
        print_json(&serde_json::json!({"hook": name, "found": fired.found, "ran": fired.ran, "failed": fired.failed}));
    } else {
        eprintln!(
            "hook `{name}`: {} handler(s) found, {} ran, {} failed",
            fired.found, fired.ran, fired.failed
        );
    }
    if fired.failed > 0 {
        anyhow::bail!("{} handler(s) of hook `{name}` failed", fired.failed);
    }
    Ok(())
}
