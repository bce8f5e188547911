//! The map's token: where it comes from (made fresh, a `--token-file`, or a node's
//! `<cache-dir>/ui_token`) and the login URL that carries it.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::sys::paths::Paths;

/// The shortest token a file may hold.
pub const MIN_LEN: usize = 16;

/// A fresh random token (32 hex digits).
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A node's own map's token file: `<cache-dir>/ui_token` (on nodes
/// `/root/.raptiformica.d/ui_token`), readable by its owner only.
pub fn node_file(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("ui_token")
}

/// The token in `file` (its first line): refused when others may read the file or the token
/// is shorter than [`MIN_LEN`].
pub fn read(file: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(file).with_context(|| format!("cannot read the token file `{}`", file.display()))?;
    let mode = meta.mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the token file `{}` may be read by others (mode {mode:04o}): `chmod 600 {}`",
        file.display(),
        file.display()
    );
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read the token file `{}`", file.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    anyhow::ensure!(
        token.len() >= MIN_LEN,
        "the token in `{}` is shorter than {MIN_LEN} characters; put a long random one there",
        file.display()
    );
    Ok(token)
}

/// The token in `file`, made first (0600 from its creation, atomically) when there is none:
/// a temp file beside it, linked into place only if no other process made it meanwhile.
pub fn ensure(file: &Path) -> anyhow::Result<String> {
    match std::fs::symlink_metadata(file) {
        Ok(_) => return read(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read the token file `{}`", file.display())),
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let token = new_token()?;
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".ui_token.")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        writeln!(tmp, "{token}")?;
        tmp.as_file().sync_all()?;
        tmp.persist_noclobber(file).map_err(|e| e.error)?;
        Ok(())
    };
    match write() {
        Ok(()) => Ok(token),
        // Another process made it first: that one is the token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(file),
        Err(e) => Err(e).with_context(|| format!("cannot write the token file `{}`", file.display())),
    }
}

/// The URL that logs a browser in to the map listening on `addr`: the address itself, or
/// loopback when it is `0.0.0.0`/`::` (listening on every address).
pub fn login_url(addr: SocketAddr, token: &str) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/login?token={}",
        SocketAddr::new(ip, addr.port()),
        percent_encode(token)
    )
}

/// `text` for a URL's query: every byte but the unreserved ones as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn fresh_tokens_are_long_and_differ() {
        let t = new_token().unwrap();
        assert_eq!(t.len(), 32);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn a_node_token_is_made_private_once_then_reused() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("cache/ui_token");
        let token = ensure(&file).unwrap();
        assert_eq!(token.len(), 32);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{token}\n"));
        assert_eq!(ensure(&file).unwrap(), token, "reused");
        assert_eq!(
            std::fs::read_dir(file.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn a_token_file_others_may_read_or_a_short_token_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("t");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read(&file).unwrap_err().to_string();
        assert!(err.contains("chmod 600") && err.contains("0644"), "{err}");
        assert!(ensure(&file).is_err(), "an existing loose file is not reused");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&file).unwrap(), "0123456789abcdef0123");
        std::fs::write(&file, "short\n").unwrap();
        assert!(read(&file).unwrap_err().to_string().contains("shorter than 16"));
        let err = read(&d.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn the_login_url_is_the_bound_address_or_loopback() {
        let url = |a: &str, t| login_url(a.parse().unwrap(), t);
        assert_eq!(url("127.0.0.1:8420", "abc"), "http://127.0.0.1:8420/login?token=abc");
        assert_eq!(url("0.0.0.0:8420", "abc"), "http://127.0.0.1:8420/login?token=abc");
        assert_eq!(url("[::]:8420", "abc"), "http://[::1]:8420/login?token=abc");
        assert_eq!(url("172.18.0.1:1", "abc"), "http://172.18.0.1:1/login?token=abc");
        assert_eq!(
            url("127.0.0.1:1", "a b&c/é"),
            "http://127.0.0.1:1/login?token=a%20b%26c%2F%C3%A9"
        );
    }
}
