//! The registration list: plain data, the commands that change it, and their pure application.
//!
//! Nothing here does I/O, reads a clock or knows about Raft. The state machine adapter feeds
//! committed [`Change`]s to [`RegistryState::apply`] in log order; every node therefore computes
//! the same state. Time enters only as `Change::at_ms`, stamped by the leader that proposed it.
//!
//! The state is built from persistent maps (`imbl`), so cloning it is O(1). The node publishes a
//! clone after every applied batch and readers (API, data plane) keep using the copy they took.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::Serialize;

pub use switchboard_proto::registry::*;

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

/// Audit records one principal (token name, or none in dev mode) may hold in the trail; beyond,
/// its own oldest record goes, so one writer never pushes out the others' records.
pub const AUDIT_SHARE: usize = 1_000;

/// Audit records kept in the replicated state (the oldest are dropped first).
pub const AUDIT_CAP: usize = 10_000;

/// How long the outcome of a client request stays known to a retry of the same request: far
/// longer than any write deadline, within which every retry happens.
pub const ANSWER_TTL_MS: u64 = 60_000;
/// Most remembered outcomes (the oldest are forgotten first).
pub const ANSWER_CAP: usize = 32_768;

/// The outcome of a client request that a retry must see again rather than apply twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// (origin node, request) of the change.
    pub request: (u64, u64),
    pub at_ms: u64,
    pub outcome: Remembered,
}

/// What is kept of an outcome for a retry. A registration keeps only what its retry, which
/// carries the same spec, cannot rebuild: a few numbers instead of a copy of the registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Remembered {
    Registered { created: bool, epoch: u64, at_ms: u64, owner: Option<Text> },
    Outcome(Outcome),
}

impl Remembered {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Registered { registration, created } => Self::Registered {
                created: *created,
                epoch: registration.epoch,
                at_ms: registration.registered_at_ms,
                owner: registration.owner.clone(),
            },
            other => Self::Outcome(other.clone()),
        }
    }

    /// The first outcome again, for a retry of `command`.
    fn replay(&self, command: &Command) -> Option<Outcome> {
        match (self, command) {
            (Self::Outcome(outcome), _) => Some(outcome.clone()),
            (Self::Registered { created, epoch, at_ms, owner }, Command::Register(spec)) => {
                let registration = Registration::of(spec, *epoch, *at_ms, owner.clone());
                Some(Outcome::Registered { registration, created: *created })
            }
            // A request number names one request; another command under it is not a retry.
            (Self::Registered { .. }, _) => None,
        }
    }
}

/// Active endpoints that serve one contract key, ordered by id.
///
/// Changes go to a persistent ordered map (O(log n), cheap to clone). Readers that pick by
/// position (round robin and friends) use [`Endpoints::as_slice`], a plain slice built on first
/// use after each change and then shared by every reader of that snapshot.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    by_id: imbl::OrdMap<RegistrationId, Arc<Registration>>,
    slice: Arc<OnceLock<Arc<[Arc<Registration>]>>>,
}

impl Endpoints {
    pub fn as_slice(&self) -> &Arc<[Arc<Registration>]> {
        self.slice.get_or_init(|| self.by_id.values().cloned().collect())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.by_id.values()
    }

