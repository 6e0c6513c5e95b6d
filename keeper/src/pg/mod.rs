//! The keeper's edge to its local PostgreSQL: every external program
//! (initdb, pg_ctl, pg_basebackup, pg_rewind, pg_controldata) and every SQL
//! query the keeper runs. Programs run with timeouts; a failure keeps the
//! exit status and stderr in a typed error.
//!
//! The transition executor talks to [`LocalPostgres`], so it can be driven by
//! a fake in simulation; [`PgController`] is the real thing. This module
//! holds the shared types and the controller; each job lives in its own
//! file:
//!
//! - `connection`: the cached connection, the queries, the observation;
//! - `lifecycle`: initdb, start, stop, reload, promote, pg_controldata;
//! - `replication`: the replication role, its password file, slots;
//! - `clone`: pg_basebackup and pg_rewind;
//! - `divergence`: the facts of the divergence check (this node's WAL
//!   position, the upstream's timeline history);
//! - `programs`: running programs with timeouts, finding them;
//! - `render`: the configuration files inside PGDATA.

mod adopt;
mod clone;
mod connection;
mod divergence;
mod lifecycle;
mod programs;
pub mod progress;
mod recovery;
mod render;
mod replication;
mod slots;
#[cfg(test)]
mod tests;
mod wal_timeline;

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::PgConnection;
use tokio::sync::Mutex;
use tracing::warn;

use crate::access::{PasswordSource, Secret};
use crate::durable::{sibling_path, DurableError};
use crate::timeline::{TimelineHistory, WalPosition};

pub use adopt::AdoptionFacts;
pub use programs::find_bin_dir;

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
    /// created); `None` empties primary_conninfo, and removes standby.signal
    /// unless `standby` says the node stays a standby (following nobody).
    pub standby_of: Option<Upstream>,
    /// A standby (standby.signal): always when `standby_of` is set; also a
    /// standby that follows nobody while no primary is named.
    pub standby: bool,
    /// '' turns synchronous replication off.
    pub synchronous_standby_names: String,
    /// `recovery_min_apply_delay` in milliseconds: the node's apply delay
    /// as a standby, 0 for a primary (and for a node being promoted).
    pub apply_delay_ms: u64,
    pub wal_sender_timeout: Duration,
    pub wal_receiver_timeout: Duration,
    /// Hosts of the group's nodes (this one included): the only hosts the
    /// replication role may connect from (pg_hba.conf). `None` (the
    /// monitor has not answered yet): keep the block pg_hba.conf has.
    pub group_hosts: Option<Vec<String>>,
    /// The formation's parameters (`set-parameter`), written last: they
    /// override pgpilot's replication defaults (the monitor refuses the
    /// settings the keeper manages).
    pub parameters: std::collections::BTreeMap<String, String>,
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
    /// The clone or rewind under way, if any.
    pub work: Option<progress::WorkProgress>,
    /// Settings pending a restart (pg_settings.pending_restart), sorted;
    /// empty while it does not answer.
    pub pending_restart: Vec<String>,
}

