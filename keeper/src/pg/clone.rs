//! Making this node a copy of an upstream: pg_basebackup into a directory
//! beside PGDATA, pg_rewind (with the checkpoint on the source and the
//! preparation of the target it needs), and killing what an earlier
//! keeper process left running of either.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tracing::{debug, info, warn};

use super::programs::{kill_programs_naming, os_args, run_watched};
use super::progress::{Watch, Work, WorkProgress};
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
/// How often the progress of the CHECKPOINT on the rewind source (buffers
/// it wrote) is looked at.
pub(super) const SOURCE_CHECKPOINT_POLL: Duration = Duration::from_secs(1);
/// The checkpoint's counter as the source shows it.
const CHECKPOINT_PROGRESS_SQL: &str =
    "SELECT (buffers_checkpoint + checkpoints_req + checkpoints_timed)::text FROM pg_stat_bgwriter";
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
    /// It has no time limit: it is given up only when the source's count of
    /// buffers written by checkpoints (and of checkpoints) stood still for
    /// `stall_timeout` — a checkpoint of a large, busy source writes for
    /// minutes.
    pub(super) async fn checkpoint_source(&self, upstream: &Upstream) -> Result<(), PgError> {
        let mut conn = self.connect_upstream(upstream).await?;
        let mut watcher = self.connect_upstream(upstream).await?;
        let started = Instant::now();
        let outcome = {
            let checkpoint = sqlx::raw_sql("CHECKPOINT").execute(&mut conn);
            tokio::pin!(checkpoint);
            let mut tick = tokio::time::interval(SOURCE_CHECKPOINT_POLL);
            let (mut last, mut moved) = (None::<String>, Instant::now());
            loop {
                tokio::select! {
                    done = &mut checkpoint => break done.map(|_| ()).map_err(PgError::from),
                    _ = tick.tick() => {
                        let now: Option<String> = sqlx::query_scalar(CHECKPOINT_PROGRESS_SQL)
                            .fetch_one(&mut watcher)
                            .await
                            .ok();
                        if now.is_some() && now != last {
                            (last, moved) = (now, Instant::now());
                        } else if moved.elapsed() >= self.settings.stall_timeout {
                            break Err(PgError::Timeout {
                                program: format!(
                                    "CHECKPOINT on {}:{} (no buffer written for stall_timeout)",
                                    upstream.host, upstream.port
                                ),
                                timeout: self.settings.stall_timeout,
                            });
                        }
                    }
                }
            }
        };
        let _ = watcher.close().await;
        outcome?;
        debug!(elapsed = ?started.elapsed(), "postgres: checkpoint on the rewind source done");
        let _ = conn.close().await;
        Ok(())
    }

    /// Clones into `<pgdata>.clone-tmp`; only a complete clone replaces
    /// PGDATA (the server is stopped first). The old PGDATA is renamed to
    /// `<pgdata>.old` and deleted in the background, so that the new one
    /// starts without waiting for gigabytes of files to go. With
    /// `clone_in_place` the server is stopped and PGDATA deleted before the
    /// copy instead, so that the disk holds one copy at a time.
    pub(super) async fn base_backup(&self, upstream: &Upstream) -> Result<(), PgError> {
        let pgdata = &self.settings.pgdata;
        let tmp = sibling_path(pgdata, ".clone-tmp");
        let old = sibling_path(pgdata, ".old");
        self.finish_discarding().await;
        self.kill_leftover_programs().await;
        if self.settings.clone_in_place && std::fs::symlink_metadata(pgdata).is_ok() {
            self.stop().await?;
            warn!(pgdata = %pgdata.display(), "postgres: removing the data directory before cloning (clone_in_place)");
            move_aside(pgdata, &old)?;
            remove_dir_all_if_exists(&old)?;
        }
        prepare_tmp_dir(&tmp)?;
        let started = Instant::now();
        let copied = match &self.settings.clone_command {
            Some(command) => self.restore_into(command, upstream, &tmp).await,
            None => self.pg_basebackup_into(upstream, &tmp).await,
        };
        let copied = match copied {
            Ok(copied) => copied,
            Err(err) => {
                remove_dir_if_exists(&tmp);
                return Err(err);
            }
        };
        set_mode_0700(&tmp)?;
        self.stop().await?;
        move_aside(pgdata, &old)?;
        std::fs::rename(&tmp, pgdata).map_err(|e| io_error(pgdata, e))?;
        fsync_parent(pgdata)?;
        self.discard(old);
        info!(
            elapsed = ?started.elapsed(),
            "postgres: base backup done: {}",
            copied.describe()
        );
        Ok(())
    }

    /// Delete the data directory a clone replaced, in the background.
    fn discard(&self, old: std::path::PathBuf) {
        let handle = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            match remove_dir_all_if_exists(&old) {
                Ok(()) => {
                    info!(elapsed = ?started.elapsed(), "postgres: the replaced data directory {} is deleted", old.display())
                }
                Err(err) => {
                    warn!(error = %err, "postgres: could not delete the replaced data directory; the next clone tries again")
                }
            }
        });
        *self.discarding.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }

    /// Wait for the deletion [`Self::discard`] started, if one runs.
    async fn finish_discarding(&self) {
        let handle = self
            .discarding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    /// A long program run under `watch`, its progress on this node's
    /// board, stopped after `stall_timeout` without any.
    async fn watched(
        &self,
        label: &str,
        program: &Path,
        args: &[OsString],
        envs: &[(&str, &str)],
        watch: Watch,
    ) -> Result<(super::programs::ProgramOutput, WorkProgress), PgError> {
        run_watched(
            label,
            program,
            args,
            envs,
            watch,
            &self.board,
            self.settings.stall_timeout,
        )
        .await
    }

    /// pg_basebackup of `upstream` into the empty directory `tmp` (it
    /// fsyncs the copy itself: no --no-sync).
    async fn pg_basebackup_into(
        &self,
        upstream: &Upstream,
        tmp: &Path,
    ) -> Result<WorkProgress, PgError> {
        let mut args = os_args([
            "-h".into(),
            upstream.host.clone().into(),
            "-p".into(),
            upstream.port.to_string().into(),
            "-U".into(),
            self.settings.replication_user.clone().into(),
            "-D".into(),
            tmp.as_os_str().to_owned(),
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
        let from = format!("{}:{}", upstream.host, upstream.port);
        let watch = Watch::new(Work::Clone, from, Instant::now());
        let (_, copied) = self
            .watched(
                "pg_basebackup",
                &self.bin("pg_basebackup"),
                &args,
                &envs,
                watch,
            )
            .await?;
        Ok(copied)
    }

    /// `clone_command` (a backup tool's restore) filling the empty
    /// directory `tmp`, watched like a clone (the bytes it reads and
    /// writes); then the result must be a data directory of the
    /// upstream's database system. The restored directory is fsynced
    /// (a backup tool may leave that to the caller).
    async fn restore_into(
        &self,
        command: &str,
        upstream: &Upstream,
        tmp: &Path,
    ) -> Result<WorkProgress, PgError> {
        let script = clone_command_line(command, tmp, upstream);
        let args = os_args(["-c".into(), script.into()]);
        let env = self.upstream_env()?;
        let mut envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let port = upstream.port.to_string();
        envs.extend([
            ("PGHOST", upstream.host.as_str()),
            ("PGPORT", port.as_str()),
        ]);
        let label = format!("clone_command `{}`", program_name(command));
        let watch = Watch::new(Work::Restore, label.clone(), Instant::now());
        let (_, mut copied) = self
            .watched(&label, Path::new("/bin/sh"), &args, &envs, watch)
            .await?;
        let restored = controldata_of(&self.bin("pg_controldata"), tmp)
            .await
            .map_err(|e| {
                PgError::Other(format!(
                    "clone_command left no PostgreSQL data directory in {} ({e}): check that it restores into %D",
                    tmp.display()
                ))
            })?;
        let ours = self.upstream_system_identifier(upstream).await?;
        if restored != ours {
            return Err(PgError::Other(format!(
                "clone_command restored a backup of database system {restored}, but this group's primary is {ours}: point the command at this group's backups"
            )));
        }
        fsync_dir(tmp)?;
        // What the restore left, rather than the estimate from its I/O.
        copied.done_bytes = dir_size(tmp);
        self.board.finish(copied.clone());
        Ok(copied)
    }

    /// The upstream's database system identifier.
    async fn upstream_system_identifier(&self, upstream: &Upstream) -> Result<u64, PgError> {
        let mut conn = self.connect_upstream(upstream).await?;
        let id: String =
            sqlx::query_scalar("SELECT system_identifier::text FROM pg_control_system()")
                .fetch_one(&mut conn)
                .await?;
        let _ = conn.close().await;
        id.parse().map_err(|_| {
            PgError::Other(format!(
                "the upstream's system identifier {id:?} is no number"
            ))
        })
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
        let (output, copied) = self
            .watched(
                "pg_rewind",
                &self.bin("pg_rewind"),
                &args,
                &envs,
                Watch::new(Work::Rewind, from, started),
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
            if let Some(missing) =
                missing_start_wal(pgdata, self.settings.restore_command.is_some())
            {
                // Without it the rewound server waits for ever for WAL its
                // upstream removed ("requested WAL segment … has already
                // been removed"): say so now rather than after a start
                // that cannot finish.
                return Err(PgError::Other(missing));
            }
            Ok(Rewound::Rewound)
        }
    }
}

/// After pg_rewind: why the rewound directory cannot start, if the WAL
/// its recovery starts from (backup_label's `START WAL LOCATION`, the last
/// checkpoint before the divergence) is neither in its pg_wal — pg_rewind
/// leaves there only the segments its source still had — nor to be had
/// from an archive (`has_restore_command`). That happens when the
/// upstream removed it: a busy old primary's last checkpoint lay further
/// back than the upstream's `wal_keep_size`.
pub(super) fn missing_start_wal(pgdata: &Path, has_restore_command: bool) -> Option<String> {
    if has_restore_command {
        return None;
    }
    let label = std::fs::read_to_string(pgdata.join(BACKUP_LABEL)).ok()?;
    let (lsn, file) = start_wal_of_label(&label)?;
    if pgdata.join("pg_wal").join(&file).exists() {
        return None;
    }
    Some(format!(
        "pg_rewind left this node to replay from {lsn} (WAL segment {file}), which its upstream no longer holds and no restore_command can fetch: a fresh clone is needed"
    ))
}

/// `("0/6A2ED6E8", "00000001000000000000006A")` from backup_label's
/// `START WAL LOCATION: 0/6A2ED6E8 (file 00000001000000000000006A)`.
pub(super) fn start_wal_of_label(label: &str) -> Option<(String, String)> {
    let rest = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))?;
    let (lsn, file) = rest.split_once(" (file ")?;
    let file = file.strip_suffix(')')?;
    let valid = file.len() == 24 && file.chars().all(|c| c.is_ascii_hexdigit());
    valid.then(|| (lsn.trim().to_string(), file.to_string()))
}

