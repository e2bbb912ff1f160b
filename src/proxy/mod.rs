//! The data plane: every request on `--data-addr` is a message to route.
//!
//! The life of a request: find its contract ([`contract`]), look the contract up in this node's
//! applied registry (never waiting on Raft), plan the order of endpoints ([`select`]), then
//! forward it to the first reachable one, streaming both ways ([`forward`]), or, with
//! `X-Switchboard-Delivery: broadcast`, send it to every endpoint ([`broadcast`]). Every send to
//! an endpoint is one [`attempt`], judged by one rule ([`outlier`]). Errors become SOAP faults or
//! JSON ([`error`]); `X-Switchboard-Explain` shows the decision, or with `dry-run` answers it
//! without sending the request anywhere ([`explain`]).

pub mod attempt;
pub mod body;
pub mod broadcast;
pub mod contract;
pub mod error;
pub mod explain;
pub mod fast;
pub mod forward;
pub mod outlier;
pub mod raw;
pub mod select;
pub mod upstream;
pub mod wsdl;

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use http::HeaderName;
use http::HeaderValue;
use http::Request;
use http::Response;
use http::header;
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use self::attempt::Attempt;
pub use self::body::ProxyBody;
use self::body::RequestBody;
use self::body::SharedBody;
use self::body::Splice;
use self::body::buffer_small;
use self::contract::Source;
use self::error::ProxyError;
use self::explain::Explain;
use self::explain::add_explain;
use self::forward::Addressing;
use self::outlier::InFlight;
use self::outlier::Outliers;
use self::select::Cursors;
use self::upstream::Loan;
use self::upstream::Upstreams;
use crate::auth::Tokens;
use crate::metrics::METRICS;
use crate::netpolicy::AddressPolicy;
use crate::netpolicy::PolicyConnector;
use crate::raft::AppliedView;
use crate::registry::ContractKey;
use crate::registry::FastHash;
use crate::registry::Policy;
use crate::registry::REWRITE_TO_KEY;
use crate::registry::Registration;
use crate::registry::RegistrationId;
use crate::serve::Peer;
use crate::soap::envelope::Envelope;
use crate::soap::soap_version;

pub const DELIVERY_HEADER: HeaderName = HeaderName::from_static("x-switchboard-delivery");
/// Carries the token that authorizes a broadcast (`Authorization` is left for the endpoints).
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-switchboard-token");
/// This router's `Via` entry.
pub const VIA: &str = "1.1 switchboard";

/// Bodies of idempotent requests up to this size are held in memory so that a request that
/// reached a failing endpoint can be sent to another one.
pub const REPLAY_BUFFER: usize = 64 * 1024;

/// A request whose contract is decided, with what the applied registry says about it and how
/// each endpoint receives it.
#[derive(Debug)]
pub(crate) struct Routed<'a> {
    pub parts: &'a http::request::Parts,
    pub remote: &'a Peer,
    pub key: ContractKey,
    pub policy: Policy,
    pub endpoints: Arc<[Arc<Registration>]>,
    /// Endpoints left out because their committed health verdict is critical.
    pub skipped: Vec<Arc<Registration>>,
    /// Too few endpoints pass: `endpoints` holds all of them, critical ones included.
    pub panic: bool,
    /// How an endpoint's URL is made from its address and the request.
    pub addressing: Addressing,
    /// The message's WS-Addressing `To`, set to each endpoint's address.
    pub to: ToHeader,
}

/// A SOAP message's WS-Addressing `To` header block, and what the router does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToHeader {
    /// None (or not a SOAP message): nothing to rewrite.
    Absent,
    /// Its text, at this range of the body, becomes each endpoint's address.
    Rewrite(std::ops::Range<usize>),
    /// The envelope header is signed: forwarded unchanged.
    Signed,
    /// The contract's policy turns the rewrite off: forwarded unchanged.
    Off,
}

impl ToHeader {
    fn of(envelope: Option<&Envelope>, policy: &Policy) -> Self {
        match envelope {
            Some(Envelope { to: Some(_), signed: true, .. }) => Self::Signed,
            Some(Envelope { to: Some(_), .. }) if !policy.rewrite_to => Self::Off,
            Some(Envelope { to: Some(to), .. }) => Self::Rewrite(to.range.clone()),
            _ => Self::Absent,
        }
    }

