//! The monitor's database: the only module that speaks SQL.
//!
//! What is durable and why: every node's identity, its last report and its
//! assigned goal, and the fence set it was last told as a primary (the
//! promotion rule depends on it), plus an event row for every goal change.
//! The monitor keeps nothing else, so several monitor processes can share
//! one database. Every goal is decided inside one transaction that first
//! locks the group's rows (`SELECT … FOR UPDATE`, ordered by node id), so
//! two monitors can never assign conflicting goals; a steady heartbeat,
//! which decides nothing, is written in a batch instead (see `batch`). Deadlocks and serialization failures are
//! retried a bounded number of times. Timestamps come from the database's
//! clock, the one clock all monitors share.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use crate::error::{Error, Result};
use crate::fsm::{self, Decision, Health, KeeperTimings, NodeSnapshot, ReplicationPlan};

mod batch;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

const MAX_ATTEMPTS: u32 = 3;

/// A node row: the state machine's snapshot plus what only I/O needs.
#[derive(Debug, Clone)]
pub struct StoredNode {
    pub snap: NodeSnapshot,
    pub formation: String,
    pub group_id: i32,
    pub host: String,
    pub port: u16,
    pub system_identifier: u64,
    pub timeline: u32,
}

/// Per-formation settings the state machine reads.
#[derive(Debug, Clone, Copy)]
pub struct FormationSettings {
    pub number_sync_standbys: u32,
    pub election_forced_at: Option<DateTime<Utc>>,
}

fn formation_settings(row: &PgRow) -> FormationSettings {
    FormationSettings {
        number_sync_standbys: row.get::<i32, _>("number_sync_standbys") as u32,
        election_forced_at: row.get("election_forced_at"),
    }
}

/// A keeper's registration.
#[derive(Debug, Clone)]
pub struct Registration {
    pub formation: String,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub system_identifier: u64,
    pub candidate_priority: u32,
    pub replication_quorum: bool,
    pub timings: KeeperTimings,
}

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
}

/// What a heartbeat's reply carries.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub node: StoredNode,
    /// The node to follow (standbys) or clone from.
    pub primary: Option<StoredNode>,
    /// Every other node of the group.
    pub others: Vec<StoredNode>,
    pub plan: ReplicationPlan,
}

/// State-machine settings not stored per formation.
#[derive(Debug, Clone, Copy)]
pub struct MachineSettings {
    pub node_timeout: Duration,
    pub fence_margin: Duration,
    pub postgres_restart_timeout: Duration,
}

impl MachineSettings {
    /// A keeper quiet this long beyond its own heartbeat interval counts as
    /// possibly gone: its group is re-evaluated on every tick and the
    /// monitor checks its PostgreSQL. Half the node timeout, so the check
    /// has run by the time it matters.
    pub fn heartbeat_grace(&self) -> Duration {
        self.node_timeout / 2
    }
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: i64,
    pub at: DateTime<Utc>,
    pub formation: String,
    pub group_id: i32,
    pub node_id: i64,
    pub node_name: String,
    pub reported: String,
    pub goal_from: String,
    pub goal_to: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    settings: MachineSettings,
    beats: batch::Batcher,
    /// Heartbeats on the locked path at once; beyond it they are shed.
    locked_heartbeats: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Heartbeats that may wait for the locked path at once (a few per pooled
/// connection): more would only wait past the keepers' RPC timeout.
const MAX_LOCKED_HEARTBEATS: usize = 64;

type Tx<'a> = Transaction<'a, Postgres>;

impl Store {
    /// Connect and apply `migrations/`.
    pub async fn connect(url: &str, settings: MachineSettings) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        // The batch writers have connections of their own: a storm of
        // locked transactions (registrations, elections) must not starve
        // the steady heartbeats that keep every other group alive.
        let batch_pool = PgPoolOptions::new()
            .max_connections(batch::WORKERS as u32)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let beats = batch::Batcher::start(batch_pool, settings);
        Ok(Store {
            pool,
            settings,
            beats,
            locked_heartbeats: std::sync::Arc::new(tokio::sync::Semaphore::new(
                MAX_LOCKED_HEARTBEATS,
            )),
        })
    }

    /// Register a node (idempotent for the same name, host and port) and
    /// evaluate its group.
    pub async fn register_node(&self, reg: &Registration) -> Result<StoredNode> {
        // Two registrations of one host and port in different formations
        // do not wait for each other's formation lock: the later insert
        // hits the unique key. Run it again, and it sees the winner's row
        // and is refused in a sentence.
        retry_on(&[DEADLOCK, SERIALIZATION_FAILURE, UNIQUE_VIOLATION], || {
            self.register_once(reg)
        })
        .await
    }

    async fn register_once(&self, reg: &Registration) -> Result<StoredNode> {
        let mut tx = self.pool.begin().await?;
        let formation =
            sqlx::query("SELECT number_sync_standbys FROM formation WHERE name = $1 FOR UPDATE")
                .bind(&reg.formation)
                .fetch_optional(&mut *tx)
                .await?;
        if formation.is_none() {
            return Err(no_formation(&reg.formation));
        }
        let existing =
            sqlx::query("SELECT node_id, host, port FROM node WHERE formation = $1 AND name = $2")
                .bind(&reg.formation)
                .bind(&reg.name)
                .fetch_optional(&mut *tx)
                .await?;
        let node_id: i64 = match existing {
            Some(row) => {
                let host: String = row.get("host");
                let port: i32 = row.get("port");
                if host != reg.host || port != i32::from(reg.port) {
                    return Err(Error::FailedPrecondition(format!(
                        "a node named {:?} is already registered at {host}:{port}: choose another name, or drop that node first",
                        reg.name
                    )));
                }
                row.get("node_id")
            }
            None => {
                let taken = sqlx::query("SELECT name FROM node WHERE host = $1 AND port = $2")
                    .bind(&reg.host)
                    .bind(i32::from(reg.port))
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = taken {
                    let other: String = row.get("name");
                    return Err(Error::FailedPrecondition(format!(
                        "{}:{} is already registered as node {other:?}: a node's host and port must be unique",
                        reg.host, reg.port
                    )));
                }
                sqlx::query(
                    "INSERT INTO node (formation, group_id, name, host, port, system_identifier,
                        candidate_priority, replication_quorum, heartbeat_interval_ms,
                        fence_timeout_ms, wal_sender_timeout_ms)
                     VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING node_id",
                )
                .bind(&reg.formation)
                .bind(&reg.name)
                .bind(&reg.host)
                .bind(i32::from(reg.port))
                .bind(reg.system_identifier as i64)
                .bind(reg.candidate_priority as i32)
                .bind(reg.replication_quorum)
                .bind(millis(reg.timings.heartbeat_interval))
                .bind(millis(reg.timings.fence_timeout))
                .bind(millis(reg.timings.wal_sender_timeout))
                .fetch_one(&mut *tx)
                .await?
                .get("node_id")
            }
        };
        let (nodes, now, nss) = self.lock_group(&mut tx, &reg.formation, 0).await?;
        let nodes = self.evaluate(&mut tx, nodes, now, nss).await?;
        let node = nodes
            .into_iter()
            .find(|n| n.snap.id == node_id)
            .ok_or_else(|| {
                Error::NotFound(format!("node {node_id} vanished during registration"))
            })?;
        tx.commit().await?;
        Ok(node)
    }

