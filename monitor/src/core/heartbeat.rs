//! A keeper's heartbeat folded into its locked group: the node's report is
//! applied, the group evaluated, and the reply decided — the goal, the node
//! to follow, the replication settings, and the fence set to store for a
//! primary. Also the fact that a node reached its goal, from which the
//! transition's duration is measured.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;

use super::clone_source::{self, Preference};
use super::group::{evaluate, update_fence, upstream_of, Evaluation};
use super::stopping::{self, Stop};
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
    /// A keepalive: the goal of the plan the keeper is carrying out. None
    /// when the keeper is at rest in its reported state.
    pub acting_toward: Option<S>,
    /// The keeper's `clone_from` (see [`clone_source`]).
    pub clone_from: String,
    /// The keeper is stopping its node (see [`stopping`]).
    pub stopping: bool,
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
    /// Index of the node to follow (standbys), rewind or clone from.
    pub upstream: Option<usize>,
    /// Index of the standby a clone copies from instead (see
    /// [`clone_source`]).
    pub clone_source: Option<usize>,
    /// The node is a standby named in its primary's synchronous set.
    pub synchronous_standby: bool,
    /// The primary's new fence, when it changed (already in the group).
    pub fence: Option<NodeFence>,
    /// To a stopping keeper: whether its PostgreSQL may stop now.
    pub stop: Option<Stop>,
    /// The formation is paused.
    pub paused: bool,
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
    // A heartbeat built before the one already folded in (a keepalive
    // delayed past the loop's next heartbeat) reports a state the keeper
    // may have left: it is answered, never folded in.
    let stale = is_stale(me, &beat.report);
    let (reached, back) = if stale {
        (None, None)
    } else {
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
        let back = if beat.acting_toward.is_none() {
            goal_back_to_reported(nodes, index)
        } else {
            None
        };
        (reached, back)
    };
    let (stop_decisions, refused) = if beat.stopping && !stale {
        stopping::start(nodes, index, env)
    } else {
        (Vec::new(), None)
    };
    let mut evaluation = evaluate(nodes, env);
    evaluation
        .decisions
        .splice(0..0, back.into_iter().chain(stop_decisions));
    let mut reply = reply(
        nodes,
        index,
        env,
        beat.synchronous_standby_names.as_deref(),
        &beat.clone_from,
    );
    if beat.stopping {
        reply.stop = Some(Stop {
            may_stop: refused.is_some() || stopping::may_stop(nodes, index, env),
            refused,
        });
    }
    Folded::Answer(Box::new(Answer {
        evaluation,
        reply,
        reached,
    }))
}

/// The heartbeat was built no later than the one last folded into `me`,
/// by the same keeper host on the same boot.
pub fn is_stale(me: &NodeSnapshot, report: &fsm::Report) -> bool {
    match (report.sent, me.heard_sent) {
        (Some(sent), Some(heard)) => sent.not_after(heard),
        _ => false,
    }
}

