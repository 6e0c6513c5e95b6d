//! The fence set the monitor stores for a primary, and what an election
//! about it still counts from earlier sets (see the promotion rule in the
//! module above).

use pgpilot_proto::lsn::application_name;
use pgpilot_proto::ReplicationState as S;

use super::{NodeSnapshot, ReplicationPlan};

/// Members and quorum of earlier fence sets that an election still counts
/// until the current set holds the commits acknowledged under them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FencePending {
    /// Names that left the fence set (and the primary's own, for a primary
    /// whose commits may so far be on no member of its fence set).
    pub names: Vec<String>,
    /// The smallest `r` in force since the change.
    pub required: u32,
    /// The primary's LSN at the latest change; `None` when nothing is
    /// pending. The pending part is dropped once `r` members of the fence
    /// set stream and report an LSN at least this far.
    pub cover_lsn: Option<u64>,
}

impl NodeSnapshot {
    /// The fence set and quorum an election about this (old) primary
    /// counts, given the group as it is now: its fence set, and what is
    /// still pending from earlier ones unless `r` members of the set now
    /// hold the primary's commits up to the pending LSN (the primary, once
    /// stopped, no longer heartbeats to drop it).
    pub fn election_fence(&self, nodes: &[NodeSnapshot]) -> (Vec<String>, u32) {
        let pending = &self.fence_pending;
        let covered = pending
            .cover_lsn
            .filter(|&l| l != COVER_AT_NEXT_HEARTBEAT)
            .is_some_and(|l| {
                // Its timeline as last reported (0 once its PostgreSQL is
                // down: then the LSN alone).
                let at = (self.timeline, l);
                fence_covered(nodes, &self.fence_set, self.fence_required, at)
            });
        if pending.cover_lsn.is_none() || covered {
            return (self.fence_set.clone(), self.fence_required);
        }
        let mut names = self.fence_set.clone();
        for name in &pending.names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        (names, self.fence_required.min(pending.required))
    }
}

