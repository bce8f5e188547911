//! Renumbering: when no known node answers at its last address, the workstation agent asks
//! each back-end where this workstation's machines are now (`get_hostname`). The ones that
//! moved take their new address in the instance records and the neighbour entries here, and
//! each is re-meshed there (`mesh --with-config -`, reached at its new address with the host
//! key the cluster recorded for it) with the whole neighbour list: the overlay links form again
//! (a link needs one side to know the other's address), consul, whose addresses are on the
//! overlay, finds its raft peers where they were and keeps its state, and the new addresses go
//! into the shared config (pending on a node until consul answers, then pushed).

use serde_json::Value;

use super::status::Recorder;
use crate::compute::{self, Instance};
use crate::config::context::Context;
use crate::config::{self, Mapping};
use crate::mesh::neighbours::{self, Neighbour};
use crate::remote::ssh::{Identity, Remote};

/// One machine of ours that moved: its node id and its old and new host.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    pub id: String,
    pub from: String,
    pub to: String,
}

/// Finds this workstation's machines again (see the module's doc). The nodes that moved.
pub async fn find_again(ctx: &Context, identity: &Identity, rec: &Recorder) -> anyhow::Result<Vec<Moved>> {
    let c = ctx.clone();
    let moved = tokio::task::spawn_blocking(move || where_now(&c)).await??;
    if moved.is_empty() {
        return Ok(moved);
    }
    for m in &moved {
        rec.event("renumber", format!("node {} moved from {} to {}", m.id, m.from, m.to));
    }
    let config = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || config::load_over(&ctx.paths, None)).await??
    };
    let list = neighbour_list(&config.mapping);
    let bytes = serde_json::to_vec(&list)?;
    let nodes = neighbours::all(&list);
    let remesh = moved
        .iter()
        .filter_map(|m| nodes.iter().find(|n| n.id == m.id))
        .map(|n| async {
            let result = async {
                let remote = Remote::connect_known(identity, n).await?;
                let out = crate::provision::assimilate::mesh_on(&remote, &bytes, false).await;
                remote.close().await;
                out
            }
            .await;
            (n.id.clone(), result)
        });
    for (id, result) in futures_util::future::join_all(remesh).await {
        match result {
            Ok(summary) => rec.event("renumber", format!("node {id} re-meshed at its new address: {summary}")),
            Err(e) => rec.event("error", format!("re-meshing node {id} at its new address: {e:#}")),
        }
    }
    Ok(moved)
}

/// Asks the back-ends where this workstation's instances are; those at a new address take it
/// in their records and in the neighbour entries of the cache.
fn where_now(ctx: &Context) -> anyhow::Result<Vec<Moved>> {
    let config = ctx.config()?;
    let known = neighbours::all(&config.mapping);
    let mut moved = Vec::new();
    for mut instance in Instance::list(&ctx.paths.machines_dir()) {
        let (Some(old), port) = (instance.host.clone(), instance.port.unwrap_or(22)) else {
            continue;
        };
        let Ok(ty) = compute::find(&config, &instance.compute, &instance.server) else {
            continue;
        };
        let now = match compute::current_host(ctx, &ty, &instance) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!("where is instance {} now? {e:#}", instance.id);
                continue;
            }
        };
        if now == old {
            continue;
        }
        let Some(node) = node_at(&known, &old, port) else {
            continue;
        };
        instance.host = Some(now.clone());
        instance.save()?;
        moved.push(Moved {
            id: node.id.clone(),
            from: old,
            to: now,
        });
    }
    if !moved.is_empty() {
        config::edit::update(&ctx.paths, |m| {
            for mv in &moved {
                m.insert(neighbours::key(&mv.id, "host"), Value::from(mv.to.clone()));
            }
            Ok(())
        })?;
    }
    Ok(moved)
}

/// The known node slaved at `host:port`.
fn node_at<'a>(known: &'a [Neighbour], host: &str, port: u16) -> Option<&'a Neighbour> {
    known
        .iter()
        .find(|n| n.host.as_deref() == Some(host) && n.ssh_port == port)
}

/// Every neighbour key of `mapping`: what a node re-meshed with learns.
fn neighbour_list(mapping: &Mapping) -> Mapping {
    crate::sys::mapping::tree(mapping, neighbours::NEIGHBOURS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_is_the_neighbours_only_and_a_node_is_found_by_its_address() {
        let mut m = Mapping::new();
        m.insert(neighbours::key("a", "host"), json!("10.0.0.2"));
        m.insert(neighbours::key("a", "ssh_port"), json!("22"));
        m.insert(neighbours::key("b", "host"), json!("10.0.0.3"));
        m.insert(neighbours::key("b", "ssh_port"), json!("2222"));
        m.insert("raptiformica/meshnet/consul/password".into(), json!("secret"));
        m.insert("raptiformica/x".into(), json!("y"));
        let list = neighbour_list(&m);
        assert_eq!(list.len(), 4);
        assert!(list.keys().all(|k| k.starts_with(neighbours::NEIGHBOURS)));
        let known = neighbours::all(&list);
        assert_eq!(node_at(&known, "10.0.0.3", 2222).map(|n| n.id.as_str()), Some("b"));
        assert!(node_at(&known, "10.0.0.3", 22).is_none());
        assert!(node_at(&known, "10.0.0.9", 22).is_none());
    }
}
