//! Writes and linearizable reads: a command goes to the leader (this node, or forwarded over the
//! peer protocol's `Write` RPC), is batched into one log entry with others (`batch`), and is
//! answered with what applying it did. A read index is confirmed by the leader the same way.
//! What makes a registration admissible is checked at each step by `admission`.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::error::RaftError;
use switchboard_proto::peer::ReadIndex;
use switchboard_proto::peer::Rpc;
use switchboard_proto::peer::Write;

use super::Cluster;
use super::ClusterError;
use super::Proposal;
use super::admission::Stage;
use crate::registry::Actor;
use crate::registry::Command;
use crate::registry::Origin;
use crate::registry::Outcome;

impl Cluster {
    /// Replicates a command through the leader and returns what applying it did. Every attempt
    /// carries the same request number, so one that is retried after an ambiguous forward is
    /// applied once and answered with what that application did.
    pub async fn write(&self, command: Command, actor: &Actor) -> Result<Outcome, ClusterError> {
        self.check_registration(&command, Stage::Entry).await?;
        let request = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let origin =
            Origin { node: self.node_id(), principal: actor.name.clone(), quota: actor.quota, request: Some(request) };
        let proposal = Proposal { command, origin };
        let local = |proposal: Proposal| async move { self.propose_local(proposal).await };
        self.on_leader::<Write, _, _, _, _>(proposal, local).await
    }

    /// Leader side of a write forwarded by a peer: admitted as this node admits its own writes,
    /// plus what the forwarding node could not know for sure.
    pub async fn propose_forwarded(&self, proposal: Proposal) -> Result<Outcome, ClusterError> {
        self.check_registration(&proposal.command, Stage::Forwarded).await?;
        self.propose_local(proposal).await
    }

    /// Leader side of a write. Fails with `NotLeader` on any other node.
    pub async fn propose_local(&self, proposal: Proposal) -> Result<Outcome, ClusterError> {
        self.check_registration(&proposal.command, Stage::Leader).await?;
        let written = self.inner.batcher.propose(proposal.origin, proposal.command);
        tokio::time::timeout(self.inner.config.request_timeout, written)
            .await
            .unwrap_or(Err(ClusterError::OutcomeUnknown))
    }

    /// Waits until this node has applied everything committed before the call: a linearizable
    /// read point. The leader confirms its leadership with a quorum first.
    pub async fn linearizable_barrier(&self) -> Result<(), ClusterError> {
        let local = |()| async move { self.read_index_local().await };
        let index = self.on_leader::<ReadIndex, _, _, _, _>((), local).await?;
        let mut applied = self.inner.view.subscribe();
        let wait = applied.wait_for(|applied| *applied >= index);
        match tokio::time::timeout(self.inner.config.request_timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_closed)) => Err(ClusterError::ShuttingDown),
            Err(_elapsed) => Err(ClusterError::NoLeader(self.inner.config.request_timeout.as_millis() as u64)),
        }
    }

    /// Leader side of a linearizable read: the index a reader must have applied.
    pub async fn read_index_local(&self) -> Result<u64, ClusterError> {
        let read = tokio::time::timeout(self.inner.config.request_timeout, self.inner.raft.get_read_log_id()).await;
        match read {
            Ok(Ok((read_log_id, _applied))) => Ok(read_log_id.map_or(0, |id| id.index)),
            // Not the leader, or a leader that cannot reach a quorum: retried until the deadline.
            Ok(Err(RaftError::APIError(_))) => Err(ClusterError::NotLeader),
            Ok(Err(RaftError::Fatal(_))) => Err(ClusterError::ShuttingDown),
            Err(_elapsed) => Err(ClusterError::NoLeader(self.inner.config.request_timeout.as_millis() as u64)),
        }
    }

    /// Runs `local` if this node leads, forwards `request` to the leader's `path` otherwise, and
    /// retries through elections until the request deadline.
    pub(super) async fn on_leader<R, Req, Resp, F, Fut>(&self, request: Req, local: F) -> Result<Resp, ClusterError>
    where
        R: Rpc<Request = Req, Answer = Result<Resp, ClusterError>>,
        Req: Clone,
        F: Fn(Req) -> Fut,
        Fut: Future<Output = Result<Resp, ClusterError>>,
    {
        let timeout = self.inner.config.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut metrics = self.inner.raft.metrics();
        let mut sent_somewhere = false;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if sent_somewhere {
                    ClusterError::OutcomeUnknown
                } else {
                    ClusterError::NoLeader(timeout.as_millis() as u64)
                });
            }
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.node_id() => match local(request.clone()).await {
                    Err(ClusterError::NotLeader) => None,
                    Err(ClusterError::OutcomeUnknown) => return Err(ClusterError::OutcomeUnknown),
                    done => Some(done),
                },
                Some((leader, node)) => match self.inner.peers.call::<R>(&node.addr, &request, remaining).await {
                    Ok(Err(ClusterError::NotLeader)) => None,
                    Ok(done) => Some(done),
                    Err(err) => {
                        sent_somewhere |= !err.not_sent();
                        tracing::debug!(leader, error = %err, "forward to leader failed, retrying");
                        None
                    }
                },
                None => None,
            };
            if let Some(done) = attempt {
                return done;
            }
            // Wait for news about the leader, but not long: a dead leader is only noticed by an
            // election, and a busy one may just have been slow.
            let pause = remaining.min(Duration::from_millis(50));
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }
}
