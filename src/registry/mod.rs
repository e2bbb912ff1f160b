//! The registration list: plain data, the commands that change it, and their pure application.
//!
//! Nothing here does I/O, reads a clock or knows about Raft. The state machine adapter feeds
//! committed [`Change`]s to [`RegistryState::apply`] in log order; every node therefore computes
//! the same state. Time enters only as `Change::at_ms`, stamped by the leader that proposed it.
//!
//! The state is built from persistent maps (`imbl`), so cloning it is O(1). The node publishes a
//! clone after every applied batch and readers (API, data plane) keep using the copy they took.
//!
//! By concern: `apply.rs` (the commands), `answers.rs` (outcomes remembered for retries),
//! `audit.rs` (the bounded trail), `indexes.rs` (endpoints per contract, namespaces, bound paths,
//! leases) and `image.rs` (the state as one serializable image and back); this file holds the
//! state and its read accessors.

mod answers;
mod apply;
mod audit;
mod image;
mod indexes;

use std::collections::BTreeSet;
use std::sync::Arc;

pub use self::answers::ANSWER_CAP;
pub use self::answers::ANSWER_TTL_MS;
pub use self::answers::Answer;
pub use self::answers::Remembered;
pub use self::audit::AUDIT_CAP;
pub use self::audit::AUDIT_SHARE;
pub use self::image::StateImage;
pub use self::indexes::Endpoints;
pub use self::indexes::Routable;
// The registry's vocabulary, shared with every process through the wire types.
pub use switchboard_proto::registry::AuditAction;
pub use switchboard_proto::registry::AuditRecord;
pub use switchboard_proto::registry::Change;
pub use switchboard_proto::registry::Check;
pub use switchboard_proto::registry::CheckKind;
pub use switchboard_proto::registry::Command;
pub use switchboard_proto::registry::ContractKey;
pub use switchboard_proto::registry::DEFAULT_PANIC_THRESHOLD;
pub use switchboard_proto::registry::EndpointState;
pub use switchboard_proto::registry::Event;
pub use switchboard_proto::registry::EventChange;
pub use switchboard_proto::registry::EventId;
pub use switchboard_proto::registry::Health;
pub use switchboard_proto::registry::HealthChange;
pub use switchboard_proto::registry::HealthEntry;
pub use switchboard_proto::registry::HealthStatus;
pub use switchboard_proto::registry::InvalidEventId;
pub use switchboard_proto::registry::InvalidId;
pub use switchboard_proto::registry::InvalidRegistration;
pub use switchboard_proto::registry::Lease;
pub use switchboard_proto::registry::MAX_ADDRESS_LEN;
pub use switchboard_proto::registry::MAX_METADATA_BYTES;
pub use switchboard_proto::registry::MAX_METADATA_ENTRIES;
pub use switchboard_proto::registry::MAX_METADATA_KEY_LEN;
pub use switchboard_proto::registry::MAX_METADATA_VALUE_LEN;
pub use switchboard_proto::registry::MAX_NAME_LEN;
pub use switchboard_proto::registry::MAX_NAMESPACE_LEN;
pub use switchboard_proto::registry::MAX_PATH_LEN;
pub use switchboard_proto::registry::MAX_SCOPE_LEN;
pub use switchboard_proto::registry::MAX_SCOPES;
pub use switchboard_proto::registry::MAX_TOKEN_NAME;
pub use switchboard_proto::registry::MAX_TOKENS;
pub use switchboard_proto::registry::MAX_TTL_MS;
pub use switchboard_proto::registry::MAX_WEIGHT;
pub use switchboard_proto::registry::MIN_TTL_MS;
pub use switchboard_proto::registry::Metadata;
pub use switchboard_proto::registry::Origin;
pub use switchboard_proto::registry::Outcome;
pub use switchboard_proto::registry::PATH_KEY;
pub use switchboard_proto::registry::Policy;
pub use switchboard_proto::registry::PolicyKind;
pub use switchboard_proto::registry::PolicyRequest;
pub use switchboard_proto::registry::PolicyV1;
pub use switchboard_proto::registry::PolicyV2;
pub use switchboard_proto::registry::REGISTRATION_OVERHEAD;
pub use switchboard_proto::registry::REWRITE_TO_KEY;
pub use switchboard_proto::registry::Registration;
pub use switchboard_proto::registry::RegistrationId;
pub use switchboard_proto::registry::RegistrationInfo;
pub use switchboard_proto::registry::RegistrationRequest;
pub use switchboard_proto::registry::RegistrationSpec;
pub use switchboard_proto::registry::RegistrationSpecV1;
pub use switchboard_proto::registry::Text;
pub use switchboard_proto::registry::TokenDef;
pub use switchboard_proto::registry::TokenEntry;
pub use switchboard_proto::registry::check_route_path;
pub use switchboard_proto::registry::short_output;
pub use switchboard_proto::registry::trim_namespace;

