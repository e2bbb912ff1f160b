use std::collections::BTreeMap;

use super::*;

fn spec(address: &str, namespace: &str, name: &str) -> RegistrationSpec {
    RegistrationSpec::new(RegistrationRequest {
        address: address.into(),
        contract_name: name.into(),
        contract_namespace: namespace.into(),
        ttl_ms: None,
        weight: None,
        metadata: BTreeMap::new(),
        check: None,
    })
    .unwrap()
}

fn change(command: Command) -> Change {
    Change { at_ms: 1_000, origin: Origin { node: 1, principal: None, quota: None, request: None }, command }
}

/// A client request `request` taken by node 1, proposed at `at_ms`.
fn request(command: Command, request: u64, at_ms: u64) -> Change {
    Change { at_ms, origin: Origin { node: 1, principal: None, quota: None, request: Some(request) }, command }
}

fn addresses(state: &RegistryState, key: &str) -> Vec<String> {
    state
        .endpoints(&ContractKey::from_text(key))
        .map(|e| e.as_slice().iter().map(|r| r.address.to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn register_creates_then_refreshes() {
    let mut state = RegistryState::default();
    let calc = spec("http://a:1/", "http://tempuri.org/", "ICalc");
    let first = state.apply(5, &change(Command::Register(calc.clone())));
    let Outcome::Registered { registration, created: true } = first else { panic!("{first:?}") };
    assert_eq!((registration.epoch, registration.registered_at_ms), (5, 1_000));

    let mut heavier = calc;
    heavier.weight = 7;
    let again = state.apply(9, &change(Command::Register(heavier)));
    let Outcome::Registered { registration, created: false } = again else { panic!("{again:?}") };
    assert_eq!((registration.epoch, registration.weight), (9, 7), "re-register refreshes options and epoch");
    assert_eq!(state.len(), 1, "the same triple keeps one entry");
}

#[test]
fn unregister_removes_and_reports_missing() {
    let mut state = RegistryState::default();
    let calc = spec("http://a:1/", "urn:ns", "ICalc");
    state.apply(1, &change(Command::Register(calc.clone())));
    assert!(
        matches!(state.apply(2, &change(Command::Unregister(calc.id))), Outcome::Unregistered(r) if r.id == calc.id)
    );
    assert_eq!(state.apply(3, &change(Command::Unregister(calc.id))), Outcome::NotFound(calc.id));
    assert!(state.is_empty());
    assert!(addresses(&state, "urn:ns/ICalc").is_empty());
}

#[test]
fn routes_match_the_exact_pair_never_a_namespace_alone_or_a_substring() {
    let mut state = RegistryState::default();
    state.apply(1, &change(Command::Register(spec("http://a/", "http://t.org/svc/", "ICalc"))));
    state.apply(2, &change(Command::Register(spec("http://b/", "http://t.org/svc", "IEcho"))));
    state.apply(3, &change(Command::Register(spec("http://c/", "http://t.org/svc2", "ICalc"))));

    assert_eq!(addresses(&state, "http://t.org/svc/ICalc"), ["http://a/"]);
    assert_eq!(addresses(&state, "http://t.org/svc/IEcho"), ["http://b/"]);
    assert!(addresses(&state, "http://t.org/svc").is_empty(), "a namespace alone names no contract");
    assert!(addresses(&state, "http://t.org/sv").is_empty());
    assert!(addresses(&state, "http://t.org").is_empty());
    assert!(addresses(&state, "http://t.org/svc/ICal").is_empty());
}

/// The cross-tenant hijack: tenant B registers the namespace that, with tenant A's contract
/// name, spells A's contract key. B's registration must never receive A's traffic.
#[test]
fn a_namespace_that_spells_another_tenants_key_serves_nothing_of_it() {
    let mut state = RegistryState::default();
    state.apply(1, &change(Command::Register(spec("http://tenant-a/", "http://contoso.com/", "payments"))));
    state.apply(2, &change(Command::Register(spec("http://tenant-b/", "http://contoso.com/payments", "Anything"))));
    assert_eq!(addresses(&state, "http://contoso.com/payments"), ["http://tenant-a/"]);
    assert_eq!(addresses(&state, "http://contoso.com/payments/Anything"), ["http://tenant-b/"]);
}

#[test]
fn drain_takes_endpoint_out_of_routes_but_keeps_it_listed() {
    let mut state = RegistryState::default();
    let a = spec("http://a/", "urn:x", "C");
    let b = spec("http://b/", "urn:x", "C");
    state.apply(1, &change(Command::Register(a.clone())));
    state.apply(2, &change(Command::Register(b)));
    let drained = state.apply(3, &change(Command::Drain(a.id)));
    assert!(matches!(drained, Outcome::Drained(ref r) if r.state == EndpointState::Draining));
    assert_eq!(addresses(&state, "urn:x/C"), ["http://b/"]);
    assert_eq!(state.len(), 2);
    assert_eq!(
        state.apply(4, &change(Command::Drain(RegistrationId::of("x", "y", "z")))),
        Outcome::NotFound(RegistrationId::of("x", "y", "z"))
    );
    // A fresh registration of the same triple makes it active again.
    state.apply(5, &change(Command::Register(a)));
    assert_eq!(addresses(&state, "urn:x/C").len(), 2);
}

#[test]
fn expire_only_removes_matching_epochs() {
    let mut state = RegistryState::default();
    let a = spec("http://a/", "urn:x", "C");
    let b = spec("http://b/", "urn:x", "C");
    state.apply(1, &change(Command::Register(a.clone())));
    state.apply(2, &change(Command::Register(b.clone())));
    state.apply(3, &change(Command::Register(a.clone()))); // a restarted: new epoch 3
    let outcome =
        state.apply(4, &change(Command::Expire(vec![Lease { id: a.id, epoch: 1 }, Lease { id: b.id, epoch: 2 }])));
    assert_eq!(outcome, Outcome::Expired(vec![b.id]));
    assert_eq!(addresses(&state, "urn:x/C"), ["http://a/"]);
}

#[test]
fn policies_set_and_reset() {
    let mut state = RegistryState::default();
    let key = ContractKey::new("urn:x", "C");
    let sticky = Policy {
        kind: PolicyKind::ConsistentHash,
        hash_header: Some("x-user".into()),
        idempotent: true,
        rewrite_to: true,
        ..Policy::default()
    };
    assert_eq!(state.apply(1, &change(Command::SetPolicy(key.clone(), sticky.clone()))), Outcome::PolicySet);
    assert_eq!(state.policy(&key), Some(&sticky));
    state.apply(2, &change(Command::SetPolicy(key.clone(), Policy::default())));
    assert_eq!(state.policy(&key), None, "setting the default forgets the entry");
}

#[test]
fn a_policy_is_written_in_the_oldest_encoding_that_carries_it_and_both_encodings_apply_alike() {
    let key = ContractKey::new("urn:x", "C");
    let plain = Policy { idempotent: true, ..Policy::default() };
    let kept = Policy { rewrite_to: false, ..Policy::default() };
    let command = Command::set_policy(key.clone(), plain.clone());
    assert!(matches!(&command, Command::SetPolicyV1(_, v1) if Policy::from(v1.clone()) == plain), "{command:?}");
    assert_eq!(command.protocol(), 1);
    let command = Command::set_policy(key.clone(), kept.clone());
    assert!(matches!(&command, Command::SetPolicyV2(_, v2) if Policy::from(v2.clone()) == kept), "{command:?}");
    assert_eq!(command.protocol(), 2);
    let checked = Policy { check: Some(Check::none()), ..Policy::default() };
    let command = Command::set_policy(key.clone(), checked.clone());
    assert_eq!(command, Command::SetPolicy(key.clone(), checked.clone()));
    assert_eq!(command.protocol(), 3);
    let panicky = Policy { panic_threshold_percent: 0, ..Policy::default() };
    assert_eq!(Command::set_policy(key.clone(), panicky.clone()).protocol(), 3);
    for policy in [plain, kept, checked, panicky] {
        let (mut old, mut new) = (RegistryState::default(), RegistryState::default());
        assert_eq!(old.apply(1, &change(Command::set_policy(key.clone(), policy.clone()))), Outcome::PolicySet);
        assert_eq!(new.apply(1, &change(Command::SetPolicy(key.clone(), policy.clone()))), Outcome::PolicySet);
        assert_eq!(old.policy(&key), Some(&policy));
        assert_eq!(old.to_image(), new.to_image());
    }
}

#[test]
fn image_round_trip_rebuilds_indexes() {
    let mut state = RegistryState::default();
    for i in 0..50u64 {
        let s = spec(&format!("http://h{i}/"), &format!("urn:ns{}", i % 3), &format!("C{}", i % 5));
        state.apply(i + 1, &change(Command::Register(s)));
    }
    let first = state.iter().next().unwrap().id;
    state.apply(60, &request(Command::Drain(first), 7, 1_000));
    state.apply(
        61,
        &change(Command::SetPolicy(
            ContractKey::new("urn:ns1", "C1"),
            Policy { idempotent: true, ..Policy::default() },
        )),
    );
    state.apply(63, &change(Command::CreateToken(token("svc"))));
    state.apply(64, &change(Command::RevokeToken("old".into())));

    let image = state.to_image();
    assert_eq!(image.tokens.len(), 2);
    let bytes = postcard::to_stdvec(&image).unwrap();
    assert_eq!(postcard::to_stdvec(&state.image()).unwrap(), bytes, "the borrowed image encodes like the owned one");
    assert_eq!(serde_json::to_value(state.image()).unwrap(), serde_json::to_value(&image).unwrap());
    let mut restored = RegistryState::from_image(postcard::from_bytes(&bytes).unwrap());
    assert_eq!(restored.to_image(), image);
    for key in state.routes.keys() {
        assert_eq!(addresses(&restored, key.as_str()), addresses(&state, key.as_str()), "{key}");
    }
    assert_eq!(restored.routes.len(), state.routes.len());
    let Outcome::Drained(_) = restored.apply(62, &request(Command::Drain(first), 7, 1_000)) else {
        panic!("the remembered answer survives the snapshot")
    };
}

#[test]
fn a_retried_removal_is_applied_once_and_answered_like_the_first() {
    let mut state = RegistryState::default();
    let a = spec("http://a:1/", "urn:ns", "C");
    state.apply(1, &change(Command::Register(a.clone())));
    let first = state.apply(2, &request(Command::Unregister(a.id), 42, 1_000));
    let Outcome::Unregistered(removed) = &first else { panic!("{first:?}") };
    assert_eq!(removed.epoch, 1);

    // Someone registers the same endpoint again; then the retry of request 42 arrives.
    state.apply(3, &change(Command::Register(a.clone())));
    assert_eq!(state.apply(4, &request(Command::Unregister(a.id), 42, 1_500)), first, "the first answer, again");
    assert_eq!(state.len(), 1, "the retry removed nothing");
    // The same request number from another node is another request.
    let other = Change {
        at_ms: 1_500,
        origin: Origin { node: 2, principal: None, quota: None, request: Some(42) },
        command: Command::Unregister(a.id),
    };
    let Outcome::Unregistered(removed) = state.apply(5, &other) else { panic!("a new request applies") };
    assert_eq!(removed.epoch, 3);
    assert_eq!(state.len(), 0);
}

#[test]
fn a_retried_first_registration_is_answered_as_created() {
    let mut state = RegistryState::default();
    let a = spec("http://a:1/", "urn:ns", "C");
    let first = state.apply(1, &request(Command::Register(a.clone()), 7, 1_000));
    assert!(matches!(first, Outcome::Registered { created: true, .. }));
    // The forward's answer was lost; the retry reaches the next leader with the same request.
    assert_eq!(state.apply(2, &request(Command::Register(a), 7, 1_200)), first, "201 again, not 200");
    assert_eq!(state.get(&first_id(&first)).unwrap().epoch, 1, "the retry changed nothing");
}

fn first_id(outcome: &Outcome) -> RegistrationId {
    match outcome {
        Outcome::Registered { registration, .. } => registration.id,
        other => panic!("{other:?}"),
    }
}

#[test]
fn remembered_answers_are_bounded_in_time_and_count() {
    let mut state = RegistryState::default();
    let a = spec("http://a:1/", "urn:ns", "C");
    state.apply(1, &change(Command::Register(a.clone())));
    state.apply(2, &request(Command::Unregister(a.id), 1, 1_000));
    let late = 1_000 + ANSWER_TTL_MS + 1;
    assert_eq!(state.apply(3, &request(Command::Unregister(a.id), 1, late)), Outcome::NotFound(a.id), "forgotten");
    assert_eq!(state.answers.len(), 1, "only the new request's answer is kept");
    assert_eq!(state.answers[&(1, 1)].outcome, Remembered::Outcome(Outcome::NotFound(a.id)));

    for i in 0..ANSWER_CAP as u64 + 10 {
        let s = spec(&format!("http://h{i}/"), "urn:ns", "C");
        state.apply(10 + 2 * i, &change(Command::Register(s.clone())));
        state.apply(11 + 2 * i, &request(Command::Unregister(s.id), 100 + i, late));
    }
    assert_eq!(state.answers.len(), ANSWER_CAP);
    assert_eq!(state.answer_order.len(), ANSWER_CAP);
    assert!(!state.answers.contains_key(&(1, 100)), "the oldest went first");
    assert!(state.answers.contains_key(&(1, 100 + ANSWER_CAP as u64 + 9)));
}

#[test]
fn clones_are_independent_snapshots() {
    let mut state = RegistryState::default();
    state.apply(1, &change(Command::Register(spec("http://a/", "urn:x", "C"))));
    let published = state.clone();
    state.apply(2, &change(Command::Register(spec("http://b/", "urn:x", "C"))));
    assert_eq!(published.len(), 1);
    assert_eq!(addresses(&published, "urn:x/C"), ["http://a/"]);
    assert_eq!(state.len(), 2);
}

#[test]
fn quotas_count_what_an_owner_holds() {
    let mut state = RegistryState::default();
    let owned = |principal: &str, quota| Origin {
        node: 1,
        principal: Some(principal.into()),
        quota: Some(quota),
        request: None,
    };
    let register = |address: &str, origin: Origin| Change {
        at_ms: 0,
        origin,
        command: Command::Register(spec(address, "urn:q", "C")),
    };
    assert!(matches!(
        state.apply(1, &register("http://a/", owned("team", 2))),
        Outcome::Registered { created: true, .. }
    ));
    assert!(matches!(
        state.apply(2, &register("http://b/", owned("team", 2))),
        Outcome::Registered { created: true, .. }
    ));
    assert_eq!(
        state.apply(3, &register("http://c/", owned("team", 2))),
        Outcome::QuotaExceeded { owner: "team".into(), quota: 2 }
    );
    // Refreshing one it already owns is not a new registration.
    assert!(matches!(
        state.apply(4, &register("http://a/", owned("team", 2))),
        Outcome::Registered { created: false, .. }
    ));
    assert_eq!(state.owned_by("team"), 2);
    let id = spec("http://a/", "urn:q", "C").id;
    state.apply(5, &Change { at_ms: 0, origin: owned("team", 2), command: Command::Unregister(id) });
    assert_eq!(state.owned_by("team"), 1);
    assert!(matches!(
        state.apply(6, &register("http://c/", owned("team", 2))),
        Outcome::Registered { created: true, .. }
    ));
    // Quotas survive a snapshot.
    assert_eq!(RegistryState::from_image(state.to_image()).owned_by("team"), 2);
}

#[test]
fn the_audit_trail_says_who_did_what_and_why() {
    let mut state = RegistryState::default();
    let by = |principal: &str, node| Origin { node, principal: Some(principal.into()), quota: None, request: None };
    let a = spec("http://a/", "urn:audit", "C");
    let b = spec("http://b/", "urn:audit", "C");
    state.apply(1, &Change { at_ms: 10, origin: by("svc", 1), command: Command::Register(a.clone()) });
    state.apply(2, &Change { at_ms: 20, origin: by("svc", 2), command: Command::Register(b.clone()) });
    state.apply(3, &Change { at_ms: 30, origin: by("ops", 3), command: Command::Unregister(a.id) });
    let lease = state.get(&b.id).unwrap().lease();
    state.apply(4, &Change { at_ms: 40, origin: by("lease-expiry", 1), command: Command::Expire(vec![lease]) });
    let trail: Vec<_> = state.audit().map(|r| (r.index, r.node, r.principal.clone().unwrap(), r.action)).collect();
    assert_eq!(
        trail,
        vec![
            (1, 1, "svc".to_owned(), AuditAction::Registered),
            (2, 2, "svc".to_owned(), AuditAction::Registered),
            (3, 3, "ops".to_owned(), AuditAction::Evicted),
            (4, 1, "lease-expiry".to_owned(), AuditAction::Expired),
        ]
    );
    assert_eq!(state.audit().nth(2).unwrap().address.as_deref(), Some("http://a/"));
    let restored = RegistryState::from_image(state.to_image());
    assert_eq!(restored.audit().count(), 4);
}

mod totality {
    use proptest::prelude::*;

    use super::*;

    /// Any command at all, as a forged or corrupted log entry could carry it: weights of 0,
    /// ids that match no triple, policies without their header, repeated request numbers.
    fn any_command() -> impl Strategy<Value = Command> {
        let id = any::<[u8; 16]>().prop_map(|bytes| bytes.iter().fold(String::new(), |s, b| s + &format!("{b:02x}")));
        let id = id.prop_map(|hex| hex.parse::<RegistrationId>().unwrap());
        let spec = (0u8..6, "[a-z]{1,6}", 0u32..3, proptest::option::of(0u64..5_000), any::<[u8; 16]>()).prop_map(
            |(host, name, weight, ttl_ms, raw)| RegistrationSpec {
                id: if raw[0] % 2 == 0 {
                    RegistrationId::of(&format!("http://h{host}/"), "urn:p", &name)
                } else {
                    raw.iter().fold(String::new(), |s, b| s + &format!("{b:02x}")).parse().unwrap()
                },
                address: format!("http://h{host}/"),
                contract_name: name,
                contract_namespace: "urn:p".into(),
                ttl_ms,
                weight,
                metadata: BTreeMap::new(),
                check: None,
            },
        );
        let policy = (0u8..4, proptest::option::of("[a-zA-Z ]{0,4}"), any::<bool>(), any::<bool>()).prop_map(
            |(kind, header, idempotent, rewrite_to)| {
                let kind = [
                    PolicyKind::RoundRobin,
                    PolicyKind::Weighted,
                    PolicyKind::LeastOutstanding,
                    PolicyKind::ConsistentHash,
                ][kind as usize];
                Policy { kind, hash_header: header, idempotent, rewrite_to, ..Policy::default() }
            },
        );
        prop_oneof![
            spec.prop_map(Command::Register),
            id.clone().prop_map(Command::Unregister),
            id.clone().prop_map(Command::Drain),
            proptest::collection::vec((id, 0u64..40).prop_map(|(id, epoch)| Lease { id, epoch }), 0..4)
                .prop_map(Command::Expire),
            ("[a-z:/]{0,8}", policy)
                .prop_map(|(key, policy)| Command::set_policy(ContractKey::from_text(&key), policy)),
        ]
    }

    proptest! {
        /// `apply` is total: whatever the log holds, a node applies it without panicking, and the
        /// state it builds survives its own image.
        #[test]
        fn apply_never_panics(commands in proptest::collection::vec((any_command(), proptest::option::of(0u64..4), 0u64..3), 1..40)) {
            let mut state = RegistryState::default();
            for (index, (command, request, quota)) in commands.into_iter().enumerate() {
                let origin = Origin { node: 1, principal: Some("p".into()), quota: Some(quota as u32), request };
                state.apply(index as u64 + 1, &Change { at_ms: index as u64, origin, command });
            }
            let restored = RegistryState::from_image(state.to_image());
            prop_assert_eq!(restored.to_image(), state.to_image());
        }
    }
}

#[test]
fn a_refresh_that_changes_nothing_is_not_audited_and_one_writer_cannot_erase_the_others() {
    let mut state = RegistryState::default();
    let by = |principal: &str| Origin { node: 1, principal: Some(principal.into()), quota: Some(5), request: None };
    let other = spec("http://other/", "urn:b", "C");
    state.apply(1, &Change { at_ms: 1, origin: by("tenant-b"), command: Command::Register(other) });
    let mine = spec("http://mine/", "urn:a", "C");
    state.apply(2, &Change { at_ms: 2, origin: by("tenant-a"), command: Command::Register(mine.clone()) });
    // 10,000 refreshes with the same options: not one record.
    for i in 0..10_000u64 {
        state.apply(3 + i, &Change { at_ms: 3 + i, origin: by("tenant-a"), command: Command::Register(mine.clone()) });
    }
    assert_eq!(state.audit().count(), 2);
    // 10,000 real changes by one writer: it keeps at most its share, the others' records stay.
    for i in 0..10_000u64 {
        let mut changed = mine.clone();
        changed.weight = 1 + (i % 2) as u32;
        state.apply(
            20_000 + i,
            &Change { at_ms: 20_000 + i, origin: by("tenant-a"), command: Command::Register(changed) },
        );
    }
    let principals: Vec<_> = state.audit().map(|r| r.principal.clone().unwrap()).collect();
    assert_eq!(principals.iter().filter(|p| *p == "tenant-a").count(), AUDIT_SHARE);
    assert_eq!(principals.iter().filter(|p| *p == "tenant-b").count(), 1, "the other tenant's record is still there");
    // The share survives the image, and the records are looked up by number.
    let restored = RegistryState::from_image(state.to_image());
    assert_eq!(restored.to_image(), state.to_image());
    let last = state.audit().last().unwrap().seq;
    assert_eq!(state.audit_record(last).map(|r| r.seq), Some(last));
}

fn token(name: &str) -> TokenDef {
    TokenDef { name: name.into(), sha256: [7; 32], scopes: vec!["read".into()], max_registrations: Some(3) }
}

#[test]
fn tokens_are_created_once_revoked_for_good_and_audited() {
    let mut state = RegistryState::default();
    let admin = |command| Change {
        at_ms: 5,
        origin: Origin { node: 2, principal: Some("ops".into()), quota: None, request: None },
        command,
    };
    assert_eq!(state.apply(1, &admin(Command::CreateToken(token("svc")))), Outcome::TokenCreated("svc".into()));
    assert!(matches!(state.apply(2, &admin(Command::CreateToken(token("svc")))), Outcome::TokenRefused(_)));
    assert_eq!(state.tokens()["svc"].def(), Some(&token("svc")));
    let before = state.clone();
    assert_eq!(state.apply(3, &admin(Command::RevokeToken("svc".into()))), Outcome::TokenRevoked("svc".into()));
    assert!(matches!(state.tokens()["svc"], TokenEntry::Revoked { revoked_at_ms: 5, .. }));
    assert!(!before.tokens().ptr_eq(state.tokens()), "a change makes a new table");
    assert!(state.clone().tokens().ptr_eq(state.tokens()), "a clone shares it");
    // Revoked names are never reused, and revoking again is refused.
    assert!(matches!(state.apply(4, &admin(Command::CreateToken(token("svc")))), Outcome::TokenRefused(_)));
    assert!(matches!(state.apply(5, &admin(Command::RevokeToken("svc".into()))), Outcome::TokenRefused(_)));
    // A name of the tokens file can be revoked too (a tombstone, no definition).
    assert_eq!(
        state.apply(6, &admin(Command::RevokeToken("bootstrap".into()))),
        Outcome::TokenRevoked("bootstrap".into())
    );
    let actions: Vec<(AuditAction, String)> = state.audit().map(|r| (r.action, r.contract.clone())).collect();
    assert_eq!(
        actions,
        [
            (AuditAction::TokenCreated, "token:svc".into()),
            (AuditAction::TokenRevoked, "token:svc".into()),
            (AuditAction::TokenRevoked, "token:bootstrap".into())
        ]
    );
    assert!(state.audit().all(|r| r.principal.as_deref() == Some("ops")));
    assert_eq!(state.take_touched().tokens, ["bootstrap".to_owned(), "svc".to_owned()].into());
    // A malformed definition (from a forged forward) is refused by apply too.
    let bad = TokenDef { name: "has space".into(), ..token("x") };
    assert!(matches!(state.apply(7, &admin(Command::CreateToken(bad.clone()))), Outcome::TokenRefused(_)));
    assert!(Command::CreateToken(bad).check_forwarded().is_err());
}

#[test]
fn contracts_are_indexed_by_namespace_while_they_have_active_endpoints() {
    let mut state = RegistryState::default();
    let a = spec("http://a:1/", "urn:math/", "IA");
    let b = spec("http://b:1/", "urn:math", "IB");
    let other = spec("http://c:1/", "urn:other", "IC");
    for (index, spec) in [&a, &b, &other].into_iter().enumerate() {
        state.apply(index as u64 + 1, &change(Command::Register(spec.clone())));
    }
    let keys = |state: &RegistryState, namespace: &str| -> Vec<String> {
        state.contracts_in(namespace).map(ToString::to_string).collect()
    };
    assert_eq!(keys(&state, "urn:math"), ["urn:math/IA", "urn:math/IB"]);
    assert_eq!(keys(&state, "urn:math/"), ["urn:math/IA", "urn:math/IB"], "one trailing slash is ignored");
    assert!(keys(&state, "urn:mat").is_empty() && keys(&state, "urn:math/IA").is_empty());
    // A drained or removed endpoint leaves the index with its contract's last active endpoint.
    state.apply(10, &change(Command::Drain(a.id)));
    assert_eq!(keys(&state, "urn:math"), ["urn:math/IB"]);
    state.apply(11, &change(Command::Unregister(b.id)));
    assert!(keys(&state, "urn:math").is_empty());
    // The index is rebuilt from a snapshot image.
    let restored = RegistryState::from_image(state.to_image());
    assert_eq!(keys(&restored, "urn:other"), ["urn:other/IC"]);
    assert!(keys(&restored, "urn:math").is_empty());
}

#[test]
fn path_bindings_follow_active_registrations() {
    let bind = |address: &str, name: &str, path: Option<&str>| {
        let mut spec = spec(address, "urn:svc", name);
        spec.metadata = path.iter().map(|p| (PATH_KEY.to_owned(), (*p).to_owned())).collect();
        spec
    };
    let mut state = RegistryState::default();
    let a = bind("http://a:1/", "IA", Some("/svc"));
    let b = bind("http://b:1/", "IA", Some("/svc"));
    state.apply(1, &change(Command::Register(a.clone())));
    state.apply(2, &change(Command::Register(b)));
    let keys = |state: &RegistryState, path: &str| -> Option<(String, Vec<String>)> {
        state.binding(path).map(|(bound, keys)| (bound.to_owned(), keys.iter().map(ToString::to_string).collect()))
    };
    assert_eq!(keys(&state, "/svc/x?wsdl"), Some(("/svc".to_owned(), vec!["urn:svc/IA".to_owned()])));
    assert_eq!(keys(&state, "/svcx"), None);
    let other = ContractKey::new("urn:svc", "IB");
    assert_eq!(state.path_taken("/svc", &other), Some(ContractKey::new("urn:svc", "IA")));
    assert_eq!(
        state.path_taken("/svc", &ContractKey::new("urn:svc", "IA")),
        None,
        "its own contract may bind it again"
    );
    // Draining one keeps the binding; re-registering without the path and removing the other
    // drop it; a snapshot image rebuilds it.
    state.apply(3, &change(Command::Drain(a.id)));
    assert!(keys(&state, "/svc").is_some());
    state.apply(4, &change(Command::Register(bind("http://b:1/", "IA", None))));
    assert_eq!(keys(&state, "/svc"), None);
    state.apply(5, &change(Command::Register(bind("http://c:1/", "IA", Some("/svc/v2")))));
    let restored = RegistryState::from_image(state.to_image());
    assert_eq!(keys(&restored, "/svc/v2/op").map(|(bound, _)| bound), Some("/svc/v2".to_owned()));
    assert_eq!(keys(&restored, "/svc"), None);
}

#[test]
fn an_internal_actor_is_named_and_never_limited() {
    assert_eq!(Actor::internal("lease-expiry"), Actor { name: Some("lease-expiry".into()), quota: None });
}

#[test]
fn endpoints_count_and_list_the_active_registrations_of_their_contract() {
    let mut state = RegistryState::default();
    let a = spec("http://a/", "urn:x", "C");
    let b = spec("http://b/", "urn:x", "C");
    state.apply(1, &change(Command::Register(a.clone())));
    state.apply(2, &change(Command::Register(b.clone())));
    state.apply(3, &change(Command::Register(spec("http://c/", "urn:x", "Other"))));
    assert!(!state.is_empty());
    let key = ContractKey::new("urn:x", "C");
    let endpoints = state.endpoints(&key).unwrap();
    assert_eq!((endpoints.len(), endpoints.is_empty()), (2, false));
    let mut ids: Vec<_> = endpoints.iter().map(|r| r.id).collect();
    let mut expected = vec![a.id, b.id];
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    state.apply(4, &change(Command::Drain(a.id)));
    let endpoints = state.endpoints(&key).unwrap();
    assert_eq!((endpoints.len(), endpoints.is_empty()), (1, false));
    assert_eq!(endpoints.iter().map(|r| r.id).collect::<Vec<_>>(), [b.id]);
    assert_eq!((Endpoints::default().len(), Endpoints::default().is_empty()), (0, true));
}

#[test]
fn removing_ones_own_or_an_unowned_registration_is_unregistered_and_anyone_elses_evicted() {
    let mut state = RegistryState::default();
    let by =
        |principal: Option<&str>| Origin { node: 1, principal: principal.map(Into::into), quota: None, request: None };
    let mine = spec("http://mine/", "urn:x", "C");
    let unowned = spec("http://unowned/", "urn:x", "C");
    let theirs = spec("http://theirs/", "urn:x", "C");
    state.apply(1, &Change { at_ms: 1, origin: by(Some("svc")), command: Command::Register(mine.clone()) });
    state.apply(2, &Change { at_ms: 2, origin: by(None), command: Command::Register(unowned.clone()) });
    state.apply(3, &Change { at_ms: 3, origin: by(Some("other")), command: Command::Register(theirs.clone()) });
    state.apply(4, &Change { at_ms: 4, origin: by(Some("svc")), command: Command::Unregister(mine.id) });
    state.apply(5, &Change { at_ms: 5, origin: by(Some("ops")), command: Command::Unregister(unowned.id) });
    state.apply(6, &Change { at_ms: 6, origin: by(Some("svc")), command: Command::Unregister(theirs.id) });
    let removals: Vec<_> = state.audit().skip(3).map(|r| (r.id, r.action)).collect();
    assert_eq!(
        removals,
        [
            (Some(mine.id), AuditAction::Unregistered),
            (Some(unowned.id), AuditAction::Unregistered),
            (Some(theirs.id), AuditAction::Evicted)
        ]
    );
}

#[test]
fn a_full_token_table_still_revokes_its_tokens_but_takes_no_new_name() {
    let mut state = RegistryState::default();
    for i in 0..MAX_TOKENS {
        let name = format!("t{i}");
        assert_eq!(state.apply(i as u64 + 1, &change(Command::CreateToken(token(&name)))), Outcome::TokenCreated(name));
    }
    let next = MAX_TOKENS as u64 + 1;
    assert!(matches!(state.apply(next, &change(Command::CreateToken(token("more")))), Outcome::TokenRefused(_)));
    assert!(matches!(state.apply(next + 1, &change(Command::RevokeToken("unknown".into()))), Outcome::TokenRefused(_)));
    assert_eq!(state.apply(next + 2, &change(Command::RevokeToken("t0".into()))), Outcome::TokenRevoked("t0".into()));
    assert_eq!(state.tokens().len(), MAX_TOKENS);
}

#[test]
fn the_size_estimate_follows_registrations_through_refreshes_removals_and_snapshots() {
    let mut state = RegistryState::default();
    assert_eq!(state.bytes(), 0);
    let a = spec("http://a/", "urn:x", "C");
    let b = spec("http://bbbbbbbb/", "urn:x", "Longer");
    state.apply(1, &change(Command::Register(a.clone())));
    assert_eq!(state.bytes(), a.approx_bytes());
    state.apply(2, &change(Command::Register(b.clone())));
    assert_eq!(state.bytes(), a.approx_bytes() + b.approx_bytes());
    let mut bigger = a.clone();
    bigger.metadata.insert("region".into(), "eu-west-1".into());
    state.apply(3, &change(Command::Register(bigger.clone())));
    assert!(bigger.approx_bytes() > a.approx_bytes());
    assert_eq!(state.bytes(), bigger.approx_bytes() + b.approx_bytes(), "a refresh counts once, at its new size");
    assert_eq!(RegistryState::from_image(state.to_image()).bytes(), state.bytes());
    state.apply(4, &change(Command::Unregister(b.id)));
    assert_eq!(state.bytes(), bigger.approx_bytes());
    state.apply(5, &change(Command::Expire(vec![Lease { id: a.id, epoch: 3 }])));
    assert_eq!(state.bytes(), 0);
}

#[test]
fn audit_records_are_numbered_in_order_and_the_next_number_is_known() {
    let mut state = RegistryState::default();
    assert_eq!(state.audit_next_seq(), 0);
    for (index, address) in ["http://a/", "http://b/", "http://c/"].into_iter().enumerate() {
        state.apply(index as u64 + 1, &change(Command::Register(spec(address, "urn:x", "C"))));
    }
    assert_eq!(state.audit().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(state.audit_next_seq(), 3);
    assert_eq!(state.audit_record(1).map(|r| r.address.clone()), Some(Some("http://b/".to_owned())));
    assert_eq!(state.audit_record(3), None);
    assert_eq!(RegistryState::from_image(state.to_image()).audit_next_seq(), 3);
}

#[test]
fn remembered_answers_are_listed_oldest_first_and_found_by_request() {
    let mut state = RegistryState::default();
    let a = spec("http://a/", "urn:x", "C");
    state.apply(1, &request(Command::Register(a.clone()), 8, 1_000));
    state.apply(2, &request(Command::Drain(a.id), 3, 1_100));
    let listed: Vec<_> = state.answers().map(|answer| (answer.request, answer.at_ms)).collect();
    assert_eq!(listed, [((1, 8), 1_000), ((1, 3), 1_100)]);
    let drained = state.answer(&(1, 3)).unwrap();
    assert!(matches!(&drained.outcome, Remembered::Outcome(Outcome::Drained(r)) if r.id == a.id));
    assert!(matches!(state.answer(&(1, 8)).unwrap().outcome, Remembered::Registered { created: true, epoch: 1, .. }));
    assert_eq!(state.answer(&(2, 3)), None, "request numbers are per node");
}

#[test]
fn pages_of_registrations_and_policies_resume_after_their_cursor() {
    let mut state = RegistryState::default();
    for (index, address) in ["http://a/", "http://b/", "http://c/"].into_iter().enumerate() {
        state.apply(index as u64 + 1, &change(Command::Register(spec(address, "urn:x", "C"))));
    }
    let ids: Vec<_> = state.iter().map(|r| r.id).collect();
    assert_eq!(state.iter_after(None).map(|r| r.id).collect::<Vec<_>>(), ids);
    assert_eq!(state.iter_after(Some(&ids[0])).map(|r| r.id).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(state.iter_after(Some(&ids[2])).count(), 0);

    let sticky = Policy {
        kind: PolicyKind::ConsistentHash,
        hash_header: Some("x-user".into()),
        idempotent: false,
        rewrite_to: false,
        ..Policy::default()
    };
    let keys = [ContractKey::new("urn:x", "A"), ContractKey::new("urn:x", "B")];
    for (index, key) in keys.iter().enumerate() {
        state.apply(10 + index as u64, &change(Command::SetPolicy(key.clone(), sticky.clone())));
    }
    let all: Vec<_> = state.policies().map(|(key, policy)| (key.clone(), policy.clone())).collect();
    assert_eq!(all, [(keys[0].clone(), sticky.clone()), (keys[1].clone(), sticky)]);
    let after: Vec<_> = state.policies_after(Some(&keys[0])).map(|(key, _)| key.clone()).collect();
    assert_eq!(after, [keys[1].clone()]);
    assert_eq!(state.policies_after(None).count(), 2);
}

fn transition(registration: &Registration, status: HealthStatus) -> Command {
    Command::SetHealth(vec![HealthChange { lease: registration.lease(), status, output: "refused".into(), by: 2 }])
}

fn registered(state: &mut RegistryState, index: u64, spec: RegistrationSpec) -> Registration {
    match state.apply(index, &change(Command::register(spec))) {
        Outcome::Registered { registration, .. } => registration,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_critical_endpoint_leaves_the_routable_set_of_its_epoch_only_and_a_new_epoch_is_passing() {
    let mut state = RegistryState::default();
    let a = registered(&mut state, 1, spec("http://a/", "urn:h", "C"));
    let b = registered(&mut state, 2, spec("http://b/", "urn:h", "C"));
    let key = ContractKey::new("urn:h", "C");
    let routable = |state: &RegistryState| {
        let routable = state.endpoints(&key).unwrap().routable(50);
        let names = |list: &[Arc<Registration>]| list.iter().map(|r| r.address.to_string()).collect::<Vec<_>>();
        (names(&routable.endpoints), names(&routable.skipped), routable.panic)
    };
    assert_eq!(routable(&state), (vec!["http://a/".into(), "http://b/".into()], vec![], false));

    // A transition for an older epoch changes nothing.
    let stale = Registration { epoch: 0, ..a.clone() };
    assert_eq!(state.apply(3, &change(transition(&stale, HealthStatus::Critical))), Outcome::HealthSet(vec![]));
    assert_eq!(state.apply(4, &change(transition(&a, HealthStatus::Critical))), Outcome::HealthSet(vec![a.id]));
    assert!(state.is_critical(&a.id));
    let verdict = state.health(&a.id).and_then(|e| e.health.clone()).unwrap();
    assert_eq!(
        (verdict.status, verdict.since_ms, verdict.output.as_str(), verdict.by),
        (HealthStatus::Critical, 1_000, "refused", 2)
    );
    assert_eq!(routable(&state), (vec!["http://b/".into()], vec!["http://a/".into()], false));
    // The same status again is no transition.
    assert_eq!(state.apply(5, &change(transition(&a, HealthStatus::Critical))), Outcome::HealthSet(vec![]));

    // It survives an image round trip.
    let restored = RegistryState::from_image(state.to_image());
    assert_eq!(routable(&restored), routable(&state));
    assert_eq!(restored.to_image(), state.to_image());

    // Both critical: below the panic threshold, every endpoint is routable again.
    assert_eq!(state.apply(6, &change(transition(&b, HealthStatus::Critical))), Outcome::HealthSet(vec![b.id]));
    assert_eq!(routable(&state), (vec!["http://a/".into(), "http://b/".into()], vec![], true));
    let none = state.endpoints(&key).unwrap().routable(0);
    assert!(none.endpoints.is_empty() && none.skipped.len() == 2 && !none.panic, "a threshold of 0 never panics");

    // Re-registering is a new instance: passing.
    let a2 = registered(&mut state, 7, spec("http://a/", "urn:h", "C"));
    assert!(!state.is_critical(&a2.id));
    assert_eq!(routable(&state), (vec!["http://a/".into()], vec!["http://b/".into()], false));
    assert_eq!(state.apply(8, &change(transition(&b, HealthStatus::Passing))), Outcome::HealthSet(vec![b.id]));
    assert_eq!(routable(&state).0.len(), 2);
}

#[test]
fn deregistration_removes_only_critical_registrations_of_the_same_epoch_and_is_audited() {
    let mut state = RegistryState::default();
    let checked = RegistrationSpec {
        check: Some(Check { deregister_after_ms: Some(5_000), ..Check::default() }),
        ..spec("http://a/", "urn:d", "C")
    };
    let a = registered(&mut state, 1, checked.clone());
    assert_eq!(state.health(&a.id).and_then(|e| e.check.clone()), checked.check);
    let b = registered(&mut state, 2, spec("http://b/", "urn:d", "C"));
    assert_eq!(
        state.apply(3, &change(Command::Deregister(vec![a.lease(), b.lease()]))),
        Outcome::Deregistered(vec![]),
        "neither is critical"
    );
    state.apply(4, &change(transition(&a, HealthStatus::Critical)));
    state.apply(5, &change(transition(&b, HealthStatus::Critical)));
    let stale = Lease { id: b.id, epoch: 1 };
    assert_eq!(state.apply(6, &change(Command::Deregister(vec![a.lease(), stale]))), Outcome::Deregistered(vec![a.id]));
    assert!(state.get(&a.id).is_none() && state.health(&a.id).is_none(), "its health entry goes with it");
    let last = state.audit().last().unwrap();
    assert_eq!((last.action, last.id), (AuditAction::Deregistered, Some(a.id)));
}

#[test]
fn the_effective_check_is_the_registrations_then_the_policys_then_the_default() {
    let mut state = RegistryState::default();
    let own = Check { kind: CheckKind::Http, ..Check::default() };
    let a = registered(&mut state, 1, RegistrationSpec { check: Some(own.clone()), ..spec("http://a/", "urn:e", "C") });
    let b = registered(&mut state, 2, spec("http://b/", "urn:e", "C"));
    let default = Check::default();
    assert_eq!(state.effective_check(&a, &default), &own);
    assert_eq!(state.effective_check(&b, &default), &default);
    let policy = Policy { check: Some(Check::none()), ..Policy::default() };
    state.apply(3, &change(Command::set_policy(ContractKey::new("urn:e", "C"), policy)));
    assert_eq!(state.effective_check(&b, &default), &Check::none());
    assert_eq!(state.effective_check(&a, &default), &own);
}

/// The kinds of the events the state holds since the last take, and the addresses they name.
fn taken(state: &mut RegistryState) -> Vec<(&'static str, String)> {
    state
        .take_events()
        .iter()
        .map(|event| {
            let about = match event {
                EventChange::PolicySet { contract, .. } => contract.to_string(),
                other => other.registration().map(|r| r.address.to_string()).unwrap_or_default(),
            };
            (event.kind(), about)
        })
        .collect()
}

#[test]
fn every_change_makes_one_event_and_what_changes_nothing_makes_none() {
    let mut state = RegistryState::default();
    let a = spec("http://a/", "urn:x", "C");
    let mut b = spec("http://b/", "urn:x", "C");
    b.ttl_ms = Some(10_000);
    state.apply(1, &change(Command::Register(a.clone())));
    state.apply(2, &change(Command::Register(b.clone())));
    assert_eq!(taken(&mut state), [("registered", "http://a/".into()), ("registered", "http://b/".into())]);
    // The same options again only move the epoch: not an event. Other options are.
    state.apply(3, &change(Command::Register(a.clone())));
    assert_eq!(taken(&mut state), []);
    let mut heavier = a.clone();
    heavier.weight = 9;
    state.apply(4, &change(Command::Register(heavier)));
    let events = state.take_events();
    assert!(matches!(&events[..], [EventChange::Registered { registration }] if registration.weight == 9));

    let a_now = state.get(&a.id).unwrap().clone();
    let critical = |status| {
        Command::SetHealth(vec![HealthChange { lease: a_now.lease(), status, output: "refused".into(), by: 2 }])
    };
    state.apply(5, &change(critical(HealthStatus::Critical)));
    state.apply(6, &change(critical(HealthStatus::Critical)));
    state.apply(7, &change(critical(HealthStatus::Passing)));
    let events = state.take_events();
    assert!(
        matches!(&events[..], [EventChange::HealthCritical { output, .. }, EventChange::HealthPassing { .. }] if output == "refused"),
        "{events:?}"
    );

    state.apply(8, &change(Command::Drain(a.id)));
    state.apply(9, &change(Command::Drain(RegistrationId::of("x", "y", "z"))));
    let policy = Policy { kind: PolicyKind::Weighted, ..Policy::default() };
    state.apply(10, &change(Command::SetPolicy(ContractKey::new("urn:x", "C"), policy)));
    let b_lease = state.get(&b.id).unwrap().lease();
    state.apply(11, &change(Command::Expire(vec![Lease { epoch: b_lease.epoch + 1, ..b_lease }])));
    assert_eq!(taken(&mut state), [("drained", "http://a/".into()), ("policy_set", "urn:x/C".into())]);
    state.apply(12, &change(Command::Expire(vec![b_lease])));
    state.apply(13, &change(Command::Unregister(a.id)));
    state.apply(14, &change(Command::Unregister(a.id)));
    let def = TokenDef { name: "t".into(), sha256: [7; 32], scopes: vec!["read".into()], max_registrations: None };
    state.apply(15, &change(Command::CreateToken(def)));
    assert_eq!(taken(&mut state), [("expired", "http://b/".into()), ("unregistered", "http://a/".into())]);
}

#[test]
fn a_retried_request_makes_no_second_event() {
    let mut state = RegistryState::default();
    let a = spec("http://a/", "urn:x", "C");
    state.apply(1, &request(Command::Register(a.clone()), 7, 1_000));
    state.apply(2, &request(Command::Unregister(a.id), 8, 1_000));
    state.apply(3, &request(Command::Register(a), 7, 1_000));
    assert_eq!(taken(&mut state), [("registered", "http://a/".into()), ("unregistered", "http://a/".into())]);
}
