//! The original (Python) raptiformica's files, as this tool takes them.
//!
//! **Its commands.** The original's module files and its `mutable_config.json` hold commands
//! that call its own scripts (`export PYTHONPATH=.; ./bin/raptiformica_prune.py`), its source
//! tree (`cd modules/compute/docker; ...`, `modules/server/deploy.py`) or cjdns (`cjdroute`).
//! None of them can run here. Wherever such a command comes from (a module file, the mutable
//! cache, consul's KV), [`clean`] deals with it as the config is loaded:
//! - a hook or event handler that calls one of the original's scripts runs our command of the
//!   same name instead (`raptiformica_prune.py --verbose` → `raptiformica prune --verbose`), or
//!   is skipped where ours has no such command or does the work by itself (`members --rejoin`:
//!   the agent rejoins lost peers);
//! - any other command of the original's tree (a compute type, a server type, a state machine)
//!   is left out with the rest of its entry, so the built-in one applies;
//!
//! and one notice per source names what was mapped and what was left out.
//!
//! **Its mutable_config.json.** [`migrate_cache`] rewrites one the original wrote, once, after
//! keeping a copy of it as it was (`mutable_config.json.original`): its neighbours, keyed by
//! their cjdns public keys, become ours (`host`, `ssh_port`, `uuid`; slaving the machine again
//! gives it its full entry); its cjdns keys and password are no longer used and are kept in the
//! copy only; its consul password stays the gossip key when consul takes it as one; its
//! Python-era commands go as [`clean`] says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

use super::mapping::{Mapping, PREFIX};
use super::{MutableCache, load_modules};
use crate::sys::paths::Paths;

/// Where the original kept its cjdns secret (no longer used).
const CJDNS: &str = "raptiformica/meshnet/cjdns";
/// The neighbours, in the original's place and ours.
const NEIGHBOURS: &str = "raptiformica/meshnet/neighbours";
/// consul's gossip key, under the original's name.
const GOSSIP_KEY: &str = "raptiformica/meshnet/consul/password";
/// What a neighbour of the original keeps of its entry here.
const CARRIED: [&str; 3] = ["host", "ssh_port", "uuid"];
/// The name of the copy of a migrated cache (beside it).
pub const COPY_SUFFIX: &str = ".original";

/// Whether `command` belongs to the original's Python tool: it calls one of its scripts, its
/// module tree, or cjdns.
pub fn python_era(command: &str) -> bool {
    command.contains("PYTHONPATH")
        || command.contains("cjdroute")
        || command.contains("modules/compute/")
        || command.contains("modules/server/")
        || command
            .split(|c: char| c.is_whitespace() || c == ';')
            .any(|w| script(w).is_some())
}

/// The name of the original's script a word calls (`./bin/raptiformica_prune.py` → `prune`).
fn script(word: &str) -> Option<&str> {
    let file = word.rsplit('/').next()?;
    let name = file.strip_prefix("raptiformica_")?.strip_suffix(".py")?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(name)
}

/// What a handler's command of the original becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// Our command that does what it did.
    Ours(String),
    /// Left out, and why.
    Skipped(String),
}

