//! The composition root: opens storage, starts Raft, binds the listeners and runs until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::cluster::Cluster;
use crate::cluster::ClusterConfig;
use crate::config::NodeConfig;
use crate::metrics::ListenerKind;
use crate::peer;
use crate::proxy::DataPlane;
use crate::raft;
use crate::raft::AppliedView;
use crate::raft::PeerClient;
use crate::raft::PeerNetwork;
use crate::raft::PeerNode;
use crate::raft::Storage;
use crate::serve;
use crate::serve::ConnectionLimits;
use crate::serve::Listener;
use crate::tls;

/// Opens the node's storage, starts Raft and returns the cluster layer. Background duties
/// (joining, probing the leader, promoting learners) are started by [`run`].
pub async fn open(config: &NodeConfig) -> anyhow::Result<Cluster> {
    let view = AppliedView::default();
    let storage = {
        let (dir, node_id, cache, view) = (config.data_dir.clone(), config.node_id, config.cache_bytes, view.clone());
        tokio::task::spawn_blocking(move || Storage::open(&dir, node_id, cache, view)).await??
    };
    let identity = storage.identity;
    config.tokens.attach(Arc::new(view.clone()));
    let mut state_machine = storage.state_machine;
    let retention = config.raft.retention();
    state_machine.set_retention(retention.clone());
    if let Some(path) = &config.audit_log {
        state_machine.set_audit_sink(audit_log(path).await?);
    }
    tracing::info!(
        node = identity.node_id,
        incarnation = format_args!("{:016x}", identity.incarnation),
        dir = %config.data_dir.display(),
        "data directory opened"
    );
    let peers = PeerClient::new(config.node_id, &config.cluster_secret, config.peer_tls.as_ref())
        .map_err(anyhow::Error::msg)?;
    // Elections start disabled: `Cluster::gate_elections` enables them once the membership admits
    // this incarnation.
    let raft_config = config.raft.to_config("switchboard")?;
    let network = PeerNetwork { client: peers.clone() };
    let raft = raft::Raft::new(config.node_id, raft_config, network, storage.log_store, state_machine)
        .await
        .context("raft failed to start")?;
    let cluster_config = ClusterConfig {
        node_id: config.node_id,
        node: PeerNode { incarnation: Some(identity.incarnation), ..config.advertised.clone() },
        initial_voters: config.initial_voters.clone(),
        request_timeout: config.write_timeout,
        limits: config.limits,
        listeners: config.address_policy.own().to_vec(),
        policy: config.address_policy.clone(),
        max_stale_routing: config.max_stale_routing,
        retention,
    };
    Ok(Cluster::new(cluster_config, raft, view, peers, identity))
}

