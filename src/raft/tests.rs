//! openraft's storage conformance suite against the sled log store and state machine, plus the
//! checks the suite does not make: reopening after writes, identities, format versions, and the
//! migration of a format-0 directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use std::time::Instant;

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
        let path = dir.path().to_owned();
        let storage = tokio::task::spawn_blocking(move || open(&path, AppliedView::default())).await.unwrap();
        Ok((dir, storage.log_store, storage.state_machine))
    }
}

/// Runs `open` again while it fails for sled's lock, which a store dropped just before may hold
/// for a moment (its sync thread ends on its own); for at most 10 s. Returns the first other
/// outcome.
fn unlocked<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Err(err) if err.to_string().contains("lock") => {
                assert!(Instant::now() < deadline, "still locked after 10 s: {err}");
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Opens node 1's storage in `dir`.
fn open(dir: &Path, view: AppliedView) -> Storage {
    unlocked(|| Storage::open(dir, 1, 16 << 20, view.clone())).unwrap_or_else(|err| panic!("storage opens: {err}"))
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
        check: None,
    })
    .unwrap();
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(vec![Change {
            at_ms: 0,
            origin: Origin::default(),
            command: Command::register(spec),
        }]),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn vote_log_and_applied_state_survive_reopen() {
    let dir = TempDir::new().unwrap();
    let vote = typ::Vote::new_committed(3, 2);
    let identity = {
        let Storage { identity, log_store: mut log, state_machine: mut machine } =
            open(dir.path(), AppliedView::default());
        runtime().block_on(async {
            log.save_vote(&vote).await.unwrap();
            let entries: Vec<_> = (1..=10).map(|i| register_entry(i, &format!("http://h{i}/"))).collect();
            log.blocking_append(entries.clone()).await.unwrap();
            log.save_committed(Some(log_id(1, 1, 10))).await.unwrap();
            machine.apply(entries[..6].to_vec()).await.unwrap();
            machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
            machine.apply(entries[6..8].to_vec()).await.unwrap();
            log.purge(log_id(1, 1, 4)).await.unwrap();
        });
        identity
    };
    let view = AppliedView::default();
    let Storage { identity: reopened, log_store: mut log, state_machine: mut machine } = open(dir.path(), view.clone());
    assert_eq!(reopened, identity, "the identity is kept");
    runtime().block_on(async {
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 10)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 4)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 10)));
        assert_eq!(log.try_get_log_entries(5..11).await.unwrap().len(), 6);
        // The state machine comes back where it was; openraft replays the rest from the log.
        let (applied, _) = machine.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 1, 8)));
    });
    assert_eq!(view.load().state.len(), 8);
    assert_eq!(view.load().index, 8);
}

#[test]
fn the_state_survives_reopen_across_compactions() {
    let dir = TempDir::new().unwrap();
    let unregister = |index: u64, address: &str| {
        let id = RegistrationSpec::new(RegistrationRequest {
            address: address.into(),
            contract_name: "C".into(),
            contract_namespace: "urn:test".into(),
            ttl_ms: None,
            weight: None,
            metadata: BTreeMap::new(),
            check: None,
        })
        .unwrap()
        .id;
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(vec![Change {
                at_ms: 0,
                origin: Origin::default(),
                command: Command::Unregister(id),
            }]),
        }
    };
    let expected = {
        let view = AppliedView::default();
        let mut machine = open(dir.path(), view.clone()).state_machine;
        let runtime = runtime();
        let registrations = |range: std::ops::RangeInclusive<u64>| {
            range.map(|i| register_entry(i, &format!("http://h{i}/"))).collect::<Vec<_>>()
        };
        runtime.block_on(machine.apply(registrations(1..=20))).unwrap();
        machine.compact_now();
        // After the image: removals, additions, and a second image in the other tree.
        runtime.block_on(machine.apply(vec![unregister(21, "http://h1/"), unregister(22, "http://h2/")])).unwrap();
        runtime.block_on(machine.apply(registrations(23..=30))).unwrap();
        machine.compact_now();
        runtime.block_on(machine.apply(vec![unregister(31, "http://h3/"), register_entry(32, "http://h32/")])).unwrap();
        // Tokens: one in the image (created before the next compaction), one change in the journal.
        runtime.block_on(machine.apply(vec![token_entry(33, Command::CreateToken(token_def("a")))])).unwrap();
        machine.compact_now();
        let changes = vec![
            token_entry(34, Command::CreateToken(token_def("b"))),
            token_entry(35, Command::RevokeToken("a".into())),
        ];
        runtime.block_on(machine.apply(changes)).unwrap();
        let expected = view.load().state.to_image();
        assert_eq!(expected.registrations.len(), 20 - 3 + 8 + 1);
        assert_eq!(expected.tokens.len(), 2);
        expected
    };
    let view = AppliedView::default();
    let mut machine = open(dir.path(), view.clone()).state_machine;
    assert_eq!(view.load().state.to_image(), expected, "image plus journal give back the same state");
    assert_eq!(view.load().index, 35);
    runtime().block_on(async {
        assert_eq!(machine.applied_state().await.unwrap().0, Some(log_id(1, 1, 35)));
    });
}

