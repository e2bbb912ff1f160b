//! Command line and environment, parsed once into a validated [`NodeConfig`].
//!
//! Every flag of `switchboard serve` can also be set through `SWITCHBOARD_<FLAG>` (upper case,
//! `-` becomes `_`). Nothing else in the program reads the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::auth::Tokens;
use crate::cluster::RegistryLimits;
use crate::netpolicy::AddressPolicy;
use crate::netpolicy::is_host_port;
use crate::proxy::DataPlaneConfig;
use crate::raft::NodeId;
use crate::raft::PeerNode;
use crate::raft::RaftTuning;
use crate::telemetry::LogFormat;
use crate::tls::Identity;
use crate::tls::PeerTls;

/// Shortest accepted cluster secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Flags of `switchboard serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// This node's id; unique in the cluster and stable across restarts.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: NodeId,
    /// Directory for the Raft log and snapshots; created if missing.
    #[arg(long, env = "SWITCHBOARD_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Listener of the data plane, which routes client messages.
    #[arg(long, env = "SWITCHBOARD_DATA_ADDR", default_value = "0.0.0.0:8080")]
    pub data_addr: SocketAddr,
    /// Listener of the control API: registrations, cluster admin, health.
    #[arg(long, env = "SWITCHBOARD_API_ADDR", default_value = "0.0.0.0:8081")]
    pub api_addr: SocketAddr,
    /// Listener of the peer endpoint: Raft and forwarded writes. Keep it off the load balancer.
    #[arg(long, env = "SWITCHBOARD_PEER_ADDR", default_value = "0.0.0.0:8082")]
    pub peer_addr: SocketAddr,
    /// Host (name or IP) other nodes use to reach this node's peer endpoint [default: the
    /// peer-addr host].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE")]
    pub advertise: Option<String>,
    /// Peer endpoints of the initial voters, `id=host:port,...`; the same list on every node.
    #[arg(long, env = "SWITCHBOARD_PEERS")]
    pub peers: String,
    /// Shared secret that authenticates peers to each other (at least 16 bytes). Prefer
    /// --cluster-secret-file: a value on the command line shows in `ps`.
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_SECRET",
        hide_env_values = true,
        required_unless_present = "cluster_secret_file",
        conflicts_with = "cluster_secret_file"
    )]
    pub cluster_secret: Option<String>,
    /// File holding the cluster secret (surrounding white space is ignored).
    #[arg(long, env = "SWITCHBOARD_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_MS", default_value_t = 40)]
    pub heartbeat_ms: u64,
    /// Lower bound of the Raft election timeout in milliseconds; the upper bound is twice this.
    /// A follower campaigns after hearing nothing from its leader for the upper bound (the
    /// leader's lease) plus its own random timeout between the two bounds.
    #[arg(long, env = "SWITCHBOARD_ELECTION_TIMEOUT_MS", default_value_t = 120)]
    pub election_timeout_ms: u64,
    /// How long a write or linearizable read may wait for a leader and its commit, in ms.
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT_MS", default_value_t = 5_000)]
    pub write_timeout_ms: u64,
    /// Deadline for connecting to an endpoint, in ms.
    #[arg(long, env = "SWITCHBOARD_CONNECT_TIMEOUT_MS", default_value_t = 1_000)]
    pub connect_timeout_ms: u64,
    /// Deadline for one endpoint to answer a routed request (response headers), in ms.
    #[arg(long, env = "SWITCHBOARD_TRY_TIMEOUT_MS", default_value_t = 15_000)]
    pub try_timeout_ms: u64,
    /// Deadline for a routed request across all the endpoints it tries, in ms.
    #[arg(long, env = "SWITCHBOARD_ROUTE_TIMEOUT_MS", default_value_t = 30_000)]
    pub route_timeout_ms: u64,
    /// Most endpoints one routed request tries.
    #[arg(long, env = "SWITCHBOARD_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: usize,
    /// Largest broadcast body, in KiB (broadcast bodies are held in memory).
    #[arg(long, env = "SWITCHBOARD_BROADCAST_MAX_BODY_KB", default_value_t = 1024)]
    pub broadcast_max_body_kb: usize,
    /// Most endpoints a broadcast calls at once.
    #[arg(long, env = "SWITCHBOARD_BROADCAST_CONCURRENCY", default_value_t = 32)]
    pub broadcast_concurrency: usize,
    /// Most requests in flight from this node to one endpoint; beyond it the endpoint is skipped.
    #[arg(long, env = "SWITCHBOARD_MAX_ENDPOINT_REQUESTS", default_value_t = 1024)]
    pub max_endpoint_requests: u32,
    /// Most open client connections on the data plane; more are refused.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Most open data-plane connections from one client address [default: --max-connections,
    /// since a load balancer in front is one address].
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// A separate listener for `/health/*` and `/metrics` only, so that health checks answer even
    /// while the control API is flooded [default: none; they are on the control API as well].
    #[arg(long, env = "SWITCHBOARD_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// JSON file of API tokens and their scopes (see docs/security.md). Without tokens the node
    /// runs in dev mode: every caller may do everything.
    #[arg(long, env = "SWITCHBOARD_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// The same JSON as --tokens-file, inline.
    #[arg(long, env = "SWITCHBOARD_TOKENS", hide_env_values = true)]
    pub tokens: Option<String>,
    /// Networks endpoint addresses may be in, comma-separated CIDRs [default: any not denied].
    #[arg(long, env = "SWITCHBOARD_ALLOW_NETWORKS", value_delimiter = ',')]
    pub allow_networks: Vec<String>,
    /// Networks endpoint addresses may not be in, on top of link-local, metadata and multicast.
    #[arg(long, env = "SWITCHBOARD_DENY_NETWORKS", value_delimiter = ',')]
    pub deny_networks: Vec<String>,
    /// URL schemes endpoint addresses may use.
    #[arg(long, env = "SWITCHBOARD_ALLOW_SCHEMES", value_delimiter = ',', default_value = "http,https")]
    pub allow_schemes: Vec<String>,
    /// PEM certificate chain for HTTPS on the data plane and the control API.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of this node for mutual TLS on the peer endpoint.
    #[arg(long, env = "SWITCHBOARD_PEER_TLS_CERT", requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,
    /// PEM private key for --peer-tls-cert.
    #[arg(long, env = "SWITCHBOARD_PEER_TLS_KEY", requires_all = ["peer_tls_cert", "peer_tls_ca"])]
    pub peer_tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signs every node's peer certificate.
    #[arg(long, env = "SWITCHBOARD_PEER_TLS_CA", requires_all = ["peer_tls_cert", "peer_tls_key"])]
    pub peer_tls_ca: Option<PathBuf>,
    /// On SIGTERM, how long the node keeps serving while it reports not ready, so load balancers
    /// take it out before it stops listening (ms).
    #[arg(long, env = "SWITCHBOARD_DRAIN_MS", default_value_t = 1_000)]
    pub drain_ms: u64,
    /// Stop reporting the data plane ready (`/health/ready?plane=data`) once no leader has
    /// confirmed this node's view for this long (`30s`, `500ms`, `2m`) [default: no limit: a node
    /// that was caught up routes from its last view through any outage].
    #[arg(long, env = "SWITCHBOARD_MAX_STALE_ROUTING", value_parser = parse_duration)]
    pub max_stale_routing: Option<Duration>,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, env = "SWITCHBOARD_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Build a snapshot (and compact the log) every this many entries.
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_EVERY", default_value_t = 5_000)]
    pub snapshot_every: u64,
    /// Largest piece of a snapshot sent to a node catching up, in KiB (one peer request each;
    /// 4 to 4096).
    #[arg(long, env = "SWITCHBOARD_SNAPSHOT_CHUNK_KB", default_value_t = 4096)]
    pub snapshot_chunk_kb: usize,
    /// Most registrations the cluster holds (enforced by the leader).
    #[arg(long, env = "SWITCHBOARD_MAX_REGISTRATIONS", default_value_t = 500_000)]
    pub max_registrations: usize,
    /// Most registry data the cluster holds, in MiB (addresses, names and metadata; enforced by
    /// the leader).
    #[arg(long, env = "SWITCHBOARD_MAX_REGISTRY_MB", default_value_t = 256)]
    pub max_registry_mb: u64,
    /// Also write every audit record, as one JSON line, to this file (appended), or to standard
    /// output with `-`: a copy an operator ships elsewhere.
    #[arg(long, env = "SWITCHBOARD_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,
    /// Memory for sled's page cache, in MiB.
    #[arg(long, env = "SWITCHBOARD_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// Log output format.
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The active check of registrations that name none and whose contract policy names none:
    /// `tcp` (a connect), `none`, or `http:/PATH` (a GET), every 2 s with a 1 s timeout, critical
    /// after 3 failures, passing after 2 successes. Give every node the same value.
    #[arg(long, env = "SWITCHBOARD_DEFAULT_CHECK", default_value = "tcp", value_parser = parse_check)]
    pub default_check: crate::registry::Check,
    /// Most registrations the cluster removes by their check's `deregister_after_ms` per minute.
    #[arg(long, env = "SWITCHBOARD_DEREGISTER_MAX_PER_MINUTE", default_value_t = 60)]
    pub deregister_max_per_minute: u32,
    /// Most health probes this node runs at once.
    #[arg(long, env = "SWITCHBOARD_PROBE_CONCURRENCY", default_value_t = 512)]
    pub probe_concurrency: usize,
    /// Most health probes this node starts per second.
    #[arg(long, env = "SWITCHBOARD_PROBE_RATE", default_value_t = 5_000)]
    pub probe_rate: u32,
}

