//! A delayed standby on real PostgreSQL: node1 the primary, node2 an
//! ordinary standby, node3 a delayed standby (the keeper's `apply_delay =
//! "1h"`). node3 is shown delayed with candidate priority 0 and outside the
//! synchronous set; rows reach its WAL but are not applied; a priority or
//! the quorum asked for it is refused. Then node3 holds the most WAL when
//! the primary dies (node2's WAL receiver frozen, rows written with
//! `synchronous_commit = local`): node2 is elected, fetches the missing WAL
//! from node3 (`fast_forward`) and is promoted with those rows; node3 is
//! never promoted, is sent to follow node2 and stays delayed; with a
//! shorter delay set at run time it streams from node2 and applies its new
//! rows that much later.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use pgpilot_proto::lsn::Lsn;
use pgpilot_tests::operator::{cli_json, cli_ok, cli_refused, event_lines, events};
use pgpilot_tests::process::{postmaster_pid, walreceiver_of, Frozen};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(90);
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
const HOUR_MS: u64 = 3_600_000;
/// The shorter delay set at run time after the failover.
const SHORT_DELAY: &str = "20s";

const PRIMARY: &str = "node1";
const STANDBY: &str = "node2";
const DELAYED: &str = "node3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_standby_is_never_promoted_and_serves_the_fast_forward() -> Result<()> {
    let opts = ClusterOptions {
        apply_delays: vec![None, None, Some("1h".to_string())],
        ..ClusterOptions::nodes(3)
    };
    let cluster = Cluster::start(opts).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    if primary != PRIMARY {
        return Err(cluster
            .failure(format!(
                "expected {PRIMARY} to be the first primary, found {primary}"
            ))
            .await);
    }
    shown_delayed(&cluster, HOUR_MS, PRIMARY).await?;
    delayed_node_refuses_to_be_a_candidate(&cluster).await?;
    received_but_not_applied(&cluster).await?;
    let rows = delayed_holds_the_most_wal_when_the_primary_dies(&cluster).await?;
    standby_promoted_from_the_delayed_wal(&cluster, rows).await?;
    delayed_follows_and_stays_delayed(&cluster, rows).await?;
    never_promoted(&cluster).await
}

