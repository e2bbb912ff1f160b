//! The framing of HTTP/1.1 requests (RFC 9112) on `httparse`, for a proxy loop that reads
//! requests itself: where a head ends, how long its body is, and whether the connection stays
//! open.
//!
//! The judgement is strict and never wider than hyper's, the parser of the general path: a
//! request is [`Framed::Complete`] only when hyper would read the same head and the same body
//! from the same bytes, [`Framed::Refused`] only with the status hyper answers for it, and
//! everything else (HTTP/1.0, `Expect`, `Upgrade`, `CONNECT`, a target that is not a path, a
//! `Transfer-Encoding` other than one plain `chunked`, a length given as a list) is
//! [`Framed::Unusual`]: the caller hands the bytes to hyper, which decides. A test holds the two
//! parsers to this on generated requests.
//!
//! Chunked bodies are read by [`Chunked`], a decoder that yields the data and refuses what
//! RFC 9112 section 7.1 does not allow (a size that is not hexadecimal or overflows, a missing
//! CRLF, a bare CR or LF, a malformed trailer), so that the bytes an endpoint receives are exactly
//! the message the client framed.

use super::HeaderView;

/// Most header fields a request may carry (hyper's default; more is refused, 431).
pub const MAX_HEADERS: usize = 100;

/// Longest request target read here (hyper refuses longer ones itself).
const MAX_TARGET: usize = 8 * 1024;

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 16 * 1024;

/// Longest trailer section of a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Exactly this many bytes (zero for a request without a length).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A request head, read in place.
#[derive(Debug)]
pub struct RequestHead<'b, 'h> {
    pub method: &'b str,
    /// The origin-form target: a path and maybe a query.
    pub target: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    pub body: Body,
    /// The client may send another request on this connection after this one.
    pub keep_alive: bool,
    /// Bytes of the head, its final empty line included.
    pub len: usize,
}

/// What the bytes read so far of a request say.
#[derive(Debug)]
pub enum Framed<T> {
    Complete(T),
    /// The head is not complete yet.
    Partial,
    /// The request is malformed: answer this status and close the connection.
    Refused(Refused),
    /// Not read here: the general path reads it from the same bytes.
    Unusual(&'static str),
}

/// Why a request is refused, with the status hyper answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the request line or a header field is malformed")]
    Malformed,
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the Content-Length is not a number, or two of them differ")]
    BadLength,
}

