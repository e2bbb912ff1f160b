//! Cluster administration and health: `/v1/cluster`, `/v1/cluster/nodes`, `/health/*`.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header;
use axum::http::header::AUTHORIZATION;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::api::ApiJson;
use crate::api::ApiPath;
use crate::api::ApiQuery;
use crate::api::ApiState;
use crate::api::require;
use crate::auth::Caller;
use crate::cluster::ClusterView;
use crate::metrics::ContractHealth;
use crate::raft::NodeId;
use crate::raft::PeerNode;
use crate::registry::RegistrationId;
use switchboard_proto::api::AuditList;
use switchboard_proto::api::ContractHealthReport;
use switchboard_proto::api::Liveness;
use switchboard_proto::api::Readiness;

use crate::api::openapi::BadRequest;
use crate::api::openapi::BodyTooLarge;
use crate::api::openapi::Conflict;
use crate::api::openapi::Forbidden;
use crate::api::openapi::GatewayTimeout;
use crate::api::openapi::HeadersTooLarge;
use crate::api::openapi::InternalError;
use crate::api::openapi::NotFound;
use crate::api::openapi::Unauthorized;
use crate::api::openapi::Unavailable;
use crate::api::openapi::UnsupportedMediaType;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(cluster))
        .routes(routes!(add_node))
        .routes(routes!(remove_node))
        .routes(routes!(audit))
        .routes(routes!(contract_health))
        .routes(routes!(contract_health_metrics))
}

/// Health checks answer without a token: the load balancer calls them.
pub(super) fn health_routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(ready)).routes(routes!(metrics))
}

/// This node's metrics in the Prometheus text format: counters with fixed labels only, and the
/// freshness of the routing view.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4: counters with fixed labels, \
            `switchboard_leader_known`, `switchboard_view_age_seconds`, `switchboard_data_ready`",
            body = String, content_type = "text/plain; version=0.0.4"),
    ),
)]
async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let mut text = crate::metrics::METRICS.render();
    text.push_str(&crate::metrics::render_view(state.cluster.view_age(), state.cluster.data_readiness().ready));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// This node's view of the cluster: its id and role, the leader, the term, its log indexes, and
