//! `--help` that names the server and compute types this machine knows, installed user
//! modules included (clap's derived help is static).
//!
//! Only a command line asking for help pays for it: the cache and install dirs are read
//! ahead from the flags and the environment, the module layers and the mutable cache are
//! loaded (never consul: help must not wait for a daemon), and the `--server-type` and
//! `--compute-type` help texts get a `[known: ...]` list. Every other run parses as before.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::{Arg, CommandFactory, FromArgMatches, Parser};

use crate::cli::args::Cli;
use crate::config::{self, MutableCache};
use crate::sys::paths::Paths;

/// The subcommands and their arguments that name a server type.
const SERVER_TYPE_ARGS: [&str; 5] = ["slave", "spawn", "deploy", "package", "join"];
/// The subcommands and their arguments that name a compute type.
const COMPUTE_TYPE_ARGS: [&str; 2] = ["spawn", "package"];

/// Parses the process's command line (what `main` calls).
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !wants_help(&args) {
        return Cli::parse_from(args);
    }
    let paths = paths_from(&args, |k| std::env::var_os(k));
    let command = with_known_types(Cli::command(), &Known::load(&paths));
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Whether the command line asks for help: `-h`, `--help`, or `help` (before any `--`).
pub fn wants_help(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != "--")
        .any(|a| a == "-h" || a == "--help" || a == "help")
}

/// The paths the run would use, read ahead: `--cache-dir`/`RAPTIFORMICA_CACHE_DIR` and
/// `--install-dir`/`RAPTIFORMICA_INSTALL_DIR`, as clap would fill them.
pub fn paths_from(args: &[OsString], env: impl Fn(&str) -> Option<OsString>) -> Paths {
    let cache_dir = flag(args, "--cache-dir")
        .or_else(|| env("RAPTIFORMICA_CACHE_DIR"))
        .unwrap_or_else(|| "~/.raptiformica.d".into());
    let install_dir = flag(args, "--install-dir")
        .or_else(|| env("RAPTIFORMICA_INSTALL_DIR"))
        .map(PathBuf::from);
    let home = env("HOME").map(PathBuf::from);
    let cache_dir = crate::cli::expand_home(&cache_dir.to_string_lossy(), home.as_deref());
    Paths::resolve(Some(cache_dir), install_dir, home)
}

/// The value of `--name VALUE` or `--name=VALUE` (the last one wins, as in clap).
fn flag(args: &[OsString], name: &str) -> Option<OsString> {
    let mut found = None;
    let mut it = args.iter().skip(1).take_while(|a| a.as_os_str() != "--");
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        if text == name {
            found = it.next().cloned();
        } else if let Some(value) = text.strip_prefix(&format!("{name}=")) {
            found = Some(OsStr::new(value).to_os_string());
        }
    }
    found
}

/// The server and compute types in the module layers and the mutable cache.
#[derive(Debug, Default, PartialEq)]
pub struct Known {
    pub server_types: Vec<String>,
    pub compute_types: Vec<String>,
}

impl Known {
    /// Reads them; a cache that does not read counts as absent (help must still show).
    pub fn load(paths: &Paths) -> Self {
        let (mut config, _warnings) = config::load_modules(paths);
        if let Ok(Some(cached)) = MutableCache::new(&paths.cache_dir).read() {
            config.mapping.extend(cached);
        }
        Self::of(&config)
    }

    /// The types a config defines.
    pub fn of(config: &config::Config) -> Self {
        let mut compute_types: Vec<String> = crate::compute::compute_types(config)
            .into_iter()
            .map(|t| t.compute)
            .collect();
        compute_types.dedup();
        Self {
            server_types: crate::modules::server_type::server_types(config).into_keys().collect(),
            compute_types,
        }
    }
}

