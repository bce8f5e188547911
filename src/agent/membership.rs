//! The membership watch: consul blocking queries on the members' `serfHealth` checks (no busy
//! polling), turned into one `cluster_change` per change: a burst of changes within a second
//! of each other fires once, and nothing fires while nothing changes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::settings::Settings;
use super::status::Recorder;
use crate::config::context::Context;
use crate::config::{self, shared};
use crate::consensus::api::{ConsulApi, LOCAL_HTTP, WATCH_WAIT as WAIT, blocking_timeout};
use crate::modules::hooks;

/// Each member's serf health as the catalog has it: node name → `passing` / `critical`.
pub type View = BTreeMap<String, String>;

/// Changes closer together than this are one change.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// How long the watch lets changes gather per member, after a change (see [`gather`]).
const GATHER_PER_MEMBER: Duration = Duration::from_millis(100);
const GATHER_MAX: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Check {
    node: String,
    #[serde(rename = "CheckID")]
    check_id: String,
    status: String,
}

/// The view from a `/v1/health/state/any` reply.
fn view(checks: &[Check]) -> View {
    checks
        .iter()
        .filter(|c| c.check_id == "serfHealth")
        .map(|c| (c.node.clone(), c.status.clone()))
        .collect()
}

/// How long the watch waits after a change before it asks again, with `members` members:
/// [`GATHER_PER_MEMBER`] each (at least [`DEBOUNCE`], at most [`GATHER_MAX`]), plus up to half
/// of that at random. Each answer holds every member's check and goes to every node: in a
/// batch of new nodes the members change every second, and with 70 nodes one answer a second
/// to each was 1.3 MB/s from the servers across the overlay. Up to 10 members, as before.
fn gather(members: usize) -> Duration {
    let base = (GATHER_PER_MEMBER * u32::try_from(members).unwrap_or(u32::MAX)).clamp(DEBOUNCE, GATHER_MAX);
    base + random_up_to(base / 2)
}

/// A random duration below `spread` (whole milliseconds), to keep the nodes from acting all
/// at the same moment.
pub(super) fn random_up_to(spread: Duration) -> Duration {
    let spread = spread.as_millis() as u64;
    Duration::from_millis((uuid::Uuid::new_v4().as_u128() % u128::from(spread.max(1))) as u64)
}

