use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgpilot_monitor::cli::{self, CliError, Client};
use pgpilot_monitor::config::MonitorConfig;
use pgpilot_proto::logs::LogFormat;
use pgpilot_proto::security::ClientSecurity;
use pgpilot_proto::ReplicationState as S;

/// pgpilot monitor: keeps every node's state and assigns goal states; its
/// other subcommands are the operator's tools and talk to a running monitor.
///
/// Exit codes: 0 ok, 1 operation failed or timed out, 2 usage or invalid
/// input, 3 monitor unreachable.
///
/// Example: pgpilot-monitor show-state --monitor https://10.0.0.5:7430 --tls-ca ca.crt --tls-cert operator-ann.crt --tls-key operator-ann.key
#[derive(Parser)]
#[command(name = "pgpilot-monitor", version)]
struct Args {
    /// Monitor to talk to (operator subcommands): https:// (TLS, the
    /// default) or http:// for a monitor that runs with plaintext = true.
    #[arg(
        long,
        global = true,
        env = "PGPILOT_MONITOR",
        default_value = "https://127.0.0.1:7430"
    )]
    monitor: String,
    /// Formation to act on.
    #[arg(long, global = true, default_value = "default")]
    formation: String,
    /// CA certificate that signed the monitor's certificate (needed with an
    /// https:// URL).
    #[arg(long, global = true, env = "PGPILOT_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (CN operator:NAME) for a monitor that requires
    /// mutual TLS.
    #[arg(long, global = true, env = "PGPILOT_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (a file others cannot read).
    #[arg(long, global = true, env = "PGPILOT_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Name to check the monitor's certificate for (default: the URL's host).
    #[arg(
        long,
        global = true,
        env = "PGPILOT_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    tls_server_name: Option<String>,
    /// File holding the monitor's shared token (a file others cannot read);
    /// else the token in PGPILOT_TOKEN, if set. Never on the command line.
    #[arg(long, global = true, env = "PGPILOT_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
    /// Make a throw-away CA and the certificates of a cluster (and a token)
    /// for a lab or tests.
    ///
    /// Writes into DIR: ca.crt and ca.key (made on the first run, reused
    /// after to sign more), monitor.crt/.key for the --monitor-host names
    /// (localhost and 127.0.0.1 on the first run), keeper-FORMATION-NODE.crt/.key
    /// per --keeper (CN keeper:FORMATION/NODE), operator-NAME.crt/.key per
    /// --operator (CN operator:NAME), postgres-NODE.crt/.key per --postgres
    /// (PostgreSQL's TLS between the nodes), and with --token a random token.
    /// Keys and the token are written 0600.
    ///
    /// Example: pgpilot-monitor gen-certs --dir /etc/pgpilot/tls --monitor-host monitor --keeper default/node1 --operator ann
    GenCerts {
        /// Directory to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// A host name or IP address keepers and operators reach the monitor
        /// by (repeat for several).
        #[arg(long = "monitor-host", value_name = "NAME")]
        monitor_hosts: Vec<String>,
        /// A keeper certificate for FORMATION/NODE (repeat for several).
        #[arg(long = "keeper", value_name = "FORMATION/NODE")]
        keepers: Vec<String>,
        /// An operator certificate for NAME (repeat for several).
        #[arg(long = "operator", value_name = "NAME")]
        operators: Vec<String>,
        /// A server certificate for NODE's PostgreSQL naming the hosts the
        /// other nodes reach it by: postgres-NODE.crt/.key, for the keeper's
        /// postgres_tls_cert_file/key_file (repeat for several).
        #[arg(long = "postgres", value_name = "NODE=HOST[,HOST...]")]
        postgres_servers: Vec<String>,
        /// Also write a random shared token to DIR/token.
        #[arg(long)]
        token: bool,
        /// Days the certificates are valid (the CA: ten years).
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Show every node: address, timeline:LSN, connection, lag, reported and
    /// goal state, PostgreSQL, health, heartbeat age.
    ///
    /// Connection is read-write (a writable primary state with PostgreSQL
    /// running), read-only (a running standby) or down. Lag is how far a
    /// read-only standby is behind the LSN the primary last reported.
    ///
    /// Example: pgpilot-monitor show-state --watch 1s
    ShowState {
        /// Print JSON (the shape of docs/show-state.schema.json) instead of a table.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw the table every INTERVAL (default 2s) until Ctrl-C.
        #[arg(
            long,
            value_name = "INTERVAL",
            num_args = 0..=1,
            default_missing_value = "2s",
            value_parser = parse_interval
        )]
        watch: Option<Duration>,
    },
    /// Show every node, one row each, with every field the monitor knows.
    ///
    /// Columns: id, name, host:port, group, system identifier, candidate
    /// priority, replication quorum, reported and goal state, PostgreSQL,
    /// connection, health, heartbeat age, timeline:LSN, streaming.
    ///
    /// Example: pgpilot-monitor show-nodes --json
    ShowNodes {
        /// Print a JSON array of nodes (the `nodes` items of show-state --json).
        #[arg(long)]
        json: bool,
    },
    /// Show one node, one `key: value` line per field.
    ///
    /// Example: pgpilot-monitor show-node node2
    ShowNode {
        /// Node name.
        node: String,
        /// Print the node as JSON (a `nodes` item of show-state --json).
        #[arg(long)]
        json: bool,
    },
    /// Show number_sync_standbys, the synchronous_standby_names the primary
    /// applies, and every node's candidate priority and replication quorum.
    ///
    /// Example: pgpilot-monitor show-settings --json
    ShowSettings {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the latest goal changes with their reasons.
    ///
    /// Example: pgpilot-monitor show-events --follow --node node1
    ShowEvents {
        /// How many events (the latest; with --follow, before following).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        count: u32,
        /// Only the events of this node.
        #[arg(long, value_name = "NAME")]
        node: Option<String>,
        /// Keep printing new events as they happen (checked every second),
        /// one per line, until Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Print JSON instead of a table (with --follow: one object per line).
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
        /// The variant for reads: prefer a standby, fall back to the primary.
        #[arg(long)]
        read_only: bool,
    },
    /// Planned failover: the primary stops taking writes, the best secondary
    /// is promoted, and the old primary rejoins as a secondary.
    ///
    /// Example: pgpilot-monitor perform-failover --timeout 60s
    PerformFailover {
        /// Finish an election stuck after a double fault (show-state says
        /// so), accepting that acknowledged commits only the missing
        /// standbys had are lost. Only while such an election waits.
        #[arg(long)]
        allow_data_loss: bool,
        #[command(flatten)]
        op: GroupOp,
    },
    /// Planned switchover, to a chosen standby with --to.
    ///
    /// Example: pgpilot-monitor perform-switchover --to node2
    PerformSwitchover {
        /// Standby to promote (default: the best candidate).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        op: GroupOp,
    },
    /// Promote the named standby (a switchover to it).
    ///
    /// Example: pgpilot-monitor perform-promotion node3
    PerformPromotion {
        /// Standby to promote.
        node: String,
        #[command(flatten)]
        op: GroupOp,
    },
    /// How many quorum standbys must confirm each commit (0: one, while there is one).
    ///
    /// Example: pgpilot-monitor set-number-sync-standbys 1
    SetNumberSyncStandbys {
        value: u32,
        #[command(flatten)]
        wait: Wait,
    },
    /// A node's candidate priority, 0 to 100 (0: never promoted).
    ///
    /// Example: pgpilot-monitor set-candidate-priority node3 0
    SetCandidatePriority {
        node: String,
        priority: u32,
        #[command(flatten)]
        wait: Wait,
    },
    /// Whether a node counts toward synchronous commit.
    ///
    /// Example: pgpilot-monitor set-replication-quorum node3 false
    SetReplicationQuorum {
        node: String,
        #[arg(action = clap::ArgAction::Set)]
        quorum: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Take a node out for maintenance (a primary hands over first).
    ///
    /// Example: pgpilot-monitor enable-maintenance node2
    EnableMaintenance {
        node: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Bring a node back from maintenance.
    ///
    /// Example: pgpilot-monitor disable-maintenance node2
    DisableMaintenance {
        node: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove a standby from the formation: its keeper stops PostgreSQL and exits.
    ///
    /// Example: pgpilot-monitor drop-node node3
    DropNode {
        node: String,
        /// Remove the node at once, without waiting for its keeper.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Rebuild a standby from a fresh clone of the primary (its data
    /// directory is lost or diverged); it becomes secondary again.
    ///
    /// Example: pgpilot-monitor reinit node2
    Reinit {
        node: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(clap::Args)]
struct Wait {
    /// Return once the change started instead of waiting for the group to converge.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the group to converge.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(clap::Args)]
struct GroupOp {
    /// Group of the formation.
    #[arg(long, default_value_t = 0)]
    group: u32,
    #[command(flatten)]
    wait: Wait,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Run { config, log_format } => {
            pgpilot_proto::logs::init(log_format);
            return run(config).await;
        }
        Command::GenCerts {
            dir,
            monitor_hosts,
            keepers,
            operators,
            postgres_servers,
            token,
            days,
        } => gen_certs(pgpilot_monitor::certs::Request {
            dir,
            monitor_hosts,
            keepers,
            operators,
            postgres_servers,
            token,
            days,
        }),
        command => {
            let sec = ClientSecurity {
                ca_file: args.tls_ca,
                cert_file: args.tls_cert,
                key_file: args.tls_key,
                server_name: args.tls_server_name,
                token_file: args.token_file,
            };
            operator(&args.monitor, &sec, &args.formation, command).await
        }
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
    let transport = match config.transport() {
        Ok(t) => t,
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
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let metrics_listener = match pgpilot_monitor::metrics::bind(addr).await {
                Ok(l) => l,
                Err(sentence) => {
                    eprintln!("error: {sentence}");
                    return ExitCode::from(1);
                }
            };
            match pgpilot_monitor::metrics::install() {
                Ok(handle) => Some((metrics_listener, handle)),
                Err(e) => {
                    eprintln!("error: cannot set up metrics: {e}");
                    return ExitCode::from(1);
                }
            }
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
    match pgpilot_monitor::run(config, &url, transport, listener, metrics, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn gen_certs(request: pgpilot_monitor::certs::Request) -> Result<(), CliError> {
    let written = pgpilot_monitor::certs::generate(&request).map_err(|e| match e {
        pgpilot_monitor::certs::CertError::Invalid(m) => CliError::Usage(m),
        other => CliError::Failed(other.to_string()),
    })?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

async fn operator(
    monitor: &str,
    sec: &ClientSecurity,
    formation: &str,
    command: Command,
) -> Result<(), CliError> {
    let mut client = Client::connect(monitor, sec).await?;
    match command {
        Command::Run { .. } | Command::GenCerts { .. } => unreachable!("handled in main"),
        Command::ShowState { json, watch } => {
            if let Some(interval) = watch {
                cli::until_interrupted(cli::watch_state(&mut client, formation, interval)).await?;
            } else if json {
                let state = client.state(formation).await?;
                print_json(&cli::StateJson::from(&state));
            } else {
                let state = client.state(formation).await?;
                print!("{}", cli::state_table(&state));
            }
        }
        Command::ShowNodes { json } => {
            let state = client.state(formation).await?;
            if json {
                let nodes: Vec<_> = state
                    .nodes
                    .iter()
                    .map(|n| cli::NodeJson::new(&state, n))
                    .collect();
                print_json(&nodes);
            } else {
                print!("{}", cli::nodes_table(&state));
            }
        }
        Command::ShowNode { node, json } => {
            let state = client.state(formation).await?;
            let n = cli::find_node(&state, &node)?;
            if json {
                print_json(&cli::NodeJson::new(&state, n));
            } else {
                print!("{}", cli::node_detail(&state, n));
            }
        }
        Command::ShowEvents {
            count,
            node,
            follow,
            json,
        } => {
            if follow {
                let work = cli::follow_events(&mut client, formation, count, node.as_deref(), json);
                cli::until_interrupted(work).await?;
            } else {
                let (events, _) =
                    cli::recent_events(&mut client, formation, count, node.as_deref()).await?;
                if json {
                    let rows: Vec<cli::EventJson> = events.iter().map(Into::into).collect();
                    print_json(&rows);
                } else {
                    println!("{}", cli::events_table(&events));
                }
            }
        }
        Command::ShowSettings { json } => {
            let state = client.state(formation).await?;
            if json {
                let nodes: Vec<serde_json::Value> = state
                    .nodes
                    .iter()
                    .map(|n| {
                        serde_json::json!({
                            "name": n.name, "node_id": n.node_id,
                            "candidate_priority": n.candidate_priority,
                            "replication_quorum": n.replication_quorum,
                        })
                    })
                    .collect();
                let doc = serde_json::json!({
                    "formation": state.formation,
                    "number_sync_standbys": state.number_sync_standbys,
                    "synchronous_standby_names": state.synchronous_standby_names,
                    "nodes": nodes,
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&doc).expect("serializable")
                );
            } else {
                print!("{}", cli::settings_table(&state));
            }
        }
        Command::ShowUri { user, read_only } => {
            let state = client.state(formation).await?;
            println!("{}", cli::multi_host_uri(&state, &user, read_only));
        }
        Command::PerformFailover {
            allow_data_loss: true,
            op,
        } => {
            let before = client.state(formation).await?;
            let old = cli::primary_of(&before, op.group).map(|n| n.node_id);
            let message = client.force_election(formation, op.group).await?;
            finish(&mut client, formation, op.wait, &message, |s| {
                s.nodes.iter().any(|n| {
                    Some(n.node_id) != old && cli::settled(n, &[S::WaitPrimary, S::Primary])
                })
            })
            .await?;
        }
        Command::PerformFailover { op, .. } => hand_over(&mut client, formation, op, None).await?,
        Command::Reinit { node, wait } => {
            let message = client.reinit_node(formation, &node).await?;
            finish(&mut client, formation, wait, &message, |s| {
                cli::converged_with(s, &node, S::Secondary)
            })
            .await?;
        }
        Command::PerformSwitchover { to, op } => {
            hand_over(&mut client, formation, op, to.as_deref()).await?
        }
        Command::PerformPromotion { node, op } => {
            hand_over(&mut client, formation, op, Some(&node)).await?
        }
        Command::SetNumberSyncStandbys { value, wait } => {
            let message = client.set_number_sync_standbys(formation, value).await?;
            finish(&mut client, formation, wait, &message, cli::converged).await?;
        }
        Command::SetCandidatePriority {
            node,
            priority,
            wait,
        } => {
            let message = client
                .set_node_settings(formation, &node, Some(priority), None)
                .await?;
            finish(&mut client, formation, wait, &message, cli::converged).await?;
        }
        Command::SetReplicationQuorum { node, quorum, wait } => {
            let message = client
                .set_node_settings(formation, &node, None, Some(quorum))
                .await?;
            finish(&mut client, formation, wait, &message, cli::converged).await?;
        }
        Command::EnableMaintenance { node, wait } => {
            let message = client.set_maintenance(formation, &node, true).await?;
            finish(&mut client, formation, wait, &message, |s| {
                cli::converged_with(s, &node, S::Maintenance)
            })
            .await?;
        }
        Command::DisableMaintenance { node, wait } => {
            let message = client.set_maintenance(formation, &node, false).await?;
            finish(&mut client, formation, wait, &message, |s| {
                cli::converged_with(s, &node, S::Secondary)
            })
            .await?;
        }
        Command::DropNode { node, force, wait } => {
            let message = client.drop_node(formation, &node, force).await?;
            finish(&mut client, formation, wait, &message, |s| {
                !s.nodes.iter().any(|n| n.name == node)
            })
            .await?;
        }
    }
    Ok(())
}

/// Print what the monitor started, then (unless --no-wait) wait for `done`.
async fn finish(
    client: &mut Client,
    formation: &str,
    wait: Wait,
    message: &str,
    done: impl Fn(&pgpilot_proto::pb::FormationState) -> bool,
) -> Result<(), CliError> {
    println!("{message}");
    if !wait.no_wait {
        cli::wait_until(client, formation, wait.timeout, "the change", done).await?;
        println!("done");
    }
    Ok(())
}

/// A --watch interval: human-readable ("2s", "500ms"), at least 100ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!("{text} is too short: use at least 100ms"));
    }
    Ok(d)
}

/// Planned failover or switchover (to `target` when named).
async fn hand_over(
    client: &mut Client,
    formation: &str,
    op: GroupOp,
    target: Option<&str>,
) -> Result<(), CliError> {
    let before = client.state(formation).await?;
    let old = cli::primary_of(&before, op.group)
        .map(|n| n.node_id)
        .ok_or_else(|| {
            CliError::Failed(format!(
                "group {} has no primary right now: nothing to hand over",
                op.group
            ))
        })?;
    let message = client.perform_failover(formation, op.group, target).await?;
    let target = target.map(str::to_string);
    finish(client, formation, op.wait, &message, |s| {
        cli::handed_over(s, old, target.as_deref(), S::Secondary)
    })
    .await
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("serializable")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
    }

    /// Every subcommand's --help ends with an example of its use.
    #[test]
    fn every_command_has_an_example() {
        let mut command = Args::command();
        command.build();
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            let help = sub
                .get_long_about()
                .map(ToString::to_string)
                .unwrap_or_default();
            let example = format!("Example: pgpilot-monitor {}", sub.get_name());
            let uri_example = sub.get_name() == "show-uri" && help.contains("Example: psql");
            assert!(
                help.contains(&example) || uri_example,
                "`{} --help` has no example:\n{help}",
                sub.get_name()
            );
        }
    }

    #[test]
    fn watch_takes_an_optional_interval() {
        let watch = |args: &[&str]| match Args::try_parse_from(args).map(|a| a.command) {
            Ok(Command::ShowState { watch, .. }) => Ok(watch),
            Ok(_) => panic!("not show-state"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(watch(&["m", "show-state"]), Ok(None));
        assert_eq!(
            watch(&["m", "show-state", "--watch"]),
            Ok(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            watch(&["m", "show-state", "--watch", "500ms"]),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(
            watch(&["m", "show-state", "--watch", "1ms"]),
            Err(clap::error::ErrorKind::ValueValidation)
        );
        assert_eq!(
            watch(&["m", "show-state", "--watch", "--json"]),
            Err(clap::error::ErrorKind::ArgumentConflict)
        );
    }
}
