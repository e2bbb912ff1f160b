//! Golden bytes: the postcard encoding of every peer message and of the log entries, pinned.
//!
//! A failure here means an encoding changed. That is a peer protocol change (raise
//! `peer::PROTOCOL` and keep decoding the previous version) or an on-disk format change (raise
//! the data format and migrate); never update the bytes without one of the two.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark tools: a failed step ends the run

use std::collections::BTreeMap;

use serde::Serialize;
use switchboard_proto::peer::AdmitReply;
use switchboard_proto::peer::AdmitRequest;
use switchboard_proto::peer::ClusterError;
use switchboard_proto::peer::ConfirmAnswer;
use switchboard_proto::peer::ConfirmRequest;
use switchboard_proto::peer::Gossip;
use switchboard_proto::peer::Handover;
use switchboard_proto::peer::MembershipRequest;
use switchboard_proto::peer::PeerNode;
use switchboard_proto::peer::PeerStatus;
use switchboard_proto::peer::ProberBeat;
use switchboard_proto::peer::Proposal;
use switchboard_proto::peer::StatusAnswer;
use switchboard_proto::peer::StatusRequest;
use switchboard_proto::registry::Change;
use switchboard_proto::registry::Check;
use switchboard_proto::registry::CheckKind;
use switchboard_proto::registry::Command;
use switchboard_proto::registry::ContractKey;
use switchboard_proto::registry::HealthChange;
use switchboard_proto::registry::HealthStatus;
use switchboard_proto::registry::Lease;
use switchboard_proto::registry::Origin;
use switchboard_proto::registry::Outcome;
use switchboard_proto::registry::Policy;
use switchboard_proto::registry::PolicyKind;
use switchboard_proto::registry::Registration;
use switchboard_proto::registry::RegistrationId;
use switchboard_proto::registry::RegistrationSpec;
use switchboard_proto::registry::TokenDef;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks one value against its pinned encoding; every mismatch of a test is reported at once.
#[derive(Default)]
struct Golden(Vec<String>);

impl Golden {
    fn pinned<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        &mut self,
        value: &T,
        expected: &str,
    ) {
        let bytes = postcard::to_stdvec(value).expect("encodes");
        let decoded: T = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(&decoded, value, "decoding gives the value back");
        if hex(&bytes) != expected {
            self.0.push(format!("{value:?}\n  pinned: {expected}\n  now:    {}", hex(&bytes)));
        }
    }
}

impl Drop for Golden {
    fn drop(&mut self) {
        if !self.0.is_empty() && !std::thread::panicking() {
            panic!("{} encodings changed:\n{}", self.0.len(), self.0.join("\n"));
        }
    }
}

fn spec() -> RegistrationSpec {
    RegistrationSpec {
        id: RegistrationId::of("http://svc:9000/calc", "urn:calc", "ICalc"),
        address: "http://svc:9000/calc".into(),
        contract_name: "ICalc".into(),
        contract_namespace: "urn:calc".into(),
        ttl_ms: Some(5_000),
        weight: 2,
        metadata: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        check: None,
    }
}

fn check() -> Check {
    Check { kind: CheckKind::Http, path: "/up".into(), deregister_after_ms: Some(60_000), ..Check::default() }
}

fn origin() -> Origin {
    Origin { node: 2, principal: Some("ops".into()), quota: Some(10), request: Some(77) }
}

fn commands() -> Vec<Command> {
    let id = spec().id;
    vec![
        Command::register(spec()),
        Command::Unregister(id),
        Command::Drain(id),
        Command::Expire(vec![Lease { id, epoch: 9 }]),
        Command::set_policy(
            ContractKey::new("urn:calc", "ICalc"),
            Policy {
                kind: PolicyKind::ConsistentHash,
                hash_header: Some("x-user".into()),
                idempotent: true,
                rewrite_to: true,
                ..Policy::default()
            },
        ),
        Command::CreateToken(TokenDef {
            name: "ops".into(),
            sha256: [7; 32],
            scopes: vec!["admin".into()],
            max_registrations: Some(3),
        }),
        Command::RevokeToken("ops".into()),
        Command::set_policy(ContractKey::new("urn:calc", "ICalc"), Policy { rewrite_to: false, ..Policy::default() }),
        Command::register(RegistrationSpec { check: Some(check()), ..spec() }),
        Command::set_policy(
            ContractKey::new("urn:calc", "ICalc"),
            Policy { check: Some(Check::none()), panic_threshold_percent: 30, ..Policy::default() },
        ),
        Command::SetHealth(vec![HealthChange {
            lease: Lease { id, epoch: 9 },
            status: HealthStatus::Critical,
            output: "refused".into(),
            by: 3,
        }]),
        Command::Deregister(vec![Lease { id, epoch: 9 }]),
    ]
}

