//! Failovers, switchovers and goal changes, counted from the event table:
//! which hand-over an event stands for (read from its goals and its kind by
//! [`Handover::of`]), and a cursor that counts every committed event
//! exactly once.

use std::collections::BTreeSet;

use metrics::counter;
use pgpilot_proto::ReplicationState as S;

use super::source::{GoalChange, MetricsSource};
use super::{FAILOVERS, GOAL_CHANGES, SWITCHOVERS};
use crate::core::handover::{Handover, FAILOVER_LABELS, SWITCHOVER_LABELS};

/// At most this many new events are counted per scrape (the rest on the
/// next one).
const EVENTS_PER_SCRAPE: i64 = 10_000;

fn count_event(e: &GoalChange) {
    if e.kind.as_deref().is_some_and(is_keeper_note) {
        // A keeper's note (a diverged standby rewound) assigns no goal.
        return;
    }
    let (Ok(from), Ok(to)) = (e.goal_from.parse::<S>(), e.goal_to.parse::<S>()) else {
        return;
    };
    counter!(GOAL_CHANGES, "formation" => e.formation.clone(), "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    match Handover::of(from, to, e.kind.as_deref()) {
        Some(Handover::Failover(reason)) => {
            counter!(FAILOVERS, "formation" => e.formation.clone(), "reason" => reason).increment(1)
        }
        Some(Handover::Switchover(reason)) => {
            counter!(SWITCHOVERS, "formation" => e.formation.clone(), "reason" => reason)
                .increment(1)
        }
        None => {}
    }
}

/// Whether `kind` is that of a keeper's note ([`pgpilot_proto::notes`]).
fn is_keeper_note(kind: &str) -> bool {
    use pgpilot_proto::notes::{ALL, UNKNOWN};
    kind == UNKNOWN || ALL.contains(&kind)
}

/// The failover and switchover counters of a formation exist (at 0) from
/// the first scrape that sees it, so `increase()` sees the first one.
pub(super) fn touch_formation(formation: &str) {
    for reason in FAILOVER_LABELS {
        counter!(FAILOVERS, "formation" => formation.to_string(), "reason" => reason).increment(0);
    }
    for reason in SWITCHOVER_LABELS {
        counter!(SWITCHOVERS, "formation" => formation.to_string(), "reason" => reason)
            .increment(0);
    }
}

/// Which events have been counted: every id up to `settled`, and those
/// above it in `counted` (a later id can commit before an earlier one).
#[derive(Debug, Default)]
pub(super) struct EventCursor {
    settled: i64,
    counted: BTreeSet<i64>,
}

impl EventCursor {
    /// A cursor that counts the events after `last`.
    pub(super) fn after(last: i64) -> Self {
        EventCursor {
            settled: last,
            counted: BTreeSet::new(),
        }
    }

    /// The events of `batch` not counted yet; advances past settled ones.
    fn take<'a>(&mut self, batch: &'a [GoalChange]) -> Vec<&'a GoalChange> {
        let mut new = Vec::new();
        let mut all_settled_so_far = true;
        for e in batch {
            if self.counted.insert(e.event_id) {
                new.push(e);
            }
            all_settled_so_far &= e.settled;
            if all_settled_so_far {
                self.settled = e.event_id;
            }
        }
        let settled = self.settled;
        self.counted.retain(|id| *id > settled);
        new
    }

    /// Count the events of `source` not counted yet; false when they
    /// cannot be read.
    pub(super) async fn count_new(&mut self, source: &impl MetricsSource) -> bool {
        match source.events_after(self.settled, EVENTS_PER_SCRAPE).await {
            Ok(batch) => {
                for e in self.take(&batch) {
                    count_event(e);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read new events");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, settled: bool) -> GoalChange {
        GoalChange {
            event_id: id,
            formation: "default".into(),
            goal_from: "primary".into(),
            goal_to: "draining".into(),
            kind: None,
            settled,
        }
    }

    #[test]
    fn every_event_is_counted_once_even_out_of_commit_order() {
        let mut c = EventCursor::after(10);
        // 12 committed before 11.
        let ids = |v: Vec<&GoalChange>| v.iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(c.take(&[event(12, false)])), vec![12]);
        assert_eq!(c.settled, 10);
        assert_eq!(ids(c.take(&[event(11, false), event(12, false)])), vec![11]);
        assert_eq!(
            ids(c.take(&[event(11, true), event(12, false), event(13, false)])),
            vec![13]
        );
        assert_eq!(c.settled, 11);
        assert_eq!(
            ids(c.take(&[event(12, true), event(13, true)])),
            Vec::<i64>::new()
        );
        assert_eq!(c.settled, 13);
        assert!(c.counted.is_empty());
    }

    #[test]
    fn keeper_notes_are_no_goal_changes() {
        assert!(is_keeper_note(pgpilot_proto::notes::STANDBY_REWOUND));
        assert!(is_keeper_note(pgpilot_proto::notes::UNKNOWN));
        assert!(!is_keeper_note("elected"));
    }
}