/// Our command for a handler's `command` that calls one of the original's scripts.
pub fn map_command(command: &str) -> Mapped {
    let skip = |why: &str| Mapped::Skipped(why.to_string());
    if command.contains("cjdroute") || command.contains("cjdns") {
        return skip("cjdns is not used here (the overlay is yggdrasil)");
    }
    let mut call: Option<(&str, Vec<&str>)> = None;
    for step in command.split(';').flat_map(|s| s.split("&&")).map(str::trim) {
        let words: Vec<&str> = step.split_whitespace().collect();
        // `export PYTHONPATH=.`, `PYTHONPATH=. ./bin/...`, `cd /usr/etc/raptiformica`: set-up.
        let words: Vec<&str> = match words.as_slice() {
            [] | ["cd", ..] => continue,
            ["export", rest @ ..] if rest.iter().all(|w| w.contains('=')) => continue,
            _ => words
                .into_iter()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .collect(),
        };
        let Some(name) = words.first().and_then(|w| script(w)) else {
            return skip("it runs other commands beside the original's script");
        };
        if call.is_some() {
            return skip("it runs several of the original's scripts");
        }
        let args = words[1..].to_vec();
        if args
            .iter()
            .any(|a| a.contains(['|', '>', '<', '$', '`', '&', '(', ')']))
        {
            return skip("its arguments are more than words");
        }
        call = Some((name, args));
    }
    let Some((name, args)) = call else {
        return skip("it calls none of the original's scripts");
    };
    let ours = |sub: &str| {
        let mut line = format!("\"$RAPTIFORMICA_BIN\" {sub}");
        for a in &args {
            line.push(' ');
            line.push_str(a);
        }
        Mapped::Ours(line)
    };
    match name {
        "members" if args.iter().any(|a| *a == "--rejoin" || *a == "-r") => {
            skip("the agent rejoins lost peers by itself, every few seconds")
        }
        "agent" => skip("the agent runs as a service of its own (`raptiformica agent --help`)"),
        "update" => skip("there is no `update`: slave the machine again to update it"),
        "advertise" | "clean" | "deploy" | "destroy" | "hook" | "inject" | "install" | "join" | "members" | "mesh"
        | "package" | "prune" | "slave" | "spawn" | "ssh" => ours(name),
        other => Mapped::Skipped(format!("this tool has no `{other}` command")),
    }
}

/// What [`clean`] did to one source.
#[derive(Debug, Default, PartialEq)]
pub struct Cleaned {
    /// Handlers that run our command now: (handler, our command).
    pub mapped: Vec<(String, String)>,
    /// Handlers left out: (handler, why).
    pub skipped: Vec<(String, String)>,
    /// Other entries of the original's tree left out (compute and server types, ...).
    pub left_out: Vec<String>,
}

impl Cleaned {
    pub fn is_empty(&self) -> bool {
        self.mapped.is_empty() && self.skipped.is_empty() && self.left_out.is_empty()
    }

    /// One notice for `source` (None when nothing was done).
    pub fn notice(&self, source: &str) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if !self.mapped.is_empty() {
            let list: Vec<String> = self.mapped.iter().map(|(h, c)| format!("{h} → {c}")).collect();
            parts.push(format!("runs our commands: {}", list.join(", ")));
        }
        if !self.skipped.is_empty() {
            let list: Vec<String> = self.skipped.iter().map(|(h, why)| format!("{h} ({why})")).collect();
            parts.push(format!("skipped: {}", list.join(", ")));
        }
        if !self.left_out.is_empty() {
            parts.push(format!(
                "left out, the built-in ones apply: {}",
                self.left_out.join(", ")
            ));
        }
        Some(format!(
            "{source} holds commands of the original Python raptiformica; {}",
            parts.join("; ")
        ))
    }
}

/// The entry a command key belongs to, below `raptiformica/`: a handler
/// (`platform/<p>/hooks/<hook>/<name>`, `.../events/<event>/<name>`), a compute or server type
/// (`compute/<type>/<server>`, `server/<type>/<name>`), a state machine (`state/<name>`), or the
/// key itself.
fn entry_of(key: &str) -> Option<(String, bool)> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let segs: Vec<&str> = rest.split('/').collect();
    let (depth, handler) = match segs.as_slice() {
        ["platform", _, "hooks" | "events", _, _, _, ..] => (5, true),
        ["compute" | "server", _, _, _, ..] => (3, false),
        ["state", _, _, ..] => (2, false),
        _ => (segs.len(), false),
    };
    Some((format!("{PREFIX}/{}", segs[..depth].join("/")), handler))
}

