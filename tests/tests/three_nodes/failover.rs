//! Failovers among three nodes: the highest candidate priority wins with
//! every acknowledged write, a lagging winner fast-forwards first, priority 0
//! is never promoted, a double fault waits for the operator, and a planned
//! failover without a candidate is refused.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use nix::sys::signal::Signal;
use pgpilot_proto::lsn::Lsn;
use pgpilot_tests::operator::{cli_json, cli_ok, cli_refused, event_line, events};
use pgpilot_tests::process::{self, postmaster_pid};
use pgpilot_tests::wait::POLL_INTERVAL;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, Writer,
};

use crate::helpers::{
    app_name, check_no_loss, check_report, check_settings_match, primary_is, wait_ack_after,
    wait_acks, wait_row, wait_sync_names, walreceiver_pid, Frozen,
};
use crate::{FAILOVER_TIMEOUT, HEALTHY_TIMEOUT, PRIMARY, REJOIN_TIMEOUT, SECONDARY, SHORT_TIMEOUT};

/// ANY 1 over two quorum standbys; the primary dies; the standby with the
/// highest candidate priority (node2, 90) wins with every acknowledged
/// write, node3 follows it and the old primary rejoins as a secondary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_failover_highest_priority_wins() -> Result<()> {
    let cluster =
        Cluster::start(ClusterOptions::nodes(3).candidate_priorities(&[50, 90, 50])).await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    primary_is(&cluster, "node1").await?;
    let (app2, app3) = (app_name(&state, "node2")?, app_name(&state, "node3")?);

    cli_ok(
        &cluster,
        &["set-number-sync-standbys", "1", "--timeout", "120s"],
    )
    .await?;
    let applied = wait_sync_names(&cluster, "node1", 1, &[app2, app3]).await?;
    check_settings_match(&cluster, &applied, 1).await?;
    eprintln!("node1 applies synchronous_standby_names = '{applied}'");

    let writer = Writer::warm(&cluster).await?;
    let killed_at = cluster
        .kill_primary_until_promoted("node1", "node2", FAILOVER_TIMEOUT)
        .await?;
    let promoted_at = Instant::now();
    if !cluster.is_in_recovery("node3").await? {
        return Err(cluster
            .failure("node3 is not in recovery although node2 won the election")
            .await);
    }
    if cluster.is_in_recovery("node2").await? {
        return Err(cluster
            .failure("node2 reports a writable primary state but is still in recovery")
            .await);
    }
    check_no_loss(
        &cluster,
        "node2",
        &writer.acked_ids(),
        "right after the failover",
    )
    .await?;
    wait_ack_after(
        &cluster,
        &writer,
        killed_at,
        "the writer (same multi-host URI) to get a write acknowledged after the kill",
    )
    .await?;

    // node3 follows the new primary.
    cluster
        .wait_state(REJOIN_TIMEOUT, "node3 settled secondary of node2", |s| {
            s.node("node3").is_some_and(|n| n.settled_in(SECONDARY))
                && s.node("node2")
                    .is_some_and(|n| n.reports_writable_primary())
        })
        .await?;
    cluster
        .psql("node2", "INSERT INTO pgpilot_writes (id) VALUES (-1)")
        .await?;
    wait_row(
        &cluster,
        "node3",
        -1,
        "a row written on node2 to be readable on node3",
    )
    .await?;

    // Gone for good as far as anyone can tell, the old primary is never
    // shown usable from its last report.
    cluster
        .wait_for(
            REJOIN_TIMEOUT,
            "show-state to call node1 unreachable",
            || async {
                let state = cli_json(&cluster, &["show-state", "--json"]).await?;
                let node1 = state["nodes"]
                    .as_array()
                    .and_then(|nodes| nodes.iter().find(|n| n["name"] == "node1"))
                    .cloned()
                    .unwrap_or_default();
                Ok(
                    (node1["unreachable"] == true && node1["connection"] == "unreachable")
                        .then_some(()),
                )
            },
        )
        .await?;
    let table = cli_ok(&cluster, &["show-state"]).await?;
    let line = table
        .lines()
        .find(|l| l.contains("node1 ("))
        .unwrap_or_default();
    assert!(
        line.contains("unreachable")
            && !line.contains("read-write")
            && line.contains("last report"),
        "node1 should show unreachable, not as the writable primary it last reported:\n{table}"
    );

    // The old primary comes back as a secondary.
    cluster.start_keeper("node1")?;
    cluster
        .wait_state(
            REJOIN_TIMEOUT,
            "node1 to rejoin as secondary, node2 primary",
            |s| {
                s.node("node1").is_some_and(|n| n.settled_in(SECONDARY))
                    && s.node("node2").is_some_and(|n| n.settled_in(PRIMARY))
            },
        )
        .await?;
    wait_row(
        &cluster,
        "node1",
        -1,
        "the row written on node2 to be readable on node1",
    )
    .await?;

    let report = writer.stop().await;
    check_report(&cluster, &report, "node2", "at the end").await?;
    let outage = report
        .outage_around(killed_at)
        .ok_or_else(|| anyhow!("no write acknowledged after the kill"))?;
    eprintln!(
        "QUORUM FAILOVER (3 nodes, ANY 1): write outage {outage}; node2 writable {:.3} s after \
         the kill; {} writes acked, {} client errors",
        promoted_at.duration_since(killed_at).as_secs_f64(),
        report.acks.len(),
        report.error_count
    );
    Ok(())
}

