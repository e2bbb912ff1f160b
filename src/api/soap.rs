//! The seed's SOAP registration contract on the control API, so a SOAP service can register
//! itself without new code: `Register(RegistrationInfo)` and `Unregister(RegistrationInfo)` of
//! `IRegistrationService` in `http://www.thatindigogirl.com/samples/2008/01`, with
//! `RegistrationInfo { Address, ContractName, ContractNamespace }` in
//! `http://schemas.thatindigogirl.com/samples/2008/01`, over SOAP 1.1 or 1.2 at
//! `POST /v1/soap/registration`. Bad input gets a SOAP fault of the request's version.
//! `GET /v1/soap/registration?wsdl` describes the contract in WSDL 1.1 (SOAP 1.1 and 1.2
//! bindings), so that a service written with any SOAP stack can generate its client.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::CONTENT_LENGTH;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::response::Response;
use quick_xml::events::Event;
use quick_xml::reader::NsReader;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::api::ApiState;
use crate::api::error::Refusal;
use crate::api::openapi::SoapFault;
use crate::auth::Caller;
use crate::cluster::ClusterError;
use crate::registry::Command;
use crate::registry::Outcome;
use crate::registry::RegistrationInfo;
use crate::registry::RegistrationRequest;
use crate::registry::RegistrationSpec;
use crate::soap;
use crate::soap::SoapVersion;

/// Namespace of the `IRegistrationService` contract.
pub const SERVICE_NS: &str = "http://www.thatindigogirl.com/samples/2008/01";
/// Namespace of the `RegistrationInfo` data contract.
pub const DATA_NS: &str = "http://schemas.thatindigogirl.com/samples/2008/01";

/// Path of the SOAP registration endpoint.
pub const PATH: &str = "/v1/soap/registration";

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(wsdl, handle))
}

/// The contract's WSDL; `{location}` stands for the endpoint's URL.
const WSDL: &str = include_str!("registration.wsdl");

/// The WSDL 1.1 document of the registration service (`GET ?wsdl`), its address the endpoint's
/// URL as the client reached it (through a load balancer: its `X-Forwarded-Host` and
/// `X-Forwarded-Proto`). Public, as a WSDL is: clients are generated from it.
#[utoipa::path(
    get,
    path = "/v1/soap/registration",
    tag = "soap",
    operation_id = "soap_registration_wsdl",
    security(()),
    params(("wsdl" = String, Query, description = "Asks for the WSDL: `?wsdl`, with or without a value")),
    responses(
        (status = 200, description = "The WSDL 1.1 document of `IRegistrationService`, its address the URL \
            the client used", body = String, content_type = "text/xml"),
        (status = 400, response = SoapFault),
        (status = 431, response = SoapFault),
    ),
)]
async fn wsdl(State(state): State<ApiState>, RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let asks_wsdl = query.as_deref().is_some_and(|q| {
        q.split('&').any(|p| p.split_once('=').map_or(p, |(key, _)| key).eq_ignore_ascii_case("wsdl"))
    });
    if !asks_wsdl {
        let message = "GET this endpoint with ?wsdl for its WSDL; SOAP calls are POSTs";
        return ApiError::bad_request("invalid_query", message).into_response();
    }
    let Some(location) = crate::serve::router_url(&headers, state.https, PATH) else {
        let message = "the request names no valid Host to write into the WSDL's address";
        return ApiError::bad_request("invalid_host", message).into_response();
    };
    let body = WSDL.replace("{location}", &location);
    (StatusCode::OK, [(CONTENT_TYPE, HeaderValue::from_static("text/xml; charset=utf-8"))], body).into_response()
}

/// Every refusal on the SOAP endpoint is a SOAP fault in the version the client spoke, including
/// those decided before the handler runs (a missing token, a body over the limit): the layer
/// answers any other refusal as a fault with the same status, code and message.
pub(super) async fn faults_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let version = soap::soap_version(request.headers()).unwrap_or(SoapVersion::V11);
    let response = next.run(request).await;
    let status = response.status();
    let is_soap = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(version.content_type()) || v.starts_with("text/xml"));
    if status.is_success() || is_soap {
        return response;
    }
    let (parts, body) = response.into_parts();
    let (code, message) = match parts.extensions.get::<Refusal>() {
        Some(refusal) => (refusal.code, refusal.message.clone()),
        // Refused by the framework itself (its extractors' plain-text rejections).
        None => {
            let code = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
                _ => "invalid_request",
            };
            let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
            (code, String::from_utf8_lossy(&text).trim().to_owned())
        }
    };
    let (content_type, text) = soap::fault(version, status.is_client_error(), code, &message, None);
    let mut headers = parts.headers;
    headers.remove(CONTENT_LENGTH);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    (status, headers, text).into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Register,
    Unregister,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::Register => "Register",
            Self::Unregister => "Unregister",
        }
    }
}

