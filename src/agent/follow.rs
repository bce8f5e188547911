//! Following the shared config: the agent watches the neighbours in consul's KV (blocking
//! queries) and the members' health, and re-renders this node's overlay links when either
//! changes: a new node is dialed, a removed or failed one is dropped and replaced by the next
//! one along the ring (see [`peering`](crate::mesh::peering)). So slaving a node no longer
//! needs an SSH session to every other node: one node learns of it, the KV tells the rest.
//! The links come from the neighbours the watch itself brings; the whole KV is read (and
//! cached, so the node keeps the shared config without consul) at most every [`REFRESH`]: a
//! batch of new nodes changes the neighbours every second, and every node reading all of the
//! KV after each change was the servers' heaviest load while a cluster grew.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::membership::View;
use super::status::Recorder;
use crate::config::context::Context;
use crate::config::{self, shared};
use crate::consensus::api::{ConsulApi, LOCAL_HTTP, WATCH_WAIT as WAIT, blocking_timeout};
use crate::mesh::yggdrasil::Yggdrasil;
use crate::mesh::{Overlay as _, neighbours};
use crate::node::mesh as node;
use crate::sys::daemon::Applied;

/// How long a node lets changes gather before it acts on them, plus up to [`JITTER`]: a batch
/// of new nodes makes a hundred writes in a minute, and every node reading the whole KV after
/// each of them (all at the same moment) was what loaded the servers most while a cluster
/// grew. The new node's own links do not wait for this: it dials its peers when it meshes.
/// A node that is not a hub waits longer in a larger cluster: see [`settle`].
const SETTLE: Duration = Duration::from_secs(2);
const JITTER: Duration = Duration::from_millis(1500);
/// What a node that is not a hub waits per node of the cluster, up to [`SETTLE_MAX`].
const SETTLE_PER_NODE: Duration = Duration::from_millis(200);
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// At most this often the whole KV is read and cached on a change (the first change after
/// the agent starts reads it at once).
const REFRESH: Duration = Duration::from_secs(30);
/// How long a member must have been failing before its links are replaced along the ring. A
/// busy cluster's members flap (failed for a few seconds, then back): replacing each flapping
/// peer's link and dropping the replacement a moment later made every overlay on the way
/// re-route, which loaded the busy cluster more. The hubs keep every node reachable meanwhile.
const DOWN_AFTER: Duration = Duration::from_secs(60);

/// The members seen failing, and since when: a member counts as down for the links once it
/// has been failing for [`DOWN_AFTER`].
#[derive(Default)]
struct Failing(BTreeMap<String, Instant>);

impl Failing {
    /// Takes the members failing now (`critical` in `view`), at `now`.
    fn update(&mut self, view: Option<&View>, now: Instant) {
        let critical: BTreeSet<&String> = view
            .map(|v| v.iter().filter(|(_, s)| *s == "critical").map(|(n, _)| n).collect())
            .unwrap_or_default();
        self.0.retain(|n, _| critical.contains(n));
        for n in critical {
            self.0.entry(n.clone()).or_insert(now);
        }
    }

    /// The members down at `now`.
    fn down(&self, now: Instant) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= DOWN_AFTER)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// When the next failing member will count as down, if one is not yet.
    fn next_due(&self, now: Instant) -> Option<Instant> {
        self.0
            .values()
            .map(|since| *since + DOWN_AFTER)
            .filter(|due| *due > now)
            .min()
    }
}

/// How long a node lets changes of the neighbours gather in a cluster of `nodes` (before
/// [`jitter`]). Each wake of the watch brings every node's entry (about 3 KB a node), to every
/// node: with 73 nodes, one write to the neighbours a second took the cluster from 1.2 to 2
/// cores. A hub (a consul server) acts within [`SETTLE`]: it links with every node, and a new
/// node is reachable once the hubs dial it. Any other node only adds a ring link to a new
/// neighbour (the hubs already carry its traffic), so it waits [`SETTLE_PER_NODE`] a node,
/// up to [`SETTLE_MAX`]: in a batch, the cluster reads the neighbours about five times a
/// second in all, not once per node every two or three seconds. Up to 10 nodes, as before.
fn settle(nodes: usize, hub: bool) -> Duration {
    if hub {
        return SETTLE;
    }
    (SETTLE_PER_NODE * u32::try_from(nodes).unwrap_or(u32::MAX)).clamp(SETTLE, SETTLE_MAX)
}

