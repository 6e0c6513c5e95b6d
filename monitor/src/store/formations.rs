//! The SQL shell of the formation commands (`crate::core::formations`):
//! create, drop, list.

use super::{retry, Result, Store};
use crate::core::formations;

/// One formation as `show-formations` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormationRow {
    pub name: String,
    pub number_sync_standbys: u32,
    pub nodes: u32,
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
        let rows: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT f.name, f.number_sync_standbys, count(n.node_id)
               FROM formation f LEFT JOIN node n ON n.formation = f.name
              GROUP BY f.name, f.number_sync_standbys
              ORDER BY f.name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, nss, nodes)| FormationRow {
                name,
                number_sync_standbys: nss.max(0) as u32,
                nodes: nodes.max(0) as u32,
            })
            .collect())
    }
}