    fn changed(by_id: imbl::OrdMap<RegistrationId, Arc<Registration>>) -> Self {
        Self { by_id, slice: Arc::default() }
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
    /// What the applies since the last [`RegistryState::take_touched`] changed.
    touched: Touched,
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

/// Serializable form of the state, used for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StateImage {
    pub registrations: Vec<Registration>,
    pub policies: Vec<(ContractKey, Policy)>,
    pub audit: Vec<AuditRecord>,
    pub audit_next_seq: u64,
    pub answers: Vec<Answer>,
    pub tokens: Vec<(String, TokenEntry)>,
}

impl RegistryState {
    /// Applies one committed change found at log index `index`. A change that repeats a request
    /// already applied (a retried write) changes nothing and gets the first outcome again.
    pub fn apply(&mut self, index: u64, change: &Change) -> Outcome {
        self.forget_answers(change.at_ms);
        let request = change.origin.request.map(|request| (change.origin.node, request));
        let answer = request.and_then(|request| self.answers.get(&request));
        if let Some(outcome) = answer.and_then(|answer| answer.outcome.replay(&change.command)) {
            return outcome;
        }
        let outcome = self.apply_command(index, change);
        if let Some(request) = request {
            self.answers.insert(request, Answer { request, at_ms: change.at_ms, outcome: Remembered::of(&outcome) });
            self.answer_order.push_back(request);
            self.touched.answers.insert(request);
            self.forget_answers(change.at_ms);
        }
        outcome
    }

    /// The keys changed since the last call, for a store that persists changes one by one.
    pub fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// Drops remembered outcomes older than [`ANSWER_TTL_MS`] before `now_ms`, and beyond the cap.
    fn forget_answers(&mut self, now_ms: u64) {
        while let Some(oldest) = self.answer_order.front() {
            let fresh = self.answers.get(oldest).is_some_and(|a| a.at_ms.saturating_add(ANSWER_TTL_MS) >= now_ms);
            if fresh && self.answer_order.len() <= ANSWER_CAP {
                break;
            }
            if let Some(oldest) = self.answer_order.pop_front() {
                self.answers.remove(&oldest);
                self.touched.answers.insert(oldest);
            }
        }
    }

    fn answers_oldest_first(&self) -> impl Iterator<Item = &Answer> {
        self.answer_order.iter().filter_map(|request| self.answers.get(request))
    }

    /// The remembered answers, oldest first.
    pub fn answers(&self) -> impl Iterator<Item = &Answer> {
        self.answers_oldest_first()
    }

    /// The remembered outcome of a client request, if it is still remembered.
    pub fn answer(&self, request: &(u64, u64)) -> Option<&Answer> {
        self.answers.get(request)
    }

