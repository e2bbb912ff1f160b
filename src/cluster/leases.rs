//! Leases: registrations with a time to live stay while heartbeats renew them.
//!
//! Heartbeats are soft state and never enter the Raft log. The node that takes a heartbeat
//! records it and gossips it to every other member within [`GOSSIP_EVERY`], so every node,
//! and therefore any future leader, knows when each lease was last renewed. Only the leader
//! decides expiry, with its own clock, and replicates the decision as one `Expire` command per
//! round; every node applies the same removals.
//!
//! After a leader change the new leader already holds the renewal times, so leases are not reset
//! and nothing expires en masse. Besides, every lease gets at least its full TTL from the moment a
//! leader takes office (or, still in office, hears from a quorum again after it lost one), as
//! etcd's lessor does on promotion: a service that could not renew while no leader was known
//! (its routers were down, or the quorum was lost) is not deregistered the moment the quorum
//! returns, and heartbeats that were in flight to the old leader have time to arrive.
//!
//! A renewal names the lease's epoch (the log index of its latest registration). A heartbeat
//! for an older epoch (an instance that was replaced by a restarted one on the same address)
//! renews nothing.
//!
//! A starved CPU must not expire services that kept renewing. Every node gossips every
//! [`GOSSIP_EVERY`], even with nothing to pass on, so the leader knows how late each member's
//! news may be: a lease gets that much longer before it expires ([`Leases::gossip_lag`], for
//! members heard from within [`GOSSIP_SILENCE`], so at most that much; a member silent for longer
//! is taken for down). And a leader whose own reaper ran late (it was starved itself, and its
//! backlog of heartbeats is still unread) decides nothing until as long again has passed (see
//! `Cluster::reap_leases`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use crate::registry::Lease;
use crate::registry::RegistrationId;
use crate::registry::RegistryState;

/// How often a node passes on the heartbeats it took.
pub const GOSSIP_EVERY: Duration = Duration::from_millis(200);
/// How often the leader looks for leases that ran out.
pub const REAP_EVERY: Duration = Duration::from_millis(200);
/// A member silent for longer is taken for down: its lateness no longer delays expiry.
pub const GOSSIP_SILENCE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
struct Renewal {
    epoch: u64,
    at: Instant,
}

pub use switchboard_proto::api::Refusal;

