//! Plain reads, without a lock: what show-state, show-events, the metrics
//! endpoint and the health checks read.

use chrono::{DateTime, Utc};

use super::rows::{self, FormationRow, NodeRow};
use super::{no_formation, Error, EventRow, Locked, Result, Store, StoredNode};
use crate::fsm::Health;

impl Store {
    /// Nodes to health-check: (id, host, port, current health).
    pub async fn health_targets(&self) -> Result<Vec<(i64, String, u16, Health)>> {
        // The check matters only for a node whose keeper is quiet (the rule
        // needs both), so nodes heartbeating on time are not probed; a node
        // whose last check failed is probed until it passes, so show-state
        // never keeps a failure from before its PostgreSQL started.
        let rows: Vec<(i64, String, i32, String)> = sqlx::query_as(
            "SELECT node_id, host, port, health FROM node
              WHERE goal_state <> 'dropped'
                AND (health <> 'good' OR last_heartbeat IS NULL
                     OR last_heartbeat < clock_timestamp() - make_interval(secs => $1) - make_interval(secs => heartbeat_interval_ms / 1000.0))",
        )
        .bind(self.settings.heartbeat_grace().as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(id, host, port, health)| {
                let port = u16::try_from(port)
                    .map_err(|_| Error::Corrupt(format!("node.port of node {id} is {port}")))?;
                Ok((id, host, port, Health::parse(&health)))
            })
            .collect()
    }

    /// Every node of a formation, the database's time, and its settings.
    pub async fn formation_state(&self, formation: &str) -> Result<Locked> {
        let f: FormationRow = sqlx::query_as(
            "SELECT number_sync_standbys, election_forced_at, paused_by, parameters_version, jsonb_array_length(permanent_slots) AS slot_count, clock_timestamp() AS now FROM formation WHERE name = $1",
        )
        .bind(formation)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| no_formation(formation))?;
        let rows: Vec<NodeRow> =
            sqlx::query_as("SELECT * FROM node WHERE formation = $1 ORDER BY group_id, node_id")
                .bind(formation)
                .fetch_all(&self.pool)
                .await?;
        Ok((rows::nodes(rows)?, f.now, f.settings()?))
    }

    /// The formation and name of node `node_id`, for checking that a
    /// keeper heartbeats as itself; `None` when no such node exists. Node
    /// ids are never reused, so the answer can be cached.
    pub async fn node_identity(&self, node_id: i64) -> Result<Option<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT formation, name FROM node WHERE node_id = $1")
                .bind(node_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The last `count` events of a formation, oldest first; NotFound when
    /// the formation does not exist (a typo must not read as "nothing
    /// happened").
    pub async fn events(&self, formation: &str, count: u32) -> Result<Vec<EventRow>> {
        let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT * FROM (SELECT * FROM event WHERE formation = $1 ORDER BY event_id DESC LIMIT $2) e
             ORDER BY event_id",
        )
        .bind(formation)
        .bind(i64::from(count))
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() && !self.formation_exists(&self.pool, formation).await? {
            return Err(no_formation(formation));
        }
        Ok(rows)
    }
}

/// Reads for the metrics endpoint (`metrics.rs`): plain snapshots, no lock.
impl Store {
    /// Every node of every formation, the database's time (heartbeats are
    /// stamped with it), and the names of the formations paused.
    pub async fn metrics_snapshot(&self) -> Result<(Vec<StoredNode>, DateTime<Utc>, Vec<String>)> {
        let mut tx = self.pool.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
            .fetch_one(&mut *tx)
            .await?;
        let rows: Vec<NodeRow> =
            sqlx::query_as("SELECT * FROM node ORDER BY formation, group_id, node_id")
                .fetch_all(&mut *tx)
                .await?;
        let paused: Vec<String> =
            sqlx::query_scalar("SELECT name FROM formation WHERE paused_by IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((rows::nodes(rows)?, now, paused))
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
        let rows: Vec<rows::SettledEvent> = sqlx::query_as(
            "SELECT *, at < clock_timestamp() - interval '1 minute' AS settled
               FROM event WHERE event_id > $1 ORDER BY event_id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.event, r.settled)).collect())
    }
}
