//! A keeper's heartbeat folded into its locked group: the node's report is
//! applied, the group evaluated, and the reply decided — the goal, the node
//! to follow, the replication settings, and the fence set to store for a
//! primary. Also the fact that a node reached its goal, from which the
//! transition's duration is measured.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;

use super::group::{evaluate, update_fence, upstream_of, Evaluation};
use super::Env;
use crate::fsm::{self, NodeFence, NodeSnapshot, ReplicationPlan};

/// A heartbeat as the decision core reads it.
#[derive(Debug, Clone)]
pub struct Beat {
    pub report: fsm::Report,
    /// Primary: the `synchronous_standby_names` its PostgreSQL runs with,
    /// if the keeper reported it (see [`fsm::fence_update`]).
    pub synchronous_standby_names: Option<String>,
    /// When the node's goal was last changed, as stored (None: unknown).
    pub goal_changed_at: Option<DateTime<Utc>>,
}

/// A node reported the goal it was assigned, for the first time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoalReached {
    pub node_id: i64,
    /// The state it reported before.
    pub from: S,
    pub to: S,
    /// From the goal's assignment to this heartbeat.
    pub took: Duration,
}

/// What the reply to a heartbeat carries, and the fence to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub plan: ReplicationPlan,
    /// Index of the node to follow (standbys) or clone from.
    pub upstream: Option<usize>,
    /// The primary's new fence, when it changed (already in the group).
    pub fence: Option<NodeFence>,
}

/// What folding one heartbeat decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folded {
    /// The node was dropped and its keeper confirms it stopped: forget it.
    Forget,
    Answer(Box<Answer>),
}

/// The group evaluated with the heartbeat, and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub evaluation: Evaluation,
    pub reply: Reply,
    pub reached: Option<GoalReached>,
}

/// Fold the heartbeat of node `index` into `nodes`, evaluate the group,
/// and decide the reply.
pub fn fold(nodes: &mut [NodeSnapshot], index: usize, beat: &Beat, env: &Env) -> Folded {
    let me = &mut nodes[index];
    if me.goal == S::Dropped && beat.report.reported == S::Dropped {
        return Folded::Forget;
    }
    let before = me.reported;
    me.heard(&beat.report, env.now);
    let reached = (before != me.goal && me.reported == me.goal)
        .then_some(beat.goal_changed_at)
        .flatten()
        .map(|at| GoalReached {
            node_id: me.id,
            from: before,
            to: me.goal,
            took: (env.now - at).to_std().unwrap_or_default(),
        });
    let evaluation = evaluate(nodes, env);
    let reply = reply(
        nodes,
        index,
        env.settings.number_sync_standbys,
        beat.synchronous_standby_names.as_deref(),
    );
    Folded::Answer(Box::new(Answer {
        evaluation,
        reply,
        reached,
    }))
}

/// The reply to node `index` of a group already evaluated; a changed fence
/// of a primary is stored in `nodes`.
pub fn reply(
    nodes: &mut [NodeSnapshot],
    index: usize,
    number_sync_standbys: u32,
    applied_sync_names: Option<&str>,
) -> Reply {
    let plan = fsm::replication_plan(nodes, index, number_sync_standbys);
    let fence = update_fence(nodes, index, &plan, applied_sync_names);
    Reply {
        upstream: upstream_of(nodes, index),
        plan,
        fence,
    }
}

/// The reply to a heartbeat that changed nothing the state machine reads,
/// or `None` when the group has something to write (a goal, an event, the
/// primary's fence): that heartbeat must take the locked path.
pub fn settled(
    nodes: &[NodeSnapshot],
    index: usize,
    env: &Env,
    applied_sync_names: Option<&str>,
) -> Option<Reply> {
    let mut nodes = nodes.to_vec();
    if !evaluate(&mut nodes, env).is_quiet() {
        return None;
    }
    let reply = reply(
        &mut nodes,
        index,
        env.settings.number_sync_standbys,
        applied_sync_names,
    );
    reply.fence.is_none().then_some(reply)
}

/// The reply to the keeper of a dropped node whose row is gone: nobody to
/// follow or replicate to.
pub fn dropped_reply(node: &NodeSnapshot) -> Reply {
    // The plan of the node alone (an empty group has no node to plan for).
    let plan = fsm::replication_plan(std::slice::from_ref(node), 0, 0);
    Reply {
        plan,
        upstream: None,
        fence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::KeeperTimings;

    /// The reply to a dropped node's last heartbeat (its row deleted) once
    /// indexed an empty group and panicked.
    #[test]
    fn a_dropped_node_is_answered_its_goal_and_no_replication() {
        let timings = KeeperTimings {
            heartbeat_interval: Duration::from_millis(500),
            fence_timeout: Duration::from_millis(1500),
            wal_sender_timeout: Duration::from_secs(2),
        };
        let node = NodeSnapshot {
            reported: S::Dropped,
            goal: S::Dropped,
            ..NodeSnapshot::registered(7, "node7", 50, true, timings)
        };
        let reply = dropped_reply(&node);
        assert!(reply.upstream.is_none() && reply.fence.is_none());
        assert_eq!(reply.plan.synchronous_standby_names, "");
        assert!(reply.plan.fence_set.is_empty());
        assert_eq!(reply.plan.fence_required, 0);
    }
}
