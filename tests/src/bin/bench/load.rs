//! `pgpilot-bench load`: failover, switchover and crash recovery of a
//! database with data in it, under a real write load.
//!
//! A three-node synchronous group; the primary is filled with `pgbench -i
//! -s SCALE` (200 is about 3 GB). During every run, `pgbench -c CLIENTS -j
//! JOBS` writes through the multi-host URI (in rounds, as a pool
//! reconnects: see `pgpilot_tests::pgbench`), and beside it the checked
//! writer inserts a numbered row every 20 ms, from whose acknowledgements
//! come the write outage and the rows lost. Scenarios:
//! - **unplanned**: the primary's keeper and postmaster SIGKILLed (the
//!   host is gone); afterwards its keeper starts again and the old primary
//!   rejoins (pg_rewind): the time until it is a settled secondary and what
//!   the rewind copied. After the runs, one full re-clone of a standby
//!   (`reinit`) is timed for comparison.
//! - **switchover**: `perform-failover` under the load.
//! - **crash-recovery**: with checkpoints held off, `UPDATE` a share of
//!   `pgbench_accounts` (WAL to replay), then SIGKILL the primary's
//!   postmaster, its keeper alive: the keeper restarts PostgreSQL, which
//!   replays that WAL. The monitor must not fail over before
//!   `postgres_restart_timeout`; the table says whether and when it did.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use pgpilot_tests::operator::{events, last_event_id};
use pgpilot_tests::pgbench::{PgbenchLoad, PgbenchTotals};
use pgpilot_tests::process::{kill_postmaster_tree, postmaster_pid, reap};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

use crate::{current_primary, print_row, settled, wait_for_writes, writer};

/// A rejoin or re-clone of a large database on a slow disk: generous.
const LONG: Duration = Duration::from_secs(3600);
/// Load before the event, so that it hits a busy primary.
const WARM_UP: Duration = Duration::from_secs(3);
/// Load after the writes resumed, so that pgbench's rounds reach the new
/// primary too.
const COOL_DOWN: Duration = Duration::from_secs(2);
/// The monitor's default (the bench runs with default settings).
const POSTGRES_RESTART_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum LoadScenario {
    Unplanned,
    Switchover,
    CrashRecovery,
}

impl LoadScenario {
    fn label(self) -> &'static str {
        match self {
            LoadScenario::Unplanned => "unplanned failover (host SIGKILLed)",
            LoadScenario::Switchover => "planned switchover (perform-failover)",
            LoadScenario::CrashRecovery => "primary crash recovery, keeper alive",
        }
    }
}

pub struct LoadArgs {
    pub scale: u32,
    pub runs: usize,
    pub clients: u32,
    pub jobs: u32,
    /// Crash recovery: the share of pgbench_accounts updated before the
    /// crash, in percent.
    pub update_percent: u32,
    pub scenarios: Vec<LoadScenario>,
}

struct Sample {
    outage: Duration,
    lost: usize,
    pgbench: PgbenchTotals,
    /// How long the load ran.
    loaded: Duration,
    /// Unplanned: the old primary's rejoin time and what its rewind copied.
    rejoin: Option<(Duration, String)>,
    /// Crash recovery: WAL written since the last checkpoint (bytes), and
    /// when (after the crash) another node became the primary, if one did.
    recovery: Option<(u64, Option<Duration>)>,
}

