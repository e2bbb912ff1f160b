//! How nodes prove to each other that they hold the cluster secret without ever sending it.
//!
//! Every peer request carries `Authorization: Switchboard-HMAC <hex>`, an HMAC-SHA256 under a key
//! derived from the secret, over the path, the sender's node id, the addressee (the node id and
//! incarnation a Raft RPC is meant for) and the body. A node that answers the request learns nothing it could use to
//! sign another one: a request sent to a wrong or hostile address (an operator's typo, a
//! membership change naming a foreign host) gives away neither the secret nor a credential.
//!
//! The other direction: before a node is added to the membership (and before the first
//! bootstrap counts an initial voter), the leader asks its status with a random challenge, and
//! the answer must carry an HMAC over that challenge and the node's id and incarnation. Only a
//! node holding the secret can answer; Raft traffic and the log flow only to proven members.
//!
//! A signature has no expiry: on a plaintext peer network an eavesdropper could replay a request
//! it saw (Raft tolerates duplicated messages; the forwarded write it carries was already
//! applied). Peer mutual TLS (`--peer-tls-*`) closes that, as it closes eavesdropping itself.

use hmac::KeyInit;
use hmac::Mac;
use sha2::Digest;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The authorization scheme of peer requests.
pub const SCHEME: &str = "Switchboard-HMAC ";

/// Random bytes a status request asks the answering node to sign.
pub type Challenge = [u8; 16];

/// The key derived from the cluster secret.
#[derive(Clone)]
pub struct PeerKey {
    key: [u8; 32],
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerKey(..)")
    }
}

impl PeerKey {
    pub fn new(cluster_secret: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"switchboard peer key v1\0");
        hash.update(cluster_secret.as_bytes());
        Self { key: hash.finalize().into() }
    }

    /// True when `presented` is the cluster secret itself (an operator proving it holds it).
    pub fn is_secret(&self, presented: &[u8]) -> bool {
        let Ok(presented) = std::str::from_utf8(presented) else { return false };
        crate::secret::constant_time_eq(&Self::new(presented).key, &self.key)
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        for part in parts {
            // Length-prefixed, so that no two different lists of parts feed the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The `Authorization` value for a request to `path` from node `from`, meant for `addressee`
    /// (if only one incarnation of one node may take it), carrying `body`.
    pub fn sign(&self, path: &str, from: &str, addressee: Option<&str>, body: &[u8]) -> String {
        let parts = [b"request", path.as_bytes(), from.as_bytes(), addressee.unwrap_or("").as_bytes(), body];
        format!("{SCHEME}{}", hex(&self.mac(&parts).finalize().into_bytes()))
    }

    /// Checks an `Authorization` value made by [`PeerKey::sign`] (in constant time).
    pub fn verify(&self, authorization: &[u8], path: &str, from: &[u8], addressee: Option<&[u8]>, body: &[u8]) -> bool {
        let Some(tag) = authorization.strip_prefix(SCHEME.as_bytes()).and_then(unhex32) else { return false };
        let parts = [b"request", path.as_bytes(), from, addressee.unwrap_or_default(), body];
        self.mac(&parts).verify_slice(&tag).is_ok()
    }

    /// True when the value at least claims the scheme (checked before a body is read).
    pub fn claims_scheme(authorization: &[u8]) -> bool {
        authorization.starts_with(SCHEME.as_bytes()) && authorization.len() == SCHEME.len() + 64
    }

    /// The answer to a status challenge, naming the node and incarnation that answers.
    pub fn prove(&self, challenge: &Challenge, node_id: u64, incarnation: u64) -> [u8; 32] {
        let tag = self.mac(&[b"status", challenge, &node_id.to_be_bytes(), &incarnation.to_be_bytes()]);
        tag.finalize().into_bytes().into()
    }

    pub fn check_proof(&self, challenge: &Challenge, node_id: u64, incarnation: u64, proof: &[u8; 32]) -> bool {
        self.mac(&[b"status", challenge, &node_id.to_be_bytes(), &incarnation.to_be_bytes()])
            .verify_slice(proof)
            .is_ok()
    }
}

/// A fresh random challenge: 128 bits from the operating system.
pub fn challenge() -> Result<Challenge, crate::secret::RandomError> {
    crate::secret::random_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_request_only() {
        let key = PeerKey::new("cluster-secret-0123456789");
        let signed = key.sign("/raft/vote", "1", Some("2.00ab"), b"body");
        assert!(!signed.contains("cluster-secret"), "the secret never appears");
        assert!(PeerKey::claims_scheme(signed.as_bytes()));
        assert!(key.verify(signed.as_bytes(), "/raft/vote", b"1", Some(b"2.00ab"), b"body"));
        assert!(!key.verify(signed.as_bytes(), "/raft/append", b"1", Some(b"2.00ab"), b"body"));
        assert!(!key.verify(signed.as_bytes(), "/raft/vote", b"3", Some(b"2.00ab"), b"body"), "another sender");
        assert!(!key.verify(signed.as_bytes(), "/raft/vote", b"1", Some(b"3.00ab"), b"body"));
        assert!(!key.verify(signed.as_bytes(), "/raft/vote", b"1", None, b"body"));
        assert!(!key.verify(signed.as_bytes(), "/raft/vote", b"1", Some(b"2.00ab"), b"bodx"));
        let other = PeerKey::new("another-secret-0123456789");
        assert!(!other.verify(signed.as_bytes(), "/raft/vote", b"1", Some(b"2.00ab"), b"body"));
        assert!(!key.verify(b"Bearer cluster-secret-0123456789", "/raft/vote", b"1", Some(b"2.00ab"), b"body"));
        assert!(!key.verify(b"", "/raft/vote", b"1", None, b""));
    }

    #[test]
    fn parts_cannot_be_shifted_between_fields() {
        let key = PeerKey::new("cluster-secret-0123456789");
        let signed = key.sign("/a", "1", Some("b"), b"c");
        assert!(!key.verify(signed.as_bytes(), "/ab", b"1", None, b"c"));
        assert!(!key.verify(signed.as_bytes(), "/a", b"1", Some(b""), b"bc"));
        assert!(!key.verify(signed.as_bytes(), "/a", b"1b", None, b"c"));
    }

    #[test]
    fn only_a_holder_of_the_secret_proves_a_status() {
        let key = PeerKey::new("cluster-secret-0123456789");
        let challenge = challenge().unwrap();
        let proof = key.prove(&challenge, 4, 0xabc);
        assert!(key.check_proof(&challenge, 4, 0xabc, &proof));
        assert!(!key.check_proof(&challenge, 5, 0xabc, &proof), "another node id");
        assert!(!key.check_proof(&challenge, 4, 0xabd, &proof), "another incarnation");
        assert!(!key.check_proof(&super::challenge().unwrap(), 4, 0xabc, &proof), "another challenge");
        assert!(!PeerKey::new("guess-guess-guess-guess").check_proof(&challenge, 4, 0xabc, &proof));
        assert_ne!(challenge, super::challenge().unwrap());
    }

    #[test]
    fn the_secret_itself_is_recognised() {
        let key = PeerKey::new("cluster-secret-0123456789");
        assert!(key.is_secret(b"cluster-secret-0123456789"));
        assert!(!key.is_secret(b"cluster-secret-012345678"));
        assert!(!key.is_secret(&[0xff, 0xfe]));
    }
}
