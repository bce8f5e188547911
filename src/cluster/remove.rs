//! `remove NODE`: a machine that no longer answers leaves the cluster, from any machine.
//!
//! On a node, through its own consul: the member is forced out (`force-leave`: the others see it
//! `left`, a server leaves raft's configuration), its neighbour entry leaves the shared config
//! (no node dials it or links with it any more: each agent renders its overlay links from the
//! neighbours), and this node's cache forgets it. Elsewhere (a workstation) the same command
//! runs on a node that answers, over SSH, the removed one dialed last; this machine's cache
//! forgets it too, and an instance this machine started for it is cleaned up here. Another
//! machine's instance is left to its holder (`prune` there, or its agent).
//!
//! Refused: a machine that answers (alive among the members) unless `--force`; any removal
//! while the cluster has no leader (nothing could be committed: consensus is rebuilt first);
//! one that would leave fewer alive voting servers than a quorum with no client to promote.

use std::collections::HashSet;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::config::context::Context;
use crate::consensus::SharedStore as _;
use crate::consensus::api::{AgentMember, ConsulApi, Serf};
use crate::mesh::neighbours::{self, Neighbour};
use crate::sys::paths::Paths;

/// What `remove` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    /// The node's id (its consul name).
    pub id: String,
    /// Where it was reached, as its neighbour entry said.
    pub host: Option<String>,
    /// Its status among the members before (`failed`, `left`, `alive`, or `none`).
    pub was: String,
    /// The node that did it: `this node`, or the one reached over SSH.
    pub through: String,
    /// The instance of this machine's back-end that was cleaned up for it, if any.
    #[serde(default)]
    pub instance: Option<String>,
}

/// What the refusals look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// The target's status among the members (None: not a member).
    pub status: Option<Serf>,
    /// It votes in raft.
    pub voter: bool,
    /// The voting servers alive, the target included if it is one.
    pub alive_voters: usize,
    /// Alive clients the agents could promote.
    pub alive_clients: usize,
    pub has_leader: bool,
    /// How many voting servers the cluster wants (3 or 5).
    pub servers: usize,
}

/// Why `target` may not be removed, if it may not.
pub fn refusal(target: &str, s: &Seen, force: bool) -> Option<String> {
    if s.status == Some(Serf::Alive) && !force {
        return Some(format!(
            "{target} answers (it is alive among the members): `remove` is for a machine that no longer \
             answers; `--force` removes it anyway (it keeps running, cut off; `raptiformica ssh {target} -- \
             raptiformica clean` wipes it instead)"
        ));
    }
    if !s.has_leader {
        return Some(format!(
            "the cluster has no leader, so removing {target} could not be committed; consensus is rebuilt \
             first (the agents do after agent/recovery_grace, or `raptiformica agent --recover` on a survivor)"
        ));
    }
    let quorum = s.servers / 2 + 1;
    let left = s
        .alive_voters
        .saturating_sub(usize::from(s.voter && s.status == Some(Serf::Alive)));
    if s.voter && left < quorum && s.alive_clients == 0 {
        return Some(format!(
            "{target} is a voting server: without it {left} server(s) would be alive, fewer than a quorum of \
             {quorum}, and there is no client to promote; spawn or slave a machine first"
        ));
    }
    None
}

/// The id of the node `name` names: its id (or the start of it, at least 4 characters, when
/// only one matches), its consul name, or the host (`host` or `host:port`) it was reached at.
pub fn resolve(known: &[Neighbour], members: &[AgentMember], name: &str) -> anyhow::Result<String> {
    if known.iter().any(|n| n.id == name) || members.iter().any(|m| m.name == name) {
        return Ok(name.to_string());
    }
    let (host, port) = match name.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
        _ => (name, None),
    };
    let at: Vec<&Neighbour> = known
        .iter()
        .filter(|n| n.host.as_deref() == Some(host) && port.is_none_or(|p| n.ssh_port == p))
        .collect();
    let prefixed: Vec<&Neighbour> = if name.len() >= 4 {
        known.iter().filter(|n| n.id.starts_with(name)).collect()
    } else {
        Vec::new()
    };
    match (at.as_slice(), prefixed.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one.id.clone()),
        ([], []) => bail!(
            "no node is named `{name}` (not a neighbour's id, a member's name or a host in `{}`); \
             `raptiformica members` lists them",
            neighbours::NEIGHBOURS
        ),
        _ => {
            let ids: Vec<&str> = at.iter().chain(&prefixed).map(|n| n.id.as_str()).collect();
            bail!("`{name}` names several nodes ({}); give the id", ids.join(", "))
        }
    }
}