/// Who asks for a change, as the control API authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    /// Token name; `None` in dev mode.
    pub name: Option<String>,
    /// Most registrations this actor may own.
    pub quota: Option<u32>,
}

impl Actor {
    /// An internal actor (lease expiry), never limited.
    pub fn internal(name: &str) -> Self {
        Self { name: Some(name.to_owned()), quota: None }
    }
}

/// The replicated registration list and its derived indexes.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    registrations: imbl::OrdMap<RegistrationId, Arc<Registration>>,
    /// Active endpoints by contract key (`{namespace}/{name}`, exactly).
    routes: imbl::GenericHashMap<ContractKey, Endpoints, FastHash, imbl::shared_ptr::DefaultSharedPtr>,
    /// The contract keys of `routes` by namespace, for requests that name only a namespace.
    namespaces: imbl::OrdMap<String, imbl::OrdSet<ContractKey>>,
    /// Active registrations by the path they bind (`route.path`), and each one's path.
    paths: imbl::OrdMap<String, imbl::OrdSet<RegistrationId>>,
    bound: imbl::OrdMap<RegistrationId, String>,
    policies: imbl::OrdMap<ContractKey, Policy>,
    /// Registrations per owner, for quotas.
    owned: imbl::GenericHashMap<String, u32, FastHash, imbl::shared_ptr::DefaultSharedPtr>,
    /// Sum of [`Registration::approx_bytes`] over all registrations.
    bytes: u64,
    /// Ids of the registrations with a lease.
    leased: imbl::OrdSet<RegistrationId>,
    audit: imbl::Vector<AuditRecord>,
    /// Sequence number of the next audit record.
    audit_next_seq: u64,
    /// The sequence numbers of each principal's audit records, oldest first.
    audit_by_principal: imbl::OrdMap<Option<String>, imbl::Vector<u64>>,
    /// Outcomes of recent client requests by request, and their requests oldest first.
    answers: imbl::OrdMap<(u64, u64), Answer>,
    answer_order: imbl::Vector<(u64, u64)>,
    /// API tokens by name (revoked names included).
    tokens: imbl::OrdMap<String, TokenEntry>,
    /// Checks and committed health verdicts, for the registrations that have either.
    health: imbl::OrdMap<RegistrationId, HealthEntry>,
    /// What the applies since the last [`RegistryState::take_touched`] changed.
    touched: Touched,
    /// The changes the applies since the last [`RegistryState::take_events`] made, in order.
    events: Vec<EventChange>,
}

/// The keys that applying changes touched: a store persists exactly these (their current value,
/// or their removal) instead of the whole state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub registrations: BTreeSet<RegistrationId>,
    pub policies: BTreeSet<ContractKey>,
    /// Sequence numbers of audit records added or dropped.
    pub audit: BTreeSet<u64>,
    pub answers: BTreeSet<(u64, u64)>,
    pub tokens: BTreeSet<String>,
}

