//! The data plane's own HTTP/1.1 loop for plain client connections: one task per connection
//! reads each request head with `httparse` into one reused buffer, resolves its contract through
//! the same functions as the hyper path (they read the head through [`HeaderView`]), and
//! exchanges it with an endpoint over a pooled plain connection: the head forwarded as sent,
//! minus hop-by-hop and `X-Switchboard-*` fields, plus the forwarding fields, in one write with
//! the body; a body up to [`SMALL_BODY`] read whole first (a SOAP envelope is scanned in place and
//! its `To` replaced per endpoint; an idempotent request can be sent again), a larger one
//! streamed; the response relayed as it arrives, with `Via` added, re-chunked where its length
//! is not known.
//!
//! It takes only the common case and leaves everything else to the hyper path, with the bytes it
//! read, before it has consumed anything of the request: a head that `h1::framing` does not read
//! as hyper would, chunked request bodies, a SOAP message larger than the envelope scan bound,
//! broadcasts, `X-Switchboard-Explain` (its dry run included), loops, oversized heads, a WSDL
//! fetched through a bound path, a contract with an `https` endpoint, and any request the
//! resolution refuses (so every refusal is written once, by the hyper path). What it takes
//! follows the hyper path's rules exactly: the try order, the request limit per endpoint, the
//! failover rule (retry only if never sent, or idempotent with the body kept), the outlier rule,
//! the deadlines, the errors and the metrics. `tests/cluster/fastpath.rs` holds the two paths to each other.

use std::sync::Arc;
use std::time::Instant;

use bytes::Buf;
use bytes::BytesMut;
use http::HeaderValue;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::DELIVERY_HEADER;
use super::DataPlane;
use super::REPLAY_BUFFER;
use super::TOKEN_HEADER;
use super::ToHeader;
use super::VIA;
use super::attempt::Skip;
use super::attempt::is_endpoint_failure;
use super::body::Splice;
use super::contract;
use super::contract::Decision;
use super::contract::Source;
use super::error::ProxyError;
use super::explain::EXPLAIN_HEADER;
use super::forward;
use super::forward::Addressing;
use super::outlier::InFlight;
use super::select;
use super::wsdl;
use crate::h1::HeaderView;
use crate::h1::framing;
use crate::h1::framing::Body;
use crate::h1::framing::Chunked;
use crate::h1::framing::Framed;
use crate::h1::framing::ResponseBody;
use crate::h1::framing::ResponseFramed;
use crate::metrics::METRICS;
use crate::registry::Registration;
use crate::serve::HEADER_READ_TIMEOUT;
use crate::serve::MAX_HEADER_BYTES;
use crate::serve::OwnLoop;
use crate::serve::Peer;
use crate::soap::envelope::ENVELOPE_SCAN_CAP;

/// How much is read from a socket at a time.
const READ_SIZE: usize = 16 * 1024;

/// Bodies up to this size are read whole before the request is routed (as nginx buffers
/// request bodies): a SOAP envelope is scanned in place, and an idempotent request can be sent
/// again. Larger ones stream.
const SMALL_BODY: u64 = REPLAY_BUFFER as u64;

/// The own loop of a data plane, for `serve::serve_with`.
#[derive(Debug)]
pub struct FastPath {
    plane: Arc<DataPlane>,
}

impl FastPath {
    pub fn new(plane: Arc<DataPlane>) -> Arc<Self> {
        Arc::new(Self { plane })
    }
}

impl OwnLoop for FastPath {
    fn serve(self: Arc<Self>, stream: TcpStream, peer: Peer, stop: CancellationToken) -> crate::serve::Handoff {
        Box::pin(async move { self.plane.serve_connection(stream, peer, stop).await })
    }
}

/// What the loop does with a request whose head it read.
enum Next {
    /// Answered; the client connection stays open for the next request.
    KeepAlive,
    /// Answered, or broken: the client connection ends.
    Close,
    /// Not taken: the hyper path reads it, from the same bytes.
    Hyper,
    /// A small body is not all here: read until the buffer holds this many bytes, then again.
    NeedBody(usize),
}

/// Buffers reused across the requests of one connection.
struct Scratch {
    /// The head (and small body) sent to the endpoint, or back to the client.
    out: Vec<u8>,
    /// What the endpoint sent that is not relayed yet.
    response: BytesMut,
}

/// A deadline that moves without touching the timer wheel: its sleep stays registered across
/// requests and is re-armed only when it fires before the deadline moved on. Setting it costs
/// a clock read, where a new timer per request costs an insertion and a removal.
struct LazyDeadline {
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    at: tokio::time::Instant,
}

