//! The keeper's `before_promotion` hook on real PostgreSQL: every test
//! cluster's keepers run one that refuses while `hooks/refuse-<node>`
//! exists. A refusing candidate is passed over for the next one (a
//! switchover under a writing client, nothing lost); a lone candidate that
//! refuses is not promoted, its keeper asks the hook again, and it is
//! promoted once the hook accepts.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::Duration;

use anyhow::Result;
use pgpilot_tests::{
    operator, Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState,
    WritableProbe, Writer,
};

/// The hook's answers naming `node` and `answer` ("refused", "accepted").
fn answers(cluster: &Cluster, node: &str, answer: &str) -> usize {
    let prefix = format!("{node} {answer}");
    cluster
        .promotion_answers()
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_candidate_is_passed_over() -> Result<()> {
    let opts = ClusterOptions {
        candidate_priorities: vec![50, 90, 50],
        ..ClusterOptions::nodes(3)
    };
    let cluster = Cluster::start(opts).await?;
    cluster.wait_healthy(Duration::from_secs(120)).await?;
    let old = cluster.primary_name().await?;
    // node2 has the highest priority: without its refusal it would win.
    let (refusing, next) = ("node2", if old == "node3" { "node1" } else { "node3" });
    if old == refusing {
        return Err(cluster
            .failure(format!("{refusing} became the first primary"))
            .await);
    }
    cluster.refuse_promotion(refusing, true)?;
    let writer = Writer::warm(&cluster).await?;
    let probe = WritableProbe::of_cluster(&cluster)?;

    operator::cli_ok(&cluster, &["perform-failover", "--timeout", "120s"]).await?;
    cluster.wait_vip(next, Duration::from_secs(60)).await?;
    cluster
        .wait_state(
            Duration::from_secs(120),
            &format!("{next} settled primary, {old} and {refusing} secondaries"),
            |s| {
                s.node(next)
                    .is_some_and(|n| n.settled_in(ReplicationState::Primary))
                    && [old.as_str(), refusing].iter().all(|name| {
                        s.node(name)
                            .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
                    })
            },
        )
        .await?;
    if answers(&cluster, refusing, "refused") == 0 || answers(&cluster, next, "accepted") != 1 {
        return Err(cluster
            .failure(format!(
                "expected {refusing} to refuse and {next} to accept once; the hooks said:\n{}",
                cluster.promotion_answers().join("\n")
            ))
            .await);
    }
    let events = operator::events(&cluster).await?;
    let refused = events
        .iter()
        .any(|e| e["kind"] == "promotion_refused" && e["node_name"] == refusing);
    if !refused {
        return Err(cluster
            .failure(format!(
                "no promotion_refused event for {refusing}:\n{events:#?}"
            ))
            .await);
    }
    let report = writer.stop().await;
    report.expect_all_on(&cluster, next).await?;
    probe.stop().await.expect_one_writer(&cluster).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_candidate_that_refuses_is_asked_again() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy_pair().await?;
    let old = cluster.primary_name().await?;
    let standby = cluster.other_node(&old)?;
    let writer = Writer::warm(&cluster).await?;
    cluster.refuse_promotion(&standby, true)?;

    cluster.kill_node_hard(&old)?;
    // Refused, then asked again (the keeper waits 5 s between answers).
    cluster
        .wait_for(
            Duration::from_secs(90),
            &format!("{standby}'s hook to refuse its promotion twice"),
            || {
                let n = answers(&cluster, &standby, "refused");
                async move { Ok((n >= 2).then_some(())) }
            },
        )
        .await?;
    cluster
        .wait_state(
            Duration::from_secs(30),
            "show-state to say the hook refused",
            |s| {
                s.nodes.iter().any(|n| {
                    n.waiting_kinds.iter().any(|k| k == "promotion_refused")
                        && n.waiting_reason.contains("hook")
                })
            },
        )
        .await?;
    if !cluster.is_in_recovery(&standby).await? {
        return Err(cluster
            .failure(format!("{standby} was promoted although its hook refused"))
            .await);
    }
    cluster.refuse_promotion(&standby, false)?;
    cluster
        .wait_writable_primary(
            &standby,
            Duration::from_secs(60),
            &format!("{standby} to be promoted once its hook accepts"),
        )
        .await?;
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &standby).await?;
    Ok(())
}
