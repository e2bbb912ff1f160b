//! Plain-HTTP connections to endpoints as byte streams, for the data plane's own loop
//! ([`super::fast`]): kept idle per endpoint authority, checked before reuse, connected through
//! the address policy (the same resolution and checks as the hyper path's connector).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::netpolicy::PolicyConnector;
use crate::registry::FastHash;
use crate::telemetry::root_cause;

/// Connections kept idle per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection and when it went idle.
type Idle = (TcpStream, Instant);

/// Idle connections per endpoint authority (`host:port` of an `http` address).
#[derive(Debug)]
pub struct RawPool {
    connector: PolicyConnector,
    idle: Mutex<HashMap<String, Vec<Idle>, FastHash>>,
}

impl RawPool {
    pub fn new(connector: PolicyConnector) -> Self {
        Self { connector, idle: Mutex::default() }
    }

    /// An idle connection to `authority` that is still open and has nothing unread on it.
    pub fn checkout(&self, authority: &str) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(authority)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // Open and quiet: a read would block. End of stream, an error or stray bytes
            // (the endpoint closed it, or wrote what no request asked for) retire it.
            let mut probe = [0u8; 1];
            if matches!(stream.try_read(&mut probe), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock) {
                return Some(stream);
            }
        }
        None
    }

    /// Closes the idle connections to `authority`: the hyper path is about to connect to it, and
    /// an endpoint that serves one connection at a time would never take a second one while an
    /// idle first one stays open.
    pub fn release(&self, authority: &str) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = idle.get_mut(authority) {
            list.clear();
        }
    }

    /// Gives back a connection whose last exchange ended cleanly.
    pub fn checkin(&self, authority: &str, stream: TcpStream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The key is copied only the first time.
        match idle.get_mut(authority) {
            Some(list) if list.len() >= MAX_IDLE_PER_ENDPOINT => {}
            Some(list) => list.push((stream, Instant::now())),
            None => {
                idle.insert(authority.to_owned(), vec![(stream, Instant::now())]);
            }
        }
    }

    /// A new connection to the endpoint at `target` (an `http` URL), within the connector's
    /// connect timeout and the address policy.
    pub async fn connect(&self, target: &http::Uri) -> Result<TcpStream, String> {
        let io = self.connector.clone().oneshot(target.clone()).await.map_err(|err| root_cause(&*err))?;
        Ok(io.into_inner())
    }
}
