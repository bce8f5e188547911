//! A node's id, derived from its SSH host key: the ground floor slaving, meshing and the
//! commands that name a node share, importing nothing of the crate.

/// A short stable id from a host key: the first 16 hex digits of its SHA-256.
pub fn node_id(host_key: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(host_key.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable_and_short() {
        assert_eq!(node_id("ssh-ed25519 AAAA"), node_id("ssh-ed25519 AAAA"));
        assert_ne!(node_id("ssh-ed25519 AAAA"), node_id("ssh-ed25519 AAAB"));
        assert_eq!(node_id("x").len(), 16);
    }
}
