//! User modules: folders of module files under `<cache-dir>/modules/<name>` that add server
//! types, compute types and hooks to the config (the layer above the built-in modules).
//!
//! `install` is all or nothing: the module is copied (or cloned) into a hidden folder beside
//! the others (module discovery passes hidden folders over), every module file in it must
//! parse, then it is renamed into place and its keys go to the shared config in one change.
//! `uninstall` takes its keys out of the shared config again (see [`removal`]) and removes the
//! folder. Both hold `<cache-dir>/modules/.lock`, so two of them never interleave.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::config::context::Context;
use crate::config::mapping::{self, Mapping, PREFIX};
use crate::config::module::{self, ModuleFile};
use crate::config::{self, edit, shared};
use crate::sys::quote::quote;

/// The hidden file in an installed module that records where it came from.
pub const SOURCE_FILE: &str = ".raptiformica-source";

/// The lock file that serializes installs and uninstalls.
const LOCK_FILE: &str = ".lock";

/// Where `user/repo` modules come from, as in the original.
const GITHUB: &str = "https://github.com";

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A local folder (its absolute path).
    Folder(PathBuf),
    /// A git repository URL (`user/repo` already expanded).
    Git(String),
}

/// A module to install: where from, and the folder name it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub origin: Origin,
    pub name: String,
}

impl Source {
    /// Resolves what the user typed: an existing folder, a git URL, or `user/repo`.
    pub fn resolve(source: &str) -> anyhow::Result<Self> {
        let path = Path::new(source);
        let folder = if path.is_dir() {
            Some(
                path.canonicalize()
                    .with_context(|| format!("cannot resolve the folder `{source}`"))?,
            )
        } else {
            None
        };
        classify(source, folder).map_err(anyhow::Error::msg)
    }

    /// The folder or the URL, as recorded in [`SOURCE_FILE`] and shown by `modules list`.
    pub fn describe(&self) -> String {
        match &self.origin {
            Origin::Folder(p) => p.display().to_string(),
            Origin::Git(url) => url.clone(),
        }
    }
}

