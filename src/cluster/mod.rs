//! Cluster behaviour on top of openraft: where writes go, linearizable reads, bootstrap and
//! admission of nodes, membership changes, and readiness.
//!
//! Any node takes writes. The leader proposes them; a follower forwards them to the leader's peer
//! endpoint and answers its own client once the leader has committed and applied them. While no
//! leader is known (an election), a write waits for one until its deadline instead of failing.
//! A forward whose answer was lost is retried: every attempt of a write carries the same request
//! number, and the registry applies a request once and answers a repeat with the first outcome.
//!
//! Only this module calls openraft's membership APIs.

mod batch;
pub mod leases;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use openraft::ChangeMembers;
use openraft::ServerState;
use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use switchboard_proto::peer::Admit;
use switchboard_proto::peer::Membership;
use switchboard_proto::peer::ReadIndex;
use switchboard_proto::peer::Renew;
use switchboard_proto::peer::Rpc;
use switchboard_proto::peer::Status;
use switchboard_proto::peer::Write;

pub use switchboard_proto::api::ClusterView;
pub use switchboard_proto::api::MemberView;
pub use switchboard_proto::api::Readiness;
pub use switchboard_proto::peer::AdmitReply;
pub use switchboard_proto::peer::AdmitRequest;
pub use switchboard_proto::peer::ClusterError;
pub use switchboard_proto::peer::Gossip;
pub use switchboard_proto::peer::MembershipRequest;
pub use switchboard_proto::peer::PeerStatus;
pub use switchboard_proto::peer::Proposal;
pub use switchboard_proto::peer::StatusAnswer;
pub use switchboard_proto::peer::StatusRequest;

use self::batch::Batcher;
use self::leases::Leases;
use self::leases::Refusal;
use crate::raft::Addressee;
use crate::raft::AppliedView;
use crate::raft::NodeId;
use crate::raft::NodeIdentity;
use crate::raft::PeerClient;
use crate::raft::PeerNode;
use crate::raft::Raft;
use crate::raft::typ;
use crate::registry::Actor;
use crate::registry::Command;
use crate::registry::Lease;
use crate::registry::Origin;
use crate::registry::Outcome;
use crate::registry::Registration;
use crate::registry::RegistrationId;

/// How long a node keeps reporting ready after it last knew a leader, so that a short election
/// does not take every node out of the load balancer at once.
const READY_GRACE: Duration = Duration::from_secs(3);
/// How far (in log entries) a node may trail the leader and still report ready.
const READY_MAX_LAG: u64 = 1_000;
/// A leader that has not heard from a quorum for this long stops reporting ready.
const LEADER_QUORUM_STALE: Duration = Duration::from_millis(1_500);
/// Deadline of one status call to a peer.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// A leader decides lease expiry only if a quorum acknowledged it this recently.
const REAP_QUORUM_FRESH: Duration = Duration::from_millis(500);
/// How long a learner may take to catch up before it is promoted to voter.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// A learner this close to the leader's log is caught up.
const CAUGHT_UP_LAG: u64 = 64;

/// The running background duties of a node.
#[derive(Debug)]
pub struct Duties(Vec<tokio::task::AbortHandle>);

impl Duties {
    pub fn stop(&self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Settings of the cluster layer.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    pub node: PeerNode,
    pub initial_voters: BTreeMap<NodeId, PeerNode>,
    /// Bound on how long a write or linearizable read waits for a leader and its commit.
    pub request_timeout: Duration,
    /// Cluster-wide bounds on the registry, enforced by the leader.
    pub limits: RegistryLimits,
    /// This node's listeners, announced to the others.
    pub listeners: Vec<std::net::SocketAddr>,
    /// The address policy, told about the other routers' listeners.
    pub policy: Arc<crate::netpolicy::AddressPolicy>,
}

/// How large the registry may grow. The leader refuses a registration that would go beyond,
/// before proposing it; removals are always accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    pub max_registrations: usize,
    /// Bound on the sum of the registrations' sizes (`Registration::approx_bytes`).
    pub max_bytes: u64,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self { max_registrations: 500_000, max_bytes: 256 << 20 }
    }
}

