use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgpilot_keeper::config::KeeperConfig;
use pgpilot_keeper::failpoint::Failpoints;
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
    /// Run the keeper. SIGTERM or SIGINT stop the node (a primary hands
    /// over first) and PostgreSQL; SIGUSR1 makes the keeper exit alone
    /// with status 3, PostgreSQL running, to be started again (an upgrade).
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
    /// Write a commented configuration from flags, checked as `run` reads
    /// it (to standard output, or --out with mode 0600).
    ///
    /// Example: pgpilot-keeper init --name node1 --host 10.0.0.1 --pgdata /var/lib/postgresql/15/pgpilot --monitor https://10.0.0.5:7430 --out /etc/pgpilot/keeper.toml
    Init(pgpilot_keeper::init::InitArgs),
    /// The fence guard the keeper starts beside itself (internal: the
    /// keeper builds this command line).
    #[command(hide = true)]
    FenceGuard(pgpilot_keeper::guard::GuardArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let (config, log_format) = match Args::parse().command {
        Command::Run { config, log_format } => (config, log_format),
        Command::FenceGuard(args) => return fence_guard(args).await,
        Command::Init(args) => {
            return match pgpilot_keeper::init::run(&args) {
                Ok(said) => {
                    if !said.is_empty() {
                        eprintln!("{said}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    };
    pgpilot_proto::logs::init(log_format);
    let config = match KeeperConfig::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let failpoints = match Failpoints::from_env() {
        Ok(points) => points,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let asked = std::sync::Arc::new(std::sync::OnceLock::new());
    let said = asked.clone();
    let shutdown = async move {
        use pgpilot_keeper::stopping::StopKind;
        use tokio::signal::unix::{signal, SignalKind};
        let kind = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(mut term), Ok(mut usr1)) => tokio::select! {
                _ = tokio::signal::ctrl_c() => StopKind::Node,
                _ = term.recv() => StopKind::Node,
                _ = usr1.recv() => StopKind::KeeperOnly,
            },
            (term, usr1) => {
                let e = term
                    .err()
                    .or(usr1.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                tracing::error!(error = %e, "cannot install the SIGTERM and SIGUSR1 handlers; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                StopKind::Node
            }
        };
        match kind {
            StopKind::Node => tracing::info!("keeper stopping the node: handing over first"),
            StopKind::KeeperOnly => tracing::info!("keeper exiting (PostgreSQL keeps running)"),
        }
        let _ = said.set(kind);
        kind
    };
    match pgpilot_keeper::run::run(config, failpoints, log_format, shutdown).await {
        // Exited to be started again: an init system restarts on it.
        Ok(()) if asked.get() == Some(&pgpilot_keeper::stopping::StopKind::KeeperOnly) => {
            ExitCode::from(pgpilot_keeper::stopping::RESTART_EXIT_STATUS)
        }
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `pgpilot-keeper fence-guard`: runs until nothing is left to guard (a
/// signal such as SIGTERM ends it at once; the keeper starts a new one).
async fn fence_guard(args: pgpilot_keeper::guard::GuardArgs) -> ExitCode {
    pgpilot_proto::logs::init(args.log_format);
    let span = tracing::info_span!("fence-guard", port = args.port);
    match tracing::Instrument::instrument(pgpilot_keeper::guard::run(args), span).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
