//! The agent's settings and rules, read from the shared config (`raptiformica/agent/...`,
//! defaults in `modules/agent.toml`). A value that is not a number, or out of its range, is
//! refused with an error that names the key and the fix.

use std::time::Duration;

use anyhow::bail;
use serde_json::Value;

use crate::config::Mapping;

/// Fewer voting servers alive than this and the agent promotes a client or spawns a machine.
pub const MIN_SERVERS: &str = "raptiformica/agent/rules/min_servers";
/// Seconds a member may stay failed before it is evicted (and replaced).
pub const EVICTION_GRACE: &str = "raptiformica/agent/eviction_grace";
/// Seconds without a leader, the other servers failed, before a survivor rebuilds consensus.
pub const RECOVERY_GRACE: &str = "raptiformica/agent/recovery_grace";
/// Seconds one hook handler may run.
pub const HOOK_TIMEOUT: &str = "raptiformica/agent/hook_timeout";

/// Where the node agent serves the web map (`raptiformica ui`), on a loopback address only;
/// unset: it does not. Its token is in `<cache-dir>/ui_token`, for root only (`ui --login-url`).
pub const UI_LISTEN: &str = "raptiformica/agent/ui_listen";

/// The web map's address, if the agent is to serve it: a loopback `ADDR:PORT` (a map on another
/// address needs a token: run `raptiformica ui --listen ... --token-file ...` for that).
pub fn ui_listen(mapping: &Mapping) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(v) = mapping.get(UI_LISTEN) else {
        return Ok(None);
    };
    let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    match crate::config::known::parse_ui_listen(&text) {
        Ok(addr) => Ok(Some(addr)),
        Err(e) => bail!("`{UI_LISTEN}`: {e}; fix it with `raptiformica config set {UI_LISTEN} 127.0.0.1:8420`"),
    }
}

/// What the agent works with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub min_servers: usize,
    pub eviction_grace: Duration,
    pub recovery_grace: Duration,
    pub hook_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            min_servers: 3,
            eviction_grace: Duration::from_secs(30),
            recovery_grace: Duration::from_secs(120),
            hook_timeout: crate::modules::hooks::HANDLER_TIMEOUT,
        }
    }
}

impl Settings {
    /// The settings in `mapping`, defaults for the keys it lacks.
    pub fn from_mapping(mapping: &Mapping) -> anyhow::Result<Self> {
        let d = Self::default();
        Ok(Self {
            min_servers: number(mapping, MIN_SERVERS, 1, 7)?.map_or(d.min_servers, |n| n as usize),
            eviction_grace: seconds(mapping, EVICTION_GRACE)?.unwrap_or(d.eviction_grace),
            recovery_grace: seconds(mapping, RECOVERY_GRACE)?.unwrap_or(d.recovery_grace),
            hook_timeout: seconds(mapping, HOOK_TIMEOUT)?.unwrap_or(d.hook_timeout),
        })
    }
}

/// A whole number between `min` and `max` at `key` (a JSON number or a numeric string).
fn number(mapping: &Mapping, key: &str, min: u64, max: u64) -> anyhow::Result<Option<u64>> {
    let Some(v) = mapping.get(key) else { return Ok(None) };
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => bail!(
            "`{key}` must be a whole number from {min} to {max}, not {v}; fix it with `raptiformica config set {key} {min}`"
        ),
    }
}

fn seconds(mapping: &Mapping, key: &str) -> anyhow::Result<Option<Duration>> {
    Ok(number(mapping, key, 1, 86_400)?.map(Duration::from_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_serves_the_map_on_loopback_only() {
        let m = |v: Value| Mapping::from([(UI_LISTEN.to_string(), v)]);
        assert_eq!(ui_listen(&Mapping::new()).unwrap(), None);
        assert_eq!(
            ui_listen(&m(Value::from("127.0.0.1:8420"))).unwrap(),
            Some("127.0.0.1:8420".parse().unwrap())
        );
        let err = ui_listen(&m(Value::from("0.0.0.0:8420"))).unwrap_err().to_string();
        assert!(err.contains("loopback") && err.contains(UI_LISTEN), "{err}");
        assert!(ui_listen(&m(Value::from("nonsense"))).is_err());
    }

    #[test]
    fn defaults_and_values_as_numbers_or_numeric_strings() {
        assert_eq!(Settings::from_mapping(&Mapping::new()).unwrap(), Settings::default());
        let m = Mapping::from([
            (MIN_SERVERS.to_string(), Value::from(5)),
            (EVICTION_GRACE.to_string(), Value::from("12")),
        ]);
        let s = Settings::from_mapping(&m).unwrap();
        assert_eq!(s.min_servers, 5);
        assert_eq!(s.eviction_grace, Duration::from_secs(12));
    }

    #[test]
    fn bad_rule_values_are_refused_naming_the_key() {
        for bad in [
            Value::from("three"),
            Value::from(0),
            Value::from(-1),
            Value::from(true),
            Value::from(2.5),
        ] {
            let m = Mapping::from([(MIN_SERVERS.to_string(), bad.clone())]);
            let err = Settings::from_mapping(&m).unwrap_err().to_string();
            assert!(err.contains(MIN_SERVERS), "{bad}: {err}");
        }
        let m = Mapping::from([(EVICTION_GRACE.to_string(), Value::from("soon"))]);
        assert!(
            Settings::from_mapping(&m)
                .unwrap_err()
                .to_string()
                .contains(EVICTION_GRACE)
        );
    }
}
