//! The command line that operates a cluster (`switchboard registrations|cluster|policies|audit|
//! explain|watch|completions`), run as a process against real clusters: what each verb prints in both
//! output forms, and its exit code (0 done, 1 refused, 2 usage, 3 unreachable) with its one line.

use std::time::Duration;

use serde_json::Value;
use serde_json::json;

use crate::backend::Backend;
use crate::harness::Options;
use crate::harness::Ports;
use crate::harness::SECRET;
use crate::harness::TestCluster;
use crate::harness::eventually;
use crate::harness::free_port;
use crate::security::Pki;

/// What one run of the command line did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and parses stdout as one JSON document.
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    /// Asserts success and returns stdout.
    fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        &self.stdout
    }

    /// Asserts the exit code and exactly one line on stderr; returns the line.
    fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "stdout: {}\nstderr: {}", self.stdout, self.stderr);
        assert_eq!(self.stderr.trim_end().lines().count(), 1, "one line: {}", self.stderr);
        self.stderr.trim_end()
    }
}

/// Runs `switchboard ARGS` with nothing from this process's environment.
async fn ctl(args: &[&str]) -> Run {
    let output =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).env_clear().output().await.unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `args` against the control API at `addr`, with `--output json`.
async fn ctl_json(addr: &str, args: &[&str]) -> Value {
    ctl(&[args, &["--addr", addr, "--output", "json"]].concat()).await.json()
}

/// The value of `field` in a record printed as `field  value` lines.
fn field(record: &str, name: &str) -> Option<String> {
    record.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix("  ").map(|value| value.trim().to_owned()))
}

/// JSON lines, parsed.
fn json_lines(run: &Run) -> Vec<Value> {
    run.ok().lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
}

