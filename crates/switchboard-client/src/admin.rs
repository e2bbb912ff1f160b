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
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;

use crate::ClientError;
use crate::ControlClient;
use crate::Unserved;

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
        let response =
            self.try_routers(method, path, body, |request| request).await.map_err(|unserved| match unserved {
                Unserved::Refused(refusal) | Unserved::Exhausted { answer: Some(refusal), .. } => refusal,
                Unserved::Exhausted { answer: None, last } => ClientError::Unavailable(last),
            })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| ClientError::Unavailable(e.to_string()))?;
        if bytes.is_empty() {
            return Ok(Answer { status, body: serde_json::Value::Null });
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| ClientError::Unavailable(format!("no JSON: {e}")))?;
        Ok(Answer { status, body })
    }
}
