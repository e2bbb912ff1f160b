//! The data plane's own loop held to its hyper path. Every generated request is sent twice
//! through a node: as it is (the own loop takes it) and with `X-Switchboard-Explain: 0` added
//! (which changes nothing in routing or forwarding, and which the own loop hands to the hyper
//! path). A recording endpoint answers both with the same generated response. The endpoint must
//! receive the same request, and the client the same response, both ways: header order and the
//! case of names aside, `Date` aside, bodies compared decoded.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use switchboard::h1::framing;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;

use crate::harness::TestCluster;

/// A request or response as compared: its first line, its fields (lowercase names, sorted,
/// `Date` left out), its body decoded.
#[derive(Clone, PartialEq, Eq)]
struct Message {
    line: String,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Text, and a long body cut, so that a failing comparison reads.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<String> =
            self.fields.iter().map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value))).collect();
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(120)]);
        write!(f, "{} {fields:?} body ({} bytes) {body:?}", self.line, self.body.len())
    }
}

fn fields(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<_> = headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .filter(|(name, _)| name != "date")
        .collect();
    fields.sort();
    fields
}

/// Reads a chunked body from `buf` and then `stream`; the decoded data.
async fn read_chunked(buf: &mut Vec<u8>, stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut decoder = framing::Chunked::default();
    let mut data = Vec::new();
    loop {
        let read = decoder.read(buf).ok()?;
        for range in &read.data {
            data.extend_from_slice(&buf[range.clone()]);
        }
        buf.drain(..read.consumed);
        if read.done {
            return Some(data);
        }
        let mut more = [0u8; 4096];
        let n = stream.read(&mut more).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&more[..n]);
    }
}

async fn read_more(buf: &mut Vec<u8>, stream: &mut TcpStream) -> bool {
    let mut more = [0u8; 4096];
    matches!(stream.read(&mut more).await, Ok(n) if n > 0 && { buf.extend_from_slice(&more[..n]); true })
}

/// An endpoint that records each request it reads and answers it with `script`.
struct Recorder {
    address: String,
    seen: Arc<Mutex<Vec<Message>>>,
    script: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Self {
        Self::start_serving(false).await
    }