/// node2 (priority 90) has received less WAL than node3 when the primary
/// dies: it wins, fetches the missing WAL from node3 first (`fast_forward`)
/// and loses no acknowledged write.
///
/// How node2 is made to lag: its WAL receiver is frozen with SIGSTOP; node1's
/// walsender for it then times out (wal_sender_timeout) and ends, so nothing
/// node1 writes from then on can reach node2 — not even into its socket
/// buffer. Commits are still acknowledged, by node3 (`ANY 1` over both).
/// The receiver is thawed right after node1 is killed; it finds its
/// connection gone and node2 reports its (older) LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_high_priority_standby_fast_forwards() -> Result<()> {
    let cluster =
        Cluster::start(ClusterOptions::nodes(3).candidate_priorities(&[50, 90, 50])).await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    primary_is(&cluster, "node1").await?;
    let (app2, app3) = (app_name(&state, "node2")?, app_name(&state, "node3")?);
    let applied = wait_sync_names(&cluster, "node1", 1, &[app2.clone(), app3]).await?;
    eprintln!("node1 applies synchronous_standby_names = '{applied}'");

    let writer = Writer::warm(&cluster).await?;
    let c = &cluster;
    let receiver = cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node2's walreceiver process",
            || async move { walreceiver_pid(c, "node2") },
        )
        .await?;
    let frozen = Frozen::stop(receiver)?;
    eprintln!("froze node2's walreceiver (pid {receiver})");

    let sql = format!("SELECT count(*) FROM pg_stat_replication WHERE application_name = '{app2}'");
    let sql = sql.as_str();
    cluster
        .wait_for(
            SHORT_TIMEOUT,
            "node1's walsender for node2 to end (wal_sender_timeout)",
            || async move { Ok((c.psql("node1", sql).await? == "0").then_some(())) },
        )
        .await?;
    // From here on nothing node1 writes reaches node2; node3 acknowledges.
    let cut = writer.ack_count();
    wait_acks(
        &cluster,
        &writer,
        cut + 50,
        "50 writes acknowledged (by node3) while node2 receives nothing",
    )
    .await?;
    cluster
        .psql("node1", "INSERT INTO pgpilot_writes (id) VALUES (-2)")
        .await?;
    let primary_lsn = cluster.psql("node1", "SELECT pg_current_wal_lsn()").await?;
    let node2_lsn = cluster
        .psql("node2", "SELECT pg_last_wal_receive_lsn()")
        .await?;
    let node3_lsn = cluster
        .psql("node3", "SELECT pg_last_wal_receive_lsn()")
        .await?;
    eprintln!(
        "before the kill: node1 at {primary_lsn}, node2 received {node2_lsn}, node3 received \
         {node3_lsn}"
    );
    if node2_lsn.parse::<Lsn>()? >= node3_lsn.parse::<Lsn>()? {
        return Err(cluster
            .failure(format!(
                "node2 does not lag behind node3 (received {node2_lsn} vs {node3_lsn}): freezing \
                 its walreceiver did not hold its WAL back"
            ))
            .await);
    }

    let killed_at = cluster.kill_node_hard("node1")?;
    drop(frozen);
    eprintln!("killed node1; thawed node2's walreceiver");

    cluster
        .wait_writable_primary(
            "node2",
            FAILOVER_TIMEOUT,
            "node2 (priority 90, lagging) to become the writable primary",
        )
        .await?;
    let promoted_at = Instant::now();

    let events = events(&cluster).await?;
    let fast_forward = ReplicationState::FastForward.as_str();
    let Some(ff) = events.iter().find(|e| {
        e["node_name"].as_str() == Some("node2") && e["goal_to"].as_str() == Some(fast_forward)
    }) else {
        let lines: Vec<String> = events.iter().map(event_line).collect();
        return Err(cluster
            .failure(format!(
                "node2 won without being assigned fast_forward; events:\n{}",
                lines.join("\n")
            ))
            .await);
    };
    eprintln!("event: {}", event_line(ff));

    let mut acked = writer.acked_ids();
    acked.push(-2);
    check_no_loss(
        &cluster,
        "node2",
        &acked,
        "after the fast_forward and promotion",
    )
    .await?;
    wait_ack_after(
        &cluster,
        &writer,
        killed_at,
        "the writer to get a write acknowledged after the kill",
    )
    .await?;
    let report = writer.stop().await;
    check_report(&cluster, &report, "node2", "at the end").await?;
    let outage = report
        .outage_around(killed_at)
        .ok_or_else(|| anyhow!("no write acknowledged after the kill"))?;
    eprintln!(
        "FAILOVER WITH FAST_FORWARD: write outage {outage}; node2 writable {:.3} s after the \
         kill; {} writes acked",
        promoted_at.duration_since(killed_at).as_secs_f64(),
        report.acks.len()
    );
    Ok(())
}

