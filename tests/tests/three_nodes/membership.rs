//! Members joining and leaving: replication slots on every node, dropping
//! a node, rebuilding a standby from scratch.

use std::collections::BTreeSet;

use anyhow::{anyhow, Context, Result};
use pgpilot_tests::operator::{cli_ok, cli_refused};
use pgpilot_tests::process::{self, postmaster_pid};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt};

use crate::{HEALTHY_TIMEOUT, SECONDARY, SHORT_TIMEOUT};

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
