//! Consul's ACLs: default deny, so that only holders of the cluster's token (root on a node,
//! the host that spawned the cluster) read or write the shared config.
//!
//! The token is made once, with the gossip key, by the first slaver: a UUID in
//! `<cache-dir>/consul_token` (0600), uploaded with the other files to every node, rendered
//! into consul's config (0600) as the initial management token on servers and the agent
//! master token for the agent endpoints everywhere. It is never in the KV, in process
//! arguments or in logs: our HTTP client sends it as a sensitive `X-Consul-Token` header.
//!
//! consul's own agent runs with an agent token of its own (policy [`AGENT_POLICY`]: write its
//! node, read services; no KV), derived from the cluster's token by a one-way hash so that
//! every node knows it without another secret to hand out. Meshing makes it once there is a
//! leader; until then an agent's own registration is refused and retried by consul.

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::sys::paths::Paths;

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
    crate::sys::fs_atomic::write_atomic(&file, format!("{token}\n").as_bytes())
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    Ok(token)
}

/// The agent token's policy.
pub const AGENT_POLICY: &str = "raptiformica-agent";

/// What consul's own agent may do with its token.
/// `event_prefix` read: the agent endpoint that lists the events received filters them with
/// the caller's token, and the cluster's token is also the agent master token there, whose
/// rights stop at the agent and node endpoints; the event stream is read with this token.
/// `operator` write: for the same reason `force-leave` (operator write) refuses the cluster's
/// token at every agent ("Permission denied", though it is the management token); evicting a
/// failed member goes with this token (see [`evict_token`]).
pub const AGENT_RULES: &str = r#"node_prefix "" { policy = "write" } service_prefix "" { policy = "read" } event_prefix "" { policy = "read" } operator = "write""#;

/// The token that may force a failed member out (`force-leave`): the agent token's secret,
/// where this machine has the cluster's token.
pub fn evict_token(paths: &Paths) -> Option<String> {
    read_token(paths).map(|t| agent_token(&t).1)
}

/// The agent token of the cluster whose token is `token`: (accessor id, secret id).
pub fn agent_token(token: &str) -> (String, String) {
    (derive(token, "agent accessor"), derive(token, "agent secret"))
}

/// A UUID from `token` and `label`, by SHA-256 (it tells nothing of `token`).
fn derive(token: &str, label: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("raptiformica {label}: {token}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

/// consul's `acl` block: default deny; servers hold the management token.
pub fn render(token: &str, server: bool) -> Value {
    // agent_master: agent endpoints (join, members) answer to it even without servers, so a
    // node that lost its cluster can still be told to join one.
    let (_, agent) = agent_token(token);
    let mut tokens = json!({"agent": agent, "agent_master": token});
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
        let (accessor, secret) = agent_token(&t);
        assert_eq!(
            agent_token(&t),
            (accessor.clone(), secret.clone()),
            "the same on every node"
        );
        assert!(uuid::Uuid::parse_str(&secret).is_ok() && secret != t && accessor != secret);
        assert_ne!(
            agent_token(&ensure_token(&Paths::resolve(Some(dir.path().join("other")), None, None)).unwrap()).1,
            secret
        );
        assert_eq!(render(&t, false)["tokens"]["agent"], secret.as_str());
        let server = render(&t, true);
        assert_eq!(server["default_policy"], "deny");
        assert_eq!(server["tokens"]["master"], t.as_str());
        assert!(render(&t, false)["tokens"].get("master").is_none());
    }
}
