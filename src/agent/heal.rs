//! Healing without the workstation: a node with an engine of its own replaces lost servers
//! itself, the way the workstation's agent does. The rules decide ([`rules::decide`]): a client
//! is promoted first (the leader's agent does that); with no client left to promote, and the
//! lost servers failed past the grace (or the cluster short for the grace), new machines are
//! spawned. Any node with an engine may be the one: it takes the cluster's rules lock first
//! (the workstation's agent takes the same lock, so the two never race), spawns the missing
//! servers with an engine each, and lets the lock go. After a rebuild from the last survivor,
//! that survivor (it has a leader again, itself) is the one.
//!
//! A spawn that fails is cleaned up by the spawner and not tried again before a back-off (30 s,
//! doubling up to 10 min); after a replacement the new servers get time to start voting. Every
//! replacement is marked in the KV (`raptiformica-agent/replaced`: by whom, when), and no other
//! agent replaces again for [`REPLACE_PATIENCE`] after it: a new machine may take a while to
//! show among another node's members, and one loss gets one replacement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::roles::{promotions, voters};
use super::rules::{self, Decision};
use super::settings::Settings;
use super::status::Recorder;
use crate::compute::spawner;
use crate::config::context::Context;
use crate::consensus::SharedStore as _;
use crate::consensus::api::{AgentMember, ConsulApi, LOCAL_HTTP};
use crate::consensus::lock;
use crate::consensus::members::mark_acting;

const EVERY: Duration = Duration::from_secs(5);
/// Where the last replacement is marked (outside the shared config).
const REPLACED_KEY: &str = "raptiformica-agent/replaced";
/// How long after a replacement no other one is made.
pub const REPLACE_PATIENCE: Duration = Duration::from_secs(120);
/// How long the agent settings (a full config load) are kept while nothing is short.
const SETTINGS_EVERY: Duration = Duration::from_secs(60);
/// How long the answer to "has this node an engine?" is kept.
const ENGINE_CHECK: Duration = Duration::from_secs(60);
const BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// What the agent's log says when servers are missing and this node cannot spawn.
const NO_ENGINE: &str = "servers are missing and this node has no compute engine that answers \
     (every `available` check of its own modules fails; `raptiformica spawn --check-available` \
     says which): the spawning is left to a node with one";

