//! Outbound peer traffic: Raft RPCs and cluster calls to other nodes' peer endpoints.
//!
//! Bodies are postcard-encoded, signed with the key derived from the cluster secret (the secret
//! itself is never sent, see [`crate::peer_auth`]), and bounded by the deadline openraft gives
//! each RPC. One HTTP client (one connection pool) is
//! shared by every peer connection of the node.

use std::sync::Arc;
use std::time::Duration;

use openraft::RaftNetworkFactory;
use openraft::error::NetworkError;
use openraft::error::PayloadTooLarge;
use openraft::error::RPCError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetwork;
use serde::de::DeserializeOwned;
use switchboard_proto::peer;
use switchboard_proto::peer::Rpc;

use crate::peer_auth::PeerKey;
use crate::raft::Addressee;
use crate::raft::NodeId;
use crate::raft::PeerNode;
use crate::raft::TypeConfig;
use crate::raft::typ;
use crate::tls::PeerTls;

/// The Raft RPCs, in the peer protocol's table (the cluster RPCs are in
/// [`switchboard_proto::peer`]). Their messages are openraft's.
pub mod rpc {
    use switchboard_proto::rpc;

    use crate::raft::typ;

    rpc!(
        /// Log entries (or a heartbeat) from the leader.
        Append, "/raft/append", typ::AppendEntriesRequest => Result<typ::AppendEntriesResponse, typ::RaftError>,
        version(request) => request.entries.iter().map(super::entry_version).max().unwrap_or(1)
    );
    rpc!(
        /// A candidate asks for a vote.
        Vote, "/raft/vote", typ::VoteRequest => Result<typ::VoteResponse, typ::RaftError>
    );
    rpc!(
        /// One chunk of a snapshot from the leader.
        Snapshot,
        "/raft/snapshot",
        typ::InstallSnapshotRequest => Result<typ::InstallSnapshotResponse, typ::RaftError<typ::InstallSnapshotError>>,
        // Its data is an image of on-disk format 4, which a node of protocol 2 cannot read.
        version(_request) => 3
    );
}

/// The protocol version a log entry needs: the newest any of its commands needs.
fn entry_version(entry: &typ::Entry) -> u16 {
    match &entry.payload {
        openraft::EntryPayload::Normal(changes) => changes.iter().map(|c| c.command.protocol()).max().unwrap_or(1),
        _ => 1,
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made: nothing was sent.
    #[error("peer {addr} unreachable: {cause}")]
    Unreachable { addr: String, cause: String },
    /// The request may have been sent, but no complete answer came back in time or at all.
    #[error("peer {addr} did not answer: {cause}")]
    NoAnswer { addr: String, cause: String },
    /// The peer answered with an HTTP error status.
    #[error("peer {addr} refused the call with status {status}")]
    Status { addr: String, status: reqwest::StatusCode },
    /// The peer does not speak the peer protocol version the request needs.
    #[error("peer {addr} does not speak peer protocol version {version}: {message}")]
    Protocol { addr: String, version: u16, message: String },
    #[error("peer {addr} sent an unreadable answer: {source}")]
    Decode { addr: String, source: postcard::Error },
    /// The answer does not prove that the peer holds the cluster secret.
    #[error("the node at {addr} did not prove that it holds the cluster secret")]
    Unproven { addr: String },
}

impl PeerError {
    /// True when the request certainly did not reach the peer.
    pub fn not_sent(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }
}

/// A client for other nodes' peer endpoints.
#[derive(Debug, Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    key: Arc<PeerKey>,
    /// This node's id, sent (and signed) with every request.
    from: Arc<str>,
    /// `http` or, with peer mutual TLS, `https`.
    scheme: &'static str,
}

