//! What every view derives from the monitor's formation state: state
//! names, what a client connecting to a node gets and how far it lags,
//! bytes for people, a node looked up by name, and the multi-host URI.

use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;
use serde::{Deserialize, Serialize};

use super::error::CliError;

/// A replication state's name; "?" for one this client does not know.
pub(super) fn state_name(v: i32) -> String {
    S::from_wire(v)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// What a client gets when it connects to a node, judged from the node's
/// last heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Connection {
    /// A writable primary state (single, wait_primary, primary,
    /// join_primary, apply_settings) with PostgreSQL running.
    ReadWrite,
    /// A standby state with PostgreSQL running: hot standby, reads only.
    ReadOnly,
    /// PostgreSQL is not running, or the node is between roles (draining,
    /// demoted, init, …) and serves no client.
    Down,
    /// The keeper silent past node_timeout and the monitor's own check
    /// failing: whatever the node last reported, nothing says it serves.
    Unreachable,
}

impl Connection {
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::ReadWrite => "read-write",
            Connection::ReadOnly => "read-only",
            Connection::Down => "down",
            Connection::Unreachable => "unreachable",
        }
    }
}

/// Reported states in which a node is a standby running in recovery.
fn is_standby_state(s: S) -> bool {
    s.is_following()
        || matches!(
            s,
            S::WaitStandby
                | S::FastForward
                | S::StopReplication
                | S::WaitMaintenance
                | S::PrepareMaintenance
                | S::Maintenance
        )
}

/// The node's [`Connection`], from its reported state and PostgreSQL running.
pub fn connection(n: &pb::NodeStatus) -> Connection {
    if n.unreachable {
        return Connection::Unreachable;
    }
    match S::from_wire(n.reported_state) {
        Ok(s) if n.pg_running && s.is_writable_primary() => Connection::ReadWrite,
        Ok(s) if n.pg_running && is_standby_state(s) => Connection::ReadOnly,
        _ => Connection::Down,
    }
}

/// Bytes a serving standby is behind the LSN its group's primary last
/// reported; `None` for the primary itself, for nodes that serve no reads,
/// and while the group has no serving primary.
pub fn lag_bytes(s: &pb::FormationState, n: &pb::NodeStatus) -> Option<u64> {
    if connection(n) != Connection::ReadOnly {
        return None;
    }
    let primary = s.nodes.iter().find(|p| {
        p.group_id == n.group_id && p.node_id != n.node_id && connection(p) == Connection::ReadWrite
    })?;
    Some(primary.lsn.saturating_sub(n.lsn))
}

/// Bytes for people: exact below 1 KiB, else one decimal in KiB/MiB/GiB/TiB.
pub use pgpilot_proto::work::bytes as format_bytes;

/// The node named `name`, or a usage error naming the closest known names.
pub fn find_node<'a>(
    s: &'a pb::FormationState,
    name: &str,
) -> Result<&'a pb::NodeStatus, CliError> {
    s.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
        let known: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        unknown_node(&s.formation, name, &known)
    })
}

/// "No node named X", with the closest of the `known` names.
pub fn unknown_node(formation: &str, name: &str, known: &[&str]) -> CliError {
    CliError::Usage(crate::names::unknown_node(formation, name, known))
}

/// The multi-host connection string that always reaches the writable primary.
/// With `read_only`, the variant for reads: libpq prefers a standby and
/// falls back to the primary (`target_session_attrs=prefer-standby`).
pub fn multi_host_uri(s: &pb::FormationState, user: &str, read_only: bool) -> String {
    let hosts: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{}:{}", n.host, n.port))
        .collect();
    let attrs = if read_only {
        "prefer-standby"
    } else {
        "read-write"
    };
    format!(
        "postgresql://{user}@{}/postgres?target_session_attrs={attrs}",
        hosts.join(",")
    )
}
