//! `switchboard sample`: a sample service that registers itself.
//!
//! It binds a free port (port 0 by default, so several instances share a machine), serves three
//! contracts and registers all three with one lease through the client library:
//!
//! - SOAP `http://tempuri.org/ICalculator` at `/soap`: operations `Add` (of `<a>` and `<b>`) and
//!   `Echo`, SOAP 1.1 or 1.2, answering with its instance id;
//! - plain HTTP `urn:switchboard:samples/IEcho` at `/echo`: echoes the request as JSON;
//! - plain HTTP `urn:switchboard:samples/ICache` at `/cache`: `POST .../invalidate` counts a cache
//!   invalidation (the broadcast case), `GET .../stats` shows the count and the requests in flight
//!   (besides the stats request itself).
//!
//! Each registration carries an http check of `GET /health` (every second, critical after two
//! failures), so a crashed or frozen instance leaves the routers' rotation before its lease runs
//! out. `?delay_ms=N` on any request makes it answer slowly (to watch draining). On SIGINT or
//! SIGTERM it drains, lets in-flight requests finish, unregisters and exits.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::any;
use axum::routing::get;
use axum::routing::post;
use clap::Args;
use quick_xml::events::Event;
use serde::Deserialize;
use serde_json::json;
use switchboard::registry::Check;
use switchboard::registry::CheckKind;
use switchboard::registry::RegistrationRequest;
use switchboard::soap;
use switchboard::soap::SoapVersion;
use switchboard_client::Registrar;
use switchboard_client::RegistrarConfig;

pub const SOAP_NAMESPACE: &str = "http://tempuri.org/";
pub const SOAP_CONTRACT: &str = "ICalculator";
pub const HTTP_NAMESPACE: &str = "urn:switchboard:samples";
pub const ECHO_CONTRACT: &str = "IEcho";
pub const CACHE_CONTRACT: &str = "ICache";

/// Flags of `switchboard sample`.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Control API base URLs to register with (the load balancer's, or nodes'), comma-separated.
    #[arg(long, env = "SWITCHBOARD_SAMPLE_ROUTERS", value_delimiter = ',', required = true)]
    pub routers: Vec<String>,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SWITCHBOARD_SAMPLE_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Host name or IP the routers use to reach this instance [default: the listen IP].
    #[arg(long, env = "SWITCHBOARD_SAMPLE_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Name of this instance, shown in every answer [default: sample-<port>].
    #[arg(long, env = "SWITCHBOARD_SAMPLE_INSTANCE")]
    pub instance: Option<String>,
    /// Lease of the registrations, in ms; heartbeats go out every third of it.
    #[arg(long, env = "SWITCHBOARD_SAMPLE_TTL_MS", default_value_t = 5_000)]
    pub ttl_ms: u64,
    /// API token with `register` scope for the sample's namespaces (none for a dev cluster).
    #[arg(long, env = "SWITCHBOARD_SAMPLE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// The sample's own check: a GET of its `/health` every second, critical after two failures (each
/// at most 500 ms), so a crashed or frozen instance leaves every router's rotation within about
/// 2.5 s, before its 5 s lease runs out.
fn sample_check() -> Check {
    Check {
        kind: CheckKind::Http,
        path: "/health".into(),
        interval_ms: 1_000,
        timeout_ms: 500,
        rise: 2,
        fall: 2,
        deregister_after_ms: None,
    }
}

#[derive(Debug)]
struct Sample {
    instance: String,
    in_flight: AtomicUsize,
    invalidations: AtomicU64,
}

#[derive(Debug, Deserialize)]
struct Delay {
    delay_ms: Option<u64>,
}

