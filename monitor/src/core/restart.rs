//! Restarting a node's PostgreSQL through pgpilot (`restart`): the monitor
//! raises the node's restart counter and answers it in every heartbeat
//! reply; the keeper restarts PostgreSQL once, at rest, with keepalives
//! going out meanwhile, and reports the counter it carried out. The state
//! machine needs no rule of its own: a primary restarting in place is a
//! primary whose PostgreSQL is down while its keeper runs, which waits
//! `postgres_restart_timeout` before any failover (a fast restart takes
//! about a second); a synchronous standby restarting leaves the
//! synchronous set and comes back as any standby whose server stopped.
//!
//! The CLI rolls a group with this one command: standbys one after the
//! other, then a switchover away from the primary and the old primary
//! restarted as a standby (or in place with `--in-place`), so writes stop
//! only for a switchover. See [`order`].

use pgpilot_proto::ReplicationState as S;

use super::commands::find;
use super::Refusal;
use crate::fsm::NodeSnapshot;

/// The event kind of a restart asked through the monitor.
pub const REQUESTED: &str = "restart_requested";

/// A node's restart counters: asked through the monitor, and the last
/// one its keeper carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub requested: u64,
    pub done: u64,
}

impl Counters {
    /// A restart asked for and not carried out yet.
    pub fn under_way(&self) -> bool {
        self.requested > self.done
    }
}

/// What a restart asked for records: the node (its index), the answer to
/// the operator and the event's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub index: usize,
    pub message: String,
    pub event: String,
}

/// Goals a node is restarted in: PostgreSQL runs as a primary or a standby.
fn restartable(goal: S) -> bool {
    matches!(
        goal,
        S::Single | S::WaitPrimary | S::Primary | S::Secondary | S::Catchingup
    )
}

/// Ask for a restart of node `name` of the group `nodes` (their counters
/// in `counters`, in the same order) at the request of `operator`.
pub fn request(
    nodes: &[NodeSnapshot],
    counters: &[Counters],
    formation: &str,
    name: &str,
    operator: &str,
) -> Result<Requested, Refusal> {
    let index = find(nodes, formation, name)?;
    let node = &nodes[index];
    if counters.get(index).is_some_and(Counters::under_way) {
        return Err(Refusal::RestartUnderWay { name: name.into() });
    }
    if !restartable(node.goal) || node.reported != node.goal || !node.pg_running {
        return Err(Refusal::RestartNotRunning {
            name: name.into(),
            reported: node.reported,
            goal: node.goal,
            pg_running: node.pg_running,
        });
    }
    let role = if node.goal.is_writable_primary() {
        "primary, in place: writes stop until it is back"
    } else {
        "standby"
    };
    Ok(Requested {
        index,
        message: format!("{name} ({role}) is being restarted by its keeper"),
        event: format!("restart of PostgreSQL asked by {operator} ({role})"),
    })
}

/// One step of a rolling restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Restart this node in place.
    Restart(String),
    /// Switch over away from this primary (it then restarts as a standby).
    SwitchOver(String),
}

/// A node of a group as a rolling restart plans with it (the CLI has it
/// from `show-state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: i64,
    pub name: String,
    pub goal: S,
    pub candidate_priority: u32,
}

