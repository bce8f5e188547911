//! The mutable config cache, `<cache-dir>/mutable_config.json`.
//!
//! It holds the flat mapping as last known on this machine (sorted keys, indent 4, as the
//! original wrote it), so that any node, even the last survivor of a cluster, can bootstrap new
//! machines from it. Every access holds a lock on a sibling `.lock` file (shared to read,
//! exclusive to change), changes are read-modify-write under one exclusive lock, and the file
//! is replaced atomically (temp file, fsync, rename). A file that is corrupt or incomplete is
//! refused and never overwritten.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::mapping::{self, Mapping};

/// The cache's file name inside the cache dir.
pub const FILE_NAME: &str = "mutable_config.json";

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "the config cache `{path}` is unusable: {reason}\n\
         hint: run `raptiformica clean` or delete that file; it is rebuilt from the modules \
         (and the cluster's shared config) on the next change"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("refusing to write an invalid mapping to `{path}`: {reason}")]
    InvalidMapping { path: PathBuf, reason: String },
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cache as a reader last read it, read again only when its file changed (each write
/// makes a new file): for a reader that looks every few seconds (the agent's tick), which
/// parsed the whole cache each time (a few hundred KB of JSON at a hundred nodes) for nothing.
#[derive(Debug, Default)]
pub struct Memo {
    seen: Option<(Stamp, Mapping)>,
    reads: u64,
}

/// What tells one version of a file from another: inode, modification time, length (every
/// write of the cache makes a new file, a new inode).
pub type Stamp = (u64, Option<std::time::SystemTime>, u64);

/// The [`Stamp`] of a file's metadata.
pub fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    (m.ino(), m.modified().ok(), m.len())
}

fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| stamp_of(&m))
}

impl Memo {
    /// [`MutableCache::read`], from memory while the file is the one read last time.
    pub fn read(&mut self, cache: &MutableCache) -> Result<Option<Mapping>, CacheError> {
        let now = stamp(&cache.path);
        if let (Some(now), Some((seen, mapping))) = (&now, &self.seen)
            && now == seen
        {
            return Ok(Some(mapping.clone()));
        }
        // Stamped before the read: a write in between is read again next time.
        let read = cache.read()?;
        self.seen = now.zip(read.clone());
        self.reads += 1;
        Ok(read)
    }

    /// How many times the file was read: a new number, a new version of the cache.
    pub fn version(&self) -> u64 {
        self.reads
    }
}

/// Handle on the cache file of one cache dir.
#[derive(Debug, Clone)]
pub struct MutableCache {
    path: PathBuf,
    lock_path: PathBuf,
}

