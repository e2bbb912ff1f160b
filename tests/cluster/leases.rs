//! Leases, heartbeats, draining, self-registration, and the SOAP registration endpoint.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use serde_json::json;
use switchboard::registry::RegistrationRequest;
use switchboard_client::Registrar;
use switchboard_client::RegistrarConfig;

use crate::harness::TestCluster;
use crate::harness::TestSample;
use crate::harness::eventually;

const ECHO: &str = "urn:switchboard:samples/IEcho";

/// Registrations of one sample instance on node `node`.
async fn instance_registrations(cluster: &TestCluster, node: u64, instance: &str) -> Option<usize> {
    let list = cluster.get_json(&format!("{}/v1/registrations", cluster.api(node))).await?;
    Some(list["registrations"].as_array()?.iter().filter(|r| r["metadata"]["instance"] == instance).count())
}

/// Ids of one sample instance's registrations on node `node`.
async fn instance_ids(cluster: &TestCluster, node: u64, instance: &str) -> Vec<String> {
    let list = cluster.get_json(&format!("{}/v1/registrations", cluster.api(node))).await.unwrap();
    let listed = list["registrations"].as_array().unwrap().iter();
    listed.filter(|r| r["metadata"]["instance"] == instance).map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

/// Waits until no node lists the instance. The deadline is generous (a busy machine may be
/// slow); what removed them is checked in the audit trail, and the timings are benchmarks'.
async fn wait_gone(cluster: &TestCluster, instance: &str) {
    for node in cluster.running() {
        eventually(&format!("{instance} gone from node {node}"), Duration::from_secs(30), || async {
            (instance_registrations(cluster, node, instance).await? == 0).then_some(())
        })
        .await;
    }
}

/// The newest audit action about registration `id`, as node `node` records it.
async fn last_action(cluster: &TestCluster, node: u64, id: &str) -> String {
    let trail = cluster.get_json(&format!("{}/v1/audit?id={id}&limit=1", cluster.api(node))).await.unwrap();
    trail["records"][0]["action"].as_str().unwrap_or_default().to_owned()
}

fn leased(i: usize, ttl_ms: u64) -> RegistrationRequest {
    RegistrationRequest {
        address: format!("http://10.20.{}.{}/", i / 250, i % 250),
        contract_name: "ILeased".into(),
        contract_namespace: "urn:leases".into(),
        ttl_ms: Some(ttl_ms),
        weight: None,
        metadata: BTreeMap::new(),
        check: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_service_expires_and_a_stopped_one_unregisters() {
    let cluster = TestCluster::start(3);
    cluster.wait_stable().await;
    let ttl = Duration::from_millis(2_000);
    let mut crashed = TestSample::start(cluster.dir(), "crashed", &cluster.apis(), 2_000).await;
    let mut stopped = TestSample::start(cluster.dir(), "stopped", &cluster.apis(), 2_000).await;
    for node in cluster.running() {
        eventually("both instances everywhere", Duration::from_secs(10), || async {
            let a = instance_registrations(&cluster, node, "crashed").await?;
            let b = instance_registrations(&cluster, node, "stopped").await?;
            (a == 3 && b == 3).then_some(())
        })
        .await;
    }
    // The heartbeats keep them alive well past their TTL.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(instance_registrations(&cluster, 1, "crashed").await, Some(3), "heartbeats renew the lease");
    let (crashed_ids, stopped_ids) =
        (instance_ids(&cluster, 1, "crashed").await, instance_ids(&cluster, 1, "stopped").await);

    // Killed: nobody unregisters it; its lease runs out.
    crashed.kill();
    wait_gone(&cluster, "crashed").await;
    // Stopped: it unregisters itself on the way out, without waiting for its lease.
    stopped.terminate();
    wait_gone(&cluster, "stopped").await;
    for node in cluster.running() {
        for id in &crashed_ids {
            assert_eq!(last_action(&cluster, node, id).await, "expired", "node {node}: {id} of the killed service");
        }
        for id in &stopped_ids {
            assert_eq!(
                last_action(&cluster, node, id).await,
                "unregistered",
                "node {node}: {id} of the stopped service"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_survive_a_leader_kill_and_a_crash_during_the_election_still_expires() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let ttl_ms = 2_000;
    let requests: Vec<_> = (0..200).map(|i| leased(i, ttl_ms)).collect();
    let survivors: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let routers: Vec<String> = cluster.running().into_iter().map(|id| cluster.api(id)).collect();
    let mut config = RegistrarConfig::new(routers.clone(), requests);
    config.heartbeat_every = Some(Duration::from_millis(500));
    let registrar = Registrar::start(config).await.expect("200 leases registered");
    let epochs: BTreeMap<String, u64> = registrar.registrations().iter().map(|r| (r.id.to_string(), r.epoch)).collect();
    let doomed = TestSample::start(
        cluster.dir(),
        "doomed",
        &survivors.iter().map(|&id| cluster.api(id)).collect::<Vec<_>>(),
        ttl_ms,
    )
    .await;
    eventually("everything registered everywhere", Duration::from_secs(10), || async {
        for &node in &survivors {
            if instance_registrations(&cluster, node, "doomed").await? != 3 {
                return None;
            }
        }
        Some(())
    })
    .await;

    let mut doomed = doomed;
    let doomed_ids = instance_ids(&cluster, survivors[0], "doomed").await;
    cluster.kill(leader);
    doomed.kill();
    // The new leader expires what nobody renews (after its grace period).
    wait_gone(&cluster, "doomed").await;
    for id in &doomed_ids {
        assert_eq!(last_action(&cluster, survivors[0], id).await, "expired", "{id}");
    }

    // Two more TTLs later, none of the 200 heartbeating leases expired.
    tokio::time::sleep(Duration::from_millis(2 * ttl_ms)).await;
    for &node in &survivors {
        let url = format!("{}/v1/registrations?contract_namespace=urn:leases&contract_name=ILeased", cluster.api(node));
        let list = cluster.get_json(&url).await.unwrap();
        let listed: BTreeMap<String, u64> = list["registrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().to_owned(), r["epoch"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            listed, epochs,
            "node {node}: every lease alive with its original epoch (never expired and re-registered)"
        );
    }
    for &node in &survivors {
        assert!(!cluster.log(node).contains("leases expired expired=200"), "no mass expiry");
    }
    registrar.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_of_a_replaced_instance_do_not_keep_it_alive() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let body = json!({ "address": "http://10.30.0.1:9000/", "contract_name": "IZombie", "contract_namespace": "urn:epochs", "ttl_ms": 1500 });
    let (status, first) = cluster.post_json(leader, "/v1/registrations", &body).await;
    assert_eq!(status, 201);
    // The instance restarts on the same address and registers again: a new epoch.
    let (status, second) = cluster.post_json(leader, "/v1/registrations", &body).await;
    assert_eq!(status, 200);
    let (id, old_epoch, new_epoch) =
        (first["id"].as_str().unwrap(), first["epoch"].as_u64().unwrap(), second["epoch"].as_u64().unwrap());
    assert!(new_epoch > old_epoch);

    let response = cluster
        .http
        .post(format!("{}/v1/registrations/{id}/heartbeat?epoch={old_epoch}", cluster.api(leader)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "epoch_mismatch");

    // The dead instance's heartbeats keep coming; the new epoch, never renewed, expires anyway
    // (a generous deadline: the TTL is 1.5 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let heartbeat = json!({ "ids": [{ "id": id, "epoch": old_epoch }] });
        let (status, reply) = cluster.post_json(leader, "/v1/heartbeat", &heartbeat).await;
        assert_eq!(status, 200);
        let listed = cluster.get_json(&format!("{}/v1/registrations/{id}", cluster.api(leader))).await.unwrap();
        if listed["code"] == "registration_not_found" {
            break;
        }
        assert!(reply["renewed"].as_array().unwrap().is_empty(), "an old epoch renews nothing: {reply}");
        assert!(Instant::now() < deadline, "the registration was kept alive by stale heartbeats");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last_action(&cluster, leader, id).await, "expired", "its lease ran out");
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_stops_new_requests_while_an_in_flight_one_completes() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let first = TestSample::start(cluster.dir(), "first", &cluster.apis(), 5_000).await;
    let data = cluster.data(leader);
    eventually("first routable", Duration::from_secs(10), || async {
        let response =
            cluster.http.get(format!("{data}/x")).header("x-switchboard-contract", ECHO).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    // A slow request reaches the first instance...
    let slow = {
        let http = cluster.http.clone();
        let url = format!("{data}/slow?delay_ms=1500");
        tokio::spawn(async move {
            http.get(url).header("x-switchboard-contract", ECHO).send().await.unwrap().json::<Value>().await.unwrap()
        })
    };
    eventually("the slow request to reach the first instance", Duration::from_secs(10), || async {
        let stats: Value =
            cluster.http.get(format!("{}/cache/stats", first.base)).send().await.ok()?.json().await.ok()?;
        (stats["in_flight"].as_u64()? >= 1).then_some(())
    })
    .await;
    let second = TestSample::start(cluster.dir(), "second", &cluster.apis(), 5_000).await;
    // ...then the first is drained.
    let list =
        cluster.get_json(&format!("{}/v1/registrations?contract_name=IEcho", cluster.api(leader))).await.unwrap();
    let first_id =
        list["registrations"].as_array().unwrap().iter().find(|r| r["metadata"]["instance"] == "first").unwrap()["id"]
            .clone();
    let (status, drained) = cluster
        .post_json(leader, &format!("/v1/registrations/{}/drain", first_id.as_str().unwrap()), &json!(null))
        .await;
    assert_eq!((status, drained["state"].as_str()), (200, Some("draining")), "{drained}");
    for node in cluster.running() {
        let url =
            format!("{}/v1/registrations/{}?consistency=linearizable", cluster.api(node), first_id.as_str().unwrap());
        assert_eq!(cluster.get_json(&url).await.unwrap()["state"], "draining");
    }
    for _ in 0..10 {
        let response =
            cluster.http.get(format!("{data}/after")).header("x-switchboard-contract", ECHO).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["instance"], second.instance, "no new request goes to the draining instance");
    }
    let slow = slow.await.unwrap();
    assert_eq!(slow["instance"], first.instance, "the in-flight request completed on the draining instance");
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeats_do_not_grow_the_raft_log() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let requests: Vec<_> = (0..1000).map(|i| leased(i, 3_000)).collect();
    let mut config = RegistrarConfig::new(cluster.apis(), requests);
    config.heartbeat_every = Some(Duration::from_secs(1));
    let registrar = Registrar::start(config).await.unwrap();
    let index = |view: Value| view["last_log_index"].as_u64().unwrap();
    let before = index(cluster.cluster_view(leader).await.unwrap());
    // Eight heartbeat rounds, more than two TTLs: every lease would have expired unrenewed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = index(cluster.cluster_view(leader).await.unwrap());
    assert_eq!(after, before, "heartbeats never enter the log");
    let list = cluster
        .get_json(&format!(
            "{}/v1/registrations?contract_namespace=urn:leases&contract_name=ILeased&limit=5000",
            cluster.api(leader)
        ))
        .await
        .unwrap();
    assert_eq!(list["registrations"].as_array().unwrap().len(), 1000, "every lease was renewed, none expired");
    registrar.stop().await.unwrap();
}

const SOAP_REGISTER: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Register xmlns="http://www.thatindigogirl.com/samples/2008/01"><regInfo xmlns:a="http://schemas.thatindigogirl.com/samples/2008/01" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><a:Address>http://10.40.0.1:9000/calc</a:Address><a:ContractName>ICalculator</a:ContractName><a:ContractNamespace>http://tempuri.org/</a:ContractNamespace></regInfo></Register></s:Body></s:Envelope>"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_soap_contract_registers_and_unregisters() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    let url = format!("{}/v1/soap/registration", cluster.api(follower));
    let send = |body: String, action: &'static str| {
        let http = cluster.http.clone();
        let url = url.clone();
        async move {
            let response = http
                .post(url)
                .header("content-type", "text/xml; charset=utf-8")
                .header("soapaction", action)
                .body(body)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let register = "\"http://www.thatindigogirl.com/samples/2008/01/IRegistrationService/Register\"";
    let unregister = "\"http://www.thatindigogirl.com/samples/2008/01/IRegistrationService/Unregister\"";

    let (status, answer) = send(SOAP_REGISTER.to_owned(), register).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("<RegisterResponse xmlns=\"http://www.thatindigogirl.com/samples/2008/01\"/>"), "{answer}");
    for node in cluster.running() {
        cluster.wait_addresses(node, &["http://10.40.0.1:9000/calc".to_owned()]).await;
    }

    // Bad input gets a fault and changes nothing.
    let bad = SOAP_REGISTER.replace("http://10.40.0.1:9000/calc", "not-a-url");
    let (status, fault) = send(bad, register).await;
    assert_eq!(status, 400);
    assert!(fault.contains("<faultcode>s:Client.invalid_address</faultcode>"), "{fault}");
    let (status, fault) = send(SOAP_REGISTER.to_owned(), unregister).await;
    assert_eq!(status, 400, "action and body disagree: {fault}");
    assert!(fault.contains("invalid_action"));
    let (status, fault) = send("<x/>".to_owned(), register).await;
    assert_eq!(status, 400);
    assert!(fault.contains("invalid_envelope"));

    let unregister_body = SOAP_REGISTER.replace("<Register ", "<Unregister ").replace("</Register>", "</Unregister>");
    let (status, answer) = send(unregister_body.clone(), unregister).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("UnregisterResponse"));
    for node in cluster.running() {
        cluster.wait_addresses(node, &[]).await;
    }
    let (status, fault) = send(unregister_body, unregister).await;
    assert_eq!(status, 404);
    assert!(fault.contains("registration_not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_library_fails_over_re_registers_and_unregisters() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    // The first router address is dead: the library moves on to the next one.
    let dead = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let mut routers = vec![dead];
    routers.extend(cluster.apis());
    let mut config = RegistrarConfig::new(routers, vec![leased(7, 1_500)]);
    config.heartbeat_every = Some(Duration::from_millis(300));
    let registrar = Registrar::start(config).await.expect("registers through a live router");
    let first = registrar.registrations()[0].clone();

    // An operator (or an expiry) removes it behind the service's back: the next heartbeat learns
    // that and registers again, with a new epoch.
    let response =
        cluster.http.delete(format!("{}/v1/registrations/{}", cluster.api(leader), first.id)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let again = eventually("the library to register again", Duration::from_secs(10), || async {
        let current = registrar.registrations();
        current.first().filter(|r| r.epoch != first.epoch).cloned()
    })
    .await;
    assert_eq!(again.id, first.id);
    for node in cluster.running() {
        cluster.wait_addresses(node, &[first.address.to_string()]).await;
    }

    // A graceful stop unregisters at once.
    registrar.stop().await.unwrap();
    for node in cluster.running() {
        cluster.wait_addresses(node, &[]).await;
    }
}

/// Busy processes that compete with the nodes for every core; killed when dropped.
struct CpuHogs(Vec<std::process::Child>);

impl CpuHogs {
    fn start(count: usize) -> Self {
        let spawn = || {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(std::process::Stdio::null())
                .spawn()
                .expect("sh starts")
        };
        Self((0..count).map(|_| spawn()).collect())
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_that_keep_heartbeating_survive_a_starved_cpu() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let requests: Vec<_> = (0..300).map(|i| leased(i, 2_000)).collect();
    let mut config = RegistrarConfig::new(cluster.apis(), requests);
    config.heartbeat_every = Some(Duration::from_secs(1));
    let registrar = Registrar::start(config).await.unwrap();
    let expired = |audit: Value| {
        audit["records"].as_array().map_or(0, |records| records.iter().filter(|r| r["action"] == "expired").count())
    };
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    // Five busy processes per core, for eight seconds: nodes, client and hogs share the CPUs.
    let hogs = CpuHogs::start(5 * cores);
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop(hogs);
    let audit = cluster.get_json(&format!("{}/v1/audit?limit=5000", cluster.api(leader))).await.unwrap();
    assert_eq!(expired(audit), 0, "no lease that kept heartbeating expired while the CPU was starved");
    for node in cluster.running() {
        let list = cluster.list_all(node).await.unwrap();
        assert_eq!(list.iter().filter(|r| r["contract_namespace"] == "urn:leases").count(), 300);
    }
    registrar.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_was_starved_does_not_expire_leases_renewed_meanwhile() {
    // Long election timeouts, so that a leader frozen for two seconds is still the leader after.
    let args = ["--heartbeat-ms", "500", "--election-timeout-ms", "4000"].map(String::from).to_vec();
    let cluster = TestCluster::start_with(3, crate::harness::Options { args, ..Default::default() });
    let leader = cluster.wait_stable().await;
    let followers: Vec<String> =
        cluster.running().into_iter().filter(|&id| id != leader).map(|id| cluster.api(id)).collect();
    // The service heartbeats through the followers only: the leader learns of it by gossip.
    let requests: Vec<_> = (0..50).map(|i| leased(i, 1_500)).collect();
    let mut config = RegistrarConfig::new(followers, requests);
    config.heartbeat_every = Some(Duration::from_millis(400));
    let registrar = Registrar::start(config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await; // leases renewed a few times
    // The leader is starved outright for longer than the leases' TTL, then runs again.
    cluster.pause(leader);
    tokio::time::sleep(Duration::from_secs(2)).await; // the fault's duration
    cluster.resume(leader);
    tokio::time::sleep(Duration::from_secs(3)).await; // observation window
    let view = cluster.cluster_view(leader).await.unwrap();
    assert_eq!(view["leader_id"].as_u64(), Some(leader), "still the leader: no election happened");
    let audit = cluster.get_json(&format!("{}/v1/audit?limit=5000", cluster.api(leader))).await.unwrap();
    let expired = audit["records"].as_array().unwrap().iter().filter(|r| r["action"] == "expired").count();
    assert_eq!(expired, 0, "the leader expired leases that kept heartbeating while it was frozen");
    registrar.stop().await.unwrap();
}
