//! The state machine apply under way on this node, recorded so that a restarted agent applies
//! each entry once: `<cache-dir>/var/state/NAME.applying` holds the entry about to be applied
//! and, once its command started, the command's process group. It is written before the apply
//! starts and removed after the applied index was written (or after the apply failed).
//!
//! An agent that starts and finds the record:
//! - waits for the recorded process group, if any of it is left (an apply that outlived the
//!   agent that started it), for up to the apply's own time limit, then kills it: never two
//!   applies of one machine at the same time;
//! - redelivers that one entry if it is still the next to apply, with
//!   `RAPTIFORMICA_STATE_REDELIVERY=1`: it may have been applied, or partly (the machine keeps
//!   its own record of the indexes it has, as the SQLite example does, and skips one it has).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::context::Context;
use crate::sys::process;

/// The record of the apply under way of one machine.
#[derive(Debug, Clone)]
pub struct InFlight {
    file: PathBuf,
}

/// What a record said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The entry being applied.
    pub index: u64,
    /// Its command's process group, once started.
    pub group: Option<i32>,
}

impl InFlight {
    pub fn new(ctx: &Context, name: &str) -> Self {
        Self::at(
            ctx.paths
                .cache_dir
                .join("var")
                .join("state")
                .join(format!("{name}.applying")),
        )
    }

    fn at(file: PathBuf) -> Self {
        Self { file }
    }

    pub fn read(&self) -> Option<Record> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let mut words = text.split_whitespace();
        let index = words.next()?.parse().ok()?;
        let group = words.next().and_then(|g| g.parse().ok()).filter(|g| *g > 1);
        Some(Record { index, group })
    }

    /// Records that entry `index` is about to be applied (`group`: by that process group).
    /// Written whole, without waiting for the disk: the record is about the agent's own
    /// restarts (a crash of the machine ends the apply with it, and a machine that must not
    /// apply an entry twice keeps its own record of the indexes it has, as the README says).
    pub fn write(&self, index: u64, group: Option<i32>) -> anyhow::Result<()> {
        let text = match group {
            Some(g) => format!("{index} {g}\n"),
            None => format!("{index}\n"),
        };
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::sys::fs_atomic::replace_unsynced(&self.file, text.as_bytes())?;
        Ok(())
    }

    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.file);
    }

    /// At the applier's start: waits out (at most `limit`, then kills) an apply a previous
    /// agent left running, and tells which entry to redeliver (the recorded one, when it is
    /// still the next after `applied`).
    pub async fn settle(&self, applied: u64, limit: Duration) -> Option<u64> {
        let record = self.read()?;
        if let Some(group) = record.group.filter(|g| process::group_alive(*g)) {
            tracing::warn!(
                "the apply of entry {} started by an agent before this one still runs (process group {group}): \
                 waiting for it",
                record.index
            );
            let t = Instant::now();
            while process::group_alive(group) && t.elapsed() < limit {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if process::group_alive(group) {
                tracing::warn!(
                    "killing the apply of entry {} (process group {group}) after {}s",
                    record.index,
                    limit.as_secs()
                );
                process::kill_group(group);
            }
        }
        if record.index == applied + 1 {
            Some(record.index)
        } else {
            self.clear();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sleep SECONDS` in a process group of its own, and a thread that reaps it (a zombie
    /// still counts in its group) and tells how it ended.
    fn sleeper(seconds: &str) -> (i32, std::thread::JoinHandle<String>) {
        let mut running = process::Program::new("sleep", "/bin/sleep")
            .args([seconds])
            .detached()
            .spawn()
            .unwrap();
        let group = running.id() as i32;
        let reaper = std::thread::spawn(move || {
            loop {
                if let Some(how) = running.ended() {
                    return how;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (group, reaper)
    }

    #[tokio::test]
    async fn a_recorded_apply_is_waited_for_and_redelivered_only_when_it_is_next() {
        let d = tempfile::tempdir().unwrap();
        let f = InFlight::at(d.path().join("kv.applying"));
        assert_eq!(f.settle(4, Duration::from_secs(1)).await, None, "no record");
        f.write(5, None).unwrap();
        assert_eq!(f.read(), Some(Record { index: 5, group: None }));
        assert_eq!(f.settle(4, Duration::from_secs(1)).await, Some(5));
        // Applied meanwhile (the index was written, the record not yet removed): not again.
        assert_eq!(f.settle(5, Duration::from_secs(1)).await, None);
        assert_eq!(f.read(), None, "a stale record is removed");

        // An apply still running from before: waited for until it ends.
        let (group, reaper) = sleeper("1");
        f.write(7, Some(group)).unwrap();
        let t = Instant::now();
        assert_eq!(f.settle(6, Duration::from_secs(30)).await, Some(7));
        assert!(t.elapsed() >= Duration::from_millis(700), "{:?}", t.elapsed());
        assert!(reaper.join().unwrap().contains("status 0"));

        // One that outlasts the limit is killed.
        let (group, reaper) = sleeper("30");
        f.write(7, Some(group)).unwrap();
        let t = Instant::now();
        assert_eq!(f.settle(6, Duration::from_millis(300)).await, Some(7));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(reaper.join().unwrap().contains("signal"), "killed");
    }
}
