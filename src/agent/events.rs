//! Following the cluster's events: each user event this node's consul agent received runs
//! the handlers of `platform/<platform>/events/<name>/` once, in the order received.
//!
//! The ids of the events already taken are kept in `<cache-dir>/var/events_seen.json`
//! (written before the handlers run: an event is handled at most once, also across agent
//! restarts). An event for another node (`--node`) or another server type is taken and
//! skipped. consul keeps only a recent buffer of events, and only those received while it
//! ran: a node never runs events fired before it joined.
//!
//! Handlers of different events run at the same time (at most [`CONCURRENT`] events at once;
//! the others wait their turn without holding up the stream), so a slow handler does not make
//! this node fall behind consul's buffer of 256. When the buffer rolled past events this node
//! never took anyway (the agent was down long, or a burst outran it), the gap is reported in
//! the agent's log and `agent --status`, never passed over in silence.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::status::Recorder;
use crate::config::context::Context;
use crate::config::{self, shared};
use crate::consensus::api::{ConsulApi, LOCAL_HTTP};
use crate::consensus::event::{Event, RawEvent};
use crate::mesh::neighbours;
use crate::modules::hooks;

/// How long one blocking query waits for a new event.
const WAIT: Duration = Duration::from_secs(60);
/// How many event ids are remembered (consul's buffer holds 256).
const REMEMBER: usize = 1024;
/// How many events consul's agent keeps.
const BUFFER: usize = 256;
/// The original's trigger (`consul event -name notify_cluster_change`, or `event fire
/// notify_cluster_change`): besides its own handlers, it runs the `cluster_change` hooks on
/// every node it reaches, once each.
pub const NOTIFY_CLUSTER_CHANGE: &str = "notify_cluster_change";

/// How many events' handlers run at once.
pub const CONCURRENT: usize = 8;

/// The ids of the events taken, oldest first, and the newest one's Lamport time.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    ids: VecDeque<String>,
    #[serde(default)]
    newest: Option<u64>,
}

fn seen_file(ctx: &Context) -> PathBuf {
    ctx.paths.cache_dir.join("var").join("events_seen.json")
}

impl Seen {
    fn load(file: &std::path::Path) -> Self {
        std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, file: &std::path::Path) -> anyhow::Result<()> {
        crate::sys::fs_atomic::write_atomic_creating(file, &serde_json::to_vec(self)?)?;
        Ok(())
    }

    fn has(&self, id: &str) -> bool {
        self.ids.iter().any(|i| i == id)
    }

    fn take(&mut self, id: &str) -> bool {
        if self.has(id) {
            return false;
        }
        self.ids.push_back(id.to_string());
        while self.ids.len() > REMEMBER {
            self.ids.pop_front();
        }
        true
    }

    /// Takes the event `raw`, keeping the newest Lamport time taken.
    fn take_event(&mut self, raw: &RawEvent) -> bool {
        let taken = self.take(&raw.id);
        if taken {
            self.newest = Some(self.newest.map_or(raw.ltime, |n| n.max(raw.ltime)));
        }
        taken
    }

    /// The Lamport times of events consul's buffer (`list`) rolled past before this node took
    /// them: the buffer is full and holds none of the events taken (so it rolled over since),
    /// and between the newest taken and the newest listed, Lamport times are missing. The
    /// first and last missing; None: nothing can have been missed. Gossip brings events out
    /// of order (a burst's first events can arrive last), so the buffer's order says nothing.
    fn gap(&self, list: &[RawEvent]) -> Option<(u64, u64)> {
        let newest = self.newest?;
        if list.len() < BUFFER || list.iter().any(|e| self.has(&e.id)) {
            return None;
        }
        let listed: std::collections::BTreeSet<u64> = list.iter().map(|e| e.ltime).filter(|t| *t > newest).collect();
        let top = *listed.last()?;
        let mut missing = (newest + 1..=top).filter(|t| !listed.contains(t));
        let from = missing.next()?;
        Some((from, missing.next_back().unwrap_or(from)))
    }
}

/// Follows the event stream of the local consul agent until the agent stops.
pub async fn follow(ctx: Context, me: String, rec: Recorder) {
    let api = match ConsulApi::new(LOCAL_HTTP, WAIT + Duration::from_secs(10)) {
        Ok(a) => a,
        Err(e) => return tracing::error!("event stream: {e:#}"),
    };
    let Some(token) = crate::consensus::acl::read_token(&ctx.paths) else {
        return tracing::error!("event stream: no cluster token on this node");
    };
    let (_, token) = crate::consensus::acl::agent_token(&token);
    let file = seen_file(&ctx);
    let mut seen = Seen::load(&file);
    let api = std::sync::Arc::new(api);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT));
    let mut running = tokio::task::JoinSet::new();
    let mut index = 0u64;
    let mut failures = 0u32;
    loop {
        let (list, new_index) = match api.events(index, WAIT, &token).await {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                tracing::debug!("event stream: {e:#}");
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(5)))).await;
                continue;
            }
        };
        failures = 0;
        index = new_index;
        while let Some(done) = running.try_join_next() {
            if let Err(e) = done {
                rec.event("error", format!("event handler panicked: {e}"));
            }
        }
        if let Some((from, to)) = seen.gap(&list) {
            let missed = if from == to {
                format!("the event at Lamport time {from}")
            } else {
                format!("events at Lamport times {from} to {to}")
            };
            rec.event(
                "error",
                format!(
                    "{missed} may have been missed: consul keeps the last {BUFFER} events and had dropped them \
                     before this agent took them (it was down, or a burst outran the handlers)"
                ),
            );
        }
        for raw in &list {
            if !seen.take_event(raw) {
                continue;
            }
            if let Err(e) = seen.save(&file) {
                rec.event("error", format!("cannot record event {}: {e:#}", raw.id));
            }
            let event = Event::from_raw(raw);
            let (ctx, me, api, rec, permits) = (ctx.clone(), me.clone(), api.clone(), rec.clone(), permits.clone());
            // The stream goes on at once; the handlers wait for a turn.
            running.spawn(async move {
                let Ok(_turn) = permits.acquire_owned().await else {
                    return;
                };
                let kv = shared::read_with(&ctx.paths, &api).await;
                let outcome = tokio::task::spawn_blocking(move || handle(&ctx, &me, kv, &event)).await;
                match outcome {
                    Ok(Some(line)) => rec.event("event", line),
                    Ok(None) => {}
                    Err(e) => rec.event("error", format!("event handler panicked: {e}")),
                }
            });
        }
    }
}

