//! Reading the start of a request's body until its contract is decided: only for a SOAP request
//! whose headers do not decide it, only up to the envelope's `Body`, never past
//! [`ENVELOPE_SCAN_CAP`], and within [`ENVELOPE_DEADLINE`] however slowly the client sends it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ContractError;
use super::Decision;
use super::Source;
use crate::proxy::body::RequestBody;
use crate::proxy::error::ProxyError;
use crate::raft::AppliedView;
use crate::registry::ContractKey;
use crate::soap::envelope::ENVELOPE_SCAN_CAP;
use crate::soap::envelope::Envelope;
use crate::soap::envelope::EnvelopeReader;
use crate::soap::envelope::EnvelopeScan;

/// A request's contract, how it was found, its body, and the start of its envelope when it is a
/// SOAP message.
#[derive(Debug)]
pub struct Resolved {
    pub key: ContractKey,
    pub source: Source,
    pub body: RequestBody,
    /// What the envelope's start says (its `To` block included), read for every SOAP request.
    pub envelope: Option<Envelope>,
}

/// Finds the contract; reads the start of a SOAP body when only the envelope can tell, and
/// for every SOAP request, to find its WS-Addressing `To` (one scan serves both).
///
/// When the headers decided the contract, an envelope that cannot be read (not well-formed, too
/// large, slow, or not an envelope) is no reason to refuse: the request is forwarded as it
/// came, with nothing rewritten.
///
/// `wsa` is set to the WS-Addressing namespace the envelope uses as soon as it is read, so that
/// a refusal decided after it (no such contract) is a fault with that version's action.
pub async fn resolve(
    headers: &http::HeaderMap,
    path: &str,
    incoming: Incoming,
    view: &AppliedView,
    wsa: &mut Option<&'static str>,
) -> Result<Resolved, ProxyError> {
    let hints = super::hints(headers)?;
    let early = match super::decide(&hints, path, None, &view.peek().state)? {
        Decision::Route(key, source) if !hints.soap => {
            let body = RequestBody { prefix: Bytes::new(), rest: Some(incoming) };
            return Ok(Resolved { key, source, body, envelope: None });
        }
        Decision::Route(key, source) => Some((key, source)),
        Decision::ReadEnvelope => None,
    };
    let mut envelope = EnvelopeReader::new(hints.multipart.clone());
    let mut rest = Some(incoming);
    // However slowly the client sends it, the envelope's start must arrive within this time.
    let deadline = tokio::time::Instant::now() + ENVELOPE_DEADLINE;
    let outcome = loop {
        match envelope.scan(rest.is_none()) {
            Some(EnvelopeScan::Envelope(read)) => break Ok(read),
            Some(EnvelopeScan::Absent) => break Ok(Envelope::default()),
            Some(EnvelopeScan::Invalid(reason)) => break Err(ContractError::InvalidEnvelope(reason)),
            Some(EnvelopeScan::Incomplete) if envelope.len() >= ENVELOPE_SCAN_CAP => {
                break Err(ContractError::EnvelopeTooLarge);
            }
            Some(EnvelopeScan::Incomplete) | None => {}
        }
        let Some(body) = rest.as_mut() else {
            break Err(ContractError::InvalidEnvelope("the body ended inside the envelope".into()));
        };
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    envelope.push(&data);
                }
            }
            Ok(Some(Err(err))) => return Err(ProxyError::RequestBody(err.to_string())),
            Ok(None) => rest = None,
            Err(_elapsed) => break Err(ContractError::EnvelopeTimeout(ENVELOPE_DEADLINE.as_secs())),
        }
    };
    let body = RequestBody { prefix: envelope.into_bytes(), rest };
    *wsa = outcome.as_ref().ok().and_then(|read| read.addressing);
    let (key, source, envelope) = after_scan(&hints, path, outcome, early, &view.peek().state)?;
    Ok(Resolved { key, source, body, envelope })
}

/// The contract once the envelope's scan came to `outcome`, `early` being what the headers
/// decided before it: when they decided, an unreadable envelope is no reason to refuse.
pub fn after_scan(
    hints: &super::Hints,
    path: &str,
    outcome: Result<Envelope, ContractError>,
    early: Option<(ContractKey, Source)>,
    state: &crate::registry::RegistryState,
) -> Result<(ContractKey, Source, Option<Envelope>), ContractError> {
    match (outcome, early) {
        (Ok(read), Some((key, source))) => Ok((key, source, Some(read))),
        (Err(_unreadable), Some((key, source))) => Ok((key, source, None)),
        (Err(refused), None) => Err(refused),
        (Ok(read), None) => match super::decide(hints, path, Some(&read), state)? {
            Decision::Route(key, source) => Ok((key, source, Some(read))),
            Decision::ReadEnvelope => Err(ContractError::Missing),
        },
    }
}

/// The scan of an envelope whose body is all here (at most [`ENVELOPE_SCAN_CAP`] bytes), as
/// `resolve` comes to it from the same bytes in pieces.
pub fn scan_whole(multipart: Option<crate::soap::Multipart>, body: &[u8]) -> Result<Envelope, ContractError> {
    let mut envelope = EnvelopeReader::new(multipart);
    envelope.push(body);
    match envelope.scan(true) {
        Some(EnvelopeScan::Envelope(read)) => Ok(read),
        Some(EnvelopeScan::Absent) => Ok(Envelope::default()),
        Some(EnvelopeScan::Invalid(reason)) => Err(ContractError::InvalidEnvelope(reason)),
        Some(EnvelopeScan::Incomplete) if envelope.len() >= ENVELOPE_SCAN_CAP => Err(ContractError::EnvelopeTooLarge),
        Some(EnvelopeScan::Incomplete) | None => {
            Err(ContractError::InvalidEnvelope("the body ended inside the envelope".into()))
        }
    }
}

/// How long a client may take to send the envelope header of a SOAP request.
const ENVELOPE_DEADLINE: Duration = Duration::from_secs(10);
