//! Storage seen from outside: every acknowledged write was `fdatasync`ed first (observed with
//! strace), and data directories written by earlier builds open and serve.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::SystemTime;

use crate::harness::Options;
use crate::harness::TestCluster;
use crate::harness::eventually;

fn now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Start times (seconds since the epoch) of the syncs strace saw on files under `path_part`.
fn syncs_of(trace: &str, path_part: &str) -> Vec<f64> {
    trace
        .lines()
        .filter(|line| (line.contains("fdatasync(") || line.contains("fsync(")) && line.contains(path_part))
        .filter_map(|line| line.split_whitespace().find_map(|word| word.parse::<f64>().ok().filter(|t| *t > 1e9)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_write_was_fdatasynced_before_its_answer() {
    let cluster = TestCluster::start(1);
    cluster.wait_stable().await;
    let trace_path = cluster.dir().join("strace.txt");
    let pid = cluster.nodes[&1].pid().unwrap();
    let mut strace = Command::new("strace")
        .args(["-f", "-ttt", "-y", "-e", "trace=fdatasync,fsync", "-o"])
        .arg(&trace_path)
        .args(["-p", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace runs (scripts/test.sh installs it)");
    // strace is attached once the node's syncs show up in the trace.
    eventually("strace to attach", Duration::from_secs(20), || async {
        cluster.register(1, &format!("http://10.90.0.1:{}/", fastrand_port()), "urn:strace", "Warmup").await;
        std::fs::read_to_string(&trace_path).ok().filter(|t| !syncs_of(t, "/raft/db>").is_empty()).map(|_| ())
    })
    .await;

    let mut writes = Vec::new();
    for i in 0..30 {
        let sent = now();
        let (status, _) = cluster.register(1, &format!("http://10.90.1.{i}/"), "urn:strace", "C").await;
        assert_eq!(status, 201);
        writes.push((sent, now()));
    }
    Command::new("kill").args(["-INT", &strace.id().to_string()]).status().unwrap();
    strace.wait().unwrap();
    let trace = std::fs::read_to_string(&trace_path).unwrap();
    let syncs = syncs_of(&trace, "/raft/db>");
    for (i, (sent, acked)) in writes.iter().enumerate() {
        assert!(
            syncs.iter().any(|t| t >= sent && t <= acked),
            "write {i} (sent at {sent:.6}, acknowledged at {acked:.6}) had no fdatasync of the log's file in between"
        );
    }
    eprintln!(
        "figure: {} acknowledged writes, {} syncs of the log's file in the trace, every write preceded by one",
        writes.len(),
        syncs.len()
    );
}

/// Some port for a warm-up address, different on every call.
fn fastrand_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1000);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The operators' token of the fixtures' tokens file (`tests/fixtures/make-fixture.sh`).
const FIXTURE_OPS: &str = "fixture-ops-token-0123456789";
/// The runtime token the format 2 fixture holds (`read` scope).
const FIXTURE_READER: &str = "fixture-reader-token-0123456789";

/// Starts node 1 on a copy of a committed fixture directory, with the fixtures' tokens file, and
/// checks it serves the fixture's content (see `tests/fixtures/*/README.md`). Returns the running
/// node and the directory that holds its data.
/// Serves a fixture directory on one node and checks its registrations and policy (whose
/// `rewrite_to` is `rewrite_to`) through the API.
async fn serves_the_fixture(name: &str, rewrite_to: bool) -> (TestCluster, tempfile::TempDir) {
    let scratch = TestCluster::scratch();
    let data = scratch.path().join("node1");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).join("node1"), &data);
    let tokens = serde_json::json!({ "tokens": [
        { "name": "fixture-ops", "token": FIXTURE_OPS, "scopes": ["admin", "read", "register:*"] }
    ] });
    let options = Options {
        data_dirs: BTreeMap::from([(1, data)]),
        env: vec![("SWITCHBOARD_TOKENS".into(), tokens.to_string())],
        token: Some(FIXTURE_OPS.into()),
        ..Options::default()
    };
    let cluster = TestCluster::start_with(1, options);
    cluster.wait_stable().await;
    let mut expected: Vec<String> = (4..=25).map(|i| format!("http://10.9.0.{i}:8000/svc")).collect();
    expected.push("http://10.9.1.1:8000/leased".into());
    expected.sort();
    cluster.wait_addresses(1, &expected).await;
    let policies = cluster.get_json(&format!("{}/v1/policies", cluster.api(1))).await.unwrap();
    assert_eq!(policies["policies"][0]["policy"], "weighted", "{policies}");
    assert_eq!(policies["policies"][0]["rewrite_to"], rewrite_to, "{policies}");
    let (status, _) = cluster.register(1, "http://10.9.2.1/", "urn:after", "C").await;
    assert_eq!(status, 201, "the node takes writes");
    (cluster, scratch)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_format_0_is_migrated_and_served() {
    let (cluster, _data) = serves_the_fixture("data-v0", true).await;
    assert!(cluster.log(1).contains("migrated from format 0"), "the migration is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_format_1_is_served() {
    let (cluster, _data) = serves_the_fixture("data-v1", true).await;
    let log = cluster.log(1);
    assert!(!log.contains("migrated"));
    assert!(log.contains("data directory format upgraded in place"), "the directory is marked format 4");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_format_2_is_served_with_its_tokens_and_policy_and_marked_format_4() {
    let (cluster, _data) = serves_the_fixture("data-v2", true).await;
    let log = cluster.log(1);
    assert!(!log.contains("migrated") && log.contains("data directory format upgraded in place"));
    // The runtime tokens the directory holds: one active, one revoked.
    let list = cluster.get_json(&format!("{}/v1/tokens", cluster.api(1))).await.expect("the token list");
    let state = |name: &str| {
        list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| (t["source"].clone(), t["state"].clone()))
    };
    assert_eq!(state("fixture-reader"), Some(("api".into(), "active".into())), "{list}");
    assert_eq!(state("fixture-revoked"), Some(("api".into(), "revoked".into())), "{list}");
    // The active one is honoured with its scope: it reads, and may not write.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = cluster.api(1);
    let read = http.get(format!("{api}/v1/registrations")).bearer_auth(FIXTURE_READER).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let body =
        serde_json::json!({ "address": "http://10.9.3.1/", "contract_namespace": "urn:after", "contract_name": "C" });
    let write =
        http.post(format!("{api}/v1/registrations")).bearer_auth(FIXTURE_READER).json(&body).send().await.unwrap();
    assert_eq!(write.status(), 403, "a read token may not register");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_format_3_is_served_with_its_policy_keeping_to_and_marked_format_4() {
    let (cluster, _data) = serves_the_fixture("data-v3", false).await;
    let log = cluster.log(1);
    assert!(!log.contains("migrated") && log.contains("data directory format upgraded in place"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_format_stops_the_node_with_one_line() {
    let scratch = TestCluster::scratch();
    let data = scratch.path().join("node1");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data-v1/node1"), &data);
    // A build from the future wrote this directory: its format record says 5.
    {
        let db = sled::open(data.join("raft")).unwrap();
        db.open_tree("raft.meta").unwrap().insert("format", vec![5u8]).unwrap();
        db.flush().unwrap();
    }
    let status = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--node-id", "1", "--peers", "1=127.0.0.1:1", "--cluster-secret", "0123456789abcdef0123"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--data-addr", "127.0.0.1:0", "--api-addr", "127.0.0.2:0", "--peer-addr", "127.0.0.3:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(!status.status.success());
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("format version 5") && last.contains("raft"), "{stderr}");
}