/// Maps or leaves out the original's commands in `mapping` (one layer), in place.
pub fn clean(mapping: &mut Mapping) -> Cleaned {
    let mut entries = BTreeSet::new();
    for (key, value) in mapping.iter() {
        if super::trust::is_command(key)
            && value.as_str().is_some_and(python_era)
            && let Some(entry) = entry_of(key)
        {
            entries.insert(entry);
        }
    }
    let mut cleaned = Cleaned::default();
    for (entry, handler) in entries {
        let name = entry.strip_prefix(&format!("{PREFIX}/")).unwrap_or(&entry).to_string();
        let command_key = format!("{entry}/command");
        let predicate_key = format!("{entry}/predicate");
        let predicate_ok = mapping
            .get(&predicate_key)
            .and_then(Value::as_str)
            .is_none_or(|p| !python_era(p));
        let mapped = match mapping.get(&command_key).and_then(Value::as_str) {
            Some(c) if handler && predicate_ok => Some(map_command(c)),
            _ => None,
        };
        match mapped {
            Some(Mapped::Ours(ours)) => {
                mapping.insert(command_key, Value::from(ours.clone()));
                cleaned.mapped.push((name, ours));
            }
            Some(Mapped::Skipped(why)) => {
                super::mapping::remove_subtree(mapping, &entry);
                cleaned.skipped.push((name, why));
            }
            None => {
                super::mapping::remove_subtree(mapping, &entry);
                if handler {
                    cleaned
                        .skipped
                        .push((name, "its predicate runs the original's scripts".into()));
                } else {
                    cleaned.left_out.push(name);
                }
            }
        }
    }
    cleaned
}

/// Whether consul takes `key` as a gossip key: base64 of 16, 24 or 32 bytes (the original's
/// uuid4 hex, 32 characters, is 24 bytes of base64).
pub fn valid_gossip_key(key: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|b| matches!(b.len(), 16 | 24 | 32))
}

/// What [`migrate`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Migration {
    /// The original's neighbours now ours: (cjdns public key, our id).
    pub neighbours: Vec<(String, String)>,
    /// How many cjdns keys (its secret, the neighbours' cjdns fields) were dropped.
    pub cjdns_keys: usize,
    /// The consul password, when it is no gossip key consul takes (dropped: a new one is made).
    pub bad_gossip_key: bool,
    pub commands: Cleaned,
}

impl Migration {
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty() && self.cjdns_keys == 0 && !self.bad_gossip_key && self.commands.is_empty()
    }

    /// The one notice for the cache at `path`, kept as `copy`.
    pub fn notice(&self, path: &Path, copy: &Path) -> String {
        let mut lines = vec![format!(
            "`{}` was written by the original raptiformica: migrated; the file as it was is kept in `{}`",
            path.display(),
            copy.display()
        )];
        if !self.neighbours.is_empty() {
            lines.push(format!(
                "  {} neighbour(s) carried over (host, ssh_port, uuid); `raptiformica slave HOST` makes each a node of ours",
                self.neighbours.len()
            ));
        }
        if self.cjdns_keys > 0 {
            lines.push(format!(
                "  {} cjdns value(s) (its password, the neighbours' cjdns keys, addresses and ports) are no longer \
                 used (the overlay is yggdrasil): kept in the copy only",
                self.cjdns_keys
            ));
        }
        if self.bad_gossip_key {
            lines.push(format!(
                "  `{GOSSIP_KEY}` was no gossip key consul takes (base64 of 16, 24 or 32 bytes): kept in the copy, \
                 a new one is made when the cluster forms"
            ));
        }
        if let Some(n) = self.commands.notice("  it") {
            lines.push(n);
        }
        lines.join("\n")
    }
}