/// What the monitor stores for the primary at `index` after computing its
/// `plan`: the fence set and `r` it sends (the plan's), and what elections
/// must still count from earlier sets.
///
/// The fence set may change at once — `synchronous_standby_names` follows
/// the group, so writes go on when a standby fails — but a commit
/// acknowledged under the old `ANY r (F)` may be on members that left `F`
/// only. Until it is also on the new set, an election keeps counting them:
/// it uses `F ∪ pending` and the smallest `r` in force meanwhile, so any
/// `|F ∪ pending| − r + 1` reporters still include a holder of every
/// acknowledged commit, old or new. Likewise a primary whose set was empty
/// (just promoted, or its first standby) may hold commits none of its
/// standbys has: its own name is pending, so an election cannot finish
/// without it (a double fault, which an operator can force). The pending
/// part is dropped once `r` members of the new set stream and report an
/// LSN at least the primary's at the latest change: they then hold every
/// commit made before it, as if it had been acknowledged under the new set.
/// That LSN is the one the primary reports in the first heartbeat in which
/// its PostgreSQL runs with the new `synchronous_standby_names`
/// (`applied_sync_names`), so commits made under the old set are all
/// before it. From a keeper that does not report it (`None`), the heartbeat
/// after the change: the keeper applies a new set right after the reply.
/// Never from a heartbeat with PostgreSQL down, whose LSN says nothing.
/// For a first set (none before) it is the primary's LSN at once.
/// Growing the set without raising `r` needs no such wait.
pub fn fence_update(
    nodes: &[NodeSnapshot],
    index: usize,
    plan: &ReplicationPlan,
    applied_sync_names: Option<&str>,
) -> NodeFence {
    let me = &nodes[index];
    if plan.fence_set.is_empty() {
        // No standby to count, and none to promote.
        return NodeFence::from_plan(plan);
    }
    let mut pending = me.fence_pending.clone();
    let changed = me.fence_set != plan.fence_set || me.fence_required != plan.fence_required;
    if changed {
        // Growing the set without raising r keeps every earlier commit
        // counted (any |F| − r + 1 reporters still meet its holders), and
        // keeps the LSN a pending part already waits for.
        let grows_only = !me.fence_set.is_empty()
            && me.fence_set.iter().all(|n| plan.fence_set.contains(n))
            && plan.fence_required <= me.fence_required;
        // A single primary acknowledged nothing under any set. A
        // wait_primary may have: the set it keeps is the one it ran
        // synchronously with before it turned synchronous replication
        // off, and commits acknowledged then may be on a member leaving
        // now only (found by the simulation, seed 71528 of 200,000: such
        // a commit was lost when the remaining member was promoted).
        let old_set_synchronous = me.reported != S::Single;
        if !grows_only && (old_set_synchronous || me.fence_set.is_empty()) {
            let was_pending = pending.cover_lsn.is_some();
            let mut left: Vec<String> = me
                .fence_set
                .iter()
                .filter(|n| !plan.fence_set.contains(n))
                .cloned()
                .collect();
            if me.fence_set.is_empty() {
                left.push(application_name(me.id));
            }
            for name in left {
                if !pending.names.contains(&name) {
                    pending.names.push(name);
                }
            }
            let before = if me.fence_set.is_empty() {
                plan.fence_required
            } else {
                me.fence_required
            };
            pending.required = if was_pending {
                pending.required.min(before)
            } else {
                before
            }
            .min(plan.fence_required);
            // A first set has no earlier set to be applied after: what
            // must be covered is what the primary holds now.
            pending.cover_lsn = if me.fence_set.is_empty() && me.pg_running && me.lsn > 0 {
                Some(me.lsn)
            } else {
                Some(COVER_AT_NEXT_HEARTBEAT)
            };
        }
    } else if pending.cover_lsn == Some(COVER_AT_NEXT_HEARTBEAT)
        && me.pg_running
        && me.lsn > 0
        && applied_sync_names.is_none_or(|names| names == plan.synchronous_standby_names)
    {
        pending.cover_lsn = Some(me.lsn);
    }
    if let Some(lsn) = pending.cover_lsn.filter(|&l| l != COVER_AT_NEXT_HEARTBEAT) {
        if fence_covered(
            nodes,
            &plan.fence_set,
            plan.fence_required,
            (me.timeline, lsn),
        ) {
            pending = FencePending::default();
        }
    }
    NodeFence {
        fence_set: plan.fence_set.clone(),
        fence_required: plan.fence_required,
        pending,
    }
}

/// [`FencePending::cover_lsn`] right after a change: no LSN is known yet
/// that every commit made under the old set precedes (never reached).
pub const COVER_AT_NEXT_HEARTBEAT: u64 = i64::MAX as u64;

/// Whether `required` members of `fence_set` follow the primary and report
/// WAL ending at least at `at` (the primary's timeline, 0 when not known,
/// and an LSN): they hold every commit before it. (A node not following
/// yet, e.g. an old primary before its rewind, may report an LSN of
/// another timeline: one on an older timeline is behind whatever its LSN.)
fn fence_covered(
    nodes: &[NodeSnapshot],
    fence_set: &[String],
    required: u32,
    at: (u32, u64),
) -> bool {
    let holders = nodes
        .iter()
        .filter(|n| {
            fence_set.contains(&application_name(n.id))
                && n.reported.is_following()
                && n.timeline >= at.0
                && n.lsn >= at.1
        })
        .count() as u32;
    holders >= required
}

/// A primary's fence as the monitor stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFence {
    pub fence_set: Vec<String>,
    pub fence_required: u32,
    pub pending: FencePending,
}

impl NodeFence {
    fn from_plan(plan: &ReplicationPlan) -> NodeFence {
        NodeFence {
            fence_set: plan.fence_set.clone(),
            fence_required: plan.fence_required,
            pending: FencePending::default(),
        }
    }

    /// Whether `node` stores this fence already.
    pub fn stored_in(&self, node: &NodeSnapshot) -> bool {
        node.fence_set == self.fence_set
            && node.fence_required == self.fence_required
            && node.fence_pending == self.pending
    }

    /// Store it in `node` (the simulation's copy of the store).
    pub fn store_in(&self, node: &mut NodeSnapshot) {
        node.fence_set = self.fence_set.clone();
        node.fence_required = self.fence_required;
        node.fence_pending = self.pending.clone();
    }
}
