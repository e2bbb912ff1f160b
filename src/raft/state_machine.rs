//! The Raft state machine: the registry, persisted in sled and mirrored in memory.
//!
//! The state machine has a sled database of its own (`state/`) with three kinds of trees:
//!
//! - `sm.journal`: one record per applied batch, written in one sled write as the batch is
//!   applied: the last applied log id, the membership if it changed, and the new value (or the
//!   removal) of every registration, policy, audit record and remembered answer the batch
//!   touched. Keyed by the log index of the batch's last entry.
//! - `sm.base.0` and `sm.base.1`: a compacted image of the whole state at some applied id, in
//!   chunks. `sm.meta` says which of the two is current. When the journal has grown past the size
//!   of the image, a background task writes a fresh image of a frozen copy of the state into the
//!   other tree, syncs, switches `sm.meta` to it with one synced write, and deletes the journal
//!   records the image covers.
//!
//! A restart loads the current image and applies the journal records after it (their effects,
//! not the commands), then openraft re-applies the committed entries after the last applied id.
//! Journal records are not synced one by one: the log holds every committed entry durably, and
//! sled recovers a prefix of its writes, so after a crash the state is a consistent earlier one
//! that the replay completes. A snapshot build syncs before it returns, because openraft may then
//! purge the log up to it.
//!
//! A snapshot sent to a follower is the serialized in-memory state at its applied id. Installing
//! one writes it as the image in the other base tree, syncs, switches, and clears the journal: a
//! crash leaves either the old state or the new one.
//!
//! After every applied batch the state is published to an [`AppliedView`]; readers (control API,
//! data plane) load it without locks and keep the immutable copy they loaded.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::StorageIOError;
use openraft::storage::RaftStateMachine;
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::TypeConfig;
use crate::raft::applied::Applied;
use crate::raft::applied::AppliedView;
use crate::raft::disk::Disk;
use crate::raft::disk::Syncer;
use crate::raft::format;
use crate::raft::typ;
use crate::registry::Answer;
use crate::registry::AuditRecord;
use crate::registry::ContractKey;
use crate::registry::Event;
use crate::registry::EventChange;
use crate::registry::EventId;
use crate::registry::HealthEntry;
use crate::registry::Outcome;
use crate::registry::Policy;
use crate::registry::PolicyV1;
use crate::registry::PolicyV2;
use crate::registry::Registration;
use crate::registry::RegistrationId;
use crate::registry::RegistryState;
use crate::registry::Remembered;
use crate::registry::StateImage;
use crate::registry::TokenEntry;
use crate::registry::Touched;

/// The tree of journal records.
pub const JOURNAL_TREE: &str = "sm.journal";
/// The two trees that take turns holding the compacted image.
pub const BASE_TREES: [&str; 2] = ["sm.base.0", "sm.base.1"];
/// The tree that says which of [`BASE_TREES`] is current.
pub const SM_META_TREE: &str = "sm.meta";
/// Key in [`SM_META_TREE`]: the index in [`BASE_TREES`] of the current image.
pub const CURRENT_BASE: &[u8] = b"base";

const HEAD: &[u8] = b"\x00head";
const CHUNK: u8 = b'c';
/// Journal bytes below which no compaction is started, whatever the size of the image.
const COMPACT_AT_LEAST: u64 = 16 << 20;
/// A chunk of the image holds about this many bytes.
const CHUNK_BYTES: usize = 1 << 20;

/// The first record of an image.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BaseHead {
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    audit_next_seq: u64,
    chunks: u32,
}

/// A piece of an image.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ImageChunk {
    registrations: Vec<Registration>,
    policies: Vec<(ContractKey, Policy)>,
    audit: Vec<AuditRecord>,
    answers: Vec<Answer>,
    tokens: Vec<(String, TokenEntry)>,
    health: Vec<(RegistrationId, HealthEntry)>,
}

/// The effects of one applied batch.
#[derive(Debug, Serialize, Deserialize)]
struct JournalRecord {
    last_applied: Option<typ::LogId>,
    membership: Option<typ::StoredMembership>,
    audit_next_seq: u64,
    registrations: Vec<(RegistrationId, Option<Registration>)>,
    policies: Vec<(ContractKey, Option<Policy>)>,
    audit: Vec<(u64, Option<AuditRecord>)>,
    answers: Vec<((u64, u64), Option<Answer>)>,
    tokens: Vec<(String, Option<TokenEntry>)>,
    health: Vec<(RegistrationId, Option<HealthEntry>)>,
}

