//! Validation of what a caller asks to register, and the contract key both sides agree on.
//!
//! Everything that enters the replicated log has passed through [`RegistrationSpec::new`], so the
//! state machine never sees an invalid address or name.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use super::Check;
use super::Policy;
use super::PolicyKind;
use super::RegistrationId;

/// Longest accepted address, in bytes.
pub const MAX_ADDRESS_LEN: usize = 2048;
/// Longest accepted contract name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest accepted contract namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 1024;
/// Most metadata entries on one registration.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 1024;
/// Most metadata bytes (keys and values) on one registration.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Highest accepted weight.
pub const MAX_WEIGHT: u32 = 1000;
/// Shortest accepted lease.
pub const MIN_TTL_MS: u64 = 1_000;
/// Longest accepted lease: one day.
pub const MAX_TTL_MS: u64 = 86_400_000;

/// The identifying triple of the seed's `RegistrationInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "address": "http://127.0.0.1:9001/calc", "contract_name": "ICalc", "contract_namespace": "http://tempuri.org/"
})))]
#[serde(deny_unknown_fields)]
pub struct RegistrationInfo {
    #[cfg_attr(feature = "openapi", schema(max_length = 2048, example = "http://127.0.0.1:9001/calc"))]
    pub address: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256, pattern = "^[^\\s/]+$"))]
    pub contract_name: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024, pattern = "^\\S+$"))]
    pub contract_namespace: String,
}

/// A registration request as a caller sends it, before validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "address": "http://127.0.0.1:9001/calc", "contract_name": "ICalc", "contract_namespace": "http://tempuri.org/",
    "ttl_ms": 30000, "weight": 2, "metadata": {"zone": "a"}, "check": {"kind": "tcp", "interval_ms": 2000}
})))]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 2048, example = "http://127.0.0.1:9001/calc"))]
    pub address: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256, pattern = "^[^\\s/]+$"))]
    pub contract_name: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024, pattern = "^\\S+$"))]
    pub contract_namespace: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 86400000))]
    pub ttl_ms: Option<u64>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub weight: Option<u32>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The endpoint's active check; absent: the contract policy's, else the cluster default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<Check>,
}

/// A validated registration request: what the state machine stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationSpec {
    pub id: RegistrationId,
    /// Normalized absolute http(s) URL.
    pub address: String,
    pub contract_name: String,
    pub contract_namespace: String,
    pub ttl_ms: Option<u64>,
    pub weight: u32,
    pub metadata: BTreeMap<String, String>,
    pub check: Option<Check>,
}

/// A registration spec as peer protocols 1 and 2 encode it (`Command::RegisterV1`): the fields
/// before `check`, which is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationSpecV1 {
    pub id: RegistrationId,
    pub address: String,
    pub contract_name: String,
    pub contract_namespace: String,
    pub ttl_ms: Option<u64>,
    pub weight: u32,
    pub metadata: BTreeMap<String, String>,
}

impl From<RegistrationSpecV1> for RegistrationSpec {
    fn from(old: RegistrationSpecV1) -> Self {
        let RegistrationSpecV1 { id, address, contract_name, contract_namespace, ttl_ms, weight, metadata } = old;
        Self { id, address, contract_name, contract_namespace, ttl_ms, weight, metadata, check: None }
    }
}

impl TryFrom<RegistrationSpec> for RegistrationSpecV1 {
    type Error = RegistrationSpec;

    /// The same spec in the older encoding, if it has no check.
    fn try_from(spec: RegistrationSpec) -> Result<Self, RegistrationSpec> {
        match spec {
            RegistrationSpec {
                id,
                address,
                contract_name,
                contract_namespace,
                ttl_ms,
                weight,
                metadata,
                check: None,
            } => Ok(Self { id, address, contract_name, contract_namespace, ttl_ms, weight, metadata }),
            spec => Err(spec),
        }
    }
}

