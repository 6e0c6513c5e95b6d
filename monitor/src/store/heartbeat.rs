//! A keeper's heartbeat on the locked path: the group locked, the
//! heartbeat folded in by the decision core, what it decided persisted,
//! and the assignment the keeper is answered. (Steady heartbeats are
//! written in batches: see `batch`.)

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;

use super::error::{Error, Result};
use super::{millis, notes, retry, snaps, take_back, Store, StoredNode, Tx};
use crate::core::heartbeat::{self, Beat, Folded, GoalReached};
use crate::fsm::{self, KeeperTimings, ReplicationPlan};

/// A keeper's heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub node_id: i64,
    pub reported: S,
    pub pg_running: bool,
    pub lsn: u64,
    pub timeline: u32,
    pub wal_receiver_streaming: bool,
    pub system_identifier: u64,
    pub timings: KeeperTimings,
    /// Primary: the `synchronous_standby_names` its PostgreSQL runs with,
    /// if the keeper reported it (see [`fsm::fence_update`]).
    pub synchronous_standby_names: Option<String>,
    /// Failed starts of PostgreSQL in a row (0 from keepers that do not count).
    pub pg_start_failures: u32,
    /// A keepalive: the goal of the plan under way (None from the loop).
    pub acting_toward: Option<S>,
    /// Primary side: the fence quorum the keeper's lease holds.
    pub fence_required_held: Option<u32>,
    /// When the keeper built it (None: not said).
    pub sent: Option<fsm::KeeperClock>,
    /// What the keeper did on its own, each recorded as an event (see
    /// `notes`); a heartbeat with notes takes the locked path.
    pub notes: Vec<KeeperNote>,
    /// The clone or rewind under way (keepalives only); a heartbeat with
    /// work takes the locked path, which stores it.
    pub work: Option<pgpilot_proto::pb::WorkProgress>,
    /// The keeper's `clone_from` ("" from keepers that do not say).
    pub clone_from: String,
    /// The keeper is stopping its node: the locked path decides the
    /// hand-over (see `crate::core::stopping`).
    pub stopping: bool,
    /// The last restart asked through the monitor the keeper carried out.
    pub restart_done: u64,
    /// Settings pending a restart, comma-separated and sorted; None while
    /// PostgreSQL does not answer (the stored value is kept).
    pub pending_restart: Option<String>,
    /// The formation parameters version the keeper applied.
    pub parameters_applied: u64,
    /// Its `before_promotion` hook refused the promotion it was asked;
    /// such a heartbeat takes the locked path.
    pub promotion_refused: bool,
}

/// A keeper's note (a diverged standby rewound, …), recorded as an event
/// of its node with this kind and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperNote {
    pub kind: &'static str,
    pub text: String,
}

impl Heartbeat {
    /// What the state machine reads of it.
    pub fn report(&self) -> fsm::Report {
        fsm::Report {
            reported: self.reported,
            pg_running: self.pg_running,
            lsn: self.lsn,
            timeline: self.timeline,
            wal_receiver_streaming: self.wal_receiver_streaming,
            pg_start_failures: self.pg_start_failures,
            timings: self.timings,
            fence_required_held: self.fence_required_held,
            sent: self.sent,
            promotion_refused: self.promotion_refused,
            acting_toward: self.acting_toward,
        }
    }
}

/// What a heartbeat's reply carries.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub node: StoredNode,
    /// The node to follow (standbys), rewind or clone from.
    pub primary: Option<StoredNode>,
    /// The standby a clone copies from instead of `primary`.
    pub clone_source: Option<StoredNode>,
    /// A standby in its primary's synchronous set.
    pub synchronous_standby: bool,
    /// Every other node of the group.
    pub others: Vec<StoredNode>,
    pub plan: ReplicationPlan,
    /// The node reached its goal with this heartbeat (committed).
    pub reached: Option<GoalReached>,
    /// To a stopping keeper: whether PostgreSQL may stop now, and why no
    /// standby takes over when none can.
    pub stop: Option<crate::core::stopping::Stop>,
    /// The formation is paused.
    pub paused: bool,
    /// The version of the formation's parameters.
    pub parameters_version: u64,
    /// How many permanent slots the formation declares.
    pub slot_count: u32,
}

impl Assignment {
    /// The reply to node `index` of `nodes` as the core decided it.
    pub(super) fn new(nodes: &[StoredNode], index: usize, reply: heartbeat::Reply) -> Assignment {
        let id = nodes[index].snap.id;
        Assignment {
            node: nodes[index].clone(),
            primary: reply.upstream.map(|u| nodes[u].clone()),
            clone_source: reply.clone_source.map(|u| nodes[u].clone()),
            synchronous_standby: reply.synchronous_standby,
            others: nodes
                .iter()
                .filter(|n| n.snap.id != id && n.snap.goal != S::Dropped)
                .cloned()
                .collect(),
            plan: reply.plan,
            reached: None,
            stop: reply.stop,
            paused: reply.paused,
            parameters_version: 0,
            slot_count: 0,
        }
    }
}