/// Handle to the cluster layer of this node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node_id", &self.inner.config.node_id).finish_non_exhaustive()
    }
}

struct Inner {
    config: ClusterConfig,
    raft: Raft,
    batcher: Batcher,
    leases: Leases,
    view: AppliedView,
    peers: PeerClient,
    identity: NodeIdentity,
    /// The other routers' listeners, from their gossip.
    routers: Mutex<BTreeMap<NodeId, Vec<std::net::SocketAddr>>>,
    /// The next client request number. It starts from the wall clock in nanoseconds, so numbers
    /// stay unique across restarts of the node (see `Origin::request`).
    next_request: AtomicU64,
    /// Set when the node is stopping: it reports not ready so load balancers move away first.
    stopping: AtomicBool,
    /// When this node last knew a leader.
    last_leader_seen: Mutex<Option<Instant>>,
    /// The leader's last log index as last probed, and when.
    leader_progress: Mutex<Option<(u64, Instant)>>,
}

fn from_write_error(err: RaftError<NodeId, typ::ClientWriteError>) -> ClusterError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ClusterError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ClusterError::Membership(e.to_string()),
        RaftError::Fatal(_) => ClusterError::ShuttingDown,
    }
}

impl Cluster {
    pub fn new(
        config: ClusterConfig,
        raft: Raft,
        view: AppliedView,
        peers: PeerClient,
        identity: NodeIdentity,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                batcher: Batcher::spawn(raft.clone()),
                leases: Leases::default(),
                raft,
                view,
                peers,
                identity,
                routers: Mutex::default(),
                next_request: AtomicU64::new(
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
                ),
                stopping: AtomicBool::new(false),
                last_leader_seen: Mutex::new(None),
                leader_progress: Mutex::new(None),
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.config.node_id
    }

    /// The key peer requests are signed with (it also recognises the cluster secret).
    pub fn peer_key(&self) -> &crate::peer_auth::PeerKey {
        self.inner.peers.key()
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn view(&self) -> &AppliedView {
        &self.inner.view
    }

    pub fn identity(&self) -> NodeIdentity {
        self.inner.identity
    }

    /// Whether the membership this node knows (the latest in its log) admits this incarnation of
    /// the node: only then does it vote, campaign and take part in replication.
    pub fn is_admitted(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        self.admits(&metrics.membership_config)
    }

    fn admits(&self, membership: &typ::StoredMembership) -> bool {
        let node = membership.membership().get_node(&self.node_id());
        node.is_some_and(|node| self.inner.identity.is(node.incarnation))
    }

    /// Whether a Raft RPC addressed to `to` is for this node. A node that lost its data has a new
    /// incarnation and refuses what was meant for the old one, so its empty log and forgotten
    /// vote never count.
    pub fn is_addressee(&self, to: &Addressee) -> bool {
        to.node_id == self.node_id() && self.inner.identity.is(to.incarnation)
    }

    fn metrics(&self) -> typ::RaftMetrics {
        self.inner.raft.metrics().borrow().clone()
    }

    fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }

    // === writes and reads ===

    /// Replicates a command through the leader and returns what applying it did. Every attempt
    /// carries the same request number, so one that is retried after an ambiguous forward is
    /// applied once and answered with what that application did.
    pub async fn write(&self, command: Command, actor: &Actor) -> Result<Outcome, ClusterError> {
        let request = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let origin =
            Origin { node: self.node_id(), principal: actor.name.clone(), quota: actor.quota, request: Some(request) };
        let proposal = Proposal { command, origin };
        let local = |proposal: Proposal| async move { self.propose_local(proposal).await };
        self.on_leader::<Write, _, _, _, _>(proposal, local).await
    }

