use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use pgpilot_monitor::cli::{self, CliError, Client};
use pgpilot_monitor::config::MonitorConfig;

/// pgpilot monitor: keeps every node's state and assigns goal states; its
/// other subcommands are the operator's tools and talk to a running monitor.
///
/// Exit codes: 0 ok, 1 operation failed or timed out, 2 usage or invalid
/// input, 3 monitor unreachable.
#[derive(Parser)]
#[command(name = "pgpilot-monitor", version)]
struct Args {
    /// Monitor to talk to (operator subcommands).
    #[arg(
        long,
        global = true,
        env = "PGPILOT_MONITOR",
        default_value = "http://127.0.0.1:7430"
    )]
    monitor: String,
    /// Formation to act on.
    #[arg(long, global = true, default_value = "default")]
    formation: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the monitor service.
    ///
    /// Example: pgpilot-monitor run --config /etc/pgpilot/monitor.toml
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Show every node: address, timeline:LSN, reported and goal state, health, heartbeat age.
    ///
    /// Example: pgpilot-monitor show-state --json
    ShowState {
        /// Print JSON (the `StateJson` shape) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the latest goal changes with their reasons.
    ///
    /// Example: pgpilot-monitor show-events --count 50
    ShowEvents {
        /// How many events.
        #[arg(long, default_value_t = 20)]
        count: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the multi-host connection string that always reaches the primary.
    ///
    /// Example: psql "$(pgpilot-monitor show-uri)"
    ShowUri {
        /// PostgreSQL user in the URI.
        #[arg(long, default_value = "postgres")]
        user: String,
    },
    /// Planned failover: the primary stops taking writes, a secondary is
    /// promoted, and the old primary rejoins as a secondary.
    ///
    /// Example: pgpilot-monitor perform-failover --timeout 60s
    PerformFailover {
        /// Group of the formation.
        #[arg(long, default_value_t = 0)]
        group: u32,
        /// Return once the failover started instead of waiting for it to finish.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the group to converge.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run { config, log_format } => {
            init_logs(log_format);
            return run(config).await;
        }
        command => operator(&args.monitor, &args.formation, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(config_path: PathBuf) -> ExitCode {
    let config = match MonitorConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let url = match config.resolve_database_url() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    match pgpilot_monitor::run(config, &url, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn operator(monitor: &str, formation: &str, command: Command) -> Result<(), CliError> {
    let mut client = Client::connect(monitor).await?;
    match command {
        Command::Run { .. } => unreachable!("handled in main"),
        Command::ShowState { json } => {
            let state = client.state(formation).await?;
            if json {
                let j = cli::StateJson::from(&state);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&j).expect("serializable")
                );
            } else {
                print!("{}", cli::state_table(&state));
            }
        }
        Command::ShowEvents { count, json } => {
            let events = client.events(formation, count).await?;
            if json {
                let rows: Vec<serde_json::Value> = events
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "event_id": e.event_id, "at": e.at, "formation": e.formation,
                            "group_id": e.group_id, "node_id": e.node_id, "node_name": e.node_name,
                            "reported_state": state_str(e.reported_state),
                            "goal_from": state_str(e.goal_from), "goal_to": state_str(e.goal_to),
                            "reason": e.reason,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("serializable")
                );
            } else {
                println!("{}", cli::events_table(&events));
            }
        }
        Command::ShowUri { user } => {
            let state = client.state(formation).await?;
            println!("{}", cli::multi_host_uri(&state, &user));
        }
        Command::PerformFailover {
            group,
            no_wait,
            timeout,
        } => {
            let before = client.state(formation).await?;
            let old = cli::primary_of(&before, group)
                .map(|n| n.node_id)
                .ok_or_else(|| {
                    CliError::Failed(format!(
                        "group {group} has no primary right now: nothing to fail over"
                    ))
                })?;
            let message = client.perform_failover(formation, group).await?;
            println!("{message}");
            if !no_wait {
                cli::wait_failover(&mut client, formation, old, timeout).await?;
                println!("failover complete");
            }
        }
    }
    Ok(())
}

fn state_str(v: i32) -> String {
    pgpilot_proto::ReplicationState::from_wire(v)
        .map(|s| s.to_string())
        .unwrap_or_default()
}
