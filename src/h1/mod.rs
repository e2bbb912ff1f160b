//! HTTP/1.1 messages as the data plane reads them, below every wire format: one view of a
//! request's headers ([`HeaderView`]) that both a parsed `http::HeaderMap` and the raw header
//! slices `httparse` yields give, so that whatever reads routing inputs (the SOAP action, the
//! content type, `X-Switchboard-*`) is written once, whichever parser read the request.

pub mod framing;

use http::HeaderMap;
use http::HeaderName;

/// The headers of a request, read by name (names compare case-insensitively).
pub trait HeaderView {
    /// The first value of the header `name`, as sent (without surrounding whitespace).
    fn value(&self, name: &HeaderName) -> Option<&[u8]>;

    /// The first value of the header named by `name` (any case), for names known only at run
    /// time (a policy's hash header).
    fn value_of(&self, name: &str) -> Option<&[u8]>;

    /// Whether the request carries the header `name` at all.
    fn has(&self, name: &HeaderName) -> bool {
        self.value(name).is_some()
    }
}

impl HeaderView for HeaderMap {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(http::HeaderValue::as_bytes)
    }

    fn value_of(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(http::HeaderValue::as_bytes)
    }
}

impl HeaderView for [httparse::Header<'_>] {
    fn value(&self, name: &HeaderName) -> Option<&[u8]> {
        self.value_of(name.as_str())
    }

    fn value_of(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|header| header.name.eq_ignore_ascii_case(name)).map(|header| header.value)
    }
}

/// A header value as text: only when every byte is visible ASCII, a space or a tab, exactly as
/// `http::HeaderValue::to_str` judges it (so both views accept the same values).
pub fn text(value: &[u8]) -> Option<&str> {
    value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)).then(|| std::str::from_utf8(value).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn both_views_find_the_first_value_whatever_the_case_of_the_name() {
        let raw = [
            httparse::Header { name: "Content-Type", value: b"text/xml" },
            httparse::Header { name: "SOAPAction", value: b"\"urn:a/C/Op\"" },
            httparse::Header { name: "soapaction", value: b"second" },
        ];
        let mut map = HeaderMap::new();
        for header in &raw {
            map.append(
                HeaderName::from_bytes(header.name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(header.value).unwrap(),
            );
        }
        let soap_action = HeaderName::from_static("soapaction");
        assert_eq!(raw[..].value(&soap_action), Some(&b"\"urn:a/C/Op\""[..]));
        assert_eq!(map.value(&soap_action), raw[..].value(&soap_action));
        assert_eq!(raw[..].value(&http::header::CONTENT_TYPE), Some(&b"text/xml"[..]));
        assert!(!raw[..].has(&http::header::HOST));
        assert!(!map.has(&http::header::HOST));
    }

    proptest! {
        #[test]
        fn text_accepts_exactly_what_header_value_to_str_accepts(value in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok(header) = HeaderValue::from_bytes(&value) {
                prop_assert_eq!(text(&value), header.to_str().ok());
            }
        }
    }
}
