//! API tokens kept in the replicated state: created and revoked through the control API, so that
//! every node honours a change as soon as it applies the entry (the tokens file stays the
//! bootstrap set). Only SHA-256 digests are stored; scopes are kept as text and parsed by the
//! authentication layer (`auth`), which ignores a scope it cannot read.

use serde::Deserialize;
use serde::Serialize;

/// Most tokens the replicated state holds (revoked names included).
pub const MAX_TOKENS: usize = 1_000;
/// Longest token name, in bytes.
pub const MAX_TOKEN_NAME: usize = 64;
/// Most scopes per token, and the longest scope, in bytes.
pub const MAX_SCOPES: usize = 32;
pub const MAX_SCOPE_LEN: usize = 256;

/// A token's definition: its name, the SHA-256 digest of its value, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDef {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<String>,
    pub max_registrations: Option<u32>,
}

impl TokenDef {
    /// Checks the shape (the authentication layer checks that each scope parses).
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_TOKEN_NAME
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(format!("a token name is 1 to {MAX_TOKEN_NAME} letters, digits, '-', '_' or '.'"));
        }
        if self.scopes.len() > MAX_SCOPES || self.scopes.iter().any(|s| s.is_empty() || s.len() > MAX_SCOPE_LEN) {
            return Err(format!("a token has at most {MAX_SCOPES} scopes of 1 to {MAX_SCOPE_LEN} bytes"));
        }
        Ok(())
    }
}

/// A name in the replicated token table: a live token, or a revoked one (names are never reused,
/// so the audit trail stays unambiguous; revoking a name of the tokens file disables that token
/// on every node too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenEntry {
    Active { def: TokenDef, created_at_ms: u64, created_by: Option<String> },
    Revoked { revoked_at_ms: u64, revoked_by: Option<String> },
}

impl TokenEntry {
    pub fn def(&self) -> Option<&TokenDef> {
        match self {
            Self::Active { def, .. } => Some(def),
            Self::Revoked { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, scopes: &[&str]) -> TokenDef {
        TokenDef {
            name: name.into(),
            sha256: [1; 32],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            max_registrations: None,
        }
    }

    #[test]
    fn shapes_are_checked() {
        assert!(def("orders-eu.1", &["read"]).check().is_ok());
        for bad in [def("", &[]), def("has space", &[]), def(&"x".repeat(65), &[]), def("a", &[""])] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("register:urn:{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(def("a", &many).check().is_err());
    }
}
