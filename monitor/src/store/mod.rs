//! The monitor's database: the only module that speaks SQL.
//!
//! What is durable and why: every node's identity, its last report and its
//! assigned goal, and the fence set it was last told as a primary (the
//! promotion rule depends on it), plus an event row (its kind and text)
//! for every goal change. The monitor keeps nothing else, so several
//! monitor processes can share one database.
//!
//! The store decides nothing itself: every goal is decided by the decision
//! core (`crate::core`) inside one transaction that first locks the
//! group's rows (`SELECT … FOR UPDATE`, ordered by node id), so two
//! monitors can never assign conflicting goals; the store persists what
//! the core returns. A steady heartbeat, which decides nothing, is written
//! in a batch instead (see `batch`). Deadlocks and serialization failures
//! are retried a bounded number of times. Timestamps come from the
//! database's clock, the one clock all monitors share.
//!
//! - `rows`: decoding rows;
//! - `commands`: the SQL shell of each operator command;
//! - `reads`: plain reads without a lock (show-state, events, metrics,
//!   health-check targets);
//! - `heartbeat`: a heartbeat on the locked path, and what it is answered;
//! - `batch`: steady heartbeats, many per statement.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use crate::core::group::{Evaluation, Note};
use crate::core::{self as decide, Env, Refusal};
use crate::fsm::{self, Decision, Health, KeeperTimings, NodeSnapshot};

mod batch;
mod commands;
mod error;
mod formations;
mod heartbeat;
mod lease;
mod notes;
mod parameters;
mod reads;
mod rows;
mod slots;
mod target;
pub mod wakes;
pub mod work;

pub use error::{Error, Result};
pub use heartbeat::{Assignment, Heartbeat, KeeperNote};
pub use lease::MonitorInstance;
use rows::{FormationRow, GroupRow};

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
    /// When the goal was last changed (the database's clock).
    pub goal_changed_at: DateTime<Utc>,
    /// The clone or rewind its keeper last reported under way.
    pub work: Option<pgpilot_proto::pb::WorkProgress>,
    /// Restarts of PostgreSQL asked through the monitor, and carried out.
    pub restart: crate::core::restart::Counters,
    /// Settings its PostgreSQL last reported pending_restart.
    pub pending_restart: Vec<String>,
    /// The formation parameters version its keeper last applied.
    pub parameters_applied: u64,
}

/// Per-formation settings the state machine reads.
#[derive(Debug, Clone, Copy)]
pub struct FormationSettings {
    pub number_sync_standbys: u32,
    pub election_forced_at: Option<DateTime<Utc>>,
    /// An operator paused the formation: no failover starts.
    pub paused: bool,
    /// The version of its parameters (`set-parameter`).
    pub parameters_version: u64,
    /// How many permanent slots it declares (`create-slot`).
    pub slot_count: u32,
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
    /// The keeper's apply delay in milliseconds (0: not delayed).
    pub apply_delay_ms: u64,
    pub timings: KeeperTimings,
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

    /// The state machine's settings for a formation.
    pub fn fsm(&self, formation: FormationSettings) -> fsm::Settings {
        fsm::Settings {
            node_timeout: self.node_timeout,
            postgres_restart_timeout: self.postgres_restart_timeout,
            fence_margin: self.fence_margin,
            catchup_lag_bytes: fsm::DEFAULT_CATCHUP_LAG_BYTES,
            number_sync_standbys: formation.number_sync_standbys,
            election_forced_at: formation.election_forced_at,
            paused: formation.paused,
        }
    }
}

/// One event: a goal change, or a wait recorded without one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub event_id: i64,
    pub at: DateTime<Utc>,
    pub formation: String,
    pub group_id: i32,
    pub node_id: i64,
    pub node_name: String,
    #[sqlx(rename = "reported_state")]
    pub reported: String,
    pub goal_from: String,
    pub goal_to: String,
    /// The stable name of the reason's kind ([`fsm::Reason::kind`],
    /// [`fsm::Wait::kind`]); None for events written before kinds were
    /// stored.
    pub kind: Option<String>,
    pub reason: String,
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    settings: MachineSettings,
    beats: batch::Batcher,
    /// Heartbeats on the locked path at once; beyond it they are shed.
    locked_heartbeats: std::sync::Arc<tokio::sync::Semaphore>,
    /// One connection that listens for goal changes (see [`wakes`]).
    listen_pool: PgPool,
}

