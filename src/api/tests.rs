//! The control API router exercised without sockets, over an in-process single-node cluster.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use serde_json::json;
use tower::ServiceExt;

use super::*;
use crate::config::NodeConfig;
use crate::raft::PeerNode;
use crate::raft::RaftTuning;
use crate::telemetry::LogFormat;

pub(super) async fn single_node() -> (tempfile::TempDir, Router) {
    single_node_with(crate::cluster::RegistryLimits::default()).await
}

async fn single_node_with(limits: crate::cluster::RegistryLimits) -> (tempfile::TempDir, Router) {
    single_node_full(limits, Tokens::default()).await
}

async fn single_node_full(limits: crate::cluster::RegistryLimits, tokens: Tokens) -> (tempfile::TempDir, Router) {
    let dir = tempfile::TempDir::new().unwrap();
    let node = PeerNode::at("127.0.0.1:1");
    let config = NodeConfig {
        node_id: 1,
        data_dir: dir.path().to_owned(),
        data_addr: "127.0.0.1:0".parse().unwrap(),
        api_addr: "127.0.0.1:0".parse().unwrap(),
        peer_addr: "127.0.0.1:0".parse().unwrap(),
        health_addr: None,
        advertised: node.clone(),
        initial_voters: [(1, node)].into(),
        cluster_secret: "0123456789abcdef".into(),
        raft: RaftTuning::default(),
        write_timeout: Duration::from_secs(2),
        drain: Duration::ZERO,
        max_stale_routing: None,
        data_plane: crate::proxy::DataPlaneConfig::default(),
        worker_threads: None,
        tokens: Default::default(),
        address_policy: Default::default(),
        tls: None,
        peer_tls: None,
        cache_bytes: 8 << 20,
        log_format: LogFormat::Text,
        limits,
        audit_log: None,
        health: Default::default(),
    };
    let cluster = crate::node::open(&config).await.unwrap();
    // The duties end with the test's runtime.
    let _duties = cluster.start_duties();
    let mut metrics = cluster.raft().metrics();
    tokio::time::timeout(Duration::from_secs(10), metrics.wait_for(|m| m.current_leader == Some(1)))
        .await
        .unwrap()
        .unwrap();
    tokens.attach(Arc::new(cluster.view().clone()));
    let prober = crate::health::Prober::new(cluster.clone(), Default::default(), Default::default());
    (
        dir,
        router(ApiState {
            cluster,
            tokens: Arc::new(tokens),
            policy: Default::default(),
            https: false,
            prober,
            // Short, for the heartbeat test; other tests read no stream.
            watches: Watches::default().with_heartbeat(Duration::from_millis(200)),
        }),
    )
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    send(app, None, method, uri, body).await
}

