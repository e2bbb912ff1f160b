//! How much of the Raft log a node keeps behind its snapshots.
//!
//! openraft's own purge (`max_in_snapshot_log_to_keep`) keeps a fixed number of entries behind
//! the newest snapshot, whatever a follower is doing. A follower far behind is sent a snapshot of
//! the leader's state at that moment; if, while that snapshot travels and installs, the leader
//! builds newer snapshots and purges past it, the follower needs another snapshot as soon as it
//! has installed the first, and under a steady write load never catches up (a 100 MB state at
//! 70 writes a second with a snapshot every 100 entries was seen to do exactly that). So the
//! purge is done here instead: `keep` entries behind the newest snapshot, and never past a
//! snapshot that was handed to a follower within [`SEND_HOLD`], so that the follower finds the
//! entries after it. Retention decides only which entries stay on disk; every purged entry is
//! in a snapshot already, so it never changes what is committed or applied.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

/// How long the entries after a snapshot sent to a follower are kept: longer than any transfer
/// and install of a snapshot is expected to take.
pub const SEND_HOLD: Duration = Duration::from_secs(120);

/// The node's log retention rule, and the snapshots it has handed to followers. Clones share the
/// record of sends.
#[derive(Debug, Clone)]
pub struct LogRetention {
    /// Entries kept behind the newest snapshot.
    keep: u64,
    /// Fewest entries worth a purge.
    batch: u64,
    /// When a snapshot was handed out to be sent, and up to which index it holds, oldest first.
    sends: Arc<Mutex<VecDeque<(Instant, u64)>>>,
}

impl LogRetention {
    pub fn new(keep: u64, batch: u64) -> Self {
        Self { keep, batch: batch.max(1), sends: Arc::default() }
    }

    /// Notes that a snapshot of the state up to `index` is handed out to be sent to a follower.
    pub fn sending(&self, index: u64, now: Instant) {
        let mut sends = self.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sends.retain(|(at, _)| now.saturating_duration_since(*at) < SEND_HOLD);
        sends.push_back((now, index));
    }

    /// The index up to which (inclusive) the log may be purged at `now`, given the newest
    /// snapshot's last index and the last purged index, if at least a batch of entries may go.
    pub fn purge_upto(&self, now: Instant, snapshot: Option<u64>, purged: Option<u64>) -> Option<u64> {
        let snapshot = snapshot?;
        // `keep` entries stay: (upto, snapshot] holds `keep` of them.
        let mut upto = snapshot.checked_sub(self.keep)?;
        let sends = self.sends.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = sends.iter().filter(|(at, _)| now.saturating_duration_since(*at) < SEND_HOLD).map(|(_, i)| *i).min();
        if let Some(sent) = held {
            upto = upto.min(sent);
        }
        let first_kept = purged.map_or(0, |p| p + 1);
        (upto + 1 >= first_kept + self.batch).then_some(upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_purged_keep_entries_behind_the_snapshot_in_batches() {
        let retention = LogRetention::new(20, 10);
        let now = Instant::now();
        assert_eq!(retention.purge_upto(now, None, None), None, "no snapshot, nothing to purge");
        assert_eq!(retention.purge_upto(now, Some(25), None), None, "six entries are not a batch");
        assert_eq!(retention.purge_upto(now, Some(29), None), Some(9), "ten entries are: 0 to 9 go, 10 to 29 stay");
        assert_eq!(retention.purge_upto(now, Some(100), Some(79)), None, "nothing beyond what went");
        assert_eq!(retention.purge_upto(now, Some(100), Some(71)), None, "nine more (72 to 80) are not a batch");
        assert_eq!(retention.purge_upto(now, Some(100), Some(70)), Some(80));
        assert_eq!(retention.purge_upto(now, Some(10), None), None, "fewer entries than kept");
    }

    #[test]
    fn the_entries_after_a_snapshot_being_sent_stay_until_the_hold_has_passed() {
        let retention = LogRetention::new(20, 1);
        let start = Instant::now();
        retention.sending(300, start);
        let shared = retention.clone();
        shared.sending(450, start + Duration::from_secs(1));
        // Newer snapshots are built while the first one travels: the log after it stays.
        assert_eq!(retention.purge_upto(start + Duration::from_secs(2), Some(600), Some(100)), Some(300));
        // Once the first send is older than the hold, the second one holds.
        let later = start + SEND_HOLD + Duration::from_millis(500);
        assert_eq!(retention.purge_upto(later, Some(600), Some(300)), Some(450));
        let much_later = start + SEND_HOLD + Duration::from_secs(2);
        assert_eq!(retention.purge_upto(much_later, Some(600), Some(450)), Some(580));
        // A send at or beyond the point `keep` allows holds nothing back.
        retention.sending(590, much_later);
        assert_eq!(retention.purge_upto(much_later, Some(600), Some(450)), Some(580));
    }
}
