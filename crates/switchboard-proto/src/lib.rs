//! Everything that crosses a Switchboard process boundary, as plain serde types and nothing
//! heavier: what a service or an operator sends the control API and gets back
//! ([`api`], [`registry`]), what nodes send each other ([`peer`]), and the entries of the
//! replicated log ([`registry::Change`]).
//!
//! The server, the client library and the tests all speak through these types, so a field or a
//! path is written once. Wire encodings are pinned by golden-bytes tests: changing one is a
//! protocol change (see [`peer`]) or an on-disk format change, never an accident.

pub mod api;
pub mod peer;
pub mod registry;

/// A node's id in the cluster.
pub type NodeId = u64;
