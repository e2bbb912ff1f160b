//! The peer protocol: every request one node sends another, as a table of typed RPCs.
//!
//! Each RPC is a type implementing [`Rpc`]: its path, its request and its answer. The caller
//! (`PeerClient::call::<R>`) and the peer router (`route::<R>`) both name the type, so a path is
//! written once and both sides agree on the types by construction. The Raft RPCs carry openraft's
//! messages and are declared next to the Raft adapter; the cluster RPCs are declared here.
//!
//! Bodies are postcard-encoded. Every request carries the sender's protocol version in
//! [`PROTOCOL_HEADER`] (a request without it speaks version 0, the encoding of the release that
//! had no version header, identical to version 1), and every answer carries the answering node's.
//! A node accepts the versions from [`OLDEST_PROTOCOL`] to [`PROTOCOL`] and refuses any other with
//! `409 unsupported_protocol`. A version that changes an encoding keeps decoding the one before it
//! and answers each request in the version it was asked in, so two adjacent versions always
//! interoperate during a rolling upgrade. The encoding of every message is pinned by golden bytes
//! (see the tests).

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::NodeId;
use crate::registry::Command;
use crate::registry::Lease;
use crate::registry::Origin;
use crate::registry::Outcome;
use crate::registry::RegistrationId;

/// The newest peer protocol version this build speaks.
/// - Version 1 added the version header and `ClusterError::PathConflict` (answered to a
///   version-0 peer as `InvalidRequest`).
/// - Version 2 added `Command::SetPolicyV2` (a policy with `rewrite_to`) and snapshots of on-disk
///   format 3.
/// - Version 3 added active health checks: `Command::Register` (a spec with a check),
///   `Command::SetPolicy` (a policy with health options), `Command::SetHealth`,
///   `Command::Deregister`, the `Confirm` and `Beat` RPCs, and snapshots of on-disk format 4.
///
/// A request is sent in the oldest version whose encoding carries it ([`Rpc::version`]), so a
/// node of the release before reads everything but what only the new version can say, and
/// refuses that with `409 unsupported_protocol` instead of misreading it.
pub const PROTOCOL: u16 = 3;
/// The oldest version it still accepts (0: requests without a version header).
pub const OLDEST_PROTOCOL: u16 = 0;
/// Header carrying the sender's protocol version (requests) or the answering node's (answers).
pub const PROTOCOL_HEADER: &str = "x-switchboard-protocol";
/// Header carrying the node id of the sender, signed with the request.
pub const SENDER_HEADER: &str = "x-switchboard-from";
/// Header carrying the addressee (`{node id}.{incarnation}`) of a Raft RPC.
pub const ADDRESSEE_HEADER: &str = "x-switchboard-to";
/// Content type of every peer request and answer body.
pub const CONTENT_TYPE: &str = "application/x-switchboard-peer";
/// Error code of a request in a protocol version the node does not speak.
pub const UNSUPPORTED_PROTOCOL: &str = "unsupported_protocol";

/// Whether this build speaks protocol `version`.
pub fn speaks(version: u16) -> bool {
    (OLDEST_PROTOCOL..=PROTOCOL).contains(&version)
}

/// The protocol version a header value names: none is version 0; anything unreadable is `None`.
pub fn version_of(header: Option<&[u8]>) -> Option<u16> {
    match header {
        None => Some(0),
        Some(value) => std::str::from_utf8(value).ok()?.trim().parse().ok(),
    }
}

/// One peer RPC: where it is served and what it carries each way.
pub trait Rpc {
    /// The peer endpoint's path for this RPC.
    const PATH: &'static str;
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Answer: Serialize + DeserializeOwned + Send + 'static;

    /// The protocol version `request` is sent in: the oldest whose encoding carries it.
    fn version(_request: &Self::Request) -> u16 {
        1
    }
}

/// A challenge a node must sign to prove it holds the cluster secret.
pub type Challenge = [u8; 16];

/// What the membership records about a node: where its peer endpoint is, and which incarnation
/// of its data directory was admitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the node's peer endpoint.
    pub addr: String,
    /// The admitted incarnation (the random number a data directory gets when it is created); `None` for members recorded before
    /// incarnations existed, and in requests that do not know it yet.
    pub incarnation: Option<u64>,
}

impl PeerNode {
    /// A node known by its address only.
    pub fn at(addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), incarnation: None }
    }
}

/// Errors of cluster operations; they also travel between peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    /// Internal: the node asked is not the leader; the caller retries with the current leader.
    #[error("this node is not the leader")]
    NotLeader,
    #[error("no leader could be reached within {0} ms")]
    NoLeader(u64),
    #[error("the request reached the leader but its outcome is unknown; it may still be applied")]
    OutcomeUnknown,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("membership change refused: {0}")]
    MembershipChangeRefused(String),
    #[error("node {0} is not a member of the cluster")]
    NodeNotFound(NodeId),
    #[error("node {0} did not catch up with the leader within {1} s")]
    CatchUpTimeout(NodeId, u64),
    /// A request that can never succeed as sent (a peer sent something malformed).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A node this operation needs could not be reached.
    #[error("{0}")]
    NodeUnreachable(String),
    /// The registry is at one of its cluster-wide limits.
    #[error("{0}")]
    RegistryFull(String),
    /// A bug or a broken invariant, not something the caller did.
    #[error("internal error: {0}")]
    InternalError(String),
    /// The address of a registration is one the address policy refuses (checked again by the
    /// leader, which knows its own listeners whatever the node that took the request knew).
    #[error("{0}")]
    InvalidAddress(String),
    /// The registration binds a path that another contract's registrations bind (protocol 1).
    #[error("{0}")]
    PathConflict(String),
}

