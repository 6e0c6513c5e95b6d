//! Making this node a copy of an upstream: pg_basebackup into a directory
//! beside PGDATA, pg_rewind (with the checkpoint on the source and the
//! preparation of the target it needs), and killing what an earlier
//! keeper process left running of either.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tracing::{debug, info, warn};

use super::programs::{kill_programs_naming, os_args, run_watched};
use super::progress::{Watch, Work};
use super::render::conninfo_value;
use super::{
    io_error, prepare_tmp_dir, remove_dir_all_if_exists, remove_dir_if_exists, set_mode_0700,
    PgController, PgError, Rewound, Upstream, STANDBY_SIGNAL,
};
use crate::durable::{fsync_dir, fsync_parent, sibling_path};

/// Written by pg_basebackup; renamed to backup_label.old by the first start.
pub(super) const BACKUP_LABEL: &str = "backup_label";
/// How long programs left running by an earlier keeper process get to go
/// once SIGKILLed.
pub(super) const LEFTOVER_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The CHECKPOINT on the rewind source before pg_rewind (immediate, but it
/// writes every dirty buffer).
pub(super) const SOURCE_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(300);
/// libpq connect_timeout (seconds) for pg_basebackup and pg_rewind.
pub(super) const UPSTREAM_CONNECT_TIMEOUT_SECS: &str = "5";

impl PgController {
    /// The environment of pg_basebackup and pg_rewind: C messages, the
    /// upstream connect timeout, the password file when there is one (the
    /// password never goes on a command line), and TLS when configured.
    pub(super) fn upstream_env(&self) -> Result<Vec<(&'static str, String)>, PgError> {
        let mut env = vec![
            ("LC_ALL", "C".to_string()),
            (
                "PGCONNECT_TIMEOUT",
                UPSTREAM_CONNECT_TIMEOUT_SECS.to_string(),
            ),
        ];
        if self.settings.replication_password.is_some() {
            self.refresh_passfile()?;
            env.push((
                "PGPASSFILE",
                self.settings.passfile().to_string_lossy().into_owned(),
            ));
        }
        // pg_basebackup and pg_rewind: the upstream's certificate and name
        // checked, as primary_conninfo does.
        if let Some(tls) = &self.settings.postgres_tls {
            env.push(("PGSSLMODE", "verify-full".to_string()));
            env.push(("PGSSLROOTCERT", tls.ca_file.to_string_lossy().into_owned()));
        }
        Ok(env)
    }

    /// Kill what an earlier life of this keeper left running on this
    /// node's directories. A killed keeper's pg_basebackup and pg_rewind die
    /// with it (see `die_with_keeper`), but the WAL streamer that
    /// pg_basebackup forks (`-X stream`) does not: it goes on writing into
    /// `<pgdata>.clone-tmp/pg_wal` — also into the directory of the next
    /// clone, which uses the same path — and holds a replication connection
    /// to the primary. Called at start and before every clone or rewind.
    pub async fn kill_leftover_programs(&self) {
        let pgdata = &self.settings.pgdata;
        let clone_tmp = sibling_path(pgdata, ".clone-tmp");
        let mut target = OsString::from("--target-pgdata=");
        target.push(pgdata.as_os_str());
        for (program, arg) in [
            ("pg_basebackup", clone_tmp.as_os_str()),
            ("pg_rewind", target.as_os_str()),
        ] {
            let killed = kill_programs_naming(program, arg, LEFTOVER_KILL_TIMEOUT).await;
            if !killed.is_empty() {
                warn!(
                    program,
                    pids = ?killed,
                    "postgres: killed {program} left running by an earlier keeper process"
                );
            }
        }
    }

    /// `CHECKPOINT` on the rewind source. PostgreSQL 15's pg_rewind reads the
    /// source's timeline from the last checkpoint in its control file; right
    /// after a promotion, until the end-of-recovery checkpoint completes
    /// (a spread checkpoint: seconds), that still names the old timeline, and
    /// pg_rewind wrongly answers "source and target cluster are on the same
    /// timeline / no rewind required" (fixed in PostgreSQL 16).
    pub(super) async fn checkpoint_source(&self, upstream: &Upstream) -> Result<(), PgError> {
        let mut conn = self.connect_upstream(upstream).await?;
        let started = Instant::now();
        match tokio::time::timeout(
            SOURCE_CHECKPOINT_TIMEOUT,
            sqlx::raw_sql("CHECKPOINT").execute(&mut conn),
        )
        .await
        {
            Ok(result) => {
                result?;
            }
            Err(_) => {
                return Err(PgError::Timeout {
                    program: format!("CHECKPOINT on {}:{}", upstream.host, upstream.port),
                    timeout: SOURCE_CHECKPOINT_TIMEOUT,
                })
            }
        }
        debug!(elapsed = ?started.elapsed(), "postgres: checkpoint on the rewind source done");
        let _ = conn.close().await;
        Ok(())
    }

    /// Clones into `<pgdata>.clone-tmp`; only a complete clone replaces
    /// PGDATA (the server is stopped first). The old PGDATA is renamed to
    /// `<pgdata>.old` and then deleted. With `clone_in_place` the server is
    /// stopped and PGDATA deleted before the copy instead, so that the disk
    /// holds one copy at a time.
    pub(super) async fn base_backup(&self, upstream: &Upstream) -> Result<(), PgError> {
        let pgdata = &self.settings.pgdata;
        let tmp = sibling_path(pgdata, ".clone-tmp");
        let old = sibling_path(pgdata, ".old");
        self.kill_leftover_programs().await;
        if self.settings.clone_in_place && std::fs::symlink_metadata(pgdata).is_ok() {
            self.stop().await?;
            warn!(pgdata = %pgdata.display(), "postgres: removing the data directory before cloning (clone_in_place)");
            move_aside(pgdata, &old)?;
            remove_dir_all_if_exists(&old)?;
        }
        prepare_tmp_dir(&tmp)?;
        let mut args = os_args([
            "-h".into(),
            upstream.host.clone().into(),
            "-p".into(),
            upstream.port.to_string().into(),
            "-U".into(),
            self.settings.replication_user.clone().into(),
            "-D".into(),
            tmp.clone().into_os_string(),
            "-X".into(),
            "stream".into(),
            "--checkpoint=fast".into(),
            "--no-password".into(),
            // Progress lines (the size is estimated first): what the stall
            // watch and the reports count.
            "--progress".into(),
        ]);
        if let Some(rate) = self.settings.clone_max_rate {
            // pg_basebackup takes kB/s (1024 bytes), at least 32.
            args.push(format!("--max-rate={}k", (rate / 1024).max(32)).into());
        }
        let env = self.upstream_env()?;
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let from = format!("{}:{}", upstream.host, upstream.port);
        let watch = Watch::new(Work::Clone, from, started);
        let copied = match run_watched(
            "pg_basebackup",
            &self.bin("pg_basebackup"),
            &args,
            &envs,
            watch,
            &self.board,
            self.settings.stall_timeout,
        )
        .await
        {
            Ok((_, copied)) => copied,
            Err(err) => {
                remove_dir_if_exists(&tmp);
                return Err(err);
            }
        };
        // pg_basebackup fsyncs the copy itself (no --no-sync).
        set_mode_0700(&tmp)?;
        self.stop().await?;
        move_aside(pgdata, &old)?;
        std::fs::rename(&tmp, pgdata).map_err(|e| io_error(pgdata, e))?;
        fsync_parent(pgdata)?;
        remove_dir_all_if_exists(&old)?;
        info!(
            elapsed = ?started.elapsed(),
            "postgres: base backup done: {}",
            copied.describe()
        );
        Ok(())
    }

    /// Stops the server first (fast), and runs `CHECKPOINT` on the source so
    /// that PostgreSQL 15's pg_rewind sees a just-promoted source's new
    /// timeline (see `checkpoint_source`).
    ///
    /// When the target was not shut down cleanly, pg_rewind first runs crash
    /// recovery in single-user mode, which refuses standby mode ("standby mode
    /// is not supported by single-user servers"). So with standby.signal
    /// present: a crashed *standby* ("in archive recovery") is started and
    /// stopped as a standby first (crash recovery without standby mode would
    /// end recovery and write WAL its upstream does not have); any other
    /// unclean state (a crashed primary) loses standby.signal.
    ///
    /// Call [`write_config`](super::LocalPostgres::write_config) afterwards
    /// in any case: pg_rewind copies the source's configuration files
    /// (pgpilot.conf included) and its standby.signal, or removes ours when
    /// the source has none.
    ///
    /// Says whether pg_rewind rewrote anything: it finds nothing to do when
    /// the target already is on the source's history.
    pub(super) async fn rewind(&self, upstream: &Upstream) -> Result<Rewound, PgError> {
        self.require_cluster("rewind")?;
        self.kill_leftover_programs().await;
        self.stop().await?;
        let pgdata = &self.settings.pgdata;
        let signal = pgdata.join(STANDBY_SIGNAL);
        let fresh_clone = pgdata.join(BACKUP_LABEL).exists();
        let state = if signal.exists() && !fresh_clone {
            Some(self.cluster_state().await?)
        } else {
            None
        };
        match before_rewind(fresh_clone, state.as_deref()) {
            BeforeRewind::NothingToRewind => {
                info!("postgres: PGDATA is a clone that never started (backup_label): nothing to rewind");
                return Ok(Rewound::NothingToRewind);
            }
            BeforeRewind::Rewind => {}
            BeforeRewind::RecoverAsStandby => {
                info!("postgres: crashed standby: starting and stopping it as a standby before pg_rewind");
                self.start().await?;
                self.stop().await?;
            }
            BeforeRewind::DropStandbySignal => {
                info!(state = ?state, "postgres: removing standby.signal so that pg_rewind can run crash recovery");
                std::fs::remove_file(&signal).map_err(|e| io_error(&signal, e))?;
                fsync_dir(pgdata)?;
            }
        }
        self.checkpoint_source(upstream).await?;
        // TLS to the source, like the password file, comes from upstream_env.
        let source = format!(
            "host={} port={} user={} dbname=postgres connect_timeout={}",
            conninfo_value(&upstream.host),
            upstream.port,
            conninfo_value(&self.settings.replication_user),
            UPSTREAM_CONNECT_TIMEOUT_SECS,
        );
        let mut target = OsString::from("--target-pgdata=");
        target.push(pgdata.as_os_str());
        let args = os_args([
            target,
            format!("--source-server={source}").into(),
            "--progress".into(),
        ]);
        let env = self.upstream_env()?;
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let from = format!("{}:{}", upstream.host, upstream.port);
        let (output, copied) = run_watched(
            "pg_rewind",
            &self.bin("pg_rewind"),
            &args,
            &envs,
            Watch::new(Work::Rewind, from, started),
            &self.board,
            self.settings.stall_timeout,
        )
        .await?;
        let said = format!("{}{}", output.stdout, output.stderr);
        if said.contains("no rewind required") {
            info!(
                same_timeline = said.contains("on the same timeline"),
                "postgres: pg_rewind: no rewind required"
            );
            Ok(Rewound::NothingToRewind)
        } else {
            info!(elapsed = ?started.elapsed(), "postgres: pg_rewind done: {}", copied.describe());
            Ok(Rewound::Rewound)
        }
    }
}

/// Rename `pgdata`, when it exists, to `old` (a stale `old` removed
/// first), so that a clone can take its place.
fn move_aside(pgdata: &std::path::Path, old: &std::path::Path) -> Result<(), PgError> {
    if std::fs::symlink_metadata(pgdata).is_ok() {
        remove_dir_all_if_exists(old)?;
        std::fs::rename(pgdata, old).map_err(|e| io_error(pgdata, e))?;
    }
    Ok(())
}

/// What [`rewind`](super::LocalPostgres::rewind) does before running
/// pg_rewind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BeforeRewind {
    /// PGDATA is a clone that never started (it still has `backup_label`,
    /// which the first start renames): it has not diverged from anything,
    /// and must not be rewound — pg_rewind would first run crash recovery
    /// in single-user mode, as a primary, writing WAL (checkpoints) that the
    /// upstream does not have on the same timeline; it then says "no rewind
    /// required" and the standby never streams ("record with incorrect
    /// prev-link"). Starting it as a standby is all it needs. (A keeper
    /// killed between the clone and the start leaves one.)
    NothingToRewind,
    /// Shut down cleanly, or without standby.signal (pg_rewind runs crash
    /// recovery itself).
    Rewind,
    /// A crashed standby: start and stop it as a standby first (crash
    /// recovery without standby mode would end recovery and write WAL its
    /// upstream does not have).
    RecoverAsStandby,
    /// Any other unclean state with standby.signal (a crashed primary):
    /// remove standby.signal, which single-user mode refuses.
    DropStandbySignal,
}

/// `state` is pg_controldata's "Database cluster state", read only when
/// standby.signal exists (None otherwise).
pub(super) fn before_rewind(fresh_clone: bool, state: Option<&str>) -> BeforeRewind {
    if fresh_clone {
        return BeforeRewind::NothingToRewind;
    }
    match state {
        None | Some("shut down" | "shut down in recovery") => BeforeRewind::Rewind,
        Some("in archive recovery") => BeforeRewind::RecoverAsStandby,
        Some(_) => BeforeRewind::DropStandbySignal,
    }
}
