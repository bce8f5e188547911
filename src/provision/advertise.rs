//! `advertise`: the address other nodes should use to reach this node, when the one it was
//! slaved at is not it (NAT, a port forward, a new underlay address).
//!
//! Kept in `<cache-dir>/advertised.json` (never uploaded: each node has its own) and written
//! into this node's neighbour entry in the shared config; a later re-slave reads it back
//! instead of recording the address the slaver happened to use.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Mapping, edit};
use crate::mesh::neighbours;
use crate::sys::paths::Paths;

/// The file's name in the cache dir.
pub const FILE: &str = "advertised.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advertised {
    pub host: String,
    pub port: u16,
}

pub fn path(paths: &Paths) -> PathBuf {
    paths.cache_dir.join(FILE)
}

/// What `<cache>/advertised.json` says, if it exists and parses.
pub fn read(file: &Path) -> Option<Advertised> {
    serde_json::from_slice(&std::fs::read(file).ok()?).ok()
}

/// What a node printed of its advertised address (its `advertised.json`, read by a slaver),
/// if it parses and passes the checks of a host and a port; a bad one is named in the log.
pub fn parse_reported(text: &str) -> Option<Advertised> {
    let a: Advertised = serde_json::from_str(text).ok()?;
    match crate::config::known::check_host(&a.host) {
        Ok(()) if a.port > 0 => Some(a),
        Ok(()) => None,
        Err(why) => {
            crate::config::known::warn_once(format!("the node's advertised address is ignored: {why}"));
            None
        }
    }
}

/// Records `host:port` for the node `id` (this node): the file, then the shared config.
pub async fn advertise(
    paths: &Paths,
    id: &str,
    host: &str,
    port: u16,
) -> anyhow::Result<crate::config::shared::Written> {
    crate::config::known::check_host(host).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(port > 0, "port 0 is not a port: give one from 1 to 65535");
    let file = path(paths);
    let text = serde_json::to_vec_pretty(&Advertised {
        host: host.into(),
        port,
    })?;
    crate::sys::fs_atomic::write_atomic_creating(&file, &text)
        .with_context(|| format!("cannot write `{}`", file.display()))?;
    edit::set_many(
        paths,
        &Mapping::from([
            (neighbours::key(id, "host"), Value::from(host)),
            (neighbours::key(id, "ssh_port"), Value::from(port.to_string())),
        ]),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(FILE);
        std::fs::write(&f, r#"{"host": "203.0.113.7", "port": 2222}"#).unwrap();
        assert_eq!(
            read(&f),
            Some(Advertised {
                host: "203.0.113.7".into(),
                port: 2222
            })
        );
        std::fs::write(&f, "{").unwrap();
        assert_eq!(read(&f), None);
    }

    #[test]
    fn a_reported_address_is_checked_as_data() {
        assert_eq!(
            parse_reported(r#"{"host": "203.0.113.7", "port": 2222}"#).map(|a| a.port),
            Some(2222)
        );
        assert_eq!(
            parse_reported(r#"{"host": "1.2.3.4 -oProxyCommand=x", "port": 22}"#),
            None
        );
        assert_eq!(parse_reported(r#"{"host": "1.2.3.4", "port": 0}"#), None);
        assert_eq!(parse_reported("nonsense"), None);
    }
}