    /// Refuses a registration that would take the registry beyond its limits. Checked against
    /// the applied state: writes still in flight can overshoot by at most one batch.
    fn check_room(&self, spec: &crate::registry::RegistrationSpec) -> Result<(), ClusterError> {
        let limits = self.inner.config.limits;
        let applied = self.inner.view.load();
        let existing = applied.state.get(&spec.id).map(|r| r.approx_bytes());
        if existing.is_none() && applied.state.len() >= limits.max_registrations {
            return Err(ClusterError::RegistryFull(format!(
                "the registry holds its limit of {} registrations",
                limits.max_registrations
            )));
        }
        let bytes = applied.state.bytes() - existing.unwrap_or(0) + spec.approx_bytes();
        if bytes > limits.max_bytes {
            return Err(ClusterError::RegistryFull(format!(
                "the registry would exceed its limit of {} MiB",
                limits.max_bytes >> 20
            )));
        }
        Ok(())
    }

    /// Leader side of a write forwarded by a peer: checked as the API checks its own writes.
    pub async fn propose_forwarded(&self, proposal: Proposal) -> Result<Outcome, ClusterError> {
        proposal.command.check_forwarded().map_err(|err| ClusterError::InvalidRequest(err.to_string()))?;
        // The node that took the request checked the address against its policy and the
        // listeners it knew of; the leader checks the listeners again: it always knows its own.
        if let Command::Register(spec) = &proposal.command {
            let refused = self.inner.config.policy.check_not_a_listener(&spec.address).await.err();
            if let Some(refused) = refused {
                return Err(ClusterError::InvalidAddress(format!("address refused: {refused}")));
            }
        }
        self.propose_local(proposal).await
    }