    /// What `endpoint` receives in place of the `To` text, or why the message reaches it
    /// unchanged (as `X-Switchboard-To` says it).
    pub fn splice_for(&self, endpoint: &Registration) -> Result<Splice, &'static str> {
        match self {
            Self::Absent => Err("absent"),
            Self::Signed => Err("kept: the header is signed"),
            Self::Off => Err("kept: the contract's policy sets rewrite_to false"),
            Self::Rewrite(_) if endpoint.metadata.get(REWRITE_TO_KEY) == Some("false") => {
                Err("kept: the endpoint's soap.rewrite_to is false")
            }
            Self::Rewrite(range) => Ok(Splice {
                range: range.clone(),
                with: bytes::Bytes::from(quick_xml::escape::escape(endpoint.address.as_str()).into_owned()),
            }),
        }
    }
}

/// As `X-Switchboard-To` shows a rewritten `To`.
const TO_REWRITTEN: &str = "rewritten";

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// Deadline for a TCP (and TLS) connection to an endpoint.
    pub connect_timeout: Duration,
    /// Deadline for one endpoint to answer with response headers.
    pub try_timeout: Duration,
    /// Deadline for the whole request across tries, until response headers.
    pub total_timeout: Duration,
    /// Most endpoints one request tries.
    pub max_attempts: usize,
    /// Largest body a broadcast accepts (it is held in memory).
    pub broadcast_max_body: usize,
    /// Most endpoints a broadcast calls at once.
    pub broadcast_concurrency: usize,
    /// Most requests in flight to one endpoint from this node; beyond it the endpoint is skipped.
    pub max_endpoint_requests: u32,
    /// Most open client connections on the data plane.
    pub max_connections: usize,
    /// Most open connections from one client address.
    pub max_connections_per_ip: usize,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            try_timeout: Duration::from_secs(15),
            total_timeout: Duration::from_secs(30),
            max_attempts: 3,
            broadcast_max_body: 1024 * 1024,
            broadcast_concurrency: 32,
            max_endpoint_requests: 1024,
            max_connections: 10_000,
            max_connections_per_ip: 10_000,
        }
    }
}

/// The routing state of one node.
/// An endpoint's address, parsed and checked once (an address never changes for an id).
#[derive(Debug, Clone)]
struct Target {
    uri: http::Uri,
    /// Its host as the address policy prepared it.
    host: crate::netpolicy::PreparedHost,
}

#[derive(Debug)]
pub struct DataPlane {
    view: AppliedView,
    upstreams: Upstreams,
    /// Plain connections for the own loop ([`fast`]).
    raw: raw::RawPool,
    cursors: Cursors,
    outliers: Outliers,
    config: DataPlaneConfig,
    via: HeaderValue,
    tokens: Arc<Tokens>,
    policy: Arc<AddressPolicy>,
    /// Parsed request targets of endpoints, their hosts prepared for the address policy.
    targets: std::sync::RwLock<std::collections::HashMap<RegistrationId, Result<Target, String>, FastHash>>,
}

