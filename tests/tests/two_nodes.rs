//! Two nodes: replication, unplanned failover with rejoin, planned failover.
//! The failovers run with the writable-node probe: never two writable nodes.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
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

    cluster.wait_vip(&new, Duration::from_secs(30)).await?;
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
        return Err(cluster
            .failure(format!("show-state does not say PAUSED:\n{table}"))
            .await);
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
                s.node(&second).is_some_and(|n| n.goal() == Some(PRIMARY))
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

/// A node stopped on purpose (SIGTERM to its keeper, as systemd, `docker
/// stop` or a host shutdown sends): the primary hands over as in a planned
/// failover — the standby is promoted because the old primary stopped
/// cleanly, not after `node_timeout` — with nothing acknowledged lost and
/// never two writers; then the new primary's standby, stopped the same
/// way, leaves the synchronous set first so writes go on; both rejoin when
/// their keepers start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_over_and_the_node_rejoins() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;
    let baseline = operator::last_event_id(&operator::events(&cluster).await?);
    let writer = Writer::warm(&cluster).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;

    let stopped_at = cluster.stop_node(&old).await?;
    eprintln!(
        "keeper of {old} exited {:.3} s after SIGTERM",
        stopped_at.elapsed().as_secs_f64()
    );
    expect_handed_over(&cluster, &old, 1).await?;
    cluster.wait_vip(&new, Duration::from_secs(30)).await?;
    cluster
        .wait_writable_primary(
            &new,
            Duration::from_secs(60),
            &format!("{new} to be promoted after {old} was stopped"),
        )
        .await?;
    writer
        .wait_ack_after(
            &cluster,
            stopped_at,
            Duration::from_secs(60),
            "a write acknowledged by the new primary after the stop",
        )
        .await?;
    cluster
        .expect_ids_on(&new, &writer.acked_ids())
        .await
        .context("right after the hand-over")?;
    let changes = operator::goal_changes_after(&cluster, baseline).await?;
    let handed_over = changes.iter().any(|e| e["kind"] == "keeper_stopping")
        && !changes
            .iter()
            .any(|e| e["kind"] == "primary_unhealthy" || e["kind"] == "primary_postgres_down");
    if !handed_over {
        return Err(cluster
            .failure(format!(
                "the stop of {old} was not a hand-over (keeper_stopping, no failover):\n{}",
                operator::event_lines(&changes)
            ))
            .await);
    }

    // The old primary's keeper starts again: it rejoins as a standby.
    cluster.start_keeper(&old)?;
    cluster
        .wait_rejoined(&old, &new, Duration::from_secs(120))
        .await?;

    // The standby stopped the same way leaves the synchronous set first:
    // the primary keeps taking writes, and the standby rejoins later.
    let before_standby_stop = operator::last_event_id(&operator::events(&cluster).await?);
    let standby_stopped_at = cluster.stop_node(&old).await?;
    writer
        .wait_ack_after(
            &cluster,
            Instant::now(),
            Duration::from_secs(30),
            "a write acknowledged after the standby stopped",
        )
        .await?;
    let changes = operator::goal_changes_after(&cluster, before_standby_stop).await?;
    if !changes
        .iter()
        .any(|e| e["kind"] == "keeper_stopping" && e["node_name"] == old.as_str())
    {
        return Err(cluster
            .failure(format!(
                "{old}, a standby stopped on purpose, did not leave the synchronous set:\n{}",
                operator::event_lines(&changes)
            ))
            .await);
    }
    eprintln!(
        "standby {old} stopped {:.3} s after SIGTERM",
        standby_stopped_at.elapsed().as_secs_f64()
    );
    expect_handed_over(&cluster, &old, 2).await?;
    cluster.start_keeper(&old)?;
    cluster
        .wait_state(
            Duration::from_secs(120),
            &format!("{old} secondary again"),
            |s| s.node(&old).is_some_and(|n| n.settled_in(SECONDARY)),
        )
        .await?;

    let report = writer.stop().await;
    report.expect_all_on(&cluster, &new).await?;
    probe.stop().await.expect_one_writer(&cluster).await?;
    if let Some(outage) = report.outage_around(stopped_at) {
        eprintln!(
            "GRACEFUL STOP WRITE OUTAGE: {:.3} s (last ack before the SIGTERM of {old} -> first ack by {new})",
            outage.gap().as_secs_f64()
        );
    }
    cluster.shutdown().await
}

/// The keeper of `node` said `times` times in its log that it stopped
/// PostgreSQL because its node had handed over (not at its deadline).
async fn expect_handed_over(cluster: &Cluster, node: &str, times: usize) -> Result<()> {
    let log = std::fs::read_to_string(cluster.keeper_log(node)?)?;
    let said = log
        .matches("handed over: the monitor no longer needs")
        .count();
    if said != times {
        return Err(cluster
            .failure(format!(
                "the keeper of {node} said {said} times (not {times}) that it stopped after handing over; \
                 its log says:\n{}",
                log.lines()
                    .filter(|l| l.contains("stop") || l.contains("hand"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
            .await);
    }
    Ok(())
}
