//! Active health checks on three nodes, with endpoints as separate processes (a small Python
//! HTTP server, `tests/fixtures/endpoint.py`) that the tests kill, freeze and resume.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use serde_json::json;

use crate::harness::Options;
use crate::harness::TestCluster;
use crate::harness::eventually;

/// A test endpoint process; killed on drop.
struct Endpoint {
    name: String,
    address: String,
    child: Option<Child>,
}

impl Endpoint {
    fn start(name: &str) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/endpoint.py");
        let mut child = Command::new("python3")
            .args([script, name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the test endpoint");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().expect("the endpoint prints its port");
        Self { name: name.to_owned(), address: format!("http://127.0.0.1:{port}/svc"), child: Some(child) }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        assert!(Command::new("kill").args([signal, &pid.to_string()]).status().unwrap().success());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen endpoint must be resumed to die cleanly.
            Command::new("kill").args(["-CONT", &child.id().to_string()]).status().ok();
        }
        self.kill();
    }
}

/// A fast http check: critical after two failures 300 ms apart.
fn fast_check() -> Value {
    json!({ "kind": "http", "path": "/health", "interval_ms": 300, "timeout_ms": 200, "rise": 2, "fall": 2 })
}

async fn register_checked(cluster: &TestCluster, via: u64, address: &str, name: &str, check: Value) -> Value {
    let body = json!({ "address": address, "contract_namespace": "urn:health", "contract_name": name, "check": check });
    let (status, registration) = cluster.post_json(via, "/v1/registrations", &body).await;
    assert_eq!(status, 201, "{registration}");
    registration
}

/// The registration of `address` as node `node` lists it (with its check and health).
async fn listed(cluster: &TestCluster, node: u64, address: &str) -> Option<Value> {
    cluster.list_all(node).await?.into_iter().find(|r| r["address"] == address)
}

/// Waits until every running node shows `address` with health `status`; returns the views.
async fn wait_health(cluster: &TestCluster, address: &str, status: &str) -> Vec<Value> {
    let mut views = Vec::new();
    for node in cluster.running() {
        let view = eventually(&format!("node {node} to show {address} {status}"), Duration::from_secs(30), || async {
            listed(cluster, node, address).await.filter(|r| r["health"]["status"] == status)
        })
        .await;
        views.push(view);
    }
    views
}

/// The node every running node names as `address`'s prober, once they agree (each learns the
/// others' readiness within a beat).
async fn agreed_prober(cluster: &TestCluster, address: &str) -> u64 {
    eventually("every node to name the same prober", Duration::from_secs(10), || async {
        let mut named = BTreeSet::new();
        for node in cluster.running() {
            named.insert(listed(cluster, node, address).await?["health"]["checked_by"].as_u64()?);
        }
        (named.len() == 1).then(|| named.into_iter().next()).flatten()
    })
    .await
}

/// Sends a POST for contract `urn:health/{name}` through node `node`'s data plane, explained.
async fn route(cluster: &TestCluster, node: u64, name: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let response = cluster
        .http
        .post(format!("{}/call", cluster.data(node)))
        .header("x-switchboard-contract", format!("urn:health/{name}"))
        .header("x-switchboard-explain", "1")
        .body("hello")
        .send()
        .await
        .expect("the data plane answers");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, response.text().await.unwrap_or_default(), headers)
}

