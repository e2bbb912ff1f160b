//! The control API's OpenAPI 3.1 document, made from the same registrations as the router.
//!
//! Every route of [`super::router`] is registered through `utoipa_axum`'s `OpenApiRouter` with
//! `routes!`, from handlers that carry `#[utoipa::path]`: one registration gives both the axum
//! route and its operation in the document, so neither can have a path the other lacks (the
//! tests below hold the rest: no route registered around it, every operation served). The
//! schemas are the wire types of `switchboard_proto` (its `openapi` feature) and the handlers'
//! own query and body types. The document is served at `GET /v1/openapi.json`, without a token,
//! and committed as `docs/openapi.json` (a test fails when the two differ).
//!
//! This module owns the document's frame (info, the bearer scheme, the reusable error
//! responses); it must not describe a route by hand.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::ToResponse;
use utoipa::openapi::security::HttpAuthScheme;
use utoipa::openapi::security::HttpBuilder;
use utoipa::openapi::security::SecurityScheme;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use switchboard_proto::api::ErrorBody;
use switchboard_proto::registry::Event;

/// Path at which the document is served.
pub const PATH: &str = "/v1/openapi.json";

/// Name of the bearer token scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchboard control API",
        description = "Registrations, leases, routing policies, tokens, cluster administration, health and \
                       metrics of one Switchboard node (`--api-addr`). Any node answers; writes are forwarded to \
                       the leader. When the node has a tokens file, every operation that lists `bearer` security \
                       needs `Authorization: Bearer <token>` (401 without a valid one, 403 outside its scopes); \
                       in dev mode (no tokens file) none is needed, except the cluster secret for membership \
                       changes. Every refusal is `{\"code\", \"message\"}` (the SOAP endpoint answers SOAP \
                       faults). See docs/api.md.",
    ),
    security(("bearer" = [])),
    modifiers(&BearerScheme),
    components(
        schemas(ErrorBody, Event),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            BodyTooLarge,
            UnsupportedMediaType,
            TooManyRequests,
            HeadersTooLarge,
            InternalError,
            Unavailable,
            GatewayTimeout,
            RegistryFull,
            SoapFault,
        )
    ),
    tags(
        (name = "registrations", description = "The registration list: register, read, unregister"),
        (name = "leases", description = "Lease renewals and draining (docs/leases.md)"),
        (name = "policies", description = "Routing policy per contract"),
        (name = "cluster", description = "Membership and the audit trail"),
        (name = "health", description = "Readiness, liveness and metrics; per-contract health"),
        (name = "tokens", description = "API tokens managed at runtime"),
        (name = "soap", description = "The seed's SOAP registration service"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The bearer scheme the global security requirement names; and the operations that need no
/// token (`security(())` on their path) say so with an empty list rather than `[{}]`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token of the node's tokens file or of `/v1/tokens`; in dev mode, the cluster \
                         secret for membership changes",
                    ))
                    .build(),
            ),
        );
    }
}

/// Operations declared public (`security(())`) get `security: []`: no token.
fn public_means_no_security(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            if let Some(security) = &mut operation.security {
                let anonymous = serde_json::to_value(&*security).is_ok_and(|v| v == serde_json::json!([{}]));
                if anonymous {
                    security.clear();
                }
            }
        }
    }
}

/// The router of `/v1/openapi.json`, with the document's frame: the other routes merge into it.
pub(super) fn frame() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
}

/// The route that serves the document, registered like every other route.
pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// Completes the document the routers gathered.
pub(super) fn finish(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    public_means_no_security(&mut openapi);
    // utoipa fills in the package's license, which the package does not name.
    openapi.info.license = None;
    openapi
}

/// The document of the control API's routes.
pub fn document() -> utoipa::openapi::OpenApi {
    super::describe(super::routes())
}

/// The document as served and as committed in `docs/openapi.json`: pretty JSON, a final newline.
pub fn document_text() -> String {
    // A tree of maps, strings and numbers always serializes.
    let text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text + "\n"
}

/// Made once, on the first request for it.
static DOCUMENT: LazyLock<String> = LazyLock::new(document_text);

/// The document itself: this node's control API in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

// === the reusable refusals ===

/// The request is invalid (`code` says how: `malformed_json`, `invalid_body`, `invalid_query`,
/// `invalid_path`, `invalid_id`, `invalid_limit`, `invalid_cursor`, ...); nothing changed.
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct BadRequest(ErrorBody);

/// No valid token (`unauthorized`); in dev mode, a membership change without the cluster secret.
#[derive(ToResponse)]
#[response(headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
#[allow(dead_code)]
pub(super) struct Unauthorized(ErrorBody);

/// The token's scopes do not cover the request (`forbidden`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct Forbidden(ErrorBody);

/// The named object does not exist (`registration_not_found`, `node_not_found`,
/// `token_not_found`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct NotFound(ErrorBody);

/// The request conflicts with the state (`code` says which).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct Conflict(ErrorBody);

/// The body exceeds 64 KiB (`body_too_large`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct BodyTooLarge(ErrorBody);

/// The body is not `application/json` (`unsupported_media_type`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct UnsupportedMediaType(ErrorBody);

/// A limit of the token or the node (`quota_exceeded`, `too_many_watches`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct TooManyRequests(ErrorBody);

/// The request's headers are too large (`headers_too_large`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct HeadersTooLarge(ErrorBody);

/// A bug (`internal_error`): please report it.
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct InternalError(ErrorBody);

/// No leader reachable in time (`no_leader`), the node is stopping (`shutting_down`), or a node a
/// membership change needs does not answer (`node_unreachable`); retry.
#[derive(ToResponse)]
#[response(headers(("Retry-After" = String, description = "Seconds: `1`")))]
#[allow(dead_code)]
pub(super) struct Unavailable(ErrorBody);

/// The write reached the leader but no answer came in time (`outcome_unknown`; retrying is
/// safe), or a new node did not catch up (`catch_up_timeout`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct GatewayTimeout(ErrorBody);

/// The cluster holds as many registrations or bytes as it may (`registry_full`).
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) struct RegistryFull(ErrorBody);

/// A SOAP fault in the request's SOAP version (1.1 unless it spoke 1.2), carrying the
/// refusal's code and message.
#[derive(ToResponse)]
#[allow(dead_code)]
pub(super) enum SoapFault {
    Soap11(#[content("text/xml")] String),
    Soap12(#[content("application/soap+xml")] String),
}

#[cfg(test)]
mod tests;