/// Heartbeats that may wait for the locked path at once (a few per pooled
/// connection): more would only wait past the keepers' RPC timeout.
const MAX_LOCKED_HEARTBEATS: usize = 64;

type Tx<'a> = Transaction<'a, Postgres>;

/// A locked group: its nodes ordered by node id, the database's time, and
/// its formation's settings.
pub(crate) type Locked = (Vec<StoredNode>, DateTime<Utc>, FormationSettings);

/// The snapshots of `nodes`, for the decision core.
fn snaps(nodes: &[StoredNode]) -> Vec<NodeSnapshot> {
    nodes.iter().map(|n| n.snap.clone()).collect()
}

/// Take back what the decision core changed in the snapshots.
fn take_back(nodes: &mut [StoredNode], snaps: Vec<NodeSnapshot>) {
    for (n, s) in nodes.iter_mut().zip(snaps) {
        n.snap = s;
    }
}

impl Store {
    /// Connect and apply `migrations/`.
    pub async fn connect(url: &str, settings: MachineSettings) -> Result<Store> {
        let targets = std::sync::Arc::new(target::Targets::parse(url)?);
        let pool = target::pool(&targets, 16, "").await?;
        MIGRATOR.run(&pool).await?;
        // The batch writers have connections of their own: a storm of
        // locked transactions (registrations, elections) must not starve
        // the steady heartbeats that keep every other group alive.
        let batch_pool = target::pool(&targets, batch::WORKERS as u32, batch::SESSION).await?;
        let listen_pool = target::pool(&targets, 1, "").await?;
        if targets.many() {
            tokio::spawn(target::follow(
                targets,
                vec![pool.clone(), batch_pool.clone(), listen_pool.clone()],
            ));
        }
        let beats = batch::Batcher::start(batch_pool, settings);
        Ok(Store {
            pool,
            settings,
            beats,
            locked_heartbeats: std::sync::Arc::new(tokio::sync::Semaphore::new(
                MAX_LOCKED_HEARTBEATS,
            )),
            listen_pool,
        })
    }

    /// The monitor's node_timeout: keepers' fence timeouts must be shorter.
    pub fn node_timeout(&self) -> Duration {
        self.settings.node_timeout
    }

    pub fn fsm_settings(&self, formation: FormationSettings) -> fsm::Settings {
        self.settings.fsm(formation)
    }

