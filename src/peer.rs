//! The peer endpoint: the internal listener for Raft RPCs and for requests other nodes forward to
//! this one (writes, read indexes, admission, membership). Never exposed to clients.
//!
//! Every request must be signed with the key derived from the cluster secret (see
//! [`crate::peer_auth`]); a request without a signature is refused with 401 before its body is
//! read, one whose signature does not match its body after. Bodies are postcard-encoded and
//! bounded by [`MAX_BODY_BYTES`].

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRequest;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::post;
use serde::Serialize;
use serde::de::DeserializeOwned;

use switchboard_proto::peer;
use switchboard_proto::peer::ADDRESSEE_HEADER;
use switchboard_proto::peer::Admit;
use switchboard_proto::peer::Beat;
use switchboard_proto::peer::Confirm;
use switchboard_proto::peer::Membership;
use switchboard_proto::peer::PROTOCOL_HEADER;
use switchboard_proto::peer::ReadIndex;
use switchboard_proto::peer::Renew;
use switchboard_proto::peer::Rpc;
use switchboard_proto::peer::SENDER_HEADER;
use switchboard_proto::peer::Status;
use switchboard_proto::peer::Write;

use crate::cluster::Cluster;
use crate::peer_auth::PeerKey;
use crate::raft::Addressee;
use crate::raft::NodeId;
use crate::raft::rpc::Append;
use crate::raft::rpc::Snapshot;
use crate::raft::rpc::Vote;
use crate::serve::ClientCertificate;

/// Largest accepted peer request body: one snapshot chunk plus framing.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// A postcard-encoded body, in either direction.
#[derive(Debug)]
pub struct Postcard<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Postcard<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        postcard::from_bytes(&bytes)
            .map(Postcard)
            .map_err(|err| refuse(StatusCode::BAD_REQUEST, "malformed_peer_message", &err.to_string()))
    }
}

impl<T: Serialize> IntoResponse for Postcard<T> {
    fn into_response(self) -> Response {
        match postcard::to_stdvec(&self.0) {
            Ok(bytes) => {
                ([(header::CONTENT_TYPE, HeaderValue::from_static(peer::CONTENT_TYPE))], bytes).into_response()
            }
            Err(err) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "encode_failed", &err.to_string()),
        }
    }
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "code": code, "message": message }))).into_response()
}

/// State of the peer router.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub cluster: Cluster,
    pub key: std::sync::Arc<PeerKey>,
    pub prober: crate::health::Prober,
}

/// The request of RPC `R`, decoded.
type RequestOf<R> = Postcard<<R as Rpc>::Request>;

/// The answer of RPC `R`, encoded.
fn answer<R: Rpc>(answer: R::Answer) -> Response {
    Postcard(answer).into_response()
}

pub fn router(state: PeerState) -> Router {
    Router::new()
        .route(Append::PATH, post(append))
        .route(Vote::PATH, post(vote))
        .route(Snapshot::PATH, post(snapshot))
        .route(Status::PATH, post(status))
        .route(Write::PATH, post(write))
        .route(ReadIndex::PATH, post(read_index))
        .route(Admit::PATH, post(admit))
        .route(Membership::PATH, post(membership))
        .route(Renew::PATH, post(renew))
        .route(Confirm::PATH, post(confirm))
        .route(Beat::PATH, post(beat))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(axum::middleware::from_fn(speak_protocol))
        .with_state(state)
}

/// Refuses a request in a protocol version this node does not speak (before anything else: a
/// version may sign or encode differently), and names this node's version in every answer.
async fn speak_protocol(request: Request, next: Next) -> Response {
    let named = request.headers().get(PROTOCOL_HEADER).map(HeaderValue::as_bytes);
    let mut response = match peer::version_of(named) {
        Some(version) if peer::speaks(version) => {
            let mut request = request;
            request.extensions_mut().insert(Spoken(version));
            next.run(request).await
        }
        version => {
            let spoken = version.map_or_else(|| "an unreadable version".to_owned(), |v| format!("version {v}"));
            let from = request.headers().get(SENDER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("?").to_owned();
            static REFUSED: crate::telemetry::RateLimit =
                crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
            if let Some(held_back) = REFUSED.check() {
                tracing::error!(
                    from,
                    spoken,
                    oldest = peer::OLDEST_PROTOCOL,
                    newest = peer::PROTOCOL,
                    held_back,
                    "peer request in a protocol version this node does not speak refused; upgrade the nodes one version at a time"
                );
            }
            let message = format!(
                "this node speaks peer protocol versions {} to {}, the request speaks {spoken}",
                peer::OLDEST_PROTOCOL,
                peer::PROTOCOL
            );
            refuse(StatusCode::CONFLICT, peer::UNSUPPORTED_PROTOCOL, &message)
        }
    };
    response.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from(peer::PROTOCOL));
    response
}

