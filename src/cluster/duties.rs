//! The node's background duties, started together and stopped together by one signal:
//! election gating, joining, probing the leader, promoting learners, gossiping and expiring
//! leases, purging the log behind snapshots, and telling the others whether this node probes.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::LEADER_QUORUM_STALE;

/// The running background duties of a node.
#[derive(Debug)]
pub struct Duties {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Duties {
    /// Signals every duty to stop and waits until each has.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Runs `duty` until it ends or `stop` is signalled.
async fn until(stop: CancellationToken, duty: impl Future<Output = ()>) {
    tokio::select! {
        () = duty => {}
        () = stop.cancelled() => {}
    }
}

impl Cluster {
    /// Starts every background duty of the node; they run until [`Duties::stop`] (or the end of
    /// the runtime).
    pub fn start_duties(&self) -> Duties {
        let stop = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(until(stop.clone(), self.clone().gate_elections())),
            tokio::spawn(until(stop.clone(), self.clone().join())),
            tokio::spawn(until(stop.clone(), self.clone().probe_leader())),
            tokio::spawn(until(stop.clone(), self.clone().promote_caught_up_learners())),
            tokio::spawn(until(stop.clone(), self.clone().gossip_leases())),
            tokio::spawn(until(stop.clone(), self.clone().reap_leases())),
            tokio::spawn(until(stop.clone(), self.clone().retain_log())),
            tokio::spawn(until(stop.clone(), self.clone().beat_probers())),
        ];
        Duties { stop, tasks }
    }

    /// Every node: purge the log behind its snapshots as `LogRetention` allows, once a second.
    pub(super) async fn retain_log(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let metrics = self.metrics();
            let (snapshot, purged) = (metrics.snapshot.map(|id| id.index), metrics.purged.map(|id| id.index));
            let Some(upto) = self.inner.config.retention.purge_upto(Instant::now(), snapshot, purged) else { continue };
            tracing::debug!(upto, ?snapshot, ?purged, "purging the log");
            if self.inner.raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
    }

    /// Follower duty: learn how far the leader's log is, for readiness. Runs until shutdown.
    pub(super) async fn probe_leader(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaderless: Option<Instant> = None;
        loop {
            tick.tick().await;
            let leader = self.leader();
            self.note_leader_known(leader.is_some(), &mut leaderless);
            let Some((leader, node)) = leader else { continue };
            let index = if leader == self.node_id() {
                // A leader speaks for the cluster only while a quorum still follows it.
                let metrics = self.metrics();
                let fresh =
                    metrics.millis_since_quorum_ack.is_some_and(|ms| ms <= LEADER_QUORUM_STALE.as_millis() as u64);
                if !fresh {
                    continue;
                }
                metrics.last_log_index
            } else {
                match self.ask_status(&node.addr).await {
                    Ok(status) => status.last_log_index,
                    Err(_) => continue,
                }
            };
            let now = Instant::now();
            let previous =
                self.inner.leader_progress.lock().unwrap_or_else(|p| p.into_inner()).replace((index.unwrap_or(0), now));
            // Confirmed: this node has applied what a leader had shown it before (at the latest,
            // one probe ago), so its view trails that leader by at most a probe interval.
            let shown = previous.map_or(index.unwrap_or(0), |(shown, _)| shown);
            if self.inner.view.load().index >= shown {
                self.inner.view.confirm(now);
                if !self.inner.caught_up.swap(true, Ordering::AcqRel) {
                    tracing::info!(
                        leader,
                        index = shown,
                        "caught up with the leader: the data plane is ready to route"
                    );
                }
            }
        }
    }

    /// Logs once when no leader is known any more (the node routes from its last view) and once
    /// when one is known again.
    fn note_leader_known(&self, known: bool, leaderless: &mut Option<Instant>) {
        crate::metrics::METRICS.leader_known.set(i64::from(known));
        match (known, *leaderless) {
            (false, None) if self.inner.caught_up.load(Ordering::Acquire) => {
                *leaderless = Some(Instant::now());
                let age = self.inner.view.confirmed_ago(Instant::now()).map(|a| a.as_millis() as u64);
                tracing::warn!(
                    view_confirmed_ms_ago = age,
                    "no leader known: routing from the last applied view; writes wait for a leader"
                );
            }
            (true, Some(since)) => {
                *leaderless = None;
                tracing::info!(without_leader_ms = since.elapsed().as_millis() as u64, "a leader is known again");
            }
            _ => {}
        }
    }

    /// Duty: a node campaigns only while the membership it knows admits its incarnation. A node
    /// whose data directory is new or was wiped never starts an election with a forgotten log.
    pub(super) async fn gate_elections(self) {
        let mut metrics = self.inner.raft.metrics();
        let mut enabled = None;
        loop {
            let admitted = self.admits(&metrics.borrow_and_update().membership_config);
            if enabled != Some(admitted) {
                self.inner.raft.runtime_config().elect(admitted);
                tracing::debug!(admitted, "elections {}", if admitted { "enabled" } else { "disabled" });
                enabled = Some(admitted);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }
}
