//! Load and measurement helpers for the benchmark suite (`bench/run.sh`). Each subcommand runs a
//! bounded scenario against running `switchboard serve` processes and prints one JSON line.
//!
//! - `fill`: register exactly `--count` unique registrations of about 200 bytes (B6, B7).
//! - `propagation`: register one at a time and time how long until every node routes it (B5).
//! - `failover`: keep writing and routing through the followers, SIGKILL the leader, and time
//!   how long writes stay unavailable (B4, one trial).
//! - `compact`: write until every node has a snapshot covering the log as it was at the start,
//!   so data directories can be measured right after compaction (B6).
//! - `openloop`: a fixed-rate, coordinated-omission-corrected latency probe; the fallback for B2
//!   when `oha` cannot be installed.
//! - `watchers`: many blocking reads of one contract spread over the nodes; registrations made
//!   one at a time, and for each the time until every watcher woke with it (B5).
//!
//! Every loop is bounded both in count and in time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark tools: a failed step ends the run

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use clap::Subcommand;
use serde_json::Value;
use serde_json::json;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Fill(FillArgs),
    Propagation(PropagationArgs),
    Failover(FailoverArgs),
    Compact(CompactArgs),
    Openloop(OpenloopArgs),
    Health(HealthArgs),
    Watchers(WatchersArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = match Cli::parse().command {
        Command::Fill(args) => fill(args).await?,
        Command::Propagation(args) => propagation(args).await?,
        Command::Failover(args) => failover(args).await?,
        Command::Compact(args) => compact(args).await?,
        Command::Openloop(args) => openloop(args).await?,
        Command::Health(args) => health(args).await?,
        Command::Watchers(args) => watchers(args).await?,
    };
    println!("{report}");
    Ok(())
}

fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(timeout).no_proxy().pool_max_idle_per_host(1024).build()?)
}

/// Milliseconds as a float, for reports.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Nearest-rank quantile of sorted values (`q` in 0..=1); `None` when empty.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Registers `body` through the control API at `api`; whether it was acknowledged.
async fn registered(http: &reqwest::Client, api: &str, body: &Value) -> bool {
    let answer = http.post(format!("{api}/v1/registrations")).json(body).send().await;
    answer.is_ok_and(|r| r.status().is_success())
}

fn registration(address: String, namespace: &str, name: &str) -> Value {
    json!({"address": address, "contract_name": name, "contract_namespace": namespace})
}

// ---------------------------------------------------------------------------------------------
// fill

#[derive(Debug, clap::Args)]
struct FillArgs {
    /// Control API base URLs, comma-separated; clients are spread over them.
    #[arg(long, value_delimiter = ',', required = true)]
    targets: Vec<String>,
    /// How many registrations to make.
    #[arg(long)]
    count: u64,
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Stop after this long even if `--count` is not reached.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Distinguishes runs so addresses never repeat.
    #[arg(long, default_value = "fill")]
    tag: String,
    /// Pads each registration's metadata with this many KiB (0: about 200 bytes in all; at most 15).
    #[arg(long, default_value_t = 0)]
    metadata_kb: usize,
}

/// A registration body of about 200 bytes (address, contract and a little metadata), plus
/// `pad_kb` KiB of padding in the metadata.
fn fill_body(tag: &str, i: u64, pad_kb: usize) -> Value {
    let mut body = json!({
        "address": format!("http://svc-{tag}-{i:08}.bench.invalid:8080/services/orders"),
        "contract_name": format!("IOrders{}", i % 100),
        "contract_namespace": "urn:bench:fill",
        "metadata": {"zone": format!("zone-{}", i % 3), "version": "1.4.2", "owner": "bench-team"},
    });
    // Metadata values are capped at 1 KiB each: pad with one entry per KiB.
    for k in 0..pad_kb {
        body["metadata"][format!("pad{k:02}")] = Value::String("x".repeat(1000));
    }
    body
}

async fn fill(args: FillArgs) -> anyhow::Result<Value> {
    anyhow::ensure!(!args.targets.is_empty(), "--targets is required");
    let http = client(Duration::from_secs(10))?;
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..args.clients {
        let (http, next, tag) = (http.clone(), next.clone(), args.tag.clone());
        let url = format!("{}/v1/registrations", args.targets[c as usize % args.targets.len()]);
        let (count, pad_kb) = (args.count, args.metadata_kb);
        workers.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut bytes, mut tried) = (0u64, 0u64, 0u64, 0u64);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let body = fill_body(&tag, i, pad_kb).to_string();
                bytes += body.len() as u64;
                tried += 1;
                // Retry one index a few times so the count is exact despite transient errors.
                let mut done = false;
                for _ in 0..5 {
                    let sent = http.post(&url).header("content-type", "application/json").body(body.clone()).send();
                    match sent.await {
                        Ok(r) if r.status().is_success() => {
                            done = true;
                            break;
                        }
                        _ => errors += 1,
                    }
                }
                ok += u64::from(done);
            }
            (ok, errors, bytes, tried)
        }));
    }
    let (mut ok, mut errors, mut bytes, mut tried) = (0, 0, 0, 0);
    for worker in workers {
        let (o, e, b, t) = worker.await?;
        ok += o;
        errors += e;
        bytes += b;
        tried += t;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "count": args.count, "ok": ok, "errors": errors, "seconds": seconds,
        "per_second": ok as f64 / seconds,
        "payload_bytes_avg": bytes as f64 / tried.max(1) as f64,
    }))
}

