//! `/v1/tokens`: API tokens managed at runtime (create, list without secrets, revoke), kept in
//! the replicated state. Needs `admin`; in dev mode there are no tokens to manage.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(revoke))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"name": "orders", "scopes": ["register:urn:shop*", "read"], "max_registrations": 50}))]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// 1 to 64 of `A-Za-z0-9-_.`; never reused.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// `read`, `admin`, `register:<namespace pattern>`, `bind:<path pattern>`.
    scopes: Vec<String>,
    /// Most registrations the token may own.
    #[serde(default)]
    max_registrations: Option<u32>,
    /// The token itself (at least 16 bytes); or
    #[serde(default)]
    #[schema(min_length = 16)]
    token: Option<String>,
    /// its SHA-256 digest in hex; with neither, the node makes a random token and answers it once.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
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

/// Creates a token (needs `admin`); without `token` or `sha256` the node makes one and answers it
/// once, in `token`.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "create_token",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "Created", body = TokenView),
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

/// Every token, from the tokens file and the replicated table, never with a value or digest
/// (needs `admin`).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "list_tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "Every token", body = TokenList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 431, response = HeadersTooLarge),
    ),
)]
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

/// Revokes a token on every node (needs `admin`).
#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    operation_id = "revoke_token",
    tag = "tokens",
    params(("name" = String, Path, description = "The token's name")),
    responses(
        (status = 200, description = "The token, revoked", body = TokenView),
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