fn token_def(name: &str) -> crate::registry::TokenDef {
    crate::registry::TokenDef {
        name: name.into(),
        sha256: [9; 32],
        scopes: vec!["read".into()],
        max_registrations: None,
    }
}

fn token_entry(index: u64, command: Command) -> typ::Entry {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(vec![Change { at_ms: 0, origin: Origin::default(), command }]),
    }
}

#[test]
fn an_installed_snapshot_replaces_the_whole_state_and_survives_reopen() {
    let source_dir = TempDir::new().unwrap();
    let target_dir = TempDir::new().unwrap();
    let view = AppliedView::default();
    {
        let mut source = open(source_dir.path(), AppliedView::default()).state_machine;
        let mut target = open(target_dir.path(), view.clone()).state_machine;
        runtime().block_on(async {
            source.apply(vec![register_entry(1, "http://a/")]).await.unwrap();
            let snapshot = source.get_snapshot_builder().await.build_snapshot().await.unwrap();
            target
                .apply((2..=4).map(|i| register_entry(i, &format!("http://stale{i}/"))).collect::<Vec<_>>())
                .await
                .unwrap();
            target.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
            // And the state goes on from the snapshot.
            target.apply(vec![register_entry(5, "http://b/")]).await.unwrap();
        });
        let addresses: Vec<_> = view.load().state.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(addresses.len(), 2);
        assert!(!addresses.iter().any(|a| a.contains("stale")), "entries absent from the snapshot are gone");
    }
    let reopened = AppliedView::default();
    let _storage = open(target_dir.path(), reopened.clone());
    let mut addresses: Vec<_> = reopened.load().state.iter().map(|r| r.address.to_string()).collect();
    addresses.sort();
    assert_eq!(addresses, ["http://a/", "http://b/"], "the installed state is the one loaded on restart");
    assert_eq!(reopened.load().index, 5);
}

