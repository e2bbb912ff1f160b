//! Test endpoints: small HTTP servers on ephemeral loopback ports that echo what they received
//! (and answer `GET ...?wsdl` with a WSDL that names their own address, as a SOAP service does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::IntoResponse;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a backend answers.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer with this status.
    pub status: Option<u16>,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted (keep-alive reuse shows as fewer connections than hits).
    pub connections: Arc<AtomicUsize>,
    behaviour: Behaviour,
    task: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Shared {
    name: String,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    behaviour: Behaviour,
}

async fn echo(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    if !shared.behaviour.delay.is_zero() {
        tokio::time::sleep(shared.behaviour.delay).await;
    }
    if method == Method::GET && uri.query().is_some_and(|q| q.eq_ignore_ascii_case("wsdl")) {
        let wsdl = format!(
            r#"<?xml version="1.0" encoding="utf-8"?><wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" name="{}"><wsdl:service name="S"><wsdl:port name="P" binding="B"><soap:address location="http://{}{}"/></wsdl:port></wsdl:service></wsdl:definitions>"#,
            shared.name,
            shared.addr,
            uri.path()
        );
        return (StatusCode::OK, [("content-type", "text/xml; charset=utf-8".to_owned())], wsdl).into_response();
    }
    let headers: serde_json::Map<String, serde_json::Value> =
        headers.iter().map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or_default()))).collect();
    let status = StatusCode::from_u16(shared.behaviour.status.unwrap_or(200)).unwrap();
    let answer = json!({
        "backend": shared.name,
        "method": method.as_str(),
        "uri": uri.to_string(),
        "headers": headers,
        "body_len": body.len(),
        // Small bodies whole, to compare what the endpoint received byte for byte.
        "body": (body.len() <= 8 * 1024).then(|| String::from_utf8_lossy(&body).into_owned()),
        "body_sha": format!("{:x}", fnv(&body)),
    });
    (status, [("x-backend", shared.name.clone())], axum::Json(answer)).into_response()
}

/// FNV-1a, to compare bodies without echoing them back.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, Behaviour::default()).await
    }

    pub async fn start_with(name: &str, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut backend = Self {
            name: name.to_owned(),
            addr,
            hits: Arc::default(),
            connections: Arc::default(),
            behaviour,
            task: None,
        };
        backend.serve(listener);
        backend
    }

    /// Serves until stopped; stopping also drops open connections, as a crash would.
    fn serve(&mut self, listener: TcpListener) {
        let shared = Shared {
            name: self.name.clone(),
            addr: self.addr,
            hits: self.hits.clone(),
            behaviour: self.behaviour.clone(),
        };
        let app = Router::new().fallback(echo).layer(axum::extract::DefaultBodyLimit::disable()).with_state(shared);
        let accepted = self.connections.clone();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops listening: new connections are refused.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        // The port may linger a moment after the stop; never forever.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(err) => panic!("{} could not listen on {} again within 20 s: {err}", self.name, self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}