impl LazyDeadline {
    fn new() -> Self {
        let at = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
        Self { sleep: Box::pin(tokio::time::sleep_until(at)), at }
    }

    /// Moves the deadline `after` from now.
    fn set(&mut self, after: std::time::Duration) {
        self.at = tokio::time::Instant::now() + after;
        if self.at < self.sleep.deadline() {
            self.sleep.as_mut().reset(self.at);
        }
    }

    /// Completes when the deadline has passed.
    async fn passed(&mut self) {
        loop {
            self.sleep.as_mut().await;
            if tokio::time::Instant::now() >= self.at {
                return;
            }
            self.sleep.as_mut().reset(self.at);
        }
    }
}

/// A request as the loop forwards it.
struct Exchange<'a, 'b, 'h> {
    head: &'a framing::RequestHead<'b, 'h>,
    /// The body's bytes already read (all of a small body, at most its length).
    body_read: &'a [u8],
    /// Its length.
    length: u64,
    addressing: Addressing,
    /// The message's WS-Addressing `To` and what becomes of it.
    to: ToHeader,
    peer: &'a Peer,
    /// The whole body is held and the contract is idempotent: it can be sent again.
    replayable: bool,
    /// The body's unread part was streamed to an endpoint: no other may get the request.
    streamed: bool,
}

/// What one try came to (see `attempt::Attempt`, which this follows case by case).
enum RawAttempt {
    Answered {
        upstream: TcpStream,
        authority: http::uri::Authority,
        in_flight: InFlight,
        answer: Answer,
    },
    Busy,
    Refused(String),
    BodyGone,
    Unreachable(String),
    Failed(String),
    /// The client's body broke while it streamed (see `attempt::Attempt::ClientBody`).
    ClientBody(String),
    TimedOut,
}

impl DataPlane {
    async fn serve_connection(
        &self,
        mut client: TcpStream,
        peer: Peer,
        stop: CancellationToken,
    ) -> Option<(TcpStream, BytesMut)> {
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut scratch = Scratch { out: Vec::with_capacity(4096), response: BytesMut::with_capacity(READ_SIZE) };
        // One timer and one stop waiter per connection, not per request.
        let (mut head_deadline, mut try_deadline) = (LazyDeadline::new(), LazyDeadline::new());
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        loop {
            // A whole head: its end is the first empty line.
            head_deadline.set(HEADER_READ_TIMEOUT);
            while !head_complete(&buf) {
                if buf.len() >= MAX_HEADER_BYTES {
                    return Some((client, buf));
                }
                buf.reserve(READ_SIZE);
                let read = tokio::select! {
                    biased;
                    () = &mut stopped, if buf.is_empty() => return None,
                    read = client.read_buf(&mut buf) => read,
                    () = head_deadline.passed() => return None,
                };
                match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            let (next, consumed) = {
                let mut headers = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
                let head = match framing::request(&buf, &mut headers) {
                    Framed::Complete(head) => head,
                    Framed::Partial | Framed::Refused(_) | Framed::Unusual(_) => return Some((client, buf)),
                };
                match head.body {
                    Body::Length(length) if length <= SMALL_BODY && buf.len() < head.len + length as usize => {
                        (Next::NeedBody(head.len + length as usize), 0)
                    }
                    _ => self.exchange(&head, &buf, &mut client, &peer, &mut scratch, &mut try_deadline).await,
                }
            };
            match next {
                Next::Hyper => return Some((client, buf)),
                Next::Close => {
                    let _ = client.shutdown().await;
                    return None;
                }
                Next::KeepAlive => buf.advance(consumed),
                Next::NeedBody(want) => {
                    // A small body is read whole before the request is routed (so that it can
                    // be scanned and sent again); one that does not come in time goes to hyper.
                    while buf.len() < want {
                        buf.reserve(want - buf.len());
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, client.read_buf(&mut buf)).await {
                            Ok(Ok(0)) | Ok(Err(_)) => return None,
                            Ok(Ok(_)) => {}
                            Err(_) => return Some((client, buf)),
                        }
                    }
                    continue;
                }
            }
            if stop.is_cancelled() {
                return None;
            }
        }
    }

