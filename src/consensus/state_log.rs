//! Replicated logs of the state machines, in consul's KV (consul is the Raft engine).
//!
//! Below `raptiformica-state/<name>/` (outside `raptiformica/`, so the logs are not part of
//! the shared config every node caches):
//! - `index`: the index of the last entry appended (0: none);
//! - `entries/<index, 20 digits>`: the entries still retained;
//! - `snapshot/index`, `snapshot/data`: the latest snapshot and the index it covers (entries
//!   up to it are compacted away);
//! - `applied/<node>`: the index each node has applied; `failed/<node>`: why its last apply
//!   failed, while it does;
//! - `lock`: held by the node that takes a snapshot;
//! - `ids/<append id>`: the index an append (one transaction of it) was given, kept for one
//!   snapshot period after its entries are compacted.
//!
//! An append is one transaction that checks-and-sets `index`, writes the entries and creates
//! the append's id key (only if it is absent), so appenders anywhere get one total order; one
//! that loses the race reads again and retries. An append is in the log once: the client
//! chooses its id, and a retry of it (a transaction resent after a timeout or a 5xx, the same
//! command on another node after a broken session) finds the id taken and returns the index
//! the first attempt got instead of appending again.

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use super::api::ConsulApi;

/// The prefix of every log.
pub const PREFIX: &str = "raptiformica-state";
/// The largest entry: consul takes a transaction of at most 512 KB, and the entry travels in
/// it base64-encoded.
pub const MAX_ENTRY: usize = 360 * 1024;

/// The keys of the log of the state machine `name`.
#[derive(Debug, Clone)]
pub struct Log {
    pub name: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn number(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Log {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string() }
    }

    pub fn index_key(&self) -> String {
        format!("{PREFIX}/{}/index", self.name)
    }
    fn entries_prefix(&self) -> String {
        format!("{PREFIX}/{}/entries/", self.name)
    }
    fn entry_key(&self, index: u64) -> String {
        format!("{}{index:020}", self.entries_prefix())
    }
    fn ids_prefix(&self) -> String {
        format!("{PREFIX}/{}/ids/", self.name)
    }
    fn id_key(&self, id: &str) -> String {
        format!("{}{id}", self.ids_prefix())
    }
    fn snapshot_index_key(&self) -> String {
        format!("{PREFIX}/{}/snapshot/index", self.name)
    }
    fn snapshot_data_key(&self) -> String {
        format!("{PREFIX}/{}/snapshot/data", self.name)
    }
    fn applied_prefix(&self) -> String {
        format!("{PREFIX}/{}/applied/", self.name)
    }
    fn failed_key(&self, node: &str) -> String {
        format!("{PREFIX}/{}/failed/{node}", self.name)
    }
    pub fn lock_key(&self) -> String {
        format!("{PREFIX}/{}/lock", self.name)
    }

    /// Appends `entry` as the append `id` (see [`new_id`]); its index. Appending with an id
    /// that is in the log already appends nothing and returns the index it got then.
    pub async fn append(&self, api: &ConsulApi, entry: &[u8], id: &str) -> anyhow::Result<u64> {
        self.append_many(api, &[entry.to_vec()], id).await
    }

    /// Appends `entries` in their order, as few transactions as consul takes (up to 62
    /// entries and [`MAX_ENTRY`] bytes each); another appender's entries may fall between
    /// two transactions. Transaction `k` of the append is `<id>.<k>`: a retry of the whole
    /// append with the same entries and id appends only what is not in the log yet. The index
    /// of the last one.
    pub async fn append_many(&self, api: &ConsulApi, entries: &[Vec<u8>], id: &str) -> anyhow::Result<u64> {
        check_id(id)?;
        if let Some((i, e)) = entries.iter().enumerate().find(|(_, e)| e.len() > MAX_ENTRY) {
            bail!(
                "entry {} is {} KB; an entry may be at most {} KB (consul takes a transaction of at most 512 KB, \
                 and the entry travels base64-encoded): store big data elsewhere and append a reference to it",
                i + 1,
                e.len() / 1024,
                MAX_ENTRY / 1024
            );
        }
        let mut last = 0;
        let mut rest = entries;
        let mut part = 0;
        while !rest.is_empty() {
            let mut take = 0;
            let mut bytes = 0;
            while take < rest.len() && take < 62 && (take == 0 || bytes + rest[take].len() <= MAX_ENTRY) {
                bytes += rest[take].len();
                take += 1;
            }
            let part_id = if entries.len() == rest.len() && take == rest.len() {
                id.to_string()
            } else {
                format!("{id}.{part}")
            };
            last = self.append_batch(api, &rest[..take], &part_id).await?;
            rest = &rest[take..];
            part += 1;
        }
        Ok(last)
    }

