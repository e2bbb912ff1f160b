//! Which contract a request is for. Pure functions over headers, a bounded body prefix and the
//! applied registry.
//!
//! Resolution order (the first that names a registered contract decides):
//! 1. the action of the `SOAPAction` header (quoted or not) or of the `action` parameter of a
//!    SOAP 1.2 `application/soap+xml` content type, minus its last `/`-segment (WCF style);
//! 2. for a SOAP request, the WS-Addressing `Action` of the envelope header (2004/08 and 2005/08);
//! 3. the `X-Switchboard-Contract` header;
//! 4. the longest path prefix a registration binds (its [`crate::registry::PATH_KEY`] metadata), so that a client
//!    that cannot add a header, or a WSDL's `soap:address`, routes by URL;
//! 5. for a SOAP request, the first element of the envelope's `Body`: its namespace is the
//!    contract namespace. The one contract registered in that namespace decides; among several,
//!    the one whose registrations list the element's local name (or the request's action) in
//!    their [`OPERATIONS_KEY`] metadata. A contract whose registrations list operations serves
//!    only those through this rule.
//!
//! A request that names no registered contract either way is refused with the most specific
//! reason (the action it named, the namespace of its body, or candidates it could mean).
//!
//! The envelope is read only up to the first element of its `Body`, never past
//! [`ENVELOPE_SCAN_CAP`] bytes, and DTDs are refused, so entities are never expanded. The body is
//! forwarded unchanged.

use http::HeaderMap;
use http::HeaderName;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::metrics::RouteRule;
use crate::registry::ContractKey;
use crate::registry::RegistryState;
use crate::registry::trim_namespace;
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

/// Metadata key in which a registration lists the operations (local names of the `Body`'s first
/// element) or the actions it serves, separated by commas or spaces.
pub const OPERATIONS_KEY: &str = "soap.operations";

/// Which rule decided the contract (shown by `X-Switchboard-Explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    SoapAction,
    ContentTypeAction,
    WsAddressing,
    Header,
    /// The namespace of the `Body`'s first element, which one contract is registered in.
    BodyNamespace,
    /// The `Body`'s first element, which one contract of its namespace lists as an operation.
    BodyOperation,
    /// A path prefix that a contract's registrations bind.
    Path,
}

impl Source {
    /// The rule's name, as `X-Switchboard-Contract-Source` and the metrics show it.
    pub fn as_str(self) -> &'static str {
        self.rule().label()
    }

    pub fn rule(self) -> RouteRule {
        match self {
            Self::SoapAction => RouteRule::SoapAction,
            Self::ContentTypeAction => RouteRule::ContentTypeAction,
            Self::WsAddressing => RouteRule::WsAddressing,
            Self::Header => RouteRule::Header,
            Self::BodyNamespace => RouteRule::BodyNamespace,
            Self::BodyOperation => RouteRule::BodyOperation,
            Self::Path => RouteRule::Path,
        }
    }
}

/// Why no contract could be read from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("no contract: send a SOAP action or an X-Switchboard-Contract header")]
    Missing,
    #[error("the action {0:?} has no operation segment to drop, and the body names no registered contract")]
    ActionWithoutOperation(String),
    #[error("no endpoint is registered for contract {0}")]
    NotRegistered(ContractKey),
    #[error("no contract is registered in namespace {0:?} (the namespace of the body's first element)")]
    NoContractInNamespace(String),
    #[error("operation {operation:?} of namespace {namespace:?} could be any of {}: list it in one contract's {OPERATIONS_KEY:?} metadata, or send an action naming the contract", candidates.join(", "))]
    Ambiguous { namespace: String, operation: String, candidates: Vec<String> },
    #[error("path {path} is bound by more than one contract ({}): unregister one binding", candidates.join(", "))]
    PathBoundTwice { path: String, candidates: Vec<String> },
    #[error("the SOAP envelope cannot be read: {0}")]
    InvalidEnvelope(String),
    #[error("the SOAP envelope does not reach the first element of its Body within {ENVELOPE_SCAN_CAP} bytes")]
    EnvelopeTooLarge,
    #[error("the start of the SOAP envelope did not arrive within {0} s")]
    EnvelopeTimeout(u64),
    #[error("the {0} header is not valid text")]
    InvalidHeader(&'static str),
}

/// What a request's headers say about its contract.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    /// The action `SOAPAction` or the SOAP 1.2 `action` parameter names, and which of them.
    pub action: Option<(String, Source)>,
    /// The contract `X-Switchboard-Contract` names.
    pub explicit: Option<ContractKey>,
    /// The request is a SOAP message: its envelope may be read.
    pub soap: bool,
    /// An MTOM/XOP request: the envelope is its root part.
    pub multipart: Option<soap::Multipart>,
}

