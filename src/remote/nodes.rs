//! Reaching the cluster from a machine that is not a node (the host that spawned it): run a
//! command on the first known node that answers over SSH.

use anyhow::bail;

use crate::config::context::Context;
use crate::mesh::neighbours;
use crate::remote::ssh::{Identity, Remote, RemoteOutput};

/// How many nodes are tried before giving up.
const TRIES: usize = 3;

/// Runs `command` (with the node's paths, see [`slave::on_node`]) on the first known node,
/// other than those in `skip`, that answers and runs it successfully. Returns its id and output.
pub async fn on_a_node(
    ctx: &Context,
    identity: &Identity,
    what: &str,
    command: &str,
    skip: &[String],
) -> anyhow::Result<(String, RemoteOutput)> {
    on_a_node_settled(ctx, identity, what, command, skip, &[]).await
}

/// As [`on_a_node`], but a run that ends with one of the `settled` exit codes is the answer
/// (returned, with its code), never tried again on another node: the command did its part
/// there (e.g. appended an entry) and says what is left.
pub async fn on_a_node_settled(
    ctx: &Context,
    identity: &Identity,
    what: &str,
    command: &str,
    skip: &[String],
    settled: &[i32],
) -> anyhow::Result<(String, RemoteOutput)> {
    let config = ctx.config()?;
    let mut failures = Vec::new();
    for n in neighbours::all(&config.mapping)
        .into_iter()
        .filter(|n| n.host.is_some() && !skip.contains(&n.id))
        .take(TRIES)
    {
        let host = n.host.clone().expect("filtered");
        let result = async {
            let remote =
                Remote::connect_known(identity, &host, n.ssh_port, n.ssh_host_key.as_deref(), &n.ssh_via).await?;
            let out = remote
                .sh(&crate::remote::on_node::on_node(command), None)
                .await
                .and_then(|out| remote.checked(what, out, settled));
            remote.close().await;
            out
        }
        .await;
        match result {
            Ok(out) => return Ok((n.id, out)),
            Err(e) => failures.push(format!("  {} ({host}:{}): {e:#}", n.id, n.ssh_port)),
        }
    }
    if failures.is_empty() {
        bail!("no known node to ask (none under `{}`)", neighbours::NEIGHBOURS);
    }
    bail!("no node could {what}:\n{}", failures.join("\n"))
}

/// Removes the neighbour entries `ids` from the cluster's shared config, through one node.
pub async fn forget_neighbours(ctx: &Context, identity: &Identity, ids: &[String]) -> anyhow::Result<String> {
    // Each machine leaves consul too (a lost server leaves raft's configuration with it); the
    // token goes by the environment, never on a command line.
    let script: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{{ CONSUL_HTTP_TOKEN=\"$(cat {cache}/{token} 2>/dev/null)\" consul force-leave {node} >/dev/null 2>&1 || true; }} && \
                 raptiformica config unset {key} >/dev/null",
                cache = crate::remote::on_node::REMOTE_CACHE,
                token = crate::consensus::acl::TOKEN_FILE,
                node = crate::sys::quote::quote(id),
                key = crate::sys::quote::quote(&format!("{}/{id}", neighbours::NEIGHBOURS))
            )
        })
        .collect();
    let (node, _) = on_a_node(ctx, identity, "remove the neighbour entries", &script.join(" && "), ids).await?;
    Ok(node)
}