struct Fault {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn client_fault(code: &'static str, message: impl Into<String>) -> Fault {
    Fault { status: StatusCode::BAD_REQUEST, code, message: message.into() }
}

/// The seed's `Register(RegistrationInfo)` and `Unregister(RegistrationInfo)` of
/// `IRegistrationService`, over SOAP 1.1 (`text/xml` with `SOAPAction`) or SOAP 1.2
/// (`application/soap+xml` with `action`); every refusal is a SOAP fault of the request's version.
#[utoipa::path(
    post,
    path = "/v1/soap/registration",
    tag = "soap",
    operation_id = "soap_registration",
    request_body(description = "A SOAP envelope whose Body holds `Register` or `Unregister`",
        content((String = "text/xml"), (String = "application/soap+xml"))),
    responses(
        (status = 200, description = "`RegisterResponse` or `UnregisterResponse`",
            content((String = "text/xml"), (String = "application/soap+xml"))),
        (status = 400, response = SoapFault),
        (status = 401, response = SoapFault),
        (status = 403, response = SoapFault),
        (status = 404, response = SoapFault),
        (status = 409, response = SoapFault),
        (status = 413, response = SoapFault),
        (status = 415, response = SoapFault),
        (status = 429, response = SoapFault),
        (status = 431, response = SoapFault),
        (status = 500, response = SoapFault),
        (status = 503, response = SoapFault),
        (status = 504, response = SoapFault),
        (status = 507, response = SoapFault),
    ),
)]
async fn handle(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(version) = soap::soap_version(&headers) else {
        let fault = client_fault("unsupported_media_type", "send SOAP: text/xml (1.1) or application/soap+xml (1.2)");
        let text = soap::fault(SoapVersion::V11, true, fault.code, &fault.message, None);
        return soap::response(StatusCode::UNSUPPORTED_MEDIA_TYPE, text).into_response();
    };
    match serve(&state, &caller, &headers, &body).await {
        Ok(operation) => {
            let inner = format!(r#"<{}Response xmlns="{SERVICE_NS}"/>"#, operation.name());
            soap::response(StatusCode::OK, soap::envelope(version, &inner)).into_response()
        }
        Err(fault) => {
            let text = soap::fault(version, fault.status.is_client_error(), fault.code, &fault.message, None);
            soap::response(fault.status, text).into_response()
        }
    }
}

async fn serve(state: &ApiState, caller: &Caller, headers: &HeaderMap, body: &[u8]) -> Result<Operation, Fault> {
    let (operation, info) = parse(body).map_err(|message| client_fault("invalid_envelope", message))?;
    if !caller.can_register(&info.contract_namespace) {
        tracing::warn!(token = caller.name(), "SOAP registration outside the token's scopes refused");
        return Err(Fault {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!("token {} may not register in {}", caller.name(), info.contract_namespace),
        });
    }
    if let Some(action) = soap::request_action(headers, body) {
        let expected = format!("{SERVICE_NS}/IRegistrationService/{}", operation.name());
        if action != expected {
            return Err(client_fault(
                "invalid_action",
                format!("the action {action:?} does not match the {} body", operation.name()),
            ));
        }
    }
    let command = match operation {
        Operation::Register => {
            let request = RegistrationRequest {
                address: info.address,
                contract_name: info.contract_name,
                contract_namespace: info.contract_namespace,
                ttl_ms: None,
                weight: None,
                metadata: Default::default(),
                check: None,
            };
            let spec = RegistrationSpec::new(request).map_err(|err| client_fault(err.code(), err.to_string()))?;
            Command::register(spec)
        }
        Operation::Unregister => {
            let info = info.validate().map_err(|err| client_fault(err.code(), err.to_string()))?;
            Command::Unregister(info.id())
        }
    };
    match state.cluster.write(command, &caller.actor()).await {
        Ok(Outcome::QuotaExceeded { owner, quota }) => Err(Fault {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "quota_exceeded",
            message: format!("token {owner} already owns its quota of {quota} registrations"),
        }),
        Ok(Outcome::NotFound(id)) => Err(Fault {
            status: StatusCode::NOT_FOUND,
            code: "registration_not_found",
            message: format!("registration {id} is not registered"),
        }),
        Ok(_) => Ok(operation),
        Err(err) => Err(server_fault(err)),
    }
}

fn server_fault(err: ClusterError) -> Fault {
    let message = err.to_string();
    let (status, code) = ApiError::Cluster(err).status_and_code();
    Fault { status, code, message }
}

/// Reads `Envelope/Body/{Register|Unregister}/regInfo/{Address, ContractName, ContractNamespace}`.
fn parse(body: &[u8]) -> Result<(Operation, RegistrationInfo), String> {
    let mut reader = NsReader::from_reader(body);
    let mut path: Vec<String> = Vec::new();
    let mut operation = None;
    let (mut address, mut name, mut namespace) = (None, None, None);
    let mut field: Option<(String, String)> = None;
    loop {
        let (ns, event) = reader.read_resolved_event().map_err(|e| format!("malformed XML: {e}"))?;
        match event {
            Event::DocType(_) => return Err("DTDs are not accepted".into()),
            Event::Start(start) => {
                let local = start.local_name().as_ref().to_owned();
                if path.len() > 16 {
                    return Err("elements nested too deeply".into());
                }
                match path.len() {
                    0 if soap::envelope_namespace(&ns).is_none() || local != "Envelope" => {
                        return Err("not a SOAP envelope".into());
                    }
                    2 if path[1] == "Body" => {
                        operation = match (soap::in_namespace(&ns, SERVICE_NS), local.as_str()) {
                            (true, "Register") => Some(Operation::Register),
                            (true, "Unregister") => Some(Operation::Unregister),
                            _ => {
                                return Err(format!(
                                    "unknown operation {local}; expected Register or Unregister in {SERVICE_NS}"
                                ));
                            }
                        };
                    }
                    4 if path[3] == "regInfo" && soap::in_namespace(&ns, DATA_NS) => {
                        field = Some((local.clone(), String::new()))
                    }
                    _ => {}
                }
                path.push(local);
            }
            Event::Empty(_) if path.is_empty() => return Err("not a SOAP envelope".into()),
            Event::Text(text) => {
                if let Some((_, value)) = field.as_mut() {
                    value.push_str(&text.xml10_content());
                }
            }
            Event::GeneralRef(reference) => {
                if let Some((_, value)) = field.as_mut() {
                    value.push(soap::resolve_entity(&reference)?);
                }
            }
            Event::End(_) => {
                if path.len() == 5
                    && let Some((local, value)) = field.take()
                {
                    let slot = match local.as_str() {
                        "Address" => &mut address,
                        "ContractName" => &mut name,
                        "ContractNamespace" => &mut namespace,
                        _ => continue,
                    };
                    if slot.replace(value.trim().to_owned()).is_some() {
                        return Err(format!("{local} given twice"));
                    }
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let operation = operation.ok_or("the body holds no Register or Unregister")?;
    let missing = |what: &str| format!("regInfo lacks {what} (in {DATA_NS})");
    Ok((
        operation,
        RegistrationInfo {
            address: address.ok_or_else(|| missing("Address"))?,
            contract_name: name.ok_or_else(|| missing("ContractName"))?,
            contract_namespace: namespace.ok_or_else(|| missing("ContractNamespace"))?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a WCF client sends for `Register`, with the seed's namespaces.
    pub(crate) fn register_envelope(address: &str) -> String {
        format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Register xmlns="{SERVICE_NS}"><regInfo xmlns:a="{DATA_NS}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><a:Address>{address}</a:Address><a:ContractName>ICalculator</a:ContractName><a:ContractNamespace>http://tempuri.org/</a:ContractNamespace></regInfo></Register></s:Body></s:Envelope>"#
        )
    }

    #[test]
    fn parses_the_seed_shape() {
        let (operation, info) = parse(register_envelope("http://10.0.0.5:9000/calc").as_bytes()).unwrap();
        assert_eq!(operation, Operation::Register);
        assert_eq!(info.address, "http://10.0.0.5:9000/calc");
        assert_eq!(info.contract_name, "ICalculator");
        assert_eq!(info.contract_namespace, "http://tempuri.org/");
    }

    #[test]
    fn refuses_what_is_not_the_contract() {
        let wrong_field_ns = register_envelope("x")
            .replace(r#"xmlns:a="http://schemas.thatindigogirl.com/samples/2008/01""#, r#"xmlns:a="urn:other""#);
        assert!(parse(wrong_field_ns.as_bytes()).unwrap_err().contains("lacks Address"));
        let wrong_operation =
            register_envelope("x").replace("<Register ", "<Delete ").replace("</Register>", "</Delete>");
        assert!(parse(wrong_operation.as_bytes()).unwrap_err().contains("unknown operation"));
        assert!(parse(b"<x/>").unwrap_err().contains("not a SOAP envelope"));
        assert!(parse(b"<!DOCTYPE x []><x/>").unwrap_err().contains("DTD"));
        assert!(parse(b"<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>").is_err());
    }
}
