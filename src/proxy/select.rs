//! Endpoint selection: which endpoint of a contract a request tries first, and in what order the
//! others follow if it cannot be reached.
//!
//! Every policy picks a first endpoint; the remaining ones follow in rotation from it. Endpoints
//! ejected by outlier detection are skipped, unless every endpoint is ejected, in which case all
//! are tried rather than none.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::hash::Hasher;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use crate::h1::HeaderView;
use crate::proxy::outlier::Outliers;
use crate::registry::ContractKey;
use crate::registry::FastHash;
use crate::registry::Policy;
use crate::registry::PolicyKind;
use crate::registry::Registration;

/// Round-robin cursors, one per contract key, kept for the life of the node.
#[derive(Debug, Default)]
pub struct Cursors {
    by_contract: RwLock<HashMap<ContractKey, Arc<AtomicU64>, FastHash>>,
}

impl Cursors {
    /// Returns the next ticket of a contract's cursor.
    pub fn next(&self, key: &ContractKey) -> u64 {
        if let Some(cursor) = self.by_contract.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return cursor.fetch_add(1, Ordering::Relaxed);
        }
        let mut cursors = self.by_contract.write().unwrap_or_else(|p| p.into_inner());
        cursors.entry(key.clone()).or_default().fetch_add(1, Ordering::Relaxed)
    }

    /// The ticket the contract's next request will take, without taking it.
    pub fn peek(&self, key: &ContractKey) -> u64 {
        let cursors = self.by_contract.read().unwrap_or_else(|p| p.into_inner());
        cursors.get(key).map_or(0, |cursor| cursor.load(Ordering::Relaxed))
    }
}

/// Where a request starts in the rotation of a contract's endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    first: usize,
    len: usize,
}

/// Plans the tries of one request.
pub fn plan(
    policy: &Policy,
    key: &ContractKey,
    endpoints: &[Arc<Registration>],
    headers: &(impl HeaderView + ?Sized),
    cursors: &Cursors,
    outliers: &Outliers,
) -> Plan {
    plan_with(policy, endpoints, headers, outliers, || cursors.next(key))
}

/// The plan the contract's next request would get, leaving its cursor where it is (a dry run
/// shows the endpoint the next request takes, and takes nothing from the rotation).
pub fn preview(
    policy: &Policy,
    key: &ContractKey,
    endpoints: &[Arc<Registration>],
    headers: &(impl HeaderView + ?Sized),
    cursors: &Cursors,
    outliers: &Outliers,
) -> Plan {
    plan_with(policy, endpoints, headers, outliers, || cursors.peek(key))
}

/// A plan whose rotating policies start at `ticket()`.
fn plan_with(
    policy: &Policy,
    endpoints: &[Arc<Registration>],
    headers: &(impl HeaderView + ?Sized),
    outliers: &Outliers,
    ticket: impl FnOnce() -> u64,
) -> Plan {
    let len = endpoints.len();
    if len == 0 {
        return Plan { first: 0, len };
    }
    let first = match policy.kind {
        PolicyKind::RoundRobin => (ticket() % len as u64) as usize,
        PolicyKind::Weighted => weighted(endpoints, ticket()),
        PolicyKind::LeastOutstanding => least_outstanding(endpoints, outliers),
        PolicyKind::ConsistentHash => {
            let value = policy.hash_header.as_deref().and_then(|name| headers.value_of(name));
            match value {
                Some(value) => rendezvous(endpoints, value),
                None => (ticket() % len as u64) as usize,
            }
        }
    };
    Plan { first, len }
}

impl Plan {
    /// The try order: endpoints not ejected, in rotation from the first choice; if every one is
    /// ejected, all of them rather than none. Computed lazily, without allocating.
    pub fn order<'a>(self, endpoints: &'a [Arc<Registration>], outliers: &'a Outliers) -> Order<'a> {
        Order { plan: self, endpoints, outliers, step: 0, all: false, yielded: false }
    }
}

/// Iterator over endpoint indexes in try order.
#[derive(Debug)]
pub struct Order<'a> {
    plan: Plan,
    endpoints: &'a [Arc<Registration>],
    outliers: &'a Outliers,
    step: usize,
    /// Second pass: every endpoint was ejected, so all are tried.
    all: bool,
    yielded: bool,
}

impl Order<'_> {
    /// True once the iterator found every endpoint ejected and fell back to trying all.
    pub fn all_ejected(&self) -> bool {
        self.all
    }
}