/// Why a registration request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRegistration {
    #[error("address: {0}")]
    Address(String),
    #[error("contract_name: {0}")]
    ContractName(String),
    #[error("contract_namespace: {0}")]
    ContractNamespace(String),
    #[error("metadata: {0}")]
    Metadata(String),
    #[error("weight must be between 1 and {MAX_WEIGHT}")]
    Weight,
    #[error("ttl_ms must be between {MIN_TTL_MS} and {MAX_TTL_MS}")]
    Ttl,
    #[error("policy: {0}")]
    Policy(String),
    #[error("token: {0}")]
    Token(String),
    #[error("check: {0}")]
    Check(String),
}

impl InvalidRegistration {
    /// Stable snake_case code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Address(_) => "invalid_address",
            Self::ContractName(_) => "invalid_contract_name",
            Self::ContractNamespace(_) => "invalid_contract_namespace",
            Self::Metadata(_) => "invalid_metadata",
            Self::Weight => "invalid_weight",
            Self::Token(_) => "invalid_token",
            Self::Ttl => "invalid_ttl",
            Self::Policy(_) => "invalid_policy",
            Self::Check(_) => "invalid_check",
        }
    }
}

impl RegistrationSpec {
    pub fn new(request: RegistrationRequest) -> Result<Self, InvalidRegistration> {
        let RegistrationRequest { address, contract_name, contract_namespace, ttl_ms, weight, metadata, check } =
            request;
        let info = RegistrationInfo { address, contract_name, contract_namespace }.validate()?;
        let weight = weight.unwrap_or(1);
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(InvalidRegistration::Weight);
        }
        if ttl_ms.is_some_and(|ttl| !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl)) {
            return Err(InvalidRegistration::Ttl);
        }
        validate_metadata(&metadata)?;
        if let Some(check) = &check {
            check.check()?;
        }
        Ok(Self {
            id: info.id(),
            address: info.address,
            contract_name: info.contract_name,
            contract_namespace: info.contract_namespace,
            ttl_ms,
            weight,
            metadata,
            check,
        })
    }
}

impl RegistrationSpec {
    /// The bytes the registration made of this spec counts for (`Registration::approx_bytes`).
    pub fn approx_bytes(&self) -> u64 {
        let text = self.address.len() + self.contract_name.len() + self.contract_namespace.len();
        let metadata: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        (super::REGISTRATION_OVERHEAD + text + metadata) as u64
    }

    /// Checks a spec that arrived already built (a write forwarded by a peer): it must be exactly
    /// what [`RegistrationSpec::new`] makes of its own fields.
    pub fn check(&self) -> Result<(), InvalidRegistration> {
        let request = RegistrationRequest {
            address: self.address.clone(),
            contract_name: self.contract_name.clone(),
            contract_namespace: self.contract_namespace.clone(),
            ttl_ms: self.ttl_ms,
            weight: Some(self.weight),
            metadata: self.metadata.clone(),
            check: self.check.clone(),
        };
        if Self::new(request)? != *self {
            return Err(InvalidRegistration::Address("the id or address is not the canonical one".into()));
        }
        Ok(())
    }
}

impl RegistrationInfo {
    /// Checks and normalizes the triple; the address comes back in canonical URL form.
    pub fn validate(self) -> Result<Self, InvalidRegistration> {
        let address = normalize_address(&self.address)?;
        check_text(&self.contract_name, MAX_NAME_LEN).map_err(InvalidRegistration::ContractName)?;
        if self.contract_name.contains('/') {
            return Err(InvalidRegistration::ContractName("must not contain '/'".into()));
        }
        check_text(&self.contract_namespace, MAX_NAMESPACE_LEN).map_err(InvalidRegistration::ContractNamespace)?;
        if trim_namespace(&self.contract_namespace).is_empty() {
            return Err(InvalidRegistration::ContractNamespace("must not be only '/'".into()));
        }
        Ok(Self { address, ..self })
    }

    /// The id of a validated triple.
    pub fn id(&self) -> RegistrationId {
        RegistrationId::of(&self.address, trim_namespace(&self.contract_namespace), &self.contract_name)
    }
}

