//! Data-plane errors and their one mapping to responses: a SOAP fault of the request's own SOAP
//! version for SOAP requests, JSON `{code, message}` otherwise. Every error also carries its
//! stable code in the `X-Switchboard-Error` header.

use http::HeaderValue;
use http::Response;
use http::StatusCode;
use http::header::CONTENT_TYPE;

use crate::proxy::ProxyBody;
use crate::proxy::contract::ContractError;
use crate::registry::ContractKey;
use crate::soap::SoapVersion;

pub const ERROR_HEADER: &str = "x-switchboard-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("no endpoint is registered for contract {0}")]
    UnknownContract(ContractKey),
    #[error("no endpoint of contract {key} could be reached ({attempts} tried; last error: {last_error})")]
    Unreachable { key: ContractKey, attempts: usize, last_error: String },
    #[error("every endpoint of contract {key} is at its request limit")]
    Overloaded { key: ContractKey },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the request already passed through this router: a routing loop")]
    Loop,
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("endpoint {address} failed: {reason}")]
    EndpointFailed { address: String, reason: String },
    #[error("endpoint {address} did not answer in time")]
    Timeout { address: String },
    #[error("the request body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("the request body could not be read: {0}")]
    RequestBody(String),
}

impl ProxyError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Contract(ContractError::Missing) => (StatusCode::BAD_REQUEST, "no_contract"),
            Self::Contract(ContractError::ActionWithoutOperation(_)) => (StatusCode::BAD_REQUEST, "invalid_action"),
            Self::Contract(ContractError::InvalidHeader(_)) => (StatusCode::BAD_REQUEST, "invalid_header"),
            Self::Contract(ContractError::InvalidEnvelope(_)) => (StatusCode::BAD_REQUEST, "invalid_envelope"),
            Self::Contract(ContractError::EnvelopeTooLarge) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "envelope_header_too_large")
            }
            Self::UnknownContract(_) => (StatusCode::NOT_FOUND, "contract_not_found"),
            Self::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_endpoint_reachable"),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "endpoint_overloaded"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Loop => (StatusCode::LOOP_DETECTED, "routing_loop"),
            Self::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
            Self::EndpointFailed { .. } => (StatusCode::BAD_GATEWAY, "endpoint_failed"),
            Self::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "endpoint_timeout"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::RequestBody(_) => (StatusCode::BAD_REQUEST, "request_body_error"),
        }
    }

    /// The response for a request of the given SOAP version (or none).
    pub fn into_response(self, soap: Option<SoapVersion>) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let message = self.to_string();
        let (content_type, body) = match soap {
            None => ("application/json", serde_json::json!({ "code": code, "message": message }).to_string()),
            Some(version) => crate::soap::fault(version, status.is_client_error(), code, &message),
        };
        let mut response = Response::new(ProxyBody::local(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
        response
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn render(error: ProxyError, soap: Option<SoapVersion>) -> (StatusCode, String, String) {
        let response = error.into_response(soap);
        let status = response.status();
        let content_type = response.headers()[CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(response.headers().contains_key(ERROR_HEADER));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn json_for_plain_requests() {
        let (status, content_type, body) =
            render(ProxyError::UnknownContract(ContractKey::from_text("urn:a/B")), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], "contract_not_found");
    }

    #[tokio::test]
    async fn faults_of_the_right_soap_version() {
        let (status, content_type, body) =
            render(ProxyError::Contract(ContractError::Missing), Some(SoapVersion::V11)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(content_type.starts_with("text/xml"));
        assert!(
            body.contains("schemas.xmlsoap.org/soap/envelope/") && body.contains("<faultcode>s:Client</faultcode>")
        );
        assert!(body.contains("<sb:Code>no_contract</sb:Code>"));

        let timeout = ProxyError::Timeout { address: "http://a/<x>&".into() };
        let (status, content_type, body) = render(timeout, Some(SoapVersion::V12)).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(content_type.starts_with("application/soap+xml"));
        assert!(body.contains("<env:Value>env:Receiver</env:Value>"));
        assert!(body.contains("&lt;x&gt;&amp;"), "the message is escaped: {body}");
    }
}