fn parse_check(text: &str) -> Result<crate::registry::Check, String> {
    crate::registry::Check::parse_default(text)
}

/// Largest snapshot chunk, in KiB: the peer endpoint accepts one chunk plus framing per request.
pub const MAX_SNAPSHOT_CHUNK_KB: usize = 4096;

/// A flag value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--peers: {0}")]
    Peers(String),
    #[error("--cluster-secret must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    #[error("--cluster-secret-file: cannot read {path}: {cause}")]
    SecretFile { path: String, cause: String },
    #[error("--advertise: {0}")]
    Advertise(String),
    #[error("--election-timeout-ms must be at least three times --heartbeat-ms")]
    Timing,
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--snapshot-chunk-kb must be between 4 and {MAX_SNAPSHOT_CHUNK_KB}")]
    SnapshotChunk,
    #[error("--data-addr, --api-addr, --peer-addr and --health-addr must be different listeners")]
    SameListener,
    #[error("{0}")]
    Tokens(String),
    #[error("address policy: {0}")]
    AddressPolicy(String),
    #[error("--tls-cert: {0}")]
    Tls(String),
    #[error("--peer-tls-cert: {0}")]
    PeerTls(String),
}

/// Validated configuration of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub data_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub health_addr: Option<SocketAddr>,
    /// How peers reach this node.
    pub advertised: PeerNode,
    pub initial_voters: BTreeMap<NodeId, PeerNode>,
    pub cluster_secret: String,
    pub raft: RaftTuning,
    pub write_timeout: Duration,
    /// Not-ready period before a graceful stop closes the listeners.
    pub drain: Duration,
    /// See `ServeArgs::max_stale_routing`.
    pub max_stale_routing: Option<Duration>,
    pub data_plane: DataPlaneConfig,
    pub worker_threads: Option<usize>,
    pub tokens: Arc<Tokens>,
    pub address_policy: Arc<AddressPolicy>,
    pub tls: Option<Identity>,
    pub peer_tls: Option<PeerTls>,
    pub cache_bytes: u64,
    pub log_format: LogFormat,
    pub limits: RegistryLimits,
    pub audit_log: Option<PathBuf>,
    pub health: crate::health::HealthConfig,
}

