//! Routing outlives consensus: a node that was caught up keeps routing, and keeps reporting the
//! data plane ready, through an election and a loss of quorum, while writes wait for a leader;
//! leases are not lost to the outage; a node that never caught up is not ready to route.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use switchboard::registry::RegistrationRequest;
use switchboard_client::Registrar;
use switchboard_client::RegistrarConfig;

use crate::backend::Backend;
use crate::harness::Options;
use crate::harness::TestCluster;
use crate::harness::eventually;

/// `(status, body)` of a node's readiness: the control API's, or the data plane's.
async fn readiness(cluster: &TestCluster, id: u64, plane: Option<&str>) -> (u16, Value) {
    let query = plane.map_or_else(String::new, |plane| format!("?plane={plane}"));
    let response = cluster.http.get(format!("{}/health/ready{query}", cluster.api(id))).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn leased(address: &str, ttl_ms: u64) -> RegistrationRequest {
    RegistrationRequest {
        address: address.into(),
        contract_name: "ILeased".into(),
        contract_namespace: "urn:outage".into(),
        ttl_ms: Some(ttl_ms),
        weight: None,
        metadata: BTreeMap::new(),
        check: None,
    }
}

/// The newest audit action about registration `id` on node `node`.
async fn last_action(cluster: &TestCluster, node: u64, id: &str) -> String {
    let trail = cluster.get_json(&format!("{}/v1/audit?id={id}&limit=1", cluster.api(node))).await.unwrap();
    trail["records"][0]["action"].as_str().unwrap_or_default().to_owned()
}

/// Routes one plain HTTP request through node `via`'s data plane; returns the status and the
/// explain header that tells the age of the view it was routed from.
async fn route(cluster: &TestCluster, via: u64) -> (u16, String) {
    let response = cluster
        .http
        .get(format!("{}/item", cluster.data(via)))
        .header("x-switchboard-contract", "urn:outage/IEcho")
        .header("x-switchboard-explain", "1")
        .send()
        .await
        .unwrap();
    let age = response.headers().get("x-switchboard-view-age-ms").map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), age.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caught_up_node_routes_through_a_quorum_loss_and_nothing_acknowledged_or_leased_is_lost() {
    let options = Options { args: vec!["--write-timeout-ms".into(), "1500".into()], ..Options::default() };
    let mut cluster = TestCluster::start_with(3, options);
    let leader = cluster.wait_stable().await;
    let others: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let (survivor, wiped) = (others[0], others[1]);
    let backend = Backend::start("echo").await;
    cluster.register_all(leader, "urn:outage", "IEcho", &[backend.url()]).await;
    // Two services with leases: one renews through the survivor all along, the other only through
    // the leader, so it cannot renew while the leader is down (longer than its TTL).
    let renewed_config = RegistrarConfig {
        heartbeat_every: Some(Duration::from_millis(500)),
        ..RegistrarConfig::new(vec![cluster.api(survivor)], vec![leased("http://10.70.0.1/", 3_000)])
    };
    let cut_off_config = RegistrarConfig {
        heartbeat_every: Some(Duration::from_millis(500)),
        ..RegistrarConfig::new(vec![cluster.api(leader)], vec![leased("http://10.70.0.2/", 4_000)])
    };
    let renewed = Registrar::start(renewed_config).await.unwrap();
    let cut_off = Registrar::start(cut_off_config).await.unwrap();
    let epochs: Vec<(String, u64)> = [&renewed, &cut_off]
        .iter()
        .flat_map(|r| r.registrations())
        .map(|registration| (registration.id.to_string(), registration.epoch))
        .collect();
    for node in cluster.running() {
        eventually(&format!("node {node} data-ready and holding the leases"), Duration::from_secs(20), || async {
            let listed = cluster.list_all(node).await?;
            let ready = readiness(&cluster, node, Some("data")).await.0 == 200;
            (ready && listed.len() == 3).then_some(())
        })
        .await;
    }
    let (status, _) = cluster.register(leader, "http://10.70.1.1/", "urn:outage", "IAcked").await;
    assert_eq!(status, 201);

    // The quorum goes: the leader and the other follower are killed; the other follower comes
    // back with an empty data directory, a node that never caught up.
    cluster.kill(leader);
    cluster.kill(wiped);
    cluster.wipe(wiped);
    cluster.start_node(wiped);
    let outage = Instant::now();
    eventually("the survivor to know no leader", Duration::from_secs(20), || async {
        (cluster.cluster_view(survivor).await?["leader_id"].is_null()).then_some(())
    })
    .await;

    // Six seconds without a quorum, longer than both leases' TTLs: the survivor routes every
    // request and reports the data plane ready all along; its control API is not ready, a write
    // fails with no_leader; the new node is not ready to route.
    let mut routed = 0;
    let mut last_age = 0u64;
    while outage.elapsed() < Duration::from_secs(6) {
        let (status, age) = route(&cluster, survivor).await;
        assert_eq!(status, 200, "the survivor routes from its last view");
        let (status, body) = readiness(&cluster, survivor, Some("data")).await;
        assert_eq!(status, 200, "the survivor's data plane stays ready: {body}");
        last_age = age.parse().expect("the survivor's view was confirmed by a leader once");
        routed += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(routed >= 20, "{routed} requests routed during the outage");
    assert!(last_age >= 3_000, "explain tells how old the view is: {last_age} ms");
    assert_eq!(backend.hits(), routed, "every routed request reached the endpoint");
    let (status, body) = readiness(&cluster, survivor, None).await;
    assert_eq!((status, body["reason"].as_str()), (503, Some("no leader known")), "{body}");
    let (status, body) = cluster.register(survivor, "http://10.70.1.2/", "urn:outage", "IAcked").await;
    assert_eq!((status, body["code"].as_str()), (503, Some("no_leader")), "{body}");
    let (status, body) = readiness(&cluster, wiped, Some("data")).await;
    assert_eq!(status, 503, "a node that never caught up does not route: {body}");
    let metrics = cluster.http.get(format!("{}/metrics", cluster.api(survivor))).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("switchboard_leader_known 0") && metrics.contains("switchboard_data_ready 1"),
        "{metrics}"
    );
    assert!(cluster.log(survivor).contains("no leader known: routing from the last applied view"));

    // The leader comes back: a quorum again, writes resume, the new node catches up and becomes
    // ready to route, and nothing acknowledged or leased was lost.
    cluster.start_node(leader);
    let new_leader = cluster.wait_stable().await;
    let (status, _) = cluster.register(survivor, "http://10.70.1.3/", "urn:outage", "IAcked").await;
    assert_eq!(status, 201, "writes resume");
    eventually("the new node to be ready to route", Duration::from_secs(60), || async {
        (readiness(&cluster, wiped, Some("data")).await.0 == 200).then_some(())
    })
    .await;
    // The duty that logs it follows the Raft metrics on its own task: wait for the line.
    eventually("the survivor to log that a leader is known again", Duration::from_secs(20), || async {
        cluster.log(survivor).contains("a leader is known again").then_some(())
    })
    .await;
    // A lease's TTL after the leader took office, both leases are there under their first epoch.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in cluster.running() {
        let listed = cluster.list_all(node).await.unwrap();
        for (id, epoch) in &epochs {
            let found =
                listed.iter().find(|r| r["id"] == id.as_str()).unwrap_or_else(|| panic!("node {node} lost {id}"));
            assert_eq!(
                found["epoch"].as_u64(),
                Some(*epoch),
                "node {node}: {id} was never expired and registered again"
            );
        }
        let acked: Vec<&str> =
            listed.iter().filter_map(|r| r["address"].as_str()).filter(|a| a.starts_with("http://10.70.1.")).collect();
        assert_eq!(acked.len(), 2, "node {node}: both acknowledged registrations, not the refused one: {acked:?}");
    }
    for (id, _) in &epochs {
        assert_ne!(last_action(&cluster, new_leader, id).await, "expired", "{id}");
    }
    renewed.stop().await.unwrap();
    cut_off.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_staleness_limit_the_data_plane_stops_reporting_ready_once_its_view_is_that_old() {
    let options = Options { args: vec!["--max-stale-routing".into(), "2s".into()], ..Options::default() };
    let mut cluster = TestCluster::start_with(3, options);
    let leader = cluster.wait_stable().await;
    let survivor = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    eventually("the survivor ready to route", Duration::from_secs(20), || async {
        (readiness(&cluster, survivor, Some("data")).await.0 == 200).then_some(())
    })
    .await;
    for id in cluster.running().into_iter().filter(|&id| id != survivor) {
        cluster.kill(id);
    }
    let body = eventually("the survivor to fail closed", Duration::from_secs(20), || async {
        let (status, body) = readiness(&cluster, survivor, Some("data")).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body["reason"].as_str().unwrap().contains("--max-stale-routing"), "{body}");
}
