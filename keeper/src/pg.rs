//! The keeper's edge to its local PostgreSQL: every external program
//! (initdb, pg_ctl, pg_basebackup, pg_rewind, pg_controldata) and every SQL
//! query the keeper runs. Programs run with timeouts; a failure keeps the
//! exit status and stderr in a typed error.
//!
//! The transition executor talks to [`LocalPostgres`], so it can be driven by
//! a fake in simulation; [`PgController`] is the real thing.

use std::ffi::OsString;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use pgpilot_proto::lsn::{format_lsn, parse_lsn};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow, PgSslMode};
use sqlx::{Connection, FromRow};
use tokio::process::Command;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::access::{self, HbaRules, Method, PasswordSource, Secret};

/// Where a standby streams from (or clones / rewinds from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    /// Replication slot on the upstream reserved for this node.
    pub slot_name: String,
}

/// The settings pgpilot owns, written to `pgpilot.conf` inside PGDATA (and
/// included from `postgresql.conf`). Rewritten before every start, because
/// pg_basebackup and pg_rewind copy the upstream's copy of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedConfig {
    pub port: u16,
    pub listen_addresses: String,
    /// `application_name` the node uses when it streams, and `cluster_name`.
    pub application_name: String,
    /// `Some` makes the node a standby of that upstream (standby.signal is
    /// created); `None` removes standby.signal and primary_conninfo.
    pub standby_of: Option<Upstream>,
    /// '' turns synchronous replication off.
    pub synchronous_standby_names: String,
    pub wal_sender_timeout: Duration,
    pub wal_receiver_timeout: Duration,
    /// Hosts of the group's nodes (this one included): the only hosts the
    /// replication role may connect from (pg_hba.conf). `None` (the
    /// monitor has not answered yet): keep the block pg_hba.conf has.
    pub group_hosts: Option<Vec<String>>,
}

