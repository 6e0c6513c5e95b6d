//! `pgpilot-bench failover`: builds real clusters on this machine and
//! measures what a client writing through the multi-host URI feels —
//! the write outage of unplanned failovers, PostgreSQL crashes with the
//! keeper alive, planned failovers, and a primary cut off by a network
//! partition (in synchronous and asynchronous replication) with a second
//! client on its own host, whose writes acknowledged after the cut the
//! fence bounds — plus the time from nothing to a healthy group, and the
//! pause a planned restart of the primary's keeper (SIGUSR1, start again)
//! causes, and the outage of stopping the primary's node on purpose
//! (SIGTERM: it hands over first). Prints a table with min / median / p95 / max.
//!
//! `pgpilot-bench clone`: the time to build a standby of a database with
//! data in it, beside a bare pg_basebackup (see `clone.rs`).
//!
//! `pgpilot-bench load`: failover, switchover and crash recovery of a
//! database with data in it under a pgbench write load (see `load.rs`).
//!
//! `pgpilot-bench logical`: a logical consumer's pause across failovers
//! and switchovers (see `logical.rs`).
//!
//! `pgpilot-bench cascade`: how soon a cascading standby whose upstream
//! died streams from the primary and catches up (see `cascade.rs`).
//!
//! Example: cargo run --release -p pgpilot-tests --bin pgpilot-bench -- failover --runs 5

mod cascade;
mod clone;
mod load;
mod logical;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use pgpilot_tests::process::{kill_postmaster_tree, postmaster_pid, reap};
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, Writer, WriterOptions,
};