/// Keeps the overlay links of node `me` in line with the KV and the members' health.
pub async fn follow(
    ctx: Context,
    ygg: Yggdrasil,
    me: String,
    mesh_lock: PathBuf,
    mut view: watch::Receiver<Option<View>>,
    rec: Recorder,
) {
    let (Ok(watch_api), Ok(api)) = (
        ConsulApi::new(LOCAL_HTTP, blocking_timeout(WAIT)),
        ConsulApi::new(LOCAL_HTTP, Duration::from_secs(5)),
    ) else {
        return;
    };
    // The watch runs on its own: a blocking query given up (when the members changed first)
    // went on waiting on the server until it ran out, and answered every change meanwhile
    // with the whole tree, for nobody.
    let (tree_tx, mut trees) = watch::channel(None);
    let pause = Arc::new(AtomicU64::new(SETTLE.as_millis() as u64));
    tokio::spawn(watch_neighbours(watch_api, tree_tx, pause.clone()));
    // The neighbours the watch brought and that are not cached yet; whether the watch or a
    // full read ever brought any; when the whole KV was last read.
    let mut watched: Option<config::Mapping> = None;
    let mut known = false;
    let mut refreshed: Option<Instant> = None;
    let mut failing = Failing::default();
    let mut wait = SETTLE;
    loop {
        failing.update(view.borrow().as_ref(), Instant::now());
        let due = failing.next_due(Instant::now());
        let mut woke = false;
        tokio::select! {
            changed = trees.changed() => {
                if changed.is_err() {
                    return;
                }
                woke = true;
            }
            changed = view.changed() => if changed.is_err() { return },
            // A member failing long enough now counts as down.
            _ = tokio::time::sleep_until(due.unwrap_or_else(|| Instant::now() + WAIT).into()), if due.is_some() => {}
        }
        tokio::time::sleep(wait + jitter()).await;
        if let Some(tree) = newest(&mut trees, woke) {
            watched = tree;
        }
        let kv = if refreshed.is_none_or(|at| at.elapsed() >= REFRESH) {
            let kv = shared::read_with(&ctx.paths, &api).await;
            if kv.is_some() {
                refreshed = Some(Instant::now());
            }
            kv
        } else {
            None
        };
        // A full read is fresher than the watch's copy; else the watch's copy goes into the
        // cache, once (a wake for the members alone must not put an older copy back over what
        // a command cached meanwhile: the cache as it is serves then).
        let tree = watched.take().filter(|_| kv.is_none());
        known |= kv.is_some() || tree.is_some();
        if !known {
            continue; // nothing known of the neighbours yet
        }
        failing.update(view.borrow().as_ref(), Instant::now());
        let down = failing.down(Instant::now());
        let (ctx2, ygg2, me2, lock) = (ctx.clone(), ygg.clone(), me.clone(), mesh_lock.clone());
        let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<(Applied, usize, Duration)> {
            // Caches the KV when read (and refuses an unusable one), else the neighbours: the
            // agent's other duties (its role, rejoins) read them from the cache.
            let shared = match (kv, tree) {
                (Some(kv), _) => config::shared::take(&ctx2.paths, Some(kv)),
                (None, Some(tree)) => config::shared::cache_tree(&ctx2.paths, neighbours::NEIGHBOURS, tree)
                    .map_err(|e| tracing::warn!("the neighbours are not cached: {e:#}"))
                    .ok(),
                (None, None) => None,
            };
            let config = config::load_over(&ctx2.paths, shared)?;
            let plan = crate::mesh::plan::overlay_plan(&config.mapping, &me2, &down)?;
            let all = neighbours::all(&config.mapping);
            let hub = all
                .iter()
                .any(|n| n.id == me2 && n.consul_role == Some(neighbours::Role::Server));
            let file = std::fs::File::create(&lock)?;
            file.lock()?;
            let applied = ygg2.apply(&plan, node::new_keys_policy(&ctx2))?;
            Ok((applied, plan.dial.len(), settle(all.len(), hub)))
        })
        .await;
        if let Ok(Ok((_, _, next))) = &applied {
            wait = *next;
            pause.store(next.as_millis() as u64, Ordering::Relaxed);
        }
        match applied {
            Ok(Ok((Applied::Unchanged, _, _))) => {}
            Ok(Ok((a, n, _))) => rec.event("peers", format!("overlay {a}; {n} link(s) kept")),
            Ok(Err(e)) => rec.event("error", format!("cannot re-render the overlay: {e:#}")),
            Err(e) => rec.event("error", format!("re-rendering the overlay panicked: {e}")),
        }
    }
}