/// `command` with the known types appended to the help of every `--server-type` and
/// `--compute-type`.
pub fn with_known_types(mut command: clap::Command, known: &Known) -> clap::Command {
    for sub in SERVER_TYPE_ARGS {
        command = command.mut_subcommand(sub, |c| c.mut_arg("server_type", |a| append(a, &known.server_types)));
    }
    for sub in COMPUTE_TYPE_ARGS {
        command = command.mut_subcommand(sub, |c| c.mut_arg("compute_type", |a| append(a, &known.compute_types)));
    }
    command
}

fn append(arg: Arg, types: &[String]) -> Arg {
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let list = if types.is_empty() {
        "none".to_string()
    } else {
        types.join(", ")
    };
    arg.help(format!("{help} [known: {list}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn only_help_requests_are_noticed() {
        assert!(wants_help(&args(&["r", "slave", "--help"])));
        assert!(wants_help(&args(&["r", "-h"])));
        assert!(wants_help(&args(&["r", "help", "spawn"])));
        assert!(!wants_help(&args(&["r", "config", "get", "x"])));
        assert!(!wants_help(&args(&["r", "ssh", "m", "--", "ls", "--help"])));
        assert!(!wants_help(&args(&["r"])));
    }

    #[test]
    fn cache_and_install_dir_are_read_ahead_from_flags_then_env() {
        let env = |k: &str| match k {
            "RAPTIFORMICA_CACHE_DIR" => Some(OsString::from("/env/cache")),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        let p = paths_from(&args(&["r", "slave", "--help"]), env);
        assert_eq!(p.cache_dir, PathBuf::from("/env/cache"));
        let p = paths_from(
            &args(&["r", "--cache-dir", "~/c", "slave", "--install-dir=/inst", "-h"]),
            env,
        );
        assert_eq!(p.cache_dir, PathBuf::from("/home/u/c"));
        assert_eq!(p.install_dir, Some(PathBuf::from("/inst")));
        let p = paths_from(&args(&["r", "-h"]), |k| (k == "HOME").then(|| OsString::from("/h")));
        assert_eq!(p.cache_dir, PathBuf::from("/h/.raptiformica.d"));
    }

    /// The subcommand's help with its wrapping undone.
    fn help_of(command: &mut clap::Command, sub: &str) -> String {
        let help = command.find_subcommand_mut(sub).unwrap().render_help().to_string();
        help.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn help_lists_the_known_types_where_types_are_asked_for() {
        let known = Known {
            server_types: vec!["acceptworker".into(), "headless".into()],
            compute_types: vec!["docker".into(), "mybox".into()],
        };
        let mut command = with_known_types(Cli::command(), &known);
        for sub in SERVER_TYPE_ARGS {
            let help = help_of(&mut command, sub);
            assert!(help.contains("[known: acceptworker, headless]"), "{sub}: {help}");
        }
        for sub in COMPUTE_TYPE_ARGS {
            assert!(help_of(&mut command, sub).contains("[known: docker, mybox]"), "{sub}");
        }
        // The original text stays in front.
        assert!(help_of(&mut command, "slave").contains("Server type to provision it as"));
        let mut plain = with_known_types(Cli::command(), &Known::default());
        let help = help_of(&mut plain, "slave");
        assert!(
            help.contains("[known: none]") && !help.contains("acceptworker"),
            "{help}"
        );
    }

    #[test]
    fn known_types_come_from_the_config() {
        let mapping = config::mapping::flatten(&serde_json::json!({
            "server": {"w": {"p": {"bootstrap": "b"}}, "headless": {"p": {"bootstrap": "b"}}},
            "compute": {"docker": {"headless": {"start_instance": "s"}, "w": {"start_instance": "s"}},
                        "box": {"headless": {"start_instance": "s"}}}}));
        let known = Known::of(&config::Config {
            mapping,
            ..Default::default()
        });
        assert_eq!(known.server_types, vec!["headless", "w"]);
        assert_eq!(known.compute_types, vec!["box", "docker"]);
    }
}