/// A mapping the original wrote, as ours: see the module's doc. None when nothing in it is the
/// original's.
pub fn migrate(cached: &Mapping) -> Option<(Mapping, Migration)> {
    let mut next = cached.clone();
    let mut report = Migration::default();
    // Its neighbours: keyed by cjdns public keys, with cjdns fields.
    let prefix = format!("{NEIGHBOURS}/");
    let mut theirs: BTreeSet<String> = BTreeSet::new();
    for key in cached.keys() {
        if let Some((id, field)) = key.strip_prefix(&prefix).and_then(|r| r.split_once('/'))
            && (field.starts_with("cjdns_") || id.ends_with(".k"))
        {
            theirs.insert(id.to_string());
        }
    }
    for pk in theirs {
        let entry = format!("{prefix}{pk}");
        let fields = super::mapping::tree(cached, &entry);
        super::mapping::remove_subtree(&mut next, &entry);
        let id = crate::sys::digest::node_id(&format!("cjdns {pk}"));
        for (key, value) in fields {
            let field = key.rsplit('/').next().unwrap_or_default();
            if CARRIED.contains(&field) {
                let text = super::mapping::display_value(&value);
                next.insert(format!("{prefix}{id}/{field}"), Value::from(text));
            } else {
                report.cjdns_keys += 1;
            }
        }
        report.neighbours.push((pk, id));
    }
    let secret: Vec<String> = super::mapping::tree(cached, CJDNS).into_keys().collect();
    report.cjdns_keys += secret.len();
    super::mapping::remove_subtree(&mut next, CJDNS);
    if let Some(v) = cached.get(GOSSIP_KEY)
        && !v.as_str().is_some_and(valid_gossip_key)
    {
        next.remove(GOSSIP_KEY);
        report.bad_gossip_key = true;
    }
    report.commands = clean(&mut next);
    (!report.is_empty()).then_some((next, report))
}

/// Whether the text of a cache may hold something of the original's (a quick look before a
/// parse).
fn may_be_original(text: &str) -> bool {
    text.contains("cjdns") || python_era(text)
}

