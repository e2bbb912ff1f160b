//! `GET /v1/events`: the registry's changes as Server-Sent Events, one event per change, each
//! with its position (`N.k`: log index, place in the entry) as the SSE id.
//!
//! Every node derives the same events with the same ids from the log, so a client that lost its
//! node reconnects to any other with `Last-Event-ID` (or `?index=N` for "after entry N") and
//! reads on without a gap or a repeat. A client whose position the node no longer holds (too far
//! behind, or from before the node started) gets one `reset` event: it reloads the list (at
//! least at the reset's `index`) and reads on from there. Idle streams get a heartbeat comment
//! carrying the stream's position every [`HEARTBEAT`], which also moves a filtered stream's
//! position past the events it skipped. Streams count against the node's open watches.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::response::sse::Event as SseEvent;
use axum::response::sse::Sse;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::ApiError;
use crate::api::ApiQuery;
use crate::api::ApiState;
use crate::api::openapi::BadRequest;
use crate::api::openapi::Forbidden;
use crate::api::openapi::HeadersTooLarge;
use crate::api::openapi::TooManyRequests;
use crate::api::openapi::Unauthorized;
use crate::api::require;
use crate::auth::Caller;
use crate::raft::EventLog;
use crate::raft::TooFarBehind;
use crate::registry::ContractKey;
use crate::registry::Event;
use crate::registry::EventId;

/// Events taken from the ring at a time.
const BATCH: usize = 256;

pub(super) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(events))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// Only the events of this contract (`{namespace}/{name}`, as a contract key).
    #[param(pattern = "^.+/[^/]+$")]
    contract: Option<String>,
    /// Start after entry `index` (an `X-Switchboard-Index`); `Last-Event-ID` takes precedence.
    index: Option<u64>,
}

/// One Server-Sent Event of the stream, as an SSE parser reads it (for the OpenAPI document; the
/// stream is written by [`sse`] and [`reset`]). Heartbeats are comments: they carry an `id`
/// (the stream's position) and no data.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StreamEvent {
    /// The change's `type` (`registered`, `unregistered`, `expired`, `deregistered`, `drained`,
    /// `health_passing`, `health_critical`, `policy_set`, `membership_changed`), or `reset`.
    event: String,
    /// The event's position, `N.k`: send it back as `Last-Event-ID` to resume after it.
    #[schema(pattern = "^[0-9]{1,20}([.][0-9]{1,20})?$")]
    id: String,
    /// JSON: the change, an `Event`; for `reset`, `{"type": "reset", "id", "index", "message"}`
    /// (reload the list at `index` or later, and read on).
    data: String,
}

/// The registry's changes from now (or after `index`, or after `Last-Event-ID`) as Server-Sent
/// Events, each once and in log order, resumable on any node; counted with the node's blocking
/// reads.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "registrations",
    operation_id = "events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^ *[0-9]{1,20}([.][0-9]{1,20})? *$",
            description = "Resume after this event (an `id` the stream sent); takes precedence over `index`"),
    ),
    responses(
        (status = 200, description = "The stream: one event per change (its `data` an `Event`), a `reset` \
            for a reader too far behind, and a heartbeat comment with the position every 15 s",
            body = StreamEvent, content_type = "text/event-stream"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 429, response = TooManyRequests),
        (status = 431, response = HeadersTooLarge),
    ),
)]
async fn events(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    require(caller.can_read(), &caller, "read")?;
    let contract = query
        .contract
        .map(|key| match key.rsplit_once('/') {
            Some((namespace, name)) if !namespace.is_empty() && !name.is_empty() => {
                Ok(ContractKey::new(namespace, name))
            }
            _ => Err(ApiError::bad_request("invalid_contract", "contract must be {namespace}/{name}")),
        })
        .transpose()?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(|text| text.trim().parse().ok()).ok_or_else(|| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be an event id N or N.k the stream sent")
        })?),
        None => query.index.map(EventId::through),
    };
    let permit = state.watches.admit()?;
    let view = state.cluster.view();
    // Subscribed before the first read: an entry applied after it wakes the stream.
    let applied = view.subscribe();
    let log = view.events().clone();
    let position = resume.or_else(|| log.newest());
    tracing::debug!(?position, ?contract, "event stream opened");
    let reader = Reader {
        log,
        applied,
        position,
        contract,
        pending: VecDeque::from([heartbeat(position, "open")]),
        heartbeat: state.watches.heartbeat(),
        stop: state.watches.stopping().clone(),
        _permit: permit,
    };
    Ok(Sse::new(futures_util::stream::unfold(reader, Reader::next)).into_response())
}

/// One stream's reader: a position in the node's event ring, never a queue of its own.
struct Reader {
    log: EventLog,
    applied: watch::Receiver<u64>,
    /// The last event read (none: the stream starts before the first event ever made).
    position: Option<EventId>,
    contract: Option<ContractKey>,
    /// Events read from the ring and not yet sent (at most one batch).
    pending: VecDeque<SseEvent>,
    heartbeat: Duration,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Reader {
    async fn next(mut self) -> Option<(Result<SseEvent, std::convert::Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            // Seen before reading: whatever is applied after the read ticks the channel.
            self.applied.borrow_and_update();
            match self.log.read(self.position, self.contract.as_ref(), BATCH) {
                Err(TooFarBehind { floor }) => {
                    // The floor is past the reader: the ring is not empty, `from` is at least it.
                    let from = self.log.newest().unwrap_or(floor);
                    tracing::debug!(position = ?self.position, %floor, %from, "event stream reader too far behind");
                    self.position = Some(from);
                    self.pending.push_back(reset(from, floor));
                }
                Ok((events, reached)) if !events.is_empty() => {
                    self.position = reached;
                    self.pending.extend(events.iter().map(sse));
                }
                Ok((_, reached)) => {
                    self.position = reached;
                    tokio::select! {
                        changed = self.applied.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                        () = tokio::time::sleep(self.heartbeat) => {
                            return Some((Ok(heartbeat(self.position, "heartbeat")), self));
                        }
                        () = self.stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

fn sse(event: &Arc<Event>) -> SseEvent {
    let data = serde_json::to_string(&**event).unwrap_or_default();
    SseEvent::default().event(event.change.kind()).id(event.id.to_string()).data(data)
}

/// A comment with the stream's position: a client that reconnects resumes from it.
fn heartbeat(position: Option<EventId>, comment: &str) -> SseEvent {
    let event = SseEvent::default().comment(comment);
    match position {
        Some(position) => event.id(position.to_string()),
        None => event,
    }
}

/// Tells a reader the events after its position are gone, and where the stream goes on from.
fn reset(from: EventId, floor: EventId) -> SseEvent {
    let data = serde_json::json!({
        "type": "reset",
        "id": from.to_string(),
        "index": from.index,
        "message": format!(
            "events up to {floor} are no longer held here: reload the list (at index {} or later) and read on",
            from.index
        ),
    });
    SseEvent::default().event("reset").id(from.to_string()).data(data.to_string())
}
