//! WSDLs fetched through a bound path (`GET /calc?wsdl`) name the router, not the endpoint: the
//! `location` of each SOAP 1.1 and 1.2 `address` in the document becomes the URL the client used
//! (its scheme, host and the bound path), so that a client generated from it, with its stack's
//! default settings, calls through the router.

use bytes::Bytes;
use http::HeaderValue;
use http::Response;
use http::header::CONTENT_LENGTH;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use http_body_util::Limited;
use quick_xml::events::BytesStart;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::writer::Writer;

use crate::proxy::ProxyBody;

/// Largest WSDL rewritten; a larger one passes through unchanged.
pub const MAX_WSDL_BYTES: usize = 1 << 20;

const WSDL_SOAP11: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const WSDL_SOAP12: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";

/// Whether a request asks for a WSDL: a `GET` whose query has a `wsdl` parameter.
pub fn asks_wsdl(method: &http::Method, query: Option<&str>) -> bool {
    method == http::Method::GET
        && query
            .is_some_and(|q| q.split('&').any(|p| p.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("wsdl"))))
}

/// Whether a request asks for a service's metadata: a `GET` whose query has a `wsdl`,
/// `singleWsdl`, `xsd` or `disco` parameter (WCF's and most SOAP stacks' metadata URLs).
pub fn asks_metadata(method: &http::Method, query: Option<&str>) -> bool {
    const METADATA: [&str; 4] = ["wsdl", "singlewsdl", "xsd", "disco"];
    method == http::Method::GET
        && query.is_some_and(|q| {
            q.split('&').filter_map(|p| p.split('=').next()).any(|k| METADATA.iter().any(|m| k.eq_ignore_ascii_case(m)))
        })
}

/// Rewrites the SOAP addresses of a WSDL answer to `location`. Anything that is not a readable
/// XML answer of at most [`MAX_WSDL_BYTES`] is returned as it came (or, once partly read and
/// found too large or unreadable, as the bytes read so far cannot be sent back, an error).
pub async fn rewrite(response: Response<ProxyBody>, location: &str) -> Result<Response<ProxyBody>, String> {
    let xml = response.status().is_success()
        && response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            let media = v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            media == "text/xml" || media == "application/xml" || media == "application/wsdl+xml"
        });
    let declared = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if !xml || declared.is_some_and(|length| length > MAX_WSDL_BYTES) {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = Limited::new(body, MAX_WSDL_BYTES)
        .collect()
        .await
        .map_err(|err| format!("the WSDL could not be read: {err}"))?
        .to_bytes();
    let rewritten = match addresses_to(&bytes, location) {
        Ok(rewritten) => Bytes::from(rewritten),
        Err(err) => {
            tracing::debug!(error = %err, "a WSDL answer is not readable XML; passed on unchanged");
            bytes
        }
    };
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    Ok(Response::from_parts(parts, ProxyBody::local(rewritten)))
}

/// The document with the `location` of every `soap:address` and `soap12:address` set to
/// `location`; everything else as it was read.
pub fn addresses_to(document: &[u8], location: &str) -> Result<Vec<u8>, String> {
    let mut reader = NsReader::from_reader(document);
    let mut writer = Writer::new(Vec::with_capacity(document.len() + 64));
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|err| err.to_string())?;
        let event = match event {
            Event::DocType(_) => return Err("DTDs are not accepted".into()),
            Event::Eof => break,
            Event::Start(start) if is_address(&ns, &start) => Event::Start(with_location(&start, location)?),
            Event::Empty(start) if is_address(&ns, &start) => Event::Empty(with_location(&start, location)?),
            other => other,
        };
        writer.write_event(event).map_err(|err| err.to_string())?;
    }
    Ok(writer.into_inner())
}

fn is_address(ns: &ResolveResult<'_>, start: &BytesStart<'_>) -> bool {
    start.local_name().as_ref() == "address"
        && (crate::soap::in_namespace(ns, WSDL_SOAP11) || crate::soap::in_namespace(ns, WSDL_SOAP12))
}

fn with_location(start: &BytesStart<'_>, location: &str) -> Result<BytesStart<'static>, String> {
    let mut rewritten = BytesStart::new(start.name().as_ref().to_owned());
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|err| err.to_string())?;
        if attribute.key.as_ref() != "location" {
            rewritten.push_attribute(attribute);
        }
    }
    rewritten.push_attribute(("location", location));
    Ok(rewritten)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WSDL: &str = r#"<?xml version="1.0"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:s12="http://schemas.xmlsoap.org/wsdl/soap12/" xmlns:other="urn:other">
  <service name="Calc">
    <port name="P11" binding="tns:B11"><soap:address location="http://10.0.0.5:9000/calc"/></port>
    <port name="P12" binding="tns:B12"><s12:address location="http://10.0.0.5:9000/calc"></s12:address></port>
    <port name="X" binding="tns:X"><other:address location="http://keep/me"/></port>
  </service>
</definitions>"#;

    #[test]
    fn only_the_soap_addresses_change() {
        let rewritten = String::from_utf8(addresses_to(WSDL.as_bytes(), "http://lb:8080/calc").unwrap()).unwrap();
        assert_eq!(rewritten.matches(r#"location="http://lb:8080/calc""#).count(), 2, "{rewritten}");
        assert!(rewritten.contains(r#"<other:address location="http://keep/me"/>"#), "{rewritten}");
        assert!(!rewritten.contains("10.0.0.5"));
        assert!(rewritten.contains(r#"<port name="P11" binding="tns:B11">"#));
        // A location with characters that need escaping is escaped.
        let odd = String::from_utf8(addresses_to(WSDL.as_bytes(), "http://lb/a&b").unwrap()).unwrap();
        assert!(odd.contains(r#"location="http://lb/a&amp;b""#), "{odd}");
        assert!(addresses_to(b"<!DOCTYPE x []><x/>", "http://lb/").is_err());
    }

    #[test]
    fn what_asks_for_a_wsdl() {
        assert!(asks_wsdl(&http::Method::GET, Some("wsdl")));
        assert!(asks_wsdl(&http::Method::GET, Some("WSDL")));
        assert!(asks_wsdl(&http::Method::GET, Some("x=1&wsdl=")));
        assert!(!asks_wsdl(&http::Method::GET, Some("wsdlx")));
        assert!(!asks_wsdl(&http::Method::GET, None));
        assert!(!asks_wsdl(&http::Method::POST, Some("wsdl")));
    }
}