/// A view of `(member, status)` pairs, for tests.
#[cfg(test)]
pub(super) fn view_of(pairs: &[(&str, &str)]) -> View {
    pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// Publishes every new view (the first one too) on `tx`, until the agent stops.
pub async fn watch(tx: watch::Sender<Option<View>>) {
    let api = match ConsulApi::new(LOCAL_HTTP, blocking_timeout(WAIT)) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("membership watch: {e:#}");
            return;
        }
    };
    let mut index = 0u64;
    let mut failures = 0u32;
    loop {
        // `stale`: any server answers, so a watch keeps working through an election.
        match api.blocking::<Vec<Check>>("health/state/any?stale", index, WAIT).await {
            Ok((checks, new_index)) => {
                failures = 0;
                // An index that went backwards (a rebuilt store) starts over.
                index = if new_index < index { 0 } else { new_index };
                let v = view(&checks);
                let members = v.len();
                let changed = tx.send_if_modified(|current| {
                    if current.as_ref() != Some(&v) {
                        *current = Some(v);
                        true
                    } else {
                        false
                    }
                });
                // A burst of changes (a batch of new nodes, members flapping under load)
                // gathers for a moment before the next query (see `gather`).
                if changed {
                    tokio::time::sleep(gather(members)).await;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::debug!("membership watch: {e:#}");
                let pause = Duration::from_secs(u64::from(failures.min(5)));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Fires `cluster_change` once per change of the view after the first (debounced), through
/// `fire`, which runs the hook's handlers.
pub async fn fire_on_change<F>(mut rx: watch::Receiver<Option<View>>, rec: Recorder, fire: F)
where
    F: Fn(String) -> tokio::task::JoinHandle<()>,
{
    // The first view is the baseline, not a change.
    let mut last: Option<View> = loop {
        if rx.changed().await.is_err() {
            return;
        }
        if let Some(v) = rx.borrow_and_update().clone() {
            break Some(v);
        }
    };
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        // Let a burst settle.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        let now = rx.borrow_and_update().clone();
        if now.is_none() || now == last {
            continue;
        }
        let summary = describe(last.as_ref(), now.as_ref().expect("checked"));
        last = now;
        rec.event("cluster_change", summary.clone());
        let _ = fire(summary).await;
    }
}

/// What changed, in words: `n1 critical, n4 joined`.
pub fn describe(before: Option<&View>, after: &View) -> String {
    let empty = View::new();
    let before = before.unwrap_or(&empty);
    let mut parts = Vec::new();
    for (node, status) in after {
        match before.get(node) {
            None => parts.push(format!("{node} joined ({status})")),
            Some(s) if s != status => parts.push(format!("{node} {status}")),
            _ => {}
        }
    }
    for node in before.keys().filter(|n| !after.contains_key(*n)) {
        parts.push(format!("{node} left"));
    }
    parts.join(", ")
}

/// Whether the config as cached has `cluster_change` handlers for this node's platform: when
/// it has none, a change costs no read of the KV (every node read all of it on every change
/// of the members, which is many while a cluster grows). A handler added to the KV counts
/// once the cache has it (the agent refreshes it at least every half minute while things
/// change). Unknown (the config does not load): true.
pub fn has_cluster_change_handlers(ctx: &Context) -> bool {
    let Ok(config) = config::load_over(&ctx.paths, None) else {
        return true;
    };
    hooks::platform_type(ctx, &config)
        .is_some_and(|platform| !hooks::handlers(&config, &platform, "cluster_change").is_empty())
}

/// Fires the `cluster_change` hooks once for `summary`, from the config over `kv` (what the
/// KV held, cached first).
pub fn fire_cluster_change(ctx: &Context, kv: Option<shared::Snapshot>, summary: &str) {
    let config = match config::load_over(&ctx.paths, shared::take(&ctx.paths, kv)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("cluster_change not fired: cannot load the config: {e:#}");
            return;
        }
    };
    let timeout = Settings::from_mapping(&config.mapping)
        .map(|s| s.hook_timeout)
        .unwrap_or(hooks::HANDLER_TIMEOUT);
    // SAFETY-free: the handlers read what changed from the environment.
    let fired = hooks::fire_timed(ctx, &config, "cluster_change", timeout);
    tracing::info!(
        "cluster_change ({summary}): {} handler(s) ran, {} failed",
        fired.ran,
        fired.failed
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::view_of as v;

    #[test]
    fn the_watch_waits_longer_after_a_change_in_a_larger_cluster() {
        let within = |members: usize, lo: u64, hi: u64| {
            for _ in 0..50 {
                let g = gather(members);
                assert!(
                    g >= Duration::from_millis(lo) && g < Duration::from_millis(hi),
                    "{members}: {g:?}"
                );
            }
        };
        within(3, 1000, 1500);
        within(10, 1000, 1500);
        within(100, 10_000, 15_000);
        within(1000, 15_000, 22_500);
    }

    #[test]
    fn only_serf_health_counts_and_changes_read_plainly() {
        let checks: Vec<Check> = serde_json::from_value(serde_json::json!([
            {"Node": "a", "CheckID": "serfHealth", "Status": "passing"},
            {"Node": "a", "CheckID": "web", "Status": "critical"},
            {"Node": "b", "CheckID": "serfHealth", "Status": "critical"}
        ]))
        .unwrap();
        assert_eq!(view(&checks), v(&[("a", "passing"), ("b", "critical")]));
        let d = describe(Some(&v(&[("a", "passing"), ("c", "passing")])), &view(&checks));
        assert_eq!(d, "b joined (critical), c left");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_fires_once_and_calm_fires_never() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::sys::paths::Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        let rec = Recorder::new(&paths, "node");
        let (tx, rx) = watch::channel(None);
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let task = tokio::spawn(fire_on_change(rx, rec, move |_| {
            f.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async {})
        }));
        tx.send(Some(v(&[("a", "passing"), ("b", "passing")]))).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0, "the baseline is not a change");
        // A burst: b fails, c joins, c flaps, all within the debounce.
        for view in [
            v(&[("a", "passing"), ("b", "critical")]),
            v(&[("a", "passing"), ("b", "critical"), ("c", "passing")]),
            v(&[("a", "passing"), ("b", "critical"), ("c", "critical")]),
            v(&[("a", "passing"), ("b", "critical"), ("c", "passing")]),
        ] {
            tx.send(Some(view)).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        // The same view again, and a long calm: nothing.
        tx.send(Some(v(&[("a", "passing"), ("b", "critical"), ("c", "passing")])))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        task.abort();
    }
}
