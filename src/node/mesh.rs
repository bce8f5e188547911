//! `raptiformica mesh` on a node: join the overlay and, from three known nodes on, consensus.
//!
//! 1. Make sure the node's overlay keys exist (generated here, never sent anywhere).
//! 2. Merge what the caller handed over (new neighbours) and this node's own overlay identity
//!    into the shared config.
//! 3. Render yggdrasil's config (peers = the bounded links of `mesh::peering`, admitted keys = the cluster's)
//!    and start it, or add and remove peers at run time.
//! 4. Once three nodes are on the overlay: render consul's config (server or client), start it
//!    (or restart it when a setting changed), wait for a leader, then seed consul's KV from
//!    the cache if it is empty, else push our changes and cache the KV.
//! 5. Fire `after_mesh`.
//!
//! Runs are serialized by a lock in the mesh dir; running it again converges and is cheap.

use std::collections::BTreeSet;
use std::fs::File;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::config::context::Context;
use crate::config::{self, Mapping, MutableCache, shared};
use crate::consensus::SharedStore;
use crate::consensus::agent::{self, AgentSettings, ConsulAgent};
use crate::consensus::api::ConsulApi;
use crate::consensus::lock;
use crate::mesh::neighbours::{self, Role};
use crate::mesh::plan::{GOSSIP_KEY, PORT_KEY, QUORUM, overlay_plan, servers};
use crate::mesh::yggdrasil::Yggdrasil;
use crate::mesh::{NewKeys, Overlay, OverlayIdentity};
use crate::modules::hooks;
use crate::sys::daemon::Applied;

/// What to do.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Shared config entries to merge first (new neighbours, handed over by the slaver).
    pub with_config: Mapping,
    /// How long to wait for consul's leader before leaving the KV sync for later.
    pub wait: Duration,
    pub after_mesh: bool,
}

/// What happened to the shared config.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum KvSync {
    /// Fewer than three nodes: the cache is the shared config.
    NoConsensusYet,
    /// No leader within the wait: the cache is pushed on a later run.
    NoLeader,
    /// The KV was empty and got the cached config (in `seconds`).
    Seeded { keys: usize, seconds: f64 },
    /// Our changes went up and the KV came down into the cache.
    Synced { keys: usize },
    /// consul did not take our changes (or give the KV) in time: they are pending in the
    /// cache, and the node's agent pushes them (and reads the KV) once it answers.
    Pending,
}

/// The outcome, printed by the command.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub node_id: String,
    pub overlay: OverlayIdentity,
    pub overlay_daemon: String,
    pub peers: usize,
    pub nodes_known: usize,
    pub consul_role: Option<Role>,
    pub consul_daemon: Option<String>,
    pub leader: Option<String>,
    pub kv: KvSync,
    pub seconds: f64,
}

/// This node's id: from its SSH host key, like the id its slaver gave it.
pub fn own_id(overlay: &OverlayIdentity) -> String {
    let host_key = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub")
        .map(|k| crate::sys::digest::host_key_fields(&k))
        .unwrap_or_default();
    if host_key.is_empty() {
        crate::sys::digest::node_id(&overlay.public_key)
    } else {
        crate::sys::digest::node_id(&host_key)
    }
}

