//! Switchboard's client library, for services written in Rust: register with the cluster, keep
//! leases alive in the background, re-register after the cluster lost a registration, fail over
//! between router addresses, drain, and unregister on graceful shutdown ([`Registrar`]); and a
//! typed client of the control API ([`ControlClient`]), with a local copy of a contract's
//! registrations kept up to date by blocking reads ([`ContractWatch`]), and the cluster's events
//! read across router failures ([`EventStream`]).
//!
//! It depends on the wire types (`switchboard-proto`), an HTTP client and tokio only: a service
//! that embeds it does not build the server.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard_client::ClientError> {
//! use switchboard_client::Registrar;
//! use switchboard_client::RegistrarConfig;
//! use switchboard_proto::registry::Check;
//! use switchboard_proto::registry::CheckKind;
//! use switchboard_proto::registry::RegistrationRequest;
//!
//! let request = RegistrationRequest {
//!     address: "http://10.0.0.5:9000/calc".into(),
//!     contract_name: "ICalculator".into(),
//!     contract_namespace: "http://tempuri.org/".into(),
//!     ttl_ms: Some(5_000),
//!     weight: None,
//!     metadata: Default::default(),
//!     // Probed with an http GET of /health (every 2 s by default) instead of the cluster default.
//!     check: Some(Check { kind: CheckKind::Http, ..Check::default() }),
//! };
//! let config = RegistrarConfig::new(vec!["http://lb:8081".into()], vec![request]);
//! let registrar = Registrar::start(config).await?;
//! // ... serve ...
//! registrar.stop().await?;
//! # Ok(()) }
//! ```

mod admin;
mod events;

pub use admin::Answer;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_proto::api::ClusterView;
use switchboard_proto::api::ErrorBody;
use switchboard_proto::api::HeartbeatReply;
use switchboard_proto::api::HeartbeatRequest;
use switchboard_proto::api::LeaseRef;
use switchboard_proto::api::Refusal;
use switchboard_proto::api::RegistrationList;
use switchboard_proto::api::RegistrationView;
use switchboard_proto::registry::Lease;
use switchboard_proto::registry::Registration;
use switchboard_proto::registry::RegistrationId;
use switchboard_proto::registry::RegistrationRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;

pub use self::events::EventStream;
pub use self::events::Received;

/// Registrations sent at once when a service registers many.
const REGISTER_CONCURRENCY: usize = 16;

/// A contract's registrations kept up to date with blocking reads (`?index=&wait=`); made by
/// [`ControlClient::watch`]. Each read waits on whichever router answers, so the watch survives
/// the loss of the router it was reading from; a router behind what the watch has seen is not
/// believed until it has caught up (the copy never goes back in time).
#[derive(Debug)]
pub struct ContractWatch<'a> {
    client: &'a ControlClient,
    /// The contract's part of the list query, encoded.
    query: String,
    /// The applied index the copy reflects; none before the first read.
    index: Option<u64>,
    current: Vec<RegistrationView>,
}

impl ContractWatch<'_> {
    /// The local copy, as of the last [`Self::next`].
    pub fn current(&self) -> &[RegistrationView] {
        &self.current
    }

    /// The cluster's applied index the copy reflects.
    pub fn index(&self) -> Option<u64> {
        self.index
    }

    /// The contract's registrations: at once on the first call, then as soon as they differ
    /// from the copy (a registration added, removed, drained, or its health changed). Reads
    /// wake on any change of the cluster and are compared, as Consul's clients do.
    pub async fn next(&mut self) -> Result<&[RegistrationView], ClientError> {
        loop {
            let (index, list) = self.read().await?;
            let first = self.index.is_none();
            if self.index.is_some_and(|seen| index < seen) {
                // The wait ended on a router that has applied less than the copy reflects.
                continue;
            }
            self.index = Some(index);
            if first || list != self.current {
                self.current = list;
                return Ok(&self.current);
            }
        }
    }

    /// One read of every page: the first blocks on the copy's index, the rest follow at once.
    async fn read(&self) -> Result<(u64, Vec<RegistrationView>), ClientError> {
        let wait = self.client.request_timeout.saturating_sub(Duration::from_secs(1)).max(Duration::from_millis(500));
        let blocking = match self.index {
            Some(index) => format!("&index={index}&wait={}ms", wait.as_millis()),
            None => String::new(),
        };
        let base = format!("/v1/registrations?{}&limit=5000", self.query);
        let mut page: RegistrationList =
            self.client.call(Method::GET, &format!("{base}{blocking}"), None::<&()>).await?;
        // Later pages may reflect later changes; the next read then wakes at once for them.
        let index = page.applied_index;
        let mut all = std::mem::take(&mut page.registrations);
        while let Some(cursor) = page.next_cursor.take() {
            page = self.client.call(Method::GET, &format!("{base}&cursor={cursor}"), None::<&()>).await?;
            all.append(&mut page.registrations);
        }
        Ok((index, all))
    }
}

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

