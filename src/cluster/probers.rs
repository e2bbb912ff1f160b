//! What the health checker needs of the cluster: the members that probe (committed members that
//! are up), whether a leader is known, and a call to one member.

use std::time::Duration;
use std::time::Instant;

use switchboard_proto::peer::Rpc;

use super::Cluster;
use crate::raft::NodeId;
use crate::raft::PeerError;

impl Cluster {
    /// The committed members that take part in probing, in id order: this node, and every other
    /// member whose gossip arrived within the silence that marks a member down. Every node that
    /// hears the same members computes the same list.
    pub fn probers(&self) -> Vec<NodeId> {
        let now = Instant::now();
        let me = self.node_id();
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let mut members: Vec<NodeId> = metrics
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id == me || self.inner.leases.heard_within_silence(*id, now))
            .collect();
        members.sort_unstable();
        members
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
