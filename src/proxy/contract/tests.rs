use http::HeaderMap;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use proptest::prelude::*;

use super::*;
use crate::registry::PATH_KEY;
use crate::soap::SOAP_ACTION;
use crate::soap::envelope::scan_envelope as scan_everything;
use crate::soap::envelope::*;
use crate::soap::request_action;

/// What a scan says for routing alone (its action and operation): most tests here are about
/// routing; the `To` block and the signature have tests of their own.
fn for_routing(scan: EnvelopeScan) -> EnvelopeScan {
    match scan {
        EnvelopeScan::Envelope(Envelope { action, operation, .. }) => {
            EnvelopeScan::Envelope(Envelope { action, operation, ..Envelope::default() })
        }
        other => other,
    }
}

/// `scan_envelope`, for routing alone.
fn scan_envelope(prefix: &[u8], complete: bool) -> EnvelopeScan {
    for_routing(scan_everything(prefix, complete))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

/// A registry holding `(address, namespace, name, operations)` registrations.
fn registry(registrations: &[(&str, &str, &str, Option<&str>)]) -> RegistryState {
    let with_metadata: Vec<_> = registrations
        .iter()
        .map(|(address, namespace, name, operations)| {
            (*address, *namespace, *name, operations.iter().map(|list| (OPERATIONS_KEY, *list)).collect())
        })
        .collect();
    registry_with(&with_metadata)
}

/// `(address, namespace, name, metadata)` of a registration.
type Spec<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);