    /// Record a heartbeat, evaluate the group, and return the assignment.
    pub async fn node_active(&self, hb: &Heartbeat) -> Result<Assignment> {
        // The steady state is written in batches (see `batch`); anything
        // else takes the locked path.
        if let Some(assignment) = self.beats.submit(hb.clone()).await? {
            return Ok(assignment);
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
        let (mut nodes, now, nss) = self.lock_group_of(&mut tx, hb.node_id).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "node id {} is not registered with this monitor: remove the keeper's state file to register again",
                hb.node_id
            ))
        })?;
        let me = nodes
            .iter_mut()
            .find(|n| n.snap.id == hb.node_id)
            .ok_or_else(|| Error::NotFound(format!("node id {} not found", hb.node_id)))?;
        if me.snap.goal == S::Dropped && hb.reported == S::Dropped {
            // The keeper stopped PostgreSQL: forget the node.
            let node = me.clone();
            sqlx::query("DELETE FROM node WHERE node_id = $1")
                .bind(hb.node_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(node = %node.snap.name, "dropped node removed");
            return Ok(dropped_reply(node));
        }
        apply_heartbeat(me, hb, now);
        sqlx::query(
            "UPDATE node SET reported_state = $2, pg_running = $3, lsn = $4, timeline = $5,
                wal_receiver_streaming = $6, stream_lost_at = $7, pg_down_since = $8,
                last_heartbeat = $9, system_identifier = $10, heartbeat_interval_ms = $11,
                fence_timeout_ms = $12, wal_sender_timeout_ms = $13, pg_start_failures = $14,
                pg_running_since = $15
             WHERE node_id = $1",
        )
        .bind(hb.node_id)
        .bind(me.snap.reported.as_str())
        .bind(me.snap.pg_running)
        .bind(me.snap.lsn as i64)
        .bind(me.timeline as i32)
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
        .execute(&mut *tx)
        .await?;

        let nodes = self.evaluate(&mut tx, nodes, now, nss).await?;
        let index = nodes
            .iter()
            .position(|n| n.snap.id == hb.node_id)
            .expect("node is in its group");
        let snaps: Vec<NodeSnapshot> = nodes.iter().map(|n| n.snap.clone()).collect();
        let plan = fsm::replication_plan(&snaps, index, nss.number_sync_standbys);
        let me = &nodes[index];
        let fence = fsm::fence_update(
            &snaps,
            index,
            &plan,
            hb.synchronous_standby_names.as_deref(),
        );
        if me.snap.goal.is_writable_primary() && !fence.stored_in(&me.snap) {
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
        let primary = upstream_of(&nodes, index).cloned();
        let others = nodes
            .iter()
            .filter(|n| n.snap.id != hb.node_id && n.snap.goal != S::Dropped)
            .cloned()
            .collect();
        Ok(Assignment {
            node: nodes[index].clone(),
            primary,
            others,
            plan,
        })
    }

    /// Record a health-check result; when it changed, evaluate the group.
    pub async fn set_health(&self, node_id: i64, health: Health) -> Result<()> {
        // Most results repeat the last one: no lock for those.
        let stored: Option<String> =
            sqlx::query_scalar("SELECT health FROM node WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?;
        if stored.as_deref().is_none_or(|h| h == health.as_str()) {
            return Ok(());
        }
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            // The group's rows first, in node-id order like every other
            // locked path: locking this node's row alone first could
            // deadlock with a heartbeat or command that locks the group.
            let Some((mut nodes, now, nss)) = self.lock_group_of(&mut tx, node_id).await? else {
                return Ok(());
            };
            let Some(node) = nodes.iter_mut().find(|n| n.snap.id == node_id) else {
                return Ok(());
            };
            if node.snap.health == health {
                return Ok(());
            }
            sqlx::query(
                "UPDATE node SET health = $2, health_changed_at = clock_timestamp()
                 WHERE node_id = $1",
            )
            .bind(node_id)
            .bind(health.as_str())
            .execute(&mut *tx)
            .await?;
            node.snap.health = health;
            self.evaluate(&mut tx, nodes, now, nss).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Evaluate every group once (a periodic safety net for groups whose
    /// keepers are all silent).
    pub async fn evaluate_all(&self) -> Result<()> {
        // Only groups where time can change a decision: a keeper quiet for
        // half the node timeout, a node on its way to its goal, a goal that
        // is not a steady state, PostgreSQL down or a standby not streaming.
        // A healthy fleet costs one query.
        let groups = sqlx::query(
            "SELECT DISTINCT formation, group_id FROM node
              WHERE goal_state <> 'dropped'
                AND (reported_state <> goal_state
                     OR goal_state NOT IN ('single', 'primary', 'secondary', 'maintenance')
                     OR last_heartbeat IS NULL
                     OR last_heartbeat < clock_timestamp() - make_interval(secs => $1) - make_interval(secs => heartbeat_interval_ms / 1000.0)
                     OR NOT pg_running
                     OR (goal_state = 'secondary' AND NOT wal_receiver_streaming))",
        )
        .bind(self.settings.heartbeat_grace().as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        for g in groups {
            let formation: String = g.get("formation");
            let group_id: i32 = g.get("group_id");
            retry(|| async {
                let mut tx = self.pool.begin().await?;
                let (nodes, now, nss) = self.lock_group(&mut tx, &formation, group_id).await?;
                self.evaluate(&mut tx, nodes, now, nss).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Nodes to health-check: (id, host, port, current health).
    pub async fn health_targets(&self) -> Result<Vec<(i64, String, u16, Health)>> {
        // The check matters only for a node whose keeper is quiet (the rule
        // needs both), so nodes heartbeating on time are not probed; a node
        // whose last check failed is probed until it passes, so show-state
        // never keeps a failure from before its PostgreSQL started.
        let rows = sqlx::query(
            "SELECT node_id, host, port, health FROM node
              WHERE goal_state <> 'dropped'
                AND (health <> 'good' OR last_heartbeat IS NULL
                     OR last_heartbeat < clock_timestamp() - make_interval(secs => $1) - make_interval(secs => heartbeat_interval_ms / 1000.0))",
        )
        .bind(self.settings.heartbeat_grace().as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("node_id"),
                    r.get("host"),
                    r.get::<i32, _>("port") as u16,
                    Health::parse(r.get("health")),
                )
            })
            .collect())
    }

    /// Every node of a formation, the database's time, and its settings.
    pub async fn formation_state(
        &self,
        formation: &str,
    ) -> Result<(Vec<StoredNode>, DateTime<Utc>, FormationSettings)> {
        let f = sqlx::query(
            "SELECT number_sync_standbys, election_forced_at, clock_timestamp() AS now FROM formation WHERE name = $1",
        )
        .bind(formation)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| no_formation(formation))?;
        let rows =
            sqlx::query("SELECT * FROM node WHERE formation = $1 ORDER BY group_id, node_id")
                .bind(formation)
                .fetch_all(&self.pool)
                .await?;
        let nodes = rows.iter().map(node_from_row).collect::<Result<Vec<_>>>()?;
        Ok((nodes, f.get("now"), formation_settings(&f)))
    }

    /// The formation and name of node `node_id`, for checking that a
    /// keeper heartbeats as itself; `None` when no such node exists. Node
    /// ids are never reused, so the answer can be cached.
    pub async fn node_identity(&self, node_id: i64) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT formation, name FROM node WHERE node_id = $1")
            .bind(node_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| (r.get("formation"), r.get("name"))))
    }

    /// The last `count` events of a formation, oldest first; NotFound when
    /// the formation does not exist (a typo must not read as "nothing
    /// happened").
    pub async fn events(&self, formation: &str, count: u32) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT * FROM event WHERE formation = $1 ORDER BY event_id DESC LIMIT $2) e
             ORDER BY event_id",
        )
        .bind(formation)
        .bind(i64::from(count))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            let exists = sqlx::query("SELECT 1 FROM formation WHERE name = $1")
                .bind(formation)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            if !exists {
                return Err(no_formation(formation));
            }
        }
        Ok(rows.iter().map(event_from_row).collect())
    }

    /// Planned failover: the primary drains, the secondaries report their LSN.
    pub async fn perform_failover(
        &self,
        formation: &str,
        group_id: i32,
        target: Option<&str>,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, now, _) = self.lock_group(&mut tx, formation, group_id).await?;
            if nodes.is_empty() {
                return Err(Error::NotFound(format!(
                    "formation {formation:?} has no group {group_id}"
                )));
            }
            let alive = |n: &StoredNode| {
                n.snap.last_heartbeat.is_some_and(|t| {
                    (now - t).to_std().unwrap_or_default() <= self.settings.node_timeout
                })
            };
            let primary = nodes
                .iter()
                .find(|n| n.snap.goal.is_writable_primary())
                .ok_or_else(|| {
                    Error::FailedPrecondition(
                        "the group has no primary right now (a failover may be under way): wait until show-state shows one".into(),
                    )
                })?;
            if primary.snap.reported != primary.snap.goal || !alive(primary) {
                return Err(Error::FailedPrecondition(format!(
                    "primary {} is not settled and healthy (reported {}, goal {}): wait until it is, or let automatic failover act",
                    primary.snap.name, primary.snap.reported, primary.snap.goal
                )));
            }
            let candidates: Vec<&StoredNode> = nodes
                .iter()
                .filter(|n| {
                    n.snap.goal == S::Secondary && n.snap.reported == S::Secondary && alive(n)
                })
                .collect();
            let (candidates, reason) = match target {
                None => (candidates, fsm::Reason::PlannedFailover),
                Some(name) => {
                    let node = find_by_name(&nodes, name)?;
                    if node.snap.id == primary.snap.id {
                        return Err(Error::FailedPrecondition(format!(
                            "{name} is already the primary: name a standby to promote"
                        )));
                    }
                    if node.snap.candidate_priority == 0 {
                        return Err(Error::FailedPrecondition(format!(
                            "{name} has candidate priority 0 and is never promoted: raise it with set-candidate-priority first"
                        )));
                    }
                    if !candidates.iter().any(|c| c.snap.id == node.snap.id) {
                        return Err(Error::FailedPrecondition(format!(
                            "{name} is not a healthy secondary (reported {}, goal {}): wait until show-state shows it secondary",
                            node.snap.reported, node.snap.goal
                        )));
                    }
                    (vec![node], fsm::Reason::PlannedSwitchover { to: name.to_string() })
                }
            };
            if !candidates.iter().any(|n| n.snap.candidate_priority > 0) {
                return Err(Error::FailedPrecondition(
                    "no healthy secondary with candidate priority above 0 can take over: add a standby or wait until one is secondary".into(),
                ));
            }
            let mut decisions = vec![Decision {
                node_id: primary.snap.id,
                from: primary.snap.goal,
                to: S::Draining,
                reason: reason.clone(),
            }];
            decisions.extend(candidates.iter().map(|n| Decision {
                node_id: n.snap.id,
                from: n.snap.goal,
                to: S::ReportLsn,
                reason: reason.clone(),
            }));
            refuse_unreachable(&nodes, &decisions)?;
            self.apply(&mut tx, &nodes, &decisions).await?;
            tx.commit().await?;
            Ok(match target {
                None => format!(
                    "planned failover started: {} stops taking writes, then a secondary is promoted",
                    primary.snap.name
                ),
                Some(to) => format!(
                    "planned switchover to {to} started: {} stops taking writes, then {to} is promoted",
                    primary.snap.name
                ),
            })
        })
        .await
    }

    /// Allow the election that waits in `formation` to finish without the
    /// promotion rule's quorum of reports (a double fault).
    pub async fn force_election(&self, formation: &str, group_id: i32) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, now, f) = self.lock_group(&mut tx, formation, group_id).await?;
            let snaps: Vec<NodeSnapshot> = nodes.iter().map(|n| n.snap.clone()).collect();
            let outcome = fsm::decide(&snaps, now, &self.fsm_settings(f));
            let stuck = outcome.waiting.iter().any(|w| w.starts_with("election stuck"));
            if !stuck {
                return Err(Error::FailedPrecondition(
                    "no election is stuck: --allow-data-loss only unblocks an election that waits for standbys that cannot report (see show-state)".into(),
                ));
            }
            sqlx::query("UPDATE formation SET election_forced_at = clock_timestamp() WHERE name = $1")
                .bind(formation)
                .execute(&mut *tx)
                .await?;
            let f = FormationSettings {
                election_forced_at: Some(now),
                ..f
            };
            self.evaluate(&mut tx, nodes, now, f).await?;
            tx.commit().await?;
            tracing::warn!(formation, "election forced by the operator: acknowledged commits may be lost");
            Ok("election forced: the most advanced reporting standby is promoted once the old primary's fence deadline passed; commits only the missing standbys had are lost".into())
        })
        .await
    }

    /// Change number_sync_standbys; the primary applies it.
    pub async fn set_number_sync_standbys(&self, formation: &str, value: u32) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let found = sqlx::query("SELECT name FROM formation WHERE name = $1 FOR UPDATE")
                .bind(formation)
                .fetch_optional(&mut *tx)
                .await?;
            if found.is_none() {
                return Err(no_formation(formation));
            }
            let (nodes, _, _) = self.lock_group(&mut tx, formation, 0).await?;
            let snaps: Vec<NodeSnapshot> = nodes.iter().map(|n| n.snap.clone()).collect();
            fsm::check_settings(&snaps, value).map_err(Error::FailedPrecondition)?;
            sqlx::query("UPDATE formation SET number_sync_standbys = $2 WHERE name = $1")
                .bind(formation)
                .bind(value as i32)
                .execute(&mut *tx)
                .await?;
            let what = format!("number_sync_standbys set to {value}");
            self.apply_settings_on_primary(&mut tx, &nodes, &what)
                .await?;
            tx.commit().await?;
            Ok(format!("{what} for formation {formation}"))
        })
        .await
    }

    /// Change a node's candidate priority and/or replication quorum.
    pub async fn set_node_settings(
        &self,
        formation: &str,
        name: &str,
        candidate_priority: Option<u32>,
        replication_quorum: Option<bool>,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, _, nss) = self.lock_named_group(&mut tx, formation, name).await?;
            let node = find_by_name(&nodes, name)?;
            let mut hypothetical: Vec<NodeSnapshot> =
                nodes.iter().map(|n| n.snap.clone()).collect();
            for n in hypothetical.iter_mut().filter(|n| n.id == node.snap.id) {
                if let Some(p) = candidate_priority {
                    n.candidate_priority = p;
                }
                if let Some(q) = replication_quorum {
                    n.replication_quorum = q;
                }
            }
            fsm::check_settings(&hypothetical, nss.number_sync_standbys)
                .map_err(Error::FailedPrecondition)?;
            sqlx::query(
                "UPDATE node SET candidate_priority = COALESCE($2, candidate_priority),
                    replication_quorum = COALESCE($3, replication_quorum) WHERE node_id = $1",
            )
            .bind(node.snap.id)
            .bind(candidate_priority.map(|p| p as i32))
            .bind(replication_quorum)
            .execute(&mut *tx)
            .await?;
            let mut what = Vec::new();
            if let Some(p) = candidate_priority {
                what.push(format!("candidate_priority of {name} set to {p}"));
            }
            if let Some(q) = replication_quorum {
                what.push(format!("replication_quorum of {name} set to {q}"));
            }
            let what = what.join(", ");
            if replication_quorum.is_some_and(|q| q != node.snap.replication_quorum) {
                self.apply_settings_on_primary(&mut tx, &nodes, &what)
                    .await?;
            }
            tx.commit().await?;
            tracing::info!(formation, node = name, "{what}");
            Ok(what)
        })
        .await
    }

    /// Put a node into maintenance, or bring it back.
    pub async fn set_maintenance(
        &self,
        formation: &str,
        name: &str,
        enabled: bool,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, now, nss) = self.lock_named_group(&mut tx, formation, name).await?;
            let node = find_by_name(&nodes, name)?;
            let alive = |n: &StoredNode| {
                n.snap.last_heartbeat.is_some_and(|t| {
                    (now - t).to_std().unwrap_or_default() <= self.settings.node_timeout
                })
            };
            let healthy_candidates = |exclude: i64| {
                nodes
                    .iter()
                    .filter(|n| {
                        n.snap.id != exclude
                            && n.snap.goal == S::Secondary
                            && n.snap.reported == S::Secondary
                            && n.snap.candidate_priority > 0
                            && alive(n)
                    })
                    .collect::<Vec<_>>()
            };
            let mut decisions = Vec::new();
            let message;
            if !enabled {
                if node.snap.goal != S::Maintenance {
                    return Err(Error::FailedPrecondition(format!(
                        "{name} is not in maintenance (goal {}): nothing to disable",
                        node.snap.goal
                    )));
                }
                decisions.push(Decision { node_id: node.snap.id, from: node.snap.goal, to: S::Catchingup, reason: fsm::Reason::MaintenanceOver });
                message = format!("{name} leaves maintenance and catches up with the primary");
            } else if matches!(node.snap.goal, S::Maintenance | S::WaitMaintenance | S::PrepareMaintenance) {
                return Ok(format!("{name} is already in maintenance"));
            } else if node.snap.goal.is_writable_primary() {
                let candidates = healthy_candidates(node.snap.id);
                if candidates.is_empty() || node.snap.reported != node.snap.goal || !alive(node) {
                    return Err(Error::FailedPrecondition(format!(
                        "maintenance of primary {name} needs a switchover first, and no healthy secondary with candidate priority above 0 can take over: add or repair a standby first"
                    )));
                }
                decisions.push(Decision { node_id: node.snap.id, from: node.snap.goal, to: S::PrepareMaintenance, reason: fsm::Reason::MaintenanceOfPrimary });
                decisions.extend(candidates.iter().map(|c| Decision { node_id: c.snap.id, from: c.snap.goal, to: S::ReportLsn, reason: fsm::Reason::MaintenanceOfPrimary }));
                message = format!("{name} hands over to a secondary, then enters maintenance");
            } else if matches!(node.snap.goal, S::Secondary | S::Catchingup) {
                if node.snap.goal == S::Secondary && node.snap.candidate_priority > 0 && healthy_candidates(node.snap.id).is_empty() {
                    return Err(Error::FailedPrecondition(format!(
                        "{name} is the only standby that could be promoted: maintenance would leave no failover candidate; add a standby or raise another's candidate priority first"
                    )));
                }
                let quorum_left = nodes
                    .iter()
                    .filter(|n| n.snap.id != node.snap.id && n.snap.goal == S::Secondary && n.snap.replication_quorum)
                    .count() as u32;
                if nss.number_sync_standbys > quorum_left {
                    return Err(Error::FailedPrecondition(format!(
                        "maintenance of {name} would leave {quorum_left} quorum standbys for number_sync_standbys = {nss}: writes would stop; lower number_sync_standbys first",
                        nss = nss.number_sync_standbys
                    )));
                }
                let app = pgpilot_proto::lsn::application_name(node.snap.id);
                let counted = nodes.iter().any(|n| n.snap.goal.is_writable_primary() && n.snap.fence_set.contains(&app));
                let (to, reason) = if counted {
                    (S::WaitMaintenance, fsm::Reason::MaintenanceRequested)
                } else {
                    (S::Maintenance, fsm::Reason::MaintenanceReady)
                };
                decisions.push(Decision { node_id: node.snap.id, from: node.snap.goal, to, reason });
                message = format!("{name} enters maintenance");
            } else {
                return Err(Error::FailedPrecondition(format!(
                    "{name} is {} (goal {}): maintenance starts only from primary, secondary or catchingup; wait until the group settles",
                    node.snap.reported, node.snap.goal
                )));
            }
            refuse_unreachable(&nodes, &decisions)?;
            self.apply(&mut tx, &nodes, &decisions).await?;
            tx.commit().await?;
            Ok(message)
        })
        .await
    }

    /// Rebuild a standby from a fresh clone of the primary (its data
    /// directory is lost or diverged): back to wait_standby, after which the
    /// usual rules clone it.
    pub async fn reinit_node(&self, formation: &str, name: &str) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, _, f) = self.lock_named_group(&mut tx, formation, name).await?;
            let node = find_by_name(&nodes, name)?;
            if node.snap.goal.is_writable_primary() || is_handing_over_goal(node.snap.goal) {
                return Err(Error::FailedPrecondition(format!(
                    "{name} is the primary: run perform-failover first, then reinit it as a standby"
                )));
            }
            if !matches!(
                node.snap.goal,
                S::Secondary | S::Catchingup | S::Maintenance | S::Demoted
            ) {
                return Err(Error::FailedPrecondition(format!(
                    "{name} is {} (goal {}): reinit applies to a secondary, catchingup, demoted or maintenance node; wait until the group settles",
                    node.snap.reported, node.snap.goal
                )));
            }
            if !nodes
                .iter()
                .any(|n| n.snap.goal.is_writable_primary() && n.snap.reported == n.snap.goal)
            {
                return Err(Error::FailedPrecondition(
                    "the group has no settled primary to clone from: wait until show-state shows one".into(),
                ));
            }
            let quorum_left = nodes
                .iter()
                .filter(|n| {
                    n.snap.id != node.snap.id
                        && n.snap.goal == S::Secondary
                        && n.snap.replication_quorum
                })
                .count() as u32;
            if f.number_sync_standbys > quorum_left {
                return Err(Error::FailedPrecondition(format!(
                    "reinit of {name} would leave {quorum_left} quorum standbys for number_sync_standbys = {}: writes would stop; lower number_sync_standbys first",
                    f.number_sync_standbys
                )));
            }
            let decision = Decision {
                node_id: node.snap.id,
                from: node.snap.goal,
                to: S::WaitStandby,
                reason: fsm::Reason::Reinit,
            };
            refuse_unreachable(&nodes, std::slice::from_ref(&decision))?;
            self.apply(&mut tx, &nodes, &[decision]).await?;
            tx.commit().await?;
            Ok(format!(
                "{name} is being rebuilt: it stops, then clones the primary afresh"
            ))
        })
        .await
    }

    /// Remove a node: its keeper stops PostgreSQL and the row is deleted
    /// when it reports so (at once with `force`).
    pub async fn drop_node(&self, formation: &str, name: &str, force: bool) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let (nodes, _, nss) = self.lock_named_group(&mut tx, formation, name).await?;
            let node = find_by_name(&nodes, name)?;
            let others = nodes.iter().filter(|n| n.snap.id != node.snap.id && n.snap.goal != S::Dropped).count();
            if (node.snap.goal.is_writable_primary() || is_handing_over_goal(node.snap.goal)) && others > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "{name} is the primary: run perform-failover first, then drop it as a standby"
                )));
            }
            let remaining: Vec<NodeSnapshot> = nodes
                .iter()
                .filter(|n| n.snap.id != node.snap.id)
                .map(|n| n.snap.clone())
                .collect();
            if !force {
                fsm::check_settings(&remaining, nss.number_sync_standbys).map_err(|e| {
                    Error::FailedPrecondition(format!("dropping {name} is refused: {e}"))
                })?;
            }
            let decision = Decision { node_id: node.snap.id, from: node.snap.goal, to: S::Dropped, reason: fsm::Reason::Dropped };
            self.apply(&mut tx, &nodes, &[decision]).await?;
            if force {
                sqlx::query("DELETE FROM node WHERE node_id = $1")
                    .bind(node.snap.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(if force {
                format!("{name} removed from formation {formation}; stop its keeper and PostgreSQL yourself")
            } else {
                format!("{name} is being dropped: its keeper stops PostgreSQL and exits")
            })
        })
        .await
    }

    /// An event without a goal change (a stuck election), written once while
    /// the same reason holds: it is skipped when it is already the group's
    /// latest event.
    async fn record_once(&self, tx: &mut Tx<'_>, nodes: &[StoredNode], reason: &str) -> Result<()> {
        let Some(p) = nodes.iter().find(|n| n.snap.goal.is_writable_primary()) else {
            return Ok(());
        };
        let last: Option<String> = sqlx::query_scalar(
            "SELECT reason FROM event WHERE formation = $1 AND group_id = $2 ORDER BY event_id DESC LIMIT 1",
        )
        .bind(&p.formation)
        .bind(p.group_id)
        .fetch_optional(&mut **tx)
        .await?;
        if last.as_deref() == Some(reason) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO event (formation, group_id, node_id, node_name, reported_state, goal_from, goal_to, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(&p.formation)
        .bind(p.group_id)
        .bind(p.snap.id)
        .bind(&p.snap.name)
        .bind(p.snap.reported.as_str())
        .bind(p.snap.goal.as_str())
        .bind(reason)
        .execute(&mut **tx)
        .await?;
        tracing::warn!(formation = %p.formation, group = p.group_id, "{reason}");
        Ok(())
    }

    /// Send the primary through apply_settings when it is a settled `primary`.
    async fn apply_settings_on_primary(
        &self,
        tx: &mut Tx<'_>,
        nodes: &[StoredNode],
        what: &str,
    ) -> Result<()> {
        if let Some(p) = nodes
            .iter()
            .find(|n| n.snap.goal == S::Primary && n.snap.reported == S::Primary)
        {
            let decision = Decision {
                node_id: p.snap.id,
                from: p.snap.goal,
                to: S::ApplySettings,
                reason: fsm::Reason::SettingsChanged {
                    what: what.to_string(),
                },
            };
            self.apply(tx, nodes, &[decision]).await?;
        }
        Ok(())
    }

    /// Lock the group of the node named `name` in `formation`.
    async fn lock_named_group(
        &self,
        tx: &mut Tx<'_>,
        formation: &str,
        name: &str,
    ) -> Result<(Vec<StoredNode>, DateTime<Utc>, FormationSettings)> {
        let rows = sqlx::query("SELECT name, group_id FROM node WHERE formation = $1")
            .bind(formation)
            .fetch_all(&mut **tx)
            .await?;
        let group = rows
            .iter()
            .find(|r| r.get::<String, _>("name") == name)
            .map(|r| r.get::<i32, _>("group_id"));
        match group {
            Some(g) => self.lock_group(tx, formation, g).await,
            None if rows.is_empty() && !self.formation_exists(tx, formation).await? => {
                Err(no_formation(formation))
            }
            None => {
                let names: Vec<String> = rows.iter().map(|r| r.get("name")).collect();
                Err(unknown_node(formation, name, &names))
            }
        }
    }

    async fn formation_exists(&self, tx: &mut Tx<'_>, formation: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM formation WHERE name = $1")
            .bind(formation)
            .fetch_optional(&mut **tx)
            .await?
            .is_some())
    }

    /// Lock the group's rows and read them with the database's time.
    async fn lock_group(
        &self,
        tx: &mut Tx<'_>,
        formation: &str,
        group_id: i32,
    ) -> Result<(Vec<StoredNode>, DateTime<Utc>, FormationSettings)> {
        let rows = sqlx::query(
            "SELECT n.*, f.number_sync_standbys, f.election_forced_at, clock_timestamp() AS now
               FROM node n JOIN formation f ON f.name = n.formation
              WHERE n.formation = $1 AND n.group_id = $2
              ORDER BY n.node_id FOR UPDATE OF n",
        )
        .bind(formation)
        .bind(group_id)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            // An empty group still has its formation's settings and a time.
            let f = sqlx::query(
                "SELECT number_sync_standbys, election_forced_at, clock_timestamp() AS now FROM formation WHERE name = $1",
            )
            .bind(formation)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| no_formation(formation))?;
            return Ok((Vec::new(), f.get("now"), formation_settings(&f)));
        }
        grouped(&rows)
    }

    /// Lock the rows of the group of node `node_id` (one round trip); `None`
    /// when no such node is registered.
    async fn lock_group_of(
        &self,
        tx: &mut Tx<'_>,
        node_id: i64,
    ) -> Result<Option<(Vec<StoredNode>, DateTime<Utc>, FormationSettings)>> {
        let rows = sqlx::query(
            "SELECT n.*, f.number_sync_standbys, f.election_forced_at, clock_timestamp() AS now
               FROM node n JOIN formation f ON f.name = n.formation
              WHERE (n.formation, n.group_id) =
                    (SELECT formation, group_id FROM node WHERE node_id = $1)
              ORDER BY n.node_id FOR UPDATE OF n",
        )
        .bind(node_id)
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        grouped(&rows).map(Some)
    }

    /// Run the state machine and persist its decisions.
    async fn evaluate(
        &self,
        tx: &mut Tx<'_>,
        mut nodes: Vec<StoredNode>,
        now: DateTime<Utc>,
        formation: FormationSettings,
    ) -> Result<Vec<StoredNode>> {
        let snaps: Vec<NodeSnapshot> = nodes.iter().map(|n| n.snap.clone()).collect();
        let outcome = fsm::decide(&snaps, now, &self.fsm_settings(formation));
        self.apply(tx, &nodes, &outcome.decisions).await?;
        if let Some(stuck) = outcome
            .waiting
            .iter()
            .find(|w| w.starts_with("election stuck"))
        {
            self.record_once(tx, &nodes, stuck).await?;
        }
        for d in &outcome.decisions {
            if let Some(n) = nodes.iter_mut().find(|n| n.snap.id == d.node_id) {
                n.snap.goal = d.to;
            }
        }
        Ok(nodes)
    }

    /// The monitor's node_timeout: keepers' fence timeouts must be shorter.
    pub fn node_timeout(&self) -> Duration {
        self.settings.node_timeout
    }

    pub fn fsm_settings(&self, formation: FormationSettings) -> fsm::Settings {
        Store::fsm_settings_for(&self.settings, formation)
    }

    fn fsm_settings_for(settings: &MachineSettings, formation: FormationSettings) -> fsm::Settings {
        fsm::Settings {
            node_timeout: settings.node_timeout,
            postgres_restart_timeout: settings.postgres_restart_timeout,
            fence_margin: settings.fence_margin,
            catchup_lag_bytes: fsm::DEFAULT_CATCHUP_LAG_BYTES,
            number_sync_standbys: formation.number_sync_standbys,
            election_forced_at: formation.election_forced_at,
        }
    }

    /// Write goal changes and their events, and notify listeners.
    async fn apply(
        &self,
        tx: &mut Tx<'_>,
        nodes: &[StoredNode],
        decisions: &[Decision],
    ) -> Result<()> {
        for d in decisions {
            let Some(node) = nodes.iter().find(|n| n.snap.id == d.node_id) else {
                continue;
            };
            sqlx::query("UPDATE node SET goal_state = $2, goal_changed_at = clock_timestamp() WHERE node_id = $1")
                .bind(d.node_id)
                .bind(d.to.as_str())
                .execute(&mut **tx)
                .await?;
            crate::metrics::goal_assigned(d.node_id, node.snap.reported, d.to);
            let reason = d.reason.to_string();
            sqlx::query(
                "INSERT INTO event (formation, group_id, node_id, node_name, reported_state, goal_from, goal_to, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&node.formation)
            .bind(node.group_id)
            .bind(d.node_id)
            .bind(&node.snap.name)
            .bind(node.snap.reported.as_str())
            .bind(d.from.as_str())
            .bind(d.to.as_str())
            .bind(&reason)
            .execute(&mut **tx)
            .await?;
            tracing::info!(
                formation = %node.formation,
                group = node.group_id,
                node = %node.snap.name,
                from = %d.from,
                to = %d.to,
                reason = %reason,
                "goal changed"
            );
        }
        if let Some(first) = decisions.first() {
            if let Some(node) = nodes.iter().find(|n| n.snap.id == first.node_id) {
                sqlx::query("SELECT pg_notify('pgpilot_events', $1)")
                    .bind(&node.formation)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(())
    }
}

/// An operator command may assign only goals every keeper can reach: the
/// keeper is at its reported state or, having just finished its
/// transition, at its goal, and needs an edge from both.
fn refuse_unreachable(nodes: &[StoredNode], decisions: &[Decision]) -> Result<()> {
    for d in decisions {
        if let Some(n) = nodes.iter().find(|n| n.snap.id == d.node_id) {
            if !pgpilot_proto::keeper_has_edge(n.snap.reported, d.to)
                || !pgpilot_proto::keeper_has_edge(n.snap.goal, d.to)
            {
                return Err(Error::FailedPrecondition(format!(
                    "{} is still {} (goal {}) and cannot go to {} from there: wait until show-state shows it settled, then retry",
                    n.snap.name, n.snap.reported, n.snap.goal, d.to
                )));
            }
        }
    }
    Ok(())
}

fn is_handing_over_goal(state: S) -> bool {
    matches!(state, S::Draining | S::PrepareMaintenance)
}

fn find_by_name<'a>(nodes: &'a [StoredNode], name: &str) -> Result<&'a StoredNode> {
    nodes.iter().find(|n| n.snap.name == name).ok_or_else(|| {
        let names: Vec<String> = nodes.iter().map(|n| n.snap.name.clone()).collect();
        unknown_node(
            nodes
                .first()
                .map(|n| n.formation.as_str())
                .unwrap_or("default"),
            name,
            &names,
        )
    })
}

