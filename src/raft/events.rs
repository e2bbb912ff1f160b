//! The node's recent events: what the state machine derived from the entries it applied, kept in
//! a ring of fixed length for the event stream (`GET /v1/events`).
//!
//! The ring holds every event after its `floor` position: a reader positioned at or after the
//! floor reads on without a gap; one before it has missed events the ring no longer holds (or
//! never held: those applied before the node started, or covered by an installed snapshot) and is
//! told so. Readers keep only a position, never a queue: a slow reader costs nothing but falls
//! behind the floor, and memory is the ring's whatever the readers do.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

use crate::registry::ContractKey;
use crate::registry::Event;
use crate::registry::EventId;

/// Events a node keeps for readers.
pub const EVENT_HISTORY: usize = 10_000;

/// A reader asked for events the ring no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooFarBehind {
    /// The oldest position from which the ring can be read now.
    pub floor: EventId,
}

/// Shared handle to the ring (the state machine writes, the API reads).
#[derive(Debug, Clone)]
pub struct EventLog {
    ring: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Every event after this position is in `events`; none: every event ever made is.
    floor: Option<EventId>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(EVENT_HISTORY)
    }
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        let ring = Ring { events: VecDeque::new(), capacity: capacity.max(1), floor: None };
        Self { ring: Arc::new(Mutex::new(ring)) }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // The ring is left consistent between statements: a panic elsewhere does not spoil it.
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets every event and starts after entry `index` (none: before the first): at start
    /// (the entries applied before are on disk, their events are not) and when a snapshot
    /// replaces the state.
    pub fn restart_after(&self, index: Option<u64>) {
        let mut ring = self.ring();
        ring.events.clear();
        ring.floor = index.map(EventId::through);
    }

    /// Appends events, in position order, dropping the oldest beyond the capacity.
    pub fn push(&self, events: impl IntoIterator<Item = Event>) {
        let mut ring = self.ring();
        for event in events {
            if ring.events.len() == ring.capacity
                && let Some(oldest) = ring.events.pop_front()
            {
                ring.floor = Some(oldest.id);
            }
            ring.events.push_back(Arc::new(event));
        }
    }

    /// The position of the newest event held (the floor if none is; none before any event).
    pub fn newest(&self) -> Option<EventId> {
        let ring = self.ring();
        ring.events.back().map(|event| event.id).or(ring.floor)
    }

    /// Up to `max` events after `after` (none: from the first event ever), about `contract` if
    /// one is named, and the position the reader has reached: past every event examined,
    /// matching or not.
    pub fn read(
        &self,
        after: Option<EventId>,
        contract: Option<&ContractKey>,
        max: usize,
    ) -> Result<(Vec<Arc<Event>>, Option<EventId>), TooFarBehind> {
        let ring = self.ring();
        if let Some(floor) = ring.floor
            && after.is_none_or(|after| after < floor)
        {
            return Err(TooFarBehind { floor });
        }
        let start = ring.events.partition_point(|event| Some(event.id) <= after);
        let mut reached = after;
        let mut found = Vec::new();
        for event in ring.events.range(start..) {
            if found.len() == max {
                break;
            }
            reached = Some(event.id);
            if contract.is_none_or(|key| event.change.is_about(key)) {
                found.push(event.clone());
            }
        }
        Ok((found, reached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::EventChange;

    fn membership(index: u64, part: u32) -> Event {
        Event {
            id: EventId { index, part },
            at_ms: None,
            change: EventChange::MembershipChanged { voters: vec![1], learners: vec![] },
        }
    }

    fn ids(events: &[Arc<Event>]) -> Vec<String> {
        events.iter().map(|event| event.id.to_string()).collect()
    }

    #[test]
    fn a_reader_reads_on_from_its_position_until_the_ring_drops_what_it_has_not_read() {
        let log = EventLog::new(3);
        assert_eq!(log.newest(), None);
        log.restart_after(Some(4));
        assert_eq!(log.newest(), Some(EventId::through(4)));
        assert!(log.read(Some(EventId::through(3)), None, 10).is_err(), "entry 4's events were never held");
        assert!(log.read(None, None, 10).is_err());
        log.push([membership(5, 0), membership(5, 1), membership(7, 0)]);
        let (events, reached) = log.read(Some(EventId::through(4)), None, 10).unwrap();
        assert_eq!(ids(&events), ["5.0", "5.1", "7.0"]);
        assert_eq!(reached, Some(EventId { index: 7, part: 0 }));
        let (events, reached) = log.read(Some(EventId { index: 5, part: 0 }), None, 1).unwrap();
        assert_eq!((ids(&events), reached), (vec!["5.1".to_owned()], Some(EventId { index: 5, part: 1 })));
        // A fourth event drops 5.0: a reader at 4 has missed it, a reader at 5.0 has not.
        log.push([membership(8, 0)]);
        let floor = EventId { index: 5, part: 0 };
        assert_eq!(log.read(Some(EventId::through(4)), None, 10).unwrap_err(), TooFarBehind { floor });
        assert_eq!(ids(&log.read(Some(floor), None, 10).unwrap().0), ["5.1", "7.0", "8.0"]);
        // Past the newest, a read finds nothing and stays where it was.
        let past = Some(EventId::through(8));
        assert_eq!(log.read(past, None, 10).unwrap(), (vec![], past));
        log.restart_after(Some(20));
        assert!(log.read(past, None, 10).is_err(), "a snapshot leaves a gap");
    }

    #[test]
    fn a_fresh_node_holds_every_event_from_the_first() {
        let log = EventLog::new(10);
        log.push([membership(0, 0), membership(1, 0)]);
        let key = ContractKey::new("urn:x", "C");
        assert_eq!(ids(&log.read(None, None, 10).unwrap().0), ["0.0", "1.0"]);
        // A filtered read moves past the events it skips.
        let (events, reached) = log.read(None, Some(&key), 10).unwrap();
        assert!(events.is_empty());
        assert_eq!(reached, Some(EventId { index: 1, part: 0 }));
    }
}
