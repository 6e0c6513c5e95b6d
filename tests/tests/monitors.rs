//! Several monitors over one monitor database (DESIGN §8): one holds the
//! lease on the background duties, every one serves keepers and
//! operators, and none of this changes a decision.
//!
//! - The monitor holding the lease is SIGKILLed under a writing client: the
//!   other takes the lease within the bound, no goal changes, and its
//!   health checks run (a standby killed afterwards is seen as bad).
//! - The monitor the keepers talk to is SIGKILLed together with the
//!   primary's host: the failover completes through the other monitor,
//!   nothing acknowledged is lost, and the event log never shows two
//!   writable goals in the group.
//! - Both monitors are hammered at once with switchovers and priority
//!   changes while the keepers heartbeat: the event log never shows two
//!   writable goals, and nothing acknowledged is lost.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sys::signal::Signal;
use pgpilot_proto::pb;
use pgpilot_tests::isolation::secs;
use pgpilot_tests::operator::{
    cli_json, cli_refused, conflicting_goals, events, expect_no_goal_change, last_event_id,
};
use pgpilot_tests::process;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, Writer,
};

const SECONDARY: ReplicationState = ReplicationState::Secondary;
const PRIMARY: ReplicationState = ReplicationState::Primary;

/// Three nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// The lease is taken over within lease_timeout (2 s) plus one
/// health_check_interval (0.5 s); generous for a loaded machine.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the group is watched for a spurious goal change after a
/// takeover: two node timeouts and a lease timeout.
const STEADY_WINDOW: Duration = Duration::from_secs(6);