impl PeerClient {
    pub fn new(node_id: NodeId, cluster_secret: &str, tls: Option<&PeerTls>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .no_proxy();
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(crate::tls::peer_client_config(tls)?);
        }
        let http = builder.build().map_err(|e| format!("cannot build the peer client: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        Ok(Self { http, key: Arc::new(PeerKey::new(cluster_secret)), from: node_id.to_string().into(), scheme })
    }

    /// The key requests are signed with.
    pub fn key(&self) -> &PeerKey {
        &self.key
    }

    /// Calls RPC `R` of the peer endpoint at `addr` and decodes its answer.
    pub async fn call<R: Rpc>(
        &self,
        addr: &str,
        request: &R::Request,
        timeout: Duration,
    ) -> Result<R::Answer, PeerError> {
        self.send::<R>(addr, None, R::version(request), encode(addr, request)?, timeout).await
    }

    /// The same, for a request meant for one incarnation of one node only (a Raft RPC): a node
    /// that is not `to` refuses it.
    pub async fn call_to<R: Rpc>(
        &self,
        to: Addressee,
        addr: &str,
        version: u16,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<R::Answer, PeerError> {
        self.send::<R>(addr, Some(to), version, body, timeout).await
    }

    /// Sends an encoded request of RPC `R`, signed, in protocol `version`.
    async fn send<R: Rpc>(
        &self,
        addr: &str,
        to: Option<Addressee>,
        version: u16,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<R::Answer, PeerError> {
        let path = R::PATH;
        let to = to.map(|to| to.to_string());
        let mut post = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(reqwest::header::AUTHORIZATION, self.key.sign(path, &self.from, to.as_deref(), &body))
            .header(peer::SENDER_HEADER, &*self.from)
            .header(peer::PROTOCOL_HEADER, version)
            .header(reqwest::header::CONTENT_TYPE, peer::CONTENT_TYPE);
        if let Some(to) = to {
            post = post.header(peer::ADDRESSEE_HEADER, to);
        }
        let sent = post.timeout(timeout).body(body).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(err) if err.is_connect() => {
                return Err(PeerError::Unreachable { addr: addr.to_owned(), cause: root_cause(&err) });
            }
            Err(err) => return Err(PeerError::NoAnswer { addr: addr.to_owned(), cause: root_cause(&err) }),
        };
        let status = response.status();
        if status == reqwest::StatusCode::CONFLICT {
            let body = response.bytes().await.unwrap_or_default();
            let refusal = serde_json::from_slice::<switchboard_proto::api::ErrorBody>(&body).ok();
            let Some(message) = refusal.filter(|e| e.code == peer::UNSUPPORTED_PROTOCOL).map(|e| e.message) else {
                return Err(PeerError::Status { addr: addr.to_owned(), status });
            };
            static REFUSED: crate::telemetry::RateLimit = crate::telemetry::RateLimit::new(Duration::from_secs(10));
            if let Some(held_back) = REFUSED.check() {
                tracing::error!(peer = addr, rpc = path, version, %message, held_back, "a peer refused a request in a peer protocol version it does not speak; upgrade the nodes one version at a time");
            }
            return Err(PeerError::Protocol { addr: addr.to_owned(), version, message });
        }
        if !status.is_success() {
            return Err(PeerError::Status { addr: addr.to_owned(), status });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|err| PeerError::NoAnswer { addr: addr.to_owned(), cause: root_cause(&err) })?;
        postcard::from_bytes(&bytes).map_err(|source| PeerError::Decode { addr: addr.to_owned(), source })
    }
}

/// Encodes a peer request body.
pub fn encode<T: serde::Serialize + ?Sized>(addr: &str, request: &T) -> Result<Vec<u8>, PeerError> {
    postcard::to_stdvec(request)
        .map_err(|err| PeerError::Unreachable { addr: addr.to_owned(), cause: format!("cannot encode: {err}") })
}

/// The innermost cause of a transport error ("Connection refused (os error 111)", "timed out"),
/// which is what an operator needs; the outer layers only repeat the URL.
fn root_cause(err: &reqwest::Error) -> String {
    if err.is_timeout() { "timed out".to_owned() } else { crate::telemetry::root_cause(err) }
}

/// Creates per-target Raft connections; all share the node's [`PeerClient`].
#[derive(Debug, Clone)]
pub struct PeerNetwork {
    pub client: PeerClient,
}

/// The Raft RPC connection to one peer.
#[derive(Debug)]
pub struct PeerConnection {
    client: PeerClient,
    target: NodeId,
    node: PeerNode,
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        PeerConnection { client: self.client.clone(), target, node: node.clone() }
    }
}

/// Most bytes of one AppendEntries request.
pub const MAX_APPEND_BYTES: usize = 512 * 1024;

/// How many of the first entries fit in [`MAX_APPEND_BYTES`]; at least one.
fn entries_that_fit(entries: &[typ::Entry]) -> u64 {
    let mut bytes = 0;
    let mut fit = 0u64;
    for entry in entries {
        bytes += postcard::experimental::serialized_size(entry).unwrap_or(usize::MAX);
        if bytes > MAX_APPEND_BYTES {
            break;
        }
        fit += 1;
    }
    fit.max(1)
}

impl PeerConnection {
    async fn rpc<R, Resp, E>(
        &self,
        version: u16,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, typ::RaftError<E>>>
    where
        R: Rpc<Answer = Result<Resp, typ::RaftError<E>>>,
        E: std::error::Error + DeserializeOwned,
    {
        let to = Addressee { node_id: self.target, incarnation: self.node.incarnation };
        let answer =
            self.client.call_to::<R>(to, &self.node.addr, version, body, option.hard_ttl()).await.map_err(|err| {
                match &err {
                    // A node that is down, or is not the incarnation the membership admitted, is
                    // retried after openraft's backoff; its answer never counts.
                    PeerError::Unreachable { .. }
                    | PeerError::Status {
                        status: reqwest::StatusCode::SERVICE_UNAVAILABLE | reqwest::StatusCode::CONFLICT,
                        ..
                    } => RPCError::Unreachable(Unreachable::new(&err)),
                    _ => RPCError::Network(NetworkError::new(&err)),
                }
            })?;
        answer.map_err(|remote| RPCError::RemoteError(RemoteError::new(self.target, remote)))
    }
}

fn encode_rpc<T: serde::Serialize, E: std::error::Error>(
    request: &T,
) -> Result<Vec<u8>, RPCError<NodeId, PeerNode, E>> {
    postcard::to_stdvec(request).map_err(|err| RPCError::Network(NetworkError::new(&err)))
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        request: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, RPCError<NodeId, PeerNode, typ::RaftError>> {
        // openraft gives an AppendEntries one heartbeat interval, whatever it carries: a large
        // one would time out again and again (and starve the follower of heartbeats). Send at
        // most MAX_APPEND_BYTES; openraft retries at once with as many entries as the hint says.
        let body = encode_rpc(&request)?;
        if body.len() > MAX_APPEND_BYTES && request.entries.len() > 1 {
            let hint = entries_that_fit(&request.entries);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.rpc::<rpc::Append, _, _>(rpc::Append::version(&request), body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: typ::InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<typ::InstallSnapshotResponse, RPCError<NodeId, PeerNode, typ::RaftError<typ::InstallSnapshotError>>>
    {
        self.rpc::<rpc::Snapshot, _, _>(rpc::Snapshot::version(&request), encode_rpc(&request)?, &option).await
    }

    async fn vote(
        &mut self,
        request: typ::VoteRequest,
        option: RPCOption,
    ) -> Result<typ::VoteResponse, RPCError<NodeId, PeerNode, typ::RaftError>> {
        self.rpc::<rpc::Vote, _, _>(rpc::Vote::version(&request), encode_rpc(&request)?, &option).await
    }
}
