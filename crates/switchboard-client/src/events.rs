//! The event stream (`GET /v1/events`) read as a sequence of changes that survives the loss of
//! the router it reads from: the stream remembers the last position the server sent (an event's
//! id, or a heartbeat's) and reconnects to the next router with `Last-Event-ID`, so that no event
//! is missed or repeated.
//!
//! The server-sent-events framing is parsed here (a few lines of the HTML standard's rules)
//! rather than with a crate: a heartbeat is an id with no data, which the standard's
//! dispatching drops but a resuming reader needs.

use std::time::Duration;

use reqwest::Method;
use switchboard_proto::registry::Event;

use crate::ClientError;
use crate::ControlClient;

/// A stream silent for this long is taken for dead and reopened (the server's heartbeat comes
/// every 10 s).
const SILENCE: Duration = Duration::from_secs(40);
/// How long one connection is kept before it is reopened (a resume costs nothing).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(3600);

/// What the stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// One change, in log order.
    Event(Event),
    /// The events since the stream's position are gone from the router (too far behind): reload
    /// the list at applied index `index` or later (a blocking read with `index - 1`), and keep
    /// reading the stream, which goes on after that index.
    Reset { index: u64 },
}

/// The cluster's events, in order, each once; made by [`ControlClient::events`].
#[derive(Debug)]
pub struct EventStream<'a> {
    client: &'a ControlClient,
    /// `contract=...` or empty.
    query: String,
    /// The last id the server sent; sent back as `Last-Event-ID` on reconnecting.
    position: Option<String>,
    /// Where the first connection starts when there is no position yet (`?index=`).
    after: Option<u64>,
    body: Option<reqwest::Response>,
    parser: SseParser,
}

impl ControlClient {
    /// The cluster's events from now (or after entry `after`, an `X-Switchboard-Index` of an
    /// earlier read), of one contract (`{namespace}/{name}`) or all; failing over between the
    /// routers as every call does.
    pub fn events(&self, contract: Option<&str>, after: Option<u64>) -> EventStream<'_> {
        let query = contract
            .and_then(|contract| {
                reqwest::Url::parse_with_params("http://router/", [("contract", contract)])
                    .ok()
                    .and_then(|url| url.query().map(str::to_owned))
            })
            .unwrap_or_default();
        EventStream { client: self, query, position: None, after, body: None, parser: SseParser::default() }
    }
}

impl EventStream<'_> {
    /// The last position the server sent (`N.k` or `N`), if any.
    pub fn position(&self) -> Option<&str> {
        self.position.as_deref()
    }

    /// The next change. A broken connection is reopened on the next router from the last
    /// position; an error means no router could be reached (calling again tries again).
    /// Cancelling the call loses nothing, but one cancelled while the stream opens opens it again
    /// next time: do not put a timeout shorter than an open around it.
    pub async fn next(&mut self) -> Result<Received, ClientError> {
        loop {
            while let Some(frame) = self.parser.next_frame() {
                if let Some(id) = frame.id {
                    self.position = Some(id);
                }
                let Some(data) = frame.data else { continue };
                if frame.event.as_deref() == Some("reset") {
                    let value: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
                    let index = value["index"].as_u64().unwrap_or_default();
                    return Ok(Received::Reset { index });
                }
                let event: Event = serde_json::from_str(&data)
                    .map_err(|err| ClientError::Unavailable(format!("an event the client cannot read: {err}")))?;
                return Ok(Received::Event(event));
            }
            let Some(body) = &mut self.body else {
                self.body = Some(self.open().await?);
                continue;
            };
            match tokio::time::timeout(SILENCE, body.chunk()).await {
                Ok(Ok(Some(bytes))) => self.parser.feed(&bytes),
                // Ended, broken or silent: reopen from the position (a partial frame is dropped;
                // the server sends it again after the position).
                Ok(Ok(None) | Err(_)) | Err(_) => {
                    tracing::debug!(position = ?self.position, "event stream broken; reopening");
                    self.body = None;
                    self.parser = SseParser::default();
                    self.client.skip_current();
                }
            }
        }
    }

    async fn open(&self) -> Result<reqwest::Response, ClientError> {
        let path = match (&self.position, self.after) {
            (None, Some(after)) if self.query.is_empty() => format!("/v1/events?index={after}"),
            (None, Some(after)) => format!("/v1/events?{}&index={after}", self.query),
            _ if self.query.is_empty() => "/v1/events".to_owned(),
            _ => format!("/v1/events?{}", self.query),
        };
        let position = self.position.clone();
        self.client
            .send(Method::GET, &path, None::<&()>, move |request| {
                let request = request.timeout(CONNECTION_LIFETIME);
                match &position {
                    Some(id) => request.header("last-event-id", id),
                    None => request,
                }
            })
            .await
    }
}

/// One frame of the stream: the fields up to a blank line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Frame {
    event: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

/// Splits the bytes of an event stream into frames.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame, if one has arrived.
    fn next_frame(&mut self) -> Option<Frame> {
        let (end, skip) = frame_end(&self.buffer)?;
        let raw: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
        let text = String::from_utf8_lossy(&raw);
        let mut frame = Frame::default();
        for line in text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)) {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => frame.event = Some(value.to_owned()),
                "id" if !value.contains('\0') => frame.id = Some(value.to_owned()),
                "data" => match &mut frame.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => frame.data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        Some(frame)
    }
}

/// Where the first frame ends (its length, and the length of the blank line after it).
fn frame_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (one, other) => one.or(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_split_at_blank_lines_whatever_the_chunks() {
        let stream =
            b": open\nid: 4\n\nevent: registered\nid: 5.0\ndata: {\"a\":\ndata: 1}\n\nid: 6\r\n: heartbeat\r\n\r\n";
        for chunk in [1, 3, 7, stream.len()] {
            let mut parser = SseParser::default();
            let mut frames = Vec::new();
            for piece in stream.chunks(chunk) {
                parser.feed(piece);
                while let Some(frame) = parser.next_frame() {
                    frames.push(frame);
                }
            }
            assert_eq!(
                frames,
                [
                    Frame { event: None, data: None, id: Some("4".into()) },
                    Frame {
                        event: Some("registered".into()),
                        data: Some("{\"a\":\n1}".into()),
                        id: Some("5.0".into())
                    },
                    Frame { event: None, data: None, id: Some("6".into()) },
                ],
                "chunks of {chunk}"
            );
        }
    }
}
