//! Active health checks: how an endpoint is probed ([`Check`]), the committed verdict
//! ([`Health`]), and the transitions a prober writes through the log ([`HealthChange`]).

use serde::Deserialize;
use serde::Serialize;

use super::InvalidRegistration;
use super::Lease;
use super::Text;

/// Shortest accepted probe interval.
pub const MIN_INTERVAL_MS: u32 = 200;
/// Longest accepted probe interval: one hour.
pub const MAX_INTERVAL_MS: u32 = 3_600_000;
/// Most consecutive results `rise` and `fall` may ask for.
pub const MAX_RISE_FALL: u32 = 100;
/// Shortest accepted `deregister_after_ms`.
pub const MIN_DEREGISTER_AFTER_MS: u64 = 1_000;
/// Longest accepted `deregister_after_ms`: thirty days.
pub const MAX_DEREGISTER_AFTER_MS: u64 = 30 * 86_400_000;
/// Longest http check path, in bytes.
pub const MAX_CHECK_PATH_LEN: usize = 256;
/// Longest failure output kept with a verdict, in bytes.
pub const MAX_OUTPUT_LEN: usize = 200;

/// How an endpoint is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// `GET` of the check's path on the address's scheme, host and port; 2xx and 3xx pass.
    Http,
    /// A TCP connect to the address's host and port.
    #[default]
    Tcp,
    /// Not probed: always passing.
    None,
}

/// The active check of an endpoint. Every field has a default, so `{"kind": "http"}` is a whole
/// check.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Check {
    pub kind: CheckKind,
    /// Path of an http check (ignored by the other kinds).
    #[cfg_attr(feature = "openapi", schema(value_type = String, max_length = 256, pattern = "^/[!-\"$-~]*$"))]
    pub path: Text,
    #[cfg_attr(feature = "openapi", schema(minimum = 200, maximum = 3600000))]
    pub interval_ms: u32,
    /// At most `interval_ms`.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 3600000))]
    pub timeout_ms: u32,
    /// Successes in a row that turn a critical endpoint passing.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub rise: u32,
    /// Failures in a row that turn a passing endpoint critical.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub fall: u32,
    /// Remove the registration once it has been critical this long; never if absent.
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 2592000000.0))]
    pub deregister_after_ms: Option<u64>,
}

impl Default for Check {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            path: "/health".into(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            rise: 2,
            fall: 3,
            deregister_after_ms: None,
        }
    }
}

impl Check {
    /// A check that probes nothing.
    pub fn none() -> Self {
        Self { kind: CheckKind::None, ..Self::default() }
    }

    /// Checks the bounds of every field.
    pub fn check(&self) -> Result<(), InvalidRegistration> {
        let invalid = |message: String| Err(InvalidRegistration::Check(message));
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            return invalid(format!("interval_ms must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return invalid(format!(
                "timeout_ms must be between 1 and interval_ms ({}): a probe never outlives its interval",
                self.interval_ms
            ));
        }
        if !(1..=MAX_RISE_FALL).contains(&self.rise) || !(1..=MAX_RISE_FALL).contains(&self.fall) {
            return invalid(format!("rise and fall must be between 1 and {MAX_RISE_FALL}"));
        }
        if let Some(after) = self.deregister_after_ms
            && !(MIN_DEREGISTER_AFTER_MS..=MAX_DEREGISTER_AFTER_MS).contains(&after)
        {
            return invalid(format!(
                "deregister_after_ms must be between {MIN_DEREGISTER_AFTER_MS} and {MAX_DEREGISTER_AFTER_MS}"
            ));
        }
        let path_ok = self.path.len() <= MAX_CHECK_PATH_LEN
            && self.path.starts_with('/')
            && self.path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
        if !path_ok {
            return invalid(format!(
                "path must start with / and hold at most {MAX_CHECK_PATH_LEN} visible ASCII characters, no '#'"
            ));
        }
        Ok(())
    }

    /// A check given as `tcp`, `none` or `http:/PATH` (the cluster default's flag), with the
    /// default timings.
    pub fn parse_default(text: &str) -> Result<Self, String> {
        let check = match text {
            "tcp" => Self::default(),
            "none" => Self::none(),
            _ => match text.strip_prefix("http:") {
                Some(path) => Self { kind: CheckKind::Http, path: Text::from(path), ..Self::default() },
                None => return Err(format!("{text:?} is not tcp, none or http:/PATH")),
            },
        };
        check.check().map_err(|err| err.to_string())?;
        Ok(check)
    }
}

