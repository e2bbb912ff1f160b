//! What a node says about itself: its status to peers (signed, see `peer_auth`), its view of the
//! cluster for operators, and whether it is ready for traffic.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::ServerState;
use switchboard_proto::peer::Status;

use super::Cluster;
use super::ClusterView;
use super::LEADER_QUORUM_STALE;
use super::MemberView;
use super::PeerStatus;
use super::READY_GRACE;
use super::READY_MAX_LAG;
use super::Readiness;
use super::STATUS_TIMEOUT;
use super::StatusAnswer;
use super::StatusRequest;
use crate::raft::NodeId;

impl Cluster {
    /// Answers a status request, signing its challenge.
    pub fn answer_status(&self, request: &StatusRequest) -> StatusAnswer {
        let status = self.peer_status();
        let proof = self.inner.peers.key().prove(&request.challenge, status.node_id, status.incarnation);
        StatusAnswer { status, proof }
    }

    /// The status of the node at `addr`, accepted only when the node proves it holds the
    /// cluster secret: nothing else is ever sent to an address that has not.
    pub(super) async fn ask_status(&self, addr: &str) -> Result<PeerStatus, crate::raft::PeerError> {
        let challenge = crate::peer_auth::challenge()
            .map_err(|err| crate::raft::PeerError::Unreachable { addr: addr.to_owned(), cause: err.to_string() })?;
        let request = StatusRequest { challenge };
        let answer: StatusAnswer =
            self.inner.peers.call::<Status>(addr, &request, STATUS_TIMEOUT).await.map_err(|err| match err {
                // An answer that is not a status (or a refusal) proves nothing either.
                crate::raft::PeerError::Decode { .. } | crate::raft::PeerError::Status { .. } => {
                    crate::raft::PeerError::Unproven { addr: addr.to_owned() }
                }
                other => other,
            })?;
        let key = self.inner.peers.key();
        if !key.check_proof(&request.challenge, answer.status.node_id, answer.status.incarnation, &answer.proof) {
            return Err(crate::raft::PeerError::Unproven { addr: addr.to_owned() });
        }
        Ok(answer.status)
    }

    pub fn peer_status(&self) -> PeerStatus {
        let metrics = self.metrics();
        let leader = metrics
            .current_leader
            .and_then(|id| metrics.membership_config.membership().get_node(&id).map(|node| (id, node.clone())));
        PeerStatus {
            node_id: self.node_id(),
            incarnation: self.inner.identity.incarnation,
            initialized: metrics.last_log_index.is_some(),
            admitted: self.admits(&metrics.membership_config),
            leader,
            last_log_index: metrics.last_log_index,
            applied_index: self.inner.view.load().index,
        }
    }

    pub fn cluster_view(&self) -> ClusterView {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberView {
                id: *id,
                peer_addr: node.addr.clone(),
                incarnation: node.incarnation.map(|i| format!("{i:016x}")),
                role: if voters.contains(id) { "voter" } else { "learner" }.to_owned(),
                matched_index: metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index),
            })
            .collect();
        ClusterView {
            node_id: self.node_id(),
            role: role_name(metrics.state).to_owned(),
            admitted: self.is_admitted(),
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied_index: metrics.last_applied.map(|l| l.index),
            snapshot_index: metrics.snapshot.map(|l| l.index),
            purged_index: metrics.purged.map(|l| l.index),
            millis_since_quorum_ack: metrics.millis_since_quorum_ack,
            members,
        }
    }

    /// Ready: admitted, knows a leader (or knew one within a short grace), the leader still hears
    /// from a quorum, and this node has applied nearly everything the leader has.
    pub fn readiness(&self) -> Readiness {
        let not_ready = |reason: &str| Readiness { ready: false, reason: Some(reason.to_owned()) };
        if self.inner.stopping.load(Ordering::Acquire) {
            return not_ready("shutting down");
        }
        let metrics = self.metrics();
        if metrics.running_state.is_err() {
            return not_ready("raft stopped after a fatal error");
        }
        if !self.is_admitted() {
            return not_ready("waiting to be admitted by the leader");
        }
        let now = Instant::now();
        let mut seen = self.inner.last_leader_seen.lock().unwrap_or_else(|p| p.into_inner());
        if metrics.current_leader.is_some() {
            *seen = Some(now);
        }
        if seen.is_none_or(|at| now - at > READY_GRACE) {
            return not_ready("no leader known");
        }
        drop(seen);
        let applied = self.inner.view.load().index;
        if metrics.state == ServerState::Leader {
            let stale = metrics.millis_since_quorum_ack.is_none_or(|ms| ms > LEADER_QUORUM_STALE.as_millis() as u64);
            if stale {
                return not_ready("leader without a quorum");
            }
            if metrics.last_log_index.unwrap_or(0) > applied + READY_MAX_LAG {
                return not_ready("applying committed entries");
            }
            return Readiness { ready: true, reason: None };
        }
        let progress = *self.inner.leader_progress.lock().unwrap_or_else(|p| p.into_inner());
        match progress {
            Some((leader_index, at)) if now - at <= READY_GRACE => {
                if leader_index > applied + READY_MAX_LAG {
                    return not_ready("catching up with the leader");
                }
                Readiness { ready: true, reason: None }
            }
            _ => not_ready("leader not heard from"),
        }
    }

    /// Ready to route, the data plane's readiness: this process's replica caught up with a leader
    /// at least once, and the node is still a member. An election or a loss of quorum changes
    /// nothing: every node routes from its own applied view, so a node that was caught up keeps
    /// routing while writes wait for a leader. Not ready while stopping, before the first
    /// catch-up (a new or wiped node), once no longer a member, and, with
    /// `--max-stale-routing`, once no leader has confirmed the view for that long.
    pub fn data_readiness(&self) -> Readiness {
        let not_ready = |reason: String| Readiness { ready: false, reason: Some(reason) };
        if self.inner.stopping.load(Ordering::Acquire) {
            return not_ready("shutting down".into());
        }
        if self.metrics().running_state.is_err() {
            return not_ready("raft stopped after a fatal error".into());
        }
        if !self.is_admitted() {
            return not_ready("not a member of the cluster".into());
        }
        if !self.inner.caught_up.load(Ordering::Acquire) {
            return not_ready("not caught up with a leader since start".into());
        }
        if let Some(limit) = self.inner.config.max_stale_routing {
            let age = self.inner.view.confirmed_ago(Instant::now()).unwrap_or(Duration::MAX);
            if age > limit {
                return not_ready(format!(
                    "no leader has confirmed the view for {} ms (--max-stale-routing {} ms)",
                    age.as_millis(),
                    limit.as_millis()
                ));
            }
        }
        Readiness { ready: true, reason: None }
    }

    /// How long ago a leader last confirmed the view this node routes from.
    pub fn view_age(&self) -> Option<Duration> {
        self.inner.view.confirmed_ago(Instant::now())
    }

    /// From now on the node reports not ready (it keeps serving until it stops).
    pub fn begin_stopping(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }
}

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}