/// The sum of a metric's samples on node `node` whose line starts with `prefix`.
pub async fn metric(cluster: &TestCluster, node: u64, prefix: &str) -> f64 {
    let text = cluster.http.get(format!("{}/metrics", cluster.api(node))).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The sum of a metric over `nodes`.
async fn metric_sum(cluster: &TestCluster, nodes: &[u64], prefix: &str) -> f64 {
    let mut sum = 0.0;
    for node in nodes {
        sum += metric(cluster, *node, prefix).await;
    }
    sum
}

async fn applied_index(cluster: &TestCluster, node: u64) -> u64 {
    let list = cluster.get_json(&format!("{}/v1/registrations?limit=1", cluster.api(node))).await.unwrap();
    list["applied_index"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_registered_through_the_seed_soap_register_and_killed_turns_critical_on_every_node_and_none_routes_to_it()
 {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    let (mut dead, alive) = (Endpoint::start("dead"), Endpoint::start("alive"));
    for endpoint in [&dead, &alive] {
        let envelope = format!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Register xmlns="http://www.thatindigogirl.com/samples/2008/01"><regInfo xmlns:a="http://schemas.thatindigogirl.com/samples/2008/01"><a:Address>{}</a:Address><a:ContractName>seed</a:ContractName><a:ContractNamespace>urn:health</a:ContractNamespace></regInfo></Register></s:Body></s:Envelope>"#,
            endpoint.address
        );
        let response = cluster
            .http
            .post(format!("{}/v1/soap/registration", cluster.api(follower)))
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"http://www.thatindigogirl.com/samples/2008/01/IRegistrationService/Register\"")
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    // No options: the cluster default, a tcp check, probed by exactly one node.
    for view in wait_health(&cluster, &dead.address, "passing").await {
        assert_eq!(view["check"]["kind"], "tcp", "{view}");
        assert!(view["health"]["checked_by"].as_u64().is_some(), "{view}");
    }
    let nodes = cluster.running();
    eventually("each endpoint probed by one node", Duration::from_secs(20), || async {
        (metric_sum(&cluster, &nodes, "switchboard_health_probed_endpoints").await == 2.0).then_some(())
    })
    .await;

    dead.kill();
    let views = wait_health(&cluster, &dead.address, "critical").await;
    for view in &views {
        assert!(!view["health"]["output"].as_str().unwrap().is_empty(), "the last failure is shown: {view}");
        assert_eq!(view["health"]["checked_by"], views[0]["health"]["checked_by"], "every node names the same prober");
    }
    for node in cluster.running() {
        let critical =
            cluster.get_json(&format!("{}/v1/registrations?health=critical", cluster.api(node))).await.unwrap();
        let addresses: Vec<&str> =
            critical["registrations"].as_array().unwrap().iter().map(|r| r["address"].as_str().unwrap()).collect();
        assert_eq!(addresses, [dead.address.as_str()], "node {node}");
        for _ in 0..10 {
            let (status, body, headers) = route(&cluster, node, "seed").await;
            assert_eq!((status, body.as_str()), (200, alive.name.as_str()), "node {node}");
            let health = headers["x-switchboard-health"].to_str().unwrap();
            assert_eq!(health, format!("critical: {}", dead.address), "node {node}");
        }
    }

    // Per contract: the committed counts on every node, and what each node's checker did.
    let mut probes = 0;
    for node in cluster.running() {
        let health = cluster.get_json(&format!("{}/v1/health/contracts", cluster.api(node))).await.unwrap();
        let seed = health["contracts"].as_array().unwrap().iter().find(|c| c["contract"] == "urn:health/seed").cloned();
        let seed = seed.expect("the contract's health");
        assert_eq!(
            (seed["endpoints"].as_u64(), seed["passing"].as_u64(), seed["critical"].as_u64()),
            (Some(2), Some(1), Some(1)),
            "{seed}"
        );
        assert_eq!(seed["panic"], false, "{seed}");
        probes += seed["probes"].as_u64().unwrap();
        // The same, for Prometheus.
        let url = format!("{}/v1/health/metrics", cluster.api(node));
        let text = cluster.http.get(&url).send().await.unwrap().text().await.unwrap();
        for line in [
            r#"switchboard_health_contract_endpoints{contract="urn:health/seed",status="passing"} 1"#,
            r#"switchboard_health_contract_endpoints{contract="urn:health/seed",status="critical"} 1"#,
            r#"switchboard_health_contract_panic{contract="urn:health/seed"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "node {node}: {line} missing from\n{text}");
        }
    }
    assert!(probes > 0, "the checkers count their probes per contract");

    // A broadcast skips it, and says so.
    let report: Value = cluster
        .http
        .post(format!("{}/call", cluster.data(leader)))
        .header("x-switchboard-contract", "urn:health/seed")
        .header("x-switchboard-delivery", "broadcast")
        .body("to all")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((report["endpoints"].as_u64(), report["succeeded"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(report["skipped"][0]["address"], dead.address.as_str(), "{report}");
    assert_eq!(report["skipped"][0]["reason"], "critical", "{report}");

    // While nothing changes, the log does not grow, though the probes go on.
    let before = applied_index(&cluster, 1).await;
    let start = metric_sum(&cluster, &nodes, "switchboard_health_probes_total").await;
    eventually("six more probes", Duration::from_secs(30), || async {
        (metric_sum(&cluster, &nodes, "switchboard_health_probes_total").await >= start + 6.0).then_some(())
    })
    .await;
    assert_eq!(applied_index(&cluster, 1).await, before, "a stable fleet adds nothing to the log");

    // Below the panic threshold every endpoint is routable again, and explain says so.
    cluster
        .set_policy(
            leader,
            json!({ "contract_namespace": "urn:health", "contract_name": "seed", "policy": "round_robin", "panic_threshold_percent": 100 }),
        )
        .await;
    let (_, _, headers) = route(&cluster, follower, "seed").await;
    assert!(headers["x-switchboard-health"].to_str().unwrap().starts_with("panic:"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_endpoint_turns_critical_everywhere_gets_no_more_posts_and_turns_passing_once_it_resumes() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let (frozen, alive) = (Endpoint::start("frozen"), Endpoint::start("alive"));
    register_checked(&cluster, leader, &frozen.address, "freeze", fast_check()).await;
    register_checked(&cluster, leader, &alive.address, "freeze", fast_check()).await;
    wait_health(&cluster, &frozen.address, "passing").await;

    frozen.signal("-STOP");
    wait_health(&cluster, &frozen.address, "critical").await;
    for node in cluster.running() {
        for _ in 0..10 {
            let (status, body, headers) = route(&cluster, node, "freeze").await;
            assert_eq!((status, body.as_str()), (200, "alive"), "node {node}");
            assert_eq!(headers["x-switchboard-attempts"], "1", "no request waits on the frozen endpoint");
        }
    }
    frozen.signal("-CONT");
    wait_health(&cluster, &frozen.address, "passing").await;
    let served: BTreeSet<String> = {
        let mut served = BTreeSet::new();
        for _ in 0..10 {
            served.insert(route(&cluster, leader, "freeze").await.1);
        }
        served
    };
    assert_eq!(served, BTreeSet::from(["alive".to_owned(), "frozen".to_owned()]), "both serve again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cut_off_from_an_endpoint_marks_nothing_critical_and_hands_the_endpoint_over() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let endpoint = Endpoint::start("cut");
    register_checked(&cluster, leader, &endpoint.address, "cut", fast_check()).await;
    wait_health(&cluster, &endpoint.address, "passing").await;
    let prober = agreed_prober(&cluster, &endpoint.address).await;
    // Only the prober's probes fail from now on: the endpoint refuses that node alone.
    let refused =
        cluster.http.post(format!("http://{}/refuse/{prober}", &endpoint.address[7..].trim_end_matches("/svc")));
    assert_eq!(refused.send().await.unwrap().status(), 200);
    eventually("the prober to ask a second node, which reaches the endpoint", Duration::from_secs(20), || async {
        (metric(&cluster, prober, "switchboard_health_confirmations_total{result=\"reached\"}").await >= 1.0)
            .then_some(())
    })
    .await;
    // Handed over: every node names the node that reached it as `checked_by`, that node probes
    // it, and through many more probes nothing turns critical.
    let adopter = eventually("every node to name the node it was handed to", Duration::from_secs(10), || async {
        Some(agreed_prober(&cluster, &endpoint.address).await).filter(|by| *by != prober)
    })
    .await;
    let passed = "switchboard_health_probes_total{result=\"passed\"}";
    let start = metric(&cluster, adopter, passed).await;
    eventually("ten passing probes by the node it was handed to", Duration::from_secs(30), || async {
        (metric(&cluster, adopter, passed).await >= start + 10.0).then_some(())
    })
    .await;
    assert_eq!(agreed_prober(&cluster, &endpoint.address).await, adopter, "still handed over");
    for node in cluster.running() {
        let view = listed(&cluster, node, &endpoint.address).await.unwrap();
        assert_eq!(view["health"]["status"], "passing", "node {node}: {view}");
    }
    assert_eq!(metric(&cluster, prober, "switchboard_health_transitions_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn deregister_after_removes_dead_endpoints_everywhere_within_the_rate_limit_and_the_audit_trail_says_why() {
    let options = Options { args: vec!["--deregister-max-per-minute".into(), "1".into()], ..Options::default() };
    let cluster = TestCluster::start_with(3, options);
    let leader = cluster.wait_stable().await;
    let mut check = fast_check();
    check["deregister_after_ms"] = json!(1_000);
    let mut endpoints = [Endpoint::start("gone-1"), Endpoint::start("gone-2")];
    let mut ids = BTreeSet::new();
    for endpoint in &endpoints {
        let registration = register_checked(&cluster, leader, &endpoint.address, "gone", check.clone()).await;
        ids.insert(registration["id"].as_str().unwrap().to_owned());
        wait_health(&cluster, &endpoint.address, "passing").await;
    }
    for endpoint in &mut endpoints {
        endpoint.kill();
    }
    // One is removed everywhere; the limit (one per minute) holds the other back.
    let nodes = cluster.running();
    let remaining = eventually("one dead endpoint removed everywhere", Duration::from_secs(30), || async {
        let mut left = BTreeSet::new();
        for node in &nodes {
            let list = cluster.list_all(*node).await?;
            let mine: Vec<String> = list
                .iter()
                .filter(|r| r["contract_name"] == "gone")
                .map(|r| r["address"].as_str().unwrap().to_owned())
                .collect();
            if mine.len() != 1 {
                return None;
            }
            left.extend(mine);
        }
        (left.len() == 1).then_some(left)
    })
    .await;
    let failed = "switchboard_health_probes_total{result=\"failed\"}";
    let start = metric_sum(&cluster, &nodes, failed).await;
    eventually("ten more failed probes", Duration::from_secs(30), || async {
        (metric_sum(&cluster, &nodes, failed).await >= start + 10.0).then_some(())
    })
    .await;
    for node in &nodes {
        let address = remaining.iter().next().unwrap();
        let view = listed(&cluster, *node, address).await.expect("the second is held back by the limit");
        assert_eq!(view["health"]["status"], "critical", "{view}");
    }
    let audit = cluster.get_json(&format!("{}/v1/audit", cluster.api(leader))).await.unwrap();
    let records: Vec<&Value> =
        audit["records"].as_array().unwrap().iter().filter(|r| r["action"] == "deregistered").collect();
    assert_eq!(records.len(), 1, "{audit}");
    assert!(ids.contains(records[0]["id"].as_str().unwrap()), "{audit}");
    assert_eq!(records[0]["principal"], "health-check", "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_a_quorum_loss_a_prober_keeps_counting_holds_its_transition_and_writes_it_once_a_leader_is_back() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let (mut dead, alive) = (Endpoint::start("dead"), Endpoint::start("alive"));
    register_checked(&cluster, leader, &dead.address, "quorum", fast_check()).await;
    register_checked(&cluster, leader, &alive.address, "quorum", fast_check()).await;
    wait_health(&cluster, &dead.address, "passing").await;
    let survivor = cluster.running().into_iter().find(|n| *n != leader).unwrap();
    let gone: Vec<u64> = cluster.running().into_iter().filter(|n| *n != survivor).collect();
    for node in &gone {
        cluster.kill(*node);
    }
    eventually("the survivor to know no leader", Duration::from_secs(20), || async {
        (cluster.cluster_view(survivor).await?["leader_id"].is_null()).then_some(())
    })
    .await;
    // Alone, the survivor probes both endpoints once the others' beats are 2 s old.
    for address in [&dead.address, &alive.address] {
        eventually("the survivor to probe every endpoint", Duration::from_secs(10), || async {
            let view = listed(&cluster, survivor, address).await?;
            (view["health"]["checked_by"] == survivor).then_some(())
        })
        .await;
    }
    dead.kill();
    // It counts the dead one's failures past `fall`.
    let failed = "switchboard_health_probes_total{result=\"failed\"}";
    let start = metric(&cluster, survivor, failed).await;
    eventually("four failed probes on the survivor", Duration::from_secs(20), || async {
        (metric(&cluster, survivor, failed).await >= start + 4.0).then_some(())
    })
    .await;
    let view = listed(&cluster, survivor, &dead.address).await.unwrap();
    assert_eq!(view["health"]["status"], "passing", "no transition is written without a leader: {view}");
    // It routes on from its view, around the dead endpoint (nothing is sent to a refused address).
    for _ in 0..5 {
        let (status, body, _) = route(&cluster, survivor, "quorum").await;
        assert_eq!((status, body.as_str()), (200, "alive"));
    }
    for node in gone {
        cluster.start_node(node);
    }
    cluster.wait_stable().await;
    wait_health(&cluster, &dead.address, "critical").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_prober_dies_and_its_endpoint_hangs_the_next_node_marks_it() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let endpoint = Endpoint::start("orphan");
    register_checked(&cluster, leader, &endpoint.address, "orphan", fast_check()).await;
    wait_health(&cluster, &endpoint.address, "passing").await;
    let prober = agreed_prober(&cluster, &endpoint.address).await;
    cluster.kill(prober);
    endpoint.signal("-STOP");
    cluster.wait_stable().await;
    let views = wait_health(&cluster, &endpoint.address, "critical").await;
    for view in views {
        let by = view["health"]["checked_by"].as_u64().unwrap();
        assert_ne!(by, prober, "the next node in the ranking probes it: {view}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prober_that_stops_being_ready_hands_its_endpoints_over_and_the_next_node_marks_them() {
    // A long drain: the prober stays up, answering, but not ready.
    let options = Options { args: vec!["--drain-ms".into(), "30000".into()], ..Options::default() };
    let cluster = TestCluster::start_with(3, options);
    let leader = cluster.wait_stable().await;
    let endpoint = Endpoint::start("drained");
    register_checked(&cluster, leader, &endpoint.address, "drained", fast_check()).await;
    wait_health(&cluster, &endpoint.address, "passing").await;
    let prober = agreed_prober(&cluster, &endpoint.address).await;
    cluster.terminate_node(prober);
    for node in cluster.running() {
        eventually(&format!("node {node} to name another prober"), Duration::from_secs(10), || async {
            let view = listed(&cluster, node, &endpoint.address).await?;
            let by = view["health"]["checked_by"].as_u64()?;
            (by != prober).then_some(())
        })
        .await;
    }
    endpoint.signal("-STOP");
    wait_health(&cluster, &endpoint.address, "critical").await;
    let drained = metric(&cluster, prober, "switchboard_health_probed_endpoints").await;
    assert_eq!(drained, 0.0, "the draining node probes nothing");
}