    /// One transaction: the index checked-and-set, the entries, the id created. The index of
    /// the last entry (the one given before, when the id is taken).
    async fn append_batch(&self, api: &ConsulApi, batch: &[Vec<u8>], id: &str) -> anyhow::Result<u64> {
        let mut tries = 0u32;
        loop {
            let (current, modify) = match api.get_raw(&self.index_key()).await? {
                Some((bytes, modify)) => (number(&bytes), modify),
                None => (0, 0),
            };
            let last = current + batch.len() as u64;
            let mut ops = vec![
                json!({"KV": {"Verb": "cas", "Key": self.index_key(), "Value": b64(last.to_string().as_bytes()), "Index": modify}}),
                // Index 0: created only if absent.
                json!({"KV": {"Verb": "cas", "Key": self.id_key(id), "Value": b64(last.to_string().as_bytes()), "Index": 0}}),
            ];
            for (i, entry) in batch.iter().enumerate() {
                ops.push(
                    json!({"KV": {"Verb": "set", "Key": self.entry_key(current + 1 + i as u64), "Value": b64(entry)}}),
                );
            }
            if api.txn_once(ops).await? {
                return Ok(last);
            }
            // Rolled back: this append is in the log already (an earlier attempt of it
            // committed), or another appender got the index first.
            if let Some((given, _)) = api.get_raw(&self.id_key(id)).await? {
                tracing::debug!("state machine `{}`: append {id} is in the log already", self.name);
                return Ok(number(&given));
            }
            // A little jitter spreads the retries.
            tries += 1;
            if tries > 1000 {
                bail!("could not append to `{}`: 1000 races lost in a row", self.name);
            }
            let pause = u64::from(tries.min(20)) * (1 + u64::from(std::process::id() % 3));
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// The last index, blocking until it differs from `wait_index` (0: at once).
    pub async fn watch_index(&self, api: &ConsulApi, wait_index: u64, wait: Duration) -> anyhow::Result<(u64, u64)> {
        let (value, next) = api.watch_raw(&self.index_key(), wait_index, wait).await?;
        Ok((value.map_or(0, |(b, _)| number(&b)), next))
    }

    /// The retained entries after `after`, in index order, reading only the key range up to
    /// `upto` (and the rest of its last block): not the whole retained log, which a busy
    /// machine keeps up to `snapshot_every` entries of and every node reads after each append.
    /// The range is read as at most [`MAX_BLOCKS`] key prefixes (the keys are zero-padded
    /// decimals), at once.
    pub async fn entries_after(&self, api: &ConsulApi, after: u64, upto: u64) -> anyhow::Result<Vec<(u64, Vec<u8>)>> {
        let prefix = self.entries_prefix();
        let reads = range_prefixes(after + 1, upto)
            .into_iter()
            .map(|p| api.list_raw_unsorted(format!("{prefix}{p}")));
        let mut entries: Vec<(u64, Vec<u8>)> = futures_util::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.parse::<u64>().ok()?, v)))
            .filter(|(i, _)| *i > after)
            .collect();
        entries.sort_by_key(|(i, _)| *i);
        entries.dedup_by_key(|(i, _)| *i);
        Ok(entries)
    }

    /// The latest snapshot: (the index it covers, its data).
    pub async fn snapshot(&self, api: &ConsulApi) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        let index = api.get_raw(&self.snapshot_index_key()).await?;
        let Some((index, _)) = index else { return Ok(None) };
        let data = api
            .get_raw(&self.snapshot_data_key())
            .await?
            .map(|(d, _)| d)
            .unwrap_or_default();
        Ok(Some((number(&index), data)))
    }

    /// Stores a snapshot covering `index` while `session` holds the log's lock, then compacts
    /// the entries up to it (and the append ids of the snapshot period before). One
    /// transaction checks that the lock is still held and that the stored snapshot is the one
    /// read (check-and-set): a snapshot never replaces a newer one, and a node that lost the
    /// lock writes nothing. What was done.
    pub async fn store_snapshot(
        &self,
        api: &ConsulApi,
        index: u64,
        data: &[u8],
        session: &str,
    ) -> anyhow::Result<Stored> {
        if data.len() > MAX_ENTRY {
            bail!(
                "the snapshot of `{}` is {} KB, more than consul's KV takes ({} KB): the log is not compacted",
                self.name,
                data.len() / 1024,
                MAX_ENTRY / 1024
            );
        }
        let (before, modify) = match api.get_raw(&self.snapshot_index_key()).await? {
            Some((b, modify)) => (number(&b), modify),
            None => (0, 0),
        };
        if before >= index {
            return Ok(Stored::Newer(before));
        }
        let ops = vec![
            json!({"KV": {"Verb": "check-session", "Key": self.lock_key(), "Session": session}}),
            json!({"KV": {"Verb": "cas", "Key": self.snapshot_index_key(), "Value": b64(index.to_string().as_bytes()), "Index": modify}}),
            json!({"KV": {"Verb": "set", "Key": self.snapshot_data_key(), "Value": b64(data)}}),
        ];
        if !api.txn_once(ops).await? {
            return Ok(match api.get_raw(&self.snapshot_index_key()).await? {
                Some((b, _)) if number(&b) >= index => Stored::Newer(number(&b)),
                _ => Stored::LockLost,
            });
        }
        let old_entries = api.list_keys(&self.entries_prefix()).await?.into_iter().filter(|k| {
            k.strip_prefix(&self.entries_prefix())
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| i <= index)
        });
        // An id outlives its entries by one snapshot period: a retry comes seconds after the
        // attempt it repeats, not a whole period later.
        let old_ids = api
            .list_raw(&self.ids_prefix())
            .await?
            .into_iter()
            .filter(|(_, v)| number(v) <= before)
            .map(|(k, _)| k);
        let old: Vec<Value> = old_entries
            .chain(old_ids)
            .map(|k| json!({"KV": {"Verb": "delete", "Key": k}}))
            .collect();
        let compacted = old.len();
        for batch in old.chunks(64) {
            api.txn_once(batch.to_vec()).await?;
        }
        Ok(Stored::At { compacted })
    }

    /// Records what `node` has applied, and why its last apply failed (None: it did not).
    pub async fn record_applied(
        &self,
        api: &ConsulApi,
        node: &str,
        applied: u64,
        failure: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut ops = vec![
            json!({"KV": {"Verb": "set", "Key": format!("{}{node}", self.applied_prefix()), "Value": b64(applied.to_string().as_bytes())}}),
        ];
        ops.push(match failure {
            Some(why) => json!({"KV": {"Verb": "set", "Key": self.failed_key(node), "Value": b64(why.as_bytes())}}),
            None => json!({"KV": {"Verb": "delete", "Key": self.failed_key(node)}}),
        });
        if !api.txn_once(ops).await? {
            bail!("consul rolled back the applied index of {node}");
        }
        Ok(())
    }

    /// Each node's applied index and failure, by node.
    pub async fn progress(&self, api: &ConsulApi) -> anyhow::Result<Vec<(String, u64, Option<String>)>> {
        let applied = api.list_raw(&self.applied_prefix()).await?;
        let failed_prefix = format!("{PREFIX}/{}/failed/", self.name);
        let failed = api.list_raw(&failed_prefix).await?;
        Ok(applied
            .into_iter()
            .filter_map(|(k, v)| {
                let node = k.strip_prefix(&self.applied_prefix())?.to_string();
                let why = failed
                    .iter()
                    .find(|(f, _)| f.strip_prefix(&failed_prefix) == Some(node.as_str()))
                    .map(|(_, w)| String::from_utf8_lossy(w).into_owned());
                Some((node, number(&v), why))
            })
            .collect())
    }
}

