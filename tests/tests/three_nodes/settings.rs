//! Replication settings changed at run time reach `synchronous_standby_names`.

use anyhow::Result;
use pgpilot_tests::operator::{cli_ok, cli_refused};
use pgpilot_tests::{Cluster, ClusterOptions};
use serde_json::Value;

use crate::helpers::{
    app_name, check_settings_match, node_setting, primary_is, settings, wait_sync_names,
};
use crate::HEALTHY_TIMEOUT;

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
