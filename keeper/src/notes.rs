//! Notes for the monitor: what the keeper did on its own that an operator
//! should hear of (a diverged standby rewound or cloned afresh). The
//! executor queues them; every heartbeat of the loop carries the queue, and
//! a note leaves it once a heartbeat carrying it is answered, so a note is
//! lost only when the keeper process dies first. The monitor records each
//! as an event (kinds in [`pgpilot_proto::notes`]).

use std::sync::{Arc, Mutex};

use pgpilot_proto::notes::MAX_PER_HEARTBEAT;
use pgpilot_proto::pb;

/// The queue, shared by the executor (which adds) and the loop (which
/// sends).
#[derive(Debug, Clone, Default)]
pub struct Notes(Arc<Mutex<Vec<pb::KeeperNote>>>);

impl Notes {
    /// Queue a note; when [`MAX_PER_HEARTBEAT`] are already waiting, the
    /// oldest is dropped (and logged).
    pub fn push(&self, kind: &str, text: String) {
        let mut queue = self.lock();
        if queue.len() >= MAX_PER_HEARTBEAT {
            let dropped = queue.remove(0);
            tracing::warn!(kind = %dropped.kind, text = %dropped.text, "too many notes for the monitor waiting: the oldest is dropped");
        }
        queue.push(pb::KeeperNote {
            kind: kind.to_string(),
            text,
        });
    }

    /// The notes to send with the next heartbeat.
    pub fn pending(&self) -> Vec<pb::KeeperNote> {
        self.lock().clone()
    }

    /// A heartbeat carrying `sent` was answered: those notes are delivered.
    /// (Notes queued meanwhile stay.)
    pub fn delivered(&self, sent: &[pb::KeeperNote]) {
        let mut queue = self.lock();
        let n = queue
            .iter()
            .zip(sent)
            .take_while(|(queued, sent)| queued == sent)
            .count();
        queue.drain(..n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<pb::KeeperNote>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_stays_until_a_heartbeat_carrying_it_is_answered() {
        let notes = Notes::default();
        notes.push("standby_rewound", "first".into());
        let sent = notes.pending();
        assert_eq!(sent.len(), 1);
        // Not answered: sent again.
        assert_eq!(notes.pending(), sent);
        notes.push("standby_recloned", "second".into());
        notes.delivered(&sent);
        let left = notes.pending();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].text, "second");
        notes.delivered(&left);
        assert!(notes.pending().is_empty());
        // An answer to an empty heartbeat delivers nothing.
        notes.push("standby_rewound", "third".into());
        notes.delivered(&[]);
        assert_eq!(notes.pending().len(), 1);
    }

    #[test]
    fn the_queue_is_bounded() {
        let notes = Notes::default();
        for i in 0..MAX_PER_HEARTBEAT + 3 {
            notes.push("standby_rewound", i.to_string());
        }
        let pending = notes.pending();
        assert_eq!(pending.len(), MAX_PER_HEARTBEAT);
        assert_eq!(pending[0].text, "3");
    }
}
