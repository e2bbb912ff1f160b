//! What the health checker needs of the cluster: the members that probe (committed members that
//! are ready, as their beats say), whether a leader is known, and a call to one member.

use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use std::collections::HashMap;
use std::sync::Arc;

use switchboard_proto::peer::Beat;
use switchboard_proto::peer::Handover;
use switchboard_proto::peer::MAX_BEAT_HANDOVERS;
use switchboard_proto::peer::ProberBeat;
use switchboard_proto::peer::Rpc;

use super::Cluster;
use super::STATUS_TIMEOUT;
use crate::raft::NodeId;
use crate::raft::PeerError;
use crate::registry::RegistrationId;

/// How often a node tells the others whether it probes.
pub const BEAT_EVERY: Duration = Duration::from_millis(500);
/// A member whose beat is older than this is taken for down: it probes nothing.
pub const BEAT_SILENCE: Duration = Duration::from_secs(2);

/// Another member's last beat, as heard.
#[derive(Debug, Clone)]
pub struct HeardBeat {
    ready: bool,
    at: Instant,
    /// The endpoints it handed over, and to whom.
    handed: Arc<HashMap<RegistrationId, NodeId>>,
}

impl Cluster {
    /// Whether this node takes part in probing: its replica caught up with a leader once since it
    /// started (it knows the registrations), and it is not stopping.
    pub fn probes(&self) -> bool {
        self.inner.caught_up.load(Ordering::Acquire) && !self.inner.stopping.load(Ordering::Acquire)
    }

    /// The committed members that take part in probing, in id order: this node if it probes, and
    /// every other member whose last beat, within [`BEAT_SILENCE`], said it probes. Every node
    /// that hears the same beats computes the same list.
    pub fn probers(&self) -> Vec<NodeId> {
        let now = Instant::now();
        let me = self.node_id();
        let beats = self.inner.prober_beats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ready = |id: &NodeId| match *id == me {
            true => self.probes(),
            false => {
                beats.get(id).is_some_and(|beat| beat.ready && now.saturating_duration_since(beat.at) < BEAT_SILENCE)
            }
        };
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let mut members: Vec<NodeId> =
            metrics.membership_config.membership().nodes().map(|(id, _)| *id).filter(ready).collect();
        members.sort_unstable();
        members
    }

    /// A beat from another member.
    pub fn record_beat(&self, beat: &ProberBeat) {
        let handed = beat.handed.iter().take(MAX_BEAT_HANDOVERS).map(|h| (h.id, h.to)).collect();
        let heard = HeardBeat { ready: beat.ready, at: Instant::now(), handed: Arc::new(handed) };
        self.inner.prober_beats.lock().unwrap_or_else(|p| p.into_inner()).insert(beat.from, heard);
    }

    /// The node that `from`, another member, handed `id` to, as its last beat within
    /// [`BEAT_SILENCE`] said.
    pub fn handed_over_by(&self, from: NodeId, id: &RegistrationId) -> Option<NodeId> {
        let beats = self.inner.prober_beats.lock().unwrap_or_else(|p| p.into_inner());
        let beat = beats.get(&from).filter(|beat| beat.at.elapsed() < BEAT_SILENCE)?;
        beat.handed.get(id).copied()
    }

    /// Sets the hand-overs this node's beats tell (the first [`MAX_BEAT_HANDOVERS`]).
    pub fn set_own_handovers(&self, mut handed: Vec<Handover>) {
        handed.truncate(MAX_BEAT_HANDOVERS);
        *self.inner.own_handovers.lock().unwrap_or_else(|p| p.into_inner()) = handed;
    }

    /// Duty: tell every other member, every [`BEAT_EVERY`], whether this node probes.
    pub(super) async fn beat_probers(self) {
        let mut tick = tokio::time::interval(BEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let handed = self.inner.own_handovers.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let beat = ProberBeat { from: self.node_id(), ready: self.probes(), handed };
            let members = self.other_members();
            let calls = members.iter().map(|node| self.inner.peers.call::<Beat>(&node.addr, &beat, STATUS_TIMEOUT));
            for result in futures_util::future::join_all(calls).await {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "prober beat not delivered");
                }
            }
        }
    }

    /// Whether this node knows a leader now.
    pub fn leader_known(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader.is_some()
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.node_id())
    }

    /// Calls RPC `R` on member `node`.
    pub async fn call_member<R: Rpc>(
        &self,
        node: NodeId,
        request: &R::Request,
        timeout: Duration,
    ) -> Result<R::Answer, PeerError> {
        let addr = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            metrics.membership_config.membership().get_node(&node).map(|n| n.addr.clone())
        };
        let addr =
            addr.ok_or_else(|| PeerError::Unreachable { addr: format!("node {node}"), cause: "not a member".into() })?;
        self.inner.peers.call::<R>(&addr, request, timeout).await
    }
}
