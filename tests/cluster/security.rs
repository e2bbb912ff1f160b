//! Refusals of issue "security": tokens and scopes, forwarded identity, quotas, audit, peer
//! mutual TLS, edge TLS, address policy, loops and limits. Each shows that nothing changed.

use std::collections::BTreeMap;
use std::io::Read;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::CertifiedIssuer;
use rcgen::DnType;
use rcgen::IsCa;
use rcgen::KeyPair;
use serde_json::Value;
use serde_json::json;

use crate::backend::Backend;
use crate::backend::Behaviour;
use crate::harness::Options;
use crate::harness::TestCluster;
use crate::harness::eventually;

const OPS: &str = "ops-token-0123456789abcdef";
const ORDERS: &str = "orders-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";

fn tokens_json() -> String {
    json!({ "tokens": [
        { "name": "ops", "token": OPS, "scopes": ["admin", "read", "register:*", "broadcast:*"] },
        { "name": "orders", "token": ORDERS, "scopes": ["register:urn:shop*", "read", "broadcast:urn:shop/ICache"], "max_registrations": 2 },
        { "name": "reader", "token": READER, "scopes": ["read"] },
    ]})
    .to_string()
}

fn with_tokens(mut options: Options) -> Options {
    options.env.push(("SWITCHBOARD_TOKENS".into(), tokens_json()));
    options.token = Some(OPS.into());
    options
}