    fn apply_command(&mut self, index: u64, change: &Change) -> Outcome {
        let audit = |action: AuditAction, registration: Option<&Registration>, contract: String| AuditRecord {
            seq: 0,
            index,
            at_ms: change.at_ms,
            node: change.origin.node,
            principal: change.origin.principal.clone(),
            action,
            id: registration.map(|r| r.id),
            address: registration.map(|r| r.address.to_string()),
            contract,
        };
        match &change.command {
            Command::Register(spec) => {
                let key = ContractKey::new(&spec.contract_namespace, &spec.contract_name).to_string();
                if let Some(refused) = self.over_quota(spec, &change.origin) {
                    let mut record = audit(AuditAction::QuotaExceeded, None, key);
                    (record.id, record.address) = (Some(spec.id), Some(spec.address.clone()));
                    self.record(record);
                    return refused;
                }
                let before = self.registrations.get(&spec.id).cloned();
                let outcome = self.register(index, change.at_ms, spec, change.origin.principal.clone());
                if let Outcome::Registered { registration, created } = &outcome {
                    // A refresh that changes nothing but the lease's epoch is not an event.
                    let same = before.is_some_and(|before| before.same_options(registration));
                    if !same {
                        let action = if *created { AuditAction::Registered } else { AuditAction::Refreshed };
                        self.record(audit(action, Some(registration), key));
                    }
                }
                outcome
            }
            Command::Unregister(id) => match self.remove(id) {
                Some(registration) => {
                    let action = if registration.owner.is_none()
                        || registration.owner.as_deref() == change.origin.principal.as_deref()
                    {
                        AuditAction::Unregistered
                    } else {
                        AuditAction::Evicted
                    };
                    self.record(audit(action, Some(&registration), registration.contract_key().to_string()));
                    Outcome::Unregistered(registration)
                }
                None => Outcome::NotFound(*id),
            },
            Command::Drain(id) => {
                let outcome = self.drain(id);
                if let Outcome::Drained(registration) = &outcome {
                    self.record(audit(
                        AuditAction::Drained,
                        Some(registration),
                        registration.contract_key().to_string(),
                    ));
                }
                outcome
            }
            Command::Expire(leases) => {
                let mut expired = Vec::new();
                for lease in leases {
                    if self.registrations.get(&lease.id).is_some_and(|r| r.epoch == lease.epoch)
                        && let Some(registration) = self.remove(&lease.id)
                    {
                        self.record(audit(
                            AuditAction::Expired,
                            Some(&registration),
                            registration.contract_key().to_string(),
                        ));
                        expired.push(lease.id);
                    }
                }
                Outcome::Expired(expired)
            }
            Command::CreateToken(def) => {
                let refused = if self.tokens.contains_key(&def.name) {
                    Some(format!("the token name {} is taken (names are never reused)", def.name))
                } else if self.tokens.len() >= MAX_TOKENS {
                    Some(format!("the cluster holds {MAX_TOKENS} tokens already; revoked names count"))
                } else {
                    def.check().err()
                };
                if let Some(reason) = refused {
                    return Outcome::TokenRefused(reason);
                }
                let entry = TokenEntry::Active {
                    def: def.clone(),
                    created_at_ms: change.at_ms,
                    created_by: change.origin.principal.clone(),
                };
                self.put_token(def.name.clone(), entry);
                self.record(audit(AuditAction::TokenCreated, None, format!("token:{}", def.name)));
                Outcome::TokenCreated(def.name.clone())
            }
            Command::RevokeToken(name) => {
                if matches!(self.tokens.get(name), Some(TokenEntry::Revoked { .. })) {
                    return Outcome::TokenRefused(format!("the token {name} is already revoked"));
                }
                if !self.tokens.contains_key(name) && self.tokens.len() >= MAX_TOKENS {
                    return Outcome::TokenRefused(format!("the cluster holds {MAX_TOKENS} tokens already"));
                }
                let entry =
                    TokenEntry::Revoked { revoked_at_ms: change.at_ms, revoked_by: change.origin.principal.clone() };
                self.put_token(name.clone(), entry);
                self.record(audit(AuditAction::TokenRevoked, None, format!("token:{name}")));
                Outcome::TokenRevoked(name.clone())
            }
            Command::SetPolicy(key, policy) => {
                if *policy == Policy::default() {
                    self.policies.remove(key);
                } else {
                    self.policies.insert(key.clone(), policy.clone());
                }
                self.record(audit(AuditAction::PolicySet, None, key.to_string()));
                self.touched.policies.insert(key.clone());
                Outcome::PolicySet
            }
        }
    }

    fn put_token(&mut self, name: String, entry: TokenEntry) {
        self.touched.tokens.insert(name.clone());
        self.tokens.insert(name, entry);
    }

    /// The token table: every name ever created or revoked through the API. A clone shares its
    /// memory until either side changes (`ptr_eq` tells a cache it is still current).
    pub fn tokens(&self) -> &imbl::OrdMap<String, TokenEntry> {
        &self.tokens
    }

    fn over_quota(&self, spec: &RegistrationSpec, origin: &Origin) -> Option<Outcome> {
        let (Some(owner), Some(quota)) = (&origin.principal, origin.quota) else { return None };
        let already_mine = self.registrations.get(&spec.id).is_some_and(|r| r.owner.as_deref() == Some(owner.as_str()));
        let owned = self.owned.get(owner).copied().unwrap_or(0);
        (!already_mine && owned >= quota).then(|| Outcome::QuotaExceeded { owner: owner.clone(), quota })
    }

