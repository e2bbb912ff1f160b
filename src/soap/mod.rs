//! SOAP on the wire, shared by the data plane, the SOAP registration endpoint and the sample
//! service: the version and action a request's headers name, the envelope namespaces, entity
//! references in a message, and the envelopes and faults sent back; the start of an envelope as
//! it arrives ([`envelope`]).

pub mod envelope;

use http::HeaderName;
use http::header::CONTENT_TYPE;
use quick_xml::events::BytesRef;
use quick_xml::name::Namespace;
use quick_xml::name::ResolveResult;

use crate::h1::HeaderView;
use crate::h1::text;

pub const SOAP11_ENVELOPE: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_ENVELOPE: &str = "http://www.w3.org/2003/05/soap-envelope";

/// SOAP version of a message; decides envelope namespace, content type and fault shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::V11 => "text/xml; charset=utf-8",
            Self::V12 => "application/soap+xml; charset=utf-8",
        }
    }
}

/// The SOAP 1.1 action header.
pub const SOAP_ACTION: HeaderName = HeaderName::from_static("soapaction");

/// The SOAP version a request speaks, judged from its headers. An MTOM/XOP request
/// (`multipart/related; type="application/xop+xml"`) speaks the version of its `start-info`.
pub fn soap_version(headers: &(impl HeaderView + ?Sized)) -> Option<SoapVersion> {
    let (media, params) = content_type(headers).unzip();
    let media = media.map(str::to_ascii_lowercase);
    match media.as_deref() {
        Some("application/soap+xml") => Some(SoapVersion::V12),
        Some("multipart/related") if params.is_some_and(is_xop) => {
            let start_info = params.and_then(|p| parameter(p, "start-info")).unwrap_or_default();
            let (media, _) = start_info.split_once(';').unwrap_or((&start_info, ""));
            Some(if media.trim().eq_ignore_ascii_case("application/soap+xml") {
                SoapVersion::V12
            } else {
                SoapVersion::V11
            })
        }
        _ if headers.has(&SOAP_ACTION) => Some(SoapVersion::V11),
        Some("text/xml") => Some(SoapVersion::V11),
        _ => None,
    }
}

/// Whether `multipart/related` parameters describe an MTOM/XOP message.
fn is_xop(params: &str) -> bool {
    parameter(params, "type").is_some_and(|t| t.eq_ignore_ascii_case("application/xop+xml"))
}

/// How an MTOM/XOP request's parts are delimited, and which one holds the envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub boundary: String,
    /// The `Content-ID` of the root part; without one, the first part is the root.
    pub start: Option<String>,
}

/// The framing of an MTOM/XOP request (`multipart/related; type="application/xop+xml"`).
pub fn xop_multipart(headers: &(impl HeaderView + ?Sized)) -> Option<Multipart> {
    let (media, params) = content_type(headers)?;
    if !media.eq_ignore_ascii_case("multipart/related") || !is_xop(params) {
        return None;
    }
    let boundary = parameter(params, "boundary").filter(|b| !b.is_empty() && b.len() <= 70)?;
    Some(Multipart { boundary, start: parameter(params, "start") })
}

/// Which header named a request's SOAP action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionHeader {
    /// The SOAP 1.1 `SOAPAction` header.
    SoapAction,
    /// The `action` parameter of a SOAP 1.2 `application/soap+xml` content type.
    ContentType,
}

/// The `SOAPAction` header is not valid text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSoapAction;

/// The SOAP action a request's headers name: the `SOAPAction` header (trimmed, quoted or not),
/// else the `action` parameter (quoted or not) of an `application/soap+xml` content type, or of
/// an MTOM/XOP `multipart/related` one (or of its `start-info`). An empty action names none.
pub fn header_action(
    headers: &(impl HeaderView + ?Sized),
) -> Result<Option<(String, ActionHeader)>, InvalidSoapAction> {
    if let Some(value) = headers.value(&SOAP_ACTION) {
        let action = unquote(text(value).ok_or(InvalidSoapAction)?.trim());
        if !action.is_empty() {
            return Ok(Some((action.to_owned(), ActionHeader::SoapAction)));
        }
    }
    let Some((media, params)) = content_type(headers) else { return Ok(None) };
    let action = if media.eq_ignore_ascii_case("application/soap+xml") {
        parameter(params, "action")
    } else if media.eq_ignore_ascii_case("multipart/related") && is_xop(params) {
        parameter(params, "action").or_else(|| {
            let start_info = parameter(params, "start-info")?;
            let (_, inner) = start_info.split_once(';')?;
            parameter(inner, "action")
        })
    } else {
        None
    };
    Ok(action.filter(|action| !action.is_empty()).map(|action| (action, ActionHeader::ContentType)))
}