/// The pure part of [`Source::resolve`]: `folder` is the canonical path when `source` names an
/// existing folder (a folder wins over the `user/repo` reading of a relative path).
fn classify(source: &str, folder: Option<PathBuf>) -> Result<Source, String> {
    let trimmed = source.trim_end_matches('/');
    let origin = if let Some(folder) = folder {
        Origin::Folder(folder)
    } else if is_git_url(trimmed) {
        Origin::Git(trimmed.to_string())
    } else if let Some((user, repo)) = github_shorthand(trimmed) {
        Origin::Git(format!("{GITHUB}/{user}/{repo}"))
    } else {
        return Err(format!(
            "`{source}` is not a folder, a git URL (`https://...`, `git@host:path`, `file://...`) \
             or `user/repo` (a GitHub repository)"
        ));
    };
    let name = match &origin {
        Origin::Folder(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Origin::Git(url) => url
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .trim_end_matches(".git")
            .to_string(),
    };
    check_name(&name).map_err(|e| format!("cannot name a module after `{source}`: {e}"))?;
    Ok(Source { origin, name })
}

/// `https://...`, `ssh://...`, `file://...`, or the scp form `user@host:path`.
fn is_git_url(s: &str) -> bool {
    if s.contains("://") {
        return true;
    }
    // scp form: a colon before any slash, with something on both sides.
    match (s.find(':'), s.find('/')) {
        (Some(c), slash) => c > 0 && c + 1 < s.len() && slash.is_none_or(|sl| c < sl),
        _ => false,
    }
}

/// `user/repo`: exactly two plain parts.
fn github_shorthand(s: &str) -> Option<(&str, &str)> {
    let (user, repo) = s.split_once('/')?;
    let plain = |p: &str| !p.is_empty() && !p.starts_with(['.', '~']) && !p.contains(['/', ':']);
    (plain(user) && plain(repo)).then_some((user, repo))
}

/// A module's folder name: visible to discovery, one path segment.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name would be empty".into());
    }
    if name.starts_with('.') {
        return Err(format!("`{name}` starts with a dot, and hidden folders are not read"));
    }
    if name == "var" {
        return Err("`var` folders are not read (they hold instance state)".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!(
            "`{}` has whitespace or a control character",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// What a module provides, for `modules list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModuleInfo {
    pub name: String,
    /// The folder or URL it was installed from; None when it was put there by hand.
    pub source: Option<String>,
    pub path: PathBuf,
    pub server_types: Vec<String>,
    /// `compute/server` pairs, e.g. `docker/headless`.
    pub compute_types: Vec<String>,
    /// How many hook handlers it adds.
    pub hooks: usize,
}

/// Summarizes a module's flat mapping.
pub fn info(name: &str, path: &Path, source: Option<String>, mapping: &Mapping) -> ModuleInfo {
    let segments = |section: &str, n: usize| -> Vec<String> {
        let prefix = format!("{PREFIX}/{section}/");
        let mut out: Vec<String> = mapping
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| {
                let parts: Vec<&str> = rest.split('/').collect();
                (parts.len() > n).then(|| parts[..n].join("/"))
            })
            .collect();
        out.dedup();
        out
    };
    let hooks = segments("platform", 4)
        .iter()
        .filter(|p| p.split('/').nth(1) == Some("hooks"))
        .count();
    ModuleInfo {
        name: name.to_string(),
        source,
        path: path.to_path_buf(),
        server_types: dedup_sorted(segments("server", 1)),
        compute_types: dedup_sorted(segments("compute", 2)),
        hooks,
    }
}

fn dedup_sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// The installed modules (the visible folders of `<cache-dir>/modules`), sorted by name.
pub fn list(paths: &crate::sys::paths::Paths) -> anyhow::Result<Vec<ModuleInfo>> {
    let dir = paths.user_modules_dir();
    let mut out = Vec::new();
    for name in installed_names(&dir)? {
        let path = dir.join(&name);
        let source = std::fs::read_to_string(path.join(SOURCE_FILE))
            .ok()
            .map(|s| s.trim().to_string());
        let mapping = folder_mapping(&path).0;
        out.push(info(&name, &path, source, &mapping));
    }
    Ok(out)
}

/// The names of the visible folders in `dir` (none when it does not exist).
fn installed_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The merged mapping of the module files below `dir` (later files win, as in loading) and the
/// warnings for the files that did not parse.
fn folder_mapping(dir: &Path) -> (Mapping, Vec<String>) {
    let mut found = module::Discovery::default();
    module::discover(dir, &mut found);
    let mut m = Mapping::new();
    for f in found.modules {
        m.extend(f.mapping);
    }
    (m, found.warnings)
}

/// Checks a module folder before it is installed: every module file parses (the error names
/// the file and, from the parser, the line), there is at least one, and every key is a valid
/// key. Returns the module files.
pub fn validate(root: &Path) -> Result<Vec<ModuleFile>, String> {
    let mut found = module::Discovery::default();
    module::discover(root, &mut found);
    if !found.warnings.is_empty() {
        let problems: Vec<String> = found
            .warnings
            .iter()
            .map(|w| w.strip_prefix("skipped ").unwrap_or(w).to_string())
            .collect();
        return Err(problems.join("\n"));
    }
    if found.modules.is_empty() {
        return Err(format!(
            "it holds no module file (a `*.json` or `*.toml` file with a top-level `{}`)",
            module::API_VERSION_KEY
        ));
    }
    for m in &found.modules {
        for key in m.mapping.keys() {
            mapping::check_key(key).map_err(|e| format!("module `{}`: {e}", m.path.display()))?;
        }
    }
    Ok(found.modules)
}

/// What taking a module's keys out of the shared config does.
#[derive(Debug, Default, PartialEq)]
pub struct Removal {
    /// Keys the remaining modules define: their value is written back.
    pub set: Mapping,
    /// Keys no remaining module defines: removed.
    pub removed: Vec<String>,
    /// Keys whose shared value differs from the module's (changed after the install): left
    /// alone.
    pub kept: Vec<String>,
}

/// Decides, key by key, what removing `module` from the shared config does (the original's
/// `unload_module`): a key whose shared value is still the module's goes, and gets back the
/// value of the `remaining` modules (built-in and other user modules) if they define it; a
/// key changed since is kept. Without a shared layer there is nothing to do.
pub fn removal(module: &Mapping, remaining: &Mapping, shared: Option<&Mapping>) -> Removal {
    let mut out = Removal::default();
    let Some(shared) = shared else { return out };
    for (key, value) in module {
        match shared.get(key) {
            None => {}
            Some(now) if now != value => out.kept.push(key.clone()),
            Some(_) => match remaining.get(key) {
                // The others give the same value (the api version): nothing changes.
                Some(before) if before == value => {}
                Some(before) => {
                    out.set.insert(key.clone(), before.clone());
                }
                None => out.removed.push(key.clone()),
            },
        }
    }
    out
}

/// What `install` did.
#[derive(Debug)]
pub struct Installed {
    pub info: ModuleInfo,
    /// An earlier install of the same name was replaced.
    pub replaced: bool,
    /// The keys that went to the shared config (the module's, and the fallbacks of keys an
    /// earlier version had and this one has not).
    pub set: Mapping,
    /// The keys of an earlier version that were removed.
    pub removed: Vec<String>,
    pub written: shared::Written,
}

/// Installs `source` as `<cache-dir>/modules/<name>`, replacing an install of the same name,
/// and puts its keys in the shared config. Nothing changes when any step fails.
pub async fn install(ctx: &Context, source: &Source) -> anyhow::Result<Installed> {
    let dir = ctx.paths.user_modules_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let _lock = lock(&dir)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".install-{}.", source.name))
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a temp folder in `{}`", dir.display()))?;
    fetch(ctx, source, staging.path())?;
    let files = validate(staging.path()).map_err(|e| {
        // Name the files as the user knows them, not by the temp folder.
        let e = e.replace(&staging.path().display().to_string(), &source.describe());
        anyhow::anyhow!("refusing to install `{}`: {e}", source.describe())
    })?;
    let mut new = Mapping::new();
    for f in files {
        new.extend(f.mapping);
    }
    std::fs::write(staging.path().join(SOURCE_FILE), format!("{}\n", source.describe()))
        .context("cannot record the module's source")?;

    let target = dir.join(&source.name);
    let old = target.is_dir().then(|| folder_mapping(&target).0);
    let current = ctx.config()?.mapping;
    check_fits(&current, old.as_ref(), &new)
        .map_err(|e| anyhow::anyhow!("refusing to install `{}`: {e}", source.describe()))?;
    let shared_before = config::shared_layer(&ctx.paths)?;

    // Swap: the old install goes aside, the new one comes in; both renames stay in `dir`.
    let aside = dir.join(format!(".replaced-{}.{}", source.name, std::process::id()));
    if old.is_some() {
        std::fs::rename(&target, &aside)
            .with_context(|| format!("cannot move the installed `{}` aside", target.display()))?;
    }
    let staged = staging.keep();
    let swapped = std::fs::rename(&staged, &target)
        .with_context(|| format!("cannot move the module into `{}`", target.display()));
    let result = async {
        swapped?;
        // Keys an earlier version had and this one has not leave as on uninstall.
        let gone: Mapping = old
            .iter()
            .flatten()
            .filter(|(k, _)| !new.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let remaining = config::load_modules(&ctx.paths).0.mapping;
        let plan = removal(&gone, &remaining, shared_before.as_ref());
        let mut set = plan.set;
        set.extend(new.clone());
        let written = edit::apply(&ctx.paths, &set, &plan.removed)
            .await
            .with_context(|| format!("cannot put the keys of `{}` in the shared config", source.name))?;
        anyhow::Ok((set, plan.removed, written))
    }
    .await;
    match result {
        Ok((set, removed, written)) => {
            if old.is_some() {
                remove_quietly(&aside);
            }
            Ok(Installed {
                info: info(&source.name, &target, Some(source.describe()), &new),
                replaced: old.is_some(),
                set,
                removed,
                written,
            })
        }
        Err(e) => {
            // Undo the swap: the new folder goes, the old one comes back.
            if target.exists() && target != aside {
                remove_quietly(&target);
            }
            remove_quietly(&staged);
            if old.is_some() {
                let _ = std::fs::rename(&aside, &target);
            }
            Err(e)
        }
    }
}