    fn record(&mut self, mut record: AuditRecord) {
        let mine = self.audit_by_principal.get(&record.principal).map_or(0, imbl::Vector::len);
        if mine >= AUDIT_SHARE {
            let oldest = self.audit_by_principal.get(&record.principal).and_then(|seqs| seqs.front().copied());
            if let Some(oldest) = oldest {
                self.drop_audit(oldest);
            }
        }
        if self.audit.len() >= AUDIT_CAP
            && let Some(oldest) = self.audit.front().map(|r| r.seq)
        {
            self.drop_audit(oldest);
        }
        record.seq = self.audit_next_seq;
        self.audit_next_seq += 1;
        self.touched.audit.insert(record.seq);
        self.audit_by_principal.entry(record.principal.clone()).or_default().push_back(record.seq);
        self.audit.push_back(record);
    }

    fn drop_audit(&mut self, seq: u64) {
        let Ok(position) = self.audit.binary_search_by(|r| r.seq.cmp(&seq)) else { return };
        let record = self.audit.remove(position);
        if let Some(seqs) = self.audit_by_principal.get_mut(&record.principal) {
            if let Ok(at) = seqs.binary_search(&seq) {
                seqs.remove(at);
            }
            if seqs.is_empty() {
                self.audit_by_principal.remove(&record.principal);
            }
        }
        self.touched.audit.insert(seq);
    }

    /// Sequence number the next audit record will get.
    pub fn audit_next_seq(&self) -> u64 {
        self.audit_next_seq
    }

    /// The audit record numbered `seq`, if the trail still holds it.
    pub fn audit_record(&self, seq: u64) -> Option<&AuditRecord> {
        let position = self.audit.binary_search_by(|r| r.seq.cmp(&seq)).ok()?;
        self.audit.get(position)
    }

    fn count_owner(&mut self, owner: Option<&str>, delta: i64) {
        let Some(owner) = owner else { return };
        let count = i64::from(self.owned.get(owner).copied().unwrap_or(0)) + delta;
        if count <= 0 {
            self.owned.remove(owner);
        } else {
            self.owned.insert(owner.to_owned(), count as u32);
        }
    }

    fn register(&mut self, index: u64, at_ms: u64, spec: &RegistrationSpec, owner: Option<String>) -> Outcome {
        let registration = Registration::of(spec, index, at_ms, owner.map(Text::from));
        self.count_owner(registration.owner.as_deref(), 1);
        self.bytes += registration.approx_bytes();
        let previous = self.registrations.insert(spec.id, Arc::new(registration.clone()));
        if let Some(previous) = &previous {
            self.count_owner(previous.owner.as_deref(), -1);
            self.bytes -= previous.approx_bytes();
        }
        self.reindex(&registration);
        Outcome::Registered { registration, created: previous.is_none() }
    }

    fn drain(&mut self, id: &RegistrationId) -> Outcome {
        let Some(current) = self.registrations.get(id) else {
            return Outcome::NotFound(*id);
        };
        let mut registration = Registration::clone(current);
        registration.state = EndpointState::Draining;
        self.registrations.insert(*id, Arc::new(registration.clone()));
        self.reindex(&registration);
        Outcome::Drained(registration)
    }

    fn remove(&mut self, id: &RegistrationId) -> Option<Registration> {
        let removed = self.registrations.remove(id)?;
        self.count_owner(removed.owner.as_deref(), -1);
        self.bytes -= removed.approx_bytes();
        self.reindex(&removed);
        Some(Registration::clone(&removed))
    }

    /// Updates the path a registration binds: `current` is it while active, `None` otherwise.
    fn rebind(&mut self, id: RegistrationId, current: Option<&Registration>) {
        let path = current.and_then(|r| r.metadata.get(PATH_KEY));
        let old = self.bound.get(&id);
        if old.map(String::as_str) == path {
            return;
        }
        if let Some(old) = self.bound.remove(&id)
            && let Some(ids) = self.paths.get_mut(&old)
        {
            ids.remove(&id);
            if ids.is_empty() {
                self.paths.remove(&old);
            }
        }
        if let Some(path) = path {
            self.paths.entry(path.to_owned()).or_default().insert(id);
            self.bound.insert(id, path.to_owned());
        }
    }

