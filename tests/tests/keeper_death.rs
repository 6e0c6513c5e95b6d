//! A primary never outlives its keeper as a writer (DESIGN §5, invariant
//! 7): the fence guard the keeper starts beside itself fences PostgreSQL
//! when the keeper is dead, and adopts PostgreSQL across a planned keeper
//! restart.
//!
//! - The primary's keeper is SIGKILLed, then the node is cut off from the
//!   monitor, its standby and network clients (both fault proxies black-
//!   holed), with writers on the network and on the primary's own host: its
//!   PostgreSQL stops taking writes within the fence bound, measured from
//!   the cut, the standby is promoted, never two nodes take writes, the
//!   asynchronous writes lost are counted, and once healed and with its
//!   keeper started again the old primary rejoins as a standby.
//! - The primary's keeper is stopped alone (SIGUSR1) and started again, then
//!   killed (SIGKILL) and started again, under a writing client: the same
//!   postmaster and the same guard go on, no goal changes, the writes go on;
//!   then the guard is killed and its keeper starts a new one. The write
//!   outage is measured by `pgpilot-bench keeper-restart`.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_tests::isolation::{
    await_new_primary, isolate, reconnect, secs, start_writers, ASYNC_LAG_ALLOWANCE, FENCE_BOUND,
};
use pgpilot_tests::operator::{event_lines, events, goal_changes_after, last_event_id};
use pgpilot_tests::process::postmaster_pid;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, WritableProbe,
    Writer,
};

const SECONDARY: ReplicationState = ReplicationState::Secondary;
const WAIT_PRIMARY: ReplicationState = ReplicationState::WaitPrimary;

/// Two nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// The monitor promotes the standby of an isolated primary.
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The group settles again after the partition heals.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// A guard starts within moments of its keeper's start.
const GUARD_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause in acknowledged writes a keeper restart may cause
/// here (generous for a loaded machine; `pgpilot-bench keeper-restart`
/// measures it: none is expected, PostgreSQL keeps running).
const RESTART_PAUSE_LIMIT: Duration = Duration::from_secs(5);

/// Wait until `name` has a fence guard; returns its pid.
async fn wait_guard(cluster: &Cluster, name: &str) -> Result<i32> {
    cluster
        .wait_for(
            GUARD_TIMEOUT,
            &format!("a fence guard to watch {name}"),
            || {
                let pids = cluster.fence_guards(name);
                async move { Ok(pids?.first().copied()) }
            },
        )
        .await
}

