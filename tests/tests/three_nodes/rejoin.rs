//! A standby whose WAL diverged from the new primary's rejoins by itself:
//! an asynchronous standby that received more than the elected one is
//! rewound (or cloned afresh) when it follows the new primary, without an
//! operator's `reinit`, and the monitor records why.

use anyhow::{anyhow, Result};
use pgpilot_proto::lsn::Lsn;
use pgpilot_tests::operator::{event_lines, events};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt};
use serde_json::Value;

use crate::helpers::{app_name, primary_is, walreceiver_pid, Frozen};
use crate::{FAILOVER_TIMEOUT, HEALTHY_TIMEOUT, REJOIN_TIMEOUT, SECONDARY, SHORT_TIMEOUT};

/// The monitor counts a keeper silent this long as gone (its node_timeout
/// is 2 s in the tests), with a margin.
const SILENT_MS: i64 = 4_000;

/// Rows written on node1 before anything goes wrong: every node has them.
const SHARED_ROWS: &str = "INSERT INTO rejoin_rows SELECT g FROM generate_series(1, 10) g";
/// Rows only node3 receives (node2's WAL receiver is frozen, and they are
/// committed without waiting for it).
const NODE3_ONLY_ROWS: &str = "BEGIN; SET LOCAL synchronous_commit = local; \
     INSERT INTO rejoin_rows SELECT g FROM generate_series(11, 20) g; COMMIT";
/// Every row, in order, as one line.
const ALL_ROWS: &str =
    "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM rejoin_rows";

