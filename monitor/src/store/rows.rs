//! Rows as the database returns them, decoded by name with
//! `sqlx::FromRow` (a missing column or a wrong type is an error, never a
//! panic), and turned into the monitor's types; a value that does not fit
//! (an unknown state, a port out of range) is a corrupt row.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;

use super::error::{Error, Result};
use super::{FormationSettings, StoredNode};
use crate::fsm::{FencePending, Health, KeeperClock, KeeperTimings, NodeSnapshot};

/// One `node` row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct NodeRow {
    node_id: i64,
    formation: String,
    group_id: i32,
    name: String,
    host: String,
    port: i32,
    system_identifier: i64,
    candidate_priority: i32,
    replication_quorum: bool,
    apply_delay_ms: i64,
    reported_state: String,
    goal_state: String,
    pg_running: bool,
    lsn: i64,
    timeline: i32,
    wal_receiver_streaming: bool,
    stream_lost_at: Option<DateTime<Utc>>,
    pg_down_since: Option<DateTime<Utc>>,
    pg_running_since: Option<DateTime<Utc>>,
    pg_start_failures: i32,
    promotion_refused: bool,
    last_heartbeat: Option<DateTime<Utc>>,
    health: String,
    heartbeat_interval_ms: i64,
    fence_timeout_ms: i64,
    wal_sender_timeout_ms: i64,
    fence_set: Vec<String>,
    fence_required: i32,
    fence_pending: Vec<String>,
    fence_pending_required: i32,
    fence_cover_lsn: Option<i64>,
    fence_held_required: Option<i32>,
    keeper_boot_id: Option<String>,
    keeper_sent_ns: Option<i64>,
    work: Option<String>,
    goal_changed_at: DateTime<Utc>,
    restart_requested: i64,
    restart_done: i64,
    pending_restart: String,
    parameters_applied: i64,
    /// The standby it streams from instead of the primary (`set-upstream`).
    upstream: Option<String>,
}

/// A formation's settings and the database's time.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct FormationRow {
    number_sync_standbys: i32,
    election_forced_at: Option<DateTime<Utc>>,
    /// Who paused the formation (NULL: not paused).
    paused_by: Option<String>,
    parameters_version: i64,
    /// How many permanent slots it declares.
    slot_count: i32,
    pub now: DateTime<Utc>,
}

/// A node row of a locked group, with its formation's settings and the
/// database's time.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct GroupRow {
    #[sqlx(flatten)]
    pub node: NodeRow,
    #[sqlx(flatten)]
    pub formation: FormationRow,
}

impl NodeRow {
    pub fn formation(&self) -> &str {
        &self.formation
    }

    pub fn group_id(&self) -> i32 {
        self.group_id
    }
}

fn corrupt(what: String) -> Error {
    Error::Corrupt(what)
}

fn count(value: i32, column: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(format!("node.{column} is {value}")))
}

fn ms(value: i64) -> Duration {
    Duration::from_millis(value.max(0) as u64)
}

impl FormationRow {
    pub fn settings(&self) -> Result<FormationSettings> {
        Ok(FormationSettings {
            number_sync_standbys: u32::try_from(self.number_sync_standbys).map_err(|_| {
                corrupt(format!(
                    "formation.number_sync_standbys is {}",
                    self.number_sync_standbys
                ))
            })?,
            election_forced_at: self.election_forced_at,
            paused: self.paused_by.is_some(),
            parameters_version: self.parameters_version.max(0) as u64,
            slot_count: self.slot_count.max(0) as u32,
        })
    }
}

impl TryFrom<NodeRow> for StoredNode {
    type Error = Error;

    fn try_from(r: NodeRow) -> Result<StoredNode> {
        let state = |text: &str, column: &str| -> Result<S> {
            text.parse()
                .map_err(|e| corrupt(format!("node.{column} of node {}: {e}", r.node_id)))
        };
        let port = u16::try_from(r.port)
            .map_err(|_| corrupt(format!("node.port of node {} is {}", r.node_id, r.port)))?;
        Ok(StoredNode {
            snap: NodeSnapshot {
                id: r.node_id,
                reported: state(&r.reported_state, "reported_state")?,
                goal: state(&r.goal_state, "goal_state")?,
                pg_running: r.pg_running,
                // Stored as the bits of the unsigned value.
                lsn: r.lsn as u64,
                timeline: r.timeline.max(0) as u32,
                wal_receiver_streaming: r.wal_receiver_streaming,
                stream_lost_at: r.stream_lost_at,
                pg_down_since: r.pg_down_since,
                pg_running_since: r.pg_running_since,
                pg_start_failures: r.pg_start_failures.max(0) as u32,
                promotion_refused: r.promotion_refused,
                upstream: r.upstream.clone(),
                last_heartbeat: r.last_heartbeat,
                health: Health::parse(&r.health),
                candidate_priority: count(r.candidate_priority, "candidate_priority")?,
                replication_quorum: r.replication_quorum,
                apply_delay_ms: u64::try_from(r.apply_delay_ms).map_err(|_| {
                    corrupt(format!(
                        "node.apply_delay_ms of node {} is {}",
                        r.node_id, r.apply_delay_ms
                    ))
                })?,
                timings: KeeperTimings {
                    heartbeat_interval: ms(r.heartbeat_interval_ms),
                    fence_timeout: ms(r.fence_timeout_ms),
                    wal_sender_timeout: ms(r.wal_sender_timeout_ms),
                },
                fence_set: r.fence_set,
                fence_required: count(r.fence_required, "fence_required")?,
                fence_pending: FencePending {
                    names: r.fence_pending,
                    required: count(r.fence_pending_required, "fence_pending_required")?,
                    cover_lsn: r.fence_cover_lsn.map(|l| l as u64),
                },
                fence_required_held: r
                    .fence_held_required
                    .map(|v| count(v, "fence_held_required"))
                    .transpose()?,
                heard_sent: match (&r.keeper_boot_id, r.keeper_sent_ns) {
                    (Some(boot), Some(ns)) => {
                        KeeperClock::from_wire(boot, ns as u64).map_err(|e| {
                            corrupt(format!("node.keeper_boot_id of node {}: {e}", r.node_id))
                        })?
                    }
                    _ => None,
                },
                name: r.name,
            },
            formation: r.formation,
            group_id: r.group_id,
            host: r.host,
            port,
            system_identifier: r.system_identifier as u64,
            goal_changed_at: r.goal_changed_at,
            work: r.work.as_deref().and_then(super::work::from_json),
            restart: crate::core::restart::Counters {
                requested: r.restart_requested.max(0) as u64,
                done: r.restart_done.max(0) as u64,
            },
            pending_restart: r
                .pending_restart
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            parameters_applied: r.parameters_applied.max(0) as u64,
        })
    }
}

/// The rows of one locked group: its nodes, the time, its settings.
pub(super) fn grouped(rows: Vec<GroupRow>) -> Result<Option<super::Locked>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let now = first.formation.now;
    let settings = first.formation.settings()?;
    let nodes = rows
        .into_iter()
        .map(|r| StoredNode::try_from(r.node))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some((nodes, now, settings)))
}

/// Every node row decoded.
pub(super) fn nodes(rows: Vec<NodeRow>) -> Result<Vec<StoredNode>> {
    rows.into_iter().map(StoredNode::try_from).collect()
}

/// An event row with whether it is settled (see `Store::events_after`).
#[derive(Debug, sqlx::FromRow)]
pub(super) struct SettledEvent {
    #[sqlx(flatten)]
    pub event: super::EventRow,
    pub settled: bool,
}
