//! The local server's life: initdb, start, stop, reload, what
//! `postmaster.pid` says, waiting for replay and promoting, and what
//! pg_controldata reports.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tracing::{info, warn};

use super::programs::{os_args, run_program, C_LOCALE};
use super::recovery::{LogTail, RecoveryWatch};
use super::{io_error, prepare_tmp_dir, remove_dir_if_exists, PgController, PgError};
use crate::durable::{fsync_parent, sibling_path};

pub(super) const POSTMASTER_PID: &str = "postmaster.pid";
/// initdb takes a few seconds; leave room for slow disks (fsync of the new cluster).
pub(super) const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// What pg_ctl itself waits (`-t`) for start and stop.
pub(super) const PG_CTL_WAIT_SECS: u64 = 60;
/// Our own limit on a pg_ctl run: its `-t` plus margin.
pub(super) const PG_CTL_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
/// pg_ctl reload only signals the postmaster.
pub(super) const PG_CTL_RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const CONTROLDATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long replay may stand still, short of the received WAL and with no
/// upstream streaming, before
/// [`wait_replay_caught_up`](super::LocalPostgres::wait_replay_caught_up)
/// takes the rest for an incomplete record.
pub(super) const REPLAY_STALL: Duration = Duration::from_secs(3);
/// After pg_ctl said the server is ready, how long it may take to accept us.
pub(super) const ACCEPT_AFTER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a promotion may take until writes are accepted.
pub(super) const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Promotion is on the failover's critical path: poll it closely. (The
/// server's own `pg_promote(wait => true)` checks only every 100 ms.)
pub(super) const PROMOTE_POLL_INTERVAL: Duration = Duration::from_millis(5);
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How often the server log is read for a crash recovery's progress (the
/// server writes it every `log_startup_progress_interval`, set to 1 s).
pub(super) const RECOVERY_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Lines of the server log quoted in a start error.
pub(super) const LOG_TAIL_LINES: usize = 20;
pub(super) const CONTROLDATA_SYSTEM_IDENTIFIER: &str = "Database system identifier";
pub(super) const CONTROLDATA_CLUSTER_STATE: &str = "Database cluster state";

/// What `postmaster.pid` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PidState {
    /// No pid file: no server.
    NoFile,
    /// A pid file naming no live process (a crash): pg_ctl start copes.
    Dead,
    /// A pid file naming a live process that is not PostgreSQL (pid reused
    /// after a crash): PostgreSQL would refuse to start while the file exists.
    Reused(i32),
    /// A live postmaster.
    Alive(i32),
}

impl PgController {
    /// Whether `postmaster.pid` names a live postmaster (it may still be
    /// starting or stopping).
    pub fn postmaster_running(&self) -> bool {
        matches!(self.pid_state(), PidState::Alive(_))
    }