/// Reads the headers once.
pub fn hints(headers: &HeaderMap) -> Result<Hints, ContractError> {
    let action = soap::header_action(headers).map_err(|_| ContractError::InvalidHeader("SOAPAction"))?;
    let action = action.map(|(action, header)| {
        let source = match header {
            ActionHeader::SoapAction => Source::SoapAction,
            ActionHeader::ContentType => Source::ContentTypeAction,
        };
        (action, source)
    });
    let explicit = match headers.get(CONTRACT_HEADER) {
        Some(value) => {
            let key = value.to_str().map_err(|_| ContractError::InvalidHeader("X-Switchboard-Contract"))?.trim();
            (!key.is_empty()).then(|| ContractKey::from_text(key))
        }
        None => None,
    };
    // The multipart framing is only read for a SOAP request (most requests are not).
    let soap = soap_version(headers).is_some();
    let multipart = if soap { soap::xop_multipart(headers) } else { None };
    Ok(Hints { action, explicit, soap, multipart })
}

/// The first element of an envelope's `Body`: the operation a document/literal or rpc message
/// invokes, in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The element's namespace URI (empty when it has none).
    pub namespace: String,
    pub name: String,
}

/// What the start of a SOAP envelope says: its WS-Addressing action and its operation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    pub action: Option<String>,
    pub operation: Option<Operation>,
}

/// What to do next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Route(ContractKey, Source),
    /// Only the envelope can tell: read its start, then decide again with it.
    ReadEnvelope,
}

/// Decides the contract of a request from its headers, its envelope once read, and the applied
/// registry (see the module documentation for the order).
pub fn decide(
    hints: &Hints,
    path: &str,
    envelope: Option<&Envelope>,
    state: &RegistryState,
) -> Result<Decision, ContractError> {
    let registered = |action: &str| action_key(action).ok().filter(|key| state.endpoints(key).is_some());
    if let Some((action, source)) = &hints.action
        && let Some(key) = registered(action)
    {
        return Ok(Decision::Route(key, *source));
    }
    let Some(envelope) = envelope else {
        if hints.soap {
            return Ok(Decision::ReadEnvelope);
        }
        if let Some(key) = &hints.explicit {
            return Ok(Decision::Route(key.clone(), Source::Header));
        }
        if let Some(decided) = by_path(path, state) {
            return decided;
        }
        return Err(hints.action.as_ref().map_or(ContractError::Missing, |(action, _)| unregistered(action)));
    };
    if let Some(key) = envelope.action.as_deref().and_then(registered) {
        return Ok(Decision::Route(key, Source::WsAddressing));
    }
    if let Some(key) = &hints.explicit {
        return Ok(Decision::Route(key.clone(), Source::Header));
    }
    if let Some(decided) = by_path(path, state) {
        return decided;
    }
    let actions: Vec<&str> =
        hints.action.iter().map(|(action, _)| action.as_str()).chain(envelope.action.as_deref()).collect();
    if let Some(operation) = &envelope.operation {
        match by_operation(operation, &actions, state) {
            Err(ContractError::NoContractInNamespace(_)) if !actions.is_empty() => {}
            decided => return decided,
        }
    }
    Err(actions.first().map_or(ContractError::Missing, |action| unregistered(action)))
}

/// The contract whose registrations bind the longest prefix of `path`, if any binds one.
fn by_path(path: &str, state: &RegistryState) -> Option<Result<Decision, ContractError>> {
    let (bound, keys) = state.binding(path)?;
    let mut keys = keys.into_iter();
    Some(match (keys.next(), keys.len()) {
        (Some(key), 0) => Ok(Decision::Route(key, Source::Path)),
        (first, _) => Err(ContractError::PathBoundTwice {
            path: bound.to_owned(),
            candidates: first.into_iter().chain(keys).map(|key| key.to_string()).collect(),
        }),
    })
}

/// The refusal for an action that names no registered contract.
fn unregistered(action: &str) -> ContractError {
    match action_key(action) {
        Ok(key) => ContractError::NotRegistered(key),
        Err(err) => err,
    }
}