/// A keeper at rest that reports a state from which its goal has no edge
/// cannot move (a keepalive's keeper is still on its way somewhere): the goal was decided from an older report (it changed twice
/// between two heartbeats, or was set while the keeper was still on its
/// way to the previous one). Its heartbeat says where it really is, so the
/// goal goes back to that state and the group is decided again from there.
/// Only a standby's reported state (or a promoting node's, with no other
/// primary) becomes its goal again. Not for a writable primary, nor for a goal on the primary side (a
/// writable primary, a handover, `demoted`, a promotion's steps); nor for
/// a node of a promotion
/// (`fast_forward`, `prepare_promotion`, `stop_replication`) while another
/// node is a primary or being promoted: giving it that goal back would
/// resume a promotion the state machine has moved on from. (With no other
/// primary it is the election's winner again: its goal moves on from
/// where it is.)
pub fn goal_back_to_reported(nodes: &mut [NodeSnapshot], index: usize) -> Option<fsm::Decision> {
    let promoting = |s: S| matches!(s, S::FastForward | S::PreparePromotion | S::StopReplication);
    let (reported, goal) = (nodes[index].reported, nodes[index].goal);
    let other_primary = nodes
        .iter()
        .enumerate()
        .any(|(j, n)| j != index && (n.goal.is_writable_primary() || promoting(n.goal)));
    // A goal on the primary side, of a handover or of a promotion is never
    // taken back either: a heartbeat that arrives late (sent before a
    // promotion the monitor has since seen reported) must not undo it.
    let primary_side = |s: S| {
        s.is_writable_primary() || fsm::is_handing_over(s) || s == S::Demoted || promoting(s)
    };
    // And only a standby's state becomes its goal again: a late heartbeat
    // of an old primary (`draining`, `demoted`) must not send it back.
    let standby_side = matches!(
        reported,
        S::Catchingup
            | S::Secondary
            | S::ReportLsn
            | S::JoinSecondary
            | S::WaitStandby
            | S::WaitMaintenance
            | S::Maintenance
    ) || (promoting(reported) && !other_primary);
    if pgpilot_proto::keeper_has_edge(reported, goal) || primary_side(goal) || !standby_side {
        return None;
    }
    let me = &mut nodes[index];
    me.goal = reported;
    Some(fsm::Decision {
        node_id: me.id,
        from: goal,
        to: reported,
        reason: fsm::Reason::GoalUnreachable { reported, goal },
    })
}

/// The reply to node `index` of a group already evaluated; a changed fence
/// of a primary is stored in `nodes`.
pub fn reply(
    nodes: &mut [NodeSnapshot],
    index: usize,
    env: &Env,
    applied_sync_names: Option<&str>,
    clone_from: &str,
) -> Reply {
    let plan = fsm::replication_plan(nodes, index, env.settings.number_sync_standbys);
    let fence = update_fence(nodes, index, &plan, applied_sync_names);
    let primary = upstream_of(nodes, index);
    Reply {
        upstream: super::cascade::follow(nodes, index, env),
        clone_source: clone_source::choose(nodes, index, Preference::parse(clone_from), env),
        synchronous_standby: synchronous_standby(nodes, index, primary, env),
        plan,
        fence,
        stop: None,
        paused: env.settings.paused,
    }
}

/// Whether node `index` is a standby its primary (`upstream`) is told to
/// wait for: named in the primary's `synchronous_standby_names`.
fn synchronous_standby(
    nodes: &[NodeSnapshot],
    index: usize,
    upstream: Option<usize>,
    env: &Env,
) -> bool {
    let Some(p) = upstream.filter(|&p| nodes[p].goal.is_writable_primary()) else {
        return false;
    };
    let me = pgpilot_proto::lsn::application_name(nodes[index].id);
    // With synchronous replication off (wait_primary) the fence set still
    // names standbys, but no commit waits for them.
    let plan = fsm::replication_plan(nodes, p, env.settings.number_sync_standbys);
    !plan.synchronous_standby_names.is_empty() && plan.fence_set.contains(&me)
}

