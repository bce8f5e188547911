//! `raptiformica ui`: the live web map of the cluster. One page (its assets embedded in the
//! binary) that follows a server-sent event stream, and a JSON API beside it for scripts.
//!
//! A collector reaches the cluster's consul as `members` does (the local agent on a node, else
//! an SSH tunnel to a member that sees a leader, another one when that one is lost), gathers
//! the [`view::View`] every [`EVERY`] and hands it to every open page at once. Listening on
//! loopback needs nothing more; on any other address every request must carry the token
//! (`Authorization: Bearer <token>` or `?token=<token>`), else it gets 401.

pub mod view;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::config::context::Context;
use crate::remote::cluster_link::{self, Reached};
use view::View;

/// The page.
const PAGE: &str = include_str!("page.html");
/// How often the view is gathered again.
pub const EVERY: Duration = Duration::from_secs(2);
/// How long gathering one view may take before the node answering is given up for another.
const GATHER_LIMIT: Duration = Duration::from_secs(8);

#[derive(Clone)]
struct AppState {
    view: watch::Receiver<Arc<View>>,
    token: Option<Arc<String>>,
}

/// Whether `addr` is a loopback address (no token needed there).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// A fresh random token (32 hex digits).
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The router: the page, the JSON API and the stream, behind the token check.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/state", get(|s: State<AppState>| async move { answer(&s, json) }))
        .route(
            "/api/members",
            get(|s: State<AppState>| async move { answer(&s, |v| json(&v.members)) }),
        )
        .route(
            "/api/overlay",
            get(|s: State<AppState>| async move { answer(&s, |v| json(&v.overlay)) }),
        )
        .route(
            "/api/events",
            get(|s: State<AppState>| async move { answer(&s, |v| json(&serde_json::json!({"events": v.events}))) }),
        )
        .route(
            "/api/config",
            get(|s: State<AppState>| async move { answer(&s, |v| json(&v.config)) }),
        )
        .route("/api/stream", get(stream))
        .layer(middleware::from_fn_with_state(state.clone(), check_token))
        .with_state(state)
}

/// Serves the map on `listen` until Ctrl-C (or SIGTERM).
pub async fn serve(ctx: Context, listen: SocketAddr, token: Option<String>) -> anyhow::Result<()> {
    let (tx, rx) = watch::channel(Arc::new(View {
        error: Some("reaching the cluster...".into()),
        ..View::default()
    }));
    let collector = tokio::spawn(collect_for_ever(ctx, tx));
    let app = router(AppState {
        view: rx,
        token: token.map(Arc::new),
    });
    let server = axum::Server::try_bind(&listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?
        .serve(app.into_make_service());
    eprintln!("the cluster map is at http://{}/", server.local_addr());
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let result = server.with_graceful_shutdown(stop).await;
    collector.abort();
    result.map_err(|e| anyhow::anyhow!("the web server failed: {e}"))
}

/// Gathers the view every [`EVERY`]; a lost tunnel is replaced by one through another node.
async fn collect_for_ever(ctx: Context, tx: watch::Sender<Arc<View>>) {
    let agent_token = crate::consensus::acl::read_token(&ctx.paths)
        .map(|t| crate::consensus::acl::agent_token(&t).1)
        .unwrap_or_default();
    let mut seen = view::Seen::default();
    let mut reached: Option<Reached> = None;
    let mut shun: HashSet<String> = HashSet::new();
    loop {
        if reached.is_none() {
            match cluster_link::reach_avoiding(&ctx, &shun).await {
                Ok(r) => reached = Some(r),
                Err(e) => stale(&tx, format!("{e:#}")),
            }
        }
        if let Some(r) = &reached {
            // A tunnel whose node died may hang rather than fail: give up on it quickly.
            let gathered = tokio::time::timeout(GATHER_LIMIT, view::collect(r.api(), &agent_token, &mut seen))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {} s", GATHER_LIMIT.as_secs())));
            match gathered {
                Ok(mut v) => {
                    v.through = r.through();
                    let _ = tx.send(Arc::new(v));
                    shun.clear();
                }
                Err(e) => {
                    let through = r.through();
                    stale(&tx, format!("{through} does not answer ({e:#}); trying another node"));
                    let r = reached.take().expect("checked");
                    if let Reached::Tunnel(l) = &r {
                        shun.insert(l.node.clone());
                    }
                    r.close().await;
                    continue;
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Keeps the last view, marked with why it is not fresh.
fn stale(tx: &watch::Sender<Arc<View>>, error: String) {
    let mut v = (**tx.borrow()).clone();
    v.error = Some(error);
    let _ = tx.send(Arc::new(v));
}

/// The API's answer from the current view; 503 (with why) until a first view was gathered, so
/// that a script polling for the API never takes an empty list for the cluster.
fn answer(s: &AppState, f: impl FnOnce(&View) -> Response) -> Response {
    let view = s.view.borrow().clone();
    if view.updated_at == 0 {
        let why = view.error.clone().unwrap_or_else(|| "reaching the cluster...".into());
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            format!("no view of the cluster yet: {why}\n"),
        )
            .into_response();
    }
    f(&view)
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_string(value).expect("serializable"),
    )
        .into_response()
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

/// How many views one stream carries before it ends (the page's EventSource reconnects at
/// once): a stream that never ended would keep a headless browser's virtual time (`chromium
/// --virtual-time-budget`) waiting for ever.
const VIEWS_PER_STREAM: u32 = 2;

/// The views as server-sent events named `state`: the current one at once, then the next one
/// (or none after 15 s), then the stream ends and the page reconnects.
async fn stream(State(s): State<AppState>) -> impl IntoResponse {
    let rx = s.view;
    let events = futures_util::stream::unfold((rx, 0u32), |(mut rx, sent)| async move {
        if sent >= VIEWS_PER_STREAM {
            return None;
        }
        if sent > 0
            && !matches!(
                tokio::time::timeout(Duration::from_secs(15), rx.changed()).await,
                Ok(Ok(()))
            )
        {
            return None;
        }
        let data = serde_json::to_string(&*rx.borrow_and_update().clone()).expect("serializable");
        let event = SseEvent::default()
            .event("state")
            .retry(Duration::from_millis(500))
            .data(data);
        Some((Ok::<_, std::convert::Infallible>(event), (rx, sent + 1)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// 401 for a request without the token, when there is one.
async fn check_token<B>(State(s): State<AppState>, req: Request<B>, next: Next<B>) -> Response {
    let Some(want) = &s.token else {
        return next.run(req).await;
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|p| p.strip_prefix("token="));
    let given = bearer.or(query).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), want.as_bytes()) {
        next.run(req).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a token is needed: open the address `raptiformica ui` printed, with ?token=...\n",
        )
            .into_response()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        let t = new_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn only_loopback_listens_without_a_token() {
        assert!(is_loopback(&"127.0.0.1:8080".parse().unwrap()));
        assert!(is_loopback(&"[::1]:8080".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:8080".parse().unwrap()));
        assert!(!is_loopback(&"172.18.0.1:8080".parse().unwrap()));
    }
}
