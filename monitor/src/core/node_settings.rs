//! A node's own settings — candidate priority, replication quorum, apply
//! delay — as `SetNodeSettings` changes them and as a keeper registers
//! them. One rule ties them: a delayed standby (apply delay above 0) is
//! never promoted and never counted for synchronous commit, so a delay
//! above 0 comes with candidate priority 0 and the quorum off, set in the
//! same command, and asking a delayed node for either is refused.

use pgpilot_proto::delay;

use super::commands::{apply_settings, find, Command};
use super::group::apply_goals;
use super::Refusal;
use crate::fsm::{self, NodeSnapshot};

/// What `SetNodeSettings` asks for one node; `None`: left as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSettings {
    pub candidate_priority: Option<u32>,
    pub replication_quorum: Option<bool>,
    /// The apply delay in milliseconds (0: not delayed), already checked
    /// against PostgreSQL's limit.
    pub apply_delay_ms: Option<u64>,
}

/// Change a node's candidate priority, replication quorum and/or apply
/// delay (applied to `nodes`; the caller stores the node's three values as
/// they are then). A delay above 0 sets priority 0 and the quorum off with
/// it; a priority above 0 or the quorum asked for a node that is or would
/// be delayed is refused. The primary applies a change of who counts for
/// the quorum.
pub fn set_node_settings(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    name: &str,
    asked: NodeSettings,
    number_sync_standbys: u32,
) -> Result<Command, Refusal> {
    let i = find(nodes, formation, name)?;
    super::cascade::check_node_settings(
        nodes,
        i,
        asked.candidate_priority,
        asked.replication_quorum,
    )?;
    let before = nodes[i].clone();
    let delay_ms = asked.apply_delay_ms.unwrap_or(before.apply_delay_ms);
    refuse_delayed_candidate(name, delay_ms, asked)?;
    let mut after = before.clone();
    after.apply_delay_ms = delay_ms;
    if let Some(p) = asked.candidate_priority {
        after.candidate_priority = p;
    }
    if let Some(q) = asked.replication_quorum {
        after.replication_quorum = q;
    }
    if after.delayed() {
        after.candidate_priority = 0;
        after.replication_quorum = false;
    }
    let mut hypothetical = nodes.to_vec();
    hypothetical[i] = after.clone();
    fsm::check_settings(&hypothetical, number_sync_standbys).map_err(Refusal::Settings)?;
    let what = describe_change(name, &before, &after, asked);
    nodes[i] = after;
    let decisions = if nodes[i].counts_for_quorum() != before.counts_for_quorum() {
        apply_settings(nodes, &what)
    } else {
        Vec::new()
    };
    apply_goals(nodes, &decisions);
    Ok(Command {
        decisions,
        message: what,
    })
}

/// Refuse a node with apply delay `delay_ms` (as it would be) asked for a
/// candidate priority above 0 or for the replication quorum.
fn refuse_delayed_candidate(name: &str, delay_ms: u64, asked: NodeSettings) -> Result<(), Refusal> {
    if delay_ms == 0 {
        return Ok(());
    }
    let refused = |what: String| Refusal::DelayedCandidate {
        name: name.to_string(),
        apply_delay_ms: delay_ms,
        asked: what,
    };
    if let Some(p) = asked.candidate_priority.filter(|&p| p > 0) {
        return Err(refused(format!("candidate_priority {p}")));
    }
    if asked.replication_quorum == Some(true) {
        return Err(refused("replication_quorum true".to_string()));
    }
    Ok(())
}

/// The answer to the operator: what changed, and what came with it.
fn describe_change(
    name: &str,
    before: &NodeSnapshot,
    after: &NodeSnapshot,
    asked: NodeSettings,
) -> String {
    let mut what = Vec::new();
    if let Some(ms) = asked.apply_delay_ms {
        let text = if ms > 0 {
            format!(
                "apply delay of {name} set to {}, with candidate_priority 0 and replication_quorum false: a delayed standby is never promoted nor counted for synchronous commit",
                delay::describe(ms)
            )
        } else if before.delayed() {
            format!(
                "apply delay of {name} set to 0: it applies WAL as it arrives again; its candidate_priority ({}) and replication_quorum ({}) are left as they are: raise them with set-candidate-priority and set-replication-quorum",
                after.candidate_priority, after.replication_quorum
            )
        } else {
            format!("apply delay of {name} set to 0 (it was not delayed)")
        };
        what.push(text);
    }
    if let Some(p) = asked.candidate_priority {
        what.push(format!("candidate_priority of {name} set to {p}"));
    }
    if let Some(q) = asked.replication_quorum {
        what.push(format!("replication_quorum of {name} set to {q}"));
    }
    what.join("; ")
}

