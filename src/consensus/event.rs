//! Events: consul user events, broadcast to every node or targeted at one, run by handlers
//! from the modules (`platform/<platform>/events/<name>/<handler>/{predicate,command}`).
//!
//! What travels is consul's event with our small header before the user's payload
//! (`raptiformica-event;origin=<node>;server_type=<type>` and a newline), so a handler learns
//! where the event came from and a node can tell an event meant for another server type. An
//! event fired with plain `consul event` has no header and reaches every handler as it is.

use anyhow::bail;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The header's first field.
const MAGIC: &str = "raptiformica-event";

/// How many bytes consul takes for one user event's name, filters and payload together
/// (serf's limit for a user event is 512; some of it goes to the framing).
pub const MAX_EVENT_BYTES: usize = 512;

/// An event as consul's `/v1/event/list` gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawEvent {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub node_filter: String,
    #[serde(rename = "LTime", default)]
    pub ltime: u64,
}

/// An event as handlers see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub name: String,
    /// Lamport time: the cluster's order of events.
    pub ltime: u64,
    /// The node it was fired from (None: fired without our header).
    pub origin: Option<String>,
    /// Only nodes of this server type run it.
    pub server_type: Option<String>,
    /// The node it targets, when it was fired with `--node`.
    pub node: Option<String>,
    #[serde(skip)]
    pub payload: Vec<u8>,
    /// The payload as text, for `event list`.
    #[serde(rename = "payload")]
    pub payload_text: String,
}

impl Event {
    pub fn from_raw(raw: &RawEvent) -> Self {
        let bytes = raw
            .payload
            .as_deref()
            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
            .unwrap_or_default();
        let (header, payload) = split_header(&bytes);
        let field = |name: &str| {
            header.as_ref().and_then(|h| {
                h.split(';')
                    .find_map(|f| f.strip_prefix(&format!("{name}=")))
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            })
        };
        let node = raw
            .node_filter
            .strip_prefix('^')
            .and_then(|f| f.strip_suffix('$'))
            .map(str::to_string);
        Event {
            id: raw.id.clone(),
            name: raw.name.clone(),
            ltime: raw.ltime,
            origin: field("origin"),
            server_type: field("server_type"),
            node,
            payload_text: String::from_utf8_lossy(payload).into_owned(),
            payload: payload.to_vec(),
        }
    }
}

/// The header line (without the magic) and the rest, when `bytes` starts with our header.
fn split_header(bytes: &[u8]) -> (Option<String>, &[u8]) {
    let Some(end) = bytes.iter().position(|b| *b == b'\n') else {
        return (None, bytes);
    };
    match std::str::from_utf8(&bytes[..end]) {
        Ok(line) if line == MAGIC || line.starts_with(&format!("{MAGIC};")) => (
            Some(line[MAGIC.len()..].trim_start_matches(';').to_string()),
            &bytes[end + 1..],
        ),
        _ => (None, bytes),
    }
}

/// The bytes to fire: our header, then the user's payload.
pub fn envelope(origin: Option<&str>, server_type: Option<&str>, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_string();
    if let Some(o) = origin {
        out.push_str(&format!(";origin={o}"));
    }
    if let Some(s) = server_type {
        out.push_str(&format!(";server_type={s}"));
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}

/// An event name consul and our handler keys both take: letters, digits, `-`, `_`, `.`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 128 {
        bail!("an event name has 1 to 128 characters, not {}", name.len());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        bail!("the event name `{name}` holds {c:?}: use letters, digits, `-`, `_` and `.` only");
    }
    if name.starts_with('.') {
        bail!("the event name `{name}` starts with `.`");
    }
    Ok(())
}

/// Refuses an event consul would not carry, before anything is sent.
pub fn check_size(name: &str, node_filter: Option<&str>, bytes: &[u8]) -> anyhow::Result<()> {
    let size = name.len() + node_filter.map_or(0, str::len) + bytes.len();
    // Headroom for serf's framing of the message.
    let limit = MAX_EVENT_BYTES - 64;
    if size > limit {
        bail!(
            "the event is {size} bytes with its name, filter and header; consul carries at most about {limit}: \
             put bigger data in the shared config (`config set`) or a state machine and send its key"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(payload: &[u8], node_filter: &str) -> RawEvent {
        RawEvent {
            id: "e1".into(),
            name: "ping".into(),
            payload: Some(base64::engine::general_purpose::STANDARD.encode(payload)),
            node_filter: node_filter.into(),
            ltime: 7,
        }
    }

    #[test]
    fn the_header_round_trips_and_a_plain_payload_is_left_alone() {
        let bytes = envelope(Some("abc"), Some("headless"), b"hello\nworld");
        let e = Event::from_raw(&raw(&bytes, "^abc$"));
        assert_eq!(e.origin.as_deref(), Some("abc"));
        assert_eq!(e.server_type.as_deref(), Some("headless"));
        assert_eq!(e.node.as_deref(), Some("abc"));
        assert_eq!(e.payload, b"hello\nworld");
        let plain = Event::from_raw(&raw(b"just this\n", ""));
        assert_eq!((plain.origin, plain.node), (None, None));
        assert_eq!(plain.payload, b"just this\n");
        let bare = Event::from_raw(&raw(&envelope(None, None, b""), ""));
        assert_eq!((bare.origin, bare.server_type, bare.payload), (None, None, vec![]));
    }

    #[test]
    fn names_and_sizes_consul_refuses_are_refused_first() {
        assert!(check_name("heartbeat-01.x_y").is_ok());
        for bad in ["", "a b", "a/b", "é", ".hidden", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_size("ping", None, &[0; 100]).is_ok());
        let err = check_size("ping", Some("^n$"), &[0; 500]).unwrap_err().to_string();
        assert!(err.contains("bytes") && err.contains("config set"), "{err}");
    }
}