    /// Routes one request; the bytes of `buf` it consumed (head and body) when answered.
    async fn exchange(
        &self,
        head: &framing::RequestHead<'_, '_>,
        buf: &[u8],
        client: &mut TcpStream,
        peer: &Peer,
        scratch: &mut Scratch,
        try_deadline: &mut LazyDeadline,
    ) -> (Next, usize) {
        let Body::Length(length) = head.body else { return (Next::Hyper, 0) };
        let wire: usize = head.headers.iter().map(|h| h.name.len() + h.value.len() + 4).sum();
        if wire > MAX_HEADER_BYTES
            || head.has(&EXPLAIN_HEADER)
            || head.has(&DELIVERY_HEADER)
            || looped(head.headers)
            || length > i64::MAX as u64
        {
            return (Next::Hyper, 0);
        }
        let Ok(hints) = contract::hints(head) else { return (Next::Hyper, 0) };
        let (path, query) = match head.target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (head.target, None),
        };
        let Ok(method) = http::Method::from_bytes(head.method.as_bytes()) else { return (Next::Hyper, 0) };
        let in_buf = usize::try_from(length).unwrap_or(usize::MAX).min(buf.len() - head.len);
        let body_read = &buf[head.len..head.len + in_buf];
        let whole = in_buf as u64 == length;
        let applied = self.view.load();
        let early = match contract::decide(&hints, path, None, &applied.state) {
            Ok(Decision::Route(key, source)) => Some((key, source)),
            Ok(Decision::ReadEnvelope) => None,
            Err(_) => return (Next::Hyper, 0),
        };
        // A SOAP message is routed here only with its whole body, scanned as the hyper path
        // scans it; its refusals are left to the hyper path, which answers them once.
        let (key, source, envelope, wsa) = if hints.soap {
            if !whole || length > ENVELOPE_SCAN_CAP as u64 {
                return (Next::Hyper, 0);
            }
            let outcome = contract::read::scan_whole(hints.multipart.clone(), body_read);
            let wsa = outcome.as_ref().ok().and_then(|read| read.addressing);
            match contract::read::after_scan(&hints, path, outcome, early, &applied.state) {
                Ok((key, source, envelope)) => (key, source, envelope, wsa),
                Err(_) => return (Next::Hyper, 0),
            }
        } else {
            match early {
                Some((key, source)) => (key, source, None, None),
                None => return (Next::Hyper, 0),
            }
        };
        if source == Source::Path && wsdl::asks_wsdl(&method, query) {
            return (Next::Hyper, 0);
        }
        let Some(registered) = applied.state.endpoints(&key) else { return (Next::Hyper, 0) };
        let policy = applied.state.policy(&key).cloned().unwrap_or_default();
        let crate::registry::Routable { endpoints, panic, .. } = registered.routable(policy.panic_threshold_percent);
        drop(applied);
        if endpoints.is_empty() || endpoints.iter().any(|e| !e.address.as_str().starts_with("http://")) {
            return (Next::Hyper, 0);
        }

        // Taken: from here on the loop answers.
        METRICS.decided_by(source.rule());
        if panic {
            METRICS.health_panics.inc();
        }
        let consumed = head.len + in_buf;
        let mut exchange = Exchange {
            head,
            body_read,
            length,
            addressing: Addressing::of(hints.soap, source == Source::Path, &method, query),
            to: ToHeader::of(envelope.as_ref(), &policy),
            peer,
            replayable: policy.idempotent && whole,
            streamed: false,
        };
        let soap = hints.soap.then(|| crate::soap::soap_version(head)).flatten();

