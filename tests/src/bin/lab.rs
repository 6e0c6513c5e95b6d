//! `pgpilot-lab`: a monitor and a few nodes on this machine, for trying
//! pgpilot out. Brings everything up on 127.0.0.1, waits until the group is
//! healthy, prints how to reach it, and tears it all down on Ctrl-C.
//!
//! Build first: `cargo build --workspace`, then `target/debug/pgpilot-lab`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use pgpilot_tests::{Cluster, ClusterOptions, PostgresNotInstalled, Security, Tools};
use tokio::signal::unix::{signal, SignalKind};

/// Run a pgpilot monitor and a group of PostgreSQL nodes on 127.0.0.1 until Ctrl-C.
#[derive(Parser, Debug)]
#[command(name = "pgpilot-lab", version)]
struct Args {
    /// Number of PostgreSQL nodes (one primary, the others standbys).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9))]
    nodes: u16,
    /// Directory for all data, configs and logs (must be new or empty; kept
    /// after exit). Default: a temporary directory removed on exit.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How the monitor serves gRPC: mutual-tls (default: a throw-away CA
    /// from `pgpilot-monitor gen-certs`, a certificate per keeper and one
    /// for the operator), tls, token, or plaintext.
    #[arg(long, value_enum, default_value = "mutual-tls")]
    security: LabSecurity,
    /// Replicate without a password (trust) instead of as the replication
    /// role with a random SCRAM-SHA-256 password (`<dir>/replication.password`).
    #[arg(long)]
    no_replication_password: bool,
    /// Replicate without PostgreSQL's TLS between the nodes (by default,
    /// except with --security plaintext, each node has a certificate from
    /// the lab's CA, `<dir>/tls/postgres-nodeN.crt`, and the nodes
    /// replicate over TLS with sslmode=verify-full).
    #[arg(long)]
    no_postgres_tls: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LabSecurity {
    MutualTls,
    Tls,
    Token,
    Plaintext,
}

impl From<LabSecurity> for Security {
    fn from(s: LabSecurity) -> Security {
        match s {
            LabSecurity::MutualTls => Security::MutualTls,
            LabSecurity::Tls => Security::Tls,
            LabSecurity::Token => Security::Token,
            LabSecurity::Plaintext => Security::Plaintext,
        }
    }
}

/// How long the lab waits for the group to become healthy.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err.downcast_ref::<PostgresNotInstalled>().is_some() {
                eprintln!(
                    "pgpilot-lab needs PostgreSQL's server programs; install them with \
                     `sudo apt-get install postgresql-15` (or set PGPILOT_PG_BIN_DIR)."
                );
            } else {
                eprintln!("pgpilot-lab: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut opts = ClusterOptions::nodes(args.nodes as usize);
    opts.dir = args.dir.clone();
    opts.security = args.security.into();
    opts.replication_password = !args.no_replication_password;
    opts.postgres_tls = !args.no_postgres_tls && opts.security != Security::Plaintext;
    let kept = args.dir.is_some();
    let postgres_tls = opts.postgres_tls;
    // Fail early, before saying anything, when PostgreSQL or our binaries are missing.
    Tools::locate()?;

    eprintln!(
        "starting the monitor database, the monitor and {} node{}…",
        args.nodes,
        if args.nodes == 1 { "" } else { "s" }
    );
    // A Ctrl-C during start-up drops the half-built cluster, which stops
    // whatever already runs.
    let cluster = tokio::select! {
        cluster = Cluster::start(opts) => cluster?,
        _ = tokio::signal::ctrl_c() => { eprintln!("interrupted"); return Ok(()); }
        _ = terminate.recv() => { eprintln!("terminated"); return Ok(()); }
    };
    eprintln!(
        "everything runs under {}; waiting for the group to become healthy…",
        cluster.root().display()
    );
    let healthy = tokio::select! {
        healthy = cluster.wait_healthy(HEALTHY_TIMEOUT) => Some(healthy),
        _ = tokio::signal::ctrl_c() => None,
        _ = terminate.recv() => None,
    };
    match healthy {
        Some(Ok(_)) => {}
        Some(Err(err)) => {
            cluster.shutdown().await?;
            return Err(err);
        }
        None => {
            eprintln!("interrupted; stopping everything");
            return cluster.shutdown().await;
        }
    }

    let monitor = cluster.monitor_url().to_string();
    let show_state = cluster
        .run_cli(&["show-state", "--monitor", &monitor])
        .await?;
    print!("{}", String::from_utf8_lossy(&show_state.stdout));
    if !show_state.status.success() {
        eprint!("{}", String::from_utf8_lossy(&show_state.stderr));
    }
    let cli = cluster.tools().monitor.display().to_string();
    println!();
    println!("Connect (always reaches the writable primary):");
    println!("  psql '{}'", cluster.multi_host_uri());
    println!();
    println!("Watch and drive the group:");
    println!("  export PGPILOT_MONITOR={monitor}");
    for (key, value) in cluster.cli_env()? {
        if key == "PGPILOT_TOKEN" {
            let file = cluster
                .tls_files()
                .map(|t| t.token_file().display().to_string())
                .unwrap_or_default();
            println!("  export PGPILOT_TOKEN_FILE={file}");
        } else {
            println!("  export {key}={value}");
        }
    }
    println!("  {cli} show-state");
    println!("  {cli} show-events");
    println!("  {cli} perform-failover");
    println!();
    println!(
        "Logs: {}/monitor.log, {}/node*/keeper.log, {}/node*/data.log",
        cluster.root().display(),
        cluster.root().display(),
        cluster.root().display()
    );
    if cluster.replication_password().is_some() {
        println!(
            "Replication: role pgpilot_replication, SCRAM-SHA-256, password in {}/replication.password",
            cluster.root().display()
        );
    }
    if postgres_tls {
        println!(
            "Replication over TLS (sslmode=verify-full): certificates in {}/tls/postgres-node*.crt",
            cluster.root().display()
        );
    }
    println!("Press Ctrl-C to stop everything.");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping the keepers, the monitor and PostgreSQL…");
    let root = cluster.root().to_path_buf();
    cluster.shutdown().await?;
    if kept {
        eprintln!("stopped; the data stays in {}", root.display());
    } else {
        eprintln!("stopped and cleaned up");
    }
    Ok(())
}