/// The records of formats 1 to 3, read as format 4's one version at a time (see `format`):
/// format 1 lacks the token table, formats 1 and 2 encode policies as [`PolicyV1`], format 3 as
/// [`PolicyV2`], and no format before 4 has checks or health.
mod old {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    pub(super) struct ImageChunkV1 {
        registrations: Vec<Registration>,
        policies: Vec<(ContractKey, PolicyV1)>,
        audit: Vec<AuditRecord>,
        answers: Vec<Answer>,
    }

    /// Formats 2 (`P` = [`PolicyV1`]) and 3 (`P` = [`PolicyV2`]).
    #[derive(Deserialize)]
    pub(super) struct ImageChunk<P> {
        registrations: Vec<Registration>,
        policies: Vec<(ContractKey, P)>,
        audit: Vec<AuditRecord>,
        answers: Vec<Answer>,
        tokens: Vec<(String, TokenEntry)>,
    }

    impl From<ImageChunkV1> for ImageChunk<PolicyV1> {
        fn from(old: ImageChunkV1) -> Self {
            let ImageChunkV1 { registrations, policies, audit, answers } = old;
            Self { registrations, policies, audit, answers, tokens: Vec::new() }
        }
    }

    impl From<ImageChunk<PolicyV1>> for ImageChunk<PolicyV2> {
        fn from(old: ImageChunk<PolicyV1>) -> Self {
            let ImageChunk { registrations, policies, audit, answers, tokens } = old;
            Self { registrations, policies: upgrade(policies), audit, answers, tokens }
        }
    }

    impl From<ImageChunk<PolicyV2>> for super::ImageChunk {
        fn from(old: ImageChunk<PolicyV2>) -> Self {
            let ImageChunk { registrations, policies, audit, answers, tokens } = old;
            Self { registrations, policies: upgrade(policies), audit, answers, tokens, health: Vec::new() }
        }
    }

    #[derive(Deserialize)]
    pub(super) struct JournalRecordV1 {
        last_applied: Option<typ::LogId>,
        membership: Option<typ::StoredMembership>,
        audit_next_seq: u64,
        registrations: Vec<(RegistrationId, Option<Registration>)>,
        policies: Vec<(ContractKey, Option<PolicyV1>)>,
        audit: Vec<(u64, Option<AuditRecord>)>,
        answers: Vec<((u64, u64), Option<Answer>)>,
    }

    /// Formats 2 and 3, as [`ImageChunk`].
    #[derive(Deserialize)]
    pub(super) struct JournalRecord<P> {
        last_applied: Option<typ::LogId>,
        membership: Option<typ::StoredMembership>,
        audit_next_seq: u64,
        registrations: Vec<(RegistrationId, Option<Registration>)>,
        policies: Vec<(ContractKey, Option<P>)>,
        audit: Vec<(u64, Option<AuditRecord>)>,
        answers: Vec<((u64, u64), Option<Answer>)>,
        tokens: Vec<(String, Option<TokenEntry>)>,
    }

    impl From<JournalRecordV1> for JournalRecord<PolicyV1> {
        fn from(old: JournalRecordV1) -> Self {
            let JournalRecordV1 { last_applied, membership, audit_next_seq, registrations, policies, audit, answers } =
                old;
            Self {
                last_applied,
                membership,
                audit_next_seq,
                registrations,
                policies,
                audit,
                answers,
                tokens: Vec::new(),
            }
        }
    }

    impl From<JournalRecord<PolicyV1>> for JournalRecord<PolicyV2> {
        fn from(old: JournalRecord<PolicyV1>) -> Self {
            let JournalRecord {
                last_applied,
                membership,
                audit_next_seq,
                registrations,
                policies,
                audit,
                answers,
                tokens,
            } = old;
            let policies = policies.into_iter().map(|(key, policy)| (key, policy.map(PolicyV2::from))).collect();
            Self { last_applied, membership, audit_next_seq, registrations, policies, audit, answers, tokens }
        }
    }

    impl From<JournalRecord<PolicyV2>> for super::JournalRecord {
        fn from(old: JournalRecord<PolicyV2>) -> Self {
            let JournalRecord {
                last_applied,
                membership,
                audit_next_seq,
                registrations,
                policies,
                audit,
                answers,
                tokens,
            } = old;
            let policies = policies.into_iter().map(|(key, policy)| (key, policy.map(Policy::from))).collect();
            Self {
                last_applied,
                membership,
                audit_next_seq,
                registrations,
                policies,
                audit,
                answers,
                tokens,
                health: Vec::new(),
            }
        }
    }