/// A request names a formation that does not exist.
fn no_formation(formation: &str) -> Error {
    Error::NotFound(format!(
        "formation {} does not exist: use the formation \"default\" or create it first",
        crate::names::quote(formation)
    ))
}

/// "No node named X", with the closest known names.
fn unknown_node(formation: &str, name: &str, known: &[String]) -> Error {
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    Error::NotFound(crate::names::unknown_node(formation, name, &known))
}

/// The last reply to the keeper of a dropped node whose row is gone: its
/// goal, and nobody to follow or replicate to.
fn dropped_reply(node: StoredNode) -> Assignment {
    // The plan of the node alone (an empty group has no node to plan for).
    let plan = fsm::replication_plan(std::slice::from_ref(&node.snap), 0, 0);
    Assignment {
        node,
        primary: None,
        others: Vec::new(),
        plan,
    }
}

/// Fold a heartbeat into the stored node, tracking since when the WAL
/// receiver and PostgreSQL have been down.
fn apply_heartbeat(node: &mut StoredNode, hb: &Heartbeat, now: DateTime<Utc>) {
    node.snap.heard(
        &fsm::Report {
            reported: hb.reported,
            pg_running: hb.pg_running,
            lsn: hb.lsn,
            wal_receiver_streaming: hb.wal_receiver_streaming,
            pg_start_failures: hb.pg_start_failures,
            timings: hb.timings,
        },
        now,
    );
    node.timeline = hb.timeline;
    if hb.system_identifier != 0 {
        node.system_identifier = hb.system_identifier;
    }
}

