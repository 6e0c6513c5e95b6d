//! Formation parameters (`set-parameter`, `reset-parameter`,
//! `show-parameters`) on real PostgreSQL: refusals before anything
//! changes, a reloadable setting on every node once the command returns, a
//! setting that needs a restart shown pending and applied by
//! `restart --all --pending-only`, a reset that gives each node its own
//! value back.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::Duration;

use anyhow::Result;
use pgpilot_tests::{operator, Cluster, ClusterOptions};

/// `SHOW name` on every node equals `value`.
async fn expect_everywhere(cluster: &Cluster, name: &str, value: &str) -> Result<()> {
    for node in cluster.node_names() {
        let shown = cluster.psql(&node, &format!("SHOW {name}")).await?;
        if shown.trim() != value {
            return Err(cluster
                .failure(format!(
                    "{node} runs with {name} = {shown}, expected {value}"
                ))
                .await);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_reach_every_node_and_a_pending_one_is_applied_by_a_restart() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;

    // Refused in one sentence, nothing stored.
    for (args, words) in [
        (
            vec!["set-parameter", "shared_bufers", "1GB"],
            vec!["not a setting of PostgreSQL"],
        ),
        (
            vec!["set-parameter", "primary_conninfo", "host=x"],
            vec!["cannot be set", "upstream"],
        ),
        (
            vec!["set-parameter", "work_mem", "lots"],
            vec!["not a valid value for work_mem"],
        ),
        (
            vec!["set-parameter", "wal_level", "minimal"],
            vec!["replica or logical"],
        ),
        (vec!["reset-parameter", "work_mem"], vec!["not set"]),
    ] {
        operator::cli_refused(&cluster, &args, None, &words).await?;
    }
    let none = operator::cli_ok(&cluster, &["show-parameters"]).await?;
    if !none.contains("no parameters set") {
        return Err(cluster
            .failure(format!("show-parameters said:\n{none}"))
            .await);
    }

    // A reloadable setting: on every node when the command returns.
    operator::cli_ok(
        &cluster,
        &["set-parameter", "work_mem", "16MB", "--timeout", "60s"],
    )
    .await?;
    expect_everywhere(&cluster, "work_mem", "16MB").await?;

    // One that needs a restart: pending on both nodes, then applied.
    let out = operator::cli_ok(
        &cluster,
        &[
            "set-parameter",
            "max_prepared_transactions",
            "9",
            "--timeout",
            "60s",
        ],
    )
    .await?;
    if !out.contains("needs a restart") {
        return Err(cluster
            .failure(format!("set-parameter of a restart setting said:\n{out}"))
            .await);
    }
    cluster
        .wait_state(
            Duration::from_secs(60),
            "max_prepared_transactions pending a restart on both nodes",
            |s| {
                s.nodes.len() == 2
                    && s.nodes.iter().all(|n| {
                        n.pending_restart
                            .iter()
                            .any(|p| p == "max_prepared_transactions")
                    })
            },
        )
        .await?;
    let json = operator::cli_json(&cluster, &["show-parameters", "--json"]).await?;
    if json["parameters"]["work_mem"] != "16MB"
        || json["parameters"]["max_prepared_transactions"] != "9"
        || json["version"].as_u64() != Some(2)
    {
        return Err(cluster
            .failure(format!("show-parameters --json:\n{json:#}"))
            .await);
    }
    operator::cli_ok(
        &cluster,
        &["restart", "--all", "--pending-only", "--timeout", "120s"],
    )
    .await?;
    expect_everywhere(&cluster, "max_prepared_transactions", "9").await?;

    // Setting names are case-insensitive: pg_settings spells it TimeZone.
    operator::cli_ok(
        &cluster,
        &["set-parameter", "timezone", "UTC", "--timeout", "60s"],
    )
    .await?;
    expect_everywhere(&cluster, "TimeZone", "UTC").await?;

    // A reset: each node's own value again.
    operator::cli_ok(
        &cluster,
        &["reset-parameter", "work_mem", "--timeout", "60s"],
    )
    .await?;
    expect_everywhere(&cluster, "work_mem", "4MB").await?;
    let events = operator::events(&cluster).await?;
    for kind in ["parameter_set", "parameter_reset"] {
        if !events.iter().any(|e| e["kind"] == kind) {
            return Err(cluster.failure(format!("no {kind} event")).await);
        }
    }
    cluster.shutdown().await
}

/// `reload`: a setting edited by hand in each node's postgresql.conf is
/// in force on every node once the command returns, with no restart and
/// no failover; the reload is an event naming the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_files_edited_by_hand_on_every_node() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let primary = cluster.primary_name().await?;
    expect_everywhere(&cluster, "log_min_duration_statement", "-1").await?;
    for node in cluster.node_names() {
        let conf = cluster.pgdata(&node)?.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("\nlog_min_duration_statement = 4321\n");
        std::fs::write(&conf, text)?;
    }
    let out = operator::cli_ok(&cluster, &["reload", "--timeout", "60s"]).await?;
    if !out.contains("reloaded by every node") {
        return Err(cluster.failure(format!("reload said:\n{out}")).await);
    }
    expect_everywhere(&cluster, "log_min_duration_statement", "4321ms").await?;
    if cluster.primary_name().await? != primary {
        return Err(cluster
            .failure("the primary changed during a reload".to_string())
            .await);
    }
    let events = operator::events(&cluster).await?;
    if !events.iter().any(|e| {
        e["kind"] == "reload_requested"
            && e["reason"].as_str().is_some_and(|d| d.contains("asked by"))
    }) {
        return Err(cluster
            .failure(format!("no reload_requested event:\n{events:#?}"))
            .await);
    }
    Ok(())
}
