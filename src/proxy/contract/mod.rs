//! Which contract a request is for. Pure functions over headers and a bounded body prefix.
//!
//! Sources, in order: the SOAP 1.1 `SOAPAction` header (quoted or not); the `action` parameter
//! of a SOAP 1.2 `application/soap+xml` content type; the WS-Addressing `Action` header block of
//! the SOAP envelope (SOAP 1.1 and 1.2 envelopes, 2004/08 and 2005/08 addressing); the
//! `X-Switchboard-Contract` header. An action minus its last `/`-segment is the contract key.
//!
//! The envelope is read only up to the end of its `Header` (or the start of its `Body`), never
//! past [`ENVELOPE_SCAN_CAP`] bytes, and DTDs are refused, so entities are never expanded.

use http::HeaderMap;
use http::HeaderName;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::registry::ContractKey;
use crate::soap;
use crate::soap::ActionHeader;
use crate::soap::soap_version;

/// Most bytes of a body read to find a WS-Addressing action.
pub const ENVELOPE_SCAN_CAP: usize = 64 * 1024;
/// Deepest element nesting accepted inside the envelope header.
pub const MAX_DEPTH: usize = 32;

pub const CONTRACT_HEADER: HeaderName = HeaderName::from_static("x-switchboard-contract");

const WSA_2005: &str = "http://www.w3.org/2005/08/addressing";
const WSA_2004: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";

/// Where the contract key came from (shown by `X-Switchboard-Explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SoapAction,
    ContentTypeAction,
    WsAddressing,
    Header,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoapAction => "soapaction",
            Self::ContentTypeAction => "content-type-action",
            Self::WsAddressing => "ws-addressing",
            Self::Header => "x-switchboard-contract",
        }
    }
}

/// Why no contract could be read from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("no contract: send a SOAP action or an X-Switchboard-Contract header")]
    Missing,
    #[error("the action {0:?} has no operation segment to drop")]
    ActionWithoutOperation(String),
    #[error("the SOAP envelope cannot be read: {0}")]
    InvalidEnvelope(String),
    #[error("the SOAP envelope header is longer than {ENVELOPE_SCAN_CAP} bytes")]
    EnvelopeTooLarge,
    #[error("the SOAP envelope header did not arrive within {0} s")]
    EnvelopeTimeout(u64),
    #[error("the {0} header is not valid text")]
    InvalidHeader(&'static str),
}

/// What the headers alone say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromHeaders {
    Found(ContractKey, Source),
    /// The body is a SOAP envelope that may carry a WS-Addressing action; read its start, then
    /// fall back to `fallback` (the explicit header) if it has none.
    ReadEnvelope {
        fallback: Option<ContractKey>,
    },
}

/// Resolves the contract from the headers, or says the envelope must be read.
pub fn from_headers(headers: &HeaderMap) -> Result<FromHeaders, ContractError> {
    let action = soap::header_action(headers).map_err(|_| ContractError::InvalidHeader("SOAPAction"))?;
    if let Some((action, header)) = action {
        let source = match header {
            ActionHeader::SoapAction => Source::SoapAction,
            ActionHeader::ContentType => Source::ContentTypeAction,
        };
        return action_key(action).map(|key| FromHeaders::Found(key, source));
    }
    let explicit = match headers.get(CONTRACT_HEADER) {
        Some(value) => {
            let key = value.to_str().map_err(|_| ContractError::InvalidHeader("X-Switchboard-Contract"))?.trim();
            (!key.is_empty()).then(|| ContractKey::from_text(key))
        }
        None => None,
    };
    if soap_version(headers).is_some() {
        return Ok(FromHeaders::ReadEnvelope { fallback: explicit });
    }
    explicit.map(|key| FromHeaders::Found(key, Source::Header)).ok_or(ContractError::Missing)
}

/// `{namespace}/{contract}/{operation}` → `{namespace}/{contract}`.
pub fn action_key(action: &str) -> Result<ContractKey, ContractError> {
    match action.rsplit_once('/') {
        Some((key, operation)) if !key.is_empty() && !operation.is_empty() => Ok(ContractKey::from_text(key)),
        _ => Err(ContractError::ActionWithoutOperation(action.to_owned())),
    }
}

/// The action of a SOAP request answered by the endpoint that receives it (the SOAP
/// registration endpoint, the sample service): the action its headers name when they decide the
/// contract, else the WS-Addressing action of its whole envelope.
pub fn request_action(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if let Ok(FromHeaders::Found(..)) = from_headers(headers) {
        return soap::header_action(headers).ok().flatten().map(|(action, _)| action.to_owned());
    }
    match scan_envelope(body, true) {
        EnvelopeScan::Action(action) => Some(action),
        _ => None,
    }
}

