//! Membership and admission: bootstrap with the other initial voters, admission of a node's
//! incarnation by the leader, promotion of caught-up learners, and operator changes (add and
//! remove nodes), each forwarded to the leader over the peer protocol.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use openraft::ChangeMembers;
use openraft::ServerState;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use switchboard_proto::peer::Admit;
use switchboard_proto::peer::Membership;

use super::AdmitReply;
use super::AdmitRequest;
use super::CATCH_UP_TIMEOUT;
use super::CAUGHT_UP_LAG;
use super::Cluster;
use super::ClusterError;
use super::MembershipRequest;
use super::PeerStatus;
use super::from_write_error;
use crate::raft::NodeId;
use crate::raft::PeerNode;
use crate::raft::typ;

impl Cluster {
    /// Leader duty: promote initial voters that rejoined as learners once they caught up, and
    /// finish a membership change that a previous leader left in its joint phase.
    pub(super) async fn promote_caught_up_learners(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let metrics = self.metrics();
            if metrics.state != ServerState::Leader {
                continue;
            }
            let membership = metrics.membership_config.membership();
            if let [.., last] = membership.get_joint_config().as_slice()
                && membership.get_joint_config().len() > 1
            {
                let finish = ChangeMembers::ReplaceAllVoters(last.clone());
                match self.inner.raft.change_membership(finish, false).await {
                    Ok(_) => tracing::info!(voters = ?last, "finished a joint membership change"),
                    Err(err) => tracing::warn!(error = %err, "finishing a joint membership change failed, will retry"),
                }
                continue;
            }
            let learners: Vec<NodeId> = membership.learner_ids().collect();
            for id in learners {
                if !self.inner.config.initial_voters.contains_key(&id) || !caught_up(&metrics, id) {
                    continue;
                }
                let promoted = self.inner.raft.change_membership(ChangeMembers::AddVoterIds([id].into()), false).await;
                match promoted {
                    Ok(_) => tracing::info!(node = id, "learner promoted to voter"),
                    Err(err) => tracing::warn!(node = id, error = %err, "promotion failed, will retry"),
                }
            }
        }
    }

    /// Duty of a node that the membership it knows does not admit (a new or wiped data
    /// directory): bootstrap a brand-new cluster together with the other initial voters, or ask
    /// the running cluster's leader to admit this incarnation. Runs until shutdown, so a node that
    /// is removed later asks again.
    pub(super) async fn join(self) {
        let node_id = self.node_id();
        let mut metrics = self.inner.raft.metrics();
        let mut waiting_for_operator = false;
        loop {
            if self.admits(&metrics.borrow_and_update().membership_config) {
                if metrics.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let pause = match self.join_once().await {
                Ok(AdmitReply::Admitted) => {
                    tracing::info!(node = node_id, "admitted to the cluster; waiting for the membership to arrive");
                    waiting_for_operator = false;
                    Duration::from_millis(500)
                }
                Ok(AdmitReply::Retry) => Duration::from_millis(200),
                Ok(AdmitReply::NotMember) => {
                    if !waiting_for_operator {
                        tracing::info!(
                            node = node_id,
                            "not a member of the running cluster; waiting for an operator to add it (POST /v1/cluster/nodes)"
                        );
                    }
                    waiting_for_operator = true;
                    Duration::from_secs(2)
                }
                Err(err) => {
                    tracing::warn!(node = node_id, error = %err, "joining the cluster failed, retrying");
                    Duration::from_millis(500)
                }
            };
            // Stop waiting as soon as a membership that admits this node arrives.
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }

    /// One attempt to join. `Retry` also means "nothing to do yet" (no leader known, or another
    /// initial voter bootstraps).
    pub(super) async fn join_once(&self) -> Result<AdmitReply, ClusterError> {
        let config = &self.inner.config;
        let identity = self.inner.identity;
        let mut answers = Vec::new();
        for (id, node) in &config.initial_voters {
            if *id == config.node_id {
                continue;
            }
            if let Ok(status) = self.ask_status(&node.addr).await {
                if status.node_id == *id {
                    answers.push(status);
                } else {
                    tracing::warn!(listed = id, answered = status.node_id, addr = %node.addr, "--peers lists a node at an address where another node answers");
                }
            }
        }
        let this_node = PeerNode { incarnation: Some(identity.incarnation), ..config.node.clone() };
        if answers.iter().any(|status| status.initialized) || self.metrics().last_log_index.is_some() {
            // A cluster is running: ask its leader to admit this incarnation.
            let Some((_, leader)) = answers.iter().find_map(|status| status.leader.clone()).or_else(|| self.leader())
            else {
                return Ok(AdmitReply::Retry);
            };
            let request = AdmitRequest { node_id: config.node_id, node: this_node };
            let reply: Result<AdmitReply, ClusterError> = self
                .inner
                .peers
                .call::<Admit>(&leader.addr, &request, config.request_timeout)
                .await
                .map_err(|err| ClusterError::NodeUnreachable(err.to_string()))?;
            return match reply {
                Err(ClusterError::NotLeader) => Ok(AdmitReply::Retry),
                other => other,
            };
        }
        // No node has a log: a brand-new cluster, formed only when every initial voter answers
        // and none holds a log, so a rejoin (some voter still has the data) is never taken for a
        // bootstrap. The lowest id proposes the one membership, with every voter's incarnation.
        let everyone_answered = answers.len() + 1 == config.initial_voters.len();
        let lowest = config.initial_voters.keys().next() == Some(&config.node_id);
        if !config.initial_voters.contains_key(&config.node_id) || !everyone_answered || !lowest {
            return Ok(AdmitReply::Retry);
        }
        let mut voters = BTreeMap::new();
        voters.insert(config.node_id, this_node);
        for status in &answers {
            let listed = &config.initial_voters[&status.node_id];
            voters.insert(status.node_id, PeerNode { incarnation: Some(status.incarnation), ..listed.clone() });
        }
        match self.inner.raft.initialize(voters).await {
            Ok(()) => {
                tracing::info!(voters = ?config.initial_voters.keys().collect::<Vec<_>>(), "cluster initialized");
                Ok(AdmitReply::Admitted)
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(AdmitReply::Retry),
            Err(err) => Err(ClusterError::InternalError(err.to_string())),
        }
    }

    /// Leader side of admission. An incarnation the membership already holds is admitted; an
    /// earlier incarnation of the same node id is removed first (its data is gone, and the
    /// leader must not count on it); an initial voter is re-added as a learner.
    pub async fn admit_local(&self, request: AdmitRequest) -> Result<AdmitReply, ClusterError> {
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            return Err(ClusterError::NotLeader);
        }
        let id = request.node_id;
        if request.node.incarnation.is_none() {
            return Err(ClusterError::InvalidRequest("an admission names the incarnation of the node".into()));
        }
        let membership = metrics.membership_config.membership();
        if let Some(known) = membership.get_node(&id) {
            if known.incarnation == request.node.incarnation {
                return Ok(AdmitReply::Admitted);
            }
            tracing::warn!(
                node = id,
                old = ?known.incarnation.map(|i| format!("{i:016x}")),
                new = ?request.node.incarnation.map(|i| format!("{i:016x}")),
                "node came back without its data (a new incarnation); removing the old one before re-adding it"
            );
            self.remove_member(&metrics, id).await?;
            return Ok(AdmitReply::Retry);
        }
        if !self.inner.config.initial_voters.contains_key(&id) {
            return Ok(AdmitReply::NotMember);
        }
        self.inner.raft.add_learner(id, request.node, false).await.map_err(from_write_error)?;
        tracing::info!(node = id, "initial voter re-added as a learner");
        Ok(AdmitReply::Admitted)
    }

    /// Adds a node: as a learner, then, once it has caught up, as a voter. Returns once this
    /// node's own view shows the new voter.
    pub async fn add_node(&self, node_id: NodeId, node: PeerNode) -> Result<(), ClusterError> {
        let request = MembershipRequest::Add { node_id, node };
        let local = |request| async move { self.change_local(request).await };
        self.on_leader::<Membership, _, _, _, _>(request, local).await?;
        self.wait_local_membership(|voters, _| voters.contains(&node_id)).await
    }

    /// Removes a node from the membership. Returns once this node's own view no longer lists it.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), ClusterError> {
        let local = |request| async move { self.change_local(request).await };
        self.on_leader::<Membership, _, _, _, _>(MembershipRequest::Remove { node_id }, local).await?;
        self.wait_local_membership(|_, nodes| !nodes.contains(&node_id)).await
    }

    /// Waits until this node's applied membership satisfies `done(voters, all nodes)`.
    pub(super) async fn wait_local_membership(
        &self,
        done: impl Fn(&BTreeSet<NodeId>, &BTreeSet<NodeId>) -> bool,
    ) -> Result<(), ClusterError> {
        let mut metrics = self.inner.raft.metrics();
        let satisfied = metrics.wait_for(|m| {
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let nodes: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
            done(&voters, &nodes)
        });
        match tokio::time::timeout(self.inner.config.request_timeout, satisfied).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ClusterError::ShuttingDown),
            Err(_) => Err(ClusterError::OutcomeUnknown),
        }
    }

    /// Leader side of a membership change.
    pub async fn change_local(&self, request: MembershipRequest) -> Result<(), ClusterError> {
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            return Err(ClusterError::NotLeader);
        }
        match request {
            MembershipRequest::Remove { node_id } => self.remove_member(&metrics, node_id).await,
            MembershipRequest::Add { node_id, node } => {
                // The membership records the incarnation of the node's data directory: ask the
                // node itself (it may still be starting), which also proves that the address
                // speaks for that node id.
                let status = self.status_of(&node.addr).await.map_err(|err| match err {
                    crate::raft::PeerError::Unreachable { .. } | crate::raft::PeerError::NoAnswer { .. } => {
                        ClusterError::NodeUnreachable(format!("node {node_id} cannot be reached: {err}"))
                    }
                    refused => ClusterError::MembershipChangeRefused(format!("node {node_id} refused: {refused}")),
                })?;
                if status.node_id != node_id {
                    return Err(ClusterError::MembershipChangeRefused(format!(
                        "the node at {} is node {}, not node {node_id}",
                        node.addr, status.node_id
                    )));
                }
                let node = PeerNode { incarnation: Some(status.incarnation), ..node };
                let membership = metrics.membership_config.membership();
                if let Some(known) = membership.get_node(&node_id) {
                    if known.addr != node.addr {
                        return Err(ClusterError::MembershipChangeRefused(format!(
                            "node {node_id} is a member at {}; remove it first",
                            known.addr
                        )));
                    }
                    if known.incarnation != node.incarnation {
                        return Err(ClusterError::MembershipChangeRefused(format!(
                            "node {node_id} is a member with another data directory; remove it first"
                        )));
                    }
                    if membership.voter_ids().any(|v| v == node_id) {
                        return Ok(());
                    }
                } else {
                    self.inner.raft.add_learner(node_id, node, false).await.map_err(from_write_error)?;
                }
                self.wait_caught_up(node_id).await?;
                let promote = ChangeMembers::AddVoterIds([node_id].into());
                self.inner.raft.change_membership(promote, false).await.map_err(from_write_error)?;
                Ok(())
            }
        }
    }

    /// The status of the node at `addr`, asked until it answers or the request deadline passes.
    pub(super) async fn status_of(&self, addr: &str) -> Result<PeerStatus, crate::raft::PeerError> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        loop {
            match self.ask_status(addr).await {
                Err(err) if err.not_sent() && Instant::now() + Duration::from_millis(100) < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answer => return answer,
            }
        }
    }

    pub(super) async fn remove_member(&self, metrics: &typ::RaftMetrics, node_id: NodeId) -> Result<(), ClusterError> {
        let membership = metrics.membership_config.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(ClusterError::NodeNotFound(node_id));
        }
        let change = if membership.voter_ids().any(|v| v == node_id) {
            ChangeMembers::RemoveVoters([node_id].into())
        } else {
            ChangeMembers::RemoveNodes([node_id].into())
        };
        self.inner.raft.change_membership(change, false).await.map_err(from_write_error)?;
        tracing::info!(node = node_id, "node removed from the membership");
        Ok(())
    }

    pub(super) async fn wait_caught_up(&self, node_id: NodeId) -> Result<(), ClusterError> {
        let mut metrics = self.inner.raft.metrics();
        let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            {
                let current = metrics.borrow_and_update();
                if current.state != ServerState::Leader {
                    return Err(ClusterError::NotLeader);
                }
                if caught_up(&current, node_id) {
                    return Ok(());
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClusterError::ShuttingDown),
                Err(_) => return Err(ClusterError::CatchUpTimeout(node_id, CATCH_UP_TIMEOUT.as_secs())),
            }
        }
    }
}

fn caught_up(metrics: &typ::RaftMetrics, node_id: NodeId) -> bool {
    let matched = metrics.replication.as_ref().and_then(|r| r.get(&node_id).cloned().flatten()).map(|l| l.index);
    let last = metrics.last_log_index.unwrap_or(0);
    matched.is_some_and(|m| m + CAUGHT_UP_LAG >= last)
}