impl TryFrom<ServeArgs> for NodeConfig {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let initial_voters = parse_peers(&args.peers)?;
        let peer_tls = match (args.peer_tls_cert, args.peer_tls_key, args.peer_tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(PeerTls { identity: Identity { cert, key }, ca }),
            _ => None,
        };
        if let Some(tls) = &peer_tls {
            crate::tls::server_config(&tls.identity, Some(&tls.ca)).map_err(ConfigError::PeerTls)?;
            crate::tls::peer_client_config(tls).map_err(ConfigError::PeerTls)?;
            crate::tls::check_peer_identity(tls, args.node_id).map_err(ConfigError::PeerTls)?;
        }
        let tls = args.tls_cert.zip(args.tls_key).map(|(cert, key)| Identity { cert, key });
        if let Some(identity) = &tls {
            crate::tls::server_config(identity, None).map_err(ConfigError::Tls)?;
        }
        let cluster_secret = match (args.cluster_secret, &args.cluster_secret_file) {
            (Some(secret), _) => secret,
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|err| ConfigError::SecretFile { path: path.display().to_string(), cause: err.to_string() })?,
            (None, None) => String::new(),
        };
        if cluster_secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::ShortSecret);
        }
        if args.heartbeat_ms == 0 {
            return Err(ConfigError::Zero("heartbeat-ms"));
        }
        if args.election_timeout_ms < 3 * args.heartbeat_ms {
            return Err(ConfigError::Timing);
        }
        for (flag, value) in [
            ("write-timeout-ms", args.write_timeout_ms),
            ("connect-timeout-ms", args.connect_timeout_ms),
            ("try-timeout-ms", args.try_timeout_ms),
            ("route-timeout-ms", args.route_timeout_ms),
            ("max-attempts", args.max_attempts as u64),
            ("broadcast-max-body-kb", args.broadcast_max_body_kb as u64),
            ("broadcast-concurrency", args.broadcast_concurrency as u64),
            ("worker-threads", args.worker_threads.unwrap_or(1) as u64),
            ("max-endpoint-requests", u64::from(args.max_endpoint_requests)),
            ("max-connections", args.max_connections as u64),
            ("max-connections-per-ip", args.max_connections_per_ip.unwrap_or(1) as u64),
            ("max-registrations", args.max_registrations as u64),
            ("max-registry-mb", args.max_registry_mb),
            ("probe-concurrency", args.probe_concurrency as u64),
            ("probe-rate", u64::from(args.probe_rate)),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero(flag));
            }
        }
        if args.snapshot_every == 0 {
            return Err(ConfigError::Zero("snapshot-every"));
        }
        if !(4..=MAX_SNAPSHOT_CHUNK_KB).contains(&args.snapshot_chunk_kb) {
            return Err(ConfigError::SnapshotChunk);
        }
        let mut listeners = vec![args.data_addr, args.api_addr, args.peer_addr];
        listeners.extend(args.health_addr);
        let distinct: std::collections::BTreeSet<_> = listeners.iter().collect();
        if distinct.len() != listeners.len() {
            return Err(ConfigError::SameListener);
        }
        let advertised = match (initial_voters.get(&args.node_id), &args.advertise) {
            (Some(listed), None) => listed.clone(),
            (_, Some(host)) => {
                if host.is_empty() || host.contains(['/', ' ', '@']) {
                    return Err(ConfigError::Advertise(format!("{host:?} is not a host name or address")));
                }
                let host =
                    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.clone() };
                PeerNode::at(format!("{host}:{}", args.peer_addr.port()))
            }
            (None, None) => {
                if args.peer_addr.ip().is_unspecified() {
                    return Err(ConfigError::Advertise(
                        "this node is not in --peers and --peer-addr listens on all interfaces; set --advertise".into(),
                    ));
                }
                PeerNode::at(args.peer_addr.to_string())
            }
        };
        let tokens = Tokens::load(args.tokens_file.as_deref(), args.tokens.as_deref()).map_err(ConfigError::Tokens)?;
        let own: Vec<SocketAddr> =
            [args.data_addr, args.api_addr, args.peer_addr].into_iter().chain(args.health_addr).collect();
        let address_policy = AddressPolicy::new(&args.allow_networks, &args.deny_networks, &args.allow_schemes, own)
            .map_err(ConfigError::AddressPolicy)?;
        let election_min = Duration::from_millis(args.election_timeout_ms);
        Ok(Self {
            node_id: args.node_id,
            data_dir: args.data_dir,
            data_addr: args.data_addr,
            api_addr: args.api_addr,
            peer_addr: args.peer_addr,
            health_addr: args.health_addr,
            advertised,
            initial_voters,
            cluster_secret,
            raft: RaftTuning {
                heartbeat: Duration::from_millis(args.heartbeat_ms),
                election_timeout_min: election_min,
                election_timeout_max: election_min * 2,
                snapshot_every: args.snapshot_every,
                keep_behind_snapshot: (args.snapshot_every / 5).max(1),
                snapshot_chunk_bytes: args.snapshot_chunk_kb * 1024,
            },
            write_timeout: Duration::from_millis(args.write_timeout_ms),
            drain: Duration::from_millis(args.drain_ms),
            max_stale_routing: args.max_stale_routing,
            data_plane: DataPlaneConfig {
                connect_timeout: Duration::from_millis(args.connect_timeout_ms),
                try_timeout: Duration::from_millis(args.try_timeout_ms),
                total_timeout: Duration::from_millis(args.route_timeout_ms),
                max_attempts: args.max_attempts,
                broadcast_max_body: args.broadcast_max_body_kb * 1024,
                broadcast_concurrency: args.broadcast_concurrency,
                max_endpoint_requests: args.max_endpoint_requests,
                max_connections: args.max_connections,
                max_connections_per_ip: args.max_connections_per_ip.unwrap_or(args.max_connections),
            },
            worker_threads: args.worker_threads,
            tokens: Arc::new(tokens),
            address_policy: Arc::new(address_policy),
            tls,
            peer_tls,
            cache_bytes: args.cache_mb.max(1) * 1024 * 1024,
            log_format: args.log_format,
            limits: RegistryLimits { max_registrations: args.max_registrations, max_bytes: args.max_registry_mb << 20 },
            audit_log: args.audit_log,
            health: crate::health::HealthConfig {
                default_check: args.default_check,
                max_concurrent: args.probe_concurrency,
                max_per_second: args.probe_rate,
                deregister_per_minute: args.deregister_max_per_minute,
            },
        })
    }
}

