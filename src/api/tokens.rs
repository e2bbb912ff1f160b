//! `/v1/tokens`: API tokens managed at runtime (create, list without secrets, revoke), kept in
//! the replicated state. Needs `admin`; in dev mode there are no tokens to manage.

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::delete;
use axum::routing::get;
use serde::Deserialize;

use crate::api::ApiError;
use crate::api::ApiJson;
use crate::api::ApiPath;
use crate::api::ApiState;
use crate::api::require;
use crate::auth::Caller;
use crate::auth::MIN_TOKEN_LEN;
use crate::auth::Scope;
use crate::registry::Command;
use crate::registry::Outcome;
use crate::registry::TokenDef;
use crate::registry::TokenEntry;
use switchboard_proto::api::TokenList;
use switchboard_proto::api::TokenView;

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/tokens", get(list).post(create)).route("/v1/tokens/{name}", delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    scopes: Vec<String>,
    #[serde(default)]
    max_registrations: Option<u32>,
    /// The token itself (at least 16 bytes); or
    #[serde(default)]
    token: Option<String>,
    /// its SHA-256 digest in hex; with neither, the node makes a random token and answers it once.
    #[serde(default)]
    sha256: Option<String>,
}

fn internal(message: String) -> ApiError {
    ApiError::Cluster(crate::cluster::ClusterError::InternalError(message))
}

/// Managing tokens needs an `admin` token, and a node with tokens (dev mode has none to manage).
fn may_manage_tokens(state: &ApiState, caller: &Caller, what: &str) -> Result<(), ApiError> {
    require(caller.can_admin(), caller, what)?;
    if state.tokens.is_dev_mode() {
        return Err(ApiError::Conflict {
            code: "dev_mode",
            message: "this node runs in dev mode (no tokens file): start it with --tokens-file to use tokens".into(),
        });
    }
    Ok(())
}

async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    may_manage_tokens(&state, &caller, "manage tokens")?;
    let invalid = |message: String| ApiError::bad_request("invalid_token", message);
    for scope in &request.scopes {
        Scope::parse(scope).map_err(invalid)?;
    }
    if state.tokens.is_bootstrap_name(&request.name) {
        return Err(ApiError::Conflict {
            code: "token_exists",
            message: format!("{} is a token of the tokens file", request.name),
        });
    }
    let (sha256, shown) = match (request.token, request.sha256) {
        (Some(token), None) if token.len() >= MIN_TOKEN_LEN => (crate::auth::digest(token.as_bytes()), None),
        (Some(_), None) => return Err(invalid(format!("a token is at least {MIN_TOKEN_LEN} bytes"))),
        (None, Some(hex)) => {
            (crate::auth::parse_hex32(&hex).ok_or_else(|| invalid("sha256 must be 64 hex digits".into()))?, None)
        }
        (None, None) => {
            let token = random_token().map_err(|err| internal(format!("no randomness: {err}")))?;
            (crate::auth::digest(token.as_bytes()), Some(token))
        }
        (Some(_), Some(_)) => return Err(invalid("give token or sha256, not both".into())),
    };
    let def =
        TokenDef { name: request.name, sha256, scopes: request.scopes, max_registrations: request.max_registrations };
    def.check().map_err(invalid)?;
    let view =
        TokenView { token: shown, ..TokenView::active(&def.name, def.scopes.clone(), def.max_registrations, "api") };
    match state.cluster.write(Command::CreateToken(def), &caller.actor()).await? {
        Outcome::TokenCreated(_) => Ok((StatusCode::CREATED, Json(view))),
        Outcome::TokenRefused(reason) => Err(ApiError::Conflict { code: "token_exists", message: reason }),
        other => Err(internal(format!("unexpected outcome {other:?}"))),
    }
}

async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<TokenList>, ApiError> {
    may_manage_tokens(&state, &caller, "list tokens")?;
    let applied = state.cluster.view().load();
    let table = applied.state.tokens();
    let revoked = |name: &str| matches!(table.get(name), Some(TokenEntry::Revoked { .. }));
    let mut tokens: Vec<TokenView> = state
        .tokens
        .bootstrap()
        .map(|token| {
            let scopes = token.scopes.iter().map(ToString::to_string).collect();
            let view = TokenView::active(&token.name, scopes, token.max_registrations, "file");
            if revoked(&token.name) { TokenView { state: "revoked".into(), ..view } } else { view }
        })
        .collect();
    for (name, entry) in table {
        if state.tokens.is_bootstrap_name(name) {
            continue;
        }
        tokens.push(match entry {
            TokenEntry::Active { def, .. } => TokenView::active(name, def.scopes.clone(), def.max_registrations, "api"),
            TokenEntry::Revoked { .. } => TokenView::revoked(name, "api"),
        });
    }
    tokens.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(TokenList { tokens }))
}

async fn revoke(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TokenView>, ApiError> {
    may_manage_tokens(&state, &caller, "manage tokens")?;
    let applied = state.cluster.view().load();
    let known = state.tokens.is_bootstrap_name(&name) || applied.state.tokens().contains_key(&name);
    drop(applied);
    if !known {
        return Err(ApiError::not_found("token_not_found", format!("no token is named {name}")));
    }
    let source = if state.tokens.is_bootstrap_name(&name) { "file" } else { "api" };
    match state.cluster.write(Command::RevokeToken(name.clone()), &caller.actor()).await? {
        Outcome::TokenRevoked(_) => Ok(Json(TokenView::revoked(&name, source))),
        Outcome::TokenRefused(reason) => Err(ApiError::Conflict { code: "token_revoked", message: reason }),
        other => Err(internal(format!("unexpected outcome {other:?}"))),
    }
}

/// 32 random bytes from the operating system, as 64 hex digits.
fn random_token() -> Result<String, crate::secret::RandomError> {
    crate::secret::random_hex::<32>()
}
