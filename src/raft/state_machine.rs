//! The Raft state machine: the registry, persisted in sled and mirrored in memory.
//!
//! The state lives in one of two sled trees, `sm.0` and `sm.1`; the log's meta tree says which
//! one is active. Each applied batch is one atomic sled batch on the active tree: the records it
//! touched (registrations, policies, audit records, remembered answers), the last applied log id
//! and the membership. A restart loads the active tree; openraft then re-applies the committed
//! entries after its last applied id. Applies are not synced one by one: the log holds every
//! committed entry durably, and sled recovers a prefix of its writes, so after a crash the tree is
//! a consistent earlier state that the replay completes. A snapshot build syncs before it
//! returns, because openraft may then purge the log up to it.
//!
//! A snapshot sent to a follower is the serialized in-memory state at its applied id. Installing
//! one fills the inactive tree, syncs, then switches the active tree with one synced write: a
//! crash leaves either the old state or the new one.
//!
//! After every applied batch the state is published to an [`AppliedView`]; readers (control API,
//! data plane) load it without locks and keep the immutable copy they loaded.

use std::io::Cursor;
use std::sync::Arc;

use arc_swap::ArcSwap;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::StorageIOError;
use openraft::storage::RaftStateMachine;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::raft::TypeConfig;
use crate::raft::disk::Disk;
use crate::raft::disk::Syncer;
use crate::raft::format;
use crate::raft::typ;
use crate::registry::Outcome;
use crate::registry::RegistryState;
use crate::registry::StateImage;
use crate::registry::Touched;

/// The two trees that take turns holding the state.
pub const SM_TREES: [&str; 2] = ["sm.0", "sm.1"];
/// The tree that says which of [`SM_TREES`] is active.
pub const SM_META_TREE: &str = "sm.meta";
/// Key in [`SM_META_TREE`]: the index in [`SM_TREES`] of the active tree.
pub const ACTIVE_SM: &[u8] = b"active";

const APPLIED: &[u8] = b"\x00applied";
const MEMBERSHIP: &[u8] = b"\x00membership";
const AUDIT_NEXT: &[u8] = b"\x00audit_next";
const AUDIT: u8 = b'a';
const POLICY: u8 = b'p';
const ANSWER: u8 = b'q';
const REGISTRATION: u8 = b'r';

/// What the node has applied: the registry and the log position it reflects.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub state: RegistryState,
    pub index: u64,
}

/// Shared, lock-free read handle to the latest applied state, plus a channel that ticks with the
/// applied index for those who wait for a position.
#[derive(Debug, Clone)]
pub struct AppliedView {
    current: Arc<ArcSwap<Applied>>,
    index: watch::Sender<u64>,
}

impl Default for AppliedView {
    fn default() -> Self {
        Self { current: Arc::new(ArcSwap::from_pointee(Applied::default())), index: watch::Sender::new(0) }
    }
}

impl AppliedView {
    pub fn load(&self) -> Arc<Applied> {
        self.current.load_full()
    }

    fn publish(&self, applied: Applied) {
        let index = applied.index;
        self.current.store(Arc::new(applied));
        self.index.send_replace(index);
    }

    /// A receiver of the applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }
}

/// The state machine; openraft owns it, the node keeps an [`AppliedView`] of it.
#[derive(Debug)]
pub struct StateMachine {
    state: RegistryState,
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    view: AppliedView,
    store: SmStore,
}

/// The sled side of the state machine.
#[derive(Debug, Clone)]
struct SmStore {
    meta: sled::Tree,
    trees: [sled::Tree; 2],
    active: usize,
    syncer: Syncer,
    place: Arc<str>,
}

fn read_error(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::read_state_machine(openraft::AnyError::new(&err)).into()
}

fn write_error(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::write_state_machine(openraft::AnyError::new(&err)).into()
}

fn snapshot_error(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::write_snapshot(None, openraft::AnyError::new(&err)).into()
}

fn put<T: Serialize + ?Sized>(batch: &mut sled::Batch, key: &[u8], value: &T) -> Result<(), typ::StorageError> {
    batch.insert(key, format::encode(value).map_err(write_error)?);
    Ok(())
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rest.len());
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn answer_key(request: (u64, u64)) -> Vec<u8> {
    key(ANSWER, &[request.0.to_be_bytes(), request.1.to_be_bytes()].concat())
}

/// Everything a state machine tree holds.
#[derive(Debug, Default)]
pub struct Loaded {
    pub image: StateImage,
    pub last_applied: Option<typ::LogId>,
    pub membership: typ::StoredMembership,
}