/// A typed client of the control API. Calls go to the router that answered last; a router that
/// cannot be reached or answers 5xx is skipped for the next one (three rounds, with a pause
/// between rounds, so that an election in progress is waited out). A 4xx answer is final.
#[derive(Debug)]
pub struct ControlClient {
    http: reqwest::Client,
    /// The longest a call may take; a blocking read waits a little less.
    request_timeout: Duration,
    routers: Vec<String>,
    /// Index of the router that answered last.
    current: AtomicUsize,
}

impl ControlClient {
    /// A client of the control API at `routers` (base URLs: a load balancer's, or several
    /// nodes'), sending `token` as `Authorization: Bearer` (none for a cluster in dev mode).
    pub fn new(routers: Vec<String>, token: Option<&str>, request_timeout: Duration) -> Result<Self, ClientError> {
        Self::with_roots(routers, token, request_timeout, Vec::new())
    }

    /// `POST /v1/registrations`: registers (or refreshes) an endpoint.
    pub async fn register(&self, request: &RegistrationRequest) -> Result<Registration, ClientError> {
        self.call(Method::POST, "/v1/registrations", Some(request)).await
    }

    /// `GET /v1/registrations/{id}`: the registration with its check and health.
    pub async fn get(&self, id: RegistrationId) -> Result<RegistrationView, ClientError> {
        self.call(Method::GET, &format!("/v1/registrations/{id}"), None::<&()>).await
    }