    #[derive(Deserialize)]
    pub(super) struct StateImageV1 {
        registrations: Vec<Registration>,
        policies: Vec<(ContractKey, PolicyV1)>,
        audit: Vec<AuditRecord>,
        audit_next_seq: u64,
        answers: Vec<Answer>,
    }

    /// Formats 2 and 3, as [`ImageChunk`].
    #[derive(Deserialize)]
    pub(super) struct StateImage<P> {
        registrations: Vec<Registration>,
        policies: Vec<(ContractKey, P)>,
        audit: Vec<AuditRecord>,
        audit_next_seq: u64,
        answers: Vec<Answer>,
        tokens: Vec<(String, TokenEntry)>,
    }

    impl From<StateImageV1> for StateImage<PolicyV1> {
        fn from(old: StateImageV1) -> Self {
            let StateImageV1 { registrations, policies, audit, audit_next_seq, answers } = old;
            Self { registrations, policies, audit, audit_next_seq, answers, tokens: Vec::new() }
        }
    }

    impl From<StateImage<PolicyV1>> for StateImage<PolicyV2> {
        fn from(old: StateImage<PolicyV1>) -> Self {
            let StateImage { registrations, policies, audit, audit_next_seq, answers, tokens } = old;
            Self { registrations, policies: upgrade(policies), audit, audit_next_seq, answers, tokens }
        }
    }

    impl From<StateImage<PolicyV2>> for super::StateImage {
        fn from(old: StateImage<PolicyV2>) -> Self {
            let StateImage { registrations, policies, audit, audit_next_seq, answers, tokens } = old;
            let policies = upgrade(policies);
            Self { registrations, policies, audit, audit_next_seq, answers, tokens, health: Vec::new() }
        }
    }

    fn upgrade<P: Into<Q>, Q>(policies: Vec<(ContractKey, P)>) -> Vec<(ContractKey, Q)> {
        policies.into_iter().map(|(key, policy)| (key, policy.into())).collect()
    }
}

/// Reads a record of a type that changed in formats 2, 3 and 4 (see [`old`]).
fn decode_state<V1, V2, V3, T>(bytes: &[u8], place: impl std::fmt::Display) -> Result<T, format::FormatError>
where
    V1: DeserializeOwned + Into<V2>,
    V2: DeserializeOwned + Into<V3>,
    V3: DeserializeOwned + Into<T>,
    T: DeserializeOwned,
{
    format::decode_upgrading::<V1, V2, V3, T>(bytes, place)
}

/// The state machine; openraft owns it, the node keeps an [`AppliedView`] of it.
#[derive(Debug)]
pub struct StateMachine {
    state: RegistryState,
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    view: AppliedView,
    store: SmStore,
    /// Journal bytes written since the current image, and the size of that image.
    journal_bytes: u64,
    base_bytes: u64,
    /// A compaction is running.
    compacting: Arc<std::sync::atomic::AtomicBool>,
    /// Where new audit records also go (`--audit-log`), if anywhere.
    audit_sink: Option<tokio::sync::mpsc::Sender<AuditRecord>>,
    /// Told of every snapshot handed out to be sent, so the log after it is kept.
    retention: Option<crate::raft::LogRetention>,
}

/// The sled side of the state machine. Cheap to clone.
#[derive(Debug, Clone)]
struct SmStore {
    meta: sled::Tree,
    bases: [sled::Tree; 2],
    journal: sled::Tree,
    syncer: Syncer,
    place: Arc<str>,
    /// The current image (index in `bases`) and the applied id it holds. Writers of an image
    /// (compaction, snapshot install) hold this lock from start to switch.
    current: Arc<Mutex<(usize, Option<typ::LogId>)>>,
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

fn chunk_key(n: u32) -> [u8; 5] {
    let [a, b, c, d] = n.to_be_bytes();
    [CHUNK, a, b, c, d]
}

/// Rough encoded size of a registration, to cut chunks.
fn registration_bytes(registration: &Registration) -> usize {
    200 + registration.address.len() + registration.metadata.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
}

impl SmStore {
    fn open(disk: &Disk) -> Result<Self, typ::StorageError> {
        let tree = |name: &str| disk.state.open_tree(name).map_err(read_error);
        let meta = tree(SM_META_TREE)?;
        let place: Arc<str> = disk.path.join(crate::raft::disk::STATE_DIR).display().to_string().into();
        let current = match meta.get(CURRENT_BASE).map_err(read_error)? {
            Some(bytes) => {
                let current: u8 =
                    format::decode(&bytes, format_args!("{place} tree {SM_META_TREE} key base")).map_err(read_error)?;
                usize::from(current.min(1))
            }
            None => 0,
        };
        Ok(Self {
            meta,
            bases: [tree(BASE_TREES[0])?, tree(BASE_TREES[1])?],
            journal: tree(JOURNAL_TREE)?,
            syncer: disk.syncer.clone(),
            place,
            current: Arc::new(Mutex::new((current, None))),
        })
    }

