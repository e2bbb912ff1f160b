//! One accept loop for every listener: optional TLS, bounds on open connections (in all, per
//! client address, and for connections that have not yet proven anything), deadlines for the TLS
//! handshake, the first byte and the request head, and graceful shutdown that lets open
//! requests finish (bounded).
//!
//! A connection is *pending* until it completes its TLS handshake or, without TLS, sends its
//! first byte. Pending connections may take only part of the slots, and only for
//! [`FIRST_BYTE_TIMEOUT`]; when they are all taken, a new connection closes the oldest pending
//! one that has been silent for [`SILENT_GRACE`] instead of being refused. A client that talks
//! leaves the pending state within a round trip, so a flood of idle connections can neither hold
//! slots for long nor keep such a client out. One client address may hold only so many
//! connections. A connection that speaks within [`QUICK_SPEAKER`] is never pending at all, so a
//! burst of connections opened at once (a load balancer, a pool warming up) is never refused for
//! the pending bounds; one that closes without a byte takes no slot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body::Body;
use hyper::Request;
use hyper::Response;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::METRICS;

/// How long a client may take to send request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may stay silent (or take for its TLS handshake).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// A pending connection silent for this long may be closed to make room for a new one.
pub const SILENT_GRACE: Duration = Duration::from_millis(250);
/// A connection that speaks (or finishes its TLS handshake) within this is never pending: it
/// takes none of the pending slots, of its address or in all.
pub const QUICK_SPEAKER: Duration = Duration::from_millis(50);
/// How long open requests may take to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted request head (request line and headers), in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's read buffer: room for headers somewhat over [`MAX_HEADER_BYTES`], so that such a
/// request reaches the routers, which refuse it with a typed error and count it; hyper itself
/// refuses (with a bare 431) only what does not fit at all.
const HTTP_BUFFER_BYTES: usize = 2 * MAX_HEADER_BYTES;

/// Whether a request's headers take more than [`MAX_HEADER_BYTES`], counted as on the wire
/// (`name: value\r\n`).
pub fn headers_too_large(headers: &http::HeaderMap) -> bool {
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    bytes > MAX_HEADER_BYTES
}

/// A bound socket and how to serve it.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub limits: ConnectionLimits,
    pub kind: crate::metrics::ListenerKind,
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// A connection past its pending stage.
enum Conn {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections in all.
    pub max: usize,
    /// Open connections from one client address.
    pub per_ip: usize,
    /// Connections not yet past their TLS handshake or first byte (they take none of `max`).
    pub pending: usize,
    /// ... and from one client address.
    pub pending_per_ip: usize,
}

impl ConnectionLimits {
    /// `max` in all and at most `per_ip` from one address; besides, half of `max` (at least 64)
    /// pending, of which one address may hold half (and no more than its `per_ip`). A busy
    /// machine can delay a client's first bytes past [`QUICK_SPEAKER`]: a burst from one load
    /// balancer or client pool then fits, while silent connections from one address still leave
    /// half the pending slots to the others (and the oldest silent ones give way to new ones).
    pub fn new(max: usize, per_ip: usize) -> Self {
        let pending = (max / 2).max(64);
        let per_ip = per_ip.min(max);
        Self { max, per_ip, pending, pending_per_ip: per_ip.min(pending / 2) }
    }
}

/// The pending connections, oldest first; a connection leaves when it speaks, or is told to
/// close when a newer one needs its place.
#[derive(Debug, Default)]
struct Pending {
    waiting: std::sync::Mutex<std::collections::BTreeMap<u64, (std::time::Instant, tokio::sync::oneshot::Sender<()>)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Pending {
    /// Enters a new connection if there is room, or if the oldest pending one has been silent for
    /// [`SILENT_GRACE`] (it is told to close). Returns its number and the signal of its eviction.
    fn enter(&self, limit: usize) -> Option<(u64, tokio::sync::oneshot::Receiver<()>)> {
        let now = std::time::Instant::now();
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.len() >= limit {
            let oldest = waiting.first_key_value().map(|(seq, (since, _))| (*seq, *since));
            match oldest {
                Some((seq, since)) if now - since >= SILENT_GRACE => {
                    if let Some((_, evict)) = waiting.remove(&seq) {
                        let _ = evict.send(());
                    }
                }
                _ => return None,
            }
        }
        let (evict, evicted) = tokio::sync::oneshot::channel();
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        waiting.insert(seq, (now, evict));
        Some((seq, evicted))
    }

    fn leave(&self, seq: u64) {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq);
    }
}

/// Open connections per client address; a slot is returned when its [`IpSlot`] is dropped.
#[derive(Debug, Default)]
struct PerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

struct IpSlot(Arc<PerIp>, std::net::IpAddr);

impl PerIp {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, limit: usize) -> Option<IpSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("kind", &self.kind).field("tls", &self.tls.is_some()).finish_non_exhaustive()
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub https: bool,
    /// The client's IP as a header value, made once per connection (for `X-Forwarded-For`).
    pub ip: http::HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr, https: bool) -> Self {
        // An IP address's text is always a valid header value.
        let ip =
            http::HeaderValue::try_from(addr.ip().to_string()).unwrap_or(http::HeaderValue::from_static("unknown"));
        Self { addr, https, ip }
    }
}

