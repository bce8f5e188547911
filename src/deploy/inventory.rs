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

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The SSH port when an entry names none.
pub const DEFAULT_PORT: u16 = 22;

/// The fields an entry may have.
const FIELDS: [&str; 3] = ["dst", "port", "via"];

/// One host to slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The address or hostname to SSH to (an IPv6 literal without brackets).
    pub dst: String,
    pub port: u16,
    /// The index (into [`Inventory::entries`]) of the entry to jump through, if any.
    pub via: Option<usize>,
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

/// The problems found so far, each keyed by the entry it is about, so that they are listed in
/// file order whichever check found them.
#[derive(Default)]
struct Problems(Vec<(Option<usize>, String)>);

impl Problems {
    /// A problem with the file as a whole (listed first).
    fn file(&mut self, message: String) {
        self.0.push((None, message));
    }

    /// A problem with entry `i` (0-based).
    fn entry(&mut self, i: usize, message: String) {
        self.0.push((Some(i), message));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_lines(mut self) -> Vec<String> {
        self.0.sort_by_key(|(at, _)| *at);
        self.0.into_iter().map(|(_, message)| message).collect()
    }
}

/// Checks every entry, filling `problems`; the entries are only meaningful when it stays empty.
fn check(items: &[Value], problems: &mut Problems) -> Vec<Entry> {
    if items.is_empty() && problems.is_empty() {
        problems.file("no hosts; add one per host, like {\"dst\": \"1.2.3.4\"} or a [[host]] table with dst".into());
    }
    let mut entries = Vec::with_capacity(items.len());
    let mut vias: Vec<Option<String>> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (entry, via) = check_entry(i, item, problems);
        entries.push(entry);
        vias.push(via);
    }
    // Duplicates: one line per later copy, naming the first.
    let mut seen: HashMap<(String, u16), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate().filter(|(_, e)| !e.dst.is_empty()) {
        if let Some(&first) = seen.get(&(host_key(&e.dst), e.port)) {
            problems.entry(
                i,
                format!(
                    "{}: the same dst and port as entry {}; remove one of them",
                    label(i, &e.dst),
                    first + 1
                ),
            );
        } else {
            seen.insert((host_key(&e.dst), e.port), i);
        }
    }
    for (i, via) in vias.iter().enumerate() {
        let Some(via) = via else { continue };
        match resolve(via, &entries) {
            Ok(j) if j == i => problems.entry(
                i,
                format!(
                    "{}: \"via\" names the entry itself; remove \"via\", or name the host to jump through",
                    label(i, &entries[i].dst)
                ),
            ),
            Ok(j) => entries[i].via = Some(j),
            Err(why) => problems.entry(
                i,
                format!(
                    "{}: \"via\" \"{}\" {why}",
                    label(i, &entries[i].dst),
                    via.escape_debug()
                ),
            ),
        }
    }
    for cycle in cycles(&entries) {
        let path: Vec<String> = cycle.iter().map(|&i| label(i, &entries[i].dst)).collect();
        problems.entry(
            cycle[0],
            format!(
                "{} → entry {}: the \"via\" hosts form a loop, so none of them can be reached first; \
             remove \"via\" from one of them",
                path.join(" → "),
                cycle[0] + 1
            ),
        );
    }
    entries
}

/// Checks one entry's fields; returns the entry (empty `dst` when unusable) and its raw `via`.
fn check_entry(i: usize, item: &Value, problems: &mut Problems) -> (Entry, Option<String>) {
    let mut entry = Entry {
        dst: String::new(),
        port: DEFAULT_PORT,
        via: None,
    };
    let Value::Object(fields) = item else {
        problems.entry(
            i,
            format!(
                "entry {}: expected an object like {{\"dst\": \"1.2.3.4\"}}, found {}",
                i + 1,
                kind(item)
            ),
        );
        return (entry, None);
    };
    match fields.get("dst") {
        None => problems.entry(
            i,
            format!(
                "entry {}: no \"dst\" (the host to slave); add its address or hostname as \"dst\"",
                i + 1
            ),
        ),
        Some(Value::String(s)) if s.is_empty() => problems.entry(
            i,
            format!(
                "entry {}: \"dst\" is empty; give the address or hostname to slave",
                i + 1
            ),
        ),
        Some(Value::String(s)) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => problems.entry(
            i,
            format!(
                "entry {} (\"{}\"): \"dst\" has whitespace or a control character; give the bare address or hostname",
                i + 1,
                s.escape_debug()
            ),
        ),
        // `[v6]` is how a v6 address is written next to a port; ssh wants it bare.
        Some(Value::String(s)) => {
            entry.dst = s
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(s)
                .into()
        }
        Some(other) => problems.entry(
            i,
            format!(
                "entry {}: \"dst\" must be a string like \"1.2.3.4\", found {}",
                i + 1,
                kind(other)
            ),
        ),
    }
    let name = label(i, &entry.dst);
    if let Some(port) = fields.get("port") {
        match parse_port(port) {
            Some(p) => entry.port = p,
            None => problems.entry(
                i,
                format!("{name}: port {port} is not a port number; use 1 to 65535, or leave it out for {DEFAULT_PORT}"),
            ),
        }
    }
    let via = match fields.get("via") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            problems.entry(
                i,
                format!(
                    "{name}: \"via\" must be the dst of another entry (or \"dst:port\"), found {}",
                    kind(other)
                ),
            );
            None
        }
    };
    unknown_fields(i, &name, fields, problems);
    (entry, via)
}