/// The module's keys must fit the config's tree: none may be a value where the config has a
/// section, or lie below a value.
fn check_fits(current: &Mapping, old: Option<&Mapping>, new: &Mapping) -> Result<(), String> {
    let mut merged = current.clone();
    if let Some(old) = old {
        merged.retain(|k, _| !old.contains_key(k));
    }
    for (k, v) in new {
        merged.insert(k.clone(), v.clone());
    }
    mapping::unflatten(&merged)
        .map(|_| ())
        .map_err(|e| format!("its keys clash with the config: {e}"))
}

/// Copies or clones the module into `into` (an empty folder).
fn fetch(ctx: &Context, source: &Source, into: &Path) -> anyhow::Result<()> {
    match &source.origin {
        Origin::Folder(from) => {
            if into.starts_with(from) {
                bail!(
                    "cannot install `{}`: it holds the modules folder `{}` itself",
                    from.display(),
                    ctx.paths.user_modules_dir().display()
                );
            }
            copy_tree(from, into).with_context(|| format!("cannot copy `{}`", from.display()))
        }
        Origin::Git(url) => {
            let script = format!(
                "git clone --quiet --depth 1 -- {} {}",
                quote(url),
                quote(&into.display().to_string())
            );
            ctx.shell(format!("clone of module `{}`", source.name), script)
                .env("GIT_TERMINAL_PROMPT", "0")
                .timeout(std::time::Duration::from_secs(600))
                .run()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("cannot clone `{url}` (is `git` installed, and the URL right?)"))?;
            Ok(())
        }
    }
}