fn unquote(value: &str) -> &str {
    value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
}

/// Media type and parameters of the `Content-Type` header.
fn content_type(headers: &(impl HeaderView + ?Sized)) -> Option<(&str, &str)> {
    let value = text(headers.value(&CONTENT_TYPE)?)?;
    Some(match value.split_once(';') {
        Some((media, params)) => (media.trim(), params),
        None => (value.trim(), ""),
    })
}

/// The value of parameter `name` in `; name=value` parameters, a quoted value unquoted (its
/// `\\`-escapes resolved, so a quoted value may hold `;`).
fn parameter(params: &str, name: &str) -> Option<String> {
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let key_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let key = &rest[..key_end];
        let Some(after) = rest[key_end..].strip_prefix('=') else {
            // A parameter without a value.
            rest = &rest[key_end..];
            continue;
        };
        let after = after.trim_start();
        let (value, next) = match after.strip_prefix('"') {
            Some(quoted) => {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
                        '"' => {
                            end = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end..])
            }
            None => {
                let end = after.find(';').unwrap_or(after.len());
                (after[..end].trim().to_owned(), &after[end..])
            }
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(value);
        }
        // Whatever follows a value up to the next `;` is not a parameter.
        rest = next.find(';').map_or("", |i| &next[i..]);
    }
}

/// Whether an element's resolved namespace is `uri`.
pub fn in_namespace(ns: &ResolveResult<'_>, uri: &str) -> bool {
    matches!(ns, ResolveResult::Bound(Namespace(bound)) if *bound == uri)
}

