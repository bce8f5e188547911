//! The deploy inventory: the hosts `raptiformica deploy` slaves, and through which host each
//! one is reached.
//!
//! Two formats: the original's JSON list of `{"dst", "port", "via"}` objects (spec §7.1) and
//! native TOML `[[host]]` tables with the same fields. The whole file is checked before any
//! host is touched, and every problem is reported at once, one line each, naming the entry
//! (1-based, as a person counts them) and what to write instead. The original only checked
//! `dst` and `via == dst`; this also catches typos in field names, bad ports, duplicates,
//! ambiguous jump hosts and loops of any length.
//!
//! Pure apart from [`Inventory::load`] reading the file; the `deploy` command does the rest.

mod check;
mod resolve;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use check::*;
use resolve::*;

/// The SSH port when an entry names none.
pub const DEFAULT_PORT: u16 = 22;

/// The fields an entry may have.
const FIELDS: [&str; 4] = ["dst", "port", "via", "user"];

/// One host to slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The address or hostname to SSH to (an IPv6 literal without brackets).
    pub dst: String,
    pub port: u16,
    /// The index (into [`Inventory::entries`]) of the entry to jump through, if any.
    pub via: Option<usize>,
    /// Who logs in there (`user`; None: root): a user other than root runs what needs root
    /// through sudo, as `slave user@host --sudo`.
    pub user: Option<String>,
}

impl fmt::Display for Entry {
    /// `host:port`, with IPv6 literals in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dst.contains(':') {
            true => write!(f, "[{}]:{}", self.dst, self.port),
            false => write!(f, "{}:{}", self.dst, self.port),
        }
    }
}

/// A checked inventory: every `via` names another entry and there are no loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub entries: Vec<Entry>,
}

/// The file format of an inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

impl Format {
    /// The format named by the file's extension (`.json`, `.toml`), if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
        })
    }
}

/// Why an inventory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read the inventory `{}`; check the path", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the inventory `{}` is not valid {format}: {message} at line {line}, column {column}; fix the syntax there",
        file.display())]
    Syntax {
        file: PathBuf,
        format: Format,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the inventory `{}` is neither JSON ({json}) nor TOML ({toml}); name it `.json` or `.toml` \
        to get only the error that applies", file.display())]
    UnknownFormat { file: PathBuf, json: String, toml: String },
    #[error("the inventory `{}` has {} problem{}:\n  {}", file.display(), problems.len(),
        if problems.len() == 1 { "" } else { "s" }, problems.join("\n  "))]
    Invalid { file: PathBuf, problems: Vec<String> },
}

impl Inventory {
    /// Reads, parses and checks the inventory at `path`; the format comes from the extension,
    /// and for any other name JSON is tried, then TOML.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        if let Some(format) = Format::from_path(path) {
            return Inventory::parse(&text, format, path);
        }
        match Inventory::parse(&text, Format::Json, path) {
            Err(json @ InventoryError::Syntax { .. }) => match Inventory::parse(&text, Format::Toml, path) {
                Err(toml @ InventoryError::Syntax { .. }) => Err(InventoryError::UnknownFormat {
                    file: path.to_path_buf(),
                    json: json.syntax_detail(),
                    toml: toml.syntax_detail(),
                }),
                // It parsed as TOML, so that is its format, valid or not.
                toml => toml,
            },
            json => json,
        }
    }

    /// Parses and checks an inventory's text; `file` is only used in messages.
    pub fn parse(text: &str, format: Format, file: &Path) -> Result<Inventory, InventoryError> {
        let syntax = |line, column, message: &str| InventoryError::Syntax {
            file: file.to_path_buf(),
            format,
            line,
            column,
            message: message.to_string(),
        };
        let mut problems = Problems::default();
        let items = match format {
            Format::Json => {
                let doc: Value = serde_json::from_str(text).map_err(|e| {
                    // serde_json's message ends with its own " at line L column C".
                    let message = e.to_string();
                    let message = message.split(" at line ").next().unwrap_or_default().to_string();
                    syntax(e.line(), e.column(), &message)
                })?;
                json_items(doc, &mut problems)
            }
            Format::Toml => {
                let doc: toml::Table = toml::from_str(text).map_err(|e| {
                    let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
                    syntax(line, column, e.message().trim_end())
                })?;
                toml_items(doc, &mut problems)
            }
        };
        let entries = check(&items, &mut problems);
        match problems.is_empty() {
            true => Ok(Inventory { entries }),
            false => Err(InventoryError::Invalid {
                file: file.to_path_buf(),
                problems: problems.into_lines(),
            }),
        }
    }

    /// The jump chain to reach entry `i`, outermost first (`[j]` for `i` via `j`; `[k, j]` when
    /// `j` is itself reached via `k`).
    pub fn jumps(&self, i: usize) -> Vec<usize> {
        let mut chain = Vec::new();
        let mut at = i;
        // The bound only matters for an inventory built by hand with a loop in it.
        while let Some(j) = self.entries.get(at).and_then(|e| e.via) {
            if chain.len() >= self.entries.len() {
                break;
            }
            chain.push(j);
            at = j;
        }
        chain.reverse();
        chain
    }

    /// The entries this machine connects to itself: the first hop of every host (the host, or
    /// the outermost jump host on its way), each once, in file order.
    pub fn first_hops(&self) -> Vec<usize> {
        let mut hops: Vec<usize> = (0..self.entries.len())
            .map(|i| self.jumps(i).first().copied().unwrap_or(i))
            .collect();
        hops.sort_unstable();
        hops.dedup();
        hops
    }

    /// The entries in waves, in file order within each: wave 0 needs no jump host, and every
    /// entry comes in a later wave than the hosts it jumps through, so those are slaved first.
    pub fn waves(&self) -> Vec<Vec<usize>> {
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.entries.len() {
            let depth = self.jumps(i).len();
            if waves.len() <= depth {
                waves.resize(depth + 1, Vec::new());
            }
            waves[depth].push(i);
        }
        waves
    }
}

