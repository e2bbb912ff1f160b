//! The outcomes of recent client requests, so that a retried request (the same origin node and
//! request number) is answered with its first outcome instead of being applied twice.

use serde::Deserialize;
use serde::Serialize;

use super::Command;
use super::Outcome;
use super::Registration;
use super::RegistryState;
use super::Text;

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
    pub(super) fn of(outcome: &Outcome) -> Self {
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
    pub(super) fn replay(&self, command: &Command) -> Option<Outcome> {
        match (self, command) {
            (Self::Outcome(outcome), _) => Some(outcome.clone()),
            (Self::Registered { created, epoch, at_ms, owner }, command) => {
                // A request number names one request; another command under it is not a retry.
                let spec = command.registration()?;
                let registration = Registration::of(&spec, *epoch, *at_ms, owner.clone());
                Some(Outcome::Registered { registration, created: *created })
            }
        }
    }
}

impl RegistryState {
    /// Drops remembered outcomes older than [`ANSWER_TTL_MS`] before `now_ms`, and beyond the cap.
    pub(super) fn forget_answers(&mut self, now_ms: u64) {
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

    pub(super) fn answers_oldest_first(&self) -> impl Iterator<Item = &Answer> {
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
}
