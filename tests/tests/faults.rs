//! Network and process faults that must change nothing: the primary's keeper
//! cut from the monitor (while it still streams to its standby), the monitor
//! down for a minute, and the monitor's own database restarted. Writes go on
//! through the multi-host URI and no node changes role. And the monitor's
//! database restarted in the middle of an unplanned failover, which must
//! still complete without losing an acknowledged write. And a primary whose
//! PostgreSQL crashes while its keeper lives: restarted, no failover.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use pgpilot_tests::operator::{
    event_line, event_lines, events, expect_explained_goal_changes, expect_no_goal_change,
    last_event_id,
};
use pgpilot_tests::process::{kill_postmaster_tree, postmaster_pid, reap};
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationState, FormationStateExt, NodeStatusExt, ReplicationState,
    WriteReport, Writer,
};

const PRIMARY: ReplicationState = ReplicationState::Primary;
const SECONDARY: ReplicationState = ReplicationState::Secondary;

/// Two nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// Keepers heartbeat again after a fault ends.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest pause between two acknowledged writes a fault may cause when
/// it must not touch the write path (the writer writes every 20 ms; this
/// leaves room for a loaded two-core machine, and is far below a failover).
const MAX_WRITE_GAP: Duration = Duration::from_secs(3);
/// A heartbeat at most this old counts as current (keepers beat every 0.5 s).
const FRESH_HEARTBEAT_MS: i64 = 2_000;

/// Every node heartbeats again, `primary` settled in primary and every
/// other node in secondary.
async fn wait_all_heartbeating(cluster: &Cluster, primary: &str) -> Result<FormationState> {
    let n = cluster.node_names().len();
    cluster
        .wait_state(
            RECOVERY_TIMEOUT,
            &format!(
                "every keeper to heartbeat again (age < {FRESH_HEARTBEAT_MS} ms) with \
                 {primary} still the settled primary"
            ),
            |s| {
                s.nodes.len() == n
                    && s.nodes
                        .iter()
                        .all(|node| (0..FRESH_HEARTBEAT_MS).contains(&node.heartbeat_age_ms))
                    && s.nodes.iter().all(|node| {
                        if node.name == primary {
                            node.settled_in(PRIMARY)
                        } else {
                            node.settled_in(SECONDARY)
                        }
                    })
            },
        )
        .await
}

/// The writes went on during the fault: acknowledged writes well after it
/// began, and no pause between two of them longer than [`MAX_WRITE_GAP`].
async fn expect_writes_continued(
    cluster: &Cluster,
    report: &WriteReport,
    fault_at: Instant,
    fault_end: Instant,
) -> Result<()> {
    let gap = report.longest_gap_after(fault_at).unwrap_or(Duration::MAX);
    let acked_late = report.acks.iter().any(|ack| {
        ack.at
            > fault_end
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(fault_at)
            && ack.at <= fault_end
    });
    eprintln!(
        "writer: {} writes acknowledged, {} errors, longest pause after the fault began {:.3} s",
        report.acks.len(),
        report.error_count,
        gap.as_secs_f64()
    );
    if gap > MAX_WRITE_GAP || !acked_late {
        return Err(cluster
            .failure(format!(
                "writes should go on during the fault: longest pause between acknowledged \
                 writes {gap:?} (allowed {MAX_WRITE_GAP:?}); a write acknowledged in the \
                 fault's last second: {acked_late}\nwriter errors:\n{}",
                report.recent_errors(15)
            ))
            .await);
    }
    Ok(())
}

