//! The audit trail: who changed what, through which node, and why; bounded in all and per
//! principal, so one writer never pushes out the others' records.

use super::AuditRecord;
use super::RegistryState;

/// Audit records one principal (token name, or none in dev mode) may hold in the trail; beyond,
/// its own oldest record goes, so one writer never pushes out the others' records.
pub const AUDIT_SHARE: usize = 1_000;

/// Audit records kept in the replicated state (the oldest are dropped first).
pub const AUDIT_CAP: usize = 10_000;

impl RegistryState {
    pub(super) fn record(&mut self, mut record: AuditRecord) {
        let mine = self.audit_by_principal.get(&record.principal).map_or(0, imbl::Vector::len);
        if mine >= AUDIT_SHARE {
            let oldest = self.audit_by_principal.get(&record.principal).and_then(|seqs| seqs.front().copied());
            if let Some(oldest) = oldest {
                self.drop_audit(oldest);
            }
        }
        if self.audit.len() >= AUDIT_CAP
            && let Some(oldest) = self.audit.front().map(|r| r.seq)
        {
            self.drop_audit(oldest);
        }
        record.seq = self.audit_next_seq;
        self.audit_next_seq += 1;
        self.touched.audit.insert(record.seq);
        self.audit_by_principal.entry(record.principal.clone()).or_default().push_back(record.seq);
        self.audit.push_back(record);
    }

    pub(super) fn drop_audit(&mut self, seq: u64) {
        let Ok(position) = self.audit.binary_search_by(|r| r.seq.cmp(&seq)) else { return };
        let record = self.audit.remove(position);
        if let Some(seqs) = self.audit_by_principal.get_mut(&record.principal) {
            if let Ok(at) = seqs.binary_search(&seq) {
                seqs.remove(at);
            }
            if seqs.is_empty() {
                self.audit_by_principal.remove(&record.principal);
            }
        }
        self.touched.audit.insert(seq);
    }

    /// Sequence number the next audit record will get.
    pub fn audit_next_seq(&self) -> u64 {
        self.audit_next_seq
    }

    /// The audit record numbered `seq`, if the trail still holds it.
    pub fn audit_record(&self, seq: u64) -> Option<&AuditRecord> {
        let position = self.audit.binary_search_by(|r| r.seq.cmp(&seq)).ok()?;
        self.audit.get(position)
    }

    /// The audit trail, oldest first.
    pub fn audit(&self) -> impl DoubleEndedIterator<Item = &AuditRecord> {
        self.audit.iter()
    }
}
