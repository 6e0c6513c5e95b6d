//! Two nodes: replication, unplanned failover with rejoin, planned failover.
//! The failovers run with the writable-node probe: never two writable nodes.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_tests::{
    drills, operator, Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState,
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

/// `pause`: an operator's switchover still runs, the primary killed while
/// paused is not replaced (show-state says why), `resume` lets the
/// failover happen; both are events naming who ran them, and each refuses
/// the state it would not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_failover_until_resume() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let first = cluster.primary_name().await?;
    let second = cluster.other_node(&first)?;

    let out = operator::cli_ok(&cluster, &["pause", "--timeout", "60s"]).await?;
    if !out.contains("formation default paused") {
        return Err(cluster.failure(format!("pause said:\n{out}")).await);
    }
    operator::cli_refused(&cluster, &["pause"], None, &["already paused", "resume"]).await?;
    let state = operator::cli_json(&cluster, &["show-state", "--json"]).await?;
    if state["paused"]["by"].as_str().is_none() {
        return Err(cluster
            .failure(format!("show-state --json does not say paused:\n{state:#}"))
            .await);
    }
    let table = operator::cli_ok(&cluster, &["show-state"]).await?;
    if !table.contains("PAUSED by") {
        return Err(cluster.failure(format!("show-state does not say PAUSED:\n{table}")).await);
    }

    // An operator's switchover runs while paused.
    operator::cli_ok(
        &cluster,
        &["perform-switchover", "--to", &second, "--timeout", "120s"],
    )
    .await?;
    cluster
        .wait_state(
            Duration::from_secs(120),
            &format!("{second} settled primary and {first} secondary after the switchover"),
            |s| {
                s.node(&second).is_some_and(|n| n.settled_in(PRIMARY))
                    && s.node(&first).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;

    // The primary dies: the monitor says it would fail over, and does not.
    cluster.kill_node_hard(&second)?;
    cluster
        .wait_state(
            Duration::from_secs(60),
            "the group to wait because the formation is paused",
            |s| {
                s.nodes
                    .iter()
                    .any(|n| n.waiting_kinds.iter().any(|k| k == "paused"))
            },
        )
        .await?;
    cluster
        .hold_state(
            Duration::from_secs(5),
            &format!("{second} kept as the primary and {first} a secondary while paused"),
            |s| {
                s.node(&second)
                    .is_some_and(|n| n.goal() == Some(PRIMARY))
                    && s.node(&first).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;

    // Resumed: the failover happens, and resume waits for it.
    let out = operator::cli_ok(&cluster, &["resume", "--timeout", "120s"]).await?;
    if !out.contains("resumed") {
        return Err(cluster.failure(format!("resume said:\n{out}")).await);
    }
    cluster
        .wait_writable_primary(
            &first,
            Duration::from_secs(60),
            &format!("{first} to be promoted after resume"),
        )
        .await?;
    operator::cli_refused(&cluster, &["resume"], None, &["is not paused"]).await?;

    let events = operator::events(&cluster).await?;
    for kind in ["formation_paused", "formation_resumed"] {
        if !events
            .iter()
            .any(|e| e["kind"] == kind && e["reason"].as_str().is_some_and(|r| r.contains(" by ")))
        {
            return Err(cluster
                .failure(format!(
                    "no {kind} event naming the operator:\n{}",
                    operator::event_lines(&events)
                ))
                .await);
        }
    }
    let state = operator::cli_json(&cluster, &["show-state", "--json"]).await?;
    if !state["paused"].is_null() {
        return Err(cluster
            .failure(format!("still paused after resume:\n{state:#}"))
            .await);
    }
    cluster.shutdown().await
}
