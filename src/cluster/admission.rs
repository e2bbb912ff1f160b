//! What makes a registration admissible, in one place, checked where a write is proposed:
//!
//! - on the node that takes the request ([`Stage::Entry`]): the address, against this node's
//!   address policy (the scheme; every IP its host is or resolves to; the cluster's listeners this
//!   node knows of);
//! - on the leader, for a write a peer forwarded ([`Stage::Forwarded`]): the command's own
//!   validity, and the address against the cluster's listeners again (the leader always knows its
//!   own, whatever the forwarding node knew);
//! - on the leader, before it proposes any write ([`Stage::Leader`]): the registry's limits and
//!   path conflicts, against the applied state (writes still in flight can overshoot the limits by
//!   at most one batch).
//!
//! Who may register what (token scopes) is the control API's to decide, before it writes.

use super::Cluster;
use super::ClusterError;
use crate::registry::Command;
use crate::registry::ContractKey;
use crate::registry::PATH_KEY;
use crate::registry::RegistrationSpec;

/// Where in its way to the log a write is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// The node the client sent it to.
    Entry,
    /// The leader, receiving it from a peer.
    Forwarded,
    /// The leader, about to propose it.
    Leader,
}

impl Cluster {
    /// Refuses a command that may not be written at this stage; passes every other command.
    pub(super) async fn check_registration(&self, command: &Command, stage: Stage) -> Result<(), ClusterError> {
        if stage == Stage::Forwarded {
            command.check_forwarded().map_err(|err| ClusterError::InvalidRequest(err.to_string()))?;
        }
        let Some(spec) = command.registration() else { return Ok(()) };
        let spec = &*spec;
        let policy = &self.inner.config.policy;
        match stage {
            Stage::Entry => policy
                .check_registration(&spec.address)
                .await
                .map_err(|refused| ClusterError::InvalidAddress(format!("address: {}", refused.0))),
            Stage::Forwarded => policy
                .check_not_a_listener(&spec.address)
                .await
                .map_err(|refused| ClusterError::InvalidAddress(format!("address refused: {refused}"))),
            Stage::Leader => {
                self.check_room(spec)?;
                self.check_path(spec)
            }
        }
    }

    /// Refuses a registration that would take the registry beyond its limits.
    fn check_room(&self, spec: &RegistrationSpec) -> Result<(), ClusterError> {
        let limits = self.inner.config.limits;
        let applied = self.inner.view.load();
        let existing = applied.state.get(&spec.id).map(|r| r.approx_bytes());
        if existing.is_none() && applied.state.len() >= limits.max_registrations {
            return Err(ClusterError::RegistryFull(format!(
                "the registry holds its limit of {} registrations",
                limits.max_registrations
            )));
        }
        let bytes = applied.state.bytes() - existing.unwrap_or(0) + spec.approx_bytes();
        if bytes > limits.max_bytes {
            return Err(ClusterError::RegistryFull(format!(
                "the registry would exceed its limit of {} MiB",
                limits.max_bytes >> 20
            )));
        }
        Ok(())
    }

    /// Refuses a registration that binds a path another contract's registrations bind: a path
    /// routes to one contract.
    fn check_path(&self, spec: &RegistrationSpec) -> Result<(), ClusterError> {
        let Some(path) = spec.metadata.get(PATH_KEY) else { return Ok(()) };
        let key = ContractKey::new(&spec.contract_namespace, &spec.contract_name);
        match self.inner.view.load().state.path_taken(path, &key) {
            Some(other) => Err(ClusterError::PathConflict(format!(
                "path {path} is bound by contract {other}: a path routes to one contract"
            ))),
            None => Ok(()),
        }
    }
}