    /// `one_at_a_time`: serves one connection until it closes before it accepts the next (as
    /// single-threaded servers do, SOAP::Lite's daemon among them).
    async fn start_serving(one_at_a_time: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}/svc", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Vec::new()));
        let (seen2, script2) = (seen.clone(), script.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let serving = Self::serve(stream, seen2.clone(), script2.clone());
                if one_at_a_time {
                    serving.await;
                } else {
                    tokio::spawn(serving);
                }
            }
        });
        Self { address, seen, script }
    }

    async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<Message>>>, script: Arc<Mutex<Vec<u8>>>) {
        let mut buf = Vec::new();
        loop {
            let (message, head_len, length) = loop {
                let mut headers = [httparse::EMPTY_HEADER; 100];
                if let framing::Framed::Complete(head) = framing::request(&buf, &mut headers) {
                    let line = format!("{} {}", head.method, head.target);
                    let length = match head.body {
                        framing::Body::Length(n) => Some(n as usize),
                        framing::Body::Chunked => None,
                    };
                    break (Message { line, fields: fields(head.headers), body: Vec::new() }, head.len, length);
                }
                if !read_more(&mut buf, &mut stream).await {
                    return;
                }
            };
            buf.drain(..head_len);
            let body = match length {
                Some(n) => {
                    while buf.len() < n {
                        if !read_more(&mut buf, &mut stream).await {
                            return;
                        }
                    }
                    buf.drain(..n).collect()
                }
                None => match read_chunked(&mut buf, &mut stream).await {
                    Some(body) => body,
                    None => return,
                },
            };
            let target = message.line.split_once(' ').map_or(String::new(), |(_, target)| target.to_owned());
            seen.lock().unwrap().push(Message { body, ..message });
            let mut answer = script.lock().unwrap().clone();
            if answer.is_empty() {
                // Without a script: the target, echoed.
                answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}", target.len()).into_bytes();
            }
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            // A response without a length ends when the connection does.
            let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            let bodiless = text.contains("http/1.1 204") || text.contains("http/1.1 304");
            if !text.contains("content-length") && !text.contains("transfer-encoding") && !bodiless {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

/// Sends `request` on a new connection to `data` and reads one response.
async fn exchange(data: &str, request: &[u8], head_request: bool) -> Message {
    let mut stream = TcpStream::connect(data.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 100];
            if let framing::ResponseFramed::Complete(head) = framing::response(&buf, &mut headers, head_request) {
                let line = format!("{} {}", head.code, head.reason);
                let message = Message { line, fields: fields(head.headers), body: Vec::new() };
                let (len, body) = (head.len, head.body);
                buf.drain(..len);
                let body = match body {
                    framing::ResponseBody::Empty => Vec::new(),
                    framing::ResponseBody::Length(n) => {
                        while buf.len() < n as usize {
                            assert!(read_more(&mut buf, &mut stream).await, "the body ended early");
                        }
                        buf[..n as usize].to_vec()
                    }
                    framing::ResponseBody::Chunked => {
                        read_chunked(&mut buf, &mut stream).await.expect("a chunked body")
                    }
                    framing::ResponseBody::UntilClose => {
                        while read_more(&mut buf, &mut stream).await {}
                        buf.clone()
                    }
                };
                return Message { body, ..message };
            }
            assert!(read_more(&mut buf, &mut stream).await, "no response head: {:?}", String::from_utf8_lossy(&buf));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("a response within 10 s")
}

/// Requests and responses from a fixed seed: methods, paths, forwarding and hop-by-hop fields,
/// bodies; responses with a length, chunked, close-delimited, bodiless, with and without their
/// own `Via` and `Date`.
fn cases(n: usize) -> Vec<(String, bool, Vec<u8>, Vec<u8>)> {
    let mut rng = fastrand::Rng::with_seed(0x005b_0a4d);
    let pick = |rng: &mut fastrand::Rng, from: &[&'static str]| from[rng.usize(..from.len())];
    (0..n)
        .map(|_| {
            // Plain HTTP to the recording endpoint or to one that is down, or a SOAP message
            // (SOAP 1.2 with WS-Addressing and a `To`, SOAP 1.1 by its action, or by its body's
            // namespace).
            let kind = pick(&mut rng, &["plain", "plain", "plain", "dead", "soap12", "soap11", "body"]);
            let soap = kind.starts_with("soap") || kind == "body";
            let method = if soap { "POST" } else { pick(&mut rng, &["GET", "GET", "POST", "PUT", "DELETE", "HEAD"]) };
            let path = pick(&mut rng, &["/", "/a/b?x=1", "/svc", "/?q=%20"]);
            let mut request = format!("{method} {path} HTTP/1.1\r\nHost: router.example\r\n");
            request.push_str(match kind {
                "plain" => "X-Switchboard-Contract: urn:fast/IFast\r\n",
                "dead" => "X-Switchboard-Contract: urn:dead/IDead\r\n",
                "soap12" => "Content-Type: application/soap+xml; charset=utf-8; action=\"urn:fast/IFast/Op\"\r\n",
                "soap11" => "Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"urn:fast/IFast/Op\"\r\n",
                _ => "Content-Type: text/xml; charset=utf-8\r\nSOAPAction: \"\"\r\n",
            });
            for field in [
                "X-Forwarded-For: 10.1.1.1\r\n",
                "Via: 1.0 lb\r\n",
                "X-Forwarded-Proto: https\r\n",
                "X-Forwarded-Host: public.example\r\n",
                "Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\n",
                "Keep-Alive: timeout=5\r\n",
                "TE: trailers\r\n",
                "X-Switchboard-Other: 1\r\n",
                "Accept: */*\r\nAccept: text/plain\r\n",
                "User-Agent: t/1\r\n",
                "Connection: close\r\n",
            ] {
                if rng.bool() {
                    request.push_str(field);
                }
            }
            let body = match (kind, rng.usize(..3)) {
                ("soap12", _) => format!(
                    r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">urn:fast/IFast/Op</a:Action><a:To s:mustUnderstand="1">http://router.example/svc</a:To></s:Header><s:Body><Op xmlns="urn:fast"><v>{}</v></Op></s:Body></s:Envelope>"#,
                    "v".repeat(rng.usize(0..3_000))
                ),
                ("soap11" | "body", _) => format!(
                    r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><Op xmlns="urn:fast"><v>{}</v></Op></s:Body></s:Envelope>"#,
                    "v".repeat(rng.usize(0..3_000))
                ),
                (_, 0) => String::new(),
                (_, 1) => "hello".to_owned(),
                _ => "x".repeat(rng.usize(1..40_000)),
            };
            if !body.is_empty() || method == "POST" {
                request.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            request.push_str("\r\n");
            request.push_str(&body);

            let status = pick(
                &mut rng,
                &[
                    "200 OK",
                    "201 Created",
                    "404 Not Found",
                    "500 Internal Server Error",
                    "200 Fine",
                    "204 No Content",
                    "302 Found",
                    "304 Not Modified",
                ],
            );
            let mut response = String::new();
            if rng.u8(..8) == 0 {
                response.push_str("HTTP/1.1 100 Continue\r\n\r\n");
            }
            response.push_str(&format!("HTTP/1.1 {status}\r\nServer: rec\r\nX-Id: 7\r\n"));
            if rng.bool() {
                response.push_str("Via: 1.1 backend\r\n");
            }
            if rng.bool() {
                response.push_str("Date: Mon, 07 Dec 2026 10:00:00 GMT\r\n");
            }
            if rng.bool() {
                response.push_str("Connection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=3\r\n");
            }
            let payload = "y".repeat(rng.usize(0..20_000));
            if status.starts_with("204") || status.starts_with("304") {
                response.push_str("\r\n");
            } else {
                match rng.usize(..3) {
                    0 => response.push_str(&format!("Content-Length: {}\r\n\r\n{payload}", payload.len())),
                    1 => {
                        response.push_str("Transfer-Encoding: chunked\r\n\r\n");
                        for part in payload.as_bytes().chunks(7_000) {
                            response.push_str(&format!(
                                "{:x};e=1\r\n{}\r\n",
                                part.len(),
                                String::from_utf8_lossy(part)
                            ));
                        }
                        response.push_str("0\r\n\r\n");
                    }
                    _ => response.push_str(&format!("\r\n{payload}")),
                }
            }
            (method.to_owned(), kind != "dead", request.into_bytes(), response.into_bytes())
        })
        .collect()
}

/// `request` with `X-Switchboard-Explain: 0` after its request line.
fn via_hyper(request: &[u8]) -> Vec<u8> {
    let line_end = request.iter().position(|&b| b == b'\n').unwrap() + 1;
    [&request[..line_end], b"X-Switchboard-Explain: 0\r\n", &request[line_end..]].concat()
}

const CASES: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn the_own_loop_sends_and_answers_every_generated_exchange_as_the_hyper_path_does() {
    let cluster = TestCluster::start(1);
    cluster.wait_stable().await;
    let recorder = Recorder::start().await;
    cluster.register_all(1, "urn:fast", "IFast", std::slice::from_ref(&recorder.address)).await;
    // Nothing listens there: both paths answer 503 no_endpoint_reachable.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    cluster.register_all(1, "urn:dead", "IDead", &[dead]).await;
    let data = cluster.data(1);
    let mut compared = 0;
    for (method, live, request, response) in cases(CASES) {
        *recorder.script.lock().unwrap() = response.clone();
        let head = method == "HEAD";
        let fast = exchange(&data, &request, head).await;
        let hyper = exchange(&data, &via_hyper(&request), head).await;
        let seen: Vec<Message> = std::mem::take(&mut *recorder.seen.lock().unwrap());
        let show = |bytes: &[u8]| String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned();
        assert_eq!(
            seen.len(),
            if live { 2 } else { 0 },
            "the endpoint got {} requests for\n{}",
            seen.len(),
            show(&request)
        );
        if live {
            assert_eq!(seen[0], seen[1], "the endpoint got different requests for\n{}", show(&request));
        }
        assert_eq!(
            fast,
            hyper,
            "the client got different responses for\n{}\nanswered\n{}",
            show(&request),
            show(&response)
        );
        compared += 1;
    }
    assert_eq!(compared, CASES);
}

/// Reads everything the node sends on `stream` until it closes or `quiet` passes without a byte.
async fn drain(stream: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
    }
    all
}

/// The statuses of the responses in `bytes`, in order.
fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ").filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok()).collect()
}

/// What the endpoint received while `send` ran, up to a sentinel request sent after it on a new
/// connection (so that everything the case made the node forward has arrived).
async fn received_for(recorder: &Recorder, data: &str, bytes: &[u8]) -> (Received, Vec<u16>) {
    recorder.seen.lock().unwrap().clear();
    let mut stream = TcpStream::connect(data.trim_start_matches("http://")).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let answered = drain(&mut stream, Duration::from_millis(1500)).await;
    drop(stream);
    let sentinel = b"GET /sentinel HTTP/1.1\r\nX-Switchboard-Contract: urn:fast/IFast\r\n\r\n";
    let echoed = exchange(data, sentinel, false).await;
    assert_eq!(echoed.body, b"/svc/sentinel", "the sentinel came back");
    let seen = recorder.seen.lock().unwrap().clone();
    let (sentinel, case): (Vec<_>, Vec<_>) = seen.into_iter().partition(|m| m.line == "GET /svc/sentinel");
    assert_eq!(sentinel.len(), 1);
    (case.into_iter().map(|m| (m.line, m.body)).collect(), statuses(&answered))
}

/// What the endpoint received: each request's line and body.
type Received = Vec<(String, Vec<u8>)>;

const CONTRACT: &str = "X-Switchboard-Contract: urn:fast/IFast\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order_across_a_hand_over_to_hyper() {
    let cluster = TestCluster::start(1);
    cluster.wait_stable().await;
    let recorder = Recorder::start().await;
    cluster.register_all(1, "urn:fast", "IFast", std::slice::from_ref(&recorder.address)).await;
    // The loop answers the first, hyper the second (chunked) and the rest of the connection.
    let bytes = format!(
        "GET /one HTTP/1.1\r\n{CONTRACT}\r\nPOST /two HTTP/1.1\r\n{CONTRACT}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
         GET /three HTTP/1.1\r\n{CONTRACT}Connection: close\r\n\r\n"
    );
    let (seen, statuses) = received_for(&recorder, &cluster.data(1), bytes.as_bytes()).await;
    let expected: Received = vec![
        ("GET /svc/one".into(), vec![]),
        ("POST /svc/two".into(), b"abc".to_vec()),
        ("GET /svc/three".into(), vec![]),
    ];
    assert_eq!(seen, expected);
    assert_eq!(statuses, [200, 200, 200]);
}

/// Each case embeds a request (`/smuggled`) where a parser that frames the message differently
/// from RFC 9112 would find one; the endpoint must receive exactly what the client framed.
#[tokio::test(flavor = "multi_thread")]
async fn no_smuggling_case_splits_or_merges_a_request_differently_from_the_client() {
    let cluster = TestCluster::start(1);
    cluster.wait_stable().await;
    let recorder = Recorder::start().await;
    cluster.register_all(1, "urn:fast", "IFast", std::slice::from_ref(&recorder.address)).await;
    let smuggled = format!("GET /smuggled HTTP/1.1\r\n{CONTRACT}\r\n");
    let chunk = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let post = |fields: &str, body: &str| format!("POST /a HTTP/1.1\r\n{CONTRACT}{fields}\r\n{body}");
    let posted = |body: &str| vec![("POST /svc/a".to_owned(), body.as_bytes().to_vec())];
    let none: Received = Vec::new();
    let cases: Vec<(&str, String, Received)> = vec![
        (
            "CL.TE: the coding wins, the connection closes after",
            post(
                &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", 5 + smuggled.len()),
                &format!("0\r\n\r\n{smuggled}"),
            ),
            posted(""),
        ),
        (
            "TE.CL: the coding wins",
            post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", &chunk),
            posted(&smuggled),
        ),
        (
            "TE.TE: a second, unknown coding",
            post("Transfer-Encoding: chunked\r\nTransfer-Encoding: cow\r\n", &chunk),
            none.clone(),
        ),
        ("TE.TE: xchunked", post("Transfer-Encoding: xchunked\r\nContent-Length: 3\r\n", &chunk), none.clone()),
        ("whitespace before the colon", post("Transfer-Encoding : chunked\r\n", &chunk), none.clone()),
        ("an obs-fold line", post("X-A: b\r\n Transfer-Encoding: chunked\r\n", &chunk), none.clone()),
        ("two different lengths", post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"), none.clone()),
        ("a signed length", post("Content-Length: +5\r\n", "hello"), none.clone()),
        ("a NUL in a field", post("X-A: a\0b\r\nContent-Length: 5\r\n", "hello"), none.clone()),
        ("a bare CR in a field", post("X-A: a\rb\r\nContent-Length: 5\r\n", "hello"), none.clone()),
        (
            "an oversized chunk size",
            post("Transfer-Encoding: chunked\r\n", &format!("fffffffffffffffff1\r\n{smuggled}")),
            none.clone(),
        ),
        (
            "a bare LF in a chunk extension",
            post("Transfer-Encoding: chunked\r\n", &format!("5;a\nb\r\nhello\r\n0\r\n\r\n{smuggled}")),
            none.clone(),
        ),
        (
            "a request inside a body framed by its length",
            post(&format!("Content-Length: {}\r\n", smuggled.len()), &smuggled),
            posted(&smuggled),
        ),
        ("equal repeated lengths", post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), posted("hello")),
    ];
    for (what, bytes, expected) in cases {
        let (seen, statuses) = received_for(&recorder, &cluster.data(1), bytes.as_bytes()).await;
        assert_eq!(seen, expected, "{what}: the endpoint received something else (answers {statuses:?})");
        if expected.is_empty() {
            assert!(statuses.first().is_none_or(|s| (400..500).contains(s)), "{what}: answered {statuses:?}");
        }
    }
}

/// A client whose body breaks (a malformed chunk, a length it never sends) gets a 400, and the
/// endpoint it was streaming to is not blamed: no ejection, however many such requests come.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_client_body_is_the_clients_error_and_never_ejects_the_endpoint() {
    let cluster = TestCluster::start(1);
    cluster.wait_stable().await;
    let recorder = Recorder::start().await;
    cluster.register_all(1, "urn:fast", "IFast", std::slice::from_ref(&recorder.address)).await;
    let data = cluster.data(1);
    let broken = [
        // Through hyper: a chunk size that overflows.
        format!("POST /a HTTP/1.1\r\n{CONTRACT}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc"),
        // Through the own loop: a large body whose client goes away half-way.
        format!("POST /a HTTP/1.1\r\n{CONTRACT}Content-Length: 200000\r\n\r\n{}", "z".repeat(100_000)),
    ];
    const ROUNDS: usize = 6;
    for _ in 0..ROUNDS {
        for bytes in &broken {
            let mut stream = TcpStream::connect(data.trim_start_matches("http://")).await.unwrap();
            stream.write_all(bytes.as_bytes()).await.unwrap();
            // The client stops sending; the overflowing chunk is answered at once.
            stream.shutdown().await.unwrap();
            let answered = drain(&mut stream, Duration::from_secs(5)).await;
            let statuses = statuses(&answered);
            assert!(statuses.is_empty() || statuses == [400], "answered {statuses:?}");
        }
    }
    let errors =
        crate::health::metric(&cluster, 1, "switchboard_route_errors_total{code=\"request_body_error\"}").await;
    assert_eq!(errors, (2 * ROUNDS) as f64, "every broken body counted as the client's error");
    assert_eq!(crate::health::metric(&cluster, 1, "switchboard_ejections_total").await, 0.0);
    let echoed = exchange(&data, format!("GET /still HTTP/1.1\r\n{CONTRACT}\r\n").as_bytes(), false).await;
    assert_eq!(echoed.body, b"/svc/still");
}

