//! Broadcast: one message to every endpoint of a contract, as the seed's cache invalidation
//! does. The body is held in memory (bounded), endpoints are called concurrently (bounded), each
//! with its own deadline, and the answer lists every endpoint's outcome: 200 when all succeeded,
//! 207 when some did, 502 when none did.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use http::Response;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::Limited;
use serde::Serialize;

use crate::proxy::DataPlane;
use crate::proxy::ProxyBody;
use crate::proxy::body::RequestBody;
use crate::proxy::body::SharedBody;
use crate::proxy::error::ProxyError;
use crate::proxy::forward;
use crate::registry::ContractKey;
use crate::registry::Registration;
use crate::serve::Peer;

/// One endpoint's outcome.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EndpointResult {
    pub id: String,
    pub address: String,
    /// HTTP status the endpoint answered with, if it answered.
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The broadcast answer.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BroadcastReport {
    pub contract: String,
    pub endpoints: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub results: Vec<EndpointResult>,
}

pub(crate) async fn run(
    plane: &DataPlane,
    parts: &Parts,
    body: RequestBody,
    key: &ContractKey,
    endpoints: &[Arc<Registration>],
    remote: &Peer,
) -> Result<Response<ProxyBody>, ProxyError> {
    let limit = plane.config.broadcast_max_body;
    let bytes = read_all(body, limit).await?;
    let shared = SharedBody::new(RequestBody { prefix: bytes, rest: None });
    let calls: Vec<_> = endpoints
        .iter()
        .map(|endpoint| {
            let shared = shared.clone();
            Box::pin(async move {
                let started = Instant::now();
                let result = call(plane, parts, &shared, endpoint, remote).await;
                let latency_ms = started.elapsed().as_secs_f64() * 1e3;
                let (status, error) = match result {
                    Ok(status) => (Some(status.as_u16()), (!status.is_success()).then(|| format!("status {status}"))),
                    Err(error) => (None, Some(error)),
                };
                EndpointResult {
                    id: endpoint.id.to_string(),
                    address: endpoint.address.to_string(),
                    status,
                    latency_ms,
                    error,
                }
            }) as futures_util::future::BoxFuture<'_, EndpointResult>
        })
        .collect();
    let mut results: Vec<EndpointResult> =
        futures_util::stream::iter(calls).buffer_unordered(plane.config.broadcast_concurrency.max(1)).collect().await;
    results.sort_by(|a, b| a.address.cmp(&b.address));
    let succeeded = results.iter().filter(|r| r.error.is_none()).count();
    let report = BroadcastReport {
        contract: key.to_string(),
        endpoints: results.len(),
        succeeded,
        failed: results.len() - succeeded,
        results,
    };
    let status = match (report.succeeded, report.failed) {
        (_, 0) => StatusCode::OK,
        (0, _) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::MULTI_STATUS,
    };
    tracing::info!(contract = %key, endpoints = report.endpoints, failed = report.failed, "broadcast delivered");
    let json = serde_json::to_vec(&report).unwrap_or_default();
    let mut response = Response::new(ProxyBody::local(json));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

async fn read_all(body: RequestBody, limit: usize) -> Result<Bytes, ProxyError> {
    if body.prefix.len() > limit {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let Some(rest) = body.rest else { return Ok(body.prefix) };
    if rest.size_hint().lower() as usize + body.prefix.len() > limit {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let collected = Limited::new(rest, limit - body.prefix.len()).collect().await.map_err(|err| {
        if err.is::<http_body_util::LengthLimitError>() {
            ProxyError::BodyTooLarge(limit)
        } else {
            ProxyError::RequestBody(err.to_string())
        }
    })?;
    let mut all = body.prefix.to_vec();
    all.extend_from_slice(&collected.to_bytes());
    Ok(all.into())
}

async fn call(
    plane: &DataPlane,
    parts: &Parts,
    shared: &SharedBody,
    endpoint: &Registration,
    remote: &Peer,
) -> Result<StatusCode, String> {
    let body = shared.for_try().ok_or("body unavailable")?;
    let target = plane.checked_target(endpoint)?;
    let request = forward::endpoint_request(parts, &target, body, remote, &plane.via);
    let _in_flight = plane.outliers.start(&endpoint.id);
    let deadline = plane.config.try_timeout;
    let exchange = async {
        let (response, mut loan) = plane.upstreams.send(request).await.map_err(|err| err.to_string())?;
        let status = response.status();
        // Read the (small) answer so the connection can be reused.
        if Limited::new(response.into_body(), 64 * 1024).collect().await.is_ok() {
            loan.finish();
        }
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(Ok(status)) => {
            if status.is_server_error() {
                plane.note_failure(endpoint, "broadcast status");
            } else {
                plane.outliers.success(&endpoint.id);
            }
            Ok(status)
        }
        Ok(Err(error)) => {
            plane.note_failure(endpoint, "broadcast failed");
            Err(error)
        }
        Err(_) => {
            plane.note_failure(endpoint, "broadcast timed out");
            Err(format!("no answer within {} ms", deadline.as_millis()))
        }
    }
}
