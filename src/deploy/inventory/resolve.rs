//! Which entry a `via` names, and the loops jump hosts may form.

use super::*;

/// The entry a `via` names: an exact `dst` (case-insensitive, brackets ignored), or when none
/// matches, `host:port` / `[v6]:port`, which picks one of several entries with that `dst`.
pub(super) fn resolve(via: &str, entries: &[Entry]) -> Result<usize, String> {
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
pub(super) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => Some((v6, port)),
        None if !host.contains(':') => Some((host, port)),
        None => None,
    }
}

/// The form hosts are compared in: hostnames are case-insensitive, `[::1]` is `::1`.
pub(super) fn host_key(host: &str) -> String {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.to_ascii_lowercase()
}

/// Every loop of `via`s once, starting from its lowest entry.
pub(super) fn cycles(entries: &[Entry]) -> Vec<Vec<usize>> {
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
