//! Double faults against Raft safety: a wiped voter together with a leader crash, a leader crash
//! while a wiped node installs a snapshot, a follower whose disk fills up, and a leader frozen in
//! the middle of a membership change. None may lose an acknowledged write.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use serde_json::json;

use crate::failover::writer;
use crate::harness::Options;
use crate::harness::Ports;
use crate::harness::SECRET;
use crate::harness::TestCluster;
use crate::harness::eventually;

fn voters(view: &Value) -> Vec<u64> {
    let members = view["members"].as_array().cloned().unwrap_or_default();
    members.iter().filter(|m| m["role"] == "voter").filter_map(|m| m["id"].as_u64()).collect()
}

fn member(view: &Value, id: u64) -> Option<&Value> {
    view["members"].as_array()?.iter().find(|m| m["id"] == id)
}

/// Registers `count` addresses `http://10.{block}.x.y/` of `urn:{namespace}` through `via`, with
/// `metadata_kb` KiB of metadata each; every one must be acknowledged. Returns the addresses.
async fn register_many(
    cluster: &TestCluster,
    via: u64,
    namespace: &str,
    block: u32,
    count: u32,
    metadata_kb: usize,
) -> Vec<String> {
    let value = "m".repeat(1000);
    let metadata: BTreeMap<String, String> = (0..metadata_kb).map(|i| (format!("k{i}"), value.clone())).collect();
    let mut addresses = Vec::new();
    for i in 0..count {
        let address = format!("http://10.{block}.{}.{}/", i / 250, i % 250);
        let body =
            json!({ "address": address, "contract_namespace": namespace, "contract_name": "C", "metadata": metadata });
        let (status, answer) = cluster.post_json(via, "/v1/registrations", &body).await;
        assert_eq!(status, 201, "{answer}");
        addresses.push(address);
    }
    addresses
}

/// Waits until every running node lists exactly `expected`.
async fn everyone_holds(cluster: &TestCluster, expected: &BTreeSet<String>) {
    let expected: Vec<String> = expected.iter().cloned().collect();
    for id in cluster.running() {
        cluster.wait_addresses(id, &expected).await;
    }
}

