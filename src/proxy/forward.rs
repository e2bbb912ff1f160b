//! Building the request an endpoint receives, and cleaning the response it sends back.
//!
//! The endpoint gets the method, path, query, headers and body as received, minus hop-by-hop
//! headers and Switchboard's own `X-Switchboard-*` headers, plus `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `Via`. The endpoint's address gives scheme, host
//! and port; its path and query are used as [`Addressing`] says: a SOAP message goes to the
//! address exactly, a metadata `GET` to the address's path with the request's query, and a
//! plain HTTP request joins its path to the address's path (a prefix).

use http::HeaderMap;
use http::HeaderName;
use http::HeaderValue;
use http::Request;
use http::Uri;
use http::header;
use http::request::Parts;
use http::uri::PathAndQuery;

use crate::serve::Peer;

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

fn is_ours(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-switchboard-")
}

/// Removes hop-by-hop headers, including those the `Connection` header names. When there are
/// none (the common case) this is one pass over the names, with no hashing.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// `Connection` tokens that name no field to remove beyond the hop-by-hop ones (or none at all).
pub const USUAL_CONNECTION_TOKENS: [&str; 5] = ["close", "keep-alive", "upgrade", "te", "trailer"];

fn strip(headers: &mut HeaderMap, ours_too: bool) {
    // Headers the `Connection` header names are hop-by-hop too; the usual tokens name headers
    // removed anyway (or none at all), so only unusual ones cost a lookup.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !USUAL_CONNECTION_TOKENS.iter().any(|usual| token.eq_ignore_ascii_case(usual)))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    // Remove what is present, found by scanning names (no hashing, no allocation).
    while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name) || (ours_too && is_ours(name))).cloned() {
        headers.remove(name);
    }
}

/// Why an endpoint address cannot be used as a request target.
#[derive(Debug, thiserror::Error)]
#[error("endpoint address {0} is not a usable URL")]
pub struct BadAddress(pub String);

/// Parses an endpoint address into a request target base.
pub fn target(address: &str) -> Result<Uri, BadAddress> {
    let base: Uri = address.parse().map_err(|_| BadAddress(address.to_owned()))?;
    if base.scheme().is_none() || base.authority().is_none() {
        return Err(BadAddress(address.to_owned()));
    }
    Ok(base)
}

/// How the URL an endpoint receives is made from its registered address and the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// A SOAP message: the registered address is the endpoint, its path and query exactly
    /// (as the seed's router and WCF's RoutingService open their channel to it).
    Exact,
    /// A metadata `GET` (`?wsdl`, `?xsd=N`, `?singleWsdl`) through a bound path: the address's
    /// path with the request's query.
    Metadata,
    /// Plain HTTP: the address is a prefix, `/x?y` goes to `{address path}/x?y`.
    Prefix,
}

impl Addressing {
    /// The rule for a request: a SOAP message (whichever rule found its contract, a path
    /// binding included) goes to the address; a metadata `GET` routed by a bound path to the
    /// address with its query; anything else is plain HTTP.
    pub fn of(soap: bool, routed_by_path: bool, method: &http::Method, query: Option<&str>) -> Self {
        if soap {
            Self::Exact
        } else if routed_by_path && super::wsdl::asks_metadata(method, query) {
            Self::Metadata
        } else {
            Self::Prefix
        }
    }
}

/// The path and query an endpoint at `base` receives for a request for `incoming`.
pub fn endpoint_path(addressing: Addressing, base: &Uri, incoming: Option<&PathAndQuery>) -> PathAndQuery {
    match addressing {
        Addressing::Exact => base.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
        Addressing::Metadata => {
            let path = if base.path().is_empty() { "/" } else { base.path() };
            match incoming.and_then(PathAndQuery::query) {
                Some(query) => {
                    PathAndQuery::try_from(format!("{path}?{query}")).unwrap_or_else(|_| PathAndQuery::from_static("/"))
                }
                None => PathAndQuery::try_from(path).unwrap_or_else(|_| PathAndQuery::from_static("/")),
            }
        }
        Addressing::Prefix => join_path(base, incoming),
    }
}

