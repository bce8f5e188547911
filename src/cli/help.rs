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
        return Cli::try_parse_from(&args).unwrap_or_else(|e| only_typos(e, &args).exit());
    }
    let paths = paths_from(&args, |k| std::env::var_os(k));
    let command = with_known_types(Cli::command(), &Known::load(&paths));
    let matches = command
        .try_get_matches_from(&args)
        .unwrap_or_else(|e| only_typos(e, &args).exit());
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// How many edits a suggestion may be from what was typed: a typo's, not another word's.
const TYPO: usize = 2;

/// clap's error with its "a similar ... exists" tip kept only for a typo: never a hidden
/// subcommand, never a flag or subcommand more than [`TYPO`] edits away (for
/// `--no-after-assimilate` clap would offer `--no-assimilate`, which does something else).
/// `args`: the command line, for the usage of the subcommand it names.
pub fn only_typos(e: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    let typed = match e
        .get(ContextKind::InvalidArg)
        .or_else(|| e.get(ContextKind::InvalidSubcommand))
    {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return e,
    };
    let Some((kind, offered)) = [ContextKind::SuggestedArg, ContextKind::SuggestedSubcommand]
        .into_iter()
        .find_map(|k| match e.get(k) {
            Some(ContextValue::String(s)) => Some((k, vec![s.clone()])),
            Some(ContextValue::Strings(v)) => Some((k, v.clone())),
            _ => None,
        })
    else {
        return e;
    };
    let cli = Cli::command();
    let hidden: Vec<&str> = cli
        .get_subcommands()
        .filter(|s| s.is_hide_set())
        .map(|s| s.get_name())
        .collect();
    let kept: Vec<String> = offered
        .iter()
        .filter(|s| !hidden.contains(&s.as_str()) && edits(s, &typed) <= TYPO)
        .cloned()
        .collect();
    if kept.len() == offered.len() {
        return e;
    }
    let mut filtered = clap::Error::new(e.kind()).with_cmd(&cli);
    // clap's usage line shows the suggestion too: the subcommand's own usage instead.
    let empty = |v: &ContextValue| matches!(v, ContextValue::StyledStrs(s) if s.is_empty());
    for (k, v) in e
        .context()
        .filter(|(k, v)| *k != kind && *k != ContextKind::Usage && !empty(v))
    {
        filtered.insert(k, v.clone());
    }
    let mut cmd = cli.clone();
    cmd.build();
    for word in args.iter().skip(1).filter_map(|a| a.to_str()) {
        match cmd.find_subcommand(word) {
            Some(sub) => cmd = sub.clone(),
            None if word.starts_with('-') => {}
            None => break,
        }
    }
    filtered.insert(ContextKind::Usage, ContextValue::StyledStr(cmd.render_usage()));
    if !kept.is_empty() {
        filtered.insert(kind, ContextValue::Strings(kept));
    }
    filtered
}

/// The Levenshtein distance of two words.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
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

    fn error_of(line: &str) -> String {
        let args: Vec<OsString> = std::iter::once("raptiformica")
            .chain(line.split_whitespace())
            .map(OsString::from)
            .collect();
        only_typos(Cli::try_parse_from(&args).expect_err(line), &args).to_string()
    }

    #[test]
    fn a_wrong_word_gets_a_tip_only_for_a_typo_and_never_a_hidden_command() {
        let e = error_of("keepr");
        assert!(!e.contains("keeper") && !e.contains("\n\n\n"), "{e}");
        for (typed, tip) in [
            ("spawn --no-after-asimilate", "'--no-after-assimilate'"),
            ("slave x --no-provison", "'--no-provision'"),
            ("memebrs", "'members'"),
        ] {
            let e = error_of(typed);
            assert!(e.contains("similar") && e.contains(tip), "{typed}: {e}");
        }
        // clap offers these; each would do something else.
        for (typed, not) in [
            ("spawn --assimilate", "--no-assimilate"),
            ("deploy x --no-after", "--no-after-mesh"),
        ] {
            let raw = Cli::try_parse_from(["raptiformica"].into_iter().chain(typed.split_whitespace()))
                .expect_err(typed)
                .to_string();
            assert!(raw.contains(not), "clap no longer offers {not} for {typed}: {raw}");
            let e = error_of(typed);
            assert!(!e.contains(not) && e.contains("unexpected argument"), "{typed}: {e}");
            let sub = typed.split(' ').next().unwrap();
            assert!(e.contains(&format!("Usage: raptiformica {sub} ")), "{typed}: {e}");
        }
        assert_eq!(edits("kitten", "sitting"), 3);
        assert_eq!(edits("", "ab"), 2);
    }
}
