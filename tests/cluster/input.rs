//! Refusals: malformed input, and peer requests without the cluster secret.

use serde_json::Value;
use serde_json::json;

use crate::harness::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_is_refused_and_changes_nothing() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let (status, _) = cluster.register(leader, "http://10.5.0.1:80/", "urn:keep", "C").await;
    assert_eq!(status, 201);
    let api = cluster.api(leader);
    let long = "x".repeat(70 * 1024);

    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("POST", Some("application/json"), "{not json".into(), 400, "malformed_json"),
        (
            "POST",
            Some("text/plain"),
            r#"{"address":"http://a/","contract_name":"c","contract_namespace":"n"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            None,
            r#"{"address":"http://a/","contract_name":"c","contract_namespace":"n"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            Some("application/json"),
            r#"{"address":"ftp://a/","contract_name":"c","contract_namespace":"n"}"#.into(),
            400,
            "invalid_address",
        ),
        (
            "POST",
            Some("application/json"),
            r#"{"address":"relative/path","contract_name":"c","contract_namespace":"n"}"#.into(),
            400,
            "invalid_address",
        ),
        (
            "POST",
            Some("application/json"),
            r#"{"address":"http://a/","contract_name":"","contract_namespace":"n"}"#.into(),
            400,
            "invalid_contract_name",
        ),
        (
            "POST",
            Some("application/json"),
            format!(r#"{{"address":"http://a/","contract_name":"{}","contract_namespace":"n"}}"#, "c".repeat(300)),
            400,
            "invalid_contract_name",
        ),
        (
            "POST",
            Some("application/json"),
            r#"{"address":"http://a/","contract_name":"c"}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "POST",
            Some("application/json"),
            r#"{"address":"http://a/","contract_name":"c","contract_namespace":"n","bogus":1}"#.into(),
            400,
            "invalid_body",
        ),
        (
            "POST",
            Some("application/json"),
            r#"{"address":"http://a/","contract_name":"c","contract_namespace":"n","weight":0}"#.into(),
            400,
            "invalid_weight",
        ),
        (
            "POST",
            Some("application/json"),
            format!(
                r#"{{"address":"http://a/","contract_name":"c","contract_namespace":"n","metadata":{{"k":"{long}"}}}}"#
            ),
            413,
            "body_too_large",
        ),
    ];
    for (method, content_type, body, status, code) in cases {
        let mut request =
            cluster.http.request(method.parse().unwrap(), format!("{api}/v1/registrations")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body:.80}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{body:.80}: {error}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    for (url, status, code) in [
        (format!("{api}/v1/registrations/not-an-id"), 400, "invalid_id"),
        (format!("{api}/v1/registrations/{}", "0".repeat(32)), 404, "registration_not_found"),
        (format!("{api}/v1/registrations?consistency=whenever"), 400, "invalid_query"),
        (format!("{api}/v1/registrations?colour=blue"), 400, "invalid_query"),
        (format!("{api}/v1/nothing-here"), 404, "route_not_found"),
    ] {
        let response = cluster.http.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{url}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{url}");
    }
    let response = cluster.http.put(format!("{api}/v1/registrations")).send().await.unwrap();
    assert_eq!(response.status(), 405);

    let bad_node = json!({ "node_id": 9, "peer_addr": "no-port" });
    let (status, error) = cluster.as_operator("POST", leader, "/v1/cluster/nodes", Some(&bad_node)).await;
    assert_eq!((status, error["code"].as_str()), (400, Some("invalid_peer_addr")));

    // Nothing changed, on any node.
    for node in cluster.running() {
        cluster.wait_addresses(node, &["http://10.5.0.1/".to_owned()]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_endpoint_requires_the_secret_and_the_api_serves_no_raft() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let peer = cluster.peer(leader);
    for authorization in [None, Some("Bearer wrong-secret-wrong-secret"), Some("Basic dGVzdA==")] {
        let mut request = cluster.http.post(format!("{peer}/cluster/write")).body(vec![0u8; 8]);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "unauthorized");
    }
    for path in ["/raft/append", "/raft/vote", "/cluster/status"] {
        let response = cluster.http.post(format!("{peer}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    // The control API has no Raft routes.
    for path in ["/raft/append", "/raft/vote", "/raft/snapshot", "/cluster/write"] {
        let response = cluster.http.post(format!("{}{path}", cluster.api(leader))).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let (status, _) = cluster.register(leader, "http://10.6.0.1/", "urn:sec", "C").await;
    assert_eq!(status, 201, "the cluster still works");
}
