//! The one error type of the control API and its single mapping to HTTP.
//!
//! Every refusal is JSON `{"code", "message"}` with a 4xx or 5xx status; codes are stable
//! snake_case names clients may match on. Internal details are logged, never sent.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::rejection::PathRejection;
use axum::extract::rejection::QueryRejection;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::Response;
use switchboard_proto::api::ErrorBody;

use crate::auth::AuthError;
use crate::cluster::ClusterError;
use crate::metrics::Limit;
use crate::registry::InvalidRegistration;

/// The code and message of a refusal, kept with its response, so that a layer that answers in
/// another form (a SOAP fault) renders the same refusal without reading the JSON back.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    InvalidRegistration(#[from] InvalidRegistration),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    BodyTooLarge(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the request headers are too large")]
    HeadersTooLarge,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("this node already holds {0} blocking reads open; try again later or another node")]
    TooManyWatches(usize),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound { code, message: message.into() }
    }

    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRegistration(err) => (StatusCode::BAD_REQUEST, err.code()),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::QuotaExceeded(_) => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            Self::HeadersTooLarge => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::TooManyWatches(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_watches"),
            Self::Cluster(err) => match err {
                ClusterError::NotLeader | ClusterError::NoLeader(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
                ClusterError::OutcomeUnknown => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
                ClusterError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                ClusterError::MembershipChangeRefused(_) => (StatusCode::CONFLICT, "membership_change_refused"),
                ClusterError::NodeNotFound(_) => (StatusCode::NOT_FOUND, "node_not_found"),
                ClusterError::CatchUpTimeout(..) => (StatusCode::GATEWAY_TIMEOUT, "catch_up_timeout"),
                ClusterError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                ClusterError::NodeUnreachable(_) => (StatusCode::SERVICE_UNAVAILABLE, "node_unreachable"),
                ClusterError::InternalError(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
                ClusterError::RegistryFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "registry_full"),
                ClusterError::InvalidAddress(_) => (StatusCode::BAD_REQUEST, "invalid_address"),
                ClusterError::PathConflict(_) => (StatusCode::CONFLICT, "path_conflict"),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let limit = match &self {
            Self::HeadersTooLarge => Some(Limit::RequestHeaders),
            Self::BodyTooLarge(_) => Some(Limit::RequestBody),
            Self::QuotaExceeded(_) => Some(Limit::RegistrationsPerToken),
            Self::Cluster(ClusterError::RegistryFull(_)) => Some(Limit::Registry),
            _ => None,
        };
        if let Some(limit) = limit {
            crate::metrics::METRICS.limit_hit(limit);
        }
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "request failed");
        }
        let message = self.to_string();
        let mut response =
            (status, Json(ErrorBody { code: code.to_owned(), message: message.clone() })).into_response();
        // The SOAP registration endpoint answers the same refusal as a fault (`soap::faults_only`).
        response.extensions_mut().insert(Refusal { code, message });
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Self::UnsupportedMediaType("the body must be JSON with Content-Type: application/json".into())
            }
            JsonRejection::JsonSyntaxError(err) => Self::bad_request("malformed_json", err.body_text()),
            JsonRejection::JsonDataError(err) => Self::bad_request("invalid_body", err.body_text()),
            JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::BodyTooLarge(format!("the body exceeds {} bytes", super::MAX_BODY_BYTES))
            }
            other => Self::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request("invalid_path", rejection.body_text())
    }
}
