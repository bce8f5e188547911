//! Making a provisioned machine a neighbour: its entry in the shared config, then `mesh` on
//! it and on the nodes that must learn of it.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::config::Config;
use crate::config::context::Context;
use crate::mesh::{OverlayIdentity, neighbours};
use crate::remote::on_node::{REMOTE_CACHE, on_node};
use crate::remote::ssh::{Identity, Remote, RemoteOutput};
use crate::sys::digest::node_id;
/// How long `raptiformica mesh` may run on a node (it waits up to 30 s for a leader).
const MESH_TIMEOUT: Duration = Duration::from_secs(180);

/// The machine's node id when it is an alive member of the cluster as its own consul agent
/// sees it, and this machine's config records it as reached the way we reached it now.
pub(super) async fn alive_member(config: &Config, remote: &Remote) -> Option<String> {
    let out = remote
        .sh(
            &on_node(&format!(
                "cat /etc/ssh/ssh_host_ed25519_key.pub && cat {REMOTE_CACHE}/{} 2>/dev/null | tr -d '\\n'; echo; \
                 raptiformica --json members",
                crate::provision::advertise::FILE
            )),
            None,
        )
        .await
        .ok()
        .filter(RemoteOutput::success)?;
    let mut lines = out.stdout.splitn(3, '\n');
    let (first, advertised, rest) = (lines.next()?, lines.next()?, lines.next()?);
    let id = node_id(&crate::sys::digest::host_key_fields(first));
    let (host, port) = match crate::provision::advertise::parse_reported(advertised) {
        Some(a) => (a.host, a.port),
        None => (remote.host.clone(), remote.port),
    };
    let members: Value = serde_json::from_str(rest).ok()?;
    let alive = members
        .as_array()?
        .iter()
        .any(|m| m["node"] == id.as_str() && m["status"] == "alive");
    let recorded = neighbours::all(&config.mapping).into_iter().find(|n| n.id == id)?;
    let same_way =
        recorded.host.as_deref() == Some(host.as_str()) && recorded.ssh_port == port && recorded.ssh_via == remote.via;
    (alive && same_way).then_some(id)
}