/// The overlay on this node, configured from `mapping`.
pub fn overlay(ctx: &Context, mapping: &Mapping) -> anyhow::Result<Yggdrasil> {
    let port = match mapping.get(PORT_KEY) {
        None => crate::mesh::plan::DEFAULT_PORT,
        Some(v) => config::known::parse_port(v).map_err(|e| {
            anyhow::anyhow!("`{PORT_KEY}`: {e}; fix it with `raptiformica config set {PORT_KEY} 12345`")
        })?,
    };
    let dir = shared::mesh_dir(&ctx.paths);
    create_private_dir(&dir)?;
    Ok(Yggdrasil::new(&dir, port))
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// How long an overlay runs before it no longer restarts to admit a new peer's key.
pub const SETTLED: Duration = Duration::from_secs(120);

/// A running consul server keeps its overlay up (its links carry raft), and so does a node
/// whose overlay has run for [`SETTLED`]: others route through it, and a batch of new nodes
/// restarted a score of them at once (every link and route through each dropped, members
/// suspected, a cluster of 50 saturated). A new peer links with it all the same: the plan has
/// the new node leave out the peers that do not admit it, and they dial it. A young node
/// (the others in its batch) restarts to admit a key, which costs little.
pub fn new_keys_policy(ctx: &Context) -> NewKeys {
    let dir = shared::mesh_dir(&ctx.paths);
    let consul = ConsulAgent::new(&dir);
    let server = consul.rendered().is_some_and(|c| c["server"].as_bool() == Some(true));
    let overlay = crate::sys::daemon::Daemon::new("yggdrasil", &dir);
    policy(server && consul.pid().is_some(), overlay.running_for())
}

fn policy(running_server: bool, overlay_running_for: Option<Duration>) -> NewKeys {
    if running_server || overlay_running_for.is_some_and(|d| d >= SETTLED) {
        NewKeys::Later
    } else {
        NewKeys::Restart
    }
}

/// Meshes this node.
pub async fn mesh(ctx: &Context, opts: &MeshOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let dir = shared::mesh_dir(&ctx.paths);
    create_private_dir(&dir)?;
    let lock = File::create(dir.join("mesh.lock"))?;
    lock.lock().context("cannot lock the mesh dir")?;

    let config = ctx.config()?;
    let ygg = overlay(ctx, &config.mapping)?;
    let me = ygg.identity()?;
    let id = own_id(&me);

    // What we tell the cluster: the caller's entries and our own overlay identity.
    let mut updates = opts.with_config.clone();
    updates.insert(
        neighbours::key(&id, "yggdrasil_public_key"),
        Value::from(me.public_key.clone()),
    );
    updates.insert(
        neighbours::key(&id, "yggdrasil_address"),
        Value::from(me.address.to_string()),
    );
    updates.insert(neighbours::key(&id, "yggdrasil_port"), Value::from(me.port.to_string()));
    let mut mapping = config.mapping.clone();
    mapping.extend(updates.clone());
    if !mapping.contains_key(GOSSIP_KEY) {
        // Normally the slaver generated it; a node meshed by hand makes the cluster's key.
        updates.insert(GOSSIP_KEY.into(), Value::from(agent::new_gossip_key()?));
        mapping.extend(updates.clone());
    }
    config::edit::set_many(&ctx.paths, &updates).await?;

    // The overlay.
    let all = neighbours::all(&mapping);
    let on_overlay: Vec<&neighbours::Neighbour> = all.iter().filter(|n| n.on_overlay()).collect();
    let plan = overlay_plan(&mapping, &id, &BTreeSet::new())?;
    let overlay_applied = crate::sys::process::blocking(|| ygg.apply(&plan, new_keys_policy(ctx)))?;
    let peers = plan.dial;

    let mut report = Report {
        node_id: id.clone(),
        overlay: me.clone(),
        overlay_daemon: overlay_applied.to_string(),
        peers: peers.len(),
        nodes_known: on_overlay.len(),
        consul_role: None,
        consul_daemon: None,
        leader: None,
        kv: KvSync::NoConsensusYet,
        seconds: 0.0,
    };

    if on_overlay.len() >= QUORUM {
        let roles = neighbours::roles(
            &on_overlay.iter().map(|n| (*n).clone()).collect::<Vec<_>>(),
            servers(&mapping)?,
        );
        let role = on_overlay
            .iter()
            .zip(&roles)
            .find(|(n, _)| n.id == id)
            .map(|(_, r)| *r)
            .unwrap_or(Role::Client);
        let ring: BTreeSet<String> = crate::mesh::plan::ring(&mapping, &id)
            .into_iter()
            .map(|n| n.id)
            .collect();
        let retry_join = join_targets(
            on_overlay
                .iter()
                .zip(&roles)
                .filter(|(n, _)| n.id != id)
                .filter_map(|(n, r)| Some((*r == Role::Server, n.id.clone(), n.overlay_address?)))
                .collect(),
            &ring,
        );
        // Normally uploaded by the slaver; a node meshed by hand makes the cluster's token.
        let acl_token = crate::consensus::acl::ensure_token(&ctx.paths)?;
        crate::consensus::api::use_token(acl_token.clone());
        let settings = AgentSettings {
            node_name: id.clone(),
            node_id: crate::sys::digest::consul_node_id(&me.public_key),
            bind: me.address,
            server: role == Role::Server,
            retry_join,
            encrypt: mapping
                .get(GOSSIP_KEY)
                .and_then(Value::as_str)
                .with_context(|| format!("`{GOSSIP_KEY}` must be a string"))?
                .to_string(),
            acl_token: Some(acl_token.clone()),
        };
        // consul cannot bind before the overlay address exists.
        crate::sys::process::blocking(|| ygg.wait_address(Duration::from_secs(10)))?;
        let consul = ConsulAgent::new(&dir);
        let applied = crate::sys::process::blocking(|| consul.apply(&settings))?;
        report.consul_role = Some(role);
        report.consul_daemon = Some(applied.to_string());
        let (leader, kv) = sync_kv(ctx, &updates, opts.wait, &settings.retry_join).await;
        if leader.is_none() && matches!(applied, Applied::Started | Applied::Restarted) && consul.pid().is_none() {
            bail!(
                "consul stopped right after its start; its log ends with:\n{}",
                consul.log_tail(15)
            );
        }
        report.leader = leader;
        report.kv = kv?;
    }

    if opts.after_mesh {
        let config = ctx.config()?;
        crate::sys::process::blocking(|| hooks::fire(ctx, &config, "after_mesh"));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Waits for a leader, then seeds the KV (when empty) or pushes `updates` and caches the KV.
async fn sync_kv(
    ctx: &Context,
    updates: &Mapping,
    wait: Duration,
    others: &[std::net::Ipv6Addr],
) -> (Option<String>, anyhow::Result<KvSync>) {
    let api = match ConsulApi::local() {
        Ok(a) => a,
        Err(e) => return (None, Err(e)),
    };
    let deadline = Instant::now() + wait;
    let mut next_join = Instant::now() + Duration::from_secs(2);
    let leader = loop {
        if let Ok(Some(l)) = api.leader().await {
            break Some(l);
        }
        if Instant::now() >= deadline {
            break None;
        }
        // consul's own first join attempt may have gone out before the overlay routes existed
        // and then waits for TCP timeouts (20 s); joining again now costs little.
        if Instant::now() >= next_join {
            next_join = Instant::now() + Duration::from_secs(3);
            if let Ok(quick) = ConsulApi::new(crate::consensus::api::LOCAL_HTTP, Duration::from_secs(3)) {
                let joins = others.iter().map(|a| quick.join(*a));
                let _ = futures_util::future::join_all(joins).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if leader.is_none() {
        return (None, Ok(KvSync::NoLeader));
    }
    let result = async {
        let cache = MutableCache::new(&ctx.paths.cache_dir);
        // Just after the first election the leader is still making the ACL token ("ACL not
        // found"): wait until the KV answers us.
        let acl_deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = api.is_seeded().await {
            if Instant::now() >= acl_deadline {
                // A node joining a running cluster (its KV seeded long ago) whose reads only
                // time out: the servers are busy with a batch of new nodes. It has joined;
                // its own entry waits in the cache and its agent pushes it (at 90->100 nodes
                // this failed a spawn). A refused token stays an error.
                if others.len() >= crate::mesh::plan::QUORUM && crate::consensus::api::timed_out(&e) {
                    tracing::warn!("consul's KV answers slowly ({e:#}); the node's entry waits in the cache");
                    config::edit::set_many(&ctx.paths, updates).await?;
                    return Ok(KvSync::Pending);
                }
                return Err(e.context("consul's KV does not answer with the cluster's token"));
            }
            tracing::debug!("KV not ready yet: {e:#}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // consul's own agents run with a token of their own.
        if let Some(token) = crate::consensus::acl::read_token(&ctx.paths) {
            let (accessor, secret) = crate::consensus::acl::agent_token(&token);
            match api.ensure_agent_token(&accessor, &secret).await {
                Ok(true) => tracing::info!("made consul's agent token (accessor {accessor})"),
                Ok(false) => {}
                // A new cluster's ACLs start in legacy mode for a few seconds; the node agent
                // tries again.
                Err(e) => tracing::debug!("{e:#}"),
            }
        }
        // Writes made while consul was away go up before the KV comes down over the cache.
        if let Err(e) = shared::push_pending(&ctx.paths, &api).await {
            tracing::warn!("consul did not take the pending changes in time ({e:#}); the agent pushes them later");
            return Ok(KvSync::Pending);
        }
        // Seeding: one node at a time under the seed lock, the completion marker last, so that
        // no node reads a half-seeded KV as the config. A seed left unfinished (its seeder
        // died) is completed by the next node to take the lock.
        let seed_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // A member loaded by a batch of new nodes may answer late: ask again until then.
            match api.is_seeded().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if Instant::now() < seed_deadline => {
                    tracing::debug!("is the KV seeded? {e:#}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let holder = format!("seeder {}", std::process::id());
            // Right after the election this node may not be in the catalog yet, and consul
            // refuses it a session ("Missing node registration"): try again shortly.
            let acquired = match lock::try_acquire(&api, lock::SEED_LOCK, &holder).await {
                Ok(held) => held,
                Err(e) if Instant::now() < seed_deadline => {
                    tracing::debug!("no seed lock yet: {e:#}");
                    None
                }
                Err(e) => return Err(e),
            };
            if let Some(held) = acquired {
                let seeded = async {
                    if api.is_seeded().await? {
                        return anyhow::Ok(None);
                    }
                    let cached = cache.read()?.unwrap_or_default();
                    let started = Instant::now();
                    let all_ours = api.seed(&cached).await?;
                    Ok(all_ours.then_some((cached.len(), started.elapsed().as_secs_f64())))
                }
                .await;
                held.release(&api).await;
                if let Some((keys, seconds)) = seeded? {
                    // Kept for a look later (`var/seeded.json`): only one node seeds.
                    let record = serde_json::json!({"keys": keys, "seconds": seconds});
                    let var = ctx.paths.cache_dir.join("var");
                    let _ = std::fs::create_dir_all(&var).and_then(|_| {
                        crate::sys::fs_atomic::write_atomic(&var.join("seeded.json"), record.to_string().as_bytes())
                    });
                    return Ok(KvSync::Seeded { keys, seconds });
                }
                break;
            }
            if Instant::now() >= seed_deadline {
                anyhow::bail!(
                    "another node has been seeding consul's KV for 60 s; the config stays in the cache for now"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // Someone seeded it: add what we know to theirs. A leader busy with many new nodes
        // may not take it in time: then it stays pending in the cache and the node's agent
        // pushes it once consul answers (the node has joined: waiting is no failure).
        let written = config::edit::set_many(&ctx.paths, updates).await?;
        if written != shared::Written::Consul {
            return Ok(KvSync::Pending);
        }
        let (kv, index) = match api.read_all_indexed().await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!("consul's KV did not answer in time ({e:#}); the agent reads it later");
                return Ok(KvSync::Pending);
            }
        };
        config::mapping::validate(&kv).map_err(|e| anyhow::anyhow!("consul's KV is unusable: {e}"))?;
        let keys = kv.len();
        shared::cache_snapshot(&ctx.paths, (kv, index))?;
        Ok(KvSync::Synced { keys })
    }
    .await;
    (leader, result)
}

/// Up to this many other nodes, a node joins consul through every one of them.
const JOIN_ALL_UP_TO: usize = 8;

/// The members a node joins consul through (`retry_join`, and its own joins while it waits for
/// a leader), the servers first: every other node in a small cluster, else the servers and its
/// ring peers, the nodes it has overlay links with. A join exchanges the whole member list
/// with each address given (consul joins them all, not the first that answers): a new node
/// joining all of 50 others, ten new nodes at once, was most of what saturated the host in
/// a batch. `others`: (is a server, id, overlay address).
fn join_targets(
    mut others: Vec<(bool, String, std::net::Ipv6Addr)>,
    ring: &BTreeSet<String>,
) -> Vec<std::net::Ipv6Addr> {
    if others.len() > JOIN_ALL_UP_TO {
        others.retain(|(server, id, _)| *server || ring.contains(id));
    }
    others.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
    others.into_iter().map(|(_, _, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_joins_through_the_servers_and_its_ring_peers_past_a_small_cluster() {
        let node = |i: u16, server: bool| {
            (
                server,
                format!("n{i}"),
                std::net::Ipv6Addr::new(0x200, 0, 0, 0, 0, 0, 0, i),
            )
        };
        let ring: BTreeSet<String> = ["n7".to_string(), "n9".to_string()].into();
        let small: Vec<_> = (1..=8).map(|i| node(i, i > 6)).collect();
        let all = join_targets(small, &ring);
        assert_eq!(all.len(), 8, "a small cluster: everyone");
        assert_eq!(all[..2], [node(7, true).2, node(8, true).2], "servers first");
        let big: Vec<_> = (1..=50).map(|i| node(i, i <= 3)).collect();
        let some = join_targets(big, &ring);
        assert_eq!(
            some,
            vec![
                node(1, true).2,
                node(2, true).2,
                node(3, true).2,
                node(7, false).2,
                node(9, false).2
            ]
        );
    }

    #[test]
    fn only_a_young_overlay_that_is_no_running_server_restarts_for_a_new_key() {
        assert_eq!(policy(false, None), NewKeys::Restart, "not running yet");
        assert_eq!(policy(false, Some(Duration::from_secs(30))), NewKeys::Restart);
        assert_eq!(policy(false, Some(SETTLED)), NewKeys::Later);
        assert_eq!(policy(true, Some(Duration::from_secs(1))), NewKeys::Later);
    }
}