/// A registry holding these registrations.
fn registry_with(registrations: &[Spec<'_>]) -> RegistryState {
    let mut state = RegistryState::default();
    for (index, (address, namespace, name, metadata)) in registrations.iter().enumerate() {
        let metadata = metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let spec = crate::registry::RegistrationSpec::new(crate::registry::RegistrationRequest {
            address: (*address).into(),
            contract_name: (*name).into(),
            contract_namespace: (*namespace).into(),
            ttl_ms: None,
            weight: None,
            metadata,
            check: None,
        })
        .unwrap();
        let origin = crate::registry::Origin::default();
        let change = crate::registry::Change { at_ms: 0, origin, command: crate::registry::Command::Register(spec) };
        state.apply(index as u64 + 1, &change);
    }
    state
}

/// The decision for a request with these headers and body, against `state`: the contract key and
/// rule, or the refusal.
fn route(pairs: &[(&str, &str)], body: &str, state: &RegistryState) -> Result<(String, Source), ContractError> {
    route_at("/", pairs, body, state)
}

/// The same for a request to `path`.
fn route_at(
    path: &str,
    pairs: &[(&str, &str)],
    body: &str,
    state: &RegistryState,
) -> Result<(String, Source), ContractError> {
    let hints = hints(&headers(pairs))?;
    let decided = match decide(&hints, path, None, state)? {
        Decision::ReadEnvelope => {
            let envelope = match scan_envelope(body.as_bytes(), true) {
                EnvelopeScan::Envelope(envelope) => envelope,
                EnvelopeScan::Absent => Envelope::default(),
                other => panic!("{other:?}"),
            };
            decide(&hints, path, Some(&envelope), state)?
        }
        decided => decided,
    };
    match decided {
        Decision::Route(key, source) => Ok((key.to_string(), source)),
        Decision::ReadEnvelope => panic!("decided nothing with the envelope"),
    }
}

fn wcf() -> RegistryState {
    registry(&[("http://calc:1/", "http://tempuri.org/", "ICalculator", None)])
}

#[test]
fn header_actions_decide_the_contract() {
    let state = registry(&[
        ("http://calc:1/", "http://tempuri.org/", "ICalculator", None),
        ("http://calc:2/", "urn:calc", "ICalculator", None),
        ("http://x:1/", "urn:x", "Y", None),
    ]);
    let soap11 = [("SOAPAction", "\"http://tempuri.org/ICalculator/Add\""), ("X-Switchboard-Contract", "urn:x/Y")];
    assert_eq!(route(&soap11, "", &state), Ok(("http://tempuri.org/ICalculator".to_owned(), Source::SoapAction)));
    let ct = "application/soap+xml; charset=utf-8; action=\"urn:calc/ICalculator/Add\"";
    assert_eq!(
        route(&[("Content-Type", ct)], "", &state),
        Ok(("urn:calc/ICalculator".to_owned(), Source::ContentTypeAction))
    );
    let not_text = HeaderValue::from_bytes(b"urn:a/\xff/C").unwrap();
    let mut map = headers(&[]);
    map.insert(SOAP_ACTION, not_text);
    assert_eq!(hints(&map), Err(ContractError::InvalidHeader("SOAPAction")));
}

#[test]
fn answered_requests_take_the_header_action_else_the_envelope_action() {
    let soap11 = [("SOAPAction", "\"urn:a/B/C\""), ("Content-Type", "text/xml")];
    assert_eq!(request_action(&headers(&soap11), b""), Some("urn:a/B/C".into()));
    let text_xml = headers(&[("Content-Type", "text/xml")]);
    assert_eq!(request_action(&text_xml, SOAP11_WSA2005.as_bytes()), Some("http://tempuri.org/ICalculator/Add".into()));
    assert_eq!(request_action(&text_xml, b"<x/>"), None);
    // An action without an operation segment: the envelope's action if it has one, else itself.
    let no_operation = headers(&[("SOAPAction", "Add"), ("Content-Type", "text/xml")]);
    assert_eq!(
        request_action(&no_operation, SOAP11_WSA2005.as_bytes()),
        Some("http://tempuri.org/ICalculator/Add".into())
    );
    assert_eq!(request_action(&no_operation, b""), Some("Add".into()));
}

#[test]
fn explicit_header_for_plain_http() {
    let state = RegistryState::default();
    assert_eq!(
        route(&[("X-Switchboard-Contract", "urn:orders/IOrders")], "", &state),
        Ok(("urn:orders/IOrders".into(), Source::Header))
    );
    assert_eq!(route(&[], "", &state), Err(ContractError::Missing));
    assert_eq!(route(&[("X-Switchboard-Contract", "  ")], "", &state), Err(ContractError::Missing));
}

#[test]
fn soap_requests_without_a_registered_action_read_the_envelope() {
    let state = wcf();
    for pairs in [
        &[("Content-Type", "text/xml; charset=utf-8"), ("X-Switchboard-Contract", "urn:a/B")][..],
        &[("SOAPAction", "\"\""), ("Content-Type", "text/xml")],
        &[("SOAPAction", "Add")],
        &[("SOAPAction", "http://tempuri.org/Add"), ("Content-Type", "text/xml")],
        &[("Content-Type", "application/soap+xml")],
    ] {
        assert_eq!(
            decide(&hints(&headers(pairs)).unwrap(), "/", None, &state),
            Ok(Decision::ReadEnvelope),
            "{pairs:?}"
        );
    }
}

/// A SOAP 1.1 envelope whose body invokes `operation` of namespace `namespace`.
fn call(namespace: &str, operation: &str) -> String {
    format!(
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><ns1:{operation} xmlns:ns1="{namespace}"><a>1</a></ns1:{operation}></soapenv:Body></soapenv:Envelope>"#
    )
}

#[test]
fn the_default_requests_of_soap_stacks_route_by_the_body() {
    let state = wcf();
    let body = call("http://tempuri.org/", "Add");
    let expected = Ok(("http://tempuri.org/ICalculator".to_owned(), Source::BodyNamespace));
    for pairs in [
        // JAX-WS and CXF: an empty SOAPAction.
        &[("Content-Type", "text/xml; charset=utf-8"), ("SOAPAction", "\"\"")][..],
        // No SOAPAction at all.
        &[("Content-Type", "text/xml; charset=utf-8")],
        // A bare operation name, and an Axis2-style URN.
        &[("Content-Type", "text/xml"), ("SOAPAction", "\"Add\"")],
        &[("Content-Type", "text/xml"), ("SOAPAction", "urn:Add")],
        // ASMX: the namespace and the operation, no contract segment.
        &[("Content-Type", "text/xml"), ("SOAPAction", "\"http://tempuri.org/Add\"")],
        // SOAP 1.2 without an action parameter.
        &[("Content-Type", "application/soap+xml; charset=utf-8")],
    ] {
        assert_eq!(route(pairs, &body, &state), expected, "{pairs:?}");
    }
    // Without a trailing slash, and with a default namespace, comments and a BOM.
    let bare = r#"<?xml version="1.0"?><!-- a client --><Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Header/>
        <Body><!-- the call --><Add xmlns="http://tempuri.org"/></Body></Envelope>"#;
    let with_bom = format!("\u{feff}{bare}");
    assert_eq!(route(&[("Content-Type", "text/xml")], &with_bom, &state), expected);
}

#[test]
fn the_action_still_wins_and_explicit_headers_still_route() {
    let state = registry(&[
        ("http://calc:1/", "http://tempuri.org/", "ICalculator", None),
        ("http://calc:2/", "http://tempuri.org/", "IScientific", None),
    ]);
    // A WCF action decides without the body, even when the body's namespace has two contracts.
    let pairs = [("Content-Type", "text/xml"), ("SOAPAction", "http://tempuri.org/IScientific/Sin")];
    assert_eq!(
        route(&pairs, &call("http://tempuri.org/", "Sin"), &state),
        Ok(("http://tempuri.org/IScientific".into(), Source::SoapAction))
    );
    // A WS-Addressing action of a registered contract decides before the body.
    assert_eq!(
        route(&[("Content-Type", "text/xml")], SOAP11_WSA2005, &state),
        Ok(("http://tempuri.org/ICalculator".into(), Source::WsAddressing))
    );
    // An explicit header decides before the body.
    let pairs = [("Content-Type", "text/xml"), ("X-Switchboard-Contract", "http://tempuri.org/IScientific")];
    assert_eq!(
        route(&pairs, &call("http://tempuri.org/", "Add"), &state),
        Ok(("http://tempuri.org/IScientific".into(), Source::Header))
    );
}

#[test]
fn several_contracts_of_a_namespace_are_told_apart_by_the_operations_they_list() {
    let state = registry(&[
        ("http://calc:1/", "urn:math", "ICalculator", Some("Add, Subtract")),
        ("http://sci:1/", "urn:math", "IScientific", Some("Sin Cos urn:math/Tan")),
        ("http://other:1/", "urn:math", "IUnlisted", None),
    ]);
    let soap11 = [("Content-Type", "text/xml"), ("SOAPAction", "\"\"")];
    assert_eq!(
        route(&soap11, &call("urn:math", "Subtract"), &state),
        Ok(("urn:math/ICalculator".into(), Source::BodyOperation))
    );
    assert_eq!(
        route(&soap11, &call("urn:math", "Cos"), &state),
        Ok(("urn:math/IScientific".into(), Source::BodyOperation))
    );
    // A listed action counts too.
    let tan = [("Content-Type", "text/xml"), ("SOAPAction", "urn:math/Tan")];
    assert_eq!(
        route(&tan, &call("urn:math", "Tangent"), &state),
        Ok(("urn:math/IScientific".into(), Source::BodyOperation))
    );
    // An operation nobody lists: only the contract that lists nothing serves it.
    assert_eq!(
        route(&soap11, &call("urn:math", "Log"), &state),
        Ok(("urn:math/IUnlisted".into(), Source::BodyNamespace))
    );
}

#[test]
fn requests_the_body_cannot_decide_are_refused_with_the_reason() {
    let state = registry(&[
        ("http://a:1/", "urn:math", "IA", None),
        ("http://b:1/", "urn:math", "IB", None),
        ("http://c:1/", "urn:only", "IC", Some("Add")),
    ]);
    let soap11 = [("Content-Type", "text/xml")];
    let ambiguous = route(&soap11, &call("urn:math", "Add"), &state);
    assert_eq!(
        ambiguous,
        Err(ContractError::Ambiguous {
            namespace: "urn:math".into(),
            operation: "Add".into(),
            candidates: vec!["urn:math/IA".into(), "urn:math/IB".into()],
        })
    );
    assert!(ambiguous.unwrap_err().to_string().contains("urn:math/IA, urn:math/IB"));
    assert_eq!(
        route(&soap11, &call("urn:none", "Add"), &state),
        Err(ContractError::NoContractInNamespace("urn:none".into()))
    );
    // A contract that lists operations serves no other through the body.
    assert_eq!(
        route(&soap11, &call("urn:only", "Sub"), &state),
        Err(ContractError::NoContractInNamespace("urn:only".into()))
    );
    // With an action, its refusal is the more telling one.
    let bare = [("Content-Type", "text/xml"), ("SOAPAction", "Add")];
    assert_eq!(
        route(&bare, &call("urn:none", "Add"), &state),
        Err(ContractError::ActionWithoutOperation("Add".into()))
    );
    let wcf = [("Content-Type", "text/xml"), ("SOAPAction", "urn:gone/IGone/Add")];
    assert_eq!(
        route(&wcf, &call("urn:none", "Add"), &state),
        Err(ContractError::NotRegistered(ContractKey::from_text("urn:gone/IGone")))
    );
    // An empty body of a SOAP request without anything else names nothing.
    assert_eq!(route(&soap11, "", &state), Err(ContractError::Missing));
}

#[test]
fn a_body_namespace_never_reaches_another_tenants_contract() {
    // Tenant B registers in its own namespace a name that spells tenant A's key; A's namespace
    // body requests never reach it, and B's namespace is not A's.
    let state = registry(&[
        ("http://a:1/", "urn:tenant-a", "IOrders", None),
        ("http://b:1/", "urn:tenant-a/IOrders", "X", None),
    ]);
    let soap11 = [("Content-Type", "text/xml")];
    assert_eq!(
        route(&soap11, &call("urn:tenant-a", "Get"), &state),
        Ok(("urn:tenant-a/IOrders".into(), Source::BodyNamespace))
    );
    assert_eq!(
        route(&soap11, &call("urn:tenant", "Get"), &state),
        Err(ContractError::NoContractInNamespace("urn:tenant".into()))
    );
    assert_eq!(
        route(&soap11, &call("urn:tenant-a/IOrders", "Get"), &state),
        Ok(("urn:tenant-a/IOrders/X".into(), Source::BodyNamespace))
    );
}

#[test]
fn actions_need_an_operation_segment() {
    assert!(matches!(action_key("Add"), Err(ContractError::ActionWithoutOperation(_))));
    assert!(matches!(action_key("urn:x/"), Err(ContractError::ActionWithoutOperation(_))));
    assert!(matches!(action_key("/Add"), Err(ContractError::ActionWithoutOperation(_))));
    assert_eq!(action_key("http://t.org/svc/C/Op").unwrap().as_str(), "http://t.org/svc/C");
}

const SOAP11_WSA2005: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="http://www.w3.org/2005/08/addressing">
  <s:Header>
    <a:MessageID>urn:uuid:1</a:MessageID>
    <a:Action s:mustUnderstand="1">http://tempuri.org/ICalculator/Add</a:Action>
    <a:To>http://router/</a:To>
  </s:Header>
  <s:Body><Add xmlns="http://tempuri.org/"><a>1</a><b>2</b></Add></s:Body>
</s:Envelope>"#;

const SOAP12_WSA2004: &str = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope">
  <env:Header><wsa:Action xmlns:wsa="http://schemas.xmlsoap.org/ws/2004/08/addressing">urn:calc/ICalc/Sub</wsa:Action></env:Header>
  <env:Body/>
</env:Envelope>"#;

fn action_only(action: &str) -> EnvelopeScan {
    EnvelopeScan::Envelope(Envelope { action: Some(action.into()), ..Envelope::default() })
}

fn scanned(action: Option<&str>, namespace: &str, name: &str) -> EnvelopeScan {
    let operation = Some(Operation { namespace: namespace.into(), name: name.into() });
    EnvelopeScan::Envelope(Envelope { action: action.map(str::to_owned), operation, ..Envelope::default() })
}

#[test]
fn ws_addressing_action_in_both_envelopes_and_namespaces() {
    assert_eq!(
        scan_envelope(SOAP11_WSA2005.as_bytes(), true),
        scanned(Some("http://tempuri.org/ICalculator/Add"), "http://tempuri.org/", "Add")
    );
    assert_eq!(scan_envelope(SOAP12_WSA2004.as_bytes(), true), action_only("urn:calc/ICalc/Sub"));
    // Default namespaces and CDATA and entities work too.
    let default_ns = r#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header><Action xmlns="http://www.w3.org/2005/08/addressing"><![CDATA[urn:a/B/]]>C&amp;D</Action></Header><Body/></Envelope>"#;
    assert_eq!(scan_envelope(default_ns.as_bytes(), true), action_only("urn:a/B/C&D"));
}

#[test]
fn scanning_stops_at_the_first_element_of_the_body() {
    let operation_start = SOAP11_WSA2005.find("<a>1</a>").unwrap();
    assert_eq!(
        scan_envelope(&SOAP11_WSA2005.as_bytes()[..operation_start], false),
        scanned(Some("http://tempuri.org/ICalculator/Add"), "http://tempuri.org/", "Add")
    );
    let header_end = SOAP11_WSA2005.find("</s:Header>").unwrap() + "</s:Header>".len();
    assert_eq!(scan_envelope(&SOAP11_WSA2005.as_bytes()[..header_end], false), EnvelopeScan::Incomplete);
    let mid_action = SOAP11_WSA2005.find("ICalculator/Add").unwrap();
    assert_eq!(scan_envelope(&SOAP11_WSA2005.as_bytes()[..mid_action], false), EnvelopeScan::Incomplete);
    assert!(matches!(scan_envelope(&SOAP11_WSA2005.as_bytes()[..mid_action], true), EnvelopeScan::Invalid(_)));
}

#[test]
fn envelopes_without_an_action_and_bodies_that_are_not_soap() {
    let no_header =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>"#;
    assert_eq!(scan_envelope(no_header.as_bytes(), true), scanned(None, "", "x"));
    let header_without_action = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><h>1</h></s:Header><s:Body/></s:Envelope>"#;
    assert_eq!(scan_envelope(header_without_action.as_bytes(), true), EnvelopeScan::Envelope(Envelope::default()));
    // An Action in the wrong namespace does not count; one in the body is the operation.
    let wrong_ns = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><Action>urn:a/B/C</Action></s:Header><s:Body/></s:Envelope>"#;
    assert_eq!(scan_envelope(wrong_ns.as_bytes(), true), EnvelopeScan::Envelope(Envelope::default()));
    let in_body = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><a:Action xmlns:a="http://www.w3.org/2005/08/addressing">urn:a/B/C</a:Action></s:Body></s:Envelope>"#;
    assert_eq!(scan_envelope(in_body.as_bytes(), true), scanned(None, WSA_2005, "Action"));
    let undeclared =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:Add/></s:Body></s:Envelope>"#;
    assert!(
        matches!(scan_envelope(undeclared.as_bytes(), true), EnvelopeScan::Invalid(reason) if reason.contains("undeclared"))
    );
    assert_eq!(scan_envelope(b"<html><body/></html>", true), EnvelopeScan::Absent);
    assert_eq!(scan_envelope(b"", true), EnvelopeScan::Absent);
    assert_eq!(scan_envelope(b"", false), EnvelopeScan::Incomplete, "nothing read yet decides nothing");
    assert_eq!(scan_envelope(b"  <?xml version=\"1.0\"?>", false), EnvelopeScan::Incomplete);
    assert_eq!(scan_envelope(b"{\"json\": true}", false), EnvelopeScan::Absent, "text before any element is not XML");
    assert_eq!(scan_envelope(b"not xml at all", true), EnvelopeScan::Absent);
}

#[test]
fn utf16_envelopes_are_refused_cleanly() {
    let utf16: Vec<u8> = "\u{feff}<Envelope/>".encode_utf16().flat_map(u16::to_le_bytes).collect();
    assert!(matches!(scan_envelope(&utf16, true), EnvelopeScan::Invalid(reason) if reason.contains("UTF-16")));
    let big_endian: Vec<u8> = "\u{feff}<Envelope/>".encode_utf16().flat_map(u16::to_be_bytes).collect();
    assert!(matches!(scan_envelope(&big_endian, false), EnvelopeScan::Invalid(reason) if reason.contains("UTF-16")));
}

#[test]
fn hostile_envelopes_are_refused() {
    let dtd = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><a:Action xmlns:a="http://www.w3.org/2005/08/addressing">&lol2;</a:Action></s:Header></s:Envelope>"#;
    assert!(matches!(scan_envelope(dtd.as_bytes(), true), EnvelopeScan::Invalid(reason) if reason.contains("DTD")));
    let external = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><a:Action xmlns:a="http://www.w3.org/2005/08/addressing">&xxe;</a:Action></s:Header></s:Envelope>"#;
    assert!(matches!(scan_envelope(external.as_bytes(), true), EnvelopeScan::Invalid(_)));
    let twice = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action>urn:a/B/C</a:Action><a:Action>urn:evil/X/Y</a:Action></s:Header></s:Envelope>"#;
    assert!(
        matches!(scan_envelope(twice.as_bytes(), true), EnvelopeScan::Invalid(reason) if reason.contains("more than one"))
    );
    let deep = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{}"#,
        "<x>".repeat(MAX_DEPTH + 5)
    );
    assert!(
        matches!(scan_envelope(deep.as_bytes(), false), EnvelopeScan::Invalid(reason) if reason.contains("deeper"))
    );
}

