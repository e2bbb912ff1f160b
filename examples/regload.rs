//! Registration load generator for benchmarks: N concurrent clients register unique addresses
//! for a fixed time against one or more control API endpoints and report the rate and latency.
//!
//! `cargo run --release --example regload -- --targets http://127.0.0.1:7021 --clients 64 --seconds 10`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark tools: a failed step ends the run

use std::time::Duration;
use std::time::Instant;

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Control API base URLs, comma-separated; clients are spread over them.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Distinguishes runs so addresses never repeat across runs.
    #[arg(long, default_value = "run")]
    tag: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.targets.is_empty(), "--targets is required");
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().pool_max_idle_per_host(1024).build()?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in 0..args.clients {
        let http = http.clone();
        let target = args.targets[client % args.targets.len()].clone();
        let tag = args.tag.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let body = serde_json::json!({
                    "address": format!("http://bench-{tag}-{client}-{i}.invalid/"),
                    "contract_name": "IBench",
                    "contract_namespace": "urn:bench",
                });
                let sent = Instant::now();
                match http.post(format!("{target}/v1/registrations")).json(&body).send().await {
                    Ok(response) if response.status().is_success() => latencies.push(sent.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut l, e) = worker.await?;
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pick = |q: f64| {
        latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let report = serde_json::json!({
        "clients": args.clients,
        "ok": latencies.len(),
        "errors": errors,
        "seconds": elapsed,
        "per_second": latencies.len() as f64 / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "max_ms": pick(1.0),
    });
    println!("{report}");
    Ok(())
}
