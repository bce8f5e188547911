//! `raptiformica modules install|uninstall|list`: user modules in `<cache-dir>/modules`.

use anyhow::Context as _;

use super::{print_json, print_table};
use crate::cli::args::ModulesAction;
use crate::config::context::Context;
use crate::config::{Mapping, shared};
use crate::modules::install::{self as user_modules, Source};

pub fn run(ctx: &Context, action: ModulesAction) -> anyhow::Result<()> {
    match action {
        ModulesAction::Install { source } => install(ctx, &source),
        ModulesAction::Uninstall { name } => uninstall(ctx, &name),
        ModulesAction::List => list(ctx),
    }
}

/// The original's `install SOURCE [--remove]` as a `modules` action: with --remove the module
/// named as it was installed (a folder or repository gives its last path part).
pub fn install_action(args: crate::cli::args::InstallArgs) -> ModulesAction {
    if !args.remove {
        return ModulesAction::Install { source: args.source };
    }
    let name = Source::resolve(&args.source).map_or(args.source, |s| s.name);
    ModulesAction::Uninstall { name }
}

pub(super) fn install(ctx: &Context, source: &str) -> anyhow::Result<()> {
    let source = Source::resolve(source)?;
    let done = crate::cli::runtime::runtime()?.block_on(user_modules::install(ctx, &source))?;
    let i = &done.info;
    eprintln!(
        "{} `{}` from `{}` into `{}`: server types [{}], compute types [{}], {} hook handler(s)",
        if done.replaced { "replaced" } else { "installed" },
        i.name,
        source.describe(),
        i.path.display(),
        i.server_types.join(", "),
        i.compute_types.join(", "),
        i.hooks
    );
    report_written(&done.written, done.set.len() + done.removed.len());
    push_to_cluster(ctx, &done.written, &done.set, &done.removed).with_context(|| {
        format!(
            "`{}` is installed here, but not in the cluster yet; run the install again",
            i.name
        )
    })
}

fn uninstall(ctx: &Context, name: &str) -> anyhow::Result<()> {
    let done = crate::cli::runtime::runtime()?.block_on(user_modules::uninstall(ctx, name))?;
    let r = &done.removal;
    eprintln!(
        "removed `{}`: {} key(s) removed, {} restored to the value of the other modules",
        done.path.display(),
        r.removed.len(),
        r.set.len()
    );
    for key in &r.kept {
        eprintln!("kept `{key}`: its value was changed after the install");
    }
    report_written(&done.written, r.set.len() + r.removed.len());
    push_to_cluster(ctx, &done.written, &r.set, &r.removed)
        .with_context(|| format!("`{name}` is uninstalled here, but the cluster still has its keys"))
}

fn report_written(written: &shared::Written, keys: usize) {
    if *written == shared::Written::CacheOnly && keys > 0 {
        eprintln!("consul did not answer: the keys are in the cache and go to the cluster later");
    }
}

/// On a machine that is not a node but knows nodes (the host that spawned them), makes the
/// same change on one node, which shares it with the rest through consul's KV.
fn push_to_cluster(ctx: &Context, written: &shared::Written, set: &Mapping, removed: &[String]) -> anyhow::Result<()> {
    if *written != shared::Written::Local {
        return Ok(());
    }
    if let Some(node) = crate::cli::runtime::runtime()?.block_on(crate::cluster::shared::push(ctx, set, removed))? {
        eprintln!("the cluster has the change (through node `{node}`)");
    }
    Ok(())
}

fn list(ctx: &Context) -> anyhow::Result<()> {
    let modules = user_modules::list(&ctx.paths)?;
    if ctx.json {
        print_json(&modules);
        return Ok(());
    }
    if modules.is_empty() {
        eprintln!(
            "no user modules in `{}` (install one with `raptiformica modules install`)",
            ctx.paths.user_modules_dir().display()
        );
        return Ok(());
    }
    let none = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let rows: Vec<Vec<String>> = modules
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.source.clone().unwrap_or_else(|| "(put there by hand)".into()),
                none(&m.server_types),
                none(&m.compute_types),
                m.hooks.to_string(),
            ]
        })
        .collect();
    print_table(&["NAME", "SOURCE", "SERVER TYPES", "COMPUTE TYPES", "HOOKS"], &rows);
    Ok(())
}
