//! The Raft log, vote and node identity in sled.
//!
//! Durability rule: every write openraft treats as persisted (vote, appended entries, truncation)
//! is followed by `Db::flush`, and only then reported done. Flushes run on the blocking pool and
//! all of them come from this store, which openraft drives from a single task, so sled never sees
//! two flushes at once (its concurrent `flush_async` can deadlock). The committed index is saved
//! without a flush: it only shortens replay after a restart and is rewritten by the next flush.

use std::fmt::Debug;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;

use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageIOError;
use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::NodeId;
use crate::raft::TypeConfig;
use crate::raft::typ;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const NODE_META: &[u8] = b"node";

/// Opens the node's sled database with a bounded cache.
pub fn open_db(dir: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    sled::Config::new().path(dir.join("raft")).cache_capacity(cache_bytes).mode(sled::Mode::LowSpace).open()
}

/// What a data directory records about the node that owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub node_id: NodeId,
    /// Set once the node may take part in replication: it bootstrapped the cluster, or the leader
    /// admitted it. A node with a fresh directory is not admitted until the leader has confirmed
    /// that no replication progress recorded for its id is lost with the old directory.
    pub admitted: bool,
}

/// The sled-backed log store. Cheap to clone; clones share the trees.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn io_read(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::read_logs(openraft::AnyError::new(&err)).into()
}

fn io_write(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::write_logs(openraft::AnyError::new(&err)).into()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, typ::StorageError> {
    postcard::from_bytes(bytes).map_err(io_read)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, typ::StorageError> {
    postcard::to_stdvec(value).map_err(io_write)
}

impl LogStore {
    pub fn new(db: sled::Db) -> sled::Result<Self> {
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        Ok(Self { db, log, meta })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, typ::StorageError> {
        match self.meta.get(key).map_err(io_read)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Waits until everything written so far is on disk.
    async fn flush(&self) -> Result<(), std::io::Error> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(std::io::Error::other(err)),
            Err(join) => Err(std::io::Error::other(join)),
        }
    }

    pub fn node_meta(&self) -> Result<Option<NodeMeta>, typ::StorageError> {
        self.get_meta(NODE_META)
    }

    /// Records the node's identity and admission, durably.
    pub async fn save_node_meta(&self, node_meta: NodeMeta) -> Result<(), typ::StorageError> {
        self.meta.insert(NODE_META, encode(&node_meta)?).map_err(io_write)?;
        self.flush().await.map_err(io_write)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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
            let (_, value) = item.map_err(io_read)?;
            entries.push(decode(&value)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        let last_purged_log_id: Option<typ::LogId> = self.get_meta(LAST_PURGED)?;
        let last_entry = match self.log.last().map_err(io_read)? {
            Some((_, value)) => Some(decode::<typ::Entry>(&value)?.log_id),
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
        self.meta.insert(VOTE, encode(vote)?).map_err(io_write)?;
        self.flush().await.map_err(|e| StorageIOError::write_vote(openraft::AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<typ::Vote>, typ::StorageError> {
        self.get_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<typ::LogId>) -> Result<(), typ::StorageError> {
        self.meta.insert(COMMITTED, encode(&committed)?).map_err(io_write)?;
        Ok(())
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
            batch.insert(&index_key(entry.log_id.index), encode(&entry)?);
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        // The entries are readable now; they are acknowledged only once they are on disk.
        callback.log_io_completed(self.flush().await);
        Ok(())
    }

    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(io_read)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        self.flush().await.map_err(io_write)
    }

    async fn purge(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        // The purge point goes first, so a crash in between leaves extra old entries, never a
        // log that starts after a gap.
        self.meta.insert(LAST_PURGED, encode(&log_id)?).map_err(io_write)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(io_read)?;
            batch.remove(key);
        }
        self.log.apply_batch(batch).map_err(io_write)?;
        Ok(())
    }
}
