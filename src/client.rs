//! Client library for services written in Rust: register with the cluster, keep leases alive in
//! the background, re-register after the cluster lost a registration, fail over between router
//! addresses, and unregister on graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard::client::ClientError> {
//! use switchboard::client::Registrar;
//! use switchboard::client::RegistrarConfig;
//! use switchboard::registry::RegistrationRequest;
//!
//! let request = RegistrationRequest {
//!     address: "http://10.0.0.5:9000/calc".into(),
//!     contract_name: "ICalculator".into(),
//!     contract_namespace: "http://tempuri.org/".into(),
//!     ttl_ms: Some(5_000),
//!     weight: None,
//!     metadata: Default::default(),
//! };
//! let config = RegistrarConfig::new(vec!["http://lb:8081".into()], vec![request]);
//! let registrar = Registrar::start(config).await?;
//! // ... serve ...
//! registrar.stop().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::ErrorBody;
use crate::cluster::leases::Refusal;
use crate::registry::Registration;
use crate::registry::RegistrationRequest;

/// Registrations sent at once when a service registers many.
const REGISTER_CONCURRENCY: usize = 16;

/// Why a call to the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered and refused the request (bad input, not found, ...).
    #[error("refused with {status} {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    /// No router could be reached or none could serve the request in time.
    #[error("no router could serve the request: {0}")]
    Unavailable(String),
}

/// How a service registers.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Control API base URLs: the load balancer's, or several nodes'. Tried in turn.
    pub routers: Vec<String>,
    /// What to register; leases (`ttl_ms`) are kept alive by heartbeats.
    pub registrations: Vec<RegistrationRequest>,
    /// Heartbeat period [default: a third of the shortest ttl].
    pub heartbeat_every: Option<Duration>,
    /// Deadline of one call to a router.
    pub request_timeout: Duration,
    /// API token sent as `Authorization: Bearer` (none for a cluster in dev mode).
    pub token: Option<String>,
}

impl RegistrarConfig {
    pub fn new(routers: Vec<String>, registrations: Vec<RegistrationRequest>) -> Self {
        Self { routers, registrations, heartbeat_every: None, request_timeout: Duration::from_secs(3), token: None }
    }
}

#[derive(Debug)]
struct Shared {
    http: reqwest::Client,
    routers: Vec<String>,
    /// Index of the router that answered last.
    current: AtomicUsize,
    requests: Vec<RegistrationRequest>,
    /// The current registration of each request (same order), with its epoch.
    registered: Mutex<Vec<Option<Registration>>>,
}

/// A running registration: heartbeats go out until [`Registrar::stop`].
#[derive(Debug)]
pub struct Registrar {
    shared: Arc<Shared>,
    stop: CancellationToken,
    heartbeats: JoinHandle<()>,
}

