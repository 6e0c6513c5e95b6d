//! The facts of the divergence check (see [`crate::timeline`]): where this
//! node's WAL ends, and the upstream's timeline history, read over an
//! ordinary connection as the replication role — the same role, password
//! file and TLS as pg_rewind, which reads the same history file with the
//! same granted function (`pg_read_binary_file`).

use std::time::Duration;

use pgpilot_proto::lsn::parse_lsn;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;

use super::connection::QUERY_TIMEOUT;
use super::lifecycle::{controldata_field, missing_controldata_field};
use super::{PgController, PgError, Upstream};
use crate::timeline::{parse_history, TimelineHistory, WalPosition};

/// How long connecting to the upstream may take.
pub(super) const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A running standby: whether it streams, the furthest LSN it holds, and
/// the latest timeline it knows it is on — the greatest of its last
/// restartpoint's, its minimum recovery point's and its WAL receiver's, as
/// pg_rewind takes the greatest of the first two.
const POSITION_SQL: &str = "\
SELECT pg_is_in_recovery(),
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'),
       CASE WHEN pg_is_in_recovery()
            THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text END,
       greatest((SELECT timeline_id FROM pg_control_checkpoint()),
                (SELECT min_recovery_end_timeline FROM pg_control_recovery()),
                (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1))::bigint";

/// The upstream's current timeline (hexadecimal, as in WAL file names) and
/// its history file. `pg_walfile_name` fails on a server in recovery: only
/// a writable primary's history is ever followed.
const HISTORY_SQL: &str = "\
SELECT w.tli,
       CASE WHEN w.tli <> '00000001'
            THEN pg_read_binary_file('pg_wal/' || w.tli || '.history') END
  FROM (SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS tli) AS w";

const CONTROLDATA_CHECKPOINT: &str = "Latest checkpoint location";
const CONTROLDATA_CHECKPOINT_TLI: &str = "Latest checkpoint's TimeLineID";
const CONTROLDATA_MIN_RECOVERY: &str = "Minimum recovery ending location";
const CONTROLDATA_MIN_RECOVERY_TLI: &str = "Min recovery ending loc's timeline";

impl PgController {
    /// A connection to `upstream`'s `postgres` database as the replication
    /// role (password and TLS as configured).
    pub(super) async fn connect_upstream(
        &self,
        upstream: &Upstream,
    ) -> Result<PgConnection, PgError> {
        let mut options = PgConnectOptions::new()
            .host(&upstream.host)
            .port(upstream.port)
            .username(&self.settings.replication_user)
            .database("postgres")
            .application_name("pgpilot-keeper");
        if let Some(password) = self.replication_password()? {
            options = options.password(password.expose());
        }
        if let Some(tls) = &self.settings.postgres_tls {
            options = options
                .ssl_mode(sqlx::postgres::PgSslMode::VerifyFull)
                .ssl_root_cert(&tls.ca_file);
        }
        match tokio::time::timeout(
            UPSTREAM_CONNECT_TIMEOUT,
            PgConnection::connect_with(&options),
        )
        .await
        {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(PgError::Timeout {
                program: format!("connecting to {}:{}", upstream.host, upstream.port),
                timeout: UPSTREAM_CONNECT_TIMEOUT,
            }),
        }
    }

    /// See [`LocalPostgres::wal_position`](super::LocalPostgres::wal_position).
    pub(super) async fn wal_position(&self) -> Result<Option<WalPosition>, PgError> {
        if !self.has_data_directory() {
            return Ok(None);
        }
        if self.postmaster_running() {
            let (in_recovery, streaming, lsn, timeline): (bool, bool, Option<String>, Option<i64>) =
                self.fetch_one(POSITION_SQL, &[]).await?;
            if !in_recovery || streaming {
                return Ok(None);
            }
            return Ok(Some(WalPosition {
                timeline: timeline.and_then(|t| u32::try_from(t).ok()).unwrap_or(0),
                lsn: lsn.as_deref().and_then(parse_lsn).unwrap_or(0),
            }));
        }
        // Stopped: what pg_rewind itself reads (the control file).
        position_from_controldata(&self.controldata().await?).map(Some)
    }

    /// One row of `sql` (with at most one text parameter) on `upstream`,
    /// over a connection of its own; `what` names it in a timeout.
    pub(super) async fn upstream_row<T>(
        &self,
        upstream: &Upstream,
        what: &str,
        sql: &'static str,
        parameter: Option<&str>,
    ) -> Result<T, PgError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut conn = self.connect_upstream(upstream).await?;
        let mut query = sqlx::query_as::<_, T>(sql);
        if let Some(p) = parameter {
            query = query.bind(p.to_string());
        }
        let row = tokio::time::timeout(QUERY_TIMEOUT, query.fetch_one(&mut conn)).await;
        let _ = conn.close().await;
        match row {
            Ok(row) => Ok(row?),
            Err(_) => Err(PgError::Timeout {
                program: format!("{what} {}:{}", upstream.host, upstream.port),
                timeout: QUERY_TIMEOUT,
            }),
        }
    }

    /// See [`LocalPostgres::upstream_history`](super::LocalPostgres::upstream_history).
    pub(super) async fn upstream_history(
        &self,
        upstream: &Upstream,
    ) -> Result<TimelineHistory, PgError> {
        let (tli, history): (String, Option<Vec<u8>>) = self
            .upstream_row(
                upstream,
                "reading the timeline history of",
                HISTORY_SQL,
                None,
            )
            .await?;
        let current = u32::from_str_radix(&tli, 16).map_err(|_| {
            PgError::Other(format!(
                "the upstream's timeline {tli:?} is not hexadecimal"
            ))
        })?;
        let switches = match history {
            Some(bytes) => {
                parse_history(&String::from_utf8_lossy(&bytes)).map_err(PgError::Other)?
            }
            None => Vec::new(),
        };
        Ok(TimelineHistory { current, switches })
    }
}

/// A field of `pg_controldata` output, or why it is missing.
pub(super) fn controldata_value<'a>(output: &'a str, label: &str) -> Result<&'a str, PgError> {
    controldata_field(output, label).ok_or_else(|| missing_controldata_field(label))
}

/// An LSN field of `pg_controldata` output.
pub(super) fn controldata_lsn(output: &str, label: &str) -> Result<u64, PgError> {
    let value = controldata_value(output, label)?;
    parse_lsn(value)
        .ok_or_else(|| PgError::Other(format!("pg_controldata: {label}: {value:?} is no LSN")))
}

/// Where a stopped node's WAL ends, as its control file (and pg_rewind)
/// says: the later of the last checkpoint and the minimum recovery point.
pub(super) fn position_from_controldata(output: &str) -> Result<WalPosition, PgError> {
    let tli = |label: &str| -> Result<u32, PgError> {
        let value = controldata_value(output, label)?;
        value.parse().map_err(|_| {
            PgError::Other(format!("pg_controldata: {label}: {value:?} is no timeline"))
        })
    };
    Ok(WalPosition {
        timeline: tli(CONTROLDATA_CHECKPOINT_TLI)?.max(tli(CONTROLDATA_MIN_RECOVERY_TLI)?),
        lsn: controldata_lsn(output, CONTROLDATA_CHECKPOINT)?
            .max(controldata_lsn(output, CONTROLDATA_MIN_RECOVERY)?),
    })
}