        let plan = select::plan(&policy, &key, &endpoints, head, &self.cursors, &self.outliers);
        let deadline = Instant::now() + self.config.total_timeout;
        let (mut tried, mut busy, mut last_error) = (0, 0, None);
        let mut order = plan.order(&endpoints, &self.outliers);
        let error = loop {
            let Some(index) = order.next() else { break None };
            if tried >= self.config.max_attempts {
                break None;
            }
            if order.all_ejected() && tried == 0 && busy == 0 {
                tracing::warn!(contract = %key, "every endpoint is ejected; trying all of them");
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break None;
            }
            let endpoint = &endpoints[index];
            let attempt = self
                .raw_attempt(
                    &mut exchange,
                    endpoint,
                    client,
                    scratch,
                    try_deadline,
                    self.config.try_timeout.min(remaining),
                )
                .await;
            if !matches!(attempt, RawAttempt::Busy | RawAttempt::Refused(_) | RawAttempt::BodyGone) {
                if tried > 0 {
                    METRICS.failovers.inc();
                }
                tried += 1;
            }
            match attempt {
                RawAttempt::Answered { upstream, authority, in_flight, answer } => {
                    METRICS.routed.inc();
                    let keep = self.relay_raw(answer, upstream, &authority, in_flight, client, scratch).await;
                    let next = if keep && head.keep_alive { Next::KeepAlive } else { Next::Close };
                    return (next, consumed);
                }
                RawAttempt::Busy => busy += 1,
                RawAttempt::Refused(refused) => last_error = Some(refused),
                RawAttempt::BodyGone => break None,
                RawAttempt::Unreachable(err) => last_error = Some(err),
                RawAttempt::ClientBody(reason) => break Some(ProxyError::RequestBody(reason)),
                RawAttempt::Failed(_) | RawAttempt::TimedOut if exchange.replayable => {}
                RawAttempt::Failed(reason) => {
                    break Some(ProxyError::EndpointFailed { address: endpoint.address.to_string(), reason });
                }
                RawAttempt::TimedOut => break Some(ProxyError::Timeout { address: endpoint.address.to_string() }),
            }
        };
        let error = error.unwrap_or_else(|| {
            if tried == 0 && busy > 0 && last_error.is_none() {
                ProxyError::Overloaded { key: key.clone() }
            } else {
                ProxyError::Unreachable {
                    key: key.clone(),
                    attempts: tried,
                    last_error: last_error.unwrap_or_default(),
                }
            }
        });
        // The body's unread part must leave the connection before the next request is read; a
        // streamed body cannot be skipped reliably: the connection closes after the answer.
        let skipped = exchange.streamed || self.skip_body(&exchange, client).await;
        let keep = self.refuse(error, head, soap, wsa, client, scratch).await && !exchange.streamed && skipped;
        (if keep && head.keep_alive { Next::KeepAlive } else { Next::Close }, consumed)
    }

    /// Tries `endpoint` once: the head and the body sent, the response head read into
    /// `scratch.response`.
    async fn raw_attempt(
        &self,
        exchange: &mut Exchange<'_, '_, '_>,
        endpoint: &Registration,
        client: &mut TcpStream,
        scratch: &mut Scratch,
        timer: &mut LazyDeadline,
        deadline: std::time::Duration,
    ) -> RawAttempt {
        let (target, in_flight) = match self.admit(endpoint) {
            Ok(admitted) => admitted,
            Err(Skip::Busy) => return RawAttempt::Busy,
            Err(Skip::Refused(refused)) => return RawAttempt::Refused(refused),
        };
        if exchange.streamed {
            return RawAttempt::BodyGone;
        }
        let Some(authority) = target.authority().cloned() else {
            return RawAttempt::Refused(format!("endpoint address {} has no host", endpoint.address));
        };
        let splice = exchange.to.splice_for(endpoint).ok();
        write_request(exchange, &target, splice.as_ref(), self.via_bytes(), &mut scratch.out);
        timer.set(deadline);
        let send = async {
            let mut upstream = match self.raw.checkout(authority.as_str()) {
                Some(stream) => stream,
                None => {
                    // One pool at a time per endpoint (see `RawPool::release`).
                    if let (Some(scheme), Some(authority)) = (target.scheme(), target.authority()) {
                        self.upstreams.release(scheme.clone(), authority.clone());
                    }
                    let stream = self.raw.connect(&target).await.map_err(Fault::Unreachable)?;
                    let _ = stream.set_nodelay(true);
                    stream
                }
            };
            scratch.response.clear();
            let answer = send_and_read_head(exchange, &mut upstream, client, scratch, self.via_bytes()).await?;
            Ok::<_, Fault>((upstream, answer))
        };
        let sent = tokio::select! {
            biased;
            sent = send => Ok(sent),
            () = timer.passed() => Err(()),
        };
        match sent {
            Ok(Ok((upstream, answer))) => {
                if http::StatusCode::from_u16(answer.status).is_ok_and(is_endpoint_failure) {
                    self.note_failure(endpoint, "gateway error status");
                } else {
                    in_flight.success();
                }
                RawAttempt::Answered { upstream, authority, in_flight, answer }
            }
            // The client's body broke: nothing to say about the endpoint.
            Ok(Err(Fault::Client(err))) => RawAttempt::ClientBody(err),
            Ok(Err(Fault::Unreachable(err))) => {
                self.note_failure(endpoint, "unreachable");
                tracing::debug!(endpoint = %endpoint.address, error = %err, "endpoint unreachable");
                RawAttempt::Unreachable(err)
            }
            Ok(Err(Fault::Endpoint(err))) => {
                self.note_failure(endpoint, "failed");
                RawAttempt::Failed(err)
            }
            Err(_elapsed) => {
                self.note_failure(endpoint, "timed out");
                RawAttempt::TimedOut
            }
        }
    }

    fn via_bytes(&self) -> &[u8] {
        self.via.as_bytes()
    }

    /// Relays the answer whose head is in `scratch.out` (as the client receives it) and whose
    /// body starts in `scratch.response`; whether both connections ended the exchange cleanly
    /// (the client's may serve another request).
    async fn relay_raw(
        &self,
        answer: Answer,
        mut upstream: TcpStream,
        authority: &http::uri::Authority,
        in_flight: InFlight,
        client: &mut TcpStream,
        scratch: &mut Scratch,
    ) -> bool {
        let Answer { body, keep_alive: keep_upstream, .. } = answer;
        // An answer that has all arrived (nothing more, nothing stray) frees the endpoint's
        // connection before the client has the answer: the client's next request, on this
        // connection or another, finds it idle instead of opening a second one.
        let arrived = match body {
            ResponseBody::Empty => scratch.response.is_empty(),
            ResponseBody::Length(length) => scratch.response.len() as u64 == length,
            ResponseBody::Chunked | ResponseBody::UntilClose => false,
        };
        if arrived {
            scratch.out.extend_from_slice(&scratch.response);
            scratch.response.clear();
            drop(in_flight);
            if keep_upstream {
                self.raw.checkin(authority.as_str(), upstream);
            }
            return client.write_all(&scratch.out).await.is_ok();
        }
        let relayed = match body {
            ResponseBody::Empty => client.write_all(&scratch.out).await.is_ok(),
            ResponseBody::Length(length) => relay_length(length, &mut upstream, client, scratch).await,
            ResponseBody::Chunked => relay_chunked(&mut upstream, client, scratch).await,
            ResponseBody::UntilClose => relay_until_close(&mut upstream, client, scratch).await,
        };
        drop(in_flight);
        if relayed && keep_upstream && scratch.response.is_empty() {
            self.raw.checkin(authority.as_str(), upstream);
        }
        relayed
    }

    /// Answers a request the loop took but could not route, as the hyper path answers it;
    /// whether the answer was written.
    async fn refuse(
        &self,
        error: ProxyError,
        head: &framing::RequestHead<'_, '_>,
        soap: Option<crate::soap::SoapVersion>,
        wsa: Option<&'static str>,
        client: &mut TcpStream,
        scratch: &mut Scratch,
    ) -> bool {
        tracing::debug!(error = %error, "request not routed");
        METRICS.route_error(error.status_and_error().1);
        if let Some(limit) = error.limit() {
            METRICS.limit_hit(limit);
        }
        let token = head.value(&TOKEN_HEADER).and_then(|t| HeaderValue::from_bytes(t).ok());
        let response = error.into_response(soap, wsa, self.discloses_internals(token.as_ref()));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let out = &mut scratch.out;
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            push_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        push_field(out, b"content-length", body.len().to_string().as_bytes());
        push_field(out, b"date", httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        if !head.keep_alive {
            push_field(out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        client.write_all(out).await.is_ok()
    }

    /// Reads and drops the unread part of a request's body (not streamed to any endpoint);
    /// whether it all arrived.
    async fn skip_body(&self, exchange: &Exchange<'_, '_, '_>, client: &mut TcpStream) -> bool {
        let mut left = exchange.length - exchange.body_read.len() as u64;
        let mut sink = [0u8; 4096];
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(sink.len());
            match tokio::time::timeout(HEADER_READ_TIMEOUT, client.read(&mut sink[..want])).await {
                Ok(Ok(n)) if n > 0 => left -= n as u64,
                _ => return false,
            }
        }
        true
    }
}

/// Whether `buf` holds a whole request head (its first empty line, after CRLF or bare LF).
fn head_complete(buf: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', buf).any(|at| match buf.get(at + 1) {
        Some(b'\n') => true,
        Some(b'\r') => buf.get(at + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Whether the request already went through this router (see `super::looped`).
fn looped(headers: &[httparse::Header<'_>]) -> bool {
    field_values(headers, "via").any(|value| value.split(',').any(|hop| hop.trim() == VIA))
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a field is one the endpoint must not receive: hop-by-hop (RFC 9110 section 7.6.1,
/// and those `Connection` lists), or Switchboard's own.
fn not_forwarded(name: &str, listed: &[&str]) -> bool {
    hop_by_hop(name) || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// Whether a field is hop-by-hop by its name alone: the fields `forward` strips on the hyper
/// path, told apart by length first (one comparison for most names).
fn hop_by_hop(name: &str) -> bool {
    let is = |hop: &str| name.eq_ignore_ascii_case(hop);
    match name.len() {
        2 => is("te"),
        7 => is("trailer") || is("upgrade"),
        10 => is("connection") || is("keep-alive"),
        16 => is("proxy-connection"),
        17 => is("transfer-encoding"),
        18 => is("proxy-authenticate"),
        19 => is("proxy-authorization"),
        _ => false,
    }
}

/// The field names a message's `Connection` fields list, beyond the usual tokens (whose fields
/// go anyway): as `forward` reads them, and with no allocation in the common case.
fn connection_listed<'b>(headers: &[httparse::Header<'b>]) -> Vec<&'b str> {
    let usual = |token: &str| forward::USUAL_CONNECTION_TOKENS.iter().any(|usual| token.eq_ignore_ascii_case(usual));
    let mut listed = Vec::new();
    // The common value is one usual token, told without splitting.
    for value in field_values(headers, "connection").filter(|value| !usual(value)) {
        for token in value.split(',').map(str::trim) {
            if !token.is_empty() && !usual(token) {
                listed.push(token);
            }
        }
    }
    listed
}

/// The text values of the fields called `name` (lower case).
fn field_values<'h, 'b>(headers: &'h [httparse::Header<'b>], name: &'static str) -> impl Iterator<Item = &'b str> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.len() == name.len() && h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| crate::h1::text(h.value))
}

/// The request the endpoint at `target` receives, head and the body read so far: as
/// `forward::endpoint_request` builds it for the hyper path (the same fields, values and
/// joins), with the `To` text replaced by `splice` (and the length with it).
fn write_request(
    exchange: &Exchange<'_, '_, '_>,
    target: &http::Uri,
    splice: Option<&Splice>,
    via: &[u8],
    out: &mut Vec<u8>,
) {
    let head = exchange.head;
    let listed = connection_listed(head.headers);
    out.clear();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    if exchange.addressing == Addressing::Prefix && matches!(target.path(), "" | "/") && plain_target(head.target) {
        // The common case: the target as sent, which `forward::endpoint_path` keeps unchanged.
        out.extend_from_slice(head.target.as_bytes());
    } else {
        let incoming = http::uri::PathAndQuery::try_from(head.target).ok();
        let path = forward::endpoint_path(exchange.addressing, target, incoming.as_ref());
        out.extend_from_slice(path.as_str().as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = target.authority().map_or("", |a| a.as_str());
    push_field(out, b"host", authority.as_bytes());
    let mut host = None;
    let (mut forwarded_host, mut forwarded_for, mut via_seen, mut length_seen) = (false, None, None, false);
    for header in head.headers {
        let name = header.name;
        if not_forwarded(name, &listed) || name.len() > 14 && name[..14].eq_ignore_ascii_case("x-switchboard-") {
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            host.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("via") {
            via_seen.get_or_insert(header.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
        } else if name.eq_ignore_ascii_case("content-length") {
            // One length, the first as sent (hyper keeps only the first of equal ones), or the
            // length of the body with its `To` replaced.
            if !std::mem::replace(&mut length_seen, true) {
                match splice {
                    Some(splice) => {
                        let length = exchange.length as i64 + splice.growth();
                        push_field(out, b"content-length", length.to_string().as_bytes());
                    }
                    None => push_field(out, b"content-length", header.value),
                }
            }
        } else {
            if name.eq_ignore_ascii_case("x-forwarded-host") {
                forwarded_host = true;
            }
            push_field(out, name.as_bytes(), header.value);
        }
    }
    if let Some(host) = host
        && !forwarded_host
    {
        push_field(out, b"x-forwarded-host", host);
    }
    push_joined(out, b"x-forwarded-for", forwarded_for, exchange.peer.ip.as_bytes());
    push_field(out, b"x-forwarded-proto", if exchange.peer.https { b"https" } else { b"http" });
    push_joined(out, b"via", via_seen, via);
    out.extend_from_slice(b"\r\n");
    match splice {
        Some(splice) if splice.range.end <= exchange.body_read.len() => {
            out.extend_from_slice(&exchange.body_read[..splice.range.start]);
            out.extend_from_slice(&splice.with);
            out.extend_from_slice(&exchange.body_read[splice.range.end..]);
        }
        _ => out.extend_from_slice(exchange.body_read),
    }
}

/// Whether a request target is an origin-form path and query of RFC 3986 characters only, which
/// `http::uri::PathAndQuery` takes exactly as written (it drops a fragment, for one).
fn plain_target(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|b| b.is_ascii_alphanumeric() || b"/?-._~%!$&'()*+,;=:@".contains(&b))
}

/// `name: existing, value`, as `forward::append_value` joins (the first existing field only).
fn push_joined(out: &mut Vec<u8>, name: &[u8], existing: Option<&[u8]>, value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    if let Some(existing) = existing.filter(|e| !e.is_empty()) {
        out.extend_from_slice(existing);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The head the client receives: the endpoint's, minus hop-by-hop fields, with `Via` joined, a
/// `Date` if it has none, chunked framing where the length is not known, and `Connection:
/// close` when the client asked to close.
fn write_response_head(head: &framing::ResponseHead<'_, '_>, via: &[u8], client_keeps: bool, out: &mut Vec<u8>) {
    let listed = connection_listed(head.headers);
    out.extend_from_slice(b"HTTP/1.1 ");
    // A status code has three digits (`h1::framing::response` reads no other).
    out.extend_from_slice(&[
        b'0' + (head.code / 100 % 10) as u8,
        b'0' + (head.code / 10 % 10) as u8,
        b'0' + (head.code % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let (mut via_seen, mut date) = (None, false);
    for header in head.headers {
        let name = header.name;
        if not_forwarded(name, &listed) {
            continue;
        }
        if name.eq_ignore_ascii_case("via") {
            via_seen.get_or_insert(header.value);
            continue;
        }
        date |= name.eq_ignore_ascii_case("date");
        push_field(out, name.as_bytes(), header.value);
    }
    push_joined(out, b"via", via_seen, via);
    if !date {
        push_field(out, b"date", httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    }
    if matches!(head.body, ResponseBody::Chunked | ResponseBody::UntilClose) {
        push_field(out, b"transfer-encoding", b"chunked");
    }
    if !client_keeps {
        push_field(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
}

/// An endpoint's answer, its head read (and the client's written to `Scratch::out`).
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    body: ResponseBody,
    /// The endpoint keeps the connection open after the body.
    keep_alive: bool,
}

/// Why a try got no answer: no connection, the endpoint's fault, or the client's.
enum Fault {
    Unreachable(String),
    Endpoint(String),
    Client(String),
}

/// Sends the head (and the body read so far) in one write, streams the rest of the body, and
/// reads the response head into `scratch.response`.
async fn send_and_read_head(
    exchange: &mut Exchange<'_, '_, '_>,
    upstream: &mut TcpStream,
    client: &mut TcpStream,
    scratch: &mut Scratch,
    via: &[u8],
) -> Result<Answer, Fault> {
    let endpoint = |err: std::io::Error| Fault::Endpoint(err.to_string());
    upstream.write_all(&scratch.out).await.map_err(endpoint)?;
    let mut left = exchange.length - exchange.body_read.len() as u64;
    if left > 0 {
        // The rest of a large body, as it comes: the client's faults told from the endpoint's.
        exchange.streamed = true;
        scratch.response.clear();
        while left > 0 {
            scratch.response.reserve(READ_SIZE);
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(READ_SIZE);
            let mut limited = (&mut *client).take(want as u64);
            match limited.read_buf(&mut scratch.response).await {
                Ok(0) => return Err(Fault::Client("the client closed before the end of the body".into())),
                Ok(n) => left -= n as u64,
                Err(err) => return Err(Fault::Client(err.to_string())),
            }
            upstream.write_all(&scratch.response).await.map_err(endpoint)?;
            scratch.response.clear();
        }
    }
    let endpoint = |err: String| Fault::Endpoint(err);
    // Informational heads are skipped here, so that the outlier rule judges the final status.
    // The final head is read once: the client's is written from it into `scratch.out`.
    loop {
        let mut headers = [httparse::EMPTY_HEADER; framing::MAX_HEADERS];
        let read = match framing::response(&scratch.response, &mut headers, exchange.head.method == "HEAD") {
            ResponseFramed::Complete(head) => {
                scratch.out.clear();
                write_response_head(&head, via, exchange.head.keep_alive, &mut scratch.out);
                Some((head.len, Some(Answer { status: head.code, body: head.body, keep_alive: head.keep_alive })))
            }
            ResponseFramed::Informational(len) => Some((len, None)),
            ResponseFramed::Bad(why) => return Err(endpoint(format!("the endpoint sent {why}"))),
            ResponseFramed::Partial => None,
        };
        match read {
            Some((len, Some(answer))) => {
                scratch.response.advance(len);
                return Ok(answer);
            }
            Some((len, None)) => {
                scratch.response.advance(len);
                continue;
            }
            None => {}
        }
        if scratch.response.len() >= MAX_HEADER_BYTES {
            return Err(endpoint("the endpoint's response head is too large".into()));
        }
        scratch.response.reserve(READ_SIZE);
        match upstream.read_buf(&mut scratch.response).await {
            Ok(0) => return Err(endpoint("the connection closed before a whole answer".into())),
            Ok(_) => {}
            Err(err) => return Err(endpoint(err.to_string())),
        }
    }
}

/// Relays a body of `length` bytes: what arrived with the head goes out with the client's head.
async fn relay_length(length: u64, upstream: &mut TcpStream, client: &mut TcpStream, scratch: &mut Scratch) -> bool {
    let first = usize::try_from(length).unwrap_or(usize::MAX).min(scratch.response.len());
    scratch.out.extend_from_slice(&scratch.response[..first]);
    scratch.response.advance(first);
    if client.write_all(&scratch.out).await.is_err() {
        return false;
    }
    let rest = length - first as u64;
    if rest == 0 {
        return true;
    }
    let mut body = upstream.take(rest);
    matches!(tokio::io::copy(&mut body, client).await, Ok(copied) if copied == rest)
}

/// Relays a chunked body, re-chunked as it arrives; its trailers are dropped.
async fn relay_chunked(upstream: &mut TcpStream, client: &mut TcpStream, scratch: &mut Scratch) -> bool {
    let mut decoder = Chunked::default();
    loop {
        let Ok(read) = decoder.read(&scratch.response) else { return false };
        for range in &read.data {
            push_chunk(&mut scratch.out, &scratch.response[range.clone()]);
        }
        scratch.response.advance(read.consumed);
        if read.done {
            scratch.out.extend_from_slice(b"0\r\n\r\n");
            return client.write_all(&scratch.out).await.is_ok();
        }
        if client.write_all(&scratch.out).await.is_err() {
            return false;
        }
        scratch.out.clear();
        scratch.response.reserve(READ_SIZE);
        match upstream.read_buf(&mut scratch.response).await {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Relays a body that ends when the endpoint closes, chunked to the client.
async fn relay_until_close(upstream: &mut TcpStream, client: &mut TcpStream, scratch: &mut Scratch) -> bool {
    loop {
        if !scratch.response.is_empty() {
            push_chunk(&mut scratch.out, &scratch.response);
            scratch.response.clear();
        }
        if client.write_all(&scratch.out).await.is_err() {
            return false;
        }
        scratch.out.clear();
        scratch.response.reserve(READ_SIZE);
        match upstream.read_buf(&mut scratch.response).await {
            Ok(0) => return client.write_all(b"0\r\n\r\n").await.is_ok(),
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

fn push_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn hop_by_hop_names_are_those_the_hyper_path_strips() {
        let names = [
            "te",
            "TE",
            "trailer",
            "Upgrade",
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "Transfer-Encoding",
            "proxy-authenticate",
            "Proxy-Authorization",
            "host",
            "content-length",
            "tee",
            "trailers",
            "via",
            "x-forwarded-for",
            "connectionx",
            "keep-alivee",
            "transfer-encodings",
            "proxy-authorizations",
        ];
        for name in names {
            let parsed = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert_eq!(hop_by_hop(name), forward::is_hop_by_hop(&parsed), "{name}");
        }
    }

    #[test]
    fn usual_connection_tokens_list_nothing() {
        let headers = [
            httparse::Header { name: "Connection", value: b"keep-alive, Close" },
            httparse::Header { name: "connection", value: b" x-trace ,upgrade,, te" },
        ];
        assert_eq!(connection_listed(&headers), ["x-trace"]);
    }

    proptest! {
        #[test]
        fn a_plain_target_is_kept_as_written(target in "/[a-zA-Z0-9/?#%&=;:@!$'()*+,._~ \"{}|^`\\[\\]-]{0,24}") {
            if plain_target(&target) {
                let parsed = http::uri::PathAndQuery::try_from(target.as_str()).unwrap();
                prop_assert_eq!(parsed.as_str(), target.as_str());
            }
        }

        #[test]
        fn a_head_is_complete_at_its_first_empty_line(bytes in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..16)) {
            let expected = memchr::memmem::find(&bytes, b"\n\r\n").is_some() || memchr::memmem::find(&bytes, b"\n\n").is_some();
            prop_assert_eq!(head_complete(&bytes), expected);
        }
    }
}
