//! The document against the code: the committed copy is current, every documented operation is
//! served, every route is documented, and every operation lists the refusals the layers in
//! front of its handler can answer.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::document;
use super::document_text;
use crate::api::tests::node_with_a_service_token;
use crate::api::tests::single_node;

/// Where the document is committed.
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

/// The command that writes the committed document anew.
const REFRESH: &str = "SWITCHBOARD_WRITE_OPENAPI=1 cargo test --lib api::openapi";

/// The methods a path item may hold that the API could serve.
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document_json() -> Value {
    serde_json::to_value(document()).unwrap()
}

/// Every documented operation as (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, &'static str, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                all.push((path.clone(), method, operation.clone()));
            }
        }
    }
    all
}

/// A concrete URL of a documented path: every path parameter given a well-formed value.
fn concrete(path: &str) -> String {
    path.replace("/registrations/{id}", "/registrations/00000000000000000000000000000000")
        .replace("/nodes/{id}", "/nodes/99")
        .replace("{name}", "nobody")
}

async fn answer(app: &Router, method: &str, uri: &str) -> (StatusCode, Value) {
    let request = Request::builder().method(method.to_uppercase().as_str()).uri(uri).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    // An event stream does not end: its status is the answer.
    if response.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")) {
        return (status, Value::Null);
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[test]
fn the_committed_document_is_the_one_the_code_makes() {
    let made = document_text();
    if std::env::var_os("SWITCHBOARD_WRITE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(COMMITTED, &made).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == made,
        "docs/openapi.json is not the document the code makes (the API changed, or the file was edited by \
         hand): run `{REFRESH}` and commit the result"
    );
}

#[test]
fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_public_health_checks() {
    let doc = document_json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"], serde_json::json!([{ "bearer": [] }]));
    let public: Vec<(String, &str)> = operations(&doc)
        .into_iter()
        .filter(|(_, _, operation)| operation.get("security") == Some(&serde_json::json!([])))
        .map(|(path, method, _)| (path, method))
        .collect();
    let expected = [
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/metrics", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/soap/registration", "get"),
    ];
    assert_eq!(public, expected.map(|(p, m)| (p.to_owned(), m)));
}

/// What the layers in front of a handler may answer, whatever the handler does: a guarded
/// operation may answer 401 and 431; one that takes a body 400, 413 and 415; one with query or
/// path parameters 400. Each must be in the operation's responses, or a client (and
/// schemathesis's status check) meets an undocumented status.
#[test]
fn every_operation_lists_the_refusals_of_the_layers_before_its_handler() {
    let doc = document_json();
    let mut ids = std::collections::BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
        assert!(ids.insert(id.clone()), "operationId {id:?} of {method} {path} is not unique");
        let responses = operation["responses"].as_object().unwrap();
        let has = |status: &str| responses.contains_key(status);
        let name = format!("{} {path}", method.to_uppercase());
        assert!(responses.keys().any(|s| s.starts_with('2')), "{name} has no success");
        let public = operation.get("security") == Some(&serde_json::json!([]));
        if !public {
            assert!(has("401") && has("431"), "{name}: a guarded operation may answer 401 and 431");
        }
        if operation.get("requestBody").is_some() {
            for status in ["400", "413", "415"] {
                assert!(has(status), "{name} takes a body: it may answer {status}");
            }
        }
        if operation.get("parameters").is_some() {
            assert!(has("400"), "{name} has parameters: it may answer 400");
        }
    }
}

/// Every documented path and method reaches a handler: no request for one meets the router's
/// fallback (404 `route_not_found`) or 405.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let (_dir, app) = single_node().await;
    let doc = document_json();
    let all = operations(&doc);
    assert!(all.len() >= 25, "the document names only {} operations", all.len());
    for (path, method, _) in all {
        let (status, body) = answer(&app, method, &concrete(&path)).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented but not served");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["code"] == "route_not_found"),
            "{method} {path} is documented but the router has no such route"
        );
    }
}

/// Every route the router serves is documented: on a documented path, a method the document
/// does not name is 405; and no route is added around `OpenApiRouter::routes` (the only way a
/// route gets into both the router and the document), which the scan below holds.
#[tokio::test]
async fn every_served_route_is_documented() {
    let (_dir, app) = single_node().await;
    let doc = document_json();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.into_iter().filter(|m| item.get(*m).is_none()) {
            let (status, _) = answer(&app, method, &concrete(path)).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is served but not documented");
        }
    }
    // The calls that add a route to a router without an operation: axum's own, and
    // `OpenApiRouter`'s pass-throughs to them. Spelled in pieces so that this file does not match.
    let forbidden = [
        [".", "route("].concat(),
        [".", "route_service("].concat(),
        [".", "nest("].concat(),
        [".", "nest_service("].concat(),
        ["axum::", "routing"].concat(),
    ];
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut stray = Vec::new();
    let mut sources = vec![api];
    while let Some(dir) = sources.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources.push(path);
                continue;
            }
            let is_test = path.file_name().is_some_and(|n| n == "tests.rs");
            if path.extension().is_none_or(|e| e != "rs") || is_test {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (number, line) in text.lines().enumerate() {
                if forbidden.iter().any(|f| line.contains(f.as_str())) {
                    stray.push(format!("{}:{}: {}", path.display(), number + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        stray.is_empty(),
        "routes registered outside OpenApiRouter::routes (so missing from the OpenAPI document): \
         register them with routes!(...) from handlers with #[utoipa::path]:\n{}",
        stray.join("\n")
    );
}

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let (_dir, app) = node_with_a_service_token().await;
    let request = Request::builder().uri(super::PATH).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8(bytes.to_vec()).unwrap(), document_text());
    // The operations it describes still need one.
    let (status, body) = answer(&app, "get", "/v1/registrations").await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
}
