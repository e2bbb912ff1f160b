//! Adding, removing and re-adding nodes; a member that lost its data directory.

use serde_json::Value;
use serde_json::json;

use crate::harness::Ports;
use crate::harness::TestCluster;

fn member_ids(view: &Value, role: &str) -> Vec<u64> {
    view["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn add_remove_and_add_back_a_wiped_node() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    let mut expected = Vec::new();
    for i in 0..30u32 {
        let address = format!("http://10.3.0.{i}/");
        cluster.register(leader, &address, "urn:members", "C").await;
        expected.push(address);
    }
    expected.sort();

    // Node 4 starts outside the cluster; adding it (through a follower) makes it a voter with the data.
    let ports = Ports::free();
    cluster.add_process(4, ports, vec![]);
    cluster.start_node(4);
    let body = json!({ "node_id": 4, "peer_addr": format!("127.0.0.1:{}", ports.peer) });
    let (status, view) = cluster.as_operator("POST", follower, "/v1/cluster/nodes", Some(&body)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(member_ids(&view, "voter"), [1, 2, 3, 4]);
    cluster.wait_addresses(4, &expected).await;
    cluster.wait_stable().await;

    // Remove it, wipe it, start it again empty and add it back.
    let (status, view) = cluster.as_operator("DELETE", leader, "/v1/cluster/nodes/4", None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(member_ids(&view, "voter"), [1, 2, 3]);
    let (status, _) = cluster.as_operator("DELETE", leader, "/v1/cluster/nodes/4", None).await;
    assert_eq!(status, 404, "removing a non-member is refused");

    cluster.kill(4);
    cluster.wipe(4);
    cluster.start_node(4);
    let (status, view) = cluster.as_operator("POST", follower, "/v1/cluster/nodes", Some(&body)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(member_ids(&view, "voter"), [1, 2, 3, 4]);
    cluster.wait_addresses(4, &expected).await;
    let (status, _) = cluster.register(4, "http://10.3.1.1/", "urn:members", "C").await;
    assert_eq!(status, 201, "the re-added node takes writes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_that_lost_its_data_is_removed_and_rejoins_on_its_own() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let victim = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    let mut expected = Vec::new();
    for i in 0..20u32 {
        let address = format!("http://10.4.0.{i}/");
        cluster.register(leader, &address, "urn:wipe", "C").await;
        expected.push(address);
    }
    expected.sort();
    let (_, lost) = cluster.membership_of(leader, victim).await.unwrap();
    assert!(lost.is_some(), "the member is listed with the incarnation it is about to lose");
    cluster.kill(victim);
    cluster.wipe(victim);
    cluster.start_node(victim);

    cluster.wait_addresses(victim, &expected).await;
    let readmitted = cluster.wait_readmitted_voter(victim, lost.as_deref()).await;
    assert_ne!(Some(readmitted), lost);
    cluster.wait_stable().await;
    assert!(
        cluster.log(leader).contains("came back without its data"),
        "the leader removed the lost incarnation first"
    );
}