fn normalize_address(raw: &str) -> Result<String, InvalidRegistration> {
    let invalid = |message: &str| InvalidRegistration::Address(message.to_owned());
    if raw.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if raw.len() > MAX_ADDRESS_LEN {
        return Err(InvalidRegistration::Address(format!("longer than {MAX_ADDRESS_LEN} bytes")));
    }
    let url =
        url::Url::parse(raw).map_err(|err| InvalidRegistration::Address(format!("not an absolute URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid("must not have a fragment"));
    }
    if url.query().is_some() {
        return Err(invalid("must not have a query"));
    }
    Ok(url.into())
}

fn check_text(text: &str, max_len: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > max_len {
        return Err(format!("longer than {max_len} bytes"));
    }
    if text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

/// Metadata key by which a registration binds a path prefix of the data plane to its contract:
/// requests under that path route to the contract (`GET {path}?wsdl` fetches its WSDL).
pub const PATH_KEY: &str = "route.path";

/// Metadata key by which a registration turns off the rewriting of a SOAP message's
/// WS-Addressing `To` to its address: `"false"` (the default is `"true"`). For an endpoint that
/// expects the `To` the client wrote (one behind another router that routes by it).
pub const REWRITE_TO_KEY: &str = "soap.rewrite_to";

/// Longest path binding, in bytes.
pub const MAX_PATH_LEN: usize = 256;

/// Checks a path binding: `/segment[/segment...]`, without a query, an empty, `.` or `..`
/// segment, or a trailing `/`.
pub fn check_route_path(path: &str) -> Result<(), String> {
    let refused = |why: &str| Err(format!("{PATH_KEY} {path:?} {why}"));
    if path.len() > MAX_PATH_LEN {
        return refused(&format!("is longer than {MAX_PATH_LEN} bytes"));
    }
    let Some(segments) = path.strip_prefix('/') else { return refused("must start with /") };
    for segment in segments.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return refused("must not have an empty, . or .. segment (nor end with /)");
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b)) {
            return refused("may hold only URL path characters");
        }
    }
    Ok(())
}

fn validate_metadata(metadata: &BTreeMap<String, String>) -> Result<(), InvalidRegistration> {
    if let Some(path) = metadata.get(PATH_KEY) {
        check_route_path(path).map_err(InvalidRegistration::Metadata)?;
    }
    if let Some(rewrite) = metadata.get(REWRITE_TO_KEY)
        && rewrite != "true"
        && rewrite != "false"
    {
        return Err(InvalidRegistration::Metadata(format!(
            "{REWRITE_TO_KEY} must be \"true\" or \"false\", not {rewrite:?}"
        )));
    }
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(InvalidRegistration::Metadata(format!("more than {MAX_METADATA_ENTRIES} entries")));
    }
    if metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() > MAX_METADATA_BYTES {
        return Err(InvalidRegistration::Metadata(format!("more than {MAX_METADATA_BYTES} bytes of keys and values")));
    }
    for (key, value) in metadata {
        check_text(key, MAX_METADATA_KEY_LEN).map_err(|m| InvalidRegistration::Metadata(format!("key {m}")))?;
        if value.len() > MAX_METADATA_VALUE_LEN {
            return Err(InvalidRegistration::Metadata(format!("value longer than {MAX_METADATA_VALUE_LEN} bytes")));
        }
        if value.chars().any(char::is_control) {
            return Err(InvalidRegistration::Metadata("value must not contain control characters".into()));
        }
    }
    Ok(())
}

/// A routing policy as a caller sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "contract_namespace": "http://tempuri.org/", "contract_name": "ICalc", "policy": "consistent_hash",
    "hash_header": "x-session", "idempotent": true
})))]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub contract_namespace: String,
    pub contract_name: String,
    pub policy: PolicyKind,
    #[serde(default)]
    pub hash_header: Option<String>,
    #[serde(default)]
    pub idempotent: bool,
    /// Whether a SOAP message's WS-Addressing `To` is set to the endpoint's address; default true.
    #[serde(default)]
    pub rewrite_to: Option<bool>,
    /// The active check of the contract's registrations that name none.
    #[serde(default)]
    pub check: Option<Check>,
    /// Below this share of passing endpoints, route to all of them; default 50.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub panic_threshold_percent: Option<u8>,
}