/// The character offset of each header word in a table's first line; asserts that every row has
/// a cell starting exactly there (after a blank), so that the columns line up.
fn assert_aligned(table: &str, header: &[&str]) {
    let mut lines = table.lines();
    let first = lines.next().unwrap();
    let offsets: Vec<usize> =
        header.iter().map(|word| first.find(word).unwrap_or_else(|| panic!("{word} in {first}"))).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "header in order: {first}");
    for line in lines.filter(|l| !l.is_empty()) {
        for &offset in &offsets[1..] {
            let before = line.chars().nth(offset - 1);
            let at = line.chars().nth(offset);
            assert!(before == Some(' ') && at.is_some_and(|c| c != ' '), "column at {offset} in {line:?}\n{table}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_exits_2_an_address_nobody_listens_on_exits_3_and_completions_print_a_script() {
    let nobody = format!("http://127.0.0.1:{}", free_port());
    for args in [
        vec!["registrations", "register", "--address", "http://a/"],
        vec!["registrations", "register", "--address", "http://a/", "--contract", "urn:a/C", "--meta", "novalue"],
        vec!["registrations", "register", "--address", "http://a/", "--contract", "nokey"],
        vec!["registrations", "register", "--address", "http://a/", "--contract", "urn:a/C", "--ttl", "soon"],
        vec!["registrations", "unregister"],
        vec!["registrations", "unregister", "--address", "http://a/"],
        vec!["registrations"],
        vec!["cluster", "add-node", "x", "h:1"],
        vec!["policies", "set", "--contract", "urn:a/C"],
        vec!["policies", "set", "--contract", "urn:a/C", "--policy", "sideways"],
        vec!["explain"],
        vec!["audit", "--limit", "0"],
        vec!["cluster", "status", "--output", "yaml"],
        vec!["completions", "tcsh"],
    ] {
        let run = ctl(&[&args[..], &["--addr", &nobody]].concat()).await;
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{args:?}: {}", run.stderr);
    }

    // Nobody listens: exit 3, one line naming the failure, within the client's three rounds.
    let started = std::time::Instant::now();
    for args in [
        vec!["cluster", "status"],
        vec!["registrations", "list"],
        vec!["registrations", "get", "00000000000000000000000000000000"],
        vec!["policies", "get"],
        vec!["audit"],
    ] {
        let line = ctl(&[&args[..], &["--addr", &format!("{nobody},{nobody}/")]].concat()).await.failed(3).to_owned();
        assert!(line.starts_with("error: unreachable:") && line.contains("refused"), "{args:?}: {line}");
    }
    let line = ctl(&["explain", "--contract", "urn:a/C", "--data-addr", &nobody]).await.failed(3).to_owned();
    assert!(line.contains("unreachable"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(30), "unreachable is told fast: {:?}", started.elapsed());

    for (shell, needle) in
        [("bash", "complete -F"), ("zsh", "#compdef switchboard"), ("fish", "complete -c switchboard")]
    {
        let run = ctl(&["completions", shell]).await;
        let script = run.ok();
        assert!(script.contains(needle), "{shell}: {}", &script[..script.len().min(200)]);
        assert!(script.contains("registrations") && script.contains("add-node"), "{shell} completes the verbs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_verb_in_dev_mode_prints_tables_and_the_servers_json_and_refusals_exit_1_with_the_code() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_stable().await;
    let api = cluster.api(1);
    let addr = api.as_str();
    let backends = [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await];

    // register: repeated metadata, a lease and a weight; the server's JSON, and a table.
    let first = ctl_json(
        addr,
        &[
            "registrations",
            "register",
            "--address",
            &backends[0].url(),
            "--contract",
            "urn:ctl/IEcho",
            "--ttl",
            "30s",
            "--weight",
            "3",
            "--meta",
            "zone=a",
            "--meta",
            "rack=r1=x",
            "--check",
            "none",
        ],
    )
    .await;
    assert_eq!((first["address"].as_str(), first["weight"].as_u64()), (Some(backends[0].url().as_str()), Some(3)));
    assert_eq!(first["ttl_ms"], 30_000);
    assert_eq!(first["metadata"], json!({ "zone": "a", "rack": "r1=x" }));
    let id = first["id"].as_str().unwrap().to_owned();
    for backend in &backends[1..] {
        let run = ctl(&[
            "registrations",
            "register",
            "--address",
            &backend.url(),
            "--contract",
            "urn:ctl/IEcho",
            "--addr",
            addr,
        ])
        .await;
        assert_eq!(field(run.ok(), "result").as_deref(), Some("registered"), "{}", run.stdout);
    }
    let again = ctl(&[
        "registrations",
        "register",
        "--address",
        &backends[1].url(),
        "--contract",
        "urn:ctl/IEcho",
        "--addr",
        addr,
    ])
    .await;
    assert_eq!(field(again.ok(), "result").as_deref(), Some("already registered; options refreshed"));
    assert_eq!(field(&again.stdout, "contract").as_deref(), Some("urn:ctl/IEcho"));

    // list: every page streamed; JSON lines, one registration a line; a table with aligned columns.
    let run = ctl(&[
        "registrations",
        "list",
        "--contract",
        "urn:ctl/IEcho",
        "--page-size",
        "1",
        "--consistent",
        "--addr",
        addr,
        "--output",
        "json",
    ])
    .await;
    let listed = json_lines(&run);
    assert_eq!(listed.len(), 3, "three pages of one: {}", run.stdout);
    let mut addresses: Vec<&str> = listed.iter().map(|r| r["address"].as_str().unwrap()).collect();
    addresses.sort();
    let mut expected: Vec<String> = backends.iter().map(Backend::url).collect();
    expected.sort();
    assert_eq!(addresses, expected);
    assert!(listed.iter().all(|r| r["health"]["status"] == "passing" && r["check"]["kind"].is_string()));
    let table = ctl(&["registrations", "list", "--page-size", "2", "--addr", addr]).await;
    let header = ["ID", "CONTRACT", "ADDRESS", "HEALTH", "STATE", "WEIGHT", "TTL"];
    assert_aligned(table.ok(), &header);
    assert_eq!(table.stdout.lines().count(), 4, "a header and three rows over two pages: {}", table.stdout);
    assert!(
        table.stdout.lines().any(|l| l.starts_with(&id) && l.contains("30s") && l.contains("passing")),
        "{}",
        table.stdout
    );
    let passing = ctl(&["registrations", "list", "--health", "passing", "--addr", addr, "--output", "json"]).await;
    assert_eq!(json_lines(&passing).len(), 3);
    let critical = ctl(&["registrations", "list", "--health", "critical", "--addr", addr, "--output", "json"]).await;
    assert_eq!(critical.ok(), "", "no critical registration");
    let other = ctl(&["registrations", "list", "--contract", "urn:other/X", "--addr", addr]).await;
    assert_eq!(other.ok().lines().count(), 1, "only the header: {}", other.stdout);

    // get: JSON and the record form; an unknown id is refused with the server's code.
    let shown = ctl_json(addr, &["registrations", "get", &id]).await;
    assert_eq!((shown["id"].as_str(), shown["health"]["status"].as_str()), (Some(id.as_str()), Some("passing")));
    assert_eq!(shown["check"]["kind"], "none", "the check registered with it");
    let record = ctl(&["registrations", "get", &id, "--addr", addr]).await;
    let record = record.ok();
    assert_eq!(field(record, "id"), Some(id.clone()), "{record}");
    assert_eq!(field(record, "health").as_deref(), Some("passing"), "{record}");
    assert_eq!(field(record, "metadata").as_deref(), Some("rack=r1=x, zone=a"), "{record}");
    let line = ctl(&["registrations", "get", &"0".repeat(32), "--addr", addr]).await.failed(1).to_owned();
    assert!(line.starts_with("error: 404 registration_not_found: "), "{line}");
    let line = ctl(&["registrations", "get", "nope", "--addr", addr]).await.failed(1).to_owned();
    assert!(line.starts_with("error: 400 invalid_id: "), "{line}");
    // A first address nobody listens on is skipped for the next.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let via_second = ctl_json(&format!("{nobody},{api}"), &["registrations", "get", &id]).await;
    assert_eq!(via_second["id"], id);

    // explain: a dry run on the data plane decides and answers; no endpoint receives anything.
    let data = cluster.data(2);
    let decision =
        ctl(&["explain", "--contract", "urn:ctl/IEcho", "--path", "/x", "--data-addr", &data, "--output", "json"])
            .await
            .json();
    assert_eq!(
        (decision["contract"].as_str(), decision["source"].as_str()),
        (Some("urn:ctl/IEcho"), Some("x-switchboard-contract"))
    );
    assert_eq!((decision["policy"].as_str(), decision["endpoints"].as_u64()), (Some("round_robin"), Some(3)));
    let endpoint = decision["endpoint"].as_str().unwrap().to_owned();
    assert!(expected.contains(&endpoint), "{decision}");
    assert_eq!(decision["candidates"][0], endpoint.as_str(), "the pick is tried first");
    assert_eq!(decision["target"], format!("{endpoint}x"));
    // A dry run takes nothing from the rotation: asked again, the same endpoint.
    let again = ctl(&["explain", "--contract", "urn:ctl/IEcho", "--data-addr", &data, "--output", "json"]).await.json();
    assert_eq!(again["endpoint"], endpoint.as_str());
    let by_action =
        ctl(&["explain", "--soap-action", "urn:ctl/IEcho/Ping", "--data-addr", &data, "--output", "json"]).await.json();
    assert_eq!(
        (by_action["contract"].as_str(), by_action["source"].as_str()),
        (Some("urn:ctl/IEcho"), Some("soapaction"))
    );
    assert_eq!(by_action["to"], "absent");
    let file = cluster.dir().join("request.xml");
    let envelope = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Ping xmlns="urn:ctl"/></s:Body></s:Envelope>"#;
    std::fs::write(&file, envelope).unwrap();
    let by_body = ctl(&["explain", "--file", file.to_str().unwrap(), "--data-addr", &data]).await;
    let text = by_body.ok();
    for (name, value) in [("contract", "urn:ctl/IEcho"), ("decided by", "body-namespace"), ("policy", "round_robin")] {
        assert_eq!(field(text, name).as_deref(), Some(value), "{text}");
    }
    assert!(expected.contains(&field(text, "endpoint").unwrap()), "{text}");
    assert!(backends.iter().all(|b| b.hits() == 0), "a dry run reaches no endpoint");
    let line = ctl(&["explain", "--contract", "urn:none/X", "--data-addr", &data]).await.failed(1).to_owned();
    assert!(line.starts_with("error: 404 contract_not_found: "), "{line}");
    let line = ctl(&["explain", "--soap-action", "urn:none/X/Op", "--data-addr", &data]).await.failed(1).to_owned();
    assert!(
        line.contains("contract_not_found") || line.contains("invalid_envelope"),
        "a SOAP fault told as one line: {line}"
    );

    // policies: set by flags and by file, shown as the server answers and as a table.
    let set = ctl_json(
        addr,
        &[
            "policies",
            "set",
            "--contract",
            "urn:ctl/IEcho",
            "--policy",
            "consistent_hash",
            "--hash-header",
            "X-User",
            "--idempotent",
            "--panic-threshold",
            "20",
            "--check",
            "http:/healthz",
            "--check-interval",
            "5s",
        ],
    )
    .await;
    assert_eq!((set["contract"].as_str(), set["policy"].as_str()), (Some("urn:ctl/IEcho"), Some("consistent_hash")));
    assert_eq!((set["hash_header"].as_str(), set["idempotent"].as_bool()), (Some("x-user"), Some(true)));
    assert_eq!((set["panic_threshold_percent"].as_u64(), set["check"]["path"].as_str()), (Some(20), Some("/healthz")));
    assert_eq!(set["check"]["interval_ms"], 5_000);
    let policy_file = cluster.dir().join("policy.json");
    let policy = json!({ "contract_namespace": "urn:ctl2", "contract_name": "IOther", "policy": "weighted", "rewrite_to": false });
    std::fs::write(&policy_file, policy.to_string()).unwrap();
    let run = ctl(&["policies", "set", "--file", policy_file.to_str().unwrap(), "--addr", addr]).await;
    assert_aligned(
        run.ok(),
        &["CONTRACT", "POLICY", "HASH HEADER", "IDEMPOTENT", "REWRITE TO", "PANIC BELOW", "CHECK"],
    );
    assert!(run.stdout.contains("urn:ctl2/IOther") && run.stdout.contains("weighted"), "{}", run.stdout);
    let line = ctl(&["policies", "set", "--contract", "urn:ctl/IEcho", "--policy", "consistent_hash", "--addr", addr])
        .await
        .failed(1)
        .to_owned();
    assert!(line.starts_with("error: 400 invalid_policy: "), "{line}");
    let one = eventually("the policy on node 3", Duration::from_secs(10), || async {
        let one = ctl_json(&cluster.api(3), &["policies", "get", "--contract", "urn:ctl/IEcho"]).await;
        (one["policies"].as_array()?.len() == 1).then_some(one)
    })
    .await;
    assert_eq!(one["policies"][0], set, "the server's entry, as set");
    let all = ctl(&["policies", "get", "--addr", addr]).await;
    assert_aligned(all.ok(), &["CONTRACT", "POLICY", "HASH HEADER"]);
    assert_eq!(all.stdout.lines().count(), 3, "{}", all.stdout);

    // drain and unregister (by id and by address and contract); a second removal is refused.
    let drained = ctl_json(addr, &["registrations", "drain", &id]).await;
    assert_eq!(drained["state"], "draining");
    let removed = ctl_json(addr, &["registrations", "unregister", &id]).await;
    assert_eq!(removed["id"], id);
    let run = ctl(&[
        "registrations",
        "unregister",
        "--address",
        &backends[1].url(),
        "--contract",
        "urn:ctl/IEcho",
        "--addr",
        addr,
    ])
    .await;
    assert_eq!(field(run.ok(), "result").as_deref(), Some("unregistered"), "{}", run.stdout);
    let line = ctl(&["registrations", "unregister", &id, "--addr", addr]).await.failed(1).to_owned();
    assert!(line.starts_with("error: 404 registration_not_found: "), "{line}");

    // audit: the trail of this registration, newest first, in both forms.
    let trail = ctl_json(addr, &["audit", "--id", &id, "--limit", "10"]).await;
    let actions: Vec<&str> =
        trail["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["unregistered", "drained", "registered"]);
    let run = ctl(&["audit", "--limit", "3", "--addr", addr]).await;
    assert_aligned(run.ok(), &["SEQ", "TIME", "NODE", "PRINCIPAL", "ACTION", "CONTRACT"]);
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);

    // cluster status, and a node added and removed (in dev mode with the cluster secret only).
    let status = ctl_json(addr, &["cluster", "status"]).await;
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert!(status["leader_id"].is_u64() && status["term"].is_u64(), "{status}");
    let run = ctl(&["cluster", "status", "--addr", addr]).await;
    let text = run.ok();
    assert_eq!(field(text, "leader"), Some(status["leader_id"].to_string()), "{text}");
    let members = text.split("\n\n").nth(1).unwrap();
    assert_aligned(members, &["ID", "ROLE", "PEER ADDRESS", "MATCHED", "LAG", "INCARNATION"]);
    assert!(members.contains("voter (leader)"), "{members}");
    let line = ctl(&["cluster", "remove-node", "9", "--addr", addr]).await.failed(1).to_owned();
    assert!(line.starts_with("error: 401 unauthorized: "), "{line}");
    let line = ctl(&["cluster", "remove-node", "9", "--addr", addr, "--token", SECRET]).await.failed(1).to_owned();
    assert!(line.starts_with("error: 404 node_not_found: "), "{line}");
    let ports = Ports::free();
    cluster.add_process(4, ports, vec![]);
    cluster.start_node(4);
    let peer = format!("127.0.0.1:{}", ports.peer);
    let added =
        ctl(&["cluster", "add-node", "4", &peer, "--addr", addr, "--token", SECRET, "--output", "json"]).await.json();
    let voters = |view: &Value| -> Vec<u64> {
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "voter")
            .map(|m| m["id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(voters(&added), [1, 2, 3, 4]);
    let removed = ctl(&["cluster", "remove-node", "4", "--addr", addr, "--token", SECRET]).await;
    assert!(!removed.ok().contains(&peer), "node 4 is no member: {}", removed.stdout);
    let after = ctl_json(addr, &["cluster", "status"]).await;
    assert_eq!(voters(&after), [1, 2, 3]);
}

const OPS: &str = "ops-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

#[tokio::test(flavor = "multi_thread")]
async fn with_tokens_a_missing_token_and_a_narrow_scope_exit_1_with_the_servers_code_and_explain_hides_addresses() {
    let tokens = json!({ "tokens": [
        { "name": "ops", "token": OPS, "scopes": ["admin", "read", "register:*"] },
        { "name": "reader", "token": READER, "scopes": ["read"] },
    ]});
    let mut options = Options::default();
    options.env.push(("SWITCHBOARD_TOKENS".into(), tokens.to_string()));
    options.token = Some(OPS.into());
    let cluster = TestCluster::start_with(3, options);
    cluster.wait_stable().await;
    let addr = cluster.apis().join(",");
    let backend = Backend::start("a").await;
    let register =
        ["registrations", "register", "--address", &backend.url(), "--contract", "urn:tok/IEcho", "--addr", &addr];

    let line = ctl(&register).await.failed(1).to_owned();
    assert!(line.starts_with("error: 401 unauthorized: "), "{line}");
    let line = ctl(&[&register[..], &["--token", READER]].concat()).await.failed(1).to_owned();
    assert!(line.starts_with("error: 403 forbidden: "), "{line}");
    let line = ctl(&["cluster", "status", "--addr", &addr, "--token", "not-a-token-of-this-cluster"])
        .await
        .failed(1)
        .to_owned();
    assert!(line.starts_with("error: 401 unauthorized: "), "{line}");
    let created = ctl(&[&register[..], &["--token", OPS, "--output", "json"]].concat()).await.json();
    assert_eq!(created["owner"], "ops");
    let listed = ctl(&["registrations", "list", "--addr", &addr, "--token", READER, "--output", "json"]).await;
    assert_eq!(listed.ok().lines().count(), 1, "{}", listed.stdout);
    let line = ctl(&[
        "policies",
        "set",
        "--contract",
        "urn:tok/IEcho",
        "--policy",
        "weighted",
        "--addr",
        &addr,
        "--token",
        READER,
    ])
    .await
    .failed(1)
    .to_owned();
    assert!(line.starts_with("error: 403 forbidden: "), "{line}");

    // Explain shows the endpoint only to a caller who may read; the decision to anyone.
    let data = cluster.data(3);
    eventually("node 3 to route urn:tok/IEcho", Duration::from_secs(10), || async {
        let run = ctl(&[
            "explain",
            "--contract",
            "urn:tok/IEcho",
            "--data-addr",
            &data,
            "--token",
            READER,
            "--output",
            "json",
        ])
        .await;
        (run.code == 0).then_some(())
    })
    .await;
    let shown =
        ctl(&["explain", "--contract", "urn:tok/IEcho", "--data-addr", &data, "--token", READER, "--output", "json"])
            .await
            .json();
    assert_eq!(shown["endpoint"], backend.url());
    let hidden =
        ctl(&["explain", "--contract", "urn:tok/IEcho", "--data-addr", &data, "--output", "json"]).await.json();
    assert_eq!((hidden["contract"].as_str(), hidden["endpoints"].as_u64()), (Some("urn:tok/IEcho"), Some(1)));
    assert!(!hidden.to_string().contains("127.0.0.1"), "no address without a read token: {hidden}");
    let table = ctl(&["explain", "--contract", "urn:tok/IEcho", "--data-addr", &data]).await;
    assert!(field(table.ok(), "endpoint").unwrap().starts_with("(hidden"), "{}", table.stdout);
    assert_eq!(backend.hits(), 0, "a dry run reaches no endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_https_the_cli_trusts_the_ca_it_is_given_and_no_other() {
    let files = TestCluster::scratch();
    let pki = Pki::generate(files.path(), "edge-ca", &["edge"]);
    let args = vec!["--tls-cert".into(), pki.path("edge.pem"), "--tls-key".into(), pki.path("edge.key")];
    let cluster = TestCluster::start_with(1, Options { args, ..Options::default() });
    let api = format!("https://127.0.0.1:{}", cluster.nodes[&1].ports.api);
    let data = format!("https://127.0.0.1:{}", cluster.nodes[&1].ports.data);
    let ca = pki.path("ca.pem");
    let status = eventually("node 1 leads, seen over HTTPS", Duration::from_secs(20), || async {
        let run = ctl(&["cluster", "status", "--addr", &api, "--ca", &ca, "--output", "json"]).await;
        (run.code == 0).then(|| run.json()).filter(|view| view["leader_id"] == 1)
    })
    .await;
    assert_eq!(status["node_id"], 1);
    let line = ctl(&["cluster", "status", "--addr", &api]).await.failed(3).to_owned();
    assert!(line.starts_with("error: unreachable:"), "a certificate it cannot verify answers nothing: {line}");
    let line = ctl(&["cluster", "status", "--addr", &api, "--ca", "/nonexistent/ca.pem"]).await.failed(2).to_owned();
    assert!(line.contains("/nonexistent/ca.pem"), "{line}");

    let backend = Backend::start("b").await;
    let register = ["registrations", "register", "--address", &backend.url(), "--contract", "urn:https/C"];
    ctl(&[&register[..], &["--addr", &api, "--ca", &ca]].concat()).await.ok();
    let decision = eventually("explain over HTTPS", Duration::from_secs(10), || async {
        let run =
            ctl(&["explain", "--contract", "urn:https/C", "--data-addr", &data, "--ca", &ca, "--output", "json"]).await;
        (run.code == 0).then(|| run.json())
    })
    .await;
    assert_eq!(decision["endpoint"], backend.url());
    assert_eq!(backend.hits(), 0, "a dry run reaches no endpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_the_cluster_cannot_commit_exits_1_with_its_5xx_code_and_only_dead_addresses_exit_3() {
    let args = vec!["--write-timeout-ms".to_owned(), "500".to_owned()];
    let mut cluster = TestCluster::start_with(3, Options { args, ..Options::default() });
    let leader = cluster.wait_stable().await;
    let survivor = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    let others: Vec<u64> = cluster.running().into_iter().filter(|&id| id != survivor).collect();
    for &id in &others {
        cluster.kill(id);
    }
    let addr = cluster.api(survivor);
    let status = ctl(&["cluster", "status", "--addr", &addr, "--output", "json"]).await.json();
    assert_eq!(status["node_id"], survivor, "the survivor still answers reads");
    let dead = format!("{},{}", cluster.api(others[0]), cluster.api(others[1]));
    let register = ["registrations", "register", "--address", "http://10.9.0.1/", "--contract", "urn:q/C"];
    // Every router tried answers 5xx or nothing: the last answer is the refusal (1), not 3.
    let line = ctl(&[&register[..], &["--addr", &format!("{dead},{addr}"), "--timeout", "5s"]].concat())
        .await
        .failed(1)
        .to_owned();
    // No leader (503), or the write reached the dying leader and its outcome is unknown (504).
    assert!(line.starts_with("error: 503 no_leader: ") || line.starts_with("error: 504 outcome_unknown: "), "{line}");
    let line = ctl(&[&register[..], &["--addr", &dead]].concat()).await.failed(3).to_owned();
    assert!(line.starts_with("error: unreachable: "), "{line}");
}

/// Runs `switchboard watch ARGS` while `changes` runs, and its result (it ends after `--count`).
async fn watch_while<F: Future<Output = ()>>(args: &[&str], changes: F) -> Run {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("watch")
        .args(args)
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (output, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()), changes);
    let output = output.expect("watch ends after --count changes, within a minute").unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_prints_each_change_of_its_contract_once_in_both_forms_and_goes_on_when_its_router_dies() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = *cluster.running().iter().find(|&&id| id != leader).unwrap();
    // The watch reads from the follower first; the leader's address follows.
    let addr = format!("{},{}", cluster.api(follower), cluster.api(leader));
    let index = cluster.get_json(&format!("{}/v1/registrations", cluster.api(leader))).await.unwrap();
    let after = index["applied_index"].as_u64().unwrap().to_string();
    let args = ["--addr", &addr, "--contract", "urn:w/IWatched", "--after", &after, "--count", "3"];

    let json = watch_while(&[&args[..], &["--output", "json"]].concat(), async {
        assert_eq!(cluster.register(leader, "http://127.0.0.1:9401/", "urn:other", "IOther").await.0, 201);
        assert_eq!(cluster.register(leader, "http://127.0.0.1:9402/", "urn:w", "IWatched").await.0, 201);
        let (_, created) = cluster.register(leader, "http://127.0.0.1:9403/", "urn:w", "IWatched").await;
        let id = created["id"].as_str().unwrap().to_owned();
        let drained = cluster.post_json(leader, &format!("/v1/registrations/{id}/drain"), &json!({})).await;
        assert_eq!(drained.0, 200, "{drained:?}");
    })
    .await;
    let events = json_lines(&json);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["registered", "registered", "drained"], "the other contract's change is not printed");
    assert_eq!(events[2]["registration"]["address"], "http://127.0.0.1:9403/");

    // The table form, from the same position: the same three changes, with the follower killed
    // first, so the watch goes on through the leader's address.
    cluster.kill(follower);
    let table = watch_while(&args, async {}).await;
    let table = table.ok();
    assert_aligned(table, &["ID", "TIME", "CHANGE", "CONTRACT", "ADDRESS"]);
    let changes: Vec<&str> = table.lines().skip(1).filter_map(|line| line.split_whitespace().nth(2)).collect();
    assert_eq!(changes, ["registered", "registered", "drained"], "{table}");
    assert!(table.contains("urn:w/IWatched") && table.contains("http://127.0.0.1:9402/"), "{table}");

    // Nobody at the address: exit 3 with one line.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let run = watch_while(&["--addr", &nobody, "--count", "1"], async {}).await;
    assert!(run.failed(3).contains("unreachable"), "{}", run.stderr);
}
