//! SHA-256 digests as hex, and the ids derived from keys with them.

use sha2::{Digest, Sha256};

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, as 64 hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A host key as its first two fields (`type base64`), whatever comment or spaces follow: the
/// form ids are derived from and keys are pinned in.
pub fn host_key_fields(line: &str) -> String {
    line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A node's short stable id from its SSH host key (`type base64`): the first 16 hex digits of
/// its SHA-256.
pub fn node_id(host_key: &str) -> String {
    sha256_hex(host_key.as_bytes())[..16].to_string()
}

/// A node's consul node id, UUID-shaped, from its overlay public key.
pub fn consul_node_id(overlay_key: &str) -> String {
    let h = sha256_hex(overlay_key.as_bytes());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_stable_and_short() {
        assert_eq!(node_id("ssh-ed25519 AAAA"), node_id("ssh-ed25519 AAAA"));
        assert_ne!(node_id("ssh-ed25519 AAAA"), node_id("ssh-ed25519 AAAB"));
        assert_eq!(node_id("x").len(), 16);
        assert_eq!(
            node_id(&host_key_fields("ssh-ed25519  AAAA root@x\n")),
            node_id("ssh-ed25519 AAAA")
        );
    }

    #[test]
    fn consul_node_ids_are_uuid_shaped() {
        let id = consul_node_id("abc");
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(id, consul_node_id("abc"));
    }
}
