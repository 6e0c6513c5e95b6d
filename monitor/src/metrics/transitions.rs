//! Transition durations: from the goal's stored `goal_changed_at` to the
//! first heartbeat that reports it reached, measured on the database's
//! clock by the heartbeat fold and recorded after its transaction
//! commits, so the figure holds whichever monitor process assigned the
//! goal and whichever answers the heartbeat.

use std::time::Duration;

use metrics::histogram;
use pgpilot_proto::ReplicationState as S;

use super::TRANSITION_SECONDS;

/// A node reached its goal `to`, reporting `from` just before, `took`
/// after the goal was assigned.
pub fn goal_reached(from: S, to: S, took: Duration) {
    histogram!(TRANSITION_SECONDS, "from" => from.as_str(), "to" => to.as_str())
        .record(took.as_secs_f64());
}