#[test]
fn log_entries() {
    let mut golden = Golden::default();
    let id = "f31532c14bd23aa846270ca42129ac9c";
    let expected = [
        format!(
            "00{id}14687474703a2f2f7376633a393030302f63616c63054943616c630875726e3a63616c630188270201047a6f6e650161"
        ),
        format!("01{id}"),
        format!("02{id}"),
        format!("0301{id}09"),
        "040e75726e3a63616c632f4943616c63030106782d7573657201".to_owned(),
        format!("05036f7073{}010561646d696e0103", "07".repeat(32)),
        "06036f7073".to_owned(),
        // Peer protocol 2: a policy with rewrite_to off needs the new variant.
        "070e75726e3a63616c632f4943616c6300000000".to_owned(),
        // Peer protocol 3: a registration with a check, a policy with health options, health
        // transitions and deregistrations.
        format!(
            "08{id}14687474703a2f2f7376633a393030302f63616c63054943616c630875726e3a63616c630188270201047a6f6e6501610100032f7570d00fe807020301e0d403"
        ),
        "090e75726e3a63616c632f4943616c63000000010102072f6865616c7468d00fe8070203001e".to_owned(),
        format!("0a01{id}0901077265667573656403"),
        format!("0b01{id}09"),
    ];
    assert_eq!(commands().len(), expected.len());
    for (command, expected) in commands().iter().zip(&expected) {
        golden.pinned(command, expected);
        let protocol = match &expected[..2] {
            "07" => 2,
            "08" | "09" | "0a" | "0b" => 3,
            _ => 1,
        };
        assert_eq!(command.protocol(), protocol, "{command:?}");
    }
    let change = Change { at_ms: 1_700_000_000_000, origin: origin(), command: Command::RevokeToken("ops".into()) };
    golden.pinned(&change, "80d095ffbc310201036f7073010a014d06036f7073");
}

#[test]
fn peer_messages() {
    let mut golden = Golden::default();
    let node = PeerNode { addr: "10.0.0.2:8082".into(), incarnation: Some(0x0123_4567_89ab_cdef) };
    let node_hex = "0d31302e302e302e323a3830383201ef9bafcdf8acd19101";
    golden.pinned(&node, node_hex);
    golden.pinned(&StatusRequest { challenge: [5; 16] }, &"05".repeat(16));
    let status = PeerStatus {
        node_id: 2,
        incarnation: 42,
        initialized: true,
        admitted: true,
        leader: Some((1, PeerNode::at("10.0.0.1:8082"))),
        last_log_index: Some(120),
        applied_index: 118,
    };
    let expected = format!("022a010101010d31302e302e302e313a3830383200017876{}", "09".repeat(32));
    golden.pinned(&StatusAnswer { status, proof: [9; 32] }, &expected);
    golden.pinned(
        &Proposal { command: Command::Drain(spec().id), origin: origin() },
        "02f31532c14bd23aa846270ca42129ac9c0201036f7073010a014d",
    );
    golden.pinned(&AdmitRequest { node_id: 3, node: node.clone() }, &format!("03{node_hex}"));
    for (reply, expected) in [(AdmitReply::Admitted, "00"), (AdmitReply::Retry, "01"), (AdmitReply::NotMember, "02")] {
        golden.pinned(&reply, expected);
    }
    let gossip = Gossip {
        from: 2,
        leases: vec![Lease { id: spec().id, epoch: 4 }],
        listeners: vec!["127.0.0.1:8081".parse().unwrap(), "[::1]:8080".parse().unwrap()],
    };
    golden.pinned(
        &gossip,
        "0201f31532c14bd23aa846270ca42129ac9c0402007f000001913f0100000000000000000000000000000001903f",
    );
    golden.pinned(&MembershipRequest::Add { node_id: 4, node }, &format!("0004{node_hex}"));
    golden.pinned(&MembershipRequest::Remove { node_id: 4 }, "0104");
    // Peer protocol 3: the health checkers' messages.
    let lease = Lease { id: spec().id, epoch: 9 };
    golden.pinned(&ConfirmRequest { lease, adopt: true }, "f31532c14bd23aa846270ca42129ac9c0901");
    golden.pinned(&ConfirmAnswer::Reached, "00");
    golden.pinned(&ConfirmAnswer::Failed("refused".into()), "010772656675736564");
    golden.pinned(&ConfirmAnswer::Unknown, "02");
    golden.pinned(&ProberBeat { from: 2, ready: true, handed: Vec::new() }, "020100");
    let handed = vec![Handover { id: spec().id, to: 3 }];
    golden.pinned(&ProberBeat { from: 2, ready: true, handed }, "020101f31532c14bd23aa846270ca42129ac9c03");
}

