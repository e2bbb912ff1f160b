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

mod admission;
mod batch;
mod duties;
mod forward;
mod lease_duties;
pub mod leases;
mod membership;
mod probers;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use std::time::Instant;
use std::time::SystemTime;

use openraft::error::ClientWriteError;
use openraft::error::RaftError;

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
pub use self::duties::Duties;
use self::leases::Leases;
use crate::raft::Addressee;
use crate::raft::AppliedView;
use crate::raft::NodeId;
use crate::raft::NodeIdentity;
use crate::raft::PeerClient;
use crate::raft::PeerNode;
use crate::raft::Raft;
use crate::raft::typ;

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
    /// The data plane reports not ready once its view is older than this (`--max-stale-routing`;
    /// none: it routes from its last view however long no leader confirms it).
    pub max_stale_routing: Option<Duration>,
    /// Which log entries the node purges behind its snapshots.
    pub retention: crate::raft::LogRetention,
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
    /// This process's replica has caught up with a leader at least once: it may route.
    caught_up: AtomicBool,
    /// The other members' last beats, and when each arrived.
    prober_beats: Mutex<BTreeMap<NodeId, probers::HeardBeat>>,
    /// The endpoints this node's checker handed to another node, told in every beat.
    own_handovers: Mutex<Vec<switchboard_proto::peer::Handover>>,
}

fn from_write_error(err: RaftError<NodeId, typ::ClientWriteError>) -> ClusterError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ClusterError::NotLeader,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ClusterError::MembershipChangeRefused(e.to_string())
        }
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
                caught_up: AtomicBool::new(false),
                prober_beats: Mutex::default(),
                own_handovers: Mutex::default(),
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

    /// The committed members other than this node.
    pub(super) fn other_members(&self) -> Vec<PeerNode> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.nodes().filter(|(id, _)| **id != self.node_id()).map(|(_, node)| node.clone()).collect()
    }

    fn leader(&self) -> Option<(NodeId, PeerNode)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node))
    }
}
