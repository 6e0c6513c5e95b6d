//! A cascading standby on real PostgreSQL: node3 (the leaf) is set to
//! stream from node2 (the middle standby), not the primary; the primary
//! moves the slot it keeps for the leaf as the leaf replays. The middle
//! one's host dies: the leaf is pointed at the primary and catches up by
//! itself; once the middle one is back, the leaf streams from it again.
//! The refusals of `set-upstream` come first.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::Instant;

use anyhow::Result;
use pgpilot_proto::lsn::{parse_lsn, slot_name};
use pgpilot_tests::cascade::{wait_caught_up, wait_streams_from, TIMEOUT};
use pgpilot_tests::operator::{cli_ok, cli_refused};
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, Writer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_re_points_when_its_upstream_dies_and_comes_back() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    cluster.wait_healthy(TIMEOUT).await?;
    let primary = cluster.primary_name().await?;
    let mut standbys: Vec<String> = cluster
        .node_names()
        .into_iter()
        .filter(|n| *n != primary)
        .collect();
    let (middle, leaf) = (standbys.remove(0), standbys.remove(0));

    for (args, words) in [
        (vec!["set-upstream", &leaf, &leaf], vec!["itself"]),
        (
            vec!["set-upstream", &leaf, &primary],
            vec!["is the primary"],
        ),
        (
            vec!["set-upstream", &primary, &middle],
            vec!["is the primary"],
        ),
        (
            vec!["set-upstream", &leaf, "nosuchnode"],
            vec!["nosuchnode"],
        ),
    ] {
        cli_refused(&cluster, &args, None, &words).await?;
    }
    cli_ok(
        &cluster,
        &["set-upstream", &leaf, &middle, "--timeout", "120s"],
    )
    .await?;
    wait_streams_from(&cluster, &leaf, &middle).await?;
    let state = cluster.state().await?;
    let shown = state.node(&leaf).map(|n| {
        (
            n.upstream.clone(),
            n.streams_from.clone(),
            n.candidate_priority,
            n.replication_quorum,
        )
    });
    if shown != Some((middle.clone(), middle.clone(), 0, false)) {
        return Err(cluster
            .failure(format!("show-state says of {leaf}: {shown:?}"))
            .await);
    }
    cli_refused(
        &cluster,
        &["set-candidate-priority", &leaf, "50"],
        None,
        &["cascading", "--primary"],
    )
    .await?;
    let text = cli_ok(&cluster, &["show-state"]).await?;
    if !text.contains(&format!("cascading: {leaf} streams from {middle}")) {
        return Err(cluster.failure(format!("show-state said:\n{text}")).await);
    }

    // The leaf replays the primary's writes through the middle one, and the
    // primary moves the slot it keeps for the leaf.
    let writer = Writer::warm(&cluster).await?;
    let started = Instant::now();
    wait_caught_up(&cluster, &writer, &leaf, started).await?;
    let leaf_id = state.node(&leaf).map(|n| n.node_id).unwrap_or_default();
    let slot_sql = format!(
        "SELECT coalesce(restart_lsn::text, '') FROM pg_replication_slots WHERE slot_name = '{}'",
        slot_name(leaf_id)
    );
    let first = cluster.psql(&primary, &slot_sql).await?;
    let first = parse_lsn(first.trim()).unwrap_or(0);
    cluster
        .wait_for(TIMEOUT, "the primary to move the leaf's slot", || {
            let sql = slot_sql.clone();
            let (cluster, primary) = (&cluster, &primary);
            async move {
                let now = cluster.psql(primary, &sql).await.unwrap_or_default();
                Ok(parse_lsn(now.trim())
                    .is_some_and(|l| l > first)
                    .then_some(()))
            }
        })
        .await?;

    // The middle one's host dies: the leaf follows the primary.
    let killed = cluster.kill_node_hard(&middle)?;
    wait_streams_from(&cluster, &leaf, &primary).await?;
    wait_caught_up(&cluster, &writer, &leaf, killed).await?;
    println!(
        "leaf re-pointed to the primary and caught up {:.2} s after its upstream died",
        killed.elapsed().as_secs_f64()
    );

    // Back: the leaf streams from it again.
    cluster.start_keeper(&middle)?;
    cluster
        .wait_state(TIMEOUT, &format!("{middle} to be a secondary again"), |s| {
            s.node(&middle)
                .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
        })
        .await?;
    wait_streams_from(&cluster, &leaf, &middle).await?;
    let back = Instant::now();
    wait_caught_up(&cluster, &writer, &leaf, back).await?;

    // And to the primary again on request.
    cli_ok(
        &cluster,
        &["set-upstream", &leaf, "--primary", "--timeout", "120s"],
    )
    .await?;
    wait_streams_from(&cluster, &leaf, &primary).await?;
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &primary).await?;
    Ok(())
}
