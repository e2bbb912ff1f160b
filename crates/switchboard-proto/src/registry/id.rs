//! Registration ids: a stable 128-bit hash of the three identifying fields.
//!
//! The id is SHA-256 over the length-prefixed address, normalized namespace and contract name,
//! truncated to 16 bytes. Length prefixes make the encoding injective, so `("ab", "c")` and
//! `("a", "bc")` never collide the way an additive hash of the fields would.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::Deserializer;
use serde::Serialize;
use serde::Serializer;
use sha2::Digest;
use sha2::Sha256;

/// Identifies one registration; shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegistrationId([u8; 16]);

impl RegistrationId {
    /// Hashes the identifying triple. Callers pass already-normalized values.
    pub fn of(address: &str, contract_namespace: &str, contract_name: &str) -> Self {
        let mut hasher = Sha256::new();
        for field in [address, contract_namespace, contract_name] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// The text form is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a registration id is 32 hex digits")]
pub struct InvalidId;

impl FromStr for RegistrationId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, InvalidId> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return Err(InvalidId);
        }
        let mut bytes = [0u8; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or(InvalidId)?;
            let lo = hex_value(pair[1]).ok_or(InvalidId)?;
            bytes[i] = hi << 4 | lo;
        }
        Ok(Self(bytes))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RegistrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// Text in JSON, raw bytes in the binary encodings used on disk and between peers.
impl Serialize for RegistrationId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() { serializer.collect_str(self) } else { self.0.serialize(serializer) }
    }
}

impl<'de> Deserialize<'de> for RegistrationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(deserializer).map(Self)
        }
    }
}

// In the OpenAPI document: the text form, as JSON carries it.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RegistrationId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9a-f]{32}$"))
            .description(Some("32 hex digits: a hash of the address, the namespace and the name"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RegistrationId {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_across_runs_and_versions() {
        // A fixed value: changing the hash would orphan every stored registration.
        let id = RegistrationId::of("http://10.0.0.5:9000/calc", "http://tempuri.org", "ICalculator");
        assert_eq!(id.to_string(), "b122da3384629903cba83823a2a91464");
    }

    #[test]
    fn fields_do_not_bleed_into_each_other() {
        assert_ne!(RegistrationId::of("ab", "c", "d"), RegistrationId::of("a", "bc", "d"));
        assert_ne!(RegistrationId::of("a", "b", "cd"), RegistrationId::of("a", "bc", "d"));
    }

    #[test]
    fn text_round_trip_and_rejects() {
        let id = RegistrationId::of("http://a", "n", "c");
        assert_eq!(id.to_string().parse::<RegistrationId>(), Ok(id));
        assert_eq!(id.to_string().to_uppercase().parse::<RegistrationId>(), Ok(id));
        assert_eq!("xyz".parse::<RegistrationId>(), Err(InvalidId));
        assert_eq!("g".repeat(32).parse::<RegistrationId>(), Err(InvalidId));
    }

    #[test]
    fn serde_forms() {
        let id = RegistrationId::of("http://a", "n", "c");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<RegistrationId>(&json).unwrap(), id);
        let bytes = postcard::to_stdvec(&id).unwrap();
        assert_eq!(bytes.len(), 16);
        assert_eq!(postcard::from_bytes::<RegistrationId>(&bytes).unwrap(), id);
    }
}