/// Removes the node `name` names from the cluster (see the module's doc).
pub async fn remove(ctx: &Context, name: &str, force: bool) -> anyhow::Result<Removed> {
    let config = ctx.config()?;
    let known = neighbours::all(&config.mapping);
    let mut removed = if crate::config::shared::consul_configured(&ctx.paths) {
        on_this_node(ctx, &known, name, force).await?
    } else {
        let removed = through_a_node(ctx, &known, name, force).await?;
        // This machine forgets it too.
        crate::config::edit::forget_tree(&ctx.paths, &format!("{}/{}", neighbours::NEIGHBOURS, removed.id))?;
        removed
    };
    if let Some(n) = known.iter().find(|n| n.id == removed.id) {
        removed.instance = clean_own_instance(ctx, n)?;
        if removed.host.is_none() {
            removed.host = n.host.clone();
        }
    }
    Ok(removed)
}

/// The removal through this node's own consul.
async fn on_this_node(ctx: &Context, known: &[Neighbour], name: &str, force: bool) -> anyhow::Result<Removed> {
    let api = ConsulApi::local()?;
    let members = api
        .members()
        .await
        .context("asking this node's consul for the members")?;
    let id = resolve(known, &members, name)?;
    let member = members.iter().find(|m| m.name == id);
    let has_leader = matches!(api.leader().await, Ok(Some(_)));
    let voters: HashSet<String> = match api.raft().await {
        Ok(raft) => raft.into_iter().filter(|s| s.voter).map(|s| s.node).collect(),
        Err(_) => HashSet::new(),
    };
    let alive = |m: &&AgentMember| m.status == Serf::Alive;
    let seen = Seen {
        status: member.map(|m| m.status),
        voter: voters.contains(&id),
        alive_voters: members
            .iter()
            .filter(alive)
            .filter(|m| voters.contains(&m.name))
            .count(),
        alive_clients: members
            .iter()
            .filter(alive)
            .filter(|m| m.tags.get("role").map(String::as_str) != Some("consul"))
            .count(),
        has_leader,
        servers: crate::mesh::plan::servers(&ctx.config()?.mapping)?,
    };
    if let Some(why) = refusal(&id, &seen, force) {
        bail!("{why}");
    }
    forget(&api, &ctx.paths, &id, member.is_some()).await?;
    Ok(Removed {
        host: known.iter().find(|n| n.id == id).and_then(|n| n.host.clone()),
        was: member.map_or("none", |m| m.status.name()).to_string(),
        id,
        through: "this node".into(),
        instance: None,
    })
}

/// On a node: forces `id` out of the members (when it is one; with the agents' token, which
/// `force-leave` takes), and its neighbour entry out of the shared config and this node's
/// cache. What `remove` and the agents' eviction of a member failed past the grace do.
pub async fn forget(api: &ConsulApi, paths: &Paths, id: &str, member: bool) -> anyhow::Result<()> {
    if member {
        let token = crate::consensus::acl::evict_token(paths);
        api.force_leave(id, token.as_deref())
            .await
            .with_context(|| format!("forcing {id} out of the members"))?;
    }
    let key = format!("{}/{id}", neighbours::NEIGHBOURS);
    api.delete_tree(&key)
        .await
        .with_context(|| format!("removing {id}'s neighbour entry from the shared config"))?;
    crate::config::edit::forget_tree(paths, &key)
}

/// The removal run on a node that answers, never the removed one.
async fn through_a_node(ctx: &Context, known: &[Neighbour], name: &str, force: bool) -> anyhow::Result<Removed> {
    // Resolved here when this machine knows it, so the node it names is not dialed first.
    let id = resolve(known, &[], name).unwrap_or_else(|_| name.to_string());
    let command = format!(
        "raptiformica --json remove {}{}",
        crate::sys::quote::quote(&id),
        if force { " --force" } else { "" }
    );
    let out = super::through_a_node_settled(ctx, "remove a node", &command, &[id], &[1]).await?;
    let node = out.node;
    if out.code != Some(0) {
        let why = out.stderr.trim().trim_start_matches("error: ");
        bail!("node {node} refused: {why}");
    }
    let mut removed: Removed = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("node {node} answered `remove` with no result: {}", out.stdout.trim()))?;
    removed.through = format!("node {node} (through SSH)");
    Ok(removed)
}

