//! Restarts through pgpilot (`restart`), on real PostgreSQL: a setting
//! that needs a restart shows as pending on every node, then
//! `restart --all --pending-only` rolls the group under a writing client —
//! the standby first, a switchover, the old primary restarted as a standby
//! — with nothing acknowledged lost, no failover, and the setting applied
//! everywhere; a primary restarted `--in-place` is never taken for a
//! crash; refusals are one sentence.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgpilot_tests::{operator, Cluster, ClusterOptions, WritableProbe, Writer};
use serde_json::Value;

/// A setting that needs a restart, raised on every node (a standby may
/// have more than its primary, never less: the rolling order restarts
/// standbys first).
const SETTING: &str = "max_prepared_transactions";
const VALUE: &str = "7";

/// The events after `baseline` of `kind`, on `node` when named.
async fn events_of(
    cluster: &Cluster,
    baseline: i64,
    kind: &str,
    node: Option<&str>,
) -> Result<Vec<Value>> {
    Ok(operator::events(cluster)
        .await?
        .into_iter()
        .filter(|e| e["event_id"].as_i64().unwrap_or(0) > baseline)
        .filter(|e| e["kind"] == kind)
        .filter(|e| node.is_none_or(|n| e["node_name"] == n))
        .collect())
}

/// No failover started after `baseline`.
async fn expect_no_failover(cluster: &Cluster, baseline: i64, during: &str) -> Result<()> {
    let changes = operator::goal_changes_after(cluster, baseline).await?;
    let failover = changes
        .iter()
        .any(|e| e["kind"] == "primary_unhealthy" || e["kind"] == "primary_postgres_down");
    if failover {
        return Err(cluster
            .failure(format!(
                "a failover started during {during}:\n{}",
                operator::event_lines(&changes)
            ))
            .await);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_setting_is_applied_by_a_rolling_restart_under_writes() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let first = cluster.primary_name().await?;
    let second = cluster.other_node(&first)?;

    // Refusals and nothing to do.
    operator::cli_refused(&cluster, &["restart", "node9"], None, &["node9"]).await?;
    operator::cli_refused(&cluster, &["restart"], None, &["<NODE>"]).await?;
    let idle = operator::cli_ok(&cluster, &["restart", "--all", "--pending-only"]).await?;
    if !idle.contains("nothing to do") {
        return Err(cluster
            .failure(format!(
                "restart --pending-only with nothing pending said:\n{idle}"
            ))
            .await);
    }

    // The setting changed by hand on every node: pending, and shown so.
    for node in [&first, &second] {
        cluster
            .psql(node, &format!("ALTER SYSTEM SET {SETTING} = {VALUE}"))
            .await?;
        cluster.psql(node, "SELECT pg_reload_conf()").await?;
    }
    cluster
        .wait_state(
            Duration::from_secs(60),
            &format!("{SETTING} pending a restart on both nodes"),
            |s| {
                s.nodes.len() == 2
                    && s.nodes
                        .iter()
                        .all(|n| n.pending_restart.iter().any(|p| p == SETTING))
            },
        )
        .await?;
    let table = operator::cli_ok(&cluster, &["show-state"]).await?;
    if !table.contains("pending restart:") || !table.contains(SETTING) {
        return Err(cluster
            .failure(format!(
                "show-state does not show the pending restart:\n{table}"
            ))
            .await);
    }
    let json = operator::cli_json(&cluster, &["show-state", "--json"]).await?;
    if !json["nodes"][0]["pending_restart"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p == SETTING))
    {
        return Err(cluster
            .failure(format!(
                "show-state --json lacks pending_restart:\n{json:#}"
            ))
            .await);
    }

    // The rolling restart under a writing client.
    let baseline = operator::last_event_id(&operator::events(&cluster).await?);
    let writer = Writer::warm(&cluster).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;
    let started = Instant::now();
    let out = operator::cli_ok(
        &cluster,
        &["restart", "--all", "--pending-only", "--timeout", "120s"],
    )
    .await?;
    eprintln!(
        "restart --all --pending-only took {:.1} s:\n{out}",
        started.elapsed().as_secs_f64()
    );
    let new = cluster.primary_name().await?;
    if new != second {
        return Err(cluster
            .failure(format!(
                "after the rolling restart {new} is the primary, expected {second} (switched over to)"
            ))
            .await);
    }
    for node in [&first, &second] {
        let value = cluster.psql(node, &format!("SHOW {SETTING}")).await?;
        if value.trim() != VALUE {
            return Err(cluster
                .failure(format!(
                    "{node} runs with {SETTING} = {value} after the restart"
                ))
                .await);
        }
        let restarted = events_of(&cluster, baseline, "postgres_restarted", Some(node)).await?;
        let asked = events_of(&cluster, baseline, "restart_requested", Some(node)).await?;
        if restarted.len() != 1 || asked.len() != 1 {
            return Err(cluster
                .failure(format!(
                    "{node}: {} restart_requested and {} postgres_restarted events, expected one each",
                    asked.len(),
                    restarted.len()
                ))
                .await);
        }
    }
    cluster
        .wait_state(
            Duration::from_secs(60),
            "no setting pending a restart any more",
            |s| s.nodes.iter().all(|n| n.pending_restart.is_empty()),
        )
        .await?;
    expect_no_failover(&cluster, baseline, "the rolling restart").await?;
    writer
        .wait_ack_after(
            &cluster,
            Instant::now(),
            Duration::from_secs(30),
            "a write acknowledged after the rolling restart",
        )
        .await?;

    // A primary restarted in place stays the primary: no failover.
    let in_place = operator::last_event_id(&operator::events(&cluster).await?);
    operator::cli_ok(
        &cluster,
        &["restart", &second, "--in-place", "--timeout", "120s"],
    )
    .await
    .context("restart of the primary in place")?;
    if cluster.primary_name().await? != second {
        return Err(cluster
            .failure(format!(
                "{second} is no longer the primary after restarting in place"
            ))
            .await);
    }
    expect_no_failover(&cluster, in_place, "a restart of the primary in place").await?;
    writer
        .wait_ack_after(
            &cluster,
            Instant::now(),
            Duration::from_secs(30),
            "a write acknowledged after the primary restarted in place",
        )
        .await?;

    let report = writer.stop().await;
    report.expect_all_on(&cluster, &second).await?;
    probe.stop().await.expect_one_writer(&cluster).await?;
    cluster.shutdown().await
}