/// Records the node as a neighbour in the shared config (its SSH address, pinned host key,
/// overlay identity and consul role, under an id derived from its host key, stable across
/// re-slaves and address changes), then meshes it and re-meshes every other known node with
/// the new neighbour, concurrently. Returns a summary.
pub(super) async fn assimilate(
    ctx: &Context,
    identity: &Identity,
    remote: &Remote,
    server: Option<&str>,
    machine: Option<&neighbours::Machine>,
    after_mesh: bool,
) -> anyhow::Result<String> {
    let out = remote
        .run(
            "reading the host key",
            &format!(
                "cat /etc/ssh/ssh_host_ed25519_key.pub; cat {REMOTE_CACHE}/{} 2>/dev/null || true",
                crate::provision::advertise::FILE
            ),
        )
        .await?;
    let (first, rest) = out.stdout.split_once('\n').unwrap_or((&out.stdout, ""));
    let host_key = crate::sys::digest::host_key_fields(first);
    let id = node_id(&host_key);
    // The address the node advertises (NAT, a port forward) wins over the one we used.
    let (host, port) = match crate::provision::advertise::parse_reported(rest) {
        Some(a) => (a.host, a.port),
        None => (remote.host.clone(), remote.port),
    };
    let out = remote
        .run(
            "reading the overlay identity",
            &on_node("raptiformica mesh --identity-only"),
        )
        .await?;
    let overlay: OverlayIdentity = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("`raptiformica mesh --identity-only` printed no identity")?;

    let payload = crate::config::edit::update(&ctx.paths, |mapping| {
        // A machine re-created at the same address has a new key: drop its old entry.
        neighbours::remove_where(mapping, |n| {
            n.id != id && n.host.as_deref() == Some(host.as_str()) && n.ssh_port == port
        });
        let role = match mapping
            .get(&neighbours::key(&id, "consul_role"))
            .and_then(Value::as_str)
        {
            Some(r @ ("server" | "client")) => r.to_string(),
            _ => neighbours::role_for_new(mapping, &id, crate::mesh::plan::servers(mapping)?)
                .as_str()
                .to_string(),
        };
        let fields = [
            ("host", host.clone()),
            ("ssh_port", port.to_string()),
            ("ssh_host_key", host_key.clone()),
            ("yggdrasil_public_key", overlay.public_key.clone()),
            ("yggdrasil_address", overlay.address.to_string()),
            ("yggdrasil_port", overlay.port.to_string()),
            ("consul_role", role),
        ];
        for (field, value) in fields {
            mapping.insert(neighbours::key(&id, field), Value::from(value));
        }
        if let Some(machine) = machine {
            for (field, value) in machine.fields() {
                mapping.insert(neighbours::key(&id, field), Value::from(value));
            }
        }
        if let Some(server) = server {
            // Which server type it is: events can be meant for one (`event fire --server-type`).
            mapping.insert(neighbours::key(&id, "server_type"), Value::from(server));
        }
        let user = neighbours::key(&id, "ssh_user");
        if remote.login.is_root() {
            mapping.remove(&user);
        } else {
            mapping.insert(user, Value::from(remote.login.user.clone()));
        }
        let via = neighbours::key(&id, "ssh_via");
        if remote.via.is_empty() {
            mapping.remove(&via);
        } else {
            mapping.insert(via, Value::from(remote.via.join(",")));
        }
        // What every node must learn: the whole neighbour list.
        Ok(crate::sys::mapping::tree(mapping, neighbours::NEIGHBOURS))
    })?;
    let bytes = serde_json::to_vec(&payload)?;
    let others: Vec<neighbours::Neighbour> = neighbours::all(&payload)
        .into_iter()
        .filter(|n| n.id != id && n.host.is_some())
        .collect();

    // Before consensus, every known node is told (there is no KV to learn it from). From then
    // on one node that syncs it into consul's KV is enough: the agents follow the KV.
    let here = local_node_id(ctx);
    if others.len() < crate::mesh::plan::QUORUM {
        let remesh = others
            .iter()
            .map(|n| remesh_one(ctx, identity, n, &bytes, here.as_deref(), after_mesh));
        let (own, remeshed) = tokio::join!(
            mesh_on(remote, &bytes, after_mesh),
            futures_util::future::join_all(remesh)
        );
        let summary = own?;
        let failed: Vec<String> = remeshed
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| format!("{e:#}"))
            .collect();
        for f in &failed {
            tracing::warn!("{f}");
        }
        return Ok(format!(
            "{summary}; {} of {} other node(s) re-meshed",
            others.len() - failed.len(),
            others.len()
        ));
    }
    // Only the new node's entry: the cluster knows the rest better than this machine's cache.
    let entry = crate::sys::mapping::tree(&payload, &format!("{}/{id}", neighbours::NEIGHBOURS));
    let entry = serde_json::to_vec(&entry)?;
    let tell_one = async {
        let mut errors = Vec::new();
        for n in tell_order(&others, &id) {
            match remesh_one(ctx, identity, n, &entry, here.as_deref(), after_mesh).await {
                Ok(lines) if lines.contains("shared config: in consul's KV") => {
                    return Ok(n.id.clone());
                }
                Ok(lines) => errors.push(format!("{}: its consul did not take the change ({lines})", n.id)),
                Err(e) => errors.push(format!("{e:#}")),
            }
            if errors.len() >= 3 {
                break;
            }
        }
        Err(errors)
    };
    let (own, told) = tokio::join!(mesh_on(remote, &bytes, after_mesh), tell_one);
    let summary = own?;
    match told {
        Ok(id) => Ok(format!("{summary}; the cluster learnt it through node {id}")),
        Err(errors) => {
            for e in &errors {
                tracing::warn!("{e}");
            }
            Ok(format!(
                "{summary}; no other node took it into the shared config yet ({} tried)",
                errors.len()
            ))
        }
    }
}

