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
            let remote = Remote::connect_known(identity, &n).await?;
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
    // token goes by the environment, never on a command line. `force-leave` takes the agent
    // token (see `acl::evict_token`), which the node's consul config holds.
    let script: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                "{{ CONSUL_HTTP_TOKEN=\"$({agent_token})\" consul force-leave {node} >/dev/null 2>&1 || true; }} && \
                 raptiformica config unset {key} >/dev/null",
                agent_token = agent_token_from_config(crate::remote::on_node::REMOTE_CACHE),
                node = crate::sys::quote::quote(id),
                key = crate::sys::quote::quote(&format!("{}/{id}", neighbours::NEIGHBOURS))
            )
        })
        .collect();
    let (node, _) = on_a_node(ctx, identity, "remove the neighbour entries", &script.join(" && "), ids).await?;
    Ok(node)
}

/// A shell command that prints the agent token (`acl.tokens.agent`) of the rendered consul
/// config under cache dir `cache`, which `mesh` writes one key per line.
fn agent_token_from_config(cache: &str) -> String {
    format!("sed -n 's/^ *\"agent\": *\"\\([0-9a-f-]*\\)\".*/\\1/p' {cache}/mesh/consul.json 2>/dev/null | head -n 1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_token_is_read_from_the_rendered_consul_config() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("mesh")).unwrap();
        let token = uuid::Uuid::new_v4().to_string();
        let config = serde_json::json!({"acl": crate::consensus::acl::render(&token, false), "server": false});
        std::fs::write(
            dir.path().join("mesh/consul.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let out = crate::sys::process::Shell::new("the agent token", agent_token_from_config(&cache))
            .run()
            .unwrap();
        let (_, secret) = crate::consensus::acl::agent_token(&token);
        assert_eq!(out.stdout.trim(), secret);
        assert_ne!(secret, token, "not the cluster's token (the agent master there)");
    }
}
