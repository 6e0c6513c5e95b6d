//! Every operator command as a pure function of the locked group, its
//! input, the time and the settings: the goal changes it makes (already
//! applied to the group it is given) and the sentence that answers the
//! operator, or why it is refused.

use pgpilot_proto::ReplicationState as S;

use super::group::{apply_goals, evaluate, refuse_unreachable, Evaluation};
use super::{Env, Refusal};
use crate::fsm::{self, Decision, NodeSnapshot, Reason, Wait};

/// What a command decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Goal changes, each to be stored with its event.
    pub decisions: Vec<Decision>,
    /// The answer to the operator.
    pub message: String,
}

/// The answer to a forced election.
pub const ELECTION_FORCED: &str = "election forced: the most advanced reporting standby is promoted once the old primary's fence deadline passed; commits only the missing standbys had are lost";

/// The index of the node named `name`.
pub fn find(nodes: &[NodeSnapshot], formation: &str, name: &str) -> Result<usize, Refusal> {
    nodes
        .iter()
        .position(|n| n.name == name)
        .ok_or_else(|| Refusal::UnknownNode {
            formation: formation.to_string(),
            name: name.to_string(),
            known: nodes.iter().map(|n| n.name.clone()).collect(),
        })
}

fn decision(n: &NodeSnapshot, to: S, reason: Reason) -> Decision {
    Decision {
        node_id: n.id,
        from: n.goal,
        to,
        reason,
    }
}

/// Healthy secondaries: at their goal `secondary` and heartbeating.
fn healthy_secondaries<'a>(
    nodes: &'a [NodeSnapshot],
    env: &'a Env,
) -> impl Iterator<Item = usize> + 'a {
    (0..nodes.len()).filter(move |&i| {
        nodes[i].goal == S::Secondary && nodes[i].reported == S::Secondary && env.alive(&nodes[i])
    })
}

/// Healthy secondaries that can take over from primary `p` in a planned
/// handover: streaming, and on its timeline. A secondary still on an older
/// timeline has not streamed from it since its promotion, and a stopping
/// primary hands its last WAL only to the standbys connected to it.
fn handover_candidates<'a>(
    nodes: &'a [NodeSnapshot],
    p: usize,
    env: &'a Env,
) -> impl Iterator<Item = usize> + 'a {
    healthy_secondaries(nodes, env).filter(move |&i| following(&nodes[i], &nodes[p]))
}

/// The standby streams from `primary`, on its timeline.
fn following(standby: &NodeSnapshot, primary: &NodeSnapshot) -> bool {
    standby.wal_receiver_streaming && standby.timeline >= primary.timeline
}

/// Quorum standbys left at `secondary` without node `i`.
fn quorum_left(nodes: &[NodeSnapshot], i: usize) -> u32 {
    (0..nodes.len())
        .filter(|&j| j != i && nodes[j].goal == S::Secondary && nodes[j].counts_for_quorum())
        .count() as u32
}

/// Refuse unreachable goals, then apply them.
fn commit(
    nodes: &mut [NodeSnapshot],
    decisions: Vec<Decision>,
    message: String,
) -> Result<Command, Refusal> {
    refuse_unreachable(nodes, &decisions)?;
    apply_goals(nodes, &decisions);
    Ok(Command { decisions, message })
}

/// Planned failover (or switchover to `target`): the primary drains, the
/// secondaries report their LSN.
pub fn perform_failover(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    target: Option<&str>,
    env: &Env,
) -> Result<Command, Refusal> {
    let p = nodes
        .iter()
        .position(|n| n.goal.is_writable_primary())
        .ok_or(Refusal::NoPrimary)?;
    let primary = &nodes[p];
    if primary.reported != primary.goal || !env.alive(primary) {
        return Err(Refusal::PrimaryNotSettled {
            name: primary.name.clone(),
            reported: primary.reported,
            goal: primary.goal,
        });
    }
    let candidates: Vec<usize> = handover_candidates(nodes, p, env).collect();
    let (candidates, reason) = match target {
        None => (candidates, Reason::PlannedFailover),
        Some(name) => {
            let i = find(nodes, formation, name)?;
            let node = &nodes[i];
            if i == p {
                return Err(Refusal::AlreadyPrimary { name: name.into() });
            }
            if node.delayed() {
                return Err(Refusal::DelayedNeverPromoted {
                    name: name.into(),
                    apply_delay_ms: node.apply_delay_ms,
                });
            }
            if node.candidate_priority == 0 {
                return Err(Refusal::PriorityZero { name: name.into() });
            }
            if !healthy_secondaries(nodes, env).any(|j| j == i) {
                return Err(Refusal::NotHealthySecondary {
                    name: name.into(),
                    reported: node.reported,
                    goal: node.goal,
                });
            }
            if !candidates.contains(&i) {
                return Err(Refusal::NotFollowingPrimary {
                    name: name.into(),
                    primary: primary.name.clone(),
                });
            }
            (vec![i], Reason::PlannedSwitchover { to: name.into() })
        }
    };
    if !candidates.iter().any(|&i| nodes[i].may_be_promoted()) {
        return Err(Refusal::NoCandidate);
    }
    let mut decisions = vec![decision(primary, S::Draining, reason.clone())];
    decisions.extend(
        candidates
            .iter()
            .map(|&i| decision(&nodes[i], S::ReportLsn, reason.clone())),
    );
    let message = match target {
        None => format!(
            "planned failover started: {} stops taking writes, then a secondary is promoted",
            primary.name
        ),
        Some(to) => format!(
            "planned switchover to {to} started: {} stops taking writes, then {to} is promoted",
            primary.name
        ),
    };
    commit(nodes, decisions, message)
}