/// Copies the folder `from` into `to`: files (with their permissions), folders, symlinks as
/// symlinks. A `.git` folder is left behind.
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    let walker = walkdir::WalkDir::new(from)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || e.file_name() != ".git");
    for entry in walker {
        let entry = entry?;
        let rel = entry.path().strip_prefix(from).expect("below the root");
        let dest = to.join(rel);
        let ty = entry.file_type();
        if ty.is_dir() {
            std::fs::create_dir_all(&dest).with_context(|| format!("cannot create `{}`", dest.display()))?;
        } else if ty.is_symlink() {
            let link = std::fs::read_link(entry.path())?;
            std::os::unix::fs::symlink(&link, &dest)
                .with_context(|| format!("cannot create the symlink `{}`", dest.display()))?;
        } else {
            std::fs::copy(entry.path(), &dest).with_context(|| format!("cannot copy `{}`", entry.path().display()))?;
        }
    }
    Ok(())
}

/// What `uninstall` did.
#[derive(Debug)]
pub struct Uninstalled {
    pub path: PathBuf,
    pub removal: Removal,
    pub written: shared::Written,
}

/// Removes the installed module `name`: its keys leave the shared config (see [`removal`]),
/// then its folder goes. Nothing changes when the config change fails.
pub async fn uninstall(ctx: &Context, name: &str) -> anyhow::Result<Uninstalled> {
    let dir = ctx.paths.user_modules_dir();
    let installed = installed_names(&dir)?;
    if !installed.iter().any(|n| n == name) {
        bail!(
            "no module `{name}` is installed in `{}` (installed: {})",
            dir.display(),
            if installed.is_empty() {
                "none".to_string()
            } else {
                installed.join(", ")
            }
        );
    }
    let _lock = lock(&dir)?;
    let target = dir.join(name);
    let module = folder_mapping(&target).0;
    // Hidden, the folder no longer counts as a module: what loads now is what remains.
    let aside = dir.join(format!(".uninstall-{name}.{}", std::process::id()));
    std::fs::rename(&target, &aside).with_context(|| format!("cannot move `{}` aside", target.display()))?;
    let result = async {
        let remaining = config::load_modules(&ctx.paths).0.mapping;
        let shared_now = config::shared_layer(&ctx.paths)?;
        let plan = removal(&module, &remaining, shared_now.as_ref());
        let written = edit::apply(&ctx.paths, &plan.set, &plan.removed)
            .await
            .with_context(|| format!("cannot take the keys of `{name}` out of the shared config"))?;
        anyhow::Ok((plan, written))
    }
    .await;
    match result {
        Ok((removal, written)) => {
            std::fs::remove_dir_all(&aside)
                .with_context(|| format!("the keys are gone, but `{}` could not be removed", aside.display()))?;
            Ok(Uninstalled {
                path: target,
                removal,
                written,
            })
        }
        Err(e) => {
            let _ = std::fs::rename(&aside, &target);
            Err(e)
        }
    }
}