impl ClusterError {
    /// The error as a peer speaking protocol `version` can read it: a variant newer than its
    /// version becomes the nearest one it knows.
    pub fn spoken_in(self, version: u16) -> Self {
        match self {
            Self::PathConflict(message) if version < 1 => Self::InvalidRequest(message),
            other => other,
        }
    }
}

/// A write as forwarded to the leader: the leader stamps the time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub command: Command,
    pub origin: Origin,
}

/// What a node tells its peers about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub node_id: NodeId,
    /// The incarnation of its data directory.
    pub incarnation: u64,
    /// The node holds log entries: it belongs to a cluster that has started.
    pub initialized: bool,
    /// The membership it knows admits this incarnation.
    pub admitted: bool,
    pub leader: Option<(NodeId, PeerNode)>,
    pub last_log_index: Option<u64>,
    pub applied_index: u64,
}

/// A status request: the answering node must sign `challenge` (a keyed hash of the challenge, the node id and the incarnation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub challenge: Challenge,
}

/// A status answer, with the proof that the node holds the cluster secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub status: PeerStatus,
    pub proof: [u8; 32],
}

/// A node that the membership does not admit (a fresh or wiped data directory) asks the leader
/// to admit it; `node` carries its address and incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitRequest {
    pub node_id: NodeId,
    pub node: PeerNode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdmitReply {
    /// The membership holds this incarnation (as a learner, or already as a member): replication
    /// to it starts, and an initial voter is promoted once it has caught up.
    Admitted,
    /// The leader removed an earlier incarnation of the node id; ask again.
    Retry,
    /// Not an initial voter and not a member: an operator adds it (`POST /v1/cluster/nodes`).
    NotMember,
}

/// What a node passes on to the other members every gossip period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    pub from: NodeId,
    /// Heartbeats it took since its last gossip.
    pub leases: Vec<Lease>,
    /// The sender's listeners (data plane, control API, peer endpoint, health), as bound: no
    /// endpoint may be registered at any of them.
    pub listeners: Vec<std::net::SocketAddr>,
}

/// A prober about to mark an endpoint critical asks the next node in the endpoint's ranking to
/// probe it once (peer protocol 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmRequest {
    pub lease: Lease,
    /// If the endpoint answers, the asked node probes it from now on, for a while: the asker is
    /// cut off from it.
    pub adopt: bool,
}

/// What the asked node's probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfirmAnswer {
    /// The endpoint answered: the asker must not mark it.
    Reached,
    /// The probe failed too, with this output.
    Failed(String),
    /// The asked node does not know this registration at this epoch (it is behind, or the
    /// registration changed).
    Unknown,
}

/// Whether a node takes part in probing (it is caught up and not stopping), and the endpoints it
/// handed to another node, passed to the other members every half second (peer protocol 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProberBeat {
    pub from: NodeId,
    pub ready: bool,
    /// At most [`MAX_BEAT_HANDOVERS`], so that every node's `checked_by` names the node that
    /// probes a handed-over endpoint.
    pub handed: Vec<Handover>,
}

/// The most hand-overs one beat carries (about 20 bytes each).
pub const MAX_BEAT_HANDOVERS: usize = 4096;

/// An endpoint its ranked prober could not reach and handed to `to`, which reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub id: RegistrationId,
    pub to: NodeId,
}

/// Membership change forwarded to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipRequest {
    Add { node_id: NodeId, node: PeerNode },
    Remove { node_id: NodeId },
}

/// Declares the marker type of an RPC and its row of the table: `rpc!(Name, "/path", Request =>
/// Answer)`, or `rpc!(Name, "/path", Request => Answer, version(request) => expr)` for an RPC
/// whose requests need a newer version than 1 to carry some of what they can hold. The server
/// declares its Raft RPCs with it too.
#[macro_export]
macro_rules! rpc {
    ($(#[$doc:meta])* $name:ident, $path:literal, $request:ty => $answer:ty $(, version($req:ident) => $version:expr)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub enum $name {}

        impl $crate::peer::Rpc for $name {
            const PATH: &'static str = $path;
            type Request = $request;
            type Answer = $answer;
            $(
                fn version($req: &Self::Request) -> u16 {
                    $version
                }
            )?
        }
    };
}

rpc!(
    /// A node's status, with proof that it holds the cluster secret.
    Status, "/cluster/status", StatusRequest => StatusAnswer
);
rpc!(
    /// A write forwarded to the leader.
    Write, "/cluster/write", Proposal => Result<Outcome, ClusterError>, version(proposal) => proposal.command.protocol()
);
rpc!(
    /// The leader's commit index, confirmed by a quorum (for linearizable reads on followers).
    ReadIndex, "/cluster/read-index", () => Result<u64, ClusterError>
);
rpc!(
    /// A node asks the leader to admit its incarnation.
    Admit, "/cluster/admit", AdmitRequest => Result<AdmitReply, ClusterError>
);
rpc!(
    /// A membership change forwarded to the leader.
    Membership, "/cluster/membership", MembershipRequest => Result<(), ClusterError>
);
rpc!(
    /// Lease renewals a node took, passed on to the others.
    Renew, "/cluster/renew", Gossip => ()
);
rpc!(
    /// A node's readiness to probe, for the other members' assignment of endpoints.
    Beat, "/cluster/prober", ProberBeat => (), version(_request) => 3
);
rpc!(
    /// A second probe of an endpoint before it is marked critical.
    Confirm, "/cluster/confirm", ConfirmRequest => ConfirmAnswer, version(_request) => 3
);
