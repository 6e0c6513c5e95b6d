//! Observability end to end: the keeper's HTTP endpoints before and after a
//! failover, a real Prometheus scraping a real cluster and answering every
//! panel query of the shipped Grafana dashboards, `show-events` after a
//! failover, and no secret in any log.
//!
//! Needs `cargo build --workspace` first, PostgreSQL's server programs, and
//! for the Prometheus test Debian's `prometheus` (scripts/setup.sh installs
//! it).

use std::time::Duration;

use anyhow::{anyhow, Result};
use pgpilot_tests::http::{self, HttpReply};
use pgpilot_tests::operator::cli_ok;
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

const SECONDARY: ReplicationState = ReplicationState::Secondary;

fn observed_cluster(nodes: usize) -> ClusterOptions {
    ClusterOptions {
        http: true,
        ..ClusterOptions::nodes(nodes)
    }
}

/// GET a keeper endpoint.
async fn keeper_get(cluster: &Cluster, node: &str, path: &str) -> Result<HttpReply> {
    http::get(cluster.keeper_http_port(node)?, path).await
}

/// Wait until every (node, path, status) holds at once.
async fn wait_endpoints(cluster: &Cluster, what: &str, expect: &[(&str, &str, u16)]) -> Result<()> {
    cluster
        .wait_for(Duration::from_secs(60), what, || async move {
            let mut wrong = Vec::new();
            for (node, path, status) in expect {
                match keeper_get(cluster, node, path).await {
                    Ok(r) if r.status == *status => {}
                    Ok(r) => wrong.push(format!(
                        "{node} {path}: {} {} (want {status})",
                        r.status,
                        r.body.trim()
                    )),
                    Err(e) => wrong.push(format!("{node} {path}: {e:#}")),
                }
            }
            if wrong.is_empty() {
                Ok(Some(()))
            } else {
                Err(anyhow!("{}", wrong.join("; ")))
            }
        })
        .await
}

/// /health, /primary, /replica[?lag] on a healthy pair, then after a
/// planned failover: the roles swap; a bad lag is a 400 with one sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeper_http_endpoints_follow_a_failover() -> Result<()> {
    let cluster = Cluster::start(observed_cluster(2)).await?;
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;

    wait_endpoints(
        &cluster,
        &format!("{old} to answer as the primary and {new} as a replica"),
        &[
            (&old, "/health", 200),
            (&old, "/primary", 200),
            (&old, "/replica", 503),
            (&new, "/health", 200),
            (&new, "/primary", 503),
            (&new, "/replica", 200),
            (&new, "/replica?lag=16MB", 200),
            (&new, "/replica?lag=1048576", 200),
        ],
    )
    .await?;

    let body = keeper_get(&cluster, &old, "/primary").await?.body;
    let json: serde_json::Value = serde_json::from_str(&body)?;
    for key in ["state", "goal", "pg_running", "in_recovery", "lag_bytes"] {
        if json.get(key).is_none() {
            return Err(cluster
                .failure(format!("/primary body has no {key:?}: {body}"))
                .await);
        }
    }
    if json["pg_running"] != true || json["in_recovery"] != false {
        return Err(cluster
            .failure(format!("/primary body of {old}: {body}"))
            .await);
    }

    let bad = keeper_get(&cluster, &new, "/replica?lag=lots").await?;
    if bad.status != 400 || !bad.body.contains("lag") || bad.body.trim().contains('\n') {
        return Err(cluster
            .failure(format!(
                "/replica?lag=lots should be 400 with one sentence, got {} {:?}",
                bad.status, bad.body
            ))
            .await);
    }

    let metrics = keeper_get(&cluster, &old, "/metrics").await?;
    for needle in [
        "pgpilot_keeper_postgres_up 1",
        "# HELP pgpilot_keeper_postgres_up",
        "pgpilot_keeper_state{state=\"primary\"} 1",
    ] {
        if metrics.status != 200 || !metrics.body.contains(needle) {
            return Err(cluster
                .failure(format!(
                    "{old} /metrics ({}) lacks {needle:?}:\n{}",
                    metrics.status, metrics.body
                ))
                .await);
        }
    }

    cli_ok(&cluster, &["perform-failover"]).await?;
    cluster
        .wait_state(
            Duration::from_secs(90),
            &format!("{new} primary and {old} secondary after perform-failover"),
            |s| {
                s.node(&new).is_some_and(|n| n.reports_writable_primary())
                    && s.node(&old).is_some_and(|n| n.settled_in(SECONDARY))
            },
        )
        .await?;
    wait_endpoints(
        &cluster,
        &format!("{new} to answer as the primary and {old} as a replica after the failover"),
        &[
            (&new, "/primary", 200),
            (&new, "/replica", 503),
            (&old, "/primary", 503),
            (&old, "/replica", 200),
            (&old, "/replica?lag=16MB", 200),
            (&old, "/health", 200),
        ],
    )
    .await?;
    cluster.shutdown().await
}
