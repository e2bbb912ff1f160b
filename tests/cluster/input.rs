//! Refusals: malformed input, and peer requests without the cluster secret.

use serde_json::Value;

use crate::harness::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_is_refused_and_changes_nothing() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let (status, _) = cluster.register(leader, "http://10.5.0.1:80/", "urn:keep", "C").await;
    assert_eq!(status, 201);
    // Every refusal and its code is checked by the API's router tests; here, refusals taken by
    // a real node (one through a follower, which would forward a write) change nothing anywhere.
    let follower = cluster.running().into_iter().find(|n| *n != leader).unwrap();
    for node in [leader, follower] {
        let api = cluster.api(node);
        for (content_type, body, status) in [
            ("application/json", "{not json", 400),
            ("text/plain", r#"{"address":"http://a/","contract_name":"c","contract_namespace":"n"}"#, 415),
            ("application/json", r#"{"address":"ftp://a/","contract_name":"c","contract_namespace":"n"}"#, 400),
        ] {
            let request = cluster.http.post(format!("{api}/v1/registrations")).header("content-type", content_type);
            let response = request.body(body).send().await.unwrap();
            assert_eq!(response.status().as_u16(), status, "{body}");
            let error: Value = response.json().await.unwrap();
            assert!(error["code"].as_str().is_some_and(|c| !c.is_empty()), "{error}");
        }
    }

    // Nothing changed, on any node: behind a write acknowledged after every refusal, each node
    // lists the first registration and the barrier, nothing else.
    let (status, _) = cluster.register(follower, "http://10.5.9.9/", "urn:barrier", "C").await;
    assert_eq!(status, 201);
    cluster.wait_exactly_behind("http://10.5.9.9/", &["http://10.5.0.1/".to_owned()]).await;
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