    /// Leader side of a write. Fails with `NotLeader` on any other node.
    pub async fn propose_local(&self, proposal: Proposal) -> Result<Outcome, ClusterError> {
        if let Command::Register(spec) = &proposal.command {
            self.check_room(spec)?;
        }
        let written = self.inner.batcher.propose(proposal.origin, proposal.command);
        tokio::time::timeout(self.inner.config.request_timeout, written)
            .await
            .unwrap_or(Err(ClusterError::Indeterminate))
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
    async fn on_leader<R, Req, Resp, F, Fut>(&self, request: Req, local: F) -> Result<Resp, ClusterError>
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
                    ClusterError::Indeterminate
                } else {
                    ClusterError::NoLeader(timeout.as_millis() as u64)
                });
            }
            let attempt = match self.leader() {
                Some((leader, _)) if leader == self.node_id() => match local(request.clone()).await {
                    Err(ClusterError::NotLeader) => None,
                    Err(ClusterError::Indeterminate) => return Err(ClusterError::Indeterminate),
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

    // === leases ===

    /// Renews leases, as a heartbeat taken by this node. Returns the leases renewed and the
    /// refusals. An id this node does not know yet is looked up again after a linearizable
    /// barrier, so a heartbeat right after a registration on another node is not refused.
    pub async fn heartbeat(
        &self,
        requests: &[(RegistrationId, Option<u64>)],
        allowed: impl Fn(&Registration) -> bool,
    ) -> (Vec<Lease>, Vec<(RegistrationId, Refusal)>) {
        let check = |requests: &[(RegistrationId, Option<u64>)]| {
            let applied = self.inner.view.load();
            let mut renewed = Vec::new();
            let mut refused = Vec::new();
            for &(id, epoch) in requests {
                if applied.state.get(&id).is_some_and(|r| !allowed(r)) {
                    refused.push((id, Refusal::Forbidden));
                    continue;
                }
                match Leases::check(&applied.state, id, epoch) {
                    Ok(lease) => renewed.push(lease),
                    Err(refusal) => refused.push((id, refusal)),
                }
            }
            (renewed, refused)
        };
        let (mut renewed, mut refused) = check(requests);
        if refused.iter().any(|(_, refusal)| *refusal == Refusal::NotFound) && self.linearizable_barrier().await.is_ok()
        {
            let unknown: Vec<_> =
                requests.iter().filter(|(id, _)| refused.iter().any(|(r, _)| r == id)).copied().collect();
            let (more, still) = check(&unknown);
            renewed.extend(more);
            refused = still;
        }
        self.inner.leases.renew_local(&renewed, Instant::now());
        (renewed, refused)
    }

    /// Gossip from another member: the heartbeats it took, and where it listens.
    pub fn renew_from_peer(&self, gossip: &Gossip) {
        self.inner.leases.renew_remote(gossip.from, &gossip.leases, Instant::now());
        let mut routers = self.inner.routers.lock().unwrap_or_else(|p| p.into_inner());
        if routers.get(&gossip.from) != Some(&gossip.listeners) {
            // Endpoints may not be registered at any listener of any router of the cluster.
            routers.insert(gossip.from, gossip.listeners.clone());
            self.inner.config.policy.set_other_routers(routers.values().flatten().copied().collect());
        }
    }

    /// Duty: pass the heartbeats this node took on to every other member.
    async fn gossip_leases(self) {
        let mut tick = tokio::time::interval(leases::GOSSIP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Sent even when empty: the leader learns how late this node's news may be.
            let gossip = Gossip {
                from: self.node_id(),
                leases: self.inner.leases.take_outbox(),
                listeners: self.inner.config.listeners.clone(),
            };
            let members: Vec<PeerNode> = {
                let metrics = self.inner.raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                membership.nodes().filter(|(id, _)| **id != self.node_id()).map(|(_, node)| node.clone()).collect()
            };
            let calls = members.iter().map(|node| self.inner.peers.call::<Renew>(&node.addr, &gossip, STATUS_TIMEOUT));
            for result in futures_util::future::join_all(calls).await {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "lease gossip not delivered");
                }
            }
        }
    }

    /// Leader duty: expire leases that ran out, as one replicated command per round.
    async fn reap_leases(self) {
        let mut tick = tokio::time::interval(leases::REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_since: Option<Instant> = None;
        let mut rounds = 0u64;
        let mut last_tick = Instant::now();
        let mut hold_until = last_tick;
        loop {
            tick.tick().await;
            rounds += 1;
            // A round that comes late means this node was starved: the heartbeats and gossip it
            // has not read yet may renew leases. Decide nothing until as long again has passed.
            let now = Instant::now();
            let late = now.saturating_duration_since(last_tick).saturating_sub(leases::REAP_EVERY);
            last_tick = now;
            if late > leases::REAP_EVERY {
                hold_until = hold_until.max(now + late);
                tracing::debug!(late_ms = late.as_millis() as u64, "lease reaper ran late; holding expiry");
            }
            let metrics = self.metrics();
            // Only a leader that hears from a quorum decides expiry. A leader cut off from its
            // peers also misses their gossip, so its renewal times are stale; when it hears from
            // a quorum again it starts over with the grace of a new leader.
            let in_touch = metrics.millis_since_quorum_ack.is_some_and(|ms| ms <= REAP_QUORUM_FRESH.as_millis() as u64);
            if metrics.state != ServerState::Leader || !in_touch {
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert(now);
            if now < hold_until {
                continue;
            }
            let applied = self.inner.view.load();
            if rounds.is_multiple_of(50) {
                self.inner.leases.retain_registered(&applied.state);
            }
            let members = metrics.membership_config.membership().nodes().map(|(id, _)| *id).collect::<Vec<_>>();
            let grace = self.inner.leases.gossip_lag(members.into_iter().filter(|id| *id != self.node_id()), now);
            let expired = self.inner.leases.expired(&applied.state, now, since, grace);
            drop(applied);
            if expired.is_empty() {
                continue;
            }
            let count = expired.len();
            // Proposed here or not at all: a decision made with this node's renewal times must
            // never be forwarded to another leader, which has its own.
            let actor = Actor::internal("lease-expiry");
            let origin = Origin { node: self.node_id(), principal: actor.name, quota: None, request: None };
            match self.propose_local(Proposal { command: Command::Expire(expired), origin }).await {
                Ok(Outcome::Expired(ids)) => {
                    crate::metrics::METRICS.leases_expired.add(ids.len() as u64);
                    tracing::info!(expired = ids.len(), checked = count, "leases expired");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "expiring leases failed; the next round decides again"),
            }
        }
    }

    // === status ===

    /// Answers a status request, signing its challenge.
    pub fn answer_status(&self, request: &StatusRequest) -> StatusAnswer {
        let status = self.peer_status();
        let proof = self.inner.peers.key().prove(&request.challenge, status.node_id, status.incarnation);
        StatusAnswer { status, proof }
    }

    /// The status of the node at `addr`, accepted only when the node proves it holds the
    /// cluster secret: nothing else is ever sent to an address that has not.
    async fn ask_status(&self, addr: &str) -> Result<PeerStatus, crate::raft::PeerError> {
        let request = StatusRequest { challenge: crate::peer_auth::challenge() };
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

    /// From now on the node reports not ready (it keeps serving until it stops).
    pub fn begin_stopping(&self) {
        self.inner.stopping.store(true, Ordering::Release);
    }

    // === background duties ===

    /// Starts every background duty of the node; they run until [`Duties::stop`] (or the end of
    /// the runtime).
    pub fn start_duties(&self) -> Duties {
        let tasks = [
            tokio::spawn(self.clone().gate_elections()),
            tokio::spawn(self.clone().join()),
            tokio::spawn(self.clone().probe_leader()),
            tokio::spawn(self.clone().promote_caught_up_learners()),
            tokio::spawn(self.clone().gossip_leases()),
            tokio::spawn(self.clone().reap_leases()),
        ];
        Duties(tasks.map(|task| task.abort_handle()).into())
    }

    /// Follower duty: learn how far the leader's log is, for readiness. Runs until shutdown.
    async fn probe_leader(self) {
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
    async fn gate_elections(self) {
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

    /// Leader duty: promote initial voters that rejoined as learners once they caught up, and
    /// finish a membership change that a previous leader left in its joint phase.
    async fn promote_caught_up_learners(self) {
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
    async fn join(self) {
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
    async fn join_once(&self) -> Result<AdmitReply, ClusterError> {
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
                .map_err(|err| ClusterError::Unavailable(err.to_string()))?;
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
            Err(err) => Err(ClusterError::Internal(err.to_string())),
        }
    }

    // === membership ===

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
    async fn wait_local_membership(
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
            Err(_) => Err(ClusterError::Indeterminate),
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
                        ClusterError::Unavailable(format!("node {node_id} cannot be reached: {err}"))
                    }
                    refused => ClusterError::Membership(format!("node {node_id} refused: {refused}")),
                })?;
                if status.node_id != node_id {
                    return Err(ClusterError::Membership(format!(
                        "the node at {} is node {}, not node {node_id}",
                        node.addr, status.node_id
                    )));
                }
                let node = PeerNode { incarnation: Some(status.incarnation), ..node };
                let membership = metrics.membership_config.membership();
                if let Some(known) = membership.get_node(&node_id) {
                    if known.addr != node.addr {
                        return Err(ClusterError::Membership(format!(
                            "node {node_id} is a member at {}; remove it first",
                            known.addr
                        )));
                    }
                    if known.incarnation != node.incarnation {
                        return Err(ClusterError::Membership(format!(
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
    async fn status_of(&self, addr: &str) -> Result<PeerStatus, crate::raft::PeerError> {
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

    async fn remove_member(&self, metrics: &typ::RaftMetrics, node_id: NodeId) -> Result<(), ClusterError> {
        let membership = metrics.membership_config.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(ClusterError::UnknownNode(node_id));
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

    async fn wait_caught_up(&self, node_id: NodeId) -> Result<(), ClusterError> {
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

fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}
