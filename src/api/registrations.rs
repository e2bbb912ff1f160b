//! `/v1/registrations`: register, list, show and unregister.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
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
use crate::api::watch::INDEX_HEADER;
use crate::api::watch::Wait;
use crate::auth::Caller;
use crate::cluster::leases::Refusal;
use crate::raft::NodeId;
use crate::registry::Command;
use crate::registry::HealthStatus;
use crate::registry::Lease;
use crate::registry::Outcome;
use crate::registry::Registration;
use crate::registry::RegistrationId;
use crate::registry::RegistrationInfo;
use crate::registry::RegistrationRequest;
use crate::registry::RegistrationSpec;
use crate::registry::RegistryState;
use crate::registry::trim_namespace;
use switchboard_proto::api::HealthView;
use switchboard_proto::api::HeartbeatReply;
use switchboard_proto::api::HeartbeatRequest;
use switchboard_proto::api::LeaseRef;
use switchboard_proto::api::MAX_HEARTBEAT_IDS;
use switchboard_proto::api::Refused;
use switchboard_proto::api::RegistrationList;
use switchboard_proto::api::RegistrationView;

use crate::api::openapi::BadRequest;
use crate::api::openapi::BodyTooLarge;
use crate::api::openapi::Conflict;
use crate::api::openapi::Forbidden;
use crate::api::openapi::GatewayTimeout;
use crate::api::openapi::HeadersTooLarge;
use crate::api::openapi::InternalError;
use crate::api::openapi::NotFound;
use crate::api::openapi::RegistryFull;
use crate::api::openapi::TooManyRequests;
use crate::api::openapi::Unauthorized;
use crate::api::openapi::Unavailable;
use crate::api::openapi::UnsupportedMediaType;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(unregister_by_info))
        .routes(routes!(show, unregister_by_id))
        .routes(routes!(heartbeat_one))
        .routes(routes!(drain))
        .routes(routes!(heartbeat_many))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EpochQuery {
    /// The `epoch` of the registration the caller made: refused with 409 `epoch_mismatch` when
    /// the id was registered again since.
    epoch: Option<u64>,
}

/// Renews the leases of many registrations in one call (at most 10,000 ids); each id the
/// caller may not renew, or that is not registered, is listed in `refused`.
#[utoipa::path(
    post,
    path = "/v1/heartbeat",
    operation_id = "heartbeat",
    tag = "leases",
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "What was renewed and what was refused", body = HeartbeatReply),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn heartbeat_many(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    if request.ids.len() > MAX_HEARTBEAT_IDS {
        return Err(ApiError::bad_request("too_many_ids", format!("at most {MAX_HEARTBEAT_IDS} ids per heartbeat")));
    }
    let mut leases = Vec::with_capacity(request.ids.len());
    for item in request.ids {
        leases.push(match item {
            LeaseRef::Id(id) => (parse_id(&id)?, None),
            LeaseRef::WithEpoch { id, epoch } => (parse_id(&id)?, Some(epoch)),
        });
    }
    let (renewed, refused) = state.cluster.heartbeat(&leases, |r| caller.can_register(&r.contract_namespace)).await;
    let refused = refused.into_iter().map(|(id, reason)| Refused { id, reason }).collect();
    Ok(Json(HeartbeatReply { renewed, refused }))
}