/// The request for one endpoint at `base` (from [`target`]).
pub fn endpoint_request<B>(
    parts: &Parts,
    base: &Uri,
    addressing: Addressing,
    body: B,
    remote: &Peer,
    via: &HeaderValue,
) -> Request<B> {
    let mut target = http::uri::Parts::default();
    target.scheme = base.scheme().cloned();
    target.authority = base.authority().cloned();
    target.path_and_query = Some(endpoint_path(addressing, base, parts.uri.path_and_query()));
    let uri = Uri::from_parts(target).unwrap_or_else(|_| base.clone());

    let mut headers = parts.headers.clone();
    strip(&mut headers, true);
    if let Some(authority) = base.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        let original = headers.insert(header::HOST, host);
        if let Some(original) = original
            && !headers.contains_key(X_FORWARDED_HOST)
        {
            headers.insert(X_FORWARDED_HOST, original);
        }
    }
    append_value(&mut headers, X_FORWARDED_FOR, &remote.ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if remote.https { "https" } else { "http" }));
    append_value(&mut headers, header::VIA, via);

    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    request
}

/// `/` maps to the address itself; `/x?y` to `{address path}/x?y`.
fn join_path(base: &Uri, incoming: Option<&PathAndQuery>) -> PathAndQuery {
    let incoming_text = incoming.map_or("/", PathAndQuery::as_str);
    let base_path = base.path();
    if base_path == "/" || base_path.is_empty() {
        return incoming.cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    }
    let joined = if incoming_text == "/" || incoming_text.starts_with("/?") {
        format!("{base_path}{}", &incoming_text[1..])
    } else {
        format!("{}{incoming_text}", base_path.trim_end_matches('/'))
    };
    PathAndQuery::try_from(joined).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// Appends `value` to a comma-separated header such as `Via` or `X-Forwarded-For`.
pub fn append_value(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    match headers.entry(name) {
        header::Entry::Occupied(mut entry) if !entry.get().is_empty() => {
            let existing = entry.get();
            let mut joined = Vec::with_capacity(existing.len() + 2 + value.len());
            joined.extend_from_slice(existing.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value.as_bytes());
            if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                entry.insert(joined);
            }
        }
        header::Entry::Occupied(mut entry) => {
            entry.insert(value.clone());
        }
        header::Entry::Vacant(entry) => {
            entry.insert(value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(Method::POST).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn joined(uri: &str, address: &str) -> String {
        let via = HeaderValue::from_static("1.1 switchboard");
        let base = target(address).unwrap();
        let remote = Peer::new("10.0.0.9:5555".parse().unwrap(), false);
        endpoint_request(&parts(uri, &[]), &base, Addressing::Prefix, (), &remote, &via).uri().to_string()
    }

    #[test]
    fn paths_join_the_address_prefix() {
        assert_eq!(joined("/", "http://svc:9000/calc"), "http://svc:9000/calc");
        assert_eq!(joined("/?wsdl", "http://svc:9000/calc"), "http://svc:9000/calc?wsdl");
        assert_eq!(joined("/api/users?page=2", "http://svc:9000/"), "http://svc:9000/api/users?page=2");
        assert_eq!(joined("/api/users", "http://svc:9000/base/"), "http://svc:9000/base/api/users");
        assert_eq!(joined("/", "http://svc:9000/"), "http://svc:9000/");
        assert_eq!(joined("/x", "https://svc/"), "https://svc/x");
    }

    fn url(addressing: Addressing, request: &str, address: &str) -> String {
        let base = target(address).unwrap();
        let incoming: PathAndQuery = request.parse().unwrap();
        endpoint_path(addressing, &base, Some(&incoming)).to_string()
    }

    #[test]
    fn a_soap_message_goes_to_the_address_exactly_metadata_gets_the_query_and_plain_http_joins() {
        let svc = "http://svc:9000/Services/Calc.svc";
        // (request, address) -> (exact, metadata, prefix)
        let table = [
            ("/", svc, ("/Services/Calc.svc", "/Services/Calc.svc", "/Services/Calc.svc")),
            (
                "/Services/CalculatorService.svc",
                svc,
                ("/Services/Calc.svc", "/Services/Calc.svc", "/Services/Calc.svc/Services/CalculatorService.svc"),
            ),
            ("/calc?wsdl", svc, ("/Services/Calc.svc", "/Services/Calc.svc?wsdl", "/Services/Calc.svc/calc?wsdl")),
            (
                "/calc?xsd=xsd0",
                svc,
                ("/Services/Calc.svc", "/Services/Calc.svc?xsd=xsd0", "/Services/Calc.svc/calc?xsd=xsd0"),
            ),
            ("/x?y=1", "http://svc:9000/", ("/", "/?y=1", "/x?y=1")),
            ("/x?y=1", "http://svc:9000", ("/", "/?y=1", "/x?y=1")),
            ("/", "http://svc:9000/base/", ("/base/", "/base/", "/base/")),
            ("/a/b", "https://svc/base/", ("/base/", "/base/", "/base/a/b")),
        ];
        for (request, address, (exact, metadata, prefix)) in table {
            assert_eq!(url(Addressing::Exact, request, address), exact, "exact: {request} at {address}");
            assert_eq!(url(Addressing::Metadata, request, address), metadata, "metadata: {request} at {address}");
            assert_eq!(url(Addressing::Prefix, request, address), prefix, "prefix: {request} at {address}");
        }
        let via = HeaderValue::from_static("1.1 switchboard");
        let remote = Peer::new("10.0.0.9:5555".parse().unwrap(), false);
        let request = endpoint_request(
            &parts("/Services/CalculatorService.svc", &[]),
            &target(svc).unwrap(),
            Addressing::Exact,
            (),
            &remote,
            &via,
        );
        assert_eq!(request.uri().to_string(), "http://svc:9000/Services/Calc.svc");
    }

    #[test]
    fn soap_messages_are_exact_metadata_gets_by_path_are_metadata_the_rest_prefix() {
        use http::Method;
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(Addressing::of(true, false, &post, None), Addressing::Exact);
        assert_eq!(Addressing::of(true, true, &post, Some("x=1")), Addressing::Exact);
        assert_eq!(Addressing::of(true, true, &get, Some("wsdl")), Addressing::Exact, "a SOAP GET is a message");
        for query in ["wsdl", "WSDL", "singleWsdl", "xsd=xsd0", "wsdl=wsdl0", "disco", "a=1&wsdl"] {
            assert_eq!(Addressing::of(false, true, &get, Some(query)), Addressing::Metadata, "{query}");
            assert_eq!(Addressing::of(false, false, &get, Some(query)), Addressing::Prefix, "not by path: {query}");
            assert_eq!(Addressing::of(false, true, &post, Some(query)), Addressing::Prefix, "not a GET: {query}");
        }
        for query in [None, Some("page=2"), Some("wsdlx=1")] {
            assert_eq!(Addressing::of(false, true, &get, query), Addressing::Prefix, "{query:?}");
        }
    }

    #[test]
    fn headers_are_cleaned_and_forwarding_headers_set() {
        let incoming = parts(
            "/x",
            &[
                ("host", "router.example"),
                ("connection", "keep-alive, x-custom-hop"),
                ("x-custom-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("transfer-encoding", "chunked"),
                ("proxy-authorization", "secret"),
                ("x-switchboard-explain", "1"),
                ("x-switchboard-delivery", "broadcast"),
                ("x-forwarded-for", "192.0.2.1"),
                ("via", "1.0 edge"),
                ("soapaction", "\"urn:a/B/C\""),
                ("content-length", "12"),
            ],
        );
        let via = HeaderValue::from_static("1.1 switchboard");
        let base = target("http://svc:9000/").unwrap();
        let remote = Peer::new("10.0.0.9:5555".parse().unwrap(), false);
        let request = endpoint_request(&incoming, &base, Addressing::Prefix, (), &remote, &via);
        let headers = request.headers();
        for gone in [
            "connection",
            "x-custom-hop",
            "keep-alive",
            "transfer-encoding",
            "proxy-authorization",
            "x-switchboard-explain",
            "x-switchboard-delivery",
        ] {
            assert!(!headers.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(headers["host"], "svc:9000");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.9");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "router.example");
        assert_eq!(headers["via"], "1.0 edge, 1.1 switchboard");
        assert_eq!(headers["soapaction"], "\"urn:a/B/C\"");
        assert_eq!(headers["content-length"], "12");
        assert_eq!(request.method(), Method::POST);
    }
}
