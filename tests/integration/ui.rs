//! The web map (issue 12) in a real browser: Debian's chromium, headless, driven over the
//! DevTools protocol. On a 3-node cluster the rendered page lists the three nodes with their
//! roles; after `docker rm -f` of one node the same page (no reload) shows it failed; a
//! screenshot is kept in `target/test-artifacts/ui-map.png`. The gossip key is in no answer;
//! on a non-loopback address a request without the token gets 401.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{count, docker, running_nodes, sh, wait_until};
use crate::docker::DockerTest;
use crate::harness::{root, text};

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl` a URL: (HTTP status, body).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = text(&cmd.output().expect("curl runs").stdout);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A headless chromium showing one page, and a DevTools connection to that page.
struct Browser {
    _child: Killed,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<TcpStream>,
    next_id: u64,
}

impl Browser {
    fn open(url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts (Debian package chromium; runtests.sh installs it)");
        let child = Killed(child);
        let page_ws = wait_until(Duration::from_secs(30), || {
            let (code, body) = get(&format!("http://127.0.0.1:{port}/json/list"), None);
            code == 200
                && serde_json::from_str::<Vec<Value>>(&body)
                    .ok()
                    .is_some_and(|l| l.iter().any(|t| t["type"] == "page"))
        });
        assert!(page_ws.is_some(), "chromium's DevTools did not answer");
        let (_, body) = get(&format!("http://127.0.0.1:{port}/json/list"), None);
        let targets: Vec<Value> = serde_json::from_str(&body).unwrap();
        let ws_url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).expect("DevTools websocket");
        Self {
            _child: child,
            _profile: profile,
            ws,
            next_id: 1,
        }
    }

    /// Calls a DevTools method; its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(tungstenite::Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .unwrap();
        loop {
            let msg = self.ws.read().expect("a DevTools reply");
            if let Ok(v) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("{}"))
                && v["id"] == id
            {
                return v["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        )["result"]["value"]
            .clone()
    }

    fn text(&mut self) -> String {
        self.eval("document.body ? document.body.innerText : ''")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn node_ids(env: &crate::harness::TestEnv) -> Vec<String> {
    crate::cluster::members(env)
        .iter()
        .filter_map(|m| m["node"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[cfg_attr(
    no_browser,
    ignore = "needs chromium (Debian package; runtests.sh installs it) and a Docker engine"
)]
fn the_map_shows_the_nodes_and_a_failed_one_live_and_guards_its_secrets() {
    let Some(env) = DockerTest::start() else {
        return;
    };
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some());
    let ids = node_ids(&env);
    assert_eq!(ids.len(), 3);
    let containers = running_nodes(&env);
    let gossip = sh(
        &containers[0],
        "raptiformica config get --show-secrets raptiformica/meshnet/consul/password",
    )
    .trim_matches('"')
    .to_string();
    assert!(gossip.len() > 10);

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let ui = Killed(
        env.cmd()
            .args(["ui", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listed = wait_until(Duration::from_secs(60), || {
        let (code, body) = get(&format!("{base}/api/members"), None);
        code == 200 && ids.iter().all(|id| body.contains(id.as_str()))
    });
    assert!(
        listed.is_some(),
        "/api/members: {:?}",
        get(&format!("{base}/api/members"), None)
    );
    for path in [
        "/",
        "/api/members",
        "/api/overlay",
        "/api/events",
        "/api/config",
        "/api/state",
    ] {
        let (code, body) = get(&format!("{base}{path}"), None);
        assert_eq!(code, 200, "{path}");
        assert!(!body.contains(&gossip), "the gossip key is served at {path}");
        if !matches!(path, "/api/config" | "/api/state") {
            // Nor its mask, where no config is shown (as the acceptance check reads it).
            assert!(!body.contains("<secret>"), "{path} holds `<secret>`");
        }
    }

    // A shared key written on a node reaches the map's config (kept between views, read
    // again only when the KV's index moves).
    sh(
        &containers[1],
        "raptiformica config set raptiformica/test/ui_probe seen-by-the-map",
    );
    let shown = wait_until(Duration::from_secs(20), || {
        get(&format!("{base}/api/config"), None).1.contains("seen-by-the-map")
    });
    assert!(
        shown.is_some(),
        "/api/config: {}",
        get(&format!("{base}/api/config"), None).1
    );

    let mut browser = Browser::open(&format!("{base}/"));
    let shown = wait_until(Duration::from_secs(30), || {
        let t = browser.text();
        ids.iter().all(|id| t.contains(id.as_str())) && t.contains("server")
    });
    assert!(shown.is_some(), "the page shows: {}", browser.text());

    // One node dies; the open page shows it failed without a reload.
    // The node the map is answered through dies: the map must go through another one.
    let (_, state) = get(&format!("{base}/api/state"), None);
    let state: Value = serde_json::from_str(&state).unwrap();
    let through = state["through"].as_str().unwrap_or_default().to_string();
    let victim_id = ids
        .iter()
        .find(|id| through.contains(id.as_str()))
        .unwrap_or_else(|| panic!("answered through no known node: {through:?}"))
        .clone();
    let host = state["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node"] == victim_id.as_str())
        .and_then(|m| m["host"].as_str())
        .unwrap()
        .to_string();
    let victim = containers
        .iter()
        .find(|c| {
            let ip = docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                c,
            ]);
            text(&ip.stdout).trim() == host
        })
        .unwrap_or_else(|| panic!("no container at {host}"))
        .clone();
    browser.eval("window.__raptiformica_no_reload = 1");
    docker(&["rm", "-f", &victim]);
    let started = Instant::now();
    let failed = wait_until(Duration::from_secs(90), || {
        let status = browser.eval(&format!(
            "(document.querySelector('tr[data-node=\"{victim_id}\"]') || {{dataset: {{}}}}).dataset.status || ''"
        ));
        status.as_str() == Some("failed")
    });
    assert!(
        failed.is_some(),
        "after {:?} the page shows: {}",
        started.elapsed(),
        browser.text()
    );
    assert_eq!(
        browser.eval("window.__raptiformica_no_reload"),
        json!(1),
        "the page was not reloaded"
    );

    let shot = browser.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().expect("a screenshot"));
    let artifacts = root().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("ui-map.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    drop(browser);
    drop(ui);

    // Not loopback: a token is needed.
    let gateway = text(
        &docker(&[
            "network",
            "inspect",
            "raptiformica",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .stdout,
    )
    .trim()
    .to_string();
    let token_file = env.write("ui.token", "0123456789abcdef0123456789abcdef\n");
    let listen = format!("{gateway}:{port}");
    let _ui = Killed(
        env.cmd()
            .args(["ui", "--listen", &listen, "--token-file", token_file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{listen}/api/members");
    assert!(wait_until(Duration::from_secs(20), || get(&url, None).0 == 401).is_some());
    assert_eq!(get(&format!("http://{listen}/"), None).0, 401);
    assert_eq!(get(&url, Some("wrong-token-wrong-token")).0, 401);
    // With the token: 200 once the first view is gathered (503 until then).
    let token = Some("0123456789abcdef0123456789abcdef");
    let served = wait_until(Duration::from_secs(60), || get(&url, token).0 == 200);
    let (code, body) = get(&url, token);
    assert!(served.is_some(), "{code}: {body}");
    assert!(!body.contains(&gossip));
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The ui command's own errors, with no cluster needed.
#[test]
fn ui_refuses_a_short_token_file_and_a_busy_address() {
    let env = crate::harness::TestEnv::new();
    let short = env.write("short.token", "abc\n");
    let err = env.fails(&["ui", "--listen", "0.0.0.0:0", "--token-file", short.to_str().unwrap()]);
    assert!(err.contains("shorter than 16"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let err = env.fails(&["ui", "--listen", &addr]);
    assert!(err.contains("cannot listen on"), "{err}");
}
