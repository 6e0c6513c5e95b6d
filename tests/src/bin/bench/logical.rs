//! `pgpilot-bench logical`: the pause a logical consumer (`pg_recvlogical`
//! on a permanent slot, reconnecting through the multi-host conninfo)
//! sees across an unplanned failover and across a switchover, beside the
//! write outage of the checked writer; and whether it missed any insert.
//! One 3-node cluster; each run kills the primary's host (then starts its
//! keeper again and waits until it holds its copy of the slot) and then
//! switches over.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pgpilot_tests::logical::{
    declare_logical_slot, kill_primary, rejoin_holding, wait_consumed_after, wait_held_everywhere,
    LogicalConsumer,
};
use pgpilot_tests::{operator, Cluster, ClusterOptions, Writer};

use super::print_row;

const SLOT: &str = "bench_cdc";

pub async fn run(runs: usize) -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    cluster.wait_healthy(Duration::from_secs(180)).await?;
    declare_logical_slot(&cluster, SLOT, "postgres").await?;
    let writer = Writer::warm(&cluster).await?;
    let consumer = LogicalConsumer::start(&cluster, SLOT, "postgres")?;
    let warm = Instant::now();
    wait_consumed_after(
        &cluster,
        &consumer,
        &writer,
        warm,
        "the consumer to warm up",
    )
    .await?;
    let (mut failover, mut switchover) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let (old, new, killed) = kill_primary(&cluster).await?;
        let what = "the consumer to read writes made after the failover";
        failover.push(wait_consumed_after(&cluster, &consumer, &writer, killed, what).await?);
        rejoin_holding(&cluster, &old, &new, SLOT).await?;
        let switched = Instant::now();
        operator::cli_ok(&cluster, &["perform-failover", "--timeout", "120s"]).await?;
        let what = "the consumer to read writes made after the switchover";
        switchover.push(wait_consumed_after(&cluster, &consumer, &writer, switched, what).await?);
        wait_held_everywhere(&cluster, SLOT).await?;
        eprintln!(
            "run {run}: consumer pause {:.2} s across the failover, {:.2} s across the switchover",
            failover[run - 1].as_secs_f64(),
            switchover[run - 1].as_secs_f64()
        );
    }
    let report = writer.stop().await;
    let last = cluster.primary_name().await?;
    report.expect_all_on(&cluster, &last).await?;
    let present: Vec<i64> = cluster
        .psql(&last, "SELECT id FROM pgpilot_writes")
        .await?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let read = cluster
        .wait_for(
            Duration::from_secs(60),
            "the consumer to read every insert",
            || {
                let done = consumer.received().missing(&present).is_empty();
                async move { Ok(done.then_some(())) }
            },
        )
        .await;
    let received = consumer.stop().await;
    let missed = received.missing(&present).len();
    println!(
        "{:<52} {:>4} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "logical consumer pause (s)", "runs", "min", "median", "p95", "max", "missed", "repeats"
    );
    let extra = [missed.to_string(), received.repeats.to_string()];
    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect();
    print_row(
        "unplanned failover (host SIGKILLed)",
        secs(&failover),
        &extra,
    );
    print_row("switchover (perform-failover)", secs(&switchover), &extra);
    cluster.shutdown().await?;
    if read.is_err() || missed > 0 {
        bail!("the consumer missed {missed} of {} inserts", present.len());
    }
    Ok(())
}