impl Iterator for Order<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            if self.step == self.plan.len {
                if self.all || self.yielded || self.plan.len == 0 {
                    return None;
                }
                (self.all, self.step) = (true, 0);
            }
            let index = (self.plan.first + self.step) % self.plan.len;
            self.step += 1;
            if self.all || !self.outliers.is_ejected(&self.endpoints[index].id) {
                self.yielded = true;
                return Some(index);
            }
        }
    }
}

/// Weighted round robin: over every `total weight` tickets each endpoint is first exactly
/// `weight` times, and the tickets are spread by a stride coprime with the total, so heavy
/// endpoints are interleaved with light ones rather than served in runs.
fn weighted(endpoints: &[Arc<Registration>], ticket: u64) -> usize {
    let total: u64 = endpoints.iter().map(|r| u64::from(r.weight)).sum();
    if total == 0 {
        // Validation keeps weights at 1 or more; should a weight 0 ever reach the state anyway,
        // the node rotates rather than dividing by zero.
        return (ticket % endpoints.len() as u64) as usize;
    }
    let stride = coprime_stride(total);
    let mut point = ticket.wrapping_mul(stride) % total;
    for (i, endpoint) in endpoints.iter().enumerate() {
        let weight = u64::from(endpoint.weight);
        if point < weight {
            return i;
        }
        point -= weight;
    }
    endpoints.len() - 1
}