/// `clone_command` with its placeholders replaced: `%D` the directory to
/// fill, `%h` and `%p` the upstream's host and port (each quoted for the
/// shell), `%%` a percent sign.
pub(super) fn clone_command_line(command: &str, dir: &Path, upstream: &Upstream) -> String {
    let mut out = String::with_capacity(command.len() + 64);
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('D') => out.push_str(&shell_quote(&dir.to_string_lossy())),
            Some('h') => out.push_str(&shell_quote(&upstream.host)),
            Some('p') => out.push_str(&upstream.port.to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `'…'` for sh, single quotes inside written as `'\''`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The first word of a command, for labels ("pgbackrest").
fn program_name(command: &str) -> &str {
    let first = command.split_whitespace().next().unwrap_or("sh");
    first.rsplit('/').next().unwrap_or(first)
}

/// Bytes in the files under `dir` (symbolic links not followed).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// The system identifier in `dir`'s control file.
async fn controldata_of(pg_controldata: &Path, dir: &Path) -> Result<u64, PgError> {
    let args = os_args(["-D".into(), dir.as_os_str().to_owned()]);
    let output = super::programs::run_program(
        "pg_controldata",
        pg_controldata,
        &args,
        super::programs::C_LOCALE,
        super::lifecycle::CONTROLDATA_TIMEOUT,
    )
    .await?;
    super::lifecycle::controldata_field(
        &output.stdout,
        super::lifecycle::CONTROLDATA_SYSTEM_IDENTIFIER,
    )
    .and_then(|id| id.parse().ok())
    .ok_or_else(|| {
        super::lifecycle::missing_controldata_field(super::lifecycle::CONTROLDATA_SYSTEM_IDENTIFIER)
    })
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
