//! The start of a SOAP envelope, read as it arrives: its WS-Addressing action and the first
//! element of its `Body` (the operation), from a bounded prefix of the body (an MTOM/XOP body's
//! root part). Pure functions over bytes; the data plane decides a contract with what they find.
//!
//! The envelope is read only up to the first element of its `Body`, never past
//! [`ENVELOPE_SCAN_CAP`] bytes, and DTDs are refused, so entities are never expanded.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use super::Multipart;

/// Most bytes of a body read to find a WS-Addressing action.
pub const ENVELOPE_SCAN_CAP: usize = 64 * 1024;
/// Deepest element nesting accepted inside the envelope header.
pub const MAX_DEPTH: usize = 32;

/// WS-Addressing 1.0.
pub const WSA_2005: &str = "http://www.w3.org/2005/08/addressing";
/// The WS-Addressing member submission of 2004/08.
pub const WSA_2004: &str = "http://schemas.xmlsoap.org/ws/2004/08/addressing";
/// XML Signature, whose `Signature` a WS-Security header carries.
pub const XML_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";

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
    /// The WS-Addressing `To` header block, if the envelope header has one.
    pub to: Option<To>,
    /// The WS-Addressing namespace the header's `Action` or `To` is in.
    pub addressing: Option<&'static str>,
    /// The envelope header holds an XML signature (a WS-Security header signing some of its
    /// blocks): no header block may change.
    pub signed: bool,
}

/// Where the text of a WS-Addressing `To` header block lies in the scanned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct To {
    /// The bytes between `<To …>` and `</To>`, as offsets into the scanned bytes (for an
    /// MTOM/XOP body, into the whole body).
    pub range: std::ops::Range<usize>,
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
    multipart: Option<Multipart>,
}

impl EnvelopeReader {
    /// A reader of a body framed as the request's headers say: an MTOM/XOP body's root part
    /// holds the envelope.
    pub fn new(multipart: Option<Multipart>) -> Self {
        Self { multipart, ..Self::default() }
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
            Ok(Some((root, part_complete))) => {
                // Offsets found in the root part are offsets into the whole body.
                let offset = root.as_ptr() as usize - self.buffer.as_ptr() as usize;
                match scan_envelope(root, complete || part_complete) {
                    EnvelopeScan::Envelope(mut envelope) => {
                        if let Some(to) = envelope.to.as_mut() {
                            to.range = to.range.start + offset..to.range.end + offset;
                        }
                        EnvelopeScan::Envelope(envelope)
                    }
                    other => other,
                }
            }
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
    // Where the text of the `To` block being read starts.
    let mut reading_to: Option<usize> = None;
    loop {
        let before = reader.buffer_position() as usize;
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
                    1 => match super::envelope_namespace(&ns) {
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
                        found.addressing = addressing(&ns);
                        reading_action = Some(String::new());
                    }
                    3 if in_header && local.as_ref() == "To" && is_addressing(&ns) => {
                        if found.to.is_some() {
                            return EnvelopeScan::Invalid("more than one WS-Addressing To".into());
                        }
                        found.addressing = addressing(&ns);
                        reading_to = Some(reader.buffer_position() as usize);
                    }
                    _ if in_header && local.as_ref() == "Signature" && super::in_namespace(&ns, XML_DSIG) => {
                        found.signed = true;
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
                _ if in_header && empty.local_name().as_ref() == "Signature" && super::in_namespace(&ns, XML_DSIG) => {
                    found.signed = true;
                }
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
                    match super::resolve_entity(&reference) {
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
                if depth == 3
                    && let Some(start) = reading_to.take()
                {
                    found.to = Some(To { range: start..before });
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
pub fn root_part<'a>(body: &'a [u8], multipart: &Multipart) -> Result<Option<(&'a [u8], bool)>, String> {
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
    expected.is_some_and(|uri| super::in_namespace(ns, uri))
}

fn is_addressing(ns: &ResolveResult<'_>) -> bool {
    addressing(ns).is_some()
}

/// The WS-Addressing namespace (1.0 or 2004/08) an element is in, if it is in one.
fn addressing(ns: &ResolveResult<'_>) -> Option<&'static str> {
    [WSA_2005, WSA_2004].into_iter().find(|uri| super::in_namespace(ns, uri))
}