pub async fn run(args: LoadArgs) -> Result<()> {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: false,
        ..ClusterOptions::nodes(3)
    })
    .await?;
    settled(&cluster).await?;
    let primary = current_primary(&cluster).await?;
    eprintln!("filling {primary} with pgbench -i -s {} …", args.scale);
    let fill = Instant::now();
    pgpilot_tests::pgbench::init(&cluster, &primary, args.scale).await?;
    let size: u64 = cluster
        .psql(
            &primary,
            "SELECT sum(pg_database_size(oid)) FROM pg_database",
        )
        .await?
        .trim()
        .parse()
        .context("reading the databases' size")?;
    settled(&cluster).await?;
    eprintln!(
        "filled in {:.0} s: {} in all databases",
        fill.elapsed().as_secs_f64(),
        pgpilot_proto::work::bytes(size)
    );
    let scenarios = if args.scenarios.is_empty() {
        vec![
            LoadScenario::Unplanned,
            LoadScenario::Switchover,
            LoadScenario::CrashRecovery,
        ]
    } else {
        args.scenarios.clone()
    };
    let mut rows = Vec::new();
    let mut reclone = None;
    for &s in &scenarios {
        let mut samples = Vec::new();
        for i in 1..=args.runs {
            let sample = match s {
                LoadScenario::Unplanned => unplanned(&cluster, &args).await,
                LoadScenario::Switchover => switchover(&cluster, &args).await,
                LoadScenario::CrashRecovery => crash_recovery(&cluster, &args).await,
            }
            .with_context(|| format!("{} run {i}", s.label()))?;
            eprintln!(
                "{:<40} run {i}/{}: outage {:.2} s, rows lost {}, pgbench {:?}{}",
                s.label(),
                args.runs,
                sample.outage.as_secs_f64(),
                sample.lost,
                sample.pgbench,
                sample
                    .rejoin
                    .as_ref()
                    .map(|(d, copy)| format!(", rejoined in {:.1} s ({copy})", d.as_secs_f64()))
                    .or_else(|| sample.recovery.map(|r| format!(", {}", recovery_text(r))))
                    .unwrap_or_default()
            );
            samples.push(sample);
        }
        if s == LoadScenario::Unplanned {
            settled(&cluster).await?;
            let primary = current_primary(&cluster).await?;
            let standby = cluster
                .node_names()
                .into_iter()
                .find(|n| *n != primary)
                .context("no standby")?;
            eprintln!("re-cloning {standby} in full for comparison …");
            reclone = Some(crate::clone::rebuild(&cluster, &primary, &standby).await?);
        }
        rows.push((s, samples));
    }
    cluster.shutdown().await?;
    report(&args, size, &rows, reclone, started.elapsed());
    Ok(())
}

fn report(
    args: &LoadArgs,
    size: u64,
    rows: &[(LoadScenario, Vec<Sample>)],
    reclone: Option<(Duration, String)>,
    took: Duration,
) {
    println!();
    println!(
        "pgbench -s {} ({} in all databases), 3 nodes, synchronous, default settings; load: pgbench -c {} -j {} through the multi-host URI (target_session_attrs=read-write) and the checked writer every 20 ms; total run {:.0} s",
        args.scale,
        pgpilot_proto::work::bytes(size),
        args.clients,
        args.jobs,
        took.as_secs_f64()
    );
    println!(
        "{:<52} {:>4} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "write outage (s)",
        "runs",
        "min",
        "median",
        "p95",
        "max",
        "rows lost",
        "pgbench tps",
        "aborted",
        "no primary"
    );
    for (s, samples) in rows {
        let lost: usize = samples.iter().map(|x| x.lost).sum();
        let tx: u64 = samples.iter().map(|x| x.pgbench.transactions).sum();
        let loaded: f64 = samples.iter().map(|x| x.loaded.as_secs_f64()).sum();
        let aborted: u64 = samples.iter().map(|x| x.pgbench.aborted_clients).sum();
        let failed: u64 = samples.iter().map(|x| x.pgbench.failed_connects).sum();
        print_row(
            s.label(),
            samples.iter().map(|x| x.outage.as_secs_f64()).collect(),
            &[
                lost.to_string(),
                format!("{:.0}", tx as f64 / loaded.max(0.001)),
                aborted.to_string(),
                failed.to_string(),
            ],
        );
    }
    println!("(aborted: pgbench clients whose connection broke mid-transaction; no primary: pgbench rounds that found no writable server)");
    for (s, samples) in rows {
        match s {
            LoadScenario::Unplanned => {
                print_row(
                    "old primary rejoined, until settled secondary (s)",
                    samples
                        .iter()
                        .filter_map(|x| x.rejoin.as_ref().map(|r| r.0.as_secs_f64()))
                        .collect(),
                    &[],
                );
                for (i, x) in samples.iter().enumerate() {
                    if let Some((_, copy)) = &x.rejoin {
                        println!("  run {}: {copy}", i + 1);
                    }
                }
                if let Some((d, copy)) = &reclone {
                    println!(
                        "full re-clone of a standby (reinit), for comparison: {:.1} s ({copy})",
                        d.as_secs_f64()
                    );
                }
            }
            LoadScenario::CrashRecovery => {
                for (i, x) in samples.iter().enumerate() {
                    if let Some(r) = x.recovery {
                        println!(
                            "  run {}: writes back after {:.1} s; {}",
                            i + 1,
                            x.outage.as_secs_f64(),
                            recovery_text(r)
                        );
                    }
                }
            }
            LoadScenario::Switchover => {}
        }
    }
}

