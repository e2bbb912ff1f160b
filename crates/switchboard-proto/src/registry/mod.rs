//! The registration list's vocabulary: registrations, the commands that change the list (the
//! Raft log's entries), what applying them answers, and the audit trail's records. Plain data
//! with serde and the checks every process applies to it alike.

mod events;
mod health;
mod id;
mod spec;
mod tokens;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

pub use self::events::*;
pub use self::health::*;
pub use self::id::InvalidId;
pub use self::id::RegistrationId;
pub use self::spec::*;
pub use self::tokens::*;

/// Who proposed a change: the node that took the request and the caller's token name, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Origin {
    pub node: u64,
    pub principal: Option<String>,
    /// Most registrations the principal may own, from its token, if limited.
    pub quota: Option<u32>,
    /// The client request this change carries, unique on `node`. A node that retries a write
    /// after an ambiguous forward proposes it again with the same request, and the registry
    /// answers the retry with the first application's outcome instead of applying it twice.
    pub request: Option<u64>,
}

/// The unit replicated through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Wall-clock milliseconds of the leader that proposed the change.
    pub at_ms: u64,
    pub origin: Origin,
    pub command: Command,
}

/// Every way the registration list can change.
///
/// Variants are never reordered or changed: a new option is a new variant, written only when the
/// option is used, so a node of the release before reads every entry that does not use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a registration without a check of its own, in the encoding of peer protocols 1 and 2
    /// (see [`Command::register`]).
    RegisterV1(RegistrationSpecV1),
    /// Remove a registration.
    Unregister(RegistrationId),
    /// Stop routing new requests to a registration; it stays listed until removed.
    Drain(RegistrationId),
    /// Remove leased registrations whose lease ran out, if their epoch still matches.
    Expire(Vec<Lease>),
    /// Set the routing policy of a contract, in the encoding of peer protocol 1: written for a
    /// policy that uses only [`PolicyV1`]'s fields, so that a node of the release before reads it
    /// (see [`Command::set_policy`]).
    SetPolicyV1(ContractKey, PolicyV1),
    /// Create an API token (refused if the name was ever used).
    CreateToken(TokenDef),
    /// Revoke an API token by name, one created through the API or one of the tokens file.
    RevokeToken(String),
    /// Set the routing policy of a contract with `rewrite_to` but no health options (peer
    /// protocol 2).
    SetPolicyV2(ContractKey, PolicyV2),
    /// Add a registration, or refresh the options and epoch of an existing one (peer protocol 3:
    /// the spec may carry a check).
    Register(RegistrationSpec),
    /// Set the routing policy of a contract, every option included (peer protocol 3).
    SetPolicy(ContractKey, Policy),
    /// Health transitions decided by the probers (peer protocol 3).
    SetHealth(Vec<HealthChange>),
    /// Remove registrations critical for longer than their check's `deregister_after_ms`, if
    /// their epoch still matches (peer protocol 3).
    Deregister(Vec<Lease>),
}

impl Command {
    /// About how many bytes the command takes encoded (to size batches).
    pub fn approx_bytes(&self) -> usize {
        match self {
            Self::RegisterV1(RegistrationSpecV1 { address, contract_name, contract_namespace, metadata, .. })
            | Self::Register(RegistrationSpec { address, contract_name, contract_namespace, metadata, .. }) => {
                96 + address.len()
                    + contract_name.len()
                    + contract_namespace.len()
                    + metadata.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
            }
            Self::SetHealth(changes) => 16 + changes.iter().map(|c| 40 + c.output.len()).sum::<usize>(),
            Self::Expire(leases) | Self::Deregister(leases) => 16 + 24 * leases.len(),
            Self::SetPolicyV1(key, PolicyV1 { hash_header, .. })
            | Self::SetPolicyV2(key, PolicyV2 { hash_header, .. })
            | Self::SetPolicy(key, Policy { hash_header, .. }) => {
                64 + key.as_str().len() + hash_header.as_ref().map_or(0, String::len)
            }
            Self::Unregister(_) | Self::Drain(_) => 24,
            Self::CreateToken(def) => 64 + def.name.len() + def.scopes.iter().map(|s| s.len() + 2).sum::<usize>(),
            Self::RevokeToken(name) => 16 + name.len(),
        }
    }