/// The reply to a heartbeat that changed nothing the state machine reads,
/// or `None` when the group has something to write (a goal, an event, the
/// primary's fence): that heartbeat must take the locked path.
pub fn settled(
    nodes: &[NodeSnapshot],
    index: usize,
    env: &Env,
    applied_sync_names: Option<&str>,
    clone_from: &str,
) -> Option<Reply> {
    let mut nodes = nodes.to_vec();
    if !evaluate(&mut nodes, env).is_quiet() {
        return None;
    }
    let reply = reply(&mut nodes, index, env, applied_sync_names, clone_from);
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
        clone_source: None,
        synchronous_standby: false,
        fence: None,
        stop: None,
        paused: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::{env, timings};
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

    #[test]
    fn a_standby_hears_whether_its_primary_waits_for_it() {
        let now = Utc::now();
        let e = env(now);
        let mut nodes = stale_group(now);
        nodes[1].goal = S::Secondary;
        let sync = |nodes: &mut Vec<NodeSnapshot>, i: usize| {
            reply(nodes, i, &e, None, "").synchronous_standby
        };
        assert!(sync(&mut nodes, 1), "a quorum secondary of a primary");
        assert!(!sync(&mut nodes, 0), "the primary itself");
        nodes[1].replication_quorum = false;
        assert!(!sync(&mut nodes, 1), "outside the replication quorum");
        nodes[1].replication_quorum = true;
        nodes[0].goal = S::WaitPrimary;
        assert!(!sync(&mut nodes, 1), "synchronous replication off");
    }

    /// A primary and a standby whose goal was set from a stale report:
    /// the monitor saw it `secondary` and sent it `catchingup`, but the
    /// keeper had gone on to `report_lsn` (an election started and was
    /// cancelled between two of its heartbeats).
    fn stale_group(now: DateTime<Utc>) -> Vec<NodeSnapshot> {
        let mut primary = NodeSnapshot::registered(1, "node1", 50, true, timings());
        primary.reported = S::Primary;
        primary.goal = S::Primary;
        primary.pg_running = true;
        primary.lsn = 0x300_0000;
        primary.last_heartbeat = Some(now);
        primary.health = fsm::Health::Good;
        let mut standby = NodeSnapshot::registered(2, "node2", 50, true, timings());
        standby.reported = S::Secondary;
        standby.goal = S::Catchingup;
        standby.pg_running = true;
        standby.lsn = 0x300_0000;
        standby.last_heartbeat = Some(now);
        standby.health = fsm::Health::Good;
        vec![primary, standby]
    }

    /// The answer to node 1's heartbeat (never a dropped node's).
    fn answered(nodes: &mut [NodeSnapshot], beat: &Beat, now: DateTime<Utc>) -> Answer {
        match fold(nodes, 1, beat, &env(now)) {
            Folded::Answer(answer) => *answer,
            Folded::Forget => panic!("node 1 is not dropped"),
        }
    }

    fn beat(reported: S, acting_toward: Option<S>) -> Beat {
        Beat {
            report: fsm::Report {
                reported,
                pg_running: true,
                lsn: 0x300_0000,
                timeline: 1,
                wal_receiver_streaming: true,
                pg_start_failures: 0,
                timings: timings(),
                fence_required_held: None,
                sent: None,
                promotion_refused: false,
                acting_toward: None,
            },
            synchronous_standby_names: None,
            goal_changed_at: None,
            acting_toward,
            clone_from: String::new(),
            stopping: false,
        }
    }

    /// The keeper had no edge from `report_lsn` to `catchingup` and waited
    /// for ever (simulation seed 1222): its heartbeat now takes the goal
    /// back to where it is, with an event, and the group is decided again
    /// from there — the election is over, so it goes back to `secondary`.
    #[test]
    fn a_keeper_at_rest_without_a_path_to_its_goal_is_decided_again() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut nodes = stale_group(now);
        let answer = answered(&mut nodes, &beat(S::ReportLsn, None), now);
        let d = &answer.evaluation.decisions;
        assert_eq!((d[0].from, d[0].to), (S::Catchingup, S::ReportLsn));
        assert_eq!(d[0].reason.kind(), "goal_unreachable");
        assert_eq!(
            d[0].reason.to_string(),
            "the keeper reports report_lsn, from which it has no path to catchingup (a goal set from an older report): deciding again from report_lsn"
        );
        assert_eq!(nodes[1].goal, S::Secondary, "{d:?}");
        assert!(pgpilot_proto::keeper_has_edge(S::ReportLsn, nodes[1].goal));
    }

    /// A keepalive comes from a keeper still walking to some goal: its
    /// reported state says nothing about where it will stop.
    #[test]
    fn a_keepalive_never_takes_a_goal_back() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut nodes = stale_group(now);
        let keepalive = beat(S::ReportLsn, Some(S::ReportLsn));
        let answer = answered(&mut nodes, &keepalive, now);
        assert!(answer
            .evaluation
            .decisions
            .iter()
            .all(|d| d.reason.kind() != "goal_unreachable"));
        assert_eq!(nodes[1].goal, S::Catchingup);
    }

    /// Found by the simulation (seed 14406): a heartbeat sent in
    /// `report_lsn` by a keeper since killed arrived after the same node,
    /// restarted, was promoted; its goal `wait_primary` was taken back to
    /// `report_lsn`. A goal on the primary side or of a promotion never is.
    #[test]
    fn a_late_heartbeat_never_undoes_a_promotion() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut nodes = stale_group(now);
        nodes[0].goal = S::Demoted;
        nodes[0].reported = S::Demoted;
        nodes[1].reported = S::StopReplication;
        nodes[1].goal = S::WaitPrimary;
        let answer = answered(&mut nodes, &beat(S::ReportLsn, None), now);
        assert!(answer
            .evaluation
            .decisions
            .iter()
            .all(|d| d.reason.kind() != "goal_unreachable"));
        assert_eq!(nodes[1].goal, S::WaitPrimary);
    }

    /// Found by the simulation (seed 783353): a restarted keeper's first
    /// heartbeat (`report_lsn`, from its state file) was delayed past the
    /// next one (`secondary`, after it walked back to its goal); folded in
    /// late, it made the monitor elect a node that had left `report_lsn`,
    /// and the keeper had no edge from `secondary` to `prepare_promotion`.
    /// A heartbeat built before the one folded in is answered, never
    /// folded in.
    #[test]
    fn a_heartbeat_built_before_the_last_one_folded_in_is_not_folded_in() {
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut nodes = stale_group(now);
        nodes[1].goal = S::Secondary;
        let at = |ns| Some(fsm::KeeperClock { boot: 7, ns });
        let mut later = beat(S::Secondary, None);
        later.report.sent = at(2_000);
        answered(&mut nodes, &later, now);
        assert_eq!(nodes[1].heard_sent, at(2_000));
        let mut late = beat(S::ReportLsn, None);
        late.report.sent = at(1_000);
        late.report.lsn = 0x100;
        let answer = answered(&mut nodes, &late, now);
        assert_eq!(nodes[1].reported, S::Secondary);
        assert_eq!(nodes[1].lsn, 0x300_0000);
        assert_eq!(nodes[1].heard_sent, at(2_000));
        assert!(answer.evaluation.decisions.is_empty(), "{answer:?}");
        // Another boot (the host restarted): not ordered, folded in.
        let mut rebooted = beat(S::ReportLsn, None);
        rebooted.report.sent = Some(fsm::KeeperClock { boot: 8, ns: 10 });
        fold(&mut nodes, 1, &rebooted, &env(now));
        assert_eq!(nodes[1].reported, S::ReportLsn);
    }

    #[test]
    fn keeper_clocks_from_the_wire() {
        let c = fsm::KeeperClock::from_wire("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", 5).unwrap();
        assert_eq!(
            c.map(|c| c.boot_hex()).as_deref(),
            Some("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
        );
        assert_eq!(fsm::KeeperClock::from_wire("", 5), Ok(None));
        assert_eq!(fsm::KeeperClock::from_wire("0f1e", 0), Ok(None));
        let bad = fsm::KeeperClock::from_wire("not-a-boot-id", 5).unwrap_err();
        assert!(bad.contains("/proc/sys/kernel/random/boot_id"), "{bad}");
        assert!(fsm::KeeperClock::from_wire("0f1e2d3c4b5a69788796a5b4c3d2e1f0", u64::MAX).is_err());
        // A huge boot id is refused in a sentence short enough for a gRPC
        // status header, not echoed whole.
        let huge = fsm::KeeperClock::from_wire(&"y".repeat(30_000), 5).unwrap_err();
        assert!(huge.len() < 400, "{huge}");
    }

    /// A writable primary's goal is never taken back to it.
    #[test]
    fn a_primary_goal_is_never_taken_back() {
        let mut node = NodeSnapshot::registered(1, "node1", 50, true, timings());
        node.reported = S::Primary;
        node.goal = S::Catchingup;
        let mut nodes = vec![node];
        assert!(goal_back_to_reported(&mut nodes, 0).is_none());
        assert_eq!(nodes[0].goal, S::Catchingup);
    }
}
