//! The replication settings a primary applies, computed from its group:
//! `synchronous_standby_names` and the fence set with its quorum.

use pgpilot_proto::lsn::application_name;
use pgpilot_proto::ReplicationState as S;

use super::NodeSnapshot;

/// Replication settings the primary must apply, computed from the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPlan {
    pub synchronous_standby_names: String,
    /// The fence set F and r of the promotion rule.
    pub fence_set: Vec<String>,
    pub fence_required: u32,
}

/// What the node at `index` (a primary) must apply, given the group.
pub fn replication_plan(
    nodes: &[NodeSnapshot],
    index: usize,
    number_sync_standbys: u32,
) -> ReplicationPlan {
    let me = &nodes[index];
    let others = || {
        nodes
            .iter()
            .enumerate()
            .filter(move |(i, n)| *i != index && n.goal != S::Dropped)
            .map(|(_, n)| n)
    };
    match me.goal {
        S::Primary | S::JoinPrimary | S::ApplySettings => {
            let mut quorum: Vec<&NodeSnapshot> = others()
                .filter(|n| n.counts_for_quorum() && matches!(n.goal, S::Secondary | S::ReportLsn))
                .collect();
            if quorum.is_empty() && number_sync_standbys > 0 {
                // Writes must wait rather than go on unreplicated.
                quorum = others().filter(|n| n.counts_for_quorum()).collect();
            }
            if quorum.is_empty() {
                return wait_primary_plan(others());
            }
            let required = number_sync_standbys.clamp(1, quorum.len() as u32);
            let names: Vec<String> = quorum.iter().map(|n| application_name(n.id)).collect();
            ReplicationPlan {
                synchronous_standby_names: format!("ANY {required} ({})", names.join(", ")),
                fence_set: names,
                fence_required: required,
            }
        }
        S::WaitPrimary => wait_primary_plan(others()),
        _ => ReplicationPlan {
            synchronous_standby_names: String::new(),
            fence_set: Vec::new(),
            fence_required: 0,
        },
    }
}

/// Synchronous replication off: the fence set is every standby that
/// streams or could be a candidate, and one of them must keep streaming.
fn wait_primary_plan<'a>(others: impl Iterator<Item = &'a NodeSnapshot>) -> ReplicationPlan {
    let fence_set: Vec<String> = others
        .filter(|n| {
            matches!(
                n.goal,
                S::Catchingup | S::Secondary | S::ReportLsn | S::JoinSecondary
            )
        })
        .map(|n| application_name(n.id))
        .collect();
    ReplicationPlan {
        synchronous_standby_names: String::new(),
        fence_required: u32::from(!fence_set.is_empty()),
        fence_set,
    }
}