/// The certificate a mutual-TLS client presented (verified against the CA by the handshake), in
/// the extensions of each of its requests.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub Arc<rustls_pki_types::CertificateDer<'static>>);

/// Puts the connection's client certificate into every request.
#[derive(Debug)]
struct WithCertificate<S> {
    inner: S,
    certificate: Option<ClientCertificate>,
}

impl<S: Service<Request<Incoming>>> Service<Request<Incoming>> for WithCertificate<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if let Some(certificate) = &self.certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        self.inner.call(request)
    }
}

/// A loop that serves a listener's plain (not TLS) connections itself, request by request,
/// and hands a connection to hyper, with the bytes it already read of it, at the first request
/// it does not take.
pub trait OwnLoop: Send + Sync + 'static {
    /// Serves requests on `stream` until the connection ends (`None`), `stop` is cancelled
    /// between two requests (`None`), or a request is left to hyper (`Some`, with the bytes read
    /// of the connection, which hyper reads first).
    fn serve(self: Arc<Self>, stream: tokio::net::TcpStream, peer: Peer, stop: CancellationToken) -> Handoff;
}

/// What an [`OwnLoop`] comes to: `Some` connection, with the bytes read of it, for hyper.
pub type Handoff = std::pin::Pin<Box<dyn Future<Output = Option<(tokio::net::TcpStream, bytes::BytesMut)>> + Send>>;

/// A connection whose first bytes were already read: they are read again first.
#[derive(Debug)]
pub struct Rewind {
    prefix: bytes::BytesMut,
    inner: tokio::net::TcpStream,
}

impl Rewind {
    pub fn new(inner: tokio::net::TcpStream, prefix: bytes::BytesMut) -> Self {
        Self { prefix, inner }
    }
}

impl tokio::io::AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves connections until `stop`, building one service per connection.
pub async fn serve<F, S, B>(listener: Listener, stop: CancellationToken, make_service: F)
where
    F: Fn(Peer) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, stop, None, make_service).await;
}

/// Serves connections until `stop`: plain connections through `own` first when given (see
/// [`OwnLoop`]), and through hyper with one service per connection.
pub async fn serve_with<F, S, B>(
    listener: Listener,
    stop: CancellationToken,
    own: Option<Arc<dyn OwnLoop>>,
    make_service: F,
) where
    F: Fn(Peer) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Listener { tcp, tls, limits, kind } = listener;
    let name = kind.label();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connections in the own loop (hyper's are watched by `graceful`).
    let own_open = tokio_util::task::TaskTracker::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max));
    let pending = Arc::new(Pending::default());
    let per_ip = Arc::new(PerIp::default());
    let pending_per_ip = Arc::new(PerIp::default());
    loop {
        let (stream, addr) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // At a limit: refuse at once rather than queue without bound.
        let refuse = |why: &str| {
            METRICS.limit_hit(crate::metrics::Limit::Connections);
            tracing::debug!(listener = name, remote = %addr, why, "connection refused");
        };
        let Some(ip_slot) = per_ip.take(addr.ip(), limits.per_ip) else {
            refuse("too many connections from this address");
            continue;
        };
        let (pending, permits, pending_per_ip) = (pending.clone(), permits.clone(), pending_per_ip.clone());
        let _ = stream.set_nodelay(true);
        let service = make_service(Peer::new(addr, tls.is_some()));
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let own = own.clone().map(|own| (own, own_open.token(), stop.clone()));
        let peer = Peer::new(addr, tls.is_some());
        tokio::spawn(async move {
            let _ip_slot = ip_slot;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(HTTP_BUFFER_BYTES);
            // Pending: until the first byte (or the TLS handshake), a deadline, or eviction.
            // `Err(None)`: the client closed without sending anything.
            let first = async {
                match tls {
                    None => match stream.peek(&mut [0u8; 1]).await {
                        Ok(0) => Err(None),
                        Ok(_) => Ok(Conn::Plain(stream)),
                        Err(err) => Err(Some(err.to_string())),
                    },
                    Some(acceptor) => {
                        acceptor.accept(stream).await.map(|s| Conn::Tls(Box::new(s))).map_err(|e| Some(e.to_string()))
                    }
                }
            };
            tokio::pin!(first);
            // Most clients speak at once and are never pending; only a connection still silent
            // after a moment takes a pending slot (of its address's, and of all).
            let spoke = match tokio::time::timeout(QUICK_SPEAKER, &mut first).await {
                Ok(spoke) => Ok(spoke),
                Err(_) => {
                    let Some(_address_slot) = pending_per_ip.take(addr.ip(), limits.pending_per_ip) else {
                        METRICS.limit_hit(crate::metrics::Limit::Connections);
                        tracing::debug!(listener = name, remote = %addr, "connection closed: too many silent connections from this address");
                        return;
                    };
                    let Some((seq, evicted)) = pending.enter(limits.pending) else {
                        METRICS.limit_hit(crate::metrics::Limit::Connections);
                        tracing::debug!(listener = name, remote = %addr, "connection closed: too many silent connections");
                        return;
                    };
                    let spoke = tokio::select! {
                        // A connection that spoke keeps its place even if told to make room.
                        biased;
                        spoke = tokio::time::timeout(FIRST_BYTE_TIMEOUT - QUICK_SPEAKER, &mut first) => spoke,
                        _ = evicted => {
                            tracing::debug!(listener = name, remote = %addr, "silent connection closed for a newer one");
                            pending.leave(seq);
                            return;
                        }
                    };
                    pending.leave(seq);
                    spoke
                }
            };
            let spoke = match spoke {
                Ok(Ok(conn)) => conn,
                Ok(Err(Some(err))) => {
                    static REFUSED: crate::telemetry::RateLimit =
                        crate::telemetry::RateLimit::new(Duration::from_secs(10));
                    if let Some(held_back) = REFUSED.check() {
                        tracing::warn!(listener = name, remote = %addr, error = %err, held_back, "TLS handshake refused");
                    }
                    return;
                }
                // Closed without a byte, or silent past the deadline.
                Ok(Err(None)) | Err(_) => return,
            };
            // Only a connection that spoke takes one of the `max` slots.
            let Ok(_permit) = permits.try_acquire_owned() else {
                METRICS.limit_hit(crate::metrics::Limit::Connections);
                tracing::debug!(listener = name, remote = %addr, "connection refused: limit reached");
                return;
            };
            let open = METRICS.open_connections(kind);
            open.add(1);
            let _open = scopeguard(move || open.add(-1));
            let result = match spoke {
                Conn::Plain(stream) => {
                    let (stream, read) = match own {
                        Some((own, open, stop)) => {
                            let handed = own.serve(stream, peer, stop).await;
                            drop(open);
                            match handed {
                                Some(handed) => handed,
                                None => return,
                            }
                        }
                        None => (stream, bytes::BytesMut::new()),
                    };
                    watcher.watch(http.serve_connection(TokioIo::new(Rewind::new(stream, read)), service)).await
                }
                Conn::Tls(stream) => {
                    let certificate = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                    let certificate = certificate.map(|cert| ClientCertificate(Arc::new(cert.clone().into_owned())));
                    let service = WithCertificate { inner: service, certificate };
                    watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await
                }
            };
            if let Err(err) = result {
                tracing::debug!(listener = name, error = %err, "connection ended with an error");
            }
        });
    }
    own_open.close();
    let drained = async { tokio::join!(graceful.shutdown(), own_open.wait()) };
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        tracing::warn!(listener = name, "requests still open after the drain timeout; closing them");
    }
}