/// What pg_rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewound {
    /// It rewrote the data directory to follow the upstream.
    Rewound,
    /// The data directory already was on the upstream's history.
    NothingToRewind,
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
    #[error("{program} made no progress for {} and was stopped ({progress}); the next attempt starts over", humantime::format_duration(*stall_timeout))]
    Stalled {
        program: String,
        stall_timeout: Duration,
        progress: String,
    },
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
    /// Whether PGDATA is configured as a standby (standby.signal exists).
    fn is_configured_standby(&self) -> bool {
        false
    }
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
    /// Whether PGDATA holds a cluster this keeper did not configure (no
    /// pgpilot.conf yet): an existing PostgreSQL about to be adopted.
    fn holds_foreign_cluster(&self) -> bool {
        false
    }
    /// Restart (fast) when the running server has settings pending a
    /// restart; the names of those settings, or None when none were.
    fn restart_for_pending_settings(
        &self,
    ) -> impl Future<Output = Result<Option<String>, PgError>> + Send {
        async { Ok(None) }
    }
    /// CHECKPOINT before a planned stop, when the server answers; errors
    /// are only logged (the shutdown checkpoint does the work then).
    fn checkpoint_before_stop(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
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
    /// Keep a physical replication slot for each (name, LSN, cascading)
    /// and drop other inactive `pgpilot_` slots. On a standby the slots not
    /// in use are advanced to the named node's LSN (never past this node's
    /// replay), so a promoted standby already holds the WAL its future
    /// standbys need; on a primary only those of cascading standbys (they
    /// stream from another standby, never from this slot).
    fn sync_slots(
        &self,
        slots: &[(String, u64, bool)],
    ) -> impl Future<Output = Result<(), PgError>> + Send;
    /// Observe the running server (all-default with running=false when it is down).
    fn observe(&self) -> impl Future<Output = Observation> + Send;
    /// System identifier from pg_controldata, None without a data directory.
    fn system_identifier(&self) -> impl Future<Output = Result<Option<u64>, PgError>> + Send;

    /// Where this node's WAL ends, for the divergence check
    /// ([`crate::timeline`]): while it runs as a standby, the greater of
    /// the last received and replayed LSN; stopped, what the control file
    /// says (as pg_rewind reads it). `None` when there is nothing to check:
    /// no data directory, a running primary, or a WAL receiver streaming.
    /// (The default: never anything to check.)
    fn wal_position(&self) -> impl Future<Output = Result<Option<WalPosition>, PgError>> + Send {
        async { Ok(None) }
    }

    /// The timeline history of `upstream`, which must be a writable
    /// primary (a server in recovery is an error).
    fn upstream_history(
        &self,
        upstream: &Upstream,
    ) -> impl Future<Output = Result<TimelineHistory, PgError>> + Send {
        let what = format!("{}:{}", upstream.host, upstream.port);
        async move {
            Err(PgError::Other(format!(
                "cannot read the timeline history of {what} here"
            )))
        }
    }

    /// The facts of the adoption check (see [`crate::adoption`]) of this
    /// stopped node's data directory against `upstream`: None when there
    /// is no data directory (or nothing reads one here).
    fn adoption_facts(
        &self,
        upstream: &Upstream,
    ) -> impl Future<Output = Result<Option<AdoptionFacts>, PgError>> + Send {
        let _ = upstream;
        async { Ok(None) }
    }

    /// Whether `upstream` still holds the WAL file `name` in pg_wal.
    fn upstream_has_wal_file(
        &self,
        upstream: &Upstream,
        name: &str,
    ) -> impl Future<Output = Result<bool, PgError>> + Send {
        let _ = (upstream, name);
        async { Ok(false) }
    }

    /// The clone or rewind that last finished, once (for the keeper's
    /// note); `None` where nothing counts it.
    fn take_finished_work(&self) -> Option<progress::WorkProgress> {
        None
    }

    /// What the permanent slots' plan reads (see [`crate::slots`]) and
    /// the slots the server holds. (The default: nothing reads them here.)
    fn slot_facts(
        &self,
    ) -> impl Future<Output = Result<(crate::slots::Facts, Vec<crate::slots::Local>), PgError>> + Send
    {
        async { Err(PgError::Other("no permanent slots here".into())) }
    }

    /// Carry out one step of the permanent slots' plan.
    fn slot_step(
        &self,
        step: &crate::slots::Step,
    ) -> impl Future<Output = Result<(), PgError>> + Send {
        let _ = step;
        async { Err(PgError::Other("no permanent slots here".into())) }
    }

    /// A logical slot's state file as PostgreSQL last wrote it.
    fn slot_state(&self, name: &str) -> Option<Vec<u8>> {
        let _ = name;
        None
    }

    /// [`Self::rewind`], saying whether pg_rewind rewrote anything.
    fn rewind_reporting(
        &self,
        upstream: &Upstream,
    ) -> impl Future<Output = Result<Rewound, PgError>> + Send
    where
        Self: Sync,
    {
        async move { self.rewind(upstream).await.map(|()| Rewound::Rewound) }
    }
}

