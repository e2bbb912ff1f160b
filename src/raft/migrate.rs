//! Migration of data directories written before on-disk formats were versioned (format 0: sled
//! trees `log` and `meta` with bare postcard values, the state machine in `snapshot.bin`).
//!
//! The migration writes the format-1 trees next to the old ones, syncs, and only then records
//! the directory's format; a crash before that point leaves the old data untouched and the next
//! start migrates again from the beginning. The old trees and file are deleted afterwards.
//! Format 0 recorded members without an incarnation: they stay so (`PeerNode::incarnation` is
//! `None`), and the migrated node's identity is marked `migrated`, which makes it the node such
//! entries name.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;

use crate::raft::NodeId;
use crate::raft::PeerNode;
use crate::raft::StorageOpenError;
use crate::raft::disk::Disk;
use crate::raft::disk::sled_io;
use crate::raft::disk::sync_dir;
use crate::raft::format;
use crate::raft::identity::NodeIdentity;
use crate::raft::log_store;
use crate::raft::state_machine;
use crate::raft::typ;
use crate::registry::Answer;
use crate::registry::AuditAction;
use crate::registry::AuditRecord;
use crate::registry::Change;
use crate::registry::ContractKey;
use crate::registry::Outcome;
use crate::registry::PolicyV1;
use crate::registry::Registration;
use crate::registry::RegistrationId;
use crate::registry::RegistryState;
use crate::registry::Remembered;
use crate::registry::StateImage;

/// The state machine file of format 0.
pub const V0_SNAPSHOT_FILE: &str = "snapshot.bin";
const V0_TREES: [&str; 2] = ["log", "meta"];

/// A member as format 0 recorded it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct V0Node {
    addr: String,
}

openraft::declare_raft_types!(
    V0Config: D = Vec<Change>, R = Vec<Outcome>, NodeId = NodeId, Node = V0Node, SnapshotData = Cursor<Vec<u8>>,
);

#[derive(Deserialize)]
struct V0NodeMeta {
    node_id: NodeId,
    admitted: bool,
}

#[derive(Deserialize)]
struct V0SnapshotFile {
    meta: openraft::SnapshotMeta<NodeId, V0Node>,
    data: Vec<u8>,
}

#[derive(Deserialize)]
struct V0AuditRecord {
    index: u64,
    at_ms: u64,
    node: u64,
    principal: Option<String>,
    action: AuditAction,
    id: Option<RegistrationId>,
    address: Option<String>,
    contract: String,
}

#[derive(Deserialize)]
struct V0Answer {
    request: (u64, u64),
    at_ms: u64,
    outcome: Outcome,
}

#[derive(Deserialize)]
struct V0Image {
    registrations: Vec<Registration>,
    policies: Vec<(ContractKey, PolicyV1)>,
    audit: Vec<V0AuditRecord>,
    answers: Vec<V0Answer>,
}

/// Whether the directory holds format-0 data.
pub fn is_v0(disk: &Disk, data_dir: &Path) -> bool {
    let names = disk.log.tree_names();
    let has_tree = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    data_dir.join(V0_SNAPSHOT_FILE).exists() || V0_TREES.iter().any(|name| has_tree(name))
}

fn convert_membership(membership: &openraft::Membership<NodeId, V0Node>) -> typ::Membership {
    let nodes: BTreeMap<NodeId, PeerNode> =
        membership.nodes().map(|(id, node)| (*id, PeerNode { addr: node.addr.clone(), incarnation: None })).collect();
    openraft::Membership::new(membership.get_joint_config().clone(), nodes)
}

fn convert_stored(stored: &openraft::StoredMembership<NodeId, V0Node>) -> typ::StoredMembership {
    typ::StoredMembership::new(*stored.log_id(), convert_membership(stored.membership()))
}

fn convert_entry(entry: openraft::Entry<V0Config>) -> typ::Entry {
    let payload = match entry.payload {
        openraft::EntryPayload::Blank => openraft::EntryPayload::Blank,
        openraft::EntryPayload::Normal(changes) => openraft::EntryPayload::Normal(changes),
        openraft::EntryPayload::Membership(membership) => {
            openraft::EntryPayload::Membership(convert_membership(&membership))
        }
    };
    typ::Entry { log_id: entry.log_id, payload }
}

fn convert_image(image: V0Image) -> StateImage {
    let audit: Vec<AuditRecord> = image
        .audit
        .into_iter()
        .enumerate()
        .map(|(seq, r)| AuditRecord {
            seq: seq as u64,
            index: r.index,
            at_ms: r.at_ms,
            node: r.node,
            principal: r.principal,
            action: r.action,
            id: r.id,
            address: r.address,
            contract: r.contract,
        })
        .collect();
    StateImage {
        registrations: image.registrations,
        policies: image.policies.into_iter().map(|(key, policy)| (key, policy.into())).collect(),
        audit_next_seq: audit.len() as u64,
        audit,
        answers: image
            .answers
            .into_iter()
            .map(|a| Answer { request: a.request, at_ms: a.at_ms, outcome: Remembered::Outcome(a.outcome) })
            .collect(),
        tokens: Vec::new(),
        health: Vec::new(),
    }
}

