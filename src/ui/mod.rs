//! `raptiformica ui`: the live web map of the cluster. One page (its assets embedded in the
//! binary) that follows a server-sent event stream, and a JSON API beside it for scripts.
//!
//! A collector reaches the cluster's consul as `members` does (the local agent on a node, else
//! an SSH tunnel to a member that sees a leader, another one when that one is lost), gathers
//! the [`view::View`] every [`EVERY`] and hands it to every open page at once.
//!
//! Every request passes two guards, on every address, loopback included: [`hosts`] (its
//! `Host` is an IP literal, `localhost` or an allowed name, its `Origin`, if any, is that
//! host: else 421/403), then [`auth`] (the session cookie a login at `/login?token=...` set,
//! or `Authorization: Bearer <token>`: else 401).

pub mod auth;
pub mod hosts;
pub mod token;
pub mod view;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::middleware;
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
    guard: Arc<auth::Guard>,
}

/// How a map is guarded and announced.
pub struct Options {
    /// The token a browser logs in with (a script sends it as a bearer).
    pub token: String,
    /// Host names answered besides IP literals and `localhost` (`--allow-host`).
    pub allow_hosts: Vec<String>,
    /// Print the login URL, with the token, on stderr: for who started `ui` in a terminal,
    /// never for the agent (whose stderr is a log).
    pub print_login: bool,
}

/// The router: the page, the JSON API and the stream behind the login; the login; all of it
/// behind the Host/Origin check.
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
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .route("/login", get(auth::login))
        .layer(middleware::from_fn_with_state(state.clone(), hosts::check))
        .with_state(state)
}

/// Serves the map on `listen` until Ctrl-C (or SIGTERM).
pub async fn serve(ctx: Context, listen: SocketAddr, options: Options) -> anyhow::Result<()> {
    let listener =
        std::net::TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let (tx, rx) = watch::channel(Arc::new(View {
        error: Some("reaching the cluster...".into()),
        ..View::default()
    }));
    let app = router(AppState {
        view: rx,
        guard: Arc::new(auth::Guard::new(
            &options.token,
            bound.port(),
            options.allow_hosts.clone(),
        )),
    });
    let server = axum::Server::from_tcp(listener)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?
        .serve(app.into_make_service());
    announce(bound, &options);
    let collector = tokio::spawn(collect_for_ever(ctx, tx));
    let result = server
        .with_graceful_shutdown(crate::sys::signals::stop_requested())
        .await;
    collector.abort();
    result.map_err(|e| anyhow::anyhow!("the web server failed: {e}"))
}

/// Where the map is; the login URL (the token's one appearance) only if asked.
fn announce(bound: SocketAddr, options: &Options) {
    if options.print_login {
        eprintln!(
            "the cluster map listens on http://{bound}/\n\
             log in once in your browser with this URL (it holds the token: keep it to yourself):\n  {}",
            token::login_url(bound, &options.token)
        );
    } else {
        eprintln!("the cluster map listens on http://{bound}/ (its login URL: `raptiformica ui --login-url`)");
    }
}

