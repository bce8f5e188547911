//! Whether an SSH server answers on a machine's port: a TCP connection and the server's
//! greeting (`SSH-2.0-...`, which it sends first), nothing more. The cheap check made before
//! anything changes (`join` before it touches this machine, `deploy` before it fetches the
//! artifacts and writes the cluster's secrets), and the explanation of an SSH contact that
//! failed. A port that accepts connections without greeting (a middlebox that accepts
//! anything, another service) does not count as an answer.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// `host:port` as ssh's `-J` takes it and as people write it (an IPv6 literal in brackets).
pub fn hop(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The longest single attempt of [`probe_patiently`].
const ATTEMPT: Duration = Duration::from_secs(5);
/// The shortest single attempt (a patience of 0 still tries once).
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// The pause between two attempts.
const RETRY: Duration = Duration::from_millis(500);

/// Why a machine did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Silence {
    /// The machine said no: nothing listens on the port.
    Refused,
    /// No reply in time: a machine that is down or still booting, a wrong address, or a
    /// firewall that drops the connection.
    NoAnswer(Duration),
    /// The name does not resolve.
    Unresolved(String),
    /// The port accepts connections, but no SSH server greets there (what happened instead).
    NotSsh(String),
    /// What else the connection said (no route to host, network unreachable).
    Failed(String),
}

impl fmt::Display for Silence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Silence::Refused => f.write_str("connection refused: nothing listens on the port"),
            Silence::NoAnswer(d) => write!(f, "no answer within {}", seconds(*d)),
            Silence::Unresolved(e) => write!(f, "the name does not resolve ({e})"),
            Silence::NotSsh(what) => write!(f, "it accepts connections but is no SSH server ({what})"),
            Silence::Failed(e) => f.write_str(e),
        }
    }
}

/// A machine that did not answer on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub host: String,
    pub port: u16,
    pub why: Silence,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = hop(&self.host, self.port);
        match &self.why {
            Silence::Refused => write!(f, "nothing answers on {at} (connection refused)"),
            Silence::Unresolved(e) => write!(f, "cannot resolve `{}` ({e})", self.host),
            Silence::NotSsh(what) => write!(f, "no SSH server answers on {at} ({what})"),
            why => write!(f, "cannot reach {at}: {why}"),
        }
    }
}

impl std::error::Error for Unreachable {}

/// One attempt to reach the SSH server at `host:port`: the name resolved, a TCP connection
/// and the server's greeting, all within `timeout`; the connection is closed at once.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> Result<(), Unreachable> {
    let deadline = Instant::now() + timeout;
    let silent = || Silence::NoAnswer(timeout);
    let attempt = async {
        let addrs: Vec<SocketAddr> = timeout_at(deadline, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| silent())?
            .map_err(|e| Silence::Unresolved(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(Silence::Unresolved("no address".into()));
        }
        let mut stream = match timeout_at(deadline, TcpStream::connect(&addrs[..])).await {
            Err(_) => return Err(silent()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(Silence::Refused),
            Ok(Err(e)) => return Err(Silence::Failed(e.to_string())),
            Ok(Ok(stream)) => stream,
        };
        match timeout_at(deadline, greeting(&mut stream)).await {
            Err(_) => Err(Silence::NotSsh(format!("no greeting within {}", seconds(timeout)))),
            Ok(greeted) => greeted,
        }
    };
    attempt.await.map_err(|why| Unreachable {
        host: host.into(),
        port,
        why,
    })
}

/// Reads until the SSH server's version line (`SSH-`, possibly after other lines).
async fn greeting(stream: &mut TcpStream) -> Result<(), Silence> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| Silence::NotSsh(format!("the connection broke before a greeting: {e}")))?;
        if n == 0 {
            return Err(Silence::NotSsh("it closed the connection without a greeting".into()));
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.starts_with(b"SSH-") || seen.windows(5).any(|w| w == b"\nSSH-") {
            return Ok(());
        }
        if seen.len() >= 1024 {
            let first = String::from_utf8_lossy(&seen);
            let first = first
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect::<String>();
            return Err(Silence::NotSsh(format!("it greets with `{}`", first.escape_debug())));
        }
    }
}