/// node1 primary; node2 a quorum standby with the highest priority; node3
/// an asynchronous standby (not in the fence set, priority 0). node3 is cut
/// from the monitor, so the monitor's LSN for it stays old and it takes no
/// part in the election; node2's WAL receiver is frozen while node1 commits
/// rows (synchronous_commit = local) that only node3 receives; node1 dies;
/// node2 is elected without those rows. When node3's link heals it follows
/// node2 — whose timeline left node1's before node3's WAL ends — so it must
/// be rewound: it becomes node2's secondary holding exactly node2's rows,
/// with no `reinit`, and an event says it was rewound and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_standby_ahead_of_the_elected_one_rejoins_without_reinit() -> Result<()> {
    let cluster = Cluster::start(
        ClusterOptions::nodes(3)
            .candidate_priorities(&[50, 90, 0])
            .replication_quorums(&[true, true, false])
            .monitor_link_proxies(),
    )
    .await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    primary_is(&cluster, "node1").await?;
    let app2 = app_name(&state, "node2")?;

    cluster
        .psql("node1", "CREATE TABLE rejoin_rows (id int PRIMARY KEY)")
        .await?;
    cluster.psql("node1", SHARED_ROWS).await?;
    for node in ["node2", "node3"] {
        wait_row_count(&cluster, node, "id <= 10", 10).await?;
    }

    // node3's keeper falls silent for the monitor (its PostgreSQL goes on
    // streaming from node1).
    cluster.monitor_link("node3")?.blackhole();
    cluster
        .wait_state(
            SHORT_TIMEOUT,
            "the monitor to count node3's keeper as silent",
            |s| {
                s.node("node3")
                    .is_some_and(|n| n.heartbeat_age_ms > SILENT_MS)
            },
        )
        .await?;

    // node2 stops receiving: its WAL receiver frozen, node1's walsender
    // for it gone (wal_sender_timeout), so nothing node1 writes from now on
    // reaches node2, not even its socket buffer.
    let c = &cluster;
    let receiver = cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node2's walreceiver process",
            || async move { walreceiver_pid(c, "node2") },
        )
        .await?;
    let frozen = Frozen::stop(receiver)?;
    let sql = format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = '{app2}'");
    let sql = sql.as_str();
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node1's walsender for node2 to end (wal_sender_timeout)",
            || async move { Ok((c.psql("node1", sql).await? == "0").then_some(())) },
        )
        .await?;
    cluster.psql("node1", NODE3_ONLY_ROWS).await?;
    wait_row_count(&cluster, "node3", "id > 10", 10).await?;
    let lsn = |node: &'static str| async move {
        let text = c.psql(node, "SELECT pg_last_wal_receive_lsn()").await?;
        Ok::<Lsn, anyhow::Error>(text.parse::<Lsn>()?)
    };
    let (lsn2, lsn3) = (lsn("node2").await?, lsn("node3").await?);
    eprintln!("before the kill: node2 received {lsn2}, node3 received {lsn3}");
    if lsn2 >= lsn3 {
        return Err(cluster
            .failure(format!(
                "node3 should have received more than node2 ({lsn3} vs {lsn2})"
            ))
            .await);
    }

    // node1 dies; node2 (thawed) is elected without node3's extra rows.
    cluster.kill_node_hard("node1")?;
    drop(frozen);
    cluster
        .wait_writable_primary("node2", FAILOVER_TIMEOUT, "node2 to be promoted")
        .await?;
    let extra = cluster
        .psql("node2", "SELECT count(*) FROM rejoin_rows WHERE id > 10")
        .await?;
    if extra != "0" {
        return Err(cluster
            .failure(format!(
                "node2 should have been promoted without node3's rows, it holds {extra} of them \
                 (a fast-forward from node3?)"
            ))
            .await);
    }
    cluster
        .psql("node2", "INSERT INTO rejoin_rows VALUES (100)")
        .await?;

    // node3 hears of the new primary: it must rewind (or clone) by itself.
    cluster.monitor_link("node3")?.heal();
    cluster
        .wait_state(
            REJOIN_TIMEOUT,
            "node3 to rejoin as node2's secondary, streaming on timeline 2",
            |s| {
                // Until node3's keeper is heard again the monitor still
                // shows it a settled secondary (of node1).
                s.node("node3").is_some_and(|n| {
                    n.settled_in(SECONDARY)
                        && n.wal_receiver_streaming
                        && n.timeline == 2
                        && (0..SILENT_MS).contains(&n.heartbeat_age_ms)
                }) && s
                    .node("node2")
                    .is_some_and(|n| n.reports_writable_primary())
            },
        )
        .await?;
    wait_row_count(&cluster, "node3", "id = 100", 1).await?;
    let (rows2, rows3) = (
        cluster.psql("node2", ALL_ROWS).await?,
        cluster.psql("node3", ALL_ROWS).await?,
    );
    if rows2 != rows3 {
        return Err(cluster
            .failure(format!(
                "node3 should hold exactly node2's rows: node2 {rows2}, node3 {rows3}"
            ))
            .await);
    }

    // The note rides on the keeper's next loop heartbeat, which may come
    // after the keepalives that showed node3 settled: wait for it.
    let c = &cluster;
    let _ = cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node3's rewind to be recorded",
            || async move {
                let list = events(c).await?;
                Ok(list
                    .iter()
                    .any(|e| {
                        e["node_name"] == "node3"
                            && (e["kind"] == "standby_rewound" || e["kind"] == "standby_recloned")
                    })
                    .then_some(()))
            },
        )
        .await;
    let list = events(&cluster).await?;
    let of_node3 = |kinds: &[&str]| -> Vec<Value> {
        list.iter()
            .filter(|e| e["node_name"] == "node3")
            .filter(|e| kinds.iter().any(|k| e["kind"] == *k))
            .cloned()
            .collect()
    };
    let rewound = of_node3(&["standby_rewound", "standby_recloned"]);
    let reinits = of_node3(&["reinit"]);
    if rewound.is_empty() || !reinits.is_empty() {
        return Err(cluster
            .failure(format!(
                "show-events should list node3 rewound or recloned, and no reinit; events:\n{}",
                event_lines(&list)
            ))
            .await);
    }
    let reason = rewound[0]["reason"].as_str().unwrap_or("");
    if !reason.contains("timeline 1") {
        return Err(cluster
            .failure(format!(
                "the event should name the timeline node3 diverged on: {reason}"
            ))
            .await);
    }
    eprintln!(
        "node3 rejoined with node2's rows ({rows3}); event: {} {reason}",
        rewound[0]["kind"]
    );
    Ok(())
}

/// Wait until `node` has `count` rows of `rejoin_rows` matching `filter`.
async fn wait_row_count(cluster: &Cluster, node: &str, filter: &str, count: u32) -> Result<()> {
    let sql = format!("SELECT count(*) FROM rejoin_rows WHERE {filter}");
    let sql = sql.as_str();
    let want = count.to_string();
    let want = want.as_str();
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            &format!("{count} rows ({filter}) on {node}"),
            || async move {
                let got = cluster.psql(node, sql).await?;
                if got == want {
                    Ok(Some(()))
                } else {
                    Err(anyhow!("{node} has {got} rows ({filter})"))
                }
            },
        )
        .await
}
