//! The results table printed after the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::measure::Statement;
use crate::sim::Sim;
use crate::step::{FailoverResult, Row};
use crate::{Args, FENCE_MARGIN, NODE_TIMEOUT, SAMPLE_INTERVAL};

pub(crate) fn fmt_opt_secs(d: Option<f64>) -> String {
    d.map_or_else(|| "-".to_string(), |s| format!("{s:.2}"))
}

pub(crate) fn failover_cell(f: &Option<FailoverResult>, sim: &Sim) -> (String, String) {
    let bound = sim.failover_bound().as_secs_f64();
    match f {
        None => ("-".to_string(), "-".to_string()),
        Some(r) => match r.seen {
            Some(seen) => {
                let seen = seen.as_secs_f64();
                (
                    format!(
                        "{seen:.2} (db {} / {}) ≤ {bound:.1}",
                        fmt_opt_secs(r.election_db),
                        fmt_opt_secs(r.decided_db)
                    ),
                    if seen <= bound { "yes" } else { "LATE" }.to_string(),
                )
            }
            None => (format!("{} ≤ {bound:.1}", r.note), "NO".to_string()),
        },
    }
}

pub(crate) fn print_row_line(row: &Row, sim: &Sim) {
    let (failover, in_time) = failover_cell(&row.failover, sim);
    println!(
        "step {} nodes: {:.0}/{:.0} heartbeats/s, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms, \
         {} errors, longest silence {:.2} s, monitor CPU {:.0}% RSS {:.0} MB, database CPU {:.0}%, \
         load generator CPU {:.0}%, {:.0} xact/s, {} goal changes and {} elections while no primary was stopped; \
         failover decided {failover} s: {in_time}{}",
        row.nodes,
        row.achieved_hb_s,
        row.target_hb_s,
        row.p50_ms,
        row.p99_ms,
        row.max_ms,
        row.errors,
        row.max_gap.as_secs_f64(),
        row.monitor_cpu,
        row.monitor_rss,
        row.db_cpu,
        row.me_cpu,
        row.xact_s,
        row.goal_changes,
        row.elections,
        row.failover
            .as_ref()
            .and_then(|f| f.goal)
            .map(|g| format!(" ({g})"))
            .unwrap_or_default()
    );
    println!();
}

pub(crate) fn print_table(rows: &[Row], sim: &Sim, args: &Args) {
    println!();
    println!(
        "pgpilot-capacity: {} (node_timeout {} ms) and its PostgreSQL on this {}-CPU machine; \
         simulated keepers heartbeat every {} ms ({}); {} s per step; {}",
        if args.monitors == 1 {
            "one monitor".to_string()
        } else {
            format!("{} monitors sharing the load", args.monitors)
        },
        NODE_TIMEOUT.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sim.interval.as_millis(),
        if sim.unary {
            "a NodeActive call each"
        } else {
            "one Heartbeats stream each"
        },
        args.seconds_per_step,
        if args.single_formation {
            "all nodes in one formation (one group)".to_string()
        } else {
            format!(
                "{} nodes per group, one formation each",
                args.nodes_per_group
            )
        }
    );
    println!(
        "{:>6} {:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7} {:>6} {:>6}  {:<34} {:>7}",
        "nodes",
        "groups",
        "reg/s",
        "settled",
        "target",
        "hb/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "silence",
        "mon%",
        "monMB",
        "db%",
        "gen%",
        "host%",
        "xact/s",
        "dbexec",
        "goals",
        "elect",
        "failover decided s (db: elect/decide)",
        "in time"
    );
    for r in rows {
        let (failover, in_time) = failover_cell(&r.failover, sim);
        println!(
            "{:>6} {:>6} {:>7.0} {:>9} {:>8.0} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>8.2} {:>6.0} {:>6.0} {:>6.0} {:>6.0} {:>6.0} {:>8.0} {:>7.2} {:>6} {:>6}  {:<34} {:>7}",
            r.nodes,
            r.groups,
            r.registered_per_s,
            match r.settle {
                Some(d) => format!("{:.0}s", d.as_secs_f64()),
                None => format!("{}/{}", r.settled, r.groups),
            },
            r.target_hb_s,
            r.achieved_hb_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.max_gap.as_secs_f64(),
            r.monitor_cpu,
            r.monitor_rss,
            r.db_cpu,
            r.me_cpu,
            r.host_busy,
            r.xact_s,
            r.db_exec_s,
            r.goal_changes,
            r.elections,
            failover,
            in_time
        );
        if r.rollback_s > 0.5 || r.sessions_s > 0.5 {
            println!(
                "{:>6} ({:.1} rollbacks/s, {:.1} new database connections/s)",
                "", r.rollback_s, r.sessions_s
            );
        }
    }
    println!(
        "columns: reg/s = registrations per second; settled = time until every group had one primary and only \
         secondaries (or settled/total at the timeout); target/hb/s = heartbeats per second wanted/answered; \
         latency of NodeActive as the client sees it; errors = failed or timed-out heartbeats; silence = longest \
         time any node went without an answered heartbeat (node_timeout is {} s); mon%/db%/gen% = CPU of the \
         monitor, its PostgreSQL (all backends) and this load generator, 100 = one core; host% = the whole machine \
         ({} = all cores); xact/s = commits/s of the monitor's database; dbexec = seconds of statement execution \
         per second (pg_stat_statements); goals/elect = goal changes and elections \
         (report_lsn) in the window, when no primary was stopped; failover = from the primary's last heartbeat until a standby's reply \
         said prepare_promotion/fast_forward (db: the monitor's own clock, election start / decision), against \
         the bound {:.1} s = fence deadline (max(fence_timeout {} ms, interval + wal_sender_timeout {} ms) + \
         interval + fence_margin {} ms) + one heartbeat.",
        NODE_TIMEOUT.as_secs(),
        100 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        sim.failover_bound().as_secs_f64(),
        sim.timings.fence_timeout_ms,
        sim.timings.wal_sender_timeout_ms,
        FENCE_MARGIN.as_millis()
    );
}

/// What the database spent one measurement window on, what its backends
/// were doing on average, and the heartbeat errors.
pub(crate) fn print_window(
    target: usize,
    secs: f64,
    statements: &[Statement],
    activity: &BTreeMap<String, i64>,
    activity_samples: i64,
    errors: &BTreeMap<String, u64>,
) {
    println!();
    println!(
        "step {target}: what the database spent its time on ({secs:.0} s window, pg_stat_statements, execution time only):"
    );
    println!(
        "  {:>9} {:>10} {:>9}  statement",
        "calls", "total ms", "mean ms"
    );
    for s in statements {
        println!(
            "  {:>9} {:>10.0} {:>9.3}  {}",
            s.calls, s.total_ms, s.mean_ms, s.query
        );
    }
    let mut line = String::new();
    for (what, count) in activity {
        let _ = write!(
            line,
            "{what} {:.2}, ",
            *count as f64 / activity_samples.max(1) as f64
        );
    }
    println!(
        "  monitor database backends on average (sampled every {} ms): {}",
        SAMPLE_INTERVAL.as_millis(),
        if line.is_empty() {
            "none busy".to_string()
        } else {
            line.trim_end_matches(", ").to_string()
        }
    );
    if !errors.is_empty() {
        println!("  heartbeat errors:");
        for (kind, count) in errors {
            println!("    {count:>7}  {kind}");
        }
    }
}