/// The protocol version a peer request speaks: answers are given in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spoken(pub u16);

/// The node a peer request comes from: its signed `x-switchboard-from`, and, with mutual TLS,
/// the node its certificate names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender(pub NodeId);

async fn authenticate(State(state): State<PeerState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let presented = parts.headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    let from = parts.headers.get(SENDER_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<NodeId>().ok());
    let verified = match from {
        Some(from) if PeerKey::claims_scheme(presented) => match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(bytes) => {
                let addressee = parts.headers.get(ADDRESSEE_HEADER).map(HeaderValue::as_bytes);
                let sender = from.to_string();
                state.key.verify(presented, parts.uri.path(), sender.as_bytes(), addressee, &bytes).then_some(bytes)
            }
            Err(_) => {
                let message = format!("a peer request body is at most {MAX_BODY_BYTES} bytes");
                return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message);
            }
        },
        _ => None,
    };
    let (Some(bytes), Some(from)) = (verified, from) else {
        static REFUSED: crate::telemetry::RateLimit =
            crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
        if let Some(held_back) = REFUSED.check() {
            tracing::warn!(path = %parts.uri.path(), held_back, "peer request not signed with the cluster secret refused");
        }
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the peer endpoint requires a request signed with the cluster secret",
        );
    };
    if let Some(certificate) = parts.extensions.get::<ClientCertificate>()
        && !crate::tls::names_node(&certificate.0, from)
    {
        static REFUSED: crate::telemetry::RateLimit =
            crate::telemetry::RateLimit::new(std::time::Duration::from_secs(10));
        if let Some(held_back) = REFUSED.check() {
            tracing::warn!(from, path = %parts.uri.path(), held_back, "peer request whose certificate does not name its sender refused");
        }
        let message = format!("the client certificate does not name node {from} (DNS:{})", crate::tls::node_name(from));
        return refuse(StatusCode::FORBIDDEN, "certificate_not_for_node", &message);
    }
    parts.extensions.insert(Sender(from));
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// Refuses a request whose body speaks for another node than its sender.
fn refusal_unless_sender(sender: Sender, claimed: Option<NodeId>, what: &str) -> Option<Response> {
    if claimed == Some(sender.0) {
        return None;
    }
    tracing::warn!(sender = sender.0, ?claimed, what, "peer request speaking for another node refused");
    let message = format!("node {} may not send a {what} for node {claimed:?}", sender.0);
    Some(refuse(StatusCode::FORBIDDEN, "sender_mismatch", &message))
}

/// A Raft RPC is answered only by the incarnation it is addressed to. A node whose data directory
/// is new or was wiped has a new incarnation: it refuses what was meant for the node the sender's
/// membership admitted (whose log and vote it no longer has), so it neither votes nor counts
/// toward a commit until the leader has admitted the new incarnation.
fn refusal_unless_addressee(cluster: &Cluster, headers: &HeaderMap) -> Option<Response> {
    let to = headers.get(ADDRESSEE_HEADER).and_then(|v| v.to_str().ok()).map(str::parse::<Addressee>);
    match to {
        Some(Ok(to)) if cluster.is_addressee(&to) => None,
        Some(Ok(to)) => {
            let me = cluster.identity();
            tracing::debug!(addressed = %to, incarnation = format_args!("{:016x}", me.incarnation), "raft call for another incarnation refused");
            Some(refuse(
                StatusCode::CONFLICT,
                "wrong_incarnation",
                &format!(
                    "this is node {} incarnation {:016x}, not {to}; a node that lost its data must be re-admitted",
                    me.node_id, me.incarnation
                ),
            ))
        }
        Some(Err(err)) => Some(refuse(StatusCode::BAD_REQUEST, "malformed_peer_message", &err)),
        None => Some(refuse(StatusCode::BAD_REQUEST, "malformed_peer_message", "raft calls name their addressee")),
    }
}

async fn append(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    headers: HeaderMap,
    Postcard(request): RequestOf<Append>,
) -> Response {
    if let Some(refused) = refusal_unless_addressee(&state.cluster, &headers)
        .or_else(|| refusal_unless_sender(sender, Some(request.vote.leader_id().node_id), "append"))
    {
        return refused;
    }
    answer::<Append>(state.cluster.raft().append_entries(request).await)
}

