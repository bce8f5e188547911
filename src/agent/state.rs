//! Applying the replicated logs of the state machines on this node: entries in index order,
//! exactly once each (the applied index is kept in `<cache-dir>/var/state/<name>.applied`,
//! written atomically after each apply), a snapshot restored first when the entries this node
//! needs were compacted away (a new node, or one away for long), and, every `snapshot_every`
//! entries, a snapshot stored by one node under the log's lock. An `apply` that fails stops
//! this machine's progress on this node (an entry is never skipped): the failure is recorded
//! in the KV for `state status` and in the agent's log, and the entry is tried again. The apply
//! under way is recorded ([`super::in_flight`]): after a restart it is waited out and its entry
//! redelivered, flagged, never run twice at the same time.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::in_flight::InFlight;
use super::status::Recorder;
use crate::config;
use crate::config::context::Context;
use crate::consensus::api::{ConsulApi, LOCAL_HTTP};
use crate::consensus::lock;
use crate::consensus::state_log::{Log, Stored};
use crate::modules::state_machine::{self, Machine};
use crate::sys::process::SpawnSink;

/// How long one blocking query on a log's index waits.
const WAIT: Duration = Duration::from_secs(60);
/// How often the declared machines are looked up again.
const RESCAN: Duration = Duration::from_secs(10);
/// How long an applier keeps its machine's commands before reading the config again.
const RELOAD: Duration = Duration::from_secs(1);
/// How often an applier that is behind writes its progress (see `mid_burst`).
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// Pause before an apply that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How long one apply, snapshot or restore may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Starts an applier for every state machine the config declares, now and as modules add
/// them, until the agent stops.
pub async fn follow(ctx: Context, me: String, rec: Recorder) {
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // The config is loaded again only when a file it comes from changed: a whole load (every
    // module parsed) every RESCAN on every node was most of an idle agent's CPU.
    let mut seen: Option<(u64, Vec<String>)> = None;
    loop {
        let paths = ctx.paths.clone();
        let last = seen.as_ref().map(|(stamp, _)| *stamp);
        let found = tokio::task::spawn_blocking(move || {
            let stamp = config::stamp(&paths);
            if last == Some(stamp) {
                return None;
            }
            let declared = config::load_over(&paths, None).ok()?;
            Some((stamp, state_machine::machines(&declared).into_keys().collect()))
        })
        .await
        .ok()
        .flatten();
        if found.is_some() {
            seen = found;
        }
        let declared = seen.as_ref().map(|(_, names)| names.as_slice()).unwrap_or_default();
        for name in declared {
            if running.get(name).is_none_or(|h| h.is_finished()) {
                let task = applier(ctx.clone(), me.clone(), name.clone(), rec.clone());
                running.insert(name.clone(), tokio::spawn(task));
            }
        }
        tokio::time::sleep(RESCAN).await;
    }
}

fn applied_file(ctx: &Context, name: &str) -> PathBuf {
    ctx.paths
        .cache_dir
        .join("var")
        .join("state")
        .join(format!("{name}.applied"))
}