/// The URL by which the client reached this router, for the path `bound` (what a WSDL served
/// through the router names): the client's scheme and host as a load balancer forwards them, else
/// the request's own. `None` without a host safe to write into XML.
pub fn router_url(headers: &http::HeaderMap, https: bool, bound: &str) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let host = header("x-forwarded-host").or_else(|| header(http::header::HOST.as_str()))?;
    let safe = !host.is_empty()
        && host.len() <= 255
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    let scheme = match header("x-forwarded-proto") {
        Some(proto @ ("http" | "https")) => proto,
        _ if https => "https",
        _ => "http",
    };
    safe.then(|| format!("{scheme}://{host}{bound}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_may_hold_half_the_pending_slots_within_its_own_bound() {
        // The control API: a pool of 128 from one load balancer fits even if all are slow to speak.
        let api = ConnectionLimits::new(1024, 128);
        assert_eq!((api.pending, api.pending_per_ip), (512, 128));
        // The data plane behind one load balancer: half of the pending slots.
        let data = ConnectionLimits::new(10_000, 10_000);
        assert_eq!((data.pending, data.pending_per_ip), (5_000, 2_500));
        // Small listeners keep at least 64 pending slots; an address never exceeds its own bound.
        let health = ConnectionLimits::new(64, 16);
        assert_eq!((health.pending, health.pending_per_ip), (64, 16));
    }

    #[test]
    fn the_router_url_takes_the_forwarded_scheme_and_a_safe_host() {
        use http::HeaderValue;
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("lb.example:8080"));
        assert_eq!(router_url(&headers, false, "/calc").as_deref(), Some("http://lb.example:8080/calc"));
        assert_eq!(router_url(&headers, true, "/calc").as_deref(), Some("https://lb.example:8080/calc"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(router_url(&headers, false, "/calc").as_deref(), Some("https://lb.example:8080/calc"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("a\"b"));
        assert_eq!(router_url(&headers, false, "/calc"), None);
    }

    #[test]
    fn headers_are_counted_as_on_the_wire() {
        let mut headers = http::HeaderMap::new();
        // `x-a: ` and `\r\n` take 7 bytes besides the value.
        headers.insert("x-a", http::HeaderValue::from_str(&"v".repeat(MAX_HEADER_BYTES - 7)).unwrap());
        assert!(!headers_too_large(&headers));
        headers.append("x-a", http::HeaderValue::from_static(""));
        assert!(headers_too_large(&headers), "every header counts, repeated names too");
    }
}
