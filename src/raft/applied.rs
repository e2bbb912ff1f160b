//! What the node has applied, for readers: the registry and the log position it reflects,
//! published by the state machine after every applied batch. The control API, the data plane
//! and token checks load it without locks and keep the immutable copy they loaded; those who wait
//! for a position subscribe to the applied index.
//!
//! The view also says how fresh it is: when a leader last confirmed it (the node heard from a
//! leader and had applied what that leader had shown it before). The data plane routes from the
//! view whatever its age (routing never waits on consensus); explain, metrics and the data
//! plane's readiness report the age.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::events::EventLog;
use crate::registry::RegistryState;

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
    /// Milliseconds after [`origin`] (plus one) when a leader last confirmed the view; 0: never.
    confirmed: Arc<AtomicU64>,
    /// The events of the latest applied entries (pushed before the state that has them is).
    events: EventLog,
}

impl Default for AppliedView {
    fn default() -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(Applied::default())),
            index: watch::Sender::new(0),
            confirmed: Arc::default(),
            events: EventLog::default(),
        }
    }
}

/// The instant the process's confirmation times count from.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl AppliedView {
    pub fn load(&self) -> Arc<Applied> {
        self.current.load_full()
    }

    /// The latest applied state, for a short synchronous look (no reference count taken; do
    /// not hold it across an await).
    pub fn peek(&self) -> arc_swap::Guard<Arc<Applied>> {
        self.current.load()
    }

    /// Makes `applied` the state readers load (the state machine, after each applied batch).
    pub(super) fn publish(&self, applied: Applied) {
        let index = applied.index;
        self.current.store(Arc::new(applied));
        self.index.send_replace(index);
    }

    /// The events of the latest applied entries; the applied index ticks after they are in.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// A receiver of the applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// Records that a leader confirmed the view at `at`.
    pub fn confirm(&self, at: Instant) {
        let ms = at.saturating_duration_since(origin()).as_millis() as u64 + 1;
        self.confirmed.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long ago, at `now`, a leader last confirmed the view; `None` if none has since the
    /// process started.
    pub fn confirmed_ago(&self, now: Instant) -> Option<Duration> {
        let ms = self.confirmed.load(Ordering::Relaxed).checked_sub(1)?;
        Some(now.saturating_duration_since(origin() + Duration::from_millis(ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_is_unconfirmed_until_a_leader_confirms_it_and_then_ages() {
        let view = AppliedView::default();
        let start = origin() + Duration::from_secs(1);
        assert_eq!(view.confirmed_ago(start), None);
        view.confirm(start);
        let later = start + Duration::from_millis(1_500);
        let age = view.confirmed_ago(later).unwrap();
        assert_eq!(age, Duration::from_millis(1_500));
        // An older confirmation never moves it back; a clone shares it.
        view.confirm(origin());
        assert_eq!(view.confirmed_ago(later), Some(Duration::from_millis(1_500)));
        let shared = view.clone();
        shared.confirm(later);
        drop(shared);
        assert_eq!(view.confirmed_ago(later), Some(Duration::ZERO));
    }
}