/// Replaces lost servers from this node while it has an engine, until the agent stops.
/// `latest`: the members as the agent's tick last asked for them (at most every [`EVERY`]
/// they are looked at here; asking consul again for them was a second copy of every member
/// every few seconds on every node).
pub async fn heal(ctx: Context, me: String, rec: Recorder, mut latest: watch::Receiver<Option<Arc<Vec<AgentMember>>>>) {
    let Ok(api) = ConsulApi::new(LOCAL_HTTP, Duration::from_secs(5)) else {
        return;
    };
    let mut engine: Option<(Instant, bool)> = None;
    let mut failed_since: HashMap<String, Instant> = HashMap::new();
    let mut short_since: Option<Instant> = None;
    let mut not_before = Instant::now();
    let mut backoff = BACKOFF;
    let mut settings: Option<(Instant, Settings)> = None;
    loop {
        tokio::time::sleep(EVERY).await;
        if latest.changed().await.is_err() {
            return; // the tick stopped: so does the agent
        }
        let Some(members) = latest.borrow_and_update().clone() else {
            continue;
        };
        let now = Instant::now();
        failed_since.retain(|n, _| members.iter().any(|m| &m.name == n && m.failed()));
        for m in members.iter().filter(|m| m.failed()) {
            failed_since.entry(m.name.clone()).or_insert(now);
        }
        // Every node runs this every few seconds: in calm it costs no request to the servers
        // and no config load (both grew with the cluster: a hundred nodes made 40 a second).
        let alive_servers = members.iter().filter(|m| m.alive() && m.server()).count();
        let known = settings.as_ref().filter(|(at, _)| at.elapsed() < SETTINGS_EVERY);
        if known.is_some_and(|(_, s)| alive_servers >= s.min_servers) {
            short_since = None;
            continue;
        }
        let c = ctx.clone();
        let Ok(Ok(config)) = tokio::task::spawn_blocking(move || c.config()).await else {
            continue;
        };
        let settings = &settings
            .insert((now, Settings::from_mapping(&config.mapping).unwrap_or_default()))
            .1;
        if !matches!(api.leader().await, Ok(Some(_))) {
            continue; // no leader: consensus is rebuilt first (recover), or it is an election
        }
        let voters = voters(&api).await;
        let alive_voters = members
            .iter()
            .filter(|m| m.alive() && voters.as_ref().is_none_or(|v| v.contains(&m.name)))
            .count();
        if alive_voters >= settings.min_servers {
            short_since = None;
            continue;
        }
        let short_for = short_since.get_or_insert(now).elapsed();
        if now < not_before {
            continue;
        }
        if engine.is_none_or(|(at, _)| at.elapsed() >= ENGINE_CHECK) {
            let c = ctx.clone();
            let has = tokio::task::spawn_blocking(move || spawner::engine_type(&c).is_some())
                .await
                .unwrap_or(false);
            if !has && engine.is_none_or(|(_, had)| had) {
                rec.event("engine", NO_ENGINE);
            }
            engine = Some((now, has));
        }
        if engine.is_some_and(|(_, has)| !has) {
            continue;
        }
        // Decided here, and again under the lock (another node may have acted meanwhile).
        if needed(&api, &members, &failed_since, settings, short_for)
            .await
            .is_none()
        {
            continue;
        }
        let wanted = Wanted {
            failed_since: &failed_since,
            settings,
            short_for,
        };
        match replace(&ctx, &api, &me, &wanted, &rec).await {
            Ok(false) => {} // another agent holds the lock: it acts
            Ok(true) => {
                backoff = BACKOFF;
                not_before = Instant::now() + settings.eviction_grace.max(Duration::from_secs(30));
            }
            Err(e) => {
                rec.event(
                    "error",
                    format!("replacing lost servers: {e:#}; next try in {}s", backoff.as_secs()),
                );
                not_before = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// What the rules see: how long each member has been failed, the settings, and for how long
/// the cluster has been short of voters.
struct Wanted<'a> {
    failed_since: &'a HashMap<String, Instant>,
    settings: &'a Settings,
    short_for: Duration,
}

/// The lost servers and how many to spawn, when the rules say to spawn (from `members`).
async fn needed(
    api: &ConsulApi,
    members: &[AgentMember],
    failed_since: &HashMap<String, Instant>,
    settings: &Settings,
    short_for: Duration,
) -> Option<(Vec<String>, usize)> {
    if let Some((by, ago)) = replaced_lately(api).await {
        tracing::debug!("{by} replaced lost servers {}s ago: waiting", ago.as_secs());
        return None;
    }
    let voters = voters(api).await;
    let promoted = promotions(api).await.unwrap_or_default();
    let seen = rules::seen(members, failed_since, voters.as_deref(), &Default::default(), &promoted);
    match rules::decide(&seen, true, settings.min_servers, settings.eviction_grace, short_for) {
        Decision::Replace { lost, count } => Some((lost, count)),
        _ => None,
    }
}

/// Spawns the missing servers under the rules lock, deciding again once it holds it (another
/// node may have replaced them while this one waited). False: another node holds the lock.
async fn replace(
    ctx: &Context,
    api: &ConsulApi,
    me: &str,
    wanted: &Wanted<'_>,
    rec: &Recorder,
) -> anyhow::Result<bool> {
    let holder = format!("{}@{me}", std::process::id());
    let Some(held) = lock::try_acquire(api, lock::RULES_LOCK, &holder).await? else {
        return Ok(false);
    };
    let result = async {
        let members = api.members().await?;
        let Some((lost, count)) = needed(api, &members, wanted.failed_since, wanted.settings, wanted.short_for).await
        else {
            return anyhow::Ok(()); // replaced meanwhile, or a client to promote
        };
        let lost = &lost[..];
        let c = ctx.clone();
        let (config, ty) = tokio::task::spawn_blocking(move || spawner::engine_type(&c))
            .await?
            .ok_or_else(|| anyhow::anyhow!("this node's engine is gone (see `spawn --check-available`)"))?;
        held.check()?;
        // This node's own instances of the lost servers first, when its back-end says they are
        // gone: it cleans them up (the original's per-node garbage collection). A stopped
        // machine it was not asked about is left alone.
        let (c, hosts) = (ctx.clone(), lost_hosts(ctx, lost));
        let pruned = tokio::task::spawn_blocking(move || prune_own(&c, &hosts)).await?;
        if pruned > 0 {
            rec.event(
                "prune",
                format!("{pruned} dead instance(s) this node spawned cleaned up"),
            );
        }
        let what = if lost.is_empty() {
            "missing servers".to_string()
        } else {
            lost.join(", ")
        };
        rec.acting_on(lost.first().map(String::as_str));
        mark_acting(api, lost.first().map(|l| (l.as_str(), "replace", me))).await;
        rec.event(
            "replace",
            format!("{what}: spawning {count} ({}) from this node", ty.name()),
        );
        mark_replaced(api, me).await;
        let results = spawner::spawn_from_node(ctx, config, &ty, count, "replacement", me).await;
        // From the end of the spawn, whatever came of it.
        mark_replaced(api, me).await;
        let results = results?;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| format!("{e:#}"))
            .collect();
        let ok = results.len() - failed.len();
        rec.event("replace", format!("{ok} of {count} replacement(s) spawned and slaved"));
        anyhow::ensure!(
            failed.is_empty(),
            "{} replacement(s) failed: {}",
            failed.len(),
            failed.join("; ")
        );
        anyhow::Ok(())
    }
    .await;
    mark_acting(api, None).await;
    rec.acting_on(None);
    held.release(api).await;
    result.map(|()| true)
}

/// Marks a replacement by `me`, now (see [`REPLACED_KEY`]).
async fn mark_replaced(api: &ConsulApi, me: &str) {
    let value = serde_json::json!({"by": me, "at": crate::sys::clock::unix_now()});
    if let Err(e) = api
        .set_many(&crate::config::Mapping::from([(REPLACED_KEY.to_string(), value)]))
        .await
    {
        tracing::debug!("cannot mark the replacement: {e:#}");
    }
}

/// Who replaced lost servers, and how long ago, if that was less than [`REPLACE_PATIENCE`] ago.
async fn replaced_lately(api: &ConsulApi) -> Option<(String, Duration)> {
    let (raw, _) = api.get_raw(REPLACED_KEY).await.ok()??;
    let v = crate::consensus::api::decode(&raw);
    let ago = Duration::from_secs(crate::sys::clock::unix_now().saturating_sub(v["at"].as_u64()?));
    (ago < REPLACE_PATIENCE).then(|| (v["by"].as_str().unwrap_or("another node").to_string(), ago))
}

/// Whether this node's own engine says every `lost` server's machine is gone: each has a
/// neighbour entry with a host, and the back-end runs no machine at any of them.
pub async fn engine_says_gone(ctx: &Context, lost: &[String], cached: &crate::config::Mapping) -> bool {
    let all = crate::mesh::neighbours::all(cached);
    let hosts: Option<Vec<String>> = lost
        .iter()
        .map(|name| all.iter().find(|n| &n.id == name).and_then(|n| n.host.clone()))
        .collect();
    let Some(hosts) = hosts.filter(|h| !h.is_empty()) else {
        return false;
    };
    let c = ctx.clone();
    tokio::task::spawn_blocking(move || {
        spawner::engine_type(&c).is_some_and(|(_, ty)| hosts.iter().all(|h| crate::compute::host_gone(&c, &ty, h)))
    })
    .await
    .unwrap_or(false)
}

/// The hosts of the `lost` servers' neighbour entries.
fn lost_hosts(ctx: &Context, lost: &[String]) -> Vec<String> {
    let config = ctx.config().map(|c| c.mapping).unwrap_or_default();
    crate::mesh::neighbours::all(&config)
        .into_iter()
        .filter(|n| lost.contains(&n.id))
        .filter_map(|n| n.host)
        .collect()
}

/// Cleans up the instances this node spawned at `hosts` that its back-end says are gone; how
/// many.
fn prune_own(ctx: &Context, hosts: &[String]) -> usize {
    let Ok(config) = spawner::spawning_config(ctx) else {
        return 0;
    };
    let mut pruned = 0;
    let at_lost = |i: &crate::compute::Instance| i.host.as_ref().is_some_and(|h| hosts.contains(h));
    for inst in crate::compute::Instance::list(&ctx.paths.machines_dir())
        .into_iter()
        .filter(at_lost)
    {
        let Ok(ty) = crate::compute::find(&config, &inst.compute, &inst.server) else {
            continue;
        };
        if crate::compute::is_stale(ctx, &ty, &inst).unwrap_or(false)
            && crate::compute::clean_up(ctx, &ty, &inst).is_ok()
        {
            pruned += 1;
        }
    }
    pruned
}
