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
//! - [`handover`]: which events are failovers and switchovers;
//! - [`lease`]: whether this monitor may run the background duties.

pub mod clone_source;
pub mod commands;
pub mod group;
pub mod handover;
pub mod heartbeat;
pub mod lease;
mod refusal;
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
        n.last_heartbeat.is_some_and(|t| {
            (self.now - t).to_std().unwrap_or_default() <= self.settings.node_timeout
        })
    }
}