proptest! {
    #[test]
    fn scanning_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048), complete in any::<bool>()) {
        let _ = scan_envelope(&bytes, complete);
    }

    #[test]
    fn scanning_mutated_envelopes_never_panics(cut in 0usize..SOAP11_WSA2005.len(), flip in 0usize..SOAP11_WSA2005.len(), byte in any::<u8>()) {
        let mut bytes = SOAP11_WSA2005.as_bytes().to_vec();
        bytes[flip] = byte;
        let _ = scan_envelope(&bytes[..cut], false);
        let _ = scan_envelope(&bytes, true);
    }

    #[test]
    fn arbitrary_headers_never_panic(action in ".{0,200}", content_type in ".{0,200}", explicit in ".{0,200}") {
        let mut map = HeaderMap::new();
        for (name, value) in [(SOAP_ACTION, action), (CONTENT_TYPE, content_type), (CONTRACT_HEADER, explicit)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                map.insert(name, value);
            }
        }
        let _ = hints(&map);
        let _ = soap_version(&map);
    }
}

/// A SOAP 1.2 envelope whose header holds `padding` bytes of other elements before the action.
fn padded_envelope(padding: usize) -> Vec<u8> {
    let filler = "<x:Pad xmlns:x=\"urn:pad\">padding</x:Pad>".repeat(padding / 40 + 1);
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header>{filler}<a:Action>urn:svc/IOrders/Get</a:Action></s:Header><s:Body><Get xmlns="urn:svc"/></s:Body></s:Envelope>"#
    )
    .into_bytes()
}

