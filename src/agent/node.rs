//! The agent on a node: supervises the daemons, watches the membership for `cluster_change`,
//! and every two seconds (every ten at rest: see [`pace`](super::pace)) looks after the
//! node's place in the cluster (the `tick`): rejoins
//! lost peers, evicts members failed past the grace (the leader's node does it), rebuilds
//! consensus from the survivors when quorum is lost for good, follows its own consul role in
//! the shared config (a promotion), and puts its own neighbour entry back if it was evicted
//! while it was cut off.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::events;
use super::pace::{self, Pace};
use super::recover::{self, RaftPeer};
use super::redial::Redials;
use super::roles::{promote, promotions, voters};
use super::rules::{self, Decision};
use super::settings::Settings;
use super::status::Recorder;
use super::supervise::{self, Supervised};
use super::{follow, membership, own_entry};
use crate::config::context::Context;
use crate::config::{self, Mapping, MutableCache, shared};
use crate::consensus::agent::ConsulAgent;
use crate::consensus::api::{AgentMember, ConsulApi, LOCAL_HTTP, Serf};
use crate::consensus::lock;
use crate::consensus::members::mark_acting;
use crate::mesh;
use crate::mesh::neighbours;
use crate::mesh::yggdrasil::Yggdrasil;

const JOIN_EVERY: Duration = Duration::from_secs(2);
const OWN_ENTRY_EVERY: Duration = Duration::from_secs(10);
/// How often a client's agent asks who leads.
const CLIENT_LEADER_EVERY: Duration = Duration::from_secs(10);
/// A promotion takes a consul restart as server: give it this long before another one.
const PROMOTE_EVERY: Duration = Duration::from_secs(20);

/// Runs the node agent until it is stopped.
pub async fn run(ctx: Context, rec: Recorder) -> anyhow::Result<()> {
    let dir = shared::mesh_dir(&ctx.paths);
    let lock = dir.join("mesh.lock");
    let config = {
        let ctx = ctx.clone();
        tokio::task::spawn_blocking(move || config::load_over(&ctx.paths, None)).await??
    };
    let ygg = crate::node::mesh::overlay(&ctx, &config.mapping)?;
    let consul = ConsulAgent::new(&dir);

    // Every duty runs in this set: they end with the agent (the daemons they watch do not).
    let mut duties = tokio::task::JoinSet::new();
    let y = ygg.clone();
    duties.spawn(supervise::supervise(
        Supervised {
            name: "yggdrasil",
            daemon: ygg.daemon().clone(),
            config: ygg.rendered(),
            start: Arc::new(move || y.start()),
        },
        lock.clone(),
        rec.clone(),
    ));
    let c = consul.clone();
    duties.spawn(supervise::supervise(
        Supervised {
            name: "consul",
            daemon: consul.daemon().clone(),
            config: consul.config_file(),
            start: Arc::new(move || c.start()),
        },
        lock.clone(),
        rec.clone(),
    ));

    let (tx, rx) = watch::channel(None);
    duties.spawn(membership::watch(tx));
    // The members as the tick last asked for them, for the duties that look at them too.
    let (members_tx, members_rx) = watch::channel(None);
    let me = crate::node::mesh::own_id(&mesh::Overlay::identity(&ygg)?);
    duties.spawn(events::follow(ctx.clone(), me.clone(), rec.clone()));
    duties.spawn(super::access::follow(me.clone(), rec.clone()));
    duties.spawn(super::state::follow(ctx.clone(), me.clone(), rec.clone()));
    duties.spawn(super::report::publish(ygg.clone(), me.clone(), rec.clone()));
    duties.spawn(super::grow::grow(ctx.clone(), me.clone(), rec.clone()));
    duties.spawn(super::heal::heal(ctx.clone(), me.clone(), rec.clone(), members_rx));
    duties.spawn(follow::follow(
        ctx.clone(),
        ygg.clone(),
        me,
        lock.clone(),
        rx.clone(),
        rec.clone(),
    ));
    let mut view = rx.clone();
    let hook_ctx = ctx.clone();
    duties.spawn(membership::fire_on_change(rx, rec.clone(), move |summary| {
        let ctx = hook_ctx.clone();
        tokio::spawn(async move {
            let c = ctx.clone();
            let none = !tokio::task::spawn_blocking(move || membership::has_cluster_change_handlers(&c))
                .await
                .unwrap_or(true);
            if none {
                return tracing::debug!("cluster_change ({summary}): no handlers");
            }
            let api = ConsulApi::local().ok();
            let kv = match &api {
                Some(api) => shared::read_with(&ctx.paths, api).await,
                None => None,
            };
            let _ = tokio::task::spawn_blocking(move || membership::fire_cluster_change(&ctx, kv, &summary)).await;
        })
    }));

    let mut tick = Tick::new(ctx, rec.clone(), consul, ygg, lock, members_tx)?;
    let stop = crate::sys::signals::stop_requested();
    tokio::pin!(stop);
    let mut last = Instant::now();
    loop {
        let at_rest = tick.pace.at_rest(Instant::now());
        let due = last + tick.pace.period(Instant::now());
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(due.into()) => {}
            // At rest, a change of the members' health ends the rest at once.
            changed = view.changed(), if at_rest => {
                if changed.is_ok() {
                    tick.pace.wake();
                }
                continue;
            }
        }
        last = Instant::now();
        view.borrow_and_update(); // what this tick sees needs no wake
        if let Err(e) = tick.run().await {
            tick.pace.wake();
            tracing::debug!("tick: {e:#}");
        }
    }
    rec.event(
        "stop",
        format!(
            "agent stopped (pid {}); consul and yggdrasil keep running",
            std::process::id()
        ),
    );
    duties.shutdown().await;
    Ok(())
}

