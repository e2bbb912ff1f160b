//! Switchboard: a highly available service router.
//!
//! # Layout
//!
//! - [`registry`]: the registration list as plain data and the pure commands that change it.
//! - [`raft`]: openraft adapters: sled log store, snapshot-file state machine, peer network.
//! - [`cluster`]: writes through the leader, linearizable reads, bootstrap, admission, membership.
//! - [`api`]: the control API (registrations, cluster admin, health).
//! - [`peer`]: the peer endpoint (Raft RPCs and forwarded requests), behind the cluster secret.
//! - [`proxy`]: the data plane: contract resolution, selection, forwarding, broadcast.
//! - [`config`], [`telemetry`], [`node`]: flags, logging, and the composition root.
//! - [`soap`]: SOAP actions, namespaces, entities, envelopes and faults: one parser each, shared by
//!   the data plane, the SOAP registration endpoint and the sample service.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod netpolicy;
pub mod node;
pub mod peer;
pub mod peer_auth;
pub mod proxy;
pub mod raft;
pub mod registry;
pub mod serve;
pub mod soap;
pub mod telemetry;
pub mod tls;
