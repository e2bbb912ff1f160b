//! Leases across the cluster: heartbeats taken by any node, gossiped to the others, and expired
//! by the leader only when a quorum is fresh (the bookkeeping itself is in `leases`).

use std::time::Instant;

use openraft::ServerState;
use switchboard_proto::peer::Renew;

use super::Cluster;
use super::Gossip;
use super::Proposal;
use super::REAP_QUORUM_FRESH;
use super::STATUS_TIMEOUT;
use super::leases;
use super::leases::Leases;
use super::leases::Refusal;
use crate::registry::Actor;
use crate::registry::Command;
use crate::registry::Lease;
use crate::registry::Origin;
use crate::registry::Outcome;
use crate::registry::Registration;
use crate::registry::RegistrationId;

impl Cluster {
    /// Renews leases, as a heartbeat taken by this node. Returns the leases renewed and the
    /// refusals. An id this node does not know yet is looked up again after a linearizable
    /// barrier, so a heartbeat right after a registration on another node is not refused.
    pub async fn heartbeat(
        &self,
        requests: &[(RegistrationId, Option<u64>)],
        allowed: impl Fn(&Registration) -> bool,
    ) -> (Vec<Lease>, Vec<(RegistrationId, Refusal)>) {
        let check = |requests: &[(RegistrationId, Option<u64>)]| {
            let applied = self.inner.view.load();
            let mut renewed = Vec::new();
            let mut refused = Vec::new();
            for &(id, epoch) in requests {
                if applied.state.get(&id).is_some_and(|r| !allowed(r)) {
                    refused.push((id, Refusal::Forbidden));
                    continue;
                }
                match Leases::check(&applied.state, id, epoch) {
                    Ok(lease) => renewed.push(lease),
                    Err(refusal) => refused.push((id, refusal)),
                }
            }
            (renewed, refused)
        };
        let (mut renewed, mut refused) = check(requests);
        if refused.iter().any(|(_, refusal)| *refusal == Refusal::NotFound) && self.linearizable_barrier().await.is_ok()
        {
            let unknown: Vec<_> =
                requests.iter().filter(|(id, _)| refused.iter().any(|(r, _)| r == id)).copied().collect();
            let (more, still) = check(&unknown);
            renewed.extend(more);
            refused = still;
        }
        self.inner.leases.renew_local(&renewed, Instant::now());
        (renewed, refused)
    }

    /// Gossip from another member: the heartbeats it took, and where it listens.
    pub fn renew_from_peer(&self, gossip: &Gossip) {
        self.inner.leases.renew_remote(gossip.from, &gossip.leases, Instant::now());
        let mut routers = self.inner.routers.lock().unwrap_or_else(|p| p.into_inner());
        if routers.get(&gossip.from) != Some(&gossip.listeners) {
            // Endpoints may not be registered at any listener of any router of the cluster.
            routers.insert(gossip.from, gossip.listeners.clone());
            self.inner.config.policy.set_other_routers(routers.values().flatten().copied().collect());
        }
    }

    /// Duty: pass the heartbeats this node took on to every other member.
    pub(super) async fn gossip_leases(self) {
        let mut tick = tokio::time::interval(leases::GOSSIP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Sent even when empty: the leader learns how late this node's news may be.
            let gossip = Gossip {
                from: self.node_id(),
                leases: self.inner.leases.take_outbox(),
                listeners: self.inner.config.listeners.clone(),
            };
            let members = self.other_members();
            let calls = members.iter().map(|node| self.inner.peers.call::<Renew>(&node.addr, &gossip, STATUS_TIMEOUT));
            for result in futures_util::future::join_all(calls).await {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "lease gossip not delivered");
                }
            }
        }
    }

    /// Leader duty: expire leases that ran out, as one replicated command per round.
    pub(super) async fn reap_leases(self) {
        let mut tick = tokio::time::interval(leases::REAP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_since: Option<Instant> = None;
        let mut rounds = 0u64;
        let mut last_tick = Instant::now();
        let mut hold_until = last_tick;
        loop {
            tick.tick().await;
            rounds += 1;
            // A round that comes late means this node was starved: the heartbeats and gossip it
            // has not read yet may renew leases. Decide nothing until as long again has passed.
            let now = Instant::now();
            let late = now.saturating_duration_since(last_tick).saturating_sub(leases::REAP_EVERY);
            last_tick = now;
            if late > leases::REAP_EVERY {
                hold_until = hold_until.max(now + late);
                tracing::debug!(late_ms = late.as_millis() as u64, "lease reaper ran late; holding expiry");
            }
            let metrics = self.metrics();
            // Only a leader that hears from a quorum decides expiry. A leader cut off from its
            // peers also misses their gossip, so its renewal times are stale; when it hears from
            // a quorum again it starts over with the grace of a new leader.
            let in_touch = metrics.millis_since_quorum_ack.is_some_and(|ms| ms <= REAP_QUORUM_FRESH.as_millis() as u64);
            if metrics.state != ServerState::Leader || !in_touch {
                leader_since = None;
                continue;
            }
            let since = *leader_since.get_or_insert(now);
            if now < hold_until {
                continue;
            }
            let applied = self.inner.view.load();
            if rounds.is_multiple_of(50) {
                self.inner.leases.retain_registered(&applied.state);
            }
            let members = metrics.membership_config.membership().nodes().map(|(id, _)| *id).collect::<Vec<_>>();
            let grace = self.inner.leases.gossip_lag(members.into_iter().filter(|id| *id != self.node_id()), now);
            let expired = self.inner.leases.expired(&applied.state, now, since, grace);
            drop(applied);
            if expired.is_empty() {
                continue;
            }
            let count = expired.len();
            // Proposed here or not at all: a decision made with this node's renewal times must
            // never be forwarded to another leader, which has its own.
            let actor = Actor::internal("lease-expiry");
            let origin = Origin { node: self.node_id(), principal: actor.name, quota: None, request: None };
            match self.propose_local(Proposal { command: Command::Expire(expired), origin }).await {
                Ok(Outcome::Expired(ids)) => {
                    crate::metrics::METRICS.leases_expired.add(ids.len() as u64);
                    tracing::info!(expired = ids.len(), checked = count, "leases expired");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "expiring leases failed; the next round decides again"),
            }
        }
    }
}
