//! The SQL shell of the formation commands (`crate::core::formations`,
//! `crate::core::pause`): create, drop, list, pause and resume.

use chrono::{DateTime, SecondsFormat, Utc};
use pgpilot_proto::ReplicationState as S;

use super::{insert_event, no_formation, retry, rows, Result, Store, StoredNode, Tx};
use crate::core::formations;
use crate::core::pause::{self, PausedBy};

/// One formation as `show-formations` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormationRow {
    pub name: String,
    pub number_sync_standbys: u32,
    pub nodes: u32,
    pub paused: Option<PausedBy>,
}

impl Store {
    /// Create formation `name` with `number_sync_standbys`.
    pub async fn create_formation(&self, name: &str, number_sync_standbys: u32) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            // Serialises creations of one name with each other.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pgpilot formation ' || $1))")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM formation WHERE name = $1)")
                    .bind(name)
                    .fetch_one(&mut *tx)
                    .await?;
            let message = formations::create(name, exists, number_sync_standbys)?;
            sqlx::query("INSERT INTO formation (name, number_sync_standbys) VALUES ($1, $2)")
                .bind(name)
                .bind(number_sync_standbys as i32)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(message)
        })
        .await
    }

    /// Drop formation `name`, which must be empty.
    pub async fn drop_formation(&self, name: &str) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let found: Option<String> =
                sqlx::query_scalar("SELECT name FROM formation WHERE name = $1 FOR UPDATE")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            if found.is_none() {
                return Err(super::no_formation(name));
            }
            // The formation row is locked: a registration into it waits.
            let nodes: Vec<String> =
                sqlx::query_scalar("SELECT name FROM node WHERE formation = $1 ORDER BY node_id")
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await?;
            let message = formations::drop(name, &nodes)?;
            sqlx::query("DELETE FROM formation WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(message)
        })
        .await
    }

    /// Every formation, by name, with its node count.
    pub async fn list_formations(&self) -> Result<Vec<FormationRow>> {
        type Row = (String, i32, i64, Option<String>, Option<DateTime<Utc>>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT f.name, f.number_sync_standbys, count(n.node_id), f.paused_by, f.paused_at
               FROM formation f LEFT JOIN node n ON n.formation = f.name
              GROUP BY f.name
              ORDER BY f.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, nss, nodes, by, at)| FormationRow {
                name,
                number_sync_standbys: nss.max(0) as u32,
                nodes: nodes.max(0) as u32,
                paused: paused_by(by, at),
            })
            .collect())
    }

    /// Who paused `formation` and since when; `None` when it is not paused.
    pub async fn paused(&self, formation: &str) -> Result<Option<PausedBy>> {
        let row: Option<(Option<String>, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT paused_by, paused_at FROM formation WHERE name = $1")
                .bind(formation)
                .fetch_optional(&self.pool)
                .await?;
        let (by, at) = row.ok_or_else(|| no_formation(formation))?;
        Ok(paused_by(by, at))
    }

    /// Pause (`pause`) or resume `formation` at the request of `operator`:
    /// store it, and record the event on each group's primary.
    pub async fn set_paused(&self, formation: &str, pause: bool, operator: &str) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            // The formation row: a registration into it, and another pause
            // or resume, wait for this one.
            let row: Option<(Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT paused_by, paused_at FROM formation WHERE name = $1 FOR UPDATE",
            )
            .bind(formation)
            .fetch_optional(&mut *tx)
            .await?;
            let (by, at) = row.ok_or_else(|| no_formation(formation))?;
            let current = paused_by(by, at);
            let change = if pause {
                pause::pause(formation, current.as_ref(), operator)?
            } else {
                pause::resume(formation, current.as_ref(), operator)?
            };
            sqlx::query(
                "UPDATE formation
                    SET paused_by = CASE WHEN $2 THEN $3 END,
                        paused_at = CASE WHEN $2 THEN clock_timestamp() END
                  WHERE name = $1",
            )
            .bind(formation)
            .bind(pause)
            .bind(operator)
            .execute(&mut *tx)
            .await?;
            let kind = if pause { pause::PAUSED } else { pause::RESUMED };
            formation_event(&mut tx, formation, kind, &change.event).await?;
            tx.commit().await?;
            Ok(change.message.clone())
        })
        .await
    }
}

/// The stored pause columns as [`PausedBy`].
fn paused_by(by: Option<String>, at: Option<DateTime<Utc>>) -> Option<PausedBy> {
    by.map(|by| PausedBy {
        by,
        since: at
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_default(),
    })
}

/// Record an event of the whole formation on each group's primary (its
/// lowest node when none), and tell the listeners; the formation's nodes.
pub(super) async fn formation_event(
    tx: &mut Tx<'_>,
    formation: &str,
    kind: &str,
    text: &str,
) -> Result<Vec<StoredNode>> {
    let stored: Vec<StoredNode> = rows::nodes(
        sqlx::query_as("SELECT * FROM node WHERE formation = $1 ORDER BY group_id, node_id")
            .bind(formation)
            .fetch_all(&mut **tx)
            .await?,
    )?;
    let pairs: Vec<(i32, &crate::fsm::NodeSnapshot)> =
        stored.iter().map(|n| (n.group_id, &n.snap)).collect();
    for i in pause::event_nodes(&pairs) {
        let n = &stored[i];
        let goal: S = n.snap.goal;
        insert_event(tx, n, goal, goal, kind, text).await?;
    }
    sqlx::query("SELECT pg_notify('pgpilot_events', $1)")
        .bind(formation)
        .execute(&mut **tx)
        .await?;
    Ok(stored)
}
