//! Per-endpoint health as this node sees it: requests in flight and outlier ejection.
//!
//! After [`CONSECUTIVE_FAILURES`] failures in a row (unreachable, reset, timed out, or a 502, 503
//! or 504 answer) an endpoint is ejected: skipped by selection for a while. Each ejection lasts
//! twice as long as the previous one, up to a cap; the first success after an ejection ends the
//! streak. Nothing here is replicated: every node judges endpoints by what it sees.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use crate::registry::FastHash;
use crate::registry::RegistrationId;

/// Failures in a row that eject an endpoint.
pub const CONSECUTIVE_FAILURES: u32 = 3;
/// Length of a first ejection.
pub const BASE_EJECTION: Duration = Duration::from_secs(1);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct EndpointStats {
    in_flight: AtomicU32,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since `Outliers::origin` until which the endpoint is ejected.
    ejected_until: AtomicU64,
}

/// Health of every endpoint this node has sent requests to.
#[derive(Debug)]
pub struct Outliers {
    origin: Instant,
    stats: RwLock<HashMap<RegistrationId, Arc<EndpointStats>, FastHash>>,
}

impl Default for Outliers {
    fn default() -> Self {
        Self { origin: Instant::now(), stats: RwLock::default() }
    }
}

/// Counts a request in flight until dropped; its endpoint's entry, looked up once.
#[derive(Debug)]
pub struct InFlight(Arc<EndpointStats>);

