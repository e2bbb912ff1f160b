//! One probe of one endpoint: a TCP connect, or an HTTP `GET` of the check's path, through the
//! same address policy as routed traffic and never longer than the check's timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::netpolicy::AddressPolicy;
use crate::netpolicy::PolicyConnector;
use crate::registry::Check;
use crate::registry::CheckKind;

/// Name lookups of probes at once: each holds a blocking thread for as long as the system
/// resolver takes (even after its probe timed out), and the blocking pool also serves storage.
/// Probes of IP literals look nothing up. A probe waiting here counts against its timeout.
static NAME_LOOKUPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(32);

/// Header naming the node that sends a probe, so an endpoint (or a test) can tell probers apart.
pub const PROBER_HEADER: &str = "x-switchboard-prober";

/// The probing side of a node: the address policy and an HTTP client that keeps no connection
/// between probes (each probe tests a fresh connect, as a new client's request would).
#[derive(Debug, Clone)]
pub struct Probe {
    policy: Arc<AddressPolicy>,
    client: Client<hyper_rustls::HttpsConnector<PolicyConnector>, Empty<Bytes>>,
    node: HeaderValue,
}

impl Probe {
    pub fn new(policy: Arc<AddressPolicy>, node: u64) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let http = PolicyConnector { policy: policy.clone(), inner: http, lookups: Some(&NAME_LOOKUPS) };
        let tls = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(with_roots) => with_roots,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots(),
        };
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
        Self { policy, client, node: HeaderValue::from(node) }
    }

    /// Probes `address` with `check`: `Ok` if it passes, else why not (short).
    pub async fn run(&self, address: &str, check: &Check) -> Result<(), String> {
        let timeout = Duration::from_millis(u64::from(check.timeout_ms));
        let probe = async {
            match check.kind {
                CheckKind::None => Ok(()),
                CheckKind::Tcp => self.tcp(address).await,
                CheckKind::Http => self.http(address, &check.path).await,
            }
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", check.timeout_ms)),
        }
    }

    async fn tcp(&self, address: &str) -> Result<(), String> {
        let url = url::Url::parse(address).map_err(|err| format!("unusable address: {err}"))?;
        let host = url.host_str().ok_or("the address has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_or_known_default().unwrap_or(80);
        let allowed =
            self.policy.resolve_within(host, port, Some(&NAME_LOOKUPS)).await.map_err(|err| err.to_string())?;
        let mut last = String::new();
        for addr in allowed {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Closed with a reset, not a FIN: a probe that closes first would leave a
                    // TIME_WAIT socket on this node for a minute, and at thousands of probes a
                    // second those hold the ephemeral ports and slow every connect (HAProxy's
                    // checks close the same way for the same reason).
                    let _ = stream.set_zero_linger();
                    return Ok(());
                }
                Err(err) => last = format!("connect to {addr}: {err}"),
            }
        }
        Err(last)
    }

    async fn http(&self, address: &str, path: &str) -> Result<(), String> {
        let url = url::Url::parse(address).map_err(|err| format!("unusable address: {err}"))?;
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let uri = format!("{}://{authority}{path}", url.scheme());
        let request = Request::get(uri.as_str())
            .header(http::header::USER_AGENT, "switchboard-health")
            .header(http::header::CONNECTION, "close")
            .header(PROBER_HEADER, self.node.clone())
            .body(Empty::new())
            .map_err(|err| format!("unusable check URL {uri}: {err}"))?;
        let response = self.client.request(request).await.map_err(|err| {
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            message
        })?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn probe() -> Probe {
        let policy = AddressPolicy::new(&[], &[], &["http".into(), "https".into()], Vec::new()).unwrap();
        Probe::new(Arc::new(policy), 1)
    }

    fn tcp_check() -> Check {
        Check { kind: CheckKind::Tcp, ..Check::default() }
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_on_a_connect_and_closes_with_a_reset_so_the_prober_keeps_no_time_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/svc", listener.local_addr().unwrap());
        assert_eq!(probe().run(&address, &tcp_check()).await, Ok(()));
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), accepted.read(&mut byte)).await.unwrap();
        // A FIN would read as end of stream (Ok(0)) and leave the prober's side in TIME_WAIT.
        assert_eq!(read.map_err(|err| err.kind()), Err(std::io::ErrorKind::ConnectionReset));
    }

    #[tokio::test]
    async fn a_tcp_probe_of_a_closed_port_fails_and_names_the_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe().run(&format!("http://{addr}/svc"), &tcp_check()).await.unwrap_err();
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}