/// show-state and show-settings say node3 is delayed, with priority 0 and
/// no quorum; the primary's synchronous set never names it (node1's names
/// node2); node3's PostgreSQL runs with the delay.
async fn shown_delayed(cluster: &Cluster, delay_ms: u64, primary: &str) -> Result<()> {
    let state = cli_json(cluster, &["show-state", "--json"]).await?;
    let settings = cli_json(cluster, &["show-settings", "--json"]).await?;
    let node = |doc: &serde_json::Value, name: &str| {
        doc["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_default()
    };
    for (view, doc) in [("show-state", &state), ("show-settings", &settings)] {
        let (delayed, other) = (node(doc, DELAYED), node(doc, STANDBY));
        let as_expected = delayed["apply_delay_ms"] == delay_ms
            && delayed["candidate_priority"] == 0
            && delayed["replication_quorum"] == false
            && other["apply_delay_ms"] == 0
            && other["candidate_priority"] == 50;
        if !as_expected {
            return Err(cluster
                .failure(format!(
                    "{view} --json does not show {DELAYED} delayed by {delay_ms} ms with priority 0 and no quorum:\n{doc:#}"
                ))
                .await);
        }
    }
    let table = cli_ok(cluster, &["show-state"]).await?;
    if !table.contains(&format!("delayed: {DELAYED} applies WAL")) {
        return Err(cluster
            .failure(format!(
                "show-state does not say {DELAYED} is delayed:\n{table}"
            ))
            .await);
    }
    let ids = cluster.state().await?;
    let app = |name: &str| ids.node(name).map(|n| format!("pgpilot_{}", n.node_id));
    let (standby_app, delayed_app) = (app(STANDBY), app(DELAYED));
    let (standby_app, delayed_app) = (standby_app.as_deref(), delayed_app.as_deref());
    // Before the failover node2 is the quorum standby of node1; after it,
    // node2 is the primary (synchronous replication off: no quorum standby).
    let sync_names = cluster
        .wait_for(
            SHORT_TIMEOUT,
            "the primary to run with a synchronous set without node3",
            || async move {
                let names = cluster
                    .psql(primary, "SHOW synchronous_standby_names")
                    .await?;
                let holds = (primary != PRIMARY || standby_app.is_some_and(|a| names.contains(a)))
                    && delayed_app.is_some_and(|a| !names.contains(a));
                Ok(holds.then_some(names))
            },
        )
        .await?;
    eprintln!("{primary} runs with synchronous_standby_names = '{sync_names}'");
    let applied = cluster
        .psql(DELAYED, "SHOW recovery_min_apply_delay")
        .await?;
    let want = pgpilot_proto::delay::describe(delay_ms);
    if applied != want {
        return Err(cluster
            .failure(format!(
                "{DELAYED} runs with recovery_min_apply_delay = {applied}, expected {want}"
            ))
            .await);
    }
    Ok(())
}

/// A priority, the quorum or a switchover asked for node3 is refused in a
/// sentence that says what to do.
async fn delayed_node_refuses_to_be_a_candidate(cluster: &Cluster) -> Result<()> {
    let fix = "set its apply delay to 0 first";
    cli_refused(
        cluster,
        &["set-candidate-priority", DELAYED, "50"],
        None,
        &[fix],
    )
    .await?;
    cli_refused(
        cluster,
        &["set-replication-quorum", DELAYED, "true"],
        None,
        &[fix],
    )
    .await?;
    cli_refused(
        cluster,
        &["perform-switchover", "--to", DELAYED],
        None,
        &["delayed standby", fix],
    )
    .await?;
    Ok(())
}

/// The WAL position `sql` returns on `node`.
async fn lsn(cluster: &Cluster, node: &str, sql: &str) -> Result<Lsn> {
    let text = cluster.psql(node, sql).await?;
    text.parse()
        .map_err(|e| anyhow!("{node} answered {text:?} to {sql}: {e}"))
}

/// Wait until `node` has received WAL up to `target`.
async fn wait_received(cluster: &Cluster, node: &str, target: Lsn) -> Result<Lsn> {
    let sql = "SELECT coalesce(pg_last_wal_receive_lsn(), '0/0')";
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            &format!("{node} to receive WAL up to {target}"),
            || async move {
                let got = lsn(cluster, node, sql).await?;
                Ok((got >= target).then_some(got))
            },
        )
        .await
}

/// Rows of `delayed_rows` on `node` matching `filter` (a WHERE clause or
/// ""); -1 while the table is not there (its creation not applied yet).
async fn rows(cluster: &Cluster, node: &str, filter: &str) -> Result<i64> {
    let exists = cluster
        .psql(node, "SELECT to_regclass('delayed_rows') IS NOT NULL")
        .await?;
    if exists != "t" {
        return Ok(-1);
    }
    let sql = format!("SELECT count(*) FROM delayed_rows {filter}");
    let text = cluster.psql(node, &sql).await?;
    text.parse()
        .map_err(|e| anyhow!("{node} answered {text:?} to {sql}: {e}"))
}

/// Write on `node` with `sql`, then wait until the delayed node received it.
async fn write_and_wait(cluster: &Cluster, node: &str, sql: &str) -> Result<Lsn> {
    cluster.psql(node, sql).await?;
    let written = lsn(cluster, node, "SELECT pg_current_wal_lsn()").await?;
    wait_received(cluster, DELAYED, written).await?;
    Ok(written)
}