/// Result of scanning the start of a body for a WS-Addressing action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeScan {
    /// The envelope header names this action.
    Action(String),
    /// The body is not a SOAP envelope, or its header carries no action.
    Absent,
    /// More bytes are needed to decide.
    Incomplete,
    Invalid(String),
}

/// Collects the start of a body and scans it for the envelope's action. It scans again only
/// once the bytes collected have doubled since the last scan (or the body ended), so the work
/// stays linear in the bytes received, however finely the client splits them: at most about
/// twice the bytes received, and never past [`ENVELOPE_SCAN_CAP`].
#[derive(Debug, Default)]
pub struct EnvelopeReader {
    buffer: bytes::BytesMut,
    next_scan_at: usize,
    scanned: usize,
}

impl EnvelopeReader {
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// Bytes scanned so far, over every scan.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Scans if it is due: `None` means "collect more first". `complete` when the body ended.
    pub fn scan(&mut self, complete: bool) -> Option<EnvelopeScan> {
        let len = self.buffer.len();
        if !complete && len < self.next_scan_at && len < ENVELOPE_SCAN_CAP {
            return None;
        }
        self.scanned += len;
        self.next_scan_at = (2 * len).max(len + 512);
        Some(scan_envelope(&self.buffer, complete))
    }

    pub fn into_bytes(self) -> bytes::Bytes {
        self.buffer.freeze()
    }
}

/// Scans `prefix`, the first bytes of a body (`complete` when it is the whole body).
pub fn scan_envelope(prefix: &[u8], complete: bool) -> EnvelopeScan {
    let truncated = |reason: String| if complete { EnvelopeScan::Invalid(reason) } else { EnvelopeScan::Incomplete };
    let mut reader = NsReader::from_reader(prefix);
    let mut depth = 0usize;
    let mut envelope_ns: Option<&'static str> = None;
    let mut in_header = false;
    let mut action: Option<String> = None;
    let mut reading_action: Option<String> = None;
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok(resolved) => resolved,
            Err(err) => return truncated(err.to_string()),
        };
        match event {
            Event::DocType(_) => return EnvelopeScan::Invalid("DTDs are not accepted".into()),
            Event::Start(start) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return EnvelopeScan::Invalid(format!("elements nested deeper than {MAX_DEPTH}"));
                }
                let local = start.local_name();
                match depth {
                    1 => match soap::envelope_namespace(&ns) {
                        Some(found) if local.as_ref() == "Envelope" => envelope_ns = Some(found),
                        _ => return EnvelopeScan::Absent,
                    },
                    2 if is_ns(&ns, envelope_ns) && local.as_ref() == "Header" => in_header = true,
                    2 => return action.map_or(EnvelopeScan::Absent, EnvelopeScan::Action),
                    3 if in_header && local.as_ref() == "Action" && is_addressing(&ns) => {
                        if action.is_some() {
                            return EnvelopeScan::Invalid("more than one WS-Addressing Action".into());
                        }
                        reading_action = Some(String::new());
                    }
                    _ => {}
                }
            }
            Event::Empty(empty) => {
                if depth == 0 {
                    return EnvelopeScan::Absent;
                }
                if depth == 1 && is_ns(&ns, envelope_ns) && empty.local_name().as_ref() == "Body" {
                    return action.map_or(EnvelopeScan::Absent, EnvelopeScan::Action);
                }
            }
            Event::Text(text) => {
                if depth == 0 && !text.trim().is_empty() {
                    return EnvelopeScan::Absent;
                }
                if let Some(buffer) = reading_action.as_mut() {
                    buffer.push_str(&text.xml10_content());
                }
            }
            Event::CData(data) => {
                if let Some(buffer) = reading_action.as_mut() {
                    buffer.push_str(&data);
                }
            }
            Event::GeneralRef(reference) => {
                if let Some(buffer) = reading_action.as_mut() {
                    match soap::resolve_entity(&reference) {
                        Ok(c) => buffer.push(c),
                        Err(reason) => return EnvelopeScan::Invalid(reason.into()),
                    }
                }
            }
            Event::End(_) => {
                if depth == 3
                    && let Some(done) = reading_action.take()
                {
                    action = Some(done.trim().to_owned());
                }
                if depth == 2 && in_header {
                    return action.map_or(EnvelopeScan::Absent, EnvelopeScan::Action);
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof if depth == 0 && complete => return EnvelopeScan::Absent,
            Event::Eof => return truncated("the envelope ends early".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

fn is_ns(ns: &ResolveResult<'_>, expected: Option<&str>) -> bool {
    expected.is_some_and(|uri| soap::in_namespace(ns, uri))
}

fn is_addressing(ns: &ResolveResult<'_>) -> bool {
    soap::in_namespace(ns, WSA_2005) || soap::in_namespace(ns, WSA_2004)
}

#[cfg(test)]
mod tests;
