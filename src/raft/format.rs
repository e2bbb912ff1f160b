//! Versioned on-disk records.
//!
//! Every value Switchboard writes to disk (log entries, vote, node identity, state machine
//! records, snapshots) starts with one byte: the version of its format. The rest is the postcard
//! encoding of that version's type. A reader that meets a version it does not know refuses the
//! record with a [`FormatError`] that names where it was found; it never guesses. A change of
//! format comes with a new version number and a migration (see `migrate`).
//!
//! Versions:
//! - 1: the first versioned format.
//! - 2: the state machine's records (image chunks, journal records, snapshots) gain the API
//!   token table. Every other record is encoded as in version 1, so [`decode`] reads both; the
//!   changed ones are read with [`decode_upgrading`], which converts a version-1 record. A
//!   directory of format 1 opens as it is and is marked format 2 (`Storage::open`): its old
//!   records stay readable, and a build that knows only format 1 refuses the directory.
//! - 3: a contract's policy gains `rewrite_to`, so the records that hold policies (image chunks,
//!   journal records, snapshots) change again and are read with [`decode_upgrading`] from any
//!   older version. Log entries keep their encoding: the command that carries the new field is a
//!   new variant (`Command::SetPolicy`), and a policy without it is still written as
//!   `Command::SetPolicyV1`. A directory of format 1 or 2 opens as it is and is marked format 3.
//! - 4: active health checks. The state machine's records gain the checks and committed verdicts
//!   of registrations, and a policy gains its default check and panic threshold. As in format 3,
//!   log entries keep their encoding (new commands are new variants, written only when their new
//!   options are used), and any older directory opens as it is and is marked format 4.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version this build writes.
pub const CURRENT: u8 = 4;

/// The oldest version this build reads.
pub const OLDEST: u8 = 1;

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

/// Decodes a record written by [`encode`] (by this build or an earlier one) of a type whose
/// encoding has not changed since [`OLDEST`]; `place` says where it was read, for the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], place: impl fmt::Display) -> Result<T, FormatError> {
    let (_, rest) = split(bytes, &place)?;
    postcard::from_bytes(rest).map_err(|err| FormatError::Corrupt { place: place.to_string(), cause: err.to_string() })
}

/// Decodes a record of a type that changed in versions 2, 3 and 4: a version-1 record is read
/// as `V1`, a version-2 record as `V2` and a version-3 one as `V3`, and each is converted up to
/// `T`, one version at a time.
pub fn decode_upgrading<V1, V2, V3, T>(bytes: &[u8], place: impl fmt::Display) -> Result<T, FormatError>
where
    V1: DeserializeOwned + Into<V2>,
    V2: DeserializeOwned + Into<V3>,
    V3: DeserializeOwned + Into<T>,
    T: DeserializeOwned,
{
    let corrupt = |err: postcard::Error| FormatError::Corrupt { place: place.to_string(), cause: err.to_string() };
    match split(bytes, &place)? {
        (1, rest) => postcard::from_bytes::<V1>(rest).map(|v1| v1.into().into().into()).map_err(corrupt),
        (2, rest) => postcard::from_bytes::<V2>(rest).map(|v2| v2.into().into()).map_err(corrupt),
        (3, rest) => postcard::from_bytes::<V3>(rest).map(Into::into).map_err(corrupt),
        (_, rest) => postcard::from_bytes(rest).map_err(corrupt),
    }
}

/// The version byte and the rest, if the version is one this build reads.
fn split<'a>(bytes: &'a [u8], place: &impl fmt::Display) -> Result<(u8, &'a [u8]), FormatError> {
    match bytes.split_first() {
        Some((&version, rest)) if (OLDEST..=CURRENT).contains(&version) => Ok((version, rest)),
        Some((&version, _)) => Err(FormatError::UnknownVersion { place: place.to_string(), version }),
        None => Err(FormatError::Corrupt { place: place.to_string(), cause: "empty record".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_of_a_changed_type_is_upgraded_from_versions_1_2_and_3() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct V1(u64);
        #[derive(serde::Serialize, serde::Deserialize)]
        struct V2(u64, Vec<String>);
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct V3(u64, Vec<String>, bool);
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct V4(u64, Vec<String>, bool, u8);
        impl From<V3> for V4 {
            fn from(old: V3) -> Self {
                Self(old.0, old.1, old.2, 4)
            }
        }
        impl From<V1> for V2 {
            fn from(old: V1) -> Self {
                Self(old.0, Vec::new())
            }
        }
        impl From<V2> for V3 {
            fn from(old: V2) -> Self {
                Self(old.0, old.1, true)
            }
        }
        let versioned = |version: u8, body: Vec<u8>| [vec![version], body].concat();
        let v1 = versioned(1, postcard::to_stdvec(&V1(7)).unwrap());
        assert_eq!(decode_upgrading::<V1, V2, V3, V4>(&v1, "x").unwrap(), V4(7, Vec::new(), true, 4));
        let v2 = versioned(2, postcard::to_stdvec(&V2(8, vec!["a".into()])).unwrap());
        assert_eq!(decode_upgrading::<V1, V2, V3, V4>(&v2, "x").unwrap(), V4(8, vec!["a".into()], true, 4));
        let v3 = versioned(3, postcard::to_stdvec(&V3(9, vec!["b".into()], false)).unwrap());
        assert_eq!(decode_upgrading::<V1, V2, V3, V4>(&v3, "x").unwrap(), V4(9, vec!["b".into()], false, 4));
        let v4 = encode(&V4(10, Vec::new(), false, 7)).unwrap();
        assert_eq!(decode_upgrading::<V1, V2, V3, V4>(&v4, "x").unwrap(), V4(10, Vec::new(), false, 7));
        let v5 = versioned(5, postcard::to_stdvec(&V4(9, Vec::new(), false, 0)).unwrap());
        assert_eq!(
            decode_upgrading::<V1, V2, V3, V4>(&v5, "x").unwrap_err(),
            FormatError::UnknownVersion { place: "x".into(), version: 5 }
        );
    }

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
        assert_eq!(
            decode::<u64>(&[0, 7], "x").unwrap_err(),
            FormatError::UnknownVersion { place: "x".into(), version: 0 }
        );
        let err = decode::<u64>(&bytes, "data/raft tree log key 3").unwrap_err();
        assert_eq!(err, FormatError::UnknownVersion { place: "data/raft tree log key 3".into(), version: 9 });
        assert!(err.to_string().starts_with("data/raft tree log key 3: on-disk format version 9 is unknown"));
        assert!(matches!(decode::<u64>(&[], "x"), Err(FormatError::Corrupt { .. })));
        assert!(matches!(decode::<u64>(&[CURRENT], "x"), Err(FormatError::Corrupt { .. })));
    }
}