impl PolicyRequest {
    /// Checks the request; returns the contract key and the policy to store.
    pub fn validate(self) -> Result<(ContractKey, Policy), InvalidRegistration> {
        check_text(&self.contract_name, MAX_NAME_LEN).map_err(InvalidRegistration::ContractName)?;
        check_text(&self.contract_namespace, MAX_NAMESPACE_LEN).map_err(InvalidRegistration::ContractNamespace)?;
        let policy = Policy {
            kind: self.policy,
            hash_header: self.hash_header.map(|name| name.to_ascii_lowercase()),
            idempotent: self.idempotent,
            rewrite_to: self.rewrite_to.unwrap_or(true),
            check: self.check,
            panic_threshold_percent: self.panic_threshold_percent.unwrap_or(super::DEFAULT_PANIC_THRESHOLD),
        };
        policy.check()?;
        Ok((ContractKey::new(&self.contract_namespace, &self.contract_name), policy))
    }
}

impl Policy {
    /// A consistent-hash policy names a (lower-case) header to hash; no other policy names one.
    pub fn check(&self) -> Result<(), InvalidRegistration> {
        if self.panic_threshold_percent > 100 {
            return Err(InvalidRegistration::Policy("panic_threshold_percent must be between 0 and 100".into()));
        }
        if let Some(check) = &self.check {
            check.check()?;
        }
        match (self.kind, &self.hash_header) {
            (PolicyKind::ConsistentHash, Some(name)) => {
                let valid = !name.is_empty()
                    && name.len() <= 128
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b));
                if valid { Ok(()) } else { Err(InvalidRegistration::Policy(format!("{name:?} is not a header name"))) }
            }
            (PolicyKind::ConsistentHash, None) => {
                Err(InvalidRegistration::Policy("consistent_hash needs hash_header".into()))
            }
            (_, Some(_)) => Err(InvalidRegistration::Policy("hash_header is only used by consistent_hash".into())),
            (_, None) => Ok(()),
        }
    }
}

/// The namespace with one trailing `/` removed, as the contract key uses it.
pub fn trim_namespace(namespace: &str) -> &str {
    namespace.strip_suffix('/').unwrap_or(namespace)
}

/// `{contract_namespace}/{contract_name}`, one trailing `/` on the namespace ignored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContractKey(String);

impl ContractKey {
    /// Checks a key that arrived already built (a forwarded policy change).
    pub fn check(&self) -> Result<(), InvalidRegistration> {
        check_text(&self.0, MAX_NAMESPACE_LEN + 1 + MAX_NAME_LEN).map_err(InvalidRegistration::ContractNamespace)
    }

    pub fn new(contract_namespace: &str, contract_name: &str) -> Self {
        Self(format!("{}/{contract_name}", trim_namespace(contract_namespace)))
    }

