//! Switchover to a named node.

use std::time::Instant;

use anyhow::Result;
use pgpilot_tests::operator::cli_ok;
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt};

use crate::{HEALTHY_TIMEOUT, PRIMARY, REJOIN_TIMEOUT, SECONDARY, SHORT_TIMEOUT};

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
    cluster.wait_vip("node3", SHORT_TIMEOUT).await?;
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
