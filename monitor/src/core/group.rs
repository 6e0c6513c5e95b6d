//! Decisions about a locked group as a whole: running the state machine
//! and applying its goals, the node a standby follows, the fence set stored
//! for a primary, the record-once event of a stuck election, and the
//! refusal of goals a keeper has no edge to.

use pgpilot_proto::ReplicationState as S;

use super::{Env, Refusal};
use crate::fsm::{self, Decision, NodeFence, NodeSnapshot, ReplicationPlan, Wait};

/// What one evaluation of a group decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Goal changes, each to be stored with its event.
    pub decisions: Vec<Decision>,
    /// Why the group waits (shown by show-state).
    pub waiting: Vec<Wait>,
    /// An event without a goal change to record once (a stuck election).
    pub note: Option<Note>,
}

/// An event without a goal change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Index of the node it is recorded on (the writable primary).
    pub index: usize,
    /// That node's goal (before the evaluation's decisions).
    pub goal: S,
    pub wait: Wait,
}

impl Evaluation {
    /// Nothing to write: no goal change and no event.
    pub fn is_quiet(&self) -> bool {
        self.decisions.is_empty() && self.note.is_none()
    }
}

/// Run the state machine on `nodes` and apply the goals it assigns to them.
pub fn evaluate(nodes: &mut [NodeSnapshot], env: &Env) -> Evaluation {
    let outcome = (env.decide)(nodes, env.now, &env.settings);
    // The stuck election is recorded on the primary as it was before.
    let note = outcome
        .waiting
        .iter()
        .find(|w| w.is_election_stuck())
        .and_then(|w| {
            let index = nodes.iter().position(|n| n.goal.is_writable_primary())?;
            Some(Note {
                index,
                goal: nodes[index].goal,
                wait: w.clone(),
            })
        });
    apply_goals(nodes, &outcome.decisions);
    Evaluation {
        decisions: outcome.decisions,
        waiting: outcome.waiting,
        note,
    }
}

/// Set the goals `decisions` assign.
pub fn apply_goals(nodes: &mut [NodeSnapshot], decisions: &[Decision]) {
    for d in decisions {
        if let Some(n) = nodes.iter_mut().find(|n| n.id == d.node_id) {
            n.goal = d.to;
        }
    }
}

/// Whether a note is recorded: once while the same wait holds, so not when
/// the group's latest event (its kind and text) is this very note.
pub fn record_note(note: &Note, latest_event: Option<(&str, &str)>) -> bool {
    latest_event != Some((note.wait.kind(), note.wait.to_string().as_str()))
}

/// Which node `index` follows: a standby follows the writable primary; the
/// winner of an election needs nobody.
pub fn upstream_of(nodes: &[NodeSnapshot], index: usize) -> Option<usize> {
    let me = &nodes[index];
    if me.goal.is_writable_primary() || fsm::is_handing_over(me.goal) {
        return None;
    }
    if me.goal == S::FastForward {
        return fsm::fast_forward_source(nodes, index);
    }
    // During a failover the old primary keeps its goal until the election
    // ends; standbys keep following it until then.
    (0..nodes.len())
        .filter(|&j| j != index)
        .find(|&j| nodes[j].goal.is_writable_primary())
        .or_else(|| (0..nodes.len()).find(|&j| j != index && fsm::is_handing_over(nodes[j].goal)))
}

/// The fence to store for node `index` after computing its `plan`, when it
/// is a primary and the stored one differs (see [`fsm::fence_update`]); it
/// is stored in `nodes` too.
pub fn update_fence(
    nodes: &mut [NodeSnapshot],
    index: usize,
    plan: &ReplicationPlan,
    applied_sync_names: Option<&str>,
) -> Option<NodeFence> {
    let fence = fsm::fence_update(nodes, index, plan, applied_sync_names);
    let me = &mut nodes[index];
    if me.goal.is_writable_primary() && !fence.stored_in(me) {
        fence.store_in(me);
        Some(fence)
    } else {
        None
    }
}

/// An operator command may assign only goals every keeper can reach: the
/// keeper is at its reported state or, having just finished its
/// transition, at its goal, and needs an edge from both.
pub fn refuse_unreachable(nodes: &[NodeSnapshot], decisions: &[Decision]) -> Result<(), Refusal> {
    for d in decisions {
        if let Some(n) = nodes.iter().find(|n| n.id == d.node_id) {
            if !pgpilot_proto::keeper_has_edge(n.reported, d.to)
                || !pgpilot_proto::keeper_has_edge(n.goal, d.to)
            {
                return Err(Refusal::Unreachable {
                    name: n.name.clone(),
                    reported: n.reported,
                    goal: n.goal,
                    to: d.to,
                });
            }
        }
    }
    Ok(())
}