/// Feeds `body` in chunks of `chunk` bytes until the reader decides; returns the decision and the
/// bytes scanned in all.
fn feed(body: &[u8], chunk: usize) -> (EnvelopeScan, usize) {
    let mut reader = EnvelopeReader::default();
    for piece in body.chunks(chunk) {
        reader.push(piece);
        match reader.scan(false) {
            None | Some(EnvelopeScan::Incomplete) => {}
            Some(decided) => return (decided, reader.scanned()),
        }
    }
    (reader.scan(true).unwrap(), reader.scanned())
}

#[test]
fn the_envelope_scan_is_linear_in_the_bytes_received_however_they_are_split() {
    for size in [2_000, 16_000, 60_000] {
        let body = padded_envelope(size);
        for chunk in [1, 7, 65_536] {
            let (decision, scanned) = feed(&body, chunk);
            assert_eq!(
                for_routing(decision),
                EnvelopeScan::Envelope(Envelope {
                    action: Some("urn:svc/IOrders/Get".into()),
                    operation: Some(Operation { namespace: "urn:svc".into(), name: "Get".into() }),
                    ..Envelope::default()
                }),
                "size {size}, chunk {chunk}"
            );
            assert!(
                scanned <= 3 * body.len() + 1_024,
                "size {size}, chunk {chunk}: scanned {scanned} bytes for a {} byte body",
                body.len()
            );
        }
    }
}

proptest! {
    /// However a body is split, the reader decides what one scan of the whole body decides.
    #[test]
    fn the_envelope_reader_agrees_with_one_scan(padding in 0usize..3_000, chunk in 1usize..600) {
        let body = padded_envelope(padding);
        prop_assert_eq!(feed(&body, chunk).0, scan_everything(&body, true));
    }
}

/// An envelope spelled in one of the ways SOAP stacks write them, and the operation it invokes.
fn spelled_envelopes() -> impl Strategy<Value = (String, Operation)> {
    let envelope_ns =
        prop_oneof![Just("http://schemas.xmlsoap.org/soap/envelope/"), Just("http://www.w3.org/2003/05/soap-envelope")];
    let prefix = prop_oneof![Just(""), Just("s"), Just("soapenv"), Just("SOAP-ENV")];
    let operation_prefix = prop_oneof![Just(""), Just("ns1"), Just("tns"), Just("m")];
    let gap = prop_oneof![Just(""), Just(" "), Just("\n  "), Just("<!-- c -->"), Just("\r\n<!-- x -->\t")];
    let namespace = prop_oneof![Just("http://tempuri.org/"), Just("urn:calc"), Just("http://example.com/a&amp;b")];
    let name = "[A-Za-z][A-Za-z0-9_]{0,15}";
    let header = prop_oneof![
        Just(String::new()),
        Just("<{p}Header/>".to_owned()),
        Just("<{p}Header><x:Id xmlns:x=\"urn:x\">7</x:Id></{p}Header>".to_owned())
    ];
    let start = prop_oneof![Just(""), Just("\u{feff}"), Just("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n")];
    (envelope_ns, prefix, operation_prefix, (gap.clone(), gap), namespace, name, header, start).prop_map(
        |(envelope_ns, prefix, operation_prefix, (gap, gap2), namespace, name, header, start)| {
            let p = if prefix.is_empty() { String::new() } else { format!("{prefix}:") };
            let declare = if prefix.is_empty() { String::from("xmlns") } else { format!("xmlns:{prefix}") };
            let op = if operation_prefix.is_empty() { String::new() } else { format!("{operation_prefix}:") };
            let op_declare =
                if operation_prefix.is_empty() { String::from("xmlns") } else { format!("xmlns:{operation_prefix}") };
            let header = header.replace("{p}", &p);
            let text = format!(
                r#"{start}<{p}Envelope {declare}="{envelope_ns}">{gap}{header}{gap2}<{p}Body>{gap}<{op}{name} {op_declare}="{namespace}"><v>1</v></{op}{name}></{p}Body></{p}Envelope>"#
            );
            (text, Operation { namespace: namespace.replace("&amp;", "&"), name })
        },
    )
}

