use std::convert::Infallible;

use http_body_util::BodyExt;
use proptest::prelude::*;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

use super::*;

fn read(buf: &[u8]) -> Framed<(String, Body, bool, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match request(buf, &mut headers) {
        Framed::Complete(head) => Framed::Complete((head.method.to_owned(), head.body, head.keep_alive, head.len)),
        Framed::Partial => Framed::Partial,
        Framed::Refused(refused) => Framed::Refused(refused),
        Framed::Unusual(why) => Framed::Unusual(why),
    }
}

fn body(buf: &[u8]) -> Body {
    match read(buf) {
        Framed::Complete((_, body, ..)) => body,
        other => panic!("not complete: {other:?}"),
    }
}

fn refused(buf: &[u8]) -> Refused {
    match read(buf) {
        Framed::Refused(refused) => refused,
        other => panic!("not refused: {other:?}"),
    }
}

fn unusual(buf: &[u8]) -> &'static str {
    match read(buf) {
        Framed::Unusual(why) => why,
        other => panic!("not unusual: {other:?}"),
    }
}

#[test]
fn a_request_is_framed_by_its_length_or_chunked_and_without_either_has_no_body() {
    assert_eq!(body(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"), Body::Length(0));
    assert_eq!(body(b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), Body::Length(5));
    assert_eq!(body(b"POST /a HTTP/1.1\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n"), Body::Length(5));
    assert_eq!(body(b"POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"), Body::Chunked);
}

#[test]
fn conflicting_or_malformed_lengths_and_malformed_fields_are_refused_as_hyper_refuses_them() {
    for bad in ["5, 6", "+5", "-1", "0x5", "5 5", "", "18446744073709551616"] {
        let request = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        if bad.contains(',') {
            assert_eq!(unusual(request.as_bytes()), "a Content-Length list");
        } else {
            assert_eq!(refused(request.as_bytes()), Refused::BadLength, "{bad:?}");
        }
    }
    assert_eq!(refused(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), Refused::BadLength);
    // obs-fold, whitespace before the colon, a NUL, a bare CR.
    assert_eq!(refused(b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"), Refused::Malformed);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n"), Refused::Malformed);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nA: b\0c\r\n\r\n"), Refused::Malformed);
    assert_eq!(refused(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"), Refused::Malformed);
    let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(refused(request.as_bytes()), Refused::TooManyHeaders);
    assert_eq!(Refused::TooManyHeaders.status(), http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(Refused::BadLength.status(), http::StatusCode::BAD_REQUEST);
}

#[test]
fn what_the_loop_does_not_read_is_left_to_the_general_path() {
    let cases: [(&[u8], &str); 9] = [
        (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.0"),
        (b"CONNECT a:443 HTTP/1.1\r\n\r\n", "CONNECT"),
        (b"GET http://a/ HTTP/1.1\r\n\r\n", "a target that is not a plain path"),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", "a target that is not a plain path"),
        (b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", "Expect"),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", "Upgrade"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "a transfer coding other than one chunked"),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a transfer coding other than one chunked",
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
    ];
    for (request, why) in cases {
        assert_eq!(unusual(request), why, "{}", String::from_utf8_lossy(request));
    }
}

#[test]
fn keep_alive_ends_with_any_close_token_and_pipelined_requests_are_read_one_at_a_time() {
    let keeps = |request: &[u8]| match read(request) {
        Framed::Complete((_, _, keep_alive, _)) => keep_alive,
        other => panic!("{other:?}"),
    };
    assert!(keeps(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(keeps(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"));
    assert!(!keeps(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"));
    assert!(!keeps(b"GET / HTTP/1.1\r\nConnection: te\r\nConnection: close\r\n\r\n"));
    // Bare LF line ends are read as httparse (and so hyper) reads them.
    assert!(keeps(b"GET / HTTP/1.1\nHost: a\n\n"));

    let two = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
    let Framed::Complete((_, _, _, first)) = read(two) else { panic!() };
    assert_eq!(first, 19);
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Framed::Complete(second) = request(&two[first..], &mut headers) else { panic!() };
    assert_eq!(second.target, "/2");
    assert!(matches!(read(b"GET / HTTP/1.1\r\nHost: a\r\n"), Framed::Partial));
}

/// The body a chunked decoder yields from `input` fed in pieces of `piece` bytes, and how many
/// bytes of `input` it took.
fn dechunk(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), BadChunk> {
    let mut decoder = Chunked::default();
    let mut out = Vec::new();
    let mut taken = 0;
    for part in input.chunks(piece.max(1)) {
        let read = decoder.read(part)?;
        for range in read.data {
            out.extend_from_slice(&part[range]);
        }
        taken += read.consumed;
        if read.done {
            return Ok((out, taken));
        }
    }
    Err(BadChunk("ended early"))
}

#[test]
fn a_chunked_body_is_read_whole_in_any_pieces_and_stops_at_its_end() {
    let body = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nExpires: never\r\n\r\nGET /next";
    for piece in [1, 2, 3, 7, body.len()] {
        let (data, taken) = dechunk(body, piece).unwrap();
        assert_eq!((&data[..], taken), (&b"hello world"[..], body.len() - 9), "pieces of {piece}");
    }
    assert_eq!(dechunk(b"0000000000000000000A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap().0, b"0123456789");
    assert_eq!(dechunk(b"3 \t;x\r\nabc\r\n0\r\n\r\n", 1).unwrap().0, b"abc");
}

#[test]
fn a_chunked_body_with_broken_framing_is_refused() {
    let broken: [&[u8]; 9] = [
        b"x\r\n\r\n",
        b"\r\n",
        b"10000000000000000\r\n",
        b"5\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"5 x\r\nhello\r\n0\r\n\r\n",
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",
        b"0\r\nnot a field\r\n\r\n",
    ];
    for input in broken {
        for piece in [1, input.len()] {
            assert!(dechunk(input, piece).is_err(), "{:?} in pieces of {piece}", String::from_utf8_lossy(input));
        }
    }
}

/// A request as read: method, target, header names (lowercase) and values, body; or the status
/// of the refusal (0: the connection closed without one, as when a body cannot be read).
type Read = Result<(String, String, Vec<(String, Vec<u8>)>, Vec<u8>), u16>;

/// What hyper's server makes of `bytes`: the request it read (method, target, header names
/// and values in order, body), or the status it answered.
fn hyper_reads(bytes: &[u8]) -> Read {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let seen_tx = seen_tx.lock().unwrap().take();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map(|collected| collected.to_bytes().to_vec());
                let headers =
                    parts.headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())).collect();
                let target = parts.uri.path_and_query().map_or(String::new(), |p| p.as_str().to_owned());
                if let Some(tx) = seen_tx {
                    let _ = tx.send(body.map(|body| (parts.method.to_string(), target, headers, body)));
                }
                Ok::<_, Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            }
        });
        let serving = tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(server);
            let _ = hyper::server::conn::http1::Builder::new().half_close(true).serve_connection(io, service).await;
        });
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), client.read_to_end(&mut answer)).await;
        serving.abort();
        match seen_rx.await {
            Ok(Ok(seen)) => Ok(seen),
            // The body could not be read: hyper closes without an answer.
            Ok(Err(_)) => Err(0),
            Err(_) => {
                let status = answer.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
                Err(status.unwrap_or(0))
            }
        }
    })
}

/// What the fast path makes of `bytes`: the same shape as [`hyper_reads`], or `None` when it
/// leaves the request to hyper (or the head is incomplete).
fn fast_reads(bytes: &[u8]) -> Option<Read> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = match request(bytes, &mut headers) {
        Framed::Complete(head) => head,
        Framed::Refused(refused) => return Some(Err(refused.status().as_u16())),
        Framed::Partial | Framed::Unusual(_) => return None,
    };
    let rest = &bytes[head.len..];
    let body = match head.body {
        Body::Length(n) => match rest.get(..usize::try_from(n).ok()?) {
            Some(body) => body.to_vec(),
            // The client closed early: hyper's body errors.
            None => return Some(Err(0)),
        },
        Body::Chunked => match dechunk(rest, rest.len()) {
            Ok((body, _)) => body,
            Err(_) => return Some(Err(0)),
        },
    };
    let headers = head.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    Some(Ok((head.method.to_owned(), head.target.to_owned(), headers, body)))
}

/// A read with its headers in a canonical order and a repeated (equal) length once, as its
/// first field: hyper keeps that one, and the proxy loop forwards only that one.
fn comparable(read: Read) -> Read {
    read.map(|(method, target, headers, body)| {
        let mut length_seen = false;
        let mut headers: Vec<_> = headers
            .into_iter()
            .filter(|(name, _)| name != "content-length" || !std::mem::replace(&mut length_seen, true))
            .collect();
        headers.sort();
        (method, target, headers, body)
    })
}

/// Pieces of requests, ordinary and hostile, that the generator combines.
fn header_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Host: a.example\r\n".to_owned()),
        Just("Content-Length: 3\r\n".to_owned()),
        Just("Content-Length: 5\r\n".to_owned()),
        Just("content-length: 03\r\n".to_owned()),
        Just("Content-Length: 3, 3\r\n".to_owned()),
        Just("Content-Length: +3\r\n".to_owned()),
        Just("Content-Length : 3\r\n".to_owned()),
        Just("Transfer-Encoding: chunked\r\n".to_owned()),
        Just("Transfer-Encoding: CHUNKED\r\n".to_owned()),
        Just("Transfer-Encoding: gzip\r\n".to_owned()),
        Just("Transfer-Encoding: chunked, identity\r\n".to_owned()),
        Just("Transfer-Encoding:\tchunked \r\n".to_owned()),
        Just("Transfer-Encoding: xchunked\r\n".to_owned()),
        Just("Connection: close\r\n".to_owned()),
        Just("Connection: keep-alive\r\n".to_owned()),
        Just("Expect: 100-continue\r\n".to_owned()),
        Just("SOAPAction: \"urn:a/C/Op\"\r\n".to_owned()),
        Just("X-Folded: a\r\n b\r\n".to_owned()),
        Just("X-Nul: a\0b\r\n".to_owned()),
        Just("X-Cr: a\rb\r\n".to_owned()),
        Just("X-Lf: a\nb: c\r\n".to_owned()),
        Just("X-Obs: caf\u{e9}\r\n".to_owned()),
        "[A-Za-z-]{1,8}: [ -~]{0,12}\r\n",
    ]
}

fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"abc".to_vec()),
        Just(b"abcde".to_vec()),
        Just(b"3\r\nabc\r\n0\r\n\r\n".to_vec()),
        Just(b"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n".to_vec()),
        Just(b"3\r\nabcXX0\r\n\r\n".to_vec()),
        Just(b"fffffffffffffffff\r\nabc\r\n".to_vec()),
        Just(b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// For generated requests, hostile ones included: whenever the fast path reads a request
    /// (rather than leaving it to hyper), hyper reads the same method, target, headers and body,
    /// or both refuse it with the same status.
    #[test]
    fn the_fast_path_reads_every_request_it_takes_exactly_as_hyper_does(
        method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        target in prop_oneof![Just("/".to_owned()), Just("/calc?wsdl".to_owned()), Just("/a/b%20c".to_owned()), Just("http://x/".to_owned()), "/[a-z]{0,6}"],
        lf in prop_oneof![Just("\r\n"), Just("\n")],
        headers in proptest::collection::vec(header_line(), 0..5),
        body in body_bytes(),
    ) {
        let mut bytes = format!("{method} {target} HTTP/1.1{lf}").into_bytes();
        for header in &headers {
            bytes.extend_from_slice(header.as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&body);
        if let Some(fast) = fast_reads(&bytes) {
            let (fast, hyper) = (comparable(fast), comparable(hyper_reads(&bytes)));
            prop_assert_eq!(fast, hyper, "{:?}", String::from_utf8_lossy(&bytes));
        }
    }

    /// Arbitrary bytes never make the request reader or the chunked decoder panic, and what
    /// they report stays inside the input.
    #[test]
    fn arbitrary_bytes_never_break_the_readers(bytes in proptest::collection::vec(any::<u8>(), 0..256), cut in 0usize..256) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        if let Framed::Complete(head) = request(&bytes, &mut headers) {
            prop_assert!(head.len <= bytes.len());
        }
        let mut decoder = Chunked::default();
        let (first, second) = bytes.split_at(cut.min(bytes.len()));
        for part in [first, second] {
            match decoder.read(part) {
                Ok(read) => {
                    prop_assert!(read.consumed <= part.len());
                    prop_assert!(read.data.iter().all(|range| range.end <= read.consumed));
                    if read.done { break; }
                }
                Err(_) => break,
            }
        }
    }
}