impl DataPlane {
    pub fn new(view: AppliedView, config: DataPlaneConfig, tokens: Arc<Tokens>, policy: Arc<AddressPolicy>) -> Self {
        // Host names are resolved at connect time through the address policy.
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let http = PolicyConnector { policy: policy.clone(), inner: http, lookups: None };
        let raw = raw::RawPool::new(http.clone());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let tls = match builder.with_native_roots() {
            Ok(with_roots) => with_roots,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let via = HeaderValue::from_static(VIA);
        Self {
            view,
            upstreams: Upstreams::new(connector),
            raw,
            cursors: Cursors::default(),
            outliers: Outliers::default(),
            config,
            via,
            tokens,
            policy,
            targets: Default::default(),
        }
    }

    /// Routes one request; never fails (errors become responses).
    pub async fn handle(&self, request: Request<Incoming>, client: Peer) -> Response<ProxyBody> {
        let soap = soap_version(request.headers());
        // Kept (cheaply) for an error's message; the token is checked only if one is needed.
        let token = request.headers().get(TOKEN_HEADER).cloned();
        // The WS-Addressing version of the message, once its envelope was read (for a fault).
        let mut addressing = None;
        // A dry run is answered here and routes nothing.
        let dry_run = explain::Mode::of(request.headers()) == explain::Mode::DryRun;
        match self.route(request, client, &mut addressing).await {
            Ok(response) => {
                if !dry_run {
                    METRICS.routed.inc();
                }
                response
            }
            Err(err) => {
                tracing::debug!(error = %err, "request not routed");
                METRICS.route_error(err.status_and_error().1);
                if let Some(limit) = err.limit() {
                    METRICS.limit_hit(limit);
                }
                err.into_response(soap, addressing, self.discloses_internals(token.as_ref()))
            }
        }
    }

    /// Whether the caller may see endpoint addresses (in `X-Switchboard-Explain` and in error
    /// messages): anyone in dev mode; otherwise only a caller whose `X-Switchboard-Token` has the
    /// `read` scope. The addresses are the services' internal ones.
    fn discloses_internals(&self, token: Option<&HeaderValue>) -> bool {
        if self.tokens.is_dev_mode() {
            return true;
        }
        let presented = token.map(HeaderValue::as_bytes);
        presented.is_some() && self.tokens.authenticate_token(presented).is_ok_and(|caller| caller.can_read())
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        remote: Peer,
        wsa: &mut Option<&'static str>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let (parts, incoming) = request.into_parts();
        if crate::serve::headers_too_large(&parts.headers) {
            return Err(ProxyError::HeadersTooLarge(crate::serve::MAX_HEADER_BYTES));
        }
        if looped(&parts.headers) {
            return Err(ProxyError::Loop);
        }
        let mode = explain::Mode::of(&parts.headers);
        let explain = mode != explain::Mode::Off;
        let disclose = explain && self.discloses_internals(parts.headers.get(TOKEN_HEADER));
        let broadcast =
            parts.headers.get(DELIVERY_HEADER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"broadcast"));
        let contract::read::Resolved { key, source, body, envelope } =
            contract::read::resolve(&parts.headers, parts.uri.path(), incoming, &self.view, wsa).await?;
        METRICS.decided_by(source.rule());
        let soap = soap_version(&parts.headers).is_some();
        let addressing = Addressing::of(soap, source == Source::Path, &parts.method, parts.uri.query());

        let applied = self.view.load();
        let endpoints = applied.state.endpoints(&key).ok_or_else(|| ProxyError::UnknownContract(key.clone()))?;
        let policy = applied.state.policy(&key).cloned().unwrap_or_default();
        let to = ToHeader::of(envelope.as_ref(), &policy);
        // A WSDL fetched through a bound path will name the router's URL for that path.
        let wsdl_location = (source == Source::Path && wsdl::asks_wsdl(&parts.method, parts.uri.query()))
            .then(|| applied.state.binding(parts.uri.path()))
            .flatten()
            .and_then(|(bound, _)| crate::serve::router_url(&parts.headers, remote.https, bound));
        let crate::registry::Routable { endpoints, skipped, panic } =
            endpoints.routable(policy.panic_threshold_percent);
        drop(applied);
        if panic {
            METRICS.health_panics.inc();
        }
        let routed = Routed { parts: &parts, remote: &remote, key, policy, endpoints, skipped, panic, addressing, to };

        if mode == explain::Mode::DryRun {
            // Decided: the rest of the body is never read, and nothing goes to an endpoint.
            let mut explain = self.explain(&routed, source, disclose);
            let Routed { parts, key, policy, endpoints, .. } = &routed;
            let plan = select::preview(policy, key, endpoints, &parts.headers, &self.cursors, &self.outliers);
            explain.candidates =
                plan.order(endpoints, &self.outliers).map(|i| endpoints[i].address.to_string()).collect();
            if let Some(index) = plan.order(endpoints, &self.outliers).next() {
                explain.pick = Some(endpoints[index].address.to_string());
                self.explain_try(&routed, &endpoints[index], &mut explain);
            }
            return Ok(explain::dry_run(&explain, endpoints.len()));
        }
        if broadcast {
            self.authorize_broadcast(&parts.headers, &routed.key)?;
            METRICS.broadcasts.inc();
            return broadcast::run(self, &routed, body).await;
        }
        let mut explain = explain.then(|| self.explain(&routed, source, disclose));
        let mut response = self.unicast(&routed, body, explain.as_mut()).await?;
        if let Some(location) = wsdl_location {
            response = wsdl::rewrite(response, &location)
                .await
                .map_err(|reason| ProxyError::EndpointFailed { address: routed.key.to_string(), reason })?;
        }
        if let Some(explain) = explain {
            add_explain(&mut response, &explain);
        }
        Ok(response)
    }

    /// The decision so far, before any endpoint is tried.
    fn explain(&self, routed: &Routed<'_>, source: Source, disclose: bool) -> Explain {
        Explain {
            disclose,
            key: routed.key.clone(),
            source,
            policy: routed.policy.clone(),
            candidates: Vec::new(),
            attempts: Vec::new(),
            target: None,
            to: None,
            view_age: self.view.confirmed_ago(Instant::now()),
            skipped: routed.skipped.iter().map(|r| r.address.to_string()).collect(),
            panic: routed.panic,
            pick: None,
        }
    }