    /// The command that sets `key`'s policy to `policy`, in the oldest encoding that carries it.
    pub fn set_policy(key: ContractKey, policy: Policy) -> Self {
        let policy = match PolicyV1::try_from(policy) {
            Ok(v1) => return Self::SetPolicyV1(key, v1),
            Err(policy) => policy,
        };
        match PolicyV2::try_from(policy) {
            Ok(v2) => Self::SetPolicyV2(key, v2),
            Err(policy) => Self::SetPolicy(key, policy),
        }
    }

    /// The command that registers `spec`, in the oldest encoding that carries it.
    pub fn register(spec: RegistrationSpec) -> Self {
        match RegistrationSpecV1::try_from(spec) {
            Ok(v1) => Self::RegisterV1(v1),
            Err(spec) => Self::Register(spec),
        }
    }

    /// The spec of a registering command, in either encoding.
    pub fn registration(&self) -> Option<std::borrow::Cow<'_, RegistrationSpec>> {
        match self {
            Self::Register(spec) => Some(std::borrow::Cow::Borrowed(spec)),
            Self::RegisterV1(spec) => Some(std::borrow::Cow::Owned(spec.clone().into())),
            _ => None,
        }
    }

    /// The oldest peer protocol version whose encoding carries the command.
    pub fn protocol(&self) -> u16 {
        match self {
            Self::SetPolicyV2(..) => 2,
            Self::Register(_) | Self::SetPolicy(..) | Self::SetHealth(_) | Self::Deregister(_) => 3,
            _ => 1,
        }
    }

    /// Checks a command that arrived from another process (a write forwarded by a peer): only
    /// what a node's own API could have proposed is accepted. Lease expiry is proposed by the
    /// leader itself and never forwarded.
    pub fn check_forwarded(&self) -> Result<(), InvalidRegistration> {
        match self {
            Self::Register(spec) => spec.check(),
            Self::RegisterV1(spec) => RegistrationSpec::from(spec.clone()).check(),
            Self::SetPolicy(key, policy) => key.check().and_then(|()| policy.check()),
            Self::SetPolicyV2(key, policy) => key.check().and_then(|()| Policy::from(policy.clone()).check()),
            Self::SetPolicyV1(key, policy) => key.check().and_then(|()| Policy::from(policy.clone()).check()),
            Self::SetHealth(changes) => changes.iter().try_for_each(HealthChange::check),
            Self::Unregister(_) | Self::Drain(_) => Ok(()),
            Self::Expire(_) => Err(InvalidRegistration::Policy("lease expiry is never forwarded".into())),
            Self::Deregister(_) => Err(InvalidRegistration::Policy("deregistration is never forwarded".into())),
            Self::CreateToken(def) => def.check().map_err(InvalidRegistration::Token),
            Self::RevokeToken(name) => {
                TokenDef { name: name.clone(), sha256: [0; 32], scopes: Vec::new(), max_registrations: None }
                    .check()
                    .map_err(InvalidRegistration::Token)
            }
        }
    }
}

/// One lease generation of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    pub id: RegistrationId,
    pub epoch: u64,
}

/// Whether a registration takes new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    Active,
    Draining,
}

/// Text held by registrations: strings of up to 24 bytes (names, namespaces, most metadata) live
/// inline, without a heap allocation of their own.
pub type Text = compact_str::CompactString;

/// Registration metadata: a few key/value pairs, kept sorted in one small vector (a map node per
/// registration would cost more than the registration itself). Shown as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata(Vec<(Text, Text)>);

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok().map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&BTreeMap<String, String>> for Metadata {
    fn from(map: &BTreeMap<String, String>) -> Self {
        Self(map.iter().map(|(k, v)| (Text::from(k.as_str()), Text::from(v.as_str()))).collect())
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Self::from(&map))
    }
}

