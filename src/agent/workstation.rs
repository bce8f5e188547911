//! The agent on the host that spawned the cluster. It is not a node: it reaches consul through
//! an SSH tunnel to a member (one that sees a leader, so never an island's view), applies the
//! rules, and replaces lost servers through the compute back-end they were started with,
//! under the cluster's session lock so that two such agents never spawn twice for one loss.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::roles::{promote, promotions, voters};
use super::rules::{self, Decision};
use super::settings::Settings;
use super::status::Recorder;
use crate::compute::spawner;
use crate::compute::{self, Instance};
use crate::config::context::Context;
use crate::config::{self, Config, mapping};
use crate::consensus::SharedStore;
use crate::consensus::api::ConsulApi;
use crate::consensus::lock;
use crate::consensus::members::mark_acting;
use crate::mesh::neighbours;
use crate::provision::slave::{self, SlaveOptions};
use crate::remote::cluster_link::{self, Link};
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

const TICK: Duration = Duration::from_secs(3);
/// After an action, how long before the next one. Short: a replacement returns once its new
/// servers joined, and the rules wait for a joined server until it votes, so one loss is not
/// handled twice; a loss that comes right after (two of three lost after a replacement) is.
const COOLDOWN: Duration = Duration::from_secs(10);
/// Ticks without a leader through one node before another node is asked.
const ISLAND_TICKS: u32 = 3;
/// How often the back-ends are asked where the machines are while no node answers.
const RENUMBER_EVERY: Duration = Duration::from_secs(20);
/// How long a survivor gets to rebuild consensus before it is asked again.
const RECOVERY_PATIENCE: Duration = Duration::from_secs(30);