/// Requests the fuzzer starts from: ordinary, framed both ways, and hostile.
const SEEDS: [&[u8]; 8] = [
    b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Switchboard-Contract: urn:a/B\r\n\r\n",
    b"POST /calc HTTP/1.1\r\nContent-Type: text/xml\r\nSOAPAction: \"urn:a/C/Op\"\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\nConnection: keep-alive, close\n\n",
    b"PUT /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
    b"DELETE /y HTTP/1.1\r\nA: b\r\n c\r\nContent-Length: 0\r\n\r\n",
];

/// Bytes the mutations insert: the ones framing turns on.
const INTERESTING: &[u8] = b"\r\n\t :,;0159aAfF\0\x7f\xff-+chunkedCL";

fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>) {
    for _ in 0..rng.usize(1..5) {
        let at = rng.usize(..=input.len());
        match rng.u8(..4) {
            0 if at < input.len() => input[at] = INTERESTING[rng.usize(..INTERESTING.len())],
            1 => input.insert(at, INTERESTING[rng.usize(..INTERESTING.len())]),
            2 if at < input.len() => {
                input.remove(at);
            }
            _ => {
                // A field of the request again, somewhere else.
                let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
                let line = [lines[rng.usize(..lines.len())], b"\n"].concat();
                let at = input.iter().position(|&b| b == b'\n').map_or(0, |first| first + 1);
                input.splice(at..at, line);
            }
        }
    }
}

/// A fuzzer of the request reader held to hyper: mutated requests (bytes flipped, inserted,
/// removed, fields repeated) must be read as hyper reads them whenever the reader takes them.
/// Bounded: `SWITCHBOARD_FUZZ_ITERATIONS` inputs (2,000 unless set), the seed printed on failure.
#[test]
fn fuzzing_the_request_reader_finds_no_input_it_reads_otherwise_than_hyper() {
    let iterations = std::env::var("SWITCHBOARD_FUZZ_ITERATIONS").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut taken = 0;
    for _ in 0..iterations {
        let mut input = SEEDS[rng.usize(..SEEDS.len())].to_vec();
        mutate(&mut rng, &mut input);
        if let Some(fast) = fast_reads(&input) {
            taken += 1;
            let hyper = hyper_reads(&input);
            assert_eq!(comparable(fast), comparable(hyper), "seed {seed}: {:?}", String::from_utf8_lossy(&input));
        }
    }
    assert!(taken > iterations / 10, "seed {seed}: only {taken} of {iterations} inputs were read (or refused) here");
}
