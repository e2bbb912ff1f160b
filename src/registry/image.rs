//! The state as one serializable image, for snapshots and the compacted store: built from the
//! state (or serialized straight from it, without a second copy) and back, indexes rebuilt.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use super::Answer;
use super::AuditRecord;
use super::ContractKey;
use super::EndpointState;
use super::Endpoints;
use super::HealthEntry;
use super::PATH_KEY;
use super::Policy;
use super::Registration;
use super::RegistrationId;
use super::RegistryState;
use super::TokenEntry;
use super::trim_namespace;

/// Serializable form of the state, used for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StateImage {
    pub registrations: Vec<Registration>,
    pub policies: Vec<(ContractKey, Policy)>,
    pub audit: Vec<AuditRecord>,
    pub audit_next_seq: u64,
    pub answers: Vec<Answer>,
    pub tokens: Vec<(String, TokenEntry)>,
    pub health: Vec<(RegistrationId, HealthEntry)>,
}

impl RegistryState {
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
            health: self.health.iter().map(|(id, entry)| (*id, entry.clone())).collect(),
        }
    }

    pub fn from_image(image: StateImage) -> Self {
        let mut state = Self { health: image.health.into_iter().collect(), ..Self::default() };
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
        state.routes = routes
            .into_iter()
            .map(|(key, by_id)| {
                let critical = by_id.keys().filter(|id| state.is_critical(id)).copied().collect();
                (key, Endpoints::changed(by_id, critical))
            })
            .collect();
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
        let mut image = serializer.serialize_struct("StateImage", 7)?;
        image.serialize_field(
            "registrations",
            &seq_of(state.registrations.values().map(|r| &**r), state.registrations.len()),
        )?;
        image.serialize_field("policies", &seq_of(state.policies.iter(), state.policies.len()))?;
        image.serialize_field("audit", &seq_of(state.audit.iter(), state.audit.len()))?;
        image.serialize_field("audit_next_seq", &state.audit_next_seq)?;
        image.serialize_field("answers", &seq_of(state.answers_oldest_first(), state.answers.len()))?;
        image.serialize_field("tokens", &seq_of(state.tokens.iter(), state.tokens.len()))?;
        image.serialize_field("health", &seq_of(state.health.iter(), state.health.len()))?;
        image.end()
    }
}
