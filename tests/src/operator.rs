//! Running `pgpilot-monitor` operator commands against a test cluster, with
//! failures that show the command's output and the cluster's state.

use std::process::Output;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::Cluster;

/// Exit status, stdout and stderr of a finished command.
pub fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `pgpilot-monitor <args> --monitor <this cluster's monitor>`, any exit status.
pub async fn cli(cluster: &Cluster, args: &[&str]) -> Result<Output> {
    let mut all = args.to_vec();
    let monitors = cluster.monitor_urls().join(",");
    all.extend(["--monitor", monitors.as_str()]);
    cluster.run_cli(&all).await
}

/// An operator command that must succeed; returns its stdout.
pub async fn cli_ok(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let output = cli(cluster, args).await?;
    if !output.status.success() {
        return Err(cluster
            .failure(format!(
                "pgpilot-monitor {} failed:\n{}",
                args.join(" "),
                describe(&output)
            ))
            .await);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// An operator command printing JSON (`show-settings --json`, …).
pub async fn cli_json(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let stdout = cli_ok(cluster, args).await?;
    serde_json::from_str(&stdout).with_context(|| {
        format!(
            "parsing the JSON of pgpilot-monitor {}: {stdout}",
            args.join(" ")
        )
    })
}

/// An operator command that must be refused with exit `code` (any non-zero
/// code when `None`) and a sentence on stderr containing every `needle`.
pub async fn cli_refused(
    cluster: &Cluster,
    args: &[&str],
    code: Option<i32>,
    needles: &[&str],
) -> Result<String> {
    let output = cli(cluster, args).await?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let code_ok = match code {
        Some(code) => output.status.code() == Some(code),
        None => !output.status.success() && output.status.code().is_some(),
    };
    if !code_ok || !needles.iter().all(|n| stderr.contains(n)) {
        return Err(cluster
            .failure(format!(
                "expected pgpilot-monitor {} to be refused with exit {} and a message \
                 containing {needles:?}\n{}",
                args.join(" "),
                code.map_or("non-zero".to_string(), |c| c.to_string()),
                describe(&output)
            ))
            .await);
    }
    eprintln!(
        "refused as expected ({}): pgpilot-monitor {}: {stderr}",
        output.status,
        args.join(" ")
    );
    Ok(stderr)
}

/// The formation's events (oldest first), from `show-events --json`.
pub async fn events(cluster: &Cluster) -> Result<Vec<Value>> {
    let doc = cli_json(cluster, &["show-events", "--json", "--count", "10000"]).await?;
    let mut list = doc
        .as_array()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("show-events --json is not an array:\n{doc:#}"))?;
    list.sort_by_key(|e| e["event_id"].as_i64().unwrap_or(0));
    Ok(list)
}

/// The newest event's id (0 without events): a baseline for
/// [`goal_changes_after`].
pub fn last_event_id(events: &[Value]) -> i64 {
    events
        .iter()
        .filter_map(|e| e["event_id"].as_i64())
        .max()
        .unwrap_or(0)
}

/// The events after `baseline` that changed a node's goal.
pub async fn goal_changes_after(cluster: &Cluster, baseline: i64) -> Result<Vec<Value>> {
    Ok(events(cluster)
        .await?
        .into_iter()
        .filter(|e| e["event_id"].as_i64().unwrap_or(0) > baseline)
        .filter(|e| e["goal_from"] != e["goal_to"])
        .collect())
}

/// Fail if any node's goal changed in an event after `baseline`.
pub async fn expect_no_goal_change(cluster: &Cluster, baseline: i64, during: &str) -> Result<()> {
    let changes: Vec<String> = goal_changes_after(cluster, baseline)
        .await?
        .iter()
        .map(event_line)
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    Err(cluster
        .failure(format!(
            "no goal should change {during}, but the monitor recorded:\n{}",
            changes.join("\n")
        ))
        .await)
}

/// Goals under which a node takes writes.
const WRITABLE_GOALS: [&str; 5] = [
    "single",
    "wait_primary",
    "primary",
    "join_primary",
    "apply_settings",
];

/// Replay `events` (oldest first) per group: every moment at which two
/// nodes of one group held a goal under which they take writes, as a
/// sentence each (empty: the goals never conflicted).
pub fn conflicting_goals(events: &[Value]) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut goals: BTreeMap<(u64, String), String> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for e in events {
        let group = e["group_id"].as_u64().unwrap_or(0);
        let node = e["node_name"].as_str().unwrap_or("?").to_string();
        let goal = e["goal_to"].as_str().unwrap_or("?").to_string();
        goals.insert((group, node), goal);
        let writable: Vec<&str> = goals
            .iter()
            .filter(|((g, _), goal)| *g == group && WRITABLE_GOALS.contains(&goal.as_str()))
            .map(|((_, n), _)| n.as_str())
            .collect();
        if writable.len() > 1 {
            conflicts.push(format!(
                "after event {} ({}): {} all hold a writable goal",
                e["event_id"],
                event_line(e),
                writable.join(", ")
            ));
        }
    }
    conflicts
}

/// One event on one line: time, node, reported state, goal change, reason.
pub fn event_line(e: &Value) -> String {
    format!(
        "{} {} reported {}: goal {} -> {} ({})",
        e["at"].as_str().unwrap_or("?"),
        e["node_name"].as_str().unwrap_or("?"),
        e["reported_state"].as_str().unwrap_or("?"),
        e["goal_from"].as_str().unwrap_or("?"),
        e["goal_to"].as_str().unwrap_or("?"),
        e["reason"].as_str().unwrap_or("")
    )
}

/// Events one per line ([`event_line`]).
pub fn event_lines(events: &[Value]) -> String {
    events.iter().map(event_line).collect::<Vec<_>>().join("\n")
}

/// The goal changes after `baseline` (invariant 5 of the design): there is
/// at least one, and every one carries a reason. Returns them.
pub async fn expect_explained_goal_changes(
    cluster: &Cluster,
    baseline: i64,
    during: &str,
) -> Result<Vec<Value>> {
    let changes = goal_changes_after(cluster, baseline).await?;
    let unexplained: Vec<&Value> = changes
        .iter()
        .filter(|e| e["reason"].as_str().is_none_or(|r| r.trim().is_empty()))
        .collect();
    if changes.is_empty() || !unexplained.is_empty() {
        return Err(cluster
            .failure(format!(
                "every goal change of {during} should be an event with a reason; {} goal \
                 changes, without a reason:\n{}",
                changes.len(),
                unexplained
                    .iter()
                    .map(|e| event_line(e))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
            .await);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64, node: &str, goal: &str) -> Value {
        serde_json::json!({
            "event_id": id, "group_id": 0, "node_name": node,
            "goal_from": "secondary", "goal_to": goal, "reported_state": "secondary",
        })
    }

    #[test]
    fn two_writable_goals_at_once_are_found() {
        let handover = [
            ev(1, "node1", "single"),
            ev(2, "node1", "primary"),
            ev(3, "node1", "draining"),
            ev(4, "node2", "wait_primary"),
        ];
        assert!(conflicting_goals(&handover).is_empty());
        let split = [ev(1, "node1", "primary"), ev(2, "node2", "wait_primary")];
        let found = conflicting_goals(&split);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("node1, node2"), "{found:?}");
    }
}
