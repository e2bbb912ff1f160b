//! `X-Switchboard-Explain: 1`: the routing decision in response headers (the contract, the rule
//! that decided it, the policy, what became of a SOAP message's WS-Addressing `To`, and, for a
//! caller who may see them, the candidates, the endpoint that answered and the URL it received).

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
/// The URL the endpoint that answered received (its address and, by how the request was
/// resolved, the request's path and query).
const EXPLAIN_TARGET: HeaderName = HeaderName::from_static("x-switchboard-target");
/// What became of a SOAP message's WS-Addressing `To`: `rewritten`, `absent` or `kept: …`.
const EXPLAIN_TO: HeaderName = HeaderName::from_static("x-switchboard-to");
/// How long ago a leader last confirmed the view the decision was made from (ms), or
/// `unconfirmed`: while no leader is known this grows, and routing goes on from that view.
const EXPLAIN_VIEW_AGE: HeaderName = HeaderName::from_static("x-switchboard-view-age-ms");
/// The endpoints left out because their checks say critical (`critical: a, b`; the count alone
/// for a caller who may not see addresses), or `panic: …` when too few pass and all are tried.
const EXPLAIN_HEALTH: HeaderName = HeaderName::from_static("x-switchboard-health");

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
    /// The URL the last endpoint tried received.
    pub target: Option<String>,
    /// For a SOAP message, what became of its `To`.
    pub to: Option<&'static str>,
    pub view_age: Option<std::time::Duration>,
    /// The addresses of the endpoints skipped as critical.
    pub skipped: Vec<String>,
    /// Too few endpoints were passing: all were routable.
    pub panic: bool,
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
        if let Some(target) = &explain.target {
            set(EXPLAIN_TARGET, target.clone());
        }
    }
    if let Some(to) = explain.to {
        set(EXPLAIN_TO, to.to_owned());
    }
    if explain.panic {
        let threshold = explain.policy.panic_threshold_percent;
        set(EXPLAIN_HEALTH, format!("panic: fewer than {threshold}% of the endpoints pass; routing to all of them"));
    } else if !explain.skipped.is_empty() {
        let skipped = if explain.disclose { explain.skipped.join(", ") } else { explain.skipped.len().to_string() };
        set(EXPLAIN_HEALTH, format!("critical: {skipped}"));
    }
    set(EXPLAIN_ATTEMPTS, explain.attempts.len().to_string());
    set(EXPLAIN_VIEW_AGE, explain.view_age.map_or_else(|| "unconfirmed".to_owned(), |age| age.as_millis().to_string()));
}
