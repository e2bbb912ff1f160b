//! Secrets: randomness from the operating system and comparison in constant time. Every secret
//! the node makes (API tokens, peer challenges, data-directory incarnations, the dev cluster's
//! secrets) comes from [`random_bytes`], and every comparison with a secret goes through
//! [`constant_time_eq`]. Nothing else in the crate is a source of secrets: hashers and `fastrand`
//! serve load spreading only.

use subtle::ConstantTimeEq;

/// The operating system's random source failed (it practically never does).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(getrandom::Error);

/// `N` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(RandomError)?;
    Ok(bytes)
}

/// `N` random bytes as `2N` lowercase hex digits.
pub fn random_hex<const N: usize>() -> Result<String, RandomError> {
    Ok(random_bytes::<N>()?.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether two values are equal, in a time that depends on their lengths only, so that timing
/// does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"Bearer secret", b"Bearer secret"));
        assert!(!constant_time_eq(b"Bearer secreT", b"Bearer secret"));
        assert!(!constant_time_eq(b"Bearer secret!", b"Bearer secret"));
        assert!(!constant_time_eq(b"Bearer secre", b"Bearer secret"));
        assert!(!constant_time_eq(b"", b"Bearer secret"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn random_values_differ_and_have_their_length() {
        let (a, b) = (random_bytes::<16>().unwrap(), random_bytes::<16>().unwrap());
        assert_ne!(a, b, "two 128-bit draws never collide");
        let hex = random_hex::<32>().unwrap();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{hex}");
    }
}
