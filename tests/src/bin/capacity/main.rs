//! `pgpilot-capacity`: how many keepers one monitor serves on this machine.
//!
//! Starts a throw-away PostgreSQL for the monitor and the real
//! `pgpilot-monitor run` as a child process (through the test harness), then
//! simulates keepers with the real gRPC client. Each simulated node registers
//! once, then heartbeats (`NodeActive`) every `--interval`, following the
//! goal the monitor replies with the way a keeper does: the goal of one reply
//! is the state it reports on its next heartbeat. The node count is stepped
//! up (default 100, 1000, 3000, 10000; nodes are added, never removed).
//!
//! The monitor puts every node of a formation in group 0 and `RegisterNode`
//! does not create formations, so each group of `--nodes-per-group` nodes is
//! its own formation, inserted with SQL into the monitor's database before
//! its nodes register (`--single-formation` instead puts every node in
//! "default": one huge group, today's only alternative).
//!
//! Per step: heartbeats/s achieved against the target, heartbeat latency
//! (p50/p99/max), errors, the longest silence of any node, the CPU of the
//! monitor, of its database and of this load generator (from /proc), the
//! monitor's RSS, the database's transactions/s (`pg_stat_database`), the
//! busiest statements (`pg_stat_statements`) and what the database's
//! backends were doing. Then one simulated primary stops heartbeating, its
//! standbys report their stream gone, and the time until the monitor assigns
//! a standby `prepare_promotion` or `fast_forward` is compared with its bound.
//!
//! Only 127.0.0.1 is used. Each fake node's PostgreSQL port (20000 + n) is a
//! listener of this program that answers a startup packet the way a running
//! server does (AuthenticationOk), so the monitor's health check of a node
//! whose heartbeat runs late passes, as it would in a real fleet; a stopped
//! ("dead") node's listener hangs up instead, so its check fails.
//!
//! Example:
//!   cargo build --release -p pgpilot-monitor -p pgpilot-keeper
//!   cargo run --release -p pgpilot-tests --bin pgpilot-capacity -- --quick

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use pgpilot_tests::{Cluster, ClusterOptions};

use crate::sim::Sim;
use crate::step::drive;

/// Like the monitor's (see its main.rs): the load generator shares the
/// machine, so its CPU counts against the monitor's capacity.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod measure;
mod report;
mod sim;
mod step;

