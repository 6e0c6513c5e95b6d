//! Failover drills shared by tests that run them under different settings
//! (plaintext, TLS with SCRAM replication, ...).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{Cluster, WritableProbe, Writer};

/// On a healthy pair: SIGKILL the primary's host while a writer and the
/// writable-node probe run; the standby is promoted, no acknowledged write
/// is lost, the old primary's keeper is restarted and the node rejoins
/// (pg_rewind) as a streaming standby; never two writable nodes.
pub async fn unplanned_failover_and_rejoin(cluster: &Cluster) -> Result<()> {
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;
    // The keepers' role-change hook moves a stand-in virtual IP.
    cluster.wait_vip(&old, Duration::from_secs(30)).await?;
    let writer = Writer::warm(cluster).await?;
    let probe = WritableProbe::of_cluster(cluster)?;

    let killed_at = cluster
        .kill_primary_until_promoted(&old, &new, Duration::from_secs(90))
        .await?;
    let promoted_at = Instant::now();
    cluster.wait_vip(&new, Duration::from_secs(30)).await?;
    writer
        .wait_ack_after(
            cluster,
            killed_at,
            Duration::from_secs(60),
            "the writer (same multi-host URI) to get a write acknowledged after the kill",
        )
        .await?;

    // Invariant 2: nothing acknowledged before the kill is lost.
    cluster
        .expect_ids_on(&new, &writer.acked_ids())
        .await
        .context("right after the failover")?;

    // The old node comes back as a standby of the new primary.
    cluster.start_keeper(&old)?;
    cluster
        .wait_rejoined(&old, &new, Duration::from_secs(120))
        .await?;
    cluster
        .psql(&new, "INSERT INTO pgpilot_writes (id) VALUES (-1)")
        .await?;
    let c = cluster;
    let old_ref = old.as_str();
    cluster
        .wait_for(
            Duration::from_secs(60),
            &format!("a row written on {new} to be readable on the rejoined {old}"),
            || async move {
                let n = c
                    .psql(old_ref, "SELECT count(*) FROM pgpilot_writes WHERE id = -1")
                    .await?;
                Ok((n == "1").then_some(()))
            },
        )
        .await?;

    let report = writer.stop().await;
    report.expect_all_on(cluster, &new).await?;
    probe.stop().await.expect_one_writer(cluster).await?;
    let outage = report
        .outage_around(killed_at)
        .expect("the writer acknowledged writes after the kill");
    eprintln!(
        "UNPLANNED FAILOVER WRITE OUTAGE: {:.3} s = last write acked before the SIGKILL of {old} \
         (port {}) -> first write acked by the new primary (port {}), same multi-host URI; \
         first new ack {:.3} s after the kill; {new} reported a writable primary state {:.3} s \
         after the kill; {} writes acked, {} connections, {} client errors",
        outage.gap().as_secs_f64(),
        outage.port_before.map_or(0, u32::from),
        outage.port_after.map_or(0, u32::from),
        outage.since_event().as_secs_f64(),
        promoted_at.duration_since(killed_at).as_secs_f64(),
        report.acks.len(),
        report.connections.len(),
        report.error_count,
    );
    Ok(())
}
