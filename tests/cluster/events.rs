//! The event stream across node failures: every change once, in order, whichever node the
//! reader ends up on; a reader whose position a node no longer holds is told to start again.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use switchboard_client::ControlClient;
use switchboard_client::Received;
use switchboard_proto::registry::EventChange;
use switchboard_proto::registry::EventId;
use switchboard_proto::registry::RegistrationRequest;

use crate::harness::TestCluster;

const CONTRACT: &str = "urn:events/IEvents";
const CHANGES: usize = 1_000;

fn request(address: String) -> RegistrationRequest {
    RegistrationRequest {
        address,
        contract_name: "IEvents".into(),
        contract_namespace: "urn:events".into(),
        ttl_ms: None,
        weight: None,
        metadata: BTreeMap::new(),
        check: None,
    }
}

/// The next item of the stream, within a minute.
async fn next(stream: &mut switchboard_client::EventStream<'_>, what: &str) -> Received {
    let next = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
    next.unwrap_or_else(|_| panic!("{what} within a minute")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_arrives_once_in_order_across_the_loss_of_the_node_the_stream_reads_from() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    // The stream reads from a follower first; the writers never use it.
    let follower = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    let mut order = vec![follower];
    order.extend(cluster.running().into_iter().filter(|&id| id != follower));
    let reader =
        ControlClient::new(order.iter().map(|&id| cluster.api(id)).collect(), None, Duration::from_secs(5)).unwrap();
    let mut stream = reader.events(Some(CONTRACT), None);
    // A change of another contract first: the stream is open (and filtered) before the writes.
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9300/", "urn:other", "IOther").await;
    assert_eq!(status, 201);

    let writers: Vec<String> = order[1..].iter().map(|&id| cluster.api(id)).collect();
    let writer = Arc::new(ControlClient::new(writers, None, Duration::from_secs(5)).unwrap());
    let writes = tokio::spawn(async move {
        let mut acknowledged = BTreeSet::new();
        let mut in_flight = tokio::task::JoinSet::new();
        for i in 0..CHANGES {
            if in_flight.len() == 16
                && let Some(done) = in_flight.join_next().await
            {
                acknowledged.extend(done.unwrap());
            }
            let writer = writer.clone();
            in_flight.spawn(async move {
                let address = format!("http://127.0.0.1:9301/r{i}");
                writer.register(&request(address.clone())).await.ok().map(|_| address)
            });
        }
        while let Some(done) = in_flight.join_next().await {
            acknowledged.extend(done.unwrap());
        }
        acknowledged
    });

    let mut registered = BTreeMap::<String, usize>::new();
    let mut last: Option<EventId> = None;
    let mut killed_after = None;
    while registered.len() < CHANGES {
        let event = match next(&mut stream, "the next registration").await {
            Received::Event(event) => event,
            Received::Reset { index } => panic!("reset at {index}: every node holds the whole test's events"),
        };
        assert!(last.is_none_or(|last| last < event.id), "{:?} after {last:?}: out of order or repeated", event.id);
        last = Some(event.id);
        let EventChange::Registered { registration } = &event.change else {
            panic!("only registrations of {CONTRACT} were made: {event:?}")
        };
        assert_eq!(registration.contract_key().to_string(), CONTRACT);
        *registered.entry(registration.address.to_string()).or_default() += 1;
        if registered.len() == CHANGES / 3 && killed_after.is_none() {
            // The node the stream reads from dies with two thirds of the changes still to come.
            cluster.kill(follower);
            killed_after = Some(registered.len());
        }
    }
    let acknowledged = tokio::time::timeout(Duration::from_secs(120), writes).await.expect("writes end").unwrap();
    assert_eq!(acknowledged.len(), CHANGES, "every write is acknowledged (the writers never lost a node)");
    assert!(killed_after.is_some());
    let repeated: Vec<_> = registered.iter().filter(|(_, count)| **count != 1).collect();
    assert!(repeated.is_empty(), "registered more than once: {repeated:?}");
    let seen: BTreeSet<String> = registered.into_keys().collect();
    assert_eq!(seen, acknowledged, "the stream has exactly the acknowledged registrations");
    assert_ne!(reader_position(&stream), None);
}

fn reader_position(stream: &switchboard_client::EventStream<'_>) -> Option<EventId> {
    stream.position().map(|id| id.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_behind_what_a_node_holds_is_told_to_reload_and_then_reads_on() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    let seen = cluster.get_json(&format!("{}/v1/registrations", cluster.api(follower))).await.unwrap();
    let seen = seen["applied_index"].as_u64().unwrap();
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9311/", "urn:events", "IEvents").await;
    assert_eq!(status, 201);
    cluster.wait_addresses(follower, &["http://127.0.0.1:9311/".to_owned()]).await;

    // Stopped and restarted, the follower holds the events of what it applies from then on only:
    // the reader's position, before the first registration, is behind what it holds.
    cluster.terminate_node(follower);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cluster.exited(follower).is_none() {
        assert!(std::time::Instant::now() < deadline, "node {follower} stops within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9312/", "urn:events", "IEvents").await;
    assert_eq!(status, 201);
    cluster.start_node(follower);
    let both = ["http://127.0.0.1:9311/".to_owned(), "http://127.0.0.1:9312/".to_owned()];
    cluster.wait_addresses(follower, &both).await;
    let client = ControlClient::new(vec![cluster.api(follower)], None, Duration::from_secs(5)).unwrap();
    let mut stream = client.events(Some(CONTRACT), Some(seen));
    let Received::Reset { index } = next(&mut stream, "the reset").await else { panic!("a reset first") };
    assert!(index > seen, "the stream goes on after {index}, past the reader's {seen}");
    // The reader reloads at that index or later: it has the registration it missed.
    let list = cluster
        .get_json(&format!("{}/v1/registrations?index={}&wait=30s", cluster.api(follower), index - 1))
        .await
        .unwrap();
    assert!(list["applied_index"].as_u64().unwrap() >= index);
    assert_eq!(list["registrations"].as_array().unwrap().len(), 2, "{list}");
    // And reads on.
    let (status, _) = cluster.register(leader, "http://127.0.0.1:9313/", "urn:events", "IEvents").await;
    assert_eq!(status, 201);
    let Received::Event(event) = next(&mut stream, "the next change").await else { panic!("one reset only") };
    assert_eq!(event.change.registration().unwrap().address.as_str(), "http://127.0.0.1:9313/");
    assert!(event.id.index > index);
}