    /// What `endpoint` receives, for explain: the URL, and what became of the SOAP `To`.
    fn explain_try(&self, routed: &Routed<'_>, endpoint: &Registration, explain: &mut Explain) {
        if routed.addressing == Addressing::Exact {
            explain.to = Some(routed.to.splice_for(endpoint).map_or_else(|kept| kept, |_| TO_REWRITTEN));
        }
        explain.target = self.target(endpoint).ok().map(|Target { uri: base, .. }| {
            let path = forward::endpoint_path(routed.addressing, &base, routed.parts.uri.path_and_query());
            format!("{}://{}{path}", base.scheme_str().unwrap_or("http"), base.authority().map_or("", |a| a.as_str()))
        });
    }

    /// Sends the request to the first endpoint of the plan that takes it; fails over to the next
    /// when nothing was sent, or when the contract is idempotent and the body was kept.
    async fn unicast(
        &self,
        routed: &Routed<'_>,
        body: RequestBody,
        mut explain: Option<&mut Explain>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let Routed { parts, key, policy, endpoints, .. } = routed;
        let body = if policy.idempotent { buffer_small(body, &parts.headers).await? } else { body };
        let replayable = policy.idempotent && body.is_buffered();
        let shared = SharedBody::new(body);
        let plan = select::plan(policy, key, endpoints, &parts.headers, &self.cursors, &self.outliers);
        if let Some(explain) = explain.as_deref_mut() {
            explain.candidates =
                plan.order(endpoints, &self.outliers).map(|i| endpoints[i].address.to_string()).collect();
        }
        let deadline = Instant::now() + self.config.total_timeout;
        let mut tried = 0;
        let mut last_error = None;
        let mut busy = 0;
        let mut order = plan.order(endpoints, &self.outliers);
        while let Some(index) = order.next() {
            if tried >= self.config.max_attempts {
                break;
            }
            if order.all_ejected() && tried == 0 && busy == 0 {
                tracing::warn!(contract = %key, "every endpoint is ejected; trying all of them");
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let endpoint = &endpoints[index];
            let attempt = self.attempt(routed, endpoint, &shared, self.config.try_timeout.min(remaining)).await;
            if attempt.was_tried() {
                if tried > 0 {
                    METRICS.failovers.inc();
                }
                tried += 1;
                if let Some(explain) = explain.as_deref_mut() {
                    explain.attempts.push(endpoint.address.to_string());
                    self.explain_try(routed, endpoint, explain);
                }
            }
            match attempt {
                Attempt::Answered { response, in_flight, loan } => return Ok(self.relay(response, in_flight, loan)),
                Attempt::Busy => busy += 1,
                Attempt::Refused(refused) => last_error = Some(refused),
                Attempt::BodyGone => break,
                // Nothing was sent: the next endpoint gets the request, whatever the contract.
                Attempt::Unreachable(err) => last_error = Some(err),
                Attempt::ClientBody(reason) => return Err(ProxyError::RequestBody(reason)),
                Attempt::Failed(_) | Attempt::TimedOut(_) if replayable => {}
                Attempt::Failed(reason) => {
                    return Err(ProxyError::EndpointFailed { address: endpoint.address.to_string(), reason });
                }
                Attempt::TimedOut(_) => return Err(ProxyError::Timeout { address: endpoint.address.to_string() }),
            }
        }
        if tried == 0 && busy > 0 && last_error.is_none() {
            return Err(ProxyError::Overloaded { key: key.clone() });
        }
        Err(ProxyError::Unreachable { key: key.clone(), attempts: tried, last_error: last_error.unwrap_or_default() })
    }

    /// The parsed request target of an endpoint, checked against the address policy when its host
    /// is an IP literal (host names are checked by the resolver when a connection is made).
    /// Cached per registration id: an id is a hash of its address.
    fn target(&self, endpoint: &Registration) -> Result<Target, String> {
        let cached = self.targets.read().unwrap_or_else(|p| p.into_inner()).get(&endpoint.id).cloned();
        if let Some(target) = cached {
            return target;
        }
        let target = forward::target(&endpoint.address).map_err(|err| err.to_string()).map(|uri| {
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let host = self.policy.prepare_host(uri.host().unwrap_or_default(), port);
            Target { uri, host }
        });
        self.targets.write().unwrap_or_else(|p| p.into_inner()).insert(endpoint.id, target.clone());
        target
    }

    /// The endpoint's target, checked against the address policy as it is now (the set of the
    /// cluster's listeners changes).
    pub(crate) fn checked_target(&self, endpoint: &Registration) -> Result<http::Uri, String> {
        let Target { uri, host } = self.target(endpoint)?;
        self.policy.recheck(&host).map_err(|refused| refused.to_string())?;
        Ok(uri)
    }

    /// Forgets health and targets of endpoints that are no longer registered.
    pub fn forget(&self, registered: impl Fn(&RegistrationId) -> bool) {
        self.outliers.retain(&registered);
        self.targets.write().unwrap_or_else(|p| p.into_inner()).retain(|id, _| registered(id));
    }

    /// In dev mode anyone may broadcast; otherwise the `X-Switchboard-Token` header must carry a
    /// token with a broadcast scope for the contract.
    fn authorize_broadcast(&self, headers: &http::HeaderMap, key: &ContractKey) -> Result<(), ProxyError> {
        let presented = headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes);
        let caller = self.tokens.authenticate_token(presented).map_err(|err| {
            METRICS.auth_refused.inc();
            ProxyError::Unauthorized(err.to_string())
        })?;
        if caller.can_broadcast(key.as_str()) {
            return Ok(());
        }
        METRICS.auth_refused.inc();
        tracing::warn!(token = caller.name(), contract = %key, "broadcast outside the token's scopes refused");
        Err(ProxyError::Forbidden(format!("token {} may not broadcast to {key}", caller.name())))
    }