    /// `GET /v1/registrations`: one page of at most `limit` registrations after `cursor`.
    pub async fn list_page(&self, limit: usize, cursor: Option<&str>) -> Result<RegistrationList, ClientError> {
        let path = match cursor {
            Some(cursor) => format!("/v1/registrations?limit={limit}&cursor={cursor}"),
            None => format!("/v1/registrations?limit={limit}"),
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// Every registration with its check and health, walking the pages.
    pub async fn list(&self) -> Result<Vec<RegistrationView>, ClientError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_page(5_000, cursor.as_deref()).await?;
            all.extend(page.registrations);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// `DELETE /v1/registrations/{id}`: answers the registration removed.
    pub async fn unregister(&self, id: RegistrationId) -> Result<Registration, ClientError> {
        self.call(Method::DELETE, &format!("/v1/registrations/{id}"), None::<&()>).await
    }

    /// `POST /v1/registrations/{id}/drain`: no new requests are routed to it.
    pub async fn drain(&self, id: RegistrationId) -> Result<Registration, ClientError> {
        self.call(Method::POST, &format!("/v1/registrations/{id}/drain"), None::<&()>).await
    }

    /// `POST /v1/heartbeat`: renews the leases, each of the epoch it names.
    pub async fn heartbeat(&self, leases: &[Lease]) -> Result<HeartbeatReply, ClientError> {
        let ids = leases.iter().map(|l| LeaseRef::WithEpoch { id: l.id.to_string(), epoch: l.epoch }).collect();
        self.call(Method::POST, "/v1/heartbeat", Some(&HeartbeatRequest { ids })).await
    }

    /// `GET /v1/cluster`: the answering node's view of the cluster.
    pub async fn cluster(&self) -> Result<ClusterView, ClientError> {
        self.call(Method::GET, "/v1/cluster", None::<&()>).await
    }

    /// Watches the registrations of the contract `namespace`/`name`: a local copy kept up to
    /// date with blocking reads, failing over between the routers as every call does.
    pub fn watch(&self, namespace: &str, name: &str) -> ContractWatch<'_> {
        let pairs = [("contract_namespace", namespace), ("contract_name", name)];
        let query = reqwest::Url::parse_with_params("http://router/", pairs)
            .ok()
            .and_then(|url| url.query().map(str::to_owned))
            .unwrap_or_default();
        ContractWatch { client: self, query, index: None, current: Vec::new() }
    }

    /// Calls the routers in turn until one serves the request.
    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, body, |request| request).await?;
        response.json().await.map_err(|e| ClientError::Unavailable(e.to_string()))
    }

    /// Sends the request (as `customize` leaves it) to the routers in turn until one answers
    /// with success, which is returned unread; a 4xx answer is a refusal.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        customize: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        self.try_routers(method, path, body, customize).await.map_err(|unserved| match unserved {
            Unserved::Refused(refusal) => refusal,
            Unserved::Exhausted { last, .. } => ClientError::Unavailable(last),
        })
    }

    /// The failover loop of every call: the routers in turn, from the one that answered last,
    /// three rounds with a pause between rounds (an election in progress is waited out); a
    /// router that cannot be reached or answers 5xx is skipped for the next.
    async fn try_routers<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        customize: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Unserved> {
        let attempts = self.routers.len() * 3;
        let (mut answer, mut last) = (None, String::from("no router configured"));
        for attempt in 0..attempts {
            let index = (self.current.load(Ordering::Relaxed) + attempt) % self.routers.len();
            let router = &self.routers[index];
            let mut request = self.http.request(method.clone(), format!("{}{path}", router.trim_end_matches('/')));
            if let Some(body) = body {
                request = request.json(body);
            }
            match customize(request).send().await {
                Ok(response) if response.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(response) if response.status().is_client_error() => {
                    return Err(Unserved::Refused(refusal(response).await));
                }
                Ok(response) => {
                    last = format!("{router} answered {}", response.status());
                    answer = Some(refusal(response).await);
                }
                Err(err) => last = format!("{router}: {}", root_cause(&err)),
            }
            if attempt + 1 >= self.routers.len() {
                // Every router was tried once: pause before going round again (an election).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(Unserved::Exhausted { answer, last })
    }

    /// Moves on from the router that answered last (it failed the caller after answering).
    fn skip_current(&self) {
        let next = (self.current.load(Ordering::Relaxed) + 1) % self.routers.len();
        self.current.store(next, Ordering::Relaxed);
    }
}

/// How the failover loop ended without a success.
enum Unserved {
    /// A router refused the request (4xx): final.
    Refused(ClientError),
    /// Every try failed: the last error answer a router gave (5xx), if any, and what happened
    /// last.
    Exhausted { answer: Option<ClientError>, last: String },
}

/// The refusal an error answer carries (`{"code", "message"}`), or its status alone.
async fn refusal(response: reqwest::Response) -> ClientError {
    let status = response.status();
    let reason = status.canonical_reason().unwrap_or("error").to_owned();
    let error = response.json::<ErrorBody>().await.unwrap_or(ErrorBody { code: "unknown".into(), message: reason });
    ClientError::Refused { status: status.as_u16(), code: error.code, message: error.message }
}

/// The innermost cause of a failed send (reqwest's own message says only "error sending
/// request").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
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
    control: ControlClient,
    requests: Vec<RegistrationRequest>,
    /// The current registration of each request (same order), with its epoch.
    registered: Mutex<Vec<Option<Registration>>>,
}

/// A running registration: heartbeats go out until [`Registrar::stop`].
#[derive(Debug)]
pub struct Registrar {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    heartbeats: JoinHandle<()>,
}