/// The file pgpilot owns inside PGDATA.
pub const PGPILOT_CONF: &str = "pgpilot.conf";
/// The line that makes postgresql.conf read [`PGPILOT_CONF`]; kept exactly once.
pub const INCLUDE_LINE: &str = "include_if_exists = 'pgpilot.conf'";
/// Prefix of the replication slots pgpilot owns; [`LocalPostgres::sync_slots`]
/// drops inactive slots with this prefix that are no longer wanted.
pub const SLOT_PREFIX: &str = "pgpilot_";

const STANDBY_SIGNAL: &str = "standby.signal";

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
    /// A clone or rewind with no progress for this long is stopped.
    pub stall_timeout: Duration,
    /// pg_basebackup `--max-rate` in bytes per second; `None`: no limit.
    pub clone_max_rate: Option<u64>,
    /// Remove PGDATA before a clone rather than after it.
    pub clone_in_place: bool,
    /// Builds a standby from a backup instead of pg_basebackup (`%D` the
    /// directory to fill, `%h`/`%p` the upstream).
    pub clone_command: Option<String>,
    /// `restore_command` rendered into the managed configuration.
    pub restore_command: Option<String>,
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

impl PgSettings {
    /// The libpq password file the keeper writes (beside PGDATA, mode
    /// 0600) for primary_conninfo, pg_basebackup and pg_rewind.
    pub fn passfile(&self) -> PathBuf {
        sibling_path(&self.pgdata, ".pgpass")
    }
}