fn read_applied(file: &std::path::Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_applied(file: &std::path::Path, index: u64) -> anyhow::Result<()> {
    crate::sys::fs_atomic::write_atomic_creating(file, format!("{index}\n").as_bytes())?;
    Ok(())
}

/// Runs one of the machine's commands with `input` on stdin; its stdout.
async fn run(
    ctx: &Context,
    machine: &Machine,
    what: &str,
    command: &str,
    input: Vec<u8>,
    index: u64,
) -> anyhow::Result<String> {
    let shell = ctx
        .shell(format!("state machine `{}` {what}", machine.name), command)
        .env("RAPTIFORMICA_STATE_NAME", machine.name.clone())
        .env("RAPTIFORMICA_STATE_INDEX", index.to_string())
        .timeout(COMMAND_TIMEOUT)
        .stdin(input);
    let out = tokio::task::spawn_blocking(move || shell.run()).await??;
    Ok(out.stdout)
}

/// Applies entry `index` with `apply`, recorded in `in_flight` while it runs (with its
/// process group), and records it applied; `redelivery`: a previous agent may have applied it.
async fn apply_one(
    ctx: &Context,
    machine: &Machine,
    at: &Applied<'_>,
    index: u64,
    entry: Vec<u8>,
    redelivery: bool,
) -> anyhow::Result<()> {
    at.in_flight.write(index, None)?;
    let record = at.in_flight.clone();
    let mut shell = ctx
        .shell(format!("state machine `{}` apply", machine.name), &machine.apply)
        .env("RAPTIFORMICA_STATE_NAME", machine.name.clone())
        .env("RAPTIFORMICA_STATE_INDEX", index.to_string())
        .timeout(COMMAND_TIMEOUT)
        .stdin(entry)
        .on_spawn(SpawnSink(std::sync::Arc::new(move |group| {
            let _ = record.write(index, Some(group));
        })));
    if redelivery {
        shell = shell.env("RAPTIFORMICA_STATE_REDELIVERY", "1");
    }
    let result = tokio::task::spawn_blocking(move || shell.run()).await?;
    if let Err(e) = result {
        at.in_flight.clear();
        return Err(anyhow::Error::from(e).context(format!("applying entry {index}")));
    }
    write_applied(at.file, index)?;
    at.in_flight.clear();
    Ok(())
}

/// Where this node keeps what it applied of one machine.
struct Applied<'a> {
    /// The applied index.
    file: &'a std::path::Path,
    /// The apply under way.
    in_flight: &'a InFlight,
}

