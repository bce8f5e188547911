//! What the agent did, for `raptiformica agent --status`: the last events (restarts, evictions,
//! promotions, recoveries, hooks fired) with their times, in `<cache-dir>/var/agent-status.json`,
//! rewritten atomically after each event.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::sys::paths::Paths;

/// How many events the file keeps.
const KEEP: usize = 100;

/// One thing the agent did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the epoch.
    pub at: u64,
    /// `restart`, `evict`, `promote`, `recover`, `replace`, `hook`, `rejoin`, `error`, ...
    pub kind: String,
    pub detail: String,
}

/// The agent's state as the status file holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// `node` or `workstation`.
    pub mode: String,
    pub started_at: u64,
    /// The node the agent is acting on right now (evicting, replacing, promoting), if any.
    #[serde(default)]
    pub acting_on: Option<String>,
    /// What the agent holds back from, and why (a rebuild without evidence, say); None when
    /// nothing is held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub events: Vec<Event>,
}

/// The status file of this machine.
pub fn file(paths: &Paths) -> PathBuf {
    paths.cache_dir.join("var").join("agent-status.json")
}

/// Reads a status file.
pub fn read(path: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The running agent's record, shared by its duties.
#[derive(Clone)]
pub struct Recorder {
    path: PathBuf,
    status: Arc<Mutex<Status>>,
}

impl Recorder {
    pub fn new(paths: &Paths, mode: &str) -> Self {
        let path = file(paths);
        let mut status = read(&path).unwrap_or_default();
        status.pid = std::process::id();
        status.mode = mode.to_string();
        status.started_at = now();
        status.acting_on = None;
        status.waiting = None;
        let r = Self {
            path,
            status: Arc::new(Mutex::new(status)),
        };
        r.save();
        r
    }

    /// Records an event (and logs it).
    pub fn event(&self, kind: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!("{kind}: {detail}");
        {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            s.events.push(Event {
                at: now(),
                kind: kind.to_string(),
                detail,
            });
            let extra = s.events.len().saturating_sub(KEEP);
            s.events.drain(..extra);
        }
        self.save();
    }

    /// Marks the node the agent is acting on (None when done).
    pub fn acting_on(&self, node: Option<&str>) {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).acting_on = node.map(str::to_string);
        self.save();
    }

    /// Says what the agent holds back from and why (None: nothing). Logged and saved when it
    /// changes, not at every tick.
    pub fn waiting(&self, why: Option<String>) {
        {
            let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
            if s.waiting == why {
                return;
            }
            match &why {
                Some(w) => tracing::warn!("waiting: {w}"),
                None => tracing::info!("no longer waiting"),
            }
            s.waiting = why;
        }
        self.save();
    }

    pub fn snapshot(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn save(&self) {
        let bytes = serde_json::to_vec_pretty(&self.snapshot()).expect("serializable");
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = crate::sys::fs_atomic::write_atomic(&self.path, &bytes) {
            tracing::warn!("cannot write the agent status `{}`: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_kept_in_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::resolve(Some(dir.path().to_path_buf()), None, None);
        let r = Recorder::new(&paths, "node");
        for i in 0..(KEEP + 5) {
            r.event("restart", format!("consul #{i}"));
        }
        r.acting_on(Some("n1"));
        let s = read(&file(&paths)).unwrap();
        assert_eq!(s.mode, "node");
        assert_eq!(s.events.len(), KEEP);
        assert_eq!(s.events.last().unwrap().detail, format!("consul #{}", KEEP + 4));
        assert_eq!(s.acting_on.as_deref(), Some("n1"));
        // A new agent keeps the history but not the old acting mark.
        let r2 = Recorder::new(&paths, "node");
        assert_eq!(r2.snapshot().events.len(), KEEP);
        assert_eq!(r2.snapshot().acting_on, None);
    }
}
