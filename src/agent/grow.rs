//! Growth to three: a node with an engine of its own (`spawn --with-engine`) that knows fewer
//! machines than `agent/rules/min_servers` spawns the missing ones itself, the original's rule
//! "spawn machines in machines if less than 3". One `spawn --compute-type vagrant --with-engine`
//! (or docker) gives a cluster of three.
//!
//! Before consensus there is no cluster lock, so one machine grows: the one that was alone (it
//! knew no other machine), and it keeps that role (a record in `var/grow.json`) until the
//! cluster has its machines. The machines it spawns know it, and themselves, when they start:
//! they never grow, so no more machines are made than are missing. A spawn that fails is
//! cleaned up by the spawner and tried again after a back-off (10 s, doubling up to 5 min):
//! never a storm of machines. Once this node is in consensus it never grows: losses are the
//! rules' business (promote, or replace under the cluster's lock: [`super::heal`]).

use std::time::Duration;

use super::settings::Settings;
use super::status::Recorder;
use crate::compute::spawner;
use crate::config::context::Context;
use crate::mesh::neighbours;

/// How often the count of known machines is looked at.
const EVERY: Duration = Duration::from_secs(5);
/// The first pause after a failed spawn; it doubles up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Whether this node grows the cluster now, and by how many machines: `known` machines (this
/// one included) of `min` wanted; `grower`: it was alone once and took the role.
pub fn missing(known: usize, min: usize, grower: bool) -> Option<usize> {
    (known < min && (grower || known <= 1)).then(|| min - known)
}

fn record(ctx: &Context) -> std::path::PathBuf {
    ctx.paths.cache_dir.join("var").join("grow.json")
}

/// Grows the cluster while it needs it, until the agent stops.
pub async fn grow(ctx: Context, me: String, rec: Recorder) {
    let mut backoff = BACKOFF;
    loop {
        tokio::time::sleep(EVERY).await;
        if crate::config::shared::consul_configured(&ctx.paths) {
            continue; // in consensus: losses are healed under the cluster's lock (heal.rs)
        }
        let c = ctx.clone();
        let Ok(Ok(config)) = tokio::task::spawn_blocking(move || c.config()).await else {
            continue;
        };
        let known = neighbours::all(&config.mapping).len().max(1);
        let min = Settings::from_mapping(&config.mapping).unwrap_or_default().min_servers;
        let file = record(&ctx);
        let Some(count) = missing(known, min, file.is_file()) else {
            if known >= min {
                let _ = std::fs::remove_file(&file);
            }
            continue;
        };
        // An engine of its own, per its own modules' `available` checks.
        let c = ctx.clone();
        let Ok(Some((config, ty))) = tokio::task::spawn_blocking(move || spawner::engine_type(&c)).await else {
            continue;
        };
        if let Err(e) = crate::sys::fs_atomic::write_atomic_creating(&file, b"{\"grows\": true}\n") {
            tracing::warn!("cannot record the growing role: {e}");
        }
        rec.event(
            "grow",
            format!(
                "{known} of {min} machines known: spawning {count} ({}), each with an engine",
                ty.name()
            ),
        );
        let results = spawner::spawn_from_node(&ctx, config, &ty, count, "growth", &me).await;
        let (ok, errors): (Vec<_>, Vec<_>) = match results {
            Ok(r) => r.into_iter().partition(Result::is_ok),
            Err(e) => (Vec::new(), vec![Err(e)]),
        };
        for e in errors.iter().filter_map(|r| r.as_ref().err()) {
            rec.event("error", format!("growth: {e:#}"));
        }
        if ok.is_empty() || !errors.is_empty() {
            rec.event(
                "grow",
                format!(
                    "{} spawned, {} failed: next try in {}s",
                    ok.len(),
                    errors.len(),
                    backoff.as_secs()
                ),
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            rec.event("grow", format!("{} machine(s) spawned and slaved", ok.len()));
            backoff = BACKOFF;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_machine_or_the_grower_spawns_and_never_more_than_missing() {
        assert_eq!(missing(1, 3, false), Some(2), "alone: it grows");
        assert_eq!(missing(2, 3, false), None, "one it spawned knows two: it does not");
        assert_eq!(
            missing(2, 3, true),
            Some(1),
            "the grower spawns what one failure left missing"
        );
        assert_eq!(missing(3, 3, true), None);
        assert_eq!(missing(4, 3, false), None);
        assert_eq!(missing(1, 5, false), Some(4));
        assert_eq!(missing(1, 1, false), None);
    }
}
