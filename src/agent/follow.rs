//! Following the shared config: the agent watches the neighbours in consul's KV (blocking
//! queries) and the members' health, and re-renders this node's overlay links when either
//! changes: a new node is dialed, a removed or failed one is dropped and replaced by the next
//! one along the ring (see [`peering`](crate::mesh::peering)). So slaving a node no longer
//! needs an SSH session to every other node: one node learns of it, the KV tells the rest.
//! The links come from the neighbours the watch itself brings; the whole KV is read (and
//! cached, so the node keeps the shared config without consul) at most every [`REFRESH`]: a
//! batch of new nodes changes the neighbours every second, and every node reading all of the
//! KV after each change was the servers' heaviest load while a cluster grew.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::membership::View;
use super::status::Recorder;
use crate::config::context::Context;
use crate::config::{self, shared};
use crate::consensus::api::{ConsulApi, LOCAL_HTTP};
use crate::mesh::yggdrasil::Yggdrasil;
use crate::mesh::{Overlay as _, neighbours};
use crate::node::mesh as node;
use crate::sys::daemon::Applied;

const WAIT: Duration = Duration::from_secs(55);
/// How long a node lets changes gather before it acts on them, plus up to [`JITTER`]: a batch
/// of new nodes makes a hundred writes in a minute, and every node reading the whole KV after
/// each of them (all at the same moment) was what loaded the servers most while a cluster
/// grew. The new node's own links do not wait for this: it dials its peers when it meshes.
const SETTLE: Duration = Duration::from_secs(2);
const JITTER: Duration = Duration::from_millis(1500);
/// At most this often the whole KV is read and cached on a change (the first change after
/// the agent starts reads it at once).
const REFRESH: Duration = Duration::from_secs(30);

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
        ConsulApi::new(LOCAL_HTTP, WAIT + Duration::from_secs(10)),
        ConsulApi::new(LOCAL_HTTP, Duration::from_secs(5)),
    ) else {
        return;
    };
    let mut index = 0u64;
    let mut failures = 0u32;
    // The neighbours the watch brought and that are not cached yet; whether the watch or a
    // full read ever brought any; when the whole KV was last read.
    let mut watched: Option<config::Mapping> = None;
    let mut known = false;
    let mut refreshed: Option<Instant> = None;
    loop {
        tokio::select! {
            r = watch_api.watch_tree(neighbours::NEIGHBOURS, index, WAIT) => match r {
                Ok((_, i)) if i == index => continue, // the wait ran out: nothing new
                Ok((tree, i)) => { index = i; failures = 0; watched = Some(tree); }
                Err(e) => {
                    failures += 1;
                    tracing::debug!("neighbour watch: {e:#}");
                    tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)))).await;
                    continue;
                }
            },
            changed = view.changed() => if changed.is_err() { return },
        }
        tokio::time::sleep(SETTLE + jitter()).await;
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
        let down: BTreeSet<String> = view
            .borrow()
            .as_ref()
            .map(|v| {
                v.iter()
                    .filter(|(_, s)| *s == "critical")
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        let (ctx2, ygg2, me2, lock) = (ctx.clone(), ygg.clone(), me.clone(), mesh_lock.clone());
        let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<(Applied, usize)> {
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
            let file = std::fs::File::create(&lock)?;
            file.lock()?;
            Ok((ygg2.apply(&plan, node::new_keys_policy(&ctx2))?, plan.dial.len()))
        })
        .await;
        match applied {
            Ok(Ok((Applied::Unchanged, _))) => {}
            Ok(Ok((a, n))) => rec.event("peers", format!("overlay {a}; {n} link(s) kept")),
            Ok(Err(e)) => rec.event("error", format!("cannot re-render the overlay: {e:#}")),
            Err(e) => rec.event("error", format!("re-rendering the overlay panicked: {e}")),
        }
    }
}

/// A random part of [`JITTER`], so that the nodes do not read the KV all at once.
fn jitter() -> Duration {
    let spread = JITTER.as_millis() as u64;
    Duration::from_millis((uuid::Uuid::new_v4().as_u128() % u128::from(spread.max(1))) as u64)
}
