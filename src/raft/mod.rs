//! Adapters between openraft 0.9 and the registry: type configuration, the sled database and its
//! sync thread, the log store, the sled-persisted state machine, versioned on-disk formats and
//! their migration, node identities, and the outbound peer network.
//!
//! Nobody outside this module names openraft's generic error types; they use the aliases in
//! [`typ`]. The registry itself never sees openraft.

// openraft's storage traits fix `StorageError` (a large type) as the error of every storage
// path; boxing it in our helpers would only add conversions.
#![allow(clippy::result_large_err)]

mod applied;
mod disk;
mod events;
mod format;
mod identity;
mod log_store;
mod migrate;
mod network;
mod retention;
mod state_machine;

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use self::applied::Applied;
pub use self::applied::AppliedView;
pub use self::disk::Disk;
pub use self::events::EVENT_HISTORY;
pub use self::events::EventLog;
pub use self::events::TooFarBehind;
pub use self::format::FormatError;
pub use self::identity::Addressee;
pub use self::identity::NodeIdentity;
pub use self::log_store::LogStore;
pub use self::network::PeerClient;
pub use self::network::PeerError;
pub use self::network::PeerNetwork;
pub use self::network::rpc;
pub use self::retention::LogRetention;
pub use self::state_machine::StateMachine;
use crate::registry::Change;
use crate::registry::Outcome;
pub use switchboard_proto::NodeId;
pub use switchboard_proto::peer::ADDRESSEE_HEADER;
pub use switchboard_proto::peer::PeerNode;

/// Key in the meta tree: the format version of the whole directory, written last when a
/// directory is created or migrated.
const FORMAT: &[u8] = b"format";
/// Key in the meta tree: the [`NodeIdentity`].
const IDENTITY: &[u8] = b"identity";

openraft::declare_raft_types!(
    /// The openraft type configuration of Switchboard. One log entry carries a batch of changes
    /// (group commit); its response has one outcome per change.
    pub TypeConfig:
        D = Vec<Change>,
        R = Vec<Outcome>,
        NodeId = NodeId,
        Node = PeerNode,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;

/// Short names for openraft's generic types.
pub mod typ {
    use super::NodeId;
    use super::PeerNode;
    use super::TypeConfig;

    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    pub type Vote = openraft::Vote<NodeId>;
    pub type Membership = openraft::Membership<NodeId, PeerNode>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, PeerNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
}

/// Raft timing and log retention, from the node configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTuning {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the latest snapshot, for followers that are slightly behind.
    pub keep_behind_snapshot: u64,
    /// Largest piece of a snapshot per install request.
    pub snapshot_chunk_bytes: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(40),
            election_timeout_min: Duration::from_millis(120),
            election_timeout_max: Duration::from_millis(240),
            snapshot_every: 5_000,
            keep_behind_snapshot: 1_000,
            snapshot_chunk_bytes: 4 * 1024 * 1024,
        }
    }
}

impl RaftTuning {
    /// Purge in batches (sled frees space better), but never wait for more entries than a
    /// snapshot interval holds.
    fn purge_batch(&self) -> u64 {
        (self.snapshot_every / 4).clamp(1, 256)
    }

    /// The log retention rule of this tuning.
    pub fn retention(&self) -> LogRetention {
        LogRetention::new(self.keep_behind_snapshot, self.purge_batch())
    }

    pub fn to_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
        let millis = |d: Duration| d.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            // One chunk per request, sent as raw bytes; the peer endpoint accepts up to
            // `peer::MAX_BODY_BYTES`, and a chunk of the largest size crosses loopback or a LAN
            // in far less than the timeout.
            snapshot_max_chunk_size: self.snapshot_chunk_bytes as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // The node purges its log itself (`LogRetention`, run by a cluster duty): openraft's
            // own purge would remove the entries after a snapshot that a follower is being sent.
            max_in_snapshot_log_to_keep: u64::MAX,
            purge_batch_size: self.purge_batch(),
            max_payload_entries: 512,
            enable_elect: false,
            ..Default::default()
        };
        Ok(Arc::new(config.validate()?))
    }
}

