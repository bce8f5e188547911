//! Checking an inventory's entries: every problem found at once, one line each, with what to
//! write instead (a misspelt field gets a guess).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::*;

/// The problems found so far, each keyed by the entry it is about, so that they are listed in
/// file order whichever check found them.
#[derive(Default)]
pub(super) struct Problems(Vec<(Option<usize>, String)>);

impl Problems {
    /// A problem with the file as a whole (listed first).
    pub(super) fn file(&mut self, message: String) {
        self.0.push((None, message));
    }

    /// A problem with entry `i` (0-based).
    pub(super) fn entry(&mut self, i: usize, message: String) {
        self.0.push((Some(i), message));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_lines(mut self) -> Vec<String> {
        self.0.sort_by_key(|(at, _)| *at);
        self.0.into_iter().map(|(_, message)| message).collect()
    }
}

/// Checks every entry, filling `problems`; the entries are only meaningful when it stays empty.
pub(super) fn check(items: &[Value], problems: &mut Problems) -> Vec<Entry> {
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
pub(super) fn check_entry(i: usize, item: &Value, problems: &mut Problems) -> (Entry, Option<String>) {
    let mut entry = Entry {
        dst: String::new(),
        port: DEFAULT_PORT,
        via: None,
        user: None,
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
    match fields.get("user") {
        None => {}
        Some(Value::String(u)) if crate::config::known::check_user(u).is_ok() => entry.user = Some(u.clone()),
        Some(other) => problems.entry(
            i,
            format!("{name}: \"user\" must be a user name (letters, digits, _ - .) who may sudo there, found {other}"),
        ),
    }
    unknown_fields(i, &name, fields, problems);
    (entry, via)
}

/// One line per field that is not `dst`, `port`, `via` or `user`, with a guess at the intended one.
pub(super) fn unknown_fields(i: usize, name: &str, fields: &Map<String, Value>, problems: &mut Problems) {
    for key in fields.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        let guess = guess_field(key)
            .map(|f| format!("did you mean \"{f}\"? "))
            .unwrap_or_default();
        problems.entry(
            i,
            format!(
                "{name}: unknown field \"{}\"; {guess}the fields are \"dst\", \"port\", \"via\" and \"user\"",
                key.escape_debug()
            ),
        );
    }
}

/// A port as a number or a string of digits ("2222", as the original's example has it).
pub(super) fn parse_port(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|&p| p != 0)
}

/// `a, b and c`.
pub(super) fn list(items: &[String], and: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

/// `entry 2 (1.2.3.4)`, or `entry 2` while the dst is unknown.
pub(super) fn label(i: usize, dst: &str) -> String {
    match dst.is_empty() {
        true => format!("entry {}", i + 1),
        false => format!("entry {} ({dst})", i + 1),
    }
}

pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The field an unknown one was probably meant to be: a typo (one letter off, or the right
/// letters in the wrong order) or a common other name.
pub(super) fn guess_field(key: &str) -> Option<&'static str> {
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
        "username" | "login" | "ssh_user" => Some("user"),
        _ => None,
    })
}

/// Edit distance (insert, delete, substitute).
pub(super) fn distance(a: &str, b: &str) -> usize {
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
