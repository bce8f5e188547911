//! Which new node becomes a consul server, decided before its overlay key is made: a
//! server's key roots the overlay's tree (see [`root_key`](crate::mesh::root_key)), so the
//! slaver must know the role when it asks the node for its identity, not only when it records
//! the entry. Slaves running side by side in this process (`spawn --count 10` on an empty
//! cluster) reserve their server slots here, so exactly the nodes that get a hub's key are
//! the ones recorded as servers.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::config::Mapping;
use crate::mesh::neighbours::{self, Role};

/// The nodes of this process that hold a server slot they have not recorded yet.
static RESERVED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A node's slot, held until the node's entry is recorded (or the slave gave up).
#[derive(Debug)]
pub struct Slot {
    id: String,
    role: Role,
}

impl Slot {
    /// The role the node gets.
    pub fn role(&self) -> Role {
        self.role
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.role == Role::Server {
            reserved().remove(&self.id);
        }
    }
}

fn reserved() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    RESERVED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The role of node `id` as `mapping` records it, else a new node's: server while fewer than
/// `servers` other nodes are servers, recorded or reserved by slaves of this process.
pub fn reserve(mapping: &Mapping, id: &str, servers: usize) -> Slot {
    let mut held = reserved();
    let role = recorded(mapping, id).unwrap_or_else(|| {
        let taken = taken(mapping, id, servers, &held);
        if taken < servers { Role::Server } else { Role::Client }
    });
    if role == Role::Server {
        held.insert(id.to_string());
    }
    Slot {
        id: id.to_string(),
        role,
    }
}

/// The role to record for the node holding `slot`, in `mapping` as it is when the entry is
/// written: the recorded one (a re-slave), else the slot's, unless other slaves recorded
/// servers meanwhile that fill every slot (another process slaving at the same time).
pub fn role_to_record(mapping: &Mapping, slot: &Slot, servers: usize) -> Role {
    if let Some(role) = recorded(mapping, &slot.id) {
        return role;
    }
    let held = reserved();
    match slot.role {
        Role::Server if taken(mapping, &slot.id, servers, &held) < servers => Role::Server,
        _ => Role::Client,
    }
}

fn recorded(mapping: &Mapping, id: &str) -> Option<Role> {
    match mapping
        .get(&neighbours::key(id, "consul_role"))
        .and_then(|v| v.as_str())
    {
        Some("server") => Some(Role::Server),
        Some("client") => Some(Role::Client),
        _ => None,
    }
}

/// Server slots taken by nodes other than `id`: recorded (or, for entries from before roles
/// were recorded, implied) and reserved here by others not recorded yet.
fn taken(mapping: &Mapping, id: &str, servers: usize, held: &BTreeSet<String>) -> usize {
    let others: Vec<neighbours::Neighbour> = neighbours::all(mapping).into_iter().filter(|n| n.id != id).collect();
    let in_mapping = neighbours::roles(&others, servers)
        .iter()
        .filter(|r| **r == Role::Server)
        .count();
    let pending = held
        .iter()
        .filter(|h| h.as_str() != id && recorded(mapping, h).is_none())
        .count();
    in_mapping + pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn record(m: &mut Mapping, id: &str, role: &str) {
        m.insert(neighbours::key(id, "host"), Value::from(id));
        m.insert(neighbours::key(id, "consul_role"), Value::from(role));
    }

    #[test]
    fn side_by_side_slaves_of_an_empty_cluster_get_exactly_three_server_slots() {
        // Unique ids: the reservations are process-wide and tests run in parallel.
        let ids: Vec<String> = (0..10).map(|i| format!("slots-a-{i}")).collect();
        let mut m = Mapping::new();
        let slots: Vec<Slot> = ids.iter().map(|id| reserve(&m, id, 3)).collect();
        let servers: Vec<&Slot> = slots.iter().filter(|s| s.role() == Role::Server).collect();
        assert_eq!(servers.len(), 3);
        // Recorded in any order, the reserved ones are the servers.
        for s in slots.iter().rev() {
            let role = role_to_record(&m, s, 3);
            assert_eq!(role, s.role(), "{}", s.id);
            record(&mut m, &s.id, role.as_str());
        }
        drop(slots);
        assert_eq!(reserve(&m, "slots-a-new", 3).role(), Role::Client);
    }

    #[test]
    fn a_recorded_role_is_kept_and_a_dropped_slot_frees_its_place() {
        let mut m = Mapping::new();
        record(&mut m, "slots-b-0", "server");
        record(&mut m, "slots-b-1", "client");
        assert_eq!(reserve(&m, "slots-b-1", 3).role(), Role::Client);
        let a = reserve(&m, "slots-b-2", 3);
        let b = reserve(&m, "slots-b-3", 3);
        assert_eq!((a.role(), b.role()), (Role::Server, Role::Server));
        assert_eq!(reserve(&m, "slots-b-4", 3).role(), Role::Client);
        drop(b); // that slave failed
        let c = reserve(&m, "slots-b-5", 3);
        assert_eq!(c.role(), Role::Server);
        // Another process recorded a server meanwhile: the slot is no longer free.
        record(&mut m, "slots-b-6", "server");
        assert_eq!(role_to_record(&m, &a, 3), Role::Client);
    }
}
