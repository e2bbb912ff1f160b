//! Adapters between openraft 0.9 and the registry: type configuration, the sled log store, the
//! in-memory state machine with file snapshots, and the outbound peer network.
//!
//! Nobody outside this module names openraft's generic error types; they use the aliases in
//! [`typ`]. The registry itself never sees openraft.

// openraft's storage traits fix `StorageError` (a large type) as the error of every storage
// path; boxing it in our helpers would only add conversions.
#![allow(clippy::result_large_err)]

mod log_store;
mod network;
mod state_machine;

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

pub use self::log_store::LogStore;
pub use self::log_store::NodeMeta;
pub use self::log_store::open_db;
pub use self::network::PEER_CONTENT_TYPE;
pub use self::network::PeerClient;
pub use self::network::PeerError;
pub use self::network::PeerNetwork;
pub use self::state_machine::Applied;
pub use self::state_machine::AppliedView;
pub use self::state_machine::StateMachine;
use crate::registry::Change;
use crate::registry::Outcome;

/// Raft node ids are the `--node-id` values.
pub type NodeId = u64;

/// What the membership records about a node: where its peer endpoint is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the node's peer endpoint.
    pub addr: String,
}

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
    pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, PeerNode>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, PeerNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, PeerNode>;
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
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(40),
            election_timeout_min: Duration::from_millis(120),
            election_timeout_max: Duration::from_millis(240),
            snapshot_every: 5_000,
            keep_behind_snapshot: 1_000,
        }
    }
}

impl RaftTuning {
    pub fn to_config(&self, cluster_name: &str) -> Result<Arc<openraft::Config>, openraft::ConfigError> {
        let millis = |d: Duration| d.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            // One chunk per request, sent as raw bytes; the peer endpoint accepts up to
            // `peer::MAX_BODY_BYTES`, and a chunk of this size crosses loopback or a LAN in far
            // less than the timeout.
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            // Purge in batches (sled frees space better), but never wait for more entries than a
            // snapshot interval holds.
            purge_batch_size: (self.snapshot_every / 4).clamp(1, 256),
            max_payload_entries: 512,
            ..Default::default()
        };
        Ok(Arc::new(config.validate()?))
    }
}

#[cfg(test)]
mod tests;
