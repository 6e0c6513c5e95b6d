//! Three nodes: quorum failover by candidate priority, fast_forward of a
//! lagging winner, priority 0 never promoted, maintenance of a standby and
//! of the primary, run-time replication settings, switchover to a named node.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::Signal;
use pgpilot_proto::lsn::Lsn;
use pgpilot_tests::operator::{cli_json, cli_ok, cli_refused};
use pgpilot_tests::process::{self, children_of, postmaster_pid};
use pgpilot_tests::wait::POLL_INTERVAL;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationState, FormationStateExt, NodeStatusExt, ReplicationState,
    WriteReport, Writer,
};
use serde_json::Value;

const PRIMARY: ReplicationState = ReplicationState::Primary;
const SECONDARY: ReplicationState = ReplicationState::Secondary;
const MAINTENANCE: ReplicationState = ReplicationState::Maintenance;

/// Three nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// A failover, a rejoin, a settings change reaching the primary.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(120);
const REJOIN_TIMEOUT: Duration = Duration::from_secs(180);
const SHORT_TIMEOUT: Duration = Duration::from_secs(60);

// ---- helpers -----------------------------------------------------------------

/// Wait until the writer has `count` acknowledged writes in all.
async fn wait_acks(cluster: &Cluster, writer: &Writer, count: usize, what: &str) -> Result<()> {
    cluster
        .wait_for(Duration::from_secs(60), what, || {
            let ready = writer.ack_count() >= count;
            async move { Ok(ready.then_some(())) }
        })
        .await
        .map_err(|err| err.context(format!("writer errors:\n{}", writer.recent_errors(15))))
}

async fn wait_ack_after(
    cluster: &Cluster,
    writer: &Writer,
    instant: Instant,
    what: &str,
) -> Result<()> {
    writer
        .wait_ack_after(cluster, instant, FAILOVER_TIMEOUT, what)
        .await
}

/// `pgpilot-monitor <args> --monitor <this cluster's monitor>`, any exit status.
async fn settings(cluster: &Cluster) -> Result<Value> {
    cli_json(cluster, &["show-settings", "--json"]).await
}

/// The `pgpilot_<id>` name a node streams as.
fn app_name(state: &FormationState, node: &str) -> Result<String> {
    let id = state
        .node(node)
        .map(|n| n.node_id)
        .ok_or_else(|| anyhow!("{node} is not in the formation:\n{}", state.table()))?;
    Ok(format!("pgpilot_{id}"))
}

/// `ANY n (a, b, …)` → (n, {a, b, …}).
fn parse_any(text: &str) -> Option<(u32, BTreeSet<String>)> {
    let rest = text.trim().strip_prefix("ANY ")?;
    let (n, list) = rest.split_once(' ')?;
    let list = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let names = list
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect();
    Some((n.parse().ok()?, names))
}

/// Wait until `node` (the primary) runs with
/// `synchronous_standby_names = 'ANY n (names)'`; returns the value.
async fn wait_sync_names(
    cluster: &Cluster,
    node: &str,
    n: u32,
    names: &[String],
) -> Result<String> {
    let want: BTreeSet<String> = names.iter().cloned().collect();
    let want_ref = &want;
    cluster
        .wait_for(
            FAILOVER_TIMEOUT,
            &format!("{node}'s synchronous_standby_names to be ANY {n} {want:?}"),
            || async move {
                let value = cluster.psql(node, "SHOW synchronous_standby_names").await?;
                let parsed = parse_any(&value);
                if parsed.as_ref() == Some(&(n, want_ref.clone())) {
                    Ok(Some(value))
                } else {
                    Err(anyhow!(
                        "{node} runs with synchronous_standby_names = '{value}'"
                    ))
                }
            },
        )
        .await
}

/// The primary applies exactly what `show-settings --json` says it is told.
async fn check_settings_match(cluster: &Cluster, applied: &str, nss: u64) -> Result<Value> {
    let doc = settings(cluster).await?;
    if doc["synchronous_standby_names"].as_str() != Some(applied)
        || doc["number_sync_standbys"].as_u64() != Some(nss)
    {
        return Err(cluster
            .failure(format!(
                "show-settings --json disagrees with the primary (applies '{applied}', \
                 number_sync_standbys {nss} expected):\n{doc:#}"
            ))
            .await);
    }
    Ok(doc)
}

