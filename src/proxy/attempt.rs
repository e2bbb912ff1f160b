//! One try of one endpoint, the same for every way of sending (unicast with its failover,
//! broadcast): the endpoint's request limit on this node, its address checked against the
//! address policy as it is now, the request built for this endpoint (its URL by the request's
//! [`Addressing`], a WS-Addressing `To` set to its address) and counted in flight, sent within a
//! deadline, and the endpoint judged by one outlier rule: every transport failure, timeout and
//! gateway answer ([`is_endpoint_failure`]) counts against it, any other answer for it.

use std::time::Duration;

use http::Response;
use http::StatusCode;
use hyper::body::Incoming;

use super::DataPlane;
use super::Routed;
use super::body::SharedBody;
use super::forward;
use super::outlier::InFlight;
use super::upstream::Loan;
use crate::metrics::METRICS;
use crate::registry::Registration;

/// What one try came to.
#[derive(Debug)]
pub enum Attempt {
    /// The endpoint answered with response headers. The request stays counted in flight, and the
    /// connection lent by the pool, until the answer's body has been read.
    Answered { response: Response<Incoming>, in_flight: InFlight, loan: Loan },
    /// Not sent: the endpoint has as many requests in flight from this node as it may.
    Busy,
    /// Not sent: the address policy refuses the endpoint's address.
    Refused(String),
    /// Not sent: an earlier try consumed a body that streams from the client.
    BodyGone,
    /// Not sent: no connection could be made.
    Unreachable(String),
    /// Sent, at least in part, and the exchange broke: the endpoint may have acted on it.
    Failed(String),
    /// Sent in part: the client's body broke (a malformed chunk, the client gone), which says
    /// nothing about the endpoint.
    ClientBody(String),
    /// Sent, and no answer came within the deadline.
    TimedOut(Duration),
}

impl Attempt {
    /// Whether the endpoint was tried (a connection attempted), as opposed to skipped.
    pub fn was_tried(&self) -> bool {
        !matches!(self, Self::Busy | Self::Refused(_) | Self::BodyGone)
    }
}

/// An answer that counts as a failure of the endpoint: the gateway statuses (502, 503, 504),
/// which a service or the proxy in front of it answers when it cannot serve. Any other answer,
/// a 500 included, is the service's own answer to this request.
pub fn is_endpoint_failure(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

/// Why an endpoint is not tried at all.
#[derive(Debug)]
pub(crate) enum Skip {
    /// It has as many requests in flight from this node as it may.
    Busy,
    /// The address policy refuses its address.
    Refused(String),
}

impl DataPlane {
    /// The checks before any try of `endpoint`, on either path: its request limit on this node,
    /// and its address against the address policy as it is now. Its target, and the request
    /// counted in flight to it, when it may be tried.
    pub(crate) fn admit(&self, endpoint: &Registration) -> Result<(http::Uri, InFlight), Skip> {
        // Counted from here: two requests cannot both see the last free place.
        let (in_flight, others) = self.outliers.start_counted(&endpoint.id);
        if others >= self.config.max_endpoint_requests {
            tracing::warn!(endpoint = %endpoint.address, limit = self.config.max_endpoint_requests, "endpoint at its request limit; skipped");
            return Err(Skip::Busy);
        }
        let target = self.checked_target(endpoint).map_err(|refused| {
            tracing::warn!(endpoint = %endpoint.address, reason = %refused, "endpoint address refused");
            Skip::Refused(refused)
        })?;
        Ok((target, in_flight))
    }

    /// Tries `endpoint` once with the request and the body of the next try.
    pub(crate) async fn attempt(
        &self,
        routed: &Routed<'_>,
        endpoint: &Registration,
        body: &SharedBody,
        deadline: Duration,
    ) -> Attempt {
        let Routed { parts, remote, addressing, to, .. } = routed;
        let (target, in_flight) = match self.admit(endpoint) {
            Ok(admitted) => admitted,
            Err(Skip::Busy) => return Attempt::Busy,
            Err(Skip::Refused(refused)) => return Attempt::Refused(refused),
        };
        let splice = to.splice_for(endpoint).ok();
        let spliced = splice.is_some();
        let body_of_try = body;
        let Some(body) = body.for_try(splice) else { return Attempt::BodyGone };
        let mut request = forward::endpoint_request(parts, &target, *addressing, body, remote, &self.via);
        if spliced
            && let Some(length) = http_body::Body::size_hint(request.body()).exact()
            && request.headers().contains_key(http::header::CONTENT_LENGTH)
        {
            request.headers_mut().insert(http::header::CONTENT_LENGTH, length.into());
        }
        // One pool at a time per endpoint: an endpoint that serves one connection at a time
        // would wait on the own loop's idle one before it took this path's new one.
        if !self.upstreams.has_idle(&target)
            && let Some(authority) = target.authority()
        {
            self.raw.release(authority.as_str());
        }
        match tokio::time::timeout(deadline, self.upstreams.send(request)).await {
            Ok(Ok((response, loan))) => {
                if is_endpoint_failure(response.status()) {
                    self.note_failure(endpoint, "gateway error status");
                } else {
                    in_flight.success();
                }
                Attempt::Answered { response, in_flight, loan }
            }
            Ok(Err(err)) if err.not_sent() => {
                self.note_failure(endpoint, "unreachable");
                tracing::debug!(endpoint = %endpoint.address, error = %err, "endpoint unreachable");
                Attempt::Unreachable(err.to_string())
            }
            // Neither a failure nor a success of the endpoint: the outlier rule is not told.
            Ok(Err(err)) if body_of_try.client_failed() => Attempt::ClientBody(err.to_string()),
            Ok(Err(err)) => {
                self.note_failure(endpoint, "failed");
                Attempt::Failed(err.to_string())
            }
            Err(_elapsed) => {
                self.note_failure(endpoint, "timed out");
                Attempt::TimedOut(deadline)
            }
        }
    }

    pub(crate) fn note_failure(&self, endpoint: &Registration, what: &str) {
        if let Some(ejected_for) = self.outliers.failure(&endpoint.id) {
            METRICS.ejections.inc();
            tracing::warn!(endpoint = %endpoint.address, ejected_ms = ejected_for.as_millis() as u64, reason = what, "endpoint ejected");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gateway_answers_count_against_an_endpoint() {
        for status in [502, 503, 504] {
            assert!(is_endpoint_failure(StatusCode::from_u16(status).unwrap()), "{status}");
        }
        for status in [200, 204, 301, 400, 404, 429, 500, 501, 505] {
            assert!(!is_endpoint_failure(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