/// The SOAP envelope namespace (1.1 or 1.2) an element is in, if it is in one.
pub fn envelope_namespace(ns: &ResolveResult<'_>) -> Option<&'static str> {
    [SOAP11_ENVELOPE, SOAP12_ENVELOPE].into_iter().find(|uri| in_namespace(ns, uri))
}

/// Why an entity reference was refused.
pub const UNDEFINED_ENTITY: &str = "only predefined entities are accepted";

/// The character an entity reference in a message stands for: a character reference or one of
/// the five predefined XML entities. Messages may not carry a DTD, so no other entity is defined.
pub fn resolve_entity(reference: &BytesRef<'_>) -> Result<char, &'static str> {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return Ok(c);
    }
    quick_xml::escape::resolve_xml_entity(reference).and_then(|text| text.chars().next()).ok_or(UNDEFINED_ENTITY)
}

/// Wraps body content (already XML) in an envelope; returns content type and text.
pub fn envelope(version: SoapVersion, body: &str) -> (&'static str, String) {
    let text = match version {
        SoapVersion::V11 => format!(r#"<s:Envelope xmlns:s="{SOAP11_ENVELOPE}"><s:Body>{body}</s:Body></s:Envelope>"#),
        SoapVersion::V12 => {
            format!(r#"<env:Envelope xmlns:env="{SOAP12_ENVELOPE}"><env:Body>{body}</env:Body></env:Envelope>"#)
        }
    };
    (version.content_type(), text)
}

/// An HTTP answer carrying a message made by [`envelope`] or [`fault`].
pub fn response(status: http::StatusCode, (content_type, text): (&'static str, String)) -> http::Response<String> {
    let mut response = http::Response::new(text);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// The router's own SOAP fault, in the request's SOAP version, in the form WCF surfaces as a
/// `FaultException` carrying the router's error code: SOAP 1.1 `faultcode` `s:Client.<code>` or
/// `s:Server.<code>`; SOAP 1.2 `env:Sender` or `env:Receiver` with the subcode `sb:<code>`. For a
/// WS-Addressing message (`wsa`, its namespace) the header carries the fault action.
pub fn fault(
    version: SoapVersion,
    client_fault: bool,
    code: &str,
    message: &str,
    wsa: Option<&str>,
) -> (&'static str, String) {
    let message = quick_xml::escape::escape(message);
    let prefix = match version {
        SoapVersion::V11 => "s",
        SoapVersion::V12 => "env",
    };
    let header = wsa.map_or_else(String::new, |wsa| {
        let action = if wsa == envelope::WSA_2004 { WSA_2004_FAULT } else { WSA_2005_FAULT };
        format!(
            r#"<{prefix}:Header><a:Action {prefix}:mustUnderstand="1" xmlns:a="{wsa}">{action}</a:Action></{prefix}:Header>"#
        )
    });
    let text = match version {
        SoapVersion::V11 => {
            let class = if client_fault { "Client" } else { "Server" };
            format!(
                r#"<s:Envelope xmlns:s="{SOAP11_ENVELOPE}">{header}<s:Body><s:Fault><faultcode>s:{class}.{code}</faultcode><faultstring xml:lang="en">{message}</faultstring></s:Fault></s:Body></s:Envelope>"#
            )
        }
        SoapVersion::V12 => {
            let value = if client_fault { "env:Sender" } else { "env:Receiver" };
            format!(
                r#"<env:Envelope xmlns:env="{SOAP12_ENVELOPE}">{header}<env:Body><env:Fault><env:Code><env:Value>{value}</env:Value><env:Subcode><env:Value xmlns:sb="{ERROR_NAMESPACE}">sb:{code}</env:Value></env:Subcode></env:Code><env:Reason><env:Text xml:lang="en">{message}</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#
            )
        }
    };
    (version.content_type(), text)
}

/// The namespace of the router's fault subcodes (SOAP 1.2).
pub const ERROR_NAMESPACE: &str = "urn:switchboard:error";
/// The action of a fault in WS-Addressing 1.0.
pub const WSA_2005_FAULT: &str = "http://www.w3.org/2005/08/addressing/soap/fault";
/// The action of a fault in the WS-Addressing submission of 2004/08.
pub const WSA_2004_FAULT: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing/fault";

/// The contract part of an action in WCF's default form, `{namespace}/{contract}/{operation}`:
/// `{namespace}/{contract}`. `None` when the action has no operation to drop.
pub fn action_contract(action: &str) -> Option<&str> {
    match action.rsplit_once('/') {
        Some((key, operation)) if !key.is_empty() && !operation.is_empty() => Some(key),
        _ => None,
    }
}

/// The action of a SOAP request answered by the endpoint that receives it (the SOAP
/// registration endpoint, the sample service): the action its headers name, else the
/// WS-Addressing action of its whole envelope.
pub fn request_action(headers: &(impl HeaderView + ?Sized), body: &[u8]) -> Option<String> {
    let header = header_action(headers).ok().flatten().map(|(action, _)| action);
    if let Some(action) = header.as_ref().filter(|action| action_contract(action).is_some()) {
        return Some(action.clone());
    }
    match envelope::scan_envelope(body, true) {
        envelope::EnvelopeScan::Envelope(envelope::Envelope { action: Some(action), .. }) => Some(action),
        _ => header,
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use http::HeaderValue;
    use quick_xml::name::Namespace;

    use super::*;

    fn headers(pairs: &[(HeaderName, &[u8])]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.clone(), HeaderValue::from_bytes(value).unwrap())).collect()
    }

    #[test]
    fn header_action_quoted_or_not() {
        let action = |pairs: &[(HeaderName, &[u8])]| header_action(&headers(pairs));
        let soap_action = Ok(Some(("urn:calc/ICalculator/Add".to_owned(), ActionHeader::SoapAction)));
        assert_eq!(action(&[(SOAP_ACTION, b"\"urn:calc/ICalculator/Add\"")]), soap_action);
        assert_eq!(action(&[(SOAP_ACTION, b" \"urn:calc/ICalculator/Add\" ")]), soap_action);
        assert_eq!(action(&[(SOAP_ACTION, b"urn:calc/ICalculator/Add")]), soap_action);
        assert_eq!(
            action(&[(SOAP_ACTION, b"\"urn:a/B/C")]),
            Ok(Some(("\"urn:a/B/C".to_owned(), ActionHeader::SoapAction)))
        );
        assert_eq!(action(&[(SOAP_ACTION, b"urn:a/\xff/C")]), Err(InvalidSoapAction));

        let content_type = Ok(Some(("urn:calc/ICalculator/Add".to_owned(), ActionHeader::ContentType)));
        let quoted: &[u8] = b"application/soap+xml; charset=utf-8; action=\"urn:calc/ICalculator/Add\"";
        assert_eq!(action(&[(CONTENT_TYPE, quoted)]), content_type);
        assert_eq!(action(&[(CONTENT_TYPE, b"Application/SOAP+XML;action=urn:calc/ICalculator/Add")]), content_type);
        // An empty SOAPAction names no action: the content type may.
        assert_eq!(action(&[(SOAP_ACTION, b"\"\""), (CONTENT_TYPE, quoted)]), content_type);

        assert_eq!(action(&[(CONTENT_TYPE, b"text/xml; action=urn:a/B/C")]), Ok(None), "SOAP 1.2 only");
        assert_eq!(action(&[(CONTENT_TYPE, b"application/soap+xml; action=\"\"")]), Ok(None));
        assert_eq!(action(&[]), Ok(None));
    }

    #[test]
    fn parameters_are_read_as_http_defines_them() {
        let params = r#" charset=utf-8;type="application/xop+xml"; start="<root@x>"; start-info="application/soap+xml; action=\"urn:a/B/C\"" ; flag; boundary=uuid:1;x"#;
        assert_eq!(parameter(params, "charset").as_deref(), Some("utf-8"));
        assert_eq!(parameter(params, "TYPE").as_deref(), Some("application/xop+xml"));
        assert_eq!(parameter(params, "start").as_deref(), Some("<root@x>"));
        assert_eq!(parameter(params, "start-info").as_deref(), Some(r#"application/soap+xml; action="urn:a/B/C""#));
        assert_eq!(parameter(params, "boundary").as_deref(), Some("uuid:1"));
        assert_eq!(parameter(params, "flag"), None);
        assert_eq!(parameter(params, "action"), None, "a parameter inside a quoted value is not one");
        assert_eq!(parameter("", "x"), None);
        assert_eq!(parameter(r#"x="unterminated"#, "x").as_deref(), Some("unterminated"));
    }

    #[test]
    fn mtom_requests_speak_their_start_info_and_name_their_action() {
        let cxf11: &[u8] = br#"multipart/related; type="application/xop+xml"; boundary="uuid:6b62cda8-e1df-4af8-b8f4"; start="<root.message@cxf.apache.org>"; start-info="text/xml""#;
        assert_eq!(soap_version(&headers(&[(CONTENT_TYPE, cxf11)])), Some(SoapVersion::V11));
        assert_eq!(
            xop_multipart(&headers(&[(CONTENT_TYPE, cxf11)])),
            Some(Multipart {
                boundary: "uuid:6b62cda8-e1df-4af8-b8f4".into(),
                start: Some("<root.message@cxf.apache.org>".into())
            })
        );
        let wcf12: &[u8] = br#"multipart/related; type="application/xop+xml"; start="<http://tempuri.org/0>"; boundary="uuid:b1"; start-info="application/soap+xml"; action="http://tempuri.org/IFiles/Upload""#;
        let map = headers(&[(CONTENT_TYPE, wcf12)]);
        assert_eq!(soap_version(&map), Some(SoapVersion::V12));
        assert_eq!(
            header_action(&map),
            Ok(Some(("http://tempuri.org/IFiles/Upload".into(), ActionHeader::ContentType)))
        );
        let nested: &[u8] = br#"multipart/related; type="application/xop+xml"; boundary=b; start-info="application/soap+xml; action=\"urn:x/Y/Z\""#;
        assert_eq!(
            header_action(&headers(&[(CONTENT_TYPE, nested)])),
            Ok(Some(("urn:x/Y/Z".into(), ActionHeader::ContentType)))
        );
        // Other multiparts are not SOAP.
        let form: &[u8] = b"multipart/related; type=\"text/html\"; boundary=b";
        assert_eq!(soap_version(&headers(&[(CONTENT_TYPE, form)])), None);
        assert_eq!(xop_multipart(&headers(&[(CONTENT_TYPE, form)])), None);
    }

    #[test]
    fn version_from_headers() {
        assert_eq!(
            soap_version(&headers(&[(CONTENT_TYPE, b"Application/SOAP+XML; charset=utf-8")])),
            Some(SoapVersion::V12)
        );
        assert_eq!(soap_version(&headers(&[(CONTENT_TYPE, b"text/xml")])), Some(SoapVersion::V11));
        assert_eq!(soap_version(&headers(&[(SOAP_ACTION, b"\"\"")])), Some(SoapVersion::V11));
        assert_eq!(soap_version(&headers(&[(CONTENT_TYPE, b"application/json")])), None);
    }

    #[test]
    fn envelope_namespaces() {
        let bound = |uri| ResolveResult::Bound(Namespace(uri));
        assert_eq!(envelope_namespace(&bound(SOAP11_ENVELOPE)), Some(SOAP11_ENVELOPE));
        assert_eq!(envelope_namespace(&bound(SOAP12_ENVELOPE)), Some(SOAP12_ENVELOPE));
        assert_eq!(envelope_namespace(&bound("urn:other")), None);
        assert_eq!(envelope_namespace(&ResolveResult::Unbound), None);
        assert!(in_namespace(&bound("urn:a"), "urn:a"));
        assert!(!in_namespace(&bound("urn:a"), "urn:b"));
    }

    #[test]
    fn a_response_carries_the_message_and_its_content_type() {
        let answer = response(http::StatusCode::BAD_REQUEST, fault(SoapVersion::V12, true, "bad", "no", None));
        assert_eq!(answer.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(answer.headers()[CONTENT_TYPE], SoapVersion::V12.content_type());
        assert!(answer.body().contains("<env:Value>env:Sender</env:Value>"), "{}", answer.body());
    }

    #[test]
    fn each_soap_version_has_its_content_type() {
        assert_eq!(SoapVersion::V11.content_type(), "text/xml; charset=utf-8");
        assert_eq!(SoapVersion::V12.content_type(), "application/soap+xml; charset=utf-8");
    }

    #[test]
    fn an_envelope_wraps_its_body_in_the_namespace_of_its_version() {
        assert_eq!(
            envelope(SoapVersion::V11, "<x/>"),
            (
                "text/xml; charset=utf-8",
                r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>"#
                    .to_owned()
            )
        );
        assert_eq!(
            envelope(SoapVersion::V12, "<x/>"),
            (
                "application/soap+xml; charset=utf-8",
                r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><x/></env:Body></env:Envelope>"#
                    .to_owned()
            )
        );
    }

    #[test]
    fn an_xop_boundary_has_one_to_seventy_characters() {
        let framing = |boundary: &str| {
            let value = format!(r#"multipart/related; type="application/xop+xml"; boundary="{boundary}""#);
            xop_multipart(&headers(&[(CONTENT_TYPE, value.as_bytes())])).map(|multipart| multipart.boundary)
        };
        assert_eq!(framing(""), None);
        assert_eq!(framing("b").as_deref(), Some("b"));
        assert_eq!(framing(&"b".repeat(70)), Some("b".repeat(70)));
        assert_eq!(framing(&"b".repeat(71)), None);
    }

    #[test]
    fn only_soap_1_2_and_xop_content_types_name_an_action() {
        let action = |content_type: &[u8]| header_action(&headers(&[(CONTENT_TYPE, content_type)]));
        assert_eq!(action(b"multipart/related; type=\"text/html\"; action=urn:a/B/C"), Ok(None));
        assert_eq!(action(b"text/xml; type=\"application/xop+xml\"; action=urn:a/B/C"), Ok(None));
        assert_eq!(
            action(b"multipart/related; type=\"application/xop+xml\"; action=urn:a/B/C"),
            Ok(Some(("urn:a/B/C".to_owned(), ActionHeader::ContentType)))
        );
    }

    #[test]
    fn entities_are_character_references_or_predefined() {
        let resolve = |name: &str| resolve_entity(&BytesRef::new(name));
        assert_eq!(resolve("amp"), Ok('&'));
        assert_eq!(resolve("lt"), Ok('<'));
        assert_eq!(resolve("gt"), Ok('>'));
        assert_eq!(resolve("quot"), Ok('"'));
        assert_eq!(resolve("apos"), Ok('\''));
        assert_eq!(resolve("#38"), Ok('&'));
        assert_eq!(resolve("#x26"), Ok('&'));
        assert_eq!(resolve("nbsp"), Err(UNDEFINED_ENTITY));
        assert_eq!(resolve("#xZZ"), Err(UNDEFINED_ENTITY));
        assert_eq!(resolve("#0"), Err(UNDEFINED_ENTITY));
    }
}