/// Cleans up the instance this machine's back-end started for `n`, if it holds one (matched by
/// the instance recorded in its entry, or by its address); its name.
fn clean_own_instance(ctx: &Context, n: &Neighbour) -> anyhow::Result<Option<String>> {
    let instances = crate::compute::Instance::list(&ctx.paths.machines_dir());
    let Some(instance) = instances.iter().find(|i| {
        n.machine.as_ref().is_some_and(|m| m.instance == i.id)
            || (i.host.is_some() && i.host == n.host && i.port.unwrap_or(22) == n.ssh_port)
    }) else {
        return Ok(None);
    };
    let config = ctx.config()?;
    let ty = crate::compute::find(&config, &instance.compute, &instance.server)?;
    crate::compute::clean_up(ctx, &ty, instance)
        .with_context(|| format!("cleaning up instance {} of {}", instance.id, n.id))?;
    Ok(Some(instance.id.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(status: Option<Serf>, voter: bool, alive_voters: usize, alive_clients: usize) -> Seen {
        Seen {
            status,
            voter,
            alive_voters,
            alive_clients,
            has_leader: true,
            servers: 3,
        }
    }

    #[test]
    fn a_machine_that_answers_needs_force_and_nothing_goes_without_a_leader() {
        assert!(refusal("n", &seen(Some(Serf::Failed), false, 3, 0), false).is_none());
        assert!(
            refusal("n", &seen(None, false, 3, 0), false).is_none(),
            "not a member any more"
        );
        let alive = seen(Some(Serf::Alive), false, 3, 0);
        assert!(refusal("n", &alive, false).unwrap().contains("--force"));
        assert!(refusal("n", &alive, true).is_none());
        let mut no_leader = seen(Some(Serf::Failed), false, 1, 0);
        no_leader.has_leader = false;
        assert!(refusal("n", &no_leader, true).unwrap().contains("no leader"));
    }

    #[test]
    fn a_server_goes_only_if_a_quorum_stays_or_a_client_can_be_promoted() {
        // A failed server of three: two alive, a quorum.
        assert!(refusal("s", &seen(Some(Serf::Failed), true, 2, 0), false).is_none());
        // An alive server forced out of two alive: one left, no client.
        let r = refusal("s", &seen(Some(Serf::Alive), true, 2, 0), true).unwrap();
        assert!(r.contains("fewer than a quorum of 2"), "{r}");
        // ... with a client the agents promote.
        assert!(refusal("s", &seen(Some(Serf::Alive), true, 2, 1), true).is_none());
    }

    fn node(id: &str, host: &str, port: u16) -> Neighbour {
        Neighbour {
            host: Some(host.into()),
            ssh_port: port,
            ..Neighbour::unknown(id)
        }
    }

    #[test]
    fn a_node_is_named_by_id_prefix_host_or_host_and_port() {
        let known = [
            node("3f2a9c0d1e2b4a5f", "192.0.2.7", 22),
            node("3f2b000000000000", "192.0.2.8", 22),
            node("77aa000000000000", "192.0.2.8", 2222),
        ];
        assert_eq!(resolve(&known, &[], "3f2a9c0d1e2b4a5f").unwrap(), "3f2a9c0d1e2b4a5f");
        assert_eq!(resolve(&known, &[], "3f2a").unwrap(), "3f2a9c0d1e2b4a5f");
        assert_eq!(resolve(&known, &[], "192.0.2.7").unwrap(), "3f2a9c0d1e2b4a5f");
        assert_eq!(resolve(&known, &[], "192.0.2.8:2222").unwrap(), "77aa000000000000");
        let e = resolve(&known, &[], "192.0.2.8").unwrap_err().to_string();
        assert!(e.contains("several"), "{e}");
        assert!(resolve(&known, &[], "3f2").is_err(), "too short a prefix");
        assert!(resolve(&known, &[], "3f2").unwrap_err().to_string().contains("members"));
    }
}
