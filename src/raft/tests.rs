//! openraft's storage conformance suite against the sled log store and the state machine, plus
//! the durability checks the suite does not make: reopening a store after writes.

use std::collections::BTreeMap;

use openraft::Entry;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use openraft::RaftSnapshotBuilder;
use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::storage::RaftStateMachine;
use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::testing::log_id;
use tempfile::TempDir;

use super::*;
use crate::registry::Change;
use crate::registry::Command;
use crate::registry::Origin;
use crate::registry::RegistrationRequest;
use crate::registry::RegistrationSpec;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), typ::StorageError> {
        let dir = TempDir::new().expect("temp dir");
        let (log, machine) = open(&dir);
        Ok((dir, log, machine))
    }
}

fn open(dir: &TempDir) -> (LogStore, StateMachine) {
    let db = open_db(dir.path(), 16 << 20).expect("sled opens");
    let log = LogStore::new(db).expect("trees open");
    let machine = StateMachine::open(dir.path(), AppliedView::default()).expect("state machine opens");
    (log, machine)
}

#[test]
fn conformance_suite() {
    Suite::test_all(SledBuilder).expect("the sled store passes openraft's storage suite");
}

fn register_entry(index: u64, address: &str) -> typ::Entry {
    let spec = RegistrationSpec::new(RegistrationRequest {
        address: address.into(),
        contract_name: "C".into(),
        contract_namespace: "urn:test".into(),
        ttl_ms: None,
        weight: None,
        metadata: BTreeMap::new(),
    })
    .unwrap();
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(vec![Change {
            at_ms: 0,
            origin: Origin::default(),
            command: Command::Register(spec),
        }]),
    }
}

#[tokio::test]
async fn vote_log_and_snapshot_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let vote = typ::Vote::new_committed(3, 2);
    {
        let (mut log, mut machine) = open(&dir);
        log.save_vote(&vote).await.unwrap();
        let entries: Vec<_> = (1..=10).map(|i| register_entry(i, &format!("http://h{i}/"))).collect();
        log.blocking_append(entries.clone()).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 10))).await.unwrap();
        machine.apply(entries[..6].to_vec()).await.unwrap();
        machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
        machine.apply(entries[6..].to_vec()).await.unwrap();
        log.purge(log_id(1, 1, 4)).await.unwrap();
    }
    let view = AppliedView::default();
    let db = open_db(dir.path(), 16 << 20).unwrap();
    let mut log = LogStore::new(db).unwrap();
    let mut machine = StateMachine::open(dir.path(), view.clone()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 10)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
    assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));
    assert_eq!(log.try_get_log_entries(5..11).await.unwrap().len(), 6);
    // The state machine comes back at its snapshot; openraft replays the rest from the log.
    let (applied, _) = machine.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 1, 6)));
    assert_eq!(view.load().state.len(), 6);
    assert_eq!(view.load().index, 6);
}

#[tokio::test]
async fn installed_snapshot_replaces_the_whole_state() {
    let source_dir = TempDir::new().unwrap();
    let (_, mut source) = open(&source_dir);
    source.apply(vec![register_entry(1, "http://a/")]).await.unwrap();
    let snapshot = source.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let target_dir = TempDir::new().unwrap();
    let view = AppliedView::default();
    let mut target = StateMachine::open(target_dir.path(), view.clone()).unwrap();
    target.apply((2..=4).map(|i| register_entry(i, &format!("http://stale{i}/"))).collect::<Vec<_>>()).await.unwrap();
    target.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    let addresses: Vec<_> = view.load().state.iter().map(|r| r.address.clone()).collect();
    assert_eq!(addresses, ["http://a/"], "entries absent from the snapshot are gone");
    drop(target);

    let view = AppliedView::default();
    let _reopened = StateMachine::open(target_dir.path(), view.clone()).unwrap();
    assert_eq!(view.load().state.len(), 1, "the installed snapshot is the one loaded on restart");
}

#[test]
fn a_node_meta_survives_reopen() {
    let dir = TempDir::new().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (log, _) = open(&dir);
        assert_eq!(log.node_meta().unwrap(), None);
        log.save_node_meta(NodeMeta { node_id: 7, admitted: true }).await.unwrap();
    });
    let (log, _) = open(&dir);
    assert_eq!(log.node_meta().unwrap(), Some(NodeMeta { node_id: 7, admitted: true }));
}