impl InFlight {
    /// Records that the endpoint answered: its failure streak ends.
    pub fn success(&self) {
        self.0.failures.store(0, Ordering::Relaxed);
        self.0.ejections.store(0, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Outliers {
    /// Milliseconds from `origin` to `now`.
    fn ms_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn get(&self, id: &RegistrationId) -> Option<Arc<EndpointStats>> {
        self.stats.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn entry(&self, id: &RegistrationId) -> Arc<EndpointStats> {
        if let Some(stats) = self.get(id) {
            return stats;
        }
        self.stats.write().unwrap_or_else(|p| p.into_inner()).entry(*id).or_default().clone()
    }

    pub fn is_ejected(&self, id: &RegistrationId) -> bool {
        self.is_ejected_at(id, Instant::now())
    }

    /// Whether an endpoint is ejected at `now`.
    fn is_ejected_at(&self, id: &RegistrationId, now: Instant) -> bool {
        self.get(id).is_some_and(|s| s.ejected_until.load(Ordering::Relaxed) > self.ms_at(now))
    }

    pub fn in_flight(&self, id: &RegistrationId) -> u32 {
        self.get(id).map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }

    pub fn start(&self, id: &RegistrationId) -> InFlight {
        self.start_counted(id).0
    }

    /// [`Self::start`], with the requests that were in flight to the endpoint before this one.
    pub fn start_counted(&self, id: &RegistrationId) -> (InFlight, u32) {
        let stats = self.entry(id);
        let before = stats.in_flight.fetch_add(1, Ordering::Relaxed);
        (InFlight(stats), before)
    }

    #[cfg(test)]
    fn success(&self, id: &RegistrationId) {
        self.start(id).success();
    }

    /// Records a failure; returns the ejection it caused, if any.
    pub fn failure(&self, id: &RegistrationId) -> Option<Duration> {
        self.failure_at(id, Instant::now())
    }

    /// Records a failure seen at `now`; returns the ejection it caused, if any.
    fn failure_at(&self, id: &RegistrationId, now: Instant) -> Option<Duration> {
        let stats = self.entry(id);
        let failures = stats.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < CONSECUTIVE_FAILURES {
            return None;
        }
        let ejections = stats.ejections.fetch_add(1, Ordering::Relaxed);
        let length = BASE_EJECTION.saturating_mul(1 << ejections.min(16)).min(MAX_EJECTION);
        stats.ejected_until.store(self.ms_at(now) + length.as_millis() as u64, Ordering::Relaxed);
        // One more failure after the ejection ends ejects again, for longer.
        stats.failures.store(CONSECUTIVE_FAILURES - 1, Ordering::Relaxed);
        Some(length)
    }

    /// Ejects an endpoint at once and for as long as the test runs, however slowly (unit tests
    /// only: never compiled into the product).
    #[cfg(test)]
    pub fn eject_now(&self, id: &RegistrationId) {
        self.entry(id).ejected_until.store(u64::MAX, Ordering::Relaxed);
    }

    /// Forgets endpoints that are no longer registered.
    pub fn retain(&self, live: &impl Fn(&RegistrationId) -> bool) {
        self.stats
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, stats| live(id) || stats.in_flight.load(Ordering::Relaxed) > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_after_consecutive_failures_grows_and_resets() {
        let outliers = Outliers::default();
        let id = RegistrationId::of("http://a/", "n", "c");
        assert_eq!(outliers.failure(&id), None);
        outliers.success(&id);
        assert_eq!(outliers.failure(&id), None);
        assert_eq!(outliers.failure(&id), None);
        assert!(!outliers.is_ejected_at(&id, outliers.origin), "two failures in a row eject nothing");
        assert_eq!(outliers.failure_at(&id, outliers.origin), Some(BASE_EJECTION));
        assert!(outliers.is_ejected_at(&id, outliers.origin));
        assert_eq!(
            outliers.failure(&id),
            Some(BASE_EJECTION * 2),
            "a failure right after an ejection ejects for longer"
        );
        assert_eq!(outliers.failure(&id), Some(BASE_EJECTION * 4));
        for _ in 0..20 {
            outliers.failure(&id);
        }
        assert_eq!(outliers.failure(&id), Some(MAX_EJECTION));
        outliers.success(&id);
        assert_eq!(outliers.failure(&id), None, "success resets the streak");
        assert_eq!(outliers.failure(&id), None);
        assert_eq!(outliers.failure(&id), Some(BASE_EJECTION), "and the length of the next ejection");
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let outliers = Outliers::default();
        let id = RegistrationId::of("http://a/", "n", "c");
        let (a, before_a) = outliers.start_counted(&id);
        let (b, before_b) = outliers.start_counted(&id);
        assert_eq!((before_a, before_b), (0, 1), "each start sees the requests before it");
        assert_eq!(outliers.in_flight(&id), 2);
        drop(a);
        let (c, before_c) = outliers.start_counted(&id);
        assert_eq!(before_c, 1);
        drop(b);
        drop(c);
        assert_eq!(outliers.in_flight(&id), 0);
        outliers.retain(&|_| false);
        assert_eq!(outliers.stats.read().unwrap().len(), 0);
    }

    #[test]
    fn an_ejection_lasts_its_length_from_the_failure_that_caused_it_then_doubles() {
        let outliers = Outliers::default();
        let id = RegistrationId::of("http://a/", "n", "c");
        let at = |ms: u64| outliers.origin + Duration::from_millis(ms);
        for _ in 1..CONSECUTIVE_FAILURES {
            assert_eq!(outliers.failure_at(&id, at(10_000)), None);
        }
        assert_eq!(outliers.failure_at(&id, at(10_000)), Some(BASE_EJECTION));
        assert!(outliers.is_ejected_at(&id, at(10_000)), "ejected from the failure");
        assert!(outliers.is_ejected_at(&id, at(10_999)), "ejected until its length has passed");
        assert!(!outliers.is_ejected_at(&id, at(11_000)), "back exactly when its length has passed");
        assert!(!outliers.is_ejected_at(&id, at(60_000)));
        // The next failure ejects again, for twice as long, from when it happened.
        assert_eq!(outliers.failure_at(&id, at(20_000)), Some(BASE_EJECTION * 2));
        assert!(outliers.is_ejected_at(&id, at(21_999)));
        assert!(!outliers.is_ejected_at(&id, at(22_000)));
    }

    #[test]
    fn an_endpoint_never_failed_is_not_ejected_and_has_nothing_in_flight() {
        let outliers = Outliers::default();
        let id = RegistrationId::of("http://a/", "n", "c");
        assert!(!outliers.is_ejected_at(&id, outliers.origin));
        assert_eq!(outliers.in_flight(&id), 0);
        let _request = outliers.start(&id);
        assert!(!outliers.is_ejected_at(&id, outliers.origin), "a request in flight is no failure");
    }

    #[test]
    fn retain_keeps_registered_endpoints_and_those_with_requests_in_flight() {
        let outliers = Outliers::default();
        let registered = RegistrationId::of("http://registered/", "n", "c");
        let gone_busy = RegistrationId::of("http://gone-busy/", "n", "c");
        let gone_idle = RegistrationId::of("http://gone-idle/", "n", "c");
        for id in [registered, gone_busy, gone_idle] {
            for _ in 0..CONSECUTIVE_FAILURES {
                outliers.failure_at(&id, outliers.origin);
            }
        }
        let in_flight = outliers.start(&gone_busy);
        outliers.retain(&|id| *id == registered);
        let mut kept: Vec<_> = outliers.stats.read().unwrap().keys().copied().collect();
        kept.sort();
        let mut expected = vec![registered, gone_busy];
        expected.sort();
        assert_eq!(kept, expected, "the idle endpoint that is gone is forgotten, the others are kept");
        assert!(outliers.is_ejected_at(&registered, outliers.origin), "what is kept keeps its ejection");
        drop(in_flight);
        outliers.retain(&|id| *id == registered);
        assert_eq!(outliers.stats.read().unwrap().keys().copied().collect::<Vec<_>>(), [registered]);
    }
}