/// Which node `index` follows: a standby follows the writable primary; the
/// winner of an election needs nobody.
fn upstream_of(nodes: &[StoredNode], index: usize) -> Option<&StoredNode> {
    let me = &nodes[index];
    if me.snap.goal.is_writable_primary() || is_handing_over_goal(me.snap.goal) {
        return None;
    }
    if me.snap.goal == S::FastForward {
        let snaps: Vec<NodeSnapshot> = nodes.iter().map(|n| n.snap.clone()).collect();
        return fsm::fast_forward_source(&snaps, index).map(|i| &nodes[i]);
    }
    // During a failover the old primary keeps its goal until the election
    // ends; standbys keep following it until then.
    nodes
        .iter()
        .filter(|n| n.snap.id != me.snap.id)
        .find(|n| n.snap.goal.is_writable_primary())
        .or_else(|| {
            nodes
                .iter()
                .find(|n| n.snap.id != me.snap.id && is_handing_over_goal(n.snap.goal))
        })
}

/// The rows of one group read with their formation's settings and `now`.
fn grouped(rows: &[PgRow]) -> Result<(Vec<StoredNode>, DateTime<Utc>, FormationSettings)> {
    let nodes = rows.iter().map(node_from_row).collect::<Result<Vec<_>>>()?;
    Ok((nodes, rows[0].get("now"), formation_settings(&rows[0])))
}

