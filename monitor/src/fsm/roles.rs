//! Who may be promoted and who counts for synchronous commit: the stored
//! candidate priority and replication quorum, except that a delayed or a
//! cascading standby never does (the commands keep their stored values at
//! 0 / false; these hold even if a row said otherwise).

use super::NodeSnapshot;

impl NodeSnapshot {
    /// A delayed standby: it applies each commit only once it is
    /// `apply_delay_ms` old.
    pub fn delayed(&self) -> bool {
        self.apply_delay_ms > 0
    }

    /// It may be promoted: candidate priority above 0, not delayed and not
    /// cascading (see `crate::core::cascade`). The
    /// commands keep a delayed node's priority at 0; this holds even if a
    /// stored row said otherwise. A delayed node may still serve the WAL
    /// it received to a candidate that fast-forwards from it.
    pub fn may_be_promoted(&self) -> bool {
        self.candidate_priority > 0 && !self.delayed() && self.upstream.is_none()
    }

    /// It counts for synchronous commit: replication quorum on, not
    /// delayed and not cascading (as [`Self::may_be_promoted`], whatever a stored row says).
    pub fn counts_for_quorum(&self) -> bool {
        self.replication_quorum && !self.delayed() && self.upstream.is_none()
    }
}