/// Why a data directory could not be opened. Each message is one line naming the place.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(
        "{dir} belongs to node {found}, not node {expected}; a data directory cannot move to another node id \
         (empty it to join as a new node)"
    )]
    WrongNode { dir: String, found: NodeId, expected: NodeId },
    #[error("{0}: {1}")]
    Storage(String, String),
}

/// A data directory, opened: its identity, log store and state machine.
#[derive(Debug)]
pub struct Storage {
    pub identity: NodeIdentity,
    pub log_store: LogStore,
    pub state_machine: StateMachine,
}

impl Storage {
    /// Opens the data directory of node `node_id`: creates it (with a fresh identity) if it is
    /// new, migrates it if an older build wrote it, refuses it if it belongs to another node or
    /// is of a format this build does not know. Publishes the state machine to `view`.
    pub fn open(
        data_dir: &Path,
        node_id: NodeId,
        cache_bytes: u64,
        view: AppliedView,
    ) -> Result<Self, StorageOpenError> {
        let io = |err| StorageOpenError::Io(data_dir.display().to_string(), err);
        let disk = Disk::open(data_dir, cache_bytes).map_err(io)?;
        let place = disk.path.join(disk::LOG_DIR).display().to_string();
        let sled_err = |err| StorageOpenError::Io(place.clone(), disk::sled_io(err));
        let meta = disk.log.open_tree(log_store::META_TREE).map_err(sled_err)?;
        let identity = match meta.get(FORMAT).map_err(sled_err)? {
            Some(version) if (format::OLDEST..=format::CURRENT).contains(&version.first().copied().unwrap_or(0)) => {
                // A migration that recorded its format may have stopped before deleting the old data.
                if migrate::is_v0(&disk, data_dir) {
                    tracing::warn!(dir = %data_dir.display(), "format-0 data left over from a migration; ignoring it");
                }
                let bytes = meta.get(IDENTITY).map_err(sled_err)?.ok_or_else(|| FormatError::Corrupt {
                    place: format!("{place} tree {} key identity", log_store::META_TREE),
                    cause: "missing".into(),
                })?;
                let identity =
                    format::decode(&bytes, format_args!("{place} tree {} key identity", log_store::META_TREE))?;
                if version.as_ref() != [format::CURRENT] {
                    // Every record of the older format stays readable (see `format`); marking the
                    // directory keeps a build that knows only the older format from misreading
                    // the records written from now on.
                    meta.insert(FORMAT, vec![format::CURRENT]).map_err(sled_err)?;
                    disk.syncer.sync_blocking().map_err(io)?;
                    tracing::info!(dir = %data_dir.display(), from = version[0], to = format::CURRENT, "data directory format upgraded in place");
                }
                identity
            }
            Some(version) => {
                return Err(FormatError::UnknownVersion {
                    place: format!("{place} (directory format)"),
                    version: version.first().copied().unwrap_or(0),
                }
                .into());
            }
            None if migrate::is_v0(&disk, data_dir) => migrate::from_v0(&disk, data_dir, node_id)?,
            None => {
                let identity = NodeIdentity::fresh(node_id)
                    .map_err(|e| StorageOpenError::Storage(place.clone(), e.to_string()))?;
                let encoded =
                    format::encode(&identity).map_err(|e| StorageOpenError::Storage(place.clone(), e.to_string()))?;
                meta.insert(IDENTITY, encoded).map_err(sled_err)?;
                disk.syncer.sync_blocking().map_err(io)?;
                meta.insert(FORMAT, vec![format::CURRENT]).map_err(sled_err)?;
                disk.syncer.sync_blocking().map_err(io)?;
                identity
            }
        };
        let identity: NodeIdentity = identity;
        if identity.node_id != node_id {
            return Err(StorageOpenError::WrongNode {
                dir: data_dir.display().to_string(),
                found: identity.node_id,
                expected: node_id,
            });
        }
        let log_store = LogStore::new(&disk).map_err(sled_err)?;
        let state_machine =
            StateMachine::open(&disk, view).map_err(|e| StorageOpenError::Storage(place.clone(), e.to_string()))?;
        Ok(Self { identity, log_store, state_machine })
    }
}

#[cfg(test)]
mod tests;
