//! Broadcast: one message to every endpoint of a contract, as the seed's cache invalidation
//! does. The body is held in memory (bounded), endpoints are called concurrently (bounded), each
//! with one [`Attempt`] (its deadline, the per-endpoint request limit and the outlier rule of
//! every send), and the answer lists every endpoint's outcome: 200 when all succeeded, 207 when
//! some did, 502 when none did.

use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use http::Response;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::Limited;
use serde::Serialize;

use crate::proxy::DataPlane;
use crate::proxy::Routed;
use crate::proxy::attempt::Attempt;
use crate::proxy::body::ProxyBody;
use crate::proxy::body::RequestBody;
use crate::proxy::body::SharedBody;
use crate::proxy::error::ProxyError;
use crate::registry::Registration;

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
    /// Endpoints not called because their checks say critical.
    #[serde(default)]
    pub skipped: Vec<SkippedEndpoint>,
}

/// An endpoint a broadcast left out.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SkippedEndpoint {
    pub id: String,
    pub address: String,
    pub reason: String,
}

pub(crate) async fn run(
    plane: &DataPlane,
    routed: &Routed<'_>,
    body: RequestBody,
) -> Result<Response<ProxyBody>, ProxyError> {
    let limit = plane.config.broadcast_max_body;
    let bytes = read_all(body, limit).await?;
    let shared = SharedBody::new(RequestBody { prefix: bytes, rest: None });
    let calls: Vec<_> = routed
        .endpoints
        .iter()
        .map(|endpoint| {
            let shared = shared.clone();
            Box::pin(async move {
                let started = Instant::now();
                let result = call(plane, routed, &shared, endpoint).await;
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
        contract: routed.key.to_string(),
        endpoints: results.len(),
        succeeded,
        failed: results.len() - succeeded,
        results,
        skipped: routed
            .skipped
            .iter()
            .map(|r| SkippedEndpoint {
                id: r.id.to_string(),
                address: r.address.to_string(),
                reason: "critical".into(),
            })
            .collect(),
    };
    let status = match (report.succeeded, report.failed) {
        (_, 0) => StatusCode::OK,
        (0, _) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::MULTI_STATUS,
    };
    tracing::info!(
        contract = %routed.key,
        endpoints = report.endpoints,
        failed = report.failed,
        skipped = report.skipped.len(),
        "broadcast delivered"
    );
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

/// One endpoint's delivery: one [`Attempt`], then the (small) answer read so that the connection
/// can be reused. An endpoint at its request limit is not called.
async fn call(
    plane: &DataPlane,
    routed: &Routed<'_>,
    shared: &SharedBody,
    endpoint: &Registration,
) -> Result<StatusCode, String> {
    let deadline = plane.config.try_timeout;
    let started = Instant::now();
    match plane.attempt(routed, endpoint, shared, deadline).await {
        Attempt::Answered { response, in_flight, mut loan } => {
            let status = response.status();
            let left = deadline.saturating_sub(started.elapsed());
            let read = tokio::time::timeout(left, Limited::new(response.into_body(), 64 * 1024).collect()).await;
            if matches!(read, Ok(Ok(_))) {
                loan.finish();
            }
            drop(in_flight);
            Ok(status)
        }
        Attempt::Busy => Err(format!("endpoint at its request limit ({})", plane.config.max_endpoint_requests)),
        Attempt::Refused(reason)
        | Attempt::Unreachable(reason)
        | Attempt::Failed(reason)
        | Attempt::ClientBody(reason) => Err(reason),
        Attempt::BodyGone => Err("body unavailable".into()),
        Attempt::TimedOut(after) => Err(format!("no answer within {} ms", after.as_millis())),
    }
}