/// What [`Log::store_snapshot`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored; this many keys compacted.
    At { compacted: usize },
    /// Nothing: a snapshot at this index (as new or newer) is stored already.
    Newer(u64),
    /// Nothing: the lock was no longer this node's.
    LockLost,
}

/// A new append id: random, so that two clients never pick the same.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An append id a client chose: what a KV key takes.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
        bail!("`{id}` is not an append id: 1 to 64 letters, digits, `-` and `_`");
    }
    Ok(())
}

/// Whether `key` is a log's record of one cluster's nodes (which node applied what, which
/// failed, who holds the snapshot lock) rather than the log itself.
pub fn is_cluster_runtime(key: &str) -> bool {
    let Some((_, field)) = key
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('/'))
    else {
        return false;
    };
    field == "lock" || field.starts_with("applied/") || field.starts_with("failed/")
}

/// The state machine whose log's `index` key `key` is, if it is one.
pub fn log_of_index_key(key: &str) -> Option<String> {
    let name = key.strip_prefix(PREFIX)?.strip_prefix('/')?.strip_suffix("/index")?;
    (!name.contains('/')).then(|| name.to_string())
}

/// The most key prefixes one read of a range of entries takes.
pub const MAX_BLOCKS: u64 = 10;

/// Key prefixes (of the 20-digit entry keys) that together hold every index in `lo..=hi`:
/// aligned blocks of the smallest power of ten that covers the range in at most
/// [`MAX_BLOCKS`] of them (so a read brings at most two partial blocks more than asked).
fn range_prefixes(lo: u64, hi: u64) -> Vec<String> {
    if hi < lo {
        return Vec::new();
    }
    let mut digits = 0u32;
    let mut size = 1u64;
    while hi / size - lo / size + 1 > MAX_BLOCKS {
        digits += 1;
        size *= 10;
    }
    (lo / size..=hi / size)
        .map(|block| {
            let key = format!("{:020}", block * size);
            key[..20 - digits as usize].to_string()
        })
        .collect()
}

