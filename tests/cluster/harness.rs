//! Test harness: real `switchboard serve` processes on free loopback ports with temp data
//! directories. Waits poll with a deadline; children are killed when the harness is dropped, and
//! their logs are printed if the test failed.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use serde_json::Value;
use serde_json::json;

pub const SECRET: &str = "test-cluster-secret-0123456789";

/// Polls `probe` every 20 ms until it yields `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a write that is safe to repeat (a registration is idempotent) until the cluster
/// acknowledges it, as a client should: again after `503` (no leader yet) or `504` (the outcome
/// is unknown), for at most a minute. Returns the acknowledging status; panics on a refusal.
pub async fn write_until_acknowledged(http: &reqwest::Client, url: &str, body: &Value) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = http.post(url).json(body).timeout(Duration::from_secs(30)).send().await;
        let status = sent.as_ref().map(|r| r.status().as_u16());
        match status {
            Ok(status) if (200..300).contains(&status) => return status,
            Ok(503 | 504) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("{url}: {status:?} for {body}"),
        }
    }
}

/// Ports the tests hand to nodes: below the kernel's ephemeral range (32768 and up), so no
/// port-0 bind (sample services, test backends) and no outgoing connection can take one between
/// the pick and the node's own bind.
const TEST_PORTS: std::ops::Range<usize> = 21_000..32_000;