#[test]
fn peer_answers() {
    let mut golden = Golden::default();
    let registration = Registration::of(&spec(), 12, 1_700_000_000_000, Some("ops".into()));
    let body = "f31532c14bd23aa846270ca42129ac9c14687474703a2f2f7376633a393030302f63616c63054943616c630875726e3a63616c63\
                0188270201047a6f6e650161000c80d095ffbc3101036f7073";
    let outcomes: [(Result<Outcome, ClusterError>, String); 5] = [
        (Ok(Outcome::Registered { registration: registration.clone(), created: true }), format!("0000{body}01")),
        (Ok(Outcome::Unregistered(registration)), format!("0001{body}")),
        (Ok(Outcome::NotFound(spec().id)), "0003f31532c14bd23aa846270ca42129ac9c".to_owned()),
        (Ok(Outcome::QuotaExceeded { owner: "ops".into(), quota: 3 }), "0006036f707303".to_owned()),
        (Ok(Outcome::TokenRefused("taken".into())), "00090574616b656e".to_owned()),
    ];
    for (outcome, expected) in &outcomes {
        golden.pinned(outcome, expected);
    }
    let errors = [
        (ClusterError::NotLeader, "0100"),
        (ClusterError::NoLeader(2_000), "0101d00f"),
        (ClusterError::OutcomeUnknown, "0102"),
        (ClusterError::ShuttingDown, "0103"),
        (ClusterError::MembershipChangeRefused("refused".into()), "01040772656675736564"),
        (ClusterError::NodeNotFound(7), "010507"),
        (ClusterError::CatchUpTimeout(7, 60), "0106073c"),
        (ClusterError::InvalidRequest("bad".into()), "010703626164"),
        (ClusterError::NodeUnreachable("down".into()), "010804646f776e"),
        (ClusterError::RegistryFull("full".into()), "01090466756c6c"),
        (ClusterError::InternalError("bug".into()), "010a03627567"),
        (ClusterError::InvalidAddress("listener".into()), "010b086c697374656e6572"),
        // Added in protocol 1.
        (ClusterError::PathConflict("/calc".into()), "010c052f63616c63"),
    ];
    for (error, expected) in errors {
        golden.pinned(&Err::<u64, _>(error), expected);
    }
    golden.pinned(&Ok::<u64, ClusterError>(118), "0076");
    // A version-0 peer never sees a variant it cannot read.
    let downgraded = ClusterError::PathConflict("/calc".into()).spoken_in(0);
    golden.pinned(&Err::<u64, _>(downgraded), "0107052f63616c63");
    assert_eq!(ClusterError::PathConflict("/x".into()).spoken_in(1), ClusterError::PathConflict("/x".into()));
    golden.pinned(&Ok::<(), ClusterError>(()), "00");
}
