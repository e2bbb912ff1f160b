//! `X-Switchboard-Explain: 1`: the routing decision in response headers (the contract, the rule
//! that decided it, the policy, what became of a SOAP message's WS-Addressing `To`, and, for a
//! caller who may see them, the candidates, the endpoint that answered and the URL it received).
//!
//! `X-Switchboard-Explain: dry-run`: the same decision, made and answered by the data plane
//! itself (200, the same headers and a small JSON body, [`dry_run`]) without sending the request
//! to any endpoint; the endpoint shown is the one the next request would get.

use http::HeaderName;
use http::HeaderValue;
use http::Response;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde_json::json;

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

/// What `X-Switchboard-Explain` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Absent or `0`: nothing.
    Off,
    /// Route the request and say how, in the response headers.
    Forward,
    /// `dry-run`: decide, answer the decision, send nothing to an endpoint.
    DryRun,
}

impl Mode {
    pub fn of(headers: &http::HeaderMap) -> Self {
        match headers.get(EXPLAIN_HEADER).map(HeaderValue::as_bytes) {
            None | Some(b"0") => Self::Off,
            Some(value) if value.eq_ignore_ascii_case(b"dry-run") => Self::DryRun,
            Some(_) => Self::Forward,
        }
    }
}

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
    /// In a dry run: the endpoint the request would be sent to first (none were tried).
    pub pick: Option<String>,
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
        if let Some(chosen) = explain.attempts.last().or(explain.pick.as_ref()) {
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

/// The answer to a dry run: 200 with the explain headers and the decision as JSON
/// (`contract`, `source`, `policy`, `idempotent`, `endpoints` (the `routable` count), `panic`,
/// `critical`, `view_age_ms`, `to`, and, for a caller who may see addresses, `candidates` in try
/// order, `endpoint` and `target`).
pub(crate) fn dry_run(explain: &Explain, routable: usize) -> Response<ProxyBody> {
    let mut body = json!({
        "dry_run": true,
        "contract": explain.key.to_string(),
        "source": explain.source.as_str(),
        "policy": explain.policy.kind,
        "idempotent": explain.policy.idempotent,
        "endpoints": routable,
        "panic": explain.panic,
        "critical": explain.skipped.len(),
        "view_age_ms": explain.view_age.map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        "to": explain.to,
    });
    if explain.disclose {
        body["candidates"] = json!(explain.candidates);
        body["endpoint"] = json!(explain.pick);
        body["target"] = json!(explain.target);
        body["critical"] = json!(explain.skipped);
    }
    let mut response = Response::new(ProxyBody::local(body.to_string()));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_explain(&mut response, explain);
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::registry::PolicyKind;

    fn decision(disclose: bool) -> Explain {
        Explain {
            disclose,
            key: ContractKey::from_text("urn:x/C"),
            source: Source::Header,
            policy: Policy { kind: PolicyKind::Weighted, ..Policy::default() },
            candidates: vec!["http://10.0.0.2/".into(), "http://10.0.0.1/".into()],
            attempts: Vec::new(),
            target: Some("http://10.0.0.2/x".into()),
            to: None,
            view_age: Some(std::time::Duration::from_millis(7)),
            skipped: vec!["http://10.0.0.3/".into()],
            panic: false,
            pick: Some("http://10.0.0.2/".into()),
        }
    }

    async fn answer(explain: &Explain) -> (http::HeaderMap, serde_json::Value) {
        let (parts, body) = dry_run(explain, explain.candidates.len()).into_parts();
        assert_eq!(parts.status, StatusCode::OK);
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.headers, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn only_dry_run_asks_for_a_dry_run() {
        let mode = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(EXPLAIN_HEADER, HeaderValue::from_static(value));
            Mode::of(&headers)
        };
        assert_eq!(Mode::of(&http::HeaderMap::new()), Mode::Off);
        assert_eq!((mode("0"), mode("1"), mode("yes")), (Mode::Off, Mode::Forward, Mode::Forward));
        assert_eq!((mode("dry-run"), mode("Dry-Run")), (Mode::DryRun, Mode::DryRun));
    }

    #[tokio::test]
    async fn a_dry_run_answers_the_decision_and_names_addresses_only_to_who_may_see_them() {
        let (headers, body) = answer(&decision(true)).await;
        assert_eq!(body["contract"], "urn:x/C");
        assert_eq!(
            (body["source"].as_str(), body["policy"].as_str()),
            (Some("x-switchboard-contract"), Some("weighted"))
        );
        assert_eq!(body["endpoint"], "http://10.0.0.2/");
        assert_eq!(body["candidates"], json!(["http://10.0.0.2/", "http://10.0.0.1/"]));
        assert_eq!((body["target"].as_str(), body["view_age_ms"].as_u64()), (Some("http://10.0.0.2/x"), Some(7)));
        assert_eq!(headers["x-switchboard-endpoint"], "http://10.0.0.2/");
        assert_eq!(headers["x-switchboard-attempts"], "0", "nothing was sent");

        let (headers, body) = answer(&decision(false)).await;
        assert_eq!((body["contract"].as_str(), body["endpoints"].as_u64()), (Some("urn:x/C"), Some(2)));
        assert_eq!(body["critical"], 1, "a count, not addresses");
        let text = body.to_string();
        assert!(!text.contains("10.0.0"), "no address in {text}");
        for (name, value) in &headers {
            assert!(!value.to_str().unwrap().contains("10.0.0"), "{name} names an address");
        }
    }
}