impl Refused {
    pub fn status(self) -> http::StatusCode {
        match self {
            Self::Malformed | Self::BadLength => http::StatusCode::BAD_REQUEST,
            Self::TooManyHeaders => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// Reads a request head at the start of `buf` into `headers`.
pub fn request<'b, 'h>(buf: &'b [u8], headers: &'h mut [httparse::Header<'b>]) -> Framed<RequestHead<'b, 'h>> {
    let mut request = httparse::Request::new(headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Framed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Framed::Refused(Refused::TooManyHeaders),
        Err(_) => return Framed::Refused(Refused::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (request.method, request.path, request.version) else {
        return Framed::Refused(Refused::Malformed);
    };
    if version != 1 {
        return Framed::Unusual("HTTP/1.0");
    }
    if method == "CONNECT" {
        return Framed::Unusual("CONNECT");
    }
    if !target.starts_with('/') || target.len() > MAX_TARGET || http::uri::PathAndQuery::try_from(target).is_err() {
        return Framed::Unusual("a target that is not a plain path");
    }
    let headers: &'h [httparse::Header<'b>] = request.headers;
    let mut length = None;
    let mut chunked = false;
    let mut keep_alive = true;
    for header in headers {
        let name = header.name;
        // Both framings at once is left to hyper (the coding wins, and the connection closes
        // after, as RFC 9112 section 6.3 allows), whatever the lengths say.
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if length.is_some() {
                return Framed::Unusual("both Transfer-Encoding and Content-Length");
            }
            if chunked || !header.value.eq_ignore_ascii_case(b"chunked") {
                return Framed::Unusual("a transfer coding other than one chunked");
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            if chunked {
                return Framed::Unusual("both Transfer-Encoding and Content-Length");
            }
            if header.value.contains(&b',') {
                return Framed::Unusual("a Content-Length list");
            }
            let Some(value) = digits(header.value) else { return Framed::Refused(Refused::BadLength) };
            if length.is_some_and(|seen| seen != value) {
                return Framed::Refused(Refused::BadLength);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive &= !tokens(header.value).any(|token| token.eq_ignore_ascii_case("close"));
        } else if name.eq_ignore_ascii_case("expect") {
            return Framed::Unusual("Expect");
        } else if name.eq_ignore_ascii_case("upgrade") {
            return Framed::Unusual("Upgrade");
        }
    }
    let body = if chunked { Body::Chunked } else { Body::Length(length.unwrap_or(0)) };
    Framed::Complete(RequestHead { method, target, headers, body, keep_alive, len })
}

/// A decimal length: digits only, no sign, no overflow (as hyper reads it).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |sum, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        sum.checked_mul(10)?.checked_add(digit)
    })
}

/// The comma-separated tokens of a header value (as text; none if it is not text).
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    super::text(value).into_iter().flat_map(|text| text.split(',')).map(str::trim)
}

impl HeaderView for RequestHead<'_, '_> {
    fn value(&self, name: &http::HeaderName) -> Option<&[u8]> {
        self.headers.value(name)
    }

    fn value_of(&self, name: &str) -> Option<&[u8]> {
        self.headers.value_of(name)
    }
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// None at all (a `HEAD` request's response, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the endpoint closes the connection.
    UntilClose,
}

/// A response head, read in place.
#[derive(Debug)]
pub struct ResponseHead<'b, 'h> {
    pub code: u16,
    pub reason: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    pub body: ResponseBody,
    /// The endpoint keeps the connection open after the body.
    pub keep_alive: bool,
    pub len: usize,
}

/// What the bytes read so far of a response say.
#[derive(Debug)]
pub enum ResponseFramed<'b, 'h> {
    Complete(ResponseHead<'b, 'h>),
    /// An informational (1xx) head of this many bytes: skipped, as hyper skips it; the final
    /// response follows.
    Informational(usize),
    Partial,
    /// Not a response this router forwards (as hyper's client refuses it).
    Bad(&'static str),
}

/// Reads a response head at the start of `buf`, for a request whose method was `HEAD` or not,
/// with the rules of RFC 9112 section 6.3 as hyper's client applies them.
pub fn response<'b, 'h>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>],
    head_request: bool,
) -> ResponseFramed<'b, 'h> {
    let mut response = httparse::Response::new(headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return ResponseFramed::Partial,
        Err(_) => return ResponseFramed::Bad("a malformed response head"),
    };
    let (Some(version), Some(code), Some(reason)) = (response.version, response.code, response.reason) else {
        return ResponseFramed::Bad("a malformed response head");
    };
    if !(100..=999).contains(&code) {
        return ResponseFramed::Bad("a status code out of range");
    }
    match code {
        101 => return ResponseFramed::Bad("a protocol switch nobody asked for"),
        100..=199 => return ResponseFramed::Informational(len),
        _ => {}
    }
    let headers: &'h [httparse::Header<'b>] = response.headers;
    let mut keep_alive = version == 1;
    let mut closed = false;
    let mut last_coding = None;
    // Every Content-Length value (a field may hold a list): all numbers, all equal.
    let (mut length, mut length_seen, mut length_bad) = (None, false, false);
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            last_coding = Some(header.value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            length_seen = true;
            let Some(text) = super::text(header.value) else {
                length_bad = true;
                continue;
            };
            for value in text.split(',').map(|value| digits(value.trim().as_bytes())) {
                match (value, length) {
                    (Some(value), None) => length = Some(value),
                    (Some(value), Some(seen)) if value == seen => {}
                    _ => length_bad = true,
                }
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            if tokens(header.value).any(|token| token.eq_ignore_ascii_case("close")) {
                closed = true;
            } else if version == 0 && tokens(header.value).any(|token| token.eq_ignore_ascii_case("keep-alive")) {
                keep_alive = true;
            }
        }
    }
    let body = if head_request || code == 204 || code == 304 {
        ResponseBody::Empty
    } else if let Some(coding) = last_coding {
        if version == 0 {
            return ResponseFramed::Bad("HTTP/1.0 with a transfer coding");
        }
        let chunked = tokens(coding).last().is_some_and(|last| last.eq_ignore_ascii_case("chunked"));
        if chunked { ResponseBody::Chunked } else { ResponseBody::UntilClose }
    } else {
        match (length_seen, length_bad, length) {
            (false, ..) => ResponseBody::UntilClose,
            (true, false, Some(length)) => ResponseBody::Length(length),
            (true, ..) => return ResponseFramed::Bad("an invalid Content-Length"),
        }
    };
    if closed || body == ResponseBody::UntilClose || (last_coding.is_some() && length_seen) {
        keep_alive = false;
    }
    ResponseFramed::Complete(ResponseHead { code, reason, headers, body, keep_alive, len })
}

/// A chunked body's framing is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked body: {0}")]
pub struct BadChunk(pub &'static str);

/// Reads a chunked body as it arrives, in any pieces.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: ChunkState,
    /// The current size line until its end arrives, then the trailer section as it arrives.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data; `true` once its CR was read.
    DataEnd(bool),
    /// In the trailer section: at the start of a line, inside one, or after a line's CR.
    Trailers,
    TrailerLine,
    TrailerLf,
    /// After the CR of the section's final empty line.
    EndLf,
    Done,
}

