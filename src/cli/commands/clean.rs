//! `raptiformica clean`: on a workstation, forget this machine's cached cluster state, and with
//! `--artifacts` and `--modules` the downloaded binaries and the installed user modules; on a
//! node, stop its daemons and remove what slaving installed (see [`crate::agent::wipe`]).

use std::path::Path;

use anyhow::bail;

use crate::agent::wipe;
use crate::cli::args::CleanArgs;
use crate::config::MutableCache;
use crate::config::context::Context;

pub fn run(ctx: &Context, args: CleanArgs) -> anyhow::Result<()> {
    if crate::config::shared::is_node(&ctx.paths) {
        // On a node: back to a machine that was never slaved (the original's `clean`).
        for line in crate::cli::runtime::runtime()?.block_on(wipe::wipe(ctx))? {
            eprintln!("{line}");
        }
        eprintln!("this machine is no node any more; `raptiformica slave` from a workstation makes it one again");
        return Ok(());
    }
    // Checked first: a refusal leaves everything as it was.
    if args.artifacts {
        refuse_own_binary(&ctx.paths.artifacts_dir)?;
    }
    let cache = MutableCache::new(&ctx.paths.cache_dir);
    // What was pending belongs to the cache that goes: never pushed later as removals.
    crate::config::shared::forget_sync_state(&ctx.paths);
    if cache.remove()? {
        eprintln!("removed `{}`", cache.path().display());
    } else {
        eprintln!("nothing to clean: `{}` does not exist", cache.path().display());
    }
    purge(ctx, args.artifacts, args.modules)
}

/// Removes the installed user modules and the downloaded artifacts, as asked (`clean
/// --modules --artifacts`, `destroy --purge-modules --purge-artifacts`). The caller ran
/// [`refuse_own_binary`] first.
pub(super) fn purge(ctx: &Context, artifacts: bool, modules: bool) -> anyhow::Result<()> {
    if modules {
        let modules = crate::modules::install::list(&ctx.paths)?;
        if remove_dir(&ctx.paths.user_modules_dir())? {
            let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
            eprintln!(
                "removed `{}` ({} module(s): {}); a cluster's consul KV keeps their keys \
                 (`raptiformica modules uninstall` takes them out)",
                ctx.paths.user_modules_dir().display(),
                names.len(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
    }
    if artifacts && remove_dir(&ctx.paths.artifacts_dir)? {
        eprintln!(
            "removed `{}` (`raptiformica artifacts fetch` gets them again)",
            ctx.paths.artifacts_dir.display()
        );
    }
    Ok(())
}

/// On a node the artifacts folder holds the running binary itself: removing it would break
/// the node.
pub(super) fn refuse_own_binary(artifacts: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().and_then(|e| e.canonicalize());
    if let (Ok(exe), Ok(dir)) = (exe, artifacts.canonicalize())
        && exe.starts_with(&dir)
    {
        bail!(
            "refusing to remove `{}`: it holds this binary (`{}`), as on a node",
            artifacts.display(),
            exe.display()
        );
    }
    Ok(())
}

/// Removes `dir` and everything in it (see [`wipe::remove_dir`]), saying so when there was
/// nothing to remove; false then.
fn remove_dir(dir: &Path) -> anyhow::Result<bool> {
    let removed = wipe::remove_dir(dir)?;
    if !removed {
        eprintln!("nothing to remove: `{}` does not exist", dir.display());
    }
    Ok(removed)
}
