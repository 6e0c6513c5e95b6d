use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgpilot_keeper::access::PasswordSource;
use pgpilot_keeper::agent::Keeper;
use pgpilot_keeper::config::KeeperConfig;
use pgpilot_keeper::failpoint::{self, Failpoints};
use pgpilot_keeper::pg::{find_bin_dir, PgController, PgSettings};
use pgpilot_keeper::{http, metrics};
use pgpilot_proto::logs::LogFormat;

/// pgpilot keeper: runs beside one PostgreSQL server and carries out the
/// transitions the monitor assigns.
///
/// Exit codes: 0 stopped by a signal, 1 failed (monitor unreachable at
/// registration, node refused), 2 invalid configuration.
#[derive(Parser)]
#[command(name = "pgpilot-keeper", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the keeper.
    ///
    /// Example: pgpilot-keeper run --config /etc/pgpilot/keeper.toml
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Run { config, log_format } = Args::parse().command;
    pgpilot_proto::logs::init(log_format);
    let config = match KeeperConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if nix::unistd::geteuid().is_root() {
        eprintln!("error: PostgreSQL refuses to run as root: run pgpilot-keeper as the user that owns PGDATA (e.g. postgres)");
        return ExitCode::from(2);
    }
    let failpoints = match Failpoints::from_env() {
        Ok(points) => points,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let bin_dir = match find_bin_dir(config.pg_bin_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let replication_password =
        match PasswordSource::configured(config.replication_password_file.clone()) {
            Ok(source) => source,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    if replication_password.is_some() {
        // initdb then writes `local all all peer`: the keeper's own socket
        // connection as pg_user must come from that operating-system user.
        let os_user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name);
        if os_user.as_deref() != Some(config.pg_user.as_str()) {
            eprintln!(
                "error: with a replication password PostgreSQL authenticates local connections by operating-system user (peer), so pg_user {:?} must be the user pgpilot-keeper runs as ({}): run the keeper as {:?} or set pg_user",
                config.pg_user,
                os_user.as_deref().unwrap_or("unknown"),
                config.pg_user
            );
            return ExitCode::from(2);
        }
    }
    let postgres_tls = config.postgres_tls();
    if let Some(tls) = &postgres_tls {
        // PostgreSQL refuses to start with a key others may read; say so
        // before it is asked to.
        use std::os::unix::fs::MetadataExt;
        let problem = [&tls.cert_file, &tls.ca_file, &tls.key_file]
            .into_iter()
            .find_map(|f| {
                pgpilot_proto::security::read(f)
                    .err()
                    .map(|e| e.to_string())
            })
            .or_else(|| {
                let meta = std::fs::metadata(&tls.key_file).ok()?;
                pgpilot_keeper::pg::postgres_key_problem(
                    &tls.key_file,
                    meta.uid(),
                    meta.mode(),
                    nix::unistd::geteuid().as_raw(),
                )
            });
        if let Some(problem) = problem {
            eprintln!("error: {problem}");
            return ExitCode::from(2);
        }
    }
    let pg = PgController::new(PgSettings {
        pgdata: config.pgdata.clone(),
        bin_dir,
        socket_dir: config.socket_dir(),
        superuser: config.pg_user.clone(),
        port: config.port,
        trust_networks: config.trust_networks.clone(),
        replication_user: config.replication_user.clone(),
        replication_password,
        postgres_tls,
    });
    let span = tracing::info_span!("keeper", node = %config.name, formation = %config.formation);
    let _enter = span.enter();
    if pg.settings().postgres_tls.is_some() {
        tracing::info!("replication over TLS: ssl = on, hostssl for the replication role, sslmode=verify-full to the upstream");
    }
    match &pg.settings().replication_password {
        Some(source) => tracing::info!(
            role = %config.replication_user,
            password = %source.origin(),
            "replication: SCRAM-SHA-256 from the group's hosts only"
        ),
        None => tracing::warn!(
            role = %config.replication_user,
            "replication without a password: the group's hosts are trusted; set replication_password_file (or {}) for SCRAM-SHA-256",
            pgpilot_keeper::access::PASSWORD_ENV
        ),
    }
    // A keeper that was killed may have left a clone's WAL streamer running.
    pg.kill_leftover_programs().await;
    // The HTTP server observes PostgreSQL through its own connection.
    let http_pg = std::sync::Arc::new(PgController::new(pg.settings().clone()));
    let http_listen = config.http_listen;
    if !failpoints.is_empty() {
        let points: Vec<String> = failpoints.points().iter().map(|p| p.to_string()).collect();
        tracing::warn!(
            failpoints = %points.join(","),
            "{} is set: this keeper SIGKILLs itself at these points (testing only)",
            failpoint::ENV
        );
    }
    // The fence task has its own handle too: a query stuck on the loop's
    // connection must never delay a fence.
    let fence_pg = PgController::new(pg.settings().clone());
    let mut keeper = match Keeper::new(config, pg, fence_pg) {
        Ok(k) => k.with_failpoints(failpoints),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = keeper.connect() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = match http_listen {
        None => None,
        Some(addr) => {
            let listener = match http::bind(addr).await {
                Ok(l) => l,
                Err(sentence) => {
                    eprintln!("error: {sentence}");
                    return ExitCode::from(2);
                }
            };
            let handle = match metrics::install() {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: cannot set up metrics: {e}");
                    return ExitCode::from(1);
                }
            };
            tracing::info!(http_listen = %addr, "HTTP server ready: /metrics /health /primary /replica");
            let server = http::serve(listener, http_pg, keeper.status(), Some(handle), async {
                let _ = http_stopped.await;
            });
            Some(tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            }))
        }
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("keeper stopping (PostgreSQL keeps running)");
    };
    let result = keeper.run(shutdown).await;
    let _ = http_stop.send(());
    if let Some(server) = http {
        let _ = server.await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