/// `nodes[].<field>` of `show-settings --json` for `node`.
fn node_setting<'a>(doc: &'a Value, node: &str, field: &str) -> Option<&'a Value> {
    doc["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"].as_str() == Some(node))
        .map(|n| &n[field])
}

/// Wait until a row with `id` in `pgpilot_writes` is readable on `node`.
async fn wait_row(cluster: &Cluster, node: &str, id: i64, what: &str) -> Result<()> {
    let sql = format!("SELECT count(*) FROM pgpilot_writes WHERE id = {id}");
    let sql = sql.as_str();
    cluster
        .wait_for(SHORT_TIMEOUT, what, || async move {
            Ok((cluster.psql(node, sql).await? == "1").then_some(()))
        })
        .await
}

/// Invariant 2: every acknowledged id is on `node`.
async fn check_no_loss(cluster: &Cluster, node: &str, ids: &[i64], when: &str) -> Result<()> {
    cluster
        .expect_ids_on(node, ids)
        .await
        .with_context(|| when.to_string())
}

async fn check_report(
    cluster: &Cluster,
    report: &WriteReport,
    node: &str,
    when: &str,
) -> Result<()> {
    check_no_loss(cluster, node, &report.acked_ids(), when).await
}

/// The pid of `node`'s WAL receiver (a child of its postmaster whose
/// process title says `walreceiver`).
fn walreceiver_pid(cluster: &Cluster, node: &str) -> Result<Option<i32>> {
    let Some(postmaster) = postmaster_pid(&cluster.pgdata(node)?) else {
        return Ok(None);
    };
    Ok(children_of(postmaster).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("walreceiver"))
    }))
}

/// A process stopped with SIGSTOP; SIGCONT when dropped, also when the test
/// fails half-way.
struct Frozen(i32);

impl Frozen {
    fn stop(pid: i32) -> Result<Frozen> {
        process::signal(pid, Signal::SIGSTOP).with_context(|| format!("SIGSTOP to {pid}"))?;
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = process::signal(self.0, Signal::SIGCONT);
    }
}

/// Events of the formation, oldest first (`show-events --json`).
async fn events_json(cluster: &Cluster) -> Result<Vec<Value>> {
    let doc = cli_json(cluster, &["show-events", "--count", "500", "--json"]).await?;
    let mut events = doc
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow!("show-events --json is not an array: {doc}"))?;
    events.sort_by_key(|e| e["event_id"].as_i64());
    Ok(events)
}

fn event_line(e: &Value) -> String {
    format!(
        "{} {} reported {} goal {} -> {}: {}",
        e["at"].as_str().unwrap_or("?"),
        e["node_name"].as_str().unwrap_or("?"),
        e["reported_state"].as_str().unwrap_or("?"),
        e["goal_from"].as_str().unwrap_or("?"),
        e["goal_to"].as_str().unwrap_or("?"),
        e["reason"].as_str().unwrap_or("?")
    )
}

async fn primary_is(cluster: &Cluster, expected: &str) -> Result<()> {
    let primary = cluster.primary_name().await?;
    if primary != expected {
        return Err(cluster
            .failure(format!(
                "expected {expected} to be the first primary, found {primary}"
            ))
            .await);
    }
    Ok(())
}

// ---- scenarios ------------------------------------------------------------------

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

    let events = events_json(&cluster).await?;
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
    let events = events_json(&cluster).await?;
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