/// A duration as operators write one: `500ms`, `30s`, `2m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| format!("{text:?} is not a duration like 500ms, 30s or 2m: {err}"))
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, PeerNode>, ConfigError> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let (id, addr) =
            item.split_once('=').ok_or_else(|| ConfigError::Peers(format!("{item:?} is not id=host:port")))?;
        let id: NodeId = id.trim().parse().map_err(|_| ConfigError::Peers(format!("{id:?} is not a node id")))?;
        let addr = addr.trim();
        if !is_host_port(addr) {
            return Err(ConfigError::Peers(format!("{addr:?} is not host:port")));
        }
        if peers.insert(id, PeerNode::at(addr)).is_some() {
            return Err(ConfigError::Peers(format!("node {id} is listed twice")));
        }
    }
    if peers.is_empty() {
        return Err(ConfigError::Peers("no peers given".into()));
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<NodeConfig, String> {
        let mut argv = vec![
            "switchboard",
            "serve",
            "--node-id",
            "1",
            "--data-dir",
            "/tmp/x",
            "--peers",
            "1=127.0.0.1:7002,2=127.0.0.1:7012",
            "--cluster-secret",
            "0123456789abcdef",
        ];
        argv.extend_from_slice(extra);
        serve(argv)
    }

    fn serve(argv: Vec<&str>) -> Result<NodeConfig, String> {
        /// The serve command's flags alone, as the binary parses them.
        #[derive(Debug, clap::Parser)]
        #[command(args_override_self = true)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let argv = argv.into_iter().filter(|arg| *arg != "serve");
        let serve = <Serve as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())?;
        NodeConfig::try_from(serve.args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = args(&[]).unwrap();
        assert_eq!(config.data_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.api_addr.to_string(), "0.0.0.0:8081");
        assert_eq!(config.peer_addr.to_string(), "0.0.0.0:8082");
        assert_eq!(config.advertised.addr, "127.0.0.1:7002", "a listed node advertises its --peers entry");
        assert_eq!(config.initial_voters.len(), 2);
    }

    #[test]
    fn host_and_port() {
        assert!(is_host_port("node4:9002"));
        assert!(is_host_port("127.0.0.1:1"));
        assert!(is_host_port("[::1]:7002"));
        assert!(!is_host_port("node4"));
        assert!(!is_host_port(":9002"));
        assert!(!is_host_port("node4:"));
        assert!(!is_host_port("node4:65536"));
        assert!(!is_host_port("node4:x"));
        assert!(!is_host_port("node4:0"));
        assert!(!is_host_port("node4:+80"));
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(args(&["--peers", "1=a"]).unwrap_err().contains("--peers"));
        assert!(args(&["--peers", "x=a:1"]).unwrap_err().contains("not a node id"));
        assert!(args(&["--peers", "1=a:1,1=b:2"]).unwrap_err().contains("twice"));
        assert!(args(&["--cluster-secret", "short"]).unwrap_err().contains("16 bytes"));
        assert!(args(&["--heartbeat-ms", "100", "--election-timeout-ms", "200"]).unwrap_err().contains("three times"));
        assert!(args(&["--api-addr", "0.0.0.0:8080"]).unwrap_err().contains("different"));
        assert!(args(&["--node-id", "x"]).is_err());
    }

    #[test]
    fn the_secret_can_come_from_a_file() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["switchboard", "serve", "--node-id", "1", "--data-dir", "/tmp/x", "--peers", "1=a:1"];
            argv.extend_from_slice(extra);
            serve(argv)
        };
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "from-a-file-0123456789\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(parse(&["--cluster-secret-file", path]).unwrap().cluster_secret, "from-a-file-0123456789");
        assert!(parse(&[]).unwrap_err().contains("--cluster-secret"));
        let both = parse(&["--cluster-secret-file", path, "--cluster-secret", "0123456789abcdef"]).unwrap_err();
        assert!(both.contains("cannot be used with"), "{both}");
        let missing = parse(&["--cluster-secret-file", "/nonexistent/secret"]).unwrap_err();
        assert!(missing.contains("cannot read /nonexistent/secret"), "{missing}");
        std::fs::write(&file, "short\n").unwrap();
        assert!(parse(&["--cluster-secret-file", path]).unwrap_err().contains("16 bytes"));
    }

    #[test]
    fn unlisted_node_needs_a_reachable_address() {
        let err = args(&["--node-id", "4"]).unwrap_err();
        assert!(err.contains("--advertise"), "{err}");
        let config = args(&["--node-id", "4", "--advertise", "node4", "--peer-addr", "0.0.0.0:9002"]).unwrap();
        assert_eq!(config.advertised.addr, "node4:9002");
        let config = args(&["--node-id", "4", "--peer-addr", "127.0.0.4:9002"]).unwrap();
        assert_eq!(config.advertised.addr, "127.0.0.4:9002");
    }
}