    fn decode<T: DeserializeOwned>(&self, tree: &str, key: &[u8], bytes: &[u8]) -> Result<T, typ::StorageError> {
        format::decode(bytes, format_args!("{} tree {tree} key {key:02x?}", self.place)).map_err(read_error)
    }

    /// The same, for a record whose type changed in formats 2 to 4.
    fn decode_upgrading<V1, V2, V3, T>(&self, tree: &str, key: &[u8], bytes: &[u8]) -> Result<T, typ::StorageError>
    where
        V1: DeserializeOwned + Into<V2>,
        V2: DeserializeOwned + Into<V3>,
        V3: DeserializeOwned + Into<T>,
        T: DeserializeOwned,
    {
        decode_state::<V1, V2, V3, T>(bytes, format_args!("{} tree {tree} key {key:02x?}", self.place))
            .map_err(read_error)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<typ::LogId>)> {
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the current image and the journal after it. Blocking. Returns the state, its
    /// applied id and membership, and the sizes of the image and the journal.
    fn load(&self) -> Result<(StateImage, Option<typ::LogId>, typ::StoredMembership, u64, u64), typ::StorageError> {
        let mut current = self.lock();
        let name = BASE_TREES[current.0];
        let base = &self.bases[current.0];
        let mut registrations = BTreeMap::new();
        let mut policies = BTreeMap::new();
        let mut audit = BTreeMap::new();
        let mut answers = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        let mut health = BTreeMap::new();
        let (mut last_applied, mut membership, mut audit_next_seq) = (None, typ::StoredMembership::default(), 0);
        let mut base_bytes = 0;
        if let Some(bytes) = base.get(HEAD).map_err(read_error)? {
            let head: BaseHead = self.decode(name, HEAD, &bytes)?;
            (last_applied, membership, audit_next_seq) = (head.last_applied, head.membership, head.audit_next_seq);
            for n in 0..head.chunks {
                let key = chunk_key(n);
                let bytes = base.get(key).map_err(read_error)?.ok_or_else(|| {
                    read_error(format::FormatError::Corrupt {
                        place: format!("{} tree {name}", self.place),
                        cause: format!("chunk {n} of {} is missing", head.chunks),
                    })
                })?;
                base_bytes += bytes.len() as u64;
                let chunk: ImageChunk = self
                    .decode_upgrading::<old::ImageChunkV1, old::ImageChunk<PolicyV1>, old::ImageChunk<PolicyV2>, _>(
                        name, &key, &bytes,
                    )?;
                registrations.extend(chunk.registrations.into_iter().map(|r| (r.id, r)));
                policies.extend(chunk.policies);
                audit.extend(chunk.audit.into_iter().map(|r| (r.seq, r)));
                answers.extend(chunk.answers.into_iter().map(|a| (a.request, a)));
                tokens.extend(chunk.tokens);
                health.extend(chunk.health);
            }
        }
        current.1 = last_applied;
        let after = last_applied.map_or(0, |id| id.index + 1);
        let mut journal_bytes = 0;
        for item in self.journal.range(after.to_be_bytes()..) {
            let (key, bytes) = item.map_err(read_error)?;
            journal_bytes += bytes.len() as u64;
            let record: JournalRecord = self.decode_upgrading::<
                old::JournalRecordV1,
                old::JournalRecord<PolicyV1>,
                old::JournalRecord<PolicyV2>,
                _,
            >(JOURNAL_TREE, &key, &bytes)?;
            last_applied = record.last_applied;
            audit_next_seq = record.audit_next_seq;
            if let Some(changed) = record.membership {
                membership = changed;
            }
            for (id, value) in record.registrations {
                put_or_remove(&mut registrations, id, value);
            }
            for (key, value) in record.policies {
                put_or_remove(&mut policies, key, value);
            }
            for (seq, value) in record.audit {
                put_or_remove(&mut audit, seq, value);
            }
            for (request, value) in record.answers {
                put_or_remove(&mut answers, request, value);
            }
            for (name, value) in record.tokens {
                put_or_remove(&mut tokens, name, value);
            }
            for (id, value) in record.health {
                put_or_remove(&mut health, id, value);
            }
        }
        let mut answers: Vec<Answer> = answers.into_values().collect();
        // Remembered answers are kept in the order they were given.
        answers.sort_by_key(|answer| (answer.at_ms, answer.request));
        let image = StateImage {
            registrations: registrations.into_values().collect(),
            policies: policies.into_iter().collect(),
            audit: audit.into_values().collect(),
            audit_next_seq,
            answers,
            tokens: tokens.into_iter().collect(),
            health: health.into_iter().collect(),
        };
        Ok((image, last_applied, membership, base_bytes, journal_bytes))
    }

    /// Writes `state` as the image in the other base tree, syncs, and makes it the current one;
    /// then forgets the journal records it covers (all of them with `clear_journal`). Does
    /// nothing if the current image is already as recent. Blocking. Returns the image's size.
    fn write_base(
        &self,
        state: &RegistryState,
        last_applied: Option<typ::LogId>,
        membership: &typ::StoredMembership,
        clear_journal: bool,
    ) -> Result<Option<u64>, typ::StorageError> {
        let mut current = self.lock();
        if !clear_journal && current.1 >= last_applied {
            return Ok(None);
        }
        let next = 1 - current.0;
        let tree = &self.bases[next];
        tree.clear().map_err(write_error)?;
        let mut chunk = ImageChunk::default();
        let mut chunk_bytes = 0;
        let mut chunks = 0u32;
        let mut written = 0u64;
        let mut emit =
            |chunk: &mut ImageChunk, chunk_bytes: &mut usize, force: bool| -> Result<(), typ::StorageError> {
                if *chunk_bytes >= CHUNK_BYTES || (force && *chunk_bytes > 0) {
                    let bytes = format::encode(&*chunk).map_err(write_error)?;
                    written += bytes.len() as u64;
                    tree.insert(chunk_key(chunks), bytes).map_err(write_error)?;
                    chunks += 1;
                    (*chunk, *chunk_bytes) = (ImageChunk::default(), 0);
                }
                Ok(())
            };
        for registration in state.iter() {
            chunk_bytes += registration_bytes(registration);
            chunk.registrations.push(Registration::clone(registration));
            emit(&mut chunk, &mut chunk_bytes, false)?;
        }
        for (key, policy) in state.policies() {
            chunk_bytes += 100 + key.as_str().len();
            chunk.policies.push((key.clone(), policy.clone()));
            emit(&mut chunk, &mut chunk_bytes, false)?;
        }
        for record in state.audit() {
            chunk_bytes += 200;
            chunk.audit.push(record.clone());
            emit(&mut chunk, &mut chunk_bytes, false)?;
        }
        for answer in state.answers() {
            chunk_bytes += match &answer.outcome {
                Remembered::Outcome(Outcome::Unregistered(registration) | Outcome::Drained(registration)) => {
                    registration_bytes(registration)
                }
                _ => 100,
            };
            chunk.answers.push(answer.clone());
            emit(&mut chunk, &mut chunk_bytes, false)?;
        }
        for (name, entry) in state.tokens() {
            chunk_bytes += 200;
            chunk.tokens.push((name.clone(), entry.clone()));
            emit(&mut chunk, &mut chunk_bytes, false)?;
        }
        for (id, entry) in state.health_entries() {
            chunk_bytes += 100 + entry.health.as_ref().map_or(0, |h| h.output.len());
            chunk.health.push((*id, entry.clone()));
            emit(&mut chunk, &mut chunk_bytes, false)?;
        }
        emit(&mut chunk, &mut chunk_bytes, true)?;
        let head =
            BaseHead { last_applied, membership: membership.clone(), audit_next_seq: state.audit_next_seq(), chunks };
        tree.insert(HEAD, format::encode(&head).map_err(write_error)?).map_err(write_error)?;
        self.syncer.sync_state_blocking().map_err(write_error)?;
        self.meta.insert(CURRENT_BASE, format::encode(&(next as u8)).map_err(write_error)?).map_err(write_error)?;
        self.syncer.sync_state_blocking().map_err(write_error)?;
        let old = std::mem::replace(&mut *current, (next, last_applied)).0;
        drop(current);
        // What follows only frees space: the switch above already made it all unreachable.
        self.bases[old].clear().map_err(write_error)?;
        if clear_journal {
            self.journal.clear().map_err(write_error)?;
        } else {
            let upto = last_applied.map_or(0, |id| id.index);
            let mut batch = sled::Batch::default();
            for item in self.journal.range(..=upto.to_be_bytes()) {
                batch.remove(item.map_err(write_error)?.0);
            }
            self.journal.apply_batch(batch).map_err(write_error)?;
        }
        Ok(Some(written))
    }
}

fn put_or_remove<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(value) => map.insert(key, value),
        None => map.remove(&key),
    };
}

