//! The registry's changes as events: what applying a log entry changed, one event per change,
//! numbered by the entry's log index and the change's place in it. Every node applies the same
//! log, so every node derives the same events with the same ids: a reader may resume on any node.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::Serialize;

use super::ContractKey;
use super::Policy;
use super::Registration;

/// An event's position: the log index of the entry that made it and its place among that entry's
/// events (from 0). Written `N.k`; `N` alone stands for "everything of entry N", the position a
/// stream's heartbeat reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    pub index: u64,
    pub part: u32,
}

impl EventId {
    /// The position after every event of entry `index`.
    pub fn through(index: u64) -> Self {
        Self { index, part: u32::MAX }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.part == u32::MAX { write!(f, "{}", self.index) } else { write!(f, "{}.{}", self.index, self.part) }
    }
}

/// An event id that is neither `N` nor `N.k`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event id is a log index N or N.k, as the stream sent it")]
pub struct InvalidEventId;

impl std::str::FromStr for EventId {
    type Err = InvalidEventId;

    fn from_str(text: &str) -> Result<Self, InvalidEventId> {
        let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
        let (index, part) = match text.split_once('.') {
            Some((index, part)) if digits(index) && digits(part) => {
                (index.parse().map_err(|_| InvalidEventId)?, part.parse().map_err(|_| InvalidEventId)?)
            }
            None if digits(text) => (text.parse().map_err(|_| InvalidEventId)?, u32::MAX),
            _ => return Err(InvalidEventId),
        };
        Ok(Self { index, part })
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// In the OpenAPI document: the text form, `N.k` or `N`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for EventId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,20}([.][0-9]{1,20})?$"))
            .description(Some("An event's position: `N.k` (log index, place in the entry), or `N`"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for EventId {}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One change, as `GET /v1/events` sends it (the SSE event's `data`; its `event` is `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub id: EventId,
    /// Leader time of the change; none for a membership change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    #[serde(flatten)]
    pub change: EventChange,
}

/// What changed. Lease renewals and refreshes that change nothing but the epoch are not events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventChange {
    /// Added, or registered again with other options (the registration as it is now).
    Registered {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
    },
    /// Removed through the API (by its owner or another).
    Unregistered {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
    },
    /// Removed because its lease ran out.
    Expired {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
    },
    /// Removed because it was critical for longer than its check allows.
    Deregistered {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
    },
    /// No longer given new requests.
    Drained {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
    },
    /// Its committed health became passing.
    HealthPassing {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
    },
    /// Its committed health became critical, with the failure.
    HealthCritical {
        #[cfg_attr(feature = "openapi", schema(value_type = Registration))]
        registration: Arc<Registration>,
        output: String,
    },
    /// A contract's routing policy was set.
    PolicySet {
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        contract: ContractKey,
        policy: Policy,
    },
    /// The cluster's members changed.
    MembershipChanged { voters: Vec<u64>, learners: Vec<u64> },
}

impl EventChange {
    /// The SSE event name: the `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "registered",
            Self::Unregistered { .. } => "unregistered",
            Self::Expired { .. } => "expired",
            Self::Deregistered { .. } => "deregistered",
            Self::Drained { .. } => "drained",
            Self::HealthPassing { .. } => "health_passing",
            Self::HealthCritical { .. } => "health_critical",
            Self::PolicySet { .. } => "policy_set",
            Self::MembershipChanged { .. } => "membership_changed",
        }
    }

    /// The registration the change is about, if any.
    pub fn registration(&self) -> Option<&Arc<Registration>> {
        match self {
            Self::Registered { registration }
            | Self::Unregistered { registration }
            | Self::Expired { registration }
            | Self::Deregistered { registration }
            | Self::Drained { registration }
            | Self::HealthPassing { registration }
            | Self::HealthCritical { registration, .. } => Some(registration),
            Self::PolicySet { .. } | Self::MembershipChanged { .. } => None,
        }
    }

    /// Whether the change concerns the contract `key` (membership changes concern none).
    pub fn is_about(&self, key: &ContractKey) -> bool {
        match self {
            Self::PolicySet { contract, .. } => contract == key,
            _ => self.registration().is_some_and(|r| r.contract_key() == *key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_read_back_as_written_and_order_by_index_then_part() {
        for id in [EventId { index: 7, part: 0 }, EventId { index: 7, part: 3 }, EventId::through(7)] {
            assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        }
        assert_eq!("12".parse::<EventId>(), Ok(EventId::through(12)));
        assert!(EventId { index: 7, part: 3 } < EventId::through(7));
        assert!(EventId::through(7) < EventId { index: 8, part: 0 });
        for bad in ["", ".", "1.", ".1", "a", "1.2.3", "-1", "1.-2", "1 ", "99999999999999999999999", "1.4294967296"] {
            assert_eq!(bad.parse::<EventId>(), Err(InvalidEventId), "{bad:?}");
        }
    }
}