/// Probes `host:port` until it answers, for up to `patience` (a machine still booting); a
/// machine that keeps refusing (it is up, and nothing listens on the port) is given up after
/// `refusals` already.
pub async fn probe_patiently(host: &str, port: u16, patience: Duration, refusals: Duration) -> Result<(), Unreachable> {
    let start = Instant::now();
    loop {
        let left = patience.saturating_sub(start.elapsed());
        let mut err = match probe(host, port, left.clamp(MIN_ATTEMPT, ATTEMPT)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let limit = match err.why {
            Silence::Refused => refusals.min(patience),
            _ => patience,
        };
        if start.elapsed() + RETRY > limit {
            if let Silence::NoAnswer(_) = err.why {
                err.why = Silence::NoAnswer(start.elapsed());
            }
            return Err(err);
        }
        tracing::debug!("{err}: trying again");
        tokio::time::sleep(RETRY).await;
    }
}

/// Whether something accepts a TCP connection at `addr` within `timeout` (blocking).
pub fn answers_blocking(addr: SocketAddr, timeout: Duration) -> bool {
    std::net::TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// `3s`, `2.5s`.
fn seconds(d: Duration) -> String {
    let s = (d.as_secs_f64() * 10.0).round() / 10.0;
    format!("{s}s")
}

/// A loopback port that nothing listens on (bound, then closed): for tests.
#[cfg(test)]
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback port where a fake server sends `greeting` to every connection, then waits.
    async fn server(greeting: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut conn, greeting).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn an_ssh_server_answers() {
        let port = server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n").await;
        probe("127.0.0.1", port, Duration::from_secs(2)).await.unwrap();
        // Other lines may come before the version line.
        let port = server(b"welcome\r\nSSH-2.0-x\r\n").await;
        probe("127.0.0.1", port, Duration::from_secs(2)).await.unwrap();
        assert!(answers_blocking(([127, 0, 0, 1], port).into(), Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn a_port_that_accepts_but_does_not_greet_is_no_answer() {
        let port = server(b"").await;
        let err = probe("127.0.0.1", port, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.why, Silence::NotSsh("no greeting within 1s".into()));
        assert_eq!(
            err.to_string(),
            format!("no SSH server answers on 127.0.0.1:{port} (no greeting within 1s)")
        );
        let port = server(&[b'x'; 2000]).await;
        let err = probe("127.0.0.1", port, Duration::from_secs(2)).await.unwrap_err();
        assert!(
            matches!(&err.why, Silence::NotSsh(w) if w.starts_with("it greets with `xxx")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_at_once_and_named() {
        let port = closed_port();
        let t = std::time::Instant::now();
        let err = probe("127.0.0.1", port, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.why, Silence::Refused);
        assert_eq!(
            err.to_string(),
            format!("nothing answers on 127.0.0.1:{port} (connection refused)")
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn refusals_are_given_up_before_the_patience() {
        let port = closed_port();
        let t = std::time::Instant::now();
        let err = probe_patiently("127.0.0.1", port, Duration::from_secs(30), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.why, Silence::Refused);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_port_that_opens_while_waiting_answers() {
        let port = closed_port();
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            let (mut conn, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut conn, b"SSH-2.0-late\r\n")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        probe_patiently("127.0.0.1", port, Duration::from_secs(10), Duration::from_secs(5))
            .await
            .unwrap();
        opener.abort();
    }

    #[test]
    fn silences_read_well() {
        let u = |why| Unreachable {
            host: "fe80::1".into(),
            port: 22,
            why,
        };
        assert_eq!(
            u(Silence::NoAnswer(Duration::from_millis(2500))).to_string(),
            "cannot reach [fe80::1]:22: no answer within 2.5s"
        );
        assert_eq!(
            u(Silence::Failed("No route to host (os error 113)".into())).to_string(),
            "cannot reach [fe80::1]:22: No route to host (os error 113)"
        );
        assert_eq!(
            u(Silence::Unresolved("failed to lookup address information".into())).to_string(),
            "cannot resolve `fe80::1` (failed to lookup address information)"
        );
    }
}
