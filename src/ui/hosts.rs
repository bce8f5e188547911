//! Which `Host` and `Origin` headers the map answers: the guard against DNS rebinding (a name
//! of the attacker's that resolves to this machine: its page would be same-origin with the
//! map) and against cross-site requests (another page's script, or a form, sending the
//! browser's cookie along).
//!
//! A `Host` is accepted when it is an IP literal (`127.0.0.1`, `[::1]`), `localhost`, or a name
//! allowed with `ui --allow-host NAME`, with or without a port; anything else gets 421. A
//! request with an `Origin` whose host and port are not its `Host`'s gets 403.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// A name `--allow-host` accepts: a DNS name (letters, digits, `-`, `.`), lowercased.
pub fn allowed_name(name: &str) -> anyhow::Result<String> {
    let name = name.trim().to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    anyhow::ensure!(
        ok,
        "`--allow-host {name}` is not a host name: give a DNS name only (no port, scheme or \
         path), e.g. `--allow-host map.example.org`"
    );
    Ok(name)
}

/// The host part of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`), or None when
/// it is malformed (a port that is not a number, an unclosed bracket).
fn host_part(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            _ => (v6, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !host.is_empty()).then_some(host)
}

/// Whether the map answers a request with this `Host` header.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if let Some(v6) = host.strip_prefix('[') {
        return host_part(host).is_some() && v6.split_once(']').is_some_and(|(ip, _)| ip.parse::<Ipv6Addr>().is_ok());
    }
    let Some(name) = host_part(host) else {
        return false;
    };
    name.parse::<Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| name.eq_ignore_ascii_case(a))
}

/// Whether an `Origin` header (`scheme://host[:port]`) names the same host and port as the
/// request's `Host` (the scheme's default port written or not). `null` never does.
pub fn origin_matches(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let bare = |a: &str| a.strip_suffix(default).unwrap_or(a).to_ascii_lowercase();
    !authority.contains('/') && bare(authority) == bare(host)
}

/// Why a request's `Host` or `Origin` is refused, as an answer; None when they are fine.
pub fn refusal(host: Option<&str>, origin: Option<&str>, allowed: &[String]) -> Option<Response> {
    let Some(host) = host else {
        return Some((StatusCode::BAD_REQUEST, "one Host header is needed\n").into_response());
    };
    if !host_allowed(host, allowed) {
        return Some(
            (
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this map does not answer for the host `{host}`: open it by IP address or \
                     localhost, or start it with `raptiformica ui --allow-host NAME`\n"
                ),
            )
                .into_response(),
        );
    }
    match origin {
        Some(o) if !origin_matches(o, host) => Some(
            (
                StatusCode::FORBIDDEN,
                format!("a request from another site (Origin `{o}`, not `{host}`) is refused\n"),
            )
                .into_response(),
        ),
        _ => None,
    }
}

/// The middleware: [`refusal`] before anything else (the token check included).
pub(super) async fn check<B>(State(s): State<AppState>, req: Request<B>, next: Next<B>) -> Response {
    // One Host header, as text; two are no answer (which would the browser have meant?).
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().ok(),
        _ => None,
    };
    // An Origin that is not text is not a match either.
    let origin = req.headers().get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"));
    match refusal(host, origin, &s.guard.allowed_hosts) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_localhost_are_answered_other_names_only_when_allowed() {
        let none: &[String] = &[];
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8420",
            "172.18.0.1:80",
            "[::1]",
            "[::1]:8420",
            "[fe80::1]:1",
            "localhost",
            "LocalHost:8420",
        ] {
            assert!(host_allowed(ok, none), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8420",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "localhost.",
            "127.0.0.1:",
            "127.0.0.1:http",
            "127.0.0.1:8420:1",
            "[::1",
            "[::1]8420",
            "[attacker.example]",
            "::1",
            "",
        ] {
            assert!(!host_allowed(bad, none), "{bad}");
        }
        let allowed = vec!["map.example.org".to_string()];
        assert!(host_allowed("map.example.org:8420", &allowed));
        assert!(host_allowed("MAP.example.org", &allowed));
        assert!(!host_allowed("evil.map.example.org", &allowed));
    }

    #[test]
    fn the_origin_must_be_the_host() {
        assert!(origin_matches("http://127.0.0.1:8420", "127.0.0.1:8420"));
        assert!(origin_matches("http://LOCALHOST:8420", "localhost:8420"));
        assert!(origin_matches("http://[::1]:8420", "[::1]:8420"));
        assert!(origin_matches("http://127.0.0.1", "127.0.0.1:80"));
        assert!(origin_matches("https://map.example.org", "map.example.org"));
        assert!(!origin_matches("http://attacker.example", "127.0.0.1:8420"));
        assert!(!origin_matches("http://127.0.0.1:9999", "127.0.0.1:8420"));
        assert!(!origin_matches("http://127.0.0.1", "127.0.0.1:8420"));
        assert!(!origin_matches("null", "127.0.0.1:8420"));
        assert!(!origin_matches("file://127.0.0.1:8420", "127.0.0.1:8420"));
        assert!(!origin_matches("http://127.0.0.1:8420/x", "127.0.0.1:8420"));
    }

    #[test]
    fn allowed_names_are_dns_names() {
        assert_eq!(allowed_name("Map.Example.org").unwrap(), "map.example.org");
        for bad in ["", "map.example.org:8420", "http://map", "a b", "map/x"] {
            let err = allowed_name(bad).unwrap_err().to_string();
            assert!(err.contains("--allow-host"), "{err}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let none: &[String] = &[];
        assert!(refusal(Some("127.0.0.1:1"), None, none).is_none());
        assert!(refusal(Some("127.0.0.1:1"), Some("http://127.0.0.1:1"), none).is_none());
        let status = |r: Option<Response>| r.map(|r| r.status());
        assert_eq!(status(refusal(None, None, none)), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status(refusal(Some("attacker.example:1"), None, none)),
            Some(StatusCode::MISDIRECTED_REQUEST)
        );
        assert_eq!(
            status(refusal(Some("127.0.0.1:1"), Some("http://attacker.example"), none)),
            Some(StatusCode::FORBIDDEN)
        );
    }
}
