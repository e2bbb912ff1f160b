//! Bodies: requests that survive a failed try, and responses streamed back.
//!
//! The data plane may have read the start of a body already (to find a SOAP action). The rest
//! streams from the client. A try gets a [`TryBody`]; if the try fails before the body was
//! polled (the endpoint could not be reached), the next try takes the same body back. A body
//! held entirely in memory can be replayed even after it was sent. A try may replace one range
//! of the bytes read already ([`Splice`]: the text of a WS-Addressing `To`), and only that.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::task::Context;
use std::task::Poll;

use bytes::Bytes;
use bytes::BytesMut;
use http::header;
use http_body::Body;
use http_body::Frame;
use http_body::SizeHint;
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper::body::Incoming;

use crate::proxy::REPLAY_BUFFER;
use crate::proxy::error::ProxyError;
use crate::proxy::outlier::InFlight;
use crate::proxy::upstream::Loan;

/// A request body: bytes already read, then whatever still streams from the client.
#[derive(Debug)]
pub struct RequestBody {
    pub prefix: Bytes,
    pub rest: Option<Incoming>,
}

impl RequestBody {
    /// True when the whole body is in memory.
    pub fn is_buffered(&self) -> bool {
        self.rest.is_none()
    }
}

/// One range of the bytes read already, replaced in one try's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    pub range: std::ops::Range<usize>,
    pub with: Bytes,
}

impl Splice {
    /// How many bytes longer (or shorter) the body becomes.
    pub(crate) fn growth(&self) -> i64 {
        self.with.len() as i64 - self.range.len() as i64
    }

    /// `prefix` with the range replaced; `prefix` itself when the range is not in it.
    pub fn apply(&self, prefix: &Bytes) -> Bytes {
        if self.range.end > prefix.len() || self.range.start > self.range.end {
            return prefix.clone();
        }
        let mut spliced = BytesMut::with_capacity((prefix.len() as i64 + self.growth()).max(0) as usize);
        spliced.extend_from_slice(&prefix[..self.range.start]);
        spliced.extend_from_slice(&self.with);
        spliced.extend_from_slice(&prefix[self.range.end..]);
        spliced.freeze()
    }
}

/// A body shared by the tries of one request, and whether the client broke it (a malformed
/// chunk, a connection closed early): then a failed try is the client's fault, not the
/// endpoint's.
#[derive(Debug, Clone)]
pub struct SharedBody(Arc<Mutex<Option<RequestBody>>>, Arc<AtomicBool>);

impl SharedBody {
    pub fn new(body: RequestBody) -> Self {
        Self(Arc::new(Mutex::new(Some(body))), Arc::default())
    }

    /// Whether the client's body broke while a try sent it.
    pub fn client_failed(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }

    /// A body for the next try, with `splice` applied to the bytes read already, or `None`
    /// when an earlier try consumed a streaming body.
    pub fn for_try(&self, splice: Option<Splice>) -> Option<TryBody> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let body = slot.as_ref()?;
        let splice = splice.filter(|splice| splice.range.end <= body.prefix.len());
        let growth = splice.as_ref().map_or(0, Splice::growth);
        let grown = |len: u64| (len as i64 + growth).max(0) as u64;
        let size = body.rest.as_ref().map_or_else(
            || SizeHint::with_exact(grown(body.prefix.len() as u64)),
            |rest| {
                let hint = rest.size_hint();
                let mut size = SizeHint::new();
                size.set_lower(grown(hint.lower() + body.prefix.len() as u64));
                if let Some(upper) = hint.upper() {
                    size.set_upper(grown(upper + body.prefix.len() as u64));
                }
                size
            },
        );
        Some(TryBody { shared: self.clone(), state: State::NotStarted, size, splice })
    }

    /// Takes the whole body out, for reading it completely.
    pub fn take(&self) -> Option<RequestBody> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

#[derive(Debug)]
enum State {
    NotStarted,
    Prefix(Bytes, Option<Incoming>),
    Streaming(Incoming),
    Done,
}

/// The body of one try.
#[derive(Debug)]
pub struct TryBody {
    shared: SharedBody,
    state: State,
    size: SizeHint,
    splice: Option<Splice>,
}

impl Body for TryBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::NotStarted => {
                    let shared = self.shared.clone();
                    let mut slot = shared.0.lock().unwrap_or_else(|p| p.into_inner());
                    let state = match slot.as_mut() {
                        // Buffered bodies stay in place, so a later try can send them again.
                        Some(body) if body.is_buffered() => State::Prefix(body.prefix.clone(), None),
                        Some(_) => match slot.take() {
                            Some(RequestBody { prefix, rest }) => State::Prefix(prefix, rest),
                            None => State::Done,
                        },
                        None => State::Done,
                    };
                    drop(slot);
                    self.state = match (state, self.splice.take()) {
                        (State::Prefix(prefix, rest), Some(splice)) => State::Prefix(splice.apply(&prefix), rest),
                        (state, _) => state,
                    };
                }
                State::Prefix(prefix, rest) => {
                    let next = rest.map_or(State::Done, State::Streaming);
                    if prefix.is_empty() {
                        self.state = next;
                        continue;
                    }
                    self.state = next;
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                State::Streaming(mut rest) => {
                    let polled = Pin::new(&mut rest).poll_frame(cx);
                    if matches!(polled, Poll::Ready(Some(Err(_)))) {
                        self.shared.1.store(true, Ordering::Relaxed);
                    }
                    if !matches!(polled, Poll::Ready(None)) {
                        self.state = State::Streaming(rest);
                    }
                    return polled;
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::NotStarted => self.size.exact() == Some(0),
            State::Prefix(prefix, rest) => prefix.is_empty() && rest.as_ref().is_none_or(Body::is_end_stream),
            State::Streaming(rest) => rest.is_end_stream(),
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

/// Response bodies: an endpoint's, streamed through (counting the request as in flight until it
/// ends), or one the data plane wrote itself.
#[derive(Debug)]
pub enum ProxyBody {
    /// The endpoint's body; at its end the connection goes back to the pool.
    Upstream {
        body: Incoming,
        _in_flight: Option<InFlight>,
        loan: Loan,
    },
    Local(Full<Bytes>),
}

impl ProxyBody {
    pub fn local(bytes: impl Into<Bytes>) -> Self {
        Self::Local(Full::new(bytes.into()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Upstream { body, loan, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // The server stops polling once the body says it ended, so check after each frame.
                if matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
                    loan.finish();
                }
                polled
            }
            Self::Local(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body, .. } => body.is_end_stream(),
            Self::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body, .. } => body.size_hint(),
            Self::Local(full) => full.size_hint(),
        }
    }
}

/// Reads a body into memory when it is known to be small, so it can be sent more than once.
pub async fn buffer_small(body: RequestBody, headers: &http::HeaderMap) -> Result<RequestBody, ProxyError> {
    let Some(rest) = body.rest else { return Ok(body) };
    let small = rest.size_hint().upper().is_some_and(|upper| upper as usize + body.prefix.len() <= REPLAY_BUFFER)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|length| length <= REPLAY_BUFFER);
    if !small {
        return Ok(RequestBody { prefix: body.prefix, rest: Some(rest) });
    }
    let collected = rest.collect().await.map_err(|err| ProxyError::RequestBody(err.to_string()))?.to_bytes();
    let mut all = BytesMut::from(&body.prefix[..]);
    all.extend_from_slice(&collected);
    Ok(RequestBody { prefix: all.freeze(), rest: None })
}
