//! `pgpilot-bench cascade`: a cascading standby (the leaf, streaming from
//! another standby) whose upstream's host dies: the time until the leaf
//! streams from the primary, and until it replayed every write
//! acknowledged by then. One 3-node cluster; each run kills the middle
//! standby, measures, starts its keeper again and waits until the leaf
//! streams from it again.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_tests::cascade::{wait_caught_up, wait_streams_from, TIMEOUT};
use pgpilot_tests::operator::cli_ok;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, Writer,
};

use super::print_row;

pub async fn run(runs: usize) -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(3)).await?;
    cluster.wait_healthy(Duration::from_secs(180)).await?;
    let primary = cluster.primary_name().await?;
    let mut standbys: Vec<String> = cluster
        .node_names()
        .into_iter()
        .filter(|n| *n != primary)
        .collect();
    let (middle, leaf) = (standbys.remove(0), standbys.remove(0));
    cli_ok(
        &cluster,
        &["set-upstream", &leaf, &middle, "--timeout", "120s"],
    )
    .await?;
    wait_streams_from(&cluster, &leaf, &middle).await?;
    let writer = Writer::warm(&cluster).await?;
    let (mut repointed, mut caught_up) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let killed = cluster.kill_node_hard(&middle)?;
        wait_streams_from(&cluster, &leaf, &primary).await?;
        repointed.push(killed.elapsed());
        wait_caught_up(&cluster, &writer, &leaf, killed).await?;
        caught_up.push(killed.elapsed());
        eprintln!(
            "run {run}: the leaf streams from the primary after {:.2} s, caught up after {:.2} s",
            repointed[run - 1].as_secs_f64(),
            caught_up[run - 1].as_secs_f64()
        );
        cluster.start_keeper(&middle)?;
        cluster
            .wait_state(TIMEOUT, &format!("{middle} to be a secondary again"), |s| {
                s.node(&middle)
                    .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
            })
            .await?;
        wait_streams_from(&cluster, &leaf, &middle).await?;
        wait_caught_up(&cluster, &writer, &leaf, Instant::now()).await?;
    }
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &primary).await?;
    println!(
        "{:<52} {:>4} {:>8} {:>8} {:>8} {:>8}",
        "cascading standby whose upstream died (s)", "runs", "min", "median", "p95", "max"
    );
    let secs = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).collect();
    print_row("streams from the primary", secs(&repointed), &[]);
    print_row(
        "replayed every write acknowledged by then",
        secs(&caught_up),
        &[],
    );
    cluster.shutdown().await?;
    Ok(())
}
