//! A keeper stopping its node on purpose (SIGTERM from an init system,
//! `docker stop`, a host shutting down): instead of going silent and
//! leaving the monitor to wait for `node_timeout` and the fence deadline,
//! a primary hands over as in a planned failover (it stops taking writes,
//! a standby with all its WAL is promoted), and a secondary leaves the
//! synchronous set before its PostgreSQL stops, so no commit waits for it.
//! The keeper stops PostgreSQL once told it may ([`may_stop`]), or when no
//! standby can take over ([`start`]'s refusal), or at its own deadline.

use pgpilot_proto::lsn::application_name;
use pgpilot_proto::ReplicationState as S;

use super::commands::perform_failover;
use super::group::apply_goals;
use super::{Env, Refusal};
use crate::fsm::{self, Decision, NodeSnapshot, Reason};

/// What the reply tells a stopping keeper.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stop {
    /// PostgreSQL may stop now.
    pub may_stop: bool,
    /// Why no standby takes over from this primary (it stops anyway).
    pub refused: Option<String>,
}

/// The goal changes that start node `index`'s stop (applied to `nodes`),
/// and, for a primary no standby can take over from, why.
pub fn start(
    nodes: &mut [NodeSnapshot],
    index: usize,
    env: &Env,
) -> (Vec<Decision>, Option<String>) {
    let me = &nodes[index];
    let reason = Reason::KeeperStopping {
        node: me.name.clone(),
    };
    if me.goal.is_writable_primary() {
        return match perform_failover(nodes, "", None, env) {
            Ok(command) => {
                let decisions = command
                    .decisions
                    .into_iter()
                    .map(|d| Decision {
                        reason: reason.clone(),
                        ..d
                    })
                    .collect();
                (decisions, None)
            }
            // Still on its way to its goal: asked again with the next heartbeat.
            Err(Refusal::PrimaryNotSettled { .. }) => (Vec::new(), None),
            Err(refusal) => (Vec::new(), Some(refusal.to_string())),
        };
    }
    if me.goal == S::Secondary && me.reported == S::Secondary {
        let d = Decision {
            node_id: me.id,
            from: me.goal,
            to: S::Catchingup,
            reason,
        };
        apply_goals(nodes, std::slice::from_ref(&d));
        return (vec![d], None);
    }
    (Vec::new(), None)
}