/// Hasher of the in-memory indexes: fast, and seeded per process. Keys come from registrations
/// (inserted only through authenticated writes), so flooding is not a concern.
pub type FastHash = foldhash::fast::RandomState;

impl RegistryState {
    /// The keys changed since the last call, for a store that persists changes one by one.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// The changes applied since the last call, in order (see [`EventChange`]); whoever applies
    /// takes them after every change, or they pile up.
    pub fn take_events(&mut self) -> Vec<EventChange> {
        std::mem::take(&mut self.events)
    }

    /// The token table: every name ever created or revoked through the API. A clone shares its
    /// memory until either side changes (`ptr_eq` tells a cache it is still current).
    pub fn tokens(&self) -> &imbl::OrdMap<String, TokenEntry> {
        &self.tokens
    }

    pub fn get(&self, id: &RegistrationId) -> Option<&Arc<Registration>> {
        self.registrations.get(id)
    }

    pub fn len(&self) -> usize {
        self.registrations.len()
    }

    /// About how many bytes the registrations take (see [`Registration::approx_bytes`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty()
    }

    /// All registrations in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.registrations.values()
    }

    /// The registrations with a lease.
    pub fn leased(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.leased.iter().filter_map(|id| self.registrations.get(id))
    }

    /// Registrations in id order, starting after `cursor` (from the first without one).
    pub fn iter_after(&self, cursor: Option<&RegistrationId>) -> impl Iterator<Item = &Arc<Registration>> {
        use std::ops::Bound;
        let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.registrations.range::<_, RegistrationId>((start, Bound::Unbounded)).map(|(_, registration)| registration)
    }

    /// The policy of a contract key; the default when none was set.
    pub fn policy(&self, key: &ContractKey) -> Option<&Policy> {
        self.policies.get(key)
    }

    pub fn policies(&self) -> impl Iterator<Item = (&ContractKey, &Policy)> {
        self.policies.iter()
    }

    /// Policies in contract-key order, starting after `cursor`.
    pub fn policies_after(&self, cursor: Option<&ContractKey>) -> impl Iterator<Item = (&ContractKey, &Policy)> {
        use std::ops::Bound;
        let start = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.policies.range::<_, ContractKey>((start, Bound::Unbounded))
    }

    /// The check a registration was registered with and its committed verdict (both absent for
    /// most registrations: no check of their own, passing since registered).
    pub fn health(&self, id: &RegistrationId) -> Option<&HealthEntry> {
        self.health.get(id)
    }

    /// Every health entry, in id order.
    pub fn health_entries(&self) -> impl Iterator<Item = (&RegistrationId, &HealthEntry)> {
        self.health.iter()
    }

    /// Whether the committed verdict of a registration is critical.
    pub fn is_critical(&self, id: &RegistrationId) -> bool {
        self.health.get(id).is_some_and(HealthEntry::is_critical)
    }

    /// The committed status of a registration (passing unless a verdict says critical).
    pub fn health_status(&self, id: &RegistrationId) -> HealthStatus {
        if self.is_critical(id) { HealthStatus::Critical } else { HealthStatus::Passing }
    }

    /// The check that applies to a registration: its own, else its contract policy's, else
    /// `default` (the cluster's).
    pub fn effective_check<'a>(&'a self, registration: &Registration, default: &'a Check) -> &'a Check {
        let own = if self.health.is_empty() { None } else { self.health.get(&registration.id) };
        own.and_then(|entry| entry.check.as_ref())
            .or_else(|| {
                // Most clusters have few policies: no key is built when there are none.
                if self.policies.is_empty() {
                    return None;
                }
                self.policies.get(&registration.contract_key()).and_then(|p| p.check.as_ref())
            })
            .unwrap_or(default)
    }

    /// Registrations owned by a token name.
    pub fn owned_by(&self, owner: &str) -> u32 {
        self.owned.get(owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
