//! What the keeper knows of itself, shared between its loop, the fence
//! task, the HTTP server and the metrics: state, goal, fenced, the
//! primary's LSN, heartbeat and transition clocks, the monitor in use; and
//! the [`Facts`] a check decides on (that status with a live observation
//! of PostgreSQL).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use pgpilot_proto::ReplicationState as S;

use crate::pg::Observation;

/// What the keeper's loop knows, shared with the HTTP server and the
/// metrics.
#[derive(Debug, Clone)]
pub struct KeeperStatus {
    pub name: String,
    pub formation: String,
    pub node_id: Option<i64>,
    /// The state the node last reached (and reports).
    pub state: S,
    /// The goal the monitor last assigned.
    pub goal: S,
    /// The fence task stopped PostgreSQL (until the monitor answers again).
    pub fenced: bool,
    /// The primary's LSN as the monitor last told it (standbys only).
    pub primary_lsn: Option<u64>,
    /// When the last heartbeat that got an answer was sent.
    pub last_heartbeat_ok: Option<Instant>,
    /// Since when the node has been moving towards a goal it has not reached.
    pub transition_started: Option<Instant>,
    /// When the keeper started (the heartbeat age before any answer).
    pub started: Instant,
    /// The URL of the monitor in use (see [`crate::monitors`]).
    pub monitor: Option<String>,
    /// Every configured monitor, in the configuration's order.
    pub monitors: Vec<String>,
    /// The monitor last said this standby is in its primary's synchronous
    /// set (its acknowledgement can count for a commit).
    pub synchronous_standby: bool,
    /// When the keeper's loop last began a step or sent a keepalive.
    pub loop_seen: Instant,
    /// The node is a delayed standby (its apply delay is above 0): its
    /// data is that old, so it stays out of the read pools.
    pub delayed: bool,
}

pub type SharedStatus = Arc<Mutex<KeeperStatus>>;

impl KeeperStatus {
    pub fn new(name: &str, formation: &str, state: S, goal: S) -> Self {
        let now = Instant::now();
        KeeperStatus {
            name: name.to_string(),
            formation: formation.to_string(),
            node_id: None,
            state,
            goal,
            fenced: false,
            primary_lsn: None,
            last_heartbeat_ok: None,
            transition_started: (state != goal).then_some(now),
            started: now,
            monitor: None,
            monitors: Vec::new(),
            synchronous_standby: false,
            loop_seen: now,
            delayed: false,
        }
    }

    /// A new goal (or the same one): the transition clock starts when the
    /// node begins moving, and stops when it has arrived.
    pub fn set_goal(&mut self, goal: S, now: Instant) {
        if goal != self.goal {
            self.transition_started = None;
        }
        self.goal = goal;
        self.update_transition(now);
    }

    pub fn set_state(&mut self, state: S, now: Instant) {
        self.state = state;
        self.update_transition(now);
    }

    fn update_transition(&mut self, now: Instant) {
        if self.state == self.goal {
            self.transition_started = None;
        } else if self.transition_started.is_none() {
            self.transition_started = Some(now);
        }
    }
}

/// Lock the shared status; a panic elsewhere while holding it leaves the
/// data usable (every field is written whole).
pub fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, KeeperStatus> {
    status.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything one endpoint decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub state: S,
    pub goal: S,
    pub pg_running: bool,
    pub in_recovery: bool,
    pub streaming: bool,
    pub fenced: bool,
    /// Standby: bytes between the primary's LSN (as last reported to the
    /// monitor) and this node's received/replayed position. Primary: 0.
    /// None while unknown (PostgreSQL down, no primary known yet).
    pub lag_bytes: Option<u64>,
    /// In the primary's synchronous set, as the monitor last said.
    pub synchronous: bool,
    /// A delayed standby (apply delay above 0).
    pub delayed: bool,
}

pub fn facts(status: &KeeperStatus, o: &Observation) -> Facts {
    let lag_bytes = if !o.running {
        None
    } else if !o.in_recovery {
        Some(0)
    } else {
        status.primary_lsn.map(|p| p.saturating_sub(o.lsn))
    };
    Facts {
        state: status.state,
        goal: status.goal,
        pg_running: o.running,
        in_recovery: o.running && o.in_recovery,
        streaming: o.running && o.wal_receiver_streaming,
        fenced: status.fenced,
        lag_bytes,
        synchronous: status.synchronous_standby,
        delayed: status.delayed,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn lag_is_the_distance_to_the_primary() {
        let mut status = KeeperStatus::new("n", "default", S::Secondary, S::Secondary);
        let standby = Observation {
            running: true,
            in_recovery: true,
            lsn: 1000,
            wal_receiver_streaming: true,
            ..Observation::default()
        };
        assert_eq!(facts(&status, &standby).lag_bytes, None);
        status.primary_lsn = Some(1500);
        assert_eq!(facts(&status, &standby).lag_bytes, Some(500));
        // The primary's LSN is as of its last heartbeat: never negative.
        status.primary_lsn = Some(900);
        assert_eq!(facts(&status, &standby).lag_bytes, Some(0));
        let primary = Observation {
            running: true,
            ..Observation::default()
        };
        assert_eq!(facts(&status, &primary).lag_bytes, Some(0));
        assert_eq!(facts(&status, &Observation::default()).lag_bytes, None);
        let f = facts(&status, &Observation::default());
        assert!(!f.in_recovery && !f.streaming && !f.pg_running);
    }

    #[test]
    fn transition_clock() {
        let t0 = Instant::now();
        let mut s = KeeperStatus::new("n", "default", S::Secondary, S::Secondary);
        assert_eq!(s.transition_started, None);
        s.set_goal(S::ReportLsn, t0);
        assert_eq!(s.transition_started, Some(t0));
        let t1 = t0 + Duration::from_secs(1);
        s.set_goal(S::ReportLsn, t1);
        assert_eq!(
            s.transition_started,
            Some(t0),
            "the same goal keeps its clock"
        );
        s.set_goal(S::PreparePromotion, t1);
        assert_eq!(s.transition_started, Some(t1), "a new goal restarts it");
        s.set_state(S::PreparePromotion, t1);
        assert_eq!(s.transition_started, None);
    }
}
