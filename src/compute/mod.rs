//! Compute back-ends, as the original defines them: a compute type per (compute, server type)
//! pair of shell commands in the config, under `raptiformica/compute/<compute>/<server>/`.
//!
//! The core holds no docker or vagrant logic. It creates one directory per instance
//! (`<cache-dir>/var/machines/<compute>/<server>/<uuid>/`), runs the type's commands there with
//! a timeout and the `RAPTIFORMICA_*` environment, keeps their output in `commands.log` in that
//! directory, and cleans up after a failed start so nothing is left half-created.

pub mod instance;
pub mod package;
pub mod spawner;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::context::Context;
use crate::config::{Config, mapping::PREFIX};
use crate::sys::process::{LineSink, Shell};

pub use instance::Instance;

/// The commands a compute type must define.
pub const REQUIRED_COMMANDS: [&str; 5] = [
    "start_instance",
    "get_hostname",
    "get_port",
    "detect_stale_instance",
    "clean_up_instance_command",
];

use crate::modules::server_type::PREDICATE_TIMEOUT;
/// How long `start_instance` may take (a first image build takes minutes).
pub const START_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long `package` may take (it provisions nothing itself, but saving an image can be slow).
pub const PACKAGE_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long the short commands (hostname, port, stale check, clean-up) may take.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(120);

/// One compute type for one server type.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeType {
    pub compute: String,
    pub server: String,
    /// Command name (`start_instance`, `available`, `source`, ...) to its value.
    pub commands: BTreeMap<String, String>,
    /// The cluster its machines are for ([`crate::mesh::plan::cluster_id`]), when there is one
    /// yet: its commands get it as `RAPTIFORMICA_CLUSTER_ID`, and a back-end labels what it
    /// starts with it, so that `destroy` finds the machines of the cluster that nodes spawned.
    pub cluster: Option<String>,
}

impl ComputeType {
    /// `docker/headless`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.compute, self.server)
    }

    /// The config key of one of its commands.
    pub fn key(&self, command: &str) -> String {
        format!("{PREFIX}/compute/{}/{}/{command}", self.compute, self.server)
    }

    /// A command's value, or an error that names the missing key and the fix.
    pub fn command(&self, name: &str) -> anyhow::Result<&str> {
        self.commands.get(name).map(String::as_str).with_context(|| {
            format!(
                "compute type `{}` has no `{name}` command; set `{}` in a module or with `raptiformica config set`",
                self.name(),
                self.key(name)
            )
        })
    }

    /// The `available` predicates (every one must pass; none means available).
    fn predicates(&self) -> impl Iterator<Item = &str> {
        self.commands
            .iter()
            .filter(|(k, _)| k.ends_with("available"))
            .map(|(_, v)| v.as_str())
    }

    /// Runs the `available` predicates on this host.
    pub fn is_available(&self, ctx: &Context) -> bool {
        self.availability(ctx).0
    }

    /// Runs the `available` predicates on this host: whether all pass, and what they printed
    /// (the last line of each one's stdout: how the type runs here, or what is missing).
    pub fn availability(&self, ctx: &Context) -> (bool, String) {
        let mut notes = Vec::new();
        for p in self.predicates() {
            let out = ctx
                .shell(format!("available check of `{}`", self.name()), p)
                .timeout(PREDICATE_TIMEOUT)
                .output();
            let Ok(out) = out else { return (false, notes.join("; ")) };
            if let Some(line) = out.stdout.lines().map(str::trim).rfind(|l| !l.is_empty()) {
                notes.push(line.to_string());
            }
            if !out.success() {
                return (false, notes.join("; "));
            }
        }
        (true, notes.join("; "))
    }
}

