//! The operator's command line: the global options, every subcommand
//! with its flags and defaults, and their help texts (the doc comments).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgpilot_proto::logs::LogFormat;
use pgpilot_proto::security::ClientSecurity;

/// pgpilot monitor: keeps every node's state and assigns goal states; its
/// other subcommands are the operator's tools and talk to a running monitor.
///
/// Exit codes: 0 ok, 1 operation failed or timed out, 2 usage or invalid
/// input, 3 monitor unreachable.
///
/// Example: pgpilot-monitor show-state --monitor https://10.0.0.5:7430 --tls-ca ca.crt --tls-cert operator-ann.crt --tls-key operator-ann.key
#[derive(Parser)]
#[command(name = "pgpilot-monitor", version)]
pub struct Args {
    /// Monitor to talk to (operator subcommands): https:// (TLS, the
    /// default) or http:// for a monitor that runs with plaintext = true.
    /// Several monitors: repeat the option or give a comma list; the first
    /// one that answers is used.
    #[arg(
        long,
        global = true,
        env = "PGPILOT_MONITOR",
        value_delimiter = ',',
        default_value = "https://127.0.0.1:7430"
    )]
    pub monitor: Vec<String>,
    /// Formation to act on.
    #[arg(long, global = true, default_value = "default")]
    pub formation: String,
    /// CA certificate that signed the monitor's certificate (needed with an
    /// https:// URL).
    #[arg(long, global = true, env = "PGPILOT_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (CN operator:NAME) for a monitor that requires
    /// mutual TLS.
    #[arg(long, global = true, env = "PGPILOT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (a file others cannot read).
    #[arg(long, global = true, env = "PGPILOT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Name to check the monitor's certificate for (default: the URL's host).
    #[arg(
        long,
        global = true,
        env = "PGPILOT_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
    /// File holding the monitor's shared token (a file others cannot read);
    /// else the token in PGPILOT_TOKEN, if set. Never on the command line.
    #[arg(long, global = true, env = "PGPILOT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    #[command(flatten)]
    Operate(OperatorCommand),
}