    /// Updates the route list of the registration's contract, in O(log n).
    fn reindex(&mut self, changed: &Registration) {
        self.touched.registrations.insert(changed.id);
        if self.registrations.get(&changed.id).is_some_and(|r| r.ttl_ms.is_some()) {
            self.leased.insert(changed.id);
        } else {
            self.leased.remove(&changed.id);
        }
        let current = self.registrations.get(&changed.id).filter(|r| r.state == EndpointState::Active).cloned();
        self.rebind(changed.id, current.as_deref());
        let key = changed.contract_key();
        let mut by_id = self.routes.get(&key).map(|e| e.by_id.clone()).unwrap_or_default();
        let before = by_id.len();
        match &current {
            Some(current) => {
                by_id.insert(changed.id, current.clone());
            }
            None => {
                by_id.remove(&changed.id);
                if by_id.len() == before {
                    return;
                }
            }
        }
        let namespace = trim_namespace(&changed.contract_namespace);
        if by_id.is_empty() {
            self.routes.remove(&key);
            if let Some(keys) = self.namespaces.get_mut(namespace) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.namespaces.remove(namespace);
                }
            }
        } else {
            // Most changes touch a contract already indexed: no copy of the index then.
            if !self.namespaces.get(namespace).is_some_and(|keys| keys.contains(&key)) {
                self.namespaces.entry(namespace.to_owned()).or_default().insert(key.clone());
            }
            self.routes.insert(key, Endpoints::changed(by_id));
        }
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

    /// Active endpoints serving a contract key: the registrations whose `{namespace}/{name}` is
    /// exactly the key. A name holds no `/`, so a key names one (namespace, name) pair and no
    /// registration of another pair ever serves it.
    pub fn endpoints(&self, key: &ContractKey) -> Option<&Endpoints> {
        self.routes.get(key)
    }

    /// The contract keys with active endpoints in a namespace (one trailing `/` ignored), in
    /// order.
    pub fn contracts_in(&self, namespace: &str) -> impl Iterator<Item = &ContractKey> {
        self.namespaces.get(trim_namespace(namespace)).into_iter().flat_map(|keys| keys.iter())
    }

    /// The longest path binding that covers `path` (at a segment boundary), and the contracts
    /// whose active registrations bind it (more than one only if bindings conflict).
    pub fn binding(&self, path: &str) -> Option<(&str, BTreeSet<ContractKey>)> {
        let mut prefix = path.split(['?', '#']).next().unwrap_or_default().trim_end_matches('/');
        while !prefix.is_empty() {
            if let Some((bound, ids)) = self.paths.get_key_value(prefix) {
                let keys = ids.iter().filter_map(|id| self.registrations.get(id)).map(|r| r.contract_key()).collect();
                return Some((bound.as_str(), keys));
            }
            prefix = prefix.rsplit_once('/').map_or("", |(head, _)| head);
        }
        None
    }

    /// The contracts other than `key` whose active registrations bind exactly `path`.
    pub fn path_taken(&self, path: &str, key: &ContractKey) -> Option<ContractKey> {
        let ids = self.paths.get(path)?;
        ids.iter().filter_map(|id| self.registrations.get(id)).map(|r| r.contract_key()).find(|other| other != key)
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

    /// Registrations owned by a token name.
    pub fn owned_by(&self, owner: &str) -> u32 {
        self.owned.get(owner).copied().unwrap_or(0)
    }

    /// The audit trail, oldest first.
    pub fn audit(&self) -> impl DoubleEndedIterator<Item = &AuditRecord> {
        self.audit.iter()
    }

    /// Serializes exactly as [`StateImage`] does, straight from the state: a snapshot of a large
    /// registry does not need a second copy of it in memory.
    pub fn image(&self) -> impl Serialize + '_ {
        ImageRef(self)
    }