#[derive(Parser)]
#[command(name = "pgpilot-bench")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Failover write outage and rows lost, per scenario.
    Failover {
        /// Repetitions of each scenario.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Nodes per cluster.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Scenarios to run (default: all).
        #[arg(long, value_enum)]
        scenario: Vec<Scenario>,
    },
    /// Time to build a standby of a database with data in it (pgbench -i),
    /// beside a bare pg_basebackup of the same primary.
    ///
    /// Example: pgpilot-bench clone --scale 200 --runs 3 [--source standby|restore]
    Clone {
        /// pgbench scale of the primary's data (200 is about 3 GB).
        #[arg(long, default_value_t = 20)]
        scale: u32,
        /// Rebuilds (and bare copies) to time.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// clone_max_rate for the standby's keeper, e.g. "50MB".
        #[arg(long)]
        max_rate: Option<String>,
        /// What the standby is built from.
        #[arg(long, value_enum, default_value_t = clone::Source::Primary)]
        source: clone::Source,
    },
    /// Failover, switchover and crash recovery of a database with data in
    /// it (pgbench -i), under a pgbench write load through the multi-host
    /// URI, beside the checked writer.
    ///
    /// Example: pgpilot-bench load --scale 200 --runs 5
    Load {
        /// pgbench scale of the primary's data (200 is about 3 GB).
        #[arg(long, default_value_t = 20)]
        scale: u32,
        /// Repetitions of each scenario.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// pgbench clients (-c).
        #[arg(long, default_value_t = 8)]
        clients: u32,
        /// pgbench threads (-j).
        #[arg(long, default_value_t = 2)]
        jobs: u32,
        /// Crash recovery: the share of pgbench_accounts (percent) updated
        /// with checkpoints held off before the crash, for WAL to replay.
        #[arg(long, default_value_t = 20)]
        update_percent: u32,
        /// Scenarios to run (default: all).
        #[arg(long, value_enum)]
        scenario: Vec<load::LoadScenario>,
    },
    /// The pause a logical consumer (pg_recvlogical on a permanent slot)
    /// sees across an unplanned failover and a switchover, and the inserts
    /// it missed (always 0).
    ///
    /// Example: pgpilot-bench logical --runs 5
    Logical {
        /// Failover + switchover pairs.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A cascading standby whose upstream's host dies: the time until it
    /// streams from the primary and has caught up.
    ///
    /// Example: pgpilot-bench cascade --runs 5
    Cascade {
        /// Times the upstream is killed (and started again).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
enum Scenario {
    /// The primary's keeper and postmaster SIGKILLed: the host is gone.
    Unplanned,
    /// The primary's postmaster SIGKILLed, its keeper alive.
    PgCrash,
    /// `perform-failover` while the client writes.
    Planned,
    /// `perform-failover` whose first candidate (the standby of highest
    /// priority) refuses in its `before_promotion` hook: the next one
    /// takes over.
    PlannedRefused,
    /// The primary cut off from the monitor, its standbys and network
    /// clients (fault proxies), synchronous replication; a second client
    /// writes on the primary's own host.
    PartitionSync,
    /// The same with asynchronous standbys (`replication_quorum = false`).
    PartitionAsync,
    /// The primary's keeper restarted alone (SIGUSR1, start again), as in
    /// an upgrade: PostgreSQL and its fence guard keep running.
    KeeperRestart,
    /// The primary's node stopped on purpose (SIGTERM to its keeper, as
    /// `systemctl stop` or `docker stop`): it hands over, then its keeper
    /// is started again and the node rejoins.
    NodeStop,
    /// `restart --all`: every node's PostgreSQL restarted through the
    /// keepers, standbys first, then a switchover and the old primary.
    RollingRestart,
    /// Two monitors: the primary's host and the monitor the keepers talk
    /// to SIGKILLed together; the failover goes through the other monitor.
    MonitorKilled,
    /// Two monitors: the one holding the lease SIGKILLed; the time until
    /// the other holds it (not a write outage: the writes go on).
    LeaseTakeover,
}

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::Unplanned => "unplanned failover (keeper + postmaster SIGKILLed)",
            Scenario::PgCrash => "primary PostgreSQL crash, keeper alive",
            Scenario::Planned => "planned perform-failover",
            Scenario::PlannedRefused => "planned, first candidate's hook refuses",
            Scenario::PartitionSync => "primary partitioned away, synchronous",
            Scenario::PartitionAsync => "primary partitioned away, asynchronous",
            Scenario::KeeperRestart => "primary's keeper restarted (SIGUSR1, start)",
            Scenario::NodeStop => "primary's node stopped (SIGTERM to its keeper)",
            Scenario::RollingRestart => "rolling restart (restart --all)",
            Scenario::MonitorKilled => "unplanned failover + the keepers' monitor killed",
            Scenario::LeaseTakeover => "lease takeover after the holder's SIGKILL (*)",
        }
    }

    /// The cluster this scenario runs on.
    fn options(self, nodes: usize) -> ClusterOptions {
        let mut options = ClusterOptions {
            first_node_alone: false,
            ..ClusterOptions::nodes(nodes)
        };
        if self.is_partition() {
            options = options.monitor_link_proxies().ingress_proxies();
        }
        if self == Scenario::PartitionAsync {
            options = options.replication_quorums(&vec![false; nodes]);
        }
        if self == Scenario::PlannedRefused {
            // Distinct priorities: the first candidate is known.
            options.candidate_priorities = (0..nodes as u32).map(|i| 90 - 10 * i).collect();
        }
        if matches!(self, Scenario::MonitorKilled | Scenario::LeaseTakeover) {
            options = options.monitors(2);
        }
        options
    }

    fn is_partition(self) -> bool {
        matches!(self, Scenario::PartitionSync | Scenario::PartitionAsync)
    }
}

struct Sample {
    outage: Duration,
    lost: usize,
    /// Partitions: how long after the cut the isolated primary acknowledged
    /// its last write to the client on its host, how many it did, and how
    /// many of those came with the "committed locally" warning.
    isolated: Option<(Duration, usize, usize)>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let (runs, nodes, scenario) = match Args::parse().command {
        Command::Failover {
            runs,
            nodes,
            scenario,
        } => (runs, nodes, scenario),
        Command::Clone {
            scale,
            runs,
            max_rate,
            source,
        } => {
            return clone::run(clone::CloneArgs {
                scale,
                runs,
                max_rate,
                source,
            })
            .await
        }
        Command::Load {
            scale,
            runs,
            clients,
            jobs,
            update_percent,
            scenario,
        } => {
            return load::run(load::LoadArgs {
                scale,
                runs,
                clients,
                jobs,
                update_percent,
                scenarios: scenario,
            })
            .await
        }
        Command::Logical { runs } => return logical::run(runs).await,
        Command::Cascade { runs } => return cascade::run(runs).await,
    };
    let scenarios = if scenario.is_empty() {
        vec![
            Scenario::Unplanned,
            Scenario::PgCrash,
            Scenario::Planned,
            Scenario::PlannedRefused,
            Scenario::PartitionSync,
            Scenario::PartitionAsync,
            Scenario::KeeperRestart,
            Scenario::NodeStop,
            Scenario::RollingRestart,
            Scenario::MonitorKilled,
            Scenario::LeaseTakeover,
        ]
    } else {
        scenario
    };
    let mut rows = Vec::new();
    let mut startups = Vec::new();
    for &s in &scenarios {
        let started = Instant::now();
        let cluster = Cluster::start(s.options(nodes)).await?;
        settled(&cluster).await?;
        startups.push(started.elapsed());
        let mut samples = Vec::new();
        for run in 1..=runs {
            let sample = match s {
                Scenario::Unplanned => unplanned(&cluster).await,
                Scenario::PgCrash => pg_crash(&cluster).await,
                Scenario::Planned => planned(&cluster).await,
                Scenario::PlannedRefused => planned_refused(&cluster).await,
                Scenario::PartitionSync | Scenario::PartitionAsync => partition(&cluster).await,
                Scenario::KeeperRestart => keeper_restart(&cluster).await,
                Scenario::NodeStop => node_stop(&cluster).await,
                Scenario::RollingRestart => rolling_restart(&cluster).await,
                Scenario::MonitorKilled => monitor_killed(&cluster).await,
                Scenario::LeaseTakeover => lease_takeover(&cluster).await,
            }
            .with_context(|| format!("{} run {run}", s.label()))?;
            eprintln!(
                "{:<52} run {run}/{runs}: outage {:.2} s, rows lost {}",
                s.label(),
                sample.outage.as_secs_f64(),
                sample.lost
            );
            samples.push(sample);
        }
        cluster.shutdown().await?;
        rows.push((s, samples));
    }

