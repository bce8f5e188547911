//! `raptiformica clean`: forget this machine's cached cluster state.

use crate::cli::CleanArgs;
use crate::config::MutableCache;
use crate::context::Context;

pub fn run(ctx: &Context, _args: CleanArgs) -> anyhow::Result<()> {
    let cache = MutableCache::new(&ctx.paths.cache_dir);
    // What was pending belongs to the cache that goes: never pushed later as removals.
    crate::config::shared::forget_sync_state(&ctx.paths);
    if cache.remove()? {
        eprintln!("removed `{}`", cache.path().display());
    } else {
        eprintln!("nothing to clean: `{}` does not exist", cache.path().display());
    }
    Ok(())
}
