//! The monitor's decision core: everything the monitor decides, as pure
//! functions of (the locked group, the input, the time, the settings).
//!
//! The store (`crate::store`) locks a group, calls these functions and
//! persists what they return; the simulation (`pgpilot-sim`) holds a group
//! in memory and calls the very same functions. No I/O, no clock reads and
//! no async here: `now` and the settings are arguments.
//!
//! - [`group`]: evaluating a group with the state machine, the choice of
//!   upstream, the stored fence set, the record-once event of a stuck
//!   election, and the refusal of goals a keeper cannot reach;
//! - [`heartbeat`]: folding a heartbeat into its node, then the reply;
//! - [`clone_source`]: the standby a node about to be cloned copies from;
//! - [`commands`]: every operator command and its refusals ([`Refusal`]);
//! - [`node_settings`]: a node's priority, quorum and apply delay;
//! - [`formations`]: creating and dropping formations;
//! - [`pause`]: pausing and resuming a formation's automatic failover;
//! - [`stopping`]: a keeper stopping its node on purpose hands over first;
//! - [`handover`]: which events are failovers and switchovers;
//! - [`lease`]: whether this monitor may run the background duties.

pub mod cascade;
pub mod clone_source;
pub mod commands;
pub mod formations;
pub mod group;
pub mod handover;
pub mod heartbeat;
pub mod lease;
pub mod node_settings;
pub mod parameters;
pub mod pause;
mod refusal;
pub mod restart;
pub mod slots;
pub mod stopping;
#[cfg(test)]
mod test_support;

use chrono::{DateTime, Utc};

use crate::fsm::{self, NodeSnapshot};

pub use refusal::{Refusal, RefusalCode};

/// How a group is evaluated: the state machine, or (in the simulation) a
/// deliberately broken one.
pub type Decider = fn(&[NodeSnapshot], DateTime<Utc>, &fsm::Settings) -> fsm::Outcome;

/// What every decision reads besides the group: the time and the settings.
#[derive(Debug, Clone, Copy)]
pub struct Env {
    pub now: DateTime<Utc>,
    pub settings: fsm::Settings,
    pub decide: Decider,
}

impl Env {
    /// The monitor's environment: the real state machine.
    pub fn new(now: DateTime<Utc>, settings: fsm::Settings) -> Env {
        Env {
            now,
            settings,
            decide: fsm::decide,
        }
    }

    /// Whether node `n`'s keeper heartbeats within the node timeout.
    pub fn alive(&self, n: &NodeSnapshot) -> bool {
        alive(n, self.now, self.settings.node_timeout)
    }
}

/// Whether node `n`'s keeper heartbeated within `node_timeout` of `now`.
pub fn alive(n: &NodeSnapshot, now: DateTime<Utc>, node_timeout: std::time::Duration) -> bool {
    n.last_heartbeat
        .is_some_and(|t| (now - t).to_std().unwrap_or_default() <= node_timeout)
}

/// Whether node `n` is to be shown unreachable: its keeper silent past
/// `node_timeout` and the monitor's own check of its PostgreSQL failing,
/// so that what it last reported (a primary taking writes, PostgreSQL
/// running) may no longer hold. A node never heard of is not unreachable
/// but new.
pub fn unreachable(
    n: &NodeSnapshot,
    now: DateTime<Utc>,
    node_timeout: std::time::Duration,
) -> bool {
    n.last_heartbeat.is_some() && !alive(n, now, node_timeout) && n.health == fsm::Health::Bad
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;

    use super::*;
    use crate::core::test_support::timings;
    use crate::fsm::Health;

    #[test]
    fn unreachable_takes_a_silent_keeper_and_a_failing_check() {
        let now = Utc::now();
        let timeout = Duration::from_secs(2);
        let mut n = NodeSnapshot::registered(1, "node1", 50, true, timings());
        // Never heard of: new, not unreachable.
        n.health = Health::Bad;
        assert!(!unreachable(&n, now, timeout));
        for (age_ms, health, expected) in [
            (500, Health::Bad, false),
            (2_000, Health::Bad, false),
            (2_001, Health::Good, false),
            (2_001, Health::Unknown, false),
            (2_001, Health::Bad, true),
            (60_000, Health::Bad, true),
        ] {
            n.last_heartbeat = Some(now - chrono::Duration::milliseconds(age_ms));
            n.health = health;
            assert_eq!(
                unreachable(&n, now, timeout),
                expected,
                "{age_ms} ms, {health:?}"
            );
        }
    }
}
