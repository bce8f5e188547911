//! The web map (issue 12) in a real browser: Debian's chromium, headless, driven over the
//! DevTools protocol. On a 3-node cluster the browser logs in through the login URL `ui`
//! printed, and the rendered page lists the three nodes with their roles; after `docker rm -f`
//! of one node the same page (no reload) shows it failed; a screenshot is kept in
//! `target/test-artifacts/ui-map.png`. The gossip key is in no answer. Without the cookie or
//! the token a request gets 401, loopback included; a foreign `Host` gets 4xx even with the
//! token. A node's own map (`ui_listen`) opens for root only, through `ui --login-url`.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{count, docker, running_nodes, sh, voters, wait_until};
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
    get_with(url, token, &[])
}

/// `curl` a URL with extra headers (`Name: value`): (HTTP status, body).
fn get_with(url: &str, token: Option<&str>, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "10", "-w", "\n%{http_code}", url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = text(&cmd.output().expect("curl runs").stdout);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The login URL `ui` printed in `log` for the map on `port`, once it is there.
fn login_url_in(log: &Path, port: u16) -> Option<String> {
    let prefix = format!("http://127.0.0.1:{port}/login?token=");
    let text = std::fs::read_to_string(log).ok()?;
    let start = text.find(&prefix)?;
    let url: String = text[start..].chars().take_while(|c| !c.is_whitespace()).collect();
    (url.len() > prefix.len()).then_some(url)
}

/// `ui` with `args`, its stderr in `log`.
fn start_ui(env: &crate::harness::TestEnv, args: &[&str], log: &Path) -> Killed {
    Killed(
        env.cmd()
            .arg("ui")
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
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
    // Every node's agent serves its own map too (the mutable config goes with the slaving).
    env.ok(&["config", "set", "raptiformica/agent/ui_listen", "127.0.0.1:8420"]);
    // The lost node stays `failed` (not evicted, then `left`) while the page is watched, even
    // when a loaded machine notices the loss late.
    env.ok(&["config", "set", "raptiformica/agent/eviction_grace", "600"]);
    env.ok(&["spawn", "--compute-type", "docker", "--count", "3"]);
    assert!(wait_until(Duration::from_secs(90), || count(&env, "alive", None) == 3).is_some());
    // The node killed below must be a voter: a failed non-voter is removed at once (`left`).
    assert!(
        wait_until(Duration::from_secs(60), || voters(&env) == 3).is_some(),
        "the 3 servers are not all voters: {:?}",
        crate::cluster::members(&env)
    );
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
    let log = env.cache().join("ui.log");
    let ui = start_ui(&env, &["--listen", &format!("127.0.0.1:{port}")], &log);
    let mut login = None;
    wait_until(Duration::from_secs(20), || {
        login = login_url_in(&log, port);
        login.is_some()
    });
    let login = login.unwrap_or_else(|| {
        panic!(
            "no login URL in the output of `ui`: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let token = login.rsplit_once("token=").unwrap().1.to_string();
    let token = Some(token.as_str());

    // Loopback too: without the cookie or the token, 401; a foreign Host (DNS rebinding)
    // gets 4xx even with the token; a page of another site (Origin) 403.
    for path in ["/", "/api/members", "/api/config", "/api/stream"] {
        assert_eq!(get(&format!("{base}{path}"), None).0, 401, "{path} without a token");
    }
    let foreign = get_with(&format!("{base}/api/members"), token, &["Host: attacker.example"]);
    assert!((400..500).contains(&foreign.0), "a foreign Host got {foreign:?}");
    let foreign = get_with(
        &format!("{base}/api/members"),
        token,
        &[&format!("Host: attacker.example:{port}")],
    );
    assert!((400..500).contains(&foreign.0), "a foreign Host got {foreign:?}");
    let cross = get_with(
        &format!("{base}/api/members"),
        token,
        &["Origin: http://attacker.example"],
    );
    assert_eq!(cross.0, 403, "a cross-site request got {cross:?}");

    let listed = wait_until(Duration::from_secs(60), || {
        let (code, body) = get(&format!("{base}/api/members"), token);
        code == 200 && ids.iter().all(|id| body.contains(id.as_str()))
    });
    assert!(
        listed.is_some(),
        "/api/members: {:?}",
        get(&format!("{base}/api/members"), token)
    );
    for path in [
        "/",
        "/api/members",
        "/api/overlay",
        "/api/events",
        "/api/config",
        "/api/state",
    ] {
        let (code, body) = get(&format!("{base}{path}"), token);
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
        get(&format!("{base}/api/config"), token).1.contains("seen-by-the-map")
    });
    assert!(
        shown.is_some(),
        "/api/config: {}",
        get(&format!("{base}/api/config"), token).1
    );

    // The browser logs in through the printed URL (sent over DevTools, not on chromium's
    // command line, which any local user may read): the cookie it gets shows it the map.
    let mut browser = Browser::open("about:blank");
    browser.call("Page.navigate", json!({ "url": login }));
    let shown = wait_until(Duration::from_secs(30), || {
        let t = browser.text();
        ids.iter().all(|id| t.contains(id.as_str())) && t.contains("server")
    });
    assert!(shown.is_some(), "the page shows: {}", browser.text());
    assert_eq!(
        browser.eval("location.href"),
        json!(format!("{base}/")),
        "the login sends the browser on to the map, the token out of the address bar"
    );
    assert_eq!(
        browser.eval("document.cookie"),
        json!(""),
        "no script reads the session cookie"
    );

    // One node dies; the open page shows it failed without a reload.
    // The node the map is answered through dies: the map must go through another one.
    let (_, state) = get(&format!("{base}/api/state"), token);
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
        // A lost server is `failed`, and `left` seconds later (consul's autopilot removes it
        // as soon as two others remain): either is the loss shown.
        matches!(status.as_str(), Some("failed" | "left"))
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
    let survivor = containers.iter().find(|c| **c != victim).unwrap().clone();
    node_map_is_for_root_only(&survivor);

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
    let token_file = private(env.write("ui.token", "0123456789abcdef0123456789abcdef\n"));
    let listen = format!("{gateway}:{port}");
    let _ui = start_ui(
        &env,
        &["--listen", &listen, "--token-file", token_file.to_str().unwrap()],
        &env.cache().join("ui-gateway.log"),
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

/// The map a node's agent serves on its loopback (`ui_listen`), seen from inside the node:
/// 401 without the cookie; root gets the login URL from `ui --login-url` (the token in a 0600
/// file) and in with it; another user reads neither the token nor the map's answers.
fn node_map_is_for_root_only(node: &str) {
    // A plain HTTP/1.0 client in bash (the node has no curl): `[HOST=...] get PATH [HEADER]`.
    let script = r#"
get() {
  exec 3<>/dev/tcp/127.0.0.1/8420 || return 1
  printf 'GET %s HTTP/1.0\r\nHost: %s\r\n' "$1" "${HOST:-127.0.0.1:8420}" >&3
  [ -n "$2" ] && printf '%s\r\n' "$2" >&3
  printf '\r\n' >&3
  tr -d '\r' <&3
  exec 3<&-
}
status() { get "$@" | head -n 1 | cut -d ' ' -f 2; }
echo "anonymous $(status /api/members)"
echo "foreign $(HOST=attacker.example status /api/members)"
url=$(raptiformica ui --login-url) || exit 1
case "$url" in http://127.0.0.1:8420/login\?token=*) echo "url ok" ;; *) echo "url bad: $url" ;; esac
login=$(get "/${url#http://*/}")
echo "login $(echo "$login" | head -n 1 | cut -d ' ' -f 2)"
cookie=$(echo "$login" | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p')
echo "logged-in $(status /api/members "Cookie: $cookie")"
echo "mode $(stat -c %a /root/.raptiformica.d/ui_token)"
token=${url#*token=}
if grep -rqF "$token" /root/.raptiformica.d/mesh/agent.log; then echo "token in the agent log"; fi
setpriv --reuid=65534 --regid=65534 --clear-groups cat /root/.raptiformica.d/ui_token >/dev/null 2>&1 && echo "nobody reads the token"
setpriv --reuid=65534 --regid=65534 --clear-groups raptiformica --cache-dir /root/.raptiformica.d ui --login-url 2>/dev/null | grep -q token= && echo "nobody gets the login URL"
echo "nobody $(setpriv --reuid=65534 --regid=65534 --clear-groups bash -c "$(declare -f get status); status /api/members")"
"#;
    let mut seen = String::new();
    let ok = wait_until(Duration::from_secs(60), || {
        let out = docker(&["exec", node, "bash", "-c", script]);
        seen = format!("{}{}", text(&out.stdout), text(&out.stderr));
        seen.contains("logged-in 200")
    });
    assert!(ok.is_some(), "the node's map: {seen}");
    for line in [
        "anonymous 401",
        "foreign 421",
        "url ok",
        "login 303",
        "logged-in 200",
        "mode 600",
        "nobody 401",
    ] {
        assert!(seen.lines().any(|l| l == line), "`{line}` missing from: {seen}");
    }
    for leak in [
        "token in the agent log",
        "nobody reads the token",
        "nobody gets the login URL",
    ] {
        assert!(!seen.contains(leak), "{leak}: {seen}");
    }
}

/// `path`, readable by its owner only (as a token file must be).
fn private(path: std::path::PathBuf) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// The ui command's own errors, with no cluster needed.
#[test]
fn ui_refuses_a_short_or_loose_token_file_a_bad_host_name_and_a_busy_address() {
    let env = crate::harness::TestEnv::new();
    let short = private(env.write("short.token", "abc\n"));
    let err = env.fails(&["ui", "--listen", "0.0.0.0:0", "--token-file", short.to_str().unwrap()]);
    assert!(err.contains("shorter than 16"), "{err}");
    let loose = env.write("loose.token", "0123456789abcdef0123456789abcdef\n");
    let err = env.fails(&["ui", "--listen", "127.0.0.1:0", "--token-file", loose.to_str().unwrap()]);
    assert!(err.contains("chmod 600") && err.contains("loose.token"), "{err}");
    let err = env.fails(&["ui", "--allow-host", "http://map.example.org/"]);
    assert!(err.contains("--allow-host"), "{err}");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let err = env.fails(&["ui", "--listen", &addr]);
    assert!(err.contains("cannot listen on"), "{err}");
}

/// `ui` on loopback, no cluster needed: a login URL on stderr (the only place the token
/// shows), 401 without it, the cookie it sets opens the API (503 until a first view, since
/// there is no cluster), a foreign Host gets 421.
#[test]
fn ui_prints_a_login_url_whose_cookie_opens_the_map() {
    let env = crate::harness::TestEnv::new();
    let port = free_port();
    let log = env.cache().join("ui.log");
    std::fs::create_dir_all(env.cache()).unwrap();
    let _ui = start_ui(&env, &["--listen", &format!("127.0.0.1:{port}")], &log);
    let mut login = None;
    wait_until(Duration::from_secs(20), || {
        login = login_url_in(&log, port);
        login.is_some()
    });
    let login = login.unwrap_or_else(|| panic!("no login URL: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    let api = format!("http://127.0.0.1:{port}/api/members");
    assert_eq!(get(&api, None).0, 401);
    assert_eq!(get_with(&api, None, &["Host: attacker.example"]).0, 421);
    let jar = env.cache().join("jar");
    let jar = jar.to_str().unwrap();
    let curl = |format: &str, args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-m", "10", "-o", "/dev/null", "-w", format])
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    };
    // The redirect lands on the page (200): the cookie is in the jar.
    let landed = curl("%{http_code} %{url_effective}", &["-c", jar, "-b", jar, "-L", &login]);
    assert_eq!(landed, format!("200 http://127.0.0.1:{port}/"));
    let past = curl("%{http_code}", &["-b", jar, &api]);
    assert_eq!(past, "503", "past the login, waiting for a first view");
}

/// `ui --login-url` (as root on a node): the URL of the agent's map, its token made once in a
/// 0600 `<cache-dir>/ui_token` and reused; without `ui_listen` a clear error.
#[test]
fn ui_login_url_prints_the_node_map_url_with_a_private_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = crate::harness::TestEnv::new();
    let err = env.fails(&["ui", "--login-url"]);
    assert!(
        err.contains("raptiformica/agent/ui_listen") && err.contains("config set"),
        "{err}"
    );
    env.ok(&["config", "set", "raptiformica/agent/ui_listen", "127.0.0.1:8421"]);
    let url = env.ok(&["ui", "--login-url"]);
    let url = url.trim();
    let token = url
        .strip_prefix("http://127.0.0.1:8421/login?token=")
        .unwrap_or_else(|| panic!("{url}"));
    assert_eq!(token.len(), 32, "{url}");
    let file = env.cache().join("ui_token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(env.ok(&["ui", "--login-url"]).trim(), url, "the token is reused");
}
