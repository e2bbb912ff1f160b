//! The Raft state machine: the registry held in memory, snapshots kept in a file.
//!
//! Durability comes from the log plus snapshots: on start the state machine loads the latest
//! snapshot file, and openraft replays committed entries after it (the log store keeps the
//! committed index). A snapshot file is written to a temporary name, synced, renamed over the old
//! one and the directory synced, so a crash leaves either the old snapshot or the new one.
//!
//! After every applied batch the state is published to an [`AppliedView`]; readers (control API,
//! data plane) load it without locks and keep the immutable copy they loaded.

use std::fs;
use std::io::Cursor;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use arc_swap::ArcSwap;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::StorageIOError;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use crate::raft::TypeConfig;
use crate::raft::typ;
use crate::registry::Outcome;
use crate::registry::RegistryState;
use crate::registry::StateImage;

const SNAPSHOT_FILE: &str = "snapshot.bin";

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

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: typ::SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine; openraft owns it, the node keeps an [`AppliedView`] of it.
#[derive(Debug)]
pub struct StateMachine {
    state: RegistryState,
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    view: AppliedView,
    snapshots: SnapshotDir,
}

/// The directory holding the snapshot file; serializes writers so an older snapshot never
/// replaces a newer one.
#[derive(Debug, Clone)]
struct SnapshotDir {
    dir: PathBuf,
    current: Arc<Mutex<Option<typ::SnapshotMeta>>>,
}

fn sm_error(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::write_state_machine(openraft::AnyError::new(&err)).into()
}

fn snapshot_error(err: impl std::error::Error + 'static) -> typ::StorageError {
    StorageIOError::write_snapshot(None, openraft::AnyError::new(&err)).into()
}

impl SnapshotDir {
    fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    fn read(&self) -> Result<Option<SnapshotFile>, typ::StorageError> {
        let bytes = match fs::read(self.path()) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(snapshot_error(err)),
        };
        postcard::from_bytes(&bytes).map(Some).map_err(snapshot_error)
    }

    /// Writes a snapshot unless a newer one is already stored. Blocking.
    fn write(&self, file: &SnapshotFile) -> Result<(), typ::StorageError> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.as_ref().is_some_and(|meta| meta.last_log_id > file.meta.last_log_id) {
            return Ok(());
        }
        let bytes = postcard::to_stdvec(file).map_err(snapshot_error)?;
        write_atomically(&self.dir, SNAPSHOT_FILE, &bytes).map_err(snapshot_error)?;
        *current = Some(file.meta.clone());
        Ok(())
    }

    async fn write_async(&self, file: SnapshotFile) -> Result<(), typ::StorageError> {
        let dir = self.clone();
        tokio::task::spawn_blocking(move || dir.write(&file)).await.map_err(snapshot_error)?
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    /// Loads the latest snapshot from `dir`, if any, and publishes it to `view`.
    pub fn open(dir: &Path, view: AppliedView) -> Result<Self, typ::StorageError> {
        let snapshots = SnapshotDir { dir: dir.to_owned(), current: Arc::default() };
        let mut machine = Self {
            state: RegistryState::default(),
            last_applied: None,
            membership: typ::StoredMembership::default(),
            view,
            snapshots,
        };
        if let Some(file) = machine.snapshots.read()? {
            let image: StateImage = postcard::from_bytes(&file.data).map_err(snapshot_error)?;
            machine.state = RegistryState::from_image(image);
            machine.last_applied = file.meta.last_log_id;
            machine.membership = file.meta.last_membership.clone();
            *machine.snapshots.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(file.meta);
        }
        machine.publish();
        Ok(machine)
    }

    fn publish(&self) {
        let index = self.last_applied.map_or(0, |id| id.index);
        self.view.publish(Applied { state: self.state.clone(), index });
    }
}

/// Builds a snapshot from a frozen copy of the state, concurrently with later applies.
#[derive(Debug)]
pub struct SnapshotBuilder {
    state: RegistryState,
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<typ::Snapshot, typ::StorageError> {
        let data = postcard::to_stdvec(&self.state.image()).map_err(snapshot_error)?;
        let index = self.last_applied.map_or(0, |id| id.index);
        let term = self.last_applied.map_or(0, |id| id.leader_id.term);
        let meta = typ::SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{term}-{index}-{}", unique_suffix()),
        };
        self.snapshots.write_async(SnapshotFile { meta: meta.clone(), data: data.clone() }).await?;
        tracing::info!(index, registrations = self.state.len(), bytes = data.len(), "snapshot built");
        Ok(typ::Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
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
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(changes) => {
                    changes.iter().map(|change| self.state.apply(entry.log_id.index, change)).collect()
                }
                EntryPayload::Membership(membership) => {
                    self.membership = typ::StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            outcomes.push(outcome);
        }
        self.publish();
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            state: self.state.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
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
        let image: StateImage = postcard::from_bytes(&data).map_err(sm_error)?;
        self.snapshots.write_async(SnapshotFile { meta: meta.clone(), data }).await?;
        // The snapshot replaces the whole state, including entries it no longer contains.
        self.state = RegistryState::from_image(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        tracing::info!(index = self.last_applied.map_or(0, |id| id.index), "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<typ::Snapshot>, typ::StorageError> {
        let snapshots = self.snapshots.clone();
        let file = tokio::task::spawn_blocking(move || snapshots.read()).await.map_err(snapshot_error)??;
        Ok(file.map(|file| typ::Snapshot { meta: file.meta, snapshot: Box::new(Cursor::new(file.data)) }))
    }
}