/// Writes a whole state into an empty tree, in batches. Blocking.
pub fn write_tree(tree: &sled::Tree, loaded: &Loaded) -> Result<(), typ::StorageError> {
    let image = &loaded.image;
    let record = |key: Vec<u8>, value: Result<Vec<u8>, postcard::Error>| value.map(|value| (key, value));
    let records = image
        .registrations
        .iter()
        .map(|r| record(key(REGISTRATION, r.id.as_bytes()), format::encode(r)))
        .chain(image.policies.iter().map(|(c, p)| record(key(POLICY, c.as_str().as_bytes()), format::encode(&(c, p)))))
        .chain(image.audit.iter().map(|r| record(key(AUDIT, &r.seq.to_be_bytes()), format::encode(r))))
        .chain(image.answers.iter().map(|a| record(answer_key(a.request), format::encode(a))))
        .chain([
            record(AUDIT_NEXT.to_vec(), format::encode(&image.audit_next_seq)),
            record(MEMBERSHIP.to_vec(), format::encode(&loaded.membership)),
            record(APPLIED.to_vec(), format::encode(&loaded.last_applied)),
        ]);
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for record in records {
        let (key, value) = record.map_err(write_error)?;
        batch.insert(key, value);
        pending += 1;
        if pending == 1024 {
            tree.apply_batch(std::mem::take(&mut batch)).map_err(write_error)?;
            pending = 0;
        }
    }
    tree.apply_batch(batch).map_err(write_error)
}

impl SmStore {
    fn tree(&self) -> &sled::Tree {
        &self.trees[self.active]
    }

    fn decode<T: DeserializeOwned>(&self, tree: usize, key: &[u8], bytes: &[u8]) -> Result<T, typ::StorageError> {
        let place = format_args!("{} tree {} key {:02x?}", self.place, SM_TREES[tree], key);
        format::decode(bytes, place).map_err(read_error)
    }

    /// Reads the active tree. Blocking.
    fn load(&self) -> Result<Loaded, typ::StorageError> {
        let mut loaded = Loaded::default();
        for item in self.tree().iter() {
            let (key, value) = item.map_err(read_error)?;
            match key.first() {
                Some(&REGISTRATION) => loaded.image.registrations.push(self.decode(self.active, &key, &value)?),
                Some(&POLICY) => loaded.image.policies.push(self.decode(self.active, &key, &value)?),
                Some(&AUDIT) => loaded.image.audit.push(self.decode(self.active, &key, &value)?),
                Some(&ANSWER) => loaded.image.answers.push(self.decode(self.active, &key, &value)?),
                _ if *key == *APPLIED => loaded.last_applied = self.decode(self.active, &key, &value)?,
                _ if *key == *MEMBERSHIP => loaded.membership = self.decode(self.active, &key, &value)?,
                _ if *key == *AUDIT_NEXT => loaded.image.audit_next_seq = self.decode(self.active, &key, &value)?,
                _ => {}
            }
        }
        // Answers are kept in the order they were given.
        loaded.image.answers.sort_by_key(|answer| (answer.at_ms, answer.request));
        Ok(loaded)
    }

    /// Replaces the whole state: fills the inactive tree, syncs, then makes it the active one.
    /// Blocking.
    fn replace(&mut self, loaded: &Loaded) -> Result<(), typ::StorageError> {
        let next = 1 - self.active;
        self.trees[next].clear().map_err(write_error)?;
        write_tree(&self.trees[next], loaded)?;
        self.syncer.sync_state_blocking().map_err(write_error)?;
        self.meta.insert(ACTIVE_SM, format::encode(&(next as u8)).map_err(write_error)?).map_err(write_error)?;
        self.syncer.sync_state_blocking().map_err(write_error)?;
        let old = std::mem::replace(&mut self.active, next);
        // The old state is no longer reachable; free its space (no sync needed).
        self.trees[old].clear().map_err(write_error)?;
        Ok(())
    }
}

impl StateMachine {
    /// Opens the state machine of a data directory and publishes what it holds to `view`.
    pub fn open(disk: &Disk, view: AppliedView) -> Result<Self, typ::StorageError> {
        let meta = disk.state.open_tree(SM_META_TREE).map_err(read_error)?;
        let trees =
            [disk.state.open_tree(SM_TREES[0]).map_err(read_error)?, disk.state.open_tree(SM_TREES[1]).map_err(read_error)?];
        let place: Arc<str> = disk.path.join(crate::raft::disk::STATE_DIR).display().to_string().into();
        let active = match meta.get(ACTIVE_SM).map_err(read_error)? {
            Some(bytes) => {
                let active: u8 =
                    format::decode(&bytes, format_args!("{place} tree {SM_META_TREE} key active")).map_err(read_error)?;
                usize::from(active.min(1))
            }
            None => 0,
        };
        let store = SmStore { meta, trees, active, syncer: disk.syncer.clone(), place };
        let loaded = store.load()?;
        let machine = Self {
            state: RegistryState::from_image(loaded.image),
            last_applied: loaded.last_applied,
            membership: loaded.membership,
            view,
            store,
        };
        machine.publish();
        Ok(machine)
    }