/// The copy's path for the cache at `path`: `<path>.original`, or `.original.N` when that
/// exists (a second migration never overwrites the first copy).
fn copy_path(path: &Path) -> PathBuf {
    let first = PathBuf::from(format!("{}{COPY_SUFFIX}", path.display()));
    (1..)
        .map(|n| match n {
            1 => first.clone(),
            n => PathBuf::from(format!("{}.{n}", first.display())),
        })
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// Migrates the mutable cache of `paths` if the original wrote it (see the module's doc), under
/// the cache's exclusive lock: the copy is written first, then the cache is replaced. Returns
/// the notice to show (None when there was nothing to do).
pub fn migrate_cache(paths: &Paths) -> anyhow::Result<Option<String>> {
    let cache = MutableCache::new(&paths.cache_dir);
    match std::fs::read_to_string(cache.path()) {
        Ok(text) if may_be_original(&text) => {}
        _ => return Ok(None),
    }
    let modules = load_modules(paths).0.mapping;
    let held = cache.lock_exclusive()?;
    let Some(cached) = cache.read_locked(&held)? else {
        return Ok(None);
    };
    let Some((migrated, report)) = migrate(&cached) else {
        return Ok(None);
    };
    // The cache holds the full effective mapping: the built-in entries stand where the
    // original's were left out.
    let mut next = modules;
    next.extend(migrated);
    super::mapping::validate(&next).map_err(|why| {
        anyhow::anyhow!(
            "`{}` was written by the original raptiformica and cannot be migrated: {why}; \
             are the built-in modules installed (--install-dir)?",
            cache.path().display()
        )
    })?;
    let bytes = std::fs::read(cache.path())?;
    let copy = copy_path(cache.path());
    crate::sys::fs_atomic::write_atomic(&copy, &bytes).map_err(|e| {
        anyhow::anyhow!(
            "cannot keep a copy of `{}` in `{}`: {e}",
            cache.path().display(),
            copy.display()
        )
    })?;
    cache.write_locked(&held, &next)?;
    Ok(Some(report.notice(cache.path(), &copy)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn the_originals() -> Mapping {
        super::super::mapping::flatten(&json!({
            "compute": {"docker": {"headless": {
                "source": "https://github.com/vdloo/raptiformica",
                "start_instance": "cd modules/compute/docker; sudo docker build -t raptiformica-baseimage .",
                "get_port": "echo 22"
            }}},
            "server": {"headless": {"raptiformica": {
                "bootstrap": "cd $HOME; export PYTHONPATH=/usr/etc/raptiformica; /usr/etc/raptiformica/modules/server/deploy.py"
            }}},
            "platform": {"default": {"hooks": {
                "cluster_change": {
                    "rejoin_peers": {"predicate": "/usr/bin/consul members",
                        "command": "export PYTHONPATH=.; ./bin/raptiformica_members.py --rejoin --verbose"},
                    "clean_up_gone_resources": {"predicate": "/bin/true",
                        "command": "export PYTHONPATH=.; ./bin/raptiformica_prune.py --verbose"},
                    "evict_gone_machines": {"predicate": "type consul 1> /dev/null",
                        "command": "consul members | grep server | awk '{print $1}' | xargs -I {} consul force-leave {}"}
                },
                "after_mesh": {"mesh_cjdns": {"command": "cjdroute --nobg < /etc/cjdroute.conf"},
                    "update": {"command": "export PYTHONPATH=.; ./bin/raptiformica_update.py"}},
                "after_slave": {"notify": {"predicate": "type noti 1> /dev/null", "command": "noti -m slaved"}}
            }}},
            "meshnet": {
                "cjdns": {"password": "0123456789abcdef0123456789abcdef"},
                "consul": {"password": "fedcba9876543210fedcba9876543210"},
                "neighbours": {
                    "abc.k": {"host": "192.0.2.7", "ssh_port": "2222", "uuid": "u-1",
                        "cjdns_port": "4863", "cjdns_public_key": "abc.k", "cjdns_ipv6_address": "fc00::1"}
                }
            }
        }))
    }

    #[test]
    fn the_originals_scripts_map_to_ours_or_are_skipped_with_a_reason() {
        assert_eq!(
            map_command("export PYTHONPATH=.; ./bin/raptiformica_prune.py --verbose"),
            Mapped::Ours("\"$RAPTIFORMICA_BIN\" prune --verbose".into())
        );
        assert_eq!(
            map_command("cd /usr/etc/raptiformica && PYTHONPATH=. ./bin/raptiformica_hook.py cluster_change"),
            Mapped::Ours("\"$RAPTIFORMICA_BIN\" hook cluster_change".into())
        );
        for skipped in [
            "export PYTHONPATH=.; ./bin/raptiformica_members.py --rejoin --verbose",
            "export PYTHONPATH=.; ./bin/raptiformica_update.py",
            "export PYTHONPATH=.; ./bin/raptiformica_frobnicate.py",
            "./bin/raptiformica_prune.py; rm -rf /tmp/x",
            "./bin/raptiformica_prune.py $(cat x)",
            "cjdroute --nobg",
        ] {
            assert!(matches!(map_command(skipped), Mapped::Skipped(_)), "{skipped}");
        }
        assert!(python_era("export PYTHONPATH=.; ./bin/raptiformica_prune.py"));
        assert!(!python_era("noti -m 'raptiformica'"));
        assert!(!python_era("sh compute/docker/start_instance.sh"));
    }

    #[test]
    fn clean_maps_handlers_and_leaves_out_the_originals_types_and_nothing_else() {
        let mut m = the_originals();
        let cleaned = clean(&mut m);
        let hooks = "raptiformica/platform/default/hooks";
        assert_eq!(
            m[&format!("{hooks}/cluster_change/clean_up_gone_resources/command")],
            json!("\"$RAPTIFORMICA_BIN\" prune --verbose")
        );
        for gone in [
            format!("{hooks}/cluster_change/rejoin_peers/command"),
            format!("{hooks}/cluster_change/rejoin_peers/predicate"),
            format!("{hooks}/after_mesh/mesh_cjdns/command"),
            format!("{hooks}/after_mesh/update/command"),
            "raptiformica/compute/docker/headless/source".into(),
            "raptiformica/compute/docker/headless/get_port".into(),
            "raptiformica/server/headless/raptiformica/bootstrap".into(),
        ] {
            assert!(!m.contains_key(&gone), "{gone}");
        }
        // Plain commands stay as they are, the data too.
        assert!(m.contains_key(&format!("{hooks}/cluster_change/evict_gone_machines/command")));
        assert!(m.contains_key(&format!("{hooks}/after_slave/notify/command")));
        assert!(m.contains_key("raptiformica/meshnet/cjdns/password"));
        assert_eq!(cleaned.mapped.len(), 1);
        assert_eq!(cleaned.skipped.len(), 3);
        assert_eq!(
            cleaned.left_out,
            ["compute/docker/headless", "server/headless/raptiformica"]
        );
        let notice = cleaned.notice("module x.json").unwrap();
        assert!(notice.contains("rejoin_peers (the agent rejoins"), "{notice}");
        assert!(clean(&mut m).is_empty(), "a second pass finds nothing");
    }

    #[test]
    fn a_mapping_the_original_wrote_migrates_to_ours() {
        let (m, report) = migrate(&the_originals()).unwrap();
        let id = crate::sys::digest::node_id("cjdns abc.k");
        assert_eq!(report.neighbours, [("abc.k".to_string(), id.clone())]);
        let entry: Vec<(&str, &Value)> = m
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&format!("{NEIGHBOURS}/")).map(|k| (k, v)))
            .collect();
        assert_eq!(
            entry,
            [
                (format!("{id}/host").as_str(), &json!("192.0.2.7")),
                (format!("{id}/ssh_port").as_str(), &json!("2222")),
                (format!("{id}/uuid").as_str(), &json!("u-1")),
            ]
        );
        assert_eq!(report.cjdns_keys, 4, "the secret and three cjdns fields");
        assert!(!m.keys().any(|k| k.contains("cjdns")));
        assert_eq!(m[GOSSIP_KEY], json!("fedcba9876543210fedcba9876543210"));
        assert!(!report.bad_gossip_key);
        assert!(migrate(&m).is_none(), "migrated once");

        let mut bad = the_originals();
        bad.insert(GOSSIP_KEY.into(), json!("not-a-key"));
        let (m, report) = migrate(&bad).unwrap();
        assert!(report.bad_gossip_key && !m.contains_key(GOSSIP_KEY));
        assert!(valid_gossip_key("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="));
        assert!(!valid_gossip_key("q83vEjRWeJ"));
    }

    #[test]
    fn the_cache_is_copied_then_rewritten_once_and_ours_is_never_touched() {
        let root = tempfile::tempdir().unwrap();
        let install = root.path().join("install");
        for f in ["compute", "provisioning", "modules"] {
            std::fs::create_dir_all(install.join(f)).unwrap();
        }
        std::fs::write(
            install.join("compute").join("docker.toml"),
            "raptiformica_api_version = \"0.1\"\n[compute.docker.headless]\nget_port = \"echo 22\"\n\
             [server.headless.plain]\nbootstrap = \"true\"\n",
        )
        .unwrap();
        let dir = root.path().join("cache");
        std::fs::create_dir_all(&dir).unwrap();
        let paths = Paths::resolve(Some(dir.clone()), Some(install), None);
        let dir = dir.as_path();
        let cache = MutableCache::new(dir);
        let text = serde_json::to_string_pretty(&the_originals()).unwrap();
        std::fs::write(cache.path(), &text).unwrap();
        let notice = migrate_cache(&paths).unwrap().expect("migrated");
        assert!(notice.contains("1 neighbour(s) carried over"), "{notice}");
        let copy = dir.join("mutable_config.json.original");
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), text);
        let now = cache.read().unwrap().unwrap();
        assert!(!now.keys().any(|k| k.contains("cjdns")));
        assert_eq!(
            now["raptiformica/compute/docker/headless/get_port"],
            json!("echo 22"),
            "the built-in one"
        );
        assert_eq!(migrate_cache(&paths).unwrap(), None, "nothing left to migrate");
        assert!(!dir.join("mutable_config.json.original.2").exists());
    }
}
