//! Registering, reading and unregistering across nodes.

use serde_json::Value;
use serde_json::json;

use crate::harness::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn register_on_a_follower_read_everywhere_then_unregister_both_ways() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = *cluster.running().iter().find(|&&id| id != leader).unwrap();

    let (status, created) =
        cluster.register(follower, "http://127.0.0.1:9001/calc", "http://tempuri.org/", "ICalculator").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(created["address"], "http://127.0.0.1:9001/calc");

    let (status, again) =
        cluster.register(follower, "http://127.0.0.1:9001/calc", "http://tempuri.org", "ICalculator").await;
    assert_eq!(status, 200, "re-registering the same triple is not a new entry: {again}");
    assert_eq!(again["id"], id.as_str());

    let (status, _) =
        cluster.register(leader, "http://127.0.0.1:9002/calc", "http://tempuri.org/", "ICalculator").await;
    assert_eq!(status, 201);
    let expected = vec!["http://127.0.0.1:9001/calc".to_owned(), "http://127.0.0.1:9002/calc".to_owned()];
    for node in cluster.running() {
        cluster.wait_addresses(node, &expected).await;
        let one = cluster.get_json(&format!("{}/v1/registrations/{id}", cluster.api(node))).await.unwrap();
        assert_eq!(one["contract_name"], "ICalculator");
    }

    // Filter by contract.
    let other_node = *cluster.running().iter().find(|&&n| n != leader && n != follower).unwrap();
    cluster.register(other_node, "http://127.0.0.1:9003/", "urn:other", "IEcho").await;
    let url = format!(
        "{}/v1/registrations?contract_namespace=http://tempuri.org&contract_name=ICalculator&consistency=linearizable",
        cluster.api(other_node)
    );
    let filtered = cluster.get_json(&url).await.unwrap();
    assert_eq!(filtered["registrations"].as_array().unwrap().len(), 2, "{filtered}");

    // Unregister by id on one follower, by the triple on the other.
    let response =
        cluster.http.delete(format!("{}/v1/registrations/{id}", cluster.api(follower))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response =
        cluster.http.delete(format!("{}/v1/registrations/{id}", cluster.api(follower))).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "registration_not_found");

    let triple = json!({ "address": "http://127.0.0.1:9002/calc", "contract_name": "ICalculator", "contract_namespace": "http://tempuri.org/" });
    let (status, removed) = cluster.post_json(other_node, "/v1/registrations/unregister", &triple).await;
    assert_eq!(status, 200, "{removed}");
    let (status, body) = cluster.post_json(other_node, "/v1/registrations/unregister", &triple).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("registration_not_found")));

    for node in cluster.running() {
        cluster.wait_addresses(node, &["http://127.0.0.1:9003/".to_owned()]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn linearizable_read_on_a_follower_sees_a_write_made_elsewhere() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let followers: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    for i in 0..20 {
        let address = format!("http://10.0.0.{i}/");
        let (status, created) = cluster.register(followers[0], &address, "urn:lin", "C").await;
        assert_eq!(status, 201);
        let id = created["id"].as_str().unwrap();
        // Immediately after the acknowledgement, a linearizable read on the other follower must see it.
        let url = format!("{}/v1/registrations/{id}?consistency=linearizable", cluster.api(followers[1]));
        let response = cluster.http.get(url).send().await.unwrap();
        assert_eq!(response.status(), 200, "write {i} not visible to a linearizable read");
    }
}

/// A follower that lost the answer to a forwarded write sends it again with the same request
/// number; the leader applies it once and answers the repeat with the first outcome, even when
/// the same endpoint was registered again in between.
#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_write_sent_twice_is_applied_once() {
    use std::time::Duration;

    use switchboard::cluster::Proposal;
    use switchboard::raft::PeerClient;
    use switchboard::registry::Command;
    use switchboard::registry::Origin;
    use switchboard::registry::Outcome;
    use switchboard::registry::RegistrationId;

    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let (address, namespace, name) = ("http://127.0.0.1:9011/once", "urn:once", "C");
    assert_eq!(cluster.register(leader, address, namespace, name).await.0, 201);

    let peers = PeerClient::new(99, crate::harness::SECRET, None).unwrap();
    let peer_addr = format!("127.0.0.1:{}", cluster.nodes[&leader].ports.peer);
    let id = RegistrationId::of(address, namespace, name);
    let unregister = Proposal {
        command: Command::Unregister(id),
        origin: Origin { node: 99, principal: None, quota: None, request: Some(7) },
    };
    let send = || async {
        peers
            .call::<switchboard_proto::peer::Write>(&peer_addr, &unregister, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap()
    };
    let first = send().await;
    let Outcome::Unregistered(removed) = &first else { panic!("{first:?}") };
    assert_eq!(removed.address, address);

    assert_eq!(cluster.register(leader, address, namespace, name).await.0, 201, "registered again");
    assert_eq!(send().await, first, "the repeat gets the first answer");
    for node in cluster.running() {
        cluster.wait_addresses(node, &[address.to_owned()]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forwarded_write_is_checked_like_an_api_write() {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use switchboard::cluster::ClusterError;
    use switchboard::cluster::Proposal;
    use switchboard::raft::PeerClient;
    use switchboard::registry::Command;
    use switchboard::registry::Lease;
    use switchboard::registry::Origin;
    use switchboard::registry::Outcome;
    use switchboard::registry::RegistrationId;
    use switchboard::registry::RegistrationRequest;
    use switchboard::registry::RegistrationSpec;

    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let peers = PeerClient::new(99, crate::harness::SECRET, None).unwrap();
    let peer_addr = format!("127.0.0.1:{}", cluster.nodes[&leader].ports.peer);
    let spec = |address: String| {
        let request = RegistrationRequest {
            address,
            contract_name: "C".into(),
            contract_namespace: "urn:checked".into(),
            ttl_ms: None,
            weight: None,
            metadata: BTreeMap::new(),
            check: None,
        };
        RegistrationSpec::new(request).unwrap()
    };
    // A forwarded write, answered by the leader.
    let write = |command: Command| {
        let proposal = Proposal { command, origin: Origin { node: 99, ..Origin::default() } };
        let (peers, peer_addr) = (peers.clone(), peer_addr.clone());
        async move {
            peers.call::<switchboard_proto::peer::Write>(&peer_addr, &proposal, Duration::from_secs(5)).await.unwrap()
        }
    };
    let valid = spec("http://10.77.0.1/".into());
    let mut zero_weight = valid.clone();
    zero_weight.weight = 0;
    let mut wrong_id = valid.clone();
    wrong_id.address = "http://10.77.0.2/".into();
    let mut not_canonical = valid.clone();
    not_canonical.address = "HTTP://10.77.0.1".into();
    not_canonical.id = RegistrationId::of("HTTP://10.77.0.1", "urn:checked", "C");
    let forged = [
        Command::Register(zero_weight),
        Command::Register(wrong_id),
        Command::Register(not_canonical),
        Command::Expire(vec![Lease { id: valid.id, epoch: 1 }]),
    ];
    for command in forged {
        let answer = write(command.clone()).await;
        assert!(matches!(answer, Err(ClusterError::InvalidRequest(_))), "{command:?} -> {answer:?}");
    }
    // The leader checks the address again, against its own listeners, which the node that
    // forwarded the write may not have known yet.
    let api_port = cluster.nodes[&leader].ports.api;
    let answer = write(Command::Register(spec(format!("http://localhost:{api_port}/")))).await;
    assert!(matches!(answer, Err(ClusterError::InvalidAddress(_))), "{answer:?}");
    assert_eq!(cluster.addresses(leader).await.unwrap(), Vec::<String>::new(), "nothing was applied");
    // The same path takes a valid write.
    let answer = write(Command::Register(valid)).await;
    assert!(matches!(answer, Ok(Outcome::Registered { created: true, .. })), "{answer:?}");
}

/// `SWITCHBOARD_TEST_FULL=1` runs the large tests at full size (by hand); CI runs the quick size.
pub fn full_size() -> bool {
    std::env::var_os("SWITCHBOARD_TEST_FULL").is_some()
}

/// Registers `count` addresses `http://{prefix}-{i}.example/` of `urn:bulk` + `C` with 32
/// concurrent clients spread over the nodes.
pub async fn register_bulk(cluster: &TestCluster, prefix: &str, count: usize) {
    let apis = cluster.apis();
    let tasks: Vec<_> = (0..32)
        .map(|client| {
            let (http, apis, prefix) = (cluster.http.clone(), apis.clone(), prefix.to_owned());
            tokio::spawn(async move {
                for i in (client..count).step_by(32) {
                    let body = serde_json::json!({
                        "address": format!("http://{prefix}-{i}.example/"),
                        "contract_namespace": "urn:bulk",
                        "contract_name": "C",
                    });
                    let url = format!("{}/v1/registrations", apis[i % apis.len()]);
                    crate::harness::write_until_acknowledged(&http, &url, &body).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_walks_every_registration_once_in_order_while_writes_go_on() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering;

    let count = if full_size() { 100_000 } else { 10_000 };
    let cluster = TestCluster::start(3);
    cluster.wait_stable().await;
    register_bulk(&cluster, "stable", count).await;
    let node = cluster.running()[1];
    // Wait until the node's replica holds them all, then walk it while writes go on.
    crate::harness::eventually(
        "the replica to hold every registration",
        std::time::Duration::from_secs(60),
        || async { (cluster.list_all(node).await?.len() >= count).then_some(()) },
    )
    .await;
    // The churn: registrations and unregistrations acknowledged one after the other, counted,
    // until the walk is done (bounded in count).
    let acked = Arc::new(AtomicUsize::new(0));
    let walking = Arc::new(AtomicBool::new(true));
    let churn = {
        let (http, api, acked, walking) = (cluster.http.clone(), cluster.api(node), acked.clone(), walking.clone());
        tokio::spawn(async move {
            for i in 0..20_000 {
                if !walking.load(Ordering::SeqCst) {
                    break;
                }
                let body = serde_json::json!({
                    "address": format!("http://churn-{i}.example/"),
                    "contract_namespace": "urn:churn",
                    "contract_name": "C",
                });
                let status = http.post(format!("{api}/v1/registrations")).json(&body).send().await.unwrap().status();
                assert_eq!(status, 201, "churn register {i}");
                acked.fetch_add(1, Ordering::SeqCst);
                if i % 2 == 0 {
                    let url = format!("{api}/v1/registrations/unregister");
                    let status = http.post(url).json(&body).send().await.unwrap().status();
                    assert!(status.is_success(), "churn unregister {i}: {status}");
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    // Before each page, at least one more churn write is acknowledged: every page is read from
    // a different state of the registry.
    let next_write = |seen: usize| {
        let acked = acked.clone();
        crate::harness::eventually("another churn write", std::time::Duration::from_secs(30), move || {
            let now = acked.load(Ordering::SeqCst);
            async move { (now > seen).then_some(now) }
        })
    };
    let mut seen = next_write(0).await;
    let mut ids = Vec::new();
    let mut stable = BTreeSet::new();
    let mut indexes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        seen = next_write(seen).await;
        let mut url = format!("{}/v1/registrations?limit=1000", cluster.api(node));
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page = cluster.get_json_within(&url, std::time::Duration::from_secs(20)).await.unwrap();
        indexes.push(page["applied_index"].as_u64().unwrap());
        for registration in page["registrations"].as_array().unwrap() {
            ids.push(registration["id"].as_str().unwrap().to_owned());
            if registration["contract_namespace"] == "urn:bulk" {
                stable.insert(registration["address"].as_str().unwrap().to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    walking.store(false, Ordering::SeqCst);
    churn.await.unwrap();
    assert!(indexes.first() < indexes.last(), "the registry changed under the walk: applied indexes {indexes:?}");
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids strictly increasing: a stable order, no duplicate");
    assert_eq!(stable.len(), count, "no registration present throughout was skipped");
}

/// A list's `X-Switchboard-Index` and body, from node `url`, waiting at most a minute.
async fn indexed_list(http: &reqwest::Client, url: String) -> (u64, Value) {
    let response = http.get(url).timeout(std::time::Duration::from_secs(60)).send().await.expect("list answered");
    assert_eq!(response.status(), 200);
    let index = response.headers()["x-switchboard-index"].to_str().unwrap().parse().unwrap();
    (index, response.json().await.unwrap())
}

fn lists(page: &Value, address: &str) -> bool {
    page["registrations"].as_array().unwrap().iter().any(|r| r["address"] == address)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocking_read_wakes_for_a_write_through_another_node_and_a_lagging_node_answers_only_once_caught_up() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let followers: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let (watcher, writer) = (followers[0], followers[1]);

    // A read on one follower, blocked on the index it reflects, wakes for a write through the
    // other: the answer holds the write and a later index.
    let (seen, _) = indexed_list(&cluster.http, format!("{}/v1/registrations", cluster.api(watcher))).await;
    let waiting = tokio::spawn({
        let (http, url) =
            (cluster.http.clone(), format!("{}/v1/registrations?index={seen}&wait=60s", cluster.api(watcher)));
        async move { indexed_list(&http, url).await }
    });
    let (status, _) = cluster.register(writer, "http://127.0.0.1:9101/", "urn:watch", "IWatched").await;
    assert_eq!(status, 201);
    let (woken, page) = waiting.await.unwrap();
    assert!(woken > seen, "{woken} after {seen}");
    assert!(lists(&page, "http://127.0.0.1:9101/"), "{page}");

    // A node that has applied less than the index a caller saw elsewhere answers only once it
    // has applied past it: the watcher is stopped while a write commits without it.
    cluster.pause(watcher);
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9102/", "urn:watch", "IWatched").await;
    assert_eq!(status, 201);
    let (on_leader, page) = indexed_list(&cluster.http, format!("{}/v1/registrations", cluster.api(leader))).await;
    assert!(lists(&page, "http://127.0.0.1:9102/"));
    let lagging = tokio::spawn({
        let (http, url) = (
            cluster.http.clone(),
            format!("{}/v1/registrations?index={}&wait=60s", cluster.api(watcher), on_leader - 1),
        );
        async move { indexed_list(&http, url).await }
    });
    cluster.resume(watcher);
    let (caught_up, page) = lagging.await.unwrap();
    assert!(caught_up >= on_leader, "{caught_up} before {on_leader}");
    assert!(lists(&page, "http://127.0.0.1:9102/"), "the answer never goes back before what the caller saw: {page}");
}

/// The addresses of the watch's next copy, sorted; within a minute.
async fn next_addresses(watch: &mut switchboard_client::ContractWatch<'_>, what: &str) -> Vec<String> {
    let next = tokio::time::timeout(std::time::Duration::from_secs(60), watch.next()).await;
    let views = next.unwrap_or_else(|_| panic!("{what} within a minute")).unwrap();
    let mut addresses: Vec<String> = views.iter().map(|v| v.address.to_string()).collect();
    addresses.sort();
    addresses
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_watch_keeps_a_copy_of_a_contract_through_the_loss_of_the_router_it_reads_from() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    // The watch reads from a follower first; the leader is its last router.
    let mut order: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    order.push(leader);
    let routers = order.iter().map(|&id| cluster.api(id)).collect();
    let client = switchboard_client::ControlClient::new(routers, None, std::time::Duration::from_secs(5)).unwrap();
    let mut watch = client.watch("urn:watch", "IWatched");
    assert!(next_addresses(&mut watch, "the first read").await.is_empty());

    // Another contract's change wakes the read too, but the copy moves only with this one's.
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9209/", "urn:other", "IOther").await;
    assert_eq!(status, 201);
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9201/", "urn:watch", "IWatched").await;
    assert_eq!(status, 201);
    assert_eq!(next_addresses(&mut watch, "the registration").await, ["http://127.0.0.1:9201/"]);

    // The router it reads from is lost while the read waits on it; the change made meanwhile
    // reaches the watch through another router.
    let change = async {
        cluster.kill(order[0]);
        cluster.register(leader, "http://127.0.0.1:9202/", "urn:watch", "IWatched").await
    };
    let (seen, (status, _)) = tokio::join!(next_addresses(&mut watch, "the change after the failover"), change);
    assert_eq!(status, 201);
    assert_eq!(seen, ["http://127.0.0.1:9201/", "http://127.0.0.1:9202/"]);
    let index = watch.index().unwrap();

    let id = watch.current().iter().find(|v| v.address.as_str() == "http://127.0.0.1:9201/").unwrap().id;
    let response = cluster.http.delete(format!("{}/v1/registrations/{id}", cluster.api(leader))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(next_addresses(&mut watch, "the removal").await, ["http://127.0.0.1:9202/"]);
    assert!(watch.index().unwrap() > index);
}
