//! Module files: discovery and parsing.
//!
//! A module file is any `*.toml` (native) or `*.json` (the original project's format) file
//! below a modules folder that carries a top-level `raptiformica_api_version`. Files without
//! that key are not modules and are passed over; files that fail to parse are skipped with a
//! warning that names them, so one broken plugin never takes the rest down.

use std::path::{Path, PathBuf};

use serde_json::Value;
use walkdir::WalkDir;

use super::mapping::{self, Mapping};

/// The key that marks a file as a raptiformica module.
pub const API_VERSION_KEY: &str = "raptiformica_api_version";

/// One parsed module file.
#[derive(Debug)]
pub struct ModuleFile {
    pub path: PathBuf,
    /// The file's content, flattened under `raptiformica/`.
    pub mapping: Mapping,
}

/// What reading a folder of modules gave: the modules in load order and the warnings for the
/// files that were skipped.
#[derive(Debug, Default)]
pub struct Discovery {
    pub modules: Vec<ModuleFile>,
    pub warnings: Vec<String>,
}

/// Reads every module file below `root`, recursively, in sorted path order (so the override
/// order never depends on the filesystem). Hidden folders (`.git`, `.vagrant`) and the
/// per-instance `var/` folders are not entered. A missing `root` gives nothing.
pub fn discover(root: &Path, found: &mut Discovery) {
    if !root.is_dir() {
        return;
    }
    for entry in walk(root) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                found
                    .warnings
                    .push(format!("skipped part of `{}`: {e}", root.display()));
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        match parse(entry.path()) {
            Ok(Some(module)) => found.modules.push(module),
            Ok(None) => tracing::debug!("`{}` has no `{API_VERSION_KEY}`: not a module", entry.path().display()),
            Err(e) => found.warnings.push(format!("skipped {e}")),
        }
    }
}

/// Every entry below `root` that [`discover`] looks at, in its order.
fn walk(root: &Path) -> impl Iterator<Item = walkdir::Result<walkdir::DirEntry>> {
    WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0 || {
                let name = e.file_name().to_string_lossy();
                !(name.starts_with('.') || (e.file_type().is_dir() && name == "var"))
            }
        })
}

/// Adds what tells one version of the files below `root` from another (each file's path,
/// inode, modification time and length) to `h`: a look at the files' metadata only, for a
/// reader that would otherwise parse every module again to learn that nothing changed.
pub fn stamp(root: &Path, h: &mut impl std::hash::Hasher) {
    use std::hash::Hash as _;
    for entry in walk(root).flatten() {
        let Ok(m) = entry.metadata() else { continue };
        if m.is_file() {
            (entry.path(), super::cache::stamp_of(&m)).hash(h);
        }
    }
}

/// Parses one file. `Ok(None)` when it is not a module (wrong extension, or no version key);
/// `Err` with a message naming the file (and, from the parser, the line) when it should be a
/// module but does not parse.
pub fn parse(path: &Path) -> Result<Option<ModuleFile>, String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    if ext != "json" && ext != "toml" {
        return Ok(None);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return Err(format!("module `{}`: cannot read it: {e}", path.display())),
    };
    let parsed: Result<Value, String> = if ext == "json" {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str::<toml::Table>(&text)
            .map_err(|e| e.to_string().trim_end().to_string())
            .and_then(|t| serde_json::to_value(t).map_err(|e| e.to_string()))
    };
    let document = match parsed {
        Ok(d) => d,
        // A JSON/TOML file that does not parse may not be a module at all (a package.json
        // with a comment, a Cargo.toml being edited); only warn when it looks like one.
        Err(e) if text.contains(API_VERSION_KEY) => {
            return Err(format!("malformed module `{}`: {e}", path.display()));
        }
        Err(e) => {
            tracing::debug!("`{}` does not parse ({e}); not a module", path.display());
            return Ok(None);
        }
    };
    let Some(object) = document.as_object() else {
        return Ok(None);
    };
    if !object.contains_key(API_VERSION_KEY) {
        // Named as the original project names its modules: surely meant as one.
        if path.file_stem().is_some_and(|s| s == "raptiformica") {
            let line = if ext == "json" {
                format!("\"{API_VERSION_KEY}\": \"0.1\"")
            } else {
                format!("{API_VERSION_KEY} = \"0.1\"")
            };
            return Err(format!(
                "module `{}`: it has no `{API_VERSION_KEY}`, which marks a file as a module; add `{line}` at its top level",
                path.display()
            ));
        }
        return Ok(None);
    }
    Ok(Some(ModuleFile {
        path: path.to_path_buf(),
        mapping: mapping::flatten(&document),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn finds_json_and_toml_recursively_in_sorted_order_and_skips_the_rest() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "b/raptiformica.json",
            r#"{"raptiformica_api_version": "0.1", "server": {"x": {"p": {"bootstrap": "j"}}}}"#,
        );
        write(
            d.path(),
            "a/mod.toml",
            "raptiformica_api_version = \"0.1\"\n[server.x.p]\nbootstrap = \"t\"\n",
        );
        write(d.path(), "c/package.json", r#"{"name": "not a module"}"#);
        write(d.path(), "c/notes.txt", "raptiformica_api_version");
        write(d.path(), ".git/x.json", r#"{"raptiformica_api_version": "0.1"}"#);
        write(
            d.path(),
            "d/broken.json",
            r#"{"raptiformica_api_version": "0.1", "server": "#,
        );
        let mut found = Discovery::default();
        discover(d.path(), &mut found);
        let names: Vec<_> = found
            .modules
            .iter()
            .map(|m| m.path.strip_prefix(d.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            vec![PathBuf::from("a/mod.toml"), PathBuf::from("b/raptiformica.json")]
        );
        assert_eq!(
            found.modules[0].mapping["raptiformica/server/x/p/bootstrap"],
            json!("t")
        );
        assert_eq!(found.warnings.len(), 1);
        assert!(found.warnings[0].contains("broken.json"), "{:?}", found.warnings);
    }

    #[test]
    fn a_module_file_without_the_version_key_is_named_with_the_fix() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "m/raptiformica.json",
            r#"{"state": {"acc": {"apply": "true"}}}"#,
        );
        write(d.path(), "t/raptiformica.toml", "[state.acc]\napply = \"true\"\n");
        write(d.path(), "o/other.json", r#"{"state": 1}"#);
        let mut found = Discovery::default();
        discover(d.path(), &mut found);
        assert!(found.modules.is_empty());
        assert_eq!(found.warnings.len(), 2, "{:?}", found.warnings);
        assert!(
            found.warnings[0].contains("m/raptiformica.json"),
            "{:?}",
            found.warnings
        );
        assert!(found.warnings[0].contains(r#"add `"raptiformica_api_version": "0.1"`"#));
        assert!(found.warnings[1].contains(r#"add `raptiformica_api_version = "0.1"`"#));
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "m.toml", "raptiformica_api_version = \"0.1\"\n[server\n");
        let err = parse(&d.path().join("m.toml")).unwrap_err();
        assert!(err.contains("m.toml") && err.contains("line 2"), "{err}");
    }
}
