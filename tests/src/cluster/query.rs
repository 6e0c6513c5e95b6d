//! Asking the monitor and the nodes: the formation's state and events, the
//! operator CLI, SQL on a node.

use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_proto::pb::{FormationState, ListEventsRequest};

use crate::state::{events_table, FormationStateExt};

use super::Cluster;

/// Bound on one psql run.
const PSQL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one operator command (perform-failover waits up to its own --timeout).
const CLI_TIMEOUT: Duration = Duration::from_secs(300);

impl Cluster {
    /// The monitor's view of the formation (GetFormationState).
    pub async fn state(&self) -> Result<FormationState> {
        let reply = self
            .client()?
            .get_formation_state(self.state_request())
            .await
            .map_err(|status| {
                anyhow!(
                    "GetFormationState failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok(reply.into_inner())
    }

    /// The recent events of the formation, as a table.
    pub async fn events(&self, count: u32) -> Result<String> {
        let reply = self
            .client()?
            .list_events(ListEventsRequest {
                formation: self.formation.clone(),
                count,
            })
            .await
            .map_err(|status| {
                anyhow!(
                    "ListEvents failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok(events_table(&reply.into_inner().events))
    }

    /// The one node whose reported state is a writable-primary state.
    pub async fn primary_name(&self) -> Result<String> {
        let state = self.state().await?;
        let primaries = state.writable_primaries();
        match primaries.as_slice() {
            [one] => Ok(one.name.clone()),
            _ => bail!(
                "expected exactly one writable primary, found {}:\n{}",
                primaries.len(),
                state.table()
            ),
        }
    }

    /// Run `pgpilot-monitor <args>` and return its output (any exit status).
    pub async fn run_cli(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = tokio::process::Command::from(self.tools.monitor_command());
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        cmd.envs(self.cli_env()?);
        tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("pgpilot-monitor {args:?} did not finish within {CLI_TIMEOUT:?}"))?
            .with_context(|| format!("running pgpilot-monitor {args:?}"))
    }

    /// Run SQL on one node with psql (unaligned, tuples only) and return its
    /// trimmed output; an error carries psql's stderr.
    pub async fn psql(&self, node: &str, sql: &str) -> Result<String> {
        let port = self.node(node)?.port;
        let mut cmd = tokio::process::Command::new(self.tools.pg_program("psql"));
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .stdin(Stdio::null())
        .kill_on_drop(true);
        let output = tokio::time::timeout(PSQL_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("psql on {node} did not finish within {PSQL_TIMEOUT:?}: {sql}"))?
            .context("running psql")?;
        if !output.status.success() {
            bail!(
                "psql on {node} (port {port}) failed ({}): {}: {sql}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Whether `node`'s PostgreSQL is in recovery (a standby).
    pub async fn is_in_recovery(&self, node: &str) -> Result<bool> {
        Ok(self.psql(node, "SELECT pg_is_in_recovery()").await? == "t")
    }

    /// Those of `ids` that are not in `pgpilot_writes` on `node`.
    pub async fn missing_ids(&self, node: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let text = self.psql(node, "SELECT id FROM pgpilot_writes").await?;
        let present = text
            .lines()
            .map(|line| line.trim().parse::<i64>())
            .collect::<Result<std::collections::HashSet<_>, _>>()
            .context("parsing ids from pgpilot_writes")?;
        Ok(crate::writer::missing_from(ids, &present))
    }

    /// Invariant 2: fail, with the cluster's state, unless every one of the
    /// acknowledged `ids` is in `pgpilot_writes` on `node`.
    pub async fn expect_ids_on(&self, node: &str, ids: &[i64]) -> Result<()> {
        let missing = self.missing_ids(node, ids).await?;
        if missing.is_empty() {
            return Ok(());
        }
        Err(self
            .failure(format!(
                "{} of {} acknowledged writes are missing on {node}: {:?}",
                missing.len(),
                ids.len(),
                &missing[..missing.len().min(20)]
            ))
            .await)
    }
}