/// A state machine name: what our keys and consul's take.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        bail!("`{name}` is not a state machine name: letters, digits, `-` and `_` only");
    }
    Ok(())
}

/// The payload a command line gives: text, `@FILE`, or `-` for stdin.
pub fn read_input(given: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    Ok(match given {
        "-" => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).context("cannot read stdin")?;
            b
        }
        p if p.starts_with('@') => std::fs::read(&p[1..]).with_context(|| format!("cannot read `{}`", &p[1..]))?,
        text => text.as_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_of_entries_is_read_as_a_few_aligned_prefixes() {
        assert!(range_prefixes(5, 4).is_empty());
        assert_eq!(range_prefixes(7, 7), ["00000000000000000007"]);
        assert_eq!(range_prefixes(1, 10).len(), 10);
        // 9951..=10050 spans 100 indexes: blocks of 100 (99xx, 100xx).
        assert_eq!(
            range_prefixes(9951, 10050),
            ["000000000000000099", "000000000000000100"]
        );
        // Every index of the range is under one of them, and few others are.
        for (lo, hi) in [
            (1, 1),
            (3, 999),
            (995, 1_004),
            (123_456, 130_000),
            (1, 5_000),
            (4_999_990, 5_000_011),
        ] {
            let prefixes = range_prefixes(lo, hi);
            assert!(prefixes.len() as u64 <= MAX_BLOCKS, "{lo}..={hi}: {prefixes:?}");
            for i in [lo, (lo + hi) / 2, hi] {
                let key = format!("{i:020}");
                assert!(
                    prefixes.iter().any(|p| key.starts_with(p.as_str())),
                    "{i} in {prefixes:?}"
                );
            }
            let covered: u64 = prefixes.iter().map(|p| 10u64.pow(20 - p.len() as u32)).sum();
            assert!(covered <= (hi - lo + 1) * 20 + 10, "{lo}..={hi}: {covered}");
        }
    }

    #[test]
    fn keys_sort_in_index_order_and_names_are_checked() {
        let log = Log::new("acc");
        assert!(log.entry_key(9) < log.entry_key(10));
        assert_eq!(log.entry_key(7), "raptiformica-state/acc/entries/00000000000000000007");
        assert!(check_name("kv-store_1").is_ok());
        for bad in ["", "a/b", "a b", ".."] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(number(b" 42\n"), 42);
        assert_eq!(number(b"x"), 0);
    }

    #[test]
    fn append_ids_are_fresh_and_checked() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(check_id(&a).is_ok());
        assert!(check_id("retry-1_A").is_ok());
        let long = "x".repeat(65);
        for bad in ["", "a.b", "a/b", "../x", long.as_str()] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        let log = Log::new("acc");
        assert_eq!(log.id_key("abc"), "raptiformica-state/acc/ids/abc");
    }
}
