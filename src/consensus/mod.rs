//! Consensus: consul on every node, bound to its overlay address, and the shared config in
//! consul's KV, behind the [`SharedStore`] seam.

pub mod acl;
pub mod agent;
pub mod api;
pub mod event;
pub mod lock;
pub mod members;
pub mod snapshot;
pub mod state_log;

use crate::sys::mapping::Mapping;

/// Where the shared config lives once a cluster has consensus.
#[allow(async_fn_in_trait)]
pub trait SharedStore {
    /// Every key under `raptiformica/` (empty when the store is empty).
    async fn read_all(&self) -> anyhow::Result<Mapping>;
    /// Sets these keys (idempotent: repeating a write after an unclear failure is safe).
    async fn set_many(&self, entries: &Mapping) -> anyhow::Result<()>;
    /// Stores `mapping` only where the keys are absent; false if another writer got there first.
    async fn seed(&self, mapping: &Mapping) -> anyhow::Result<bool>;
    /// Removes `key` and everything below it.
    async fn delete_tree(&self, key: &str) -> anyhow::Result<()>;
}
