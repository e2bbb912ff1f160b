//! Connections to endpoints: HTTP/1.1 keep-alive connections pooled per endpoint authority.
//!
//! A request takes an idle connection that is ready, or opens a new one (through the connector,
//! which resolves host names through the address policy and speaks TLS for `https` endpoints).
//! The connection goes back to the pool when the response body has been read to its end; a
//! response abandoned half-way takes its connection with it. A pooled connection that turns out to
//! be closed (the endpoint's keep-alive timeout ran out) is replaced transparently, because hyper
//! hands the request back when it was never written.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use http::Request;
use http::Response;
use http::Uri;
use http::uri::Authority;
use http::uri::Scheme;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tower::ServiceExt;

use crate::proxy::body::TryBody;
use crate::registry::FastHash;
use crate::telemetry::root_cause;

/// Connections kept idle per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How the data plane connects (see `DataPlane::new`).
pub type Connector = hyper_rustls::HttpsConnector<crate::netpolicy::PolicyConnector>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    scheme: Scheme,
    authority: Authority,
}

struct Idle {
    sender: SendRequest<TryBody>,
    since: Instant,
}

struct Inner {
    connector: Connector,
    idle: Mutex<HashMap<Key, Vec<Idle>, FastHash>>,
}

/// The pool of connections to endpoints. Cheap to clone.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

/// Why a request got no response from an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made: nothing was sent.
    #[error("{0}")]
    Connect(String),
    /// The request may have reached the endpoint.
    #[error("{0}")]
    Failed(String),
}

impl UpstreamError {
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

/// A connection lent to one request; it returns to the pool when `finish` is called after the
/// response body ended, and is closed if dropped before that.
pub struct Loan {
    pool: Arc<Inner>,
    key: Key,
    sender: Option<SendRequest<TryBody>>,
}

impl std::fmt::Debug for Loan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loan").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Loan {
    /// The response was read to its end: the connection can serve another request.
    pub fn finish(&mut self) {
        let Some(sender) = self.sender.take() else { return };
        if sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(self.key.clone()).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(Idle { sender, since: Instant::now() });
        }
    }
}

impl Upstreams {
    pub fn new(connector: Connector) -> Self {
        Self { inner: Arc::new(Inner { connector, idle: Mutex::default() }) }
    }

    /// Closes the idle connections to an endpoint (see `RawPool::release`: the own loop is about
    /// to connect to it).
    pub fn release(&self, scheme: Scheme, authority: Authority) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = idle.get_mut(&Key { scheme, authority }) {
            list.clear();
        }
    }

    /// Whether an idle connection to the endpoint at `target` may be ready.
    pub fn has_idle(&self, target: &Uri) -> bool {
        let (Some(scheme), Some(authority)) = (target.scheme().cloned(), target.authority().cloned()) else {
            return false;
        };
        let idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(&Key { scheme, authority }).is_some_and(|list| !list.is_empty())
    }

    fn checkout(&self, key: &Key) -> Option<SendRequest<TryBody>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(candidate) = list.pop() {
            if candidate.sender.is_closed() || candidate.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            if candidate.sender.is_ready() {
                found = Some(candidate.sender);
                break;
            }
            // Still finishing its previous exchange: keep it for later.
            busy.push(candidate);
        }
        list.extend(busy);
        found
    }

    async fn connect(&self, target: &Uri) -> Result<SendRequest<TryBody>, UpstreamError> {
        let io = self
            .inner
            .connector
            .clone()
            .oneshot(target.clone())
            .await
            .map_err(|err| UpstreamError::Connect(root_cause(&*err)))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|err| UpstreamError::Connect(root_cause(&err)))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "endpoint connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends a request (with an absolute URI) and returns the response head and the loan of the
    /// connection it came on.
    pub async fn send(&self, mut request: Request<TryBody>) -> Result<(Response<Incoming>, Loan), UpstreamError> {
        let target = request.uri().clone();
        let (Some(scheme), Some(authority)) = (target.scheme().cloned(), target.authority().cloned()) else {
            return Err(UpstreamError::Connect(format!("{target} is not an absolute URI")));
        };
        let key = Key { scheme, authority };
        // HTTP/1.1 requests carry the origin form; the host is in the Host header.
        *request.uri_mut() = target.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        loop {
            let (mut sender, reused) = match self.checkout(&key) {
                Some(sender) => (sender, true),
                None => (self.connect(&target).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Loan { pool: self.inner.clone(), key, sender: Some(sender) })),
                Err(mut err) => match err.take_message() {
                    // Never written: a pooled connection that closed under us. Try a fresh one;
                    // the endpoint did not see this request.
                    Some(unsent) if reused => request = unsent,
                    Some(_) => return Err(UpstreamError::Connect(root_cause(err.error()))),
                    None => return Err(UpstreamError::Failed(root_cause(err.error()))),
                },
            }
        }
    }
}