    println!();
    println!(
        "{nodes} nodes, default settings, one client writing every 20 ms through the multi-host URI (target_session_attrs=read-write)"
    );
    println!(
        "{:<52} {:>4} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "write outage (s)", "runs", "min", "median", "p95", "max", "rows lost"
    );
    for (s, samples) in &rows {
        let lost: usize = samples.iter().map(|x| x.lost).sum();
        let secs = samples.iter().map(|x| x.outage.as_secs_f64()).collect();
        print_row(s.label(), secs, &[lost.to_string()]);
    }
    let partitions: Vec<_> = rows.iter().filter(|(s, _)| s.is_partition()).collect();
    if !partitions.is_empty() {
        println!();
        println!(
            "partitions: the isolated primary's writes to a client on its own host after the cut (lost in asynchronous mode; in synchronous mode only those \"committed locally\" after a cancel)"
        );
        println!(
            "{:<52} {:>4} {:>8} {:>8} {:>8} {:>8} {:>10} {:>11}",
            "last acknowledged after the cut (s)",
            "runs",
            "min",
            "median",
            "p95",
            "max",
            "writes",
            "local only"
        );
        for (s, samples) in partitions {
            let secs: Vec<f64> = samples
                .iter()
                .filter_map(|x| x.isolated.map(|(d, _, _)| d.as_secs_f64()))
                .collect();
            let writes: usize = samples
                .iter()
                .filter_map(|x| x.isolated.map(|(_, n, _)| n))
                .sum();
            let local_only: usize = samples
                .iter()
                .filter_map(|x| x.isolated.map(|(_, _, l)| l))
                .sum();
            if secs.is_empty() {
                println!(
                    "{:<52} {:>4} (no write acknowledged after the cut)",
                    s.label(),
                    0
                );
                continue;
            }
            print_row(
                s.label(),
                secs,
                &[format!("{writes:>10}"), format!("{local_only:>11}")],
            );
        }
    }
    if rows.iter().any(|(s, _)| *s == Scenario::LeaseTakeover) {
        println!("(*) not a write outage: from the SIGKILL of the monitor holding the lease to the other holding it; the writes go on");
    }
    print_row(
        &format!("nothing to a healthy {nodes}-node group (s)"),
        startups.iter().map(Duration::as_secs_f64).collect(),
        &["-".to_string()],
    );
    Ok(())
}