    /// A key as named by a client (an action minus its operation, or an explicit header).
    pub fn from_text(key: &str) -> Self {
        Self(key.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContractKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(address: &str, namespace: &str, name: &str) -> RegistrationRequest {
        RegistrationRequest {
            address: address.into(),
            contract_name: name.into(),
            contract_namespace: namespace.into(),
            ttl_ms: None,
            weight: None,
            metadata: BTreeMap::new(),
            check: None,
        }
    }

    #[test]
    fn accepts_and_normalizes_address() {
        let spec =
            RegistrationSpec::new(request("HTTP://Svc.Example:80/calc", "http://tempuri.org/", "ICalc")).unwrap();
        assert_eq!(spec.address, "http://svc.example/calc");
        assert_eq!(spec.weight, 1);
        let same = RegistrationSpec::new(request("http://svc.example/calc", "http://tempuri.org", "ICalc")).unwrap();
        assert_eq!(spec.id, same.id, "trailing slash on namespace and address spelling do not change the id");
    }

    #[test]
    fn soap_rewrite_to_is_true_or_false() {
        let with = |value: &str| {
            let mut request = request("http://svc/calc", "urn:a", "IA");
            request.metadata.insert(REWRITE_TO_KEY.into(), value.into());
            RegistrationSpec::new(request)
        };
        assert!(with("true").is_ok() && with("false").is_ok());
        for bad in ["", "no", "False", "0"] {
            let refused = with(bad).unwrap_err();
            assert_eq!(refused.code(), "invalid_metadata", "{bad:?}");
            assert!(refused.to_string().contains(REWRITE_TO_KEY), "{refused}");
        }
    }

    #[test]
    fn refuses_bad_addresses() {
        for address in [
            "",
            "not a url",
            "/relative/path",
            "ftp://host/x",
            "http://",
            "http://user:pw@host/",
            "http://host/#frag",
            "http://host/?q=1",
            "file:///etc/passwd",
            "mailto:someone@example.com",
        ] {
            let err = RegistrationSpec::new(request(address, "ns", "c")).unwrap_err();
            assert_eq!(err.code(), "invalid_address", "{address:?} gave {err}");
        }
        let long = format!("http://h/{}", "a".repeat(MAX_ADDRESS_LEN));
        assert_eq!(RegistrationSpec::new(request(&long, "ns", "c")).unwrap_err().code(), "invalid_address");
    }

    #[test]
    fn refuses_bad_names() {
        let cases = [
            ("", "invalid_contract_name", "ns"),
            ("a/b", "invalid_contract_name", "ns"),
            ("a b", "invalid_contract_name", "ns"),
            ("ok", "invalid_contract_namespace", ""),
            ("ok", "invalid_contract_namespace", "/"),
            ("ok", "invalid_contract_namespace", "ns\u{0}"),
        ];
        for (name, code, namespace) in cases {
            let err = RegistrationSpec::new(request("http://h/", namespace, name)).unwrap_err();
            assert_eq!(err.code(), code, "{name:?} {namespace:?}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            RegistrationSpec::new(request("http://h/", "ns", &long)).unwrap_err().code(),
            "invalid_contract_name"
        );
    }

    #[test]
    fn refuses_bad_options() {
        let mut req = request("http://h/", "ns", "c");
        req.weight = Some(0);
        assert_eq!(RegistrationSpec::new(req.clone()).unwrap_err(), InvalidRegistration::Weight);
        req.weight = Some(MAX_WEIGHT + 1);
        assert_eq!(RegistrationSpec::new(req.clone()).unwrap_err(), InvalidRegistration::Weight);
        req.weight = Some(3);
        req.ttl_ms = Some(10);
        assert_eq!(RegistrationSpec::new(req.clone()).unwrap_err(), InvalidRegistration::Ttl);
        req.ttl_ms = Some(5_000);
        req.metadata.insert("".into(), "v".into());
        assert_eq!(RegistrationSpec::new(req.clone()).unwrap_err().code(), "invalid_metadata");
        req.metadata.clear();
        req.metadata.insert("zone".into(), "eu-1".into());
        let spec = RegistrationSpec::new(req).unwrap();
        assert_eq!((spec.weight, spec.ttl_ms), (3, Some(5_000)));
    }

    #[test]
    fn contract_keys() {
        assert_eq!(ContractKey::new("http://tempuri.org/", "ICalc").as_str(), "http://tempuri.org/ICalc");
        assert_eq!(ContractKey::new("http://tempuri.org", "ICalc").as_str(), "http://tempuri.org/ICalc");
        assert_eq!(ContractKey::new("urn:x//", "C").as_str(), "urn:x//C", "only one trailing slash is ignored");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<RegistrationRequest>(
            r#"{"address":"http://h/","contract_name":"c","contract_namespace":"n","ttl":5}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