impl InventoryError {
    /// `message at line L, column C` of a syntax error.
    fn syntax_detail(&self) -> String {
        match self {
            InventoryError::Syntax {
                line, column, message, ..
            } => format!("{message} at line {line}, column {column}"),
            other => other.to_string(),
        }
    }
}

/// The entries of a JSON inventory: the top level must be a list.
fn json_items(doc: Value, problems: &mut Problems) -> Vec<Value> {
    match doc {
        Value::Array(items) => items,
        other => {
            problems.file(format!(
                "expected a list of hosts like [{{\"dst\": \"1.2.3.4\"}}, ...], found {}",
                kind(&other)
            ));
            Vec::new()
        }
    }
}

/// The entries of a TOML inventory: `[[host]]` tables and nothing else at the top level.
fn toml_items(mut doc: toml::Table, problems: &mut Problems) -> Vec<Value> {
    let hosts = doc.remove("host");
    for key in doc.keys() {
        problems.file(format!(
            "unknown top-level key \"{key}\"; each host goes in a [[host]] table"
        ));
    }
    match hosts.map(serde_json::to_value) {
        None => Vec::new(),
        Some(Ok(Value::Array(items))) => items,
        Some(Ok(other)) => {
            problems.file(format!(
                "\"host\" must be [[host]] tables (note the double brackets), found {}",
                kind(&other)
            ));
            Vec::new()
        }
        Some(Err(e)) => {
            problems.file(format!("\"host\" cannot be read: {e}"));
            Vec::new()
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "hosts.json";

    fn json(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(text, Format::Json, Path::new(FILE))
    }

    fn toml(text: &str) -> Result<Inventory, InventoryError> {
        Inventory::parse(text, Format::Toml, Path::new("hosts.toml"))
    }

    /// The problems of an invalid inventory, and the whole message (which must name the file).
    fn problems(result: Result<Inventory, InventoryError>) -> Vec<String> {
        match result {
            Err(e @ InventoryError::Invalid { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("hosts.json") || message.contains("hosts.toml"),
                    "{message}"
                );
                let InventoryError::Invalid { problems, .. } = e else {
                    unreachable!()
                };
                problems
            }
            other => panic!("expected an invalid inventory, got {other:?}"),
        }
    }

    /// The one problem of an invalid inventory.
    fn problem(result: Result<Inventory, InventoryError>) -> String {
        let p = problems(result);
        assert_eq!(p.len(), 1, "{p:#?}");
        p.into_iter().next().unwrap()
    }

    fn entry(dst: &str, port: u16, via: Option<usize>) -> Entry {
        Entry {
            dst: dst.into(),
            port,
            via,
            user: None,
        }
    }

    #[test]
    fn a_user_logs_in_through_sudo_and_a_bad_one_is_named() {
        let inv = Inventory::parse(
            r#"[{"dst": "a", "user": "ops"}, {"dst": "b"}]"#,
            Format::Json,
            Path::new("i.json"),
        )
        .unwrap();
        assert_eq!(inv.entries[0].user.as_deref(), Some("ops"));
        assert_eq!(inv.entries[1].user, None);
        let e = Inventory::parse(r#"[{"dst": "a", "user": "-o x"}]"#, Format::Json, Path::new("i.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 1 (a): \"user\" must be a user name"), "{e}");
        let e = Inventory::parse(
            r#"[{"dst": "a", "username": "ops"}]"#,
            Format::Json,
            Path::new("i.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean \"user\""), "{e}");
    }

    #[test]
    fn the_originals_example() {
        let inv =
            json(r#"[{"dst":"1.2.3.4"},{"dst":"2.3.4.5","port":"2222"},{"dst":"2.3.4.6","via":"2.3.4.5"}]"#).unwrap();
        assert_eq!(
            inv.entries,
            vec![
                entry("1.2.3.4", 22, None),
                entry("2.3.4.5", 2222, None),
                entry("2.3.4.6", 22, Some(1))
            ]
        );
        assert_eq!(inv.waves(), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn toml_hosts_with_number_or_string_ports() {
        let text = "[[host]]\ndst = \"a.example\"\nport = 2222\n\n[[host]]\ndst = \"::1\"\nport = \"23\"\nvia = \"a.example\"\n";
        let inv = toml(text).unwrap();
        assert_eq!(
            inv.entries,
            vec![entry("a.example", 2222, None), entry("::1", 23, Some(0))]
        );
        assert_eq!(inv.entries[1].to_string(), "[::1]:23");
    }

    #[test]
    fn jumps_and_waves_follow_chains_outermost_first() {
        // 3 via 2 via 0; 1 direct.
        let inv = json(r#"[{"dst":"k"},{"dst":"x"},{"dst":"j","via":"k"},{"dst":"h","via":"j"}]"#).unwrap();
        assert_eq!(inv.jumps(0), Vec::<usize>::new());
        assert_eq!(inv.jumps(2), vec![0]);
        assert_eq!(inv.jumps(3), vec![0, 2]);
        assert_eq!(inv.waves(), vec![vec![0, 1], vec![2], vec![3]]);
        // A jump host listed after the hosts behind it still comes first.
        let inv = json(r#"[{"dst":"h","via":"j"},{"dst":"j","via":"k"},{"dst":"k"}]"#).unwrap();
        assert_eq!(inv.jumps(0), vec![2, 1]);
        assert_eq!(inv.waves(), vec![vec![2], vec![1], vec![0]]);
    }

    #[test]
    fn first_hops_are_the_hosts_or_their_outermost_jump_hosts() {
        let inv = json(r#"[{"dst":"h","via":"j"},{"dst":"x"},{"dst":"j","via":"k"},{"dst":"k"}]"#).unwrap();
        assert_eq!(inv.first_hops(), vec![1, 3]);
        let inv = json(r#"[{"dst":"a"},{"dst":"b","port":2222}]"#).unwrap();
        assert_eq!(inv.first_hops(), vec![0, 1]);
    }

    #[test]
    fn not_a_list_or_no_entries() {
        assert!(problem(json(r#"{"dst":"a"}"#)).contains("expected a list of hosts"));
        assert!(problem(json("[]")).contains("no hosts"));
        assert!(problem(toml("")).contains("no hosts"));
        assert!(problem(toml("[host]\ndst = \"a\"\n")).contains("[[host]] tables"));
        assert!(problem(toml("[[hosts]]\ndst = \"a\"\n")).contains("unknown top-level key \"hosts\""));
    }

    #[test]
    fn an_entry_must_be_an_object() {
        let p = problem(json(r#"[{"dst":"a"},"b"]"#));
        assert!(p.starts_with("entry 2: expected an object"), "{p}");
    }

    #[test]
    fn dst_is_required_non_empty_and_bare() {
        assert_eq!(
            problem(json(r#"[{"dst":"a"},{"port":22}]"#)),
            "entry 2: no \"dst\" (the host to slave); add its address or hostname as \"dst\""
        );
        assert!(problem(json(r#"[{"dst":""}]"#)).starts_with("entry 1: \"dst\" is empty"));
        assert!(problem(json(r#"[{"dst":5}]"#)).contains("must be a string"));
        let p = problem(json(r#"[{"dst":"a b"}]"#));
        assert!(p.starts_with(r#"entry 1 ("a b"): "dst" has whitespace"#), "{p}");
        assert!(problem(json(r#"[{"dst":"a\u0007"}]"#)).contains(r#"("a\u{7}")"#));
        // IPv6 literals are fine.
        assert_eq!(json(r#"[{"dst":"fe80::1"}]"#).unwrap().entries[0].dst, "fe80::1");
        assert_eq!(json(r#"[{"dst":"[fe80::1]"}]"#).unwrap().entries[0].dst, "fe80::1");
    }

    #[test]
    fn ports_must_be_1_to_65535() {
        for ok in [r#""22""#, "22", "1", "65535"] {
            assert!(json(&format!(r#"[{{"dst":"a","port":{ok}}}]"#)).is_ok(), "{ok}");
        }
        for bad in [
            r#""abc""#, "0", "70000", "-1", "22.5", r#""""#, r#""+22""#, "null", "true",
        ] {
            let p = problem(json(&format!(r#"[{{"dst":"a","port":{bad}}}]"#)));
            assert!(
                p.starts_with(&format!("entry 1 (a): port {bad} is not a port number")),
                "{p}"
            );
        }
        assert!(problem(toml("[[host]]\ndst = \"a\"\nport = 0\n")).contains("port 0"));
    }

    #[test]
    fn unknown_fields_are_named_with_a_guess() {
        let p = problem(json(r#"[{"dst":"a"},{"dst":"b","vai":"a"}]"#));
        assert_eq!(
            p,
            r#"entry 2 (b): unknown field "vai"; did you mean "via"? the fields are "dst", "port", "via" and "user""#
        );
        assert!(problem(json(r#"[{"dst":"a","host":"b"}]"#)).contains(r#"did you mean "dst"?"#));
        let p = problem(json(r#"[{"dst":"a","colour":"red"}]"#));
        assert!(p.contains(r#""colour""#) && !p.contains("did you mean"), "{p}");
    }

    #[test]
    fn via_must_name_an_entry() {
        let p = problem(json(r#"[{"dst":"a"},{"dst":"b","via":"c"}]"#));
        assert!(p.starts_with(r#"entry 2 (b): "via" "c" names no entry"#), "{p}");
        assert!(problem(json(r#"[{"dst":"a","via":7}]"#)).contains("\"via\" must be"));
        // Hostnames compare case-insensitively, and `[v6]` matches a bare v6 dst.
        assert_eq!(
            json(r#"[{"dst":"A.example"},{"dst":"b","via":"a.EXAMPLE"}]"#)
                .unwrap()
                .entries[1]
                .via,
            Some(0)
        );
        assert_eq!(
            json(r#"[{"dst":"::1"},{"dst":"b","via":"[::1]"}]"#).unwrap().entries[1].via,
            Some(0)
        );
    }

    #[test]
    fn via_to_a_shared_dst_needs_the_port() {
        let text = r#"[{"dst":"a"},{"dst":"a","port":2222},{"dst":"b","via":"a"}]"#;
        let p = problem(json(text));
        assert!(
            p.contains(r#"entry 3 (b): "via" "a" is ambiguous: entries 1 and 2"#),
            "{p}"
        );
        assert!(p.contains(r#""a:22" or "a:2222""#), "{p}");
        let inv = json(&text.replace(r#""via":"a""#, r#""via":"a:2222""#)).unwrap();
        assert_eq!(inv.entries[2].via, Some(1));
        let text = r#"[{"dst":"::1"},{"dst":"::1","port":2222},{"dst":"b","via":"[::1]:22"}]"#;
        assert_eq!(json(text).unwrap().entries[2].via, Some(0));
        assert!(problem(json(&text.replace(":22\"", ":23\""))).contains("names no entry"));
    }

    #[test]
    fn via_may_not_name_the_entry_itself() {
        let p = problem(json(r#"[{"dst":"a","via":"a"}]"#));
        assert!(p.starts_with(r#"entry 1 (a): "via" names the entry itself"#), "{p}");
    }

    #[test]
    fn loops_of_any_length_are_named() {
        let p = problem(json(r#"[{"dst":"a","via":"b"},{"dst":"b","via":"a"}]"#));
        assert!(
            p.starts_with("entry 1 (a) → entry 2 (b) → entry 1: the \"via\" hosts form a loop"),
            "{p}"
        );
        let text = r#"[{"dst":"10.0.0.1","via":"10.0.0.3"},{"dst":"x","via":"10.0.0.1"},
                       {"dst":"10.0.0.3","via":"10.0.0.4"},{"dst":"10.0.0.4","via":"10.0.0.1"}]"#;
        let p = problem(json(text));
        assert!(
            p.starts_with("entry 1 (10.0.0.1) → entry 3 (10.0.0.3) → entry 4 (10.0.0.4) → entry 1:"),
            "{p}"
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let p = problem(json(r#"[{"dst":"a"},{"dst":"b"},{"dst":"A","port":"22"}]"#));
        assert_eq!(p, "entry 3 (A): the same dst and port as entry 1; remove one of them");
        // The same host on another port is another machine (a port forward).
        assert!(json(r#"[{"dst":"a"},{"dst":"a","port":2222}]"#).is_ok());
    }

    #[test]
    fn every_problem_is_reported_one_per_line_in_file_order() {
        let text = r#"[{"port":0},{"dst":"b","vai":"x"},{"dst":"b"},{"dst":"c","via":"nope"},7]"#;
        let message = json(text).unwrap_err().to_string();
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines[0], "the inventory `hosts.json` has 6 problems:", "{message}");
        let expected = [
            "entry 1: no",
            "entry 1: port",
            "entry 2 (b)",
            "entry 3 (b): the same",
            "entry 4 (c)",
            "entry 5",
        ];
        assert_eq!(lines.len(), expected.len() + 1, "{message}");
        for (line, start) in lines[1..].iter().zip(expected) {
            assert!(line.starts_with(&format!("  {start}")), "{message}");
        }
    }

    #[test]
    fn via_to_a_duplicated_host_only_reports_the_duplicate() {
        let p = problem(json(r#"[{"dst":"a"},{"dst":"a"},{"dst":"b","via":"a"}]"#));
        assert!(p.starts_with("entry 2 (a): the same dst and port as entry 1"), "{p}");
    }

    #[test]
    fn syntax_errors_name_the_file_line_and_column() {
        let e = json("[\n  {\"dst\": \"a\",}\n]").unwrap_err();
        assert!(
            matches!(
                e,
                InventoryError::Syntax {
                    line: 2,
                    format: Format::Json,
                    ..
                }
            ),
            "{e:?}"
        );
        let m = e.to_string();
        assert!(
            m.contains("`hosts.json` is not valid JSON") && m.contains("at line 2, column"),
            "{m}"
        );
        let e = toml("[[host]]\ndst = a\n").unwrap_err();
        assert!(matches!(e, InventoryError::Syntax { line: 2, column: 7, .. }), "{e:?}");
        assert!(e.to_string().contains("`hosts.toml` is not valid TOML"), "{e}");
    }

    #[test]
    fn load_picks_the_format_by_extension_or_tries_both() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let toml_text = "[[host]]\ndst = \"a\"\n";
        assert_eq!(Inventory::load(&write("i.toml", toml_text)).unwrap().entries.len(), 1);
        assert_eq!(
            Inventory::load(&write("i.JSON", r#"[{"dst":"a"}]"#))
                .unwrap()
                .entries
                .len(),
            1
        );
        // A TOML file named .json gets the JSON error.
        let e = Inventory::load(&write("t.json", toml_text)).unwrap_err();
        assert!(
            matches!(
                e,
                InventoryError::Syntax {
                    format: Format::Json,
                    ..
                }
            ),
            "{e:?}"
        );
        // Any other name: whichever parses.
        assert_eq!(Inventory::load(&write("hosts", toml_text)).unwrap().entries.len(), 1);
        assert_eq!(
            Inventory::load(&write("hosts.txt", r#"[{"dst":"a"}]"#))
                .unwrap()
                .entries
                .len(),
            1
        );
        let e = Inventory::load(&write("inv", r#"[{"dst":"a","prot":1}]"#)).unwrap_err();
        assert!(
            e.to_string()
                .contains(r#"entry 1 (a): unknown field "prot"; did you mean "port"?"#),
            "{e}"
        );
        let e = Inventory::load(&write("bad", "[{dst = 1")).unwrap_err().to_string();
        assert!(
            e.contains("`") && e.contains("bad` is neither JSON (") && e.contains(") nor TOML ("),
            "{e}"
        );
        let e = Inventory::load(&dir.path().join("missing.json")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read the inventory `") && e.to_string().contains("missing.json"));
    }

    #[test]
    fn hand_built_loops_do_not_hang_jumps() {
        let inv = Inventory {
            entries: vec![entry("a", 22, Some(1)), entry("b", 22, Some(0))],
        };
        assert_eq!(inv.jumps(0).len(), 2);
    }
}
