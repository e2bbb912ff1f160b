//! Request bodies that survive a failed try.
//!
//! The data plane may have read the start of a body already (to find a SOAP action). The rest
//! streams from the client. A try gets a [`TryBody`]; if the try fails before the body was
//! polled (the endpoint could not be reached), the next try takes the same body back. A body
//! held entirely in memory can be replayed even after it was sent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::Context;
use std::task::Poll;

use bytes::Bytes;
use http_body::Body;
use http_body::Frame;
use http_body::SizeHint;
use hyper::body::Incoming;

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

/// A body shared by the tries of one request.
#[derive(Debug, Clone)]
pub struct SharedBody(Arc<Mutex<Option<RequestBody>>>);

impl SharedBody {
    pub fn new(body: RequestBody) -> Self {
        Self(Arc::new(Mutex::new(Some(body))))
    }

    /// A body for the next try, or `None` when an earlier try consumed a streaming body.
    pub fn for_try(&self) -> Option<TryBody> {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let body = slot.as_ref()?;
        let size = body.rest.as_ref().map_or_else(
            || SizeHint::with_exact(body.prefix.len() as u64),
            |rest| {
                let hint = rest.size_hint();
                let mut size = SizeHint::new();
                size.set_lower(hint.lower() + body.prefix.len() as u64);
                if let Some(upper) = hint.upper() {
                    size.set_upper(upper + body.prefix.len() as u64);
                }
                size
            },
        );
        Some(TryBody { shared: self.clone(), state: State::NotStarted, size })
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
                    self.state = match slot.as_mut() {
                        // Buffered bodies stay in place, so a later try can send them again.
                        Some(body) if body.is_buffered() => State::Prefix(body.prefix.clone(), None),
                        Some(_) => match slot.take() {
                            Some(RequestBody { prefix, rest }) => State::Prefix(prefix, rest),
                            None => State::Done,
                        },
                        None => State::Done,
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