/// What one call of [`Chunked::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRead {
    /// Bytes of the input that belong to the body (the rest, if any, is the next message).
    pub consumed: usize,
    /// Ranges of the input that are data.
    pub data: Vec<std::ops::Range<usize>>,
    /// The body's last byte was read.
    pub done: bool,
}

impl Chunked {
    /// Reads the next piece of the body.
    pub fn read(&mut self, input: &[u8]) -> Result<ChunkRead, BadChunk> {
        let mut at = 0;
        let mut data = Vec::new();
        while at < input.len() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size => {
                    let Some(end) = self.line_end(input, &mut at, MAX_CHUNK_LINE)? else { break };
                    let size = chunk_size(&self.line[..end])?;
                    self.line.clear();
                    self.state = if size == 0 { ChunkState::Trailers } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len() - at);
                    data.push(at..at + take);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { ChunkState::DataEnd(false) } else { ChunkState::Data(left) };
                }
                ChunkState::DataEnd(cr) => {
                    match (cr, input[at]) {
                        (false, b'\r') => self.state = ChunkState::DataEnd(true),
                        (true, b'\n') => self.state = ChunkState::Size,
                        _ => return Err(BadChunk("a chunk's data does not end with CRLF")),
                    }
                    at += 1;
                }
                // As hyper reads trailers: lines end with CRLF (a bare LF inside one is kept),
                // an empty line ends the section, and the section must then parse as fields.
                ChunkState::Trailers | ChunkState::TrailerLine | ChunkState::TrailerLf | ChunkState::EndLf => {
                    let byte = input[at];
                    at += 1;
                    self.line.push(byte);
                    if self.line.len() > MAX_TRAILERS {
                        return Err(BadChunk("the trailers are too long"));
                    }
                    self.state = match (self.state, byte) {
                        (ChunkState::Trailers, b'\r') => ChunkState::EndLf,
                        (ChunkState::TrailerLine, b'\r') => ChunkState::TrailerLf,
                        (ChunkState::Trailers | ChunkState::TrailerLine, _) => ChunkState::TrailerLine,
                        (ChunkState::TrailerLf, b'\n') => ChunkState::Trailers,
                        (ChunkState::EndLf, b'\n') => {
                            trailers(&self.line)?;
                            ChunkState::Done
                        }
                        _ => return Err(BadChunk("a trailer line does not end with CRLF")),
                    };
                }
                ChunkState::Done => {}
            }
        }
        Ok(ChunkRead { consumed: at, data, done: self.state == ChunkState::Done })
    }

    /// Collects a CRLF-terminated line into `self.line`; the length of its content once
    /// complete. A bare CR or LF, or a line longer than `max` is refused.
    fn line_end(&mut self, input: &[u8], at: &mut usize, max: usize) -> Result<Option<usize>, BadChunk> {
        while *at < input.len() {
            let byte = input[*at];
            *at += 1;
            match (self.line.last(), byte) {
                (Some(b'\r'), b'\n') => return Ok(Some(self.line.len() - 1)),
                (Some(b'\r'), _) | (_, b'\n') => return Err(BadChunk("a line does not end with CRLF")),
                _ => self.line.push(byte),
            }
            if self.line.len() > max {
                return Err(BadChunk("a chunk size line is too long"));
            }
        }
        Ok(None)
    }
}

/// `chunk-size [ chunk-ext ]`: hexadecimal digits (any number, the value within 64 bits), then
/// optional spaces or tabs, then optional `;`-extensions (ignored, as hyper ignores them).
fn chunk_size(line: &[u8]) -> Result<u64, BadChunk> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(BadChunk("the chunk size has no hexadecimal digit"));
    }
    let size = line[..digits].iter().try_fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16).map(u64::from)?;
        size.checked_mul(16)?.checked_add(digit)
    });
    let size = size.ok_or(BadChunk("the chunk size overflows 64 bits"))?;
    let rest = &line[digits..];
    let rest = &rest[rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count()..];
    if !(rest.is_empty() || rest[0] == b';') {
        return Err(BadChunk("the chunk size is followed by something other than an extension"));
    }
    Ok(size)
}

/// The trailer section, its final empty line included: fields as hyper parses them (at most
/// [`MAX_HEADERS`]).
fn trailers(section: &[u8]) -> Result<(), BadChunk> {
    if section == b"\r\n" {
        return Ok(());
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        _ => Err(BadChunk("the trailer fields are malformed")),
    }
}

#[cfg(test)]
mod tests;