/// The order a rolling restart of `nodes` takes: every standby named in
/// `wanted` first (lowest candidate priority first, so the likeliest next
/// primary restarts last among them), then the primary — after a
/// switchover unless `in_place` (or it has no standby to hand over to),
/// and restarted then as a standby.
pub fn order(nodes: &[Member], wanted: &[&str], in_place: bool) -> Vec<Step> {
    let wants = |n: &Member| wanted.contains(&n.name.as_str());
    let mut standbys: Vec<&Member> = nodes
        .iter()
        .filter(|n| wants(n) && !n.goal.is_writable_primary() && restartable(n.goal))
        .collect();
    standbys.sort_by_key(|n| (n.candidate_priority, n.id));
    let mut steps: Vec<Step> = standbys
        .iter()
        .map(|n| Step::Restart(n.name.clone()))
        .collect();
    let primary = nodes
        .iter()
        .find(|n| wants(n) && n.goal.is_writable_primary());
    if let Some(p) = primary {
        let can_hand_over = nodes
            .iter()
            .any(|n| n.id != p.id && n.goal == S::Secondary && n.candidate_priority > 0);
        if !in_place && can_hand_over {
            steps.push(Step::SwitchOver(p.name.clone()));
        }
        steps.push(Step::Restart(p.name.clone()));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::timings;

    fn node(id: i64, state: S, priority: u32) -> NodeSnapshot {
        let mut n = NodeSnapshot::registered(id, &format!("node{id}"), priority, true, timings());
        n.reported = state;
        n.goal = state;
        n.pg_running = true;
        n
    }

    fn group() -> Vec<NodeSnapshot> {
        vec![
            node(1, S::Primary, 50),
            node(2, S::Secondary, 90),
            node(3, S::Secondary, 10),
        ]
    }

    fn members(nodes: &[NodeSnapshot]) -> Vec<Member> {
        nodes
            .iter()
            .map(|n| Member {
                id: n.id,
                name: n.name.clone(),
                goal: n.goal,
                candidate_priority: n.candidate_priority,
            })
            .collect()
    }

    #[test]
    fn a_settled_running_node_is_restarted_once_at_a_time() {
        let nodes = group();
        let idle = vec![Counters::default(); 3];
        let r = request(&nodes, &idle, "default", "node2", "operator:ops").unwrap();
        assert_eq!(r.index, 1);
        assert!(r.message.contains("standby"), "{}", r.message);
        assert!(r.event.contains("operator:ops"), "{}", r.event);
        let p = request(&nodes, &idle, "default", "node1", "operator:ops").unwrap();
        assert!(p.message.contains("in place"), "{}", p.message);

        let mut busy = idle.clone();
        busy[1] = Counters {
            requested: 2,
            done: 1,
        };
        assert_eq!(
            request(&nodes, &busy, "default", "node2", "o"),
            Err(Refusal::RestartUnderWay {
                name: "node2".into()
            })
        );
    }

    #[test]
    fn an_unknown_unsettled_or_stopped_node_is_refused_in_a_sentence() {
        let mut nodes = group();
        let idle = vec![Counters::default(); 3];
        let unknown = request(&nodes, &idle, "default", "node9", "o").unwrap_err();
        assert!(unknown.to_string().contains("node9"), "{unknown}");
        nodes[1].reported = S::Catchingup;
        let moving = request(&nodes, &idle, "default", "node2", "o").unwrap_err();
        assert!(
            moving.to_string().contains("wait until it settles"),
            "{moving}"
        );
        nodes[1].reported = S::Secondary;
        nodes[1].pg_running = false;
        assert!(matches!(
            request(&nodes, &idle, "default", "node2", "o"),
            Err(Refusal::RestartNotRunning { .. })
        ));
        nodes[2].goal = S::Maintenance;
        nodes[2].reported = S::Maintenance;
        assert!(matches!(
            request(&nodes, &idle, "default", "node3", "o"),
            Err(Refusal::RestartNotRunning { .. })
        ));
    }

    #[test]
    fn a_rolling_restart_takes_the_standbys_first_and_switches_over_last() {
        let nodes = members(&group());
        let all = ["node1", "node2", "node3"];
        assert_eq!(
            order(&nodes, &all, false),
            vec![
                Step::Restart("node3".into()),
                Step::Restart("node2".into()),
                Step::SwitchOver("node1".into()),
                Step::Restart("node1".into()),
            ]
        );
        assert_eq!(
            order(&nodes, &all, true),
            vec![
                Step::Restart("node3".into()),
                Step::Restart("node2".into()),
                Step::Restart("node1".into()),
            ]
        );
        // Only the nodes asked for.
        assert_eq!(
            order(&nodes, &["node2"], false),
            vec![Step::Restart("node2".into())]
        );
    }

    #[test]
    fn a_primary_without_a_standby_to_take_over_restarts_in_place() {
        let mut nodes = members(&group());
        nodes[1].candidate_priority = 0;
        nodes[2].goal = S::Catchingup;
        assert_eq!(
            order(&nodes, &["node1"], false),
            vec![Step::Restart("node1".into())]
        );
        let single = members(&[node(1, S::Single, 50)]);
        assert_eq!(
            order(&single, &["node1"], false),
            vec![Step::Restart("node1".into())]
        );
    }
}
