//! Hostile load on the listeners: thousands of idle and slow connections, from addresses other
//! than the health checker's, while the leader is killed.

use std::net::Ipv4Addr;
use std::net::SocketAddr;
use std::time::Duration;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::net::TcpStream;

use crate::harness::TestCluster;

/// How long a health probe may take under the flood before the test calls the listener blinded.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens up to `count` connections to `port` from 127.0.0.`source`; returns the ones accepted
/// by the kernel (the node may close them at once).
async fn open_from(source: u8, port: u16, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, source), 0))).unwrap();
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(1), socket.connect(SocketAddr::from(([127, 0, 0, 1], port)))).await
        {
            streams.push(stream);
        }
    }
    streams
}

/// Whether the server closed the connection (a read ends, or fails).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_flood_neither_blinds_health_checks_nor_stalls_failover() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    // The flood: idle connections from eight addresses to every API and peer listener, and slow
    // ones that send a request head a byte at a time.
    for id in cluster.running() {
        eprintln!("node {id}: {:?}", cluster.nodes[&id].ports);
    }
    let mut idle = Vec::new();
    for id in cluster.running() {
        let ports = cluster.nodes[&id].ports;
        for source in 2..10u8 {
            idle.extend(open_from(source, ports.api, 150).await);
            idle.extend(open_from(source, ports.peer, 150).await);
        }
    }
    let mut slow = open_from(10, cluster.nodes[&leader].ports.api, 50).await;
    for stream in &mut slow {
        let _ = stream.write_all(b"GET /v1/cluster HTTP/1.1\r\nho").await;
    }
    eprintln!("flood: {} idle and {} slow connections opened", idle.len(), slow.len());

    // Health answers all along, from the health checker's own address; the leader dies meanwhile.
    // A blinded listener would not answer at all; the timeout is what a busy machine meets (the
    // load balancer's own check timeout is a deployment setting, measured in the failover suite).
    let probe = reqwest::Client::builder().timeout(PROBE_TIMEOUT).no_proxy().build().unwrap();
    let survivors: Vec<u64> = cluster.running().into_iter().filter(|&id| id != leader).collect();
    let killed_at = Instant::now();
    cluster.kill(leader);
    let mut probes = 0;
    let mut new_leader = None;
    while killed_at.elapsed() < Duration::from_secs(8) {
        for &id in &survivors {
            for url in [
                format!("http://127.0.0.1:{}/health/live", cluster.nodes[&id].ports.health),
                format!("http://127.0.0.1:{}/health/live", cluster.nodes[&id].ports.api),
            ] {
                let answer = probe.get(&url).send().await.map(|a| a.status());
                assert!(
                    matches!(answer, Ok(status) if status == 200),
                    "{url} did not answer within {PROBE_TIMEOUT:?} under the flood: {answer:?}"
                );
                probes += 1;
            }
        }
        if new_leader.is_none() {
            let view = cluster.cluster_view(survivors[0]).await;
            if let Some(found) = view.and_then(|v| v["leader_id"].as_u64()).filter(|l| *l != leader) {
                new_leader = Some(found);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(probes >= 20, "the survivors' health was probed all along ({probes} probes)");
    new_leader.expect("a new leader was elected under the flood, within the 8 s window");
    let (status, _) = cluster.register(survivors[0], "http://10.66.0.1/", "urn:flood", "C").await;
    assert_eq!(status, 201, "writes go on");

    // The nodes close the connections that never spoke (first-byte deadline) or never finished
    // their head (head deadline).
    let mut open: Vec<TcpStream> = idle.into_iter().chain(slow).collect();
    let total = open.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !open.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for mut stream in open {
            if !closed_by_server(&mut stream).await {
                still.push(stream);
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(open.is_empty(), "{} of {total} silent or slow connections were never cut", open.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_new_connections_from_one_address_is_served() {
    // What a load balancer or a client pool does when it warms up: many connections opened at
    // once from one address, each pending for a moment. None may be refused (the bound on
    // pending connections per address counts only connections that stay silent).
    let cluster = TestCluster::start(1);
    let node = cluster.wait_stable().await;
    let url = format!("{}/v1/cluster", cluster.api(node));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // A client of its own: a new connection each.
                let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
                http.get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}
