//! Checks the three-node scenarios share: writes acknowledged and present,
//! synchronous_standby_names as applied and as reported, events.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use pgpilot_tests::operator::cli_json;
use pgpilot_tests::process::{self, postmaster_pid};
use pgpilot_tests::{Cluster, FormationState, FormationStateExt, WriteReport, Writer};
use serde_json::Value;

use crate::{FAILOVER_TIMEOUT, SHORT_TIMEOUT};

/// Wait until the writer has `count` acknowledged writes in all.
pub(crate) async fn wait_acks(
    cluster: &Cluster,
    writer: &Writer,
    count: usize,
    what: &str,
) -> Result<()> {
    cluster
        .wait_for(Duration::from_secs(60), what, || {
            let ready = writer.ack_count() >= count;
            async move { Ok(ready.then_some(())) }
        })
        .await
        .map_err(|err| err.context(format!("writer errors:\n{}", writer.recent_errors(15))))
}

pub(crate) async fn wait_ack_after(
    cluster: &Cluster,
    writer: &Writer,
    instant: Instant,
    what: &str,
) -> Result<()> {
    writer
        .wait_ack_after(cluster, instant, FAILOVER_TIMEOUT, what)
        .await
}

/// `pgpilot-monitor <args> --monitor <this cluster's monitor>`, any exit status.
pub(crate) async fn settings(cluster: &Cluster) -> Result<Value> {
    cli_json(cluster, &["show-settings", "--json"]).await
}

/// The `pgpilot_<id>` name a node streams as.
pub(crate) fn app_name(state: &FormationState, node: &str) -> Result<String> {
    let id = state
        .node(node)
        .map(|n| n.node_id)
        .ok_or_else(|| anyhow!("{node} is not in the formation:\n{}", state.table()))?;
    Ok(format!("pgpilot_{id}"))
}

/// `ANY n (a, b, …)` → (n, {a, b, …}).
pub(crate) fn parse_any(text: &str) -> Option<(u32, BTreeSet<String>)> {
    let rest = text.trim().strip_prefix("ANY ")?;
    let (n, list) = rest.split_once(' ')?;
    let list = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    let names = list
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect();
    Some((n.parse().ok()?, names))
}

/// Wait until `node` (the primary) runs with
/// `synchronous_standby_names = 'ANY n (names)'`; returns the value.
pub(crate) async fn wait_sync_names(
    cluster: &Cluster,
    node: &str,
    n: u32,
    names: &[String],
) -> Result<String> {
    let want: BTreeSet<String> = names.iter().cloned().collect();
    let want_ref = &want;
    cluster
        .wait_for(
            FAILOVER_TIMEOUT,
            &format!("{node}'s synchronous_standby_names to be ANY {n} {want:?}"),
            || async move {
                let value = cluster.psql(node, "SHOW synchronous_standby_names").await?;
                let parsed = parse_any(&value);
                if parsed.as_ref() == Some(&(n, want_ref.clone())) {
                    Ok(Some(value))
                } else {
                    Err(anyhow!(
                        "{node} runs with synchronous_standby_names = '{value}'"
                    ))
                }
            },
        )
        .await
}

/// The primary applies exactly what `show-settings --json` says it is told.
pub(crate) async fn check_settings_match(
    cluster: &Cluster,
    applied: &str,
    nss: u64,
) -> Result<Value> {
    let doc = settings(cluster).await?;
    if doc["synchronous_standby_names"].as_str() != Some(applied)
        || doc["number_sync_standbys"].as_u64() != Some(nss)
    {
        return Err(cluster
            .failure(format!(
                "show-settings --json disagrees with the primary (applies '{applied}', \
                 number_sync_standbys {nss} expected):\n{doc:#}"
            ))
            .await);
    }
    Ok(doc)
}

/// `nodes[].<field>` of `show-settings --json` for `node`.
pub(crate) fn node_setting<'a>(doc: &'a Value, node: &str, field: &str) -> Option<&'a Value> {
    doc["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"].as_str() == Some(node))
        .map(|n| &n[field])
}

/// Wait until a row with `id` in `pgpilot_writes` is readable on `node`.
pub(crate) async fn wait_row(cluster: &Cluster, node: &str, id: i64, what: &str) -> Result<()> {
    let sql = format!("SELECT count(*) FROM pgpilot_writes WHERE id = {id}");
    let sql = sql.as_str();
    cluster
        .wait_for(SHORT_TIMEOUT, what, || async move {
            Ok((cluster.psql(node, sql).await? == "1").then_some(()))
        })
        .await
}

/// Invariant 2: every acknowledged id is on `node`.
pub(crate) async fn check_no_loss(
    cluster: &Cluster,
    node: &str,
    ids: &[i64],
    when: &str,
) -> Result<()> {
    cluster
        .expect_ids_on(node, ids)
        .await
        .with_context(|| when.to_string())
}

pub(crate) async fn check_report(
    cluster: &Cluster,
    report: &WriteReport,
    node: &str,
    when: &str,
) -> Result<()> {
    check_no_loss(cluster, node, &report.acked_ids(), when).await
}

/// The pid of `node`'s WAL receiver (a child of its postmaster whose
/// process title says `walreceiver`).
pub(crate) fn walreceiver_pid(cluster: &Cluster, node: &str) -> Result<Option<i32>> {
    Ok(postmaster_pid(&cluster.pgdata(node)?).and_then(process::walreceiver_of))
}

pub(crate) async fn primary_is(cluster: &Cluster, expected: &str) -> Result<()> {
    let primary = cluster.primary_name().await?;
    if primary != expected {
        return Err(cluster
            .failure(format!(
                "expected {expected} to be the first primary, found {primary}"
            ))
            .await);
    }
    Ok(())
}

pub(crate) use pgpilot_tests::process::Frozen;
