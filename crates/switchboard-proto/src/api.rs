//! The control API's requests and answers (JSON), and its error body.
//!
//! Every refusal is `{"code", "message"}` with a 4xx or 5xx status; codes are stable snake_case
//! names clients may match on ([`code`] lists the ones a client acts upon).

use serde::Deserialize;
use serde::Serialize;

use crate::NodeId;
use crate::registry::AuditRecord;
use crate::registry::Lease;
use crate::registry::Policy;
use crate::registry::Registration;
use crate::registry::RegistrationId;

/// Error body of every control API refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Most leases one heartbeat call may renew.
pub const MAX_HEARTBEAT_IDS: usize = 10_000;

/// One lease named by a heartbeat: an id, or an id with the epoch the caller registered.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LeaseRef {
    Id(String),
    WithEpoch { id: String, epoch: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "ids": ["2f0c3a4be29d0c4f8e6e6c1f9d1a7b3e", {"id": "9b1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e", "epoch": 7}]
})))]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub ids: Vec<LeaseRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Refused {
    pub id: RegistrationId,
    pub reason: Refusal,
}

/// Body of a heartbeat answer.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatReply {
    pub renewed: Vec<Lease>,
    pub refused: Vec<Refused>,
}

/// Body of `GET /v1/registrations`: one page, in id order.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationList {
    pub registrations: Vec<RegistrationView>,
    /// Log index of the replica the page was read from.
    pub applied_index: u64,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A registration as the API shows it: the registration, the check that applies to it and its
/// health (JSON: the registration's fields, then `check` and `health`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistrationView {
    #[serde(flatten)]
    pub registration: Registration,
    /// The check that applies: its own, else its contract policy's, else the cluster default.
    pub check: crate::registry::Check,
    pub health: HealthView,
}

impl std::ops::Deref for RegistrationView {
    type Target = Registration;

    fn deref(&self) -> &Registration {
        &self.registration
    }
}

/// The committed health of a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthView {
    pub status: crate::registry::HealthStatus,
    /// Unix ms of the last transition (of the registration, if none).
    pub since: u64,
    /// The last failure, short (empty while passing).
    pub output: String,
    /// The node that probes it, as the answering node computes it; none if nothing probes it.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub checked_by: Option<NodeId>,
}

/// Why a heartbeat renewed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NotFound,
    /// The caller's token does not cover the registration's namespace.
    Forbidden,
    /// The lease belongs to an earlier registration of this id.
    EpochMismatch,
}

/// Body of `GET /v1/audit`: one page, newest first.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

/// A contract's policy as shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyEntry {
    /// The contract key, `{namespace}/{name}`.
    pub contract: String,
    #[serde(flatten)]
    pub policy: Policy,
}

/// Body of `GET /v1/policies`: one page, in contract order.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyList {
    pub policies: Vec<PolicyEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A token as the API shows it: never its value or digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_registrations: Option<u32>,
    /// `file` (the bootstrap set of the node answering) or `api` (replicated).
    pub source: String,
    /// `active` or `revoked`.
    pub state: String,
    /// The token's value: only in the answer that created it, when the node made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

/// This node's view of the cluster, as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterView {
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub node_id: NodeId,
    pub role: String,
    pub admitted: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub last_applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub id: NodeId,
    pub peer_addr: String,
    /// The admitted incarnation of the member's data directory (hex); none for members recorded
    /// before incarnations existed.
    pub incarnation: Option<String>,
    /// `voter` or `learner`.
    pub role: String,
    /// On the leader: the last log index known to be replicated to this member.
    pub matched_index: Option<u64>,
}

/// One contract's health as a node sees it: the committed verdicts (the same on every node)
/// and what this node's checker did for it since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractHealth {
    pub contract: String,
    pub endpoints: usize,
    pub passing: usize,
    pub critical: usize,
    pub panic_threshold_percent: u8,
    /// Fewer than the threshold pass: every endpoint is routed to as if passing.
    pub panic: bool,
    pub probes: u64,
    pub probe_failures: u64,
    pub transitions_written: u64,
}

/// Body of `GET /v1/health/contracts`: every contract with active endpoints, in contract order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContractHealthReport {
    /// The answering node.
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub node: NodeId,
    pub contracts: Vec<ContractHealth>,
}

/// Body of `GET /health/live`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Liveness {
    /// Always `live`.
    pub status: String,
}

/// Whether the node should receive traffic, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Readiness {
    pub ready: bool,
    pub reason: Option<String>,
}

impl TokenView {
    /// A live token, as listed (never with its value).
    pub fn active(name: &str, scopes: Vec<String>, max_registrations: Option<u32>, source: &str) -> Self {
        let (name, source, state) = (name.to_owned(), source.to_owned(), "active".to_owned());
        Self { name, scopes, max_registrations, source, state, token: None }
    }

    /// A revoked name, as listed.
    pub fn revoked(name: &str, source: &str) -> Self {
        Self { state: "revoked".into(), ..Self::active(name, Vec::new(), None, source) }
    }
}

/// Error codes a client acts upon; the server answers them from these constants, and the API
/// reference lists every code.
pub mod code {
    /// The registration does not exist (any more).
    pub const REGISTRATION_NOT_FOUND: &str = "registration_not_found";
    /// No leader is known right now; retry (the answer carries `Retry-After`).
    pub const NO_LEADER: &str = "no_leader";
    /// The write may or may not have been applied; retrying it is safe.
    pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";
    /// The node is shutting down; another node takes the request.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// The token is missing, malformed or unknown.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// The token does not cover the request.
    pub const FORBIDDEN: &str = "forbidden";
    /// The token's registration quota is used up.
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    /// The cluster holds as many registrations, or bytes, as it is configured to.
    pub const REGISTRY_FULL: &str = "registry_full";
}