impl Store {
    /// Record a heartbeat, evaluate the group, and return the assignment.
    pub async fn node_active(&self, hb: &Heartbeat) -> Result<Assignment> {
        // The steady state is written in batches (see `batch`); anything
        // else, notes too, takes the locked path.
        if hb.notes.is_empty() && hb.work.is_none() && !hb.stopping && !hb.promotion_refused {
            if let Some(assignment) = self.beats.submit(hb.clone()).await? {
                return Ok(assignment);
            }
        }
        let Ok(_permit) = self.locked_heartbeats.try_acquire() else {
            return Err(Error::Unavailable(
                "the monitor is overloaded: heartbeat shed, retry on the next loop".into(),
            ));
        };
        retry(|| self.node_active_once(hb)).await
    }

    async fn node_active_once(&self, hb: &Heartbeat) -> Result<Assignment> {
        let mut tx = self.pool.begin().await?;
        let not_registered = || {
            Error::NotFound(format!(
                "node id {} is not registered with this monitor: remove the keeper's state file to register again",
                hb.node_id
            ))
        };
        let (mut nodes, now, nss) = self
            .lock_group_of(&mut tx, hb.node_id)
            .await?
            .ok_or_else(not_registered)?;
        let index = nodes
            .iter()
            .position(|n| n.snap.id == hb.node_id)
            .ok_or_else(not_registered)?;
        let mut group = snaps(&nodes);
        let goal_before = nodes[index].snap.goal;
        let beat = Beat {
            report: hb.report(),
            synchronous_standby_names: hb.synchronous_standby_names.clone(),
            goal_changed_at: Some(nodes[index].goal_changed_at),
            acting_toward: hb.acting_toward,
            clone_from: hb.clone_from.clone(),
            stopping: hb.stopping,
        };
        let (evaluation, reply, reached) =
            match heartbeat::fold(&mut group, index, &beat, &self.env(now, nss)) {
                Folded::Forget => {
                    // The keeper stopped PostgreSQL: forget the node.
                    let node = nodes.swap_remove(index);
                    sqlx::query("DELETE FROM node WHERE node_id = $1")
                        .bind(hb.node_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    tracing::info!(node = %node.snap.name, "dropped node removed");
                    let reply = heartbeat::dropped_reply(&node.snap);
                    return Ok(Assignment::new(&[node], 0, reply));
                }
                Folded::Answer(answer) => (answer.evaluation, answer.reply, answer.reached),
            };
        take_back(&mut nodes, group);
        let me = &mut nodes[index];
        if hb.system_identifier != 0 {
            me.system_identifier = hb.system_identifier;
        }
        self.write_heartbeat(&mut tx, me, hb, now).await?;
        notes::record(&mut tx, me, goal_before, &hb.notes).await?;
        self.persist(&mut tx, &nodes, &evaluation).await?;
        if let Some(fence) = &reply.fence {
            sqlx::query(
                "UPDATE node SET fence_set = $2, fence_required = $3, fence_pending = $4,
                    fence_pending_required = $5, fence_cover_lsn = $6
                 WHERE node_id = $1",
            )
            .bind(hb.node_id)
            .bind(&fence.fence_set)
            .bind(fence.fence_required as i32)
            .bind(&fence.pending.names)
            .bind(fence.pending.required as i32)
            .bind(fence.pending.cover_lsn.map(|l| l as i64))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Assignment {
            reached,
            parameters_version: nss.parameters_version,
            slot_count: nss.slot_count,
            ..Assignment::new(&nodes, index, reply)
        })
    }

    /// Write what a heartbeat folded into node `me`.
    async fn write_heartbeat(
        &self,
        tx: &mut Tx<'_>,
        me: &StoredNode,
        hb: &Heartbeat,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE node SET reported_state = $2, pg_running = $3, lsn = $4, timeline = $5,
                wal_receiver_streaming = $6, stream_lost_at = $7, pg_down_since = $8,
                last_heartbeat = $9, system_identifier = $10, heartbeat_interval_ms = $11,
                fence_timeout_ms = $12, wal_sender_timeout_ms = $13, pg_start_failures = $14,
                pg_running_since = $15, fence_held_required = $16, keeper_boot_id = $17,
                keeper_sent_ns = $18, work = $19,
                restart_done = greatest(restart_done, least($20, restart_requested)),
                pending_restart = coalesce($21, pending_restart),
                parameters_applied = greatest(parameters_applied, $22),
                promotion_refused = $23
             WHERE node_id = $1",
        )
        .bind(me.snap.id)
        .bind(me.snap.reported.as_str())
        .bind(me.snap.pg_running)
        .bind(me.snap.lsn as i64)
        .bind(me.snap.timeline as i32)
        .bind(me.snap.wal_receiver_streaming)
        .bind(me.snap.stream_lost_at)
        .bind(me.snap.pg_down_since)
        .bind(now)
        .bind(me.system_identifier as i64)
        .bind(millis(hb.timings.heartbeat_interval))
        .bind(millis(hb.timings.fence_timeout))
        .bind(millis(hb.timings.wal_sender_timeout))
        .bind(me.snap.pg_start_failures as i32)
        .bind(me.snap.pg_running_since)
        .bind(me.snap.fence_required_held.map(|v| v as i32))
        .bind(me.snap.heard_sent.map(|c| c.boot_hex()))
        .bind(me.snap.heard_sent.map(|c| c.ns as i64))
        .bind(hb.work.as_ref().map(super::work::to_json))
        .bind(hb.restart_done.min(i64::MAX as u64) as i64)
        .bind(hb.pending_restart.as_deref())
        .bind(hb.parameters_applied.min(i64::MAX as u64) as i64)
        .bind(me.snap.promotion_refused)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