/// The state the periodic duties keep between ticks.
struct Tick {
    ctx: Context,
    rec: Recorder,
    consul: ConsulAgent,
    overlay: Yggdrasil,
    mesh_lock: PathBuf,
    api: ConsulApi,
    failed_since: HashMap<String, Instant>,
    no_leader_since: Option<Instant>,
    /// The leader as last asked, and when.
    leader_seen: Option<(Instant, Option<String>)>,
    last_join: Option<Instant>,
    last_own_check: Option<Instant>,
    /// This node's neighbour entry as it was when the agent started.
    own_entry: Mapping,
    recovered_at: Option<Instant>,
    last_promotion: Option<Instant>,
    /// Since when this agent has seen fewer voting servers alive than wanted.
    short_since: Option<Instant>,
    /// consul's agent token is known to exist.
    agent_token_made: bool,
    redials: Redials,
    rejoins: super::redial::Rejoins,
    cache: crate::config::cache::Memo,
    /// What this agent published of its overlay's admissions (see `own_entry::publish_admits`).
    published_admits: own_entry::Published,
    /// This node's name in consul.
    me: String,
    pace: Pace,
    /// Where the members each tick asks for go (the healing duty reads them).
    members_tx: watch::Sender<Option<Arc<Vec<AgentMember>>>>,
}

