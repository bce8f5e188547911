//! The conventions of a slaved machine: where root's cache and the binaries live, and how a
//! command is run there with the node's paths.

use crate::sys::paths::INSTALL_PREFIX;

/// The cache dir of root on a slaved machine.
pub const REMOTE_CACHE: &str = "/root/.raptiformica.d";
/// Where binaries are linked on the target's PATH.
pub const REMOTE_BIN: &str = "/usr/local/bin";
/// The binaries slaving links into [`REMOTE_BIN`] from the node's artifacts (and `clean` on a
/// node removes).
pub const LINKED: [&str; 4] = ["raptiformica", "consul", "yggdrasil", "yggdrasilctl"];

/// A shell script that runs `command` on a node with the node's paths and PATH.
pub fn on_node(command: &str) -> String {
    format!(
        "export PATH={REMOTE_BIN}:$PATH RAPTIFORMICA_CACHE_DIR={REMOTE_CACHE} RAPTIFORMICA_INSTALL_DIR={INSTALL_PREFIX}\n{command}"
    )
}
