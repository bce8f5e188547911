//! The house stays a house: the folders of `src/` are floors, and a room imports only from the
//! floors below it (so there is no import circle between rooms); processes start only in
//! `sys/process.rs`; a runtime is built and blocked on only at the command line's entry.
//! Read from the source as text, test modules left out.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::harness::root;

/// The floors, bottom up.
const FLOORS: [&str; 14] = [
    "sys",
    "consensus",
    "config",
    "modules",
    "mesh",
    "remote",
    "provision",
    "compute",
    "deploy",
    "node",
    "cluster",
    "agent",
    "ui",
    "cli",
];

/// Every source file below `src/` with its code before the first test module, comments out.
fn sources() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root().join("src")).into_iter().flatten() {
        if e.path().extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: String = code
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            out.push((e.path().to_path_buf(), code));
        }
    }
    out
}

/// The top-level room of a file (`src/config/edit.rs` -> `config`).
fn room(path: &Path) -> String {
    let rel = path.strip_prefix(root().join("src")).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// The rooms `code` names through `crate::ROOM`.
fn imports(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(i, _)| {
            code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn no_room_imports_from_a_floor_above() {
    let mut wrong = Vec::new();
    for (path, code) in sources() {
        let from = room(&path);
        if from == "lib" || from == "main" {
            continue;
        }
        let floor = FLOORS.iter().position(|f| *f == from).unwrap_or_else(|| {
            panic!(
                "{} is in no floor: add `{from}` to FLOORS and the README's Layout",
                path.display()
            )
        });
        for to in imports(&code) {
            match FLOORS.iter().position(|f| *f == to) {
                Some(other) if other > floor => {
                    wrong.push(format!("{} ({from}) imports {to}, a floor above", path.display()))
                }
                Some(_) => {}
                None => wrong.push(format!("{} imports `crate::{to}`, which is not a room", path.display())),
            }
        }
    }
    assert!(wrong.is_empty(), "arrows that run up:\n{}", wrong.join("\n"));
}

#[test]
fn processes_start_in_one_place_and_runtimes_at_the_entry() {
    let mut wrong = Vec::new();
    for (path, code) in sources() {
        let rel = path.strip_prefix(root()).unwrap().display().to_string();
        if code.contains("Command::new") && rel != "src/sys/process.rs" {
            wrong.push(format!("{rel} starts a process (use crate::sys::process)"));
        }
        let entry = rel == "src/main.rs" || rel.starts_with("src/cli/");
        let runtime = [
            "block_on",
            "Runtime::new",
            "Builder::new_current_thread",
            "Builder::new_multi_thread",
        ];
        if !entry && runtime.iter().any(|r| code.contains(r)) {
            wrong.push(format!("{rel} builds a runtime or blocks on one (only src/cli/ may)"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