/// Every compute type in the config, sorted by (compute, server).
pub fn compute_types(config: &Config) -> Vec<ComputeType> {
    let prefix = format!("{PREFIX}/compute/");
    let cluster = config
        .get_str(crate::mesh::plan::GOSSIP_KEY)
        .map(crate::mesh::plan::cluster_id);
    let mut types: BTreeMap<(String, String), ComputeType> = BTreeMap::new();
    for (key, value) in config.mapping.range(prefix.clone()..) {
        let Some(rest) = key.strip_prefix(&prefix) else { break };
        let mut parts = rest.splitn(3, '/');
        let (Some(compute), Some(server), Some(command)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(value) = value.as_str() else { continue };
        types
            .entry((compute.to_string(), server.to_string()))
            .or_insert_with(|| ComputeType {
                compute: compute.to_string(),
                server: server.to_string(),
                commands: BTreeMap::new(),
                cluster: cluster.clone(),
            })
            .commands
            .insert(command.to_string(), value.to_string());
    }
    types.into_values().collect()
}

/// Finds the compute type for `compute`/`server`, or says which ones exist.
pub fn find(config: &Config, compute: &str, server: &str) -> anyhow::Result<ComputeType> {
    let all = compute_types(config);
    if let Some(t) = all.iter().find(|t| t.compute == compute && t.server == server) {
        return Ok(t.clone());
    }
    let known: Vec<String> = all.iter().map(ComputeType::name).collect();
    bail!(
        "there is no compute type `{compute}` for server type `{server}` (known: {})",
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    )
}

/// Starts one instance of `ty`: a fresh directory, the `source` checkout if set, then
/// `start_instance`, `get_hostname` and `get_port`. On any failure the instance is cleaned up
/// and its directory removed before the error is returned.
///
/// `note` gets the progress lines `start_instance` prints on stderr, by the back-ends'
/// convention `raptiformica[<back-end>]: <what it is doing>` (a box or image build, a VM boot).
pub fn start(ctx: &Context, ty: &ComputeType, note: Option<LineSink>) -> anyhow::Result<Instance> {
    for required in REQUIRED_COMMANDS {
        ty.command(required)?;
    }
    let instance = Instance::create(&ctx.paths.machines_dir(), &ty.compute, &ty.server)?;
    match start_in(ctx, ty, &instance, note) {
        Ok(started) => Ok(started),
        Err(e) => {
            let cleanup = clean_up(ctx, ty, &instance);
            if let Err(c) = cleanup {
                tracing::warn!(
                    "cleaning up the failed instance `{}` also failed: {c:#}",
                    instance.dir.display()
                );
            }
            Err(e.context(format!("failed to start an instance of compute type `{}`", ty.name())))
        }
    }
}

fn start_in(ctx: &Context, ty: &ComputeType, instance: &Instance, note: Option<LineSink>) -> anyhow::Result<Instance> {
    if let Some(source) = ty.commands.get("source") {
        // The original checks the source out into the instance directory; its commands then
        // refer to files of that checkout.
        ctx.shell(
            format!("source checkout of `{}`", ty.name()),
            "git clone --quiet --depth 1 \"$RAPTIFORMICA_SOURCE\" .",
        )
        .env("RAPTIFORMICA_SOURCE", source)
        .cwd(&instance.dir)
        .timeout(START_TIMEOUT)
        .run()?;
    }
    let run = |step: &str, timeout: Duration| -> anyhow::Result<String> {
        let out = instance_shell(ctx, ty, instance, step)?.timeout(timeout).run()?;
        Ok(out.stdout.trim().to_string())
    };
    let mut starting = instance_shell(ctx, ty, instance, "start_instance")?.timeout(START_TIMEOUT);
    if let Some(note) = note {
        starting = starting.on_stderr(LineSink(std::sync::Arc::new(move |line: &str| {
            if let Some(progress) = progress_line(line) {
                (note.0)(progress);
            }
        })));
    }
    starting.run()?;
    let host = current_host(ctx, ty, instance)?;
    let port = run("get_port", SHORT_TIMEOUT)?;
    let port: u16 = port
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .parse()
        .with_context(|| format!("`get_port` of `{}` printed no port number (got {port:?})", ty.name()))?;
    let mut started = instance.clone();
    if ty.commands.contains_key("get_host_key") {
        started.host_keys = Some(run("get_host_key", SHORT_TIMEOUT)?);
    }
    started.host = Some(host);
    started.port = Some(port);
    started.save()?;
    Ok(started)
}

/// Where the instance is now, as its back-end says (`get_hostname`): the address it was
/// started at, or a new one after the network was renumbered.
pub fn current_host(ctx: &Context, ty: &ComputeType, instance: &Instance) -> anyhow::Result<String> {
    let out = instance_shell(ctx, ty, instance, "get_hostname")?
        .timeout(SHORT_TIMEOUT)
        .run()?;
    let host = out.stdout.lines().last().unwrap_or_default().trim().to_string();
    if host.is_empty() || crate::config::known::check_host(&host).is_err() {
        bail!(
            "`get_hostname` of `{}` printed no usable host (got {host:?})",
            ty.name()
        );
    }
    Ok(host)
}

/// The message of a back-end's progress line (`raptiformica[vagrant]: building the box`).
fn progress_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("raptiformica[")?;
    let (name, message) = rest.split_once("]: ")?;
    let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    (valid && !message.trim().is_empty()).then_some(message.trim())
}