/// Refuse a registration whose settings contradict each other: an apply
/// delay above 0 with a candidate priority above 0 or the replication
/// quorum on. (The keeper's configuration gives a delayed node priority 0
/// and the quorum off unless they are set; this catches a keeper that set
/// them, or a client that is not a keeper of ours.)
pub fn check_registration(
    name: &str,
    candidate_priority: u32,
    replication_quorum: bool,
    apply_delay_ms: u64,
) -> Result<(), Refusal> {
    if apply_delay_ms > 0 && (candidate_priority > 0 || replication_quorum) {
        return Err(Refusal::DelayedRegistration {
            name: name.to_string(),
            apply_delay_ms,
            candidate_priority,
            replication_quorum,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use pgpilot_proto::ReplicationState as S;

    use super::*;
    use crate::core::test_support::timings;

    const HOUR_MS: u64 = 3_600_000;

    fn node(id: i64, state: S, priority: u32) -> NodeSnapshot {
        let mut n = NodeSnapshot::registered(id, &format!("node{id}"), priority, true, timings());
        n.reported = state;
        n.goal = state;
        n.pg_running = true;
        n.wal_receiver_streaming = state != S::Primary;
        n
    }

    /// A primary and two quorum standbys of priority 50.
    fn group() -> Vec<NodeSnapshot> {
        vec![
            node(1, S::Primary, 50),
            node(2, S::Secondary, 50),
            node(3, S::Secondary, 50),
        ]
    }

    fn delay(ms: u64) -> NodeSettings {
        NodeSettings {
            apply_delay_ms: Some(ms),
            ..Default::default()
        }
    }

    #[test]
    fn a_delay_sets_priority_zero_and_the_quorum_off_in_the_same_command() {
        let mut nodes = group();
        let c = set_node_settings(&mut nodes, "default", "node3", delay(HOUR_MS), 0).unwrap();
        let n = &nodes[2];
        assert_eq!(
            (n.apply_delay_ms, n.candidate_priority, n.replication_quorum),
            (HOUR_MS, 0, false)
        );
        assert!(!n.may_be_promoted() && !n.counts_for_quorum());
        assert!(
            c.message.starts_with("apply delay of node3 set to 1h, with candidate_priority 0 and replication_quorum false"),
            "{}",
            c.message
        );
        // It left the quorum: the primary applies the new set.
        assert_eq!(c.decisions.len(), 1);
        assert_eq!(
            (c.decisions[0].node_id, c.decisions[0].to),
            (1, S::ApplySettings)
        );
        // Another delay only changes the delay.
        let c = set_node_settings(&mut nodes, "default", "node3", delay(60_000), 0).unwrap();
        assert!(c.decisions.is_empty());
        assert_eq!(nodes[2].apply_delay_ms, 60_000);
    }

    #[test]
    fn a_delayed_node_is_refused_a_priority_or_the_quorum_until_its_delay_is_zero() {
        let mut nodes = group();
        set_node_settings(&mut nodes, "default", "node3", delay(HOUR_MS), 0).unwrap();
        let before = nodes.clone();
        for asked in [
            NodeSettings {
                candidate_priority: Some(10),
                ..Default::default()
            },
            NodeSettings {
                replication_quorum: Some(true),
                ..Default::default()
            },
            // Both in one command, with the delay: refused as well.
            NodeSettings {
                candidate_priority: Some(10),
                apply_delay_ms: Some(HOUR_MS),
                ..Default::default()
            },
        ] {
            let err = set_node_settings(&mut nodes, "default", "node3", asked, 0).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("with an apply delay of 1h, node3 is a delayed standby")
                    && text.contains("is refused")
                    && text.ends_with("set its apply delay to 0 first (set-apply-delay node3 0)"),
                "{text}"
            );
            assert_eq!(nodes, before, "nothing changed on a refusal");
        }
        // Priority 0 and the quorum off are what it has: accepted.
        let zero = NodeSettings {
            candidate_priority: Some(0),
            replication_quorum: Some(false),
            ..Default::default()
        };
        set_node_settings(&mut nodes, "default", "node3", zero, 0).unwrap();
        // Delay 0 and a priority in one command: accepted, and the
        // priority and quorum are otherwise left as they were.
        let c = set_node_settings(&mut nodes, "default", "node3", delay(0), 0).unwrap();
        assert!(c.message.contains("left as they are"), "{}", c.message);
        assert_eq!(
            (nodes[2].candidate_priority, nodes[2].replication_quorum),
            (0, false)
        );
        let undelay_and_raise = NodeSettings {
            candidate_priority: Some(70),
            replication_quorum: Some(true),
            apply_delay_ms: Some(0),
        };
        set_node_settings(&mut nodes, "default", "node3", undelay_and_raise, 0).unwrap();
        assert!(nodes[2].may_be_promoted() && nodes[2].counts_for_quorum());
    }

    #[test]
    fn a_delay_that_would_leave_no_candidate_or_too_small_a_quorum_is_refused() {
        // node2 has priority 0: delaying node3 would leave no candidate.
        let mut nodes = group();
        nodes[1].candidate_priority = 0;
        let err = set_node_settings(&mut nodes, "default", "node3", delay(HOUR_MS), 0).unwrap_err();
        assert!(
            err.to_string().contains("no one could be promoted"),
            "{err}"
        );
        assert_eq!(nodes[2].apply_delay_ms, 0);
        // number_sync_standbys 1 needs two quorum standbys.
        let mut nodes = group();
        let err = set_node_settings(&mut nodes, "default", "node3", delay(HOUR_MS), 1).unwrap_err();
        assert!(
            err.to_string().starts_with("number_sync_standbys = 1"),
            "{err}"
        );
    }

    #[test]
    fn a_node_being_promoted_cannot_be_delayed() {
        let mut nodes = group();
        nodes[0].goal = S::Demoted;
        nodes[1].goal = S::PreparePromotion;
        nodes[2].goal = S::ReportLsn;
        let err = set_node_settings(&mut nodes, "default", "node2", delay(HOUR_MS), 0).unwrap_err();
        assert!(err.to_string().contains("is being promoted"), "{err}");
    }

    #[test]
    fn a_registration_with_a_delay_must_not_be_a_candidate() {
        assert!(check_registration("node3", 0, false, HOUR_MS).is_ok());
        assert!(check_registration("node3", 50, true, 0).is_ok());
        for (p, q) in [(50, false), (0, true)] {
            let err = check_registration("node3", p, q, HOUR_MS).unwrap_err();
            assert!(
                err.to_string().contains(
                    "set candidate_priority = 0 and replication_quorum = false in its keeper configuration, or remove apply_delay"
                ),
                "{err}"
            );
        }
    }
}
