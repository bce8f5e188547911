//! Who may read the map: whoever shows the token, on every address (loopback included: any
//! local user, or a page in the browser, could read it otherwise).
//!
//! A browser logs in once at `/login?token=TOKEN` (the URL `ui` prints), which sets a cookie
//! and sends it on to `/`; a script sends `Authorization: Bearer TOKEN`. The cookie holds the
//! session secret, SHA-256 of the token with a label, not the token: what the browser keeps
//! on disk opens no login URL, and a map started again with the same `--token-file` keeps its
//! browsers logged in, while a fresh token logs every one out. The cookie is named after the
//! port (cookies do not tell ports apart: two maps on one host keep their own), HttpOnly (no
//! script reads it), SameSite=Strict (no other site's page sends it), without `Secure` (the map
//! speaks plain http). Every comparison is of two digests, in constant time.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use super::AppState;
use crate::sys::digest::hex;

/// What the guard checks requests against.
pub struct Guard {
    /// The session secret: [`session_of`] the token.
    session: [u8; 32],
    /// The cookie's name (after the port).
    cookie: String,
    /// The names `--allow-host` allowed besides IP literals and `localhost`.
    pub allowed_hosts: Vec<String>,
}

/// The session secret a token gives.
fn session_of(token: &str) -> [u8; 32] {
    Sha256::digest(format!("raptiformica ui session: {token}").as_bytes()).into()
}

/// 64 hex digits as 32 bytes (the cookie's value), or None.
fn unhex(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Whether two digests are equal, in time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Guard {
    pub fn new(token: &str, port: u16, allowed_hosts: Vec<String>) -> Self {
        Self {
            session: session_of(token),
            cookie: format!("raptiformica_ui_{port}"),
            allowed_hosts,
        }
    }

    fn is_token(&self, given: &str) -> bool {
        same(&session_of(given), &self.session)
    }

    /// The `Set-Cookie` value of a login.
    fn set_cookie(&self) -> String {
        format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            self.cookie,
            hex(&self.session)
        )
    }

    /// Whether the request carries the session cookie or the token as a bearer.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok()?.strip_prefix("Bearer "))
            .any(|t| self.is_token(t.trim()));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(name, _)| *name == self.cookie)
            .filter_map(|(_, value)| unhex(value))
            .any(|value| same(&value, &self.session));
        bearer || cookie
    }
}

/// What a request without the cookie or the token gets.
fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(
            "{why}: open the login URL `raptiformica ui` printed (http://ADDR:PORT/login?token=...; \
             for a node's own map, `raptiformica ui --login-url` as root prints it), or send \
             `Authorization: Bearer TOKEN`\n"
        ),
    )
        .into_response()
}

/// The middleware: 401 unless [`Guard::admits`] the request.
pub(super) async fn require<B>(State(s): State<AppState>, req: Request<B>, next: Next<B>) -> Response {
    if s.guard.admits(req.headers()) {
        next.run(req).await
    } else {
        unauthorized("not logged in")
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Login {
    token: Option<String>,
}

/// `/login?token=TOKEN`: the session cookie and a redirect (303) to the map, or 401.
pub(super) async fn login(State(s): State<AppState>, Query(q): Query<Login>) -> Response {
    match q.token {
        Some(t) if s.guard.is_token(&t) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, s.guard.set_cookie()),
                (header::LOCATION, "/".to_string()),
                (header::CACHE_CONTROL, "no-store".to_string()),
                // The address with the token is not sent on as a referrer.
                (header::REFERRER_POLICY, "no-referrer".to_string()),
            ],
        )
            .into_response(),
        Some(_) => unauthorized("this is not the map's token"),
        None => unauthorized("no token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_or_the_bearer_token_admits_nothing_else_does() {
        let token = "0123456789abcdef0123456789abcdef";
        let g = Guard::new(token, 8420, Vec::new());
        let session = hex(&session_of(token));
        assert_ne!(session, token, "the cookie is not the token");
        assert!(g.admits(&headers(&[(header::AUTHORIZATION, &format!("Bearer {token}"))])));
        assert!(g.admits(&headers(&[(
            header::COOKIE,
            &format!("other=1; raptiformica_ui_8420={session}; x=y")
        )])));
        for refused in [
            headers(&[]),
            headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef0123456789abcdee")]),
            headers(&[(header::AUTHORIZATION, &format!("Basic {token}"))]),
            headers(&[(header::AUTHORIZATION, &format!("Bearer {session}"))]),
            headers(&[(header::COOKIE, &format!("raptiformica_ui_8421={session}"))]),
            headers(&[(header::COOKIE, &format!("raptiformica_ui_8420={token}"))]),
            headers(&[(header::COOKIE, "raptiformica_ui_8420=")]),
        ] {
            assert!(!g.admits(&refused), "{refused:?}");
        }
    }

    #[test]
    fn the_login_cookie_is_http_only_strict_and_not_secure() {
        let c = Guard::new("0123456789abcdef", 1234, Vec::new()).set_cookie();
        assert!(c.starts_with("raptiformica_ui_1234="), "{c}");
        assert!(c.contains("; HttpOnly") && c.contains("; SameSite=Strict") && c.contains("; Path=/"));
        assert!(!c.contains("Secure"), "a Secure cookie is never sent back over http");
    }

    #[test]
    fn digests_compare_whole() {
        let (a, b) = (session_of("a"), session_of("b"));
        assert!(same(&a, &a));
        assert!(!same(&a, &b));
    }
}
