//! The keeper's SQL to its local PostgreSQL: one cached connection over
//! the unix socket (opened on demand, dropped when broken or timed out),
//! the queries on it, and the observation of the running server.

use std::time::{Duration, Instant};

use pgpilot_proto::lsn::parse_lsn;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgSslMode};
use sqlx::{Connection, FromRow};
use tracing::debug;

use super::wal_timeline::newest_wal_timeline;
use super::{Observation, PgController, PgError};

/// Connecting over the local unix socket is immediate when the server is up.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Every keeper query is cheap; a slower answer means something is wrong.
pub(super) const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Row of the observation query; see [`OBSERVE_SQL`].
pub(super) type ObserveRow = (
    bool,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    bool,
    Vec<String>,
    Option<String>,
    String,
    Option<i64>,
    Option<i64>,
    Vec<String>,
);

/// Everything [`Observation`] holds, in one round trip. `in_recovery` is
/// evaluated once (the volatile sub-select is not flattened), and the CASEs
/// keep primary-only functions away from a standby and vice versa.
pub(super) const OBSERVE_SQL: &str = "\
SELECT r.in_recovery,
       (CASE WHEN r.in_recovery
             THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
             ELSE pg_current_wal_lsn() END)::text,
       CASE WHEN r.in_recovery THEN NULL
            ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
       CASE WHEN r.in_recovery
            THEN (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)::bigint END,
       (SELECT timeline_id FROM pg_control_checkpoint())::bigint,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'),
       ARRAY(SELECT application_name::text FROM pg_stat_replication
             WHERE state = 'streaming' ORDER BY 1),
       (SELECT system_identifier FROM pg_control_system())::text,
       current_setting('synchronous_standby_names'),
       pg_size_bytes(current_setting('wal_segment_size')),
       current_setting('wal_block_size')::bigint,
       ARRAY(SELECT name::text FROM pg_settings WHERE pending_restart ORDER BY 1)
  FROM (SELECT pg_is_in_recovery() AS in_recovery) AS r";