/// Replaces whatever state machine a data directory holds with `state` (migrations). Blocking;
/// syncs before it returns.
pub fn reset(
    disk: &Disk,
    state: &RegistryState,
    last_applied: Option<typ::LogId>,
    membership: &typ::StoredMembership,
) -> Result<(), typ::StorageError> {
    SmStore::open(disk)?.write_base(state, last_applied, membership, true).map(drop)
}

impl StateMachine {
    /// Opens the state machine of a data directory and publishes what it holds to `view`.
    /// Blocking.
    pub fn open(disk: &Disk, view: AppliedView) -> Result<Self, typ::StorageError> {
        let store = SmStore::open(disk)?;
        let (image, last_applied, membership, base_bytes, journal_bytes) = store.load()?;
        view.events().restart_after(last_applied.map(|id| id.index));
        let machine = Self {
            state: RegistryState::from_image(image),
            last_applied,
            membership,
            view,
            store,
            journal_bytes,
            base_bytes,
            compacting: Arc::default(),
            audit_sink: None,
            retention: None,
        };
        machine.publish();
        Ok(machine)
    }

    fn publish(&self) {
        let index = self.last_applied.map_or(0, |id| id.index);
        self.view.publish(Applied { state: self.state.clone(), index });
    }

    /// Sends every audit record applied from now on to `sink` as well.
    pub fn set_audit_sink(&mut self, sink: tokio::sync::mpsc::Sender<AuditRecord>) {
        self.audit_sink = Some(sink);
    }