/// The committed verdict of an endpoint's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    #[default]
    Passing,
    Critical,
}

/// A verdict written through the log: what the checks said last, since when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    /// Leader time of the transition.
    pub since_ms: u64,
    /// The last failure, short (empty when passing).
    pub output: Text,
    /// The node whose probes decided it.
    pub by: u64,
}

/// One transition a prober proposes: the registration's lease generation (so a late prober
/// cannot mark a newer instance), the new status and the last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChange {
    pub lease: Lease,
    pub status: HealthStatus,
    pub output: String,
    pub by: u64,
}

impl HealthChange {
    pub fn check(&self) -> Result<(), InvalidRegistration> {
        if self.output.len() > MAX_OUTPUT_LEN || self.output.chars().any(char::is_control) {
            return Err(InvalidRegistration::Check(format!(
                "output must be at most {MAX_OUTPUT_LEN} bytes without control characters"
            )));
        }
        Ok(())
    }
}

/// What the registry keeps about a registration's checks: the check it was registered with, if
/// any, and the latest committed verdict, if any was ever written (none: passing since it was
/// registered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HealthEntry {
    pub check: Option<Check>,
    pub health: Option<Health>,
}

impl HealthEntry {
    pub fn is_empty(&self) -> bool {
        self.check.is_none() && self.health.is_none()
    }

    pub fn is_critical(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.status == HealthStatus::Critical)
    }
}

/// `text` cut to at most [`MAX_OUTPUT_LEN`] bytes at a character boundary, control characters
/// replaced by spaces.
pub fn short_output(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_OUTPUT_LEN));
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > MAX_OUTPUT_LEN {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_is_validated_field_by_field_and_the_defaults_pass() {
        assert_eq!(Check::default().check(), Ok(()));
        let bad = [
            Check { interval_ms: 199, ..Check::default() },
            Check { interval_ms: 200, timeout_ms: 201, ..Check::default() },
            Check { timeout_ms: 0, ..Check::default() },
            Check { rise: 0, ..Check::default() },
            Check { fall: 101, ..Check::default() },
            Check { deregister_after_ms: Some(999), ..Check::default() },
            Check { path: "health".into(), ..Check::default() },
            Check { path: "/a b".into(), ..Check::default() },
        ];
        for check in bad {
            let err = check.check().expect_err("refused");
            assert_eq!(err.code(), "invalid_check", "{check:?}");
        }
        let ok = Check { interval_ms: 200, timeout_ms: 200, deregister_after_ms: Some(1000), ..Check::default() };
        assert_eq!(ok.check(), Ok(()));
    }

    #[test]
    fn a_check_reads_from_partial_json_and_refuses_unknown_fields() {
        let check: Check = serde_json::from_str(r#"{"kind":"http","fall":1}"#).unwrap();
        assert_eq!(check, Check { kind: CheckKind::Http, fall: 1, ..Check::default() });
        assert!(serde_json::from_str::<Check>(r#"{"kind":"icmp"}"#).is_err());
        assert!(serde_json::from_str::<Check>(r#"{"interval":5}"#).is_err());
    }

    #[test]
    fn the_default_check_flag_reads_tcp_none_and_http_paths() {
        assert_eq!(Check::parse_default("tcp").unwrap(), Check::default());
        assert_eq!(Check::parse_default("none").unwrap().kind, CheckKind::None);
        let http = Check::parse_default("http:/ready").unwrap();
        assert_eq!((http.kind, http.path.as_str()), (CheckKind::Http, "/ready"));
        assert!(Check::parse_default("http:ready").is_err());
        assert!(Check::parse_default("udp").is_err());
    }

    #[test]
    fn output_is_cut_at_a_character_boundary_without_control_characters() {
        let long = "é".repeat(150);
        let short = short_output(&long);
        assert!(short.len() <= MAX_OUTPUT_LEN && short.chars().all(|c| c == 'é'));
        assert_eq!(short_output("a\nb"), "a b");
    }
}