    pub(super) fn pid_state(&self) -> PidState {
        let path = self.settings.pgdata.join(POSTMASTER_PID);
        let Ok(content) = std::fs::read_to_string(&path) else {
            return PidState::NoFile;
        };
        let Some(pid) = content
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            // Being written right now, or garbage: let pg_ctl decide.
            return PidState::Dead;
        };
        match kill(Pid::from_raw(pid), None) {
            Ok(()) | Err(Errno::EPERM) => {}
            Err(_) => return PidState::Dead,
        }
        // Linux: make sure the pid was not reused by another program.
        match std::fs::read(format!("/proc/{pid}/comm")) {
            Ok(comm) => {
                let comm = String::from_utf8_lossy(&comm);
                let comm = comm.trim();
                if comm.contains("postgres") || comm.contains("postmaster") {
                    PidState::Alive(pid)
                } else {
                    PidState::Reused(pid)
                }
            }
            Err(_) => PidState::Alive(pid),
        }
    }

    /// Add the tail of the server log to a start failure, and log it.
    pub(super) fn start_failed(&self, err: PgError) -> PgError {
        let log = self.log_file();
        let tail = log_tail(&log, LOG_TAIL_LINES);
        for line in tail.lines() {
            warn!("postgres: {line}");
        }
        let tail = format!("last lines of {}:\n{}", log.display(), tail);
        match err {
            PgError::Program {
                program,
                status,
                stderr,
            } => PgError::Program {
                program,
                status,
                stderr: format!("{stderr}\n{tail}"),
            },
            PgError::Timeout { .. } => err,
            other => PgError::Other(format!("{other}; {tail}")),
        }
    }

    pub(super) async fn pg_ctl_stop(&self, mode: &str) -> Result<(), PgError> {
        self.drop_connection().await;
        match self.pid_state() {
            PidState::NoFile | PidState::Dead | PidState::Reused(_) => return Ok(()),
            PidState::Alive(_) => {}
        }
        let args = os_args([
            "-D".into(),
            self.pgdata_arg(),
            "-m".into(),
            mode.into(),
            "-w".into(),
            "-t".into(),
            PG_CTL_WAIT_SECS.to_string().into(),
            "stop".into(),
        ]);
        let label = format!("pg_ctl stop ({mode})");
        match run_program(&label, &self.bin("pg_ctl"), &args, C_LOCALE, PG_CTL_TIMEOUT).await {
            Ok(_) => {
                info!(mode, "postgres: stopped");
                Ok(())
            }
            // It stopped on its own (or crashed) meanwhile.
            Err(_) if !self.postmaster_running() => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub(super) async fn controldata(&self) -> Result<String, PgError> {
        let args = os_args(["-D".into(), self.pgdata_arg()]);
        let output = run_program(
            "pg_controldata",
            &self.bin("pg_controldata"),
            &args,
            C_LOCALE,
            CONTROLDATA_TIMEOUT,
        )
        .await?;
        Ok(output.stdout)
    }

    /// "Database cluster state" of pg_controldata: "shut down", "shut down
    /// in recovery", "in production", "in archive recovery", ...
    pub(super) async fn cluster_state(&self) -> Result<String, PgError> {
        let output = self.controldata().await?;
        controldata_field(&output, CONTROLDATA_CLUSTER_STATE)
            .map(str::to_string)
            .ok_or_else(|| missing_controldata_field(CONTROLDATA_CLUSTER_STATE))
    }

    /// Runs initdb into `<pgdata>.initdb-tmp` and renames it into place, so
    /// an initdb killed half-way never leaves a PGDATA that looks usable.
    pub(super) async fn initdb(&self) -> Result<(), PgError> {
        if self.has_data_directory() {
            return Ok(());
        }
        let pgdata = &self.settings.pgdata;
        match std::fs::symlink_metadata(pgdata) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(io_error(pgdata, source)),
            Ok(meta) if meta.is_dir() => {
                let mut entries = std::fs::read_dir(pgdata).map_err(|e| io_error(pgdata, e))?;
                if entries.next().is_some() {
                    return Err(PgError::Other(format!(
                        "{} is not empty but holds no PostgreSQL cluster (no PG_VERSION); \
                         pgpilot does not delete unknown content, so empty or remove it, \
                         or configure another pgdata",
                        pgdata.display()
                    )));
                }
            }
            Ok(_) => {
                return Err(PgError::Other(format!(
                    "{} exists and is not a directory; remove it or configure another pgdata",
                    pgdata.display()
                )))
            }
        }
        let tmp = sibling_path(pgdata, ".initdb-tmp");
        prepare_tmp_dir(&tmp)?;
        // With a replication password: the keeper (the superuser) over the
        // local socket as the same operating-system user, every TCP client
        // with a SCRAM password. Without: trust, as before.
        let auth: &[&str] = if self.settings.replication_password.is_some() {
            &["--auth-local=peer", "--auth-host=scram-sha-256"]
        } else {
            &["--auth=trust"]
        };
        let mut args = os_args([
            "-D".into(),
            tmp.clone().into_os_string(),
            "-U".into(),
            self.settings.superuser.clone().into(),
            "--data-checksums".into(),
            "--encoding=UTF8".into(),
            "--no-instructions".into(),
        ]);
        args.extend(auth.iter().map(OsString::from));
        // initdb takes the cluster's locale from the environment: no LC_ALL=C here.
        if let Err(err) =
            run_program("initdb", &self.bin("initdb"), &args, &[], INITDB_TIMEOUT).await
        {
            remove_dir_if_exists(&tmp);
            return Err(err);
        }
        // rename(2) replaces an empty directory.
        std::fs::rename(&tmp, pgdata).map_err(|e| io_error(pgdata, e))?;
        fsync_parent(pgdata)?;
        info!(pgdata = %pgdata.display(), "postgres: initdb done");
        Ok(())
    }

    pub(super) async fn start(&self) -> Result<(), PgError> {
        self.require_cluster("start PostgreSQL")?;
        let deadline = Instant::now() + PG_CTL_TIMEOUT;
        match self.pid_state() {
            PidState::Alive(_) => {
                // Running already: done if it answers (the steady state's
                // Start, every loop).
                if self.fetch_one::<(i32,)>("SELECT 1", &[]).await.is_ok() {
                    return Ok(());
                }
                // Still starting, maybe through a crash recovery an
                // earlier attempt (or keeper) began: done once it answers.
                self.begin_watching_recovery(LogTail::near_end(&self.log_file()), false);
                let answered = self.watching_recovery(self.wait_accepting(deadline)).await;
                return self.end_of_start(answered);
            }
            PidState::Reused(pid) => {
                let path = self.settings.pgdata.join(POSTMASTER_PID);
                warn!(pid, "postgres: removing stale postmaster.pid (its pid now belongs to another program)");
                std::fs::remove_file(&path).map_err(|e| io_error(&path, e))?;
            }
            PidState::NoFile | PidState::Dead => {}
        }
        self.drop_connection().await;
        let log = self.log_file();
        let args = os_args([
            "-D".into(),
            self.pgdata_arg(),
            "-l".into(),
            log.into_os_string(),
            "-w".into(),
            "-t".into(),
            PG_CTL_WAIT_SECS.to_string().into(),
            "start".into(),
        ]);
        let started = Instant::now();
        self.begin_watching_recovery(LogTail::at_end(&self.log_file()), true);
        let answered = async {
            run_program(
                "pg_ctl start",
                &self.bin("pg_ctl"),
                &args,
                C_LOCALE,
                PG_CTL_TIMEOUT,
            )
            .await?;
            self.wait_accepting(Instant::now() + ACCEPT_AFTER_START_TIMEOUT)
                .await
        };
        let answered = self.watching_recovery(answered).await;
        self.end_of_start(answered)?;
        info!(elapsed = ?started.elapsed(), "postgres: started");
        Ok(())
    }

    /// Watch the log for a crash recovery from `tail` on; `fresh`: a new
    /// start (replacing what an earlier attempt watched), else carry on
    /// with the watch an earlier attempt began, if any.
    fn begin_watching_recovery(&self, tail: LogTail, fresh: bool) {
        let mut slot = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
        if fresh || slot.is_none() {
            *slot = Some(RecoveryWatch::new(tail));
        }
    }

    /// Run `wait` (for the server to answer) while publishing the crash
    /// recovery's progress once a second.
    async fn watching_recovery<T>(&self, wait: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(wait);
        let mut tick = tokio::time::interval(RECOVERY_POLL_INTERVAL);
        loop {
            tokio::select! {
                done = &mut wait => return done,
                _ = tick.tick() => {
                    if let Some(w) = self.recovery.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                        w.poll(&self.board, Instant::now());
                    }
                }
            }
        }
    }

    /// A start attempt ended: the server answers (the recovery, if any, is
    /// finished), or is gone (nothing more to watch), or still starts (the
    /// watch goes on with the next attempt).
    fn end_of_start(&self, answered: Result<(), PgError>) -> Result<(), PgError> {
        let mut slot = self.recovery.lock().unwrap_or_else(|e| e.into_inner());
        match &answered {
            Ok(()) => {
                if let Some(w) = slot.take() {
                    w.finish(&self.board, Instant::now());
                }
            }
            Err(_) if !self.postmaster_running() => {
                if let Some(w) = slot.take() {
                    w.abandon(&self.board);
                }
            }
            Err(_) => {}
        }
        drop(slot);
        answered.map_err(|e| self.start_failed(e))
    }

    /// See [`LocalPostgres::restart_for_pending_settings`](super::LocalPostgres::restart_for_pending_settings).
    pub(super) async fn restart_for_pending_settings(&self) -> Result<Option<String>, PgError> {
        let (pending,): (String,) = self
            .fetch_one(
                "SELECT coalesce(string_agg(name, ', ' ORDER BY name), '') FROM pg_settings WHERE pending_restart",
                &[],
            )
            .await?;
        if pending.is_empty() {
            return Ok(None);
        }
        warn!(settings = %pending, "postgres: restarting once to apply settings that need a restart");
        self.stop().await?;
        self.start().await?;
        Ok(Some(pending))
    }

    /// See [`LocalPostgres::checkpoint_before_stop`](super::LocalPostgres::checkpoint_before_stop).
    pub(super) async fn checkpoint_before_stop(&self) {
        if !self.postmaster_running() {
            return;
        }
        let started = Instant::now();
        match self.execute_batch("CHECKPOINT").await {
            Ok(()) => {
                info!(elapsed = ?started.elapsed(), "postgres: checkpoint before the hand-over done")
            }
            Err(e) => {
                warn!(error = %e, "postgres: checkpoint before the hand-over failed; stopping anyway")
            }
        }
    }

    pub(super) async fn stop(&self) -> Result<(), PgError> {
        self.pg_ctl_stop("fast").await
    }

    pub(super) async fn stop_immediate(&self) -> Result<(), PgError> {
        self.pg_ctl_stop("immediate").await
    }

    pub(super) async fn reload(&self) -> Result<(), PgError> {
        if !self.postmaster_running() {
            return Ok(());
        }
        let args = os_args(["-D".into(), self.pgdata_arg(), "reload".into()]);
        match run_program(
            "pg_ctl reload",
            &self.bin("pg_ctl"),
            &args,
            C_LOCALE,
            PG_CTL_RELOAD_TIMEOUT,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(_) if !self.postmaster_running() => Ok(()),
            Err(err) => Err(err),
        }
    }

    pub(super) async fn wait_replay_caught_up(&self, timeout: Duration) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        // A paused replay (pg_wal_replay_pause) would never catch up: a node
        // about to be promoted must apply everything it received.
        // CASE evaluates only the branch it needs: the pause functions fail
        // outside recovery.
        let (resumed,): (bool,) = self
            .fetch_one(
                "SELECT CASE
                     WHEN NOT pg_is_in_recovery() THEN false
                     WHEN pg_get_wal_replay_pause_state() = 'not paused' THEN false
                     ELSE pg_wal_replay_resume()::text = ''
                 END",
                &[],
            )
            .await?;
        if resumed {
            info!("postgres: WAL replay was paused; resumed it before promotion");
        }
        let mut last_replay: Option<String> = None;
        let mut replay_moved = Instant::now();
        loop {
            let (in_recovery, caught_up, receive, replay, streaming): (
                bool,
                bool,
                Option<String>,
                Option<String>,
                bool,
            ) = self
                .fetch_one(
                    "SELECT pg_is_in_recovery(),
                            coalesce(pg_last_wal_receive_lsn() IS NULL
                                     OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn(),
                                     false),
                            pg_last_wal_receive_lsn()::text,
                            pg_last_wal_replay_lsn()::text,
                            EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')",
                    &[],
                )
                .await?;
            if !in_recovery || caught_up {
                return Ok(());
            }
            if replay != last_replay {
                last_replay = replay.clone();
                replay_moved = Instant::now();
            }
            // The upstream is gone and replay stands still short of what was
            // received: the rest is the first part of a record the upstream
            // never finished sending (it flushes WAL mid-record). Nothing
            // more can be replayed; promotion replays every complete record
            // left in pg_wal and discards the torn one.
            if !streaming && replay_moved.elapsed() >= REPLAY_STALL {
                warn!(
                    received = receive.as_deref().unwrap_or("none"),
                    replayed = replay.as_deref().unwrap_or("none"),
                    "postgres: replay stopped short of the received WAL with no upstream (an incomplete last record): going on"
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PgError::Timeout {
                    program: format!(
                        "replay of received WAL (received {}, replayed {})",
                        receive.as_deref().unwrap_or("none"),
                        replay.as_deref().unwrap_or("none")
                    ),
                    timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    pub(super) async fn promote(&self) -> Result<(), PgError> {
        if !self.in_recovery().await? {
            return if self.transaction_read_only().await? {
                Err(PgError::Other(
                    "PostgreSQL is not in recovery but transaction_read_only is on \
                     (default_transaction_read_only set?)"
                        .to_string(),
                ))
            } else {
                Ok(())
            };
        }
        let started = Instant::now();
        // Signal only (wait => false) and poll ourselves below: the server's
        // own wait adds up to 100 ms to every failover.
        match self
            .fetch_one::<(bool,)>("SELECT pg_promote(wait => false)", &[])
            .await
        {
            Ok((true,)) => {}
            Ok((false,)) => warn!("postgres: pg_promote() could not signal the postmaster"),
            // E.g. promotion finished between our check and the call; the
            // loop below decides.
            Err(err) => warn!(error = %err, "postgres: pg_promote() failed; checking state"),
        }
        let deadline = Instant::now() + PROMOTE_TIMEOUT;
        loop {
            let (in_recovery, read_only): (bool, String) = self
                .fetch_one(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                    &[],
                )
                .await?;
            if !in_recovery && read_only == "off" {
                info!(elapsed = ?started.elapsed(), "postgres: promoted");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PgError::Timeout {
                    program: "promotion".to_string(),
                    timeout: PROMOTE_TIMEOUT,
                });
            }
            tokio::time::sleep(PROMOTE_POLL_INTERVAL).await;
        }
    }

    pub(super) async fn system_identifier(&self) -> Result<Option<u64>, PgError> {
        if !self.has_data_directory() {
            return Ok(None);
        }
        let output = self.controldata().await?;
        controldata_field(&output, CONTROLDATA_SYSTEM_IDENTIFIER)
            .and_then(|id| id.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| missing_controldata_field(CONTROLDATA_SYSTEM_IDENTIFIER))
    }
}

/// The last `lines` lines of a (possibly large) log file.
pub(super) fn log_tail(path: &Path, lines: usize) -> String {
    const MAX_BYTES: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(could not read the log: {err})"),
    }
}

/// The value of a `label:` line of `pg_controldata` output (LC_ALL=C).
pub(super) fn controldata_field<'a>(output: &'a str, label: &str) -> Option<&'a str> {
    output.lines().find_map(|line| {
        line.strip_prefix(label)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

pub(super) fn missing_controldata_field(label: &str) -> PgError {
    PgError::Other(format!("pg_controldata printed no \"{label}\" line"))
}
