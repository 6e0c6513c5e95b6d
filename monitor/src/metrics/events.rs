//! Failovers, switchovers and goal changes, counted from the event table:
//! which hand-over an event stands for (told from its reason's text), and
//! a cursor that counts every committed event exactly once.

use std::collections::BTreeSet;

use metrics::counter;
use pgpilot_proto::ReplicationState as S;

use super::source::{GoalChange, MetricsSource};
use super::{FAILOVERS, FAILOVER_REASONS, GOAL_CHANGES, SWITCHOVERS, SWITCHOVER_REASONS};
use crate::fsm::Reason;

/// At most this many new events are counted per scrape (the rest on the
/// next one).
const EVENTS_PER_SCRAPE: i64 = 10_000;

/// What an event says about the primary role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    Failover(&'static str),
    Switchover(&'static str),
}

/// Whether `text` is what `reason` displays, whatever the values marked
/// with [`MARK`] in it.
fn displays_as(text: &str, reason: &Reason) -> bool {
    let template = reason.to_string();
    let mut rest = text;
    let mut parts = template.split(MARK).peekable();
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(after) = rest.strip_prefix(first) else {
        return false;
    };
    rest = after;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

const MARK: &str = "\u{1}";

/// Once per hand-over, when the primary's goal leaves a writable primary
/// goal: a failover when its PostgreSQL stayed down (it is sent to
/// `draining` as the election starts) or when it was lost (`demoted` as a
/// standby wins); else a switchover (`draining`, `prepare_maintenance`).
pub fn classify(goal_from: S, goal_to: S, reason: &str) -> Option<Handover> {
    if !goal_from.is_writable_primary() {
        return None;
    }
    let postgres_down = Reason::PrimaryPostgresDown {
        primary: MARK.into(),
        why: MARK.into(),
    };
    // The second form is the text monitors wrote before the reason said why.
    if matches!(goal_to, S::Draining | S::Demoted)
        && (displays_as(reason, &postgres_down)
            || reason.ends_with(" stays down while its keeper runs: failing over"))
    {
        return Some(Handover::Failover("postgres_down"));
    }
    match goal_to {
        S::Demoted => Some(Handover::Failover("primary_unhealthy")),
        S::Draining | S::PrepareMaintenance => Some(Handover::Switchover(
            if displays_as(reason, &Reason::PlannedFailover) {
                "perform_failover"
            } else if displays_as(reason, &Reason::PlannedSwitchover { to: MARK.into() }) {
                "perform_switchover"
            } else if goal_to == S::PrepareMaintenance {
                "maintenance"
            } else {
                "other"
            },
        )),
        _ => None,
    }
}

fn count_event(e: &GoalChange) {
    let (Ok(from), Ok(to)) = (e.goal_from.parse::<S>(), e.goal_to.parse::<S>()) else {
        return;
    };
    counter!(GOAL_CHANGES, "formation" => e.formation.clone(), "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    match classify(from, to, &e.reason) {
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

/// The failover and switchover counters of a formation exist (at 0) from
/// the first scrape that sees it, so `increase()` sees the first one.
pub(super) fn touch_formation(formation: &str) {
    for reason in FAILOVER_REASONS {
        counter!(FAILOVERS, "formation" => formation.to_string(), "reason" => reason).increment(0);
    }
    for reason in SWITCHOVER_REASONS {
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

    #[test]
    fn failovers_and_switchovers_are_told_apart() {
        let down = Reason::PrimaryPostgresDown {
            primary: "node1".into(),
            why: "3 attempts to start it failed in a row".into(),
        }
        .to_string();
        let replaced = Reason::OldPrimaryReplaced {
            new_primary: "node2".into(),
        }
        .to_string();
        let planned = Reason::PlannedFailover.to_string();
        let to_node = Reason::PlannedSwitchover { to: "node3".into() }.to_string();
        let maintenance = Reason::MaintenanceOfPrimary.to_string();
        for from in [
            S::Primary,
            S::WaitPrimary,
            S::Single,
            S::ApplySettings,
            S::JoinPrimary,
        ] {
            assert_eq!(
                classify(from, S::Demoted, &down),
                Some(Handover::Failover("postgres_down"))
            );
            // PostgreSQL down, keeper alive: the primary drains while the
            // election runs; a failover, not a switchover.
            assert_eq!(
                classify(from, S::Draining, &down),
                Some(Handover::Failover("postgres_down"))
            );
            // As older monitors wrote it.
            assert_eq!(
                classify(
                    from,
                    S::Draining,
                    "PostgreSQL on primary node1 stays down while its keeper runs: failing over"
                ),
                Some(Handover::Failover("postgres_down"))
            );
            assert_eq!(
                classify(from, S::Demoted, &replaced),
                Some(Handover::Failover("primary_unhealthy"))
            );
            assert_eq!(
                classify(from, S::Draining, &planned),
                Some(Handover::Switchover("perform_failover"))
            );
            assert_eq!(
                classify(from, S::Draining, &to_node),
                Some(Handover::Switchover("perform_switchover"))
            );
            assert_eq!(
                classify(from, S::PrepareMaintenance, &maintenance),
                Some(Handover::Switchover("maintenance"))
            );
            assert_eq!(
                classify(from, S::Draining, "anything else"),
                Some(Handover::Switchover("other"))
            );
        }
        // The second half of a planned hand-over is not another failover.
        assert_eq!(classify(S::Draining, S::Demoted, &replaced), None);
        assert_eq!(
            classify(S::PrepareMaintenance, S::Maintenance, &replaced),
            None
        );
        for from in S::ALL {
            for to in S::ALL {
                let expected = from.is_writable_primary()
                    && matches!(to, S::Demoted | S::Draining | S::PrepareMaintenance);
                assert_eq!(
                    classify(from, to, &planned).is_some(),
                    expected,
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn templates_match_only_their_own_text() {
        let down = Reason::PrimaryPostgresDown {
            primary: MARK.into(),
            why: MARK.into(),
        };
        assert!(displays_as(
            &Reason::PrimaryPostgresDown {
                primary: "a.b-c".into(),
                why: "down for 20001 ms, longer than postgres_restart_timeout 20000 ms".into(),
            }
            .to_string(),
            &down
        ));
        assert!(!displays_as("PostgreSQL on primary x", &down));
        assert!(!displays_as(&Reason::PlannedFailover.to_string(), &down));
        assert!(displays_as(
            &Reason::PlannedFailover.to_string(),
            &Reason::PlannedFailover
        ));
        assert!(!displays_as("x", &Reason::PlannedFailover));
    }

    fn event(id: i64, settled: bool) -> GoalChange {
        GoalChange {
            event_id: id,
            formation: "default".into(),
            goal_from: "primary".into(),
            goal_to: "draining".into(),
            reason: String::new(),
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
}