    pub fn to_image(&self) -> StateImage {
        StateImage {
            registrations: self.registrations.values().map(|r| Registration::clone(r)).collect(),
            policies: self.policies.iter().map(|(k, p)| (k.clone(), p.clone())).collect(),
            audit: self.audit.iter().cloned().collect(),
            audit_next_seq: self.audit_next_seq,
            answers: self.answers_oldest_first().cloned().collect(),
            tokens: self.tokens.iter().map(|(name, entry)| (name.clone(), entry.clone())).collect(),
        }
    }

    pub fn from_image(image: StateImage) -> Self {
        let mut state = Self::default();
        for registration in image.registrations {
            state.count_owner(registration.owner.as_deref(), 1);
            state.bytes += registration.approx_bytes();
            state.registrations.insert(registration.id, Arc::new(registration));
        }
        state.leased = state.registrations.values().filter(|r| r.ttl_ms.is_some()).map(|r| r.id).collect();
        for record in &image.audit {
            state.audit_by_principal.entry(record.principal.clone()).or_default().push_back(record.seq);
        }
        state.audit = image.audit.into_iter().collect();
        state.audit_next_seq = image.audit_next_seq;
        let mut routes: BTreeMap<ContractKey, imbl::OrdMap<RegistrationId, Arc<Registration>>> = BTreeMap::new();
        for registration in state.registrations.values() {
            if registration.state != EndpointState::Active {
                continue;
            }
            routes.entry(registration.contract_key()).or_default().insert(registration.id, registration.clone());
        }
        for registration in routes.values().flat_map(|by_id| by_id.values()) {
            if let Some(path) = registration.metadata.get(PATH_KEY) {
                state.paths.entry(path.to_owned()).or_default().insert(registration.id);
                state.bound.insert(registration.id, path.to_owned());
            }
        }
        for by_id in routes.values() {
            if let Some(registration) = by_id.values().next() {
                let namespace = trim_namespace(&registration.contract_namespace).to_owned();
                state.namespaces.entry(namespace).or_default().insert(registration.contract_key());
            }
        }
        state.routes = routes.into_iter().map(|(key, by_id)| (key, Endpoints::changed(by_id))).collect();
        state.policies = image.policies.into_iter().collect();
        state.answer_order = image.answers.iter().map(|answer| answer.request).collect();
        state.answers = image.answers.into_iter().map(|answer| (answer.request, answer)).collect();
        state.tokens = image.tokens.into_iter().collect();
        state
    }
}

struct ImageRef<'a>(&'a RegistryState);

/// A sequence of known length, serialized from an iterator.
struct SeqOf<I>(std::cell::Cell<Option<I>>, usize);

impl<I> Serialize for SeqOf<I>
where
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.1))?;
        for item in self.0.take().into_iter().flatten() {
            seq.serialize_element(&item)?;
        }
        seq.end()
    }
}

fn seq_of<I: Iterator>(iter: I, len: usize) -> SeqOf<I> {
    SeqOf(std::cell::Cell::new(Some(iter)), len)
}

impl Serialize for ImageRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let state = self.0;
        let mut image = serializer.serialize_struct("StateImage", 6)?;
        image.serialize_field(
            "registrations",
            &seq_of(state.registrations.values().map(|r| &**r), state.registrations.len()),
        )?;
        image.serialize_field("policies", &seq_of(state.policies.iter(), state.policies.len()))?;
        image.serialize_field("audit", &seq_of(state.audit.iter(), state.audit.len()))?;
        image.serialize_field("audit_next_seq", &state.audit_next_seq)?;
        image.serialize_field("answers", &seq_of(state.answers_oldest_first(), state.answers.len()))?;
        image.serialize_field("tokens", &seq_of(state.tokens.iter(), state.tokens.len()))?;
        image.end()
    }
}

#[cfg(test)]
mod tests;