proptest! {
    /// However an envelope is spelled (prefixes or default namespaces, comments and whitespace,
    /// a header or none, a BOM or an XML declaration) and however its bytes arrive, the scan
    /// finds the operation the body invokes.
    #[test]
    fn every_spelling_of_an_envelope_names_its_operation((text, expected) in spelled_envelopes(), chunk in 1usize..64) {
        let decided = EnvelopeScan::Envelope(Envelope { operation: Some(expected), ..Envelope::default() });
        prop_assert_eq!(&feed(text.as_bytes(), chunk).0, &decided);
        prop_assert_eq!(&scan_envelope(text.as_bytes(), true), &decided);
    }
}

/// An MTOM/XOP request as Apache CXF sends it: the envelope in the root part, a binary
/// attachment after it.
fn mtom(root_first: bool) -> (Vec<u8>, soap::Multipart) {
    let envelope = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><ns2:Upload xmlns:ns2="urn:files"><data><xop:Include xmlns:xop="http://www.w3.org/2004/08/xop/include" href="cid:att1@cxf.apache.org"/></data></ns2:Upload></soap:Body></soap:Envelope>"#;
    let root = format!(
        "--uuid:b1\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"text/xml\"\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <root.message@cxf.apache.org>\r\n\r\n{envelope}\r\n"
    );
    let mut attachment = b"--uuid:b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <att1@cxf.apache.org>\r\n\r\n".to_vec();
    attachment.extend((0..3000u32).map(|i| (i % 256) as u8));
    attachment.extend_from_slice(b"\r\n");
    let mut body = Vec::new();
    if root_first {
        body.extend_from_slice(root.as_bytes());
        body.extend_from_slice(&attachment);
    } else {
        body.extend_from_slice(&attachment);
        body.extend_from_slice(root.as_bytes());
    }
    body.extend_from_slice(b"--uuid:b1--\r\n");
    (body, soap::Multipart { boundary: "uuid:b1".into(), start: Some("<root.message@cxf.apache.org>".into()) })
}

#[test]
fn the_root_part_of_an_mtom_request_is_its_envelope() {
    let upload = EnvelopeScan::Envelope(Envelope {
        operation: Some(Operation { namespace: "urn:files".into(), name: "Upload".into() }),
        ..Envelope::default()
    });
    for root_first in [true, false] {
        let (body, multipart) = mtom(root_first);
        let (root, complete) = root_part(&body, &multipart).unwrap().unwrap();
        assert!(complete && root.starts_with(b"<soap:Envelope") && root.ends_with(b"</soap:Envelope>"));
        // Fed in pieces, the reader finds the operation; the start parameter may be left out
        // when the root part comes first.
        for chunk in [1, 13, 4096] {
            let hints = Hints { multipart: Some(multipart.clone()), soap: true, ..Hints::default() };
            let mut reader = EnvelopeReader::new(hints.multipart.clone());
            let mut decided = None;
            for piece in body.chunks(chunk) {
                reader.push(piece);
                if let Some(scan @ (EnvelopeScan::Envelope(_) | EnvelopeScan::Invalid(_))) = reader.scan(false) {
                    decided = Some(for_routing(scan));
                    break;
                }
            }
            assert_eq!(
                decided.or_else(|| reader.scan(true)),
                Some(upload.clone()),
                "root first {root_first}, chunk {chunk}"
            );
        }
    }
    let (body, _) = mtom(true);
    let first = soap::Multipart { boundary: "uuid:b1".into(), start: None };
    assert!(root_part(&body, &first).unwrap().unwrap().0.starts_with(b"<soap:Envelope"));
    // A preamble line before the first boundary is allowed (RFC 2046).
    let mut preamble = b"This is a multi-part message in MIME format.\r\n".to_vec();
    preamble.extend_from_slice(&body);
    assert!(root_part(&preamble, &first).unwrap().unwrap().0.starts_with(b"<soap:Envelope"));
    // A start that names no part, a boundary in the middle of a line, no boundary at all, an
    // unfinished part.
    let missing = soap::Multipart { boundary: "uuid:b1".into(), start: Some("<nope>".into()) };
    assert!(root_part(&body, &missing).is_err());
    assert!(root_part(b"garbage--uuid:b1\r\n", &first).is_err());
    assert!(root_part(&[b'x'; 2_000], &first).is_err());
    assert_eq!(root_part(b"--uuid:b1\r\nContent-ID: <x>", &first), Ok(None));
}

