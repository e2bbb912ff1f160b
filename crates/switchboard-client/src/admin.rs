//! Untyped calls of the control API, for tools that show the server's JSON as it is (the
//! `switchboard` command line): any method and path, an answer as `serde_json::Value` with its
//! status, and HTTPS with the caller's own root certificates.
//!
//! Failover is the same as for the typed calls ([`ControlClient`]): a router that cannot be
//! reached or answers 5xx is skipped for the next one, three rounds. What differs is the end: when
//! every try failed and at least one router answered, the last answer is returned as
//! [`ClientError::Refused`] with its code and message (a 5xx is a refusal the caller can act
//! upon, such as `no_leader`), and [`ClientError::Unavailable`] means that no router answered at
//! all.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use switchboard_proto::api::ErrorBody;

use crate::ClientError;
use crate::ControlClient;

/// An answer of the control API that was a success (2xx).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The body as the server sent it; `Null` when it was empty.
    pub body: serde_json::Value,
}

impl ControlClient {
    /// As [`ControlClient::new`], with HTTPS trusting only `roots` (with none, an `https://`
    /// router cannot be verified and is unreachable).
    pub fn with_roots(
        routers: Vec<String>,
        token: Option<&str>,
        request_timeout: Duration,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, ClientError> {
        if routers.is_empty() {
            return Err(ClientError::Unavailable("no router configured".into()));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Unavailable("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(request_timeout)
            .connect_timeout(Duration::from_millis(500))
            .no_proxy();
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
        let http = builder.build().map_err(|e| ClientError::Unavailable(e.to_string()))?;
        Ok(Self { http, request_timeout, routers, current: AtomicUsize::new(0) })
    }

    /// Sends `method path` (with `body` as JSON) to the routers in turn until one serves it, and
    /// answers its JSON as it is.
    pub async fn send_json<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, ClientError> {
        let attempts = self.routers.len() * 3;
        let mut last_refusal = None;
        let mut last_failure = String::from("no router configured");
        for attempt in 0..attempts {
            let index = (self.current.load(Ordering::Relaxed) + attempt) % self.routers.len();
            let router = &self.routers[index];
            let mut request = self.http.request(method.clone(), format!("{}{path}", router.trim_end_matches('/')));
            if let Some(body) = body {
                request = request.json(body);
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.map_err(|e| ClientError::Unavailable(e.to_string()))?;
                    if bytes.is_empty() {
                        return Ok(Answer { status, body: serde_json::Value::Null });
                    }
                    let body = serde_json::from_slice(&bytes)
                        .map_err(|e| ClientError::Unavailable(format!("{router} answered no JSON: {e}")))?;
                    return Ok(Answer { status, body });
                }
                Ok(response) => {
                    let refusal = refusal(response).await;
                    if matches!(refusal, ClientError::Refused { status, .. } if status < 500) {
                        return Err(refusal);
                    }
                    last_refusal = Some(refusal);
                }
                Err(err) => last_failure = format!("{router}: {}", root_cause(&err)),
            }
            if attempt + 1 >= self.routers.len() {
                // Every router was tried once: pause before going round again (an election).
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(last_refusal.unwrap_or(ClientError::Unavailable(last_failure)))
    }
}

/// The refusal an error answer carries (`{"code", "message"}`), or its status alone.
async fn refusal(response: reqwest::Response) -> ClientError {
    let status = response.status();
    let reason = status.canonical_reason().unwrap_or("error").to_owned();
    let error = response.json::<ErrorBody>().await.unwrap_or(ErrorBody { code: "unknown".into(), message: reason });
    ClientError::Refused { status: status.as_u16(), code: error.code, message: error.message }
}

/// The innermost cause of a failed send (reqwest's own message says only "error sending
/// request").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