/// The members a new node's entry is handed to, in the order tried: the clients from the new
/// node's place in the ring of ids on, the servers (the overlay's hubs, the busiest nodes)
/// last. So a batch of new nodes spreads over the members: in id order every new node told the
/// member with the lowest id, whose ten `mesh` runs took turns under its cache lock while the
/// hubs waited for the entries to dial the new nodes (a batch 90->100: 15 to 92 s each).
fn tell_order<'a>(others: &'a [neighbours::Neighbour], id: &str) -> Vec<&'a neighbours::Neighbour> {
    let (mut servers, mut clients): (Vec<_>, Vec<_>) = others
        .iter()
        .partition(|n| n.consul_role == Some(neighbours::Role::Server));
    for group in [&mut clients, &mut servers] {
        group.sort_by(|a, b| a.id.cmp(&b.id));
        let after = group.partition_point(|n| n.id.as_str() < id);
        group.rotate_left(after);
    }
    clients.extend(servers);
    clients
}

/// This machine's node id when it is a node itself (a node with an engine slaves the machines
/// it spawns): it is among the known nodes to re-mesh, and it re-meshes itself here, not over
/// SSH (no node is authorized to log in to itself).
fn local_node_id(ctx: &Context) -> Option<String> {
    if !crate::config::shared::is_node(&ctx.paths) {
        return None;
    }
    let key = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub").ok()?;
    Some(node_id(&crate::sys::digest::host_key_fields(&key)))
}

/// `mesh` on another known node with the new neighbour list (on this machine, when it is
/// that node: `here`).
async fn remesh_one(
    ctx: &Context,
    identity: &Identity,
    n: &neighbours::Neighbour,
    bytes: &[u8],
    here: Option<&str>,
    after_mesh: bool,
) -> anyhow::Result<String> {
    if here == Some(n.id.as_str()) {
        let shell = ctx
            .shell(
                "`raptiformica mesh` here",
                format!("\"$RAPTIFORMICA_BIN\" {}", mesh_args(after_mesh)),
            )
            .stdin(bytes.to_vec())
            .timeout(MESH_TIMEOUT);
        let out = tokio::task::spawn_blocking(move || shell.run()).await??;
        return Ok(mesh_summary(&out.stdout));
    }
    let host = n.host.clone().expect("filtered");
    let other = Remote::connect_known(identity, n).await?;
    let result = mesh_on(&other, bytes, after_mesh).await;
    other.close().await;
    result.with_context(|| format!("re-meshing {host}:{}", n.ssh_port))
}

/// `mesh`'s arguments: the neighbour list on stdin, and `--no-after-mesh` unless `after_mesh`.
fn mesh_args(after_mesh: bool) -> &'static str {
    if after_mesh {
        "mesh --with-config -"
    } else {
        "mesh --with-config - --no-after-mesh"
    }
}

/// Runs `raptiformica mesh` on a node with the neighbour list on stdin; returns its last line.
pub async fn mesh_on(remote: &Remote, payload: &[u8], after_mesh: bool) -> anyhow::Result<String> {
    let mut file = tempfile::tempfile()?;
    std::io::Write::write_all(&mut file, payload)?;
    std::io::Seek::rewind(&mut file)?;
    let out = remote
        .run_limited(
            "`raptiformica mesh`",
            &on_node(&format!("raptiformica {}", mesh_args(after_mesh))),
            Some(file),
            MESH_TIMEOUT,
        )
        .await?;
    Ok(mesh_summary(&out.stdout))
}

/// The lines of `mesh`'s output that say what it did.
fn mesh_summary(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| l.starts_with("consul:") || l.starts_with("overlay:") || l.starts_with("shared config:"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::neighbours::{Neighbour, Role};

    #[test]
    fn new_nodes_tell_different_members_and_the_hubs_last() {
        let node = |id: &str, server: bool| Neighbour {
            consul_role: Some(if server { Role::Server } else { Role::Client }),
            ..Neighbour::unknown(id)
        };
        let others = vec![
            node("10", true),
            node("20", false),
            node("30", false),
            node("40", true),
            node("50", false),
            node("60", true),
        ];
        let order = |id: &str| -> Vec<String> { tell_order(&others, id).iter().map(|n| n.id.clone()).collect() };
        assert_eq!(order("25"), ["30", "50", "20", "40", "60", "10"]);
        assert_eq!(order("55"), ["20", "30", "50", "60", "10", "40"]);
        assert_eq!(order("05"), ["20", "30", "50", "10", "40", "60"]);
        // Every member is still tried, each once.
        assert_eq!(order("35").len(), others.len());
    }
}