/// An endpoint that serves one connection at a time gets requests from both paths in turn: a
/// path that needs a new connection first closes the other path's idle one (found by the SOAP
/// interop matrix: SOAP::Lite's daemon waited on the own loop's idle connection while the hyper
/// path's WSDL request timed out).
#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_serving_one_connection_at_a_time_takes_requests_from_both_paths_in_turn() {
    let cluster = TestCluster::start_with(
        1,
        crate::harness::Options { args: vec!["--try-timeout-ms".into(), "3000".into()], ..Default::default() },
    );
    cluster.wait_stable().await;
    let recorder = Recorder::start_serving(true).await;
    cluster.register_all(1, "urn:fast", "IFast", std::slice::from_ref(&recorder.address)).await;
    let data = cluster.data(1);
    for (round, hyper) in [false, true, false, true, true, false].into_iter().enumerate() {
        let request = format!("GET /r{round} HTTP/1.1\r\n{CONTRACT}\r\n");
        let request = if hyper { via_hyper(request.as_bytes()) } else { request.into_bytes() };
        let answer = exchange(&data, &request, false).await;
        assert_eq!(
            (answer.line.as_str(), answer.body),
            ("200 OK", format!("/svc/r{round}").into_bytes()),
            "round {round}"
        );
    }
}