    /// What the decision core reads besides the group.
    fn env(&self, now: DateTime<Utc>, formation: FormationSettings) -> Env {
        Env::new(now, self.settings.fsm(formation))
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
        let formation: Option<i32> = sqlx::query_scalar(
            "SELECT number_sync_standbys FROM formation WHERE name = $1 FOR UPDATE",
        )
        .bind(&reg.formation)
        .fetch_optional(&mut *tx)
        .await?;
        if formation.is_none() {
            return Err(no_formation(&reg.formation));
        }
        let existing: Option<(i64, String, i32)> = sqlx::query_as(
            "SELECT node_id, host, port FROM node WHERE formation = $1 AND name = $2",
        )
        .bind(&reg.formation)
        .bind(&reg.name)
        .fetch_optional(&mut *tx)
        .await?;
        let node_id: i64 = match existing {
            Some((node_id, host, port)) => {
                if host != reg.host || port != i32::from(reg.port) {
                    return Err(Refusal::NameTaken {
                        name: reg.name.clone(),
                        host,
                        port,
                    }
                    .into());
                }
                node_id
            }
            None => {
                let taken: Option<String> =
                    sqlx::query_scalar("SELECT name FROM node WHERE host = $1 AND port = $2")
                        .bind(&reg.host)
                        .bind(i32::from(reg.port))
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some(other) = taken {
                    return Err(Refusal::AddressTaken {
                        host: reg.host.clone(),
                        port: reg.port,
                        other,
                    }
                    .into());
                }
                sqlx::query_scalar(
                    "INSERT INTO node (formation, group_id, name, host, port, system_identifier,
                        candidate_priority, replication_quorum, heartbeat_interval_ms,
                        fence_timeout_ms, wal_sender_timeout_ms, apply_delay_ms)
                     VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING node_id",
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
                .bind(reg.apply_delay_ms.min(i64::MAX as u64) as i64)
                .fetch_one(&mut *tx)
                .await?
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

    /// Store a first passing health check of nodes never checked before
    /// (`unknown` to `good`), in one statement. The state machine reads
    /// only a failing check (`bad`), so this changes no decision and takes
    /// no group lock; any change to or from `bad` goes through
    /// [`Store::set_health`].
    pub async fn first_checks_passed(&self, nodes: &[i64], lease: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        lease::check(&mut tx, lease).await?;
        // Rows another transaction holds are skipped, never waited for
        // (waiting here, holding rows taken out of the group order, could
        // deadlock with a locked path): their checks pass again next time.
        let updated = sqlx::query(
            "UPDATE node SET health = 'good', health_changed_at = clock_timestamp()
              WHERE node_id IN (SELECT node_id FROM node
                                 WHERE node_id = ANY($1) AND health = 'unknown'
                                 ORDER BY node_id FOR UPDATE SKIP LOCKED)",
        )
        .bind(nodes)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated)
    }

    /// Record a health-check result; when it changed, evaluate the group.
    /// Written only while the lease is held with `lease` (its token).
    pub async fn set_health(&self, node_id: i64, health: Health, lease: i64) -> Result<()> {
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
            lease::check(&mut tx, lease).await?;
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
    /// keepers are all silent), while the lease is held with `lease`.
    pub async fn evaluate_all(&self, lease: i64) -> Result<()> {
        // Only groups where time can change a decision: a keeper quiet for
        // half the node timeout, a node on its way to its goal, a goal that
        // is not a steady state, PostgreSQL down or a standby not streaming.
        // A healthy fleet costs one query.
        let groups: Vec<(String, i32)> = sqlx::query_as(
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
        for (formation, group_id) in groups {
            retry(|| async {
                let mut tx = self.pool.begin().await?;
                lease::check(&mut tx, lease).await?;
                let (nodes, now, nss) = self.lock_group(&mut tx, &formation, group_id).await?;
                self.evaluate(&mut tx, nodes, now, nss).await?;
                tx.commit().await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Run the state machine on a locked group and persist its decisions;
    /// the group as decided.
    async fn evaluate(
        &self,
        tx: &mut Tx<'_>,
        mut nodes: Vec<StoredNode>,
        now: DateTime<Utc>,
        formation: FormationSettings,
    ) -> Result<Vec<StoredNode>> {
        self.evaluate_with(tx, &mut nodes, &self.env(now, formation))
            .await?;
        Ok(nodes)
    }

    /// [`Store::evaluate`] in a given environment, in place.
    async fn evaluate_with(
        &self,
        tx: &mut Tx<'_>,
        nodes: &mut [StoredNode],
        env: &Env,
    ) -> Result<()> {
        let mut group = snaps(nodes);
        let evaluation = decide::group::evaluate(&mut group, env);
        take_back(nodes, group);
        self.persist(tx, nodes, &evaluation).await
    }

    /// Write an evaluation of `nodes`: the goal changes with their events,
    /// and the note recorded once.
    async fn persist(
        &self,
        tx: &mut Tx<'_>,
        nodes: &[StoredNode],
        evaluation: &Evaluation,
    ) -> Result<()> {
        self.apply(tx, nodes, &evaluation.decisions).await?;
        if let Some(note) = &evaluation.note {
            self.record_once(tx, &nodes[note.index], note).await?;
        }
        Ok(())
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
            let reason = d.reason.to_string();
            insert_event(tx, node, d.from, d.to, d.reason.kind(), &reason).await?;
            tracing::info!(
                formation = %node.formation,
                group = node.group_id,
                node = %node.snap.name,
                from = %d.from,
                to = %d.to,
                kind = d.reason.kind(),
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
            wakes::notify(tx, nodes).await?;
        }
        Ok(())
    }

    /// An event without a goal change (a stuck election) on node `p`,
    /// written once while the same wait holds: skipped when it is already
    /// the group's latest event.
    async fn record_once(&self, tx: &mut Tx<'_>, p: &StoredNode, note: &Note) -> Result<()> {
        let latest: Option<(Option<String>, String)> = sqlx::query_as(
            "SELECT kind, reason FROM event WHERE formation = $1 AND group_id = $2 ORDER BY event_id DESC LIMIT 1",
        )
        .bind(&p.formation)
        .bind(p.group_id)
        .fetch_optional(&mut **tx)
        .await?;
        let latest = latest
            .as_ref()
            .map(|(kind, reason)| (kind.as_deref().unwrap_or(""), reason.as_str()));
        if !decide::group::record_note(note, latest) {
            return Ok(());
        }
        let reason = note.wait.to_string();
        insert_event(tx, p, note.goal, note.goal, note.wait.kind(), &reason).await?;
        tracing::warn!(formation = %p.formation, group = p.group_id, kind = note.wait.kind(), "{reason}");
        Ok(())
    }

    /// Lock the group of the node named `name` in `formation`.
    async fn lock_named_group(
        &self,
        tx: &mut Tx<'_>,
        formation: &str,
        name: &str,
    ) -> Result<Locked> {
        let rows: Vec<(String, i32)> =
            sqlx::query_as("SELECT name, group_id FROM node WHERE formation = $1")
                .bind(formation)
                .fetch_all(&mut **tx)
                .await?;
        match rows.iter().find(|(n, _)| n == name) {
            Some(&(_, g)) => self.lock_group(tx, formation, g).await,
            None if rows.is_empty() && !self.formation_exists(&mut **tx, formation).await? => {
                Err(no_formation(formation))
            }
            None => Err(Refusal::UnknownNode {
                formation: formation.to_string(),
                name: name.to_string(),
                known: rows.into_iter().map(|(n, _)| n).collect(),
            }
            .into()),
        }
    }

    async fn formation_exists<'e, E>(&self, db: E, formation: &str) -> Result<bool>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        Ok(sqlx::query("SELECT 1 FROM formation WHERE name = $1")
            .bind(formation)
            .fetch_optional(db)
            .await?
            .is_some())
    }

    /// Lock the group's rows and read them with the database's time.
    async fn lock_group(&self, tx: &mut Tx<'_>, formation: &str, group_id: i32) -> Result<Locked> {
        let rows: Vec<GroupRow> = sqlx::query_as(
            "SELECT n.*, f.number_sync_standbys, f.election_forced_at, f.paused_by, f.parameters_version, jsonb_array_length(f.permanent_slots) AS slot_count, clock_timestamp() AS now
               FROM node n JOIN formation f ON f.name = n.formation
              WHERE n.formation = $1 AND n.group_id = $2
              ORDER BY n.node_id FOR UPDATE OF n",
        )
        .bind(formation)
        .bind(group_id)
        .fetch_all(&mut **tx)
        .await?;
        if let Some(locked) = rows::grouped(rows)? {
            return Ok(locked);
        }
        // An empty group still has its formation's settings and a time.
        let f: FormationRow = sqlx::query_as(
            "SELECT number_sync_standbys, election_forced_at, paused_by, parameters_version, jsonb_array_length(permanent_slots) AS slot_count, clock_timestamp() AS now FROM formation WHERE name = $1",
        )
        .bind(formation)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| no_formation(formation))?;
        Ok((Vec::new(), f.now, f.settings()?))
    }

    /// Lock the rows of the group of node `node_id` (one round trip); `None`
    /// when no such node is registered.
    async fn lock_group_of(&self, tx: &mut Tx<'_>, node_id: i64) -> Result<Option<Locked>> {
        let rows: Vec<GroupRow> = sqlx::query_as(
            "SELECT n.*, f.number_sync_standbys, f.election_forced_at, f.paused_by, f.parameters_version, jsonb_array_length(f.permanent_slots) AS slot_count, clock_timestamp() AS now
               FROM node n JOIN formation f ON f.name = n.formation
              WHERE (n.formation, n.group_id) =
                    (SELECT formation, group_id FROM node WHERE node_id = $1)
              ORDER BY n.node_id FOR UPDATE OF n",
        )
        .bind(node_id)
        .fetch_all(&mut **tx)
        .await?;
        rows::grouped(rows)
    }
}

/// Insert one event row.
async fn insert_event(
    tx: &mut Tx<'_>,
    node: &StoredNode,
    from: S,
    to: S,
    kind: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO event (formation, group_id, node_id, node_name, reported_state, goal_from, goal_to, kind, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&node.formation)
    .bind(node.group_id)
    .bind(node.snap.id)
    .bind(&node.snap.name)
    .bind(node.snap.reported.as_str())
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(kind)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A request names a formation that does not exist.
fn no_formation(formation: &str) -> Error {
    Error::NotFound(format!(
        "formation {} does not exist: use the formation \"default\" or create it with create-formation",
        crate::names::quote(formation)
    ))
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

#[cfg(test)]
mod tests;
