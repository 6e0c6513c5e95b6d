//! Maintenance of a standby and of the primary.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use pgpilot_tests::operator::cli_ok;
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, Writer};

use crate::helpers::{check_no_loss, check_report, wait_ack_after};
use crate::{HEALTHY_TIMEOUT, MAINTENANCE, PRIMARY, REJOIN_TIMEOUT, SECONDARY};

/// Maintenance of a standby (writes go on) and of the primary (it hands
/// over first; a short outage, nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_of_standby_and_primary() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;

    // -- a standby --
    let writer = Writer::warm(&cluster).await?;
    let started = Instant::now();
    cli_ok(
        &cluster,
        &["enable-maintenance", &standby, "--timeout", "120s"],
    )
    .await?;
    let entered = started.elapsed();
    let state = cluster.state().await?;
    let node = state
        .node(&standby)
        .ok_or_else(|| anyhow!("{standby} left the formation"))?;
    if !node.settled_in(MAINTENANCE) || node.pg_running {
        return Err(cluster
            .failure(format!(
                "enable-maintenance {standby} exited 0 but it is not settled in maintenance with \
                 PostgreSQL down:\n{}",
                state.table()
            ))
            .await);
    }
    if let Ok(answer) = cluster.psql(&standby, "SELECT 1").await {
        return Err(cluster
            .failure(format!(
                "{standby} is in maintenance but its PostgreSQL still answers ({answer})"
            ))
            .await);
    }
    let in_maintenance = Instant::now();
    wait_ack_after(
        &cluster,
        &writer,
        in_maintenance,
        "writes to go on with a standby in maintenance",
    )
    .await?;
    cli_ok(
        &cluster,
        &["disable-maintenance", &standby, "--timeout", "120s"],
    )
    .await?;
    cluster.wait_healthy(REJOIN_TIMEOUT).await?;
    let report = writer.stop().await;
    check_report(
        &cluster,
        &report,
        &primary,
        "after the maintenance of a standby",
    )
    .await?;
    let standby_gap = report.longest_gap_after(started).unwrap_or_default();
    eprintln!(
        "MAINTENANCE OF STANDBY {standby}: enable-maintenance took {:.3} s; whole cycle {:.3} s; \
         longest gap between acknowledged writes {:.3} s",
        entered.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        standby_gap.as_secs_f64()
    );
    if standby_gap > Duration::from_millis(1500) {
        return Err(cluster
            .failure(format!(
                "the maintenance of standby {standby} stopped writes for {:.3} s (at most ~1 s \
                 expected)",
                standby_gap.as_secs_f64()
            ))
            .await);
    }

    // -- the primary --
    let writer = Writer::warm(&cluster).await?;
    let started = Instant::now();
    cli_ok(
        &cluster,
        &["enable-maintenance", &primary, "--timeout", "120s"],
    )
    .await?;
    let finished = Instant::now();
    let state = cluster.state().await?;
    let new_primary = cluster.primary_name().await?;
    let old = state
        .node(&primary)
        .ok_or_else(|| anyhow!("{primary} left the formation"))?;
    if new_primary == primary || !old.settled_in(MAINTENANCE) {
        return Err(cluster
            .failure(format!(
                "enable-maintenance {primary} exited 0 but the old primary is not settled in \
                 maintenance with another primary:\n{}",
                state.table()
            ))
            .await);
    }
    wait_ack_after(
        &cluster,
        &writer,
        finished,
        &format!("writes to go on through {new_primary}"),
    )
    .await?;
    check_no_loss(
        &cluster,
        &new_primary,
        &writer.acked_ids(),
        "after the hand-over",
    )
    .await?;
    cli_ok(
        &cluster,
        &["disable-maintenance", &primary, "--timeout", "120s"],
    )
    .await?;
    cluster
        .wait_state(
            REJOIN_TIMEOUT,
            &format!("{primary} back as secondary, {new_primary} primary"),
            |s| {
                s.is_healthy(3)
                    && s.node(&primary).is_some_and(|n| n.settled_in(SECONDARY))
                    && s.node(&new_primary).is_some_and(|n| n.settled_in(PRIMARY))
            },
        )
        .await?;
    let report = writer.stop().await;
    check_report(&cluster, &report, &new_primary, "at the end").await?;
    let gap = report.longest_gap_after(started).unwrap_or_default();
    let outage = report.outage_around(started);
    eprintln!(
        "MAINTENANCE OF PRIMARY {primary} -> {new_primary}: enable-maintenance took {:.3} s; \
         longest gap between acknowledged writes {:.3} s; outage {}",
        finished.duration_since(started).as_secs_f64(),
        gap.as_secs_f64(),
        outage.map_or("(none)".to_string(), |o| o.to_string())
    );
    if gap >= Duration::from_secs(10) {
        return Err(cluster
            .failure(format!(
                "the maintenance of the primary stopped writes for {:.3} s (< 10 s expected)",
                gap.as_secs_f64()
            ))
            .await);
    }
    Ok(())
}
