//! Applying a committed change: the commands, each a pure function of the state, the change and
//! its log index; quotas and owners counted as they go.

use std::sync::Arc;

use super::Answer;
use super::AuditAction;
use super::AuditRecord;
use super::Change;
use super::Command;
use super::ContractKey;
use super::EndpointState;
use super::EventChange;
use super::Health;
use super::HealthEntry;
use super::HealthStatus;
use super::MAX_TOKENS;
use super::Origin;
use super::Outcome;
use super::Policy;
use super::Registration;
use super::RegistrationId;
use super::RegistrationSpec;
use super::RegistryState;
use super::Remembered;
use super::Text;
use super::TokenEntry;

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

    pub(super) fn apply_command(&mut self, index: u64, change: &Change) -> Outcome {
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
            Command::RegisterV1(spec) => self.apply_register(index, change, &spec.clone().into(), audit),
            Command::Register(spec) => self.apply_register(index, change, spec, audit),
            Command::SetHealth(changes) => {
                let mut applied = Vec::new();
                for health in changes {
                    let Some(registration) = self.registrations.get(&health.lease.id).cloned() else { continue };
                    let entry = self.health.get(&health.lease.id).cloned().unwrap_or_default();
                    let current = entry.health.as_ref().map_or(HealthStatus::Passing, |h| h.status);
                    if registration.epoch != health.lease.epoch || current == health.status {
                        continue;
                    }
                    let verdict = Health {
                        status: health.status,
                        since_ms: change.at_ms,
                        output: Text::from(health.output.as_str()),
                        by: health.by,
                    };
                    self.put_health(health.lease.id, HealthEntry { health: Some(verdict), ..entry });
                    self.reindex(&registration);
                    self.emit(match health.status {
                        HealthStatus::Passing => EventChange::HealthPassing { registration },
                        HealthStatus::Critical => {
                            EventChange::HealthCritical { registration, output: health.output.clone() }
                        }
                    });
                    applied.push(health.lease.id);
                }
                Outcome::HealthSet(applied)
            }
            Command::Deregister(leases) => {
                let mut removed = Vec::new();
                for lease in leases {
                    if self.registrations.get(&lease.id).is_some_and(|r| r.epoch == lease.epoch)
                        && self.is_critical(&lease.id)
                        && let Some(registration) = self.remove(&lease.id)
                    {
                        self.record(audit(
                            AuditAction::Deregistered,
                            Some(&registration),
                            registration.contract_key().to_string(),
                        ));
                        self.emit(EventChange::Deregistered { registration });
                        removed.push(lease.id);
                    }
                }
                Outcome::Deregistered(removed)
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
                    self.emit(EventChange::Unregistered { registration: registration.clone() });
                    Outcome::Unregistered(Registration::clone(&registration))
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
                    if let Some(registration) = self.registrations.get(id).cloned() {
                        self.emit(EventChange::Drained { registration });
                    }
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
                        self.emit(EventChange::Expired { registration });
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
                self.set_policy(key, policy.clone());
                self.record(audit(AuditAction::PolicySet, None, key.to_string()));
                let policy = self.policies.get(key).cloned().unwrap_or_default();
                self.emit(EventChange::PolicySet { contract: key.clone(), policy });
                Outcome::PolicySet
            }
            Command::SetPolicyV1(key, policy) => {
                self.set_policy(key, policy.clone().into());
                self.record(audit(AuditAction::PolicySet, None, key.to_string()));
                let policy = self.policies.get(key).cloned().unwrap_or_default();
                self.emit(EventChange::PolicySet { contract: key.clone(), policy });
                Outcome::PolicySet
            }
            Command::SetPolicyV2(key, policy) => {
                self.set_policy(key, policy.clone().into());
                self.record(audit(AuditAction::PolicySet, None, key.to_string()));
                let policy = self.policies.get(key).cloned().unwrap_or_default();
                self.emit(EventChange::PolicySet { contract: key.clone(), policy });
                Outcome::PolicySet
            }
        }
    }

    fn apply_register(
        &mut self,
        index: u64,
        change: &Change,
        spec: &RegistrationSpec,
        audit: impl Fn(AuditAction, Option<&Registration>, String) -> AuditRecord,
    ) -> Outcome {
        let key = ContractKey::new(&spec.contract_namespace, &spec.contract_name).to_string();
        if let Some(refused) = self.over_quota(spec, &change.origin) {
            let mut record = audit(AuditAction::QuotaExceeded, None, key);
            (record.id, record.address) = (Some(spec.id), Some(spec.address.clone()));
            self.record(record);
            return refused;
        }
        let before = self.registrations.get(&spec.id).cloned();
        let check_before = self.health.get(&spec.id).and_then(|entry| entry.check.clone());
        let outcome = self.register(index, change.at_ms, spec, change.origin.principal.clone());
        if let Outcome::Registered { registration, created } = &outcome {
            // A refresh that changes nothing but the lease's epoch is not an event.
            let same = before.is_some_and(|before| before.same_options(registration)) && check_before == spec.check;
            if !same {
                let action = if *created { AuditAction::Registered } else { AuditAction::Refreshed };
                self.record(audit(action, Some(registration), key));
                if let Some(registration) = self.registrations.get(&spec.id).cloned() {
                    self.emit(EventChange::Registered { registration });
                }
            }
        }
        outcome
    }

    /// Sets a registration's health entry (removed when empty).
    fn put_health(&mut self, id: RegistrationId, entry: HealthEntry) {
        self.touched.registrations.insert(id);
        if entry.is_empty() {
            self.health.remove(&id);
        } else {
            self.health.insert(id, entry);
        }
    }

    /// Records what a change changed, for [`RegistryState::take_events`].
    fn emit(&mut self, change: EventChange) {
        self.events.push(change);
    }

    fn set_policy(&mut self, key: &ContractKey, policy: Policy) {
        if policy == Policy::default() {
            self.policies.remove(key);
        } else {
            self.policies.insert(key.clone(), policy);
        }
        self.touched.policies.insert(key.clone());
    }

    pub(super) fn put_token(&mut self, name: String, entry: TokenEntry) {
        self.touched.tokens.insert(name.clone());
        self.tokens.insert(name, entry);
    }

    pub(super) fn over_quota(&self, spec: &RegistrationSpec, origin: &Origin) -> Option<Outcome> {
        let (Some(owner), Some(quota)) = (&origin.principal, origin.quota) else { return None };
        let already_mine = self.registrations.get(&spec.id).is_some_and(|r| r.owner.as_deref() == Some(owner.as_str()));
        let owned = self.owned.get(owner).copied().unwrap_or(0);
        (!already_mine && owned >= quota).then(|| Outcome::QuotaExceeded { owner: owner.clone(), quota })
    }

    pub(super) fn count_owner(&mut self, owner: Option<&str>, delta: i64) {
        let Some(owner) = owner else { return };
        let count = i64::from(self.owned.get(owner).copied().unwrap_or(0)) + delta;
        if count <= 0 {
            self.owned.remove(owner);
        } else {
            self.owned.insert(owner.to_owned(), count as u32);
        }
    }

    pub(super) fn register(
        &mut self,
        index: u64,
        at_ms: u64,
        spec: &RegistrationSpec,
        owner: Option<String>,
    ) -> Outcome {
        let registration = Registration::of(spec, index, at_ms, owner.map(Text::from));
        // A new epoch is a new instance: passing until its checks say otherwise.
        self.put_health(spec.id, HealthEntry { check: spec.check.clone(), health: None });
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

    pub(super) fn drain(&mut self, id: &RegistrationId) -> Outcome {
        let Some(current) = self.registrations.get(id) else {
            return Outcome::NotFound(*id);
        };
        let mut registration = Registration::clone(current);
        registration.state = EndpointState::Draining;
        self.registrations.insert(*id, Arc::new(registration.clone()));
        self.reindex(&registration);
        Outcome::Drained(registration)
    }

    pub(super) fn remove(&mut self, id: &RegistrationId) -> Option<Arc<Registration>> {
        let removed = self.registrations.remove(id)?;
        self.put_health(*id, HealthEntry::default());
        self.count_owner(removed.owner.as_deref(), -1);
        self.bytes -= removed.approx_bytes();
        self.reindex(&removed);
        Some(removed)
    }
}