impl MutableCache {
    /// The cache of `cache_dir` (nothing is touched yet).
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            path: cache_dir.join(FILE_NAME),
            lock_path: cache_dir.join(format!("{FILE_NAME}.lock")),
        }
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the cache under a shared lock. `Ok(None)` when there is none yet.
    pub fn read(&self) -> Result<Option<Mapping>, CacheError> {
        let Some(_lock) = self.lock(false)? else {
            return Ok(None);
        };
        self.read_unlocked()
    }

    /// Read-modify-write under one exclusive lock. `change` gets the current cache (`None` when
    /// there is none) and returns the mapping to store; it is validated before anything is
    /// written, and a corrupt current cache is refused before `change` runs.
    pub fn update<T>(
        &self,
        change: impl FnOnce(Option<Mapping>) -> Result<(Mapping, T), anyhow::Error>,
    ) -> Result<T, anyhow::Error> {
        let _lock = self.lock(true)?.expect("an exclusive lock creates its file");
        let current = self.read_unlocked()?;
        let (next, out) = change(current)?;
        self.write_unlocked(&next)?;
        Ok(out)
    }

    /// Takes the exclusive lock for a change that spans the cache and the files beside it
    /// (the pending record, the KV index); use [`Self::read_locked`] and
    /// [`Self::write_locked`] while holding it, nothing that locks again.
    pub fn lock_exclusive(&self) -> Result<CacheLock, CacheError> {
        Ok(CacheLock(self.lock(true)?.expect("an exclusive lock creates its file")))
    }

    pub fn read_locked(&self, _held: &CacheLock) -> Result<Option<Mapping>, CacheError> {
        self.read_unlocked()
    }

    pub fn write_locked(&self, _held: &CacheLock, mapping: &Mapping) -> Result<(), CacheError> {
        self.write_unlocked(mapping)
    }

    /// Deletes the cache (under the exclusive lock). True when there was one.
    pub fn remove(&self) -> Result<bool, CacheError> {
        let Some(_lock) = self.lock(true)? else {
            return Ok(false);
        };
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(source) => Err(self.io("remove", source)),
        }
    }

    /// Takes the lock. A shared lock on a cache dir that does not exist yet needs no file: there
    /// is nothing to read (`Ok(None)`).
    fn lock(&self, exclusive: bool) -> Result<Option<File>, CacheError> {
        if exclusive {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| CacheError::Io {
                    action: "create the cache dir",
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
        } else if !self.path.exists() {
            return Ok(None);
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|source| CacheError::Io {
                action: "open the lock file",
                path: self.lock_path.clone(),
                source,
            })?;
        let locked = if exclusive { file.lock() } else { file.lock_shared() };
        locked.map_err(|source| CacheError::Io {
            action: "lock",
            path: self.lock_path.clone(),
            source,
        })?;
        Ok(Some(file))
    }

    fn read_unlocked(&self) -> Result<Option<Mapping>, CacheError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.io("read", source)),
        };
        let mapping: Mapping = serde_json::from_str(&text).map_err(|e| CacheError::Corrupt {
            path: self.path.clone(),
            reason: format!("it is not a flat JSON mapping ({e})"),
        })?;
        mapping::validate(&mapping).map_err(|reason| CacheError::Corrupt {
            path: self.path.clone(),
            reason,
        })?;
        Ok(Some(mapping))
    }

    fn write_unlocked(&self, mapping: &Mapping) -> Result<(), CacheError> {
        mapping::validate(mapping).map_err(|reason| CacheError::InvalidMapping {
            path: self.path.clone(),
            reason,
        })?;
        crate::sys::fs_atomic::write_atomic(&self.path, &to_bytes(mapping)).map_err(|source| self.io("write", source))
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> CacheError {
        CacheError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

/// Proof that the cache's exclusive lock is held (released when dropped).
pub struct CacheLock(#[allow(dead_code)] File);

/// The cache's file format: sorted keys, indent 4, a final newline (as the original wrote it).
pub fn to_bytes(mapping: &Mapping) -> Vec<u8> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(Vec::new(), formatter);
    mapping
        .serialize(&mut ser)
        .expect("a mapping of JSON values serializes");
    let mut bytes = ser.into_inner();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn complete() -> Mapping {
        mapping::flatten(&json!({"server": {"s": {"p": {"bootstrap": "b"}}},
            "compute": {"c": {"s": {"get_port": "echo 22"}}},
            "platform": {"default": {"hooks": {}}, "x": {"y": "z"}}}))
    }

    #[test]
    fn update_then_read_round_trips_with_original_layout() {
        let d = tempfile::tempdir().unwrap();
        let cache = MutableCache::new(d.path());
        assert!(cache.read().unwrap().is_none());
        cache
            .update(|cur| {
                assert!(cur.is_none());
                Ok((complete(), ()))
            })
            .unwrap();
        assert_eq!(cache.read().unwrap().unwrap(), complete());
        let text = std::fs::read_to_string(cache.path()).unwrap();
        assert!(
            text.starts_with("{\n    \"raptiformica/compute/c/s/get_port\""),
            "{text}"
        );
    }

    #[test]
    fn a_memo_reads_the_file_again_only_after_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let cache = MutableCache::new(dir.path());
        let mut memo = Memo::default();
        assert_eq!(memo.read(&cache).unwrap(), None, "no cache yet");
        cache.update(|_| Ok((complete(), ()))).unwrap();
        assert_eq!(memo.read(&cache).unwrap(), Some(complete()));
        // The same file: from memory (here proven by a file changed in place, which no write
        // of ours does, keeping its inode, length and time).
        let before = std::fs::metadata(cache.path()).unwrap();
        let text = std::fs::read_to_string(cache.path()).unwrap().replace("echo", "ECHO");
        std::fs::write(cache.path(), &text).unwrap();
        let f = std::fs::File::options().write(true).open(cache.path()).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        assert_eq!(memo.read(&cache).unwrap(), Some(complete()), "read from memory");
        // A write of ours (a new file): read again.
        let mut next = complete();
        next.insert("raptiformica/x".into(), serde_json::json!("y"));
        cache.update(|_| Ok((next.clone(), ()))).unwrap();
        assert_eq!(memo.read(&cache).unwrap(), Some(next));
    }

    #[test]
    fn corrupt_cache_is_refused_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let cache = MutableCache::new(d.path());
        for bad in [
            "{\"raptiformica/x\": tru",
            "{}",
            "[1]",
            "{\"raptiformica/server/a\": 1}",
        ] {
            std::fs::write(cache.path(), bad).unwrap();
            let err = cache.update(|_| Ok((complete(), ()))).unwrap_err().to_string();
            assert!(err.contains(FILE_NAME) && err.contains("raptiformica clean"), "{err}");
            assert_eq!(std::fs::read_to_string(cache.path()).unwrap(), bad);
            assert!(cache.read().is_err());
        }
    }

    #[test]
    fn invalid_mapping_is_never_written() {
        let d = tempfile::tempdir().unwrap();
        let cache = MutableCache::new(d.path());
        cache.update(|_| Ok((complete(), ()))).unwrap();
        let before = std::fs::read(cache.path()).unwrap();
        let mut partial = complete();
        partial.retain(|k, _| !k.contains("/platform/"));
        assert!(cache.update(|_| Ok((partial, ()))).is_err());
        assert_eq!(std::fs::read(cache.path()).unwrap(), before);
    }
}
