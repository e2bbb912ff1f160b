//! Data-plane errors and their one mapping to responses: a SOAP fault of the request's own SOAP
//! version for SOAP requests, JSON `{code, message}` otherwise. Every error also carries its
//! stable code in the `X-Switchboard-Error` header.

use http::HeaderValue;
use http::Response;
use http::StatusCode;
use http::header::CONTENT_TYPE;

use crate::metrics::Limit;
use crate::metrics::RouteError;
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
        let (status, code) = self.status_and_error();
        (status, code.label())
    }

    /// The status and the typed error code (the metric label).
    pub fn status_and_error(&self) -> (StatusCode, RouteError) {
        match self {
            Self::Contract(ContractError::Missing) => (StatusCode::BAD_REQUEST, RouteError::NoContract),
            Self::Contract(ContractError::ActionWithoutOperation(_)) => {
                (StatusCode::BAD_REQUEST, RouteError::InvalidAction)
            }
            Self::Contract(ContractError::InvalidHeader(_)) => (StatusCode::BAD_REQUEST, RouteError::InvalidHeader),
            Self::Contract(ContractError::InvalidEnvelope(_)) => (StatusCode::BAD_REQUEST, RouteError::InvalidEnvelope),
            Self::Contract(ContractError::EnvelopeTooLarge) => {
                (StatusCode::PAYLOAD_TOO_LARGE, RouteError::EnvelopeHeaderTooLarge)
            }
            Self::Contract(ContractError::EnvelopeTimeout(_)) => {
                (StatusCode::REQUEST_TIMEOUT, RouteError::EnvelopeTimeout)
            }
            Self::UnknownContract(_)
            | Self::Contract(ContractError::NotRegistered(_) | ContractError::NoContractInNamespace(_)) => {
                (StatusCode::NOT_FOUND, RouteError::ContractNotFound)
            }
            Self::Contract(ContractError::Ambiguous { .. } | ContractError::PathBoundTwice { .. }) => {
                (StatusCode::CONFLICT, RouteError::AmbiguousContract)
            }
            Self::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, RouteError::NoEndpointReachable),
            Self::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, RouteError::EndpointOverloaded),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, RouteError::Unauthorized),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, RouteError::Forbidden),
            Self::Loop => (StatusCode::LOOP_DETECTED, RouteError::RoutingLoop),
            Self::HeadersTooLarge(_) => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, RouteError::HeadersTooLarge),
            Self::EndpointFailed { .. } => (StatusCode::BAD_GATEWAY, RouteError::EndpointFailed),
            Self::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, RouteError::EndpointTimeout),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, RouteError::BodyTooLarge),
            Self::RequestBody(_) => (StatusCode::BAD_REQUEST, RouteError::RequestBodyError),
        }
    }

    /// The limit whose refusal this error is, if any.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Self::Contract(ContractError::EnvelopeTooLarge | ContractError::EnvelopeTimeout(_)) => {
                Some(Limit::EnvelopeHeader)
            }
            Self::Overloaded { .. } => Some(Limit::EndpointRequests),
            Self::HeadersTooLarge(_) => Some(Limit::RequestHeaders),
            Self::BodyTooLarge(_) => Some(Limit::RequestBody),
            _ => None,
        }
    }

    /// The message without the endpoints' addresses, for callers that may not see them.
    fn public_message(&self) -> String {
        match self {
            Self::Unreachable { key, attempts, .. } => {
                format!("no endpoint of contract {key} could be reached ({attempts} tried)")
            }
            Self::EndpointFailed { .. } => "the endpoint failed before it answered".to_owned(),
            Self::Timeout { .. } => "the endpoint did not answer in time".to_owned(),
            other => other.to_string(),
        }
    }

    /// The response for a request of the given SOAP version (or none) and WS-Addressing
    /// namespace (`wsa`, once its envelope was read). Unless `disclose`, the message names no
    /// endpoint address (see `DataPlane::discloses_internals`).
    ///
    /// A SOAP fault is sent with status 500, as the SOAP 1.1 HTTP binding requires and as WCF
    /// expects of any fault it surfaces as a `FaultException` (with another status it throws a
    /// transport error and the fault is lost); the code and the status it stands for are in the
    /// fault and in `X-Switchboard-Error`.
    pub fn into_response(self, soap: Option<SoapVersion>, wsa: Option<&str>, disclose: bool) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let message = if disclose { self.to_string() } else { self.public_message() };
        let (content_type, body, status) = match soap {
            None => ("application/json", serde_json::json!({ "code": code, "message": message }).to_string(), status),
            Some(version) => {
                let (content_type, fault) = crate::soap::fault(version, status.is_client_error(), code, &message, wsa);
                (content_type, fault, StatusCode::INTERNAL_SERVER_ERROR)
            }
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
        let response = error.into_response(soap, None, true);
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

    async fn render_wsa(error: ProxyError, soap: SoapVersion, wsa: &str) -> (StatusCode, String) {
        let response = error.into_response(Some(soap), Some(wsa), true);
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn soap_faults_are_500_of_the_request_version_with_the_code_where_wcf_reads_it() {
        let (status, content_type, body) =
            render(ProxyError::Contract(ContractError::Missing), Some(SoapVersion::V11)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(content_type.starts_with("text/xml"));
        assert!(body.contains("schemas.xmlsoap.org/soap/envelope/"), "{body}");
        assert!(body.contains("<faultcode>s:Client.no_contract</faultcode>"), "{body}");
        assert!(!body.contains("Header"), "no WS-Addressing, no header: {body}");

        let timeout = ProxyError::Timeout { address: "http://a/<x>&".into() };
        let (status, content_type, body) = render(timeout, Some(SoapVersion::V12)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(content_type.starts_with("application/soap+xml"));
        assert!(
            body.contains("<env:Code><env:Value>env:Receiver</env:Value><env:Subcode><env:Value xmlns:sb=\"urn:switchboard:error\">sb:endpoint_timeout</env:Value></env:Subcode></env:Code>"),
            "{body}"
        );
        assert!(body.contains("&lt;x&gt;&amp;"), "the message is escaped: {body}");

        // A WS-Addressing message gets the fault action of its version.
        let unknown = || ProxyError::UnknownContract(ContractKey::from_text("urn:a/B"));
        let (_, body) = render_wsa(unknown(), SoapVersion::V12, crate::soap::envelope::WSA_2005).await;
        assert!(
            body.contains(r#"<env:Header><a:Action env:mustUnderstand="1" xmlns:a="http://www.w3.org/2005/08/addressing">http://www.w3.org/2005/08/addressing/soap/fault</a:Action></env:Header>"#),
            "{body}"
        );
        assert!(body.contains(">sb:contract_not_found<") && body.contains("env:Sender"), "{body}");
        let (_, body) = render_wsa(unknown(), SoapVersion::V11, crate::soap::envelope::WSA_2004).await;
        assert!(
            body.contains(r#"<s:Header><a:Action s:mustUnderstand="1" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing">http://schemas.xmlsoap.org/ws/2004/08/addressing/fault</a:Action></s:Header>"#),
            "{body}"
        );
        assert!(body.contains("<faultcode>s:Client.contract_not_found</faultcode>"), "{body}");
    }

    #[tokio::test]
    async fn addresses_are_shown_only_when_disclosed() {
        let errors = || {
            [
                ProxyError::Unreachable {
                    key: ContractKey::from_text("urn:a/B"),
                    attempts: 2,
                    last_error: "http://10.1.2.3:9000/ refused".into(),
                },
                ProxyError::EndpointFailed { address: "http://10.1.2.3:9000/".into(), reason: "reset".into() },
                ProxyError::Timeout { address: "http://10.1.2.3:9000/".into() },
            ]
        };
        for error in errors() {
            let response = error.into_response(None, None, false);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(!String::from_utf8_lossy(&body).contains("10.1.2.3"), "{body:?}");
        }
        for error in errors() {
            let response = error.into_response(None, None, true);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert!(String::from_utf8_lossy(&body).contains("10.1.2.3"), "{body:?}");
        }
    }
}
