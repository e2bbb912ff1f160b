//! Blocking reads, as Consul's blocking queries: a list that names the applied index its caller
//! has seen (`?index=N`) waits until this node's applied index passes it, or until its `wait`
//! ends, and then answers as any read does. Every list carries the index it reflects in
//! `X-Switchboard-Index`, so a watcher loops: read, remember the index, read again with it.
//!
//! The index is the node's applied log index: it moves with every applied change of any
//! contract (heartbeats and health probes are not log entries and do not move it), so a wake
//! may find the caller's contract unchanged, as Consul's may. Waits are bounded per node: past
//! [`MAX_WATCHES`] open ones (blocking reads and event streams together) a new one is refused at
//! once with 429 `too_many_watches`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderName;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ApiError;
use crate::raft::AppliedView;

/// The applied index a read reflects.
pub const INDEX_HEADER: HeaderName = HeaderName::from_static("x-switchboard-index");
/// How long a blocking read waits when it names no `wait` (Consul's default).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// The longest `wait` a blocking read may ask for (Consul's cap).
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// Blocking reads open at once on one node.
pub const MAX_WATCHES: usize = 1024;
/// How long an event stream stays silent before it sends a heartbeat: within the idle timeouts
/// of the proxies in front (15 s for the API in the compose HAProxy).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// A blocking read's parameters, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Answer once the applied index is past this one.
    pub index: u64,
    /// Or after this long.
    pub wait: Duration,
}

impl Wait {
    /// The blocking read `?index=` and `?wait=` ask for, if any; `wait` alone is refused.
    pub fn parse(index: Option<u64>, wait: Option<&str>) -> Result<Option<Self>, ApiError> {
        let wait = wait
            .map(|text| {
                humantime::parse_duration(text).ok().filter(|wait| !wait.is_zero() && *wait <= MAX_WAIT).ok_or_else(
                    || {
                        ApiError::bad_request(
                            "invalid_wait",
                            format!(
                                "wait must be a duration like 30s or 500ms, above zero and at most {}s",
                                MAX_WAIT.as_secs()
                            ),
                        )
                    },
                )
            })
            .transpose()?;
        match (index, wait) {
            (Some(index), wait) => Ok(Some(Self { index, wait: wait.unwrap_or(DEFAULT_WAIT) })),
            (None, Some(_)) => Err(ApiError::bad_request(
                "invalid_wait",
                "wait needs index (the X-Switchboard-Index of an earlier read)",
            )),
            (None, None) => Ok(None),
        }
    }
}

/// The open blocking reads of one node.
#[derive(Debug, Clone)]
pub struct Watches {
    open: Arc<Semaphore>,
    limit: usize,
    /// The node is stopping: every wait answers at once, so that none holds up the drain.
    stop: CancellationToken,
    /// How long an idle event stream waits before a heartbeat.
    heartbeat: Duration,
}

impl Default for Watches {
    fn default() -> Self {
        Self::new(MAX_WATCHES, CancellationToken::new())
    }
}

impl Watches {
    pub fn new(limit: usize, stop: CancellationToken) -> Self {
        Self { open: Arc::new(Semaphore::new(limit)), limit, stop, heartbeat: HEARTBEAT }
    }

    /// The same, with idle event streams sending a heartbeat every `heartbeat` (tests).
    pub fn with_heartbeat(self, heartbeat: Duration) -> Self {
        Self { heartbeat, ..self }
    }

    /// How long an idle event stream waits before a heartbeat.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// A place for one more open watch (a blocking read or an event stream), held until dropped;
    /// refused at once when as many watches are open as the node takes.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.open.clone().try_acquire_owned().map_err(|_| ApiError::TooManyWatches(self.limit))
    }

    /// Cancelled when the node stops: every watch then ends.
    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    /// Waits until `view`'s applied index passes `wait.index`, `wait.wait` has passed or the
    /// node stops; refused at once when as many watches are open as the node takes.
    pub async fn wait_past(&self, view: &AppliedView, wait: Wait) -> Result<(), ApiError> {
        let _open = self.admit()?;
        let mut applied = view.subscribe();
        // The channel closes only when the node stops; the read then answers what it has.
        tokio::select! {
            _ = applied.wait_for(|index| *index > wait.index) => {}
            () = tokio::time::sleep(wait.wait) => {}
            () = self.stop.cancelled() => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn a_blocking_read_names_an_index_and_at_most_ten_minutes() {
        assert_eq!(Wait::parse(None, None).unwrap(), None);
        assert_eq!(Wait::parse(Some(7), None).unwrap(), Some(Wait { index: 7, wait: DEFAULT_WAIT }));
        assert_eq!(
            Wait::parse(Some(7), Some("500ms")).unwrap(),
            Some(Wait { index: 7, wait: Duration::from_millis(500) })
        );
        assert_eq!(Wait::parse(Some(0), Some("10m")).unwrap(), Some(Wait { index: 0, wait: MAX_WAIT }));
        for (index, wait) in [(Some(1), "0s"), (Some(1), "11m"), (Some(1), "soon"), (Some(1), "-1s"), (None, "30s")] {
            let err = Wait::parse(index, Some(wait)).unwrap_err();
            assert_eq!(err.status_and_code().1, "invalid_wait", "{index:?} {wait}");
        }
    }

    #[tokio::test]
    async fn waits_past_the_limit_are_refused_at_once_and_a_stopping_node_ends_the_rest() {
        let stop = CancellationToken::new();
        let watches = Watches::new(1, stop.clone());
        let view = AppliedView::default();
        let mut first = Box::pin(watches.wait_past(&view, Wait { index: 0, wait: MAX_WAIT }));
        assert!(futures_util::poll!(&mut first).is_pending(), "nothing was applied: the first waits");
        // The first holds the only place: the second is refused without waiting.
        let refused = watches.wait_past(&view, Wait { index: 0, wait: MAX_WAIT }).await.unwrap_err();
        assert_eq!(refused.status_and_code(), (StatusCode::TOO_MANY_REQUESTS, "too_many_watches"));
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(10), first).await.expect("stopping ends the wait");
        assert!(ended.is_ok());
    }
}