impl Shared {
    /// Calls the routers in turn until one serves the request. Refusals (4xx) are final; an
    /// unreachable router or a 5xx answer moves on to the next router.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, T), ClientError> {
        let attempts = self.routers.len() * 3;
        let mut last = String::from("no router configured");
        for attempt in 0..attempts {
            let index = (self.current.load(Ordering::Relaxed) + attempt) % self.routers.len();
            let router = &self.routers[index];
            let mut request = self.http.request(method.clone(), format!("{}{path}", router.trim_end_matches('/')));
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    let status = response.status();
                    let value = response.json().await.map_err(|e| ClientError::Unavailable(e.to_string()))?;
                    return Ok((status, value));
                }
                Ok(response) if response.status().is_client_error() => {
                    let status = response.status().as_u16();
                    let error: ErrorBody =
                        response.json().await.unwrap_or(ErrorBody { code: "unknown".into(), message: String::new() });
                    return Err(ClientError::Refused { status, code: error.code, message: error.message });
                }
                Ok(response) => last = format!("{router} answered {}", response.status()),
                Err(err) => last = format!("{router}: {err}"),
            }
            if attempt + 1 >= self.routers.len() {
                // Every router was tried once: pause before going round again (an election).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(ClientError::Unavailable(last))
    }

    /// Registers the given requests, several at a time.
    async fn register_all(&self, indexes: Vec<usize>) -> Result<(), ClientError> {
        let mut results = futures_util::stream::iter(indexes.into_iter().map(|index| self.register(index)))
            .buffer_unordered(REGISTER_CONCURRENCY);
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(())
    }

    async fn register(&self, index: usize) -> Result<Registration, ClientError> {
        let body = serde_json::to_value(&self.requests[index]).expect("a registration request serializes");
        let (_, registration): (_, Registration) =
            self.call(reqwest::Method::POST, "/v1/registrations", Some(&body)).await?;
        self.registered.lock().unwrap_or_else(|p| p.into_inner())[index] = Some(registration.clone());
        Ok(registration)
    }

    /// One heartbeat for every live registration; re-registers what the cluster lost.
    async fn heartbeat(&self) -> Result<(), ClientError> {
        let current: Vec<(usize, Registration)> = {
            let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
            registered.iter().enumerate().filter_map(|(i, r)| r.clone().map(|r| (i, r))).collect()
        };
        let leased: Vec<&(usize, Registration)> = current.iter().filter(|(_, r)| r.ttl_ms.is_some()).collect();
        if leased.is_empty() {
            return Ok(());
        }
        let ids: Vec<serde_json::Value> =
            leased.iter().map(|(_, r)| serde_json::json!({ "id": r.id.to_string(), "epoch": r.epoch })).collect();
        let (_, reply): (_, crate::api::HeartbeatReply) =
            self.call(reqwest::Method::POST, "/v1/heartbeat", Some(&serde_json::json!({ "ids": ids }))).await?;
        let mut lost = Vec::new();
        for refused in reply.refused {
            let Some((index, _)) = leased.iter().find(|(_, r)| r.id == refused.id) else { continue };
            match refused.reason {
                Refusal::NotFound => {
                    tracing::warn!(id = %refused.id, "the cluster lost a registration; registering again");
                    lost.push(*index);
                }
                Refusal::Forbidden => {
                    tracing::error!(id = %refused.id, "the token may not renew this registration; no longer renewing it");
                    self.registered.lock().unwrap_or_else(|p| p.into_inner())[*index] = None;
                }
                Refusal::EpochMismatch => {
                    // Another instance registered the same address since: it owns the entry now.
                    tracing::warn!(id = %refused.id, "registration taken over by a newer instance; no longer renewing it");
                    self.registered.lock().unwrap_or_else(|p| p.into_inner())[*index] = None;
                }
            }
        }
        self.register_all(lost).await
    }
}

impl Registrar {
    /// Registers everything (failing over between routers) and starts the heartbeats.
    pub async fn start(config: RegistrarConfig) -> Result<Self, ClientError> {
        if config.routers.is_empty() {
            return Err(ClientError::Unavailable("no router configured".into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &config.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Unavailable("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_millis(500))
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Unavailable(e.to_string()))?;
        let shortest_ttl = config.registrations.iter().filter_map(|r| r.ttl_ms).min();
        let every = config.heartbeat_every.unwrap_or_else(|| Duration::from_millis(shortest_ttl.unwrap_or(30_000) / 3));
        let shared = Arc::new(Shared {
            http,
            routers: config.routers,
            current: AtomicUsize::new(0),
            registered: Mutex::new(vec![None; config.registrations.len()]),
            requests: config.registrations,
        });
        // Heartbeats start first: with many registrations, the first ones must be renewed while
        // the last ones are still being registered.
        let stop = CancellationToken::new();
        let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), every, stop.clone()));
        if let Err(err) = shared.register_all((0..shared.requests.len()).collect()).await {
            stop.cancel();
            let _ = heartbeats.await;
            return Err(err);
        }
        Ok(Self { shared, stop, heartbeats })
    }

    /// The current registrations, with their ids and epochs.
    pub fn registrations(&self) -> Vec<Registration> {
        self.shared.registered.lock().unwrap_or_else(|p| p.into_inner()).iter().flatten().cloned().collect()
    }

    /// Stops new requests from being routed here; in-flight ones continue.
    pub async fn drain(&self) -> Result<(), ClientError> {
        for registration in self.registrations() {
            let path = format!("/v1/registrations/{}/drain", registration.id);
            self.shared.call::<serde_json::Value>(reqwest::Method::POST, &path, None).await?;
        }
        Ok(())
    }

    /// Stops the heartbeats and unregisters everything.
    pub async fn stop(self) -> Result<(), ClientError> {
        let registrations = self.registrations();
        self.stop.cancel();
        let _ = self.heartbeats.await;
        for registration in registrations {
            let path = format!("/v1/registrations/{}", registration.id);
            match self.shared.call::<serde_json::Value>(reqwest::Method::DELETE, &path, None).await {
                Ok(_) | Err(ClientError::Refused { status: 404, .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        if let Err(err) = shared.heartbeat().await {
            tracing::warn!(error = %err, "heartbeat failed; retrying at the next tick");
        }
    }
}