/// number_sync_standbys, replication quorum and candidate priority changed
/// at run time reach the primary's synchronous_standby_names; changes that
/// would break the quorum or leave no candidate are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_settings_change_sync_names() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    primary_is(&cluster, "node1").await?;
    let (app2, app3) = (app_name(&state, "node2")?, app_name(&state, "node3")?);

    cli_ok(&cluster, &["set-number-sync-standbys", "1"]).await?;
    let applied = wait_sync_names(&cluster, "node1", 1, &[app2.clone(), app3.clone()]).await?;
    check_settings_match(&cluster, &applied, 1).await?;
    eprintln!("number_sync_standbys 1: node1 applies '{applied}'");

    // ANY 1 needs 2 quorum standbys (one may fail): node3 cannot leave the quorum now.
    cli_refused(
        &cluster,
        &["set-replication-quorum", "node3", "false"],
        Some(1),
        &["quorum standbys"],
    )
    .await?;
    cli_ok(&cluster, &["set-number-sync-standbys", "0"]).await?;
    let applied = wait_sync_names(&cluster, "node1", 1, &[app2.clone(), app3]).await?;
    check_settings_match(&cluster, &applied, 0).await?;

    cli_ok(&cluster, &["set-replication-quorum", "node3", "false"]).await?;
    let applied = wait_sync_names(&cluster, "node1", 1, &[app2]).await?;
    let doc = check_settings_match(&cluster, &applied, 0).await?;
    if node_setting(&doc, "node3", "replication_quorum") != Some(&Value::Bool(false)) {
        return Err(cluster
            .failure(format!(
                "show-settings --json does not show node3 out of the quorum:\n{doc:#}"
            ))
            .await);
    }
    eprintln!("node3 out of the quorum: node1 applies '{applied}'");

    cli_refused(
        &cluster,
        &["set-number-sync-standbys", "2"],
        Some(1),
        &["quorum standbys"],
    )
    .await?;

    cli_ok(&cluster, &["set-candidate-priority", "node2", "0"]).await?;
    cli_refused(
        &cluster,
        &["set-candidate-priority", "node3", "0"],
        Some(1),
        &["priority 0"],
    )
    .await?;
    let doc = settings(&cluster).await?;
    let priorities = (
        node_setting(&doc, "node2", "candidate_priority").and_then(Value::as_u64),
        node_setting(&doc, "node3", "candidate_priority").and_then(Value::as_u64),
    );
    if priorities != (Some(0), Some(50)) {
        return Err(cluster
            .failure(format!(
                "expected node2 at priority 0 and node3 unchanged at 50:\n{doc:#}"
            ))
            .await);
    }

    cli_refused(
        &cluster,
        &["set-candidate-priority", "nod2", "10"],
        Some(2),
        &["node2"],
    )
    .await?;
    // Nothing refused changed the applied setting.
    let applied_now = cluster
        .psql("node1", "SHOW synchronous_standby_names")
        .await?;
    if applied_now != applied {
        return Err(cluster
            .failure(format!(
                "synchronous_standby_names changed from '{applied}' to '{applied_now}'"
            ))
            .await);
    }
    Ok(())
}

/// `perform-switchover --to node3`: node3 becomes the primary, the old
/// primary a secondary, and the command shows the transitions as they happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_named_node() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let old = cluster.primary_name().await?;
    if old == "node3" {
        return Err(cluster.failure("node3 is already the primary").await);
    }

    let started = Instant::now();
    let stdout = cli_ok(
        &cluster,
        &["perform-switchover", "--to", "node3", "--timeout", "120s"],
    )
    .await?;
    let took = started.elapsed();
    let state = cluster.state().await?;
    let swapped = state
        .node("node3")
        .is_some_and(|n| n.reports_writable_primary())
        && state.node(&old).is_some_and(|n| n.settled_in(SECONDARY));
    let transitions = stdout
        .lines()
        .filter(|l| l.contains(" reported ") && l.contains(" goal "))
        .count();
    if !swapped || transitions == 0 || !stdout.contains("node3") {
        return Err(cluster
            .failure(format!(
                "perform-switchover --to node3 exited 0 but node3 is not primary with {old} \
                 secondary, or it printed no transition lines:\n{stdout}\n{}",
                state.table()
            ))
            .await);
    }
    cluster
        .wait_state(
            REJOIN_TIMEOUT,
            "node3 settled primary in a healthy group",
            |s| s.is_healthy(3) && s.node("node3").is_some_and(|n| n.settled_in(PRIMARY)),
        )
        .await?;
    if cluster.is_in_recovery("node3").await? || !cluster.is_in_recovery(&old).await? {
        return Err(cluster
            .failure("node3 should be out of recovery and the old primary in recovery")
            .await);
    }
    eprintln!(
        "SWITCHOVER {old} -> node3 took {:.3} s; {transitions} transition lines:\n{stdout}",
        took.as_secs_f64()
    );
    Ok(())
}