pub async fn run(ctx: Context, rec: Recorder) -> anyhow::Result<()> {
    let identity = Identity::ensure(&ctx)?;
    let mut link: Option<Link> = None;
    let mut failed_since: HashMap<String, Instant> = HashMap::new();
    let mut no_leader_ticks = 0;
    let mut last_wait = String::new();
    let mut short_since: Option<Instant> = None;
    let mut cooldown_until: Option<Instant> = None;
    let mut asked_recovery: Option<Instant> = None;
    let mut broken: Option<String> = None;
    let mut renumbered_at: Option<Instant> = None;
    loop {
        let config = {
            let ctx = ctx.clone();
            tokio::task::spawn_blocking(move || config::load_over(&ctx.paths, None)).await??
        };
        let settings = match Settings::from_mapping(&config.mapping) {
            Ok(s) => s,
            Err(e) => {
                rec.event("error", format!("{e:#}"));
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
        };
        if let Some(l) = &link
            && !l.remote.is_alive().await
        {
            rec.event("link", format!("the tunnel to {} broke", l.node));
            broken = Some(l.node.clone());
            link = None;
        }
        if link.is_none() {
            let shun: HashSet<String> = failed_since.keys().cloned().chain(broken.take()).collect();
            link = cluster_link::connect(&identity, &config, &shun, Duration::from_secs(10)).await;
            if let Some(l) = &link {
                rec.event("link", format!("watching the cluster through node {}", l.node));
                no_leader_ticks = 0;
            }
        }
        let Some(l) = &link else {
            // No node answers where it was: maybe the network was renumbered.
            if renumbered_at.is_none_or(|t| t.elapsed() >= RENUMBER_EVERY) {
                renumbered_at = Some(Instant::now());
                match super::renumber::find_again(&ctx, &identity, &rec).await {
                    Ok(moved) if !moved.is_empty() => continue,
                    Ok(_) => {}
                    Err(e) => rec.event("error", format!("finding the machines again: {e:#}")),
                }
            }
            tokio::time::sleep(TICK * 3).await;
            continue;
        };
        let (members, leader, voters) = tokio::join!(l.api.members(), l.api.leader(), voters(&l.api));
        let Ok(members) = members else {
            link = None;
            continue;
        };
        let leader = leader.ok().flatten();
        if leader.is_none() {
            no_leader_ticks += 1;
            if no_leader_ticks >= ISLAND_TICKS {
                // Maybe an island: look for a node that sees a leader.
                link = None;
                no_leader_ticks = 0;
            }
        } else {
            no_leader_ticks = 0;
        }
        let now = Instant::now();
        failed_since.retain(|n, _| members.iter().any(|m| &m.name == n && m.failed()));
        for m in members.iter().filter(|m| m.failed()) {
            failed_since.entry(m.name.clone()).or_insert(now);
        }
        // Failed servers whose machines the compute back-end says are gone need no grace.
        let mut gone = HashSet::new();
        for m in members.iter().filter(|m| m.failed()) {
            if let Ok(Some(true)) = machine_gone(&ctx, &config, &m.name).await {
                gone.insert(m.name.clone());
            }
        }
        let alive_voters = members
            .iter()
            .filter(|m| m.alive() && voters.as_ref().is_none_or(|v| v.contains(&m.name)))
            .count();
        let promoted = if alive_voters < settings.min_servers
            && let Some(l) = &link
        {
            // Without a leader the KV does not answer: no promotion is under way then, and
            // the decision (a rebuild, say) must not wait for it.
            promotions(&l.api).await.unwrap_or_else(|e| {
                tracing::debug!("cannot read the promotions: {e:#}");
                Default::default()
            })
        } else {
            Default::default()
        };
        let seen = rules::seen(&members, &failed_since, voters.as_deref(), &gone, &promoted);
        let alive_servers = seen.iter().filter(|m| m.server && m.voter && m.alive).count();
        short_since = match (alive_servers < settings.min_servers, short_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
        let short_for = short_since.map(|t| t.elapsed()).unwrap_or_default();
        match rules::decide(
            &seen,
            leader.is_some(),
            settings.min_servers,
            settings.eviction_grace,
            short_for,
        ) {
            Decision::Nothing => last_wait.clear(),
            Decision::Recover { lost } => {
                if asked_recovery.is_none_or(|t| t.elapsed() >= RECOVERY_PATIENCE)
                    && let Some(l) = &link
                {
                    match ask_recovery(&ctx, &config, l, &lost, &rec).await {
                        Ok(None) => asked_recovery = Some(Instant::now()),
                        Ok(Some(why)) if why != last_wait => {
                            tracing::info!("waiting: {why}");
                            last_wait = why;
                        }
                        Ok(Some(_)) => {}
                        Err(e) => {
                            rec.event("error", format!("{e:#}"));
                            asked_recovery = Some(Instant::now());
                        }
                    }
                }
            }
            Decision::Wait(why) => {
                if why != last_wait {
                    tracing::info!("waiting: {why}");
                    last_wait = why;
                }
            }
            _ if cooldown_until.is_some_and(|t| Instant::now() < t) => {
                tracing::debug!("waiting: the last action is still settling");
            }
            decision => {
                if let Some(l) = &link
                    && let Err(e) = act(&ctx, &identity, l, &decision, &rec).await
                {
                    rec.event("error", format!("{e:#}"));
                }
                rec.acting_on(None);
                // New servers become voters a little after they join: give them that time
                // before deciding again, so that one loss is never handled twice.
                cooldown_until = Some(Instant::now() + COOLDOWN);
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Asks the linked node to rebuild consensus (`agent --recover`) when every lost server is an
/// instance of ours that the compute back-end says is gone: a machine that is merely cut off
/// must not be rebuilt around. Returns why it did not ask, if it did not.
async fn ask_recovery(
    ctx: &Context,
    config: &Config,
    link: &Link,
    lost: &[String],
    rec: &Recorder,
) -> anyhow::Result<Option<String>> {
    for name in lost {
        match machine_gone(ctx, config, name).await? {
            Some(true) => {}
            Some(false) => {
                return Ok(Some(format!(
                    "quorum lost, but the machine of {name} still runs (cut off?): its survivors rebuild consensus after `agent/recovery_grace`"
                )));
            }
            None => {
                return Ok(Some(format!(
                    "quorum lost, and {name} is not a machine of ours: its survivors rebuild consensus after `agent/recovery_grace`"
                )));
            }
        }
    }
    rec.acting_on(Some(&link.node));
    let out = link
        .remote
        .run(
            "rebuild consensus",
            &crate::remote::on_node::on_node("raptiformica agent --recover"),
        )
        .await;
    rec.acting_on(None);
    let out = out?;
    rec.event(
        "recover",
        format!(
            "{} gone: {} rebuilt consensus ({})",
            lost.join(", "),
            link.node,
            out.stdout.trim()
        ),
    );
    Ok(None)
}

/// Whether the machine of member `name` is gone, as its compute back-end says (`None`: not a
/// machine this host started).
async fn machine_gone(ctx: &Context, config: &Config, name: &str) -> anyhow::Result<Option<bool>> {
    let instance = neighbours::all(&config.mapping)
        .into_iter()
        .find(|n| n.id == name)
        .and_then(|n| {
            let host = n.host?;
            Instance::list(&ctx.paths.machines_dir())
                .into_iter()
                .find(|i| i.host.as_deref() == Some(host.as_str()) && i.port.unwrap_or(22) == n.ssh_port)
        });
    let Some(inst) = instance else {
        return Ok(None);
    };
    let ty = compute::find(config, &inst.compute, &inst.server)?;
    let c = ctx.clone();
    let gone = tokio::task::spawn_blocking(move || compute::is_stale(&c, &ty, &inst)).await??;
    Ok(Some(gone))
}

/// Carries out a promotion or a replacement under the cluster's lock.
async fn act(
    ctx: &Context,
    identity: &Identity,
    link: &Link,
    decision: &Decision,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let holder = format!("{}@workstation", std::process::id());
    let Some(held) = lock::try_acquire(&link.api, lock::RULES_LOCK, &holder).await? else {
        tracing::info!("another agent holds the lock; it acts");
        return Ok(());
    };
    let result = async {
        match decision {
            Decision::Promote(node) => {
                rec.acting_on(Some(node));
                mark_acting(&link.api, Some((node, "promote", &holder))).await;
                let before = alive_servers(&link.api).await;
                held.check()?;
                promote(&link.api, node).await?;
                rec.event("promote", format!("client {node} promoted to server"));
                // Decide again once it serves (its consul restarts as a server).
                let serving = async {
                    while alive_servers(&link.api).await <= before {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(60), serving).await;
            }
            Decision::Replace { lost, count } => replace(ctx, identity, link, &held, lost, *count, rec).await?,
            _ => {}
        }
        anyhow::Ok(())
    }
    .await;
    mark_acting(&link.api, None).await;
    held.release(&link.api).await;
    result
}

/// Prunes the lost machines (ours, if they are gone), forgets them, and spawns `count`
/// replacements of the compute type the lost ones had.
async fn replace(
    ctx: &Context,
    identity: &Identity,
    link: &Link,
    held: &lock::Held,
    lost: &[String],
    count: usize,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let servers_before = alive_servers(&link.api).await;
    // Start from the cluster's view (evictions, promotions): its data, never its commands.
    let kv = link.api.read_all().await?;
    if mapping::validate(&kv).is_ok() {
        let refused = config::edit::adopt_cluster(&ctx.paths, &kv)?;
        if let Some(notice) = config::trust::refused_notice(&refused) {
            tracing::warn!("{notice}");
        }
    }
    let config = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || config::load_over(&ctx.paths, None)).await??
    };
    // Roles of the new machines count the live servers only: forget here the entries of
    // members that are not alive (evicted, or lost and about to be).
    let alive = link.api.alive_members().await?;
    config::edit::update(&ctx.paths, |m| {
        neighbours::remove_where(m, |n| !alive.contains(&n.id));
        Ok(())
    })?;
    let mut ty = None;
    let before = neighbours::all(&config.mapping);
    let evict_token = crate::consensus::acl::evict_token(&ctx.paths);
    for name in lost {
        held.check()?;
        rec.acting_on(Some(name));
        mark_acting(&link.api, Some((name, "replace", "the workstation agent"))).await;
        let _ = link.api.force_leave(name, evict_token.as_deref()).await;
        let key = format!("{}/{name}", neighbours::NEIGHBOURS);
        link.api.delete_tree(&key).await?;
        config::edit::forget_tree(&ctx.paths, &key)?;
        if let Some(n) = before.iter().find(|n| &n.id == name) {
            rec.event(
                "evict",
                format!(
                    "{name} ({}) lost: force-left, entry removed",
                    n.host.as_deref().unwrap_or("?")
                ),
            );
        }
    }
    // Our instances of the lost servers that are gone (docker rm -f'd, powered off): prune
    // them; their type is the type to spawn. Any other instance is left alone, stopped or not
    // (a client down for maintenance is not ours to delete).
    let lost_at = lost_addresses(&before, lost);
    let instances = Instance::list(&ctx.paths.machines_dir());
    for inst in &instances {
        let Ok(t) = compute::find(&config, &inst.compute, &inst.server) else {
            continue;
        };
        if ty.is_none() {
            ty = Some(t.clone());
        }
        if !is_at(inst, &lost_at) {
            continue;
        }
        held.check()?;
        let (c, t2, i) = (ctx.clone(), t.clone(), inst.clone());
        let pruned = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
            if compute::is_stale(&c, &t2, &i)? {
                compute::clean_up(&c, &t2, &i)?;
                Ok(true)
            } else {
                Ok(false)
            }
        })
        .await?;
        if let Ok(true) = pruned {
            ty = Some(t);
            if let Some(host) = inst.host.as_deref() {
                let port = inst.port.unwrap_or(22);
                config::edit::update(&ctx.paths, |m| {
                    neighbours::remove_where(m, |n| n.host.as_deref() == Some(host) && n.ssh_port == port);
                    Ok(())
                })?;
            }
            rec.event(
                "prune",
                format!("instance {} ({}) is gone: pruned", inst.id, inst.compute),
            );
        }
    }
    let ty = match ty {
        Some(t) => t,
        None => {
            let c = ctx.clone();
            tokio::task::spawn_blocking(move || {
                let cfg = c.config()?;
                spawner::choose(&c, &cfg, None, None)
            })
            .await??
        }
    };
    let progress = Progress::new(true);
    {
        let (c, p) = (ctx.clone(), progress.clone());
        tokio::task::spawn_blocking(move || slave::prepare(&c, &p)).await??;
    }
    let ctx = Context {
        public_key_file: Some(identity.public_key_file.clone()),
        ..ctx.clone()
    };
    let config = Arc::new(ctx.config()?);
    let opts = Some(SlaveOptions::fresh(&ty.server, Duration::from_secs(60)));
    let started = Instant::now();
    let batch = spawner::Batch {
        ty: &ty,
        label: "replacement",
        count,
        opts: &opts,
        from_node: None,
    };
    held.check()?;
    let results = spawner::spawn_many(&ctx, &config, identity, &progress, batch).await;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(inst) => {
                ok += 1;
                rec.event(
                    "replace",
                    format!(
                        "spawned {} ({}) at {} in {:.1}s",
                        &inst.id[..12.min(inst.id.len())],
                        ty.name(),
                        inst.host.as_deref().unwrap_or("?"),
                        started.elapsed().as_secs_f64()
                    ),
                );
            }
            Err(e) => rec.event("error", format!("replacement failed: {e:#}")),
        }
    }
    // A slaved machine may still be joining: decide again only once it counts, so that one
    // loss is never replaced twice.
    let want = servers_before + ok;
    let joined = async {
        loop {
            // Joined as a server is enough here; autopilot makes it a voter a little later.
            if alive_servers_joined(&link.api).await >= want {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(120), joined).await.is_err() {
        rec.event(
            "error",
            format!("the replacement(s) did not join as servers within 120 s (want {want} alive)"),
        );
    }
    anyhow::ensure!(ok == count, "{} of {count} replacement(s) failed", count - ok);
    Ok(())
}

/// Where the lost members were reached (`host`, `ssh_port`), from their neighbour entries.
fn lost_addresses(known: &[neighbours::Neighbour], lost: &[String]) -> Vec<(String, u16)> {
    known
        .iter()
        .filter(|n| lost.contains(&n.id))
        .filter_map(|n| Some((n.host.clone()?, n.ssh_port)))
        .collect()
}

/// Whether instance `inst` is the machine at one of `addresses`.
fn is_at(inst: &Instance, addresses: &[(String, u16)]) -> bool {
    inst.host.as_deref().is_some_and(|h| {
        addresses
            .iter()
            .any(|(host, port)| host == h && *port == inst.port.unwrap_or(22))
    })
}

/// How many servers are alive (voting or not yet), as the linked node sees them.
async fn alive_servers_joined(api: &ConsulApi) -> usize {
    api.members()
        .await
        .map(|ms| {
            ms.iter()
                .filter(|m| m.alive() && m.tags.get("role").map(String::as_str) == Some("consul"))
                .count()
        })
        .unwrap_or(0)
}

/// How many voting servers are alive, as the linked node sees them.
async fn alive_servers(api: &ConsulApi) -> usize {
    let voters = voters(api).await;
    api.members()
        .await
        .map(|ms| {
            ms.iter()
                .filter(|m| m.alive() && m.tags.get("role").map(String::as_str) == Some("consul"))
                .filter(|m| voters.as_ref().is_none_or(|v| v.contains(&m.name)))
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_lost_members_machines_are_candidates_for_pruning() {
        let mapping: crate::config::Mapping = [
            ("lost", "10.0.0.2", "22"),
            ("stopped-client", "10.0.0.4", "22"),
            ("alive", "10.0.0.3", "2222"),
        ]
        .iter()
        .flat_map(|(id, host, port)| {
            [
                (neighbours::key(id, "host"), json!(host)),
                (neighbours::key(id, "ssh_port"), json!(port)),
            ]
        })
        .collect();
        let known = neighbours::all(&mapping);
        let at = lost_addresses(&known, &["lost".to_string()]);
        assert_eq!(at, vec![("10.0.0.2".to_string(), 22)]);
        let inst = |host: Option<&str>, port: Option<u16>| Instance {
            id: "i".into(),
            compute: "docker".into(),
            server: "headless".into(),
            dir: Default::default(),
            host: host.map(str::to_string),
            port,
            host_keys: None,
        };
        assert!(is_at(&inst(Some("10.0.0.2"), None), &at));
        assert!(is_at(&inst(Some("10.0.0.2"), Some(22)), &at));
        assert!(
            !is_at(&inst(Some("10.0.0.4"), None), &at),
            "the stopped client is not lost"
        );
        assert!(!is_at(&inst(Some("10.0.0.2"), Some(2222)), &at));
        assert!(!is_at(&inst(None, None), &at));
    }
}
