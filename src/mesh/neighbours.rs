//! The neighbours in the shared config: `raptiformica/meshnet/neighbours/<id>/...`.
//!
//! Each slaved node has one entry, keyed by an id derived from its SSH host key: how to reach
//! it (`host`, `ssh_port`, `ssh_host_key`, set by whoever slaved it) and its overlay identity
//! (`yggdrasil_public_key`, `yggdrasil_address`, `yggdrasil_port`, generated on the node
//! itself), plus its `consul_role` (`server` or `client`). Values are strings, as in the
//! original project.

use std::net::Ipv6Addr;

use serde::Serialize;
use serde_json::Value;

use crate::config::{Mapping, known};

/// Where the neighbours live in the shared config.
pub const NEIGHBOURS: &str = "raptiformica/meshnet/neighbours";

/// A node's role in consul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A voting server (3 or 5 of them per cluster).
    Server,
    /// Any further node.
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// One node as the shared config knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbour {
    pub id: String,
    pub host: Option<String>,
    pub ssh_port: u16,
    /// Who logs in there (`ssh_user`; None: root): a user other than root runs what needs
    /// root through sudo.
    pub ssh_user: Option<String>,
    pub ssh_host_key: Option<String>,
    pub overlay_public_key: Option<String>,
    pub overlay_address: Option<Ipv6Addr>,
    pub overlay_port: Option<u16>,
    pub consul_role: Option<Role>,
    /// When its overlay key entered the shared config (`yggdrasil_since`: the KV index that
    /// created the key), as its agent recorded it; None until then.
    pub overlay_since: Option<u64>,
    /// Which nodes its running overlay admits, as its agent published them; None when it
    /// published nothing.
    pub overlay_admits: Option<Admits>,
    /// The jump hosts to reach it over SSH (`ssh_via`: `host:port`, comma-separated, outermost
    /// first), for a machine only another one reaches.
    pub ssh_via: Vec<String>,
    /// The machine behind it, for one a compute back-end started (`spawn`, from the
    /// workstation or from a node with an engine); None for a machine slaved as it was.
    pub machine: Option<Machine>,
}

/// Which back-end instance a node is, and whose engine holds it: `compute_type`, `instance`
/// and `held_by` in its entry. Data only: nothing runs because of them (a node prunes only
/// the instances its own back-end started, from its own instance records).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// `<compute type>/<server type>`, as `spawn` names it.
    pub compute_type: String,
    /// The instance's id (its directory's name in the spawner's cache).
    pub instance: String,
    /// Whose engine started it: the spawning node's id, or the name of the workstation (a
    /// cache dir on the machine a user ran `spawn` on, see `remote::workstations`).
    pub held_by: String,
}

impl Machine {
    /// The neighbour entry's fields that record it.
    pub fn fields(&self) -> [(&'static str, &str); 3] {
        [
            ("compute_type", &self.compute_type),
            ("instance", &self.instance),
            ("held_by", &self.held_by),
        ]
    }

    /// "docker/headless, held by HOST".
    pub fn describe(&self) -> String {
        format!("{}, held by {}", self.compute_type, self.held_by)
    }
}

/// Which nodes' keys a node's running overlay admits (yggdrasil admits a fixed list of keys,
/// read when it starts), as its agent publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admits {
    /// Every key (`yggdrasil_admits_upto` = `all`: it runs with no list).
    All,
    /// Every node whose `yggdrasil_since` is at most this (`yggdrasil_admits_upto`). One
    /// number a node: a list of ids (below) made every node's entry grow with the cluster,
    /// and every node reads every entry whenever the neighbours change.
    UpTo(u64),
    /// These ids (`yggdrasil_admits`, comma-separated: what earlier versions publish).
    Ids(std::collections::BTreeSet<String>),
}

/// What `yggdrasil_admits_upto` says for [`Admits::All`].
pub const ADMITS_ALL: &str = "all";

impl Neighbour {
    /// Node `id` with nothing known of it.
    pub fn unknown(id: &str) -> Self {
        Neighbour {
            id: id.to_string(),
            host: None,
            ssh_port: 22,
            ssh_user: None,
            ssh_host_key: None,
            overlay_public_key: None,
            overlay_address: None,
            overlay_port: None,
            consul_role: None,
            overlay_since: None,
            overlay_admits: None,
            ssh_via: Vec::new(),
            machine: None,
        }
    }

    /// Whether its overlay identity is known (it has been meshed at least once).
    pub fn on_overlay(&self) -> bool {
        self.overlay_public_key.is_some() && self.overlay_address.is_some()
    }

    /// Whether its running overlay admits `other`, as far as it published: a node that
    /// published nothing is taken to admit everyone, and one that admits up to an index
    /// admits nobody whose key's index is not known yet.
    pub fn admits(&self, other: &Neighbour) -> bool {
        match &self.overlay_admits {
            None | Some(Admits::All) => true,
            Some(Admits::UpTo(upto)) => other.overlay_since.is_some_and(|since| since <= *upto),
            Some(Admits::Ids(ids)) => ids.contains(&other.id),
        }
    }
}