/// Drives one local PostgreSQL through its programs and a cached
/// connection over the unix socket. Each controller has its own
/// connection and locks: the loop, the fence task and the HTTP server each
/// get one, so none waits for another's query.
pub struct PgController {
    settings: PgSettings,
    /// One connection reused across calls; dropped on a connection error or
    /// timeout and re-opened by the next query.
    conn: Mutex<Option<PgConnection>>,
    /// The password [`LocalPostgres::ensure_replication_role`] last applied
    /// (`Some(None)`: the role was made without one).
    role_applied: std::sync::Mutex<Option<Option<Secret>>>,
    /// Where a clone or rewind under way stands (shared with the
    /// controllers made by [`PgController::sharing_progress`]).
    board: progress::Board,
    /// The crash recovery of the server this keeper started, watched
    /// across start attempts until it accepts connections.
    recovery: std::sync::Mutex<Option<recovery::RecoveryWatch>>,
    /// The data directory a clone replaced, being deleted in the
    /// background while the new one starts; the next clone waits for it.
    discarding: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl PgController {
    /// Whether PGDATA holds a cluster (PG_VERSION exists).
    fn has_data_directory(&self) -> bool {
        self.settings.pgdata.join("PG_VERSION").is_file()
    }

    pub fn new(settings: PgSettings) -> Self {
        PgController {
            settings,
            conn: Mutex::new(None),
            role_applied: std::sync::Mutex::new(None),
            board: progress::Board::default(),
            recovery: std::sync::Mutex::new(None),
            discarding: std::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// Another controller of the same server, with a connection of its own
    /// and this one's view of the clone or rewind under way.
    pub fn sharing_progress(&self) -> Self {
        PgController {
            board: self.board.clone(),
            ..PgController::new(self.settings.clone())
        }
    }

    /// The server log, beside PGDATA (`<pgdata>.log`) so that replacing
    /// PGDATA by a clone never deletes it.
    pub fn log_file(&self) -> PathBuf {
        sibling_path(&self.settings.pgdata, ".log")
    }

    fn bin(&self, program: &str) -> PathBuf {
        self.settings.bin_dir.join(program)
    }

    fn pgdata_arg(&self) -> OsString {
        self.settings.pgdata.clone().into_os_string()
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

impl From<DurableError> for PgError {
    fn from(e: DurableError) -> Self {
        PgError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// Each operation lives with its job (see the module list above).
impl LocalPostgres for PgController {
    fn holds_foreign_cluster(&self) -> bool {
        self.has_data_directory() && !self.settings.pgdata.join(PGPILOT_CONF).exists()
    }

    async fn restart_for_pending_settings(&self) -> Result<Option<String>, PgError> {
        PgController::restart_for_pending_settings(self).await
    }

    async fn checkpoint_before_stop(&self) {
        PgController::checkpoint_before_stop(self).await
    }

    fn has_data_directory(&self) -> bool {
        PgController::has_data_directory(self)
    }

    fn is_configured_standby(&self) -> bool {
        self.has_data_directory() && self.settings.pgdata.join(STANDBY_SIGNAL).exists()
    }

    fn postmaster_alive(&self) -> bool {
        self.postmaster_running()
    }

    async fn initdb(&self) -> Result<(), PgError> {
        PgController::initdb(self).await
    }

    async fn write_config(&self, config: &ManagedConfig) -> Result<bool, PgError> {
        PgController::write_config(self, config).await
    }

    async fn start(&self) -> Result<(), PgError> {
        PgController::start(self).await
    }

    async fn stop(&self) -> Result<(), PgError> {
        PgController::stop(self).await
    }

    async fn stop_immediate(&self) -> Result<(), PgError> {
        PgController::stop_immediate(self).await
    }

    async fn reload(&self) -> Result<(), PgError> {
        PgController::reload(self).await
    }

    async fn base_backup(&self, upstream: &Upstream) -> Result<(), PgError> {
        PgController::base_backup(self, upstream).await
    }

    async fn rewind(&self, upstream: &Upstream) -> Result<(), PgError> {
        PgController::rewind(self, upstream).await.map(drop)
    }

    fn take_finished_work(&self) -> Option<progress::WorkProgress> {
        self.board.take_finished()
    }

    async fn slot_facts(&self) -> Result<(crate::slots::Facts, Vec<crate::slots::Local>), PgError> {
        PgController::slot_facts(self).await
    }

    async fn slot_step(&self, step: &crate::slots::Step) -> Result<(), PgError> {
        PgController::slot_step(self, step).await
    }

    fn slot_state(&self, name: &str) -> Option<Vec<u8>> {
        PgController::slot_state(self, name)
    }

    async fn rewind_reporting(&self, upstream: &Upstream) -> Result<Rewound, PgError> {
        PgController::rewind(self, upstream).await
    }

    async fn wal_position(&self) -> Result<Option<WalPosition>, PgError> {
        PgController::wal_position(self).await
    }

    async fn adoption_facts(&self, upstream: &Upstream) -> Result<Option<AdoptionFacts>, PgError> {
        PgController::adoption_facts(self, upstream).await
    }

    async fn upstream_has_wal_file(
        &self,
        upstream: &Upstream,
        name: &str,
    ) -> Result<bool, PgError> {
        PgController::upstream_has_wal_file(self, upstream, name).await
    }

    async fn upstream_history(&self, upstream: &Upstream) -> Result<TimelineHistory, PgError> {
        PgController::upstream_history(self, upstream).await
    }

    async fn wait_replay_caught_up(&self, timeout: Duration) -> Result<(), PgError> {
        PgController::wait_replay_caught_up(self, timeout).await
    }

    async fn promote(&self) -> Result<(), PgError> {
        PgController::promote(self).await
    }

    async fn ensure_replication_role(&self) -> Result<(), PgError> {
        PgController::ensure_replication_role(self).await
    }

    async fn sync_slots(&self, slots: &[(String, u64, bool)]) -> Result<(), PgError> {
        PgController::sync_slots(self, slots).await
    }

    async fn observe(&self) -> Observation {
        Observation {
            work: self.board.get(),
            ..PgController::observe(self).await
        }
    }

    async fn system_identifier(&self) -> Result<Option<u64>, PgError> {
        PgController::system_identifier(self).await
    }
}

fn io_error(path: &Path, source: std::io::Error) -> PgError {
    PgError::Io {
        path: path.to_path_buf(),
        source,
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