/// Renewal times of the leases this node knows about.
#[derive(Debug, Default)]
pub struct Leases {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    renewed: HashMap<RegistrationId, Renewal>,
    /// Renewals taken here and not yet gossiped.
    outbox: Vec<Lease>,
    /// When each other member's gossip last arrived.
    heard: HashMap<u64, Instant>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a heartbeat against the applied registry: the lease it renews (with the current
    /// epoch), or why it renews nothing. `epoch: None` renews whatever epoch is current.
    pub fn check(registry: &RegistryState, id: RegistrationId, epoch: Option<u64>) -> Result<Lease, Refusal> {
        let registration = registry.get(&id).ok_or(Refusal::NotFound)?;
        match epoch {
            Some(epoch) if epoch != registration.epoch => Err(Refusal::EpochMismatch),
            _ => Ok(registration.lease()),
        }
    }

    /// Records heartbeats taken by this node, to be gossiped.
    pub fn renew_local(&self, leases: &[Lease], now: Instant) {
        let mut state = self.lock();
        for lease in leases {
            record(&mut state.renewed, *lease, now);
        }
        state.outbox.extend_from_slice(leases);
    }

    /// Records the gossip of member `from`: the heartbeats it took.
    pub fn renew_remote(&self, from: u64, leases: &[Lease], now: Instant) {
        let mut state = self.lock();
        for lease in leases {
            record(&mut state.renewed, *lease, now);
        }
        state.heard.insert(from, now);
    }

    /// How late the news of `members` may be: the longest silence among those heard from
    /// within [`GOSSIP_SILENCE`] (a member never heard from, or silent for longer, counts as
    /// down). On time, this is about one gossip interval.
    pub fn gossip_lag(&self, members: impl IntoIterator<Item = u64>, now: Instant) -> Duration {
        let state = self.lock();
        members
            .into_iter()
            .filter_map(|member| state.heard.get(&member).map(|at| now.saturating_duration_since(*at)))
            .filter(|silence| *silence < GOSSIP_SILENCE)
            .max()
            .unwrap_or_default()
    }

    /// The renewals to gossip, emptying the outbox.
    pub fn take_outbox(&self) -> Vec<Lease> {
        std::mem::take(&mut self.lock().outbox)
    }

    /// Leases of `registry` that ran out by `now`, for a leader in office (with a quorum) since
    /// `leader_since`, granting `grace` beyond the TTL (news that may still be on its way). Every
    /// lease lives at least its TTL from `leader_since`. A lease seen for the first time counts as
    /// renewed now.
    pub fn expired(
        &self,
        registry: &RegistryState,
        now: Instant,
        leader_since: Instant,
        grace: Duration,
    ) -> Vec<Lease> {
        let mut state = self.lock();
        let mut expired = Vec::new();
        for registration in registry.leased() {
            let Some(ttl) = registration.ttl_ms.map(Duration::from_millis) else { continue };
            let renewal =
                state.renewed.entry(registration.id).or_insert(Renewal { epoch: registration.epoch, at: now });
            if renewal.epoch != registration.epoch {
                *renewal = Renewal { epoch: registration.epoch, at: now };
            }
            let deadline = (renewal.at + ttl + grace).max(leader_since + ttl);
            if now >= deadline {
                expired.push(registration.lease());
            }
        }
        expired
    }

    /// Forgets renewals of registrations that are gone.
    pub fn retain_registered(&self, registry: &RegistryState) {
        self.lock().renewed.retain(|id, _| registry.get(id).is_some());
    }

    pub fn len(&self) -> usize {
        self.lock().renewed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn record(renewed: &mut HashMap<RegistrationId, Renewal>, lease: Lease, at: Instant) {
    let renewal = renewed.entry(lease.id).or_insert(Renewal { epoch: lease.epoch, at });
    if lease.epoch >= renewal.epoch {
        *renewal = Renewal { epoch: lease.epoch, at: at.max(renewal.at) };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::Change;
    use crate::registry::Command;
    use crate::registry::Origin;
    use crate::registry::RegistrationRequest;
    use crate::registry::RegistrationSpec;

    fn registry_with(ttls: &[(u64, Option<u64>)]) -> (RegistryState, Vec<Lease>) {
        let mut state = RegistryState::default();
        let mut leases = Vec::new();
        for (index, (n, ttl)) in ttls.iter().enumerate() {
            let spec = RegistrationSpec::new(RegistrationRequest {
                address: format!("http://h{n}/"),
                contract_name: "C".into(),
                contract_namespace: "urn:x".into(),
                ttl_ms: *ttl,
                weight: None,
                metadata: BTreeMap::new(),
                check: None,
            })
            .unwrap();
            let change = Change { at_ms: 0, origin: Origin::default(), command: Command::Register(spec) };
            state.apply(index as u64 + 1, &change);
            leases.push(state.iter().find(|r| r.address == format!("http://h{n}/")).unwrap().lease());
        }
        (state, leases)
    }

    #[test]
    fn renewed_leases_live_and_silent_ones_expire() {
        let (registry, leases) = registry_with(&[(1, Some(1_000)), (2, Some(1_000)), (3, None)]);
        let table = Leases::default();
        let start = Instant::now();
        let long_ago = start; // leader since the start: no grace left later on
        assert!(
            table.expired(&registry, start, long_ago, Duration::ZERO).is_empty(),
            "first sight counts as a renewal"
        );
        table.renew_local(&leases[..1], start + Duration::from_millis(900));
        let later = start + Duration::from_millis(1_500);
        assert_eq!(
            table.expired(&registry, later, long_ago, Duration::ZERO),
            vec![leases[1]],
            "the silent one expires, the renewed one and the unleased one stay"
        );
        assert_eq!(table.take_outbox(), vec![leases[0]]);
        assert!(table.take_outbox().is_empty());
    }

    #[test]
    fn a_new_leader_grants_grace_but_keeps_known_renewals() {
        let (registry, leases) = registry_with(&[(1, Some(10_000)), (2, Some(10_000))]);
        let table = Leases::default();
        let t0 = Instant::now();
        // Renewals gossiped before the leader change.
        table.renew_remote(2, &leases, t0);
        table.expired(&registry, t0, t0, Duration::ZERO);
        let elected = t0 + Duration::from_secs(9);
        // Shortly after the election nothing has expired...
        assert!(table.expired(&registry, elected + Duration::from_millis(500), elected, Duration::ZERO).is_empty());
        // ...and a full TTL after it the lease that nobody renewed does expire; the one renewed at
        // the election lives until its own TTL from that renewal.
        table.renew_remote(2, &leases[..1], elected + Duration::from_secs(1));
        let after = elected + Duration::from_secs(10);
        assert_eq!(table.expired(&registry, after, elected, Duration::ZERO), vec![leases[1]]);
        assert!(table.expired(&registry, after - Duration::from_millis(1), elected, Duration::ZERO).is_empty());
    }

    #[test]
    fn heartbeats_of_a_replaced_instance_renew_nothing() {
        let (mut registry, leases) = registry_with(&[(1, Some(1_000))]);
        let old = leases[0];
        // The instance restarted on the same address: a new registration, a new epoch.
        let spec = RegistrationSpec::new(RegistrationRequest {
            address: "http://h1/".into(),
            contract_name: "C".into(),
            contract_namespace: "urn:x".into(),
            ttl_ms: Some(1_000),
            weight: None,
            metadata: BTreeMap::new(),
            check: None,
        })
        .unwrap();
        registry.apply(7, &Change { at_ms: 0, origin: Origin::default(), command: Command::Register(spec) });
        assert_eq!(Leases::check(&registry, old.id, Some(old.epoch)), Err(Refusal::EpochMismatch));
        assert_eq!(Leases::check(&registry, old.id, Some(7)), Ok(Lease { id: old.id, epoch: 7 }));
        assert_eq!(Leases::check(&registry, RegistrationId::of("a", "b", "c"), None), Err(Refusal::NotFound));

        let table = Leases::default();
        let t0 = Instant::now();
        table.expired(&registry, t0, t0, Duration::ZERO);
        // Old-epoch renewals keep coming; they must not keep the new epoch alive.
        table.renew_remote(2, &[old], t0 + Duration::from_millis(800));
        assert_eq!(
            table.expired(&registry, t0 + Duration::from_millis(1_100), t0, Duration::ZERO),
            vec![Lease { id: old.id, epoch: 7 }]
        );
    }

    #[test]
    fn late_gossip_delays_expiry_and_a_silent_member_stops_counting() {
        let (registry, leases) = registry_with(&[(1, Some(1_000))]);
        let table = Leases::default();
        let t0 = Instant::now();
        table.renew_remote(2, &leases, t0);
        table.renew_remote(3, &[], t0 + Duration::from_millis(600));
        // At 1.1 s node 2 has been silent for 1.1 s: its news may be late by as much.
        let now = t0 + Duration::from_millis(1_100);
        let lag = table.gossip_lag([2, 3], now);
        assert_eq!(lag, Duration::from_millis(1_100));
        assert!(table.expired(&registry, now, t0, lag).is_empty(), "late gossip may still renew it");
        // A member silent for longer than GOSSIP_SILENCE is taken for down.
        let much_later = t0 + GOSSIP_SILENCE + Duration::from_secs(1);
        assert_eq!(table.gossip_lag([2, 3, 4], much_later), Duration::ZERO);
        assert_eq!(table.expired(&registry, much_later, t0, Duration::ZERO), leases);
    }

    #[test]
    fn a_new_leader_expires_no_lease_before_its_full_ttl_even_if_renewed_long_ago() {
        let (registry, leases) = registry_with(&[(1, Some(1_000)), (2, Some(10_000))]);
        let table = Leases::default();
        let t0 = Instant::now();
        table.renew_remote(2, &leases, t0);
        // Elected (or back in touch with a quorum) long after both leases' last renewal, as after
        // an outage that no service could renew through: each gets its full TTL from then.
        let elected = t0 + Duration::from_secs(30);
        let at = |ms: u64| elected + Duration::from_millis(ms);
        assert!(table.expired(&registry, at(999), elected, Duration::ZERO).is_empty());
        assert_eq!(table.expired(&registry, at(1_000), elected, Duration::ZERO), vec![leases[0]]);
        assert_eq!(table.expired(&registry, at(9_999), elected, Duration::ZERO), vec![leases[0]]);
        let mut both = table.expired(&registry, at(10_000), elected, Duration::ZERO);
        both.sort_by_key(|lease| lease.id);
        let mut expected = leases;
        expected.sort_by_key(|lease| lease.id);
        assert_eq!(both, expected);
    }

    #[test]
    fn a_lease_expires_exactly_at_renewal_plus_ttl_plus_the_grace_given() {
        let (registry, leases) = registry_with(&[(1, Some(1_000))]);
        let table = Leases::default();
        let t0 = Instant::now();
        table.renew_local(&leases, t0);
        let lag = Duration::from_millis(300);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(table.expired(&registry, at(1_299), t0, lag).is_empty());
        assert_eq!(table.expired(&registry, at(1_300), t0, lag), leases);
    }

    #[test]
    fn a_member_silent_for_exactly_the_silence_limit_is_taken_for_down() {
        let table = Leases::default();
        let t0 = Instant::now();
        table.renew_remote(2, &[], t0);
        let just_under = GOSSIP_SILENCE - Duration::from_millis(1);
        assert_eq!(table.gossip_lag([2], t0 + just_under), just_under);
        assert_eq!(table.gossip_lag([2], t0 + GOSSIP_SILENCE), Duration::ZERO);
        assert_eq!(table.gossip_lag([3], t0), Duration::ZERO, "a member never heard from counts as down");
    }

    #[test]
    fn a_heartbeat_without_an_epoch_renews_the_current_one() {
        let (registry, leases) = registry_with(&[(1, Some(1_000))]);
        assert_eq!(Leases::check(&registry, leases[0].id, None), Ok(leases[0]));
        assert_eq!(Leases::check(&registry, leases[0].id, Some(leases[0].epoch)), Ok(leases[0]));
    }

    #[test]
    fn renewals_of_registrations_that_are_gone_are_forgotten() {
        let (mut registry, leases) = registry_with(&[(1, Some(1_000)), (2, Some(1_000))]);
        let table = Leases::default();
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        table.renew_local(&leases, Instant::now());
        assert_eq!(table.len(), 2);
        assert!(!table.is_empty());
        table.retain_registered(&registry);
        assert_eq!(table.len(), 2, "both are still registered");
        let unregister = Command::Unregister(leases[0].id);
        registry.apply(10, &Change { at_ms: 0, origin: Origin::default(), command: unregister });
        table.retain_registered(&registry);
        assert_eq!(table.len(), 1);
        let unregister = Command::Unregister(leases[1].id);
        registry.apply(11, &Change { at_ms: 0, origin: Origin::default(), command: unregister });
        table.retain_registered(&registry);
        assert!(table.is_empty());
    }

    #[test]
    fn only_leased_registrations_are_looked_at() {
        let (registry, _) = registry_with(&[(1, Some(1_000)), (2, None), (3, None)]);
        assert_eq!(registry.leased().count(), 1);
    }
}