/// One table row: label, count, min / median / p95 / max of `values`
/// (seconds, at least one), then the `extra` columns.
fn print_row(label: &str, mut values: Vec<f64>, extra: &[String]) {
    values.sort_by(f64::total_cmp);
    println!(
        "{:<52} {:>4} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {}",
        label,
        values.len(),
        values[0],
        percentile(&values, 0.5),
        percentile(&values, 0.95),
        values[values.len() - 1],
        extra
            .iter()
            .map(|e| format!("{e:>10}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn writer(cluster: &Cluster) -> Result<Writer> {
    Writer::start_with(
        &cluster.multi_host_uri(),
        Duration::from_secs(30),
        fresh_ids(),
    )
    .await
}

/// Writer options whose ids no earlier writer of this process used. The
/// runs share one table: a writer starting at 1 again would take the holes
/// an earlier run left (attempts that failed) and then fail on the ids
/// after them, each failure a reconnect that would count as outage.
fn fresh_ids() -> WriterOptions {
    static RANGES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let range = RANGES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    WriterOptions {
        first_id: range * 100_000_000,
        ..WriterOptions::default()
    }
}

/// Wait until the writer has an acknowledgement after `since`.
async fn wait_for_writes(cluster: &Cluster, w: &Writer, since: Instant) -> Result<()> {
    cluster
        .wait_until(
            Duration::from_secs(120),
            "the client writes again",
            |_| async move { Ok(w.has_ack_after(since)) },
        )
        .await
        .map(|_| ())
}

async fn finish(cluster: &Cluster, w: Writer, event: Instant) -> Result<Sample> {
    let report = w.stop().await;
    let outage = report
        .outage_around(event)
        .context("no write acknowledged after the event")?;
    let primary = current_primary(cluster).await?;
    let lost = report.missing_ids(cluster, &primary).await?.len();
    Ok(Sample {
        outage: outage.first_ack_after - outage.last_ack_before.unwrap_or(event),
        lost,
        isolated: None,
    })
}

/// Every node settled (reported == goal), one writable primary, the others
/// secondaries. (With only asynchronous standbys the primary stays in
/// `wait_primary`.)
async fn settled(cluster: &Cluster) -> Result<()> {
    let n = cluster.node_names().len();
    cluster
        .wait_state(
            Duration::from_secs(180),
            "a settled group: one writable primary, the others secondaries",
            |s| {
                s.nodes.len() == n
                    && s.nodes.iter().all(|x| x.reported() == x.goal())
                    && s.writable_primaries().len() == 1
                    && s.nodes
                        .iter()
                        .filter(|x| x.settled_in(pgpilot_tests::ReplicationState::Secondary))
                        .count()
                        == n - 1
            },
        )
        .await
        .map(|_| ())
}

/// The node that both reports and is assigned a primary-side state (a dead
/// old primary keeps its last report).
async fn current_primary(cluster: &Cluster) -> Result<String> {
    let state = cluster
        .wait_state(
            Duration::from_secs(60),
            "one settled writable primary",
            |s| {
                s.nodes
                    .iter()
                    .filter(|n| {
                        n.reports_writable_primary()
                            && n.goal().is_some_and(|g| g.is_writable_primary())
                    })
                    .count()
                    == 1
            },
        )
        .await?;
    let node = state
        .nodes
        .iter()
        .find(|n| n.reports_writable_primary() && n.goal().is_some_and(|g| g.is_writable_primary()))
        .context("no writable primary")?;
    Ok(node.name.clone())
}

async fn unplanned(cluster: &Cluster) -> Result<Sample> {
    host_killed(cluster, false).await
}

/// Two monitors: the primary's host and monitor 0 (the keepers' first)
/// SIGKILLed at once; both come back afterwards.
async fn monitor_killed(cluster: &Cluster) -> Result<Sample> {
    host_killed(cluster, true).await
}

/// The primary's host SIGKILLed (and monitor 0 with it, with
/// `and_monitor`); the old node (and monitor) come back afterwards.
async fn host_killed(cluster: &Cluster, and_monitor: bool) -> Result<Sample> {
    settled(cluster).await?;
    let old = current_primary(cluster).await?;
    let w = writer(cluster).await?;
    let killed = cluster.kill_node_hard(&old)?;
    if and_monitor {
        cluster.kill_monitor_at(0)?;
    }
    cluster
        .wait_other_primary(&old, Duration::from_secs(120))
        .await?;
    wait_for_writes(cluster, &w, killed).await?;
    let sample = finish(cluster, w, killed).await?;
    if and_monitor {
        cluster.restart_monitor_at(0).await?;
    }
    cluster.start_keeper(&old)?;
    settled(cluster).await?;
    Ok(sample)
}

/// Two monitors: the lease holder SIGKILLed; the time until the other
/// holds the lease, and the writes lost meanwhile (none expected).
async fn lease_takeover(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let holder = cluster
        .wait_for(
            Duration::from_secs(30),
            "a monitor to hold the lease",
            || async { cluster.lease_holder().await },
        )
        .await?;
    let other = 1 - holder;
    let w = writer(cluster).await?;
    let killed = cluster.kill_monitor_at(holder)?;
    cluster
        .wait_for(
            Duration::from_secs(60),
            "the other monitor to take the lease",
            || async { Ok((cluster.lease_holder().await? == Some(other)).then_some(())) },
        )
        .await?;
    let takeover = killed.elapsed();
    wait_for_writes(cluster, &w, Instant::now()).await?;
    let report = w.stop().await;
    let primary = current_primary(cluster).await?;
    let lost = report.missing_ids(cluster, &primary).await?.len();
    cluster.restart_monitor_at(holder).await?;
    Ok(Sample {
        outage: takeover,
        lost,
        isolated: None,
    })
}

async fn pg_crash(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let old = current_primary(cluster).await?;
    let w = writer(cluster).await?;
    let pgdata = cluster.pgdata(&old)?;
    let Some(pid) = postmaster_pid(&pgdata) else {
        bail!("{old} has no postmaster.pid");
    };
    let crashed = Instant::now();
    let tree = kill_postmaster_tree(pid);
    reap(&tree, Duration::from_secs(10));
    wait_for_writes(cluster, &w, crashed).await?;
    let sample = finish(cluster, w, crashed).await?;
    settled(cluster).await?;
    Ok(sample)
}

/// `perform-failover` through the CLI, until it is done (5 minutes at most).
async fn perform_failover(cluster: &Cluster) -> Result<()> {
    let url = cluster.monitor_url().to_string();
    let out = cluster
        .run_cli(&["--monitor", &url, "perform-failover", "--timeout", "300s"])
        .await?;
    if !out.status.success() {
        bail!(
            "perform-failover failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `restart --all` while the client writes: the longest pause between
/// acknowledged writes from the command on (the switchover's).
async fn rolling_restart(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let w = writer(cluster).await?;
    wait_for_writes(cluster, &w, Instant::now()).await?;
    let started = Instant::now();
    let url = cluster.monitor_url().to_string();
    let out = cluster
        .run_cli(&["--monitor", &url, "restart", "--all", "--timeout", "300s"])
        .await?;
    if !out.status.success() {
        bail!(
            "restart --all failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "restart --all took {:.2} s",
        started.elapsed().as_secs_f64()
    );
    longest_gap(cluster, w, started, "the rolling restart").await
}

async fn planned(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let w = writer(cluster).await?;
    let started = Instant::now();
    perform_failover(cluster).await?;
    longest_gap(cluster, w, started, "the failover").await
}

/// `perform-failover` with the standby of highest priority refusing in
/// its `before_promotion` hook (checked to have refused).
async fn planned_refused(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let primary = current_primary(cluster).await?;
    let first = cluster
        .state()
        .await?
        .nodes
        .iter()
        .filter(|n| n.name != primary)
        .max_by_key(|n| n.candidate_priority)
        .map(|n| n.name.clone())
        .context("no standby to refuse")?;
    let refusals = |c: &Cluster| {
        c.promotion_answers()
            .iter()
            .filter(|l| l.starts_with(&format!("{first} refused")))
            .count()
    };
    let before = refusals(cluster);
    cluster.refuse_promotion(&first, true)?;
    let w = writer(cluster).await?;
    let started = Instant::now();
    let done = perform_failover(cluster).await;
    cluster.refuse_promotion(&first, false)?;
    done?;
    if refusals(cluster) == before {
        bail!("{first} was not asked to promote: the run measured no refusal");
    }
    longest_gap(cluster, w, started, "the failover").await
}

/// Once the client writes again: the longest pause between acknowledged
/// writes since `started`, and the rows the primary lacks.
async fn longest_gap(
    cluster: &Cluster,
    w: Writer,
    started: Instant,
    during: &str,
) -> Result<Sample> {
    wait_for_writes(cluster, &w, Instant::now()).await?;
    let report = w.stop().await;
    let outage = report
        .longest_gap_after(started)
        .with_context(|| format!("no writes during {during}"))?;
    let primary = current_primary(cluster).await?;
    let lost = report.missing_ids(cluster, &primary).await?.len();
    Ok(Sample {
        outage,
        lost,
        isolated: None,
    })
}

/// Stop the primary's node as an init system does (SIGTERM to its
/// keeper): it hands over to a standby and stops PostgreSQL. The outage is
/// the longest pause between acknowledged writes from the signal on; then
/// the keeper starts again and the node rejoins.
async fn node_stop(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let old = current_primary(cluster).await?;
    let w = writer(cluster).await?;
    wait_for_writes(cluster, &w, Instant::now()).await?;
    let stopped = cluster.stop_node(&old).await?;
    cluster
        .wait_other_primary(&old, Duration::from_secs(120))
        .await?;
    wait_for_writes(cluster, &w, Instant::now()).await?;
    let sample = finish(cluster, w, stopped).await?;
    cluster.start_keeper(&old)?;
    settled(cluster).await?;
    Ok(sample)
}

/// Stop the primary's keeper alone (SIGUSR1), start it again, and wait until it
/// is back with its fence guard and the client writes on. The outage is
/// the longest pause between acknowledged writes from the stop on; the
/// primary and its postmaster must be the same afterwards.
async fn keeper_restart(cluster: &Cluster) -> Result<Sample> {
    settled(cluster).await?;
    let primary = current_primary(cluster).await?;
    let pgdata = cluster.pgdata(&primary)?;
    let postmaster = postmaster_pid(&pgdata);
    let w = writer(cluster).await?;
    wait_for_writes(cluster, &w, Instant::now()).await?;
    let stopped = cluster.stop_keeper(&primary).await?;
    cluster.start_keeper(&primary)?;
    let log = cluster.keeper_log(&primary)?;
    cluster
        .wait_until(
            Duration::from_secs(60),
            "the restarted keeper to connect to its fence guard",
            |_| {
                let back = std::fs::read_to_string(&log).is_ok_and(|text| {
                    text.rsplit("=== harness: starting the keeper ===")
                        .next()
                        .is_some_and(|tail| tail.contains("fence guard connected"))
                });
                async move { Ok(back) }
            },
        )
        .await?;
    let back = Instant::now();
    eprintln!(
        "keeper of {primary} back with its guard {:.3} s after SIGUSR1",
        back.duration_since(stopped).as_secs_f64()
    );
    wait_for_writes(cluster, &w, back).await?;
    let report = w.stop().await;
    let outage = report
        .longest_gap_after(stopped)
        .context("no writes during the keeper restart")?;
    if current_primary(cluster).await? != primary || postmaster_pid(&pgdata) != postmaster {
        bail!("a keeper restart of {primary} changed the primary or restarted PostgreSQL");
    }
    let lost = report.missing_ids(cluster, &primary).await?.len();
    Ok(Sample {
        outage,
        lost,
        isolated: None,
    })
}

/// Cut the primary's links to the monitor and of its ingress (standbys,
/// health checks, network clients) while one client writes through the
/// advertised multi-host URI and one on the primary's host (cancelling a
/// statement after 1 s, as a client-side timeout does). The outage is the
/// network client's; rows lost are the network client's plus the host
/// client's durably acknowledged ones.
async fn partition(cluster: &Cluster) -> Result<Sample> {
    let old = current_primary(cluster).await?;
    let network = Writer::start_warm(cluster, &cluster.advertised_uri(), fresh_ids()).await?;
    let local = Writer::start_warm(
        cluster,
        &cluster.local_uri(&old)?,
        WriterOptions {
            first_id: fresh_ids().first_id,
            cancel_after: Some(Duration::from_secs(1)),
        },
    )
    .await?;
    cluster.monitor_link(&old)?.blackhole();
    cluster.ingress(&old)?.blackhole();
    let cut = Instant::now();
    cluster
        .wait_other_primary(&old, Duration::from_secs(120))
        .await?;
    wait_for_writes(cluster, &network, Instant::now()).await?;
    cluster.monitor_link(&old)?.heal();
    cluster.ingress(&old)?.heal();
    let local = local.stop().await;
    let after_cut: Vec<_> = local.acks.iter().filter(|a| a.at > cut).collect();
    let local_only = after_cut.iter().filter(|a| a.local_only).count();
    let isolated = after_cut
        .last()
        .map(|a| (a.at.duration_since(cut), after_cut.len(), local_only));
    let mut sample = finish(cluster, network, cut).await?;
    let primary = current_primary(cluster).await?;
    sample.lost += local.missing_ids(cluster, &primary).await?.len();
    sample.isolated = isolated;
    cluster
        .wait_state(
            Duration::from_secs(180),
            &format!("{old} back as a settled secondary"),
            |s| {
                s.node(&old)
                    .is_some_and(|n| n.settled_in(pgpilot_tests::ReplicationState::Secondary))
            },
        )
        .await?;
    Ok(sample)
}