/// A registration as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registration {
    pub id: RegistrationId,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub address: Text,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub contract_name: Text,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub contract_namespace: Text,
    pub ttl_ms: Option<u64>,
    pub weight: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub metadata: Metadata,
    pub state: EndpointState,
    /// Log index of the latest `Register` of this id; heartbeats must name it.
    pub epoch: u64,
    /// Leader time of the latest `Register` of this id.
    pub registered_at_ms: u64,
    /// Token name of whoever registered it last (none in dev mode).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub owner: Option<Text>,
}

impl Registration {
    /// The registration a `Register` of `spec` at log index `epoch` creates.
    pub fn of(spec: &RegistrationSpec, epoch: u64, at_ms: u64, owner: Option<Text>) -> Self {
        Self {
            id: spec.id,
            address: Text::from(spec.address.as_str()),
            contract_name: Text::from(spec.contract_name.as_str()),
            contract_namespace: Text::from(spec.contract_namespace.as_str()),
            ttl_ms: spec.ttl_ms,
            weight: spec.weight,
            metadata: Metadata::from(&spec.metadata),
            state: EndpointState::Active,
            epoch,
            registered_at_ms: at_ms,
            owner,
        }
    }

    pub fn contract_key(&self) -> ContractKey {
        ContractKey::new(&self.contract_namespace, &self.contract_name)
    }

    pub fn lease(&self) -> Lease {
        Lease { id: self.id, epoch: self.epoch }
    }

    /// Whether `other` has the same options (all but the epoch and the time): re-registering
    /// with them changes nothing worth an audit record.
    pub fn same_options(&self, other: &Registration) -> bool {
        self.address == other.address
            && self.ttl_ms == other.ttl_ms
            && self.weight == other.weight
            && self.metadata == other.metadata
            && self.state == other.state
            && self.owner == other.owner
    }

    /// About how many bytes the registration takes, for the registry's size cap.
    pub fn approx_bytes(&self) -> u64 {
        let text = self.address.len() + self.contract_name.len() + self.contract_namespace.len();
        let metadata: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        (REGISTRATION_OVERHEAD + text + metadata) as u64
    }
}

/// How the data plane picks an endpoint of a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    #[default]
    RoundRobin,
    Weighted,
    LeastOutstanding,
    ConsistentHash,
}

/// The routing policy of one contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    #[serde(rename = "policy")]
    pub kind: PolicyKind,
    /// Request header hashed by `consistent_hash`.
    pub hash_header: Option<String>,
    /// Whether a request that reached an endpoint may be retried on another.
    pub idempotent: bool,
    /// Whether a SOAP message's WS-Addressing `To` is set to the address of the endpoint it is
    /// sent to (the default); false forwards it as the client wrote it.
    #[serde(default = "yes")]
    pub rewrite_to: bool,
    /// The active check of the contract's registrations that name none.
    #[serde(default)]
    pub check: Option<Check>,
    /// When fewer than this share of the contract's endpoints are passing, route to all of them.
    #[serde(default = "default_panic_threshold")]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub panic_threshold_percent: u8,
}

/// The panic threshold of a contract without a policy that sets one.
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

fn yes() -> bool {
    true
}

fn default_panic_threshold() -> u8 {
    DEFAULT_PANIC_THRESHOLD
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kind: PolicyKind::default(),
            hash_header: None,
            idempotent: false,
            rewrite_to: true,
            check: None,
            panic_threshold_percent: DEFAULT_PANIC_THRESHOLD,
        }
    }
}

/// A policy as peer protocol 2 and on-disk format 3 encode it: the options before the health
/// options, which take their defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyV2 {
    pub kind: PolicyKind,
    pub hash_header: Option<String>,
    pub idempotent: bool,
    pub rewrite_to: bool,
}