/// Let the election that waits finish without the promotion rule's quorum
/// of reports (a double fault): refused unless it is stuck. On success the
/// override holds from `env.now` (the caller stores it) and the group is
/// evaluated with it.
pub fn force_election(nodes: &mut [NodeSnapshot], env: &Env) -> Result<Evaluation, Refusal> {
    let outcome = (env.decide)(nodes, env.now, &env.settings);
    if !outcome.waiting.iter().any(|w| w.is_election_stuck()) {
        return Err(Refusal::NotStuck);
    }
    if let Some(Wait::UnfencedPrimary { primary }) = outcome
        .waiting
        .iter()
        .find(|w| w.is_election_stuck() && !w.can_be_forced())
    {
        return Err(Refusal::UnfencedPrimary {
            name: primary.clone(),
        });
    }
    let forced = Env {
        settings: fsm::Settings {
            election_forced_at: Some(env.now),
            ..env.settings
        },
        ..*env
    };
    Ok(evaluate(nodes, &forced))
}

/// The primary applies changed replication settings: a settled `primary`
/// goes through apply_settings.
pub(super) fn apply_settings(nodes: &[NodeSnapshot], what: &str) -> Vec<Decision> {
    nodes
        .iter()
        .find(|n| n.goal == S::Primary && n.reported == S::Primary)
        .map(|p| {
            decision(
                p,
                S::ApplySettings,
                Reason::SettingsChanged {
                    what: what.to_string(),
                },
            )
        })
        .into_iter()
        .collect()
}

/// Change number_sync_standbys to `value` (the caller stores it); the
/// primary applies it.
pub fn set_number_sync_standbys(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    value: u32,
) -> Result<Command, Refusal> {
    fsm::check_settings(nodes, value).map_err(Refusal::Settings)?;
    let what = format!("number_sync_standbys set to {value}");
    // A settled primary always has this edge.
    let decisions = apply_settings(nodes, &what);
    apply_goals(nodes, &decisions);
    Ok(Command {
        decisions,
        message: format!("{what} for formation {formation}"),
    })
}

/// Put a node into maintenance (`enabled`), or bring it back.
pub fn set_maintenance(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    name: &str,
    enabled: bool,
    env: &Env,
) -> Result<Command, Refusal> {
    let i = find(nodes, formation, name)?;
    let candidates_besides = |exclude: usize| -> Vec<usize> {
        let primary = nodes.iter().position(|n| n.goal.is_writable_primary());
        healthy_secondaries(nodes, env)
            .filter(|&j| j != exclude && nodes[j].may_be_promoted())
            .filter(|&j| primary.is_none_or(|p| following(&nodes[j], &nodes[p])))
            .collect()
    };
    let node = &nodes[i];
    let (decisions, message) = if !enabled {
        if !matches!(node.goal, S::Maintenance | S::WaitMaintenance) {
            return Err(Refusal::NotInMaintenance {
                name: name.into(),
                goal: node.goal,
            });
        }
        (
            vec![decision(node, S::Catchingup, Reason::MaintenanceOver)],
            format!("{name} leaves maintenance and catches up with the primary"),
        )
    } else if matches!(
        node.goal,
        S::Maintenance | S::WaitMaintenance | S::PrepareMaintenance
    ) {
        return Ok(Command {
            decisions: Vec::new(),
            message: format!("{name} is already in maintenance"),
        });
    } else if node.goal.is_writable_primary() {
        let candidates = candidates_besides(i);
        if candidates.is_empty() || node.reported != node.goal || !env.alive(node) {
            return Err(Refusal::PrimaryMaintenanceNoCandidate { name: name.into() });
        }
        let mut decisions = vec![decision(
            node,
            S::PrepareMaintenance,
            Reason::MaintenanceOfPrimary,
        )];
        decisions.extend(
            candidates
                .iter()
                .map(|&c| decision(&nodes[c], S::ReportLsn, Reason::MaintenanceOfPrimary)),
        );
        (
            decisions,
            format!("{name} hands over to a secondary, then enters maintenance"),
        )
    } else if matches!(node.goal, S::Secondary | S::Catchingup) {
        if node.goal == S::Secondary && node.may_be_promoted() && candidates_besides(i).is_empty() {
            return Err(Refusal::OnlyCandidate { name: name.into() });
        }
        refuse_stopping_writes(nodes, i, "maintenance", env.settings.number_sync_standbys)?;
        // Still counted by the primary's fence set: wait until it is not.
        let app = pgpilot_proto::lsn::application_name(node.id);
        let counted = nodes
            .iter()
            .any(|n| n.goal.is_writable_primary() && n.fence_set.contains(&app));
        let d = if counted {
            decision(node, S::WaitMaintenance, Reason::MaintenanceRequested)
        } else {
            decision(node, S::Maintenance, Reason::MaintenanceReady)
        };
        (vec![d], format!("{name} enters maintenance"))
    } else {
        return Err(Refusal::MaintenanceFrom {
            name: name.into(),
            reported: node.reported,
            goal: node.goal,
        });
    };
    commit(nodes, decisions, message)
}