impl Shared {
    fn registered(&self) -> std::sync::MutexGuard<'_, Vec<Option<Registration>>> {
        self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers the given requests, several at a time.
    async fn register_all(self: &Arc<Self>, indexes: Vec<usize>) -> Result<(), ClientError> {
        let mut pending = indexes.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < REGISTER_CONCURRENCY {
                let Some(index) = pending.next() else { break };
                let shared = self.clone();
                running.spawn(async move { shared.register(index).await });
            }
            match running.join_next().await {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(err))) => return Err(err),
                Some(Err(join)) => return Err(ClientError::Unavailable(format!("registration task failed: {join}"))),
            }
        }
    }

    async fn register(&self, index: usize) -> Result<(), ClientError> {
        let registration = self.control.register(&self.requests[index]).await?;
        self.registered()[index] = Some(registration);
        Ok(())
    }

    /// One heartbeat for every live registration; re-registers what the cluster lost.
    async fn heartbeat(self: &Arc<Self>) -> Result<(), ClientError> {
        let leased: Vec<(usize, Lease)> = self
            .registered()
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().filter(|r| r.ttl_ms.is_some()).map(|r| (i, r.lease())))
            .collect();
        if leased.is_empty() {
            return Ok(());
        }
        let leases: Vec<Lease> = leased.iter().map(|(_, lease)| *lease).collect();
        let reply = self.control.heartbeat(&leases).await?;
        let mut lost = Vec::new();
        for refused in reply.refused {
            let Some((index, _)) = leased.iter().find(|(_, lease)| lease.id == refused.id) else { continue };
            match refused.reason {
                Refusal::NotFound => {
                    tracing::warn!(id = %refused.id, "the cluster lost a registration; registering again");
                    lost.push(*index);
                }
                Refusal::Forbidden => {
                    tracing::error!(id = %refused.id, "the token may not renew this registration; no longer renewing it");
                    self.registered()[*index] = None;
                }
                Refusal::EpochMismatch => {
                    // Another instance registered the same address since: it owns the entry now.
                    tracing::warn!(id = %refused.id, "registration taken over by a newer instance; no longer renewing it");
                    self.registered()[*index] = None;
                }
            }
        }
        self.register_all(lost).await
    }
}

impl Registrar {
    /// Registers everything (failing over between routers) and starts the heartbeats.
    pub async fn start(config: RegistrarConfig) -> Result<Self, ClientError> {
        let control = ControlClient::new(config.routers, config.token.as_deref(), config.request_timeout)?;
        let shortest_ttl = config.registrations.iter().filter_map(|r| r.ttl_ms).min();
        let every = config.heartbeat_every.unwrap_or_else(|| Duration::from_millis(shortest_ttl.unwrap_or(30_000) / 3));
        let shared = Arc::new(Shared {
            control,
            registered: Mutex::new(vec![None; config.registrations.len()]),
            requests: config.registrations,
        });
        // Heartbeats start first: with many registrations, the first ones must be renewed while
        // the last ones are still being registered.
        let (stop, stopped) = watch::channel(false);
        let heartbeats = tokio::spawn(heartbeat_loop(shared.clone(), every, stopped));
        if let Err(err) = shared.register_all((0..shared.requests.len()).collect()).await {
            let _ = stop.send(true);
            let _ = heartbeats.await;
            return Err(err);
        }
        Ok(Self { shared, stop, heartbeats })
    }

    /// The current registrations, with their ids and epochs.
    pub fn registrations(&self) -> Vec<Registration> {
        self.shared.registered().iter().flatten().cloned().collect()
    }

    /// The control API client the registrar uses.
    pub fn control(&self) -> &ControlClient {
        &self.shared.control
    }

    /// Stops new requests from being routed here; in-flight ones continue.
    pub async fn drain(&self) -> Result<(), ClientError> {
        for registration in self.registrations() {
            self.shared.control.drain(registration.id).await?;
        }
        Ok(())
    }

    /// Stops the heartbeats and unregisters everything.
    pub async fn stop(self) -> Result<(), ClientError> {
        let registrations = self.registrations();
        let _ = self.stop.send(true);
        let _ = self.heartbeats.await;
        for registration in registrations {
            match self.shared.control.unregister(registration.id).await {
                Ok(_) | Err(ClientError::Refused { status: 404, .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if let Err(err) = shared.heartbeat().await {
            tracing::warn!(error = %err, "heartbeat failed; retrying at the next tick");
        }
    }
}