impl PgController {
    pub(super) async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }

    pub(super) async fn connect(&self) -> Result<PgConnection, PgError> {
        let options = PgConnectOptions::new()
            .socket(&self.settings.socket_dir)
            .port(self.settings.port)
            .username(&self.settings.superuser)
            .database("postgres")
            .application_name("pgpilot-keeper")
            .ssl_mode(PgSslMode::Disable);
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(PgError::Timeout {
                program: "connecting to PostgreSQL".to_string(),
                timeout: CONNECT_TIMEOUT,
            }),
        }
    }

    /// Run one query on the cached connection (opened on demand). A broken
    /// connection is dropped and the query retried once on a fresh one, so a
    /// server restart costs no failed observation.
    pub(super) async fn fetch_all<T>(
        &self,
        sql: &'static str,
        binds: &[&str],
        timeout: Duration,
    ) -> Result<Vec<T>, PgError>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let mut guard = self.conn.lock().await;
        let mut retried = false;
        loop {
            let conn = match guard.take() {
                Some(conn) => guard.insert(conn),
                None => guard.insert(self.connect().await?),
            };
            let mut query = sqlx::query_as::<_, T>(sql);
            for bind in binds {
                query = query.bind(bind.to_string());
            }
            match tokio::time::timeout(timeout, query.fetch_all(&mut *conn)).await {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(err)) => {
                    let broken = connection_broken(&err);
                    if broken {
                        *guard = None;
                    }
                    if broken && !retried {
                        retried = true;
                        debug!(error = %err, "postgres: connection lost, reconnecting");
                        continue;
                    }
                    return Err(err.into());
                }
                Err(_) => {
                    // The connection is mid-query: unusable.
                    *guard = None;
                    return Err(PgError::Timeout {
                        program: format!("query `{}`", first_line(sql)),
                        timeout,
                    });
                }
            }
        }
    }

    pub(super) async fn fetch_one<T>(&self, sql: &'static str, binds: &[&str]) -> Result<T, PgError>
    where
        T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        self.fetch_all(sql, binds, QUERY_TIMEOUT)
            .await?
            .into_iter()
            .next()
            .ok_or(PgError::Query(sqlx::Error::RowNotFound))
    }

    /// Run `sql` (several statements, no result) on the cached connection.
    pub(super) async fn execute_batch(&self, sql: &str) -> Result<(), PgError> {
        let mut guard = self.conn.lock().await;
        let conn = match guard.take() {
            Some(conn) => guard.insert(conn),
            None => guard.insert(self.connect().await?),
        };
        match tokio::time::timeout(
            QUERY_TIMEOUT,
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string())).execute(&mut *conn),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => {
                if connection_broken(&err) {
                    *guard = None;
                }
                Err(err.into())
            }
            Err(_) => {
                *guard = None;
                Err(PgError::Timeout {
                    program: "setting up the replication role".to_string(),
                    timeout: QUERY_TIMEOUT,
                })
            }
        }
    }

    pub(super) async fn in_recovery(&self) -> Result<bool, PgError> {
        let (in_recovery,): (bool,) = self.fetch_one("SELECT pg_is_in_recovery()", &[]).await?;
        Ok(in_recovery)
    }

    pub(super) async fn transaction_read_only(&self) -> Result<bool, PgError> {
        let (value,): (String,) = self
            .fetch_one("SELECT current_setting('transaction_read_only')", &[])
            .await?;
        Ok(value != "off")
    }

    /// Wait until the server accepts our connection, failing early when the
    /// postmaster is gone.
    pub(super) async fn wait_accepting(&self, deadline: Instant) -> Result<(), PgError> {
        loop {
            let err = match self.fetch_one::<(i32,)>("SELECT 1", &[]).await {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            if !self.postmaster_running() {
                return Err(PgError::Other(format!(
                    "PostgreSQL exited before accepting connections ({err})"
                )));
            }
            if Instant::now() >= deadline {
                return Err(PgError::Other(format!(
                    "PostgreSQL runs but did not accept connections in time: {err}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) async fn observe(&self) -> Observation {
        let row = match self.fetch_one::<ObserveRow>(OBSERVE_SQL, &[]).await {
            Ok(row) => row,
            Err(err) => {
                if self.postmaster_running() {
                    debug!(error = %err, "postgres: server not answering");
                }
                let system_identifier = match self.system_identifier().await {
                    Ok(id) => id.unwrap_or(0),
                    Err(_) => 0,
                };
                return Observation {
                    system_identifier,
                    ..Observation::default()
                };
            }
        };
        let (
            in_recovery,
            lsn,
            walfile_tli,
            received_tli,
            checkpoint_tli,
            streaming,
            standbys,
            sysid,
            sync_names,
            segment_size,
            page_size,
            pending_restart,
        ) = row;
        let lsn = lsn.as_deref().and_then(parse_lsn).unwrap_or(0);
        let timeline = if in_recovery {
            // Streaming: the receiver says it. Not streaming: the WAL
            // files do (the last restartpoint's timeline lags a switch).
            let streamed = received_tli.filter(|tli| *tli > 0 && streaming);
            let from_files = || {
                newest_wal_timeline(
                    &self.settings.pgdata.join("pg_wal"),
                    lsn,
                    segment_size.and_then(|s| u64::try_from(s).ok())?,
                    page_size.and_then(|s| u64::try_from(s).ok())?,
                )
                .map(i64::from)
            };
            streamed
                .or_else(from_files)
                .or(received_tli.filter(|tli| *tli > 0))
                .or(checkpoint_tli)
                .and_then(|tli| u32::try_from(tli).ok())
                .unwrap_or(0)
        } else {
            walfile_tli
                .and_then(|hex| u32::from_str_radix(&hex, 16).ok())
                .or_else(|| checkpoint_tli.and_then(|tli| u32::try_from(tli).ok()))
                .unwrap_or(0)
        };
        Observation {
            running: true,
            in_recovery,
            lsn,
            timeline,
            wal_receiver_streaming: streaming,
            streaming_standbys: standbys,
            // bigint as text: pg_controldata prints the same 64 bits unsigned.
            system_identifier: sysid
                .and_then(|s| s.parse::<i64>().ok())
                .map(|id| id as u64)
                .unwrap_or(0),
            synchronous_standby_names: Some(sync_names),
            work: None,
            pending_restart,
        }
    }
}

pub(super) fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or(sql).trim()
}

/// Whether a query error means the connection is unusable.
pub(super) fn connection_broken(err: &sqlx::Error) -> bool {
    match err {
        // admin_shutdown, crash_shutdown, cannot_connect_now; connection exceptions.
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        sqlx::Error::RowNotFound
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_) => false,
        _ => true,
    }
}
