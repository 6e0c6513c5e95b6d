//! Where a node about to be cloned copies its data from: the primary, or
//! a standby when its keeper's `clone_from` asks for one and one can serve.
//!
//! A standby can serve when it is settled as `secondary`, its PostgreSQL
//! runs and streams from the primary on the primary's timeline, its keeper
//! heartbeats within the node timeout and the monitor's own check does not
//! find it down. Of those, "standby" picks the least busy in what the
//! monitor can see: an asynchronous standby (outside the replication
//! quorum, so the clone's reads never slow a commit) before a synchronous
//! one, then the lowest candidate priority (the least likely to be promoted
//! in the middle of the clone), then the one that replayed the most WAL,
//! then the lowest node id. A named node serves only when it can serve;
//! otherwise, and for "primary", the clone copies the primary.

use pgpilot_proto::ReplicationState as S;

use super::group::upstream_of;
use super::Env;
use crate::fsm::{Health, NodeSnapshot};

/// A keeper's `clone_from`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference<'a> {
    Primary,
    AnyStandby,
    Node(&'a str),
}

impl<'a> Preference<'a> {
    /// "" (keepers that do not say) and "primary": the primary; "standby":
    /// any; anything else names a node.
    pub fn parse(text: &'a str) -> Preference<'a> {
        match text {
            "" | "primary" => Preference::Primary,
            "standby" => Preference::AnyStandby,
            name => Preference::Node(name),
        }
    }
}

/// Whether standby `j` can serve others WAL (a clone, or a cascading
/// standby's stream): settled as `secondary`, PostgreSQL running and
/// streaming, on the timeline of `primary`, its keeper alive and the
/// monitor's own check not failing.
pub fn can_serve(nodes: &[NodeSnapshot], j: usize, primary: usize, env: &Env) -> bool {
    let n = &nodes[j];
    j != primary
        && n.reported == S::Secondary
        && n.goal == S::Secondary
        && n.pg_running
        && n.wal_receiver_streaming
        && n.health != Health::Bad
        && env.alive(n)
        && n.timeline != 0
        && n.timeline == nodes[primary].timeline
}

/// The node `index` clones from when that is not its primary: only while
/// it is to be cloned (it waits as `wait_standby` with the goal
/// `catchingup`).
pub fn choose(
    nodes: &[NodeSnapshot],
    index: usize,
    preference: Preference,
    env: &Env,
) -> Option<usize> {
    let me = &nodes[index];
    if me.reported != S::WaitStandby || me.goal != S::Catchingup {
        return None;
    }
    let primary = upstream_of(nodes, index)?;
    let serves = |j: usize| {
        // A delayed standby's data is behind by design: a clone of it
        // would need WAL the primary may no longer hold.
        j != index && !nodes[j].delayed() && can_serve(nodes, j, primary, env)
    };
    match preference {
        Preference::Primary => None,
        Preference::Node(name) => (0..nodes.len()).find(|&j| nodes[j].name == name && serves(j)),
        Preference::AnyStandby => (0..nodes.len()).filter(|&j| serves(j)).min_by_key(|&j| {
            let n = &nodes[j];
            (
                n.replication_quorum,
                n.candidate_priority,
                std::cmp::Reverse(n.lsn),
                n.id,
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;
    use crate::core::test_support::{env, timings};

    fn node(id: i64, reported: S, goal: S) -> NodeSnapshot {
        let mut n = NodeSnapshot::registered(id, &format!("node{id}"), 50, true, timings());
        n.reported = reported;
        n.goal = goal;
        n.pg_running = true;
        n.wal_receiver_streaming = reported == S::Secondary;
        n.timeline = 1;
        n.lsn = 0x500_0000;
        n.health = Health::Good;
        n
    }

    /// A primary, two standbys, and node 4 about to be cloned.
    fn group(now: chrono::DateTime<Utc>) -> Vec<NodeSnapshot> {
        let mut nodes = vec![
            node(1, S::Primary, S::Primary),
            node(2, S::Secondary, S::Secondary),
            node(3, S::Secondary, S::Secondary),
            node(4, S::WaitStandby, S::Catchingup),
        ];
        nodes[0].wal_receiver_streaming = false;
        nodes[3].pg_running = false;
        nodes[3].wal_receiver_streaming = false;
        for n in &mut nodes {
            n.last_heartbeat = Some(now);
        }
        nodes
    }

    fn name(nodes: &[NodeSnapshot], chosen: Option<usize>) -> Option<&str> {
        chosen.map(|i| nodes[i].name.as_str())
    }

    #[test]
    fn preferences_are_read_from_the_keepers_words() {
        assert_eq!(Preference::parse(""), Preference::Primary);
        assert_eq!(Preference::parse("primary"), Preference::Primary);
        assert_eq!(Preference::parse("standby"), Preference::AnyStandby);
        assert_eq!(Preference::parse("node3"), Preference::Node("node3"));
    }

    #[test]
    fn the_primary_unless_a_standby_is_asked_for() {
        let now = Utc::now();
        let nodes = group(now);
        assert_eq!(choose(&nodes, 3, Preference::Primary, &env(now)), None);
        assert_eq!(
            name(
                &nodes,
                choose(&nodes, 3, Preference::Node("node3"), &env(now))
            ),
            Some("node3")
        );
        // The primary itself, the node itself, or a stranger: the primary.
        for other in ["node1", "node4", "node9"] {
            assert_eq!(
                choose(&nodes, 3, Preference::Node(other), &env(now)),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn only_a_node_about_to_be_cloned_gets_a_source() {
        let now = Utc::now();
        let mut nodes = group(now);
        for (reported, goal) in [
            (S::Init, S::WaitStandby),
            (S::WaitStandby, S::WaitStandby),
            (S::Catchingup, S::Catchingup),
            (S::Secondary, S::WaitStandby),
        ] {
            nodes[3].reported = reported;
            nodes[3].goal = goal;
            assert_eq!(
                choose(&nodes, 3, Preference::AnyStandby, &env(now)),
                None,
                "{reported} -> {goal}"
            );
        }
    }

    #[test]
    fn any_standby_prefers_async_then_low_priority_then_most_wal() {
        let now = Utc::now();
        let mut nodes = group(now);
        let pick = |nodes: &[NodeSnapshot]| {
            name(nodes, choose(nodes, 3, Preference::AnyStandby, &env(now))).map(str::to_string)
        };
        // Equal: the lowest id.
        assert_eq!(pick(&nodes).as_deref(), Some("node2"));
        // More WAL replayed.
        nodes[2].lsn += 1;
        assert_eq!(pick(&nodes).as_deref(), Some("node3"));
        // A lower candidate priority beats more WAL.
        nodes[1].candidate_priority = 10;
        assert_eq!(pick(&nodes).as_deref(), Some("node2"));
        // Outside the replication quorum beats a lower priority.
        nodes[2].replication_quorum = false;
        assert_eq!(pick(&nodes).as_deref(), Some("node3"));
    }

    #[test]
    fn a_standby_that_cannot_serve_is_passed_over() {
        let now = Utc::now();
        type Spoil = fn(&mut NodeSnapshot, chrono::DateTime<Utc>);
        let spoils: [(&str, Spoil); 8] = [
            ("catching up", |n, _| n.reported = S::Catchingup),
            ("leaving", |n, _| n.goal = S::ReportLsn),
            ("stopped", |n, _| n.pg_running = false),
            ("not streaming", |n, _| n.wal_receiver_streaming = false),
            ("found down", |n, _| n.health = Health::Bad),
            ("silent", |n, now| {
                n.last_heartbeat = Some(now - Duration::seconds(60))
            }),
            ("other timeline", |n, _| n.timeline = 2),
            ("timeline unknown", |n, _| n.timeline = 0),
        ];
        for (what, spoil) in spoils {
            let mut nodes = group(now);
            spoil(&mut nodes[1], now);
            let e = env(now);
            assert_eq!(
                name(&nodes, choose(&nodes, 3, Preference::AnyStandby, &e)),
                Some("node3"),
                "{what}"
            );
            assert_eq!(
                choose(&nodes, 3, Preference::Node("node2"), &e),
                None,
                "{what}"
            );
            spoil(&mut nodes[2], now);
            assert_eq!(
                choose(&nodes, 3, Preference::AnyStandby, &e),
                None,
                "{what}"
            );
        }
    }

    #[test]
    fn without_a_primary_there_is_no_source() {
        let now = Utc::now();
        let mut nodes = group(now);
        nodes[0].goal = S::Demoted;
        nodes[0].reported = S::Demoted;
        assert_eq!(choose(&nodes, 3, Preference::AnyStandby, &env(now)), None);
    }
}