/// The replication slots `node` holds.
async fn slots_on(cluster: &Cluster, node: &str) -> Result<BTreeSet<String>> {
    let out = cluster
        .psql(
            node,
            "SELECT coalesce(string_agg(slot_name::text, ','), '') FROM pg_replication_slots",
        )
        .await?;
    Ok(out
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Every node keeps a slot for every other node — standbys too, so a new
/// primary already holds its standbys' WAL. `drop-node` removes a standby:
/// its keeper stops PostgreSQL and exits, the monitor forgets it, and the
/// others drop its slot. The primary cannot be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_everywhere_and_drop_node() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let id = |name: &str| -> Result<String> {
        let node = state
            .node(name)
            .with_context(|| format!("{name} in show-state"))?;
        Ok(format!("pgpilot_{}", node.node_id))
    };
    let (slot2, slot3) = (id("node2")?, id("node3")?);
    for (node, wanted) in [("node1", [&slot2, &slot3]), ("node2", [&slot3, &slot3])] {
        pgpilot_tests::poll_until(
            SHORT_TIMEOUT,
            &format!("{node} keeps {wanted:?}"),
            || async {
                let slots = slots_on(&cluster, node).await?;
                Ok(wanted.iter().all(|w| slots.contains(*w)).then_some(()))
            },
        )
        .await
        .map_err(|e| anyhow!("{e:#}\n{}", cluster.log_tails()))?;
    }

    cli_refused(
        &cluster,
        &["drop-node", "node1"],
        Some(1),
        &["perform-failover"],
    )
    .await?;
    let out = cli_ok(&cluster, &["drop-node", "node3"]).await?;
    assert!(out.contains("node3"), "{out}");
    let state = cluster.state().await?;
    assert!(
        state.node("node3").is_none(),
        "node3 still known:\n{}",
        state.table()
    );

    let pgdata3 = cluster.pgdata("node3")?;
    pgpilot_tests::poll_until(SHORT_TIMEOUT, "node3's PostgreSQL to stop", || async {
        Ok(postmaster_pid(&pgdata3)
            .is_none_or(|pid| !process::is_alive(pid))
            .then_some(()))
    })
    .await?;
    for node in ["node1", "node2"] {
        pgpilot_tests::poll_until(SHORT_TIMEOUT, &format!("{node} drops {slot3}"), || async {
            Ok((!slots_on(&cluster, node).await?.contains(&slot3)).then_some(()))
        })
        .await
        .map_err(|e| anyhow!("{e:#}\n{}", cluster.log_tails()))?;
    }
    Ok(())
}

/// `reinit` rebuilds a standby from a fresh clone of the primary: a file
/// left in its data directory is gone afterwards, and it is a streaming
/// secondary with the primary's rows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinit_rebuilds_a_standby() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    cluster
        .psql(
            "node1",
            "CREATE TABLE reinit_check(id int); INSERT INTO reinit_check VALUES (7)",
        )
        .await?;
    let marker = cluster.pgdata("node2")?.join("pgpilot-test-marker");
    std::fs::write(&marker, "left by the test").context("writing the marker")?;

    cli_refused(&cluster, &["reinit", "node1"], Some(1), &["primary"]).await?;
    let out = cli_ok(&cluster, &["reinit", "node2"]).await?;
    assert!(out.contains("done"), "{out}");
    assert!(
        !marker.exists(),
        "node2's data directory was not replaced by a clone"
    );
    let state = cluster.wait_healthy(SHORT_TIMEOUT).await?;
    assert!(state.node("node2").is_some_and(|n| n.settled_in(SECONDARY)));
    pgpilot_tests::poll_until(SHORT_TIMEOUT, "the row on the rebuilt node2", || async {
        let out = cluster
            .psql("node2", "SELECT count(*) FROM reinit_check")
            .await;
        Ok(out.ok().filter(|o| o.trim() == "1").map(|_| ()))
    })
    .await?;
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
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
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
                .any(|n| n.waiting_reason.contains("election stuck"))
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
            let events = events_json(&cluster).await?;
            Ok(events
                .iter()
                .any(|e| {
                    e["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("election stuck"))
                })
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
