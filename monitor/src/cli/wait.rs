//! Waiting for a change to finish: poll the formation, print every node's
//! state change as it happens, and stop once a condition on the whole
//! formation (settled, converged, handed over) holds or the time is up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;

use super::client::Client;
use super::error::CliError;
use super::render::state_name;
use super::tables::state_table;

/// Whether node `n` has reached one of `states` (reported and goal).
pub fn settled(n: &pb::NodeStatus, states: &[S]) -> bool {
    states
        .iter()
        .any(|s| s.to_wire() == n.reported_state && s.to_wire() == n.goal_state)
}

/// Every node has reached its goal and a writable primary exists.
pub fn converged(state: &pb::FormationState) -> bool {
    state.nodes.iter().all(|n| n.reported_state == n.goal_state)
        && state
            .nodes
            .iter()
            .any(|n| settled(n, &[S::Single, S::WaitPrimary, S::Primary]))
}

/// Every node that can be reached has reached its goal (a node shown
/// unreachable keeps its last report until it is back).
pub fn live_nodes_settled(state: &pb::FormationState) -> bool {
    state
        .nodes
        .iter()
        .filter(|n| !n.unreachable)
        .all(|n| n.reported_state == n.goal_state)
}

/// After a resume: the nodes that can be reached settled, with a settled
/// writable primary among them (a primary that failed while the formation
/// was paused has been replaced). An empty formation is done at once.
pub fn resumed(state: &pb::FormationState) -> bool {
    live_nodes_settled(state)
        && (state.nodes.is_empty()
            || state
                .nodes
                .iter()
                .any(|n| !n.unreachable && settled(n, &[S::Single, S::WaitPrimary, S::Primary])))
}

/// The group converged, with the node `name` settled in `state`.
pub fn converged_with(s: &pb::FormationState, name: &str, state: S) -> bool {
    converged(s)
        && s.nodes
            .iter()
            .any(|n| n.name == name && settled(n, &[state]))
}

/// Poll the formation until `done` holds, printing every state change of
/// every node as it happens; fail after `timeout` with the state table.
pub async fn wait_until(
    client: &mut Client,
    formation: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&pb::FormationState) -> bool,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut seen: HashMap<i64, (i32, i32)> = HashMap::new();
    loop {
        let state = client.state(formation).await?;
        for n in &state.nodes {
            let now = (n.reported_state, n.goal_state);
            if seen.insert(n.node_id, now) != Some(now) {
                println!(
                    "{:>8.1}s  {:<12} reported {:<18} goal {}",
                    started.elapsed().as_secs_f64(),
                    n.name,
                    state_name(n.reported_state),
                    state_name(n.goal_state)
                );
            }
        }
        if done(&state) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(CliError::Failed(format!(
                "{what} did not finish within {}:\n{}",
                humantime::format_duration(timeout),
                state_table(&state)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A hand-over finished: another node (the target, when named) is the
/// settled writable primary and the old primary has reached `old_ends`.
pub fn handed_over(
    state: &pb::FormationState,
    old: i64,
    target: Option<&str>,
    old_ends: S,
) -> bool {
    let new_primary = state.nodes.iter().any(|n| {
        n.node_id != old
            && target.is_none_or(|t| n.name == t)
            && settled(n, &[S::WaitPrimary, S::Primary])
    });
    let old_done = state
        .nodes
        .iter()
        .any(|n| n.node_id == old && settled(n, &[old_ends]));
    new_primary && old_done && converged(state)
}

/// Find the node currently holding the primary goal.
pub fn primary_of(state: &pb::FormationState, group: u32) -> Option<&pb::NodeStatus> {
    state.nodes.iter().find(|n| {
        n.group_id == group && S::from_wire(n.goal_state).is_ok_and(|s| s.is_writable_primary())
    })
}
