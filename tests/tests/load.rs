//! Failover, switchover and a long primary restart under a real write load,
//! at a small scale (`pgpilot-bench load` runs the same at scale 200 and
//! measures them).
//!
//! A group filled by `pgbench -i`, with `pgbench -c 4 -j 2` writing through
//! the multi-host URI (in rounds, reconnecting as a pool does) and the
//! checked writer beside it. Each test asserts that no acknowledged write
//! is lost, that pgbench goes on writing on the primary after the event,
//! and that every node ends up with the same pgbench history.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pgpilot_tests::operator::{cli_ok, events, expect_no_goal_change, last_event_id};
use pgpilot_tests::pgbench::{self, PgbenchLoad};
use pgpilot_tests::process::{
    freeze_postmaster_tree, is_alive, kill_postmaster_tree, postmaster_pid, reap, signal,
};
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, Writer,
};

/// pgbench scale of the data (about 30 MB).
const SCALE: u32 = 2;
const CLIENTS: u32 = 4;
const JOBS: u32 = 2;
/// A group built, filled, failed over and rejoined on a loaded two-core
/// machine: generous.
const TIMEOUT: Duration = Duration::from_secs(180);
/// The monitor's default node_timeout (the tests run with defaults).
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// pgbench transactions the new primary must take after the event.
const TRANSACTIONS_AFTER: i64 = 200;
const HISTORY: &str = "SELECT count(*) || ':' || coalesce(sum(delta), 0) FROM pgbench_history";

/// A settled group of `n` filled by pgbench; its primary.
async fn filled_group(n: usize) -> Result<(Cluster, String)> {
    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: false,
        ..ClusterOptions::nodes(n)
    })
    .await?;
    let primary = settled(&cluster, n).await?;
    pgbench::init(&cluster, &primary, SCALE).await?;
    Ok((cluster, primary))
}

/// Wait until every node is settled with one writable primary; its name.
async fn settled(cluster: &Cluster, n: usize) -> Result<String> {
    let state = cluster
        .wait_state(TIMEOUT, "a settled group", |s| s.is_healthy(n))
        .await?;
    Ok(state
        .writable_primaries()
        .first()
        .context("no writable primary")?
        .name
        .clone())
}

/// The pgbench transactions `node` holds (rows of pgbench_history).
async fn history_rows(cluster: &Cluster, node: &str) -> Result<i64> {
    let out = cluster
        .psql(node, "SELECT count(*) FROM pgbench_history")
        .await?;
    out.trim().parse().context("reading pgbench_history")
}

/// Wait until pgbench has committed `TRANSACTIONS_AFTER` more transactions
/// on `node` than it holds now.
async fn pgbench_writes_on(cluster: &Cluster, node: &str) -> Result<()> {
    let from = history_rows(cluster, node).await?;
    cluster
        .wait_for(TIMEOUT, &format!("pgbench to write on {node}"), || async {
            Ok((history_rows(cluster, node).await? >= from + TRANSACTIONS_AFTER).then_some(()))
        })
        .await
}

/// Wait until every node holds the same pgbench history as the primary.
async fn same_history_everywhere(cluster: &Cluster, primary: &str) -> Result<()> {
    let expected = cluster.psql(primary, HISTORY).await?;
    for node in cluster.node_names() {
        cluster
            .wait_for(
                TIMEOUT,
                &format!("{node} to hold the primary's pgbench history ({expected})"),
                || async { Ok((cluster.psql(&node, HISTORY).await? == expected).then_some(())) },
            )
            .await?;
    }
    Ok(())
}