/// Runs the handlers of `event` here, unless it is meant for another node or server type.
/// What happened, for the agent's log (None: not for this node).
fn handle(ctx: &Context, me: &str, kv: Option<shared::Snapshot>, event: &Event) -> Option<String> {
    if event.node.as_deref().is_some_and(|n| n != me) {
        return None;
    }
    let config = match config::load_over(&ctx.paths, shared::take(&ctx.paths, kv)) {
        Ok(c) => c,
        Err(e) => {
            return Some(format!(
                "`{}` ({}) not handled: cannot load the config: {e:#}",
                event.name, event.id
            ));
        }
    };
    if let Some(wanted) = &event.server_type {
        let mine = config.get_str(&neighbours::key(me, "server_type"));
        if mine != Some(wanted.as_str()) {
            return None;
        }
    }
    let timeout = super::settings::Settings::from_mapping(&config.mapping)
        .map(|s| s.hook_timeout)
        .unwrap_or(hooks::HANDLER_TIMEOUT);
    let input = hooks::Input {
        stdin: Some(event.payload.clone()),
        env: vec![
            ("RAPTIFORMICA_EVENT_NAME".into(), event.name.clone()),
            ("RAPTIFORMICA_EVENT_ID".into(), event.id.clone()),
            (
                "RAPTIFORMICA_EVENT_ORIGIN".into(),
                event.origin.clone().unwrap_or_default(),
            ),
        ],
    };
    let t = Instant::now();
    let mut fired = hooks::run_handlers(
        ctx,
        &config,
        &format!("event `{}`", event.name),
        &format!("events/{}", event.name),
        &input,
        timeout,
    );
    if event.name == NOTIFY_CLUSTER_CHANGE {
        let hooks = hooks::fire_timed(ctx, &config, "cluster_change", timeout);
        fired.ran += hooks.ran;
        fired.failed += hooks.failed;
    }
    Some(format!(
        "`{}` ({}) from {}: {} handler(s) ran, {} failed, in {} ms",
        event.name,
        event.id,
        event.origin.as_deref().unwrap_or("outside raptiformica"),
        fired.ran,
        fired.failed,
        t.elapsed().as_millis()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_taken_once_and_the_memory_is_bounded_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("var/events_seen.json");
        let mut seen = Seen::load(&file);
        assert!(seen.take("a"));
        assert!(!seen.take("a"));
        seen.save(&file).unwrap();
        let mut again = Seen::load(&file);
        assert!(!again.take("a"), "remembered across restarts");
        for i in 0..REMEMBER + 5 {
            again.take(&format!("x{i}"));
        }
        assert_eq!(again.ids.len(), REMEMBER);
        assert!(again.take("a"), "the oldest ids are forgotten");
    }

    fn raw(id: &str, ltime: u64) -> RawEvent {
        serde_json::from_value(serde_json::json!({"ID": id, "Name": "n", "LTime": ltime})).unwrap()
    }

    #[test]
    fn a_buffer_that_rolled_past_untaken_events_is_a_gap() {
        let mut seen = Seen::default();
        let full =
            |from: u64| -> Vec<RawEvent> { (from..from + BUFFER as u64).map(|t| raw(&format!("e{t}"), t)).collect() };
        assert_eq!(
            seen.gap(&full(1)),
            None,
            "a new node: nothing taken yet, nothing missed"
        );
        for e in full(1) {
            assert!(seen.take_event(&e));
        }
        assert_eq!(seen.newest, Some(256));
        // Kept up: the buffer's oldest was taken.
        assert_eq!(seen.gap(&full(100)), None);
        // The next one right after the newest taken: nothing between.
        assert_eq!(seen.gap(&full(257)), None);
        // Rolled past 257..=299.
        assert_eq!(seen.gap(&full(300)), Some((257, 299)));
        // A buffer that is not full kept everything since it started.
        assert_eq!(seen.gap(&full(300)[..10]), None);
        // Out of order (gossip sends a backlog's newest first): 257..=556 but for 400..=443,
        // the first ones arriving last.
        let mut shuffled: Vec<RawEvent> = (444..=556).chain(257..400).map(|t| raw(&format!("e{t}"), t)).collect();
        assert_eq!(shuffled.len(), BUFFER);
        assert_eq!(seen.gap(&shuffled), Some((400, 443)));
        // A node that keeps up also gets them out of order: it holds some it took.
        shuffled[0] = raw("e1", 1);
        assert_eq!(seen.gap(&shuffled), None);
        // Kept across restarts.
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("seen.json");
        seen.save(&file).unwrap();
        assert_eq!(Seen::load(&file).gap(&full(300)), Some((257, 299)));
    }
}