/// The table and ten rows reach node3's WAL and are not applied; with the
/// delay set to 0 at run time it applies them, then it is delayed again.
async fn received_but_not_applied(cluster: &Cluster) -> Result<()> {
    write_and_wait(
        cluster,
        PRIMARY,
        "CREATE TABLE delayed_rows (id int PRIMARY KEY)",
    )
    .await?;
    write_and_wait(
        cluster,
        PRIMARY,
        "INSERT INTO delayed_rows SELECT generate_series(1, 10)",
    )
    .await?;
    let (standby, delayed) = (
        rows(cluster, STANDBY, "").await?,
        rows(cluster, DELAYED, "").await?,
    );
    if standby != 10 || delayed != -1 {
        return Err(cluster
            .failure(format!(
                "{STANDBY} sees {standby} rows (expected 10); {DELAYED}, which received them, \
                 sees {delayed} (-1: no table yet, expected)"
            ))
            .await);
    }
    let said = cli_ok(cluster, &["set-apply-delay", DELAYED, "0", "--no-wait"]).await?;
    eprintln!("{said}");
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node3 to apply the rows once not delayed",
            || async move { Ok((rows(cluster, DELAYED, "").await? == 10).then_some(())) },
        )
        .await?;
    cli_ok(cluster, &["set-apply-delay", DELAYED, "1h", "--no-wait"]).await?;
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node3 to run with the 1h delay again",
            || async move {
                let d = cluster
                    .psql(DELAYED, "SHOW recovery_min_apply_delay")
                    .await?;
                Ok((d == "1h").then_some(()))
            },
        )
        .await?;
    shown_delayed(cluster, HOUR_MS, PRIMARY).await?;
    write_and_wait(
        cluster,
        PRIMARY,
        "INSERT INTO delayed_rows SELECT generate_series(11, 20)",
    )
    .await?;
    let delayed = rows(cluster, DELAYED, "").await?;
    if delayed != 10 {
        return Err(cluster
            .failure(format!(
                "{DELAYED} received rows 11-20 but sees {delayed} rows: expected 10 (not applied)"
            ))
            .await);
    }
    Ok(())
}

/// node2's WAL receiver frozen, rows 21-30 written with synchronous_commit
/// = local reach node3 only; then node1 is killed and node2 thawed. The
/// number of rows written in all.
async fn delayed_holds_the_most_wal_when_the_primary_dies(cluster: &Cluster) -> Result<i64> {
    let receiver = cluster
        .wait_for(SHORT_TIMEOUT, "node2's walreceiver process", || async move {
            Ok(postmaster_pid(&cluster.pgdata(STANDBY)?).and_then(walreceiver_of))
        })
        .await?;
    let frozen = Frozen::stop(receiver)?;
    let app = cluster
        .state()
        .await?
        .node(STANDBY)
        .map(|n| format!("pgpilot_{}", n.node_id))
        .unwrap_or_default();
    let sql = format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = '{app}'");
    let sql = sql.as_str();
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node1's walsender for node2 to end (wal_sender_timeout)",
            || async move { Ok((cluster.psql(PRIMARY, sql).await? == "0").then_some(())) },
        )
        .await?;
    let written = write_and_wait(
        cluster,
        PRIMARY,
        "SET synchronous_commit = local; INSERT INTO delayed_rows SELECT generate_series(21, 30)",
    )
    .await?;
    let standby = lsn(cluster, STANDBY, "SELECT pg_last_wal_receive_lsn()").await?;
    eprintln!("before the kill: {PRIMARY} wrote up to {written}, {STANDBY} received {standby}");
    if standby >= written {
        return Err(cluster
            .failure(format!(
                "{STANDBY} received {standby}, not behind {written}: freezing its walreceiver did not hold its WAL back"
            ))
            .await);
    }
    cluster.kill_node_hard(PRIMARY)?;
    drop(frozen);
    eprintln!("killed {PRIMARY}; thawed {STANDBY}'s walreceiver");
    Ok(30)
}

/// node2 is promoted after fetching the WAL only node3 had: every row is
/// there.
async fn standby_promoted_from_the_delayed_wal(cluster: &Cluster, written: i64) -> Result<()> {
    cluster
        .wait_writable_primary(STANDBY, FAILOVER_TIMEOUT, "node2 to be promoted")
        .await?;
    let events = events(cluster).await?;
    let fast_forward = events.iter().find(|e| {
        e["node_name"] == STANDBY
            && e["goal_to"] == ReplicationState::FastForward.as_str()
            && e["reason"].as_str().is_some_and(|r| r.contains(DELAYED))
    });
    if fast_forward.is_none() {
        return Err(cluster
            .failure(format!(
                "{STANDBY} was not sent to fetch the WAL from {DELAYED}; events:\n{}",
                event_lines(&events)
            ))
            .await);
    }
    let present = rows(cluster, STANDBY, "").await?;
    if present != written {
        return Err(cluster
            .failure(format!(
                "{STANDBY}, promoted, has {present} of the {written} rows written"
            ))
            .await);
    }
    Ok(())
}

