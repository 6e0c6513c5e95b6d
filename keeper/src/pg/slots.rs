//! The SQL and files of permanent slots (see [`crate::slots`] for what is
//! done and why): the slots the server holds, the facts the plan reads,
//! and each step carried out. A logical slot is created and moved from a
//! connection to its own database; a standby's copy is written as
//! `pg_replslot/<name>/state`, through a `.tmp` directory PostgreSQL
//! removes at start if the keeper dies half-way.

use std::path::PathBuf;
use std::time::Duration;

use pgpilot_proto::lsn::{format_lsn, parse_lsn};
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};
use tracing::info;

use super::connection::{CONNECT_TIMEOUT, QUERY_TIMEOUT};
use super::{io_error, set_mode_0700, PgController, PgError, SLOT_PREFIX};
use crate::durable;
use crate::slots::{Facts, Local, Step};

/// Creating a logical slot waits for the transactions running on the
/// primary to end; past this the attempt is given up and made again on
/// the next loop (the report says why).
const CREATE_LOGICAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Row of pg_replication_slots as read here.
type SlotRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl PgController {
    /// The facts the plan reads and the slots the server holds (the
    /// keeper's own `pgpilot_` slots left out).
    pub(super) async fn slot_facts(&self) -> Result<(Facts, Vec<Local>), PgError> {
        let (standby, level, oldest, segment): (bool, String, Option<String>, i64) = self
            .fetch_one(
                "SELECT pg_is_in_recovery(), current_setting('wal_level'),
                        (SELECT min(name) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'),
                        pg_size_bytes(current_setting('wal_segment_size'))",
                &[],
            )
            .await?;
        let rows: Vec<SlotRow> = self
            .fetch_all(
                "SELECT slot_name::text, slot_type, plugin::text, database::text, active,
                        restart_lsn::text, confirmed_flush_lsn::text, catalog_xmin::text
                   FROM pg_replication_slots WHERE NOT temporary ORDER BY 1",
                &[],
                QUERY_TIMEOUT,
            )
            .await?;
        let segment_size = segment.max(0) as u64;
        let facts = Facts {
            standby,
            wal_level_logical: level == "logical",
            oldest_segment: oldest.and_then(|name| segment_number(&name, segment_size)),
            segment_size,
        };
        let lsn = |v: &Option<String>| v.as_deref().and_then(parse_lsn).unwrap_or(0);
        let local = rows
            .into_iter()
            .filter(|r| !r.0.starts_with(SLOT_PREFIX))
            .map(|r| Local {
                logical: r.1 == "logical",
                plugin: r.2.clone().unwrap_or_default(),
                database: r.3.clone().unwrap_or_default(),
                active: r.4,
                restart_lsn: lsn(&r.5),
                confirmed_flush_lsn: lsn(&r.6),
                catalog_xmin: r.7.as_deref().and_then(|x| x.parse().ok()).unwrap_or(0),
                name: r.0,
            })
            .collect();
        Ok((facts, local))
    }

    /// Carry out one step of the plan.
    pub(super) async fn slot_step(&self, step: &Step) -> Result<(), PgError> {
        match step {
            Step::CreatePhysical { name } => {
                self.fetch_all::<(String,)>(
                    "SELECT slot_name::text FROM pg_create_physical_replication_slot($1::text::name, true)",
                    &[name],
                    QUERY_TIMEOUT,
                )
                .await?;
                info!(slot = %name, "postgres: created permanent physical slot");
            }
            Step::CreateLogical {
                name,
                plugin,
                database,
            } => {
                let mut conn = self.connect_to(database).await?;
                let created = sqlx::query(
                    "SELECT pg_create_logical_replication_slot($1::text::name, $2::text::name)",
                )
                .bind(name)
                .bind(plugin)
                .execute(&mut conn);
                tokio::time::timeout(CREATE_LOGICAL_TIMEOUT, created)
                    .await
                    .map_err(|_| PgError::Timeout {
                        program: format!("creating logical slot {name} (it waits for the transactions running now to end)"),
                        timeout: CREATE_LOGICAL_TIMEOUT,
                    })??;
                info!(slot = %name, %plugin, %database, "postgres: created permanent logical slot");
            }
            Step::Copy { name, state } => {
                self.write_slot_copy(name, state)?;
                info!(slot = %name, "postgres: wrote a copy of the upstream's logical slot (read at the next start)");
            }
            Step::Advance { name, database, to } => {
                let target = format_lsn(*to);
                // Never past our replay, never backwards (an error).
                let sql = "SELECT CASE
                     WHEN least($2::text::pg_lsn, pg_last_wal_replay_lsn())
                          > coalesce(s.confirmed_flush_lsn, s.restart_lsn, '0/0')
                     THEN pg_replication_slot_advance($1::text::name,
                            least($2::text::pg_lsn, pg_last_wal_replay_lsn())) IS NOT NULL
                     ELSE false END
                   FROM pg_replication_slots s WHERE s.slot_name = $1::text::name";
                match database {
                    None => {
                        self.fetch_all::<(bool,)>(sql, &[name, &target], QUERY_TIMEOUT)
                            .await?;
                    }
                    Some(db) => {
                        let mut conn = self.connect_to(db).await?;
                        let moved = sqlx::query(sql).bind(name).bind(&target).execute(&mut conn);
                        tokio::time::timeout(QUERY_TIMEOUT, moved)
                            .await
                            .map_err(|_| PgError::Timeout {
                                program: format!("moving slot {name} forward"),
                                timeout: QUERY_TIMEOUT,
                            })??;
                    }
                }
            }
            Step::Drop { name } => {
                self.fetch_all::<(bool,)>(
                    "SELECT true FROM pg_drop_replication_slot($1::text::name)",
                    &[name],
                    QUERY_TIMEOUT,
                )
                .await?;
                info!(slot = %name, "postgres: dropped permanent slot");
            }
        }
        Ok(())
    }

    /// The slot's state file as PostgreSQL last wrote it (`None` when
    /// unreadable).
    pub(super) fn slot_state(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.replslot_dir().join(name).join("state")).ok()
    }

    fn replslot_dir(&self) -> PathBuf {
        self.settings.pgdata.join("pg_replslot")
    }

    /// Write `state` as slot `name` (through `<name>.tmp`, renamed).
    fn write_slot_copy(&self, name: &str, state: &[u8]) -> Result<(), PgError> {
        let dir = self.replslot_dir();
        let tmp = dir.join(format!("{name}.tmp"));
        let done = dir.join(name);
        super::remove_dir_all_if_exists(&tmp)?;
        super::remove_dir_all_if_exists(&done)?;
        std::fs::create_dir(&tmp).map_err(|e| io_error(&tmp, e))?;
        set_mode_0700(&tmp)?;
        let file = tmp.join("state");
        durable::write_atomic(&file, state).map_err(|e| PgError::Other(e.to_string()))?;
        durable::fsync_dir(&tmp).map_err(|e| PgError::Other(e.to_string()))?;
        std::fs::rename(&tmp, &done).map_err(|e| io_error(&done, e))?;
        durable::fsync_dir(&dir).map_err(|e| PgError::Other(e.to_string()))?;
        Ok(())
    }

    /// A connection to `database` over the local socket (logical slots
    /// are created and moved from their own database).
    async fn connect_to(&self, database: &str) -> Result<PgConnection, PgError> {
        let options = PgConnectOptions::new()
            .socket(&self.settings.socket_dir)
            .port(self.settings.port)
            .username(&self.settings.superuser)
            .database(database)
            .application_name("pgpilot-keeper")
            .ssl_mode(PgSslMode::Disable);
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(PgError::Timeout {
                program: format!("connecting to database {database}"),
                timeout: CONNECT_TIMEOUT,
            }),
        }
    }
}

/// The segment number of WAL file `name` (TTTTTTTTXXXXXXXXYYYYYYYY).
fn segment_number(name: &str, segment_size: u64) -> Option<u64> {
    if name.len() != 24 || segment_size == 0 {
        return None;
    }
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some(log * (0x1_0000_0000 / segment_size) + seg)
}

#[cfg(test)]
mod tests {
    use super::segment_number;

    #[test]
    fn wal_file_names_give_their_segment_number() {
        let size = 16 << 20;
        assert_eq!(segment_number("000000010000000000000003", size), Some(3));
        assert_eq!(
            segment_number("000000020000000100000002", size),
            Some(256 + 2)
        );
        assert_eq!(segment_number("00000001", size), None);
        // The segment holding an LSN is lsn / size.
        let lsn = 0x1_0200_0010u64;
        assert_eq!(lsn / size, 256 + 2);
    }
}
