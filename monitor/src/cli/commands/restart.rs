//! `restart`: one node, or a rolling restart of a group, through the
//! keepers (see [`crate::core::restart`]): each node's restart is asked and
//! waited for before the next; a primary is switched over first unless
//! `--in-place`.

use pgpilot_proto::pb::{self, FormationState};
use pgpilot_proto::ReplicationState as S;

use super::super::args::{GroupOp, Wait};
use super::super::error::CliError;
use super::super::render::find_node;
use super::super::wait::{converged, wait_until};
use super::Operator;
use crate::core::restart::{self, Member, Step};

impl Operator {
    /// Restart `node` (or, without one, every node of the group), only the
    /// nodes with settings pending a restart when `pending_only`.
    pub(super) async fn restart(
        &mut self,
        node: Option<&str>,
        pending_only: bool,
        in_place: bool,
        op: GroupOp,
    ) -> Result<(), CliError> {
        let state = self.state().await?;
        let group = match node {
            Some(name) => find_node(&state, name)?.group_id,
            None => op.group,
        };
        let members: Vec<Member> = state
            .nodes
            .iter()
            .filter(|n| n.group_id == group)
            .filter_map(member)
            .collect();
        let wanted = wanted(&state, group, node, pending_only);
        if wanted.is_empty() {
            println!("no node of group {group} has settings pending a restart: nothing to do");
            return Ok(());
        }
        let mut steps = restart::order(&members, &wanted, in_place);
        if steps.is_empty() {
            // A node that cannot be restarted now: the monitor says why.
            steps = wanted
                .iter()
                .map(|n| Step::Restart(n.to_string()))
                .collect();
        }
        if op.wait.no_wait && steps.len() > 1 {
            return Err(CliError::Failed(
                "a restart of more than one node, or of a primary after a switchover, waits for each step before the next: run it without --no-wait".into(),
            ));
        }
        for step in steps {
            match step {
                Step::SwitchOver(name) => {
                    println!("switching over away from {name} before restarting it");
                    let wait = Wait {
                        no_wait: false,
                        timeout: op.wait.timeout,
                    };
                    self.hand_over(GroupOp { group, wait }, None).await?;
                }
                Step::Restart(name) => self.restart_one(&name, &op.wait).await?,
            }
        }
        Ok(())
    }

    /// Ask for one node's restart and wait until its keeper carried it out
    /// and the group converged again.
    async fn restart_one(&mut self, name: &str, wait: &Wait) -> Result<(), CliError> {
        let before = self.state().await?;
        let asked = find_node(&before, name)?.restart_requested + 1;
        let message = self.client.restart_node(&self.formation, name).await?;
        println!("{message}");
        if wait.no_wait {
            return Ok(());
        }
        let what = format!("the restart of {name}");
        wait_until(
            &mut self.client,
            &self.formation,
            wait.timeout,
            &what,
            |s| restarted(s, name, asked),
        )
        .await?;
        println!("{name} restarted");
        Ok(())
    }
}

/// A node as the restart order reads it (none for an unknown state).
fn member(n: &pb::NodeStatus) -> Option<Member> {
    Some(Member {
        id: n.node_id,
        name: n.name.clone(),
        goal: S::from_wire(n.goal_state).ok()?,
        candidate_priority: n.candidate_priority,
    })
}

/// The names to restart: `node`, or every node of `group`; only those with
/// settings pending a restart when `pending_only`.
fn wanted<'a>(
    state: &'a FormationState,
    group: u32,
    node: Option<&'a str>,
    pending_only: bool,
) -> Vec<&'a str> {
    state
        .nodes
        .iter()
        .filter(|n| n.group_id == group && node.is_none_or(|name| n.name == name))
        .filter(|n| !pending_only || !n.pending_restart.is_empty())
        .map(|n| n.name.as_str())
        .collect()
}

/// Node `name`'s keeper carried out restart `asked`, its PostgreSQL runs
/// (a standby streams again), and the group converged.
pub(crate) fn restarted(state: &FormationState, name: &str, asked: u64) -> bool {
    let back = state.nodes.iter().any(|n| {
        let primary = S::from_wire(n.goal_state).is_ok_and(|s| s.is_writable_primary());
        n.name == name
            && n.restart_done >= asked
            && n.pg_running
            && n.reported_state == n.goal_state
            && (primary || n.wal_receiver_streaming)
    });
    back && converged(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, state: S, group: u32) -> pb::NodeStatus {
        pb::NodeStatus {
            node_id: name.trim_start_matches("node").parse().unwrap_or(0),
            name: name.into(),
            group_id: group,
            reported_state: state.to_wire(),
            goal_state: state.to_wire(),
            pg_running: true,
            wal_receiver_streaming: !state.is_writable_primary(),
            candidate_priority: 50,
            ..Default::default()
        }
    }

    fn formation() -> FormationState {
        FormationState {
            formation: "default".into(),
            nodes: vec![
                status("node1", S::Primary, 0),
                status("node2", S::Secondary, 0),
                status("node3", S::Secondary, 1),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn pending_only_keeps_the_nodes_that_report_pending_settings() {
        let mut s = formation();
        assert_eq!(wanted(&s, 0, None, false), vec!["node1", "node2"]);
        assert!(wanted(&s, 0, None, true).is_empty());
        s.nodes[1].pending_restart = vec!["shared_buffers".into()];
        assert_eq!(wanted(&s, 0, None, true), vec!["node2"]);
        assert_eq!(wanted(&s, 0, Some("node1"), false), vec!["node1"]);
        assert!(wanted(&s, 0, Some("node1"), true).is_empty());
    }

    #[test]
    fn a_restart_is_done_once_carried_out_running_and_streaming() {
        let mut s = formation();
        assert!(!restarted(&s, "node2", 1), "not carried out yet");
        s.nodes[1].restart_done = 1;
        assert!(restarted(&s, "node2", 1));
        s.nodes[1].wal_receiver_streaming = false;
        assert!(!restarted(&s, "node2", 1), "a standby streams again first");
        s.nodes[1].wal_receiver_streaming = true;
        s.nodes[1].goal_state = S::Catchingup.to_wire();
        assert!(!restarted(&s, "node2", 1), "settled first");
        s.nodes[1].goal_state = S::Secondary.to_wire();
        s.nodes[0].restart_done = 3;
        assert!(restarted(&s, "node1", 3), "a primary does not stream");
        s.nodes[0].pg_running = false;
        assert!(!restarted(&s, "node1", 3));
    }
}
