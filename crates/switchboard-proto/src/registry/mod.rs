//! The registration list's vocabulary: registrations, the commands that change the list (the
//! Raft log's entries), what applying them answers, and the audit trail's records. Plain data
//! with serde and the checks every process applies to it alike.

mod id;
mod spec;
mod tokens;

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a registration, or refresh the options and epoch of an existing one.
    Register(RegistrationSpec),
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
    /// Set the routing policy of a contract, every option included (peer protocol 2).
    SetPolicy(ContractKey, Policy),
}

impl Command {
    /// About how many bytes the command takes encoded (to size batches).
    pub fn approx_bytes(&self) -> usize {
        match self {
            Self::Register(spec) => {
                64 + spec.address.len()
                    + spec.contract_name.len()
                    + spec.contract_namespace.len()
                    + spec.metadata.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>()
            }
            Self::Expire(leases) => 16 + 24 * leases.len(),
            Self::SetPolicyV1(key, PolicyV1 { hash_header, .. }) | Self::SetPolicy(key, Policy { hash_header, .. }) => {
                32 + key.as_str().len() + hash_header.as_ref().map_or(0, String::len)
            }
            Self::Unregister(_) | Self::Drain(_) => 24,
            Self::CreateToken(def) => 64 + def.name.len() + def.scopes.iter().map(|s| s.len() + 2).sum::<usize>(),
            Self::RevokeToken(name) => 16 + name.len(),
        }
    }

    /// The command that sets `key`'s policy to `policy`, in the oldest encoding that carries it.
    pub fn set_policy(key: ContractKey, policy: Policy) -> Self {
        match PolicyV1::try_from(policy) {
            Ok(v1) => Self::SetPolicyV1(key, v1),
            Err(policy) => Self::SetPolicy(key, policy),
        }
    }

    /// The oldest peer protocol version whose encoding carries the command.
    pub fn protocol(&self) -> u16 {
        match self {
            Self::SetPolicy(..) => 2,
            _ => 1,
        }
    }

    /// Checks a command that arrived from another process (a write forwarded by a peer): only
    /// what a node's own API could have proposed is accepted. Lease expiry is proposed by the
    /// leader itself and never forwarded.
    pub fn check_forwarded(&self) -> Result<(), InvalidRegistration> {
        match self {
            Self::Register(spec) => spec.check(),
            Self::SetPolicy(key, policy) => key.check().and_then(|()| policy.check()),
            Self::SetPolicyV1(key, policy) => key.check().and_then(|()| Policy::from(policy.clone()).check()),
            Self::Unregister(_) | Self::Drain(_) => Ok(()),
            Self::Expire(_) => Err(InvalidRegistration::Policy("lease expiry is never forwarded".into())),
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
pub struct Lease {
    pub id: RegistrationId,
    pub epoch: u64,
}

/// Whether a registration takes new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
pub struct Registration {
    pub id: RegistrationId,
    pub address: Text,
    pub contract_name: Text,
    pub contract_namespace: Text,
    pub ttl_ms: Option<u64>,
    pub weight: u32,
    pub metadata: Metadata,
    pub state: EndpointState,
    /// Log index of the latest `Register` of this id; heartbeats must name it.
    pub epoch: u64,
    /// Leader time of the latest `Register` of this id.
    pub registered_at_ms: u64,
    /// Token name of whoever registered it last (none in dev mode).
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
}

fn yes() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Self { kind: PolicyKind::default(), hash_header: None, idempotent: false, rewrite_to: true }
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
    fn from(PolicyV1 { kind, hash_header, idempotent }: PolicyV1) -> Self {
        Self { kind, hash_header, idempotent, rewrite_to: true }
    }
}

impl TryFrom<Policy> for PolicyV1 {
    type Error = Policy;

    /// The same policy in the older encoding, if it has no option that encoding lacks.
    fn try_from(policy: Policy) -> Result<Self, Policy> {
        match policy {
            Policy { kind, hash_header, idempotent, rewrite_to: true } => Ok(Self { kind, hash_header, idempotent }),
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
}

/// Bytes a registration is counted for beyond its text (ids, numbers, index entries).
pub const REGISTRATION_OVERHEAD: usize = 160;

/// What happened to a registration or policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// One entry of the audit trail: who changed what, through which node, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
