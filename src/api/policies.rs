//! `/v1/policies`: the routing policy of each contract, replicated like registrations.

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde::Serialize;

use crate::api::ApiError;
use crate::api::ApiJson;
use crate::api::ApiState;
use crate::api::require;
use crate::auth::Caller;
use crate::registry::Command;
use crate::registry::Policy;
use crate::registry::PolicyRequest;

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/policies", get(list).put(set))
}

/// A contract's policy as shown by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyEntry {
    /// The contract key, `{namespace}/{name}`.
    pub contract: String,
    #[serde(flatten)]
    pub policy: Policy,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PolicyList {
    pub policies: Vec<PolicyEntry>,
}

async fn set(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<PolicyRequest>,
) -> Result<Json<PolicyEntry>, ApiError> {
    require(caller.can_admin(), &caller, "set routing policies")?;
    let (key, policy) = request.validate()?;
    state.cluster.write(Command::SetPolicy(key.clone(), policy.clone()), &caller.actor()).await?;
    Ok(Json(PolicyEntry { contract: key.to_string(), policy }))
}

async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<PolicyList>, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let applied = state.cluster.view().load();
    let policies = applied
        .state
        .policies()
        .map(|(key, policy)| PolicyEntry { contract: key.to_string(), policy: policy.clone() })
        .collect();
    Ok(Json(PolicyList { policies }))
}