/// Sends a request with an explicit token (or none), bypassing the harness's default token.
async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let mut request = http.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn registration(address: &str, namespace: &str) -> Value {
    json!({ "address": address, "contract_name": "C", "contract_namespace": namespace })
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_scopes_quotas_and_the_audit_trail() {
    let cluster = TestCluster::start_with(3, with_tokens(Options::default()));
    let leader = cluster.wait_stable().await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    let api = cluster.api(follower);

    // Every route but health and metrics refuses a request without a valid token.
    let id = "0".repeat(32);
    let guarded = [
        ("POST", "/v1/registrations".to_owned(), Some(registration("http://10.50.0.1/", "urn:shop"))),
        ("GET", "/v1/registrations".to_owned(), None),
        ("GET", format!("/v1/registrations/{id}"), None),
        ("DELETE", format!("/v1/registrations/{id}"), None),
        (
            "POST",
            "/v1/registrations/unregister".to_owned(),
            Some(json!({ "address": "http://a/", "contract_name": "C", "contract_namespace": "n" })),
        ),
        ("POST", format!("/v1/registrations/{id}/heartbeat"), None),
        ("POST", format!("/v1/registrations/{id}/drain"), None),
        ("POST", "/v1/heartbeat".to_owned(), Some(json!({ "ids": [] }))),
        ("GET", "/v1/policies".to_owned(), None),
        (
            "PUT",
            "/v1/policies".to_owned(),
            Some(json!({ "contract_namespace": "n", "contract_name": "c", "policy": "round_robin" })),
        ),
        ("GET", "/v1/cluster".to_owned(), None),
        ("POST", "/v1/cluster/nodes".to_owned(), Some(json!({ "node_id": 9, "peer_addr": "x:1" }))),
        ("DELETE", "/v1/cluster/nodes/9".to_owned(), None),
        ("GET", "/v1/audit".to_owned(), None),
        ("POST", "/v1/soap/registration".to_owned(), None),
    ];
    for (method, path, body) in &guarded {
        for token in [None, Some("not-a-valid-token-at-all")] {
            let (status, error) = call(method, &format!("{api}{path}"), token, body.clone()).await;
            // The SOAP endpoint refuses with a SOAP fault (not JSON).
            let code = if path.contains("/soap/") { None } else { Some("unauthorized") };
            assert_eq!((status, error["code"].as_str()), (401, code), "{method} {path} with {token:?}");
        }
    }
    // The token must come as `Bearer <token>`: a bare token is refused, however valid.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let bare = http.get(format!("{api}/v1/cluster")).header("authorization", OPS).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let error: Value = bare.json().await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("Bearer <token>"), "{error}");
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let response = reqwest::get(format!("{api}{path}")).await.unwrap();
        assert_eq!(response.status(), 200, "{path} stays open for health checks and scrapes");
    }

    // Scopes: a token limited to urn:shop registers there, through a follower, and nowhere else.
    let (status, created) = call(
        "POST",
        &format!("{api}/v1/registrations"),
        Some(ORDERS),
        Some(registration("http://10.50.0.1/", "urn:shop")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["owner"], "orders");
    for (token, namespace, code) in [(ORDERS, "urn:bank", "forbidden"), (READER, "urn:shop", "forbidden")] {
        let (status, error) = call(
            "POST",
            &format!("{api}/v1/registrations"),
            Some(token),
            Some(registration("http://10.50.0.9/", namespace)),
        )
        .await;
        assert_eq!((status, error["code"].as_str()), (403, Some(code)));
    }
    let (status, _) = call(
        "PUT",
        &format!("{api}/v1/policies"),
        Some(ORDERS),
        Some(json!({ "contract_namespace": "urn:shop", "contract_name": "C", "policy": "weighted" })),
    )
    .await;
    assert_eq!(status, 403, "policies need admin");
    let (status, _) = call("DELETE", &format!("{api}/v1/cluster/nodes/{leader}"), Some(ORDERS), None).await;
    assert_eq!(status, 403, "membership needs admin");

    // Ops registers elsewhere; orders may not remove it.
    let (status, other) = call(
        "POST",
        &format!("{api}/v1/registrations"),
        Some(OPS),
        Some(registration("http://10.50.1.1/", "urn:other")),
    )
    .await;
    assert_eq!(status, 201);
    let other_id = other["id"].as_str().unwrap();
    let (status, _) = call("DELETE", &format!("{api}/v1/registrations/{other_id}"), Some(ORDERS), None).await;
    assert_eq!(status, 403);
    let (status, _) = call("POST", &format!("{api}/v1/registrations/{other_id}/drain"), Some(ORDERS), None).await;
    assert_eq!(status, 403);

    // Quota: two registrations per token.
    let (status, _) = call(
        "POST",
        &format!("{api}/v1/registrations"),
        Some(ORDERS),
        Some(registration("http://10.50.0.2/", "urn:shop")),
    )
    .await;
    assert_eq!(status, 201);
    let (status, error) = call(
        "POST",
        &format!("{api}/v1/registrations"),
        Some(ORDERS),
        Some(registration("http://10.50.0.3/", "urn:shop")),
    )
    .await;
    assert_eq!((status, error["code"].as_str()), (429, Some("quota_exceeded")), "{error}");
    let metrics = reqwest::get(format!("{api}/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchboard_limit_hits_total{limit=\"registrations_per_token\"}")
                && !l.ends_with(" 0")),
        "the quota refusal is counted"
    );

    // Nothing refused changed anything, on any node: behind a write acknowledged after every
    // refusal, each node lists what was accepted and the barrier, nothing else.
    let barrier = registration("http://10.50.9.9/", "urn:ops");
    assert_eq!(call("POST", &format!("{api}/v1/registrations"), Some(OPS), Some(barrier)).await.0, 201);
    cluster
        .wait_exactly_behind(
            "http://10.50.9.9/",
            &["http://10.50.0.1/".to_owned(), "http://10.50.0.2/".to_owned(), "http://10.50.1.1/".to_owned()],
        )
        .await;

    // Ops evicts one of orders' registrations; the trail names who, through which node, and why.
    let first = created["id"].as_str().unwrap();
    let (status, _) =
        call("DELETE", &format!("{}/v1/registrations/{first}", cluster.api(leader)), Some(OPS), None).await;
    assert_eq!(status, 200);
    let trail = eventually("the eviction in the follower's audit trail", Duration::from_secs(10), || async {
        let (status, trail) = call("GET", &format!("{api}/v1/audit?limit=50"), Some(READER), None).await;
        assert_eq!(status, 200);
        trail["records"].as_array()?.iter().any(|r| r["action"] == "evicted").then_some(trail)
    })
    .await;
    let records = trail["records"].as_array().unwrap();
    let find = |action: &str, address: &str| {
        records.iter().find(|r| r["action"] == action && r["address"] == address).cloned()
    };
    let registered = find("registered", "http://10.50.0.1/").expect("registration audited");
    assert_eq!((registered["principal"].as_str(), registered["node"].as_u64()), (Some("orders"), Some(follower)));
    let refused = find("quota_exceeded", "http://10.50.0.3/").expect("quota refusal audited");
    assert_eq!(refused["principal"], "orders");
    let evicted = records.iter().find(|r| r["action"] == "evicted").expect("eviction audited");
    assert_eq!((evicted["principal"].as_str(), evicted["node"].as_u64()), (Some("ops"), Some(leader)));
}