/// The load and the checked writer, started and warmed up.
struct Load {
    pgbench: PgbenchLoad,
    writer: pgpilot_tests::Writer,
    started: Instant,
}

async fn load(cluster: &Cluster, args: &LoadArgs) -> Result<Load> {
    let started = Instant::now();
    let pgbench = PgbenchLoad::start(cluster, &cluster.multi_host_uri(), args.clients, args.jobs);
    let writer = writer(cluster).await?;
    tokio::time::sleep(WARM_UP).await;
    Ok(Load {
        pgbench,
        writer,
        started,
    })
}

/// How a run's write outage is taken from the writer's acknowledgements.
enum Outage {
    /// Around the event (a kill): the last write acknowledged before it to
    /// the first after, on a new connection.
    Around,
    /// The longest pause between two acknowledgements from this instant on
    /// (a switchover: the writes go on until the demotion).
    LongestGapSince(Instant),
}

/// Once the writes resumed after `event`, stop the load and the writer;
/// the outage and the rows lost on the current primary.
async fn stop(cluster: &Cluster, load: Load, event: Instant, how: Outage) -> Result<Sample> {
    wait_for_writes(cluster, &load.writer, event).await?;
    tokio::time::sleep(COOL_DOWN).await;
    let report = load.writer.stop().await;
    eprintln!(
        "the checked writer's last errors:\n{}",
        report.recent_errors(8)
    );
    let pgbench = load.pgbench.stop().await?;
    let loaded = load.started.elapsed();
    let outage = match how {
        Outage::Around => report
            .outage_around(event)
            .map(|o| o.first_ack_after - o.last_ack_before.unwrap_or(event)),
        Outage::LongestGapSince(since) => report.longest_gap_after(since),
    }
    .context("no write acknowledged after the event")?;
    let primary = current_primary(cluster).await?;
    let lost = report.missing_ids(cluster, &primary).await?.len();
    Ok(Sample {
        outage,
        lost,
        pgbench,
        loaded,
        rejoin: None,
        recovery: None,
    })
}

async fn unplanned(cluster: &Cluster, args: &LoadArgs) -> Result<Sample> {
    settled(cluster).await?;
    let old = current_primary(cluster).await?;
    let load = load(cluster, args).await?;
    let killed = cluster.kill_node_hard(&old)?;
    cluster.wait_other_primary(&old, LONG).await?;
    let mut sample = stop(cluster, load, killed, Outage::Around).await?;
    let before = last_event_id(&events(cluster).await?);
    let restarted = Instant::now();
    cluster.start_keeper(&old)?;
    cluster
        .wait_state(LONG, &format!("{old} a settled secondary"), |s| {
            s.node(&old)
                .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
        })
        .await?;
    let rejoined = restarted.elapsed();
    let copy = events(cluster)
        .await?
        .into_iter()
        .find(|e| {
            e["kind"] == "work_done"
                && e["node_name"] == old.as_str()
                && e["event_id"].as_i64().unwrap_or(0) > before
        })
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "the rewind copied nothing".to_string());
    sample.rejoin = Some((rejoined, copy));
    Ok(sample)
}

