//! Network partitions cut with the harness's fault proxies: every node's
//! PostgreSQL sits behind an ingress proxy (its keeper advertises the
//! proxy's port, so the monitor's health checks, the standbys' streams and
//! clients on the network pass through it) and every keeper's link to the
//! monitor behind another. Cutting a node's two proxies cuts it off from
//! the monitor, its standbys and network clients; a client on its own host
//! (`Cluster::local_uri`) still reaches it.
//!
//! - The primary cut off from everything, in synchronous and in
//!   asynchronous replication, with a writer on the primary's own host: it
//!   fences itself (stops PostgreSQL) before the standby is promoted, never
//!   two nodes accept writes, and once healed it rejoins as a standby. The
//!   writes it acknowledged after the cut are counted: in asynchronous mode
//!   they are lost, and the fence bound is what limits them.
//! - The standby cut off: the primary goes on taking writes (it goes
//!   `wait_primary`, synchronous replication off) and the standby catches
//!   up once healed.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_tests::isolation::{
    await_new_primary, isolate, reconnect, secs, start_writers, ASYNC_LAG_ALLOWANCE, FENCE_BOUND,
};
use pgpilot_tests::operator::{event_lines, events, expect_explained_goal_changes, last_event_id};
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, WritableProbe,
    Writer, WriterOptions,
};

const PRIMARY: ReplicationState = ReplicationState::Primary;
const SECONDARY: ReplicationState = ReplicationState::Secondary;
const WAIT_PRIMARY: ReplicationState = ReplicationState::WaitPrimary;

/// Two nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// The monitor promotes the standby of an isolated primary (about 5 s with
/// the default timeouts; generous for a loaded machine).
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The group settles again after a partition heals (a rewind or a clone).
const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether the keeper of `name` logged that it fenced.
fn keeper_fenced(cluster: &Cluster, name: &str) -> Result<bool> {
    let log = std::fs::read_to_string(cluster.keeper_log(name)?)?;
    Ok(log.contains("fenced: PostgreSQL stopped"))
}

/// `SHOW synchronous_standby_names` on `node`.
async fn sync_names(cluster: &Cluster, node: &str) -> Result<String> {
    cluster.psql(node, "SHOW synchronous_standby_names").await
}