fn event_from_row(r: &PgRow) -> EventRow {
    EventRow {
        event_id: r.get("event_id"),
        at: r.get("at"),
        formation: r.get("formation"),
        group_id: r.get("group_id"),
        node_id: r.get("node_id"),
        node_name: r.get("node_name"),
        reported: r.get("reported_state"),
        goal_from: r.get("goal_from"),
        goal_to: r.get("goal_to"),
        reason: r.get("reason"),
    }
}

fn node_from_row(row: &PgRow) -> Result<StoredNode> {
    let state = |col: &str| -> Result<S> {
        let text: String = row.get(col);
        text.parse()
            .map_err(|e| Error::FailedPrecondition(format!("corrupt node row: {e}")))
    };
    let ms = |col: &str| Duration::from_millis(row.get::<i64, _>(col).max(0) as u64);
    Ok(StoredNode {
        snap: NodeSnapshot {
            id: row.get("node_id"),
            name: row.get("name"),
            reported: state("reported_state")?,
            goal: state("goal_state")?,
            pg_running: row.get("pg_running"),
            lsn: row.get::<i64, _>("lsn") as u64,
            wal_receiver_streaming: row.get("wal_receiver_streaming"),
            stream_lost_at: row.get("stream_lost_at"),
            pg_down_since: row.get("pg_down_since"),
            pg_running_since: row.get("pg_running_since"),
            pg_start_failures: row.get::<i32, _>("pg_start_failures").max(0) as u32,
            last_heartbeat: row.get("last_heartbeat"),
            health: Health::parse(row.get("health")),
            candidate_priority: row.get::<i32, _>("candidate_priority") as u32,
            replication_quorum: row.get("replication_quorum"),
            timings: KeeperTimings {
                heartbeat_interval: ms("heartbeat_interval_ms"),
                fence_timeout: ms("fence_timeout_ms"),
                wal_sender_timeout: ms("wal_sender_timeout_ms"),
            },
            fence_set: row.get("fence_set"),
            fence_required: row.get::<i32, _>("fence_required") as u32,
            fence_pending: fsm::FencePending {
                names: row.get("fence_pending"),
                required: row.get::<i32, _>("fence_pending_required") as u32,
                cover_lsn: row
                    .get::<Option<i64>, _>("fence_cover_lsn")
                    .map(|l| l as u64),
            },
        },
        formation: row.get("formation"),
        group_id: row.get("group_id"),
        host: row.get("host"),
        port: row.get::<i32, _>("port") as u16,
        system_identifier: row.get::<i64, _>("system_identifier") as u64,
        timeline: row.get::<i32, _>("timeline") as u32,
    })
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

const SERIALIZATION_FAILURE: &str = "40001";
const DEADLOCK: &str = "40P01";
const UNIQUE_VIOLATION: &str = "23505";

/// Retry an operation on deadlock / serialization failure, a bounded number of times.
async fn retry<T, F, Fut>(op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    retry_on(&[DEADLOCK, SERIALIZATION_FAILURE], op).await
}

/// Retry an operation that fails with one of the SQLSTATEs `codes`, a
/// bounded number of times.
async fn retry_on<T, F, Fut>(codes: &[&str], mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(Error::Database(sqlx::Error::Database(db)))
                if attempt < MAX_ATTEMPTS && db.code().is_some_and(|c| codes.contains(&&*c)) =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Reads for the metrics endpoint (`metrics.rs`): plain snapshots, no lock.
impl Store {
    /// Every node of every formation, and the database's time (heartbeats
    /// are stamped with it).
    pub async fn metrics_snapshot(&self) -> Result<(Vec<StoredNode>, DateTime<Utc>)> {
        let mut tx = self.pool.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT * FROM node ORDER BY formation, group_id, node_id")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let nodes = rows.iter().map(node_from_row).collect::<Result<Vec<_>>>()?;
        Ok((nodes, now))
    }

    /// The id of the newest event (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        let id: Option<i64> = sqlx::query_scalar("SELECT max(event_id) FROM event")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// Up to `limit` events newer than `after`, oldest first, each with
    /// whether it is settled: recorded over a minute ago, so no event with
    /// a smaller id can still appear (ids are taken at insert but become
    /// visible at commit, which can be out of order).
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<(EventRow, bool)>> {
        let rows = sqlx::query(
            "SELECT *, at < clock_timestamp() - interval '1 minute' AS settled
               FROM event WHERE event_id > $1 ORDER BY event_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (event_from_row(r), r.get::<bool, _>("settled")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(goal: S) -> StoredNode {
        StoredNode {
            snap: NodeSnapshot {
                id: 7,
                name: "node7".into(),
                reported: goal,
                goal,
                pg_running: false,
                lsn: 0,
                wal_receiver_streaming: false,
                stream_lost_at: None,
                pg_down_since: None,
                pg_running_since: None,
                pg_start_failures: 0,
                last_heartbeat: None,
                health: Health::Unknown,
                candidate_priority: 50,
                replication_quorum: true,
                timings: KeeperTimings {
                    heartbeat_interval: Duration::from_millis(500),
                    fence_timeout: Duration::from_millis(1500),
                    wal_sender_timeout: Duration::from_secs(2),
                },
                fence_set: Vec::new(),
                fence_required: 0,
                fence_pending: Default::default(),
            },
            formation: "default".into(),
            group_id: 0,
            host: "127.0.0.1".into(),
            port: 5432,
            system_identifier: 0,
            timeline: 1,
        }
    }

    /// The reply to a dropped node's last heartbeat (its row deleted) once
    /// indexed an empty group and panicked.
    #[test]
    fn a_dropped_node_is_answered_its_goal_and_no_replication() {
        let reply = dropped_reply(stored(S::Dropped));
        assert_eq!(reply.node.snap.goal, S::Dropped);
        assert!(reply.primary.is_none() && reply.others.is_empty());
        assert_eq!(reply.plan.synchronous_standby_names, "");
        assert!(reply.plan.fence_set.is_empty());
        assert_eq!(reply.plan.fence_required, 0);
    }

    #[test]
    fn refusals_name_a_missing_formation_briefly() {
        let err = no_formation("nosuch");
        assert!(matches!(err, Error::NotFound(_)), "{err}");
        assert_eq!(
            err.to_string(),
            "formation \"nosuch\" does not exist: use the formation \"default\" or create it first"
        );
        assert!(no_formation(&"f".repeat(10_000)).to_string().len() < 200);
    }
}