fn coprime_stride(total: u64) -> u64 {
    let mut stride = ((total as f64) * 0.618_033_988_75).round().max(1.0) as u64;
    while gcd(stride, total) != 1 {
        stride += 1;
    }
    stride
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Power of two choices: of two random endpoints, the one with fewer requests in flight.
fn least_outstanding(endpoints: &[Arc<Registration>], outliers: &Outliers) -> usize {
    let n = endpoints.len();
    if n == 1 {
        return 0;
    }
    let a = fastrand::usize(..n);
    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
    if outliers.in_flight(&endpoints[b].id) < outliers.in_flight(&endpoints[a].id) { b } else { a }
}

/// Rendezvous (highest random weight) hashing: the endpoint whose id hashes highest with the key
/// wins. Adding or removing an endpoint moves only the keys that belonged to it.
fn rendezvous(endpoints: &[Arc<Registration>], key: &[u8]) -> usize {
    let key_hash = stable_hash(key);
    endpoints
        .iter()
        .enumerate()
        .max_by_key(|(_, endpoint)| mix(key_hash ^ stable_hash(endpoint.id.as_bytes())))
        .map_or(0, |(i, _)| i)
}

/// A hash that is the same on every node and every run (unlike `RandomState`).
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hasher = std::hash::BuildHasherDefault::<FnvHasher>::default().build_hasher();
    hasher.write(bytes);
    hasher.finish()
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[derive(Debug)]
struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;
    use crate::registry::EndpointState;
    use crate::registry::RegistrationId;

    #[test]
    fn the_weighted_stride_is_the_first_coprime_at_or_above_the_golden_section_of_the_total() {
        // 0.618 of the total spreads consecutive tickets furthest apart; the first coprime at or
        // above it keeps the tickets a permutation of the total.
        for (total, stride) in [(1, 1), (2, 1), (6, 5), (10, 7), (12, 7), (16, 11), (100, 63)] {
            assert_eq!(coprime_stride(total), stride, "total {total}");
            assert_eq!(gcd(stride, total), 1);
        }
    }

    fn endpoint(i: u32, weight: u32) -> Arc<Registration> {
        let address = format!("http://e{i}/");
        Arc::new(Registration {
            id: RegistrationId::of(&address, "urn:x", "C"),
            address: address.into(),
            contract_name: "C".into(),
            contract_namespace: "urn:x".into(),
            ttl_ms: None,
            weight,
            metadata: Default::default(),
            state: EndpointState::Active,
            epoch: 1,
            registered_at_ms: 0,
            owner: None,
        })
    }

    fn firsts(policy: &Policy, endpoints: &[Arc<Registration>], headers: &HeaderMap, n: usize) -> Vec<usize> {
        let cursors = Cursors::default();
        let outliers = Outliers::default();
        let key = ContractKey::from_text("urn:x/C");
        (0..n)
            .map(|_| {
                plan(policy, &key, endpoints, headers, &cursors, &outliers).order(endpoints, &outliers).next().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_preview_shows_the_next_requests_endpoint_and_takes_nothing_from_the_rotation() {
        let endpoints: Vec<_> = (0..3).map(|i| endpoint(i, 1)).collect();
        let (cursors, outliers) = (Cursors::default(), Outliers::default());
        let key = ContractKey::from_text("urn:x/C");
        let headers = HeaderMap::new();
        for policy in [Policy::default(), Policy { kind: PolicyKind::Weighted, ..Policy::default() }] {
            for _ in 0..4 {
                let previewed = preview(&policy, &key, &endpoints, &headers, &cursors, &outliers);
                let previewed = previewed.order(&endpoints, &outliers).next();
                let planned = plan(&policy, &key, &endpoints, &headers, &cursors, &outliers);
                assert_eq!(previewed, planned.order(&endpoints, &outliers).next(), "{:?}", policy.kind);
            }
        }
    }

    #[test]
    fn round_robin_alternates_and_rotates() {
        let endpoints: Vec<_> = (0..3).map(|i| endpoint(i, 1)).collect();
        assert_eq!(firsts(&Policy::default(), &endpoints, &HeaderMap::new(), 6), [0, 1, 2, 0, 1, 2]);
        let cursors = Cursors::default();
        let outliers = Outliers::default();
        let key = ContractKey::from_text("k");
        let plan = plan(&Policy::default(), &key, &endpoints, &HeaderMap::new(), &cursors, &outliers);
        assert_eq!(plan.order(&endpoints, &outliers).collect::<Vec<_>>(), [0, 1, 2]);
    }

    proptest::proptest! {
        /// Whatever weights reach the state (validation keeps them at 1 or more, but a node must
        /// survive any), every policy picks an endpoint and never panics.
        #[test]
        fn every_policy_picks_for_any_weights(weights in proptest::collection::vec(0u32..5, 1..8), hashed in "[a-z]{0,8}") {
            let endpoints: Vec<_> = weights.iter().enumerate().map(|(i, w)| endpoint(i as u32, *w)).collect();
            let mut headers = HeaderMap::new();
            headers.insert("x-user", hashed.parse().unwrap());
            for kind in [PolicyKind::RoundRobin, PolicyKind::Weighted, PolicyKind::LeastOutstanding, PolicyKind::ConsistentHash] {
                let hash_header = (kind == PolicyKind::ConsistentHash).then(|| "x-user".to_owned());
                let policy = Policy { kind, hash_header, idempotent: false, rewrite_to: true, ..Policy::default() };
                for first in firsts(&policy, &endpoints, &headers, 5) {
                    proptest::prop_assert!(first < endpoints.len());
                }
            }
        }
    }

    #[test]
    fn weighted_is_exact_over_a_cycle_and_interleaved() {
        let endpoints = vec![endpoint(0, 3), endpoint(1, 1), endpoint(2, 2)];
        let policy = Policy { kind: PolicyKind::Weighted, ..Policy::default() };
        let picks = firsts(&policy, &endpoints, &HeaderMap::new(), 600);
        let count = |i| picks.iter().filter(|&&p| p == i).count();
        assert_eq!((count(0), count(1), count(2)), (300, 100, 200));
        let longest_run = picks.chunk_by(|a, b| a == b).map(<[usize]>::len).max().unwrap();
        assert!(longest_run <= 3, "heavy endpoints are interleaved, not served in runs: {:?}", &picks[..12]);
    }

    #[test]
    fn consistent_hash_sticks_and_moves_little() {
        let endpoints: Vec<_> = (0..5).map(|i| endpoint(i, 1)).collect();
        let policy = Policy {
            kind: PolicyKind::ConsistentHash,
            hash_header: Some("x-user".into()),
            idempotent: false,
            rewrite_to: true,
            ..Policy::default()
        };
        let pick = |endpoints: &[Arc<Registration>], user: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-user", user.parse().unwrap());
            endpoints[firsts(&policy, endpoints, &headers, 1)[0]].address.to_string()
        };
        for user in ["alice", "bob", "carol"] {
            let first = pick(&endpoints, user);
            assert!((0..10).all(|_| pick(&endpoints, user) == first), "{user} sticks");
        }
        // Removing one endpoint only moves the users that were on it.
        let users: Vec<String> = (0..200).map(|i| format!("user{i}")).collect();
        let before: Vec<String> = users.iter().map(|u| pick(&endpoints, u)).collect();
        let fewer: Vec<_> = endpoints[..4].to_vec();
        for (user, was) in users.iter().zip(&before) {
            if *was != endpoints[4].address {
                assert_eq!(&pick(&fewer, user), was, "{user} moved although its endpoint stayed");
            }
        }
        // Without the header it falls back to round robin.
        assert_eq!(firsts(&policy, &endpoints, &HeaderMap::new(), 3), [0, 1, 2]);
    }

    #[test]
    fn least_outstanding_prefers_idle_endpoints() {
        let endpoints: Vec<_> = (0..2).map(|i| endpoint(i, 1)).collect();
        let outliers = Outliers::default();
        let _busy = (0..5).map(|_| outliers.start(&endpoints[0].id)).collect::<Vec<_>>();
        let policy = Policy { kind: PolicyKind::LeastOutstanding, ..Policy::default() };
        let cursors = Cursors::default();
        let key = ContractKey::from_text("k");
        for _ in 0..20 {
            assert_eq!(
                plan(&policy, &key, &endpoints, &HeaderMap::new(), &cursors, &outliers)
                    .order(&endpoints, &outliers)
                    .next(),
                Some(1)
            );
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped_unless_all_are() {
        let endpoints: Vec<_> = (0..3).map(|i| endpoint(i, 1)).collect();
        let outliers = Outliers::default();
        let cursors = Cursors::default();
        let key = ContractKey::from_text("k");
        outliers.eject_now(&endpoints[1].id);
        let mut order = plan(&Policy::default(), &key, &endpoints, &HeaderMap::new(), &cursors, &outliers)
            .order(&endpoints, &outliers);
        let tried: Vec<_> = order.by_ref().collect();
        assert!(!tried.contains(&1) && tried.len() == 2 && !order.all_ejected());
        for e in &endpoints {
            outliers.eject_now(&e.id);
        }
        let mut order = plan(&Policy::default(), &key, &endpoints, &HeaderMap::new(), &cursors, &outliers)
            .order(&endpoints, &outliers);
        assert_eq!(order.by_ref().count(), 3);
        assert!(order.all_ejected());
    }

    /// The first tries of `policy` over `endpoints` with its contract's cursor set to `ticket`.
    fn firsts_from(policy: &Policy, endpoints: &[Arc<Registration>], ticket: u64, n: usize) -> Vec<usize> {
        let cursors = Cursors::default();
        let outliers = Outliers::default();
        let key = ContractKey::from_text("urn:x/C");
        cursors.by_contract.write().unwrap().insert(key.clone(), Arc::new(AtomicU64::new(ticket)));
        let headers = HeaderMap::new();
        (0..n)
            .map(|_| {
                plan(policy, &key, endpoints, &headers, &cursors, &outliers).order(endpoints, &outliers).next().unwrap()
            })
            .collect()
    }

    #[test]
    fn every_rotation_keeps_its_order_when_the_cursor_wraps_around() {
        let endpoints: Vec<_> = (0..3).map(|i| endpoint(i, 1)).collect();
        let unweighted: Vec<_> = (0..3).map(|i| endpoint(i, 0)).collect();
        let hashed_without_header = Policy {
            kind: PolicyKind::ConsistentHash,
            hash_header: Some("x-user".into()),
            idempotent: false,
            rewrite_to: true,
            ..Policy::default()
        };
        let weighted = Policy { kind: PolicyKind::Weighted, ..Policy::default() };
        // Tickets u64::MAX - 1, u64::MAX, then 0 and 1 again: 2^64 - 1 is a multiple of 3.
        let wrapped = [2, 0, 0, 1];
        assert_eq!(firsts_from(&Policy::default(), &endpoints, u64::MAX - 1, 4), wrapped);
        assert_eq!(firsts_from(&hashed_without_header, &endpoints, u64::MAX - 1, 4), wrapped);
        assert_eq!(firsts_from(&weighted, &unweighted, u64::MAX - 1, 4), wrapped);
        // Weighted: the stride of a total of 3 is 2; tickets wrap modulo 2^64 before the modulo.
        let expected: Vec<usize> =
            [u64::MAX - 1, u64::MAX, 0, 1].iter().map(|t| (t.wrapping_mul(2) % 3) as usize).collect();
        assert_eq!(firsts_from(&weighted, &endpoints, u64::MAX - 1, 4), expected);
    }

    #[test]
    fn weighted_rotates_like_round_robin_when_every_weight_is_zero() {
        let endpoints: Vec<_> = (0..3).map(|i| endpoint(i, 0)).collect();
        let policy = Policy { kind: PolicyKind::Weighted, ..Policy::default() };
        assert_eq!(firsts(&policy, &endpoints, &HeaderMap::new(), 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn a_heavy_endpoint_is_interleaved_through_the_cycle_never_served_in_one_run() {
        // One endpoint of weight 10 among ten of weight 1: half of every cycle goes to it, at
        // most two in a row (the stride of a total of 20 is 13).
        let endpoints: Vec<_> = std::iter::once(endpoint(0, 10)).chain((1..11).map(|i| endpoint(i, 1))).collect();
        let policy = Policy { kind: PolicyKind::Weighted, ..Policy::default() };
        let picks = firsts(&policy, &endpoints, &HeaderMap::new(), 200);
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 100);
        let longest_heavy_run = picks.chunk_by(|a, b| a == b).filter(|run| run[0] == 0).map(<[usize]>::len).max();
        assert_eq!(longest_heavy_run, Some(2), "{:?}", &picks[..20]);
        assert!((1..11).all(|i| picks.iter().filter(|&&p| p == i).count() == 10));
    }

    #[test]
    fn least_outstanding_never_picks_the_busiest_of_several() {
        let outliers = Outliers::default();
        let cursors = Cursors::default();
        let key = ContractKey::from_text("k");
        let policy = Policy { kind: PolicyKind::LeastOutstanding, ..Policy::default() };
        let endpoints: Vec<_> = (0..3).map(|i| endpoint(i, 1)).collect();
        let _busy = (0..5).map(|_| outliers.start(&endpoints[0].id)).collect::<Vec<_>>();
        let mut picked = [0; 3];
        for _ in 0..300 {
            let first = plan(&policy, &key, &endpoints, &HeaderMap::new(), &cursors, &outliers)
                .order(&endpoints, &outliers)
                .next()
                .unwrap();
            picked[first] += 1;
        }
        assert_eq!(picked[0], 0, "two distinct candidates: the busy one always loses");
        assert!(picked[1] > 0 && picked[2] > 0, "either idle one may win: {picked:?}");
        // The other way round: the idle endpoint is the first of two.
        let outliers = Outliers::default();
        let two: Vec<_> = (0..2).map(|i| endpoint(i, 1)).collect();
        let _busy = (0..5).map(|_| outliers.start(&two[1].id)).collect::<Vec<_>>();
        for _ in 0..20 {
            let first = plan(&policy, &key, &two, &HeaderMap::new(), &cursors, &outliers).order(&two, &outliers).next();
            assert_eq!(first, Some(0));
        }
    }

    #[test]
    fn an_empty_contract_plans_no_try() {
        let outliers = Outliers::default();
        let cursors = Cursors::default();
        let key = ContractKey::from_text("k");
        for kind in
            [PolicyKind::RoundRobin, PolicyKind::Weighted, PolicyKind::LeastOutstanding, PolicyKind::ConsistentHash]
        {
            let policy = Policy {
                kind,
                hash_header: Some("x-user".into()),
                idempotent: false,
                rewrite_to: true,
                ..Policy::default()
            };
            let mut order = plan(&policy, &key, &[], &HeaderMap::new(), &cursors, &outliers).order(&[], &outliers);
            assert_eq!(order.next(), None);
            assert!(!order.all_ejected());
        }
    }

    /// FNV-1a 64 and the splitmix64 finalizer, checked against their published test vectors: a
    /// different hash would send every sticky key elsewhere while nodes of two builds disagree.
    #[test]
    fn the_stable_hash_is_fnv_1a_64_and_the_mix_is_splitmix64() {
        assert_eq!(stable_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(b"foobar"), 0x8594_4171_f739_67e8);
        // The first two outputs of splitmix64 seeded with 0.
        assert_eq!(mix(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix(0x3c6e_f372_fe94_f82a), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn consistent_hash_spreads_keys_over_every_endpoint_the_same_way_on_every_node() {
        let endpoints: Vec<_> = (0..5).map(|i| endpoint(i, 1)).collect();
        let pick = |user: String| rendezvous(&endpoints, user.as_bytes());
        // The same keys land on the same endpoints on every node and in every build.
        let picks: Vec<usize> = (0..16).map(|i| pick(format!("user{i}"))).collect();
        assert_eq!(picks, [1, 0, 3, 3, 1, 3, 4, 1, 1, 1, 0, 0, 0, 2, 0, 1]);
        let mut counts = [0; 5];
        for i in 0..200 {
            counts[pick(format!("user{i}"))] += 1;
        }
        assert!(counts.iter().all(|&count| count >= 20), "200 keys over 5 endpoints: {counts:?}");
    }
}
