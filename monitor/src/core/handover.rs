//! Which events hand the primary role over, and how: a failover (the
//! primary was lost, or its PostgreSQL stayed down) or a switchover (an
//! operator's command). Read from an event's goals and its kind, never
//! from its text.

use pgpilot_proto::ReplicationState as S;

/// A hand-over of the primary role, with the label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// `primary_unhealthy` or `postgres_down`.
    Failover(&'static str),
    /// `perform_failover`, `perform_switchover`, `maintenance` or `other`.
    Switchover(&'static str),
}

/// Labels of failovers.
pub const FAILOVER_LABELS: [&str; 2] = ["primary_unhealthy", "postgres_down"];
/// Labels of switchovers.
pub const SWITCHOVER_LABELS: [&str; 4] = [
    "perform_failover",
    "perform_switchover",
    "maintenance",
    "other",
];

impl Handover {
    /// Once per hand-over, when the primary's goal leaves a writable
    /// primary goal: a failover when its PostgreSQL stayed down (it is sent
    /// to `draining` as the election starts) or when it was lost (`demoted`
    /// as a standby wins); else a switchover (`draining`,
    /// `prepare_maintenance`). `kind` is the event's (None for events
    /// recorded before kinds were stored: they count by their goals only).
    pub fn of(goal_from: S, goal_to: S, kind: Option<&str>) -> Option<Handover> {
        if !goal_from.is_writable_primary() {
            return None;
        }
        if matches!(goal_to, S::Draining | S::Demoted) && kind == Some("primary_postgres_down") {
            return Some(Handover::Failover("postgres_down"));
        }
        match goal_to {
            S::Demoted => Some(Handover::Failover("primary_unhealthy")),
            S::Draining | S::PrepareMaintenance => Some(Handover::Switchover(match kind {
                Some("planned_failover") => "perform_failover",
                Some("planned_switchover") => "perform_switchover",
                _ if goal_to == S::PrepareMaintenance => "maintenance",
                _ => "other",
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Reason;

    #[test]
    fn handovers_are_told_apart_by_kind() {
        let down = Reason::PrimaryPostgresDown {
            primary: "node1".into(),
            why: "down for 9000 ms".into(),
        }
        .kind();
        let replaced = Reason::OldPrimaryReplaced {
            new_primary: "node2".into(),
        }
        .kind();
        let planned = Reason::PlannedFailover.kind();
        let to_node = Reason::PlannedSwitchover { to: "node3".into() }.kind();
        let maintenance = Reason::MaintenanceOfPrimary.kind();
        for from in [S::Primary, S::WaitPrimary, S::Single, S::ApplySettings] {
            let of = |to, kind| Handover::of(from, to, Some(kind));
            assert_eq!(
                of(S::Demoted, down),
                Some(Handover::Failover("postgres_down"))
            );
            assert_eq!(
                of(S::Draining, down),
                Some(Handover::Failover("postgres_down"))
            );
            assert_eq!(
                of(S::Demoted, replaced),
                Some(Handover::Failover("primary_unhealthy"))
            );
            assert_eq!(
                of(S::Draining, planned),
                Some(Handover::Switchover("perform_failover"))
            );
            assert_eq!(
                of(S::Draining, to_node),
                Some(Handover::Switchover("perform_switchover"))
            );
            assert_eq!(
                of(S::PrepareMaintenance, maintenance),
                Some(Handover::Switchover("maintenance"))
            );
            assert_eq!(
                of(S::Draining, "anything_else"),
                Some(Handover::Switchover("other"))
            );
            assert_eq!(
                Handover::of(from, S::Draining, None),
                Some(Handover::Switchover("other"))
            );
        }
        // Only the step away from a writable primary counts.
        assert_eq!(Handover::of(S::Draining, S::Demoted, Some(replaced)), None);
        assert_eq!(
            Handover::of(S::PrepareMaintenance, S::Maintenance, Some(replaced)),
            None
        );
    }
}