/// What the keeper observes of its PostgreSQL on each loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The postmaster runs and accepts connections.
    pub running: bool,
    pub in_recovery: bool,
    /// Primary: pg_current_wal_lsn(). Standby: the greater of the last
    /// received and last replayed LSN.
    pub lsn: u64,
    pub timeline: u32,
    /// pg_stat_wal_receiver.status = 'streaming'.
    pub wal_receiver_streaming: bool,
    /// application_name of every pg_stat_replication row in state 'streaming'.
    pub streaming_standbys: Vec<String>,
    pub system_identifier: u64,
    /// `synchronous_standby_names` as the server runs with it (None while
    /// it does not answer).
    pub synchronous_standby_names: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{program} failed ({status}): {stderr}")]
    Program {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{program} did not finish within {timeout:?}")]
    Timeout { program: String, timeout: Duration },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("PostgreSQL query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// Everything the transition executor needs from the local PostgreSQL.
/// Every method is idempotent: calling it again after success is a no-op
/// (or repeats harmlessly), so a keeper killed half-way can redo the plan.
///
/// The futures are `Send` so that the keeper can drive them from spawned
/// tasks (the fencing task); implementations may still write `async fn`.
pub trait LocalPostgres {
    /// Whether PGDATA holds a cluster (PG_VERSION exists).
    fn has_data_directory(&self) -> bool;
    /// initdb, when PGDATA holds no cluster yet.
    fn initdb(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Write `pgpilot.conf` (atomically), make sure postgresql.conf includes
    /// it, and create/remove standby.signal. Returns true when anything changed.
    fn write_config(
        &self,
        config: &ManagedConfig,
    ) -> impl Future<Output = Result<bool, PgError>> + Send;
    /// Start the postmaster when it is not running; done when it accepts connections.
    fn start(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Whether a postmaster of PGDATA is alive (it may still be starting, in
    /// crash recovery, or stopping): after a failed [`Self::start`], false
    /// means the start really failed rather than ran out of time.
    fn postmaster_alive(&self) -> bool;
    /// Stop (fast mode) when running.
    fn stop(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Stop at once (immediate mode): fencing.
    fn stop_immediate(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// pg_ctl reload.
    fn reload(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Replace PGDATA by a fresh pg_basebackup of `upstream` (cloned into a
    /// temporary directory beside it, then renamed into place).
    fn base_backup(&self, upstream: &Upstream) -> impl Future<Output = Result<(), PgError>> + Send;
    /// pg_rewind PGDATA (stopped) to follow `upstream`.
    fn rewind(&self, upstream: &Upstream) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Replay all WAL already received, within `timeout`.
    fn wait_replay_caught_up(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PgError>> + Send;
    /// pg_promote() when still in recovery; done when writes are accepted.
    fn promote(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// On a primary, make the replication role exist with its grants and
    /// the configured password (once per keeper run and password: it
    /// writes WAL); nothing on a standby.
    fn ensure_replication_role(&self) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Keep a physical replication slot for each (name, LSN) and drop other
    /// inactive `pgpilot_` slots. On a standby the slots are advanced to the
    /// named node's LSN (never past this node's replay), so a promoted
    /// standby already holds the WAL its future standbys need.
    fn sync_slots(
        &self,
        slots: &[(String, u64)],
    ) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Observe the running server (all-default with running=false when it is down).
    fn observe(&self) -> impl Future<Output = Observation> + Send;
    /// System identifier from pg_controldata, None without a data directory.
    fn system_identifier(&self) -> impl Future<Output = Result<Option<u64>, PgError>> + Send;
}

// ---------------------------------------------------------------------------
// The real controller
// ---------------------------------------------------------------------------

/// The file pgpilot owns inside PGDATA.
pub const PGPILOT_CONF: &str = "pgpilot.conf";
/// The line that makes postgresql.conf read [`PGPILOT_CONF`]; kept exactly once.
pub const INCLUDE_LINE: &str = "include_if_exists = 'pgpilot.conf'";
/// Prefix of the replication slots pgpilot owns; [`LocalPostgres::sync_slots`]
/// drops inactive slots with this prefix that are no longer wanted.
pub const SLOT_PREFIX: &str = "pgpilot_";

const STANDBY_SIGNAL: &str = "standby.signal";
/// Written by pg_basebackup; renamed to backup_label.old by the first start.
const BACKUP_LABEL: &str = "backup_label";
const POSTMASTER_PID: &str = "postmaster.pid";
/// Parameters that postgresql.auto.conf must not set: it is read after
/// postgresql.conf (and so after pgpilot.conf) and would override ours.
/// `pg_basebackup -R` and `ALTER SYSTEM` are the usual sources.
const AUTO_CONF_FORBIDDEN: &[&str] = &[
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
];

/// Environment for programs whose output we parse or whose messages we log:
/// untranslated messages and labels.
const C_LOCALE: &[(&str, &str)] = &[("LC_ALL", "C")];

/// initdb takes a few seconds; leave room for slow disks (fsync of the new cluster).
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// What pg_ctl itself waits (`-t`) for start and stop.
const PG_CTL_WAIT_SECS: u64 = 60;
/// Our own limit on a pg_ctl run: its `-t` plus margin.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
/// pg_ctl reload only signals the postmaster.
const PG_CTL_RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// pg_basebackup copies the whole cluster.
const BASE_BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
/// pg_rewind copies changed blocks and all WAL since the fork point, and may
/// first run crash recovery in single-user mode.
const REWIND_TIMEOUT: Duration = Duration::from_secs(600);
const CONTROLDATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long programs left running by an earlier keeper process get to go
/// once SIGKILLed.
const LEFTOVER_KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// The CHECKPOINT on the rewind source before pg_rewind (immediate, but it
/// writes every dirty buffer).
const SOURCE_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long replay may stand still, short of the received WAL and with no
/// upstream streaming, before [`LocalPostgres::wait_replay_caught_up`]
/// takes the rest for an incomplete record.
const REPLAY_STALL: Duration = Duration::from_secs(3);
/// libpq connect_timeout (seconds) for pg_basebackup and pg_rewind.
const UPSTREAM_CONNECT_TIMEOUT_SECS: &str = "5";
/// Connecting over the local unix socket is immediate when the server is up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Every keeper query is cheap; a slower answer means something is wrong.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// After pg_ctl said the server is ready, how long it may take to accept us.
const ACCEPT_AFTER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a promotion may take until writes are accepted.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Promotion is on the failover's critical path: poll it closely. (The
/// server's own `pg_promote(wait => true)` checks only every 100 ms.)
const PROMOTE_POLL_INTERVAL: Duration = Duration::from_millis(5);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Lines of the server log quoted in a start error.
const LOG_TAIL_LINES: usize = 20;

/// Where the local PostgreSQL lives and how the keeper reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// The data directory (absolute path recommended). It must not be a mount
    /// point itself: initdb and base_backup build the cluster in a sibling
    /// directory and rename it into place.
    pub pgdata: PathBuf,
    /// Directory holding pg_ctl, initdb, pg_basebackup, ... (see [`find_bin_dir`]).
    pub bin_dir: PathBuf,
    /// `unix_socket_directories`; the keeper connects through it.
    pub socket_dir: PathBuf,
    /// Superuser created by initdb, used by the keeper over the local socket.
    pub superuser: String,
    pub port: u16,
    /// Networks (CIDRs or `samenet`) trusted for clients and replication,
    /// kept in the keeper's block of pg_hba.conf ([`access::render_hba`]).
    pub trust_networks: Vec<String>,
    /// Role the other nodes stream, clone and rewind as.
    pub replication_user: String,
    /// The replication role's password; `None`: the group's hosts are
    /// trusted (no password).
    pub replication_password: Option<PasswordSource>,
    /// PostgreSQL's TLS between the nodes; `None`: the nodes talk without.
    pub postgres_tls: Option<PostgresTls>,
}

/// PostgreSQL's TLS between the nodes (`postgres_tls_*_file`): the server
/// runs with `ssl = on` and this certificate; connections to an upstream
/// check the upstream's certificate against `ca_file` and its host name
/// (`sslmode=verify-full`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// Why PostgreSQL would refuse `key_file` as its `ssl_key_file` (it
/// checks the same when it starts, and says so only in its log), if it
/// would: owned by the user it runs as (`server_uid`) with no access for
/// group and others, or by root with no access for others and no write for
/// the group.
pub fn postgres_key_problem(
    key_file: &Path,
    owner: u32,
    mode: u32,
    server_uid: u32,
) -> Option<String> {
    let shown = key_file.display();
    if owner != server_uid && owner != 0 {
        return Some(format!("postgres_tls_key_file {shown} must be owned by the user PostgreSQL runs as (uid {server_uid}) or by root: run `chown` on it"));
    }
    let forbidden = if owner == server_uid { 0o077 } else { 0o037 };
    (mode & forbidden != 0).then(|| {
        format!("postgres_tls_key_file {shown} is open to other users (mode {:o}) and PostgreSQL refuses it: run `chmod 600 {shown}`", mode & 0o777)
    })
}

impl PostgresTls {
    /// The libpq connection options for an upstream.
    fn conninfo(&self) -> String {
        format!(
            " sslmode=verify-full sslrootcert={}",
            conninfo_value(&self.ca_file.to_string_lossy())
        )
    }
}

impl PgSettings {
    /// The libpq password file the keeper writes (beside PGDATA, mode
    /// 0600) for primary_conninfo, pg_basebackup and pg_rewind.
    pub fn passfile(&self) -> PathBuf {
        sibling_path(&self.pgdata, ".pgpass")
    }
}

/// Drives one local PostgreSQL through its programs and a cached
/// connection over the unix socket.
pub struct PgController {
    settings: PgSettings,
    /// One connection reused across calls; dropped on a connection error or
    /// timeout and re-opened by the next query.
    conn: Mutex<Option<PgConnection>>,
    /// The password [`LocalPostgres::ensure_replication_role`] last applied
    /// (`Some(None)`: the role was made without one).
    role_applied: std::sync::Mutex<Option<Option<Secret>>>,
}

/// What `postmaster.pid` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PidState {
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

struct ProgramOutput {
    stdout: String,
    stderr: String,
}

/// Row of the observation query; see [`OBSERVE_SQL`].
type ObserveRow = (
    bool,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    bool,
    Vec<String>,
    Option<String>,
    String,
);

/// Everything [`Observation`] holds, in one round trip. `in_recovery` is
/// evaluated once (the volatile sub-select is not flattened), and the CASEs
/// keep primary-only functions away from a standby and vice versa.
const OBSERVE_SQL: &str = "\
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
       current_setting('synchronous_standby_names')
  FROM (SELECT pg_is_in_recovery() AS in_recovery) AS r";

impl PgController {
    pub fn new(settings: PgSettings) -> Self {
        PgController {
            settings,
            conn: Mutex::new(None),
            role_applied: std::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// The replication password now, when one is configured (the file is
    /// read again: a rotated password is used at once).
    fn replication_password(&self) -> Result<Option<Secret>, PgError> {
        self.settings
            .replication_password
            .as_ref()
            .map(|source| source.password().map_err(PgError::Other))
            .transpose()
    }

    /// Keep the password file in line with the password (when one is
    /// configured). Returns whether it changed.
    fn refresh_passfile(&self) -> Result<bool, PgError> {
        match self.replication_password()? {
            Some(password) => write_if_changed(
                &self.settings.passfile(),
                &access::passfile(&self.settings.replication_user, &password),
            ),
            None => Ok(false),
        }
    }

    /// The environment of pg_basebackup and pg_rewind: C messages, the
    /// upstream connect timeout, the password file when there is one (the
    /// password never goes on a command line), and TLS when configured.
    fn upstream_env(&self) -> Result<Vec<(&'static str, String)>, PgError> {
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

    /// The keeper's block of pg_hba.conf for `group_hosts`.
    fn hba_rules(&self, group_hosts: &[String]) -> HbaRules {
        HbaRules {
            replication_user: self.settings.replication_user.clone(),
            superuser: self.settings.superuser.clone(),
            method: if self.settings.replication_password.is_some() {
                Method::ScramSha256
            } else {
                Method::Trust
            },
            group_hosts: group_hosts.to_vec(),
            trust_networks: self.settings.trust_networks.clone(),
            tls_only: self.settings.postgres_tls.is_some(),
        }
    }

    /// The server log, beside PGDATA (`<pgdata>.log`) so that replacing
    /// PGDATA by a clone never deletes it.
    pub fn log_file(&self) -> PathBuf {
        sibling_path(&self.settings.pgdata, ".log")
    }

    /// Whether `postmaster.pid` names a live postmaster (it may still be
    /// starting or stopping).
    pub fn postmaster_running(&self) -> bool {
        matches!(self.pid_state(), PidState::Alive(_))
    }

    fn bin(&self, program: &str) -> PathBuf {
        self.settings.bin_dir.join(program)
    }

    fn pgdata_arg(&self) -> OsString {
        self.settings.pgdata.clone().into_os_string()
    }

    fn pid_state(&self) -> PidState {
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

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }

    async fn connect(&self) -> Result<PgConnection, PgError> {
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
    async fn fetch_all<T>(
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

    async fn fetch_one<T>(&self, sql: &'static str, binds: &[&str]) -> Result<T, PgError>
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
    async fn execute_batch(&self, sql: &str) -> Result<(), PgError> {
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

    async fn in_recovery(&self) -> Result<bool, PgError> {
        let (in_recovery,): (bool,) = self.fetch_one("SELECT pg_is_in_recovery()", &[]).await?;
        Ok(in_recovery)
    }

    async fn transaction_read_only(&self) -> Result<bool, PgError> {
        let (value,): (String,) = self
            .fetch_one("SELECT current_setting('transaction_read_only')", &[])
            .await?;
        Ok(value != "off")
    }

    /// Wait until the server accepts our connection, failing early when the
    /// postmaster is gone.
    async fn wait_accepting(&self, deadline: Instant) -> Result<(), PgError> {
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

    /// Add the tail of the server log to a start failure, and log it.
    fn start_failed(&self, err: PgError) -> PgError {
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

    async fn pg_ctl_stop(&self, mode: &str) -> Result<(), PgError> {
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

    /// `CHECKPOINT` on the rewind source. PostgreSQL 15's pg_rewind reads the
    /// source's timeline from the last checkpoint in its control file; right
    /// after a promotion, until the end-of-recovery checkpoint completes
    /// (a spread checkpoint: seconds), that still names the old timeline, and
    /// pg_rewind wrongly answers "source and target cluster are on the same
    /// timeline / no rewind required" (fixed in PostgreSQL 16).
    async fn checkpoint_source(&self, upstream: &Upstream) -> Result<(), PgError> {
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
        let upstream_timeout = Duration::from_secs(5);
        let mut conn = match tokio::time::timeout(
            upstream_timeout,
            PgConnection::connect_with(&options),
        )
        .await
        {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(PgError::Timeout {
                    program: format!("connecting to {}:{}", upstream.host, upstream.port),
                    timeout: upstream_timeout,
                })
            }
        };
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

    async fn controldata(&self) -> Result<String, PgError> {
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
    async fn cluster_state(&self) -> Result<String, PgError> {
        let output = self.controldata().await?;
        controldata_field(&output, CONTROLDATA_CLUSTER_STATE)
            .map(str::to_string)
            .ok_or_else(|| missing_controldata_field(CONTROLDATA_CLUSTER_STATE))
    }

    fn require_cluster(&self, what: &str) -> Result<(), PgError> {
        if self.has_data_directory() {
            Ok(())
        } else {
            Err(PgError::Other(format!(
                "cannot {what}: {} holds no PostgreSQL cluster (no PG_VERSION)",
                self.settings.pgdata.display()
            )))
        }
    }
}

impl LocalPostgres for PgController {
    fn has_data_directory(&self) -> bool {
        self.settings.pgdata.join("PG_VERSION").is_file()
    }

    fn postmaster_alive(&self) -> bool {
        self.postmaster_running()
    }

    /// Runs initdb into `<pgdata>.initdb-tmp` and renames it into place, so
    /// an initdb killed half-way never leaves a PGDATA that looks usable.
    async fn initdb(&self) -> Result<(), PgError> {
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

    async fn write_config(&self, config: &ManagedConfig) -> Result<bool, PgError> {
        self.require_cluster("write pgpilot.conf")?;
        let pgdata = &self.settings.pgdata;
        let passfile = self.settings.passfile();
        let replication = ReplicationLogin {
            user: &self.settings.replication_user,
            passfile: self
                .settings
                .replication_password
                .as_ref()
                .map(|_| passfile.as_path()),
            tls: self.settings.postgres_tls.as_ref(),
        };
        let rendered = render_config(config, &self.settings.socket_dir, &replication);
        // The password file first: primary_conninfo names it.
        let mut changed = self.refresh_passfile()?;
        changed |= write_if_changed(&pgdata.join(PGPILOT_CONF), &rendered)?;
        changed |= ensure_include_line(&pgdata.join("postgresql.conf"))?;
        changed |= strip_auto_conf(&pgdata.join("postgresql.auto.conf"))?;
        changed |= ensure_hba(
            &pgdata.join("pg_hba.conf"),
            &self.hba_rules(config.group_hosts.as_deref().unwrap_or_default()),
            config.group_hosts.is_some(),
        )?;
        let signal = pgdata.join(STANDBY_SIGNAL);
        match (&config.standby_of, signal.exists()) {
            (Some(_), false) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&signal)
                    .map_err(|e| io_error(&signal, e))?;
                file.sync_all().map_err(|e| io_error(&signal, e))?;
                fsync_dir(pgdata)?;
                changed = true;
            }
            (None, true) => {
                std::fs::remove_file(&signal).map_err(|e| io_error(&signal, e))?;
                fsync_dir(pgdata)?;
                changed = true;
            }
            _ => {}
        }
        if changed {
            info!(
                standby_of = ?config.standby_of.as_ref().map(|u| format!("{}:{}", u.host, u.port)),
                synchronous_standby_names = %config.synchronous_standby_names,
                "postgres: configuration written"
            );
        }
        Ok(changed)
    }

    async fn start(&self) -> Result<(), PgError> {
        self.require_cluster("start PostgreSQL")?;
        let deadline = Instant::now() + PG_CTL_TIMEOUT;
        match self.pid_state() {
            PidState::Alive(_) => {
                // Running already (maybe still starting): done once it answers.
                return self
                    .wait_accepting(deadline)
                    .await
                    .map_err(|e| self.start_failed(e));
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
        run_program(
            "pg_ctl start",
            &self.bin("pg_ctl"),
            &args,
            C_LOCALE,
            PG_CTL_TIMEOUT,
        )
        .await
        .map_err(|e| self.start_failed(e))?;
        self.wait_accepting(Instant::now() + ACCEPT_AFTER_START_TIMEOUT)
            .await
            .map_err(|e| self.start_failed(e))?;
        info!(elapsed = ?started.elapsed(), "postgres: started");
        Ok(())
    }

    async fn stop(&self) -> Result<(), PgError> {
        self.pg_ctl_stop("fast").await
    }

    async fn stop_immediate(&self) -> Result<(), PgError> {
        self.pg_ctl_stop("immediate").await
    }

    async fn reload(&self) -> Result<(), PgError> {
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

    /// Clones into `<pgdata>.clone-tmp`; only a complete clone replaces
    /// PGDATA (the server is stopped first). The old PGDATA is renamed to
    /// `<pgdata>.old` and then deleted.
    async fn base_backup(&self, upstream: &Upstream) -> Result<(), PgError> {
        let pgdata = &self.settings.pgdata;
        let tmp = sibling_path(pgdata, ".clone-tmp");
        let old = sibling_path(pgdata, ".old");
        self.kill_leftover_programs().await;
        prepare_tmp_dir(&tmp)?;
        let args = os_args([
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
        ]);
        let env = self.upstream_env()?;
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        if let Err(err) = run_program(
            "pg_basebackup",
            &self.bin("pg_basebackup"),
            &args,
            &envs,
            BASE_BACKUP_TIMEOUT,
        )
        .await
        {
            remove_dir_if_exists(&tmp);
            return Err(err);
        }
        // pg_basebackup fsyncs the copy itself (no --no-sync).
        set_mode_0700(&tmp)?;
        self.stop().await?;
        if std::fs::symlink_metadata(pgdata).is_ok() {
            remove_dir_all_if_exists(&old)?;
            std::fs::rename(pgdata, &old).map_err(|e| io_error(pgdata, e))?;
        }
        std::fs::rename(&tmp, pgdata).map_err(|e| io_error(pgdata, e))?;
        fsync_parent(pgdata)?;
        remove_dir_all_if_exists(&old)?;
        info!(
            upstream = %format!("{}:{}", upstream.host, upstream.port),
            elapsed = ?started.elapsed(),
            "postgres: base backup done"
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
    /// Call [`LocalPostgres::write_config`] afterwards in any case: pg_rewind
    /// copies the source's configuration files (pgpilot.conf included) and
    /// its standby.signal, or removes ours when the source has none.
    async fn rewind(&self, upstream: &Upstream) -> Result<(), PgError> {
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
                return Ok(());
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
        let args = os_args([target, format!("--source-server={source}").into()]);
        let env = self.upstream_env()?;
        let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = Instant::now();
        let output = run_program(
            "pg_rewind",
            &self.bin("pg_rewind"),
            &args,
            &envs,
            REWIND_TIMEOUT,
        )
        .await?;
        let said = format!("{}{}", output.stdout, output.stderr);
        if said.contains("no rewind required") {
            info!(
                same_timeline = said.contains("on the same timeline"),
                "postgres: pg_rewind: no rewind required"
            );
        } else {
            info!(elapsed = ?started.elapsed(), "postgres: pg_rewind done");
        }
        Ok(())
    }

    async fn wait_replay_caught_up(&self, timeout: Duration) -> Result<(), PgError> {
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

    async fn promote(&self) -> Result<(), PgError> {
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

    /// Slots are created with `immediately_reserve => true`, so the primary
    /// keeps WAL for a standby from the moment its slot exists.
    async fn sync_slots(&self, slots: &[(String, u64)]) -> Result<(), PgError> {
        let names: Vec<String> = slots.iter().map(|(name, _)| name.clone()).collect();
        let standby = self.in_recovery().await?;
        let existing: Vec<(String, bool)> = self
            .fetch_all(
                "SELECT slot_name::text, active FROM pg_replication_slots
                  WHERE slot_type = 'physical'",
                &[],
                QUERY_TIMEOUT,
            )
            .await?;
        if standby {
            // Advance each slot to the node's LSN, never past our replay.
            for (name, lsn) in slots {
                if *lsn == 0 || !existing.iter().any(|(slot, _)| slot == name) {
                    continue;
                }
                let target = format_lsn(*lsn);
                self.fetch_all::<(bool,)>(
                    // CASE: advance only forwards (backwards is an error).
                    "SELECT CASE
                         WHEN least($2::text::pg_lsn, pg_last_wal_replay_lsn()) > coalesce(s.restart_lsn, '0/0')
                         THEN pg_replication_slot_advance($1::text::name,
                                least($2::text::pg_lsn, pg_last_wal_replay_lsn())) IS NOT NULL
                         ELSE false
                     END
                       FROM pg_replication_slots s WHERE s.slot_name = $1::text::name",
                    &[name, &target],
                    QUERY_TIMEOUT,
                )
                .await?;
            }
        }
        for name in &names {
            if existing.iter().any(|(slot, _)| slot == name) {
                continue;
            }
            self.fetch_all::<(String,)>(
                "SELECT slot_name::text FROM pg_create_physical_replication_slot($1::text::name, true)",
                &[name],
                QUERY_TIMEOUT,
            )
            .await?;
            info!(slot = %name, "postgres: created replication slot");
        }
        for (slot, active) in &existing {
            if !slot.starts_with(SLOT_PREFIX) || names.contains(slot) {
                continue;
            }
            if *active {
                debug!(slot = %slot, "postgres: unwanted replication slot still active; kept for now");
                continue;
            }
            self.fetch_all::<(bool,)>(
                "SELECT true FROM pg_drop_replication_slot($1::text::name)",
                &[slot],
                QUERY_TIMEOUT,
            )
            .await?;
            info!(slot = %slot, "postgres: dropped replication slot");
        }
        Ok(())
    }

    async fn ensure_replication_role(&self) -> Result<(), PgError> {
        let password = self.replication_password()?;
        if self
            .role_applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&password)
        {
            return Ok(());
        }
        if self.in_recovery().await? {
            return Ok(());
        }
        // A salted SCRAM verifier: the password itself never reaches the
        // server, its logs or its statistics.
        let verifier = password
            .as_ref()
            .map(|p| postgres_protocol::password::scram_sha_256(p.expose().as_bytes()));
        let sql = access::replication_role_sql(
            &self.settings.replication_user,
            &self.settings.superuser,
            verifier.as_deref(),
        );
        if !sql.is_empty() {
            self.execute_batch(&sql).await?;
        }
        info!(
            role = %self.settings.replication_user,
            password = match &self.settings.replication_password {
                Some(source) => format!("SCRAM-SHA-256 from {}", source.origin()),
                None => "none (trust)".to_string(),
            },
            "postgres: replication role ready"
        );
        *self.role_applied.lock().unwrap_or_else(|e| e.into_inner()) = Some(password);
        Ok(())
    }

    async fn observe(&self) -> Observation {
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
        ) = row;
        let timeline = if in_recovery {
            received_tli
                .filter(|tli| *tli > 0)
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
            lsn: lsn.as_deref().and_then(parse_lsn).unwrap_or(0),
            timeline,
            wal_receiver_streaming: streaming,
            streaming_standbys: standbys,
            // bigint as text: pg_controldata prints the same 64 bits unsigned.
            system_identifier: sysid
                .and_then(|s| s.parse::<i64>().ok())
                .map(|id| id as u64)
                .unwrap_or(0),
            synchronous_standby_names: Some(sync_names),
        }
    }

    async fn system_identifier(&self) -> Result<Option<u64>, PgError> {
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

// ---------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------

fn os_args<const N: usize>(args: [OsString; N]) -> Vec<OsString> {
    args.into()
}

/// Run `program` with a timeout. The child is killed when the timeout
/// expires (or the caller's future is dropped). A non-zero exit becomes
/// [`PgError::Program`] carrying stderr (stdout when stderr is empty), whose
/// lines are also logged at WARN with a `postgres:` prefix.
async fn run_program(
    label: &str,
    program: &Path,
    args: &[OsString],
    envs: &[(&str, &str)],
    timeout: Duration,
) -> Result<ProgramOutput, PgError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_keeper(&mut command);
    debug!(
        program = label,
        ?args,
        "postgres: running {}",
        program.display()
    );
    let started = Instant::now();
    let child = command.spawn().map_err(|source| PgError::Spawn {
        program: format!("{label} ({})", program.display()),
        source,
    })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(PgError::Spawn {
                program: label.to_string(),
                source,
            })
        }
        Err(_) => {
            // Dropping the future dropped the child: kill_on_drop killed it.
            warn!(
                program = label,
                ?timeout,
                "postgres: {label} timed out and was killed"
            );
            return Err(PgError::Timeout {
                program: label.to_string(),
                timeout,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        debug!(program = label, elapsed = ?started.elapsed(), "postgres: {label} done");
        return Ok(ProgramOutput { stdout, stderr });
    }
    let said = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    for line in said.lines() {
        warn!(program = label, "postgres: {label}: {line}");
    }
    Err(PgError::Program {
        program: label.to_string(),
        status: output.status.to_string(),
        stderr: said.to_string(),
    })
}

/// Make the program `command` starts die with the keeper. `kill_on_drop`
/// covers a timeout or a cancelled action, but a keeper that is killed
/// (SIGKILL, OOM killer, a crash) runs no destructor: without this its
/// pg_rewind or pg_basebackup would go on, and the restarted keeper, redoing
/// the same action, would run a second one on the same directory. The
/// kernel sends the child SIGKILL when the thread that spawned it ends; the
/// keeper spawns from its runtime's threads, which live as long as the
/// process. Not inherited across fork: the postmaster that `pg_ctl start`
/// forks outlives the keeper, as it must.
fn die_with_keeper(command: &mut Command) {
    let keeper = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes two system calls; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The keeper died between fork and prctl: go too.
            if nix::unistd::getppid() != keeper {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// What [`LocalPostgres::rewind`] does before running pg_rewind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeforeRewind {
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
fn before_rewind(fresh_clone: bool, state: Option<&str>) -> BeforeRewind {
    if fresh_clone {
        return BeforeRewind::NothingToRewind;
    }
    match state {
        None | Some("shut down" | "shut down in recovery") => BeforeRewind::Rewind,
        Some("in archive recovery") => BeforeRewind::RecoverAsStandby,
        Some(_) => BeforeRewind::DropStandbySignal,
    }
}

/// SIGKILL every process called `program` (its `comm`) that has `arg` among
/// its arguments, other than this one, and wait (up to `timeout`) until they
/// are gone. Returns their pids. Linux only (`/proc`); elsewhere none.
async fn kill_programs_naming(program: &str, arg: &std::ffi::OsStr, timeout: Duration) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let pids: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.strip_suffix(b"\n").unwrap_or(&comm) == program.as_bytes())
        })
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect();
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    // Gone, or a zombie (its files are closed) that its parent reaps.
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
            stat.rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .is_none_or(|state| state == "Z" || state == "X")
        })
    };
    let deadline = Instant::now() + timeout;
    while !pids.iter().all(|&pid| gone(pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pids
}

/// Where to find the PostgreSQL server programs: `configured` when given
/// (it must hold pg_ctl), else the directory of the pg_ctl found on PATH
/// (symlinks resolved, so a `/usr/local/bin/pg_ctl` link leads to the real
/// bin directory), else the highest version under `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, PgError> {
    find_bin_dir_in(
        configured,
        std::env::var_os("PATH"),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_bin_dir_in(
    configured: Option<&Path>,
    path_var: Option<OsString>,
    lib_root: &Path,
) -> Result<PathBuf, PgError> {
    if let Some(dir) = configured {
        return if dir.join("pg_ctl").is_file() {
            Ok(dir.to_path_buf())
        } else {
            Err(PgError::Other(format!(
                "pg_bin_dir {} does not contain pg_ctl; set pg_bin_dir to the directory \
                 holding the PostgreSQL server programs (for example /usr/lib/postgresql/15/bin)",
                dir.display()
            )))
        };
    }
    if let Some(path_var) = path_var {
        for dir in std::env::split_paths(&path_var) {
            let candidate = dir.join("pg_ctl");
            if !candidate.is_file() {
                continue;
            }
            let Ok(real) = std::fs::canonicalize(&candidate) else {
                continue;
            };
            // Skip wrappers (Debian's pg_wrapper) that are not pg_ctl itself.
            if let Some(parent) = real.parent().filter(|p| p.join("pg_ctl").is_file()) {
                return Ok(parent.to_path_buf());
            }
        }
    }
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir(lib_root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(parse_version) else {
                continue;
            };
            let bin = entry.path().join("bin");
            if !bin.join("pg_ctl").is_file() {
                continue;
            }
            if best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, bin));
            }
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(|| {
        PgError::Other(format!(
            "PostgreSQL server binaries (pg_ctl) were not found on PATH or under {}/*/bin; \
             install them (for example `apt-get install postgresql-15`) or set `pg_bin_dir` \
             to the directory holding pg_ctl",
            lib_root.display()
        ))
    })
}

fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.')
        .map(|part| part.parse::<u32>().ok())
        .collect()
}

// ---------------------------------------------------------------------------
// Configuration files
// ---------------------------------------------------------------------------

/// How the nodes talk: the replication role a standby logs in as, the
/// password file when there is a password, and PostgreSQL's TLS when
/// configured (this server's certificate, the upstream checked).
struct ReplicationLogin<'a> {
    user: &'a str,
    passfile: Option<&'a Path>,
    tls: Option<&'a PostgresTls>,
}

/// The content of `pgpilot.conf`.
fn render_config(config: &ManagedConfig, socket_dir: &Path, login: &ReplicationLogin) -> String {
    let mut out = String::from(
        "# Written by the pgpilot keeper before every start; do not edit.\n\
         # Included from postgresql.conf; postgresql.auto.conf must not override it.\n",
    );
    let mut set = |name: &str, value: String| {
        out.push_str(name);
        out.push_str(" = ");
        out.push_str(&value);
        out.push('\n');
    };
    set("port", config.port.to_string());
    set("listen_addresses", quote_conf(&config.listen_addresses));
    set(
        "unix_socket_directories",
        quote_conf(&socket_dir.to_string_lossy()),
    );
    set("cluster_name", quote_conf(&config.application_name));
    set("wal_level", "replica".into());
    set("hot_standby", "on".into());
    set("wal_log_hints", "on".into());
    set("max_wal_senders", "16".into());
    set("max_replication_slots", "16".into());
    set("wal_keep_size", quote_conf("512MB"));
    set(
        "wal_sender_timeout",
        quote_conf(&format!("{}ms", millis_ceil(config.wal_sender_timeout))),
    );
    set(
        "wal_receiver_timeout",
        quote_conf(&format!("{}ms", millis_ceil(config.wal_receiver_timeout))),
    );
    set("wal_receiver_status_interval", quote_conf("1s"));
    set("wal_retrieve_retry_interval", quote_conf("500ms"));
    set("hot_standby_feedback", "on".into());
    set("recovery_target_timeline", quote_conf("latest"));
    // Without TLS between the nodes, ssl is left to postgresql.conf (an
    // operator's TLS for clients).
    if let Some(tls) = login.tls {
        set("ssl", "on".into());
        set(
            "ssl_cert_file",
            quote_conf(&tls.cert_file.to_string_lossy()),
        );
        set("ssl_key_file", quote_conf(&tls.key_file.to_string_lossy()));
    }
    set(
        "synchronous_standby_names",
        quote_conf(&config.synchronous_standby_names),
    );
    match &config.standby_of {
        Some(upstream) => {
            let mut conninfo = format!(
                "host={} port={} user={} application_name={} connect_timeout=2 \
                 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2",
                conninfo_value(&upstream.host),
                upstream.port,
                conninfo_value(login.user),
                conninfo_value(&config.application_name),
            );
            if let Some(passfile) = login.passfile {
                conninfo.push_str(" passfile=");
                conninfo.push_str(&conninfo_value(&passfile.to_string_lossy()));
            }
            if let Some(tls) = login.tls {
                conninfo.push_str(&tls.conninfo());
            }
            set("primary_conninfo", quote_conf(&conninfo));
            set("primary_slot_name", quote_conf(&upstream.slot_name));
        }
        None => {
            set("primary_conninfo", quote_conf(""));
            set("primary_slot_name", quote_conf(""));
        }
    }
    out
}

/// Rounded up, so that a sub-millisecond timeout never becomes 0 (= disabled).
fn millis_ceil(d: Duration) -> u128 {
    d.as_micros().div_ceil(1000)
}

/// A postgresql.conf string literal: single quotes doubled, backslashes
/// doubled (the file parser reads backslash escapes), line breaks escaped.
fn quote_conf(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A libpq conninfo value: bare when safe, else single-quoted with `\'` and `\\`.
fn conninfo_value(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '\'' && c != '\\' && c != '=');
    if bare {
        return value.to_string();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Make sure postgresql.conf holds [`INCLUDE_LINE`] exactly once (appended
/// when missing, duplicates removed). Returns whether the file changed.
fn ensure_include_line(path: &Path) -> Result<bool, PgError> {
    let content = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let mut seen = false;
    let mut out = String::with_capacity(content.len() + INCLUDE_LINE.len() + 2);
    for line in content.split_inclusive('\n') {
        if line.trim() == INCLUDE_LINE {
            if seen {
                continue;
            }
            seen = true;
        }
        out.push_str(line);
    }
    if !seen {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n# pgpilot's settings; keep this the last line.\n");
        out.push_str(INCLUDE_LINE);
        out.push('\n');
    }
    if out == content {
        return Ok(false);
    }
    write_atomic(path, out.as_bytes())?;
    Ok(true)
}

/// Remove from postgresql.auto.conf the settings pgpilot owns
/// ([`AUTO_CONF_FORBIDDEN`]). Returns whether the file changed.
fn strip_auto_conf(path: &Path) -> Result<bool, PgError> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(io_error(path, err)),
    };
    let mut out = String::with_capacity(content.len());
    let mut removed = Vec::new();
    for line in content.split_inclusive('\n') {
        let name = conf_line_name(line);
        if AUTO_CONF_FORBIDDEN
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            removed.push(name.to_string());
            continue;
        }
        out.push_str(line);
    }
    if removed.is_empty() {
        return Ok(false);
    }
    warn!(
        removed = ?removed,
        "postgres: removed settings from postgresql.auto.conf that would override pgpilot.conf"
    );
    write_atomic(path, out.as_bytes())?;
    Ok(true)
}

/// Keep the keeper's block of pg_hba.conf in line with `rules`. Returns
/// whether the file changed.
/// When the group's hosts are not `known` yet, a block already there is
/// kept (one is written for `rules`' hosts otherwise).
fn ensure_hba(path: &Path, rules: &HbaRules, known: bool) -> Result<bool, PgError> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(io_error(path, err)),
    };
    if !known && access::has_block(&content) {
        return Ok(false);
    }
    let out = access::render_hba(&content, rules);
    if out == content {
        return Ok(false);
    }
    write_atomic(path, out.as_bytes())?;
    info!(
        replication_user = %rules.replication_user,
        method = ?rules.method,
        group_hosts = ?rules.group_hosts,
        trust_networks = ?rules.trust_networks,
        "postgres: pg_hba.conf block written"
    );
    Ok(true)
}

/// The parameter name a postgresql.conf line sets ("" for comments/blank).
fn conf_line_name(line: &str) -> &str {
    let line = line.trim_start();
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=' || c == '#')
        .unwrap_or(line.len());
    &line[..end]
}

/// Write `content` unless the file already holds exactly that.
fn write_if_changed(path: &Path, content: &str) -> Result<bool, PgError> {
    match std::fs::read(path) {
        Ok(old) if old == content.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(path, err)),
    }
    write_atomic(path, content.as_bytes())?;
    Ok(true)
}

/// tmp file + fsync + rename + fsync of the directory.
fn write_atomic(path: &Path, content: &[u8]) -> Result<(), PgError> {
    let tmp = sibling_path(path, ".pgpilot-tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error(&tmp, e))?;
    file.write_all(content).map_err(|e| io_error(&tmp, e))?;
    file.sync_all().map_err(|e| io_error(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
    fsync_parent(path)
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// `path` with `suffix` appended to its last component (`/a/pgdata` +
/// `.log` = `/a/pgdata.log`), ignoring a trailing slash.
fn sibling_path(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.components().collect::<PathBuf>().into_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_error(path: &Path, source: std::io::Error) -> PgError {
    PgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), PgError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn fsync_parent(path: &Path) -> Result<(), PgError> {
    let normalized: PathBuf = path.components().collect();
    match normalized.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
        _ => fsync_dir(Path::new(".")),
    }
}

fn set_mode_0700(dir: &Path) -> Result<(), PgError> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error(dir, e))
}

/// Remove a stale temporary directory and make sure its parent exists.
fn prepare_tmp_dir(tmp: &Path) -> Result<(), PgError> {
    remove_dir_all_if_exists(tmp)?;
    if let Some(parent) = tmp.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    Ok(())
}

fn remove_dir_all_if_exists(dir: &Path) -> Result<(), PgError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error(dir, err)),
    }
}

/// Best effort, on an error path.
fn remove_dir_if_exists(dir: &Path) {
    if let Err(err) = remove_dir_all_if_exists(dir) {
        warn!(error = %err, "could not remove {}", dir.display());
    }
}

/// The last `lines` lines of a (possibly large) log file.
fn log_tail(path: &Path, lines: usize) -> String {
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

fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or(sql).trim()
}

/// Whether a query error means the connection is unusable.
fn connection_broken(err: &sqlx::Error) -> bool {
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

const CONTROLDATA_SYSTEM_IDENTIFIER: &str = "Database system identifier";
const CONTROLDATA_CLUSTER_STATE: &str = "Database cluster state";

/// The value of a `label:` line of `pg_controldata` output (LC_ALL=C).
fn controldata_field<'a>(output: &'a str, label: &str) -> Option<&'a str> {
    output.lines().find_map(|line| {
        line.strip_prefix(label)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

fn missing_controldata_field(label: &str) -> PgError {
    PgError::Other(format!("pg_controldata printed no \"{label}\" line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream {
        Upstream {
            host: "10.0.0.1".into(),
            port: 5433,
            slot_name: "pgpilot_node_2".into(),
        }
    }

    fn config(standby_of: Option<Upstream>) -> ManagedConfig {
        ManagedConfig {
            port: 5432,
            listen_addresses: "*".into(),
            application_name: "node_2".into(),
            standby_of,
            synchronous_standby_names: "ANY 1 (node_1, node_3)".into(),
            wal_sender_timeout: Duration::from_secs(5),
            wal_receiver_timeout: Duration::from_millis(4500),
            group_hosts: Some(vec!["10.0.0.2".into(), "10.0.0.1".into()]),
        }
    }

    fn lines(rendered: &str) -> Vec<&str> {
        rendered.lines().collect()
    }

    #[test]
    fn quoting_for_postgresql_conf() {
        assert_eq!(quote_conf(""), "''");
        assert_eq!(quote_conf("plain"), "'plain'");
        assert_eq!(quote_conf("it's"), "'it''s'");
        assert_eq!(quote_conf(r"a\b"), r"'a\\b'");
        assert_eq!(quote_conf("a\nb"), r"'a\nb'");
    }

    #[test]
    fn quoting_for_conninfo() {
        assert_eq!(conninfo_value("db1.example"), "db1.example");
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(conninfo_value("my app"), "'my app'");
        assert_eq!(conninfo_value(r"o'k\x"), r"'o\'k\\x'");
        assert_eq!(conninfo_value("a=b"), "'a=b'");
    }

    #[test]
    fn renders_a_standby_config() {
        let rendered = render_config(
            &config(Some(upstream())),
            Path::new("/run/pg"),
            &login("pgpilot_replication", None),
        );
        let l = lines(&rendered);
        for expected in [
            "port = 5432",
            "listen_addresses = '*'",
            "unix_socket_directories = '/run/pg'",
            "cluster_name = 'node_2'",
            "wal_level = replica",
            "hot_standby = on",
            "wal_log_hints = on",
            "max_wal_senders = 16",
            "max_replication_slots = 16",
            "wal_keep_size = '512MB'",
            "wal_sender_timeout = '5000ms'",
            "wal_receiver_timeout = '4500ms'",
            "wal_receiver_status_interval = '1s'",
            "wal_retrieve_retry_interval = '500ms'",
            "hot_standby_feedback = on",
            "recovery_target_timeline = 'latest'",
            "synchronous_standby_names = 'ANY 1 (node_1, node_3)'",
            "primary_conninfo = 'host=10.0.0.1 port=5433 user=pgpilot_replication application_name=node_2 \
             connect_timeout=2 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2'",
            "primary_slot_name = 'pgpilot_node_2'",
        ] {
            assert!(l.contains(&expected), "missing {expected:?} in\n{rendered}");
        }
        // Every setting appears once.
        let names: Vec<&str> = l
            .iter()
            .map(|line| conf_line_name(line))
            .filter(|n| !n.is_empty())
            .collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
        assert!(!rendered.contains("passfile"), "no password, no passfile");
    }

    #[test]
    fn postgres_key_permissions_as_postgresql_checks_them() {
        let key = Path::new("/k.key");
        assert_eq!(postgres_key_problem(key, 100, 0o600, 100), None);
        assert_eq!(postgres_key_problem(key, 100, 0o400, 100), None);
        assert_eq!(postgres_key_problem(key, 0, 0o640, 100), None);
        for (owner, mode) in [(100, 0o640), (100, 0o604), (0, 0o644), (0, 0o660)] {
            let problem = postgres_key_problem(key, owner, mode, 100).unwrap();
            assert!(problem.contains("chmod 600"), "{problem}");
        }
        let problem = postgres_key_problem(key, 7, 0o600, 100).unwrap();
        assert!(problem.contains("chown"), "{problem}");
    }

    #[test]
    fn tls_between_the_nodes_in_pgpilot_conf() {
        let tls = PostgresTls {
            cert_file: "/tls/pg.crt".into(),
            key_file: "/tls/pg.key".into(),
            ca_file: "/tls/ca.crt".into(),
        };
        let plain = render_config(
            &config(Some(upstream())),
            Path::new("/run/pg"),
            &login("pgpilot_replication", None),
        );
        assert!(!plain.contains("ssl"), "no TLS, ssl left alone:\n{plain}");
        let cfg = config(Some(upstream()));
        let mut l = login("pgpilot_replication", None);
        l.tls = Some(&tls);
        let rendered = render_config(&cfg, Path::new("/run/pg"), &l);
        let lines = lines(&rendered);
        for expected in [
            "ssl = on",
            "ssl_cert_file = '/tls/pg.crt'",
            "ssl_key_file = '/tls/pg.key'",
        ] {
            assert!(
                lines.contains(&expected),
                "missing {expected:?} in\n{rendered}"
            );
        }
        assert!(
            rendered.contains(" sslmode=verify-full sslrootcert=/tls/ca.crt'"),
            "{rendered}"
        );
    }

    fn login<'a>(user: &'a str, passfile: Option<&'a Path>) -> ReplicationLogin<'a> {
        ReplicationLogin {
            user,
            passfile,
            tls: None,
        }
    }

    #[test]
    fn a_standby_with_a_password_names_the_passfile_never_the_password() {
        let rendered = render_config(
            &config(Some(upstream())),
            Path::new("/run/pg"),
            &login("repl", Some(Path::new("/var/lib/pg/my data.pgpass"))),
        );
        assert!(
            rendered.contains("keepalives_count=2 passfile=''/var/lib/pg/my data.pgpass'''\n"),
            "{rendered}"
        );
        assert!(!rendered.contains("password="), "{rendered}");
    }

    #[test]
    fn renders_a_primary_config_and_quotes_both_layers() {
        let mut cfg = config(None);
        cfg.synchronous_standby_names = "\"it's\"".into();
        let rendered = render_config(&cfg, Path::new("/tmp/o'dd"), &login("postgres", None));
        let l = lines(&rendered);
        assert!(l.contains(&"primary_conninfo = ''"));
        assert!(l.contains(&"primary_slot_name = ''"));
        assert!(l.contains(&"synchronous_standby_names = '\"it''s\"'"));
        assert!(l.contains(&"unix_socket_directories = '/tmp/o''dd'"));

        // An application name and user needing conninfo quoting, inside a
        // postgresql.conf string: `'` → `\'` (conninfo) → `\\''` (conf).
        let mut cfg = config(Some(upstream()));
        cfg.application_name = "it's".into();
        let rendered = render_config(&cfg, Path::new("/run/pg"), &login("super user", None));
        assert!(
            rendered
                .contains(r"user=''super user'' application_name=''it\\''s'' connect_timeout=2"),
            "{rendered}"
        );
        assert!(rendered.contains("cluster_name = 'it''s'"));
    }

    #[test]
    fn sub_millisecond_timeouts_round_up() {
        assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
        assert_eq!(millis_ceil(Duration::from_millis(1500)), 1500);
        assert_eq!(millis_ceil(Duration::ZERO), 0);
    }

    #[test]
    fn include_line_is_added_once() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("postgresql.conf");

        std::fs::write(&conf, "#port = 5432\nshared_buffers = 128MB").unwrap();
        assert!(ensure_include_line(&conf).unwrap());
        let content = std::fs::read_to_string(&conf).unwrap();
        assert!(content.starts_with("#port = 5432\nshared_buffers = 128MB\n"));
        assert!(content.ends_with(&format!("{INCLUDE_LINE}\n")));
        assert_eq!(content.matches(INCLUDE_LINE).count(), 1);

        // Idempotent.
        assert!(!ensure_include_line(&conf).unwrap());
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), content);

        // Duplicates are removed, the first one stays.
        std::fs::write(
            &conf,
            format!("a = 1\n{INCLUDE_LINE}\nb = 2\n  {INCLUDE_LINE}\n"),
        )
        .unwrap();
        assert!(ensure_include_line(&conf).unwrap());
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            format!("a = 1\n{INCLUDE_LINE}\nb = 2\n")
        );
        assert!(!dir.path().join("postgresql.conf.pgpilot-tmp").exists());
    }

    #[test]
    fn auto_conf_loses_only_our_settings() {
        let dir = tempfile::tempdir().unwrap();
        let auto = dir.path().join("postgresql.auto.conf");
        assert!(!strip_auto_conf(&auto).unwrap(), "a missing file is fine");

        std::fs::write(
            &auto,
            "# Do not edit this file manually!\n\
             work_mem = '8MB'\n\
             synchronous_standby_names = 'x'\n\
             \tPrimary_Conninfo='host=a'\n\
             primary_slot_name = 's'\n",
        )
        .unwrap();
        assert!(strip_auto_conf(&auto).unwrap());
        assert_eq!(
            std::fs::read_to_string(&auto).unwrap(),
            "# Do not edit this file manually!\nwork_mem = '8MB'\n"
        );
        assert!(!strip_auto_conf(&auto).unwrap());
    }

    #[tokio::test]
    async fn write_config_is_idempotent_and_manages_standby_signal() {
        let dir = tempfile::tempdir().unwrap();
        let pgdata = dir.path().join("pgdata");
        let pg = PgController::new(PgSettings {
            pgdata: pgdata.clone(),
            bin_dir: PathBuf::from("/nonexistent"),
            socket_dir: dir.path().to_path_buf(),
            superuser: "postgres".into(),
            port: 5432,
            trust_networks: Vec::new(),
            replication_user: "pgpilot_replication".into(),
            replication_password: None,
            postgres_tls: None,
        });
        assert!(
            pg.write_config(&config(None)).await.is_err(),
            "no cluster yet"
        );

        std::fs::create_dir(&pgdata).unwrap();
        std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(pgdata.join("postgresql.conf"), "# empty\n").unwrap();
        std::fs::write(
            pgdata.join("postgresql.auto.conf"),
            "primary_conninfo = 'host=old'\n",
        )
        .unwrap();

        let standby = config(Some(upstream()));
        assert!(pg.write_config(&standby).await.unwrap());
        assert!(pgdata.join("standby.signal").is_file());
        assert_eq!(
            std::fs::read_to_string(pgdata.join(PGPILOT_CONF)).unwrap(),
            render_config(&standby, dir.path(), &login("pgpilot_replication", None))
        );
        assert_eq!(
            std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap(),
            ""
        );
        assert!(!pg.write_config(&standby).await.unwrap(), "nothing changed");

        assert!(pg.write_config(&config(None)).await.unwrap());
        assert!(!pgdata.join("standby.signal").exists());
        assert!(!pg.write_config(&config(None)).await.unwrap());
        let conf = std::fs::read_to_string(pgdata.join("postgresql.conf")).unwrap();
        assert_eq!(conf.matches(INCLUDE_LINE).count(), 1);
    }

    fn hba_rules(hosts: &[&str], trust: &[&str]) -> HbaRules {
        HbaRules {
            replication_user: "pgpilot_replication".into(),
            superuser: "postgres".into(),
            method: Method::ScramSha256,
            group_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            trust_networks: trust.iter().map(|h| h.to_string()).collect(),
            tls_only: false,
        }
    }

    #[test]
    fn ensure_hba_writes_only_changes_and_keeps_a_block_while_hosts_are_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pg_hba.conf");
        let initdb = "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(&path, initdb).unwrap();
        let read = || std::fs::read_to_string(&path).unwrap();
        // Unknown hosts and no block yet: a block for this node only.
        assert!(ensure_hba(&path, &hba_rules(&["10.0.0.1"], &[]), false).unwrap());
        assert!(
            read().contains("host replication \"pgpilot_replication\" 10.0.0.1/32 scram-sha-256")
        );
        assert!(
            read().ends_with(initdb),
            "initdb's lines stay after the block"
        );
        let two = hba_rules(&["10.0.0.1", "10.0.0.2"], &["samenet"]);
        assert!(ensure_hba(&path, &two, true).unwrap());
        assert!(!ensure_hba(&path, &two, true).unwrap(), "nothing changed");
        let written = read();
        assert!(written.contains("10.0.0.2/32 scram-sha-256"));
        assert!(written.contains("host replication all samenet trust"));
        // A keeper restarted without the monitor keeps the hosts it had.
        assert!(!ensure_hba(&path, &hba_rules(&["10.0.0.1"], &[]), false).unwrap());
        assert_eq!(read(), written);
        // Lines an operator added stay.
        std::fs::write(
            &path,
            format!("{written}host all all 192.168.0.0/24 scram-sha-256\n"),
        )
        .unwrap();
        assert!(ensure_hba(&path, &hba_rules(&["10.0.0.1"], &[]), true).unwrap());
        assert!(read().contains("192.168.0.0/24 scram-sha-256"));
        assert!(!read().contains("10.0.0.2/32"));
    }

    #[test]
    fn parses_pg_controldata() {
        let output = "pg_control version number:            1300\n\
                      Catalog version number:               202209061\n\
                      Database system identifier:           7380981279455316887\n\
                      Database cluster state:               in production\n";
        assert_eq!(
            controldata_field(output, CONTROLDATA_SYSTEM_IDENTIFIER),
            Some("7380981279455316887")
        );
        assert_eq!(
            controldata_field(output, CONTROLDATA_CLUSTER_STATE),
            Some("in production")
        );
        assert_eq!(
            controldata_field("garbage", CONTROLDATA_CLUSTER_STATE),
            None
        );
    }

    /// A program the keeper runs is SIGKILLed when the keeper goes: here
    /// the thread that spawned it ends without reaping it (a killed keeper
    /// reaps nothing either).
    #[test]
    fn programs_die_with_the_keeper() {
        use nix::sys::wait::{waitpid, WaitStatus};
        let spawner = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut command = Command::new("sleep");
                command.arg("30");
                die_with_keeper(&mut command);
                let child = command.spawn().unwrap();
                let pid = child.id().unwrap() as i32;
                // Neither killed on drop nor reaped: as after a SIGKILL.
                std::mem::forget(child);
                pid
            })
        });
        let pid = spawner.join().unwrap();
        let started = Instant::now();
        let status = waitpid(Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            status,
            WaitStatus::Signaled(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL, false)
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_clone_that_never_started_is_not_rewound() {
        use BeforeRewind::*;
        // A keeper killed after the clone fell back from a failed rewind,
        // before the start: backup_label, standby.signal, "in production"
        // (the upstream's state, copied). Rewinding it made it diverge.
        assert_eq!(before_rewind(true, Some("in production")), NothingToRewind);
        assert_eq!(before_rewind(true, None), NothingToRewind);
        assert_eq!(before_rewind(false, None), Rewind);
        assert_eq!(before_rewind(false, Some("shut down")), Rewind);
        assert_eq!(before_rewind(false, Some("shut down in recovery")), Rewind);
        assert_eq!(
            before_rewind(false, Some("in archive recovery")),
            RecoverAsStandby
        );
        assert_eq!(
            before_rewind(false, Some("in production")),
            DropStandbySignal
        );
    }

    #[tokio::test]
    async fn leftover_programs_naming_a_directory_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data.clone-tmp");
        let spawn = |arg: &Path| {
            std::process::Command::new("sh")
                // `; :` keeps sh itself running (no exec of the last command).
                .args(["-c", "sleep 30; :", "sh", "-D"])
                .arg(arg)
                .spawn()
                .unwrap()
        };
        let mut ours = spawn(&target);
        let mut other = spawn(&dir.path().join("elsewhere"));
        let killed = kill_programs_naming("sh", target.as_os_str(), Duration::from_secs(10)).await;
        // sh's own child may be caught between fork and exec, still `sh`
        // with our arguments: a copy of the program, rightly killed too.
        assert!(killed.contains(&(ours.id() as i32)), "{killed:?}");
        assert!(!killed.contains(&(other.id() as i32)), "{killed:?}");
        let status = ours.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(
            other.try_wait().unwrap().is_none(),
            "another directory's program lives"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn sibling_paths() {
        assert_eq!(
            sibling_path(Path::new("/var/lib/pg/data"), ".log"),
            PathBuf::from("/var/lib/pg/data.log")
        );
        assert_eq!(
            sibling_path(Path::new("/var/lib/pg/data/"), ".clone-tmp"),
            PathBuf::from("/var/lib/pg/data.clone-tmp")
        );
    }

    #[test]
    fn finds_bin_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lib");
        let touch = |p: PathBuf| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        };

        let err = find_bin_dir_in(None, Some(OsString::new()), &root)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PostgreSQL server binaries"), "{err}");
        assert!(err.contains("apt-get install postgresql-15"), "{err}");
        assert!(err.contains("pg_bin_dir"), "{err}");

        for version in ["9.6", "13", "15", "not-a-version"] {
            touch(root.join(version).join("bin/pg_ctl"));
        }
        std::fs::create_dir_all(root.join("16/bin")).unwrap(); // no pg_ctl
        assert_eq!(
            find_bin_dir_in(None, None, &root).unwrap(),
            root.join("15/bin")
        );

        // PATH wins, through a symlink to the real directory.
        let real = dir.path().join("real/bin");
        touch(real.join("pg_ctl"));
        let links = dir.path().join("links");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(real.join("pg_ctl"), links.join("pg_ctl")).unwrap();
        let path_var = std::env::join_paths([dir.path().join("empty"), links]).unwrap();
        assert_eq!(
            find_bin_dir_in(None, Some(path_var), &root).unwrap(),
            std::fs::canonicalize(&real).unwrap()
        );

        // A configured directory must hold pg_ctl.
        assert_eq!(find_bin_dir_in(Some(&real), None, &root).unwrap(), real);
        let err = find_bin_dir_in(Some(&root), None, &root)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not contain pg_ctl"), "{err}");
    }

    // -----------------------------------------------------------------------
    // Real PostgreSQL
    // -----------------------------------------------------------------------

    /// Stops both servers (immediate) however the test ends.
    struct StopOnDrop(Vec<(PathBuf, PathBuf)>);

    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            for (bin_dir, pgdata) in &self.0 {
                if std::thread::panicking() {
                    let log = sibling_path(pgdata, ".log");
                    eprintln!("--- {} ---\n{}", log.display(), log_tail(&log, 60));
                }
                if pgdata.join("postmaster.pid").exists() {
                    let _ = std::process::Command::new(bin_dir.join("pg_ctl"))
                        .args(["-m", "immediate", "-w", "stop", "-D"])
                        .arg(pgdata)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn wait_until<F, Fut>(
        what: &str,
        timeout: Duration,
        mut cond: F,
    ) -> anyhow::Result<Duration>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let started = Instant::now();
        while !cond().await {
            if started.elapsed() > timeout {
                anyhow::bail!("timed out after {timeout:?} waiting until {what}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(started.elapsed())
    }

    fn node_config(port: u16, name: &str, standby_of: Option<Upstream>) -> ManagedConfig {
        ManagedConfig {
            port,
            listen_addresses: "127.0.0.1".into(),
            application_name: name.into(),
            standby_of,
            synchronous_standby_names: String::new(),
            wal_sender_timeout: Duration::from_secs(5),
            wal_receiver_timeout: Duration::from_secs(5),
            group_hosts: Some(vec!["127.0.0.1".into()]),
        }
    }

    /// initdb → primary → observe → slots → clone → standby streams →
    /// synchronous commit → promote → rewind the old primary → it streams
    /// from the new one → stop. PostgreSQL refuses to run as root; to run
    /// it by hand: `runuser -u postgres -- <test binary> real_postgres --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_postgres_end_to_end() -> anyhow::Result<()> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_ansi(false)
            .with_env_filter("pgpilot_keeper=debug")
            .try_init();
        if nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipping real_postgres_end_to_end: PostgreSQL refuses to run as root; \
                 the end-to-end suite covers it (or run this test as an unprivileged user)"
            );
            return Ok(());
        }
        let bin_dir = match find_bin_dir(None) {
            Ok(dir) => dir,
            Err(err) => {
                eprintln!("skipping real_postgres_end_to_end: {err}");
                return Ok(());
            }
        };
        let dir = tempfile::tempdir()?;
        let settings = |name: &str, port: u16| PgSettings {
            pgdata: dir.path().join(name).join("pgdata"),
            bin_dir: bin_dir.clone(),
            socket_dir: dir.path().to_path_buf(),
            superuser: "pgpilot".into(),
            port,
            trust_networks: Vec::new(),
            replication_user: "pgpilot_replication".into(),
            replication_password: None,
            postgres_tls: None,
        };
        let (port_a, port_b) = (free_port(), free_port());
        let a = PgController::new(settings("a", port_a));
        let b = PgController::new(settings("b", port_b));
        let _guard = StopOnDrop(vec![
            (bin_dir.clone(), a.settings().pgdata.clone()),
            (bin_dir.clone(), b.settings().pgdata.clone()),
        ]);
        let result = scenario(&a, &b, port_a, port_b).await;
        if result.is_err() {
            for pg in [&a, &b] {
                eprintln!(
                    "--- {} ---\n{}",
                    pg.log_file().display(),
                    log_tail(&pg.log_file(), 40)
                );
            }
        }
        a.stop_immediate().await?;
        b.stop_immediate().await?;
        result
    }

    async fn slots(pg: &PgController) -> Result<Vec<String>, PgError> {
        let rows = pg
            .fetch_all::<(String,)>(
                "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
                &[],
                QUERY_TIMEOUT,
            )
            .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    async fn scenario(
        a: &PgController,
        b: &PgController,
        port_a: u16,
        port_b: u16,
    ) -> anyhow::Result<()> {
        let t = Instant::now();
        a.initdb().await?;
        eprintln!("initdb: {:?}", t.elapsed());
        a.initdb().await?; // idempotent
        assert_eq!(b.system_identifier().await?, None);
        let sysid = a.system_identifier().await?.expect("a has a cluster");

        assert!(a.write_config(&node_config(port_a, "a", None)).await?);
        assert!(!a.write_config(&node_config(port_a, "a", None)).await?);
        assert!(!a.observe().await.running);
        assert_eq!(a.observe().await.system_identifier, sysid);
        let t = Instant::now();
        a.start().await?;
        eprintln!("start primary: {:?}", t.elapsed());
        a.start().await?; // idempotent

        let obs = a.observe().await;
        assert!(obs.running && !obs.in_recovery, "{obs:?}");
        assert_eq!(obs.timeline, 1);
        assert!(obs.lsn > 0);
        assert_eq!(obs.system_identifier, sysid);
        assert!(!obs.wal_receiver_streaming);
        assert!(obs.streaming_standbys.is_empty());

        a.sync_slots(&[("pgpilot_b".into(), 0), ("pgpilot_gone".into(), 0)])
            .await?;
        assert_eq!(slots(a).await?, ["pgpilot_b", "pgpilot_gone"]);
        a.sync_slots(&[("pgpilot_b".into(), 0)]).await?;
        a.sync_slots(&[("pgpilot_b".into(), 0)]).await?;
        // The role b clones, streams and (later) rewinds as: no superuser.
        a.ensure_replication_role().await?;
        a.ensure_replication_role().await?;
        assert_eq!(slots(a).await?, ["pgpilot_b"]);

        // Clone and stream.
        let from_a = Upstream {
            host: "127.0.0.1".into(),
            port: port_a,
            slot_name: "pgpilot_b".into(),
        };
        let t = Instant::now();
        b.base_backup(&from_a).await?;
        eprintln!("base backup: {:?}", t.elapsed());
        assert_eq!(b.system_identifier().await?, Some(sysid));
        assert!(
            b.write_config(&node_config(port_b, "b", Some(from_a.clone())))
                .await?
        );
        let t = Instant::now();
        b.start().await?;
        eprintln!("start standby: {:?}", t.elapsed());
        let took = wait_until("b streams from a", Duration::from_secs(30), || async {
            b.observe().await.wal_receiver_streaming
                && a.observe().await.streaming_standbys == ["b"]
        })
        .await?;
        eprintln!("standby streaming after start: {took:?}");
        let obs = b.observe().await;
        assert!(obs.running && obs.in_recovery, "{obs:?}");
        assert_eq!(obs.timeline, 1);
        assert_eq!(obs.system_identifier, sysid);
        // A standby keeps slots too, advanced no further than its replay.
        b.sync_slots(&[("pgpilot_x".into(), obs.lsn)]).await?;
        b.sync_slots(&[("pgpilot_x".into(), obs.lsn)]).await?;
        assert_eq!(slots(b).await?, ["pgpilot_x"]);
        b.sync_slots(&[]).await?;
        assert_eq!(slots(b).await?, Vec::<String>::new());

        // Synchronous replication through pgpilot.conf + reload.
        let mut sync_cfg = node_config(port_a, "a", None);
        sync_cfg.synchronous_standby_names = "ANY 1 (b)".into();
        assert!(a.write_config(&sync_cfg).await?);
        a.reload().await?;
        wait_until("b is a quorum standby", Duration::from_secs(10), || async {
            a.fetch_all::<(String,)>(
                "SELECT sync_state::text FROM pg_stat_replication WHERE application_name = 'b'",
                &[],
                QUERY_TIMEOUT,
            )
            .await
            .is_ok_and(|rows| rows.iter().any(|(s,)| s == "quorum"))
        })
        .await?;
        a.fetch_all::<(i32,)>("CREATE TABLE t AS SELECT 1 AS x", &[], QUERY_TIMEOUT)
            .await?;
        let primary_lsn = a.observe().await.lsn;
        b.wait_replay_caught_up(Duration::from_secs(10)).await?;
        assert!(b.observe().await.lsn >= primary_lsn);
        let rows = b
            .fetch_all::<(i32,)>("SELECT x FROM t", &[], QUERY_TIMEOUT)
            .await?;
        assert_eq!(rows, [(1,)]);

        // Fail over: fence a, promote b.
        let t = Instant::now();
        a.stop_immediate().await?;
        a.stop_immediate().await?; // idempotent
        eprintln!("stop immediate: {:?}", t.elapsed());
        assert!(!a.observe().await.running);
        b.wait_replay_caught_up(Duration::from_secs(10)).await?;
        let t = Instant::now();
        b.promote().await?;
        eprintln!("promote: {:?}", t.elapsed());
        b.promote().await?; // idempotent
        let obs = b.observe().await;
        assert!(obs.running && !obs.in_recovery, "{obs:?}");
        assert_eq!(obs.timeline, 2);
        b.fetch_all::<(i32,)>("INSERT INTO t VALUES (2)", &[], QUERY_TIMEOUT)
            .await?;

        // The old primary rejoins: rewind (after a crash), then stream from b.
        b.sync_slots(&[("pgpilot_a".into(), 0)]).await?;
        let from_b = Upstream {
            host: "127.0.0.1".into(),
            port: port_b,
            slot_name: "pgpilot_a".into(),
        };
        let t = Instant::now();
        a.rewind(&from_b).await?;
        eprintln!("rewind: {:?}", t.elapsed());
        a.write_config(&node_config(port_a, "a", Some(from_b.clone())))
            .await?;
        let t = Instant::now();
        a.start().await?;
        eprintln!("start rewound standby: {:?}", t.elapsed());
        let took = wait_until("a streams from b", Duration::from_secs(30), || async {
            a.observe().await.wal_receiver_streaming
                && b.observe().await.streaming_standbys == ["a"]
        })
        .await?;
        eprintln!("rewound standby streaming after start: {took:?}");
        a.wait_replay_caught_up(Duration::from_secs(10)).await?;
        let obs = a.observe().await;
        assert!(obs.in_recovery && obs.timeline == 2, "{obs:?}");
        let rows = a
            .fetch_all::<(i32,)>("SELECT x FROM t ORDER BY x", &[], QUERY_TIMEOUT)
            .await?;
        assert_eq!(rows, [(1,), (2,)]);

        // A crashed standby can be "rewound" too (nothing to do), and streams again.
        a.stop_immediate().await?;
        let t = Instant::now();
        a.rewind(&from_b).await?;
        eprintln!("rewind of a crashed standby: {:?}", t.elapsed());
        a.write_config(&node_config(port_a, "a", Some(from_b.clone())))
            .await?;
        a.start().await?;
        wait_until(
            "a streams from b again",
            Duration::from_secs(30),
            || async { a.observe().await.wal_receiver_streaming },
        )
        .await?;

        let t = Instant::now();
        b.stop().await?;
        eprintln!("stop fast: {:?}", t.elapsed());
        b.stop().await?; // idempotent
        a.stop().await?;
        a.reload().await?; // not running: fine
        assert!(!a.observe().await.running);
        Ok(())
    }
}