async fn vote(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    headers: HeaderMap,
    Postcard(request): RequestOf<Vote>,
) -> Response {
    if let Some(refused) = refusal_unless_addressee(&state.cluster, &headers)
        .or_else(|| refusal_unless_sender(sender, request.vote.leader_id().voted_for(), "vote request"))
    {
        return refused;
    }
    answer::<Vote>(state.cluster.raft().vote(request).await)
}

async fn snapshot(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    headers: HeaderMap,
    Postcard(request): RequestOf<Snapshot>,
) -> Response {
    if let Some(refused) = refusal_unless_addressee(&state.cluster, &headers)
        .or_else(|| refusal_unless_sender(sender, Some(request.vote.leader_id().node_id), "snapshot"))
    {
        return refused;
    }
    tracing::info!(
        leader = request.vote.leader_id().node_id,
        snapshot = %request.meta.snapshot_id,
        offset = request.offset,
        bytes = request.data.len(),
        last = request.done,
        "snapshot chunk received"
    );
    answer::<Snapshot>(state.cluster.raft().install_snapshot(request).await)
}

async fn status(State(state): State<PeerState>, Postcard(request): RequestOf<Status>) -> Response {
    answer::<Status>(state.cluster.answer_status(&request))
}

async fn write(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    Extension(spoken): Extension<Spoken>,
    Postcard(proposal): RequestOf<Write>,
) -> Response {
    if let Some(refused) = refusal_unless_sender(sender, Some(proposal.origin.node), "write") {
        return refused;
    }
    answer::<Write>(state.cluster.propose_forwarded(proposal).await.map_err(|err| err.spoken_in(spoken.0)))
}

async fn read_index(State(state): State<PeerState>) -> Response {
    answer::<ReadIndex>(state.cluster.read_index_local().await)
}

async fn admit(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    Postcard(request): RequestOf<Admit>,
) -> Response {
    if let Some(refused) = refusal_unless_sender(sender, Some(request.node_id), "admission request") {
        return refused;
    }
    answer::<Admit>(state.cluster.admit_local(request).await)
}

async fn membership(State(state): State<PeerState>, Postcard(request): RequestOf<Membership>) -> Response {
    answer::<Membership>(state.cluster.change_local(request).await)
}

async fn renew(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    Postcard(gossip): RequestOf<Renew>,
) -> Response {
    if let Some(refused) = refusal_unless_sender(sender, Some(gossip.from), "gossip") {
        return refused;
    }
    state.cluster.renew_from_peer(&gossip);
    answer::<Renew>(())
}

/// Another member's readiness to probe.
async fn beat(
    State(state): State<PeerState>,
    Extension(sender): Extension<Sender>,
    Postcard(beat): RequestOf<Beat>,
) -> Response {
    if let Some(refused) = refusal_unless_sender(sender, Some(beat.from), "prober beat") {
        return refused;
    }
    state.cluster.record_beat(&beat);
    answer::<Beat>(())
}

/// A second probe of an endpoint, asked by the node that probes it before it marks it critical.
async fn confirm(State(state): State<PeerState>, Postcard(request): RequestOf<Confirm>) -> Response {
    answer::<Confirm>(state.prober.confirm(&request).await)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// A request without a version (the release before versions) and one in this version are
    /// served; any other is refused with 409 `unsupported_protocol` before it is read; every
    /// answer names this node's version.
    #[tokio::test]
    async fn requests_in_a_version_this_node_does_not_speak_are_refused() {
        let app = Router::new()
            .route(Status::PATH, post(|| async { "served" }))
            .route_layer(axum::middleware::from_fn(speak_protocol));
        let current = peer::PROTOCOL.to_string();
        let next = (peer::PROTOCOL + 1).to_string();
        for (version, served) in [
            (None, true),
            (Some("1"), true),
            (Some(current.as_str()), true),
            (Some(next.as_str()), false),
            (Some("one"), false),
        ] {
            let mut request = Request::post(Status::PATH);
            if let Some(version) = version {
                request = request.header(PROTOCOL_HEADER, version);
            }
            let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.headers()[PROTOCOL_HEADER], current.as_str(), "{version:?}");
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            if served {
                assert_eq!((status, &body[..]), (StatusCode::OK, &b"served"[..]), "{version:?}");
            } else {
                let error: switchboard_proto::api::ErrorBody = serde_json::from_slice(&body).unwrap();
                assert_eq!((status, error.code.as_str()), (StatusCode::CONFLICT, peer::UNSUPPORTED_PROTOCOL));
                assert!(error.message.contains("speaks peer protocol versions 0 to 3"), "{}", error.message);
            }
        }
    }
}
