//! The SQL shell of `set-parameter` / `reset-parameter` and of the
//! parameters a keeper is sent: the setting read from the monitor
//! database's `pg_settings`, checked by the core
//! (`crate::core::parameters`), stored, the version raised, an event on
//! each group's primary, the keepers woken.

use super::formations::formation_event;
use super::{no_formation, retry, wakes, Result, Store, Tx};
use crate::core::parameters::{self, Setting};
use crate::names::quote;

/// A `pg_settings` row.
#[derive(Debug, sqlx::FromRow)]
struct SettingRow {
    name: String,
    vartype: String,
    unit: Option<String>,
    min_val: Option<String>,
    max_val: Option<String>,
    enumvals: Option<Vec<String>>,
    context: String,
}

impl Store {
    /// Set `name` to `value` for every node of `formation` (`None`: reset
    /// it) at the request of `operator`. The answer to the operator.
    pub async fn set_parameter(
        &self,
        formation: &str,
        name: &str,
        value: Option<&str>,
        operator: &str,
    ) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            lock_formation(&mut tx, formation).await?;
            super::slots::check_parameter(&mut tx, formation, name, value).await?;
            let (event, kind, message) = match value {
                Some(value) => {
                    let row: Option<SettingRow> = sqlx::query_as(
                        "SELECT name, vartype, unit, min_val, max_val, enumvals, context
                           FROM pg_settings WHERE lower(name) = lower($1)",
                    )
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let server: String = sqlx::query_scalar("SHOW server_version")
                        .fetch_one(&mut *tx)
                        .await?;
                    let setting = row.map(|r| Setting {
                        name: r.name,
                        vartype: r.vartype,
                        unit: r.unit,
                        min: r.min_val,
                        max: r.max_val,
                        enumvals: r.enumvals.unwrap_or_default(),
                        context: r.context.clone(),
                    });
                    let value = parameters::check(name, value, setting.as_ref(), &server)?;
                    // As pg_settings spells it: one row per setting.
                    let name = setting.as_ref().map_or(name, |s| s.name.as_str());
                    sqlx::query(
                        "INSERT INTO formation_parameter (formation, name, value) VALUES ($1, $2, $3)
                         ON CONFLICT (formation, name) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .bind(formation)
                    .bind(name)
                    .bind(&value)
                    .execute(&mut *tx)
                    .await?;
                    let restart = setting
                        .as_ref()
                        .is_some_and(|s| s.context == "postmaster");
                    let applies = if restart {
                        "it needs a restart: the nodes show it pending, then run restart --all --pending-only"
                    } else {
                        "the keepers write it into pgpilot.conf and reload"
                    };
                    (
                        // A text value may be long: the answer and the event
                        // show its start (show-parameters shows it all).
                        format!("parameter {name} = {} set by {operator}", quote(&value)),
                        parameters::SET,
                        format!(
                            "{name} = {} set for formation {formation}: {applies}",
                            quote(&value)
                        ),
                    )
                }
                None => {
                    let set: Vec<String> = sqlx::query_scalar(
                        "SELECT name FROM formation_parameter WHERE formation = $1 ORDER BY name",
                    )
                    .bind(formation)
                    .fetch_all(&mut *tx)
                    .await?;
                    let name = parameters::check_reset(formation, name, &set)?;
                    sqlx::query(
                        "DELETE FROM formation_parameter WHERE formation = $1 AND name = $2",
                    )
                    .bind(formation)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                    (
                        format!("parameter {name} reset by {operator}"),
                        parameters::RESET,
                        format!(
                            "{name} reset for formation {formation}: the keepers remove it from pgpilot.conf and reload (a setting that needs a restart shows pending)"
                        ),
                    )
                }
            };
            new_version(&mut tx, formation, kind, &event).await?;
            tx.commit().await?;
            Ok(message.clone())
        })
        .await
    }

    /// Have every node of `formation` reload its configuration: a new
    /// parameters version (the keepers reload when they apply one).
    pub async fn reload_formation(&self, formation: &str, operator: &str) -> Result<String> {
        retry(|| async {
            let mut tx = self.pool.begin().await?;
            lock_formation(&mut tx, formation).await?;
            let event = format!("configuration reload asked by {operator}");
            new_version(&mut tx, formation, parameters::RELOAD, &event).await?;
            tx.commit().await?;
            Ok(format!(
                "every node of formation {formation} reloads its PostgreSQL configuration"
            ))
        })
        .await
    }

    /// The parameters of `formation` and their version (one statement:
    /// one snapshot).
    pub async fn parameters(&self, formation: &str) -> Result<(u64, Vec<(String, String)>)> {
        let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT f.parameters_version, p.name, p.value
               FROM formation f LEFT JOIN formation_parameter p ON p.formation = f.name
              WHERE f.name = $1 ORDER BY p.name",
        )
        .bind(formation)
        .fetch_all(&self.pool)
        .await?;
        let version = rows
            .first()
            .map(|r| r.0.max(0) as u64)
            .ok_or_else(|| no_formation(formation))?;
        let set = rows
            .into_iter()
            .filter_map(|(_, name, value)| Some((name?, value?)))
            .collect();
        Ok((version, set))
    }
}

/// Lock `formation`'s row (other changes of its parameters wait), or
/// say it does not exist.
async fn lock_formation(tx: &mut Tx<'_>, formation: &str) -> Result<()> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT parameters_version FROM formation WHERE name = $1 FOR UPDATE")
            .bind(formation)
            .fetch_optional(&mut **tx)
            .await?;
    found.map(|_| ()).ok_or_else(|| no_formation(formation))
}

/// Raise `formation`'s parameters version, record the event and wake
/// its keepers.
async fn new_version(tx: &mut Tx<'_>, formation: &str, kind: &str, event: &str) -> Result<()> {
    sqlx::query("UPDATE formation SET parameters_version = parameters_version + 1 WHERE name = $1")
        .bind(formation)
        .execute(&mut **tx)
        .await?;
    let stored = formation_event(tx, formation, kind, event).await?;
    wakes::notify(tx, &stored).await?;
    Ok(())
}