/// A command of `ty` ready to run in `instance`'s directory, logged there.
pub fn instance_shell(ctx: &Context, ty: &ComputeType, instance: &Instance, step: &str) -> anyhow::Result<Shell> {
    let script = ty.command(step)?;
    Ok(ctx
        .shell(format!("{step} of `{}`", ty.name()), script)
        .cwd(&instance.dir)
        .log_to(instance.dir.join(instance::LOG_FILE))
        .env("RAPTIFORMICA_INSTANCE_DIR", instance.dir.display().to_string())
        .env("RAPTIFORMICA_COMPUTE_TYPE", &ty.compute)
        .env("RAPTIFORMICA_SERVER_TYPE", &ty.server)
        .env("RAPTIFORMICA_NO_PACKAGE", if ctx.no_package { "1" } else { "0" })
        .env("RAPTIFORMICA_WITH_ENGINE", if ctx.with_engine { "1" } else { "0" })
        .env("RAPTIFORMICA_SHARED_ARTIFACTS", shared_artifacts(ctx))
        .env("RAPTIFORMICA_CLUSTER_ID", ty.cluster.clone().unwrap_or_default())
        .env("RAPTIFORMICA_WORKSTATION", workstation(ctx)))
}

/// The workstation a machine started here is held by (a back-end labels it with it, see
/// `remote::workstations`); empty on a node (it has an overlay identity, also before consul
/// runs: a lone node with an engine grows to three), whose machines its id holds.
fn workstation(ctx: &Context) -> String {
    if crate::config::shared::is_node(&ctx.paths) {
        return String::new();
    }
    crate::remote::workstations::own_name(&ctx.paths).unwrap_or_default()
}

/// The artifacts (consul, yggdrasil) a back-end may hand the machines it starts on this host
/// read-only, so that slaving finds them there and does not upload them (the docker one binds
/// them in: 77 of the 94 MB a new node took, written through the engine's storage driver, and
/// one copy of consul in memory for all the containers). Empty with `--no-package` (a machine
/// provisioned from nothing but the upload, as `package` makes its image) and while the
/// artifacts are not all here.
fn shared_artifacts(ctx: &Context) -> String {
    if ctx.no_package || !crate::provision::artifacts::complete(ctx) {
        return String::new();
    }
    let dir = crate::provision::artifacts::dir(ctx);
    std::path::absolute(&dir).unwrap_or(dir).display().to_string()
}

/// Whether the back-end's optional `host_gone` command says no machine of its runs at `host`
/// (exit 0): evidence that a lost server is gone, not cut off. False when `ty` has no such
/// command, or it says one runs, or it cannot tell.
pub fn host_gone(ctx: &Context, ty: &ComputeType, host: &str) -> bool {
    let Some(script) = ty.commands.get("host_gone") else {
        return false;
    };
    ctx.shell(format!("host_gone of `{}`", ty.name()), script)
        .env("RAPTIFORMICA_COMPUTE_TYPE", &ty.compute)
        .env("RAPTIFORMICA_SERVER_TYPE", &ty.server)
        .env("RAPTIFORMICA_HOST", host)
        .timeout(SHORT_TIMEOUT)
        .output()
        .is_ok_and(|out| out.success())
}

/// What `clean_up_cluster` did: the machines removed, and those kept with their holder.
#[derive(Debug, Default)]
pub struct CleanedUp {
    pub removed: Vec<String>,
    pub kept: Vec<(String, String)>,
}

