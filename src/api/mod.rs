//! The control API: registrations, cluster administration and health, JSON over HTTP.
//!
//! Handlers are short: extract and validate, call the cluster layer or read the local applied
//! state, map the result. Reads come from this node's replica unless the caller asks for
//! `?consistency=linearizable`; writes go through [`Cluster::write`] on any node.

mod admin;
mod error;
mod events;
pub mod openapi;
mod policies;
mod registrations;
mod soap;
mod tokens;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::Uri;
use axum::http::header;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;

pub use self::error::ApiError;
pub use self::watch::HEARTBEAT;
pub use self::watch::MAX_WATCHES;
pub use self::watch::Watches;
use crate::auth::Caller;
use crate::auth::Tokens;
use crate::cluster::Cluster;
use crate::netpolicy::AddressPolicy;
pub use switchboard_proto::api::ErrorBody;
pub use switchboard_proto::api::HeartbeatReply;
pub use switchboard_proto::api::RegistrationList;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// State shared by the control API handlers.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub cluster: Cluster,
    pub tokens: Arc<Tokens>,
    pub policy: Arc<AddressPolicy>,
    /// The control API listener serves TLS (for the URLs it writes into documents).
    pub https: bool,
    /// The node's health checker (who checks what, the default check).
    pub prober: crate::health::Prober,
    /// The blocking reads open on this node.
    pub watches: Watches,
}

/// JSON body whose rejections use the API's error format.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query string whose rejections use the API's error format.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Items a list returns when the request names no `limit`.
pub const DEFAULT_PAGE: usize = 500;
/// Most items one page may hold.
pub const MAX_PAGE: usize = 5_000;

/// The page size a list request asks for (`?limit=`), checked.
pub fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        limit @ 1..=MAX_PAGE => Ok(limit),
        _ => Err(ApiError::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_PAGE}"))),
    }
}

/// Takes one page from `items` (already positioned after the request's cursor): at most `limit`
/// items, and the cursor of the next page if any item is left.
pub fn page<T>(
    mut items: impl Iterator<Item = T>,
    limit: usize,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let taken: Vec<T> = items.by_ref().take(limit).collect();
    let next = match (taken.last(), items.next()) {
        (Some(last), Some(_)) => Some(cursor_of(last)),
        _ => None,
    };
    (taken, next)
}

/// Path parameters whose rejections use the API's error format.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// The health checks and metrics alone, for the separate health listener (`--health-addr`).
pub fn health_router(state: ApiState) -> Router {
    let (health, _) = admin::health_routes().split_for_parts();
    Router::new().merge(health).fallback(not_found).with_state(state)
}

/// Every route of the control API, in the two sets the router treats apart: those that need a
/// token, and those that answer without one (the health checks, metrics, this API's OpenAPI
/// document). Routes are registered only here, through `OpenApiRouter` (so each is in the
/// document; `openapi::tests` refuses a route registered otherwise).
struct Routes {
    guarded: OpenApiRouter<ApiState>,
    public: OpenApiRouter<ApiState>,
}

fn routes() -> Routes {
    let guarded = OpenApiRouter::new()
        .merge(registrations::routes())
        .merge(events::routes())
        .merge(admin::routes())
        .merge(policies::routes())
        .merge(soap::routes())
        .merge(tokens::routes());
    let public = OpenApiRouter::new().merge(admin::health_routes()).merge(openapi::routes());
    Routes { guarded, public }
}

/// The OpenAPI document of [`router`]'s routes, from the same registrations.
fn describe(routes: Routes) -> utoipa::openapi::OpenApi {
    let (_, document) = openapi::frame().merge(routes.guarded).merge(routes.public).split_for_parts();
    openapi::finish(document)
}

pub fn router(state: ApiState) -> Router {
    let Routes { guarded, public } = routes();
    // Every route but the public ones needs a valid token (in dev mode, none is needed).
    let guarded = guarded.route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate));
    let guarded = guarded.layer(axum::middleware::from_fn(soap_faults));
    let (routes, _) = OpenApiRouter::new().merge(guarded).merge(public).split_for_parts();
    Router::new()
        .merge(routes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::DEBUG))
                .on_failure(()),
        )
        .with_state(state)
}

async fn authenticate(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    if crate::serve::headers_too_large(request.headers()) {
        return ApiError::HeadersTooLarge.into_response();
    }
    // The registration endpoint's WSDL is public, as a WSDL is: clients are generated from it.
    if request.method() == Method::GET && request.uri().path() == soap::PATH {
        return next.run(request).await;
    }
    let presented = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match state.tokens.authenticate(presented) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => {
            crate::metrics::METRICS.auth_refused.inc();
            tracing::warn!(path = %request.uri().path(), error = %err, "request without a valid token refused");
            ApiError::Unauthorized(err).into_response()
        }
    }
}

/// On the SOAP registration endpoint, refusals are SOAP faults (see [`soap::faults_only`]).
async fn soap_faults(request: Request, next: Next) -> Response {
    if request.uri().path().starts_with(soap::PATH) {
        soap::faults_only(request, next).await
    } else {
        next.run(request).await
    }
}

/// Refuses unless the caller holds the needed scope.
pub fn require(allowed: bool, caller: &Caller, what: impl std::fmt::Display) -> Result<(), ApiError> {
    if allowed {
        return Ok(());
    }
    crate::metrics::METRICS.auth_refused.inc();
    tracing::warn!(token = caller.name(), %what, "request outside the token's scopes refused");
    Err(ApiError::Forbidden(format!("token {} may not {what}", caller.name())))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("route_not_found", format!("no such route: {}", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests;