pub async fn run(args: SampleArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let host = match &args.advertise_host {
        Some(host) => host.clone(),
        None if bound.ip().is_unspecified() => anyhow::bail!("listening on all interfaces: set --advertise-host"),
        None => bound.ip().to_string(),
    };
    let instance = args.instance.clone().unwrap_or_else(|| format!("sample-{}", bound.port()));
    let sample = Arc::new(Sample {
        instance: instance.clone(),
        in_flight: AtomicUsize::new(0),
        invalidations: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/soap", post(soap_operation))
        .route("/cache/invalidate", post(invalidate))
        .route("/cache/stats", get(stats))
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/health", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(sample.clone(), count_in_flight))
        .with_state(sample.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await }
    });

    let base = format!("http://{host}:{}", bound.port());
    let lease = |address: String, namespace: &str, name: &str| RegistrationRequest {
        address,
        contract_name: name.to_owned(),
        contract_namespace: namespace.to_owned(),
        ttl_ms: Some(args.ttl_ms),
        weight: None,
        metadata: [("instance".to_owned(), instance.clone())].into(),
        check: Some(sample_check()),
    };
    let registrations = vec![
        lease(format!("{base}/soap"), SOAP_NAMESPACE, SOAP_CONTRACT),
        lease(format!("{base}/echo"), HTTP_NAMESPACE, ECHO_CONTRACT),
        lease(format!("{base}/cache"), HTTP_NAMESPACE, CACHE_CONTRACT),
    ];
    let mut config = RegistrarConfig::new(args.routers.clone(), registrations);
    config.token = args.token.clone();
    let registrar = loop {
        match Registrar::start(config.clone()).await {
            Ok(registrar) => break registrar,
            Err(err) => {
                tracing::warn!(error = %err, "registration failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = switchboard::node::shutdown_signal() => return Ok(()),
                }
            }
        }
    };
    tracing::info!(instance, address = %base, "sample service registered");
    println!("{instance} listening on {base}");

    switchboard::node::shutdown_signal().await;
    tracing::info!(instance, "draining");
    if let Err(err) = registrar.drain().await {
        tracing::warn!(error = %err, "drain failed");
    }
    // Requests already routed here finish; the routers send no new ones.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sample.in_flight.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Err(err) = registrar.stop().await {
        tracing::warn!(error = %err, "unregistering failed; the leases will expire");
    }
    stop.cancel();
    let _ = server.await;
    tracing::info!(instance, "stopped");
    Ok(())
}

async fn count_in_flight(
    State(sample): State<Arc<Sample>>,
    Query(delay): Query<Delay>,
    request: Request,
    next: Next,
) -> Response {
    sample.in_flight.fetch_add(1, Ordering::SeqCst);
    if let Some(ms) = delay.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let response = next.run(request).await;
    sample.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn echo(State(sample): State<Arc<Sample>>, request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024).await.unwrap_or_default();
    axum::Json(json!({
        "instance": sample.instance,
        "contract": format!("{HTTP_NAMESPACE}/{ECHO_CONTRACT}"),
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "body": String::from_utf8_lossy(&body),
    }))
}

async fn invalidate(State(sample): State<Arc<Sample>>, body: Bytes) -> impl IntoResponse {
    let count = sample.invalidations.fetch_add(1, Ordering::SeqCst) + 1;
    axum::Json(
        json!({ "instance": sample.instance, "invalidated": String::from_utf8_lossy(&body), "invalidations": count }),
    )
}

async fn stats(State(sample): State<Arc<Sample>>) -> impl IntoResponse {
    // The middleware counts this request too.
    let in_flight = sample.in_flight.load(Ordering::SeqCst).saturating_sub(1);
    axum::Json(json!({
        "instance": sample.instance,
        "invalidations": sample.invalidations.load(Ordering::SeqCst),
        "in_flight": in_flight,
    }))
}

async fn soap_operation(State(sample): State<Arc<Sample>>, headers: HeaderMap, body: Bytes) -> Response {
    let version = soap::soap_version(&headers).unwrap_or(SoapVersion::V11);
    let action = soap::request_action(&headers, &body);
    let operation = action.as_deref().and_then(|a| a.rsplit_once('/')).map(|(_, op)| op.to_owned());
    let result = match operation.as_deref() {
        Some("Add") => match (int_element(&body, "a"), int_element(&body, "b")) {
            (Some(a), Some(b)) => Ok(("Add", (a + b).to_string())),
            _ => Err("Add needs integer <a> and <b>"),
        },
        Some("Echo") => Ok(("Echo", sample.instance.clone())),
        _ => Err("unknown operation; this service offers Add and Echo"),
    };
    match result {
        Ok((operation, value)) => {
            let inner = format!(
                r#"<{operation}Response xmlns="{SOAP_NAMESPACE}"><{operation}Result>{}</{operation}Result><Instance>{}</Instance></{operation}Response>"#,
                quick_xml::escape::escape(value.as_str()),
                quick_xml::escape::escape(sample.instance.as_str())
            );
            soap::response(StatusCode::OK, soap::envelope(version, &inner)).into_response()
        }
        Err(message) => {
            soap::response(StatusCode::BAD_REQUEST, soap::fault(version, true, "bad_operation", message, None))
                .into_response()
        }
    }
}

/// The integer text of the first element with this local name.
fn int_element(xml: &[u8], name: &str) -> Option<i64> {
    let mut reader = quick_xml::reader::Reader::from_reader(xml);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(start) if start.local_name().as_ref() == name => inside = true,
            Event::Text(text) if inside => return text.xml10_content().trim().parse().ok(),
            Event::End(_) if inside => return None,
            Event::Eof => return None,
            _ => {}
        }
    }
}