/// Refuse taking standby `i` away when the quorum standbys left could not
/// meet number_sync_standbys.
fn refuse_stopping_writes(
    nodes: &[NodeSnapshot],
    i: usize,
    what: &'static str,
    number_sync_standbys: u32,
) -> Result<(), Refusal> {
    let quorum_left = quorum_left(nodes, i);
    if number_sync_standbys > quorum_left {
        return Err(Refusal::WouldStopWrites {
            what,
            name: nodes[i].name.clone(),
            quorum_left,
            number_sync_standbys,
        });
    }
    Ok(())
}

/// Rebuild a standby from a fresh clone of the primary (its data directory
/// is lost or diverged): back to wait_standby, after which the usual rules
/// clone it.
pub fn reinit_node(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    name: &str,
    number_sync_standbys: u32,
) -> Result<Command, Refusal> {
    let i = find(nodes, formation, name)?;
    let node = &nodes[i];
    if node.goal.is_writable_primary() || fsm::is_handing_over(node.goal) {
        return Err(Refusal::ReinitPrimary { name: name.into() });
    }
    if !matches!(
        node.goal,
        S::Secondary | S::Catchingup | S::Maintenance | S::Demoted
    ) {
        return Err(Refusal::ReinitFrom {
            name: name.into(),
            reported: node.reported,
            goal: node.goal,
        });
    }
    if !nodes
        .iter()
        .any(|n| n.goal.is_writable_primary() && n.reported == n.goal)
    {
        return Err(Refusal::NoSettledPrimary);
    }
    refuse_stopping_writes(nodes, i, "reinit", number_sync_standbys)?;
    let d = decision(node, S::WaitStandby, Reason::Reinit);
    commit(
        nodes,
        vec![d],
        format!("{name} is being rebuilt: it stops, then clones the primary afresh"),
    )
}

/// Remove a node: its keeper stops PostgreSQL and the row is deleted when
/// it reports so, or at once with `force` (the caller deletes it).
pub fn drop_node(
    nodes: &mut [NodeSnapshot],
    formation: &str,
    name: &str,
    force: bool,
    number_sync_standbys: u32,
) -> Result<Command, Refusal> {
    let i = find(nodes, formation, name)?;
    let node = &nodes[i];
    let others = nodes
        .iter()
        .filter(|n| n.id != node.id && n.goal != S::Dropped)
        .count();
    if (node.goal.is_writable_primary() || fsm::is_handing_over(node.goal)) && others > 0 {
        return Err(Refusal::DropPrimary { name: name.into() });
    }
    if !force {
        let remaining: Vec<NodeSnapshot> =
            nodes.iter().filter(|n| n.id != node.id).cloned().collect();
        fsm::check_settings(&remaining, number_sync_standbys).map_err(|why| {
            Refusal::DropRefused {
                name: name.into(),
                why,
            }
        })?;
    }
    let decisions = vec![decision(node, S::Dropped, Reason::Dropped)];
    apply_goals(nodes, &decisions);
    let message = if force {
        format!(
            "{name} removed from formation {formation}; stop its keeper and PostgreSQL yourself"
        )
    } else {
        format!("{name} is being dropped: its keeper stops PostgreSQL and exits")
    };
    Ok(Command { decisions, message })
}

#[cfg(test)]
#[path = "commands_tests.rs"]
mod tests;
