//! The known data keys whose values a machine acts on, and their checks: an address that ends
//! up on an `ssh` command line, a port, a listen address. A bad value is refused where it is
//! written (`config set`, a module's keys, a node's own entry) and ignored with a warning where
//! it is read (it may have reached consul's KV some other way).
//!
//! A host is a DNS name (letters, digits, `-`, `.`; no label starting or ending with `-`) or an
//! IPv4 or IPv6 address: never anything with whitespace, quotes or a leading `-`, so it can
//! never become an option of `ssh` or a second word of a shell line.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::mapping::{Mapping, PREFIX};

/// Checks `host`: a DNS name or an IP address.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let why = if host.is_empty() {
        Some("it is empty")
    } else if host.len() > 253 {
        Some("it is longer than 253 characters")
    } else if host.starts_with('-') {
        Some("it starts with `-` (it would be read as an option)")
    } else if !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        Some("a host name holds only letters, digits, `-` and `.` (or it is an IP address)")
    } else if host
        .trim_end_matches('.')
        .split('.')
        .any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
    {
        Some("a label of it is empty, longer than 63 characters, or starts or ends with `-`")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("`{host}` is not a host name or an IP address: {why}")),
        None => Ok(()),
    }
}

/// A TCP port, 1-65535, from a string or a number.
pub fn parse_port(value: &Value) -> Result<u16, String> {
    let text = text_of(value);
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 && text.trim() == text => Ok(p),
        _ => Err(format!("`{text}` is not a port (a number from 1 to 65535)")),
    }
}

/// One hop of a jump chain, `host:port` (`[v6]:port` for an IPv6 address).
pub fn parse_hop(hop: &str) -> Result<(String, u16), String> {
    let bad = || format!("`{hop}` is not a jump host `HOST:PORT`");
    let (host, port) = if let Some(rest) = hop.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (h, p)
    } else {
        hop.rsplit_once(':').ok_or_else(bad)?
    };
    check_host(host)?;
    let port = parse_port(&Value::from(port)).map_err(|e| format!("{}: {e}", bad()))?;
    Ok((host.to_string(), port))
}

/// A jump chain as recorded (`ssh_via`: comma-separated hops, outermost first).
pub fn check_via(value: &str) -> Result<(), String> {
    for hop in value.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        parse_hop(hop)?;
    }
    Ok(())
}

/// A name shown to people (a machine's back-end, instance, holder): 1 to 128 letters, digits
/// and `.`, `_`, `-`, `/`, `:`, `@`, nothing a terminal would take as a command.
pub fn check_label(text: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@');
    if text.is_empty() || text.len() > 128 || !text.chars().all(plain) {
        return Err(format!(
            "`{}` is not a plain name (1 to 128 letters, digits and . _ - / : @)",
            text.escape_debug()
        ));
    }
    Ok(())
}

/// A login name (`ssh_user`): 1 to 32 letters, digits, `_`, `-`, `.`, not starting with `-`.
pub fn check_user(text: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.is_empty() || text.len() > 32 || text.starts_with('-') || !text.chars().all(plain) {
        return Err(format!("`{}` is not a user name", text.escape_debug()));
    }
    Ok(())
}

/// The key types a workstation's key may have (`workstations/<name>/ssh_key`).
const PUBLIC_KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// An SSH public key as a workstation registers it: `type base64` and nothing else (no
/// options, no second line), since every node authorizes it for root.
pub fn check_public_key(text: &str) -> Result<(), String> {
    let mut words = text.split(' ');
    let (Some(kind), Some(blob), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!(
            "`{}` is not `TYPE BASE64` (one public key, no options)",
            text.escape_debug()
        ));
    };
    if !PUBLIC_KEY_TYPES.contains(&kind) {
        return Err(format!("`{}` is not an SSH public key type", kind.escape_debug()));
    }
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if blob.len() < 16 || blob.len() > 4096 || !blob.chars().all(base64) {
        return Err("the key is not base64 of 16 to 4096 characters".into());
    }
    Ok(())
}

/// A value's check: why it is refused, if it is.
type Check = fn(&Value) -> Result<(), String>;

/// The check for `key`, if it is a known data key.
fn check_for(key: &str) -> Option<Check> {
    let rest = key.strip_prefix(PREFIX)?.strip_prefix('/')?;
    if let Some(neighbour) = rest.strip_prefix("meshnet/neighbours/") {
        let (_, field) = neighbour.split_once('/')?;
        return match field {
            "host" => Some(|v| check_host(&text_of(v))),
            "ssh_port" | "yggdrasil_port" => Some(|v| parse_port(v).map(drop)),
            "ssh_via" => Some(|v| check_via(&text_of(v))),
            "ssh_user" => Some(|v| check_user(&text_of(v))),
            "compute_type" | "instance" | "held_by" => Some(|v| check_label(&text_of(v))),
            _ => None,
        };
    }
    if let Some(workstation) = rest.strip_prefix("workstations/") {
        let (name, field) = workstation.split_once('/')?;
        if check_label(name).is_err() {
            return Some(|_| Err("a workstation's name is 1 to 128 letters, digits and . _ - : @".into()));
        }
        return match field {
            "ssh_key" => Some(|v| check_public_key(&text_of(v))),
            "host" => Some(|v| check_label(&text_of(v))),
            _ => None,
        };
    }
    match rest {
        "meshnet/yggdrasil/port" => Some(|v| parse_port(v).map(drop)),
        "agent/ui_listen" => Some(|v| check_ui_listen(&text_of(v))),
        _ => None,
    }
}

