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
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::peer_auth::PeerKey;
use crate::raft::ADDRESSEE_HEADER;
use crate::raft::Addressee;
use crate::raft::NodeId;
use crate::raft::PeerNode;
use crate::raft::TypeConfig;
use crate::raft::typ;
use crate::tls::PeerTls;

/// The node id of the node that sends a peer request.
pub const SENDER_HEADER: &str = "x-switchboard-from";

/// Content type of every peer request and response body.
pub const PEER_CONTENT_TYPE: &str = "application/x-switchboard-peer";

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

    /// POSTs `request` to `http://{addr}{path}` and decodes the answer.
    pub async fn call<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.send(addr, path, None, request, timeout).await
    }

    /// The same, for a request meant for one incarnation of one node only (a Raft RPC): a node
    /// that is not `to` refuses it.
    pub async fn call_to<Req, Resp>(
        &self,
        to: Addressee,
        addr: &str,
        path: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        self.send(addr, path, Some(to), request, timeout).await
    }

    async fn send<Req, Resp>(
        &self,
        addr: &str,
        path: &str,
        to: Option<Addressee>,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = postcard::to_stdvec(request)
            .map_err(|err| PeerError::Unreachable { addr: addr.to_owned(), cause: format!("cannot encode: {err}") })?;
        self.send_body(addr, path, to, body, timeout).await
    }

    /// Sends an already encoded request.
    async fn send_body<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        to: Option<Addressee>,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let to = to.map(|to| to.to_string());
        let mut post = self
            .http
            .post(format!("{}://{addr}{path}", self.scheme))
            .header(reqwest::header::AUTHORIZATION, self.key.sign(path, &self.from, to.as_deref(), &body))
            .header(SENDER_HEADER, &*self.from)
            .header(reqwest::header::CONTENT_TYPE, PEER_CONTENT_TYPE);
        if let Some(to) = to {
            post = post.header(ADDRESSEE_HEADER, to);
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

/// The innermost cause of a transport error ("Connection refused (os error 111)", "operation
/// timed out"), which is what an operator needs; the outer layers only repeat the URL.
fn root_cause(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
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
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, typ::RaftError<E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = postcard::to_stdvec(request).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        self.rpc_body(path, body, option).await
    }

    async fn rpc_body<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, typ::RaftError<E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let to = Addressee { node_id: self.target, incarnation: self.node.incarnation };
        let answer: Result<Resp, typ::RaftError<E>> =
            self.client.send_body(&self.node.addr, path, Some(to), body, option.hard_ttl()).await.map_err(|err| {
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

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        request: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, RPCError<NodeId, PeerNode, typ::RaftError>> {
        // openraft gives an AppendEntries one heartbeat interval, whatever it carries: a large
        // one would time out again and again (and starve the follower of heartbeats). Send at
        // most MAX_APPEND_BYTES; openraft retries at once with as many entries as the hint says.
        let body = postcard::to_stdvec(&request).map_err(|err| RPCError::Network(NetworkError::new(&err)))?;
        if body.len() > MAX_APPEND_BYTES && request.entries.len() > 1 {
            let hint = entries_that_fit(&request.entries);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.rpc_body("/raft/append", body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        request: typ::InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<typ::InstallSnapshotResponse, RPCError<NodeId, PeerNode, typ::RaftError<typ::InstallSnapshotError>>>
    {
        self.rpc("/raft/snapshot", &request, &option).await
    }

    async fn vote(
        &mut self,
        request: typ::VoteRequest,
        option: RPCOption,
    ) -> Result<typ::VoteResponse, RPCError<NodeId, PeerNode, typ::RaftError>> {
        self.rpc("/raft/vote", &request, &option).await
    }
}