// ---------------------------------------------------------------------------------------------
// propagation

#[derive(Debug, clap::Args)]
struct PropagationArgs {
    /// Control API base URLs of the nodes (registrations rotate over them).
    #[arg(long, value_delimiter = ',', required = true)]
    apis: Vec<String>,
    /// Data-plane base URLs of all nodes (each is polled until it routes the new contract).
    #[arg(long, value_delimiter = ',', required = true)]
    datas: Vec<String>,
    /// Address registered for every test contract: a backend that answers 2xx.
    #[arg(long)]
    backend: String,
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Pause between registrations.
    #[arg(long, default_value_t = 10)]
    gap_ms: u64,
    /// Give up on one registration after this long.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Stop after this long even if `--count` is not reached.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    #[arg(long, default_value = "prop")]
    tag: String,
}

/// Polls `data` with the contract header until it answers 2xx; the time from `since` to that
/// answer, or `None` after `limit`.
async fn until_routable(
    http: reqwest::Client,
    data: String,
    contract: String,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    while since.elapsed() < limit {
        let answer = http.get(format!("{data}/probe")).header("x-switchboard-contract", &contract).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Some(since.elapsed());
        }
        tokio::task::yield_now().await;
    }
    None
}

async fn propagation(args: PropagationArgs) -> anyhow::Result<Value> {
    let http = client(Duration::from_secs(5))?;
    let namespace = format!("urn:bench:prop:{}", args.tag);
    let limit = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let (mut all, mut register_ms) = (Vec::new(), Vec::new());
    let (mut timeouts, mut errors) = (0u64, 0u64);
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); args.datas.len()];
    for i in 0..args.count {
        if Instant::now() > deadline {
            break;
        }
        let name = format!("IProp{i}");
        let api = &args.apis[i as usize % args.apis.len()];
        let sent = Instant::now();
        if !registered(&http, api, &registration(args.backend.clone(), &namespace, &name)).await {
            errors += 1;
            continue;
        }
        let acked = Instant::now();
        register_ms.push(ms(acked - sent));
        let contract = format!("{namespace}/{name}");
        let polls = args
            .datas
            .iter()
            .map(|d| tokio::spawn(until_routable(http.clone(), d.clone(), contract.clone(), acked, limit)))
            .collect::<Vec<_>>();
        let mut slowest = Some(Duration::ZERO);
        for (n, poll) in polls.into_iter().enumerate() {
            let took = poll.await?;
            if let Some(t) = took {
                per_node[n].push(ms(t));
            }
            slowest = slowest.zip(took).map(|(a, b)| a.max(b));
        }
        match slowest {
            Some(t) => all.push(ms(t)),
            None => timeouts += 1,
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let all = sorted(all);
    let register_ms = sorted(register_ms);
    let nodes = per_node
        .into_iter()
        .map(sorted)
        .map(|v| json!({"p50_ms": quantile(&v, 0.5), "p99_ms": quantile(&v, 0.99)}))
        .collect::<Vec<_>>();
    Ok(json!({
        "count": args.count, "measured": all.len(), "timeouts": timeouts, "errors": errors,
        "p50_ms": quantile(&all, 0.5), "p99_ms": quantile(&all, 0.99), "max_ms": quantile(&all, 1.0),
        "register_p50_ms": quantile(&register_ms, 0.5), "per_node": nodes,
    }))
}

// ---------------------------------------------------------------------------------------------
// watchers

#[derive(Debug, clap::Args)]
struct WatchersArgs {
    /// Control API base URLs of the nodes: watchers and registrations rotate over them.
    #[arg(long, value_delimiter = ',', required = true)]
    apis: Vec<String>,
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Registrations made, one at a time.
    #[arg(long, default_value_t = 200)]
    changes: u64,
    /// Pause after every watcher has seen a registration.
    #[arg(long, default_value_t = 10)]
    gap_ms: u64,
    /// Give up on one registration after this long.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Stop after this long even if `--changes` is not reached.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Watch with the event stream (`GET /v1/events?contract=`) instead of blocking reads.
    #[arg(long)]
    stream: bool,
}

const WATCHED_NAMESPACE: &str = "urn:bench:watch";
const WATCHED_NAME: &str = "IWatched";

/// When each watcher first held each address in an answer.
type Sightings = Arc<Mutex<Vec<std::collections::HashMap<String, Instant>>>>;

/// One watcher: a list of the contract, then blocking reads with the index of the last answer,
/// noting when each address first appears; ends when `stop` is set (after its current read).
async fn watch_loop(http: reqwest::Client, api: String, slot: usize, seen: Sightings, stop: Arc<AtomicBool>) -> u64 {
    let base = format!("{api}/v1/registrations?contract_namespace={WATCHED_NAMESPACE}&contract_name={WATCHED_NAME}");
    let (mut index, mut reads) = (None::<u64>, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let url = match index {
            Some(index) => format!("{base}&index={index}&wait=2s"),
            None => base.clone(),
        };
        let Ok(page) = async { http.get(url).send().await?.json::<Value>().await }.await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let now = Instant::now();
        reads += 1;
        index = page["applied_index"].as_u64().or(index);
        let mut seen = seen.lock().unwrap();
        for registration in page["registrations"].as_array().into_iter().flatten() {
            if let Some(address) = registration["address"].as_str() {
                seen[slot].entry(address.to_owned()).or_insert(now);
            }
        }
    }
    reads
}

/// One watcher on the event stream: notes when each address's registration event arrives; ends
/// when `stop` is set.
async fn stream_loop(api: String, after: Option<u64>, slot: usize, seen: Sightings, stop: Arc<AtomicBool>) -> u64 {
    let Ok(client) = switchboard_client::ControlClient::new(vec![api], None, Duration::from_secs(10)) else { return 0 };
    let contract = format!("{WATCHED_NAMESPACE}/{WATCHED_NAME}");
    let mut stream = client.events(Some(&contract), after);
    let mut events = 0u64;
    let stopped = async {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::pin!(stopped);
    loop {
        // Not a timeout around `next`: one shorter than opening a stream on a busy machine would
        // cancel every open.
        let next = tokio::select! {
            next = stream.next() => next,
            () = &mut stopped => break,
        };
        let event = match next {
            Ok(switchboard_client::Received::Event(event)) => event,
            Ok(switchboard_client::Received::Reset { index }) => {
                eprintln!("watcher {slot}: reset at {index}");
                continue;
            }
            Err(err) => {
                eprintln!("watcher {slot}: {err}");
                continue;
            }
        };
        let now = Instant::now();
        events += 1;
        if let switchboard_proto::registry::EventChange::Registered { registration } = &event.change {
            seen.lock().unwrap()[slot].entry(registration.address.to_string()).or_insert(now);
        }
    }
    events
}

async fn watchers(args: WatchersArgs) -> anyhow::Result<Value> {
    let http = client(Duration::from_secs(10))?;
    let seen: Sightings = Arc::new(Mutex::new(vec![Default::default(); args.watchers]));
    let stop = Arc::new(AtomicBool::new(false));
    // Streams start after the index the cluster has now: one that opens late misses nothing.
    let listed = http.get(format!("{}/v1/registrations?limit=1", args.apis[0])).send().await?.json::<Value>().await?;
    let after = listed["applied_index"].as_u64();
    let tasks = (0..args.watchers)
        .map(|slot| {
            let api = args.apis[slot % args.apis.len()].clone();
            if args.stream {
                tokio::spawn(stream_loop(api, after, slot, seen.clone(), stop.clone()))
            } else {
                tokio::spawn(watch_loop(http.clone(), api, slot, seen.clone(), stop.clone()))
            }
        })
        .collect::<Vec<_>>();
    let limit = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let (mut from_sent, mut from_ack, mut slowest) = (Vec::new(), Vec::new(), Vec::new());
    let (mut errors, mut missed) = (0u64, 0u64);
    for i in 0..args.changes {
        if Instant::now() > deadline {
            break;
        }
        // Fresh addresses per mode: registering one again with the same options is not a change.
        let mode = if args.stream { "stream" } else { "read" };
        let address = format!("http://127.0.0.1:9/watched/{mode}/{i}");
        let api = &args.apis[i as usize % args.apis.len()];
        let sent = Instant::now();
        if !registered(&http, api, &registration(address.clone(), WATCHED_NAMESPACE, WATCHED_NAME)).await {
            errors += 1;
            continue;
        }
        let acked = Instant::now();
        // Until every watcher holds it (bounded); then each one's time from the write sent, and
        // from its acknowledgement (zero for a watcher woken before the acknowledgement arrived).
        loop {
            let all = seen.lock().unwrap().iter().all(|s| s.contains_key(&address));
            if all || acked.elapsed() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let times: Vec<Instant> = seen.lock().unwrap().iter().filter_map(|s| s.get(&address).copied()).collect();
        missed += (args.watchers - times.len()) as u64;
        if times.len() == args.watchers {
            slowest.extend(times.iter().map(|at| ms(*at - sent)).reduce(f64::max));
        }
        from_sent.extend(times.iter().map(|at| ms(*at - sent)));
        from_ack.extend(times.iter().map(|at| ms(at.saturating_duration_since(acked))));
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for task in tasks {
        reads += task.await?;
    }
    let (from_sent, from_ack, slowest) = (sorted(from_sent), sorted(from_ack), sorted(slowest));
    Ok(json!({
        "watchers": args.watchers, "changes": args.changes, "measured": slowest.len(), "errors": errors,
        "missed": missed, "reads": reads,
        "p50_ms": quantile(&from_sent, 0.5), "p99_ms": quantile(&from_sent, 0.99), "max_ms": quantile(&from_sent, 1.0),
        "after_ack_p50_ms": quantile(&from_ack, 0.5), "after_ack_p99_ms": quantile(&from_ack, 0.99),
        "slowest_p50_ms": quantile(&slowest, 0.5), "slowest_p99_ms": quantile(&slowest, 0.99),
    }))
}

// ---------------------------------------------------------------------------------------------
// failover

#[derive(Debug, clap::Args)]
struct FailoverArgs {
    /// One node as `id,api_url,data_url,pid`; repeat for every node.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Contract key routed by the data-plane load (registered beforehand, served by a backend).
    #[arg(long)]
    contract: String,
    /// A new write is sent every this many ms, each to a random surviving node.
    #[arg(long, default_value_t = 5)]
    write_every_ms: u64,
    /// Routed requests per second, spread over the surviving nodes.
    #[arg(long, default_value_t = 500)]
    data_rate: u64,
    /// Load time before the kill.
    #[arg(long, default_value_t = 1000)]
    before_ms: u64,
    /// Load time after the first acknowledged write that followed the kill.
    #[arg(long, default_value_t = 1000)]
    after_ms: u64,
    /// Stop waiting for a write to succeed after the kill after this long.
    #[arg(long, default_value_t = 10_000)]
    max_ms: u64,
    /// Client timeout of one write or routed request.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    #[arg(long, default_value = "failover")]
    tag: String,
}

#[derive(Debug, Clone)]
struct Node {
    id: u64,
    api: String,
    data: String,
    pid: u32,
}

fn parse_node(spec: &str) -> anyhow::Result<Node> {
    let parts = spec.split(',').collect::<Vec<_>>();
    anyhow::ensure!(parts.len() == 4, "--node wants id,api_url,data_url,pid, got {spec}");
    Ok(Node { id: parts[0].parse()?, api: parts[1].into(), data: parts[2].into(), pid: parts[3].parse()? })
}

/// The node that reports itself leader, asking every node, for up to 10 s.
async fn find_leader(http: &reqwest::Client, nodes: &[Node]) -> anyhow::Result<Node> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for node in nodes {
            let view = http.get(format!("{}/v1/cluster", node.api)).send().await;
            let Ok(view) = view else { continue };
            let Ok(view) = view.json::<Value>().await else { continue };
            if view["role"] == "leader" {
                return Ok(node.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no node reported itself leader within 10 s")
}

/// Timestamps shared between the load tasks and the trial driver.
#[derive(Debug, Default)]
struct Clock {
    /// Just before the kill was sent.
    kill_at: OnceLock<Instant>,
    /// Just after the kill returned; writes sent later count as "after the kill".
    killed: OnceLock<Instant>,
    /// Earliest acknowledgement of a write sent after the kill.
    first_ack: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

struct WriteOutcome {
    address: String,
    ok: bool,
}

struct RouteOutcome {
    at: Instant,
    ok: bool,
}

async fn one_write(http: reqwest::Client, url: String, body: Value, clock: Arc<Clock>) -> WriteOutcome {
    let address = body["address"].as_str().unwrap_or_default().to_string();
    let sent = Instant::now();
    let ok = http.post(url).json(&body).send().await.is_ok_and(|r| r.status().is_success());
    if ok && clock.killed.get().is_some_and(|k| sent >= *k) {
        let now = Instant::now();
        let mut first = clock.first_ack.lock().unwrap();
        *first = Some(first.map_or(now, |f| f.min(now)));
    }
    WriteOutcome { address, ok }
}

async fn one_route(http: reqwest::Client, url: String, contract: String) -> RouteOutcome {
    let ok =
        http.get(url).header("x-switchboard-contract", contract).send().await.is_ok_and(|r| r.status().is_success());
    RouteOutcome { at: Instant::now(), ok }
}

/// Sends writes every `every` to random survivors until told to stop.
async fn writer(
    http: reqwest::Client,
    survivors: Vec<Node>,
    every: Duration,
    namespace: String,
    clock: Arc<Clock>,
) -> Vec<tokio::task::JoinHandle<WriteOutcome>> {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::new();
    // Bounded: `stop` is set by the driver no later than `max_ms` after the kill.
    for seq in 0..1_000_000u64 {
        ticks.tick().await;
        if clock.stop.load(Ordering::Relaxed) {
            break;
        }
        let node = &survivors[fastrand::usize(..survivors.len())];
        let body = registration(format!("http://w{seq}.failover.invalid/"), &namespace, "IWrite");
        let url = format!("{}/v1/registrations", node.api);
        tasks.push(tokio::spawn(one_write(http.clone(), url, body, clock.clone())));
    }
    tasks
}

/// Sends routed requests at `rate` per second over the survivors until told to stop.
async fn router_load(
    http: reqwest::Client,
    survivors: Vec<Node>,
    rate: u64,
    contract: String,
    clock: Arc<Clock>,
) -> Vec<tokio::task::JoinHandle<RouteOutcome>> {
    const TICK_MS: u64 = 10;
    let per_tick = (rate * TICK_MS).div_ceil(1000).max(1);
    let mut ticks = tokio::time::interval(Duration::from_millis(TICK_MS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::new();
    let mut n = 0usize;
    for _ in 0..100_000u64 {
        ticks.tick().await;
        if clock.stop.load(Ordering::Relaxed) {
            break;
        }
        for _ in 0..per_tick {
            n += 1;
            let url = format!("{}/failover-probe", survivors[n % survivors.len()].data);
            tasks.push(tokio::spawn(one_route(http.clone(), url, contract.clone())));
        }
    }
    tasks
}

/// Polls the survivors until one of them says it leads; the time since `since`.
async fn new_leader_after(
    http: reqwest::Client,
    survivors: Vec<Node>,
    since: Instant,
    clock: Arc<Clock>,
) -> Option<f64> {
    while !clock.stop.load(Ordering::Relaxed) {
        for node in &survivors {
            let view = http.get(format!("{}/v1/cluster", node.api)).send().await;
            if let Ok(view) = view
                && let Ok(view) = view.json::<Value>().await
                && view["role"] == "leader"
            {
                return Some(ms(since.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Addresses registered under `namespace`/IWrite as a survivor sees them after a linearizable
/// read, every page of the list walked.
async fn registered_addresses(
    http: &reqwest::Client,
    survivor: &Node,
    namespace: &str,
) -> anyhow::Result<HashSet<String>> {
    let url = format!("{}/v1/registrations", survivor.api);
    let mut addresses = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![
            ("contract_namespace", namespace.to_owned()),
            ("contract_name", "IWrite".to_owned()),
            ("consistency", "linearizable".to_owned()),
            ("limit", "5000".to_owned()),
        ];
        query.extend(cursor.take().map(|c| ("cursor", c)));
        let page = registrations_page(http, &url, &query).await?;
        let items = page["registrations"].as_array().context("no registrations array")?;
        addresses.extend(items.iter().filter_map(|r| r["address"].as_str().map(str::to_string)));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(addresses),
        }
    }
}

/// One page of `GET /v1/registrations`, retried for a few seconds.
async fn registrations_page(http: &reqwest::Client, url: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
    let mut last_error = None;
    for _ in 0..20 {
        match http.get(url).query(query).send().await {
            Ok(r) if r.status().is_success() => return Ok(r.json::<Value>().await?),
            Ok(r) => last_error = Some(anyhow::anyhow!("status {}", r.status())),
            Err(e) => last_error = Some(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no answer")))
}

async fn failover(args: FailoverArgs) -> anyhow::Result<Value> {
    let nodes = args.nodes.iter().map(|s| parse_node(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let http = client(Duration::from_millis(args.timeout_ms))?;
    let leader = find_leader(&http, &nodes).await?;
    let survivors = nodes.iter().filter(|n| n.id != leader.id).cloned().collect::<Vec<_>>();
    anyhow::ensure!(!survivors.is_empty(), "nothing survives the leader");
    let namespace = format!("urn:bench:failover:{}", args.tag);
    let clock = Arc::new(Clock::default());

    let writes = tokio::spawn(writer(
        http.clone(),
        survivors.clone(),
        Duration::from_millis(args.write_every_ms),
        namespace.clone(),
        clock.clone(),
    ));
    let routes =
        tokio::spawn(router_load(http.clone(), survivors.clone(), args.data_rate, args.contract, clock.clone()));
    tokio::time::sleep(Duration::from_millis(args.before_ms)).await;

    // The kill: timestamps on both sides of it, so neither side flatters the result.
    let kill_at = Instant::now();
    clock.kill_at.set(kill_at).ok();
    let status = tokio::process::Command::new("kill").args(["-KILL", &leader.pid.to_string()]).status().await?;
    clock.killed.set(Instant::now()).ok();
    anyhow::ensure!(status.success(), "kill -KILL {} failed", leader.pid);
    let elected = tokio::spawn(new_leader_after(http.clone(), survivors.clone(), kill_at, clock.clone()));

    // Wait for the first acknowledged write sent after the kill, then keep the load a little longer.
    let give_up = kill_at + Duration::from_millis(args.max_ms);
    let first_ack = loop {
        let first = *clock.first_ack.lock().unwrap();
        if first.is_some() || Instant::now() > give_up {
            break first;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(Duration::from_millis(args.after_ms)).await;
    clock.stop.store(true, Ordering::Relaxed);

    let (mut writes_ok, mut writes_failed, mut acked) = (0u64, 0u64, Vec::new());
    for task in writes.await? {
        let outcome = task.await?;
        if outcome.ok {
            writes_ok += 1;
            acked.push(outcome.address);
        } else {
            writes_failed += 1;
        }
    }
    let (mut routed_ok, mut routed_failed, mut failed_at) = (0u64, 0u64, Vec::new());
    for task in routes.await? {
        let outcome = task.await?;
        if outcome.ok {
            routed_ok += 1;
        } else {
            routed_failed += 1;
            failed_at.push(outcome.at);
        }
    }
    let new_leader_ms = elected.await?;
    let present = registered_addresses(&http, &survivors[0], &namespace).await?;
    let lost = acked.iter().filter(|a| !present.contains(*a)).count();
    let window = match (failed_at.iter().min(), failed_at.iter().max()) {
        (Some(a), Some(b)) => ms(*b - *a),
        _ => 0.0,
    };
    Ok(json!({
        "killed_node": leader.id,
        "unavailability_ms": first_ack.map(|t| ms(t - kill_at)),
        "new_leader_ms": new_leader_ms,
        "writes_ok": writes_ok, "writes_failed": writes_failed, "acked_lost": lost,
        "routed_ok": routed_ok, "routed_failed": routed_failed, "routed_failure_window_ms": window,
    }))
}

// ---------------------------------------------------------------------------------------------
// compact

#[derive(Debug, clap::Args)]
struct CompactArgs {
    /// Control API base URLs of every node; writes go to the first.
    #[arg(long, value_delimiter = ',', required = true)]
    apis: Vec<String>,
    #[arg(long, default_value_t = 20_000)]
    max_writes: u64,
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
}

async fn cluster_views(http: &reqwest::Client, apis: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut views = Vec::new();
    for api in apis {
        views.push(http.get(format!("{api}/v1/cluster")).send().await?.error_for_status()?.json::<Value>().await?);
    }
    Ok(views)
}

/// Re-registers one fixed registration (one log entry each, no new state) until every node's
/// snapshot index reaches the highest log index seen at the start.
async fn compact(args: CompactArgs) -> anyhow::Result<Value> {
    let http = client(Duration::from_secs(10))?;
    let start = cluster_views(&http, &args.apis).await?;
    let target = start.iter().filter_map(|v| v["last_log_index"].as_u64()).max().context("no log index")?;
    let body = registration("http://compaction-tick.bench.invalid/".into(), "urn:bench:compact", "ITick");
    let url = format!("{}/v1/registrations", args.apis[0]);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut writes = 0;
    let covered = |views: &[Value]| views.iter().all(|v| v["snapshot_index"].as_u64().is_some_and(|i| i >= target));
    let mut views = start;
    while !covered(&views) {
        anyhow::ensure!(writes < args.max_writes && Instant::now() < deadline, "no snapshot after {writes} writes");
        for _ in 0..20 {
            http.post(&url).json(&body).send().await?.error_for_status()?;
            writes += 1;
        }
        views = cluster_views(&http, &args.apis).await?;
    }
    Ok(json!({"target_index": target, "writes": writes, "views": views}))
}

// ---------------------------------------------------------------------------------------------
// openloop

#[derive(Debug, clap::Args)]
struct OpenloopArgs {
    #[arg(long)]
    url: String,
    /// Requests per second, sent on schedule whatever the answers do.
    #[arg(long)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Extra request header `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

/// Each request's latency is measured from the moment the schedule said to send it, so a stall
/// of the server counts against every request it delays (no coordinated omission).
async fn openloop(args: OpenloopArgs) -> anyhow::Result<Value> {
    let http = client(Duration::from_secs(5))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for h in &args.headers {
        let (name, value) = h.split_once(':').context("--header wants `name: value`")?;
        headers.insert(reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())?, value.trim().parse()?);
    }
    let total = args.rate * args.seconds;
    let period = Duration::from_secs_f64(1.0 / args.rate as f64);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let request = http.get(&args.url).headers(headers.clone());
        tasks.push(tokio::spawn(async move {
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            (ok, ms(due.elapsed()))
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    for task in tasks {
        let (ok, took) = task.await?;
        if ok {
            latencies.push(took);
        } else {
            errors += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let latencies = sorted(latencies);
    Ok(json!({
        "rate": args.rate, "ok": latencies.len(), "errors": errors, "seconds": seconds,
        "p50_ms": quantile(&latencies, 0.5), "p99_ms": quantile(&latencies, 0.99),
        "p999_ms": quantile(&latencies, 0.999), "max_ms": quantile(&latencies, 1.0),
    }))
}

// ---------------------------------------------------------------------------------------------
// health (B10)

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// One node as `id,api_url,pid`; repeat for every node.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Endpoints: local listeners this tool opens, one registration each.
    #[arg(long)]
    count: usize,
    /// Endpoints closed at once for the kill-to-critical measure.
    #[arg(long, default_value_t = 100)]
    kill: usize,
    /// The endpoints' check interval.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// The stable window in which CPU, probes and log entries are measured.
    #[arg(long, default_value_t = 60)]
    window_s: u64,
    /// Give up after this long overall.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

struct HealthNode {
    id: u64,
    api: String,
    pid: u32,
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("node process {pid}"))?;
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    Ok(fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
}

/// GET of a URL on a loaded machine: a failed attempt is reported and retried for up to 10 s, so
/// one slow answer does not end a run; the last error ends it.
async fn get_retrying(http: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let err = match http.get(url).send().await.and_then(|response| response.error_for_status()) {
            Ok(response) => return Ok(response),
            Err(err) => err,
        };
        if Instant::now() >= give_up {
            return Err(err).with_context(|| format!("GET {url}"));
        }
        eprintln!("GET {url} failed ({err:#}); trying again");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn metric_of(http: &reqwest::Client, api: &str, prefix: &str) -> anyhow::Result<f64> {
    let url = format!("{api}/metrics");
    let text = get_retrying(http, &url).await?.text().await.with_context(|| format!("GET {url}"))?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum())
}

async fn applied_index_of(http: &reqwest::Client, api: &str) -> anyhow::Result<u64> {
    let url = format!("{api}/v1/registrations?limit=1");
    let page: Value = get_retrying(http, &url).await?.json().await.with_context(|| format!("GET {url}"))?;
    page["applied_index"].as_u64().ok_or_else(|| anyhow::anyhow!("GET {url}: no applied_index in {page}"))
}

async fn health(args: HealthArgs) -> anyhow::Result<Value> {
    let http = client(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let nodes: Vec<HealthNode> = args
        .nodes
        .iter()
        .map(|spec| {
            let parts: Vec<&str> = spec.split(',').collect();
            anyhow::ensure!(parts.len() == 3, "--node wants id,api_url,pid: {spec}");
            Ok(HealthNode { id: parts[0].parse()?, api: parts[1].to_owned(), pid: parts[2].parse()? })
        })
        .collect::<anyhow::Result<_>>()?;

    // The endpoints: listeners that accept and close. Each can be closed on its own.
    let mut listeners = Vec::with_capacity(args.count);
    for n in 0..args.count {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .with_context(|| format!("opening endpoint listener {n} of {}", args.count))?;
        let port = listener.local_addr()?.port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => if let Err(err) = accepted {
                        // Out of descriptors, say: a probe then fails, as it would in production.
                        eprintln!("endpoint {port}: accept failed: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    },
                    _ = &mut stopped => return,
                }
            }
        });
        listeners.push((port, stop));
    }
    let check = json!({"kind": "tcp", "interval_ms": args.interval_ms, "timeout_ms": 1000, "rise": 2, "fall": 3});
    let ports: Vec<u16> = listeners.iter().map(|(port, _)| *port).collect();
    let mut ids: Vec<String> = vec![String::new(); args.count];
    for chunk in (0..args.count).collect::<Vec<_>>().chunks(64) {
        let calls = chunk.iter().map(|&i| {
            let http = http.clone();
            let api = nodes[i % nodes.len()].api.clone();
            let mut body = registration(format!("http://127.0.0.1:{}/svc", ports[i]), "urn:bench:health", "IProbed");
            body["check"] = check.clone();
            async move {
                let url = format!("{api}/v1/registrations");
                let answer: Value = http
                    .post(&url)
                    .json(&body)
                    .send()
                    .await
                    .and_then(|response| response.error_for_status())
                    .with_context(|| format!("registering endpoint {i}: POST {url}"))?
                    .json()
                    .await?;
                let id = answer["id"].as_str().with_context(|| format!("POST {url}: no id in {answer}"))?;
                anyhow::Ok((i, id.to_owned()))
            }
        });
        for result in futures_util::future::join_all(calls).await {
            let (i, id) = result?;
            ids[i] = id;
        }
        anyhow::ensure!(Instant::now() < deadline, "registering took too long");
    }
    // Every endpoint taken by one prober.
    loop {
        let mut probed = 0.0;
        for node in &nodes {
            probed += metric_of(&http, &node.api, "switchboard_health_probed_endpoints").await?;
        }
        if probed as usize == args.count {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {probed} of {} endpoints are probed", args.count);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the first round of probes pass, then measure a stable window.
    tokio::time::sleep(Duration::from_millis(2 * args.interval_ms)).await;
    let probes = "switchboard_health_probes_total";
    let late = "switchboard_health_probes_late_total";
    let mut before = Vec::new();
    for node in &nodes {
        before.push((
            cpu_ticks(node.pid)?,
            metric_of(&http, &node.api, probes).await?,
            metric_of(&http, &node.api, late).await?,
        ));
    }
    let index_before = applied_index_of(&http, &nodes[0].api).await?;
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.window_s)).await;
    let window = window_start.elapsed().as_secs_f64();
    let index_after = applied_index_of(&http, &nodes[0].api).await?;
    let mut per_node = Vec::new();
    let (mut all_ticks, mut all_probes) = (0u64, 0.0);
    for (node, (ticks, count, late_before)) in nodes.iter().zip(before) {
        let ticks = cpu_ticks(node.pid)?.saturating_sub(ticks);
        let count = metric_of(&http, &node.api, probes).await? - count;
        let late = metric_of(&http, &node.api, late).await? - late_before;
        all_ticks += ticks;
        all_probes += count;
        per_node.push(json!({
            "id": node.id, "probes": count, "probes_per_s": count / window,
            "cpu_s": ticks as f64 / 100.0, "late": late,
        }));
    }
    let expected = args.count as f64 * window * 1000.0 / args.interval_ms as f64;

    // Kill-to-critical: close `kill` endpoints at once; per endpoint, the time until every node
    // lists it critical.
    let kill = args.kill.min(args.count);
    let killed: std::collections::HashMap<String, usize> = (0..kill).map(|i| (ids[i].clone(), i)).collect();
    let mut stops: Vec<_> = listeners.drain(..kill).map(|(_, stop)| stop).collect();
    let killed_at = Instant::now();
    for stop in stops.drain(..) {
        let _ = stop.send(());
    }
    let mut seen: Vec<std::collections::HashMap<String, Duration>> = vec![Default::default(); nodes.len()];
    let give_up = killed_at + Duration::from_secs(60);
    while seen.iter().any(|s| s.len() < kill) && Instant::now() < give_up {
        for (n, node) in nodes.iter().enumerate() {
            let url = format!("{}/v1/registrations?health=critical&limit=5000", node.api);
            let page: Value = get_retrying(&http, &url).await?.json().await.with_context(|| format!("GET {url}"))?;
            let now = killed_at.elapsed();
            for registration in page["registrations"].as_array().into_iter().flatten() {
                let id = registration["id"].as_str().unwrap_or_default();
                if killed.contains_key(id) {
                    seen[n].entry(id.to_owned()).or_insert(now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let everywhere: Vec<f64> = killed
        .keys()
        .filter_map(|id| seen.iter().map(|s| s.get(id).copied()).collect::<Option<Vec<_>>>())
        .map(|times| ms(times.into_iter().max().unwrap_or_default()))
        .collect();
    let everywhere = sorted(everywhere);
    let bound_ms = args.interval_ms as f64 * 3.0 + 1000.0 + 200.0;
    Ok(json!({
        "endpoints": args.count, "interval_ms": args.interval_ms, "window_s": window,
        "probes": all_probes, "probes_expected": expected,
        "cpu_us_per_probe": if all_probes > 0.0 { all_ticks as f64 * 10_000.0 / all_probes } else { 0.0 },
        "per_node": per_node,
        "log_entries_per_minute": index_after.saturating_sub(index_before) as f64 * 60.0 / window,
        "killed": kill, "critical_everywhere": everywhere.len(),
        "kill_to_critical_p50_ms": quantile(&everywhere, 0.5), "kill_to_critical_p99_ms": quantile(&everywhere, 0.99),
        "kill_to_critical_max_ms": quantile(&everywhere, 1.0), "bound_ms": bound_ms,
    }))
}