/// Renews one registration's lease.
#[utoipa::path(
    post,
    path = "/v1/registrations/{id}/heartbeat",
    operation_id = "heartbeat_one",
    tag = "leases",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{32}$", description = "The registration's id (32 hex digits)"), EpochQuery),
    responses(
        (status = 200, description = "The renewed lease", body = Lease),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn heartbeat_one(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EpochQuery>,
) -> Result<Json<Lease>, ApiError> {
    let id = parse_id(&id)?;
    let (renewed, refused) =
        state.cluster.heartbeat(&[(id, query.epoch)], |r| caller.can_register(&r.contract_namespace)).await;
    match (renewed.first(), refused.first()) {
        (Some(lease), _) => Ok(Json(*lease)),
        (None, Some((_, Refusal::Forbidden))) => Err(forbidden_registration(&caller, id)),
        (None, Some((_, Refusal::EpochMismatch))) => Err(ApiError::Conflict {
            code: "epoch_mismatch",
            message: format!("registration {id} was registered again since; this lease is no longer current"),
        }),
        _ => Err(not_registered(id)),
    }
}

/// Marks a registration `draining`: the data plane sends it no new requests (docs/leases.md).
#[utoipa::path(
    post,
    path = "/v1/registrations/{id}/drain",
    operation_id = "drain",
    tag = "leases",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{32}$", description = "The registration's id (32 hex digits)")),
    responses(
        (status = 200, description = "The registration, draining", body = Registration),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn drain(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Registration>, ApiError> {
    let id = authorized_id(&state, &caller, &id).await?;
    change(&state, &caller, Command::Drain(id)).await
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// This node's applied replica; may trail the leader by a few milliseconds.
    #[default]
    #[serde(alias = "default")]
    Local,
    /// Everything committed before the request was received.
    Linearizable,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Only registrations of this namespace (one trailing `/` ignored).
    contract_namespace: Option<String>,
    /// Only registrations of this contract name.
    contract_name: Option<String>,
    /// `local` (default): this node's replica; `linearizable`: everything committed before the
    /// request arrived.
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
    /// Most registrations in the answer [default 500, at most 5000].
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9a-fA-F]{32}$")]
    cursor: Option<String>,
    /// Only registrations whose committed health is this.
    #[param(inline)]
    health: Option<HealthStatus>,
    /// A blocking read: answer once the applied index is past this one (the `X-Switchboard-Index` of
    /// an earlier read).
    index: Option<u64>,
    /// How long a blocking read waits at most, like `30s` [default 5m, at most 10m].
    wait: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    /// `local` (default): this node's replica; `linearizable`: everything committed before the
    /// request arrived.
    #[serde(default)]
    #[param(inline)]
    consistency: Consistency,
}

/// Registers an endpoint of a contract, or refreshes the options of one already registered.
#[utoipa::path(
    post,
    path = "/v1/registrations",
    operation_id = "register",
    tag = "registrations",
    request_body = RegistrationRequest,
    responses(
        (status = 201, description = "Registered", body = Registration),
        (status = 200, description = "Already registered; options refreshed", body = Registration),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
        (status = 507, response = RegistryFull),
    ),
)]
async fn register(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<RegistrationRequest>,
) -> Result<Response, ApiError> {
    let spec = RegistrationSpec::new(request)?;
    let namespace = spec.contract_namespace.clone();
    require(caller.can_register(&namespace), &caller, format_args!("register in {namespace}"))?;
    if let Some(path) = spec.metadata.get(crate::registry::PATH_KEY) {
        require(caller.can_bind(path), &caller, format_args!("bind path {path}"))?;
    }
    match state.cluster.write(Command::register(spec), &caller.actor()).await? {
        Outcome::Registered { registration, created } => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(registration)).into_response())
        }
        Outcome::QuotaExceeded { owner, quota } => {
            tracing::warn!(token = owner, quota, "registration refused: quota reached");
            Err(ApiError::QuotaExceeded(format!("token {owner} already owns its quota of {quota} registrations")))
        }
        other => Err(unexpected(other)),
    }
}

async fn ensure_fresh(state: &ApiState, consistency: Consistency) -> Result<(), ApiError> {
    if consistency == Consistency::Linearizable {
        state.cluster.linearizable_barrier().await?;
    }
    Ok(())
}

/// One page of registrations in id order; with `index`, a blocking read that answers once this
/// node has applied past it (or at `wait`).
#[utoipa::path(
    get,
    path = "/v1/registrations",
    operation_id = "list_registrations",
    tag = "registrations",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = RegistrationList,
            headers(("X-Switchboard-Index" = u64, description = "The applied log index the page reflects"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadersTooLarge),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let limit = super::page_limit(query.limit)?;
    let cursor = query.cursor.as_deref().map(parse_cursor).transpose()?;
    if let Some(wait) = Wait::parse(query.index, query.wait.as_deref())? {
        state.watches.wait_past(state.cluster.view(), wait).await?;
    }
    ensure_fresh(&state, query.consistency).await?;
    let applied = state.cluster.view().load();
    let namespace = query.contract_namespace.as_deref().map(trim_namespace);
    let matching = applied
        .state
        .iter_after(cursor.as_ref())
        .filter(|r| namespace.is_none_or(|ns| trim_namespace(&r.contract_namespace) == ns))
        .filter(|r| query.contract_name.as_deref().is_none_or(|name| r.contract_name == name))
        .filter(|r| query.health.is_none_or(|wanted| applied.state.health_status(&r.id) == wanted));
    let (page, next_cursor) = super::page(matching, limit, |r| r.id.to_string());
    let members = state.cluster.probers();
    let registrations = page.into_iter().map(|r| view(&state, &applied.state, r, &members)).collect();
    let list = RegistrationList { registrations, applied_index: applied.index, next_cursor };
    Ok(([(INDEX_HEADER, applied.index)], Json(list)).into_response())
}

