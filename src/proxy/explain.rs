//! `X-Switchboard-Explain: 1`: the routing decision in response headers (the contract, the rule
//! that decided it, the policy, and, for a caller who may see them, the candidates and the
//! endpoint that answered).

use http::HeaderName;
use http::HeaderValue;
use http::Response;

use super::ProxyBody;
use super::contract::Source;
use crate::registry::ContractKey;
use crate::registry::Policy;

pub const EXPLAIN_HEADER: HeaderName = HeaderName::from_static("x-switchboard-explain");
const EXPLAIN_CONTRACT: HeaderName = HeaderName::from_static("x-switchboard-contract");
const EXPLAIN_SOURCE: HeaderName = HeaderName::from_static("x-switchboard-contract-source");
const EXPLAIN_POLICY: HeaderName = HeaderName::from_static("x-switchboard-policy");
const EXPLAIN_CANDIDATES: HeaderName = HeaderName::from_static("x-switchboard-candidates");
const EXPLAIN_ENDPOINT: HeaderName = HeaderName::from_static("x-switchboard-endpoint");
const EXPLAIN_ATTEMPTS: HeaderName = HeaderName::from_static("x-switchboard-attempts");
/// How long ago a leader last confirmed the view the decision was made from (ms), or
/// `unconfirmed`: while no leader is known this grows, and routing goes on from that view.
const EXPLAIN_VIEW_AGE: HeaderName = HeaderName::from_static("x-switchboard-view-age-ms");

/// What a routing decision was, for `X-Switchboard-Explain`.
#[derive(Debug)]
pub(crate) struct Explain {
    /// The caller may see the endpoints' addresses.
    pub disclose: bool,
    pub key: ContractKey,
    pub source: Source,
    pub policy: Policy,
    pub candidates: Vec<String>,
    pub attempts: Vec<String>,
    pub view_age: Option<std::time::Duration>,
}

pub(crate) fn add_explain(response: &mut Response<ProxyBody>, explain: &Explain) {
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(EXPLAIN_CONTRACT, explain.key.to_string());
    set(EXPLAIN_SOURCE, explain.source.as_str().to_owned());
    let policy =
        serde_json::to_value(explain.policy.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    set(EXPLAIN_POLICY, format!("{policy}{}", if explain.policy.idempotent { "; idempotent" } else { "" }));
    if explain.disclose {
        set(EXPLAIN_CANDIDATES, explain.candidates.join(", "));
        if let Some(chosen) = explain.attempts.last() {
            set(EXPLAIN_ENDPOINT, chosen.clone());
        }
    }
    set(EXPLAIN_ATTEMPTS, explain.attempts.len().to_string());
    set(EXPLAIN_VIEW_AGE, explain.view_age.map_or_else(|| "unconfirmed".to_owned(), |age| age.as_millis().to_string()));
}