/// The primary is cut off from the monitor and its standby (and network
/// clients) while a writer on its own host goes on writing. Whatever the
/// replication mode: it fences itself within [`FENCE_BOUND`], the standby is
/// promoted only after that, the probe never sees two writable nodes, every
/// write acknowledged through the network is on the new primary, and once
/// the partition heals the old primary rejoins as a standby.
///
/// Synchronous (`ANY 1`): no write acknowledged without the warning is
/// lost; the host's writer, which cancels a commit stuck waiting for the
/// standby, is told "committed locally" until the fence stops PostgreSQL,
/// and those few commits are lost. Asynchronous (the standby has
/// `replication_quorum = false`): the writes the isolated primary
/// acknowledged after the cut are lost, and there are no more than the
/// fence bound lets through.
async fn isolated_primary(synchronous: bool) -> Result<()> {
    let mode = if synchronous {
        "synchronous"
    } else {
        "asynchronous"
    };
    let mut opts = ClusterOptions::nodes(2)
        .monitor_link_proxies()
        .ingress_proxies();
    if !synchronous {
        opts = opts.replication_quorums(&[true, false]);
    }
    let cluster = Cluster::start(opts).await?;
    // With only an asynchronous standby the primary stays in wait_primary
    // (synchronous replication off).
    let old = "node1".to_string();
    let new = cluster.other_node(&old)?;
    let primary_state = if synchronous { PRIMARY } else { WAIT_PRIMARY };
    cluster
        .wait_state(
            HEALTHY_TIMEOUT,
            &format!("{old} settled in {primary_state} and {new} in secondary"),
            |s| {
                s.node(&old).is_some_and(|n| n.settled_in(primary_state))
                    && s.node(&new).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;
    let names = sync_names(&cluster, &old).await?;
    if names.is_empty() == synchronous {
        return Err(cluster
            .failure(format!(
                "{old} should run {mode} replication, but its synchronous_standby_names is {names:?}"
            ))
            .await);
    }

    let (network, local) = start_writers(&cluster, &old).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;
    let baseline = last_event_id(&events(&cluster).await?);

    let cut_at = isolate(&cluster, &old)?;
    eprintln!("{mode}: cut {old} off from the monitor, {new} and network clients");
    let promoted_seen =
        await_new_primary(&cluster, &network, &new, &old, PROMOTION_TIMEOUT).await?;
    let fenced = keeper_fenced(&cluster, &old)?;
    let healed_at = Instant::now();
    reconnect(&cluster, &old)?;

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
    let network = network.stop().await;
    let local = local.stop().await;
    let probe = probe.stop().await;
    eprintln!("{probe}");

    // Never two writable nodes; the old one stopped before the new one
    // took writes.
    probe.expect_one_writer(&cluster).await?;
    let old_last = probe.last_writable(&old);
    let new_first = probe.first_writable_after(&new, cut_at);
    let since_cut = |t: Option<Instant>| t.map(|t| secs(t.saturating_duration_since(cut_at)));
    if !fenced || old_last.is_none() || new_first.is_none() || old_last >= new_first {
        return Err(cluster
            .failure(format!(
                "{old} should fence before {new} is promoted: {old}'s keeper logged its fence: \
                 {fenced}; {old} last seen writable {:?} s after the cut, {new} first seen \
                 writable {:?} s after it\n{probe}",
                since_cut(old_last),
                since_cut(new_first)
            ))
            .await);
    }

    // What the isolated primary acknowledged after the cut, and when the
    // last of it was.
    let after_cut: Vec<_> = local.acks.iter().filter(|a| a.at > cut_at).collect();
    let last_after_cut = after_cut.last().map(|a| a.at.duration_since(cut_at));
    let local_only = local.local_only();
    let present = |ids: Vec<i64>| {
        let c = &cluster;
        let new = new.clone();
        async move { c.missing_ids(&new, &ids).await }
    };
    let lost_after_cut = present(after_cut.iter().map(|a| a.id).collect()).await?;
    let lost_local_only = present(local_only.iter().map(|a| a.id).collect()).await?;
    eprintln!(
        "{mode}: {old} fenced; last write acknowledged on it {:?} s after the cut ({} \
         acknowledged after the cut, {} of them only \"committed locally\"; {} of those \
         after-cut writes are not on {new}); last seen writable {:.3} s after the cut; \
         {new} writable {:.3} s after the cut; healed {:.1} s after the cut",
        last_after_cut.map(secs),
        after_cut.len(),
        after_cut.iter().filter(|a| a.local_only).count(),
        lost_after_cut.len(),
        since_cut(old_last).unwrap_or(-1.0),
        since_cut(new_first).unwrap_or(-1.0),
        secs(healed_at.duration_since(cut_at)),
    );
    if last_after_cut.is_some_and(|d| d > FENCE_BOUND) {
        return Err(cluster
            .failure(format!(
                "{old} acknowledged a write {:.3} s after it was cut off, past the fence \
                 bound of {FENCE_BOUND:?}",
                last_after_cut.map(secs).unwrap_or_default()
            ))
            .await);
    }

    if synchronous {
        // Nothing acknowledged without the warning is lost, by either
        // writer; the "committed locally" ones need not be there.
        network.expect_all_on(&cluster, &new).await?;
        local.expect_all_on(&cluster, &new).await?;
        eprintln!(
            "synchronous: 0 acknowledged writes lost; {} \"committed locally\" writes, {} \
             of them not on {new}",
            local_only.len(),
            lost_local_only.len()
        );
    } else {
        // Lost writes are those the isolated primary took after the cut
        // (and at most the replication lag before it).
        let lost_before: Vec<i64> = {
            let early = cut_at.checked_sub(ASYNC_LAG_ALLOWANCE).unwrap_or(cut_at);
            let mut ids = network.acked_before(early);
            ids.extend(local.acked_before(early));
            cluster.missing_ids(&new, &ids).await?
        };
        if !lost_before.is_empty() {
            return Err(cluster
                .failure(format!(
                    "writes acknowledged more than {ASYNC_LAG_ALLOWANCE:?} before the cut \
                     should be on {new}; missing: {lost_before:?}"
                ))
                .await);
        }
        eprintln!(
            "asynchronous: {} writes acknowledged by the isolated {old} after the cut are \
             lost (at {:.0} writes/s)",
            lost_after_cut.len(),
            1.0 / pgpilot_tests::writer::WRITE_INTERVAL.as_secs_f64()
        );
    }

    // The rejoined old primary is a standby holding the new primary's rows.
    if !cluster.is_in_recovery(&old).await? {
        return Err(cluster
            .failure(format!("{old} rejoined but is not in recovery"))
            .await);
    }
    let after_promotion: Vec<i64> = network
        .acks
        .iter()
        .filter(|a| a.at > promoted_seen)
        .map(|a| a.id)
        .collect();
    let c = &cluster;
    let old_ref = old.as_str();
    cluster
        .wait_for(
            REJOIN_TIMEOUT,
            &format!("{old} (now a standby) to hold the writes made on {new}"),
            || {
                let ids = after_promotion.clone();
                async move { Ok(c.missing_ids(old_ref, &ids).await?.is_empty().then_some(())) }
            },
        )
        .await?;
    let changes = expect_explained_goal_changes(&cluster, baseline, "the partition").await?;
    eprintln!("goal changes:\n{}", event_lines(&changes));
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_fences_before_promotion_synchronous() -> Result<()> {
    isolated_primary(true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_primary_fences_before_promotion_asynchronous() -> Result<()> {
    isolated_primary(false).await
}

/// The standby is cut off from the monitor and from the primary. In a
/// two-node group the primary's ingress proxy carries only the standby's
/// stream and the monitor's health checks of the primary, so it is cut as
/// well; the primary's keeper still reaches the monitor, which therefore
/// sees the primary healthy. The writer reaches the primary on its own
/// port. The primary must go on taking writes: the monitor sends it to
/// `wait_primary` (synchronous replication off) once the standby is
/// unhealthy, and writes resume while the standby is still cut off. No
/// failover, no fence; once healed the standby catches up and holds every
/// acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_cut_off_primary_keeps_writing() -> Result<()> {
    let cluster = Cluster::start(
        ClusterOptions::nodes(2)
            .monitor_link_proxies()
            .ingress_proxies(),
    )
    .await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;
    let writer = Writer::start_warm(
        &cluster,
        &cluster.multi_host_uri(),
        WriterOptions::default(),
    )
    .await?;
    let probe = WritableProbe::of_cluster(&cluster)?;
    let baseline = last_event_id(&events(&cluster).await?);

    let cut_at = isolate(&cluster, &standby)?;
    cluster.ingress(&primary)?.blackhole();
    eprintln!("cut {standby} off from the monitor and from {primary}");
    cluster
        .wait_state(
            PROMOTION_TIMEOUT,
            &format!("{primary} to settle in wait_primary while {standby} is cut off"),
            |s| s.node(&primary).is_some_and(|n| n.settled_in(WAIT_PRIMARY)),
        )
        .await?;
    let wait_primary_at = Instant::now();
    writer
        .wait_ack_after(
            &cluster,
            wait_primary_at,
            PROMOTION_TIMEOUT,
            "writes to go on on the primary while the standby is cut off",
        )
        .await?;
    let healed_at = Instant::now();
    reconnect(&cluster, &standby)?;
    cluster.ingress(&primary)?.heal();

    cluster.wait_healthy(REJOIN_TIMEOUT).await?;
    let report = writer.stop().await;
    let probe = probe.stop().await;
    let pause = report.longest_gap_after(cut_at).unwrap_or(Duration::MAX);
    eprintln!(
        "{primary} in wait_primary {:.1} s after the cut; longest pause between \
         acknowledged writes {:.3} s; healed {:.1} s after the cut; {} writes acknowledged",
        secs(wait_primary_at.duration_since(cut_at)),
        secs(pause),
        secs(healed_at.duration_since(cut_at)),
        report.acked_ids().len()
    );
    probe.expect_one_writer(&cluster).await?;
    if cluster.primary_name().await? != primary
        || keeper_fenced(&cluster, &primary)?
        || probe.first_writable_after(&standby, cut_at).is_some()
    {
        return Err(cluster
            .failure(format!(
                "{primary} should stay the primary, unfenced, and {standby} never take \
                 writes\n{probe}"
            ))
            .await);
    }
    let changes = expect_explained_goal_changes(&cluster, baseline, "the partition").await?;
    let demoted = changes.iter().any(|e| {
        e["node_name"] == primary.as_str()
            && !matches!(e["goal_to"].as_str(), Some("primary" | "wait_primary"))
    });
    if demoted {
        return Err(cluster
            .failure(format!(
                "{primary}'s goal should only move between primary and wait_primary:\n{}",
                event_lines(&changes)
            ))
            .await);
    }
    report.expect_all_on(&cluster, &primary).await?;
    let ids = report.acked_ids();
    let c = &cluster;
    let standby_ref = standby.as_str();
    cluster
        .wait_for(
            REJOIN_TIMEOUT,
            &format!("{standby} to catch up with every acknowledged write"),
            || {
                let ids = ids.clone();
                async move {
                    Ok(c.missing_ids(standby_ref, &ids)
                        .await?
                        .is_empty()
                        .then_some(()))
                }
            },
        )
        .await?;
    eprintln!("goal changes:\n{}", event_lines(&changes));
    cluster.shutdown().await
}
