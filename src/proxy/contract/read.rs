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

/// Finds the contract; reads the start of a SOAP body when only the envelope can tell.
pub async fn resolve(
    headers: &http::HeaderMap,
    path: &str,
    incoming: Incoming,
    view: &AppliedView,
) -> Result<(ContractKey, Source, RequestBody), ProxyError> {
    let hints = super::hints(headers)?;
    if let Decision::Route(key, source) = super::decide(&hints, path, None, &view.peek().state)? {
        return Ok((key, source, RequestBody { prefix: Bytes::new(), rest: Some(incoming) }));
    }
    let mut envelope = EnvelopeReader::new(hints.multipart.clone());
    let mut rest = Some(incoming);
    // However slowly the client sends it, the envelope's start must arrive within this time.
    let deadline = tokio::time::Instant::now() + ENVELOPE_DEADLINE;
    loop {
        let read = match envelope.scan(rest.is_none()) {
            Some(EnvelopeScan::Envelope(read)) => Some(read),
            Some(EnvelopeScan::Absent) => Some(Envelope::default()),
            Some(EnvelopeScan::Invalid(reason)) => {
                return Err(ContractError::InvalidEnvelope(reason).into());
            }
            Some(EnvelopeScan::Incomplete) if envelope.len() >= ENVELOPE_SCAN_CAP => {
                return Err(ContractError::EnvelopeTooLarge.into());
            }
            Some(EnvelopeScan::Incomplete) | None => None,
        };
        if let Some(read) = read {
            return match super::decide(&hints, path, Some(&read), &view.peek().state)? {
                Decision::Route(key, source) => Ok((key, source, RequestBody { prefix: envelope.into_bytes(), rest })),
                Decision::ReadEnvelope => Err(ContractError::Missing.into()),
            };
        }
        let Some(body) = rest.as_mut() else {
            return Err(ContractError::InvalidEnvelope("the body ended inside the envelope".into()).into());
        };
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    envelope.push(&data);
                }
            }
            Ok(Some(Err(err))) => return Err(ProxyError::RequestBody(err.to_string())),
            Ok(None) => rest = None,
            Err(_elapsed) => return Err(ContractError::EnvelopeTimeout(ENVELOPE_DEADLINE.as_secs()).into()),
        }
    }
}

/// How long a client may take to send the envelope header of a SOAP request.
const ENVELOPE_DEADLINE: Duration = Duration::from_secs(10);