/// Migrates a format-0 directory to the current format, in place. Returns the identity it gave
/// the node.
pub fn from_v0(disk: &Disk, data_dir: &Path, node_id: NodeId) -> Result<NodeIdentity, StorageOpenError> {
    let place = disk.path.join(crate::raft::disk::LOG_DIR).display().to_string();
    let corrupt = |what: &str, err: &dyn std::fmt::Display| {
        StorageOpenError::Format(format::FormatError::Corrupt {
            place: format!("{place} (format 0) {what}"),
            cause: err.to_string(),
        })
    };
    let sled_err = |err: sled::Error| StorageOpenError::Io(place.clone(), sled_io(err));
    let old_meta = disk.log.open_tree("meta").map_err(sled_err)?;
    let old_log = disk.log.open_tree("log").map_err(sled_err)?;
    let read = |key: &[u8]| old_meta.get(key).map_err(sled_err);

    let admitted = match read(b"node")? {
        Some(bytes) => {
            let meta: V0NodeMeta = postcard::from_bytes(&bytes).map_err(|e| corrupt("node identity", &e))?;
            if meta.node_id != node_id {
                return Err(StorageOpenError::WrongNode {
                    dir: data_dir.display().to_string(),
                    found: meta.node_id,
                    expected: node_id,
                });
            }
            meta.admitted
        }
        None => false,
    };
    let fresh = NodeIdentity::fresh(node_id).map_err(|e| StorageOpenError::Storage(place.clone(), e.to_string()))?;
    let identity = NodeIdentity { migrated: admitted, ..fresh };

    // Start from empty format-1 trees: an earlier attempt may have been cut short.
    let new_log = disk.log.open_tree(log_store::LOG_TREE).map_err(sled_err)?;
    let new_meta = disk.log.open_tree(log_store::META_TREE).map_err(sled_err)?;
    for tree in [&new_log, &new_meta] {
        tree.clear().map_err(sled_err)?;
    }

    let encode = |value: &dyn erased::Encode| value.encode().map_err(|e| corrupt("re-encoding", &e));
    let mut entries = 0u64;
    let mut batch = sled::Batch::default();
    for item in old_log.iter() {
        let (key, value) = item.map_err(sled_err)?;
        let entry: openraft::Entry<V0Config> = postcard::from_bytes(&value).map_err(|e| corrupt("log entry", &e))?;
        batch.insert(key, encode(&convert_entry(entry))?);
        entries += 1;
    }
    new_log.apply_batch(batch).map_err(sled_err)?;

    let mut batch = sled::Batch::default();
    if let Some(bytes) = read(log_store::VOTE)? {
        let vote: typ::Vote = postcard::from_bytes(&bytes).map_err(|e| corrupt("vote", &e))?;
        batch.insert(log_store::VOTE, encode(&vote)?);
    }
    if let Some(bytes) = read(log_store::COMMITTED)? {
        let committed: Option<typ::LogId> = postcard::from_bytes(&bytes).map_err(|e| corrupt("committed index", &e))?;
        batch.insert(log_store::COMMITTED, encode(&committed)?);
    }
    if let Some(bytes) = read(log_store::LAST_PURGED)? {
        let purged: typ::LogId = postcard::from_bytes(&bytes).map_err(|e| corrupt("purge point", &e))?;
        batch.insert(log_store::LAST_PURGED, encode(&purged)?);
    }
    batch.insert(super::IDENTITY, encode(&identity)?);
    new_meta.apply_batch(batch).map_err(sled_err)?;

    let snapshot_path = data_dir.join(V0_SNAPSHOT_FILE);
    let (state, last_applied, membership) = match std::fs::read(&snapshot_path) {
        Ok(bytes) => {
            let file: V0SnapshotFile = postcard::from_bytes(&bytes).map_err(|e| corrupt(V0_SNAPSHOT_FILE, &e))?;
            let image: V0Image = postcard::from_bytes(&file.data).map_err(|e| corrupt(V0_SNAPSHOT_FILE, &e))?;
            let state = RegistryState::from_image(convert_image(image));
            (state, file.meta.last_log_id, convert_stored(&file.meta.last_membership))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(err) => return Err(StorageOpenError::Io(snapshot_path.display().to_string(), err)),
    };
    let registrations = state.len();
    state_machine::reset(disk, &state, last_applied, &membership).map_err(|e| corrupt("state machine", &e))?;

    // Everything is written: sync, then record the format (the commit point), then sync again.
    let sync =
        |what: &str| disk.syncer.sync_blocking().map_err(|e| StorageOpenError::Io(format!("{place} ({what})"), e));
    sync("migration")?;
    new_meta.insert(super::FORMAT, vec![format::CURRENT]).map_err(sled_err)?;
    sync("migration")?;
    for name in V0_TREES {
        disk.log.drop_tree(name).map_err(sled_err)?;
    }
    if snapshot_path.exists() {
        std::fs::remove_file(&snapshot_path)
            .map_err(|e| StorageOpenError::Io(snapshot_path.display().to_string(), e))?;
        sync_dir(data_dir).map_err(|e| StorageOpenError::Io(data_dir.display().to_string(), e))?;
    }
    sync("migration")?;
    tracing::info!(
        dir = %data_dir.display(),
        entries,
        registrations,
        incarnation = format_args!("{:016x}", identity.incarnation),
        "data directory migrated from format 0 to format {}",
        format::CURRENT
    );
    Ok(identity)
}

/// Encoding behind a trait object, so one closure serves every record type.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Result<Vec<u8>, postcard::Error>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
            crate::raft::format::encode(self)
        }
    }
}