/// The primary's keeper is SIGKILLed, then the node is cut off from
/// everything, with an asynchronous standby (the primary in
/// `wait_primary`). Without a guard its PostgreSQL would go on taking
/// writes beside the promoted standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_keeper_isolated_primary_still_fences() -> Result<()> {
    let cluster = Cluster::start(
        ClusterOptions::nodes(2)
            .monitor_link_proxies()
            .ingress_proxies()
            .replication_quorums(&[true, false]),
    )
    .await?;
    let old = "node1".to_string();
    let new = cluster.other_node(&old)?;
    cluster
        .wait_state(
            HEALTHY_TIMEOUT,
            &format!("{old} settled in wait_primary and {new} in secondary"),
            |s| {
                s.node(&old).is_some_and(|n| n.settled_in(WAIT_PRIMARY))
                    && s.node(&new).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;
    eprintln!("fence guards of {old}: {:?}", cluster.fence_guards(&old)?);

    let (network, local) = start_writers(&cluster, &old).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;
    let baseline = last_event_id(&events(&cluster).await?);

    let killed_at = cluster.kill_keeper(&old)?;
    let cut_at = isolate(&cluster, &old)?;
    eprintln!(
        "killed {old}'s keeper, then cut {old} off {:.3} s later",
        secs(cut_at.duration_since(killed_at))
    );
    await_new_primary(&cluster, &network, &new, &old, PROMOTION_TIMEOUT).await?;
    let old_pgdata = cluster.pgdata(&old)?;
    let old_stopped =
        postmaster_pid(&old_pgdata).is_none_or(|pid| !pgpilot_tests::process::is_alive(pid));
    let local_report = local.stop().await;
    let probe_report = probe.stop().await;
    eprintln!("{probe_report}");

    // Never two writable nodes; the old one stopped before the new one
    // took writes, within the fence bound.
    probe_report.expect_one_writer(&cluster).await?;
    let since_cut = |t: Option<Instant>| t.map(|t| secs(t.saturating_duration_since(cut_at)));
    let old_last = probe_report.last_writable(&old);
    let new_first = probe_report.first_writable_after(&new, cut_at);
    let after_cut: Vec<_> = local_report.acks.iter().filter(|a| a.at > cut_at).collect();
    let last_after_cut = after_cut.last().map(|a| a.at.duration_since(cut_at));
    eprintln!(
        "{old}'s PostgreSQL stopped: {old_stopped}; last write acknowledged on {old} {:?} s \
         after the cut ({} after the cut); {old} last seen writable {:?} s after the cut; {new} \
         first writable {:?} s after it",
        last_after_cut.map(secs),
        after_cut.len(),
        since_cut(old_last),
        since_cut(new_first),
    );
    let too_late = |d: Option<Duration>| d.is_some_and(|d| d > FENCE_BOUND);
    if !old_stopped
        || too_late(last_after_cut)
        || too_late(old_last.map(|t| t.saturating_duration_since(cut_at)))
        || old_last.is_none()
        || new_first.is_none()
        || old_last >= new_first
    {
        return Err(cluster
            .failure(format!(
                "with its keeper dead, {old} should stop taking writes within {FENCE_BOUND:?} \
                 of the cut and before {new} is promoted: PostgreSQL stopped: {old_stopped}; \
                 last acknowledged write {:?} s after the cut; last seen writable {:?} s after \
                 it; {new} first writable {:?} s after it\n{probe_report}",
                last_after_cut.map(secs),
                since_cut(old_last),
                since_cut(new_first)
            ))
            .await);
    }

    // Asynchronous: writes acknowledged well before the cut are on the new
    // primary; those the isolated primary took after it are lost, and
    // counted.
    let early = cut_at.checked_sub(ASYNC_LAG_ALLOWANCE).unwrap_or(cut_at);
    let mut before = local_report.acked_before(early);
    let healed_at = Instant::now();
    reconnect(&cluster, &old)?;
    cluster.start_keeper(&old)?;
    cluster
        .wait_state(
            REJOIN_TIMEOUT,
            &format!("{new} a settled primary and {old} back as a settled secondary"),
            |s| {
                s.node(&new)
                    .is_some_and(|n| n.reports_writable_primary() && n.reported() == n.goal())
                    && s.node(&old).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;
    let network_report = network.stop().await;
    before.extend(network_report.acked_before(early));
    let lost_before = cluster.missing_ids(&new, &before).await?;
    if !lost_before.is_empty() {
        return Err(cluster
            .failure(format!(
                "writes acknowledged more than {ASYNC_LAG_ALLOWANCE:?} before the cut should be \
                 on {new}; missing: {lost_before:?}"
            ))
            .await);
    }
    let lost = cluster
        .missing_ids(&new, &after_cut.iter().map(|a| a.id).collect::<Vec<_>>())
        .await?;
    eprintln!(
        "asynchronous: {} writes acknowledged by the isolated {old} after the cut are lost; \
         healed {:.1} s after the cut",
        lost.len(),
        secs(healed_at.duration_since(cut_at))
    );
    if !cluster.is_in_recovery(&old).await? {
        return Err(cluster
            .failure(format!("{old} rejoined but is not in recovery"))
            .await);
    }
    network_report.expect_all_on(&cluster, &new).await?;
    let changes = goal_changes_after(&cluster, baseline).await?;
    eprintln!("goal changes:\n{}", event_lines(&changes));
    cluster.shutdown().await
}

/// How a keeper is ended before its restart.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Stopped,
    Killed,
}

/// The primary's keeper is stopped and started again, then killed and
/// started again, under a writing client: PostgreSQL is not restarted, the
/// guard that outlived the keeper is adopted, no goal changes, and the
/// writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_keeper_restart_keeps_postgres_and_its_guard() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let pgdata = cluster.pgdata(&primary)?;
    let guard = wait_guard(&cluster, &primary).await?;
    let postmaster = postmaster_pid(&pgdata);
    let writer = Writer::warm(&cluster).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;
    let baseline = last_event_id(&events(&cluster).await?);

    for ending in [Ending::Stopped, Ending::Killed] {
        let ended_at = match ending {
            Ending::Stopped => cluster.stop_keeper(&primary).await?,
            Ending::Killed => cluster.kill_keeper(&primary)?,
        };
        let guards = cluster.fence_guards(&primary)?;
        if guards != [guard] {
            return Err(cluster
                .failure(format!(
                    "{ending:?}: the fence guard {guard} should outlive {primary}'s keeper; \
                     guards now: {guards:?}"
                ))
                .await);
        }
        cluster.start_keeper(&primary)?;
        let log = cluster.keeper_log(&primary)?;
        let connected = |text: &str| {
            text.rsplit("=== harness: starting the keeper ===")
                .next()
                .is_some_and(|tail| tail.contains("fence guard connected"))
        };
        cluster
            .wait_for(
                GUARD_TIMEOUT,
                &format!("{primary}'s restarted keeper to connect to its fence guard"),
                || {
                    let done = std::fs::read_to_string(&log).is_ok_and(|t| connected(&t));
                    async move { Ok(done.then_some(())) }
                },
            )
            .await?;
        writer
            .wait_ack_after(
                &cluster,
                Instant::now(),
                HEALTHY_TIMEOUT,
                "writes to go on after the keeper restart",
            )
            .await?;
        eprintln!(
            "{ending:?}: keeper of {primary} back {:.3} s after it was ended",
            secs(ended_at.elapsed())
        );
        if postmaster_pid(&pgdata) != postmaster || cluster.fence_guards(&primary)? != [guard] {
            return Err(cluster
                .failure(format!(
                    "{ending:?}: PostgreSQL (pid {postmaster:?}) and the guard ({guard}) should \
                     be the same after the keeper restart: postmaster {:?}, guards {:?}",
                    postmaster_pid(&pgdata),
                    cluster.fence_guards(&primary)?
                ))
                .await);
        }
    }
    // A guard that dies while its keeper lives is replaced at once.
    pgpilot_tests::process::signal(guard, nix::sys::signal::Signal::SIGKILL)?;
    cluster
        .wait_for(
            GUARD_TIMEOUT,
            &format!("{primary}'s keeper to start a new fence guard after {guard} was killed"),
            || {
                let pids = cluster.fence_guards(&primary);
                async move { Ok(pids?.into_iter().find(|&p| p != guard)) }
            },
        )
        .await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let report = writer.stop().await;
    let probe = probe.stop().await;
    probe.expect_one_writer(&cluster).await?;
    let changes = goal_changes_after(&cluster, baseline).await?;
    let pause = report.longest_gap_after(report.started).unwrap_or_default();
    eprintln!(
        "longest pause between acknowledged writes: {:.3} s; {} writes",
        secs(pause),
        report.acked_ids().len()
    );
    if !changes.is_empty()
        || cluster.primary_name().await? != primary
        || pause > RESTART_PAUSE_LIMIT
    {
        return Err(cluster
            .failure(format!(
                "keeper restarts of {primary} should change no goal and pause writes less than \
                 {RESTART_PAUSE_LIMIT:?} (longest pause {:.3} s); goal changes:\n{}",
                secs(pause),
                event_lines(&changes)
            ))
            .await);
    }
    report.expect_all_on(&cluster, &primary).await?;
    cluster.shutdown().await
}