impl From<PolicyV2> for Policy {
    fn from(PolicyV2 { kind, hash_header, idempotent, rewrite_to }: PolicyV2) -> Self {
        Self { kind, hash_header, idempotent, rewrite_to, ..Self::default() }
    }
}

impl From<PolicyV1> for PolicyV2 {
    fn from(PolicyV1 { kind, hash_header, idempotent }: PolicyV1) -> Self {
        Self { kind, hash_header, idempotent, rewrite_to: true }
    }
}

impl TryFrom<Policy> for PolicyV2 {
    type Error = Policy;

    /// The same policy in the older encoding, if its health options are the defaults.
    fn try_from(policy: Policy) -> Result<Self, Policy> {
        match policy {
            Policy { kind, hash_header, idempotent, rewrite_to, check: None, panic_threshold_percent }
                if panic_threshold_percent == DEFAULT_PANIC_THRESHOLD =>
            {
                Ok(Self { kind, hash_header, idempotent, rewrite_to })
            }
            policy => Err(policy),
        }
    }
}

/// A policy as peer protocol 1 and on-disk formats 1 and 2 encode it: the options before
/// `rewrite_to`, which is true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PolicyV1 {
    pub kind: PolicyKind,
    pub hash_header: Option<String>,
    pub idempotent: bool,
}

impl From<PolicyV1> for Policy {
    fn from(old: PolicyV1) -> Self {
        Self::from(PolicyV2::from(old))
    }
}

impl TryFrom<Policy> for PolicyV1 {
    type Error = Policy;

    /// The same policy in the older encoding, if it has no option that encoding lacks.
    fn try_from(policy: Policy) -> Result<Self, Policy> {
        match policy {
            Policy { kind, hash_header, idempotent, rewrite_to: true, check: None, panic_threshold_percent }
                if panic_threshold_percent == DEFAULT_PANIC_THRESHOLD =>
            {
                Ok(Self { kind, hash_header, idempotent })
            }
            policy => Err(policy),
        }
    }
}

/// What applying one command did; returned to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Registered {
        registration: Registration,
        created: bool,
    },
    Unregistered(Registration),
    Drained(Registration),
    NotFound(RegistrationId),
    Expired(Vec<RegistrationId>),
    PolicySet,
    /// The principal already owns as many registrations as its token allows.
    QuotaExceeded {
        owner: String,
        quota: u32,
    },
    TokenCreated(String),
    TokenRevoked(String),
    /// A token change that cannot be made (the name is taken, not found, or the table is full).
    TokenRefused(String),
    /// Health transitions applied (those whose registration and epoch still matched).
    HealthSet(Vec<RegistrationId>),
    /// Registrations removed by their checks' `deregister_after_ms`.
    Deregistered(Vec<RegistrationId>),
}

/// Bytes a registration is counted for beyond its text (ids, numbers, index entries).
pub const REGISTRATION_OVERHEAD: usize = 160;

/// What happened to a registration or policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    Registered,
    /// Registered again: options and epoch refreshed.
    Refreshed,
    /// Removed by its owner (or in dev mode).
    Unregistered,
    /// Removed by someone other than its owner.
    Evicted,
    /// Removed because its lease ran out.
    Expired,
    Drained,
    PolicySet,
    /// A registration refused because its owner's quota was used up.
    QuotaExceeded,
    /// An API token created or revoked (the record's `contract` is `token:<name>`).
    TokenCreated,
    TokenRevoked,
    /// Removed because it was critical for longer than its check's `deregister_after_ms`.
    Deregistered,
}

/// One entry of the audit trail: who changed what, through which node, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Position in the trail: every record gets the next number, on every node alike.
    pub seq: u64,
    /// Log index of the change.
    pub index: u64,
    pub at_ms: u64,
    /// Node that took the request.
    pub node: u64,
    /// Token name of the caller; `lease-expiry` for expiries, none in dev mode.
    pub principal: Option<String>,
    pub action: AuditAction,
    pub id: Option<RegistrationId>,
    pub address: Option<String>,
    pub contract: String,
}
