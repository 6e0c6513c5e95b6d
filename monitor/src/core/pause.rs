//! Pausing a formation: while paused the monitor starts no failover (the
//! state machine waits with [`crate::fsm::Wait::Paused`] instead); an
//! election already under way, an operator's switchover, maintenance and
//! every standby rule (joining, catching up, a lost standby leaving the
//! synchronous set) go on, so the primary keeps taking writes. The fence
//! is the keeper's and does not change: a primary cut off from both the
//! monitor and its standbys still stops taking writes, since its keeper
//! cannot know whether the formation was resumed meanwhile.
//!
//! The store reads whether the formation is paused and records what these
//! functions decide: the answer, and the event on each group's primary.

use pgpilot_proto::ReplicationState as S;

use super::Refusal;
use crate::fsm::NodeSnapshot;

/// The event kind of a pause and of a resume.
pub const PAUSED: &str = "formation_paused";
pub const RESUMED: &str = "formation_resumed";

/// Who paused a formation and when (RFC 3339), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausedBy {
    pub by: String,
    pub since: String,
}

/// What a pause or a resume records: the operator's answer and the text
/// of the event recorded on each group's primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub message: String,
    pub event: String,
}

/// Pause `formation` (currently `paused`) at the request of `operator`.
pub fn pause(
    formation: &str,
    paused: Option<&PausedBy>,
    operator: &str,
) -> Result<Change, Refusal> {
    if let Some(p) = paused {
        return Err(Refusal::AlreadyPaused {
            formation: formation.into(),
            by: p.by.clone(),
            since: p.since.clone(),
        });
    }
    Ok(Change {
        message: format!(
            "formation {formation} paused: the monitor starts no failover until resume (an operator's switchover still runs; a failover already under way finishes)"
        ),
        event: format!("formation paused by {operator}: no failover until resume"),
    })
}

/// Resume `formation` (currently `paused`) at the request of `operator`.
pub fn resume(
    formation: &str,
    paused: Option<&PausedBy>,
    operator: &str,
) -> Result<Change, Refusal> {
    let Some(p) = paused else {
        return Err(Refusal::NotPaused {
            formation: formation.into(),
        });
    };
    Ok(Change {
        message: format!(
            "formation {formation} resumed (paused by {} since {}): automatic failover is back",
            p.by, p.since
        ),
        event: format!("formation resumed by {operator}: automatic failover is back"),
    })
}

/// The node of each group that carries a pause or resume event: the
/// group's primary (goal on the primary side), else its lowest id. `nodes`
/// are `(group, node)` pairs of one formation; a formation without nodes
/// records no event.
pub fn event_nodes(nodes: &[(i32, &NodeSnapshot)]) -> Vec<usize> {
    let mut groups: Vec<i32> = nodes.iter().map(|(g, _)| *g).collect();
    groups.sort_unstable();
    groups.dedup();
    groups
        .into_iter()
        .filter_map(|g| {
            let in_group =
                (0..nodes.len()).filter(|&i| nodes[i].0 == g && nodes[i].1.goal != S::Dropped);
            in_group
                .clone()
                .find(|&i| nodes[i].1.goal.is_writable_primary())
                .or_else(|| in_group.min_by_key(|&i| nodes[i].1.id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::timings;
    use crate::core::RefusalCode;

    fn paused() -> PausedBy {
        PausedBy {
            by: "operator:alice".into(),
            since: "2026-12-07T12:00:00Z".into(),
        }
    }

    #[test]
    fn pause_and_resume_each_refuse_the_state_they_would_not_change() {
        let p = pause("default", None, "operator:bob").unwrap();
        assert!(
            p.message.contains("formation default paused"),
            "{}",
            p.message
        );
        assert_eq!(
            p.event,
            "formation paused by operator:bob: no failover until resume"
        );
        let refused = pause("default", Some(&paused()), "operator:bob").unwrap_err();
        assert_eq!(refused.code(), RefusalCode::FailedPrecondition);
        assert_eq!(
            refused.to_string(),
            "formation default is already paused (by operator:alice since 2026-12-07T12:00:00Z): resume it with resume"
        );

        let r = resume("default", Some(&paused()), "operator:bob").unwrap();
        assert!(
            r.message
                .contains("resumed (paused by operator:alice since 2026-12-07T12:00:00Z)"),
            "{}",
            r.message
        );
        assert_eq!(
            r.event,
            "formation resumed by operator:bob: automatic failover is back"
        );
        let refused = resume("default", None, "operator:bob").unwrap_err();
        assert_eq!(refused.code(), RefusalCode::FailedPrecondition);
        assert_eq!(
            refused.to_string(),
            "formation default is not paused: nothing to resume"
        );
    }

    #[test]
    fn the_event_goes_to_each_groups_primary_else_its_first_node() {
        let node = |id: i64, goal: S| {
            let mut n = NodeSnapshot::registered(id, &format!("node{id}"), 50, true, timings());
            n.goal = goal;
            n
        };
        let (a, b, c, d, e) = (
            node(1, S::Secondary),
            node(2, S::Primary),
            node(3, S::Secondary),
            node(4, S::Catchingup),
            node(5, S::Dropped),
        );
        // Group 0 has a primary (node2); group 1 none (its lowest id, node3).
        let nodes = [(0, &a), (0, &b), (1, &d), (1, &c), (1, &e)];
        assert_eq!(event_nodes(&nodes), vec![1, 3]);
        assert!(event_nodes(&[]).is_empty());
        // A group of dropped nodes only records nothing.
        assert!(event_nodes(&[(2, &e)]).is_empty());
    }
}
