//! The node's background duties, started together and stopped together by one signal:
//! election gating, joining, probing the leader, promoting learners, gossiping and expiring
//! leases.

use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Cluster;

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
        ];
        Duties { stop, tasks }
    }

    /// Follower duty: learn how far the leader's log is, for readiness. Runs until shutdown.
    pub(super) async fn probe_leader(self) {
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some((leader, node)) = self.leader() else { continue };
            let index = if leader == self.node_id() {
                self.metrics().last_log_index
            } else {
                match self.ask_status(&node.addr).await {
                    Ok(status) => status.last_log_index,
                    Err(_) => continue,
                }
            };
            *self.inner.leader_progress.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((index.unwrap_or(0), Instant::now()));
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