/// Watches the neighbours in the KV with one blocking query at a time, and sends each new
/// copy on `tx`; after each, waits `pause` (milliseconds: what the follower waits too), so a
/// burst of writes is fetched once per pause, not once per write.
async fn watch_neighbours(api: ConsulApi, tx: watch::Sender<Option<config::Mapping>>, pause: Arc<AtomicU64>) {
    let mut index = 0u64;
    let mut failures = 0u32;
    loop {
        match api.watch_tree(neighbours::NEIGHBOURS, index, WAIT).await {
            Ok((_, i)) if i == index => {} // the wait ran out: nothing new
            Ok((tree, i)) => {
                index = i;
                failures = 0;
                if tx.send(Some(tree)).is_err() {
                    return; // the follower stopped
                }
                tokio::time::sleep(Duration::from_millis(pause.load(Ordering::Relaxed))).await;
            }
            Err(e) => {
                failures += 1;
                tracing::debug!("neighbour watch: {e:#}");
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)))).await;
            }
        }
    }
}

/// The newest copy the watch brought since the follower last took one, if it brought one;
/// `woke`: the wait that just ended was on the watch, which marked that copy seen. (Without
/// it, the copy that woke the follower was used only when another came during the settle:
/// the last new node of a batch waited for a hub's link until some other change, about 30 s.)
fn newest(trees: &mut watch::Receiver<Option<config::Mapping>>, woke: bool) -> Option<Option<config::Mapping>> {
    (woke || trees.has_changed().unwrap_or(false)).then(|| trees.borrow_and_update().clone())
}

/// A random part of [`JITTER`], so that the nodes do not read the KV all at once.
fn jitter() -> Duration {
    super::membership::random_up_to(JITTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_copy_that_woke_the_follower_is_the_one_it_uses() {
        let tree = |v: &str| Some(config::Mapping::from([("k".to_string(), serde_json::Value::from(v))]));
        let (tx, mut rx) = watch::channel(None);
        tx.send(tree("a")).unwrap();
        rx.changed().await.unwrap(); // the follower's wait: marks "a" seen
        assert_eq!(newest(&mut rx, true), Some(tree("a")), "the copy that woke it");
        assert_eq!(newest(&mut rx, false), None, "nothing newer");
        tx.send(tree("b")).unwrap();
        assert_eq!(
            newest(&mut rx, false),
            Some(tree("b")),
            "one that came during the settle"
        );
        assert_eq!(newest(&mut rx, false), None);
    }

    use crate::agent::membership::view_of as view;

    #[test]
    fn a_hub_acts_at_once_the_others_wait_longer_in_a_larger_cluster() {
        assert_eq!(settle(100, true), SETTLE);
        assert_eq!(settle(3, false), SETTLE, "a small cluster as before");
        assert_eq!(settle(10, false), SETTLE);
        assert_eq!(settle(50, false), Duration::from_secs(10));
        assert_eq!(settle(100, false), Duration::from_secs(20));
        assert_eq!(settle(1000, false), SETTLE_MAX);
    }

    #[test]
    fn a_member_counts_as_down_only_after_failing_long_enough() {
        let t0 = Instant::now();
        let mut f = Failing::default();
        f.update(Some(&view(&[("a", "passing"), ("b", "critical")])), t0);
        assert!(f.down(t0).is_empty(), "a member failing for a moment is not down");
        assert_eq!(f.next_due(t0), Some(t0 + DOWN_AFTER));
        let later = t0 + DOWN_AFTER;
        f.update(Some(&view(&[("a", "passing"), ("b", "critical")])), later);
        assert_eq!(f.down(later), BTreeSet::from(["b".to_string()]));
        assert_eq!(f.next_due(later), None);
    }

    #[test]
    fn a_member_back_before_then_starts_over() {
        let t0 = Instant::now();
        let mut f = Failing::default();
        f.update(Some(&view(&[("b", "critical")])), t0);
        f.update(Some(&view(&[("b", "passing")])), t0 + Duration::from_secs(30));
        f.update(Some(&view(&[("b", "critical")])), t0 + Duration::from_secs(40));
        assert!(f.down(t0 + DOWN_AFTER).is_empty(), "the flap restarted its clock");
        assert_eq!(f.down(t0 + Duration::from_secs(40) + DOWN_AFTER).len(), 1);
        f.update(None, t0 + Duration::from_secs(200));
        assert!(f.down(t0 + Duration::from_secs(200)).is_empty());
    }
}