impl Tick {
    fn new(
        ctx: Context,
        rec: Recorder,
        consul: ConsulAgent,
        overlay: Yggdrasil,
        mesh_lock: PathBuf,
        members_tx: watch::Sender<Option<Arc<Vec<AgentMember>>>>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            ctx,
            rec,
            consul,
            overlay,
            mesh_lock,
            api: ConsulApi::new(LOCAL_HTTP, Duration::from_secs(3))?,
            failed_since: HashMap::new(),
            no_leader_since: None,
            leader_seen: None,
            last_join: None,
            last_own_check: None,
            own_entry: Mapping::new(),
            recovered_at: None,
            last_promotion: None,
            short_since: None,
            agent_token_made: false,
            redials: Redials::default(),
            rejoins: Default::default(),
            cache: Default::default(),
            published_admits: Default::default(),
            me: String::new(),
            pace: Pace::default(),
            members_tx,
        })
    }

    fn cached(&mut self) -> Mapping {
        self.cache
            .read(&MutableCache::new(&self.ctx.paths.cache_dir))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        let Some(rendered) = self.consul.rendered() else {
            return Ok(()); // not in consensus yet: `mesh` starts consul from three nodes on
        };
        let me_server = rendered["server"].as_bool().unwrap_or(false);
        let me_name = rendered["node_name"].as_str().unwrap_or_default().to_string();
        let me_addr = rendered["bind_addr"].as_str().unwrap_or_default().to_string();
        self.me = me_name.clone();
        let cached = self.cached();
        let settings = Settings::from_mapping(&cached).unwrap_or_else(|e| {
            tracing::warn!("{e:#}; using the defaults");
            Settings::default()
        });
        if self.own_entry.is_empty() {
            self.own_entry = crate::sys::mapping::tree(&cached, &format!("{}/{me_name}", neighbours::NEIGHBOURS));
        }

        let members = self.api.members().await?;
        let members = Arc::new(members);
        self.members_tx.send_replace(Some(members.clone()));
        // Servers act on the leader: asked every tick. Clients only gate KV writes on one: asked
        // every CLIENT_LEADER_EVERY (a request to the servers; 100 nodes asked 50 a second).
        let now = Instant::now();
        let kept = self
            .leader_seen
            .clone()
            .filter(|(at, _)| !me_server && now - *at < CLIENT_LEADER_EVERY);
        let (asked, leader) = match kept {
            Some(kept) => kept,
            None => (now, self.api.leader().await.ok().flatten()),
        };
        self.leader_seen = Some((asked, leader.clone()));
        self.no_leader_since = match (leader.is_some(), self.no_leader_since) {
            (true, _) => None,
            (false, None) => Some(now),
            (false, since) => since,
        };
        let failed: Vec<&AgentMember> = members.iter().filter(|m| m.failed()).collect();
        self.failed_since
            .retain(|name, _| failed.iter().any(|m| &m.name == name));
        for m in &failed {
            self.failed_since.entry(m.name.clone()).or_insert(now);
        }

        let settled = leader.is_some() && members.iter().all(|m| matches!(m.status, Serf::Alive | Serf::Left));
        self.pace
            .saw(settled, (pace::statuses(&members), &leader, self.cache.version()), now);

        self.rejoin(&members, &cached, &me_name).await;
        let i_lead = leader
            .as_deref()
            .is_some_and(|l| !me_addr.is_empty() && l.starts_with(&format!("[{me_addr}]")));
        if i_lead {
            self.evict(&failed, settings.eviction_grace).await;
            self.promote_if_short(&members, &settings).await;
        } else {
            self.short_since = None; // a shortage is timed by the leader that saw it begin
        }
        if me_server && leader.is_none() {
            self.recover(&members, settings.recovery_grace).await;
        } else if leader.is_some() {
            recover::withdraw(&shared::mesh_dir(&self.ctx.paths)); // nothing to recover
        }
        if leader.is_some() {
            self.keep_own_entry(&me_name).await;
            self.ensure_agent_token().await;
            own_entry::publish_admits(&self.api, &self.overlay, &cached, &me_name, &mut self.published_admits).await;
            // A change that went to the cache while consul was away (or slow) goes up now.
            if let Err(e) = shared::push_pending(&self.ctx.paths, &self.api).await {
                tracing::debug!("pending changes not pushed yet: {e:#}");
            }
        }
        if !me_server && self.last_promotion.is_none_or(|t| t.elapsed() >= PROMOTE_EVERY) {
            let ctx = (&self.ctx, &self.rec);
            if super::roles::follow_recorded(ctx, &cached, &me_name).await {
                self.last_promotion = Some(Instant::now());
            }
        }
        Ok(())
    }

    /// Dials the overlay peers this node has no link with, and joins the known neighbours
    /// that are not alive members.
    async fn rejoin(&mut self, members: &[AgentMember], cached: &Mapping, me: &str) {
        if self.last_join.is_some_and(|t| t.elapsed() < JOIN_EVERY) {
            return;
        }
        self.last_join = Some(Instant::now());
        // The overlay links first: yggdrasil gives up on a lost peer after three dials and
        // then tries it once a minute.
        if let Ok(plan) = crate::mesh::plan::overlay_plan(cached, me, &Default::default()) {
            let peers = plan.dial;
            let ygg = self.overlay.clone();
            let linked = tokio::task::spawn_blocking(move || ygg.linked_keys()).await;
            if let Ok(Ok(linked)) = linked {
                // The reachability probes block briefly: off the async workers.
                let redials = &mut self.redials;
                let due = crate::sys::process::blocking(|| {
                    redials.due(&peers, &linked, Instant::now(), super::redial::answers)
                });
                let ygg = self.overlay.clone();
                match tokio::task::spawn_blocking(move || ygg.redial(&due)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::debug!("redialed {n} overlay peer(s)"),
                    Ok(Err(e)) => tracing::debug!("overlay peers not redialed: {e:#}"),
                    Err(e) => tracing::debug!("redial panicked: {e}"),
                }
            }
        }
        let alive: Vec<&str> = members.iter().filter(|m| m.alive()).map(|m| m.name.as_str()).collect();
        // Ring peers (up or down) that are not alive members: two new machines can join each
        // other and stop there (retry_join is done once one answers); one join merges two pools
        // and the ring crosses any split (everyone joining every new machine was a storm).
        let mut targets: Vec<(String, std::net::Ipv6Addr)> = crate::mesh::plan::ring(cached, me)
            .into_iter()
            .filter(|n| !alive.contains(&n.id.as_str()))
            .filter_map(|n| Some((n.id, n.overlay_address?)))
            .collect();
        let ids: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
        let due = self.rejoins.due(&ids, Instant::now());
        targets.retain(|(id, _)| due.contains(id));
        if targets.is_empty() {
            return;
        }
        let joins = targets.iter().map(|(_, a)| self.api.join(*a));
        let results = futures_util::future::join_all(joins).await;
        let joined: Vec<&str> = targets
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((id, _), _)| id.as_str())
            .collect();
        if !joined.is_empty() {
            self.rec.event("rejoin", format!("joined {}", joined.join(", ")));
        }
    }

    /// Force-leaves members failed longer than `grace` and removes their neighbour entries.
    async fn evict(&mut self, failed: &[&AgentMember], grace: Duration) {
        let due: Vec<String> = failed
            .iter()
            .filter(|m| self.failed_since.get(&m.name).is_some_and(|t| t.elapsed() >= grace))
            .map(|m| m.name.clone())
            .collect();
        for name in due {
            // Last chance: a member that answers a join now is back (a cut that just healed).
            if let Some(addr) = failed.iter().find(|m| m.name == name).and_then(|m| m.addr.parse().ok())
                && self.api.join(addr).await.is_ok()
            {
                tracing::info!("{name} failed for {}s but answers again: not evicted", grace.as_secs());
                self.failed_since.remove(&name);
                continue;
            }
            self.rec.acting_on(Some(&name));
            mark_acting(&self.api, Some((&name, "evict", &self.me))).await;
            let result = crate::cluster::remove::forget(&self.api, &self.ctx.paths, &name, true).await;
            match result {
                Ok(()) => {
                    self.failed_since.remove(&name);
                    self.rec.event(
                        "evict",
                        format!(
                            "{name} failed for {}s: force-left, neighbour entry removed",
                            grace.as_secs()
                        ),
                    );
                }
                Err(e) => self.rec.event("error", format!("evicting {name}: {e:#}")),
            }
            mark_acting(&self.api, None).await;
            self.rec.acting_on(None);
        }
    }

    /// The `min_servers` rule where no machine is needed: too few servers alive and a client
    /// alive, the leader's agent promotes the client (under the cluster's lock). Spawning a
    /// replacement is left to an agent with a compute back-end (the workstation's).
    async fn promote_if_short(&mut self, members: &[AgentMember], settings: &Settings) {
        if self.last_promotion.is_some_and(|t| t.elapsed() < PROMOTE_EVERY) {
            return;
        }
        let voters = voters(&self.api).await;
        let alive_voters = members
            .iter()
            .filter(|m| m.alive() && voters.as_ref().is_none_or(|v| v.contains(&m.name)))
            .count();
        if alive_voters >= settings.min_servers {
            self.short_since = None;
            return; // the common case: no need to read the promotions
        }
        let short_for = self.short_since.get_or_insert_with(Instant::now).elapsed();
        let promoted = match promotions(&self.api).await {
            Ok(p) => p,
            Err(e) => return tracing::debug!("cannot read the promotions: {e:#}"),
        };
        let seen = rules::seen(
            members,
            &self.failed_since,
            voters.as_deref(),
            &Default::default(),
            &promoted,
        );
        // Only promotions here (spawning is left to an agent with an engine).
        let Decision::Promote(node) =
            rules::decide(&seen, true, settings.min_servers, settings.eviction_grace, short_for)
        else {
            return;
        };
        self.last_promotion = Some(Instant::now());
        let holder = format!("{}@{}", std::process::id(), self.me);
        let result = async {
            let Some(held) = lock::try_acquire(&self.api, lock::RULES_LOCK, &holder).await? else {
                return anyhow::Ok(false);
            };
            self.rec.acting_on(Some(&node));
            mark_acting(&self.api, Some((&node, "promote", &self.me))).await;
            let r = match held.check() {
                Ok(()) => promote(&self.api, &node).await,
                Err(e) => Err(e),
            };
            mark_acting(&self.api, None).await;
            held.release(&self.api).await;
            r.map(|_| true)
        }
        .await;
        self.rec.acting_on(None);
        match result {
            Ok(true) => self.rec.event(
                "promote",
                format!(
                    "fewer than {} servers alive: client {node} promoted to server",
                    settings.min_servers
                ),
            ),
            Ok(false) => {}
            Err(e) => self.rec.event("error", format!("promoting {node}: {e:#}")),
        }
    }

    /// Rebuilds consensus from the live servers once quorum is lost past `grace`.
    async fn recover(&mut self, members: &[AgentMember], grace: Duration) {
        let dir = shared::mesh_dir(&self.ctx.paths);
        // Asked for by someone who knows the lost servers are gone: no grace to wait out.
        let requested = recover::requested(&dir);
        let servers: Vec<&AgentMember> = members
            .iter()
            .filter(|m| m.tags.get("role").map(String::as_str) == Some("consul"))
            .collect();
        let alive: Vec<&AgentMember> = servers.iter().copied().filter(|m| m.alive()).collect();
        let failed: Vec<&AgentMember> = servers.iter().copied().filter(|m| m.failed()).collect();
        let cached = self.cached();
        let known = recover::known_machines(members, &neighbours::all(&cached));
        let past = |t: Option<&Instant>| t.is_some_and(|t| t.elapsed() >= grace);
        let mut situation = recover::Situation {
            requested,
            alive_servers: alive.len(),
            failed_servers: failed.len(),
            past_grace: self.recovered_at.is_none_or(|t| t.elapsed() >= grace)
                && past(self.no_leader_since.as_ref())
                && failed.iter().all(|m| past(self.failed_since.get(&m.name))),
            alive_machines: members.iter().filter(|m| m.alive()).count(),
            known_machines: known,
            engine_says_gone: false,
        };
        if matches!(recover::decide(&situation), recover::Verdict::Wait(_)) {
            let lost: Vec<String> = failed.iter().map(|m| m.name.clone()).collect(); // evidence?
            situation.engine_says_gone = super::heal::engine_says_gone(&self.ctx, &lost, &cached).await;
        }
        let evidence = match recover::decide(&situation) {
            recover::Verdict::NotLost => {
                self.rec.waiting(None);
                if requested {
                    recover::withdraw(&dir);
                    self.rec.event(
                        "recover",
                        format!(
                            "asked to recover, but {} of {} servers are alive: quorum is not lost, nothing done",
                            alive.len(),
                            servers.len()
                        ),
                    );
                }
                return;
            }
            recover::Verdict::Wait(why) => {
                self.rec.waiting(Some(why));
                return;
            }
            recover::Verdict::Rebuild(evidence) => evidence,
        };
        if !requested {
            // On its own, a node rebuilds only if none of the lost servers answers.
            let hosts: Vec<(String, u16)> = neighbours::all(&cached)
                .into_iter()
                .filter(|n| failed.iter().any(|m| m.name == n.id))
                .filter_map(|n| Some((n.host?, n.ssh_port)))
                .collect();
            if let Some(why) = recover::not_gone(&hosts).await {
                self.rec
                    .waiting(Some(format!("quorum lost, but not rebuilding: {why}")));
                return;
            }
        }
        self.rec.waiting(None);
        recover::withdraw(&dir);
        let peers: Vec<RaftPeer> = alive.iter().filter_map(|m| recover::raft_peer(m)).collect();
        let names: Vec<&str> = alive.iter().map(|m| m.name.as_str()).collect();
        let lost: Vec<&str> = failed.iter().map(|m| m.name.as_str()).collect();
        let (consul, lock) = (self.consul.clone(), self.mesh_lock.clone());
        let result = tokio::task::spawn_blocking(move || recover::recover(&consul, &peers, lock)).await;
        self.recovered_at = Some(Instant::now());
        match result {
            Ok(Ok(())) => self.rec.event(
                "recover",
                format!(
                    "quorum lost ({} failed, {evidence}): consul restarted with raft/peers.json naming {}",
                    lost.join(", "),
                    names.join(", ")
                ),
            ),
            Ok(Err(e)) => self.rec.event("error", format!("recovery failed: {e:#}")),
            Err(e) => self.rec.event("error", format!("recovery panicked: {e}")),
        }
    }

    /// Makes consul's agent token if `mesh` could not (a new cluster's ACLs start in legacy
    /// mode for a few seconds, and refuse tokens meanwhile).
    async fn ensure_agent_token(&mut self) {
        let token = (!self.agent_token_made)
            .then(|| crate::consensus::acl::read_token(&self.ctx.paths))
            .flatten();
        let Some((accessor, secret)) = token.map(|t| crate::consensus::acl::agent_token(&t)) else {
            return;
        };
        match self.api.ensure_agent_token(&accessor, &secret).await {
            Ok(made) => {
                self.agent_token_made = true;
                if made {
                    self.rec
                        .event("acl", format!("made consul's agent token (accessor {accessor})"));
                }
            }
            Err(e) => tracing::debug!("agent token not made yet: {e:#}"),
        }
    }

    /// This node's neighbour entry put back where the KV lost it (checked every
    /// OWN_ENTRY_EVERY).
    async fn keep_own_entry(&mut self, me: &str) {
        if self.own_entry.is_empty() || self.last_own_check.is_some_and(|t| t.elapsed() < OWN_ENTRY_EVERY) {
            return;
        }
        self.last_own_check = Some(Instant::now());
        own_entry::keep(&self.api, &self.own_entry, me, &self.rec).await;
    }
}
