//! `/v1/policies`: the routing policy of each contract, replicated like registrations.

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;

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

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/policies", get(list).put(set))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

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