/// The primary's keeper loses the monitor (a black-holed link) for longer
/// than node_timeout plus the fence bound, while its PostgreSQL still answers
/// the monitor's health check and still streams to the standby. The keeper
/// must not fence (its standby streams) and the monitor must not promote
/// (the primary is silent but healthy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_cut_from_monitor_only_keeps_serving() -> Result<()> {
    /// How long the link is cut: the monitor's node_timeout (2 s) plus the
    /// keeper's fence timeout (1.5 s) plus the fence margin, twice over.
    /// This sleep IS the scenario.
    const CUT: Duration = Duration::from_secs(8);

    let cluster = Cluster::start(ClusterOptions::nodes(2).monitor_link_proxies()).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;
    let writer = Writer::warm(&cluster).await?;
    let baseline = last_event_id(&events(&cluster).await?);

    let link = cluster.monitor_link(&primary)?;
    link.blackhole();
    let cut_at = Instant::now();
    eprintln!("cut {primary}'s link to the monitor: {link}");
    tokio::time::sleep(CUT).await;

    // The cut was real: the monitor has not heard from the primary's keeper
    // for most of it, while the standby's keeper kept beating.
    let state = cluster.state().await?;
    let silent_ms = state.node(&primary).map_or(-1, |n| n.heartbeat_age_ms);
    let standby_ms = state.node(&standby).map_or(-1, |n| n.heartbeat_age_ms);
    link.heal();
    let healed_at = Instant::now();
    eprintln!("healed after {:?}:\n{}", cut_at.elapsed(), state.table());
    if silent_ms < (CUT - Duration::from_secs(2)).as_millis() as i64
        || !(0..FRESH_HEARTBEAT_MS).contains(&standby_ms)
    {
        return Err(cluster
            .failure(format!(
                "at the end of the cut the monitor should have last heard from {primary} \
                 about {CUT:?} ago and from {standby} just now; heartbeat ages: \
                 {primary} {silent_ms} ms, {standby} {standby_ms} ms\n{}",
                state.table()
            ))
            .await);
    }
    if !state.node(&primary).is_some_and(|n| n.settled_in(PRIMARY))
        || !state
            .node(&standby)
            .is_some_and(|n| n.settled_in(SECONDARY))
    {
        return Err(cluster
            .failure(format!(
                "{primary} should still be the settled primary and {standby} the settled \
                 secondary at the end of the cut"
            ))
            .await);
    }

    wait_all_heartbeating(&cluster, &primary).await?;
    let report = writer.stop().await;
    expect_writes_continued(&cluster, &report, cut_at, healed_at).await?;
    expect_no_goal_change(&cluster, baseline, "while the primary's keeper was cut off").await?;
    if !cluster.is_in_recovery(&standby).await? || cluster.is_in_recovery(&primary).await? {
        return Err(cluster
            .failure(format!(
                "after the cut {primary} should take writes and {standby} be in recovery"
            ))
            .await);
    }
    report.expect_all_on(&cluster, &primary).await?;
    cluster.shutdown().await
}

/// The monitor is killed for a minute. Nothing decides anything meanwhile:
/// the primary keeps taking writes (its standby streams, so it does not
/// fence), the standby keeps serving reads, and once the monitor is back
/// every keeper heartbeats again with the same roles and no goal changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_down_for_a_minute_changes_nothing() -> Result<()> {
    /// How long the monitor stays down. This is the scenario's length.
    const DOWN: Duration = Duration::from_secs(60);
    /// How often the standby is read while the monitor is down.
    const READ_EVERY: Duration = Duration::from_secs(5);

    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;
    let writer = Writer::warm(&cluster).await?;
    let baseline = last_event_id(&events(&cluster).await?);

    let killed_at = cluster.kill_monitor()?;
    eprintln!("monitor killed; down for {DOWN:?}");
    let mut reads = Vec::new();
    while killed_at.elapsed() < DOWN {
        // The interval between reads is part of the measured minute.
        tokio::time::sleep(READ_EVERY.min(DOWN.saturating_sub(killed_at.elapsed()))).await;
        let rows = cluster
            .psql(&standby, "SELECT count(*) FROM pgpilot_writes")
            .await
            .and_then(|text| text.parse::<u64>().context("parsing a count"));
        let in_recovery = cluster.is_in_recovery(&standby).await;
        let primary_writable = cluster.is_in_recovery(&primary).await.map(|r| !r);
        match (rows, in_recovery, primary_writable) {
            (Ok(rows), Ok(true), Ok(true)) => reads.push(rows),
            (rows, in_recovery, primary_writable) => {
                return Err(cluster
                    .failure(format!(
                        "{:.1} s after the monitor was killed: reading on the standby \
                         {standby}: {rows:?}; {standby} in recovery: {in_recovery:?}; \
                         {primary} writable: {primary_writable:?}\nwriter errors:\n{}",
                        killed_at.elapsed().as_secs_f64(),
                        writer.recent_errors(10)
                    ))
                    .await);
            }
        }
    }
    let restarted_at = Instant::now();
    cluster.restart_monitor().await?;
    eprintln!(
        "monitor restarted after {:?}; rows read on {standby} meanwhile: {reads:?}",
        restarted_at.duration_since(killed_at)
    );
    if reads.len() < 2 || reads.first() >= reads.last() {
        return Err(cluster
            .failure(format!(
                "the standby {standby} should keep receiving the writes while the monitor \
                 is down; row counts read there: {reads:?}"
            ))
            .await);
    }

    wait_all_heartbeating(&cluster, &primary).await?;
    let report = writer.stop().await;
    expect_writes_continued(&cluster, &report, killed_at, restarted_at).await?;
    expect_no_goal_change(
        &cluster,
        baseline,
        "while the monitor was down or restarting",
    )
    .await?;
    report.expect_all_on(&cluster, &primary).await?;
    cluster.shutdown().await
}