#[test]
fn an_mtom_request_routes_by_its_action_or_its_root_envelope() {
    let state = registry(&[("http://files:1/", "urn:files", "IFiles", None)]);
    let (body, _) = mtom(true);
    let content_type = r#"multipart/related; type="application/xop+xml"; boundary="uuid:b1"; start="<root.message@cxf.apache.org>"; start-info="text/xml""#;
    let hints = hints(&headers(&[("Content-Type", content_type), ("SOAPAction", "\"\"")])).unwrap();
    assert_eq!(decide(&hints, "/", None, &state), Ok(Decision::ReadEnvelope));
    let mut reader = EnvelopeReader::new(hints.multipart.clone());
    reader.push(&body);
    let Some(EnvelopeScan::Envelope(envelope)) = reader.scan(true) else { panic!("no envelope") };
    assert_eq!(
        decide(&hints, "/", Some(&envelope), &state),
        Ok(Decision::Route(ContractKey::from_text("urn:files/IFiles"), Source::BodyNamespace))
    );
    let with_action =
        format!(r#"{content_type}; action="urn:files/IFiles/Upload""#).replace("text/xml", "application/soap+xml");
    let hints = super::hints(&headers(&[("Content-Type", &with_action)])).unwrap();
    assert_eq!(
        decide(&hints, "/", None, &state),
        Ok(Decision::Route(ContractKey::from_text("urn:files/IFiles"), Source::ContentTypeAction))
    );
}

#[test]
fn a_bound_path_routes_requests_that_name_no_contract() {
    let state = registry_with(&[
        ("http://calc:1/", "http://tempuri.org/", "ICalculator", vec![(PATH_KEY, "/calc")]),
        ("http://calc:2/", "http://tempuri.org/", "ICalculator", vec![(PATH_KEY, "/calc")]),
        ("http://v2:1/", "urn:calc", "ICalculator2", vec![(PATH_KEY, "/calc/v2")]),
        ("http://orders:1/", "urn:shop", "IOrders", vec![]),
    ]);
    let calc = Ok(("http://tempuri.org/ICalculator".to_owned(), Source::Path));
    // A plain GET (the WSDL), a SOAP call without an action, a deeper path; the longest binding.
    assert_eq!(route_at("/calc", &[], "", &state), calc);
    assert_eq!(route_at("/calc/", &[], "", &state), calc);
    assert_eq!(route_at("/calc/anything/below", &[], "", &state), calc);
    assert_eq!(
        route_at("/calc", &[("content-type", "text/xml"), ("soapaction", "\"\"")], &call("urn:x", "Add"), &state),
        calc
    );
    assert_eq!(route_at("/calc/v2/x", &[], "", &state), Ok(("urn:calc/ICalculator2".to_owned(), Source::Path)));
    // Only at a segment boundary; an explicit header or a registered action still decides first.
    assert_eq!(route_at("/calculator", &[], "", &state), Err(ContractError::Missing));
    assert_eq!(
        route_at("/calc", &[("x-switchboard-contract", "urn:shop/IOrders")], "", &state),
        Ok(("urn:shop/IOrders".to_owned(), Source::Header))
    );
    // Two contracts binding one path: refused, naming both.
    let twice = registry_with(&[
        ("http://a:1/", "urn:a", "IA", vec![(PATH_KEY, "/svc")]),
        ("http://b:1/", "urn:b", "IB", vec![(PATH_KEY, "/svc")]),
    ]);
    assert_eq!(
        route_at("/svc", &[], "", &twice),
        Err(ContractError::PathBoundTwice {
            path: "/svc".into(),
            candidates: vec!["urn:a/IA".into(), "urn:b/IB".into()]
        })
    );
}

#[test]
fn each_rule_is_shown_by_its_documented_name() {
    let sources = [
        Source::SoapAction,
        Source::ContentTypeAction,
        Source::WsAddressing,
        Source::Header,
        Source::BodyNamespace,
        Source::BodyOperation,
        Source::Path,
    ];
    assert_eq!(
        sources.map(Source::as_str),
        [
            "soapaction",
            "content-type-action",
            "ws-addressing",
            "x-switchboard-contract",
            "body-namespace",
            "body-operation",
            "path"
        ]
    );
}

#[test]
fn the_reader_decides_as_soon_as_the_start_of_the_envelope_has_arrived() {
    let operation_start = SOAP11_WSA2005.find("<a>1</a>").unwrap();
    let mut reader = EnvelopeReader::default();
    reader.push(&SOAP11_WSA2005.as_bytes()[..operation_start]);
    assert_eq!(
        reader.scan(false).map(for_routing),
        Some(scanned(Some("http://tempuri.org/ICalculator/Add"), "http://tempuri.org/", "Add"))
    );
}

#[test]
fn the_reader_scans_again_once_it_holds_twice_the_bytes_or_512_more() {
    let body = padded_envelope(3_000);
    let mut reader = EnvelopeReader::default();
    assert_eq!((reader.len(), reader.is_empty()), (0, true));
    reader.push(&body[..100]);
    assert_eq!((reader.len(), reader.is_empty()), (100, false));
    assert_eq!(reader.scan(false), Some(EnvelopeScan::Incomplete));
    assert_eq!(reader.scanned(), 100);
    // Few bytes: the next scan waits for 512 more.
    reader.push(&body[100..611]);
    assert_eq!(reader.scan(false), None);
    reader.push(&body[611..612]);
    assert_eq!(reader.scan(false), Some(EnvelopeScan::Incomplete));
    assert_eq!(reader.scanned(), 100 + 612);
    // More: it waits for twice as many.
    reader.push(&body[612..1_223]);
    assert_eq!(reader.scan(false), None);
    reader.push(&body[1_223..1_224]);
    assert_eq!(reader.scan(false), Some(EnvelopeScan::Incomplete));
    assert_eq!(reader.scanned(), 100 + 612 + 1_224);
    // The end of the body is scanned at once, and the bytes are forwarded as they came.
    reader.push(&body[1_224..]);
    assert!(matches!(reader.scan(true), Some(EnvelopeScan::Envelope(_))));
    assert_eq!(reader.scanned(), 100 + 612 + 1_224 + body.len());
    assert_eq!(reader.into_bytes(), body);
}

#[test]
fn the_reader_scans_once_it_holds_the_scan_cap_however_recently_it_scanned() {
    let body = padded_envelope(2 * ENVELOPE_SCAN_CAP);
    let mut reader = EnvelopeReader::default();
    reader.push(&body[..40_000]);
    assert_eq!(reader.scan(false), Some(EnvelopeScan::Incomplete));
    reader.push(&body[40_000..ENVELOPE_SCAN_CAP - 1]);
    assert_eq!(reader.scan(false), None);
    reader.push(&body[ENVELOPE_SCAN_CAP - 1..ENVELOPE_SCAN_CAP]);
    assert_eq!(reader.scan(false), Some(EnvelopeScan::Incomplete), "the data plane then refuses the envelope");
}

#[test]
fn a_multipart_body_that_ends_before_its_root_part_is_invalid() {
    let multipart = soap::Multipart { boundary: "uuid:b1".into(), start: None };
    let hints = Hints { multipart: Some(multipart), soap: true, ..Hints::default() };
    let mut reader = EnvelopeReader::new(hints.multipart);
    reader.push(b"--uuid:b1\r\nContent-ID: <x>");
    assert_eq!(reader.scan(false), Some(EnvelopeScan::Incomplete), "more may come");
    assert!(
        matches!(reader.scan(true), Some(EnvelopeScan::Invalid(reason)) if reason.contains("before its root part"))
    );
}

#[test]
fn a_root_part_that_ended_is_judged_whole_while_attachments_still_arrive() {
    let body = b"--uuid:b1\r\nContent-ID: <root>\r\n\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Header>\r\n--uuid:b1\r\nContent-ID: <att>\r\n\r\nbinary";
    let multipart = soap::Multipart { boundary: "uuid:b1".into(), start: Some("<root>".into()) };
    let hints = Hints { multipart: Some(multipart), soap: true, ..Hints::default() };
    let mut reader = EnvelopeReader::new(hints.multipart);
    reader.push(body);
    assert!(matches!(reader.scan(false), Some(EnvelopeScan::Invalid(reason)) if reason.contains("ends early")));
}

#[test]
fn elements_nested_exactly_max_depth_deep_are_read_and_one_deeper_refused() {
    let nested = |depth: usize| {
        let inner = "<x>".repeat(depth - 2);
        format!(r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{inner}"#)
    };
    assert_eq!(scan_envelope(nested(MAX_DEPTH).as_bytes(), false), EnvelopeScan::Incomplete);
    assert!(matches!(
        scan_envelope(nested(MAX_DEPTH + 1).as_bytes(), false),
        EnvelopeScan::Invalid(reason) if reason.contains("deeper")
    ));
}

#[test]
fn the_scan_reads_only_the_envelopes_own_header_and_body() {
    let envelope = |before_body: &str| {
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:x="urn:x" xmlns:a="http://www.w3.org/2005/08/addressing">{before_body}<s:Body><Op xmlns="urn:o"/></s:Body></s:Envelope>"#
        )
    };
    let nothing = EnvelopeScan::Envelope(Envelope::default());
    // Another element where the Header or the Body belongs ends the scan: nothing after it counts.
    assert_eq!(scan_envelope(envelope("<x:Extra><x:Inner/></x:Extra>").as_bytes(), true), nothing);
    // A Header or a Body of another namespace is neither.
    assert_eq!(scan_envelope(envelope("<x:Body><x:Inner/></x:Body>").as_bytes(), true), nothing);
    let foreign_header = envelope("<x:Header><a:Action>urn:a/B/C</a:Action></x:Header>");
    assert_eq!(scan_envelope(foreign_header.as_bytes(), true), nothing);
    // An empty element in the Header is no operation.
    let flagged = envelope("<s:Header><x:Flag/></s:Header>");
    assert_eq!(scan_envelope(flagged.as_bytes(), true), scanned(None, "urn:o", "Op"));
}

#[test]
fn a_body_whose_root_element_is_empty_is_not_soap_before_it_ends() {
    assert_eq!(scan_envelope(b"<x/>", false), EnvelopeScan::Absent);
}

#[test]
fn a_root_element_of_the_envelope_namespace_other_than_envelope_is_not_soap() {
    let body_as_root = r#"<s:Body xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><Op xmlns="urn:o"/></s:Body>"#;
    assert_eq!(scan_envelope(body_as_root.as_bytes(), true), EnvelopeScan::Absent);
}

#[test]
fn an_empty_body_ends_the_scan_before_the_envelope_ends() {
    let end = SOAP12_WSA2004.find("<env:Body/>").unwrap() + "<env:Body/>".len();
    assert_eq!(scan_envelope(&SOAP12_WSA2004.as_bytes()[..end], false), action_only("urn:calc/ICalc/Sub"));
    let open_and_closed = SOAP12_WSA2004.replace("<env:Body/>", "<env:Body> </env:Body>");
    let end = open_and_closed.find("</env:Body>").unwrap() + "</env:Body>".len();
    assert_eq!(scan_envelope(&open_and_closed.as_bytes()[..end], false), action_only("urn:calc/ICalc/Sub"));
}

#[test]
fn the_multipart_boundary_is_looked_for_at_line_starts_within_1_kib() {
    let first = soap::Multipart { boundary: "uuid:b1".into(), start: None };
    let (body, _) = mtom(true);
    // A preamble line may end with a bare line feed.
    let mut preamble = b"preamble\n".to_vec();
    preamble.extend_from_slice(&body);
    assert!(root_part(&preamble, &first).unwrap().unwrap().0.starts_with(b"<soap:Envelope"));
    // Without a boundary, 1 KiB past the delimiter's length is waited for, and no more.
    let delimiter = "--uuid:b1".len();
    assert_eq!(root_part(&vec![b'x'; delimiter + 1_024], &first), Ok(None));
    assert!(root_part(&vec![b'x'; delimiter + 1_025], &first).is_err());
}

#[test]
fn a_boundary_line_may_carry_transport_padding() {
    let start = soap::Multipart { boundary: "uuid:b1".into(), start: Some("<root>".into()) };
    let body = b"--uuid:b1   \r\nContent-ID: <root>\r\n\r\n<e/>\r\n--uuid:b1--\r\n";
    assert_eq!(root_part(body, &start), Ok(Some((&b"<e/>"[..], true))));
}

// ---- The WS-Addressing `To` block: found by the routing scan, rewritten per endpoint ----

/// The envelope scanned whole, `To` included.
fn scan_whole(envelope: &str) -> Envelope {
    match scan_everything(envelope.as_bytes(), true) {
        EnvelopeScan::Envelope(envelope) => envelope,
        other => panic!("{other:?}"),
    }
}

/// The envelope with its `To` set to `address` as the data plane does it.
fn rewritten(envelope: &str, address: &str) -> String {
    let to = scan_whole(envelope).to.expect("a To block");
    let with = bytes::Bytes::from(quick_xml::escape::escape(address).into_owned());
    let splice = crate::proxy::body::Splice { range: to.range, with };
    String::from_utf8(splice.apply(&bytes::Bytes::copy_from_slice(envelope.as_bytes())).to_vec()).unwrap()
}

const WSA_2004_TO: &str = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope" xmlns:w="http://schemas.xmlsoap.org/ws/2004/08/addressing"><env:Header><w:Action>urn:calc/ICalc/Sub</w:Action><w:To env:mustUnderstand="1"> http://router:8080/Services/Calc.svc </w:To></env:Header><env:Body><Sub xmlns="urn:calc"/></env:Body></env:Envelope>"#;

#[test]
fn the_to_of_both_addressing_versions_is_rewritten_and_nothing_else() {
    let address = "http://10.0.0.5:9000/Services/CalculatorService.svc";
    let v10 = rewritten(SOAP11_WSA2005, address);
    assert_eq!(v10, SOAP11_WSA2005.replace("<a:To>http://router/</a:To>", &format!("<a:To>{address}</a:To>")));
    assert_eq!(scan_whole(SOAP11_WSA2005).addressing, Some(WSA_2005));
    let v2004 = rewritten(WSA_2004_TO, address);
    assert_eq!(
        v2004,
        WSA_2004_TO.replace(" http://router:8080/Services/Calc.svc ", address),
        "the whole text between the tags is replaced, its spaces too"
    );
    assert_eq!(scan_whole(WSA_2004_TO).addressing, Some(WSA_2004));
    // The rewritten message still routes the same way, and its To reads as the address.
    assert_eq!(
        for_routing(scan_everything(v2004.as_bytes(), true)),
        for_routing(EnvelopeScan::Envelope(scan_whole(WSA_2004_TO)))
    );
    // Characters XML gives a meaning to are escaped.
    let odd = rewritten(SOAP11_WSA2005, "http://svc/a?b=1&c=<2>");
    assert!(odd.contains("<a:To>http://svc/a?b=1&amp;c=&lt;2&gt;</a:To>"), "{odd}");
}

#[test]
fn the_to_of_an_envelope_after_a_byte_order_mark_is_found_where_it_is() {
    // Mono's WCF writes one before every SOAP 1.2 message.
    let with_bom = format!("\u{feff}{SOAP11_WSA2005}");
    let address = "http://10.0.0.5:9000/Services/CalculatorService.svc";
    assert_eq!(rewritten(&with_bom, address), format!("\u{feff}{}", rewritten(SOAP11_WSA2005, address)));
}

#[test]
fn a_to_that_is_absent_in_another_namespace_or_in_the_body_is_not_found() {
    assert_eq!(scan_whole(SOAP12_WSA2004).to, None);
    let no_to = SOAP11_WSA2005.replace("<a:To>http://router/</a:To>", "");
    assert_eq!(scan_whole(&no_to).to, None);
    let other_ns = SOAP11_WSA2005
        .replace("<a:To>http://router/</a:To>", r#"<x:To xmlns:x="urn:not-addressing">http://router/</x:To>"#);
    assert_eq!(scan_whole(&other_ns).to, None);
    let in_body = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Body><Send xmlns="urn:mail"><a:To>http://router/</a:To></Send></s:Body></s:Envelope>"#;
    assert_eq!(scan_whole(in_body).to, None, "the body is never read past its first element");
    let nested = SOAP11_WSA2005
        .replace("<a:To>http://router/</a:To>", "<x:Wrapper xmlns:x=\"urn:x\"><a:To>http://router/</a:To></x:Wrapper>");
    assert_eq!(scan_whole(&nested).to, None, "only a header block of its own is the To");
    let twice = SOAP11_WSA2005.replace("<a:To>http://router/</a:To>", "<a:To>http://a/</a:To><a:To>http://b/</a:To>");
    assert!(matches!(scan_everything(twice.as_bytes(), true), EnvelopeScan::Invalid(_)));
}

#[test]
fn a_signed_header_is_marked_so_its_to_is_kept() {
    let signed = SOAP11_WSA2005.replace(
        "</s:Header>",
        r#"<o:Security xmlns:o="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecext-1.0.xsd"><ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature></o:Security></s:Header>"#,
    );
    let scanned = scan_whole(&signed);
    assert!(scanned.signed && scanned.to.is_some(), "{scanned:?}");
    // A signature before the To counts as well; one in another namespace does not.
    let first = SOAP11_WSA2005
        .replace("<a:MessageID>", r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/><a:MessageID>"#);
    assert!(scan_whole(&first).signed);
    let lookalike = SOAP11_WSA2005.replace("<a:MessageID>", r#"<x:Signature xmlns:x="urn:x"/><a:MessageID>"#);
    assert!(!scan_whole(&lookalike).signed);
    let with_text =
        SOAP11_WSA2005.replace("<a:MessageID>", r#"<x:Signature xmlns:x="urn:x">v</x:Signature><a:MessageID>"#);
    assert!(!scan_whole(&with_text).signed, "an element with content is judged alike");
    assert!(!scan_whole(SOAP11_WSA2005).signed);
}

#[test]
fn the_to_of_an_mtom_envelope_is_found_at_its_place_in_the_whole_body() {
    let (body, multipart) = mtom(false);
    let text = String::from_utf8_lossy(&body).into_owned();
    let with_to = text.replace(
        "<soap:Body>",
        r#"<soap:Header><a:To xmlns:a="http://www.w3.org/2005/08/addressing">http://router/up</a:To></soap:Header><soap:Body>"#,
    );
    let bytes = with_to.as_bytes();
    let mut reader = EnvelopeReader::new(Some(multipart));
    reader.push(bytes);
    let Some(EnvelopeScan::Envelope(envelope)) = reader.scan(true) else { panic!("no envelope") };
    let range = envelope.to.expect("a To").range;
    assert_eq!(&bytes[range.clone()], b"http://router/up");
    let splice = crate::proxy::body::Splice { range, with: bytes::Bytes::from_static(b"http://10.0.0.5/files") };
    let spliced = splice.apply(&bytes::Bytes::copy_from_slice(bytes));
    assert_eq!(
        spliced,
        with_to.replace("http://router/up", "http://10.0.0.5/files").as_bytes(),
        "the attachment is untouched"
    );
}

proptest! {
    /// Whatever the header around it, the rewritten envelope is the original outside the `To`
    /// text, and its `To` reads as the endpoint's address.
    #[test]
    fn the_rewritten_envelope_equals_the_original_outside_the_to_text(
        before in proptest::collection::vec(r#"[a-zA-Z0-9 <>&"']{0,12}"#, 0..3),
        to in r#"[a-zA-Z0-9:/._?&<> -]{0,40}"#,
        address in r#"http://[a-z0-9.]{1,12}(:[0-9]{1,5})?(/[a-zA-Z0-9._&-]{0,12}){0,3}"#,
        prefix in "(a|wsa|x1)",
        version in 0usize..2,
        bom in any::<bool>(),
    ) {
        let escape = |text: &str| quick_xml::escape::escape(text).into_owned();
        let ns = [WSA_2005, WSA_2004][version];
        let blocks: String = before.iter().map(|text| format!("<h:B xmlns:h=\"urn:h\">{}</h:B>", escape(text))).collect();
        let envelope = format!(
            r#"{}<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:{prefix}="{ns}"><s:Header>{blocks}<{prefix}:To>{}</{prefix}:To></s:Header><s:Body><Op xmlns="urn:o"/></s:Body></s:Envelope>"#,
            if bom { "\u{feff}" } else { "" },
            escape(&to)
        );
        let range = scan_whole(&envelope).to.expect("a To").range;
        let out = rewritten(&envelope, &address);
        let written = escape(&address);
        prop_assert_eq!(&out[..range.start], &envelope[..range.start]);
        prop_assert_eq!(&out[range.start + written.len()..], &envelope[range.end..]);
        prop_assert_eq!(&out[range.start..range.start + written.len()], written.as_str());
        // The To reads back as the address, and the message routes as before.
        let mut reader = quick_xml::Reader::from_str(&out[range.start..range.start + written.len()]);
        let mut text = String::new();
        loop {
            match reader.read_event() {
                Ok(quick_xml::events::Event::Text(t)) => text.push_str(&t.xml10_content()),
                Ok(quick_xml::events::Event::GeneralRef(r)) => text.push(soap::resolve_entity(&r).unwrap()),
                Ok(quick_xml::events::Event::Eof) => break,
                other => prop_assert!(false, "{other:?}"),
            }
        }
        prop_assert_eq!(text, address);
        prop_assert_eq!(for_routing(scan_everything(out.as_bytes(), true)), for_routing(EnvelopeScan::Envelope(scan_whole(&envelope))));
    }
}
