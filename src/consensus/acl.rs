//! Consul's ACLs: default deny, so that only holders of the cluster's token (root on a node,
//! the host that spawned the cluster) read or write the shared config.
//!
//! The token is made once, with the gossip key, by the first slaver: a UUID in
//! `<cache-dir>/consul_token` (0600), uploaded with the other files to every node, rendered
//! into consul's config (0600) as the initial management token on servers and the agent
//! token everywhere. It is never in the KV, in process arguments or in logs: our HTTP client
//! sends it as a sensitive `X-Consul-Token` header.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::paths::Paths;

/// The token file's name in the cache dir.
pub const TOKEN_FILE: &str = "consul_token";

pub fn token_file(paths: &Paths) -> PathBuf {
    paths.cache_dir.join(TOKEN_FILE)
}

/// The cluster's token, if this machine has it.
pub fn read_token(paths: &Paths) -> Option<String> {
    let t = std::fs::read_to_string(token_file(paths)).ok()?;
    let t = t.trim();
    uuid::Uuid::parse_str(t).ok().map(|_| t.to_string())
}

/// The cluster's token, made (0600) if this machine has none yet.
pub fn ensure_token(paths: &Paths) -> anyhow::Result<String> {
    if let Some(t) = read_token(paths) {
        return Ok(t);
    }
    let token = uuid::Uuid::new_v4().to_string();
    let file = token_file(paths);
    std::fs::create_dir_all(&paths.cache_dir)?;
    crate::config::cache::write_atomic(&file, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(token)
}

/// consul's `acl` block: default deny; servers hold the management token.
pub fn render(token: &str, server: bool) -> Value {
    // agent_master: agent endpoints (join, members) answer to it even without servers, so a
    // node that lost its cluster can still be told to join one.
    let mut tokens = json!({"agent": token, "agent_master": token});
    if server {
        tokens["master"] = json!(token);
    }
    json!({
        "enabled": true,
        "default_policy": "deny",
        "down_policy": "extend-cache",
        "tokens": tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        assert_eq!(read_token(&paths), None);
        let t = ensure_token(&paths).unwrap();
        assert_eq!(ensure_token(&paths).unwrap(), t);
        assert_eq!(read_token(&paths).as_deref(), Some(t.as_str()));
        let mode = std::fs::metadata(token_file(&paths)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let server = render(&t, true);
        assert_eq!(server["default_policy"], "deny");
        assert_eq!(server["tokens"]["master"], t.as_str());
        assert!(render(&t, false)["tokens"].get("master").is_none());
    }
}