/// A free loopback port for a node. Each test process walks the range from its own starting
/// point, so the tests running in parallel in it never get the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let span = TEST_PORTS.end - TEST_PORTS.start;
    let start = std::process::id() as usize * 97;
    loop {
        let port = (TEST_PORTS.start + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub data: u16,
    pub api: u16,
    pub peer: u16,
    /// The separate health listener (`--health-addr`).
    pub health: u16,
}

impl Ports {
    /// Four free ports.
    pub fn free() -> Self {
        Self { data: free_port(), api: free_port(), peer: free_port(), health: free_port() }
    }
}

pub struct TestNode {
    pub id: u64,
    pub ports: Ports,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
}

pub struct TestCluster {
    pub nodes: BTreeMap<u64, TestNode>,
    peers: String,
    dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// How a test cluster is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Extra flags for every node, e.g. `--snapshot-every 50`.
    pub args: Vec<String>,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
    /// Token the harness's own client sends (`Authorization: Bearer`).
    pub token: Option<String>,
    /// Data directories of some nodes, instead of one in the cluster's temp directory.
    pub data_dirs: BTreeMap<u64, PathBuf>,
    /// Extra flags for some nodes only.
    pub node_args: BTreeMap<u64, Vec<String>>,
}

impl TestNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl TestCluster {
    /// A temp directory that lives as long as the cluster (for certificates, token files).
    pub fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("switchboard-test-files").tempdir().unwrap()
    }

    /// Starts `n` nodes that bootstrap together.
    pub fn start(n: u64) -> Self {
        Self::start_with(n, Options::default())
    }

    pub fn start_with(n: u64, options: Options) -> Self {
        let dir = tempfile::Builder::new().prefix("switchboard-test").tempdir().unwrap();
        let ports: BTreeMap<u64, Ports> = (1..=n).map(|id| (id, Ports::free())).collect();
        let peers = ports.iter().map(|(id, p)| format!("{id}=127.0.0.1:{}", p.peer)).collect::<Vec<_>>().join(",");
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &options.token {
            headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .default_headers(headers)
            .build()
            .unwrap();
        let mut cluster = Self { nodes: BTreeMap::new(), peers, dir, http };
        for (id, ports) in ports {
            let mut args = options.args.clone();
            args.extend(options.node_args.get(&id).cloned().unwrap_or_default());
            cluster.add_process(id, ports, args);
            let node = cluster.nodes.get_mut(&id).unwrap();
            node.extra_env = options.env.clone();
            if let Some(dir) = options.data_dirs.get(&id) {
                node.data_dir = dir.clone();
            }
            cluster.start_node(id);
        }
        cluster
    }

    /// Registers a node process that is not among the initial voters (not started yet).
    pub fn add_process(&mut self, id: u64, ports: Ports, extra_args: Vec<String>) {
        let data_dir = self.dir.path().join(format!("node{id}"));
        let log_path = self.dir.path().join(format!("node{id}.log"));
        self.nodes
            .insert(id, TestNode { id, ports, data_dir, log_path, child: None, extra_args, extra_env: Vec::new() });
    }

    pub fn start_node(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--data-addr", &format!("127.0.0.1:{}", node.ports.data)])
            .args(["--api-addr", &format!("127.0.0.1:{}", node.ports.api)])
            .args(["--peer-addr", &format!("127.0.0.1:{}", node.ports.peer)])
            .args(["--health-addr", &format!("127.0.0.1:{}", node.ports.health)])
            .args(["--peers", &self.peers])
            .args(&node.extra_args)
            .envs(node.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SWITCHBOARD_CLUSTER_SECRET", SECRET)
            // SWITCHBOARD_TEST_LOG sets the nodes' log filter when a failure needs more detail.
            .env(
                "RUST_LOG",
                std::env::var("SWITCHBOARD_TEST_LOG")
                    .unwrap_or_else(|_| switchboard::telemetry::DEFAULT_FILTER.to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("switchboard starts");
        node.child = Some(child);
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        if let Some(mut child) = node.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGSTOP: the process freezes, as a stalled machine would.
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGTERM: the node drains (not ready for `--drain-ms`), then stops.
    pub fn terminate_node(&self, id: u64) {
        self.signal(id, "-TERM");
    }

    /// SIGCONT after [`TestCluster::pause`].
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, signal: &str) {
        let pid = self.nodes[&id].pid().expect("the node is running");
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// The exit status of a node whose process ended on its own, if it did.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id).unwrap();
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        Some(status)
    }

    /// Deletes a stopped node's data directory.
    pub fn wipe(&mut self, id: u64) {
        let node = &self.nodes[&id];
        assert!(node.child.is_none(), "stop node {id} before wiping it");
        std::fs::remove_dir_all(&node.data_dir).ok();
    }

    /// Every node's view of who leads: `(node, role, leader_id)` of the running nodes that answer.
    pub async fn roles(&self) -> Vec<(u64, String, Option<u64>)> {
        let mut roles = Vec::new();
        for id in self.running() {
            if let Some(view) = self.cluster_view(id).await {
                roles.push((id, view["role"].as_str().unwrap_or("").to_owned(), view["leader_id"].as_u64()));
            }
        }
        roles
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.child.is_some()).map(|n| n.id).collect()
    }

    pub fn api(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].ports.api)
    }

    pub fn data(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].ports.data)
    }

    pub fn peer(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.nodes[&id].ports.peer)
    }

    /// A short timeout: polls of a paused or overloaded node give up and poll again.
    pub async fn get_json(&self, url: &str) -> Option<Value> {
        self.get_json_within(url, Duration::from_secs(2)).await
    }

    pub async fn get_json_within(&self, url: &str, timeout: Duration) -> Option<Value> {
        let response = self.http.get(url).timeout(timeout).send().await.ok()?;
        response.json().await.ok()
    }

    pub async fn cluster_view(&self, id: u64) -> Option<Value> {
        self.get_json(&format!("{}/v1/cluster", self.api(id))).await
    }

    /// Waits until every running node is ready and agrees on one leader; returns it.
    pub async fn wait_stable(&self) -> u64 {
        let running = self.running();
        eventually("a leader known and ready on every running node", Duration::from_secs(30), || async {
            let mut leader = None;
            for &id in &running {
                let ready = self.http.get(format!("{}/health/ready", self.api(id))).send().await.ok()?;
                if !ready.status().is_success() {
                    return None;
                }
                let view = self.cluster_view(id).await?;
                let this = view["leader_id"].as_u64()?;
                if leader.is_some_and(|l| l != this) {
                    return None;
                }
                leader = Some(this);
            }
            leader.filter(|l| running.contains(l))
        })
        .await
    }

    /// Registers through node `via`; returns the status and body.
    pub async fn register(&self, via: u64, address: &str, namespace: &str, name: &str) -> (u16, Value) {
        let body = json!({ "address": address, "contract_namespace": namespace, "contract_name": name });
        self.post_json(via, "/v1/registrations", &body).await
    }

    pub async fn post_json(&self, via: u64, path: &str, body: &Value) -> (u16, Value) {
        let response =
            self.http.post(format!("{}{path}", self.api(via))).json(body).send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sets a contract's policy through node `via` and waits until every running node applied
    /// exactly the policy it answered.
    pub async fn set_policy(&self, via: u64, body: Value) -> Value {
        let response = self.http.put(format!("{}/v1/policies", self.api(via))).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200, "{body}");
        let set: Value = response.json().await.unwrap();
        for node in self.running() {
            eventually("the policy on every node", Duration::from_secs(10), || async {
                let list = self.get_json(&format!("{}/v1/policies", self.api(node))).await?;
                let found = list["policies"].as_array()?.iter().find(|p| p["contract"] == set["contract"])?;
                (*found == set).then_some(())
            })
            .await;
        }
        set
    }

    /// A membership change as the operator makes it in dev mode: with the cluster secret.
    pub async fn as_operator(&self, method: &str, via: u64, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.api(via))).bearer_auth(SECRET);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.timeout(Duration::from_secs(30)).send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers every address for one contract and waits until all nodes can route to them.
    pub async fn register_all(&self, via: u64, namespace: &str, name: &str, addresses: &[String]) {
        for address in addresses {
            let (status, body) = self.register(via, address, namespace, name).await;
            assert!(status == 201 || status == 200, "{status} {body}");
        }
        let key = format!("{}/{name}", namespace.strip_suffix('/').unwrap_or(namespace));
        for node in self.running() {
            eventually(&format!("node {node} to route {key}"), Duration::from_secs(20), || async {
                let list = self.list_all(node).await?;
                let count = list
                    .iter()
                    .filter(|r| {
                        format!(
                            "{}/{}",
                            r["contract_namespace"].as_str().unwrap().trim_end_matches('/'),
                            r["contract_name"].as_str().unwrap()
                        ) == key
                    })
                    .count();
                (count >= addresses.len()).then_some(())
            })
            .await;
        }
    }

    /// Every registration on node `id`, from its local replica, page by page.
    pub async fn list_all(&self, id: u64) -> Option<Vec<Value>> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/registrations?limit=5000", self.api(id));
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            // A page of 5,000 large registrations takes a debug build a while on a busy machine.
            let page = self.get_json_within(&url, Duration::from_secs(20)).await?;
            all.extend(page["registrations"].as_array()?.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Some(all),
            }
        }
    }

    /// Addresses registered on node `id`, from its local replica (sorted).
    pub async fn addresses(&self, id: u64) -> Option<Vec<String>> {
        let list = self.list_all(id).await?;
        let mut addresses: Vec<String> = list.iter().map(|r| r["address"].as_str().unwrap().to_owned()).collect();
        addresses.sort();
        Some(addresses)
    }

    /// Waits until node `id` lists exactly `expected` (sorted).
    pub async fn wait_addresses(&self, id: u64, expected: &[String]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self.addresses(id).await;
            if found.as_deref() == Some(expected) {
                return;
            }
            if Instant::now() > deadline {
                for node in self.running() {
                    eprintln!("node {node} view: {:?}", self.cluster_view(node).await);
                }
                panic!(
                    "node {id} lists {:?} registrations, not the expected {}",
                    found.map(|f| f.len()),
                    expected.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running node lists exactly `expected` plus `barrier`, a registration the
    /// test made (and saw acknowledged) after everything it expects to have changed nothing. The
    /// log is applied in order, so a node that lists the barrier has applied every write proposed
    /// before it: a refused write that was applied anyway cannot hide behind a lucky first poll.
    pub async fn wait_exactly_behind(&self, barrier: &str, expected: &[String]) {
        let mut expected = expected.to_vec();
        expected.push(barrier.to_owned());
        expected.sort();
        for node in self.running() {
            self.wait_addresses(node, &expected).await;
        }
    }

    /// Node `id` as node `via` lists it among the members: `(role, incarnation)`.
    pub async fn membership_of(&self, via: u64, id: u64) -> Option<(String, Option<String>)> {
        let view = self.cluster_view(via).await?;
        let member = view["members"].as_array()?.iter().find(|m| m["id"] == id)?;
        Some((member["role"].as_str()?.to_owned(), member["incarnation"].as_str().map(str::to_owned)))
    }

    /// Waits until the leader lists node `id` as a voter with an incarnation other than `old`: the
    /// node that lost its data was re-admitted, not merely still listed under the incarnation it
    /// lost. Returns the new incarnation.
    pub async fn wait_readmitted_voter(&self, id: u64, old: Option<&str>) -> String {
        eventually(&format!("node {id} a voter again under a new incarnation"), Duration::from_secs(60), || async {
            for via in self.running() {
                let Some(view) = self.cluster_view(via).await else { continue };
                if view["role"] != "leader" {
                    continue;
                }
                let member = view["members"].as_array()?.iter().find(|m| m["id"] == id)?;
                let incarnation = member["incarnation"].as_str()?;
                return (member["role"] == "voter" && Some(incarnation) != old).then(|| incarnation.to_owned());
            }
            None
        })
        .await
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn apis(&self) -> Vec<String> {
        self.running().into_iter().map(|id| self.api(id)).collect()
    }

    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(&self.nodes[&id].log_path).unwrap_or_default()
    }
}

/// A `switchboard sample` process registered with a test cluster.
pub struct TestSample {
    pub instance: String,
    /// `http://127.0.0.1:port`, without a path.
    pub base: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl TestSample {
    /// Starts a sample service registering through the given control API URLs; returns once it
    /// has registered.
    pub async fn start(dir: &std::path::Path, instance: &str, routers: &[String], ttl_ms: u64) -> Self {
        let log_path = dir.join(format!("{instance}.log"));
        let stdout_path = dir.join(format!("{instance}.out"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("sample")
            .args(["--routers", &routers.join(",")])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--instance", instance])
            .args(["--ttl-ms", &ttl_ms.to_string()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(log)
            .spawn()
            .expect("sample starts");
        let mut sample = Self { instance: instance.to_owned(), base: String::new(), child: Some(child), log_path };
        sample.base = eventually(&format!("{instance} to register"), Duration::from_secs(20), || async {
            let out = std::fs::read_to_string(&stdout_path).ok()?;
            out.lines().find_map(|line| line.split_once(" listening on ").map(|(_, base)| base.trim().to_owned()))
        })
        .await;
        sample
    }

    /// SIGKILL: no unregistering, no more heartbeats.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGTERM: drains, unregisters, exits. Waits for the exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill").args(["-TERM", &child.id().to_string()]).status().ok();
            child.wait().ok();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for TestSample {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("===== {} log =====\n{}", self.instance, self.log());
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.kill(*id);
        }
        if std::thread::panicking() {
            for id in ids {
                let log = self.log(id);
                let tail: Vec<&str> = log.lines().rev().take(150).collect();
                eprintln!("===== node {id} log (last {} lines) =====", tail.len());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}