/// The operator subcommands: each talks gRPC to a running monitor.
#[derive(Subcommand)]
pub enum OperatorCommand {
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
        /// Print JSON (the shape of docs/show-settings.schema.json) instead of a table.
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
    /// Every formation, with its number_sync_standbys and how many nodes it has.
    ///
    /// Example: pgpilot-monitor show-formations --json
    ShowFormations {
        #[arg(long)]
        json: bool,
    },
    /// Create a formation; keepers join it with formation = "NAME".
    ///
    /// Example: pgpilot-monitor create-formation analytics --number-sync-standbys 1
    CreateFormation {
        name: String,
        /// How many quorum standbys must confirm each commit.
        #[arg(long, default_value_t = 0)]
        number_sync_standbys: u32,
    },
    /// Set a PostgreSQL parameter on every node of the formation (checked
    /// against pg_settings first); the keepers write it into pgpilot.conf
    /// and reload. One that needs a restart then shows as pending.
    ///
    /// Example: pgpilot-monitor set-parameter work_mem 16MB
    SetParameter {
        name: String,
        value: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove a parameter set with set-parameter (each node's own
    /// configuration applies again).
    ///
    /// Example: pgpilot-monitor reset-parameter work_mem
    ResetParameter {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Have every node of the formation reload its PostgreSQL
    /// configuration (pg_reload_conf), e.g. after editing
    /// postgresql.conf or pg_hba.conf by hand; waits until each reloaded.
    /// A reload never looks like a crash; a setting that needs a restart
    /// then shows as pending.
    ///
    /// Example: pgpilot-monitor reload
    Reload {
        #[command(flatten)]
        wait: Wait,
    },
    /// The formation's parameters, and per node the version applied and
    /// the settings pending a restart.
    ///
    /// Example: pgpilot-monitor show-parameters --json
    ShowParameters {
        #[arg(long)]
        json: bool,
    },
    /// Make a standby stream from another standby (a cascading standby)
    /// while that one can serve, else from the primary; `--primary` undoes
    /// it. A cascading standby's candidate priority becomes 0 and it leaves
    /// the replication quorum. One level only.
    ///
    /// Example: pgpilot-monitor set-upstream node3 node2
    SetUpstream {
        node: String,
        /// The standby to stream from.
        #[arg(required_unless_present = "primary", conflicts_with = "primary")]
        upstream: Option<String>,
        /// Stream from the primary again.
        #[arg(long)]
        primary: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Declare a permanent replication slot: each primary creates it, its
    /// standbys keep copies moved forward as the primary's moves, so a
    /// consumer finds it on whichever node is promoted. A logical slot
    /// (the default) needs --plugin and --database and the formation's
    /// wal_level = logical. Waits until every node that answers holds it.
    ///
    /// Example: pgpilot-monitor create-slot cdc --plugin pgoutput --database app
    CreateSlot {
        name: String,
        /// A physical slot (e.g. for an archiver or an outside standby).
        #[arg(long, conflicts_with_all = ["plugin", "database"])]
        physical: bool,
        /// The output plugin of a logical slot (pgoutput, test_decoding, wal2json, …).
        #[arg(long)]
        plugin: Option<String>,
        /// The database a logical slot decodes.
        #[arg(long)]
        database: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove a permanent slot: every node drops it (a slot a consumer is
    /// connected to is dropped once it disconnects). Waits until no node
    /// that answers holds it.
    ///
    /// Example: pgpilot-monitor drop-slot cdc
    DropSlot {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// The formation's permanent slots and where each node holds each one
    /// (restart and confirmed LSN, a consumer connected, or why not).
    ///
    /// Example: pgpilot-monitor show-slots --json
    ShowSlots {
        #[arg(long)]
        json: bool,
    },
    /// Drop a formation that has no node left (never "default").
    ///
    /// Example: pgpilot-monitor drop-formation analytics
    DropFormation { name: String },
    /// Pause the formation: the monitor starts no failover until resume (a
    /// failover under way finishes; an operator's switchover still runs).
    /// Waits until every node that answers has reached its goal.
    ///
    /// Example: pgpilot-monitor pause
    Pause {
        #[command(flatten)]
        wait: Wait,
    },
    /// Resume a paused formation: automatic failover is back (a primary
    /// that failed meanwhile is replaced now). Waits until the group has a
    /// settled primary again.
    ///
    /// Example: pgpilot-monitor resume
    Resume {
        #[command(flatten)]
        wait: Wait,
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
    /// A node's apply delay: as a standby it applies each commit only once
    /// it is this old (recovery_min_apply_delay), e.g. to undo an
    /// operator's mistake from it. Above 0 it also sets the node's
    /// candidate priority to 0 and its replication quorum to false: a
    /// delayed standby is never promoted nor counted for synchronous
    /// commit. 0 ends the delay (priority and quorum stay as they are).
    ///
    /// Example: pgpilot-monitor set-apply-delay node3 1h
    SetApplyDelay {
        node: String,
        /// The delay, e.g. "1h", "30min", "0" (at most about 24 days).
        #[arg(value_parser = parse_apply_delay)]
        delay: u64,
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
    /// Restart PostgreSQL through the keepers, so that the monitor never
    /// takes it for a crash: one node, or every node of a group with
    /// --all, one at a time, standbys first; a primary is switched over
    /// first and restarts as a standby (with --in-place it restarts as the
    /// primary and writes stop meanwhile).
    ///
    /// Example: pgpilot-monitor restart --all --pending-only
    Restart {
        /// Node to restart (or --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        node: Option<String>,
        /// Every node of the group, one at a time.
        #[arg(long)]
        all: bool,
        /// Only the nodes whose PostgreSQL reports settings pending a
        /// restart (pg_settings.pending_restart).
        #[arg(long)]
        pending_only: bool,
        /// Restart a primary as the primary instead of switching over first.
        #[arg(long)]
        in_place: bool,
        #[command(flatten)]
        op: GroupOp,
    },
}

#[derive(clap::Args)]
pub struct Wait {
    /// Return once the change started instead of waiting for the group to converge.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the group to converge.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(clap::Args)]
pub struct GroupOp {
    /// Group of the formation.
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    #[command(flatten)]
    pub wait: Wait,
}

impl Args {
    /// The TLS settings and token the global options name.
    pub fn security(&self) -> ClientSecurity {
        ClientSecurity {
            ca_file: self.tls_ca.clone(),
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
            token_file: self.token_file.clone(),
        }
    }
}

/// A --watch interval: human-readable ("2s", "500ms"), at least 100ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(100) {
        return Err(format!("{text} is too short: use at least 100ms"));
    }
    Ok(d)
}

/// An apply delay, human-readable like every duration ("1h", "90s"; "0"
/// ends it), within PostgreSQL's limit: in milliseconds.
fn parse_apply_delay(text: &str) -> Result<u64, String> {
    let d = if text.trim() == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not a duration ({e}): write e.g. \"1h\", \"30min\" or \"0\"")
        })?
    };
    pgpilot_proto::delay::to_millis(d)
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
    fn apply_delays_parse_as_durations_within_postgres_limit() {
        let delay = |args: &[&str]| match Args::try_parse_from(args).map(|a| a.command) {
            Ok(Command::Operate(OperatorCommand::SetApplyDelay { node, delay, .. })) => {
                Ok((node, delay))
            }
            Ok(_) => panic!("not set-apply-delay"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            delay(&["m", "set-apply-delay", "node3", "1h"]),
            Ok(("node3".to_string(), 3_600_000))
        );
        assert_eq!(
            delay(&["m", "set-apply-delay", "node3", "0"]),
            Ok(("node3".into(), 0))
        );
        assert_eq!(
            delay(&["m", "set-apply-delay", "node3", "0s"]),
            Ok(("node3".into(), 0))
        );
        assert_eq!(
            delay(&["m", "set-apply-delay", "node3", "90s", "--no-wait"]),
            Ok(("node3".into(), 90_000))
        );
        let err = delay(&["m", "set-apply-delay", "node3", "soon"]).unwrap_err();
        assert!(err.contains("\"soon\" is not a duration"), "{err}");
        let err = delay(&["m", "set-apply-delay", "node3", "30days"]).unwrap_err();
        assert!(err.contains("longer than PostgreSQL allows"), "{err}");
    }

    #[test]
    fn watch_takes_an_optional_interval() {
        let watch = |args: &[&str]| match Args::try_parse_from(args).map(|a| a.command) {
            Ok(Command::Operate(OperatorCommand::ShowState { watch, .. })) => Ok(watch),
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