/// The node's own map (`raptiformica/agent/ui_listen`), served beside its agent, for root
/// only: its token is in `<cache-dir>/ui_token` (0600, made once), never printed (`ui
/// --login-url` shows the URL). Returns at once when `ui_listen` is not set.
pub async fn serve_node_map(ctx: Context) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let Some(addr) = crate::agent::settings::ui_listen(&config.mapping)? else {
        return Ok(());
    };
    let file = token::node_file(&ctx.paths);
    let token = tokio::task::spawn_blocking(move || token::ensure(&file)).await??;
    let options = Options {
        token,
        allow_hosts: Vec::new(),
        print_login: false,
    };
    serve(ctx, addr, options)
        .await
        .map_err(|e| e.context(format!("the web map on {addr} stopped")))
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

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    /// The router over a gathered view, served on a loopback port; its address.
    async fn map() -> SocketAddr {
        let (tx, rx) = watch::channel(Arc::new(View {
            updated_at: 1,
            ..View::default()
        }));
        std::mem::forget(tx);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(AppState {
            view: rx,
            guard: Arc::new(auth::Guard::new(TOKEN, addr.port(), vec!["map.example.org".into()])),
        });
        let server = axum::Server::from_tcp(listener).unwrap().serve(app.into_make_service());
        tokio::spawn(server);
        addr
    }

    /// GET `path` with `headers`: the status and the `Set-Cookie` header.
    async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut req = client.get(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let cookie = resp
            .headers()
            .get(header::SET_COOKIE)
            .map(|v| v.to_str().unwrap().to_string());
        (resp.status().as_u16(), cookie)
    }

    #[tokio::test]
    async fn loopback_needs_the_login_cookie_or_the_bearer_token() {
        let addr = map().await;
        let bearer = format!("Bearer {TOKEN}");
        for path in ["/", "/api/members", "/api/state", "/api/config", "/api/stream"] {
            assert_eq!(get(addr, path, &[]).await.0, 401, "{path}");
        }
        assert_eq!(get(addr, &format!("/api/members?token={TOKEN}"), &[]).await.0, 401);
        assert_eq!(
            get(addr, "/api/members", &[("authorization", "Bearer nope")]).await.0,
            401
        );
        assert_eq!(get(addr, "/api/members", &[("authorization", &bearer)]).await.0, 200);

        assert_eq!(get(addr, "/login?token=nope", &[]).await, (401, None));
        assert_eq!(get(addr, "/login", &[]).await, (401, None));
        let (code, cookie) = get(addr, &format!("/login?token={TOKEN}"), &[]).await;
        assert_eq!(code, 303);
        let cookie = cookie.expect("the login sets a cookie");
        let pair = cookie.split(';').next().unwrap();
        assert!(
            pair.starts_with(&format!("raptiformica_ui_{}=", addr.port())),
            "{cookie}"
        );
        assert!(!cookie.contains(TOKEN), "the cookie is not the token: {cookie}");
        for path in ["/", "/api/members", "/api/state"] {
            assert_eq!(get(addr, path, &[("cookie", pair)]).await.0, 200, "{path}");
        }
    }

    #[tokio::test]
    async fn a_foreign_host_or_origin_is_refused_even_with_the_token() {
        let addr = map().await;
        let bearer = format!("Bearer {TOKEN}");
        let port = addr.port();
        let with = |host: String| [("authorization", bearer.clone()), ("host", host)];
        let code = |h: [(&'static str, String); 2]| async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            get(addr, "/api/members", &h).await.0
        };
        assert_eq!(code(with(format!("attacker.example:{port}"))).await, 421);
        assert_eq!(code(with("attacker.example".into())).await, 421);
        assert_eq!(
            get(addr, &format!("/login?token={TOKEN}"), &[("host", "attacker.example")]).await,
            (421, None),
            "no login under a foreign name"
        );
        let two = [
            ("authorization", bearer.as_str()),
            ("host", "127.0.0.1"),
            ("host", "attacker.example"),
        ];
        assert_eq!(get(addr, "/api/members", &two).await.0, 400, "two Host headers");
        assert_eq!(code(with(format!("localhost:{port}"))).await, 200);
        assert_eq!(code(with(format!("map.example.org:{port}"))).await, 200);
        assert_eq!(code(with(format!("[::1]:{port}"))).await, 200);

        let origin = |o: &'static str| {
            let bearer = bearer.clone();
            async move {
                get(addr, "/api/members", &[("authorization", &bearer), ("origin", o)])
                    .await
                    .0
            }
        };
        assert_eq!(origin("http://attacker.example").await, 403);
        assert_eq!(origin("null").await, 403);
        let same = format!("http://127.0.0.1:{port}");
        assert_eq!(
            get(addr, "/api/members", &[("authorization", &bearer), ("origin", &same)])
                .await
                .0,
            200
        );
    }
}
