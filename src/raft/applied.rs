//! What the node has applied, for readers: the registry and the log position it reflects,
//! published by the state machine after every applied batch. The control API, the data plane
//! and token checks load it without locks and keep the immutable copy they loaded; those who wait
//! for a position subscribe to the applied index.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

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

    /// A receiver of the applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }
}