    fn relay(&self, response: Response<Incoming>, in_flight: InFlight, mut loan: Loan) -> Response<ProxyBody> {
        let (mut parts, body) = response.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        forward::append_value(&mut parts.headers, header::VIA, &self.via);
        if body.is_end_stream() {
            loan.finish();
        }
        Response::from_parts(parts, ProxyBody::Upstream { body, _in_flight: Some(in_flight), loan })
    }
}

/// A request that already went through this router is looping (an endpoint registered with a
/// router's own address, directly or through another router of the same cluster).
fn looped(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::VIA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|hop| hop.trim() == VIA)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::EndpointState;
    use crate::soap::envelope::To;

    fn endpoint(address: &str, metadata: &[(&str, &str)]) -> Registration {
        let metadata: BTreeMap<String, String> = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Registration {
            id: RegistrationId::of(address, "urn:x", "C"),
            address: address.into(),
            contract_name: "C".into(),
            contract_namespace: "urn:x".into(),
            ttl_ms: None,
            weight: 1,
            metadata: (&metadata).into(),
            state: EndpointState::Active,
            epoch: 1,
            registered_at_ms: 0,
            owner: None,
        }
    }

    #[test]
    fn the_to_is_rewritten_unless_absent_signed_or_turned_off_by_the_policy_or_the_endpoint() {
        let envelope = |to: bool, signed: bool| Envelope {
            action: None,
            operation: None,
            to: to.then_some(To { range: 10..20 }),
            addressing: None,
            signed,
        };
        let on = Policy::default();
        let off = Policy { rewrite_to: false, ..Policy::default() };
        let plain = endpoint("http://e1/a?b=<c>&d", &[]);
        let keeps = endpoint("http://e2/", &[(REWRITE_TO_KEY, "false")]);
        let splice = ToHeader::of(Some(&envelope(true, false)), &on).splice_for(&plain).unwrap();
        assert_eq!((splice.range, &splice.with[..]), (10..20, &b"http://e1/a?b=&lt;c&gt;&amp;d"[..]), "escaped");
        let kept = |envelope: Option<&Envelope>, policy: &Policy, endpoint: &Registration| {
            ToHeader::of(envelope, policy).splice_for(endpoint).unwrap_err()
        };
        assert_eq!(kept(None, &on, &plain), "absent");
        assert_eq!(kept(Some(&envelope(false, false)), &on, &plain), "absent");
        assert_eq!(kept(Some(&envelope(true, true)), &on, &plain), "kept: the header is signed");
        assert_eq!(kept(Some(&envelope(true, true)), &off, &plain), "kept: the header is signed");
        assert_eq!(
            kept(Some(&envelope(true, false)), &off, &plain),
            "kept: the contract's policy sets rewrite_to false"
        );
        assert_eq!(kept(Some(&envelope(true, false)), &on, &keeps), "kept: the endpoint's soap.rewrite_to is false");
    }
}