/// Applies the log of `name` on this node, for good.
async fn applier(ctx: Context, me: String, name: String, rec: Recorder) {
    let api = match ConsulApi::new(LOCAL_HTTP, WAIT + Duration::from_secs(10)) {
        Ok(a) => a,
        Err(e) => return tracing::error!("state machine `{name}`: {e:#}"),
    };
    let log = Log::new(&name);
    let file = applied_file(&ctx, &name);
    let mut applied = read_applied(&file);
    // An apply a previous agent left: waited out, and its entry redelivered if still next.
    let in_flight = InFlight::new(&ctx, &name);
    let mut redeliver = in_flight.settle(applied, COMMAND_TIMEOUT).await;
    if let Some(index) = redeliver {
        rec.event(
            "state",
            format!("state machine `{name}`: entry {index} was being applied when the agent stopped: redelivered"),
        );
    }
    let at = Applied {
        file: &file,
        in_flight: &in_flight,
    };
    let mut wait_index = 0u64;
    let mut published: Option<(u64, Option<String>)> = None;
    let mut snapshot_at = 0u64;
    let mut loaded: Option<(Machine, Instant)> = None;
    let mut published_at = Instant::now();
    loop {
        let last = match log.watch_index(&api, wait_index, WAIT).await {
            Ok((last, next)) => {
                // An index that went backwards (a rebuilt store) starts over.
                wait_index = if next < wait_index { 0 } else { next };
                last
            }
            Err(e) => {
                tracing::debug!("state machine `{name}`: {e:#}");
                wait_index = 0;
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        // The machine's commands, looked up again at most every RELOAD (not every round of
        // a burst: a config load reads every module file).
        let machine = match loaded.take().filter(|(_, at)| at.elapsed() < RELOAD) {
            Some(kept) => loaded.insert(kept).0.clone(),
            None => {
                let paths = ctx.paths.clone();
                let n = name.clone();
                match tokio::task::spawn_blocking(move || {
                    config::load_over(&paths, None)
                        .map_err(anyhow::Error::from)
                        .and_then(|c| state_machine::find(&c, &n))
                })
                .await
                {
                    Ok(Ok(m)) => loaded.insert((m, Instant::now())).0.clone(),
                    _ => return tracing::info!("state machine `{name}` is no longer declared here"),
                }
            }
        };
        let mut failure = None;
        if applied < last {
            match catch_up(&ctx, &api, &log, &machine, &at, &mut applied, last, &mut redeliver).await {
                Ok(n) if n > 0 => tracing::debug!("state machine `{name}`: {n} entries applied, at {applied}"),
                Ok(_) => {}
                Err(e) => failure = Some(format!("{e:#}")),
            }
        }
        let now = (applied, failure.clone());
        // In a burst (more entries came meanwhile) the progress is written at most every
        // PUBLISH_EVERY, not after each round: each write is a Raft commit, which the
        // appenders wait on too. Caught up, or stopped by a failure, it is written at once.
        if published.as_ref() != Some(&now) {
            let mid_burst = failure.is_none()
                && published_at.elapsed() < PUBLISH_EVERY
                && matches!(log.watch_index(&api, 0, Duration::ZERO).await, Ok((index, _)) if index > applied);
            if !mid_burst {
                match log.record_applied(&api, &me, applied, failure.as_deref()).await {
                    Ok(()) => {
                        published = Some(now);
                        published_at = Instant::now();
                    }
                    Err(e) => tracing::debug!("state machine `{name}`: {e:#}"),
                }
            }
        }
        if let Some(why) = failure {
            rec.event("error", format!("state machine `{name}` stopped at {applied}: {why}"));
            wait_index = 0;
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if applied >= snapshot_at + machine.snapshot_every {
            match maybe_snapshot(&ctx, &api, &log, &machine, applied, &me).await {
                Ok(Some(at)) => {
                    snapshot_at = at;
                    if at == applied {
                        rec.event(
                            "snapshot",
                            format!("state machine `{name}`: snapshot at {at} stored, older entries compacted"),
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => rec.event("error", format!("state machine `{name}`: snapshot: {e:#}")),
            }
        }
    }
}

/// Applies what follows `applied` up to `last` (the log's index; more when they are there),
/// restoring the snapshot first when the entries needed were compacted away. How many entries
/// were applied.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    ctx: &Context,
    api: &ConsulApi,
    log: &Log,
    machine: &Machine,
    at: &Applied<'_>,
    applied: &mut u64,
    last: u64,
    redeliver: &mut Option<u64>,
) -> anyhow::Result<usize> {
    let mut entries = log.entries_after(api, *applied, last).await?;
    if entries.first().is_none_or(|(i, _)| *i > *applied + 1) {
        // What we need next is gone: the snapshot covers it, if anything does.
        if let Some((snapshot_at, data)) = log.snapshot(api).await?
            && snapshot_at > *applied
        {
            let restore = machine.restore.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "the log was compacted past this node's {} and `state.{}.restore` is not set",
                    applied,
                    machine.name
                )
            })?;
            run(ctx, machine, "restore", restore, data, snapshot_at).await?;
            *applied = snapshot_at;
            write_applied(at.file, snapshot_at)?;
            *redeliver = None;
            tracing::info!(
                "state machine `{}`: restored the snapshot at {snapshot_at}",
                machine.name
            );
            entries = log.entries_after(api, *applied, last).await?;
        }
    }
    let mut done = 0;
    let mut pending = &entries[..];
    while let Some((first, _)) = pending.first() {
        if *first != *applied + 1 {
            anyhow::bail!(
                "entry {} is missing from the log (next retained: {first})",
                *applied + 1
            );
        }
        // A run of consecutive entries goes to `apply_batch` at once, when there is one.
        let run_len = pending
            .iter()
            .enumerate()
            .take_while(|(i, (index, _))| *index == *first + *i as u64)
            .count()
            .min(BATCH_MAX);
        // The entry a previous agent was applying goes alone, flagged as a redelivery.
        let redelivery = redeliver.take_if(|r| *r == *first).is_some();
        if let Some(batch) = machine.apply_batch.as_deref().filter(|_| run_len > 1 && !redelivery) {
            let (run_of, rest) = pending.split_at(run_len);
            match apply_batch(ctx, machine, batch, run_of, at.in_flight).await {
                Ok(()) => {
                    let last = run_of.last().expect("not empty").0;
                    *applied = last;
                    write_applied(at.file, last)?;
                    at.in_flight.clear();
                    done += run_len;
                    pending = rest;
                    continue;
                }
                // All or none: nothing of the run was applied. One by one finds the entry that
                // fails (and stops there) or gets through a batch failure that was not one.
                Err(e) => tracing::info!(
                    "state machine `{}`: apply_batch of {} entries failed ({e:#}); applying them one by one",
                    machine.name,
                    run_len
                ),
            }
        }
        let (index, entry) = &pending[0];
        apply_one(ctx, machine, at, *index, entry.clone(), redelivery).await?;
        *applied = *index;
        done += 1;
        pending = &pending[1..];
    }
    Ok(done)
}

/// The most entries one `apply_batch` gets.
const BATCH_MAX: usize = 1000;

/// Runs `apply_batch` on `entries` (consecutive): each one a file named by its index in a
/// fresh folder, `$RAPTIFORMICA_STATE_ENTRIES`, removed afterwards.
async fn apply_batch(
    ctx: &Context,
    machine: &Machine,
    command: &str,
    entries: &[(u64, Vec<u8>)],
    in_flight: &InFlight,
) -> anyhow::Result<()> {
    let var = ctx.paths.cache_dir.join("var").join("state");
    std::fs::create_dir_all(&var)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!(".{}.batch.", machine.name))
        .tempdir_in(&var)?;
    for (index, entry) in entries {
        std::fs::write(dir.path().join(format!("{index:020}")), entry)?;
    }
    let (first, last) = (entries[0].0, entries[entries.len() - 1].0);
    // Recorded as the apply of its first entry: a restart redelivers that one alone (and the
    // rest as usual after it).
    in_flight.write(first, None)?;
    let record = in_flight.clone();
    let shell = ctx
        .shell(format!("state machine `{}` apply_batch", machine.name), command)
        .env("RAPTIFORMICA_STATE_NAME", machine.name.clone())
        .env("RAPTIFORMICA_STATE_ENTRIES", dir.path().display().to_string())
        .env("RAPTIFORMICA_STATE_FIRST", first.to_string())
        .env("RAPTIFORMICA_STATE_INDEX", last.to_string())
        .timeout(COMMAND_TIMEOUT)
        .on_spawn(SpawnSink(std::sync::Arc::new(move |group| {
            let _ = record.write(first, Some(group));
        })));
    let result = tokio::task::spawn_blocking(move || shell.run()).await?;
    if result.is_err() {
        in_flight.clear();
    }
    result?;
    Ok(())
}

/// Stores a snapshot at `applied` if none covers the last `snapshot_every` entries and this
/// node gets the log's lock. The index the latest snapshot covers (None: none to know of).
async fn maybe_snapshot(
    ctx: &Context,
    api: &ConsulApi,
    log: &Log,
    machine: &Machine,
    applied: u64,
    me: &str,
) -> anyhow::Result<Option<u64>> {
    let Some(command) = machine.snapshot.as_deref() else {
        return Ok(None);
    };
    let current = log.snapshot(api).await?.map_or(0, |(at, _)| at);
    if applied < current + machine.snapshot_every {
        return Ok(Some(current));
    }
    let Some(held) = lock::try_acquire(api, &log.lock_key(), me).await? else {
        return Ok(Some(current)); // another node takes it
    };
    let result = async {
        // Someone may have stored one while we waited for the lock.
        let current = log.snapshot(api).await?.map_or(0, |(at, _)| at);
        if applied < current + machine.snapshot_every {
            return Ok(Some(current));
        }
        let data = run(ctx, machine, "snapshot", command, Vec::new(), applied).await?;
        // The snapshot command may outlast the lock: stop there rather than write.
        held.check()?;
        match log
            .store_snapshot(api, applied, data.as_bytes(), held.session())
            .await?
        {
            Stored::At { .. } => anyhow::Ok(Some(applied)),
            Stored::Newer(at) => Ok(Some(at)),
            Stored::LockLost => anyhow::bail!("the log's lock was lost while the snapshot was taken: not stored"),
        }
    }
    .await;
    held.release(api).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applied_index_survives_and_starts_at_zero() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("var/state/acc.applied");
        assert_eq!(read_applied(&f), 0);
        write_applied(&f, 41).unwrap();
        assert_eq!(read_applied(&f), 41);
    }
}