/// The node agent's web map listens on loopback only (elsewhere, `raptiformica ui --listen`).
pub fn check_ui_listen(text: &str) -> Result<(), String> {
    parse_ui_listen(text).map(|_| ())
}

/// The node agent's web map address: a loopback address and a port.
pub fn parse_ui_listen(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() && addr.port() > 0 => Ok(addr),
        _ => Err(format!(
            "`{text}` is not a loopback address and port such as 127.0.0.1:8420"
        )),
    }
}

/// Checks `value` for `key` when `key` is a known data key; other keys pass.
pub fn check(key: &str, value: &Value) -> Result<(), String> {
    match check_for(key) {
        Some(check) => check(value).map_err(|e| format!("`{key}`: {e}")),
        None => Ok(()),
    }
}

/// Checks every key of `entries` (a write of several keys).
pub fn check_all(entries: &Mapping) -> Result<(), String> {
    entries.iter().try_for_each(|(k, v)| check(k, v))
}

/// Logs `message` as a warning the first time this process sees it (a bad value read on every
/// round of the agent is named once, not every few seconds).
pub fn warn_once(message: String) {
    static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.get_or_insert_default().insert(message.clone()) {
        tracing::warn!("{message}");
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_are_names_or_addresses_and_nothing_else() {
        for ok in [
            "10.0.0.1",
            "fe80::1",
            "::1",
            "example.org",
            "node-1",
            "localhost",
            "a.b.c.",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1 -oProxyCommand='touch /tmp/x'",
            "-oProxyCommand=x",
            "a b",
            "a;b",
            "$(id)",
            "`id`",
            "host'",
            "-host",
            "host-.org",
            "a..b",
            "[::1]",
            "root@host",
        ] {
            let err = check_host(bad).unwrap_err();
            assert!(err.contains("not a host name"), "{bad}: {err}");
        }
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port(&json!("22")), Ok(22));
        assert_eq!(parse_port(&json!(2222)), Ok(2222));
        for bad in [
            json!("abc"),
            json!("70000"),
            json!("0"),
            json!(-1),
            json!(" 22"),
            json!("22 -oX"),
        ] {
            assert!(parse_port(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jump_chains_are_checked_hop_by_hop() {
        assert!(check_via("10.0.0.1:22,[fe80::1]:2222, jump.example:22").is_ok());
        assert!(check_via("").is_ok());
        for bad in [
            "10.0.0.1",
            "10.0.0.1:0",
            "-oX=y:22",
            "a b:22",
            "[nothost]:22",
            "h:22 -oX",
        ] {
            assert!(check_via(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_hop("[::1]:22"), Ok(("::1".into(), 22)));
    }

    #[test]
    fn known_keys_are_checked_and_others_pass() {
        let k = |s: &str| format!("{PREFIX}/{s}");
        let bad = [
            (
                "meshnet/neighbours/x/host",
                json!("127.0.0.1 -oProxyCommand=touch /tmp/x"),
            ),
            ("meshnet/neighbours/x/host", json!("-oProxyCommand=x")),
            ("meshnet/neighbours/x/ssh_port", json!("abc")),
            ("meshnet/neighbours/x/ssh_port", json!("70000")),
            ("meshnet/neighbours/x/yggdrasil_port", json!("0")),
            ("meshnet/neighbours/x/ssh_via", json!("h:22 -oX")),
            ("meshnet/yggdrasil/port", json!("x")),
            ("agent/ui_listen", json!("0.0.0.0:8420")),
            ("agent/ui_listen", json!("nonsense")),
            ("meshnet/neighbours/x/held_by", json!("\u{1b}]0;title\u{7}")),
            ("meshnet/neighbours/x/compute_type", json!("docker headless")),
            ("meshnet/neighbours/x/instance", json!("")),
            (
                "workstations/w/ssh_key",
                json!("command=\"id\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"),
            ),
            (
                "workstations/w/ssh_key",
                json!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\nssh-rsa AAAAB3NzaC1yc2EAAAA"),
            ),
            ("workstations/w/ssh_key", json!("ssh-dss AAAAB3NzaC1kc3MAAACBA")),
            ("workstations/w/ssh_key", json!("ssh-ed25519 AAAA$(id)AAAAAAAAAAAAAAAA")),
            ("workstations/w/host", json!("a b")),
        ];
        for (key, value) in bad {
            let err = check(&k(key), &value).unwrap_err();
            assert!(err.contains(&k(key)), "{err}");
        }
        for (key, value) in [
            ("meshnet/neighbours/x/held_by", json!("raptiformica-ab12")),
            ("meshnet/neighbours/x/compute_type", json!("docker/headless")),
            ("meshnet/neighbours/x/host", json!("10.1.2.3")),
            ("meshnet/neighbours/x/ssh_port", json!("2222")),
            ("meshnet/yggdrasil/port", json!(7443)),
            ("agent/ui_listen", json!("127.0.0.1:8420")),
            ("meshnet/neighbours/x/ssh_host_key", json!("ssh-ed25519 AAAA")),
            ("platform/default/hooks/h/x/command", json!("anything; goes")),
            (
                "workstations/laptop-1a2b3c/ssh_key",
                json!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbc+/="),
            ),
            ("workstations/laptop-1a2b3c/host", json!("laptop")),
        ] {
            assert_eq!(check(&k(key), &value), Ok(()), "{key}");
        }
    }
}