/// One request, with `Authorization: Bearer <token>` when a token is given.
async fn send(app: &Router, token: Option<&str>, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = app.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn registration(address: &str) -> Value {
    json!({ "address": address, "contract_name": "ICalc", "contract_namespace": "http://tempuri.org/", "weight": 2, "metadata": { "zone": "a" } })
}

#[tokio::test]
async fn register_show_list_unregister() {
    let (_dir, app) = single_node().await;
    let (status, created) = call(&app, "POST", "/v1/registrations", Some(registration("http://svc:9000/calc"))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["weight"], 2);
    assert_eq!(created["metadata"]["zone"], "a");
    assert_eq!(created["state"], "active");
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, again) = call(&app, "POST", "/v1/registrations", Some(registration("http://svc:9000/calc"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["id"], id.as_str());

    let (status, shown) = call(&app, "GET", &format!("/v1/registrations/{id}?consistency=linearizable"), None).await;
    assert_eq!((status, shown["address"].as_str()), (StatusCode::OK, Some("http://svc:9000/calc")));

    let (_, list) =
        call(&app, "GET", "/v1/registrations?contract_namespace=http://tempuri.org&contract_name=ICalc", None).await;
    assert_eq!(list["registrations"].as_array().unwrap().len(), 1);
    let (_, list) = call(&app, "GET", "/v1/registrations?contract_name=Other", None).await;
    assert_eq!(list["registrations"].as_array().unwrap().len(), 0);

    let (status, removed) = call(&app, "DELETE", &format!("/v1/registrations/{id}"), None).await;
    assert_eq!((status, removed["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    let (status, error) = call(&app, "DELETE", &format!("/v1/registrations/{id}"), None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::NOT_FOUND, Some("registration_not_found")));
}

/// A GET whose answer's `X-Switchboard-Index` and body come back.
async fn get_indexed(app: &Router, uri: &str) -> (StatusCode, Option<u64>, Value) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let index = response.headers().get("x-switchboard-index").map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, index, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_blocking_list_answers_once_the_index_passes_or_at_its_wait_with_the_same_index() {
    let (_dir, app) = single_node().await;
    let (status, index, page) = get_indexed(&app, "/v1/registrations").await;
    assert_eq!(status, StatusCode::OK);
    let index = index.expect("every list says the index it reflects");
    assert_eq!(page["applied_index"].as_u64(), Some(index));

    // Nothing changes: the wait ends and the answer has the same index.
    let (status, same, _) = get_indexed(&app, &format!("/v1/registrations?index={index}&wait=200ms")).await;
    assert_eq!((status, same), (StatusCode::OK, Some(index)));
    // An index already passed answers at once.
    let (_, at_once, _) = get_indexed(&app, "/v1/registrations?index=0&wait=10m").await;
    assert_eq!(at_once, Some(index));

    // A change wakes a read that waits for it: the answer holds the change and a later index
    // (it could not hold them had it answered before the change).
    let waiting = tokio::spawn({
        let app = app.clone();
        async move { get_indexed(&app, &format!("/v1/registrations?index={index}&wait=60s")).await }
    });
    let (status, created) = call(&app, "POST", "/v1/registrations", Some(registration("http://svc:9000/"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, woken, page) =
        tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("the change wakes the read").unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(woken.unwrap() > index, "{woken:?} after {index}");
    assert_eq!(page["registrations"][0]["id"], created["id"]);

    for uri in [
        "/v1/registrations?wait=30s",
        "/v1/registrations?index=1&wait=0s",
        "/v1/registrations?index=1&wait=11m",
        "/v1/registrations?index=1&wait=later",
    ] {
        let (status, error) = call(&app, "GET", uri, None).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_wait")), "{uri}");
    }
    let (status, error) = call(&app, "GET", "/v1/registrations?index=soon", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
}

#[tokio::test]
async fn lists_come_in_pages_in_a_stable_order() {
    let (_dir, app) = single_node().await;
    for i in 0..12 {
        let (status, _) =
            call(&app, "POST", "/v1/registrations", Some(registration(&format!("http://svc{i}:9000/")))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut uri = "/v1/registrations?limit=5".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = call(&app, "GET", &uri, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(page["registrations"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/v1/registrations?limit=5&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), &seen), (12, &sorted), "every registration once, in id order");
    // The default page, bad limits and cursors.
    let (_, page) = call(&app, "GET", "/v1/registrations", None).await;
    assert_eq!(page["registrations"].as_array().unwrap().len(), 12);
    assert!(page.get("next_cursor").is_none());
    for (uri, code) in [
        ("/v1/registrations?limit=0", "invalid_limit"),
        ("/v1/registrations?limit=5001", "invalid_limit"),
        ("/v1/registrations?cursor=zz", "invalid_cursor"),
        ("/v1/policies?limit=0", "invalid_limit"),
        ("/v1/audit?limit=100000", "invalid_limit"),
    ] {
        let (status, error) = call(&app, "GET", uri, None).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{uri}");
    }
    // The audit trail pages backwards, newest first.
    let (_, first) = call(&app, "GET", "/v1/audit?limit=10", None).await;
    let cursor = first["next_cursor"].as_u64().unwrap();
    let (_, rest) = call(&app, "GET", &format!("/v1/audit?limit=10&cursor={cursor}"), None).await;
    let seqs: Vec<u64> = [&first, &rest]
        .iter()
        .flat_map(|page| page["records"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(seqs, (0..12).rev().collect::<Vec<u64>>());
    assert!(rest.get("next_cursor").is_none());
}

#[tokio::test]
async fn the_registry_limits_refuse_cleanly_and_change_nothing() {
    let limits = crate::cluster::RegistryLimits { max_registrations: 3, max_bytes: 1_000 };
    let (_dir, app) = single_node_with(limits).await;
    for i in 0..3 {
        let (status, _) = call(&app, "POST", "/v1/registrations", Some(registration(&format!("http://svc{i}/")))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, error) = call(&app, "POST", "/v1/registrations", Some(registration("http://svc3/"))).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::INSUFFICIENT_STORAGE, Some("registry_full")), "{error}");
    // Refreshing what is there, and removing, still work.
    let (status, _) = call(&app, "POST", "/v1/registrations", Some(registration("http://svc0/"))).await;
    assert_eq!(status, StatusCode::OK);
    let info =
        json!({ "address": "http://svc2/", "contract_name": "ICalc", "contract_namespace": "http://tempuri.org/" });
    let (status, _) = call(&app, "POST", "/v1/registrations/unregister", Some(info)).await;
    assert_eq!(status, StatusCode::OK);
    // The byte limit: a registration that is too large for what is left.
    let mut big = registration("http://svc4/");
    big["metadata"] = json!({ "blob": "x".repeat(1_000) });
    let (status, error) = call(&app, "POST", "/v1/registrations", Some(big)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::INSUFFICIENT_STORAGE, Some("registry_full")), "{error}");
    let (_, list) = call(&app, "GET", "/v1/registrations", None).await;
    let addresses: Vec<&str> =
        list["registrations"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap()).collect();
    assert_eq!(addresses.len(), 2, "nothing refused was stored: {addresses:?}");
    // Metadata is capped per registration too.
    let mut heavy = registration("http://svc5/");
    heavy["metadata"] = (0..20).map(|i| (format!("k{i}"), Value::from("v".repeat(1_000)))).collect();
    let (status, error) = call(&app, "POST", "/v1/registrations", Some(heavy)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_metadata")), "{error}");
    assert!(crate::metrics::METRICS.limit_hits(crate::metrics::Limit::Registry) >= 2);
}

#[tokio::test]
async fn refusals_use_the_error_format_and_change_nothing() {
    let (_dir, app) = single_node().await;
    let cases = [
        (json!({ "address": "gopher://x/", "contract_name": "c", "contract_namespace": "n" }), "invalid_address"),
        (json!({ "address": "http://x/", "contract_name": "", "contract_namespace": "n" }), "invalid_contract_name"),
        (
            json!({ "address": "http://x/", "contract_name": "c", "contract_namespace": " " }),
            "invalid_contract_namespace",
        ),
        (
            json!({ "address": "http://x/", "contract_name": "c", "contract_namespace": "n", "ttl_ms": 5 }),
            "invalid_ttl",
        ),
        (
            json!({ "address": "http://x/", "contract_name": "c", "contract_namespace": "n", "extra": true }),
            "invalid_body",
        ),
        (json!({ "address": 7, "contract_name": "c", "contract_namespace": "n" }), "invalid_body"),
        (json!([1, 2]), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, error) = call(&app, "POST", "/v1/registrations", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error["code"], code, "{body}");
    }
    // Bodies that are not what they claim, or too large for the API.
    let valid = r#"{"address":"http://a/","contract_name":"c","contract_namespace":"n"}"#;
    let long = "x".repeat(70 * 1024);
    let too_large = format!(
        r#"{{"address":"http://a/","contract_name":"c","contract_namespace":"n","metadata":{{"k":"{long}"}}}}"#
    );
    let raw_cases: [(Option<&str>, &str, StatusCode, &str); 5] = [
        (Some("application/json"), "{not json", StatusCode::BAD_REQUEST, "malformed_json"),
        (Some("text/plain"), valid, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (None, valid, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (
            Some("application/json"),
            r#"{"address":"relative/path","contract_name":"c","contract_namespace":"n"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_address",
        ),
        (Some("application/json"), &too_large, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
    ];
    for (content_type, body, expected, code) in raw_cases {
        let headers: Vec<(&str, &str)> = content_type.map(|c| ("content-type", c)).into_iter().collect();
        let (status, _, answer) = post_raw(&app, "/v1/registrations", &headers, body.as_bytes().to_vec()).await;
        let error: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!((status, error["code"].as_str()), (expected, Some(code)), "{body:.80}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    }
    for (body, code) in [
        (
            json!({ "address": "http://a/", "contract_name": "c".repeat(300), "contract_namespace": "n" }),
            "invalid_contract_name",
        ),
        (json!({ "address": "http://a/", "contract_name": "c" }), "invalid_body"),
        (
            json!({ "address": "http://a/", "contract_name": "c", "contract_namespace": "n", "weight": 0 }),
            "invalid_weight",
        ),
    ] {
        let (status, error) = call(&app, "POST", "/v1/registrations", Some(body.clone())).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
    }
    for (uri, expected, code) in [
        ("/v1/registrations/00000000000000000000000000000000", StatusCode::NOT_FOUND, "registration_not_found"),
        ("/v1/registrations?consistency=whenever", StatusCode::BAD_REQUEST, "invalid_query"),
        ("/v1/registrations?colour=blue", StatusCode::BAD_REQUEST, "invalid_query"),
        ("/v1/nothing-here", StatusCode::NOT_FOUND, "route_not_found"),
    ] {
        let (status, error) = call(&app, "GET", uri, None).await;
        assert_eq!((status, error["code"].as_str()), (expected, Some(code)), "{uri}");
    }
    let node = json!({ "node_id": 9, "peer_addr": "no-port" });
    let bad_node = Request::post("/v1/cluster/nodes")
        .header("authorization", "Bearer 0123456789abcdef")
        .header("content-type", "application/json")
        .body(Body::from(node.to_string()))
        .unwrap();
    let response = app.clone().oneshot(bad_node).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let (status, error) = call(&app, "POST", "/v1/registrations/unregister", Some(json!({ "address": "x" }))).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")));
    let (status, error) = call(&app, "GET", "/v1/registrations/zz", None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_id")));
    let (status, error) = call(&app, "DELETE", "/v1/cluster/nodes/x", None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")));
    let (status, error) = call(&app, "DELETE", "/v1/cluster/nodes/7", None).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        "dev mode: no secret"
    );
    let with_secret = Request::delete("/v1/cluster/nodes/7").header("authorization", "Bearer 0123456789abcdef");
    let response = app.clone().oneshot(with_secret.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (status, error) = call(&app, "PATCH", "/v1/registrations", None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));

    let (_, list) = call(&app, "GET", "/v1/registrations", None).await;
    assert_eq!(list["registrations"], json!([]));
}

#[tokio::test]
async fn health_and_cluster_view() {
    let (_dir, app) = single_node().await;
    let (status, live) = call(&app, "GET", "/health/live", None).await;
    assert_eq!((status, live["status"].as_str()), (StatusCode::OK, Some("live")));
    let (status, ready) = call(&app, "GET", "/health/ready", None).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let (_, view) = call(&app, "GET", "/v1/cluster", None).await;
    assert_eq!(view["node_id"], 1);
    assert_eq!(view["role"], "leader");
    assert_eq!(view["leader_id"], 1);
    assert_eq!(view["members"][0]["role"], "voter");
    assert!(view["term"].as_u64().unwrap() >= 1);
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// JSON-like bodies: valid documents with hostile values, and raw garbage.
    fn bodies() -> impl Strategy<Value = Vec<u8>> {
        let text = prop_oneof![".{0,64}", "(http|https|ftp|file|gopher)://[a-z0-9.:\\[\\]@%/?#-]{0,40}", "\\PC{0,16}"];
        let document =
            (text.clone(), text.clone(), text, proptest::option::of(any::<i64>()), proptest::option::of(any::<i64>()))
                .prop_map(|(address, name, namespace, weight, ttl)| {
                    let mut body =
                        json!({ "address": address, "contract_name": name, "contract_namespace": namespace });
                    if let Some(weight) = weight {
                        body["weight"] = json!(weight);
                    }
                    if let Some(ttl) = ttl {
                        body["ttl_ms"] = json!(ttl);
                    }
                    body.to_string().into_bytes()
                });
        prop_oneof![document, proptest::collection::vec(any::<u8>(), 0..256)]
    }

    /// Whatever arrives, the answer is 2xx or a 4xx JSON error, never a 5xx or a panic, and a
    /// refusal leaves the list as it was. One node serves every case (booting a Raft node per
    /// case would cost more than the cases); each case checks the change it made.
    #[test]
    fn registration_input_never_breaks_the_api() {
        let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (_dir, app) = runtime.block_on(single_node());
        let count = |app: Router| async move {
            let (_, list) = call(&app, "GET", "/v1/registrations?limit=5000", None).await;
            list["registrations"].as_array().unwrap().len()
        };
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases, ..ProptestConfig::default() });
        let strategy = proptest::collection::vec(bodies(), 1..8);
        let outcome = runner.run(&strategy, |bodies| {
            runtime.block_on(async {
                for body in bodies {
                    let before = count(app.clone()).await;
                    let request = Request::post("/v1/registrations")
                        .header("content-type", "application/json")
                        .body(Body::from(body))
                        .unwrap();
                    let response = app.clone().oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = response.into_body().collect().await.unwrap().to_bytes();
                    let answer: Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
                    prop_assert!(status.is_success() || status.is_client_error(), "{status}: {answer}");
                    if status.is_client_error() {
                        let described =
                            answer["code"].as_str().is_some_and(|c| !c.is_empty()) && answer["message"].is_string();
                        prop_assert!(described, "{answer}");
                    }
                    let created = usize::from(status == StatusCode::CREATED);
                    prop_assert_eq!(count(app.clone()).await, before + created, "{}: {}", status, answer);
                }
                Ok(())
            })
        });
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
    }

    proptest! {
        /// Validation alone, much faster: never panics, and what it accepts is canonical.
        #[test]
        fn validation_never_panics(address in ".{0,80}", name in ".{0,40}", namespace in ".{0,40}", weight in any::<Option<u32>>(), ttl in any::<Option<u64>>()) {
            let request = crate::registry::RegistrationRequest {
                address, contract_name: name, contract_namespace: namespace, ttl_ms: ttl, weight, metadata: Default::default(), check: None,
            };
            if let Ok(spec) = crate::registry::RegistrationSpec::new(request) {
                let again = crate::registry::RegistrationSpec::new(crate::registry::RegistrationRequest {
                    address: spec.address.clone(),
                    contract_name: spec.contract_name.clone(),
                    contract_namespace: spec.contract_namespace.clone(),
                    ttl_ms: spec.ttl_ms,
                    weight: Some(spec.weight),
                    metadata: spec.metadata.clone(),
                    check: None,
                }).expect("an accepted registration is accepted again");
                prop_assert_eq!(again.id, spec.id, "normalization is idempotent");
            }
        }
    }
}

/// POSTs raw bytes with the given headers; answers status, content type and body text.
async fn post_raw(app: &Router, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, String, String) {
    raw(app, "POST", uri, headers, body).await
}

/// Sends raw bytes with the given method and headers; answers status, content type and body text.
async fn raw(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, String, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, String::from_utf8_lossy(&bytes).into_owned())
}

/// A node in secure mode with one token, `svc`, that may register in `urn:a*`.
pub(super) async fn node_with_a_service_token() -> (tempfile::TempDir, Router) {
    let tokens = Tokens::parse(
        r#"{"tokens": [{"name": "svc", "token": "svc-token-0123456789", "scopes": ["register:urn:a*"]}]}"#,
    )
    .unwrap();
    single_node_full(Default::default(), tokens).await
}

#[tokio::test]
async fn the_registration_endpoint_describes_itself_in_wsdl_without_a_token() {
    let (_dir, app) = node_with_a_service_token().await;
    let uri = format!("{}?wsdl", soap::PATH);
    let (status, content_type, wsdl) = raw(&app, "GET", &uri, &[("host", "lb.example:8081")], Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{wsdl}");
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    // Well-formed, with both bindings, the seed's actions and the address the client used.
    let mut reader = quick_xml::Reader::from_str(&wsdl);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(err) => panic!("the WSDL is not well-formed: {err}"),
        }
    }
    for expected in [
        r#"<soap:address location="http://lb.example:8081/v1/soap/registration"/>"#,
        r#"<soap12:address location="http://lb.example:8081/v1/soap/registration"/>"#,
        r#"soapAction="http://www.thatindigogirl.com/samples/2008/01/IRegistrationService/Register""#,
        r#"soapAction="http://www.thatindigogirl.com/samples/2008/01/IRegistrationService/Unregister""#,
        r#"targetNamespace="http://schemas.thatindigogirl.com/samples/2008/01""#,
    ] {
        assert!(wsdl.contains(expected), "{expected} missing");
    }
    // Behind a load balancer, its forwarded host and scheme.
    let forwarded = [("host", "10.0.0.7:8081"), ("x-forwarded-host", "api.example"), ("x-forwarded-proto", "https")];
    let (_, _, wsdl) = raw(&app, "GET", &uri, &forwarded, Vec::new()).await;
    assert!(wsdl.contains(r#"location="https://api.example/v1/soap/registration""#));
    // A GET without ?wsdl, or a Host that cannot be written into XML, is refused.
    let (status, _, text) = raw(&app, "GET", soap::PATH, &[("host", "lb")], Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("invalid_query"), "{text}");
    let (status, _, text) = raw(&app, "GET", &uri, &[("host", "a\"/><x y=\"")], Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(text.contains("invalid_host"), "{text}");
    // Posting still needs a token.
    let soap11 = [("content-type", "text/xml; charset=utf-8")];
    let (status, _, _) = post_raw(&app, &uri, &soap11, b"<x/>".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_refusal_of_the_soap_endpoint_is_a_soap_fault() {
    let (_dir, app) = node_with_a_service_token().await;
    let soap11 = [("content-type", "text/xml; charset=utf-8"), ("soapaction", "\"x\"")];
    // No token: 401, as a SOAP 1.1 fault.
    let (status, content_type, text) = post_raw(&app, soap::PATH, &soap11, b"<x/>".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(content_type.starts_with("text/xml"), "{content_type}");
    assert!(text.contains("<faultcode>s:Client.unauthorized</faultcode>"), "{text}");
    // A bare token (no Bearer scheme) is refused too.
    let bare = [soap11[0], soap11[1], ("authorization", "svc-token-0123456789")];
    let (status, _, text) = post_raw(&app, soap::PATH, &bare, b"<x/>".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(text.contains("Bearer"), "{text}");
    // A body over the limit: 413, as a SOAP 1.2 fault for a SOAP 1.2 client.
    let soap12 = [("content-type", "application/soap+xml"), ("authorization", "Bearer svc-token-0123456789")];
    let (status, content_type, text) = post_raw(&app, soap::PATH, &soap12, vec![b' '; MAX_BODY_BYTES + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(content_type.starts_with("application/soap+xml"), "{content_type}");
    assert!(text.contains("<env:Value>env:Sender</env:Value>") && text.contains(">sb:body_too_large<"), "{text}");
    // The JSON API keeps its JSON errors.
    let (status, error) = call(&app, "GET", "/v1/registrations", None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
}

async fn call_as(app: &Router, token: &str, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    send(app, Some(token), method, uri, body).await
}

#[tokio::test]
async fn tokens_are_created_listed_without_secrets_and_revoked_at_runtime() {
    const OPS: &str = "ops-token-0123456789";
    const READER: &str = "reader-token-0123456789";
    let tokens = Tokens::parse(&format!(
        r#"{{"tokens": [{{"name": "ops", "token": "{OPS}", "scopes": ["admin", "read"]}},
                        {{"name": "reader", "token": "{READER}", "scopes": ["read"]}}]}}"#
    ))
    .unwrap();
    let (_dir, app) = single_node_full(Default::default(), tokens).await;
    let create = json!({ "name": "svc", "scopes": ["register:urn:svc*", "read"], "max_registrations": 5 });
    let (status, error) = call_as(&app, READER, "POST", "/v1/tokens", Some(create.clone())).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "admin only");

    let (status, created) = call_as(&app, OPS, "POST", "/v1/tokens", Some(create.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().expect("a made token is answered once").to_owned();
    assert_eq!(token.len(), 64);
    let (status, _) = call_as(&app, &token, "GET", "/v1/registrations", None).await;
    assert_eq!(status, StatusCode::OK, "the new token works at once");
    let registration = json!({ "address": "http://10.1.0.1/", "contract_name": "C", "contract_namespace": "urn:svc" });
    let (status, _) = call_as(&app, &token, "POST", "/v1/registrations", Some(registration)).await;
    assert_eq!(status, StatusCode::CREATED);

    // Refusals change nothing.
    for (body, status, code) in [
        (create.clone(), StatusCode::CONFLICT, "token_exists"),
        (json!({ "name": "ops", "scopes": ["read"] }), StatusCode::CONFLICT, "token_exists"),
        (json!({ "name": "x", "scopes": ["write"] }), StatusCode::BAD_REQUEST, "invalid_token"),
        (json!({ "name": "x y", "scopes": ["read"] }), StatusCode::BAD_REQUEST, "invalid_token"),
        (json!({ "name": "x", "scopes": [], "token": "short" }), StatusCode::BAD_REQUEST, "invalid_token"),
        (json!({ "name": "x", "scopes": [], "sha256": "zz" }), StatusCode::BAD_REQUEST, "invalid_token"),
    ] {
        let (got, error) = call_as(&app, OPS, "POST", "/v1/tokens", Some(body.clone())).await;
        assert_eq!((got, error["code"].as_str()), (status, Some(code)), "{body}");
    }

    let (status, list) = call_as(&app, OPS, "GET", "/v1/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["tokens"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ops", "reader", "svc"]);
    let text = list.to_string();
    assert!(!text.contains(&token) && !text.contains("sha256") && !text.contains(OPS), "no secrets: {text}");
    assert_eq!(list["tokens"][2]["source"], "api");
    assert_eq!(list["tokens"][2]["max_registrations"], 5);

    // Revocation: the runtime token, then a token of the file.
    let (status, revoked) = call_as(&app, OPS, "DELETE", "/v1/tokens/svc", None).await;
    assert_eq!((status, revoked["state"].as_str()), (StatusCode::OK, Some("revoked")));
    let (status, _) = call_as(&app, &token, "GET", "/v1/registrations", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, error) = call_as(&app, OPS, "DELETE", "/v1/tokens/svc", None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::CONFLICT, Some("token_revoked")));
    let (status, error) = call_as(&app, OPS, "DELETE", "/v1/tokens/nobody", None).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::NOT_FOUND, Some("token_not_found")));
    let (status, _) = call_as(&app, OPS, "DELETE", "/v1/tokens/reader", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call_as(&app, READER, "GET", "/v1/registrations", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token of the file is refused too");
    let (_, audit) = call_as(&app, OPS, "GET", "/v1/audit", None).await;
    let actions: Vec<&str> = audit["records"].as_array().unwrap().iter().filter_map(|r| r["action"].as_str()).collect();
    assert!(actions.contains(&"token_created") && actions.contains(&"token_revoked"), "{audit}");
}

#[tokio::test]
async fn dev_mode_has_no_tokens_to_manage() {
    let (_dir, app) = single_node().await;
    let (status, error) = call(&app, "POST", "/v1/tokens", Some(json!({ "name": "x", "scopes": ["read"] }))).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::CONFLICT, Some("dev_mode")));
}

#[tokio::test]
async fn binding_a_path_takes_its_own_scope() {
    let tokens = Tokens::parse(
        r#"{"tokens": [
            {"name": "plain", "token": "plain-token-0123456789", "scopes": ["register:urn:a*"]},
            {"name": "binder", "token": "binder-token-0123456789", "scopes": ["register:urn:a*", "bind:/a*"]}
        ]}"#,
    )
    .unwrap();
    let (_dir, app) = single_node_full(Default::default(), tokens).await;
    let bound = |address: &str, path: &str| json!({ "address": address, "contract_name": "C", "contract_namespace": "urn:a", "metadata": { "route.path": path } });
    // A token that may register but not bind: refused, and nothing is registered.
    let (status, error) =
        send(&app, Some("plain-token-0123456789"), "POST", "/v1/registrations", Some(bound("http://a1/", "/a"))).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("bind path /a"), "{error}");
    // One that may bind paths under /a: under it yes, elsewhere no.
    let (status, _) =
        send(&app, Some("binder-token-0123456789"), "POST", "/v1/registrations", Some(bound("http://a1/", "/a/v1")))
            .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) =
        send(&app, Some("binder-token-0123456789"), "POST", "/v1/registrations", Some(bound("http://a2/", "/ab")))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Without a path, the plain token registers as before.
    let plain = json!({ "address": "http://a3/", "contract_name": "C", "contract_namespace": "urn:a" });
    let (status, _) = send(&app, Some("plain-token-0123456789"), "POST", "/v1/registrations", Some(plain)).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn checks_are_validated_shown_with_their_health_and_filtered_by_it() {
    let (_dir, app) = single_node().await;
    let bad = [
        (json!({ "kind": "icmp" }), "invalid_body"),
        (json!({ "interval_ms": 100 }), "invalid_check"),
        (json!({ "interval_ms": 500, "timeout_ms": 600 }), "invalid_check"),
        (json!({ "fall": 0 }), "invalid_check"),
        (json!({ "deregister_after_ms": 10 }), "invalid_check"),
        (json!({ "kind": "http", "path": "health" }), "invalid_check"),
        (json!({ "interval": 500 }), "invalid_body"),
    ];
    for (check, code) in bad {
        let mut body = registration("http://svc:9000/calc");
        body["check"] = check.clone();
        let (status, error) = call(&app, "POST", "/v1/registrations", Some(body)).await;
        assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{check}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (_, list) = call(&app, "GET", "/v1/registrations", None).await;
    assert_eq!(list["registrations"].as_array().unwrap().len(), 0, "nothing refused was written");

    let mut body = registration("http://svc:9000/calc");
    body["check"] = json!({ "kind": "http", "path": "/up", "deregister_after_ms": 60000 });
    let (status, created) = call(&app, "POST", "/v1/registrations", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = call(&app, "POST", "/v1/registrations", Some(registration("http://other:9000/calc"))).await;
    assert_eq!(status, StatusCode::CREATED);
    // The node probes once it has caught up with the leader (itself), which its duties notice
    // within a few hundred ms.
    let url = format!("/v1/registrations/{}", created["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let (_, shown) = call(&app, "GET", &url, None).await;
        if shown["health"]["checked_by"] == 1 || std::time::Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shown["check"]["kind"], "http", "{shown}");
    assert_eq!(shown["check"]["path"], "/up", "{shown}");
    assert_eq!(shown["check"]["deregister_after_ms"], 60000, "{shown}");
    assert_eq!(shown["health"]["status"], "passing", "{shown}");
    assert_eq!(shown["health"]["since"], shown["registered_at_ms"], "{shown}");
    assert_eq!(shown["health"]["checked_by"], 1, "the only node probes it: {shown}");
    let (_, list) = call(&app, "GET", "/v1/registrations?health=passing", None).await;
    let other = list["registrations"].as_array().unwrap().iter().find(|r| r["address"] == "http://other:9000/calc");
    assert_eq!(other.unwrap()["check"]["kind"], "tcp", "the cluster default applies");
    assert_eq!(list["registrations"].as_array().unwrap().len(), 2);
    let (_, list) = call(&app, "GET", "/v1/registrations?health=critical", None).await;
    assert_eq!(list["registrations"].as_array().unwrap().len(), 0);
    let (status, error) = call(&app, "GET", "/v1/registrations?health=sick", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");

    // A policy's check and panic threshold are validated too.
    let policy = json!({ "contract_namespace": "http://tempuri.org/", "contract_name": "ICalc", "policy": "round_robin", "panic_threshold_percent": 101 });
    let (status, error) = call(&app, "PUT", "/v1/policies", Some(policy)).await;
    assert_eq!((status, error["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_policy")), "{error}");
    let policy = json!({ "contract_namespace": "http://tempuri.org/", "contract_name": "ICalc", "policy": "round_robin", "check": { "kind": "none" } });
    let (status, set) = call(&app, "PUT", "/v1/policies", Some(policy)).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (_, list) = call(&app, "GET", "/v1/registrations", None).await;
    let other = list["registrations"].as_array().unwrap().iter().find(|r| r["address"] == "http://other:9000/calc");
    assert_eq!(other.unwrap()["check"]["kind"], "none", "the policy's check applies: {list}");
    assert_eq!(other.unwrap()["health"]["checked_by"], Value::Null, "nothing probes it");
}

#[tokio::test]
async fn per_contract_health_metrics_need_the_read_scope_and_name_each_contract_with_a_check() {
    const READER: &str = "reader-token-0123456789";
    let tokens = Tokens::parse(&format!(
        r#"{{"tokens": [{{"name": "svc", "token": "svc-token-0123456789", "scopes": ["register:urn:a*"]}},
                         {{"name": "reader", "token": "{READER}", "scopes": ["read"]}}]}}"#
    ))
    .unwrap();
    let (_dir, app) = single_node_full(Default::default(), tokens).await;
    let (status, _) = call_as(
        &app,
        "svc-token-0123456789",
        "POST",
        "/v1/registrations",
        Some(json!({"address": "http://svc:9000/a", "contract_name": "IA", "contract_namespace": "urn:a"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, _, _) = raw(&app, "GET", "/v1/health/metrics", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let bearer = |token: &str| format!("Bearer {token}");
    let svc = bearer("svc-token-0123456789");
    let (status, _, _) = raw(&app, "GET", "/v1/health/metrics", &[("authorization", &svc)], Vec::new()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let reader = bearer(READER);
    let (status, content_type, text) =
        raw(&app, "GET", "/v1/health/metrics", &[("authorization", &reader)], Vec::new()).await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "text/plain; version=0.0.4"));
    for line in [
        "switchboard_health_contract_endpoints{contract=\"urn:a/IA\",status=\"passing\"} 1",
        "switchboard_health_contract_endpoints{contract=\"urn:a/IA\",status=\"critical\"} 0",
        "switchboard_health_contract_panic{contract=\"urn:a/IA\"} 0",
        "switchboard_health_contracts_in_panic 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
    // The unauthenticated scrape names no contract.
    let (status, _, open) = raw(&app, "GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!open.contains("urn:a"), "{open}");
}

/// An open event stream, read frame by frame.
struct EventStream {
    body: Body,
    buffer: String,
}

/// One frame: its event name, id and data.
type Frame = (Option<String>, Option<String>, Option<Value>);

impl EventStream {
    async fn open(app: &Router, uri: &str, last_event_id: Option<&str>) -> Result<Self, (StatusCode, Value)> {
        let mut request = Request::builder().uri(uri);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        if response.status() != StatusCode::OK {
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            return Err((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Ok(Self { body: response.into_body(), buffer: String::new() })
    }

    /// The next frame; fails after ten seconds without one.
    async fn frame(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut frame: Frame = (None, None, None);
                for line in raw.lines() {
                    match line.split_once(": ").or_else(|| line.split_once(':')) {
                        Some(("event", name)) => frame.0 = Some(name.to_owned()),
                        Some(("id", id)) => frame.1 = Some(id.to_owned()),
                        Some(("data", data)) => frame.2 = Some(serde_json::from_str(data).unwrap()),
                        _ => {}
                    }
                }
                return frame;
            }
            let next = tokio::time::timeout(Duration::from_secs(10), self.body.frame()).await;
            let chunk = next.expect("a frame within 10 s").expect("the stream goes on").unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk.into_data().unwrap()).unwrap());
        }
    }

    /// The next frame that is an event (heartbeats skipped).
    async fn event(&mut self) -> (String, String, Value) {
        loop {
            if let (Some(name), Some(id), Some(data)) = self.frame().await {
                return (name, id, data);
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_sends_each_change_once_in_order_and_resumes_after_any_id() {
    let (_dir, app) = single_node().await;
    let mut all = EventStream::open(&app, "/v1/events", None).await.unwrap();
    let (name, opened_at, _) = all.frame().await;
    assert_eq!(name, None, "a stream opens with its position, no event");
    let opened_at = opened_at.unwrap();
    let mut calc = EventStream::open(&app, "/v1/events?contract=http://tempuri.org/ICalc", None).await.unwrap();
    calc.frame().await;

    let (_, a) = call(&app, "POST", "/v1/registrations", Some(registration("http://a:1/"))).await;
    let other = json!({ "address": "http://o:1/", "contract_name": "Other", "contract_namespace": "urn:o" });
    call(&app, "POST", "/v1/registrations", Some(other)).await;
    let policy = json!({ "contract_namespace": "http://tempuri.org/", "contract_name": "ICalc", "policy": "weighted" });
    assert_eq!(call(&app, "PUT", "/v1/policies", Some(policy)).await.0, StatusCode::OK);
    let id = a["id"].as_str().unwrap();
    call(&app, "POST", &format!("/v1/registrations/{id}/drain"), None).await;
    call(&app, "DELETE", &format!("/v1/registrations/{id}"), None).await;

    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(all.event().await);
    }
    let names: Vec<&str> = seen.iter().map(|(name, _, _)| name.as_str()).collect();
    assert_eq!(names, ["registered", "registered", "policy_set", "drained", "unregistered"]);
    for (name, id, data) in &seen {
        assert_eq!((data["type"].as_str(), data["id"].as_str()), (Some(name.as_str()), Some(id.as_str())));
    }
    assert_eq!(seen[0].2["registration"]["address"], "http://a:1/");
    assert_eq!(seen[3].2["registration"]["state"], "draining");
    let ids: Vec<crate::registry::EventId> = seen.iter().map(|(_, id, _)| id.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");

    // The filtered stream has the contract's four and not the other's.
    let mut filtered = Vec::new();
    for _ in 0..4 {
        filtered.push(calc.event().await.1);
    }
    assert_eq!(filtered, [seen[0].1.clone(), seen[2].1.clone(), seen[3].1.clone(), seen[4].1.clone()]);

    // Resuming after the second event gives the third on: no gap, no repeat; so does `?index=`.
    let mut resumed = EventStream::open(&app, "/v1/events", Some(&seen[1].1)).await.unwrap();
    assert_eq!(resumed.frame().await.1.as_deref(), Some(seen[1].1.as_str()));
    assert_eq!(resumed.event().await.1, seen[2].1);
    let opened_at: crate::registry::EventId = opened_at.parse().unwrap();
    let uri = format!("/v1/events?index={}", opened_at.index);
    let mut from_start = EventStream::open(&app, &uri, None).await.unwrap();
    assert_eq!(from_start.event().await.1, seen[0].1);

    for (uri, last, code) in [
        ("/v1/events", Some("soon"), "invalid_last_event_id"),
        ("/v1/events", Some("1.2.3"), "invalid_last_event_id"),
        ("/v1/events?contract=nameless", None, "invalid_contract"),
        ("/v1/events?index=x", None, "invalid_query"),
        ("/v1/events?since=1", None, "invalid_query"),
    ] {
        let (status, body) = EventStream::open(&app, uri, last).await.err().expect("refused");
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{uri} {last:?}");
    }
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats_with_its_position() {
    let (_dir, app) = single_node().await;
    let mut stream = EventStream::open(&app, "/v1/events?contract=urn:x/C", None).await.unwrap();
    let (_, opened_at, _) = stream.frame().await;
    // A change of another contract moves the filtered stream's position without an event.
    let other = json!({ "address": "http://o:1/", "contract_name": "Other", "contract_namespace": "urn:o" });
    call(&app, "POST", "/v1/registrations", Some(other)).await;
    let (name, id, data) = stream.frame().await;
    assert_eq!((name, data), (None, None), "a heartbeat is a comment with an id");
    let id: crate::registry::EventId = id.unwrap().parse().unwrap();
    assert!(id > opened_at.unwrap().parse().unwrap(), "the heartbeat is past the skipped event");
}

#[tokio::test]
async fn event_streams_count_against_the_open_watches() {
    let (_dir, app) = single_node().await;
    let mut open = Vec::new();
    for _ in 0..MAX_WATCHES {
        open.push(EventStream::open(&app, "/v1/events", None).await.unwrap());
    }
    let (status, body) = EventStream::open(&app, "/v1/events", None).await.err().expect("refused");
    assert_eq!((status, body["code"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_watches")));
    drop(open.pop());
    assert!(EventStream::open(&app, "/v1/events", None).await.is_ok(), "a closed stream gives its place back");
}