async fn three_nodes_two_monitors() -> Result<Cluster> {
    let cluster = Cluster::start(ClusterOptions::nodes(3).monitors(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    Ok(cluster)
}

/// Wait until some monitor holds the lease; its index.
async fn wait_holder(cluster: &Cluster, what: &str) -> Result<usize> {
    cluster
        .wait_for(TAKEOVER_TIMEOUT, what, || async {
            cluster.lease_holder().await
        })
        .await
}

async fn expect_no_conflicting_goal(cluster: &Cluster) -> Result<()> {
    let all = events(cluster).await?;
    let conflicts = conflicting_goals(&all);
    if !conflicts.is_empty() {
        return Err(cluster
            .failure(format!(
                "the event log shows conflicting goals:\n{}",
                conflicts.join("\n")
            ))
            .await);
    }
    eprintln!(
        "event log: {} events, no two writable goals at once",
        all.len()
    );
    Ok(())
}

/// After `old`'s host was killed at `killed_at` (and `what` else
/// happened): wait until another node is the writable primary and the
/// writer writes on it, holding every acknowledged row; its name.
async fn await_failover(
    cluster: &Cluster,
    writer: &Writer,
    old: &str,
    killed_at: Instant,
    what: &str,
) -> Result<String> {
    let new = cluster
        .wait_for(
            Duration::from_secs(90),
            &format!("a standby to become the writable primary after {old} died and {what}"),
            || async move {
                let state = cluster.state().await?;
                Ok(state
                    .writable_primaries()
                    .into_iter()
                    .find(|n| n.name != old)
                    .map(|n| n.name.clone()))
            },
        )
        .await?;
    eprintln!(
        "FAILOVER ({what}): {new} promoted {:.2} s after the SIGKILL of {old}",
        secs(killed_at.elapsed())
    );
    writer
        .wait_ack_after(
            cluster,
            killed_at,
            Duration::from_secs(60),
            "a write acknowledged on the new primary",
        )
        .await?;
    cluster.expect_ids_on(&new, &writer.acked_ids()).await?;
    Ok(new)
}

/// `old`'s keeper started again: it rejoins as a secondary of `new`; then
/// every acknowledged row is on `new` and the goals never conflicted.
async fn rejoin_and_check(
    cluster: &Cluster,
    writer: Writer,
    old: &str,
    new: &str,
    killed_at: Instant,
) -> Result<()> {
    cluster.start_keeper(old)?;
    cluster
        .wait_state(
            HEALTHY_TIMEOUT,
            &format!("{old} to rejoin as a secondary of {new}"),
            |s| {
                s.node(old).is_some_and(|n| n.settled_in(SECONDARY))
                    && s.node(new).is_some_and(|n| n.settled_in(PRIMARY))
            },
        )
        .await?;
    let report = writer.stop().await;
    report.expect_all_on(cluster, new).await?;
    if let Some(outage) = report.outage_around(killed_at) {
        eprintln!("WRITE OUTAGE: {:.2} s", secs(outage.gap()));
    }
    expect_no_conflicting_goal(cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lease_holder_dies_and_the_other_monitor_takes_over_without_a_failover() -> Result<()> {
    let cluster = three_nodes_two_monitors().await?;
    let primary = cluster.primary_name().await?;
    let writer = Writer::warm(&cluster).await?;
    let holder = wait_holder(&cluster, "a monitor to hold the lease").await?;
    let other = 1 - holder;
    let baseline = last_event_id(&events(&cluster).await?);

    let killed_at = cluster.kill_monitor_at(holder)?;
    let c = &cluster;
    cluster
        .wait_for(
            TAKEOVER_TIMEOUT,
            &format!("monitor {other} to take the lease over from the killed monitor {holder}"),
            || async move { Ok((c.lease_holder().await? == Some(other)).then_some(())) },
        )
        .await?;
    eprintln!(
        "LEASE TAKEOVER: {:.2} s after the SIGKILL of the holder",
        secs(killed_at.elapsed())
    );

    // No spurious election while the duties change hands.
    primary_stays_settled(&cluster, &primary, baseline, "after the lease holder died").await?;

    // The new holder's health checks run: a standby's host killed now is
    // seen as bad (only the lease holder checks).
    let standby = cluster
        .node_names()
        .into_iter()
        .find(|n| *n != primary)
        .expect("three nodes");
    cluster.kill_node_hard(&standby)?;
    cluster
        .wait_state(
            TAKEOVER_TIMEOUT,
            &format!("the health check of monitor {other} to find {standby} bad"),
            |s| s.node(&standby).is_some_and(|n| n.health == "bad"),
        )
        .await?;

    // The killed monitor comes back as a second, idle monitor.
    cluster.restart_monitor_at(holder).await?;
    let state = cluster.state().await?;
    let holders = state.monitors.iter().filter(|m| m.holds_lease).count();
    if state.monitors.len() < 2 || holders != 1 {
        return Err(cluster
            .failure(format!(
                "after the restart, {} monitors listed and {holders} hold the lease; want 2 and 1",
                state.monitors.len()
            ))
            .await);
    }
    cluster.start_keeper(&standby)?;
    cluster
        .wait_state(HEALTHY_TIMEOUT, &format!("{standby} to rejoin"), |s| {
            s.node(&standby).is_some_and(|n| n.settled_in(SECONDARY))
        })
        .await?;
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &primary).await?;
    expect_no_conflicting_goal(&cluster).await?;
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_completes_through_the_other_monitor() -> Result<()> {
    let cluster = three_nodes_two_monitors().await?;
    let old = cluster.primary_name().await?;
    let writer = Writer::warm(&cluster).await?;
    // The keepers' first monitor is monitor 0: it dies with the primary.
    let killed_at = cluster.kill_node_hard(&old)?;
    cluster.kill_monitor_at(0)?;
    let new = await_failover(&cluster, &writer, &old, killed_at, "monitor 0 died").await?;
    cluster.restart_monitor_at(0).await?;
    rejoin_and_check(&cluster, writer, &old, &new, killed_at).await?;
    cluster.shutdown().await
}

/// `primary` stays the settled primary for a steady window, and no goal
/// changes after event `baseline`.
async fn primary_stays_settled(
    cluster: &Cluster,
    primary: &str,
    baseline: i64,
    after: &str,
) -> Result<()> {
    cluster
        .hold_state(
            STEADY_WINDOW,
            &format!("{primary} the settled primary {after}"),
            |s| s.node(primary).is_some_and(|n| n.settled_in(PRIMARY)),
        )
        .await?;
    expect_no_goal_change(cluster, baseline, after).await
}

/// The pause between two rounds of commands to one monitor: about three
/// rounds a second to each, so that switchovers start while others run.
const HAMMER_PACE: Duration = Duration::from_millis(300);

/// Switchovers and priority changes sent to both monitors at once.
async fn hammer(cluster: &Cluster, monitor: usize, until: Instant) -> Result<(u32, u32)> {
    let mut client = cluster.client_of(monitor)?;
    let (mut accepted, mut refused) = (0, 0);
    let mut round = 0u32;
    // The command rate is the scenario: rounds at a fixed pace.
    let mut pace = tokio::time::interval(HAMMER_PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        pace.tick().await;
        round += 1;
        let state = cluster.state().await?;
        let names: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        let target = &names[(round as usize + monitor) % names.len()];
        let failover = client
            .perform_failover(pb::PerformFailoverRequest {
                formation: "default".into(),
                group_id: 0,
                target_node: if round.is_multiple_of(2) {
                    target.clone()
                } else {
                    String::new()
                },
                allow_data_loss: false,
            })
            .await;
        let priority = client
            .set_node_settings(pb::SetNodeSettingsRequest {
                formation: "default".into(),
                node: target.clone(),
                candidate_priority: Some(50 + round % 40),
                replication_quorum: None,
                apply_delay_ms: None,
            })
            .await;
        for r in [failover.map(|_| ()), priority.map(|_| ())] {
            match r {
                Ok(()) => accepted += 1,
                Err(s) if s.code() == tonic::Code::FailedPrecondition => refused += 1,
                Err(s) => bail!("monitor {monitor} answered {:?}: {}", s.code(), s.message()),
            }
        }
    }
    Ok((accepted, refused))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_monitors_hammered_never_assign_conflicting_goals() -> Result<()> {
    let cluster = three_nodes_two_monitors().await?;
    let writer = Writer::warm(&cluster).await?;
    let until = Instant::now() + Duration::from_secs(40);
    let (a, b) = tokio::join!(hammer(&cluster, 0, until), hammer(&cluster, 1, until));
    let ((a_ok, a_no), (b_ok, b_no)) = (a?, b?);
    eprintln!("hammer: monitor 0 accepted {a_ok} refused {a_no}; monitor 1 accepted {b_ok} refused {b_no}");
    let state = cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = state
        .writable_primaries()
        .first()
        .map(|n| n.name.clone())
        .expect("a healthy group has a primary");
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &primary).await?;
    expect_no_conflicting_goal(&cluster).await?;
    cluster.shutdown().await
}

/// The monitor database fails over to its synchronous standby in steady
/// state: the monitors reconnect through their multi-host URL, a setting
/// acknowledged before is still there, and no group fails over because
/// of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_database_fails_over_in_steady_state() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3).monitors(2).monitor_db_standby()).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let writer = Writer::warm(&cluster).await?;
    let standby = cluster
        .node_names()
        .into_iter()
        .find(|n| *n != primary)
        .expect("three nodes");
    // Acknowledged by the monitor just before its database fails over.
    let mut client = cluster.client_of(0)?;
    client
        .set_node_settings(pb::SetNodeSettingsRequest {
            formation: "default".into(),
            node: standby.clone(),
            candidate_priority: Some(77),
            replication_quorum: None,
            apply_delay_ms: None,
        })
        .await?;
    let baseline = last_event_id(&events(&cluster).await?);

    // 1. Steady state.
    let stopped_at = cluster.fail_over_monitor_db().await?;
    let c = &cluster;
    cluster
        .wait_for(
            TAKEOVER_TIMEOUT,
            "both monitors to answer from the promoted monitor database with a lease holder",
            || async move {
                for i in 0..2 {
                    let mut client = c.client_of(i)?;
                    if client
                        .get_formation_state(pb::GetFormationStateRequest {
                            formation: "default".into(),
                        })
                        .await
                        .is_err()
                    {
                        return Ok(None);
                    }
                }
                Ok(c.lease_holder().await?.map(|_| ()))
            },
        )
        .await?;
    eprintln!(
        "MONITOR DATABASE FAILOVER: monitors answer again {:.2} s after its primary stopped",
        secs(stopped_at.elapsed())
    );
    let state = cluster.state().await?;
    let kept = state.node(&standby).map(|n| n.candidate_priority);
    if kept != Some(77) {
        return Err(cluster.failure(format!("{standby}'s candidate priority is {kept:?} after the database failover, want 77 (acknowledged before)")).await);
    }
    primary_stays_settled(
        &cluster,
        &primary,
        baseline,
        "after the monitor database failed over",
    )
    .await?;
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &primary).await?;
    expect_no_conflicting_goal(&cluster).await?;
    cluster.shutdown().await
}

/// The monitor database fails over right after the primary's host died:
/// the election finishes on the promoted database, nothing acknowledged
/// is lost, and the goals never conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_database_fails_over_during_an_election() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3).monitors(2).monitor_db_standby()).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let old = cluster.primary_name().await?;
    let writer = Writer::warm(&cluster).await?;
    let killed_at = cluster.kill_node_hard(&old)?;
    cluster.fail_over_monitor_db().await?;
    let what = "the monitor database failed over";
    let new = await_failover(&cluster, &writer, &old, killed_at, what).await?;
    rejoin_and_check(&cluster, writer, &old, &new, killed_at).await?;
    cluster.shutdown().await
}

/// The lease on a real monitor database, driven through the store as two
/// monitors would: one holder at a time, a token that grows only when the
/// lease changes hands, a duty's write refused with a stale token, the
/// lease let go at once by a clean stop, and retention under the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lease_has_one_holder_and_fences_a_stale_one() -> Result<()> {
    use pgpilot_monitor::core::lease::Renewal;
    use pgpilot_monitor::fsm::Health;
    use pgpilot_monitor::store::{MachineSettings, Store};
    let cluster = Cluster::start(ClusterOptions::nodes(1)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let store = Store::connect(
        &cluster.monitor_database_url(),
        MachineSettings {
            node_timeout: Duration::from_secs(2),
            fence_margin: Duration::from_millis(500),
            postgres_restart_timeout: Duration::from_secs(20),
        },
    )
    .await?;
    let ttl = Duration::from_millis(800);
    // The cluster's own monitor holds the lease: stopped cleanly, it lets
    // the lease go at once.
    let node_id = cluster.state().await?.nodes[0].node_id;
    cluster.stop_monitor_at(0).await?;
    let a = store.renew_lease("test-a", "http://a", ttl).await?;
    let b = store.renew_lease("test-b", "http://b", ttl).await?;
    let Renewal::Granted(token_a) = a else {
        bail!("test-a did not get the free lease: {a:?}");
    };
    if b != Renewal::HeldBy("test-a".into()) {
        bail!("test-b got {b:?} while test-a holds the lease");
    }
    if store.renew_lease("test-a", "http://a", ttl).await? != Renewal::Granted(token_a) {
        bail!("a renewal in time changed the token");
    }
    // test-a stops renewing; once its hold ran out test-b takes over with a
    // greater token, and test-a's writes are refused.
    let c = &store;
    let token_b = cluster
        .wait_for(
            TAKEOVER_TIMEOUT,
            "test-b to take the lease over",
            || async move {
                Ok(match c.renew_lease("test-b", "http://b", ttl).await? {
                    Renewal::Granted(t) => Some(t),
                    _ => None,
                })
            },
        )
        .await?;
    if token_b <= token_a {
        bail!("the token went from {token_a} to {token_b}: it must grow");
    }
    // Health results: one of the two differs from the stored one, so it is
    // written, and that write is refused.
    let stale = [
        store.set_health(node_id, Health::Good, token_a).await,
        store.set_health(node_id, Health::Bad, token_a).await,
    ];
    let refused = stale
        .iter()
        .filter(|r| matches!(r, Err(pgpilot_monitor::store::Error::LeaseLost(t)) if *t == token_a))
        .count();
    if refused != 1 {
        bail!("writes with test-a's stale token were not refused: {stale:?}");
    }
    store.set_health(node_id, Health::Good, token_b).await?;
    store.evaluate_all(token_b).await?;
    if store.renew_lease("test-a", "http://a", ttl).await? != Renewal::HeldBy("test-b".into()) {
        bail!("test-a took the lease back from a holder in time");
    }
    // Retention: an event back-dated past the retention is deleted, with
    // the holder's token only.
    cluster
        .psql_monitor_db("UPDATE event SET at = at - interval '100 days' WHERE event_id = (SELECT min(event_id) FROM event)")
        .await?;
    let keep = Duration::from_secs(90 * 24 * 3600);
    if store.prune_events(token_a, keep, 100).await.is_ok() {
        bail!("retention ran with a stale token");
    }
    let deleted = store.prune_events(token_b, keep, 100).await?;
    if deleted != 1 {
        bail!("retention deleted {deleted} events, want the 1 back-dated");
    }
    // A clean stop lets the lease go: the next claimant gets it at once.
    store.release_lease("test-b").await?;
    if !matches!(store.renew_lease("test-a", "http://a", ttl).await?, Renewal::Granted(t) if t > token_b)
    {
        bail!("test-a did not get the lease test-b let go");
    }
    let listed = store.monitors().await?;
    if listed.first().map(|m| m.id.as_str()) != Some("test-a") || !listed[0].holds_lease {
        bail!("the monitors list does not start with the holder test-a: {listed:?}");
    }
    cluster.shutdown().await
}

/// The CLI takes every monitor and moves on when one fails it: a frozen
/// monitor (accepts connections, answers nothing) is passed over for a
/// read; with the monitor database down each monitor answers that it
/// cannot serve, so a command is tried on both and the error names both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_moves_to_the_next_monitor() -> Result<()> {
    let cluster = three_nodes_two_monitors().await?;
    let urls = cluster.monitor_urls();
    let frozen = cluster
        .monitor_pid_at(0)
        .ok_or_else(|| anyhow::anyhow!("monitor 0 is not running"))? as i32;
    process::signal(frozen, Signal::SIGSTOP)?;
    let state = cli_json(&cluster, &["show-state", "--json"]).await;
    process::signal(frozen, Signal::SIGCONT)?;
    let state = state?;
    let answered = state["answered_by"].as_str().unwrap_or_default();
    let by = state["monitors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["monitor_id"] == answered)
        .and_then(|m| m["url"].as_str());
    if by != Some(urls[1].as_str()) {
        return Err(cluster
            .failure(format!(
                "show-state with monitor 0 frozen was answered by {answered} ({by:?}), not by {}",
                urls[1]
            ))
            .await);
    }

    cluster.stop_monitor_db().await?;
    let refused = cli_refused(
        &cluster,
        &["set-number-sync-standbys", "1"],
        Some(3),
        &["none of the 2 monitors answered", &urls[0], &urls[1]],
    )
    .await;
    cluster.start_monitor_db().await?;
    refused?;
    cluster.shutdown().await
}

/// `pgpilot-monitor ARGS` against monitor `at` only.
async fn cli_at(cluster: &Cluster, at: usize, args: &[&str]) -> Result<String> {
    let mut cmd = tokio::process::Command::from(cluster.tools().monitor_command());
    cmd.args(args)
        .args(["--monitor", &cluster.monitor_urls()[at]])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "pgpilot-monitor {} through monitor {at} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A goal committed through one monitor reaches a keeper streaming its
/// heartbeats to the other at once: that monitor hears of it from the
/// database and sends a wake-up on the stream. A node of a formation of its
/// own (no other node can change its group) heartbeats to monitor 0 over a
/// raw stream; it is dropped through monitor 1; monitor 0 must send a
/// wake-up though the node sent nothing since.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_goal_committed_through_one_monitor_wakes_a_stream_on_the_other() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(1).monitors(2)).await?;
    let result = wake_across_monitors(&cluster).await;
    if result.is_err() {
        eprintln!("{}", cluster.diagnostics().await);
    }
    cluster.shutdown().await?;
    result
}

async fn wake_across_monitors(cluster: &Cluster) -> Result<()> {
    cli_at(cluster, 1, &["create-formation", "wakes"]).await?;
    let channel = tonic::transport::Endpoint::from_shared(cluster.monitor_urls()[0].clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let mut client = pb::monitor_client::MonitorClient::new(channel);
    let timings = pb::KeeperTimings {
        heartbeat_interval_ms: 500,
        fence_timeout_ms: 1500,
        wal_sender_timeout_ms: 2000,
    };
    let registered = client
        .register_node(pb::RegisterNodeRequest {
            formation: "wakes".into(),
            name: "ghost".into(),
            host: "127.0.0.1".into(),
            port: u32::from(process::free_port()?),
            system_identifier: 7,
            candidate_priority: 50,
            replication_quorum: true,
            apply_delay_ms: 0,
            timings: Some(timings),
        })
        .await?
        .into_inner();
    let beat = |reported: i32| pb::NodeActiveRequest {
        node_id: registered.node_id,
        reported_state: reported,
        pg_running: true,
        system_identifier: 7,
        timings: Some(timings),
        wakes: true,
        ..Default::default()
    };
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    requests.send(beat(registered.goal_state)).await?;
    let mut replies = client
        .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Heartbeat until the node reports the goal it was given.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reported = registered.goal_state;
    loop {
        let reply = tokio::time::timeout_at(deadline.into(), replies.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("monitor 0 closed the stream"))?;
        if reply.wake {
            continue;
        }
        if reply.goal_state == reported {
            break;
        }
        reported = reply.goal_state;
        requests.send(beat(reported)).await?;
    }
    let goal = pb::NodeState::try_from(reported)?;
    eprintln!("ghost settled in {goal:?} through monitor 0");
    cli_at(
        cluster,
        1,
        &["drop-node", "--no-wait", "--formation", "wakes", "ghost"],
    )
    .await?;
    match tokio::time::timeout(Duration::from_secs(20), replies.message()).await {
        Ok(Ok(Some(reply))) if reply.wake => {
            eprintln!("monitor 0 woke the stream after the drop through monitor 1");
        }
        Ok(other) => bail!("expected a wake-up on the stream, got {other:?}"),
        Err(_) => bail!(
            "monitor 0 sent no wake-up within 20 s after the node was dropped through monitor 1"
        ),
    }
    // The woken keeper heartbeats and reads its new goal.
    requests.send(beat(reported)).await?;
    let reply = tokio::time::timeout(Duration::from_secs(20), replies.message())
        .await??
        .ok_or_else(|| anyhow::anyhow!("monitor 0 closed the stream"))?;
    if reply.goal_state != pb::NodeState::Dropped as i32 {
        bail!("the woken node was answered {reply:?}, expected goal dropped");
    }
    Ok(())
}