    fn publish(&self) {
        let index = self.last_applied.map_or(0, |id| id.index);
        self.view.publish(Applied { state: self.state.clone(), index });
    }

    /// Writes what the applies since the last call changed, with the applied position, in one
    /// atomic batch.
    fn persist(&mut self, touched: &Touched, membership_changed: bool) -> Result<(), typ::StorageError> {
        let mut batch = sled::Batch::default();
        for id in &touched.registrations {
            let key = key(REGISTRATION, id.as_bytes());
            match self.state.get(id) {
                Some(registration) => put(&mut batch, &key, &**registration)?,
                None => batch.remove(key),
            }
        }
        for contract in &touched.policies {
            let key = key(POLICY, contract.as_str().as_bytes());
            match self.state.policy(contract) {
                Some(policy) => put(&mut batch, &key, &(contract, policy))?,
                None => batch.remove(key),
            }
        }
        for &seq in &touched.audit {
            let key = key(AUDIT, &seq.to_be_bytes());
            match self.state.audit_record(seq) {
                Some(record) => put(&mut batch, &key, record)?,
                None => batch.remove(key),
            }
        }
        for request in &touched.answers {
            let key = answer_key(*request);
            match self.state.answer(request) {
                Some(answer) => put(&mut batch, &key, answer)?,
                None => batch.remove(key),
            }
        }
        if !touched.audit.is_empty() {
            put(&mut batch, AUDIT_NEXT, &self.state.audit_next_seq())?;
        }
        if membership_changed {
            put(&mut batch, MEMBERSHIP, &self.membership)?;
        }
        put(&mut batch, APPLIED, &self.last_applied)?;
        self.store.tree().apply_batch(batch).map_err(write_error)
    }

    fn snapshot_of(
        state: &RegistryState,
        last_applied: Option<typ::LogId>,
        membership: &typ::StoredMembership,
    ) -> Result<typ::Snapshot, typ::StorageError> {
        let data = format::encode(&state.image()).map_err(snapshot_error)?;
        let index = last_applied.map_or(0, |id| id.index);
        let term = last_applied.map_or(0, |id| id.leader_id.term);
        let meta = typ::SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership.clone(),
            snapshot_id: format!("{term}-{index}"),
        };
        Ok(typ::Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Builds a snapshot from a frozen copy of the state, concurrently with later applies.
#[derive(Debug)]
pub struct SnapshotBuilder {
    state: RegistryState,
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    syncer: Syncer,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<typ::Snapshot, typ::StorageError> {
        // openraft may purge the log up to this snapshot once it returns: the state it covers
        // must be on disk first.
        self.syncer.sync_state().await.map_err(snapshot_error)?;
        let snapshot = StateMachine::snapshot_of(&self.state, self.last_applied, &self.membership)?;
        tracing::info!(
            index = self.last_applied.map_or(0, |id| id.index),
            registrations = self.state.len(),
            bytes = snapshot.snapshot.get_ref().len(),
            "snapshot built"
        );
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<typ::LogId>, typ::StoredMembership), typ::StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let mut membership_changed = false;
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(changes) => {
                    changes.iter().map(|change| self.state.apply(entry.log_id.index, change)).collect()
                }
                EntryPayload::Membership(membership) => {
                    self.membership = typ::StoredMembership::new(Some(entry.log_id), membership);
                    membership_changed = true;
                    Vec::new()
                }
            };
            outcomes.push(outcome);
        }
        let touched = self.state.take_touched();
        self.persist(&touched, membership_changed)?;
        self.publish();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            syncer: self.store.syncer.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, typ::StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &typ::SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), typ::StorageError> {
        let data = snapshot.into_inner();
        let image: StateImage =
            format::decode(&data, format_args!("snapshot {}", meta.snapshot_id)).map_err(write_error)?;
        drop(data);
        let loaded = Loaded { image, last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        let mut store = self.store.clone();
        let (store, loaded) = tokio::task::spawn_blocking(move || store.replace(&loaded).map(|()| (store, loaded)))
            .await
            .map_err(write_error)??;
        self.store = store;
        // The snapshot replaces the whole state, including entries it no longer contains.
        self.state = RegistryState::from_image(loaded.image);
        self.last_applied = loaded.last_applied;
        self.membership = loaded.membership;
        self.publish();
        tracing::info!(index = self.last_applied.map_or(0, |id| id.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<typ::Snapshot>, typ::StorageError> {
        if self.last_applied.is_none() {
            return Ok(None);
        }
        Self::snapshot_of(&self.state, self.last_applied, &self.membership).map(Some)
    }
}