/// One line per field that is not `dst`, `port` or `via`, with a guess at the intended one.
fn unknown_fields(i: usize, name: &str, fields: &Map<String, Value>, problems: &mut Problems) {
    for key in fields.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        let guess = guess_field(key)
            .map(|f| format!("did you mean \"{f}\"? "))
            .unwrap_or_default();
        problems.entry(
            i,
            format!(
                "{name}: unknown field \"{}\"; {guess}the fields are \"dst\", \"port\" and \"via\"",
                key.escape_debug()
            ),
        );
    }
}

/// A port as a number or a string of digits ("2222", as the original's example has it).
fn parse_port(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// The entry a `via` names: an exact `dst` (case-insensitive, brackets ignored), or when none
/// matches, `host:port` / `[v6]:port`, which picks one of several entries with that `dst`.
fn resolve(via: &str, entries: &[Entry]) -> Result<usize, String> {
    let with_dst = |host: &str| -> Vec<usize> {
        let key = host_key(host);
        (0..entries.len())
            .filter(|&j| host_key(&entries[j].dst) == key)
            .collect()
    };
    match with_dst(via).as_slice() {
        [j] => return Ok(*j),
        [] => {}
        several => {
            let mut ports: Vec<String> = Vec::new();
            for &j in several {
                let port = format!("\"{}\"", entries[j]);
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            // Copies of one host and port: the duplicate has its own line, which is the fix.
            if ports.len() == 1 {
                return Ok(several[0]);
            }
            let numbers: Vec<String> = several.iter().map(|&j| (j + 1).to_string()).collect();
            return Err(format!(
                "is ambiguous: entries {} have that dst; name one with its port: {}",
                list(&numbers, "and"),
                list(&ports, "or")
            ));
        }
    }
    if let Some((host, port)) = split_host_port(via)
        && let Some(&j) = with_dst(host).iter().find(|&&j| entries[j].port == port)
    {
        return Ok(j);
    }
    Err("names no entry; it must be the dst of another entry in this file (add an entry for that host)".into())
}

/// `host:port` with a host without colons, or `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => Some((v6, port)),
        None if !host.contains(':') => Some((host, port)),
        None => None,
    }
}

/// The form hosts are compared in: hostnames are case-insensitive, `[::1]` is `::1`.
fn host_key(host: &str) -> String {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.to_ascii_lowercase()
}

/// Every loop of `via`s once, starting from its lowest entry.
fn cycles(entries: &[Entry]) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for start in 0..entries.len() {
        let mut path = vec![start];
        let mut at = start;
        while let Some(next) = entries[at].via {
            // Only report a loop from its lowest member, and stop at loops not through `start`.
            if next < start || path.len() > entries.len() {
                break;
            }
            if next == start {
                found.push(path);
                break;
            }
            path.push(next);
            at = next;
        }
    }
    found
}

/// `a, b and c`.
fn list(items: &[String], and: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

/// `entry 2 (1.2.3.4)`, or `entry 2` while the dst is unknown.
fn label(i: usize, dst: &str) -> String {
    match dst.is_empty() {
        true => format!("entry {}", i + 1),
        false => format!("entry {} ({dst})", i + 1),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
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

/// The field an unknown one was probably meant to be: a typo (one letter off, or the right
/// letters in the wrong order) or a common other name.
fn guess_field(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let sorted = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        c.sort_unstable();
        c
    };
    let typo = FIELDS
        .iter()
        .find(|f| distance(f, &key) <= 1 || sorted(f) == sorted(&key));
    typo.copied().or(match key.as_str() {
        "host" | "hostname" | "address" | "addr" | "ip" => Some("dst"),
        "ssh_port" | "sshport" => Some("port"),
        "jump" | "jumphost" | "jump_host" | "proxy" | "bastion" => Some("via"),
        _ => None,
    })
}

/// Edit distance (insert, delete, substitute).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
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
        }
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
            r#"entry 2 (b): unknown field "vai"; did you mean "via"? the fields are "dst", "port" and "via""#
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