/// The key of `field` of neighbour `id`.
pub fn key(id: &str, field: &str) -> String {
    format!("{NEIGHBOURS}/{id}/{field}")
}

/// Every neighbour in `mapping`, sorted by id. Fields that do not parse are left out; a
/// neighbour whose way in (`host`, `ssh_port`, `ssh_via`) fails its check has no `host`, so
/// nothing dials it, and the log says why once.
pub fn all(mapping: &Mapping) -> Vec<Neighbour> {
    let prefix = format!("{NEIGHBOURS}/");
    let mut out: Vec<Neighbour> = Vec::new();
    let mut unusable: Vec<String> = Vec::new();
    for (k, v) in mapping.range(prefix.clone()..) {
        let Some(rest) = k.strip_prefix(&prefix) else { break };
        let Some((id, field)) = rest.split_once('/') else {
            continue;
        };
        if out.last().is_none_or(|n| n.id != id) {
            out.push(Neighbour::unknown(id));
        }
        let n = out.last_mut().expect("pushed above");
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if matches!(field, "host" | "ssh_port" | "ssh_via" | "ssh_user")
            && let Err(why) = known::check(k, v)
        {
            known::warn_once(format!("neighbour {id} is ignored: {why}"));
            unusable.push(id.to_string());
            continue;
        }
        if matches!(field, "compute_type" | "instance" | "held_by") {
            // A value that is no plain name is left out (it is only ever shown).
            if known::check(k, v).is_ok() {
                let m = n.machine.get_or_insert_with(Machine::default);
                match field {
                    "compute_type" => m.compute_type = text,
                    "instance" => m.instance = text,
                    _ => m.held_by = text,
                }
            }
            continue;
        }
        match field {
            "host" => n.host = Some(text),
            "ssh_port" => n.ssh_port = text.parse().unwrap_or(22),
            "ssh_host_key" => n.ssh_host_key = Some(text),
            "ssh_user" => n.ssh_user = Some(text),
            "yggdrasil_public_key" => n.overlay_public_key = Some(text),
            "yggdrasil_address" => n.overlay_address = text.parse().ok(),
            "yggdrasil_port" => n.overlay_port = text.parse().ok(),
            "ssh_via" => n.ssh_via = hops(Some(&text)),
            "yggdrasil_since" => n.overlay_since = text.parse().ok(),
            // The keys come sorted: `yggdrasil_admits_upto` (ours) after `yggdrasil_admits`
            // (an earlier version's, which a node removes when it publishes ours).
            "yggdrasil_admits" => {
                n.overlay_admits = Some(Admits::Ids(
                    text.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
                ))
            }
            "yggdrasil_admits_upto" => {
                n.overlay_admits = match text.as_str() {
                    ADMITS_ALL => Some(Admits::All),
                    upto => upto.parse().ok().map(Admits::UpTo),
                }
            }
            "consul_role" => {
                n.consul_role = match text.as_str() {
                    "server" => Some(Role::Server),
                    "client" => Some(Role::Client),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    for n in out.iter_mut().filter(|n| unusable.contains(&n.id)) {
        n.host = None;
    }
    out
}

/// The hops of a recorded jump chain (`ssh_via`: comma-separated, outermost first).
pub fn hops(recorded: Option<&str>) -> Vec<String> {
    recorded
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect()
}

/// Removes every neighbour for which `gone` holds (all its keys). Returns how many.
pub fn remove_where(mapping: &mut Mapping, gone: impl Fn(&Neighbour) -> bool) -> usize {
    let prefixes: Vec<String> = all(mapping)
        .iter()
        .filter(|n| gone(n))
        .map(|n| format!("{NEIGHBOURS}/{}/", n.id))
        .collect();
    for prefix in &prefixes {
        mapping.retain(|k, _| !k.starts_with(prefix));
    }
    prefixes.len()
}

/// Drops the entries of the machine at `host:port` from this machine's mutable config (a
/// machine that is gone: nothing should keep dialing or asking it). Returns their ids.
pub fn forget_locally(paths: &crate::sys::paths::Paths, host: &str, port: u16) -> anyhow::Result<Vec<String>> {
    crate::config::edit::update(paths, |mapping| {
        let at = |n: &Neighbour| n.host.as_deref() == Some(host) && n.ssh_port == port;
        let ids: Vec<String> = all(mapping).into_iter().filter(|n| at(n)).map(|n| n.id).collect();
        remove_where(mapping, at);
        Ok(ids)
    })
}

/// The consul role of each neighbour: its recorded role, else (an entry from before roles were
/// recorded) server for the first `servers` nodes by id that have none recorded.
pub fn roles(neighbours: &[Neighbour], servers: usize) -> Vec<Role> {
    let recorded = neighbours
        .iter()
        .filter(|n| n.consul_role == Some(Role::Server))
        .count();
    let mut free = servers.saturating_sub(recorded);
    neighbours
        .iter()
        .map(|n| {
            n.consul_role.unwrap_or_else(|| {
                if free > 0 {
                    free -= 1;
                    Role::Server
                } else {
                    Role::Client
                }
            })
        })
        .collect()
}

/// The role a new node gets: server while fewer than `servers` nodes (other than `id`) are.
pub fn role_for_new(mapping: &Mapping, id: &str, servers: usize) -> Role {
    let others: Vec<Neighbour> = all(mapping).into_iter().filter(|n| n.id != id).collect();
    let taken = roles(&others, servers).iter().filter(|r| **r == Role::Server).count();
    if taken < servers { Role::Server } else { Role::Client }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(m: &mut Mapping, id: &str, fields: &[(&str, &str)]) {
        for (f, v) in fields {
            m.insert(key(id, f), Value::from(*v));
        }
    }

    #[test]
    fn a_spawned_machine_is_on_record_and_odd_values_are_left_out() {
        let mut m = Mapping::new();
        let fields = [
            ("host", "10.0.0.2"),
            ("compute_type", "docker/headless"),
            ("instance", "4f1c"),
            ("held_by", "raptiformica-ab12"),
        ];
        entry(&mut m, "a", &fields);
        entry(&mut m, "b", &[("host", "10.0.0.3")]);
        entry(&mut m, "c", &[("host", "10.0.0.4"), ("held_by", "\u{1b}[2Jowned")]);
        let all = all(&m);
        let a = all[0].machine.as_ref().expect("on record");
        assert_eq!(a.describe(), "docker/headless, held by raptiformica-ab12");
        assert_eq!(a.instance, "4f1c");
        assert_eq!(all[1].machine, None);
        // A terminal escape is never shown; the neighbour itself stays usable.
        assert_eq!(all[2].machine, None);
        assert_eq!(all[2].host.as_deref(), Some("10.0.0.4"));
    }

    #[test]
    fn parses_entries_and_skips_what_does_not_parse() {
        let mut m = Mapping::new();
        entry(
            &mut m,
            "b",
            &[("host", "10.0.0.2"), ("ssh_port", "2222"), ("consul_role", "client")],
        );
        entry(
            &mut m,
            "a",
            &[
                ("host", "10.0.0.1"),
                ("yggdrasil_public_key", "k"),
                ("yggdrasil_address", "200::1"),
            ],
        );
        entry(&mut m, "c", &[("yggdrasil_address", "not an address")]);
        m.insert("raptiformica/meshnet/other".into(), Value::from("x"));
        let n = all(&m);
        assert_eq!(n.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(n[0].on_overlay());
        assert_eq!(n[1].ssh_port, 2222);
        assert_eq!(n[1].consul_role, Some(Role::Client));
        assert_eq!(n[2].overlay_address, None);
    }

    #[test]
    fn a_neighbour_whose_way_in_fails_its_check_is_never_dialed() {
        let mut m = Mapping::new();
        entry(&mut m, "evil", &[("host", "127.0.0.1 -oProxyCommand='touch /tmp/x'")]);
        entry(&mut m, "dash", &[("host", "-oProxyCommand=x")]);
        entry(&mut m, "port", &[("host", "10.0.0.3"), ("ssh_port", "abc")]);
        entry(&mut m, "via", &[("host", "10.0.0.4"), ("ssh_via", "j:22 -oX=y")]);
        entry(&mut m, "good", &[("host", "10.0.0.5"), ("ssh_port", "2222")]);
        let n = all(&m);
        assert_eq!(n.len(), 5, "the entries are kept (their ids count), only unreachable");
        let hosts: Vec<(&str, Option<&str>)> = n.iter().map(|n| (n.id.as_str(), n.host.as_deref())).collect();
        assert_eq!(
            hosts,
            [
                ("dash", None),
                ("evil", None),
                ("good", Some("10.0.0.5")),
                ("port", None),
                ("via", None)
            ]
        );
    }

    #[test]
    fn removing_a_neighbour_takes_all_its_keys_and_only_its_keys() {
        let mut m = Mapping::new();
        entry(&mut m, "a", &[("host", "h1"), ("ssh_port", "22")]);
        entry(&mut m, "ab", &[("host", "h2")]);
        assert_eq!(remove_where(&mut m, |n| n.host.as_deref() == Some("h1")), 1);
        assert_eq!(all(&m).iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["ab"]);
    }

    #[test]
    fn only_the_configured_number_of_servers() {
        let mut m = Mapping::new();
        for id in ["a", "b", "c"] {
            entry(&mut m, id, &[("host", id), ("consul_role", "server")]);
        }
        assert_eq!(role_for_new(&m, "d", 3), Role::Client);
        assert_eq!(role_for_new(&m, "d", 5), Role::Server);
        // A re-slaved server keeps counting itself out.
        assert_eq!(role_for_new(&m, "a", 3), Role::Server);
        let mut legacy = Mapping::new();
        for id in ["x", "y", "z", "w"] {
            entry(&mut legacy, id, &[("host", id)]);
        }
        let r = roles(&all(&legacy), 3);
        assert_eq!(r.iter().filter(|r| **r == Role::Server).count(), 3);
    }
}
