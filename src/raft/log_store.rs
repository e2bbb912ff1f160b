//! The Raft log and vote in sled.
//!
//! Durability rule: every write openraft treats as persisted (vote, appended entries, truncation)
//! is followed by a [`Syncer::sync`] (sled flush plus `fdatasync`), and only then reported done.
//! A purge and the committed index are saved without a sync: a purge lost to a crash leaves old
//! entries that a snapshot already covers (purged again later), and the committed index only
//! shortens replay after a restart.
//! Every value is a versioned record (see `format`).

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageIOError;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::TypeConfig;
use crate::raft::disk::Disk;
use crate::raft::disk::Syncer;
use crate::raft::format;
use crate::raft::typ;

/// Tree of log entries, keyed by big-endian index.
pub const LOG_TREE: &str = "raft.log";
/// Tree of the log's metadata and the directory's identity and format.
pub const META_TREE: &str = "raft.meta";

pub const VOTE: &[u8] = b"vote";
pub const COMMITTED: &[u8] = b"committed";
pub const LAST_PURGED: &[u8] = b"last_purged";

/// The sled-backed log store. Cheap to clone; clones share the trees.
#[derive(Debug, Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    syncer: Syncer,
    /// Where the trees live, for error messages.
    place: std::sync::Arc<str>,
}

fn io_read(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::read_logs(openraft::AnyError::new(&err)).into()
}

fn io_write(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::write_logs(openraft::AnyError::new(&err)).into()
}

pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    pub fn new(disk: &Disk) -> sled::Result<Self> {
        Ok(Self {
            log: disk.log.open_tree(LOG_TREE)?,
            meta: disk.log.open_tree(META_TREE)?,
            syncer: disk.syncer.clone(),
            place: disk.path.join(crate::raft::disk::LOG_DIR).display().to_string().into(),
        })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, typ::StorageError> {
        match self.meta.get(key).map_err(io_read)? {
            Some(bytes) => {
                let place = format_args!("{} tree {META_TREE} key {}", self.place, String::from_utf8_lossy(key));
                format::decode(&bytes, place).map(Some).map_err(io_read)
            }
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), typ::StorageError> {
        self.meta.insert(key, format::encode(value).map_err(io_write)?).map_err(io_write)?;
        Ok(())
    }

    fn decode_entry(&self, key: &[u8], bytes: &[u8]) -> Result<typ::Entry, typ::StorageError> {
        let index = key.try_into().map(u64::from_be_bytes).unwrap_or_default();
        format::decode(bytes, format_args!("{} tree {LOG_TREE} index {index}", self.place)).map_err(io_read)
    }

    /// Waits until everything written so far is durable.
    async fn sync(&self) -> std::io::Result<()> {
        self.syncer.sync().await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<typ::Entry>, typ::StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(index_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(index_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.log.range::<[u8; 8], _>((start, end)) {
            let (key, value) = item.map_err(io_read)?;
            entries.push(self.decode_entry(&key, &value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        let last_purged_log_id: Option<typ::LogId> = self.get_meta(LAST_PURGED)?;
        let last_entry = match self.log.last().map_err(io_read)? {
            Some((key, value)) => Some(self.decode_entry(&key, &value)?.log_id),
            None => None,
        };
        // Entries at or below the purge point may survive a crash between writing the purge
        // point and deleting them; they never count as the last log.
        let last_log_id = last_entry.max(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &typ::Vote) -> Result<(), typ::StorageError> {
        self.put_meta(VOTE, vote)?;
        self.sync().await.map_err(|e| StorageIOError::write_vote(openraft::AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<typ::Vote>, typ::StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<typ::LogId>) -> Result<(), typ::StorageError> {
        self.put_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<typ::LogId>, typ::StorageError> {
        Ok(self.get_meta::<Option<typ::LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.log_id.index), format::encode(&entry).map_err(io_write)?);
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        // The entries are readable now; they are acknowledged only once they are on disk.
        callback.log_io_completed(self.sync().await);
        Ok(())
    }

    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(io_read)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        self.sync().await.map_err(io_write)
    }

    async fn purge(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        // The purge point goes first, so a crash in between leaves extra old entries, never a
        // log that starts after a gap.
        self.put_meta(LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(io_read)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        Ok(())
    }
}
