//! Versioned on-disk records.
//!
//! Every value Switchboard writes to disk (log entries, vote, node identity, state machine
//! records, snapshots) starts with one byte: the version of its format. The rest is the postcard
//! encoding of that version's type. A reader that meets a version it does not know refuses the
//! record with a [`FormatError`] that names where it was found; it never guesses. A change of
//! format comes with a new version number and a migration (see `migrate`).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version this build writes.
pub const CURRENT: u8 = 1;

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error(
        "{place}: on-disk format version {version} is unknown to this build, which reads version {CURRENT}; \
         run the build that wrote it, or a newer one"
    )]
    UnknownVersion { place: String, version: u8 },
    #[error("{place}: unreadable record: {cause}")]
    Corrupt { place: String, cause: String },
}

/// Encodes `value` behind the current version byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, vec![CURRENT])
}

/// Decodes a record written by [`encode`]; `place` says where it was read, for the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], place: impl fmt::Display) -> Result<T, FormatError> {
    match bytes.split_first() {
        Some((&CURRENT, rest)) => postcard::from_bytes(rest)
            .map_err(|err| FormatError::Corrupt { place: place.to_string(), cause: err.to_string() }),
        Some((&version, _)) => Err(FormatError::UnknownVersion { place: place.to_string(), version }),
        None => Err(FormatError::Corrupt { place: place.to_string(), cause: "empty record".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_behind_its_version() {
        let bytes = encode(&(7u64, "seven")).unwrap();
        assert_eq!(bytes[0], CURRENT);
        assert_eq!(decode::<(u64, String)>(&bytes, "here").unwrap(), (7, "seven".to_owned()));
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let mut bytes = encode(&7u64).unwrap();
        bytes[0] = 9;
        let err = decode::<u64>(&bytes, "data/raft tree log key 3").unwrap_err();
        assert_eq!(err, FormatError::UnknownVersion { place: "data/raft tree log key 3".into(), version: 9 });
        assert!(err.to_string().starts_with("data/raft tree log key 3: on-disk format version 9 is unknown"));
        assert!(matches!(decode::<u64>(&[], "x"), Err(FormatError::Corrupt { .. })));
        assert!(matches!(decode::<u64>(&[CURRENT], "x"), Err(FormatError::Corrupt { .. })));
    }
}
