//! `/v1/policies`: the routing policy of each contract, replicated like registrations.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::api::ApiJson;
use crate::api::ApiQuery;
use crate::api::ApiState;
use crate::api::require;
use crate::auth::Caller;
use crate::registry::Command;
use crate::registry::ContractKey;
use crate::registry::PolicyRequest;
use switchboard_proto::api::PolicyEntry;
use switchboard_proto::api::PolicyList;

use crate::api::openapi::BadRequest;
use crate::api::openapi::BodyTooLarge;
use crate::api::openapi::Forbidden;
use crate::api::openapi::GatewayTimeout;
use crate::api::openapi::HeadersTooLarge;
use crate::api::openapi::InternalError;
use crate::api::openapi::Unauthorized;
use crate::api::openapi::Unavailable;
use crate::api::openapi::UnsupportedMediaType;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(list, set))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Most policies in the answer [default 500, at most 5000].
    #[param(minimum = 1, maximum = 5000)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Sets the routing policy of a contract (needs `admin`); replicated like registrations.
#[utoipa::path(
    put,
    path = "/v1/policies",
    operation_id = "set_policy",
    tag = "policies",
    request_body = PolicyRequest,
    responses(
        (status = 200, description = "The policy as set", body = PolicyEntry),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = BodyTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 431, response = HeadersTooLarge),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
        (status = 504, response = GatewayTimeout),
    ),
)]
async fn set(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<PolicyRequest>,
) -> Result<Json<PolicyEntry>, ApiError> {
    require(caller.can_admin(), &caller, "set routing policies")?;
    let (key, policy) = request.validate()?;
    state.cluster.write(Command::set_policy(key.clone(), policy.clone()), &caller.actor()).await?;
    Ok(Json(PolicyEntry { contract: key.to_string(), policy }))
}

/// One page of policies in contract order; contracts without one use `round_robin`.
#[utoipa::path(
    get,
    path = "/v1/policies",
    operation_id = "list_policies",
    tag = "policies",
    params(ListQuery),
    responses(
        (status = 200, description = "One page", body = PolicyList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<PolicyList>, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let limit = super::page_limit(query.limit)?;
    let cursor = query.cursor.as_deref().map(ContractKey::from_text);
    let applied = state.cluster.view().load();
    let (page, next_cursor) =
        super::page(applied.state.policies_after(cursor.as_ref()), limit, |(key, _)| key.to_string());
    let policies = page
        .into_iter()
        .map(|(key, policy)| PolicyEntry { contract: key.to_string(), policy: policy.clone() })
        .collect();
    Ok(Json(PolicyList { policies, next_cursor }))
}
