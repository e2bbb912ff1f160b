//! Switchboard: a highly available service router.
//!
//! # Layout
//!
//! From the bottom up (`docs/ARCHITECTURE.md` states the layers; a test holds the imports to them):
//!
//! - [`h1`]: HTTP/1.1 messages as the data plane reads them: one header view for both parsers.
//! - [`registry`]: the registration list as plain data and the pure commands that change it.
//! - [`soap`]: SOAP on the wire, each parser once: actions, namespaces, entities, the start of an
//!   envelope, envelopes and faults; shared by the data plane, the SOAP registration endpoint
//!   and the sample service.
//! - [`secret`]: randomness from the operating system and comparison in constant time.
//! - [`telemetry`], [`metrics`]: logging and counters.
//! - [`tls`], [`netpolicy`]: rustls configurations; which endpoint addresses may be reached.
//! - [`serve`]: the accept loop of every listener.
//! - [`peer_auth`]: signatures of peer requests and the status challenge.
//! - [`raft`]: openraft adapters: sled log store, state machine, applied view, peer network.
//! - [`auth`]: API tokens, scopes and callers.
//! - [`cluster`]: writes through the leader, linearizable reads, bootstrap, admission, membership.
//! - [`health`]: active health checks: one prober per endpoint, confirmed transitions through Raft.
//! - [`proxy`]: the data plane: contract resolution, selection, attempts, forwarding, broadcast.
//! - [`api`]: the control API (registrations, cluster admin, health).
//! - [`peer`]: the peer endpoint (Raft RPCs and forwarded requests), behind the cluster secret.
//! - [`config`]: flags, parsed once into a validated configuration.
//! - [`node`]: the composition root.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod h1;
pub mod health;
pub mod metrics;
pub mod netpolicy;
pub mod node;
pub mod peer;
pub mod peer_auth;
pub mod proxy;
pub mod raft;
pub mod registry;
pub mod secret;
pub mod serve;
pub mod soap;
pub mod telemetry;
pub mod tls;

#[cfg(test)]
mod layers;