async fn switchover(cluster: &Cluster, args: &LoadArgs) -> Result<Sample> {
    settled(cluster).await?;
    let load = load(cluster, args).await?;
    let started = Instant::now();
    crate::perform_failover(cluster).await?;
    stop(
        cluster,
        load,
        Instant::now(),
        Outage::LongestGapSince(started),
    )
    .await
}

async fn crash_recovery(cluster: &Cluster, args: &LoadArgs) -> Result<Sample> {
    settled(cluster).await?;
    let primary = current_primary(cluster).await?;
    for sql in [
        "ALTER SYSTEM SET max_wal_size = '64GB'",
        "ALTER SYSTEM SET checkpoint_timeout = '1h'",
        "SELECT pg_reload_conf()",
        "CHECKPOINT",
    ] {
        cluster.psql(&primary, sql).await?;
    }
    let from = wal_lsn(cluster, &primary).await?;
    // In slices of 1 % each: one statement per psql call stays well
    // within the harness's query limit.
    // pgbench -i makes 100,000 accounts per unit of scale.
    let accounts = u64::from(args.scale) * 100_000;
    let slice = (accounts / 100).max(1);
    for i in 0..u64::from(args.update_percent) {
        let update = format!(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid > {} AND aid <= {}",
            i * slice,
            (i + 1) * slice
        );
        cluster.psql(&primary, &update).await?;
    }
    let load = load(cluster, args).await?;
    let wal = wal_lsn(cluster, &primary).await?.saturating_sub(from);
    let pgdata = cluster.pgdata(&primary)?;
    let Some(pid) = postmaster_pid(&pgdata) else {
        bail!("{primary} has no postmaster.pid");
    };
    let crashed = Instant::now();
    reap(&kill_postmaster_tree(pid), Duration::from_secs(10));
    // Until the writes resume, note when (if) another node is assigned the
    // primary's role.
    let failover = std::cell::Cell::new(None);
    pgpilot_tests::poll_every(
        Duration::from_millis(100),
        LONG,
        "the writes to resume after the crash",
        || {
            let (primary, failover, w) = (&primary, &failover, &load.writer);
            async move {
                if failover.get().is_none() {
                    let s = cluster.state().await?;
                    if s.writable_primaries().iter().any(|p| p.name != *primary) {
                        failover.set(Some(crashed.elapsed()));
                    }
                }
                Ok(w.has_ack_after(crashed).then_some(()))
            }
        },
    )
    .await?;
    let mut sample = stop(cluster, load, crashed, Outage::Around).await?;
    settled(cluster).await?;
    for sql in [
        "ALTER SYSTEM RESET max_wal_size",
        "ALTER SYSTEM RESET checkpoint_timeout",
        "SELECT pg_reload_conf()",
    ] {
        cluster.psql(&primary, sql).await?;
    }
    sample.recovery = Some((wal, failover.get()));
    Ok(sample)
}

/// "2.1 GiB of WAL to replay; no failover".
fn recovery_text((wal, failover): (u64, Option<Duration>)) -> String {
    let failover = match failover {
        None => "no failover".to_string(),
        Some(at) => format!(
            "failover {:.1} s after the crash (postgres_restart_timeout {} s)",
            at.as_secs_f64(),
            POSTGRES_RESTART_TIMEOUT.as_secs()
        ),
    };
    format!(
        "{} of WAL to replay; {failover}",
        pgpilot_proto::work::bytes(wal)
    )
}

/// The primary's current WAL position, in bytes.
async fn wal_lsn(cluster: &Cluster, node: &str) -> Result<u64> {
    let out = cluster
        .psql(node, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        .await?;
    out.trim()
        .parse::<f64>()
        .map(|v| v as u64)
        .context("reading pg_current_wal_lsn")
}
