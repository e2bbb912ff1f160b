//! The indexes derived from the registrations, kept up to date in O(log n) per change: active
//! endpoints per contract key, contract keys per namespace, bound paths, leased registrations.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::OnceLock;

use super::ContractKey;
use super::EndpointState;
use super::PATH_KEY;
use super::Registration;
use super::RegistrationId;
use super::RegistryState;
use super::trim_namespace;

/// Active endpoints that serve one contract key, ordered by id.
///
/// Changes go to a persistent ordered map (O(log n), cheap to clone). Readers that pick by
/// position (round robin and friends) use [`Endpoints::as_slice`], a plain slice built on first
/// use after each change and then shared by every reader of that snapshot.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub(super) by_id: imbl::OrdMap<RegistrationId, Arc<Registration>>,
    slice: Arc<OnceLock<Arc<[Arc<Registration>]>>>,
    /// The endpoints whose committed verdict is critical.
    pub(super) critical: imbl::OrdSet<RegistrationId>,
    /// The passing ones, built on first use like the slice.
    passing: Arc<OnceLock<Arc<[Arc<Registration>]>>>,
}

/// The endpoints a request may go to, after the committed health verdicts.
#[derive(Debug, Clone)]
pub struct Routable {
    pub endpoints: Arc<[Arc<Registration>]>,
    /// Endpoints left out because they are critical.
    pub skipped: Vec<Arc<Registration>>,
    /// Fewer than the panic threshold were passing, so every endpoint is routable again.
    pub panic: bool,
}

impl Endpoints {
    /// The endpoints to route to: the passing ones, or all of them when fewer than
    /// `panic_threshold_percent` of them pass (then `panic` is set). Free when none is critical.
    pub fn routable(&self, panic_threshold_percent: u8) -> Routable {
        if self.critical.is_empty() {
            return Routable { endpoints: self.as_slice().clone(), skipped: Vec::new(), panic: false };
        }
        let passing = self.passing.get_or_init(|| {
            self.by_id.iter().filter(|(id, _)| !self.critical.contains(*id)).map(|(_, r)| r.clone()).collect()
        });
        if passing.len() * 100 < usize::from(panic_threshold_percent) * self.by_id.len() {
            return Routable { endpoints: self.as_slice().clone(), skipped: Vec::new(), panic: true };
        }
        let skipped = self.critical.iter().filter_map(|id| self.by_id.get(id).cloned()).collect();
        Routable { endpoints: passing.clone(), skipped, panic: false }
    }

    /// How many of the endpoints are critical.
    pub fn critical(&self) -> usize {
        self.critical.len()
    }

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

    pub(super) fn changed(
        by_id: imbl::OrdMap<RegistrationId, Arc<Registration>>,
        critical: imbl::OrdSet<RegistrationId>,
    ) -> Self {
        Self { by_id, slice: Arc::default(), critical, passing: Arc::default() }
    }
}

impl RegistryState {
    /// Updates the path a registration binds: `current` is it while active, `None` otherwise.
    pub(super) fn rebind(&mut self, id: RegistrationId, current: Option<&Registration>) {
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
    pub(super) fn reindex(&mut self, changed: &Registration) {
        self.touched.registrations.insert(changed.id);
        if self.registrations.get(&changed.id).is_some_and(|r| r.ttl_ms.is_some()) {
            self.leased.insert(changed.id);
        } else {
            self.leased.remove(&changed.id);
        }
        let current = self.registrations.get(&changed.id).filter(|r| r.state == EndpointState::Active).cloned();
        self.rebind(changed.id, current.as_deref());
        let key = changed.contract_key();
        let (mut by_id, mut critical) =
            self.routes.get(&key).map(|e| (e.by_id.clone(), e.critical.clone())).unwrap_or_default();
        let before = by_id.len();
        match &current {
            Some(current) => {
                by_id.insert(changed.id, current.clone());
                if self.is_critical(&changed.id) {
                    critical.insert(changed.id);
                } else {
                    critical.remove(&changed.id);
                }
            }
            None => {
                by_id.remove(&changed.id);
                critical.remove(&changed.id);
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
            self.routes.insert(key, Endpoints::changed(by_id, critical));
        }
    }

    /// Active endpoints serving a contract key: the registrations whose `{namespace}/{name}` is
    /// exactly the key. A name holds no `/`, so a key names one (namespace, name) pair and no
    /// registration of another pair ever serves it.
    pub fn endpoints(&self, key: &ContractKey) -> Option<&Endpoints> {
        self.routes.get(key)
    }

    /// Every contract key with active endpoints, and its endpoints (in no particular order).
    pub fn contracts(&self) -> impl Iterator<Item = (&ContractKey, &Endpoints)> {
        self.routes.iter()
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
}
