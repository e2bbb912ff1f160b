//! Who a data directory belongs to: a node id and an incarnation drawn at random when the
//! directory was created.
//!
//! The membership records the incarnation of every member it admitted, and every Raft RPC names
//! the incarnation it is meant for. A node whose directory was wiped (or replaced) has a new
//! incarnation, so it refuses the RPCs addressed to its old self and neither votes nor counts
//! toward a commit until the leader has removed the old incarnation and added the new one.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::Serialize;

use crate::raft::NodeId;

/// The identity stored in a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_id: NodeId,
    pub incarnation: u64,
    /// The directory was migrated from the format that had no incarnations: membership entries
    /// written back then name no incarnation, and they name this one.
    pub migrated: bool,
}

impl NodeIdentity {
    /// A new identity for a fresh data directory: a random incarnation, never 0.
    pub fn fresh(node_id: NodeId) -> Result<Self, crate::secret::RandomError> {
        let incarnation = u64::from_le_bytes(crate::secret::random_bytes()?).max(1);
        Ok(Self { node_id, incarnation, migrated: false })
    }

    /// Whether `incarnation`, as a membership entry or an RPC names it, is this directory's.
    pub fn is(&self, incarnation: Option<u64>) -> bool {
        match incarnation {
            Some(incarnation) => incarnation == self.incarnation,
            None => self.migrated,
        }
    }
}

/// The node an RPC is meant for: `{node_id}.{incarnation in hex}`, or `{node_id}.legacy` for a
/// member recorded without one. Sent in the [`ADDRESSEE_HEADER`] of every Raft RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressee {
    pub node_id: NodeId,
    pub incarnation: Option<u64>,
}

impl fmt::Display for Addressee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.incarnation {
            Some(incarnation) => write!(f, "{}.{incarnation:016x}", self.node_id),
            None => write!(f, "{}.legacy", self.node_id),
        }
    }
}

impl FromStr for Addressee {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not node_id.incarnation");
        let (id, incarnation) = text.split_once('.').ok_or_else(bad)?;
        let node_id = id.parse().map_err(|_| bad())?;
        let incarnation = match incarnation {
            "legacy" => None,
            hex => Some(u64::from_str_radix(hex, 16).map_err(|_| bad())?),
        };
        Ok(Self { node_id, incarnation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_identities_differ() {
        let (a, b) = (NodeIdentity::fresh(1).unwrap(), NodeIdentity::fresh(1).unwrap());
        assert_ne!(a.incarnation, b.incarnation);
        assert!(a.is(Some(a.incarnation)) && !a.is(Some(b.incarnation)));
        assert!(!a.is(None), "a fresh directory is never the one a legacy entry names");
        assert!(NodeIdentity { migrated: true, ..a }.is(None));
    }

    #[test]
    fn addressees_round_trip() {
        for addressee in
            [Addressee { node_id: 3, incarnation: Some(0xabc) }, Addressee { node_id: 9, incarnation: None }]
        {
            assert_eq!(addressee.to_string().parse::<Addressee>().unwrap(), addressee);
        }
        assert!("3".parse::<Addressee>().is_err());
        assert!("x.legacy".parse::<Addressee>().is_err());
        assert!("3.zz".parse::<Addressee>().is_err());
    }
}