/// The monitor's node_timeout, written into its config (also its default).
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// The monitor's default fence_margin (not set by the harness; mirrors
/// `pgpilot_monitor::config::DEFAULT_FENCE_MARGIN`).
const FENCE_MARGIN: Duration = Duration::from_millis(500);
/// The keeper's default fence_timeout and wal_sender_timeout
/// (`pgpilot_keeper::config`); fence_timeout is raised to twice the
/// heartbeat interval when that is longer, as the keeper requires.
const KEEPER_FENCE_TIMEOUT: Duration = Duration::from_millis(1500);
const KEEPER_WAL_SENDER_TIMEOUT: Duration = Duration::from_secs(2);
/// First fake PostgreSQL port; node n uses FAKE_PORT_BASE + n. Below the
/// kernel's ephemeral range (32768…), where nothing listens here.
const FAKE_PORT_BASE: u32 = 20_000;
const MAX_NODES: usize = 12_000;
/// Bytes of WAL a simulated primary writes per millisecond (1 MB/s).
const WAL_BYTES_PER_MS: u64 = 1_000;
const LSN_BASE: u64 = 0x0100_0000;
/// How far behind its primary a simulated standby reports, per standby rank.
const STANDBY_LAG_BYTES: u64 = 4_096;
/// Bound on one RegisterNode call, and attempts per node.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
const REGISTER_ATTEMPTS: u32 = 3;
/// Bound on registering one step's new nodes.
const REGISTER_PHASE_LIMIT: Duration = Duration::from_secs(180);
/// How often the state of the simulated groups and the database is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on the final teardown of the heartbeat tasks.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// /proc/<pid>/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// Simulate many keepers against one real monitor and its database, and
/// report what the monitor keeps up with on this machine.
///
/// Example: pgpilot-capacity --steps 100,1000 --seconds-per-step 20
#[derive(Parser)]
#[command(name = "pgpilot-capacity")]
struct Args {
    /// Simulated node counts, one step each (nodes are added, never removed).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,3000,10000")]
    steps: Vec<usize>,
    /// Length of each step's measurement window, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds_per_step: u64,
    /// Heartbeat interval of every simulated keeper (e.g. "1s", "500ms").
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Nodes per group; each group is its own formation.
    #[arg(long, default_value_t = 3)]
    nodes_per_group: usize,
    /// Heartbeat with a unary NodeActive call per beat (keepers before the
    /// Heartbeats stream) instead of one stream per simulated keeper.
    #[arg(long)]
    unary: bool,
    /// Monitor processes over the one database; the gRPC connections are
    /// spread over them.
    #[arg(long, default_value_t = 1)]
    monitors: usize,
    /// Steps 100,1000 with 10 s each.
    #[arg(long)]
    quick: bool,
    /// Put every node in the formation "default", which the monitor makes
    /// one group: every heartbeat then locks every node's row.
    #[arg(long)]
    single_formation: bool,
    /// gRPC connections shared by all simulated keepers (HTTP/2
    /// multiplexes); with streams, at least one per 100 nodes of the
    /// largest step.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 16)]
    register_concurrency: usize,
    /// How long a step waits for every group to settle (one primary, the
    /// others secondary) before it measures anyway.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle_timeout: Duration,
    /// How long the failover check waits for the monitor's decision.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    failover_timeout: Duration,
    /// The whole run stops starting new phases after this long.
    #[arg(long, default_value = "8m", value_parser = humantime::parse_duration)]
    time_limit: Duration,
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.steps = vec![100, 1000];
        args.seconds_per_step = 10;
    }
    if args.steps.is_empty() || args.steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--steps must be increasing node counts, e.g. 100,1000");
    }
    if args.steps.iter().any(|&n| n > MAX_NODES) {
        bail!("at most {MAX_NODES} simulated nodes (their fake ports stay below 32768)");
    }
    if args.nodes_per_group < 2 && !args.single_formation {
        bail!("--nodes-per-group must be at least 2 (a primary and a standby)");
    }
    if args.channels == 0
        || args.register_concurrency == 0
        || args.seconds_per_step == 0
        || args.monitors == 0
    {
        bail!("--channels, --register-concurrency, --seconds-per-step and --monitors must be at least 1");
    }
    if args.interval < Duration::from_millis(50) {
        bail!("--interval must be at least 50ms, like a keeper's heartbeat_interval");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let run_started = Instant::now();
    let budget_end = run_started + args.time_limit;
    let sim = Arc::new(Sim::new(args.interval, args.unary));

    eprintln!("starting the monitor's PostgreSQL and the monitor …");
    let cluster = Cluster::start(
        ClusterOptions {
            nodes: 0,
            first_node_alone: false,
            node_timeout: Some(format!("{}ms", NODE_TIMEOUT.as_millis())),
            // Durable like a production monitor database (the test harness
            // turns fsync off for speed; a capacity figure must not).
            monitor_db_settings: vec![
                "fsync=on".to_string(),
                "full_page_writes=on".to_string(),
                "shared_preload_libraries=pg_stat_statements".to_string(),
                "pg_stat_statements.max=1000".to_string(),
            ],
            ..ClusterOptions::default()
        }
        .monitors(args.monitors),
    )
    .await?;
    let result = drive(&args, &cluster, sim, budget_end).await;
    if let Err(err) = &result {
        eprintln!("capacity run failed: {err:#}\n\n{}", cluster.log_tails());
    }
    if let Err(err) = cluster.shutdown().await {
        eprintln!("shutting the monitor down: {err:#}");
    }
    eprintln!(
        "total run time {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
    result
}

/// Lock a mutex, also after a panic poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