/// The monitor is still the process the harness started, and answers: it
/// outlived its database going away instead of exiting. (Every wait of the
/// harness also fails at once if the monitor exits.)
async fn expect_same_monitor(cluster: &Cluster, pid: Option<u32>, during: &str) -> Result<()> {
    let now = cluster.monitor_pid();
    let answers = cluster.state().await;
    if pid.is_none() || now != pid || answers.is_err() {
        return Err(cluster
            .failure(format!(
                "the monitor should outlive {during} and answer: pid before {pid:?}, \
                 now {now:?}; GetFormationState: {:?}",
                answers.err()
            ))
            .await);
    }
    Ok(())
}

/// The monitor's own PostgreSQL is stopped (`pg_ctl stop -m fast`) for 5 s
/// and started again. The monitor cannot record anything meanwhile, but it
/// must not exit nor decide anything: the primary keeps taking writes, no
/// goal changes, and once its database is back the monitor (the same
/// process) hears every keeper again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_database_restart_in_steady_state() -> Result<()> {
    /// How long the monitor's database stays down. This is the scenario.
    const DOWN: Duration = Duration::from_secs(5);

    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let writer = Writer::warm(&cluster).await?;
    let baseline = last_event_id(&events(&cluster).await?);
    let monitor_pid = cluster.monitor_pid();

    let stopped_at = cluster.stop_monitor_db().await?;
    eprintln!("monitor database stopped; down for {DOWN:?}");
    tokio::time::sleep(DOWN).await;
    let restart_began = Instant::now();
    cluster.start_monitor_db().await?;
    eprintln!(
        "monitor database started again after {:?} (start took {:?})",
        restart_began.duration_since(stopped_at),
        restart_began.elapsed()
    );

    wait_all_heartbeating(&cluster, &primary).await?;
    eprintln!(
        "every keeper heartbeats again {:.1} s after the database stopped",
        stopped_at.elapsed().as_secs_f64()
    );
    expect_same_monitor(&cluster, monitor_pid, "its database restarting").await?;
    let report = writer.stop().await;
    expect_writes_continued(&cluster, &report, stopped_at, restart_began).await?;
    expect_no_goal_change(
        &cluster,
        baseline,
        "while the monitor's database was down or restarting",
    )
    .await?;
    report.expect_all_on(&cluster, &primary).await?;
    cluster.shutdown().await
}

/// The primary is killed hard and, once the monitor has begun the failover
/// (the standby's goal left secondary), the monitor's database is stopped
/// for 3 s and started again. The failover must still complete: the standby
/// becomes the writable primary, no acknowledged write is lost (two nodes
/// run synchronous replication, `ANY 1`, so every acknowledged commit
/// reached the standby), and every goal change recorded has a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_database_restart_during_failover() -> Result<()> {
    /// How long the monitor's database stays down. This is the scenario.
    const DOWN: Duration = Duration::from_secs(3);
    /// The monitor notices the dead primary (node_timeout 2 s by default).
    const FAILOVER_BEGINS: Duration = Duration::from_secs(30);
    /// The failover completes after the database is back.
    const FAILOVER_ENDS: Duration = Duration::from_secs(90);

    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;
    let writer = Writer::warm(&cluster).await?;
    let baseline = last_event_id(&events(&cluster).await?);
    let monitor_pid = cluster.monitor_pid();

    let killed_at = cluster.kill_node_hard(&old)?;
    let begun = cluster
        .wait_state(
            FAILOVER_BEGINS,
            &format!("the monitor to begin the failover ({new}'s goal leaves secondary)"),
            |s| s.node(&new).is_some_and(|n| n.goal() != Some(SECONDARY)),
        )
        .await?;
    let begun_at = Instant::now();
    let stopped_at = cluster.stop_monitor_db().await?;
    eprintln!(
        "failover begun {:.1} s after the kill; monitor database stopped {:.1} s after the \
         kill; state when the failover was seen to begin:\n{}",
        begun_at.duration_since(killed_at).as_secs_f64(),
        stopped_at.duration_since(killed_at).as_secs_f64(),
        begun.table()
    );
    tokio::time::sleep(DOWN).await;
    cluster.start_monitor_db().await?;
    let restarted_at = Instant::now();
    eprintln!(
        "monitor database started again {:.1} s after it stopped",
        restarted_at.duration_since(stopped_at).as_secs_f64()
    );

    cluster
        .wait_writable_primary(
            &new,
            FAILOVER_ENDS,
            &format!("{new} to become the writable primary after {old} was killed"),
        )
        .await?;
    let promoted_at = Instant::now();
    writer
        .wait_ack_after(
            &cluster,
            killed_at,
            Duration::from_secs(60),
            "the writer (same multi-host URI) to get a write acknowledged after the kill",
        )
        .await?;
    if cluster.is_in_recovery(&new).await? {
        return Err(cluster
            .failure(format!("{new} reports a primary state but is in recovery"))
            .await);
    }
    expect_same_monitor(&cluster, monitor_pid, "its database restarting").await?;

    let report = writer.stop().await;
    report.expect_all_on(&cluster, &new).await?;

    let changes = expect_explained_goal_changes(&cluster, baseline, "the failover").await?;
    eprintln!(
        "{new} reported a writable primary {:.1} s after the kill ({:.1} s after the \
         database was back); {} writes acknowledged, 0 lost; goal changes:\n{}",
        promoted_at.duration_since(killed_at).as_secs_f64(),
        promoted_at.duration_since(restarted_at).as_secs_f64(),
        report.acks.len(),
        event_lines(&changes)
    );
    cluster.shutdown().await
}

