//! Two nodes: replication, unplanned failover with rejoin, planned failover.
//! The failovers run with the writable-node probe: never two writable nodes.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_tests::{
    drills, Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState,
    WritableProbe, Writer,
};

const PRIMARY: ReplicationState = ReplicationState::Primary;
const SECONDARY: ReplicationState = ReplicationState::Secondary;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;

    cluster
        .psql(
            &primary,
            "CREATE TABLE replicated (id int PRIMARY KEY, note text); \
             INSERT INTO replicated SELECT g, 'row ' || g FROM generate_series(1, 100) g",
        )
        .await?;

    let c = &cluster;
    let standby_ref = standby.as_str();
    cluster
        .wait_for(
            Duration::from_secs(60),
            &format!("the 100 rows written on {primary} to be readable on {standby}"),
            || async move {
                let count = c
                    .psql(standby_ref, "SELECT count(*) FROM replicated")
                    .await?;
                Ok((count == "100").then_some(()))
            },
        )
        .await?;
    if !cluster.is_in_recovery(&standby).await? {
        return Err(cluster
            .failure(format!(
                "{standby} is settled in secondary but is not in recovery"
            ))
            .await);
    }
    // The monitor's own check of each running node passes, even for a node
    // first checked before its PostgreSQL started.
    cluster
        .wait_state(
            Duration::from_secs(30),
            "the monitor's health check to pass for both nodes",
            |s| s.nodes.len() == 2 && s.nodes.iter().all(|n| n.health == "good"),
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplanned_failover_and_rejoin() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    drills::unplanned_failover_and_rejoin(&cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_failover() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;
    let writer = Writer::warm(&cluster).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;

    let started = Instant::now();
    let output = cluster
        .run_cli(&[
            "perform-failover",
            "--monitor",
            cluster.monitor_url(),
            "--timeout",
            "120s",
        ])
        .await?;
    let finished = Instant::now();
    if !output.status.success() {
        return Err(cluster
            .failure(format!(
                "perform-failover failed ({}):\nstdout: {}\nstderr: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
            .await);
    }

    // perform-failover returns 0 only once the roles have swapped.
    let state = cluster.state().await?;
    let swapped = state
        .node(&new)
        .is_some_and(|n| n.reports_writable_primary())
        && state
            .node(&old)
            .is_some_and(|n| n.reported() == Some(SECONDARY));
    if !swapped {
        return Err(cluster
            .failure(format!(
                "perform-failover exited 0 but {new} is not the writable primary with {old} \
                 secondary:\n{}",
                state.table()
            ))
            .await);
    }
    cluster
        .wait_state(
            Duration::from_secs(60),
            &format!("{new} settled primary and {old} settled secondary"),
            |s| {
                s.node(&new).is_some_and(|n| n.settled_in(PRIMARY))
                    && s.node(&old).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;
    writer
        .wait_ack_after(
            &cluster,
            finished,
            Duration::from_secs(60),
            "the writer to get a write acknowledged after the failover",
        )
        .await?;

    let report = writer.stop().await;
    report.expect_all_on(&cluster, &new).await?;
    probe.stop().await.expect_one_writer(&cluster).await?;
    if let Some(outage) = report.outage_around(started) {
        eprintln!(
            "PLANNED FAILOVER: perform-failover took {:.3} s; write outage {:.3} s (last ack on \
             the old primary -> first ack on a new connection); longest gap between acks since \
             the command started {:.3} s",
            finished.duration_since(started).as_secs_f64(),
            outage.gap().as_secs_f64(),
            report
                .longest_gap_after(started)
                .unwrap_or_default()
                .as_secs_f64()
        );
    }
    Ok(())
}