    /// Tells `retention` of every snapshot handed out to be sent.
    pub fn set_retention(&mut self, retention: crate::raft::LogRetention) {
        self.retention = Some(retention);
    }

    /// Passes the audit records numbered `from..` to the sink. It never blocks applying: when the
    /// sink falls behind by a whole buffer, records are dropped from it (never from the trail)
    /// and counted.
    fn to_audit_sink(&self, from: u64) {
        let Some(sink) = &self.audit_sink else { return };
        for seq in from..self.state.audit_next_seq() {
            if let Some(record) = self.state.audit_record(seq)
                && sink.try_send(record.clone()).is_err()
            {
                crate::metrics::METRICS.audit_sink_dropped.inc();
            }
        }
    }

    /// Writes the journal record of the batch just applied: one sled write.
    fn journal(&mut self, touched: &Touched, membership_changed: bool) -> Result<(), typ::StorageError> {
        let state = &self.state;
        let record = JournalRecord {
            last_applied: self.last_applied,
            membership: membership_changed.then(|| self.membership.clone()),
            audit_next_seq: state.audit_next_seq(),
            registrations: touched
                .registrations
                .iter()
                .map(|id| (*id, state.get(id).map(|r| Registration::clone(r))))
                .collect(),
            policies: touched.policies.iter().map(|key| (key.clone(), state.policy(key).cloned())).collect(),
            audit: touched.audit.iter().map(|seq| (*seq, state.audit_record(*seq).cloned())).collect(),
            answers: touched.answers.iter().map(|request| (*request, state.answer(request).cloned())).collect(),
            tokens: touched.tokens.iter().map(|name| (name.clone(), state.tokens().get(name).cloned())).collect(),
            health: touched.registrations.iter().map(|id| (*id, state.health(id).cloned())).collect(),
        };
        let bytes = format::encode(&record).map_err(write_error)?;
        self.journal_bytes += bytes.len() as u64;
        let key = self.last_applied.map_or(0, |id| id.index).to_be_bytes();
        self.store.journal.insert(key, bytes).map_err(write_error)?;
        Ok(())
    }

