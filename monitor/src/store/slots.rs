//! The SQL shell of permanent slots: `create-slot` and `drop-slot` checked
//! by the core (`crate::core::slots`) under the formation's row lock, an
//! event on each group's primary and the keepers woken; each keeper's
//! report kept in its node's row, and a standby sent the report of the
//! node it follows.

use std::collections::BTreeMap;

use super::formations::formation_event;
use super::{no_formation, retry, wakes, Error, Result, Store, Tx};
use crate::core::slots::{self, Declared, Position};

impl Store {
    /// Declare `slot` on `formation` at the request of `operator`. The
    /// answer to the operator.
    pub async fn create_slot(
        &self,
        formation: &str,
        slot: &Declared,
        operator: &str,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let existing = lock_slots(&mut tx, formation).await?;
            let parameters: Vec<(String, String)> =
                sqlx::query_as("SELECT name, value FROM formation_parameter WHERE formation = $1")
                    .bind(formation)
                    .fetch_all(&mut *tx)
                    .await?;
            let slot = slots::check_create(formation, slot.clone(), &existing, &parameters)?;
            let mut all = existing;
            all.push(slot.clone());
            store_slots(&mut tx, formation, &all).await?;
            let text = format!(
                "{} declared by {operator}: each primary creates it, its standbys keep copies",
                slot.describe()
            );
            let stored = formation_event(&mut tx, formation, slots::CREATED, &text).await?;
            wakes::notify(&mut tx, &stored).await?;
            tx.commit().await?;
            Ok(format!(
                "{} declared on formation {formation}: show-slots shows where each node holds it",
                slot.describe()
            ))
        })
        .await
    }

    /// Remove the permanent slot `name` of `formation` (every keeper drops
    /// its copy). The answer to the operator.
    pub async fn drop_slot(&self, formation: &str, name: &str, operator: &str) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            let existing = lock_slots(&mut tx, formation).await?;
            let (dropped, rest) = slots::check_drop(formation, name, &existing)?;
            store_slots(&mut tx, formation, &rest).await?;
            let text = format!(
                "{} removed by {operator}: every node drops it (a consumer still connected keeps it until it disconnects)",
                dropped.describe()
            );
            let stored = formation_event(&mut tx, formation, slots::DROPPED, &text).await?;
            wakes::notify(&mut tx, &stored).await?;
            tx.commit().await?;
            Ok(format!(
                "{} removed from formation {formation}: every node drops it",
                dropped.describe()
            ))
        })
        .await
    }

    /// Keep node `node_id`'s `report` (when it sent one), and return what
    /// its reply carries: the formation's slots and where `upstream` (the
    /// node it follows) holds them. One round trip; the caller comes here
    /// only when the formation declares slots or the keeper reported some.
    pub async fn slot_exchange(
        &self,
        node_id: i64,
        report: Option<&[Position]>,
        formation: &str,
        upstream: Option<i64>,
    ) -> Result<(Vec<Declared>, Vec<Position>)> {
        let report = report.map(to_json).transpose()?;
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "WITH kept AS (
                 UPDATE node SET slots = $2::jsonb WHERE node_id = $1 AND $2 IS NOT NULL
             )
             SELECT f.permanent_slots::text, (SELECT slots::text FROM node WHERE node_id = $4)
               FROM formation f WHERE f.name = $3",
        )
        .bind(node_id)
        .bind(report)
        .bind(formation)
        .bind(upstream.unwrap_or(0))
        .fetch_optional(&self.pool)
        .await?;
        let (declared, held) = row.ok_or_else(|| no_formation(formation))?;
        Ok((
            from_json(&declared)?,
            held.as_deref()
                .map(from_json)
                .transpose()?
                .unwrap_or_default(),
        ))
    }

    /// The permanent slots of `formation` and where each node (by id)
    /// last reported holding them (for show-state and show-slots).
    pub async fn slot_positions(
        &self,
        formation: &str,
    ) -> Result<(Vec<Declared>, BTreeMap<i64, Vec<Position>>)> {
        let declared: Option<String> =
            sqlx::query_scalar("SELECT permanent_slots::text FROM formation WHERE name = $1")
                .bind(formation)
                .fetch_optional(&self.pool)
                .await?;
        let declared = from_json(&declared.ok_or_else(|| no_formation(formation))?)?;
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT node_id, slots::text FROM node WHERE formation = $1 AND slots IS NOT NULL",
        )
        .bind(formation)
        .fetch_all(&self.pool)
        .await?;
        let mut held = BTreeMap::new();
        for (id, value) in rows {
            held.insert(id, from_json(&value)?);
        }
        Ok((declared, held))
    }
}

/// Refuse a parameter change the formation's slots could not live with
/// (called by set-parameter / reset-parameter under the same lock).
pub(super) async fn check_parameter(
    tx: &mut Tx<'_>,
    formation: &str,
    name: &str,
    value: Option<&str>,
) -> Result<()> {
    let declared: Option<String> =
        sqlx::query_scalar("SELECT permanent_slots::text FROM formation WHERE name = $1")
            .bind(formation)
            .fetch_optional(&mut **tx)
            .await?;
    let declared: Vec<Declared> = from_json(&declared.ok_or_else(|| no_formation(formation))?)?;
    slots::check_parameter(formation, name, value, &declared)?;
    Ok(())
}

/// Lock `formation`'s row and read its slots, or say it does not exist.
async fn lock_slots(tx: &mut Tx<'_>, formation: &str) -> Result<Vec<Declared>> {
    let found: Option<String> = sqlx::query_scalar(
        "SELECT permanent_slots::text FROM formation WHERE name = $1 FOR UPDATE",
    )
    .bind(formation)
    .fetch_optional(&mut **tx)
    .await?;
    from_json(&found.ok_or_else(|| no_formation(formation))?)
}

async fn store_slots(tx: &mut Tx<'_>, formation: &str, all: &[Declared]) -> Result<()> {
    sqlx::query("UPDATE formation SET permanent_slots = $2::jsonb WHERE name = $1")
        .bind(formation)
        .bind(to_json(all)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(format!("slots as JSON: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("stored permanent slots: {e}")))
}