/// The contract of the body's first element: the one registered in its namespace that serves it.
fn by_operation(operation: &Operation, actions: &[&str], state: &RegistryState) -> Result<Decision, ContractError> {
    let namespace = trim_namespace(&operation.namespace);
    let lists = |key: &ContractKey| -> Option<bool> {
        let endpoints = state.endpoints(key)?;
        let mut listed = endpoints.iter().filter_map(|r| r.metadata.get(OPERATIONS_KEY)).peekable();
        if listed.peek().is_none() {
            return Some(false);
        }
        let serves = listed.flat_map(|list| list.split([',', ' '])).any(|item| {
            let item = item.trim();
            !item.is_empty() && (item == operation.name || actions.contains(&item))
        });
        serves.then_some(true)
    };
    // Each contract of the namespace that serves the operation, and whether it lists it.
    let serving: Vec<(&ContractKey, bool)> =
        state.contracts_in(namespace).filter_map(|key| lists(key).map(|listed| (key, listed))).collect();
    let listing: Vec<&ContractKey> = serving.iter().filter(|(_, listed)| *listed).map(|(key, _)| *key).collect();
    match (serving.as_slice(), listing.as_slice()) {
        ([], _) => Err(ContractError::NoContractInNamespace(namespace.to_owned())),
        (_, [key]) => Ok(Decision::Route((*key).clone(), Source::BodyOperation)),
        ([(key, _)], []) => Ok(Decision::Route((*key).clone(), Source::BodyNamespace)),
        (all, _) => Err(ContractError::Ambiguous {
            namespace: namespace.to_owned(),
            operation: operation.name.clone(),
            candidates: all.iter().map(|(key, _)| key.to_string()).collect(),
        }),
    }
}

/// `{namespace}/{contract}/{operation}` → `{namespace}/{contract}`.
pub fn action_key(action: &str) -> Result<ContractKey, ContractError> {
    match action.rsplit_once('/') {
        Some((key, operation)) if !key.is_empty() && !operation.is_empty() => Ok(ContractKey::from_text(key)),
        _ => Err(ContractError::ActionWithoutOperation(action.to_owned())),
    }
}

/// The action of a SOAP request answered by the endpoint that receives it (the SOAP
/// registration endpoint, the sample service): the action its headers name, else the
/// WS-Addressing action of its whole envelope.
pub fn request_action(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let header = soap::header_action(headers).ok().flatten().map(|(action, _)| action);
    if let Some(action) = header.as_ref().filter(|action| action_key(action).is_ok()) {
        return Some(action.clone());
    }
    match scan_envelope(body, true) {
        EnvelopeScan::Envelope(Envelope { action: Some(action), .. }) => Some(action),
        _ => header,
    }
}

/// Result of scanning the start of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeScan {
    /// A SOAP envelope, read up to the first element of its `Body` (or the `Body`'s end).
    Envelope(Envelope),
    /// The body is not a SOAP envelope.
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
    /// For an MTOM/XOP body, where its root part is.
    multipart: Option<soap::Multipart>,
}

impl EnvelopeReader {
    /// A reader of a body framed as the request's headers say.
    pub fn for_request(hints: &Hints) -> Self {
        Self { multipart: hints.multipart.clone(), ..Self::default() }
    }

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
        let Some(multipart) = &self.multipart else { return Some(scan_envelope(&self.buffer, complete)) };
        Some(match root_part(&self.buffer, multipart) {
            Ok(Some((envelope, part_complete))) => scan_envelope(envelope, complete || part_complete),
            Ok(None) if complete => EnvelopeScan::Invalid("the multipart body ends before its root part".into()),
            Ok(None) => EnvelopeScan::Incomplete,
            Err(reason) => EnvelopeScan::Invalid(reason),
        })
    }

    pub fn into_bytes(self) -> bytes::Bytes {
        self.buffer.freeze()
    }
}

