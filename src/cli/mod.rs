//! The top floor: the command line. [`args`] (clap derive), [`help`] (`--help` naming the
//! known types), [`output`] (tables and JSON), [`runtime`], and [`commands`]: one thin `run` per
//! subcommand that turns arguments into calls of the floors below and prints.

pub mod args;
pub mod commands;
pub mod help;
pub mod output;
pub mod runtime;

use std::path::PathBuf;

use clap::CommandFactory;

use crate::config::context::Context;
use crate::sys::paths::Paths;
use crate::{agent, config, consensus};
use args::{Cli, Command};
use runtime::runtime;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // The agent's log is where its events go: it logs at info by default.
    let long_running = matches!(cli.command, Command::Agent(ref a) if !a.status && !a.recover);
    init_logging(cli.verbose, long_running);
    // Every SSH master this command starts ends with it (and those of killed commands now).
    let _masters = crate::remote::masters::Guard::new();
    // Those with a stop of their own (or an interactive child) keep it; the others end on a
    // signal through the watcher, which stops their masters first.
    if !matches!(
        cli.command,
        Command::Agent(_) | Command::Ui(_) | Command::Keeper | Command::Package(_) | Command::Ssh(_)
    ) {
        runtime::end_on_signal();
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    // An empty path would make the current directory the cache, silently.
    anyhow::ensure!(
        !cli.cache_dir.trim().is_empty(),
        "the cache dir path is empty (`--cache-dir ''` or `RAPTIFORMICA_CACHE_DIR=`): name a directory, \
         or unset RAPTIFORMICA_CACHE_DIR for the default ~/.raptiformica.d"
    );
    let cache_dir = expand_home(&cli.cache_dir, home.as_deref());
    let ctx = Context {
        paths: {
            let mut paths = Paths::resolve(Some(cache_dir), cli.install_dir, home);
            if let Some(dir) = cli.artifacts_dir {
                paths.artifacts_dir = dir;
            }
            paths
        },
        verbose: cli.verbose,
        json: cli.json || cli.output == args::OutputFormat::Json,
        public_key_file: None,
        no_package: false,
        with_engine: false,
        synced: false,
    };
    // A mutable_config.json the original wrote is migrated once, before anything reads it (on
    // a node in a cluster the cache is consul's KV's copy: nothing of the original's is there).
    if !matches!(
        cli.command,
        Command::Keeper | Command::Unpack { .. } | Command::Completions { .. }
    ) && !config::shared::consul_configured(&ctx.paths)
    {
        match config::original::migrate_cache(&ctx.paths) {
            Ok(Some(notice)) => tracing::warn!("{notice}"),
            Ok(None) => {}
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    if let Some(token) = consensus::acl::read_token(&ctx.paths) {
        consensus::api::use_token(token);
    }
    // On a node, the one step that talks to consul before a command reads the config: pending
    // changes pushed, the KV read and cached. Loading the config afterwards reads files only.
    // A change of the shared config goes to consul itself (`config set`/`unset`), and so does
    // an append to a state machine's log (it checks the one key it needs): syncing the cache
    // first would only cost time. `members` asks the local agent and reads only the neighbours,
    // which the node's agent keeps cached as the KV changes (at 100 nodes the whole KV read and
    // the cache written again took 25-87 ms of its 40-110 ms on a node).
    let wants_config = !matches!(
        cli.command,
        Command::Keeper
            | Command::Unpack { .. }
            | Command::Completions { .. }
            | Command::Clean(_)
            | Command::Agent(_)
            | Command::Members(_)
            | Command::State {
                action: args::StateAction::Append { .. }
            }
            | Command::Config(args::ConfigArgs {
                action: Some(args::ConfigAction::Set { .. } | args::ConfigAction::Unset { .. }),
                ..
            })
    );
    let ctx = if wants_config && config::shared::consul_configured(&ctx.paths) {
        let synced = runtime()?.block_on(config::shared::sync(&ctx.paths));
        Context { synced, ..ctx }
    } else {
        ctx
    };
    match cli.command {
        Command::Config(args) => commands::config::run(&ctx, args),
        Command::Spawn(args) => commands::spawn::run(&ctx, args),
        Command::Slave(args) => commands::slave::run(&ctx, args),
        Command::Ssh(args) => commands::ssh::run(&ctx, args),
        Command::Mesh(args) => commands::mesh::run(&ctx, args),
        Command::Members(args) => commands::members::run(&ctx, args),
        Command::Artifacts { action } => commands::artifacts::run(&ctx, action),
        Command::Destroy(args) => commands::instances::destroy(&ctx, args),
        Command::Prune => commands::instances::remove(&ctx, true),
        Command::Hook { name } => commands::hook::run(&ctx, &name),
        Command::Clean(args) => commands::clean::run(&ctx, args),
        Command::Join(args) => commands::join::run(&ctx, args),
        Command::Remove(args) => commands::remove::run(&ctx, args),
        Command::Attach(args) => commands::attach::run(&ctx, args),
        Command::Deploy(args) => commands::deploy::run(&ctx, args),
        Command::Modules { action } => commands::modules::run(&ctx, action),
        Command::Install(args) => commands::modules::run(&ctx, commands::modules::install_action(args)),
        Command::Event { action } => commands::event::run(&ctx, action),
        Command::State { action } => commands::state::run(&ctx, action),
        Command::Snapshot { action } => commands::snapshot::run(&ctx, action),
        Command::Ui(args) => commands::ui::run(&ctx, args),
        Command::Package(args) => commands::package::run(&ctx, args),
        Command::Advertise(args) => commands::advertise::run(&ctx, args),
        Command::Inject(args) => commands::inject::run(&ctx, args),
        Command::Agent(args) => commands::agent::run(&ctx, args),
        Command::Keeper => agent::keeper::run(&ctx.paths),
        Command::Unpack { root } => commands::unpack::run(&root),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "raptiformica", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `~` and `~/x` expand to the home dir, and a relative path is taken from it (as the
/// original took `--cache-dir`), not from the current directory.
pub(crate) fn expand_home(path: &str, home: Option<&std::path::Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => home.join(rest.trim_start_matches('/')),
        (_, Some(home)) if std::path::Path::new(path).is_relative() => home.join(path),
        _ => PathBuf::from(path),
    }
}

fn init_logging(verbose: u8, long_running: bool) {
    // rustify (under consulrs) logs every failed request as an error of its own; ours say more.
    let level = match verbose {
        0 | 1 if long_running => "raptiformica=info,warn,rustify=off",
        0 | 1 => "warn,rustify=off",
        2 => "raptiformica=debug,warn,rustify=off",
        _ => "raptiformica=trace,debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAPTIFORMICA_LOG").unwrap_or_else(|_| level.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if long_running {
        builder.init();
    } else {
        builder.without_time().init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_expansion() {
        let h = std::path::Path::new("/home/u");
        assert_eq!(expand_home("~/.r", Some(h)), PathBuf::from("/home/u/.r"));
        assert_eq!(expand_home("~", Some(h)), PathBuf::from("/home/u"));
        assert_eq!(expand_home("/abs", Some(h)), PathBuf::from("/abs"));
        // Relative: from the home dir, as the original did.
        assert_eq!(expand_home(".r", Some(h)), PathBuf::from("/home/u/.r"));
        assert_eq!(expand_home("a/b", Some(h)), PathBuf::from("/home/u/a/b"));
        assert_eq!(expand_home("a/b", None), PathBuf::from("a/b"));
    }
}
