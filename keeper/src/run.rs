//! Running a keeper: check the configuration against the machine (user,
//! PostgreSQL programs, password and TLS files), build the PostgreSQL
//! handles (the loop's, the fence's, the HTTP server's: one connection
//! each), start the HTTP server, and run the loop (with its link to the
//! fence guard, [`crate::guard`]) until `shutdown`.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use pgpilot_proto::logs::LogFormat;
use tracing::Instrument;

use crate::access::{self, PasswordSource};
use crate::agent::Keeper;
use crate::config::KeeperConfig;
use crate::failpoint::{self, Failpoints};
use crate::guard::{self, GuardArgs};
use crate::pg::{find_bin_dir, postgres_key_problem, PgController, PgSettings};
use crate::status::SharedStatus;
use crate::{http, metrics};

/// Why the keeper did not run, or stopped: one sentence, and the exit
/// status it means.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration cannot work on this machine (exit status 2).
    #[error("{0}")]
    Config(String),
    /// The keeper failed: monitor unreachable at registration, node
    /// refused, … (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}

/// Run the keeper `config` describes until `shutdown` resolves and the
/// stop it asks for is done (see [`crate::stopping`]), or until it fails. The
/// fence guard it starts logs in `log_format`.
pub async fn run(
    config: KeeperConfig,
    failpoints: Failpoints,
    log_format: LogFormat,
    shutdown: impl Future<Output = crate::stopping::StopKind>,
) -> Result<(), RunError> {
    if nix::unistd::geteuid().is_root() {
        return Err(RunError::Config("PostgreSQL refuses to run as root: run pgpilot-keeper as the user that owns PGDATA (e.g. postgres)".to_string()));
    }
    let pg = PgController::new(pg_settings(&config)?);
    let guard = guard_args(&config, pg.settings(), log_format)?;
    let span = tracing::info_span!("keeper", node = %config.name, formation = %config.formation);
    run_keeper(config, failpoints, pg, guard, shutdown)
        .instrument(span)
        .await
}

/// How to start this node's fence guard: its socket beside the state
/// file, and how it reaches PostgreSQL.
fn guard_args(
    config: &KeeperConfig,
    settings: &PgSettings,
    log_format: LogFormat,
) -> Result<GuardArgs, RunError> {
    let socket =
        guard::wire::socket_path(&config.state_file(), config.port).map_err(RunError::Config)?;
    Ok(GuardArgs {
        socket,
        pgdata: settings.pgdata.clone(),
        pg_bin_dir: settings.bin_dir.clone(),
        pg_socket_dir: settings.socket_dir.clone(),
        pg_user: settings.superuser.clone(),
        port: settings.port,
        log_format,
    })
}

/// Where PostgreSQL is and how the nodes replicate, checked: the programs
/// found, the replication password readable and usable, the TLS files
/// readable and a key PostgreSQL accepts.
fn pg_settings(config: &KeeperConfig) -> Result<PgSettings, RunError> {
    let bin_dir =
        find_bin_dir(config.pg_bin_dir.as_deref()).map_err(|e| RunError::Config(e.to_string()))?;
    let replication_password = PasswordSource::configured(config.replication_password_file.clone())
        .map_err(|e| RunError::Config(e.to_string()))?;
    if replication_password.is_some() {
        // initdb then writes `local all all peer`: the keeper's own socket
        // connection as pg_user must come from that operating-system user.
        let os_user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name);
        if os_user.as_deref() != Some(config.pg_user.as_str()) {
            return Err(RunError::Config(format!(
                "with a replication password PostgreSQL authenticates local connections by operating-system user (peer), so pg_user {:?} must be the user pgpilot-keeper runs as ({}): run the keeper as {:?} or set pg_user",
                config.pg_user,
                os_user.as_deref().unwrap_or("unknown"),
                config.pg_user
            )));
        }
    }
    let postgres_tls = config.postgres_tls();
    if let Some(tls) = &postgres_tls {
        // PostgreSQL refuses to start with a key others may read; say so
        // before it is asked to.
        let problem = [&tls.cert_file, &tls.ca_file, &tls.key_file]
            .into_iter()
            .find_map(|f| {
                pgpilot_proto::security::read(f)
                    .err()
                    .map(|e| e.to_string())
            })
            .or_else(|| {
                let meta = std::fs::metadata(&tls.key_file).ok()?;
                postgres_key_problem(
                    &tls.key_file,
                    meta.uid(),
                    meta.mode(),
                    nix::unistd::geteuid().as_raw(),
                )
            });
        if let Some(problem) = problem {
            return Err(RunError::Config(problem));
        }
    }
    Ok(PgSettings {
        pgdata: config.pgdata.clone(),
        bin_dir,
        socket_dir: config.socket_dir(),
        superuser: config.pg_user.clone(),
        port: config.port,
        trust_networks: config.trust_networks.clone(),
        replication_user: config.replication_user.clone(),
        replication_password,
        postgres_tls,
        stall_timeout: config.stall_timeout,
        clone_max_rate: config.clone_max_rate,
        clone_in_place: config.clone_in_place,
        clone_command: config.clone_command.clone(),
        restore_command: config.restore_command.clone(),
    })
}