#[tokio::test(flavor = "multi_thread")]
async fn broadcast_needs_a_token_with_a_broadcast_scope() {
    let cluster = TestCluster::start_with(3, with_tokens(Options::default()));
    let leader = cluster.wait_stable().await;
    let backend = Backend::start("cache").await;
    let other = Backend::start("other").await;
    cluster.register_all(leader, "urn:shop", "ICache", &[backend.url()]).await;
    cluster.register_all(leader, "urn:shop", "IOther", &[other.url()]).await;
    let data = cluster.data(leader);
    let http = reqwest::Client::new();
    let send = |contract: &'static str, token: Option<&'static str>| {
        let mut request = http
            .post(format!("{data}/invalidate"))
            .header("x-switchboard-contract", contract)
            .header("x-switchboard-delivery", "broadcast");
        if let Some(token) = token {
            request = request.header("x-switchboard-token", token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(send("urn:shop/ICache", None).await, 401);
    assert_eq!(send("urn:shop/ICache", Some("wrong-token-wrong-token")).await, 401);
    assert_eq!(send("urn:shop/IOther", Some(ORDERS)).await, 403);
    assert_eq!((backend.hits(), other.hits()), (0, 0), "refused broadcasts reach no endpoint");
    assert_eq!(send("urn:shop/ICache", Some(ORDERS)).await, 200);
    assert_eq!(backend.hits(), 1);
    // Unicast routing needs no token: it is for the services' own clients.
    let response =
        http.get(format!("{data}/x")).header("x-switchboard-contract", "urn:shop/IOther").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA and, for each name, a certificate (server and client use) with SANs for 127.0.0.1,
    /// and for a name `node<N>` the node name of node N (`node-<N>.switchboard`).
    pub(crate) fn generate(dir: &Path, ca_name: &str, nodes: &[&str]) -> Self {
        let dir = dir.join(ca_name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        for node in nodes {
            let key = KeyPair::generate().unwrap();
            let mut names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
            if let Some(id) = node.strip_prefix("node").and_then(|n| n.parse::<u64>().ok()) {
                names.push(format!("node-{id}.switchboard"));
            }
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, *node);
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.join(format!("{node}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{node}.key")), key.serialize_pem()).unwrap();
        }
        Self { dir }
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_need_a_certificate_from_the_cluster_ca() {
    let files = TestCluster::scratch();
    let pki = Pki::generate(files.path(), "cluster-ca", &["node1", "node2", "node3", "edge"]);
    let rogue = Pki::generate(files.path(), "rogue-ca", &["intruder"]);
    let node_args = (1..=3)
        .map(|id| {
            let args = [
                ("--peer-tls-cert", pki.path(&format!("node{id}.pem"))),
                ("--peer-tls-key", pki.path(&format!("node{id}.key"))),
                ("--peer-tls-ca", pki.path("ca.pem")),
            ];
            (id, args.into_iter().flat_map(|(flag, value)| [flag.to_owned(), value]).collect())
        })
        .collect();
    let cluster = TestCluster::start_with(3, Options { node_args, ..Options::default() });
    let leader = cluster.wait_stable().await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    // The cluster replicates and forwards over mutual TLS.
    let (status, _) = cluster.register(follower, "http://10.60.0.1/", "urn:tls", "C").await;
    assert_eq!(status, 201);
    for node in cluster.running() {
        cluster.wait_addresses(node, &["http://10.60.0.1/".to_owned()]).await;
    }

    let peer = format!("127.0.0.1:{}", cluster.nodes[&leader].ports.peer);
    let secret = format!("Bearer {}", crate::harness::SECRET);
    // Plaintext HTTP with the right secret: the TLS listener never reads it as a request.
    let plaintext = reqwest::Client::new()
        .post(format!("http://{peer}/cluster/status"))
        .header("authorization", &secret)
        .send()
        .await;
    assert!(plaintext.is_err() || !plaintext.unwrap().status().is_success(), "plaintext peer refused");
    let root = |pki: &Pki| reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let identity = |pki: &Pki, name: &str| {
        let mut pem = std::fs::read(pki.path(&format!("{name}.pem"))).unwrap();
        pem.extend(std::fs::read(pki.path(&format!("{name}.key"))).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    };
    // No client certificate, and a certificate from another CA: refused in the handshake.
    let no_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root(&pki))
        .build()
        .unwrap();
    let wrong_ca = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root(&pki))
        .identity(identity(&rogue, "intruder"))
        .build()
        .unwrap();
    for (what, client) in [("no certificate", &no_cert), ("another CA", &wrong_ca)] {
        let result =
            client.post(format!("https://{peer}/cluster/status")).header("authorization", &secret).send().await;
        assert!(result.is_err(), "{what}: the handshake must fail, got {:?}", result.map(|r| r.status()));
    }
    // The right CA gets in (and still needs the secret).
    let member = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root(&pki))
        .identity(identity(&pki, "edge"))
        .build()
        .unwrap();
    let response = member.post(format!("https://{peer}/cluster/status")).send().await.unwrap();
    assert_eq!(response.status(), 401, "a certificate alone is not enough: the secret is checked too");
    assert!(cluster.log(leader).contains("TLS handshake refused"));

    // A certificate names its node: with node 2's certificate and the secret, a request cannot
    // come from node 3, nor speak for node 3 in its body.
    let node2 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root(&pki))
        .identity(identity(&pki, "node2"))
        .build()
        .unwrap();
    let key = switchboard::peer_auth::PeerKey::new(crate::harness::SECRET);
    let signed = |from: u64, path: &str, body: Vec<u8>| {
        node2
            .post(format!("https://{peer}{path}"))
            .header("authorization", key.sign(path, &from.to_string(), None, &body))
            .header("x-switchboard-from", from.to_string())
            .body(body)
            .send()
    };
    let admit = |id: u64| {
        let request = switchboard::cluster::AdmitRequest {
            node_id: id,
            node: switchboard::raft::PeerNode { addr: "127.0.0.1:1".into(), incarnation: Some(7) },
        };
        postcard::to_stdvec(&request).unwrap()
    };
    let response = signed(3, "/cluster/admit", admit(3)).await.unwrap();
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "certificate_not_for_node", "{error}");
    let response = signed(2, "/cluster/admit", admit(3)).await.unwrap();
    assert_eq!(response.status(), 403);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "sender_mismatch", "{error}");
    let status = postcard::to_stdvec(&switchboard::cluster::StatusRequest { challenge: [7; 16] }).unwrap();
    assert_eq!(signed(2, "/cluster/status", status).await.unwrap().status(), 200, "node 2 speaking as itself");
    for node in cluster.running() {
        let view = cluster.cluster_view(node).await.unwrap();
        assert_eq!(view["members"].as_array().unwrap().len(), 3, "nothing changed");
    }

    // A node whose own certificate does not name it does not start: one clear line.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--node-id", "1", "--data-dir", &files.path().join("x").to_string_lossy()])
        .args(["--peers", "1=127.0.0.1:1", "--cluster-secret", crate::harness::SECRET])
        .args(["--peer-tls-cert", &pki.path("node2.pem"), "--peer-tls-key", &pki.path("node2.key")])
        .args(["--peer-tls-ca", &pki.path("ca.pem")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not name node 1") && stderr.contains("DNS:node-1.switchboard"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_plane_and_api_can_serve_https() {
    let files = TestCluster::scratch();
    let pki = Pki::generate(files.path(), "edge-ca", &["edge"]);
    let args = vec!["--tls-cert".into(), pki.path("edge.pem"), "--tls-key".into(), pki.path("edge.key")];
    let cluster = TestCluster::start_with(1, Options { args, ..Options::default() });
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let api = format!("https://127.0.0.1:{}", cluster.nodes[&1].ports.api);
    eventually("the node ready over HTTPS", Duration::from_secs(20), || async {
        https.get(format!("{api}/health/ready")).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
    let backend = Backend::start("b").await;
    let response = https
        .post(format!("{api}/v1/registrations"))
        .json(&registration(&backend.url(), "urn:https"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let data = format!("https://127.0.0.1:{}", cluster.nodes[&1].ports.data);
    let echoed: Value = eventually("routing over HTTPS", Duration::from_secs(10), || async {
        let response =
            https.get(format!("{data}/x")).header("x-switchboard-contract", "urn:https/C").send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    })
    .await;
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
    // Plain HTTP to an HTTPS listener gets nothing.
    assert!(reqwest::get(format!("http://127.0.0.1:{}/health/ready", cluster.nodes[&1].ports.api)).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_address_policy_keeps_the_router_off_forbidden_networks() {
    // Nodes 1 and 2 deny loopback; node 3 allows it (to get a name past registration).
    let deny = vec!["--deny-networks".to_owned(), "127.0.0.1/32,::1/128".to_owned()];
    let node_args = BTreeMap::from([(1, deny.clone()), (2, deny)]);
    let cluster = TestCluster::start_with(3, Options { node_args, ..Options::default() });
    cluster.wait_stable().await;
    let leader = 1;
    let backend = Backend::start("local").await; // listens on 127.0.0.1: denied
    let port = backend.addr.port();
    for address in [
        format!("http://127.0.0.1:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://0.0.0.0:80/".to_owned(),
    ] {
        let (status, error) = cluster.register(leader, &address, "urn:ssrf", "C").await;
        assert_eq!((status, error["code"].as_str()), (400, Some("invalid_address")), "{address}: {error}");
    }
    // A host name is resolved at registration: localhost resolves only to denied addresses.
    let (status, error) = cluster.register(leader, &format!("http://localhost:{port}/"), "urn:ssrf", "IName").await;
    assert_eq!((status, error["code"].as_str()), (400, Some("invalid_address")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("localhost resolves to"), "{error}");
    // ...and again at every connection: registered through node 3, whose policy allows it (as a
    // name whose address changed after registration would be), node 1 sends nothing there.
    cluster.register_all(3, "urn:ssrf", "IName", &[format!("http://localhost:{port}/")]).await;
    let response = cluster
        .http
        .get(format!("{}/x", cluster.data(leader)))
        .header("x-switchboard-contract", "urn:ssrf/IName")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("refused addresses"), "{error}");
    assert_eq!(backend.hits(), 0, "the denied address received nothing");
    for node in cluster.running() {
        cluster.wait_addresses(node, &[format!("http://localhost:{port}/")]).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_pass_through_and_loops_are_cut() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    // An endpoint that redirects to the metadata service: the client sees the redirect; the
    // router does not follow it.
    let redirect = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_addr = redirect.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = redirect.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                use tokio::io::AsyncWriteExt;
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let answer = "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    cluster.register_all(leader, "urn:redirect", "C", &[format!("http://{redirect_addr}/")]).await;
    let no_follow = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = no_follow
        .get(format!("{}/", cluster.data(leader)))
        .header("x-switchboard-contract", "urn:redirect/C")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(response.headers()["location"], "http://169.254.169.254/latest/meta-data/");

    // An endpoint at any router's listener, however spelled, is refused by every node (each
    // knows the others' listeners from their gossip).
    let ports = cluster.nodes[&leader].ports;
    for address in [
        format!("http://127.0.0.1:{}/", ports.data),
        format!("http://localhost:{}/", ports.api),
        format!("http://[::ffff:127.0.0.1]:{}/", ports.peer),
        format!("http://127.0.0.1:{}/", ports.health),
    ] {
        for via in [leader, follower] {
            eventually(&format!("node {via} to refuse {address}"), Duration::from_secs(5), || async {
                let (status, error) = cluster.register(via, &address, "urn:loop", "C").await;
                assert_ne!(status, 201, "{address} accepted through node {via}");
                (status == 400 && error["code"] == "invalid_address").then_some(())
            })
            .await;
        }
    }
    // A loop that goes through something else (a TCP relay to the leader's data plane) is cut by
    // the Via header when the request comes back.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let leader_data_addr = format!("127.0.0.1:{}", ports.data);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = relay.accept().await {
            let target = leader_data_addr.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    let leader_data = format!("http://{relay_addr}/");
    cluster.register_all(follower, "urn:loop", "C", std::slice::from_ref(&leader_data)).await;
    let response = cluster
        .http
        .get(format!("{}/", cluster.data(follower)))
        .header("x-switchboard-contract", "urn:loop/C")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let error: Value = response.json().await.unwrap();
    assert_eq!((status, error["code"].as_str()), (508, Some("routing_loop")), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_limit_refuses_clearly() {
    let args = ["--max-connections", "4", "--max-connections-per-ip", "100", "--max-endpoint-requests", "1"];
    let args = args.map(String::from).to_vec();
    let cluster = TestCluster::start_with(1, Options { args, ..Options::default() });
    let node = cluster.wait_stable().await;
    let slow = Backend::start_with("slow", Behaviour { delay: Duration::from_millis(1_500), status: None }).await;
    cluster.register_all(node, "urn:limits", "C", &[slow.url()]).await;
    let data = cluster.data(node);

    // Requests per endpoint: with one in flight, the next one is refused at once.
    let first = {
        let http = reqwest::Client::new();
        let url = format!("{data}/a");
        tokio::spawn(async move {
            http.get(url).header("x-switchboard-contract", "urn:limits/C").send().await.unwrap().status().as_u16()
        })
    };
    eventually("the slow request in flight", Duration::from_secs(5), || async { (slow.hits() == 1).then_some(()) })
        .await;
    let response = reqwest::Client::new()
        .get(format!("{data}/b"))
        .header("x-switchboard-contract", "urn:limits/C")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], "endpoint_overloaded");
    assert_eq!(first.await.unwrap(), 200);

    // Headers too large: 431 from the listener.
    let response =
        reqwest::Client::new().get(format!("{data}/")).header("x-big", "a".repeat(70 * 1024)).send().await.unwrap();
    assert_eq!(response.status(), 431, "oversized headers refused");
    // A SOAP header that never ends within the scan cap: 413.
    let endless = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>{}"#,
        "<x>padding</x>".repeat(6_000)
    );
    let response = reqwest::Client::new()
        .post(format!("{data}/"))
        .header("content-type", "text/xml")
        .body(endless)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500, "a SOAP fault");
    assert_eq!(response.headers()["x-switchboard-error"], "envelope_header_too_large");

    // Connections: at the limit, new ones are closed without a byte. These four start a request
    // (a silent connection takes no slot), so they hold every slot before the fifth speaks.
    let addr = format!("127.0.0.1:{}", cluster.nodes[&node].ports.data);
    let open_connections = |count: usize| {
        let url = format!("{}/metrics", cluster.api(node));
        async move {
            let metrics = reqwest::get(url).await.ok()?.text().await.ok()?;
            let line = format!("switchboard_open_connections{{listener=\"data_plane\"}} {count}");
            metrics.lines().any(|l| l == line).then_some(())
        }
    };
    eventually("the earlier connections to close", Duration::from_secs(10), || open_connections(0)).await;
    let held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    eventually("the four connections to hold their slots", Duration::from_secs(5), || open_connections(4)).await;
    let mut extra = std::net::TcpStream::connect(&addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-switchboard-contract: urn:limits/C\r\n\r\n");
    let mut answer = Vec::new();
    let read = extra.read_to_end(&mut answer);
    assert!(
        read.is_err() || answer.is_empty(),
        "the connection over the limit got an answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    drop(held);
    eventually("the held connections to close", Duration::from_secs(10), || open_connections(0)).await;
    // A broadcast body over its cap: 413.
    let response = reqwest::Client::new()
        .post(format!("{data}/"))
        .header("x-switchboard-contract", "urn:limits/C")
        .header("x-switchboard-delivery", "broadcast")
        .body(vec![b'x'; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Each limit's counter moved.
    let metrics = reqwest::get(format!("{}/metrics", cluster.api(node))).await.unwrap().text().await.unwrap();
    for limit in ["connections", "endpoint_requests", "request_headers", "envelope_header", "request_body"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("switchboard_limit_hits_total{{limit=\"{limit}\"}}")))
            .unwrap();
        assert!(!line.ends_with(" 0"), "{line}");
    }
}

/// A listener that records every byte it receives and answers each request with `200` and a
/// body that is not a status: what a foreign host named in a membership change could do.
async fn recording_listener() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::AsyncReadExt;
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buffer).await {
                    record.lock().unwrap().extend_from_slice(&buffer[..n]);
                    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfake";
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dev_mode_membership_change_never_hands_out_the_secret() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_stable().await;
    let (port, seen) = recording_listener().await;
    let foreign = json!({ "node_id": 9, "peer_addr": format!("127.0.0.1:{port}") });

    // Without tokens anyone may register, but a membership change needs the cluster secret.
    let (status, error) = cluster.post_json(leader, "/v1/cluster/nodes", &foreign).await;
    assert_eq!((status, error["code"].as_str()), (401, Some("unauthorized")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("cluster secret"), "{error}");
    let response = cluster.http.delete(format!("{}/v1/cluster/nodes/{leader}", cluster.api(leader))).send().await;
    assert_eq!(response.unwrap().status(), 401);
    assert!(seen.lock().unwrap().is_empty(), "nothing was sent to the foreign address");

    // With the secret, the leader asks the address to prove it holds the secret too; the foreign
    // host cannot, so the change is refused, and what it received carries no secret.
    let (status, error) = cluster.as_operator("POST", leader, "/v1/cluster/nodes", Some(&foreign)).await;
    assert_eq!((status, error["code"].as_str()), (409, Some("membership_change_refused")), "{error}");
    assert!(error["message"].as_str().unwrap().contains("did not prove"), "{error}");
    let received = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(received.contains("POST /cluster/status"), "{received}");
    assert!(!received.contains(crate::harness::SECRET), "the secret was sent: {received}");
    assert!(!received.contains("/raft/"), "no Raft traffic to an unproven address: {received}");
    for node in cluster.running() {
        let view = cluster.cluster_view(node).await.unwrap();
        let ids: Vec<u64> = view["members"].as_array().unwrap().iter().filter_map(|m| m["id"].as_u64()).collect();
        assert_eq!(ids, [1, 2, 3], "node {node}: the membership is unchanged");
    }

    // The peer endpoint no longer takes the secret itself as a credential, only signatures.
    let status_url = format!("{}/cluster/status", cluster.peer(leader));
    let response = cluster.http.post(&status_url).bearer_auth(crate::harness::SECRET).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_addresses_are_shown_only_to_callers_with_read() {
    let cluster = TestCluster::start_with(1, with_tokens(Options::default()));
    let node = cluster.wait_stable().await;
    let backend = Backend::start("calc").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{closed}/");
    cluster.register_all(node, "urn:shop", "ICalc", &[backend.url()]).await;
    cluster.register_all(node, "urn:shop", "IDown", std::slice::from_ref(&down)).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |contract: &'static str, token: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/x", cluster.data(node)))
            .header("x-switchboard-contract", contract)
            .header("x-switchboard-explain", "1");
        if let Some(token) = token {
            request = request.header("x-switchboard-token", token);
        }
        async move {
            let response = request.send().await.unwrap();
            let (status, headers) = (response.status().as_u16(), response.headers().clone());
            (status, headers, response.text().await.unwrap())
        }
    };
    // Anonymous (or with a token that is not valid): the routing decision, but no address.
    for token in [None, Some("not-a-valid-token-at-all")] {
        let (status, headers, _) = send("urn:shop/ICalc", token).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-switchboard-contract"], "urn:shop/ICalc");
        assert!(
            !headers.contains_key("x-switchboard-candidates") && !headers.contains_key("x-switchboard-endpoint"),
            "{token:?}: {headers:?}"
        );
        let (status, _, body) = send("urn:shop/IDown", token).await;
        assert_eq!(status, 503);
        assert!(!body.contains(&down) && !body.contains("last error"), "{body}");
    }
    // A token with read sees them.
    let (_, headers, _) = send("urn:shop/ICalc", Some(READER)).await;
    assert_eq!(headers["x-switchboard-endpoint"].to_str().unwrap(), backend.url());
    let (status, _, body) = send("urn:shop/IDown", Some(READER)).await;
    assert_eq!(status, 503);
    assert!(body.contains("last error: Connection refused"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_managed_at_runtime_take_effect_on_every_node() {
    let cluster = TestCluster::start_with(3, with_tokens(Options::default()));
    let leader = cluster.wait_stable().await;
    let follower = cluster.running().into_iter().find(|&id| id != leader).unwrap();
    let body = json!({ "name": "svc", "scopes": ["read"] });
    let (status, created) = call("POST", &format!("{}/v1/tokens", cluster.api(follower)), Some(OPS), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    for node in cluster.running() {
        let url = format!("{}/v1/cluster", cluster.api(node));
        eventually(&format!("node {node} to take the new token"), Duration::from_secs(10), || async {
            (call("GET", &url, Some(&token), None).await.0 == 200).then_some(())
        })
        .await;
    }

    // Revoked through the leader: every node refuses it once it applied the revocation.
    let (status, _) = call("DELETE", &format!("{}/v1/tokens/svc", cluster.api(leader)), Some(OPS), None).await;
    assert_eq!(status, 200);
    for node in cluster.running() {
        let url = format!("{}/v1/cluster", cluster.api(node));
        eventually(&format!("node {node} to refuse the revoked token"), Duration::from_secs(10), || async {
            (call("GET", &url, Some(&token), None).await.0 == 401).then_some(())
        })
        .await;
    }
    // The same for a token of the file, and the revocation survives a restart of every node.
    let (status, _) = call("DELETE", &format!("{}/v1/tokens/reader", cluster.api(follower)), Some(OPS), None).await;
    assert_eq!(status, 200);
    let mut cluster = cluster;
    for node in cluster.running() {
        cluster.kill(node);
        cluster.start_node(node);
    }
    cluster.wait_stable().await;
    for node in cluster.running() {
        let url = format!("{}/v1/cluster", cluster.api(node));
        // A restarted node refuses them once it has applied the log up to the revocations (it
        // may have been killed before it applied them).
        eventually(&format!("node {node} to refuse both after the restart"), Duration::from_secs(20), || async {
            let ops = call("GET", &url, Some(OPS), None).await.0;
            let reader = call("GET", &url, Some(READER), None).await.0;
            let runtime = call("GET", &url, Some(&token), None).await.0;
            (ops == 200 && reader == 401 && runtime == 401).then_some(())
        })
        .await;
    }
}

/// Tokens of two tenants whose namespaces nest: A owns `http://contoso.com/`, B owns
/// `http://contoso.com/payments*`.
fn tenants() -> Options {
    let tokens = json!({ "tokens": [
        { "name": "ops", "token": OPS, "scopes": ["admin", "read", "register:*"] },
        { "name": "tenant-a", "token": "tenant-a-token-0123456789", "scopes": ["register:http://contoso.com/"] },
        { "name": "tenant-b", "token": "tenant-b-token-0123456789", "scopes": ["register:http://contoso.com/payments*"], "max_registrations": 5 },
    ]});
    Options {
        env: vec![("SWITCHBOARD_TOKENS".into(), tokens.to_string())],
        token: Some(OPS.into()),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_take_another_tenants_traffic_through_a_colliding_contract() {
    let cluster = TestCluster::start_with(3, tenants());
    let leader = cluster.wait_stable().await;
    let (a, b) = (Backend::start("tenant-a").await, Backend::start("tenant-b").await);
    let api = cluster.api(leader);
    let register = |token: &'static str, namespace: &'static str, name: &'static str, address: String| {
        let body = json!({ "address": address, "contract_namespace": namespace, "contract_name": name });
        let url = format!("{api}/v1/registrations");
        async move { call("POST", &url, Some(token), Some(body)).await.0 }
    };
    assert_eq!(register("tenant-a-token-0123456789", "http://contoso.com/", "payments", a.url()).await, 201);
    // B may register in its own namespace, one whose text spells A's contract key...
    assert_eq!(register("tenant-b-token-0123456789", "http://contoso.com/payments", "Anything", b.url()).await, 201);
    // ...but not in a sibling its pattern does not cover as a whole segment.
    assert_eq!(register("tenant-b-token-0123456789", "http://contoso.com/payments-evil", "X", b.url()).await, 403);
    let data = cluster.data(leader);
    for node in cluster.running() {
        cluster
            .wait_addresses(node, &{
                let mut both = vec![a.url(), b.url()];
                both.sort();
                both
            })
            .await;
    }
    for _ in 0..20 {
        let response = cluster
            .http
            .post(format!("{data}/pay"))
            .header("x-switchboard-contract", "http://contoso.com/payments")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (20, 0), "every request for A's contract reached A alone");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_refreshes_leave_the_other_tokens_audit_records_in_place() {
    let cluster = TestCluster::start_with(1, tenants());
    let node = cluster.wait_stable().await;
    let api = cluster.api(node);
    // The operator's records, made first: they must survive what follows.
    for i in 0..3 {
        let body =
            json!({ "address": format!("http://10.8.0.{i}/"), "contract_namespace": "urn:ops", "contract_name": "C" });
        assert_eq!(call("POST", &format!("{api}/v1/registrations"), Some(OPS), Some(body)).await.0, 201);
    }
    // Tenant B (quota 5) refreshes its one registration 10,000 times, from 16 clients.
    let body = json!({ "address": "http://10.8.1.1/", "contract_namespace": "http://contoso.com/payments", "contract_name": "C" });
    let tasks: Vec<_> = (0..16)
        .map(|client| {
            let (api, body) = (api.clone(), body.clone());
            tokio::spawn(async move {
                let mut ok = 0;
                for _ in (client..10_000).step_by(16) {
                    let url = format!("{api}/v1/registrations");
                    let status = call("POST", &url, Some("tenant-b-token-0123456789"), Some(body.clone())).await.0;
                    ok += usize::from(status == 200 || status == 201);
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    assert_eq!(ok, 10_000);
    // Every record of the trail, newest first, page by page.
    let trail = || async {
        let mut records = Vec::new();
        let mut url = format!("{api}/v1/audit?limit=5000");
        loop {
            let (status, page) = call("GET", &url, Some(OPS), None).await;
            assert_eq!(status, 200);
            records.extend(page["records"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_u64() {
                Some(cursor) => url = format!("{api}/v1/audit?limit=5000&cursor={cursor}"),
                None => return records,
            }
        }
    };
    let by = |records: &[Value], principal: &str| records.iter().filter(|r| r["principal"] == principal).count();
    // The 10,000 refreshes changed nothing, so they recorded nothing: tenant B's one record is
    // its first registration. (The node answered every refresh after applying it.)
    let records = trail().await;
    let tenant_b: Vec<_> = records.iter().filter(|r| r["principal"] == "tenant-b").collect();
    assert_eq!(tenant_b.len(), 1, "{tenant_b:?}");
    assert_eq!(tenant_b[0]["action"], "registered");
    assert_eq!(by(&records, "ops"), 3);

    // Then 1,500 refreshes that do change something (the weight): each is an event, but the
    // tenant's share of the trail is bounded.
    for i in 0..1_500 {
        let mut changed = body.clone();
        changed["weight"] = json!(1 + i % 2);
        let status =
            call("POST", &format!("{api}/v1/registrations"), Some("tenant-b-token-0123456789"), Some(changed)).await.0;
        assert_eq!(status, 200);
    }
    let records = trail().await;
    assert_eq!(by(&records, "ops"), 3, "the operator's records are all still there");
    assert_eq!(by(&records, "tenant-b"), 1_000, "one writer holds at most its share");
}