/// A registration with the check that applies to it and its committed health.
fn view(
    state: &ApiState,
    registry: &RegistryState,
    registration: &Registration,
    members: &[NodeId],
) -> RegistrationView {
    let verdict = registry.health(&registration.id).and_then(|entry| entry.health.as_ref());
    let health = HealthView {
        status: registry.health_status(&registration.id),
        since: verdict.map_or(registration.registered_at_ms, |h| h.since_ms),
        output: verdict.map(|h| h.output.to_string()).unwrap_or_default(),
        checked_by: state.prober.checked_by(registry, registration, members),
    };
    let check = registry.effective_check(registration, state.prober.default_check()).clone();
    RegistrationView { registration: registration.clone(), check, health }
}

fn parse_cursor(text: &str) -> Result<RegistrationId, ApiError> {
    text.parse().map_err(|_| ApiError::bad_request("invalid_cursor", "cursor must be a next_cursor from a list"))
}

fn parse_id(text: &str) -> Result<RegistrationId, ApiError> {
    text.parse().map_err(|err| ApiError::bad_request("invalid_id", format!("{err}")))
}

fn not_registered(id: RegistrationId) -> ApiError {
    ApiError::not_found("registration_not_found", format!("registration {id} is not registered"))
}

/// One registration with the check that applies to it and its committed health.
#[utoipa::path(
    get,
    path = "/v1/registrations/{id}",
    operation_id = "show_registration",
    tag = "registrations",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{32}$", description = "The registration's id (32 hex digits)"), ReadQuery),
    responses(
        (status = 200, description = "The registration", body = RegistrationView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadersTooLarge),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn show(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ReadQuery>,
) -> Result<Json<RegistrationView>, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let id = parse_id(&id)?;
    ensure_fresh(&state, query.consistency).await?;
    let applied = state.cluster.view().load();
    let registration = applied.state.get(&id).ok_or_else(|| not_registered(id))?;
    Ok(Json(view(&state, &applied.state, registration, &state.cluster.probers())))
}

/// Parses a registration id, finds the registration's namespace (on this replica, then after a
/// linearizable read) and checks the caller may manage it. Unknown ids are `404`.
async fn authorized_id(state: &ApiState, caller: &Caller, id: &str) -> Result<RegistrationId, ApiError> {
    let id = parse_id(id)?;
    let namespace = |state: &ApiState| state.cluster.view().load().state.get(&id).map(|r| r.contract_namespace.clone());
    let namespace = match namespace(state) {
        Some(namespace) => namespace,
        None => {
            state.cluster.linearizable_barrier().await?;
            namespace(state).ok_or_else(|| not_registered(id))?
        }
    };
    if caller.can_register(&namespace) { Ok(id) } else { Err(forbidden_registration(caller, id)) }
}

fn forbidden_registration(caller: &Caller, id: RegistrationId) -> ApiError {
    tracing::warn!(token = caller.name(), %id, "request outside the token's scopes refused");
    ApiError::Forbidden(format!("token {} may not manage registration {id}", caller.name()))
}

/// Unregisters or drains a registration and answers it as it was left.
async fn change(state: &ApiState, caller: &Caller, command: Command) -> Result<Json<Registration>, ApiError> {
    match state.cluster.write(command, &caller.actor()).await? {
        Outcome::Unregistered(registration) | Outcome::Drained(registration) => Ok(Json(registration)),
        Outcome::NotFound(id) => Err(not_registered(id)),
        other => Err(unexpected(other)),
    }
}

/// Unregisters a registration by its id.
#[utoipa::path(
    delete,
    path = "/v1/registrations/{id}",
    operation_id = "unregister",
    tag = "registrations",
    params(("id" = String, Path, pattern = "^[0-9a-fA-F]{32}$", description = "The registration's id (32 hex digits)")),
    responses(
        (status = 200, description = "The removed registration", body = Registration),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn unregister_by_id(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Registration>, ApiError> {
    let id = authorized_id(&state, &caller, &id).await?;
    change(&state, &caller, Command::Unregister(id)).await
}

/// Unregisters the registration of an address, namespace and name (the seed's `Unregister`).
#[utoipa::path(
    post,
    path = "/v1/registrations/unregister",
    operation_id = "unregister_by_info",
    tag = "registrations",
    request_body = RegistrationInfo,
    responses(
        (status = 200, description = "The removed registration", body = Registration),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn unregister_by_info(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(info): ApiJson<RegistrationInfo>,
) -> Result<Json<Registration>, ApiError> {
    let info = info.validate()?;
    let namespace = info.contract_namespace.clone();
    require(caller.can_register(&namespace), &caller, format_args!("unregister in {namespace}"))?;
    change(&state, &caller, Command::Unregister(info.id())).await
}

/// A command answered with an outcome of another command: a bug, reported as such.
fn unexpected(outcome: Outcome) -> ApiError {
    tracing::error!(?outcome, "unexpected outcome");
    ApiError::Cluster(crate::cluster::ClusterError::InternalError("unexpected outcome".into()))
}
