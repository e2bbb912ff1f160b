//! `switchboard dev`: a local three-node cluster on loopback for trying Switchboard out.
//!
//! It starts three `switchboard serve` processes with their data under one directory, waits until
//! they are ready, prints where to reach them, and stops them all on Ctrl-C.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use tokio::process::Child;
use tokio::process::Command;

use super::DevArgs;

/// Ports of local node `n` (1-based).
#[derive(Debug, Clone, Copy)]
pub struct DevPorts {
    pub data: u16,
    pub api: u16,
    pub peer: u16,
}

impl DevPorts {
    pub fn of(base: u16, n: u16) -> Self {
        let first = base + 10 * n;
        Self { data: first, api: first + 1, peer: first + 2 }
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the switchboard binary")?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("cannot create {}", args.dir.display()))?;
    let nodes = [1u16, 2, 3];
    let peers = nodes
        .iter()
        .map(|&n| format!("{n}=127.0.0.1:{}", DevPorts::of(args.base_port, n).peer))
        .collect::<Vec<_>>()
        .join(",");
    let secret = switchboard::secret::random_hex::<16>()?;
    let mut children = Vec::new();
    for &n in &nodes {
        children.push(spawn_node(&exe, &args.dir, args.base_port, n, &peers, &secret)?);
    }
    let ready = wait_ready(args.base_port, &nodes).await;
    let routers = nodes
        .iter()
        .map(|&n| format!("http://127.0.0.1:{}", DevPorts::of(args.base_port, n).api))
        .collect::<Vec<_>>()
        .join(",");
    for i in 1..=args.samples {
        children.push(spawn_sample(&exe, &args.dir, i, &routers)?);
    }
    println!();
    match ready {
        Ok(()) => println!("Switchboard dev cluster is ready (data under {}):", args.dir.display()),
        Err(ref err) => println!("Switchboard dev cluster started but is not ready yet ({err}):"),
    }
    for &n in &nodes {
        let ports = DevPorts::of(args.base_port, n);
        println!("  node {n}: data plane http://127.0.0.1:{}  control API http://127.0.0.1:{}", ports.data, ports.api);
    }
    let api = DevPorts::of(args.base_port, 1).api;
    let data = DevPorts::of(args.base_port, 2).data;
    println!(
        "  {} sample services (logs: {}/sample*.log) register themselves with a {} ms lease",
        args.samples,
        args.dir.display(),
        SAMPLE_TTL_MS
    );
    println!();
    println!("Try:");
    println!("  curl -s http://127.0.0.1:{data}/hello -H 'X-Switchboard-Contract: urn:switchboard:samples/IEcho'");
    println!(
        "  curl -s http://127.0.0.1:{data}/ -H 'content-type: text/xml' -H 'SOAPAction: \"http://tempuri.org/ICalculator/Add\"' \\\n    \
         -d '<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body><Add xmlns=\"http://tempuri.org/\"><a>2</a><b>3</b></Add></s:Body></s:Envelope>'"
    );
    println!(
        "  curl -s -XPOST http://127.0.0.1:{data}/invalidate -H 'X-Switchboard-Contract: urn:switchboard:samples/ICache' -H 'X-Switchboard-Delivery: broadcast' -d users/42"
    );
    println!("  curl -s http://127.0.0.1:{api}/v1/registrations");
    println!("  curl -s http://127.0.0.1:{api}/v1/cluster");
    println!();
    println!("Press Ctrl-C to stop.");

    switchboard::node::shutdown_signal().await;
    println!("stopping...");
    stop_all(&mut children).await;
    Ok(())
}

fn spawn_node(exe: &Path, dir: &Path, base: u16, n: u16, peers: &str, secret: &str) -> anyhow::Result<Child> {
    let ports = DevPorts::of(base, n);
    let data_dir = dir.join(format!("node{n}"));
    let log = std::fs::File::create(dir.join(format!("node{n}.log")))?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .args(["--node-id", &n.to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--data-addr", &format!("127.0.0.1:{}", ports.data)])
        .args(["--api-addr", &format!("127.0.0.1:{}", ports.api)])
        .args(["--peer-addr", &format!("127.0.0.1:{}", ports.peer)])
        .args(["--peers", peers])
        .env("SWITCHBOARD_CLUSTER_SECRET", secret);
    spawn_logged(command, log).with_context(|| format!("cannot start node {n}"))
}

/// Starts `command` with its output in `log`; it is killed when its handle is dropped.
fn spawn_logged(mut command: Command, log: std::fs::File) -> std::io::Result<Child> {
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).kill_on_drop(true).spawn()
}

/// Lease of the dev sample services.
const SAMPLE_TTL_MS: u64 = 5_000;

fn spawn_sample(exe: &Path, dir: &Path, n: u16, routers: &str) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join(format!("sample{n}.log")))?;
    let mut command = Command::new(exe);
    command
        .arg("sample")
        .args(["--routers", routers])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--instance", &format!("sample-{n}")])
        .args(["--ttl-ms", &SAMPLE_TTL_MS.to_string()]);
    spawn_logged(command, log).with_context(|| format!("cannot start sample service {n}"))
}

async fn wait_ready(base: u16, nodes: &[u16]) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).no_proxy().build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    for &n in nodes {
        let url = format!("http://127.0.0.1:{}/health/ready", DevPorts::of(base, n).api);
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("node {n} is not ready after 20 s; see its log");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

async fn stop_all(children: &mut [Child]) {
    // The nodes got Ctrl-C from the terminal too; give them a moment to stop on their own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for child in children.iter_mut() {
        if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}