/// The scenario that lost every acknowledged write before incarnations: a lagging follower and a
/// wiped one must not elect a leader between them while the node with the writes is down.
#[tokio::test(flavor = "multi_thread")]
async fn a_wiped_voter_never_helps_elect_a_leader_that_lacks_acknowledged_writes() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let others: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let (lagging, wiped) = (others[0], others[1]);
    let mut acked = BTreeSet::new();
    acked.extend(register_many(&cluster, leader, "urn:amnesia", 40, 1, 0).await);
    everyone_holds(&cluster, &acked).await;
    let term_before = cluster.cluster_view(lagging).await.unwrap()["term"].as_u64().unwrap();
    let (_, lost) = cluster.membership_of(leader, wiped).await.unwrap();

    // The lagging follower misses 40 acknowledged writes (committed on the leader and the other).
    cluster.pause(lagging);
    acked.extend(register_many(&cluster, leader, "urn:amnesia", 41, 40, 0).await);
    // The two nodes that hold them crash; one comes back with an empty data directory.
    cluster.kill(leader);
    cluster.kill(wiped);
    cluster.wipe(wiped);
    cluster.start_node(wiped);
    cluster.resume(lagging);

    // Observation window, many election timeouts long: the lagging node campaigns, and the
    // wiped node must not vote for it.
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        for (id, role, _) in cluster.roles().await {
            assert_ne!(role, "leader", "node {id} leads without the acknowledged writes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let term_after = cluster.cluster_view(lagging).await.unwrap()["term"].as_u64().unwrap();
    assert!(term_after > term_before, "the lagging node campaigned (term {term_before} -> {term_after})");

    // The node with the writes returns: it leads, re-admits the wiped node, and nothing is lost.
    cluster.start_node(leader);
    cluster.wait_stable().await;
    everyone_holds(&cluster, &acked).await;
    cluster.wait_readmitted_voter(wiped, lost.as_deref()).await;
    let (status, _) = cluster.register(wiped, "http://10.42.0.1/", "urn:amnesia", "C").await;
    assert_eq!(status, 201, "the cluster takes writes again");
}

/// Lines of a node's log that record a snapshot chunk it received.
fn chunks_received(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains("snapshot chunk received")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_while_a_wiped_node_receives_a_snapshot_loses_nothing() {
    // Small chunks, so the transfer takes many requests and the kill lands in the middle of it.
    let args = ["--snapshot-every", "100", "--snapshot-chunk-kb", "32"].map(String::from).to_vec();
    let mut cluster = TestCluster::start_with(3, Options { args, ..Options::default() });
    let leader = cluster.wait_stable().await;
    let victim = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    // About 2.4 MB of state: some 75 chunks.
    // A policy only format 3 and peer protocol 2 can carry, set first: the snapshot holds it.
    let policy = cluster
        .set_policy(
            leader,
            json!({ "contract_namespace": "urn:snap", "contract_name": "C", "policy": "weighted", "rewrite_to": false }),
        )
        .await;
    let mut acked: BTreeSet<String> =
        register_many(&cluster, leader, "urn:snap", 50, 600, 4).await.into_iter().collect();
    eventually("the leader to purge its log", Duration::from_secs(20), || async {
        let view = cluster.cluster_view(leader).await?;
        (view["purged_index"].as_u64()? > 0).then_some(())
    })
    .await;
    let (_, lost) = cluster.membership_of(leader, victim).await.unwrap();

    cluster.kill(victim);
    cluster.wipe(victim);
    cluster.start_node(victim);
    // The leader removes the lost incarnation and re-adds the new one as a learner, which then
    // needs the snapshot: kill the leader as soon as the first chunk has arrived.
    eventually("the wiped node to receive a first snapshot chunk", Duration::from_secs(30), || async {
        (!chunks_received(&cluster.log(victim)).is_empty()).then_some(())
    })
    .await;
    cluster.kill(leader);
    // The leader is dead: no chunk arrives after this point. The wiped node had some, not all.
    let log = cluster.log(victim);
    let chunks = chunks_received(&log);
    assert!(
        chunks.iter().all(|line| line.contains("last=false")) && !log.contains("snapshot installed"),
        "the leader was killed in the middle of the transfer, not after it: {chunks:#?}"
    );

    cluster.start_node(leader);
    let new_leader = cluster.wait_stable().await;
    acked.extend(register_many(&cluster, new_leader, "urn:snap", 51, 5, 0).await);
    everyone_holds(&cluster, &acked).await;
    cluster.wait_readmitted_voter(victim, lost.as_deref()).await;
    assert!(cluster.log(victim).contains("snapshot installed"), "the wiped node caught up through a snapshot");
    let policies = cluster.get_json(&format!("{}/v1/policies", cluster.api(victim))).await.unwrap();
    assert_eq!(policies["policies"], json!([policy]), "the wiped node holds the policy, rewrite_to included");
}

/// The last index in a stopped node's Raft log on disk (the log tree's keys are big-endian
/// indexes).
fn last_persisted_index(data_dir: &Path) -> u64 {
    let db = sled::open(data_dir.join("raft")).unwrap();
    let (key, _) = db.open_tree("raft.log").unwrap().last().unwrap().expect("the log holds entries");
    u64::from_be_bytes(key.as_ref().try_into().unwrap())
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "mounting a tmpfs at {} failed: this test needs root (scripts/test.sh runs as root in CI)",
            path.display()
        );
        Self(path.to_owned())
    }

    /// Fills the file system up, leaving no free byte.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let mut byte = [0u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = byte[0].wrapping_add(1);
        }
        let _ = file.flush();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_whose_disk_fills_up_acknowledges_nothing_and_rejoins_once_space_is_freed() {
    let scratch = TestCluster::scratch();
    let mounts: BTreeMap<u64, Tmpfs> =
        (1..=3).map(|id| (id, Tmpfs::mount(&scratch.path().join(format!("node{id}")), "32m"))).collect();
    let data_dirs = mounts.iter().map(|(id, mount)| (*id, mount.0.join("data"))).collect();
    let mut cluster = TestCluster::start_with(3, Options { data_dirs, ..Options::default() });
    let leader = cluster.wait_stable().await;
    let victim = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    let mut acked: BTreeSet<String> =
        register_many(&cluster, leader, "urn:full", 60, 20, 0).await.into_iter().collect();
    everyone_holds(&cluster, &acked).await;

    let filler = mounts[&victim].fill();
    // Writes go on with the two other nodes; the full one cannot persist them.
    acked.extend(register_many(&cluster, leader, "urn:full", 61, 200, 2).await);
    let status = eventually("the follower with the full disk to stop", Duration::from_secs(30), || {
        let exited = cluster.exited(victim);
        async move { exited }
    })
    .await;
    assert!(!status.success(), "it exits with an error");
    let log = cluster.log(victim);
    assert!(log.contains("No space left on device") || log.contains("StorageFull"), "the log says why");
    let view = cluster.cluster_view(leader).await.unwrap();
    let matched = member(&view, victim).unwrap()["matched_index"].as_u64().unwrap_or(0);
    let last = view["last_log_index"].as_u64().unwrap();
    assert!(matched < last, "the full follower stopped acknowledging (matched {matched} of {last})");

    // Space comes back. Every entry the leader counted as acknowledged by the full node is in
    // that node's log on disk: it acknowledged nothing it had not persisted.
    std::fs::remove_file(filler).unwrap();
    let persisted = last_persisted_index(&cluster.nodes[&victim].data_dir);
    assert!(matched <= persisted, "acknowledged up to {matched}, but only {persisted} is on disk");
    // The node restarts (as its supervisor would) from an intact log.
    cluster.start_node(victim);
    cluster.wait_stable().await;
    acked.extend(register_many(&cluster, victim, "urn:full", 62, 5, 0).await);
    everyone_holds(&cluster, &acked).await;
    drop(cluster);
    drop(mounts);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_paused_during_a_membership_change_loses_nothing() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    // Enough state that the new node takes a while to catch up.
    let mut acked: BTreeSet<String> =
        register_many(&cluster, leader, "urn:change", 70, 1500, 2).await.into_iter().collect();

    let ports = Ports::free();
    cluster.add_process(4, ports, vec![]);
    cluster.start_node(4);
    let apis: Vec<String> = [1, 2, 3].iter().map(|&id| cluster.api(id)).collect();
    let writers: Vec<_> =
        (0..3).map(|c| tokio::spawn(writer(cluster.http.clone(), apis.clone(), 80 + c, 40))).collect();
    let body = json!({ "node_id": 4, "peer_addr": format!("127.0.0.1:{}", ports.peer) });
    let add = {
        let (http, url, body) =
            (cluster.http.clone(), format!("{}/v1/cluster/nodes", cluster.api(follower)), body.clone());
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(SECRET)
                .json(&body)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map(|r| r.status())
        })
    };
    let role = eventually("node 4 to join the membership", Duration::from_secs(30), || async {
        let view = cluster.cluster_view(leader).await?;
        member(&view, 4).map(|node| node["role"].as_str().unwrap_or("").to_owned())
    })
    .await;
    cluster.pause(leader);
    // In progress: node 4 was added as a learner and not yet promoted (the add answers once it
    // is a voter).
    assert_eq!(role, "learner", "node 4 was still a learner when the leader froze");
    assert!(!add.is_finished(), "the change had not completed when the leader froze");
    eventually("another leader", Duration::from_secs(20), || async {
        let roles = cluster.roles().await;
        roles.iter().any(|(id, role, _)| *id != leader && role == "leader").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the fault's duration
    cluster.resume(leader);
    // Whatever the first request answered (the node that forwarded it may have lost its leader),
    // the operator's retry of the change completes it.
    let _ = add.await.unwrap();
    eventually("node 4 a voter", Duration::from_secs(60), || async {
        let (status, view) = cluster.as_operator("POST", follower, "/v1/cluster/nodes", Some(&body)).await;
        (status == 200 && voters(&view) == [1, 2, 3, 4]).then_some(())
    })
    .await;
    for handle in writers {
        acked.extend(handle.await.unwrap().into_iter().map(|(address, _)| address));
    }
    cluster.wait_stable().await;
    everyone_holds(&cluster, &acked).await;
}