/// A leader of the release before sends snapshots of format 2 (peer protocol 1, which this
/// build still accepts): the image installs, its policies read with `rewrite_to` on.
#[test]
fn a_snapshot_of_format_2_installs_with_its_policies_rewriting_to() {
    use crate::registry::ContractKey;
    use crate::registry::Policy;
    use crate::registry::PolicyKind;
    use crate::registry::PolicyV1;
    use crate::registry::StateImage;

    let (source_dir, target_dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let view = AppliedView::default();
    let mut source = open(source_dir.path(), AppliedView::default()).state_machine;
    let mut target = open(target_dir.path(), view.clone()).state_machine;
    let key = ContractKey::new("urn:x", "C");
    let weighted = PolicyV1 { kind: PolicyKind::Weighted, ..PolicyV1::default() };
    runtime().block_on(async {
        source.apply(vec![register_entry(1, "http://a/")]).await.unwrap();
        source.apply(vec![token_entry(2, Command::SetPolicyV1(key.clone(), weighted.clone()))]).await.unwrap();
        let snapshot = source.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // The same image as the release before encoded it: format 2, policies without rewrite_to.
        let image: StateImage = format::decode(snapshot.snapshot.get_ref(), "snapshot").unwrap();
        let policies: Vec<(ContractKey, PolicyV1)> =
            image.policies.into_iter().map(|(key, policy)| (key, PolicyV1::try_from(policy).unwrap())).collect();
        let fields = (image.registrations, policies, image.audit, image.audit_next_seq, image.answers, image.tokens);
        let v2 = postcard::to_extend(&fields, vec![2u8]).unwrap();
        target.install_snapshot(&snapshot.meta, Box::new(Cursor::new(v2))).await.unwrap();
    });
    let state = &view.load().state;
    assert_eq!(state.iter().map(|r| r.address.to_string()).collect::<Vec<_>>(), ["http://a/"]);
    assert_eq!(state.policy(&key), Some(&Policy::from(weighted)));
    assert!(state.policy(&key).unwrap().rewrite_to);
}

#[test]
fn a_directory_keeps_its_node_and_refuses_another() {
    let dir = TempDir::new().unwrap();
    let first = open(dir.path(), AppliedView::default()).identity;
    assert_eq!(first.node_id, 1);
    assert!(!first.migrated);
    let Err(err) = unlocked(|| Storage::open(dir.path(), 2, 16 << 20, AppliedView::default())) else {
        panic!("a directory of node 1 opened as node 2")
    };
    assert!(matches!(err, StorageOpenError::WrongNode { found: 1, expected: 2, .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
    let other = TempDir::new().unwrap();
    assert_ne!(open(other.path(), AppliedView::default()).identity.incarnation, first.incarnation);
}

#[test]
fn an_unknown_format_is_refused_with_one_line_naming_the_place() {
    let dir = TempDir::new().unwrap();
    drop(open(dir.path(), AppliedView::default()));
    {
        let disk = unlocked(|| Disk::open(dir.path(), 1 << 20)).unwrap();
        disk.log.open_tree(log_store::META_TREE).unwrap().insert(FORMAT, vec![7]).unwrap();
        disk.syncer.sync_blocking().unwrap();
    }
    let Err(err) = unlocked(|| Storage::open(dir.path(), 1, 16 << 20, AppliedView::default())) else {
        panic!("format 7 opened")
    };
    let err = err.to_string();
    assert!(err.contains("format version 7") && err.contains("raft"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

/// Copies a committed fixture directory into a temp dir.
pub fn fixture(name: &str) -> TempDir {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let to = TempDir::new().unwrap();
    copy_dir(&from, to.path());
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_format_0_directory_is_migrated_in_place() {
    let dir = fixture("data-v0");
    let data = dir.path().join("node1");
    let view = AppliedView::default();
    let Storage { identity, log_store: mut log, state_machine: mut machine } = open(&data, view.clone());
    assert!(identity.migrated, "format-0 members are this node");
    assert!(!data.join("snapshot.bin").exists(), "the old snapshot file is gone");
    // The snapshot (index 29) is the state; the log holds what came after it.
    let applied = view.load();
    assert_eq!(applied.index, 29);
    assert_eq!(applied.state.len(), 22);
    runtime().block_on(async {
        let (last_applied, membership) = machine.applied_state().await.unwrap();
        assert_eq!(last_applied.map(|l| l.index), Some(29));
        let node = membership.membership().get_node(&1).unwrap();
        assert_eq!((node.addr.as_str(), node.incarnation), ("127.0.0.1:7102", None));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(31));
        let entries = log.try_get_log_entries(30..32).await.unwrap();
        assert_eq!(entries.len(), 2);
        assert!(log.read_vote().await.unwrap().is_some());
    });
    drop((log, machine));
    // Opening again reads format 1, and keeps the identity it was given.
    assert_eq!(open(&data, AppliedView::default()).identity, identity);
}

#[test]
fn a_format_1_directory_opens_and_is_marked_format_4() {
    let dir = fixture("data-v1");
    let data = dir.path().join("node1");
    let view = AppliedView::default();
    let storage = open(&data, view.clone());
    assert_eq!(storage.identity.node_id, 1);
    let before = view.load().state.to_image();
    assert!(!before.registrations.is_empty(), "the fixture's registrations are there");
    // New records (format 4) go next to the old ones; everything reads back after a reopen.
    let Storage { log_store: _log, state_machine: mut machine, .. } = storage;
    runtime().block_on(machine.apply(vec![token_entry(1_000, Command::CreateToken(token_def("new")))])).unwrap();
    drop((machine, _log));
    let reopened = AppliedView::default();
    let storage = open(&data, reopened.clone());
    let after = reopened.load().state.to_image();
    assert_eq!(after.registrations, before.registrations);
    assert_eq!(after.tokens.len(), 1);
    drop(storage);
    let disk = unlocked(|| Disk::open(&data, 1 << 20)).unwrap();
    let format = disk.log.open_tree(log_store::META_TREE).unwrap().get(FORMAT).unwrap().unwrap();
    assert_eq!(format.as_ref(), [4], "the directory is marked with the format it now holds");
}

/// Opens a fixture of format 2 or 3 and checks what it holds: its registrations, its tokens and
/// its contract's policy; returns the directory's format after the open.
fn opens_the_fixture(name: &str, rewrite_to: bool) -> u8 {
    let dir = fixture(name);
    let data = dir.path().join("node1");
    let view = AppliedView::default();
    let storage = open(&data, view.clone());
    assert_eq!(storage.identity.node_id, 1);
    let state = &view.load().state;
    assert_eq!(state.len(), 23, "the fixture's registrations are there");
    assert!(state.tokens().get("fixture-reader").and_then(|t| t.def()).is_some(), "and its token");
    assert!(matches!(state.tokens().get("fixture-revoked"), Some(crate::registry::TokenEntry::Revoked { .. })));
    let key = crate::registry::ContractKey::new("http://fixture.example/", "ICalc");
    let expected =
        crate::registry::Policy { kind: crate::registry::PolicyKind::Weighted, rewrite_to, ..Default::default() };
    assert_eq!(state.policy(&key), Some(&expected), "and its policy");
    drop(storage);
    let disk = unlocked(|| Disk::open(&data, 1 << 20)).unwrap();
    disk.log.open_tree(log_store::META_TREE).unwrap().get(FORMAT).unwrap().unwrap()[0]
}

#[test]
fn a_format_2_directory_opens_with_its_policy_rewriting_to_and_is_marked_format_4() {
    assert_eq!(opens_the_fixture("data-v2", true), 4);
}

#[test]
fn a_format_3_directory_opens_with_its_policy_keeping_to_and_is_marked_format_4() {
    assert_eq!(opens_the_fixture("data-v3", false), 4);
}

/// The Raft RPCs' messages (openraft's types, in this node's type configuration) keep their
/// postcard encoding: the peer protocol's golden bytes for the RPCs declared here (the cluster
/// RPCs' are in the proto crate's tests).
#[test]
fn raft_rpc_messages_keep_their_encoding() {
    fn hex<T: serde::Serialize>(value: &T) -> String {
        postcard::to_stdvec(value).unwrap().iter().map(|b| format!("{b:02x}")).collect()
    }
    let vote = typ::Vote::new_committed(3, 2);
    let membership = typ::Membership::new(vec![[1, 2].into()], None);
    let entries = vec![
        register_entry(7, "http://svc:9000/"),
        Entry { log_id: log_id(3, 2, 8), payload: EntryPayload::Membership(membership.clone()) },
        Entry { log_id: log_id(3, 2, 9), payload: EntryPayload::Blank },
    ];
    let append = typ::AppendEntriesRequest {
        vote,
        prev_log_id: Some(log_id(1, 1, 6)),
        entries,
        leader_commit: Some(log_id(1, 1, 6)),
    };
    let snapshot = typ::InstallSnapshotRequest {
        vote,
        meta: typ::SnapshotMeta {
            last_log_id: Some(log_id(3, 2, 9)),
            last_membership: typ::StoredMembership::new(Some(log_id(3, 2, 8)), membership),
            snapshot_id: "3-2-9".into(),
        },
        offset: 0,
        data: vec![1, 2, 3],
        done: true,
    };
    let request_vote = typ::VoteRequest { vote, last_log_id: Some(log_id(3, 2, 9)) };
    let answers: [(String, &str); 6] = [
        (
            hex(&append),
            "030201010101060301010701010000000000006853f727981e82809b18fc81bdfd807e10687474703a2f2f7376633a393030302f01430875726e3a746573740001000302080201020102020100000200000302090001010106",
        ),
        (hex(&snapshot), "0302010103020901030208010201020201000002000005332d322d39000301020301"),
        (hex(&request_vote), "03020101030209"),
        (hex(&Ok::<_, typ::RaftError>(typ::AppendEntriesResponse::Success)), "0000"),
        (
            hex(&Ok::<_, typ::RaftError>(typ::VoteResponse { vote, vote_granted: true, last_log_id: None })),
            "000302010100",
        ),
        (hex(&Ok::<_, typ::RaftError<typ::InstallSnapshotError>>(typ::InstallSnapshotResponse { vote })), "00030201"),
    ];
    let changed: Vec<String> = answers
        .iter()
        .enumerate()
        .filter(|(_, (now, pinned))| now != pinned)
        .map(|(i, (now, pinned))| format!("message {i}\n  pinned: {pinned}\n  now:    {now}"))
        .collect();
    assert!(changed.is_empty(), "Raft RPC encodings changed:\n{}", changed.join("\n"));
}

/// A Raft request goes in the oldest peer protocol version that carries it: a node of the
/// release before reads every entry but one that uses health checks, and refuses that one (and
/// any snapshot, whose image is of format 4) at the door instead of misreading it.
#[test]
fn a_raft_request_is_sent_in_the_oldest_protocol_version_that_carries_it() {
    use switchboard_proto::peer::Rpc;

    use crate::raft::network::rpc;
    use crate::registry::ContractKey;
    use crate::registry::Policy;

    let key = ContractKey::new("urn:x", "C");
    let plain = token_entry(1, Command::set_policy(key.clone(), Policy { idempotent: true, ..Policy::default() }));
    let kept = token_entry(2, Command::set_policy(key, Policy { rewrite_to: false, ..Policy::default() }));
    let blank = Entry { log_id: log_id(1, 1, 3), payload: EntryPayload::Blank };
    let vote = typ::Vote::new_committed(1, 1);
    let append = |entries| typ::AppendEntriesRequest { vote, prev_log_id: None, entries, leader_commit: None };
    assert_eq!(rpc::Append::version(&append(Vec::new())), 1, "a heartbeat");
    assert_eq!(rpc::Append::version(&append(vec![plain.clone(), blank.clone()])), 1);
    assert_eq!(rpc::Append::version(&append(vec![plain.clone(), kept.clone(), blank.clone()])), 2);
    let lease = crate::registry::Lease { id: crate::registry::RegistrationId::of("http://a/", "urn:x", "C"), epoch: 1 };
    let health = crate::registry::HealthChange {
        lease,
        status: crate::registry::HealthStatus::Critical,
        output: String::new(),
        by: 1,
    };
    let checked = token_entry(3, Command::SetHealth(vec![health]));
    assert_eq!(rpc::Append::version(&append(vec![plain, kept, checked, blank])), 3);
    assert_eq!(rpc::Vote::version(&typ::VoteRequest { vote, last_log_id: None }), 1);
    let snapshot = typ::InstallSnapshotRequest {
        vote,
        meta: typ::SnapshotMeta::default(),
        offset: 0,
        data: Vec::new(),
        done: true,
    };
    assert_eq!(rpc::Snapshot::version(&snapshot), 3);
}

#[test]
fn a_format_4_directory_opens_with_its_checks_and_health_verdicts() {
    let dir = fixture("data-v4");
    let data = dir.path().join("node1");
    let view = AppliedView::default();
    let storage = open(&data, view.clone());
    let state = &view.load().state;
    assert_eq!(state.len(), 24, "the fixture's registrations are there");
    let key = crate::registry::ContractKey::new("http://fixture.example/", "ICalc");
    let policy = state.policy(&key).unwrap();
    assert_eq!(
        (policy.kind, policy.rewrite_to, policy.panic_threshold_percent),
        (crate::registry::PolicyKind::Weighted, false, 30)
    );
    let checked = crate::registry::RegistrationId::of("http://127.0.0.1:1/checked", "urn:fixture", "IChecked");
    let entry = state.health(&checked).expect("the checked registration's health entry");
    let check = entry.check.as_ref().unwrap();
    assert_eq!(
        (check.kind, check.path.as_str(), check.deregister_after_ms),
        (crate::registry::CheckKind::Http, "/up", Some(3_600_000))
    );
    assert!(state.is_critical(&checked), "and its critical verdict");
    drop(storage);
    let disk = unlocked(|| Disk::open(&data, 1 << 20)).unwrap();
    assert_eq!(disk.log.open_tree(log_store::META_TREE).unwrap().get(FORMAT).unwrap().unwrap()[0], 4);
}
