//! A synchronous standby of the monitor database, and its failover: the
//! monitors reach their database through a multi-host URL naming both
//! servers, as they would on an HA PostgreSQL managed by someone else.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::process::free_port;

use super::{run_checked, with_suffix, Cluster};

/// The monitor database's standby.
pub(super) struct MonitorDbStandby {
    pub(super) pgdata: PathBuf,
    pub(super) port: u16,
}

impl Cluster {
    /// Clone the monitor database into a streaming standby on a new port
    /// and make it synchronous (`synchronous_standby_names = '*'`): every
    /// commit the monitors make is on both servers before it is answered.
    pub(super) async fn add_monitor_db_standby(&mut self) -> Result<()> {
        let dir = self.root.join("monitor-db2");
        self.tools.make_dir(&dir)?;
        let pgdata = dir.join("data");
        let mut basebackup = self
            .tools
            .command_as_pg_user(self.tools.pg_program("pg_basebackup"), &dir);
        basebackup
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ])
            .arg("-p")
            .arg(self.monitor_db_port.to_string())
            .arg("-D")
            .arg(&pgdata)
            .stdin(Stdio::null());
        run_checked(basebackup, "pg_basebackup of the monitor database").await?;
        let port = free_port()?;
        self.pg_ctl_start_postgres(&pgdata, &dir, port, "the monitor database's standby")
            .await?;
        self.monitor_db_standby = Some(MonitorDbStandby { pgdata, port });
        self.monitor_db_sql(&[
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ])
        .await
    }

    /// Run `sql` in the monitors' database (`pgpilot`, as postgres).
    pub async fn psql_monitor_db(&self, sql: &str) -> Result<()> {
        self.monitor_db_execute("pgpilot", &[sql]).await
    }

    /// Run each statement on the monitor database server (as postgres,
    /// database postgres), each in its own transaction.
    pub(super) async fn monitor_db_sql(&self, statements: &[&str]) -> Result<()> {
        self.monitor_db_execute("postgres", statements).await
    }

    async fn monitor_db_execute(&self, dbname: &str, statements: &[&str]) -> Result<()> {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname={dbname} connect_timeout=10",
                self.monitor_db_port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .context("connecting to the monitor database")?;
        let connection = tokio::spawn(connection);
        for &sql in statements {
            client.batch_execute(sql).await.with_context(|| {
                // The statement may hold a password: name its start only.
                let start: String = sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
                format!("{start} … on the monitor database")
            })?;
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// The monitors' database URL: one host, or both servers with
    /// `target_session_attrs=read-write` when there is a standby.
    pub(super) fn monitors_database_url(&self) -> String {
        let user = match &self.monitor_db_password {
            Some(password) => format!("pgpilot:{password}"),
            None => "postgres".to_string(),
        };
        match &self.monitor_db_standby {
            None => format!("postgres://{user}@127.0.0.1:{}/pgpilot", self.monitor_db_port),
            Some(standby) => format!(
                "postgres://{user}@127.0.0.1:{},127.0.0.1:{}/pgpilot?target_session_attrs=read-write",
                self.monitor_db_port, standby.port
            ),
        }
    }

    /// The monitor database fails over: its primary stops at once
    /// (`pg_ctl stop -m immediate`, like a crash) and the synchronous
    /// standby is promoted, as the database's own HA manager would do.
    /// Returns when the new primary takes writes; when the old one stopped.
    pub async fn fail_over_monitor_db(&self) -> Result<Instant> {
        let Some(standby) = &self.monitor_db_standby else {
            bail!("the cluster has no monitor database standby: start it with monitor_db_standby");
        };
        self.pg_ctl_stop(
            &self.monitor_db_pgdata,
            "immediate",
            "pg_ctl stop -m immediate of the monitor database",
        )
        .await?;
        let stopped_at = Instant::now();
        let mut promote = self
            .tools
            .command_as_pg_user(self.tools.pg_program("pg_ctl"), &self.root);
        promote
            .arg("promote")
            .arg("-D")
            .arg(&standby.pgdata)
            .args(["-w", "-t", "60"])
            .stdin(Stdio::null());
        run_checked(promote, "pg_ctl promote of the monitor database's standby").await?;
        for m in &self.monitors {
            self.mark_log(&m.log, "monitor database failed over to its standby");
        }
        Ok(stopped_at)
    }

    /// PGDATA of the standby, when there is one.
    pub(super) fn monitor_db_standby_pgdata(&self) -> Option<PathBuf> {
        self.monitor_db_standby.as_ref().map(|s| s.pgdata.clone())
    }

    /// PostgreSQL's log of the standby, when there is one.
    pub(super) fn monitor_db_standby_log(&self) -> Option<PathBuf> {
        self.monitor_db_standby
            .as_ref()
            .map(|s| with_suffix(&s.pgdata, ".log"))
    }
}