/// Runs the back-end's optional `clean_up_cluster` command of `ty`: it removes every machine
/// of the cluster it started, whoever asked it to (nodes with an engine included), but those
/// another workstation holds, unless `force` (`RAPTIFORMICA_FORCE=1`). None when `ty` has no
/// such command or no cluster yet.
pub fn clean_up_cluster(ctx: &Context, ty: &ComputeType, force: bool) -> anyhow::Result<Option<CleanedUp>> {
    let (Some(script), Some(cluster)) = (ty.commands.get("clean_up_cluster"), ty.cluster.as_deref()) else {
        return Ok(None);
    };
    let out = ctx
        .shell(format!("clean_up_cluster of `{}`", ty.name()), script)
        .env("RAPTIFORMICA_COMPUTE_TYPE", &ty.compute)
        .env("RAPTIFORMICA_SERVER_TYPE", &ty.server)
        .env("RAPTIFORMICA_CLUSTER_ID", cluster)
        .env("RAPTIFORMICA_WORKSTATION", workstation(ctx))
        .env("RAPTIFORMICA_FORCE", if force { "1" } else { "0" })
        .timeout(START_TIMEOUT)
        .run()?;
    let mut done = CleanedUp::default();
    for line in out.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix("kept ").and_then(|rest| rest.split_once(' ')) {
            Some((id, holder)) => done.kept.push((id.to_string(), holder.to_string())),
            None => done.removed.push(line.to_string()),
        }
    }
    Ok(Some(done))
}

/// True when `detect_stale_instance` says the instance is gone (it exits nonzero).
pub fn is_stale(ctx: &Context, ty: &ComputeType, instance: &Instance) -> anyhow::Result<bool> {
    let out = instance_shell(ctx, ty, instance, "detect_stale_instance")?
        .timeout(SHORT_TIMEOUT)
        .output()?;
    Ok(!out.success())
}

/// Runs `clean_up_instance_command`, then removes the instance directory.
pub fn clean_up(ctx: &Context, ty: &ComputeType, instance: &Instance) -> anyhow::Result<()> {
    instance_shell(ctx, ty, instance, "clean_up_instance_command")?
        .timeout(SHORT_TIMEOUT)
        .run()?;
    if let Some(host) = &instance.host {
        // The address will serve another machine, with another host key.
        crate::remote::ssh::forget(
            &ctx.paths.cache_dir.join("known_hosts"),
            host,
            instance.port.unwrap_or(22),
        )?;
    }
    remove_dir(&instance.dir)
}

fn remove_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove the instance directory `{}`", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn progress_lines_follow_the_back_end_convention() {
        assert_eq!(
            progress_line("raptiformica[vagrant]: building the box (first use)"),
            Some("building the box (first use)")
        );
        assert_eq!(progress_line("raptiformica[docker]: ready  "), Some("ready"));
        for other in [
            "==> default: Booting",
            "raptiformica[]: x",
            "raptiformica[a b]: x",
            "raptiformica[x]: ",
            "error: x",
        ] {
            assert_eq!(progress_line(other), None, "{other}");
        }
    }

    use super::*;
    use crate::config::mapping;
    use serde_json::json;

    #[test]
    fn compute_types_group_commands_per_pair() {
        let config = Config {
            mapping: mapping::flatten(&json!({"compute": {
                "docker": {"headless": {"get_port": "echo 22", "available": "true"}, "worker": {"get_port": "echo 2"}},
                "odd": "leaf", "vagrant": {"headless": {"start_instance": "vagrant up", "n": 1}}}})),
            ..Default::default()
        };
        let types = compute_types(&config);
        let names: Vec<_> = types.iter().map(ComputeType::name).collect();
        assert_eq!(names, ["docker/headless", "docker/worker", "vagrant/headless"]);
        assert_eq!(types[0].command("get_port").unwrap(), "echo 22");
        let err = types[2].command("get_port").unwrap_err().to_string();
        assert!(err.contains("raptiformica/compute/vagrant/headless/get_port"), "{err}");
        assert!(
            find(&config, "docker", "nope")
                .unwrap_err()
                .to_string()
                .contains("docker/headless")
        );
    }
}