/// Runs a node until `shutdown` completes, then stops it gracefully.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let cluster = open(&config).await?;
    let edge_tls = match &config.tls {
        Some(identity) => Some(TlsAcceptor::from(tls::server_config(identity, None).map_err(anyhow::Error::msg)?)),
        None => None,
    };
    let peer_tls = match &config.peer_tls {
        Some(peer) => {
            Some(TlsAcceptor::from(tls::server_config(&peer.identity, Some(&peer.ca)).map_err(anyhow::Error::msg)?))
        }
        None => None,
    };
    let data = Listener {
        tcp: bind(config.data_addr, "data plane").await?,
        tls: edge_tls.clone(),
        limits: ConnectionLimits::new(config.data_plane.max_connections, config.data_plane.max_connections_per_ip),
        kind: ListenerKind::DataPlane,
    };
    let api = Listener {
        tcp: bind(config.api_addr, "control API").await?,
        tls: edge_tls,
        limits: ConnectionLimits::new(API_MAX_CONNECTIONS, API_MAX_CONNECTIONS_PER_IP),
        kind: ListenerKind::ControlApi,
    };
    let peer = Listener {
        tcp: bind(config.peer_addr, "peer endpoint").await?,
        tls: peer_tls,
        limits: ConnectionLimits::new(API_MAX_CONNECTIONS, API_MAX_CONNECTIONS_PER_IP),
        kind: ListenerKind::Peer,
    };
    let health = match config.health_addr {
        Some(addr) => Some(Listener {
            tcp: bind(addr, "health checks").await?,
            tls: None,
            limits: ConnectionLimits::new(HEALTH_MAX_CONNECTIONS, HEALTH_MAX_CONNECTIONS / 4),
            kind: ListenerKind::Health,
        }),
        None => None,
    };
    tracing::info!(
        node = config.node_id,
        data = %data.tcp.local_addr()?,
        api = %api.tcp.local_addr()?,
        peer = %peer.tcp.local_addr()?,
        advertised = %config.advertised.addr,
        edge_tls = config.tls.is_some(),
        peer_mtls = config.peer_tls.is_some(),
        "node started"
    );
    if config.tokens.is_dev_mode() {
        tracing::warn!(
            "DEV MODE: no API tokens are configured; anyone who reaches the control API may register, unregister, \
             change policies and membership, and anyone may broadcast. Configure --tokens-file for production."
        );
    } else {
        tracing::info!(tokens = config.tokens.len(), "API tokens loaded");
    }
    if config.peer_tls.is_none() {
        tracing::warn!(
            "the peer endpoint is plaintext: only the cluster secret protects it; configure --peer-tls-* for production"
        );
    }

    let stop = CancellationToken::new();
    let mut servers = JoinSet::new();
    let prober = crate::health::Prober::new(cluster.clone(), config.health.clone(), config.address_policy.clone());
    let api_state = api::ApiState {
        cluster: cluster.clone(),
        tokens: config.tokens.clone(),
        policy: config.address_policy.clone(),
        https: config.tls.is_some(),
        prober: prober.clone(),
        watches: api::Watches::new(api::MAX_WATCHES, stop.clone()),
    };
    let api_router = api::router(api_state.clone());
    let key = Arc::new(crate::peer_auth::PeerKey::new(&config.cluster_secret));
    let peer_router = peer::router(peer::PeerState { cluster: cluster.clone(), key, prober: prober.clone() });
    let health = health.map(|listener| {
        let router = api::health_router(api_state);
        (listener, router)
    });
    for (listener, router) in [(api, api_router), (peer, peer_router)].into_iter().chain(health) {
        let stop = stop.clone();
        servers.spawn(serve::serve(listener, stop, move |_| TowerToHyperService::new(router.clone())));
    }
    let plane = Arc::new(DataPlane::new(
        cluster.view().clone(),
        config.data_plane.clone(),
        config.tokens.clone(),
        config.address_policy.clone(),
    ));
    let own: Arc<dyn serve::OwnLoop> = crate::proxy::fast::FastPath::new(plane.clone());
    servers.spawn(serve::serve_with(data, stop.clone(), Some(own), {
        let plane = plane.clone();
        move |client| {
            let plane = plane.clone();
            hyper::service::service_fn(move |request| {
                let plane = plane.clone();
                let client = client.clone();
                async move { Ok::<_, std::convert::Infallible>(plane.handle(request, client).await) }
            })
        }
    }));

    let duties = cluster.start_duties();
    let probing = tokio::spawn(prober.run(stop.clone()));
    let forget = tokio::spawn(forget_unregistered_endpoints(plane, cluster.view().clone()));

    tokio::select! {
        () = shutdown => {
            // Report not ready, and keep serving while load balancers notice and move away, so no
            // connection is refused or cut while it is still being sent here.
            tracing::info!(drain_ms = config.drain.as_millis() as u64, "shutdown requested; draining");
            cluster.begin_stopping();
            tokio::time::sleep(config.drain).await;
        }
        Some(result) = servers.join_next() => tracing::error!(?result, "a listener stopped unexpectedly"),
        fatal = raft_fatal(cluster.clone()) => {
            // Storage failed (a full disk, an I/O error): nothing more may be acknowledged, and
            // openraft cannot resume. Exit, so that a restart recovers from what is durable.
            stop.cancel();
            duties.stop().await;
            forget.abort();
            while servers.join_next().await.is_some() {}
            bail!("raft stopped: {fatal}; exiting so that a restart recovers from the data on disk");
        }
    }
    stop.cancel();
    duties.stop().await;
    forget.abort();
    let _ = probing.await;
    // Each listener lets its open requests finish for at most `serve::DRAIN_TIMEOUT`.
    while servers.join_next().await.is_some() {}
    cluster.raft().shutdown().await.ok();
    tracing::info!("node stopped");
    Ok(())
}

/// Opens the audit log (`-` is standard output) and starts the task that appends to it: one JSON
/// line per record, flushed after each burst.
async fn audit_log(path: &std::path::Path) -> anyhow::Result<tokio::sync::mpsc::Sender<crate::registry::AuditRecord>> {
    use tokio::io::AsyncWriteExt;
    let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = if path.as_os_str() == "-" {
        Box::new(tokio::io::stdout())
    } else {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .with_context(|| format!("cannot open the audit log {}", path.display()))?;
        Box::new(file)
    };
    let (sink, mut records) = tokio::sync::mpsc::channel::<crate::registry::AuditRecord>(16_384);
    tokio::spawn(async move {
        while let Some(first) = records.recv().await {
            let mut lines = Vec::new();
            for record in std::iter::once(first).chain(std::iter::from_fn(|| records.try_recv().ok())) {
                if serde_json::to_writer(&mut lines, &record).is_ok() {
                    lines.push(b'\n');
                }
            }
            if let Err(err) = async {
                out.write_all(&lines).await?;
                out.flush().await
            }
            .await
            {
                tracing::error!(error = %err, "writing the audit log failed");
            }
        }
    });
    Ok(sink)
}

/// Completes when Raft stops with a fatal error (a storage failure), with its description.
async fn raft_fatal(cluster: Cluster) -> String {
    let mut metrics = cluster.raft().metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the raft core ended".to_owned();
        }
    }
}

/// Connections the control API and the peer endpoint each accept at once.
const API_MAX_CONNECTIONS: usize = 1024;
/// ... and from one client address.
const API_MAX_CONNECTIONS_PER_IP: usize = 128;
/// Connections the health listener accepts at once.
const HEALTH_MAX_CONNECTIONS: usize = 64;

/// Keeps per-endpoint health only for endpoints that are still registered.
async fn forget_unregistered_endpoints(plane: Arc<DataPlane>, view: AppliedView) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let applied = view.load();
        plane.forget(|id| applied.state.get(id).is_some());
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for the {what}"))
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