/// The node other than `old` that reports a writable primary state.
async fn new_primary(cluster: &Cluster, old: &str) -> Result<String> {
    let state = cluster.wait_other_primary(old, TIMEOUT).await?;
    let node = state
        .writable_primaries()
        .into_iter()
        .find(|p| p.name != old)
        .context("no new primary")?;
    Ok(node.name.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unplanned_failover_under_pgbench_load_loses_no_acknowledged_write() -> Result<()> {
    let (cluster, old) = filled_group(3).await?;
    let load = PgbenchLoad::start(&cluster, &cluster.multi_host_uri(), CLIENTS, JOBS);
    let writer = Writer::warm(&cluster).await?;
    pgbench_writes_on(&cluster, &old).await?;

    let killed = cluster.kill_node_hard(&old)?;
    let new = new_primary(&cluster, &old).await?;
    pgbench_writes_on(&cluster, &new).await?;
    writer
        .wait_ack_after(&cluster, killed, TIMEOUT, "a write after the failover")
        .await?;
    let report = writer.stop().await;
    let totals = load.stop().await?;
    report.expect_all_on(&cluster, &new).await?;
    assert!(
        totals.transactions > 0,
        "pgbench counted nothing: {totals:?}"
    );

    // The old primary rejoins (pg_rewind) and catches up with all of it.
    cluster.start_keeper(&old)?;
    cluster
        .wait_state(TIMEOUT, &format!("{old} a settled secondary"), |s| {
            s.node(&old)
                .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
        })
        .await?;
    same_history_everywhere(&cluster, &new).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_switchover_under_pgbench_load_loses_no_acknowledged_write() -> Result<()> {
    let (cluster, old) = filled_group(3).await?;
    let load = PgbenchLoad::start(&cluster, &cluster.multi_host_uri(), CLIENTS, JOBS);
    let writer = Writer::warm(&cluster).await?;
    pgbench_writes_on(&cluster, &old).await?;

    let started = Instant::now();
    cli_ok(&cluster, &["perform-failover", "--timeout", "120s"]).await?;
    let new = new_primary(&cluster, &old).await?;
    pgbench_writes_on(&cluster, &new).await?;
    writer
        .wait_ack_after(&cluster, started, TIMEOUT, "a write after the switchover")
        .await?;
    let report = writer.stop().await;
    load.stop().await?;
    report.expect_all_on(&cluster, &new).await?;
    settled(&cluster, 3).await?;
    same_history_everywhere(&cluster, &new).await?;
    cluster.shutdown().await
}

/// The primary's PostgreSQL crashes under load and its keeper restarts it;
/// the restarted server (crash recovery of the load's WAL) is held frozen
/// for three node timeouts, as a long crash recovery is, while the keeper
/// goes on heartbeating. The monitor waits (postgres_restart_timeout, 20 s
/// by default) instead of failing over, and the same primary takes the
/// writes again with none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_restart_longer_than_node_timeout_with_its_keeper_alive_is_waited_for(
) -> Result<()> {
    let (cluster, primary) = filled_group(2).await?;
    let load = PgbenchLoad::start(&cluster, &cluster.multi_host_uri(), CLIENTS, JOBS);
    let writer = Writer::warm(&cluster).await?;
    pgbench_writes_on(&cluster, &primary).await?;
    let baseline = last_event_id(&events(&cluster).await?);

    let pgdata = cluster.pgdata(&primary)?;
    let crashed = postmaster_pid(&pgdata).context("the primary has no postmaster.pid")?;
    reap(&kill_postmaster_tree(crashed), Duration::from_secs(10));
    // Catch the postmaster the keeper starts, before it accepts connections.
    let restarted = pgpilot_tests::poll_every(
        Duration::from_millis(1),
        TIMEOUT,
        "the keeper to start PostgreSQL again",
        || {
            let pid = postmaster_pid(&pgdata).filter(|p| *p != crashed && is_alive(*p));
            async move { Ok(pid) }
        },
    )
    .await?;
    let frozen = freeze_postmaster_tree(restarted);
    let frozen_at = Instant::now();
    let held = cluster
        .wait_state(
            TIMEOUT,
            "the monitor to see the primary's PostgreSQL down for three node timeouts",
            |s| {
                frozen_at.elapsed() >= 3 * NODE_TIMEOUT
                    && s.node(&primary).is_some_and(|n| !n.pg_running)
            },
        )
        .await;
    for pid in &frozen {
        let _ = signal(*pid, nix::sys::signal::Signal::SIGCONT);
    }
    held?;

    writer
        .wait_ack_after(&cluster, frozen_at, TIMEOUT, "a write after the restart")
        .await?;
    pgbench_writes_on(&cluster, &primary).await?;
    let report = writer.stop().await;
    load.stop().await?;
    expect_no_goal_change(
        &cluster,
        baseline,
        "while the primary's keeper restarted its PostgreSQL",
    )
    .await?;
    report.expect_all_on(&cluster, &primary).await?;
    same_history_everywhere(&cluster, &primary).await?;
    cluster.shutdown().await
}