/// Whether node `index`'s PostgreSQL may stop now, in the group as
/// evaluated: a primary once it reported `draining` (stopped cleanly: the
/// election goes on without it); a node taking part in an election or a
/// promotion, never; a standby once no live primary running synchronous
/// replication (by its goal or by what it last reported: it applies a new
/// set only after its next heartbeat) counts it, nor would an election
/// about that primary (the fence set's pending part). A primary without
/// synchronous replication (`wait_primary`) waits for no standby's
/// acknowledgement.
pub fn may_stop(nodes: &[NodeSnapshot], index: usize, env: &Env) -> bool {
    let me = &nodes[index];
    match me.goal {
        S::Draining => me.reported == S::Draining,
        g if g.is_writable_primary() || fsm::is_handing_over(g) => false,
        S::ReportLsn | S::FastForward | S::PreparePromotion | S::StopReplication | S::Secondary => {
            false
        }
        _ => {
            let app = application_name(me.id);
            let synchronous = |s: S| matches!(s, S::Primary | S::JoinPrimary | S::ApplySettings);
            !nodes.iter().enumerate().any(|(j, p)| {
                j != index
                    && (synchronous(p.goal) || synchronous(p.reported))
                    && env.alive(p)
                    && p.election_fence(nodes).0.contains(&app)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::{env, timings};
    use chrono::Utc;

    fn group() -> Vec<NodeSnapshot> {
        let now = Utc::now();
        let mut nodes: Vec<NodeSnapshot> = (1..=3)
            .map(|id| {
                let mut n = NodeSnapshot::registered(id, &format!("node{id}"), 50, true, timings());
                n.last_heartbeat = Some(now);
                n.pg_running = true;
                n.wal_receiver_streaming = id != 1;
                n.timeline = 1;
                n
            })
            .collect();
        for (i, s) in [S::Primary, S::Secondary, S::Secondary]
            .into_iter()
            .enumerate()
        {
            nodes[i].goal = s;
            nodes[i].reported = s;
        }
        let plan = fsm::replication_plan(&nodes, 0, 0);
        nodes[0].fence_set = plan.fence_set;
        nodes[0].fence_required = plan.fence_required;
        nodes
    }

    #[test]
    fn a_stopping_primary_hands_over_and_may_stop_once_drained() {
        let env = env(Utc::now());
        let mut nodes = group();
        let (decisions, refused) = start(&mut nodes, 0, &env);
        assert_eq!(refused, None);
        let goals: Vec<(i64, S)> = decisions.iter().map(|d| (d.node_id, d.to)).collect();
        assert_eq!(
            goals,
            vec![(1, S::Draining), (2, S::ReportLsn), (3, S::ReportLsn)]
        );
        assert!(decisions
            .iter()
            .all(|d| d.reason.kind() == "keeper_stopping"));
        assert_eq!(nodes[0].goal, S::Draining);
        assert!(!may_stop(&nodes, 0, &env), "not drained yet");
        nodes[0].reported = S::Draining;
        assert!(may_stop(&nodes, 0, &env));
        // Electing standbys never stop in the middle.
        assert!(!may_stop(&nodes, 1, &env));
    }

    #[test]
    fn a_primary_no_standby_can_replace_stops_with_the_reason() {
        let env = env(Utc::now());
        let mut nodes = group();
        for n in &mut nodes[1..] {
            n.candidate_priority = 0;
        }
        let (decisions, refused) = start(&mut nodes, 0, &env);
        assert!(decisions.is_empty());
        assert!(
            refused
                .as_deref()
                .is_some_and(|r| r.contains("no healthy secondary")),
            "{refused:?}"
        );
        // Not settled yet: asked again, nothing refused.
        let mut nodes = group();
        nodes[0].goal = S::WaitPrimary;
        let (decisions, refused) = start(&mut nodes, 0, &env);
        assert!(decisions.is_empty() && refused.is_none());
    }

    #[test]
    fn a_stopping_secondary_leaves_the_synchronous_set_first() {
        let env = env(Utc::now());
        let mut nodes = group();
        let (decisions, refused) = start(&mut nodes, 1, &env);
        assert_eq!(refused, None);
        assert_eq!(decisions.len(), 1);
        assert_eq!(
            (decisions[0].from, decisions[0].to),
            (S::Secondary, S::Catchingup)
        );
        // The primary still counts it until it applied the new set.
        assert!(!may_stop(&nodes, 1, &env));
        let plan = fsm::replication_plan(&nodes, 0, 0);
        nodes[0].fence_set = plan.fence_set;
        nodes[0].fence_required = plan.fence_required;
        assert!(may_stop(&nodes, 1, &env), "{:?}", nodes[0].fence_set);
        // With its primary gone silent, nothing counts it.
        let mut nodes = group();
        nodes[1].goal = S::Catchingup;
        nodes[0].last_heartbeat = Some(Utc::now() - chrono::Duration::seconds(60));
        assert!(may_stop(&nodes, 1, &env));
        // Its only standby leaving: the primary turns synchronous
        // replication off (wait_primary) and, once it reports so, waits
        // for nobody.
        let mut pair = group();
        pair.truncate(2);
        let (decisions, _) = start(&mut pair, 1, &env);
        assert_eq!(decisions.len(), 1);
        pair[0].goal = S::WaitPrimary;
        assert!(!may_stop(&pair, 1, &env), "still running as primary");
        pair[0].reported = S::WaitPrimary;
        assert!(may_stop(&pair, 1, &env));
        // A node already away from the synchronous set starts nothing.
        let (decisions, _) = start(&mut nodes, 1, &env);
        assert!(decisions.is_empty());
    }
}