/// The shell script that makes the same change on a node (`config set`/`unset` there), for a
/// machine that is not a node itself but knows some.
pub fn cluster_script(set: &Mapping, removed: &[String]) -> String {
    let mut lines: Vec<String> = set
        .iter()
        .map(|(k, v)| {
            format!(
                "raptiformica config set {} {} --json-value >/dev/null",
                quote(k),
                quote(&v.to_string())
            )
        })
        .collect();
    // A key already gone there is what we want; `unset` says so by failing.
    lines.extend(
        removed
            .iter()
            .map(|k| format!("{{ raptiformica config unset {} >/dev/null 2>&1 || true; }}", quote(k))),
    );
    lines.join(" && \\\n")
}

/// Takes the exclusive lock on the modules folder.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file `{}`", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock `{}`", path.display()))?;
    Ok(file)
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("could not remove `{}`: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn git(source: &str) -> Source {
        classify(source, None).unwrap()
    }

    #[test]
    fn user_repo_becomes_a_github_url_and_urls_are_kept() {
        let s = git("vdloo/raptiformica-notify-kodi");
        assert_eq!(
            s.origin,
            Origin::Git("https://github.com/vdloo/raptiformica-notify-kodi".into())
        );
        assert_eq!(s.name, "raptiformica-notify-kodi");
        let s = git("https://example.org/a/b/map.git");
        assert_eq!(s.origin, Origin::Git("https://example.org/a/b/map.git".into()));
        assert_eq!(s.name, "map");
        assert_eq!(git("git@github.com:vdloo/puppetfiles.git").name, "puppetfiles");
        assert_eq!(git("file:///tmp/x/repo.git/").name, "repo");
        assert_eq!(git("host:repo").name, "repo");
    }

    #[test]
    fn an_existing_folder_wins_and_other_shapes_are_refused() {
        let s = classify("a/b", Some(PathBuf::from("/src/a/b"))).unwrap();
        assert_eq!(s.origin, Origin::Folder("/src/a/b".into()));
        assert_eq!(s.name, "b");
        for bad in ["a/b/c", "./x", "nosuch", "../a", "~/a", "/abs/missing"] {
            let err = classify(bad, None).unwrap_err();
            assert!(err.contains("user/repo") && err.contains(bad), "{bad}: {err}");
        }
        assert!(classify("https://h/.hidden", None).unwrap_err().contains("dot"));
        assert!(classify("https://h/var", None).unwrap_err().contains("var"));
    }

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn validation_names_the_malformed_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "good.json", r#"{"raptiformica_api_version": "0.1", "a": 1}"#);
        write(
            d.path(),
            "sub/bad.json",
            "{\"raptiformica_api_version\": \"0.1\",\n \"server\": }",
        );
        let err = validate(d.path()).unwrap_err();
        assert!(err.contains("sub/bad.json") && err.contains("line 2"), "{err}");
        assert!(err.starts_with("malformed module"), "{err}");
    }

    #[test]
    fn validation_wants_a_module_file_and_valid_keys() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "package.json", r#"{"name": "x"}"#);
        assert!(validate(d.path()).unwrap_err().contains("no module file"));
        write(
            d.path(),
            "m.json",
            r#"{"raptiformica_api_version": "0.1", "a": {"..": 1}}"#,
        );
        let err = validate(d.path()).unwrap_err();
        assert!(err.contains("m.json") && err.contains("`..`"), "{err}");
    }

    #[test]
    fn a_module_whose_keys_clash_with_the_tree_does_not_fit() {
        let current = mapping::flatten(&json!({"server": {"headless": {"p": {"bootstrap": "x"}}}}));
        let new = mapping::flatten(&json!({"server": {"headless": "a leaf"}}));
        assert!(check_fits(&current, None, &new).unwrap_err().contains("headless"));
        // What the old version had does not count.
        let old = mapping::flatten(&json!({"server": {"headless": {"p": {"bootstrap": "x"}}}}));
        check_fits(&current, Some(&old), &new).unwrap();
    }

    fn m(v: serde_json::Value) -> Mapping {
        mapping::flatten(&v)
    }

    #[test]
    fn removal_restores_what_remains_drops_the_rest_and_keeps_changed_keys() {
        let module = m(json!({"raptiformica_api_version": "0.1",
            "server": {"headless": {"p": {"bootstrap": "mine"}}, "extra": {"p": {"bootstrap": "e"}}},
            "x": {"changed": "module value"}}));
        let remaining = m(json!({"raptiformica_api_version": "0.1",
            "server": {"headless": {"p": {"bootstrap": "builtin"}}}, "x": {"changed": "builtin"}}));
        let mut shared = module.clone();
        shared.insert("raptiformica/x/changed".into(), json!("set by the user"));
        shared.insert("raptiformica/unrelated".into(), json!(1));
        let r = removal(&module, &remaining, Some(&shared));
        assert_eq!(
            r.set,
            m(json!({"server": {"headless": {"p": {"bootstrap": "builtin"}}}}))
        );
        assert_eq!(r.removed, vec!["raptiformica/server/extra/p/bootstrap".to_string()]);
        assert_eq!(r.kept, vec!["raptiformica/x/changed".to_string()]);
        // No shared layer: nothing to take out.
        assert_eq!(removal(&module, &remaining, None), Removal::default());
    }

    #[test]
    fn info_counts_types_and_hook_handlers() {
        let mapping = m(json!({"raptiformica_api_version": "0.1",
            "server": {"w": {"a": {"bootstrap": "1"}, "b": {"bootstrap": "2"}}},
            "compute": {"box": {"w": {"start_instance": "s", "get_port": "p"}}},
            "platform": {"default": {"hooks": {"after_mesh": {"h1": {"command": "c", "predicate": "p"}, "h2": {"command": "c"}},
                "cluster_change": {"h3": {"command": "c"}}}}}}));
        let i = info("n", Path::new("/m/n"), None, &mapping);
        assert_eq!(i.server_types, vec!["w"]);
        assert_eq!(i.compute_types, vec!["box/w"]);
        assert_eq!(i.hooks, 3);
    }

    #[test]
    fn cluster_script_quotes_keys_and_json_values() {
        let set = m(json!({"a": "it's", "n": 3}));
        let script = cluster_script(&set, &["raptiformica/gone".into()]);
        assert!(
            script.contains(r#"config set 'raptiformica/a' '"it'\''s"' --json-value"#),
            "{script}"
        );
        assert!(
            script.contains("config set 'raptiformica/n' '3' --json-value"),
            "{script}"
        );
        assert!(script.contains("config unset 'raptiformica/gone'"), "{script}");
    }
}