    /// Starts a compaction in the background when the journal has outgrown the image.
    fn maybe_compact(&mut self) {
        use std::sync::atomic::Ordering;
        if self.journal_bytes < COMPACT_AT_LEAST.max(self.base_bytes) || self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, state, last_applied, membership) =
            (self.store.clone(), self.state.clone(), self.last_applied, self.membership.clone());
        let compacting = self.compacting.clone();
        self.journal_bytes = 0;
        tokio::task::spawn_blocking(move || {
            match store.write_base(&state, last_applied, &membership, false) {
                Ok(written) => {
                    tracing::debug!(bytes = ?written, index = ?last_applied.map(|l| l.index), "state compacted")
                }
                Err(err) => tracing::warn!(error = %err, "compacting the state failed; the journal keeps everything"),
            }
            compacting.store(false, Ordering::Release);
        });
    }

    /// Compacts now, in the calling thread (tests).
    #[cfg(test)]
    pub fn compact_now(&mut self) {
        let written = self.store.write_base(&self.state, self.last_applied, &self.membership, false).unwrap();
        self.base_bytes = written.unwrap_or(self.base_bytes);
        self.journal_bytes = 0;
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
        // openraft may purge the log up to this snapshot once it returns: the journal records
        // that cover it must be on disk first.
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
        let first_audit = self.state.audit_next_seq();
        let mut events = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            // The entry's events, numbered in the order its changes made them.
            let mut made = Vec::new();
            let outcome = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(changes) => {
                    let mut outcomes = Vec::with_capacity(changes.len());
                    for change in &changes {
                        outcomes.push(self.state.apply(index, change));
                        made.extend(self.state.take_events().into_iter().map(|made| (Some(change.at_ms), made)));
                    }
                    outcomes
                }
                EntryPayload::Membership(membership) => {
                    let change = EventChange::MembershipChanged {
                        voters: membership.voter_ids().collect(),
                        learners: membership.learner_ids().collect(),
                    };
                    made.push((None, change));
                    self.membership = typ::StoredMembership::new(Some(entry.log_id), membership);
                    membership_changed = true;
                    Vec::new()
                }
            };
            outcomes.push(outcome);
            events.extend(made.into_iter().zip(0..).map(|((at_ms, change), part)| Event {
                id: EventId { index, part },
                at_ms,
                change,
            }));
        }
        let touched = self.state.take_touched();
        self.journal(&touched, membership_changed)?;
        self.to_audit_sink(first_audit);
        self.view.events().push(events);
        self.publish();
        self.maybe_compact();
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
            decode_state::<old::StateImageV1, old::StateImage<PolicyV1>, old::StateImage<PolicyV2>, _>(
                &data,
                format_args!("snapshot {}", meta.snapshot_id),
            )
            .map_err(write_error)?;
        drop(data);
        let state = RegistryState::from_image(image);
        let (last_applied, membership) = (meta.last_log_id, meta.last_membership.clone());
        let (store, frozen, frozen_membership) = (self.store.clone(), state.clone(), membership.clone());
        let written =
            tokio::task::spawn_blocking(move || store.write_base(&frozen, last_applied, &frozen_membership, true))
                .await
                .map_err(write_error)??;
        // The snapshot replaces the whole state, including entries it no longer contains.
        self.state = state;
        self.last_applied = last_applied;
        self.membership = membership;
        self.base_bytes = written.unwrap_or(0);
        self.journal_bytes = 0;
        self.view.events().restart_after(last_applied.map(|id| id.index));
        self.publish();
        tracing::info!(index = self.last_applied.map_or(0, |id| id.index), "snapshot installed");
        Ok(())
    }

    /// The state as it is now. openraft asks for it to send it to a follower (and once at
    /// start): the log after it is kept for the follower (see `LogRetention`).
    async fn get_current_snapshot(&mut self) -> Result<Option<typ::Snapshot>, typ::StorageError> {
        let Some(last_applied) = self.last_applied else { return Ok(None) };
        if let Some(retention) = &self.retention {
            retention.sending(last_applied.index, std::time::Instant::now());
        }
        Self::snapshot_of(&self.state, self.last_applied, &self.membership).map(Some)
    }
}
