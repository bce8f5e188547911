//! Hooks: user commands fired at points of the life cycle, so plugins extend the platform
//! without touching the core.
//!
//! Handlers live at `raptiformica/platform/<platform>/hooks/<hook>/<handler>/{predicate,command}`.
//! As in the original, only the first available platform type (alphabetically) is used. A
//! handler's command runs when its predicate exits 0 (a missing one counts as true); a failing
//! command is a warning, never an error of the step that fired it.

use std::time::Duration;

use crate::config::context::Context;
use crate::config::{Config, mapping::PREFIX};

/// The hooks the core fires.
pub const HOOKS: [&str; 5] = [
    "after_start_instance",
    "after_slave",
    "after_assimilate",
    "after_mesh",
    "cluster_change",
];

/// How long one handler may run.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(300);

/// One handler of a hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Handler {
    pub name: String,
    pub predicate: String,
    pub command: String,
}

/// What firing a hook did.
#[derive(Debug, Default, PartialEq)]
pub struct Fired {
    pub found: usize,
    pub ran: usize,
    pub failed: usize,
}

/// The platform types in the config, sorted.
pub fn platform_types(config: &Config) -> Vec<String> {
    crate::sys::mapping::children(&config.mapping, &format!("{PREFIX}/platform/"))
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// The handlers of `hook` for `platform`, sorted by name.
pub fn handlers(config: &Config, platform: &str, hook: &str) -> Vec<Handler> {
    handlers_under(config, platform, &format!("hooks/{hook}"))
}

/// The handlers below `raptiformica/platform/<platform>/<section>/` (`hooks/<hook>`,
/// `events/<event>`), sorted by name; a missing predicate or command is `true`.
pub fn handlers_under(config: &Config, platform: &str, section: &str) -> Vec<Handler> {
    let prefix = format!("{PREFIX}/platform/{platform}/{section}/");
    let names = crate::sys::mapping::children(&config.mapping, &prefix);
    let value = |name: &str, field: &str| {
        config
            .get_str(&format!("{prefix}{name}/{field}"))
            .map(str::to_string)
            .unwrap_or_else(|| "true".into())
    };
    names
        .into_iter()
        .map(|name| Handler {
            name: name.into(),
            predicate: value(name, "predicate"),
            command: value(name, "command"),
        })
        .collect()
}

/// The platform type in use: the first whose `available` predicates pass.
pub fn platform_type(ctx: &Context, config: &Config) -> Option<String> {
    platform_types(config).into_iter().find(|p| {
        let prefix = format!("{PREFIX}/platform/{p}/available");
        config
            .mapping
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .all(|(_, v)| {
                v.as_str()
                    .is_some_and(|cmd| ctx.shell("platform check", cmd).output().is_ok_and(|o| o.success()))
            })
    })
}

/// Fires `hook`: runs each handler whose predicate passes.
pub fn fire(ctx: &Context, config: &Config, hook: &str) -> Fired {
    fire_timed(ctx, config, hook, HANDLER_TIMEOUT)
}

/// [`fire`] with `timeout` for each predicate and command: one that runs longer is killed
/// (with its process group) and counts as failed; the other handlers still run.
pub fn fire_timed(ctx: &Context, config: &Config, hook: &str, timeout: Duration) -> Fired {
    let fired = run_handlers(
        ctx,
        config,
        &format!("hook `{hook}`"),
        &format!("hooks/{hook}"),
        &Input::default(),
        timeout,
    );
    tracing::info!(
        "hook `{hook}`: {} handler(s) found, {} ran, {} failed",
        fired.found,
        fired.ran,
        fired.failed
    );
    fired
}

/// What a handler's command gets besides the environment of ours: stdin and variables.
#[derive(Debug, Default, Clone)]
pub struct Input {
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(String, String)>,
}

/// Runs the handlers below `section` of the platform in use, each whose predicate passes
/// (`what` names them in messages).
pub fn run_handlers(
    ctx: &Context,
    config: &Config,
    what: &str,
    section: &str,
    input: &Input,
    timeout: Duration,
) -> Fired {
    let Some(platform) = platform_type(ctx, config) else {
        tracing::debug!("no platform type: {what} has no handlers");
        return Fired::default();
    };
    let mut fired = Fired::default();
    for handler in handlers_under(config, &platform, section) {
        fired.found += 1;
        let label = format!("{what} handler `{}`", handler.name);
        let with_env = |mut shell: crate::sys::process::Shell| {
            for (k, v) in &input.env {
                shell = shell.env(k.clone(), v.clone());
            }
            shell
        };
        let pred = with_env(ctx.shell(format!("{label} predicate"), &handler.predicate))
            .echo(false)
            .timeout(timeout)
            .output();
        if !pred.is_ok_and(|o| o.success()) {
            tracing::debug!("{label}: predicate false, not run");
            continue;
        }
        fired.ran += 1;
        let mut command = with_env(ctx.shell(label.clone(), &handler.command)).timeout(timeout);
        if let Some(bytes) = &input.stdin {
            command = command.stdin(bytes.clone());
        }
        if let Err(e) = command.run() {
            fired.failed += 1;
            tracing::warn!("{e}");
        }
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::mapping;
    use serde_json::json;

    #[test]
    fn handlers_default_missing_fields_to_true() {
        let config = Config {
            mapping: mapping::flatten(&json!({"platform": {
                "default": {"hooks": {"after_slave": {"b": {"command": "echo b"}, "a": {"predicate": "false", "command": "x"}}}},
                "other": {"hooks": {}}}})),
            ..Default::default()
        };
        assert_eq!(platform_types(&config), ["default"]);
        let hs = handlers(&config, "default", "after_slave");
        assert_eq!(hs.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(hs[1].predicate, "true");
        assert!(handlers(&config, "default", "after_mesh").is_empty());
    }
}
