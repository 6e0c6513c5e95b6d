//! Permanent slots on real PostgreSQL: a logical consumer
//! (`pg_recvlogical` with `test_decoding`) reads a stream of numbered
//! inserts through an unplanned failover, the old primary's return and a
//! switchover, and misses none of them (repeats are counted and allowed);
//! the refusals a logical slot brings with it.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_tests::logical::{
    create_slot_args, kill_primary, rejoin_holding, wait_consumed_after, wait_held_everywhere,
    LogicalConsumer,
};
use pgpilot_tests::{operator, Cluster, ClusterOptions, Writer};

const SLOT: &str = "cdc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logical_consumer_misses_nothing_across_failover_and_switchover() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    cluster.wait_healthy(Duration::from_secs(120)).await?;
    let create = create_slot_args(SLOT, "postgres");
    // Refused in one sentence while the formation runs wal_level replica.
    operator::cli_refused(&cluster, &create, None, &["wal_level = logical"]).await?;
    operator::cli_ok(
        &cluster,
        &["set-parameter", "wal_level", "logical", "--timeout", "60s"],
    )
    .await?;
    operator::cli_ok(
        &cluster,
        &["restart", "--all", "--pending-only", "--timeout", "180s"],
    )
    .await?;
    operator::cli_ok(&cluster, &create).await?;
    wait_held_everywhere(&cluster, SLOT).await?;
    // What the slot needs cannot be taken away while it is declared.
    operator::cli_refused(
        &cluster,
        &["reset-parameter", "wal_level"],
        None,
        &["drop-slot cdc"],
    )
    .await?;
    operator::cli_refused(&cluster, &create, None, &["already has"]).await?;
    let shown = operator::cli_ok(&cluster, &["show-slots"]).await?;
    if !shown.contains("cdc  logical  plugin test_decoding  database postgres") {
        return Err(cluster.failure(format!("show-slots said:\n{shown}")).await);
    }

    let writer = Writer::warm(&cluster).await?;
    let consumer = LogicalConsumer::start(&cluster, SLOT, "postgres")?;
    let warm = Instant::now();
    wait_consumed_after(
        &cluster,
        &consumer,
        &writer,
        warm,
        "the consumer to read the writes",
    )
    .await?;

    // 1. The primary's host dies.
    let (old, new, killed) = kill_primary(&cluster).await?;
    let failover_pause = wait_consumed_after(
        &cluster,
        &consumer,
        &writer,
        killed,
        "the consumer to read writes made after the failover",
    )
    .await?;

    // 2. The old primary comes back as a standby: its own slot (which may
    // stand past the new primary's history) is replaced by a copy.
    rejoin_holding(&cluster, &old, &new, SLOT).await?;

    // 3. A switchover.
    let switched = Instant::now();
    operator::cli_ok(&cluster, &["perform-failover", "--timeout", "120s"]).await?;
    let switchover_pause = wait_consumed_after(
        &cluster,
        &consumer,
        &writer,
        switched,
        "the consumer to read writes made after the switchover",
    )
    .await?;

    // Every insert the final primary holds reached the consumer.
    let report = writer.stop().await;
    let last = cluster.primary_name().await?;
    report.expect_all_on(&cluster, &last).await?;
    let present: Vec<i64> = cluster
        .psql(&last, "SELECT id FROM pgpilot_writes ORDER BY id")
        .await?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let deadline = Duration::from_secs(60);
    let all_read = cluster
        .wait_for(deadline, "the consumer to read every insert", || {
            let done = consumer.received().missing(&present).is_empty();
            async move { Ok(done.then_some(())) }
        })
        .await;
    let received = consumer.stop().await;
    let missing = received.missing(&present);
    if all_read.is_err() || !missing.is_empty() {
        return Err(cluster
            .failure(format!(
                "the consumer missed {} of {} inserts (first: {:?})",
                missing.len(),
                present.len(),
                &missing[..missing.len().min(20)]
            ))
            .await);
    }
    println!(
        "logical consumer: {} inserts read, {} repeats, {} connections; pause across the failover {:.2} s, across the switchover {:.2} s",
        present.len(),
        received.repeats,
        received.sessions,
        failover_pause.as_secs_f64(),
        switchover_pause.as_secs_f64()
    );

    // Dropped everywhere once removed (no consumer is connected now).
    operator::cli_ok(&cluster, &["drop-slot", SLOT, "--timeout", "60s"]).await?;
    for name in cluster.node_names() {
        let left = cluster
            .psql(
                &name,
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cdc'",
            )
            .await?;
        if left != "0" {
            return Err(cluster
                .failure(format!("{name} still holds slot cdc after drop-slot"))
                .await);
        }
    }
    Ok(())
}
