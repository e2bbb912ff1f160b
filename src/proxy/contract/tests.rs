use http::HeaderValue;
use http::header::CONTENT_TYPE;
use proptest::prelude::*;

use super::*;
use crate::soap::SOAP_ACTION;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    map
}

fn found(pairs: &[(&str, &str)]) -> (String, Source) {
    match from_headers(&headers(pairs)).unwrap() {
        FromHeaders::Found(key, source) => (key.to_string(), source),
        other => panic!("{other:?}"),
    }
}

#[test]
fn header_actions_decide_the_contract() {
    assert_eq!(
        found(&[("SOAPAction", "\"http://tempuri.org/ICalculator/Add\""), ("X-Switchboard-Contract", "urn:x/Y")]),
        ("http://tempuri.org/ICalculator".to_owned(), Source::SoapAction)
    );
    let ct = "application/soap+xml; charset=utf-8; action=\"urn:calc/ICalculator/Add\"";
    assert_eq!(found(&[("Content-Type", ct)]), ("urn:calc/ICalculator".to_owned(), Source::ContentTypeAction));
    let not_text = HeaderValue::from_bytes(b"urn:a/\xff/C").unwrap();
    let mut map = headers(&[]);
    map.insert(SOAP_ACTION, not_text);
    assert_eq!(from_headers(&map), Err(ContractError::InvalidHeader("SOAPAction")));
}

#[test]
fn answered_requests_take_the_header_action_else_the_envelope_action() {
    let soap11 = [("SOAPAction", "\"urn:a/B/C\""), ("Content-Type", "text/xml")];
    assert_eq!(request_action(&headers(&soap11), b""), Some("urn:a/B/C".into()));
    let text_xml = headers(&[("Content-Type", "text/xml")]);
    assert_eq!(request_action(&text_xml, SOAP11_WSA2005.as_bytes()), Some("http://tempuri.org/ICalculator/Add".into()));
    assert_eq!(request_action(&text_xml, b"<x/>"), None);
    // An action without an operation segment decides nothing: the envelope is read.
    let no_operation = headers(&[("SOAPAction", "Add"), ("Content-Type", "text/xml")]);
    assert_eq!(
        request_action(&no_operation, SOAP11_WSA2005.as_bytes()),
        Some("http://tempuri.org/ICalculator/Add".into())
    );
}

#[test]
fn explicit_header_for_plain_http() {
    assert_eq!(
        found(&[("X-Switchboard-Contract", "urn:orders/IOrders")]),
        ("urn:orders/IOrders".into(), Source::Header)
    );
    assert_eq!(from_headers(&headers(&[])), Err(ContractError::Missing));
    assert_eq!(from_headers(&headers(&[("X-Switchboard-Contract", "  ")])), Err(ContractError::Missing));
}

#[test]
fn xml_bodies_are_scanned_with_the_header_as_fallback() {
    let result =
        from_headers(&headers(&[("Content-Type", "text/xml; charset=utf-8"), ("X-Switchboard-Contract", "urn:a/B")]));
    assert_eq!(result, Ok(FromHeaders::ReadEnvelope { fallback: Some(ContractKey::from_text("urn:a/B")) }));
    // An empty SOAPAction means "no action": the envelope decides.
    let result = from_headers(&headers(&[("SOAPAction", "\"\""), ("Content-Type", "text/xml")]));
    assert_eq!(result, Ok(FromHeaders::ReadEnvelope { fallback: None }));
    let result = from_headers(&headers(&[("Content-Type", "application/soap+xml")]));
    assert_eq!(result, Ok(FromHeaders::ReadEnvelope { fallback: None }));
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

#[test]
fn ws_addressing_action_in_both_envelopes_and_namespaces() {
    assert_eq!(
        scan_envelope(SOAP11_WSA2005.as_bytes(), true),
        EnvelopeScan::Action("http://tempuri.org/ICalculator/Add".into())
    );
    assert_eq!(scan_envelope(SOAP12_WSA2004.as_bytes(), true), EnvelopeScan::Action("urn:calc/ICalc/Sub".into()));
    // Default namespaces and CDATA and entities work too.
    let default_ns = r#"<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Header><Action xmlns="http://www.w3.org/2005/08/addressing"><![CDATA[urn:a/B/]]>C&amp;D</Action></Header><Body/></Envelope>"#;
    assert_eq!(scan_envelope(default_ns.as_bytes(), true), EnvelopeScan::Action("urn:a/B/C&D".into()));
}

#[test]
fn scanning_stops_at_the_end_of_the_header() {
    let header_end = SOAP11_WSA2005.find("</s:Header>").unwrap() + "</s:Header>".len();
    assert_eq!(
        scan_envelope(&SOAP11_WSA2005.as_bytes()[..header_end], false),
        EnvelopeScan::Action("http://tempuri.org/ICalculator/Add".into())
    );
    let mid_action = SOAP11_WSA2005.find("ICalculator/Add").unwrap();
    assert_eq!(scan_envelope(&SOAP11_WSA2005.as_bytes()[..mid_action], false), EnvelopeScan::Incomplete);
    assert!(matches!(scan_envelope(&SOAP11_WSA2005.as_bytes()[..mid_action], true), EnvelopeScan::Invalid(_)));
}

#[test]
fn no_action_or_not_soap() {
    let no_header =
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><x/></s:Body></s:Envelope>"#;
    assert_eq!(scan_envelope(no_header.as_bytes(), true), EnvelopeScan::Absent);
    let header_without_action = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><h>1</h></s:Header><s:Body/></s:Envelope>"#;
    assert_eq!(scan_envelope(header_without_action.as_bytes(), true), EnvelopeScan::Absent);
    // An Action in the wrong namespace, or in the body, does not count.
    let wrong_ns = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><Action>urn:a/B/C</Action></s:Header><s:Body/></s:Envelope>"#;
    assert_eq!(scan_envelope(wrong_ns.as_bytes(), true), EnvelopeScan::Absent);
    let in_body = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><a:Action xmlns:a="http://www.w3.org/2005/08/addressing">urn:a/B/C</a:Action></s:Body></s:Envelope>"#;
    assert_eq!(scan_envelope(in_body.as_bytes(), true), EnvelopeScan::Absent);
    assert_eq!(scan_envelope(b"<html><body/></html>", true), EnvelopeScan::Absent);
    assert_eq!(scan_envelope(b"", true), EnvelopeScan::Absent);
    assert_eq!(scan_envelope(b"", false), EnvelopeScan::Incomplete, "nothing read yet decides nothing");
    assert_eq!(scan_envelope(b"  <?xml version=\"1.0\"?>", false), EnvelopeScan::Incomplete);
    assert_eq!(scan_envelope(b"{\"json\": true}", false), EnvelopeScan::Absent, "text before any element is not XML");
    assert_eq!(scan_envelope(b"not xml at all", true), EnvelopeScan::Absent);
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
        let _ = from_headers(&map);
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
            assert_eq!(decision, EnvelopeScan::Action("urn:svc/IOrders/Get".into()), "size {size}, chunk {chunk}");
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
        prop_assert_eq!(feed(&body, chunk).0, scan_envelope(&body, true));
    }
}