async fn run_keeper(
    config: KeeperConfig,
    failpoints: Failpoints,
    pg: PgController,
    guard: GuardArgs,
    shutdown: impl Future<Output = crate::stopping::StopKind>,
) -> Result<(), RunError> {
    log_replication(&config, pg.settings());
    // A keeper that was killed may have left a clone's WAL streamer running.
    pg.kill_leftover_programs().await;
    // The HTTP server and the fence task observe PostgreSQL through
    // connections of their own: a query stuck on the loop's connection
    // delays neither a check nor a fence.
    let http_pg = Arc::new(pg.sharing_progress());
    let fence_pg = PgController::new(pg.settings().clone());
    let http_listen = config.http_listen;
    let http_settings = http::Settings::of(&config);
    if !failpoints.is_empty() {
        let points: Vec<String> = failpoints.points().iter().map(|p| p.to_string()).collect();
        tracing::warn!(
            failpoints = %points.join(","),
            "{} is set: this keeper SIGKILLs itself at these points (testing only)",
            failpoint::ENV
        );
    }
    let mut keeper = Keeper::new(config, pg, fence_pg)
        .map_err(|e| RunError::Failed(e.to_string()))?
        .with_failpoints(failpoints)
        .with_guard(guard);
    keeper
        .connect()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = match http_listen {
        None => None,
        Some(addr) => {
            let listener = http::bind(addr).await.map_err(RunError::Config)?;
            let handle = metrics::install()
                .map_err(|e| RunError::Failed(format!("cannot set up metrics: {e}")))?;
            tracing::info!(http_listen = %addr, "HTTP server ready: /metrics /health /primary /replica /read-only /sync /async /readiness /liveness");
            Some(serve_http(
                listener,
                http_pg,
                keeper.status(),
                handle,
                http_settings,
                async {
                    let _ = http_stopped.await;
                },
            ))
        }
    };
    let result = keeper.run(shutdown).await;
    let _ = http_stop.send(());
    if let Some(server) = http {
        let _ = server.await;
    }
    result.map_err(|e| RunError::Failed(e.to_string()))
}

/// The HTTP server on its own task, until `stop`.
fn serve_http(
    listener: tokio::net::TcpListener,
    pg: Arc<PgController>,
    status: SharedStatus,
    handle: metrics_exporter_prometheus::PrometheusHandle,
    settings: http::Settings,
    stop: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let server = http::serve(listener, pg, status, Some(handle), settings, stop);
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    })
}

/// Say how the nodes replicate: over TLS or not, with a password or not.
fn log_replication(config: &KeeperConfig, settings: &PgSettings) {
    if settings.postgres_tls.is_some() {
        tracing::info!("replication over TLS: ssl = on, hostssl for the replication role, sslmode=verify-full to the upstream");
    }
    match &settings.replication_password {
        Some(source) => tracing::info!(
            role = %config.replication_user,
            password = %source.origin(),
            "replication: SCRAM-SHA-256 from the group's hosts only"
        ),
        None => tracing::warn!(
            role = %config.replication_user,
            "replication without a password: the group's hosts are trusted; set replication_password_file (or {}) for SCRAM-SHA-256",
            access::PASSWORD_ENV
        ),
    }
}