/// The primary's PostgreSQL crashes (its whole process tree SIGKILLed) while
/// its keeper lives. The keeper starts it again and nothing fails over: the
/// standby's goal never changes, the same node is the writable primary
/// afterwards, and every acknowledged write is on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_postgres_crash_is_restarted_without_failover() -> Result<()> {
    /// Writes resume once the keeper restarted PostgreSQL (a loaded machine
    /// takes seconds; a failover would take longer and is checked apart).
    const RESTART_TIMEOUT: Duration = Duration::from_secs(60);

    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;
    let writer = Writer::warm(&cluster).await?;
    let baseline = last_event_id(&events(&cluster).await?);

    let pgdata = cluster.pgdata(&primary)?;
    let pid = postmaster_pid(&pgdata).ok_or_else(|| anyhow!("{primary} has no postmaster.pid"))?;
    let crashed_at = Instant::now();
    let tree = kill_postmaster_tree(pid);
    reap(&tree, Duration::from_secs(10));
    eprintln!("killed {primary}'s PostgreSQL (postmaster {pid} and its children)");

    // A write answered just as the kill landed proves nothing: wait for the
    // keeper to start a new postmaster, then for a write acknowledged after
    // that, which only a restarted (or promoted) server can give.
    let new_pid = cluster
        .wait_for(
            RESTART_TIMEOUT,
            &format!("{primary}'s keeper to start a new postmaster"),
            || {
                let now = postmaster_pid(&pgdata).filter(|p| *p != pid);
                async move { Ok(now) }
            },
        )
        .await?;
    let restarting_at = Instant::now();
    writer
        .wait_ack_after(
            &cluster,
            restarting_at,
            RESTART_TIMEOUT,
            "writes to resume after the crash",
        )
        .await?;
    eprintln!(
        "{primary} restarted (postmaster {new_pid}); a write acknowledged again, seen {:.1} s after the kill",
        crashed_at.elapsed().as_secs_f64()
    );
    wait_all_heartbeating(&cluster, &primary).await?;
    if cluster.is_in_recovery(&primary).await? {
        return Err(cluster
            .failure(format!(
                "{primary} should be the writable primary again after its PostgreSQL was restarted"
            ))
            .await);
    }
    let standby_changes: Vec<String> = events(&cluster)
        .await?
        .iter()
        .filter(|e| e["event_id"].as_i64().unwrap_or(0) > baseline)
        .filter(|e| e["node_name"] == standby.as_str() && e["goal_from"] != e["goal_to"])
        .map(event_line)
        .collect();
    if !standby_changes.is_empty() {
        return Err(cluster
            .failure(format!(
                "{standby} should not be sent towards promotion when {primary}'s keeper can \
                 restart its PostgreSQL, but the monitor recorded:\n{}",
                standby_changes.join("\n")
            ))
            .await);
    }
    let report = writer.stop().await;
    if let Some(outage) = report.outage_around(crashed_at) {
        eprintln!("write outage around the crash: {outage}");
    }
    report.expect_all_on(&cluster, &primary).await?;
    cluster.shutdown().await
}