/// node3 has candidate priority 0: it is never promoted, not on request
/// and not when it is the last standby standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_zero_never_promoted() -> Result<()> {
    let cluster =
        Cluster::start(ClusterOptions::nodes(3).candidate_priorities(&[50, 50, 0])).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    primary_is(&cluster, "node1").await?;

    cli_refused(
        &cluster,
        &["perform-promotion", "node3", "--timeout", "60s"],
        None,
        &["node3", "priority 0"],
    )
    .await?;
    cli_refused(
        &cluster,
        &["enable-maintenance", "node2"],
        Some(1),
        &["node2", "candidate"],
    )
    .await?;
    let state = cluster.state().await?;
    if !state.is_healthy(3) || state.node("node1").is_none_or(|n| !n.settled_in(PRIMARY)) {
        return Err(cluster
            .failure(format!(
                "refused commands changed the group:\n{}",
                state.table()
            ))
            .await);
    }

    // node2, the only candidate, dies; then the primary.
    cluster.kill_node_hard("node2")?;
    cluster
        .wait_state(
            FAILOVER_TIMEOUT,
            "the monitor to stop counting the dead node2 as a secondary",
            |s| s.node("node2").is_some_and(|n| n.goal() != Some(SECONDARY)),
        )
        .await?;
    let killed_at = cluster.kill_node_hard("node1")?;

    let c = &cluster;
    let reason = cluster
        .wait_for(
            FAILOVER_TIMEOUT,
            "show-state --json to give a waiting_reason saying no standby can be promoted",
            || async move {
                let doc = cli_json(c, &["show-state", "--json"]).await?;
                let reason = doc["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n["waiting_reason"].as_str())
                    .find(|r| r.contains("priority above 0"))
                    .map(str::to_string);
                Ok(reason)
            },
        )
        .await?;
    eprintln!(
        "{:.1} s after the kill, waiting_reason: {reason}",
        killed_at.elapsed().as_secs_f64()
    );
    let text = cli_ok(&cluster, &["show-state"]).await?;
    if !text.lines().any(|l| l.starts_with("waiting: ")) {
        return Err(cluster
            .failure(format!("show-state prints no `waiting: …` line:\n{text}"))
            .await);
    }

    // The scenario itself is an observation: for 10 s node3 stays a standby.
    let window = Duration::from_secs(10);
    let until = Instant::now() + window;
    let promoting = [
        ReplicationState::FastForward,
        ReplicationState::PreparePromotion,
        ReplicationState::StopReplication,
    ];
    let mut checks = 0;
    loop {
        checks += 1;
        let state = cluster.state().await?;
        let node3 = state
            .node("node3")
            .ok_or_else(|| anyhow!("node3 left the formation:\n{}", state.table()))?;
        let goal = node3.goal();
        let on_its_way = goal.is_some_and(|g| g.is_writable_primary() || promoting.contains(&g));
        if on_its_way
            || node3.reports_writable_primary()
            || !cluster.is_in_recovery("node3").await?
        {
            return Err(cluster
                .failure(format!(
                    "node3 (candidate priority 0) is being promoted {:.1} s after the primary \
                     died",
                    killed_at.elapsed().as_secs_f64()
                ))
                .await);
        }
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(POLL_INTERVAL * 3).await;
    }
    let events = events(&cluster).await?;
    let promoted: Vec<String> = events
        .iter()
        .filter(|e| {
            e["node_name"].as_str() == Some("node3")
                && e["goal_to"].as_str().is_some_and(|g| {
                    g.parse::<ReplicationState>()
                        .is_ok_and(|s| s.is_writable_primary() || promoting.contains(&s))
                })
        })
        .map(event_line)
        .collect();
    if !promoted.is_empty() {
        return Err(cluster
            .failure(format!(
                "node3 was assigned a promotion goal:\n{}",
                promoted.join("\n")
            ))
            .await);
    }
    eprintln!(
        "node3 (priority 0) stayed a standby for {:.1} s ({checks} checks) with the primary dead",
        window.as_secs_f64()
    );
    Ok(())
}