/// the members with their peer addresses.
#[utoipa::path(
    get,
    path = "/v1/cluster",
    operation_id = "cluster",
    tag = "cluster",
    responses(
        (status = 200, description = "The cluster as this node sees it", body = ClusterView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn cluster(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ClusterView>, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    Ok(Json(state.cluster.cluster_view()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Most records to return, newest first [default 500, at most 5000].
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page: records older than it.
    cursor: Option<u64>,
    /// Only records about this registration.
    #[param(pattern = "^[0-9a-fA-F]{32}$")]
    id: Option<String>,
}

/// One page of the audit trail, newest first: who changed what, through which node, and why.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit",
    tag = "cluster",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page", body = AuditList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn audit(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let id = match &query.id {
        Some(id) => Some(id.parse::<RegistrationId>().map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?),
        None => None,
    };
    let limit = super::page_limit(query.limit)?;
    let applied = state.cluster.view().load();
    let older = applied
        .state
        .audit()
        .rev()
        .skip_while(|r| query.cursor.is_some_and(|cursor| r.seq >= cursor))
        .filter(|r| id.is_none_or(|id| r.id == Some(id)));
    let (page, next) = super::page(older, limit, |r| r.seq.to_string());
    let records = page.into_iter().cloned().collect();
    Ok(Json(AuditList { records, next_cursor: next.and_then(|seq| seq.parse().ok()) }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AddNode {
    #[schema(value_type = u64)]
    node_id: NodeId,
    /// `host:port` of the new node's peer endpoint.
    #[schema(pattern = "^.+:[1-9][0-9]{0,4}$")]
    peer_addr: String,
}

/// A membership change needs an `admin` token, or, in dev mode (no tokens), the cluster secret
/// itself: anyone may register in dev mode, but nobody may add a node (which would receive the
/// log) or remove one without proving they run the cluster.
fn may_change_membership(state: &ApiState, caller: &Caller, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Caller::Dev = caller {
        let presented = headers.get(AUTHORIZATION).map(HeaderValue::as_bytes).and_then(crate::auth::bearer_token);
        if !presented.is_some_and(|secret| state.cluster.peer_key().is_secret(secret)) {
            crate::metrics::METRICS.auth_refused.inc();
            tracing::warn!("membership change without the cluster secret refused (dev mode)");
            return Err(ApiError::Unauthorized(crate::auth::AuthError::SecretRequired));
        }
        return Ok(());
    }
    require(caller.can_admin(), caller, "change the membership")
}

/// Adds a node: it must prove it holds the cluster secret and is `node_id`; it joins as a
/// learner and becomes a voter once caught up. Needs `admin` (in dev mode, the cluster secret).
#[utoipa::path(
    post,
    path = "/v1/cluster/nodes",
    operation_id = "add_node",
    tag = "cluster",
    request_body = AddNode,
    responses(
        (status = 200, description = "The cluster with the new member", body = ClusterView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn add_node(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<AddNode>,
) -> Result<Json<ClusterView>, ApiError> {
    may_change_membership(&state, &caller, &headers)?;
    if !crate::netpolicy::is_host_port(&body.peer_addr) {
        return Err(ApiError::bad_request("invalid_peer_addr", "peer_addr must be host:port"));
    }
    state.cluster.add_node(body.node_id, PeerNode::at(body.peer_addr)).await?;
    Ok(Json(state.cluster.cluster_view()))
}

/// Removes a node from the membership. Needs `admin` (in dev mode, the cluster secret).
#[utoipa::path(
    delete,
    path = "/v1/cluster/nodes/{id}",
    operation_id = "remove_node",
    tag = "cluster",
    params(("id" = u64, Path, description = "The node's id")),
    responses(
        (status = 200, description = "The cluster without the node", body = ClusterView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn remove_node(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiPath(id): ApiPath<NodeId>,
) -> Result<Json<ClusterView>, ApiError> {
    may_change_membership(&state, &caller, &headers)?;
    state.cluster.remove_node(id).await?;
    Ok(Json(state.cluster.cluster_view()))
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "health",
    security(()),
    responses((status = 200, description = "Always, while the process runs", body = Liveness)),
)]
async fn live() -> Json<Liveness> {
    Json(Liveness { status: "live".to_owned() })
}

/// Which readiness a health check asks for.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReadyQuery {
    /// `control` (default): writes can be served; `data`: the node can route.
    #[param(inline)]
    plane: Option<Plane>,
}

#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum Plane {
    /// The control API's: writes can be served (a leader is known and this node is current).
    Control,
    /// The data plane's: the node can route (it was caught up with a leader since it started).
    Data,
}

/// Readiness of the control API (default) or of the data plane, for a load balancer's check.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "ready",
    tag = "health",
    security(()),
    params(ReadyQuery),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 400, response = BadRequest),
        (status = 503, description = "Not ready, and why", body = Readiness),
    ),
)]
async fn ready(State(state): State<ApiState>, ApiQuery(query): ApiQuery<ReadyQuery>) -> Response {
    let readiness = match query.plane.unwrap_or(Plane::Control) {
        Plane::Control => state.cluster.readiness(),
        Plane::Data => state.cluster.data_readiness(),
    };
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

/// Per contract with active endpoints, sorted by contract: how many pass and how many are
/// critical (committed, the same on every node), whether it routes in panic, and what this node's
/// checker did for it since it started (probes, failures, transitions it wrote).
fn contract_rows(state: &ApiState) -> Vec<ContractHealth> {
    let applied = state.cluster.view().load();
    let mut rows: Vec<ContractHealth> = applied
        .state
        .contracts()
        .map(|(key, endpoints)| {
            let threshold = applied
                .state
                .policy(key)
                .map_or(crate::registry::DEFAULT_PANIC_THRESHOLD, |p| p.panic_threshold_percent);
            let counts = state.prober.counts(key);
            ContractHealth {
                contract: key.as_str().to_owned(),
                endpoints: endpoints.len(),
                passing: endpoints.len() - endpoints.critical(),
                critical: endpoints.critical(),
                panic_threshold_percent: threshold,
                panic: endpoints.routable(threshold).panic,
                probes: counts.probes,
                probe_failures: counts.failures,
                transitions_written: counts.transitions,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.contract.cmp(&b.contract));
    rows
}

// Per-contract figures live here and in `/v1/health/metrics`, behind the read scope, and not in
// `/metrics`, whose labels never name a contract.
/// Every contract with active endpoints, in contract order: how many pass and how many are
/// critical (committed, the same on every node), whether it routes in panic, and what this node's
/// checker did for it since it started.
#[utoipa::path(
    get,
    path = "/v1/health/contracts",
    operation_id = "contract_health",
    tag = "health",
    responses(
        (status = 200, description = "Every contract with active endpoints", body = ContractHealthReport),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn contract_health(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ContractHealthReport>, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let contracts = contract_rows(&state);
    Ok(Json(ContractHealthReport { node: state.cluster.node_id(), contracts }))
}

/// The per-contract health figures in the Prometheus text format, for a scrape job that sends a
/// read token (`authorization` in Prometheus's scrape config).
#[utoipa::path(
    get,
    path = "/v1/health/metrics",
    operation_id = "contract_health_metrics",
    tag = "health",
    responses(
        (status = 200, description = "Per-contract health in the Prometheus text format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn contract_health_metrics(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let text = crate::metrics::render_contract_health(&contract_rows(&state));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