/// node3 is told to follow node2 and keeps its delay; with a shorter delay
/// it streams from node2 and applies a new row only that much later.
async fn delayed_follows_and_stays_delayed(cluster: &Cluster, written: i64) -> Result<()> {
    let port = cluster.node_port(STANDBY)?;
    let conf = cluster.pgdata(DELAYED)?.join("pgpilot.conf");
    cluster
        .wait_for(
            FAILOVER_TIMEOUT,
            "node3 to be configured to follow node2",
            || {
                let follows = std::fs::read_to_string(&conf).is_ok_and(|text| {
                    text.lines().any(|l| {
                        l.starts_with("primary_conninfo") && l.contains(&format!(" port={port} "))
                    })
                });
                async move { Ok(follows.then_some(())) }
            },
        )
        .await?;
    let (delay, delayed_rows) = (
        cluster
            .psql(DELAYED, "SHOW recovery_min_apply_delay")
            .await?,
        rows(cluster, DELAYED, "").await?,
    );
    if !cluster.is_in_recovery(DELAYED).await? || delay != "1h" || delayed_rows != 10 {
        return Err(cluster
            .failure(format!(
                "{DELAYED} should still be a standby delayed by 1h showing 10 rows; it runs with \
                 recovery_min_apply_delay = {delay} and shows {delayed_rows}"
            ))
            .await);
    }
    // Its replay waits on the old primary's commits: it streams again once
    // it has applied them, sooner with a shorter delay.
    eprintln!(
        "{}",
        cli_ok(
            cluster,
            &["set-apply-delay", DELAYED, SHORT_DELAY, "--no-wait"]
        )
        .await?
    );
    cluster
        .wait_state(
            HEALTHY_TIMEOUT,
            "node3 to stream from node2 as a secondary",
            |s| {
                s.node(DELAYED).is_some_and(|n| {
                    n.settled_in(ReplicationState::Secondary) && n.wal_receiver_streaming
                })
            },
        )
        .await?;
    shown_delayed(cluster, 20_000, STANDBY).await?;
    if rows(cluster, DELAYED, "").await? != written {
        return Err(cluster
            .failure(format!(
                "{DELAYED} streams from {STANDBY} without all {written} rows"
            ))
            .await);
    }
    let at = Instant::now();
    write_and_wait(cluster, STANDBY, "INSERT INTO delayed_rows VALUES (31)").await?;
    if rows(cluster, DELAYED, "WHERE id = 31").await? != 0 {
        return Err(cluster
            .failure(format!(
                "{DELAYED} applied row 31 as soon as it received it"
            ))
            .await);
    }
    cluster
        .wait_for(Duration::from_secs(60), "node3 to apply row 31 after its delay", || async move {
            Ok((rows(cluster, DELAYED, "WHERE id = 31").await? == 1).then_some(()))
        })
        .await?;
    eprintln!(
        "{DELAYED} applied row 31 {:.1} s after it was written (apply delay {SHORT_DELAY})",
        at.elapsed().as_secs_f64()
    );
    Ok(())
}

/// node3 was never elected, nor on its way to being a primary.
async fn never_promoted(cluster: &Cluster) -> Result<()> {
    let events = events(cluster).await?;
    let promoting = [
        ReplicationState::FastForward,
        ReplicationState::PreparePromotion,
        ReplicationState::StopReplication,
        ReplicationState::WaitPrimary,
        ReplicationState::Primary,
        ReplicationState::Single,
    ];
    let promoted: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| {
            e["node_name"] == DELAYED && promoting.iter().any(|s| e["goal_to"] == s.as_str())
        })
        .collect();
    if !promoted.is_empty() || !cluster.is_in_recovery(DELAYED).await? {
        return Err(cluster
            .failure(format!(
                "{DELAYED}, delayed, was on its way to be promoted; events:\n{}",
                event_lines(&events)
            ))
            .await);
    }
    let state = cluster.state().await?;
    eprintln!("{}", state.table());
    Ok(())
}
