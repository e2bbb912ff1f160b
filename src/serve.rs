//! One accept loop for the three listeners: optional TLS, a bound on open connections, a header
//! read timeout, and graceful shutdown that lets open requests finish (bounded).

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
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open requests may take to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest accepted request head (request line and headers), in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// hyper's read buffer: room for headers somewhat over [`MAX_HEADER_BYTES`], so that such a
/// request reaches the routers, which refuse it with a typed error and count it; hyper itself
/// refuses (with a bare 431) only what does not fit at all.
const HTTP_BUFFER_BYTES: usize = 2 * MAX_HEADER_BYTES;

/// Bytes a request's headers take, counted as on the wire (`name: value\r\n`).
pub fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum()
}

/// A bound socket and how to serve it.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub max_connections: usize,
    /// Name for logs: "data plane", "control API", "peer endpoint".
    pub name: &'static str,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("name", &self.name).field("tls", &self.tls.is_some()).finish_non_exhaustive()
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
        let ip = http::HeaderValue::from_str(&addr.ip().to_string()).expect("an IP address is a valid header value");
        Self { addr, https, ip }
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
    let Listener { tcp, tls, max_connections, name } = listener;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // At the limit: refuse at once rather than queue without bound.
            METRICS.limit_hit(crate::metrics::Limit::Connections);
            tracing::warn!(listener = name, remote = %addr, limit = max_connections, "connection refused: limit reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = make_service(Peer::new(addr, tls.is_some()));
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(HTTP_BUFFER_BYTES);
            let result = match tls {
                None => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await,
                        Ok(Err(err)) => {
                            tracing::warn!(listener = name, remote = %addr, error = %err, "TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(listener = name, error = %err, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = name, "requests still open after the drain timeout; closing them");
    }
}