/// A double fault: a quorum standby and the primary die together. The
/// election cannot prove the old primary stopped (the dead standby may
/// still stream from it), so it waits, says why in show-state and in an
/// event, and finishes only when the operator accepts the risk with
/// `perform-failover --allow-data-loss`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_fault_waits_until_forced() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    // Both standbys in node1's fence set: the monitor stores it when it
    // answers node1, which then applies it. Settled standbys alone do not
    // say that node1 heard of the second one yet.
    let (app2, app3) = (app_name(&state, "node2")?, app_name(&state, "node3")?);
    wait_sync_names(&cluster, "node1", 1, &[app2, app3]).await?;
    cli_refused(
        &cluster,
        &["perform-failover", "--allow-data-loss"],
        Some(1),
        &["no election is stuck"],
    )
    .await?;
    // Freeze node1 first, so that both nodes stop at the same instant: were
    // node1 to heartbeat after node3's loss, node3 would leave the fence
    // set and the election would rightly not be stuck.
    cluster.signal_keeper("node1", Signal::SIGSTOP)?;
    if let Some(pid) = postmaster_pid(&cluster.pgdata("node1")?) {
        process::freeze_postmaster_tree(pid);
    }
    cluster.kill_node_hard("node3")?;
    cluster.kill_node_hard("node1")?;
    let stuck = cluster
        .wait_state(FAILOVER_TIMEOUT, "the election to say it is stuck", |s| {
            s.nodes
                .iter()
                .any(|n| n.waiting_kinds.iter().any(|k| k == "election_stuck"))
        })
        .await?;
    assert!(
        !stuck.node("node2").is_some_and(|n| n.settled_in(PRIMARY)),
        "node2 promoted without proof:\n{}",
        stuck.table()
    );
    // The event is written by the monitor's next evaluation.
    pgpilot_tests::poll_until(
        SHORT_TIMEOUT,
        "an event saying the election is stuck",
        || async {
            let events = events(&cluster).await?;
            Ok(events
                .iter()
                .any(|e| e["kind"].as_str() == Some("election_stuck"))
                .then_some(()))
        },
    )
    .await?;
    let out = cli_ok(&cluster, &["perform-failover", "--allow-data-loss"]).await?;
    assert!(out.contains("forced"), "{out}");
    cluster
        .wait_writable_primary(
            "node2",
            FAILOVER_TIMEOUT,
            "node2 to be the writable primary",
        )
        .await?;
    Ok(())
}

/// A planned failover needs a healthy candidate: with the only standby
/// gone, `perform-failover` is refused with the reason and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_without_a_candidate_is_refused() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    cluster.kill_node_hard("node2")?;
    cluster
        .wait_state(
            FAILOVER_TIMEOUT,
            "node2 out of secondary and node1 settled in wait_primary",
            |s| {
                s.node("node2").is_some_and(|n| n.goal() != Some(SECONDARY))
                    && s.node("node1")
                        .is_some_and(|n| n.settled_in(ReplicationState::WaitPrimary))
            },
        )
        .await?;
    cli_refused(
        &cluster,
        &["perform-failover"],
        Some(1),
        &["no healthy secondary"],
    )
    .await?;
    let state = cluster.state().await?;
    assert!(
        state
            .node("node1")
            .is_some_and(|n| n.reports_writable_primary()),
        "node1 must stay the primary:\n{}",
        state.table()
    );
    Ok(())
}