/// Scans `prefix`, the first bytes of a body (`complete` when it is the whole body), up to the
/// first element of the envelope's `Body`.
pub fn scan_envelope(prefix: &[u8], complete: bool) -> EnvelopeScan {
    let truncated = |reason: String| if complete { EnvelopeScan::Invalid(reason) } else { EnvelopeScan::Incomplete };
    let prefix = match prefix {
        [0xEF, 0xBB, 0xBF, rest @ ..] => rest,
        [0xFE, 0xFF, ..] | [0xFF, 0xFE, ..] => {
            return EnvelopeScan::Invalid("UTF-16 envelopes are not supported: send UTF-8".into());
        }
        _ => prefix,
    };
    let mut reader = NsReader::from_reader(prefix);
    let mut depth = 0usize;
    let mut envelope_ns: Option<&'static str> = None;
    let mut in_header = false;
    let mut in_body = false;
    let mut found = Envelope::default();
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
                    2 if is_ns(&ns, envelope_ns) && local.as_ref() == "Body" => in_body = true,
                    2 => return EnvelopeScan::Envelope(found),
                    3 if in_body => return operation(&ns, local.as_ref(), found),
                    3 if in_header && local.as_ref() == "Action" && is_addressing(&ns) => {
                        if found.action.is_some() {
                            return EnvelopeScan::Invalid("more than one WS-Addressing Action".into());
                        }
                        reading_action = Some(String::new());
                    }
                    _ => {}
                }
            }
            Event::Empty(empty) => match depth {
                0 => return EnvelopeScan::Absent,
                1 if is_ns(&ns, envelope_ns) && empty.local_name().as_ref() == "Body" => {
                    return EnvelopeScan::Envelope(found);
                }
                2 if in_body => return operation(&ns, empty.local_name().as_ref(), found),
                _ => {}
            },
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
                    found.action = Some(done.trim().to_owned());
                }
                if depth == 2 && in_body {
                    return EnvelopeScan::Envelope(found);
                }
                if depth == 2 {
                    in_header = false;
                }
                if depth == 1 {
                    return EnvelopeScan::Envelope(found);
                }
                depth = depth.saturating_sub(1);
            }
            Event::Eof if depth == 0 && complete => return EnvelopeScan::Absent,
            Event::Eof => return truncated("the envelope ends early".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

/// The envelope, with the `Body`'s first element as its operation.
fn operation(ns: &ResolveResult<'_>, local: &str, mut envelope: Envelope) -> EnvelopeScan {
    let namespace = match ns {
        ResolveResult::Bound(bound) => {
            // The namespace is the attribute's value, references resolved.
            let uri: &str = bound.as_ref();
            match quick_xml::escape::unescape(uri) {
                Ok(uri) => uri.into_owned(),
                Err(err) => return EnvelopeScan::Invalid(format!("the body's namespace cannot be read: {err}")),
            }
        }
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(prefix) => {
            return EnvelopeScan::Invalid(format!("the body's first element uses the undeclared prefix {prefix:?}"));
        }
    };
    envelope.operation = Some(Operation { namespace, name: local.to_owned() });
    EnvelopeScan::Envelope(envelope)
}

/// The content of an MTOM/XOP body's root part (the part whose `Content-ID` is the `start`
/// parameter, else the first), as far as `body` holds it, and whether it is all there. `None`
/// while the root part has not begun.
pub fn root_part<'a>(body: &'a [u8], multipart: &soap::Multipart) -> Result<Option<(&'a [u8], bool)>, String> {
    let delimiter = format!("--{}", multipart.boundary);
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let next_part = memchr::memmem::Finder::new(b"\r\n").into_owned();
    let wanted = multipart.start.as_deref().map(|start| start.trim().trim_start_matches('<').trim_end_matches('>'));
    // The first delimiter: at the start, or after a preamble line.
    let mut at = match finder.find(body) {
        Some(at) if at == 0 || body[..at].ends_with(b"\r\n") || body[..at].ends_with(b"\n") => at,
        Some(_) => return Err("the multipart body does not start with its boundary".into()),
        None if body.len() > delimiter.len() + 1024 => return Err("no multipart boundary where the body starts".into()),
        None => return Ok(None),
    };
    loop {
        let after = &body[at + delimiter.len()..];
        if after.starts_with(b"--") {
            return Err("the multipart body has no root part".into());
        }
        // The part's headers end with an empty line.
        let Some(line_end) = next_part.find(after) else { return Ok(None) };
        let headers_and_rest = &after[line_end + 2..];
        let Some(headers_end) = memchr::memmem::find(headers_and_rest, b"\r\n\r\n")
            .map(|i| i + 4)
            .or_else(|| headers_and_rest.starts_with(b"\r\n").then_some(2))
        else {
            return Ok(None);
        };
        let headers = std::str::from_utf8(&headers_and_rest[..headers_end]).map_err(|_| "part headers are not text")?;
        let content_id = headers.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-id")
                .then(|| value.trim().trim_start_matches('<').trim_end_matches('>'))
        });
        let content = &headers_and_rest[headers_end..];
        let end = finder.find(content).filter(|&i| content[..i].ends_with(b"\r\n"));
        let is_root = wanted.is_none_or(|wanted| content_id == Some(wanted));
        match (is_root, end) {
            (true, Some(end)) => return Ok(Some((&content[..end - 2], true))),
            (true, None) => return Ok(Some((content, false))),
            (false, Some(end)) => at = body.len() - content.len() + end,
            (false, None) => return Ok(None),
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
