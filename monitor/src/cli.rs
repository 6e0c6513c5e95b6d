//! Operator subcommands: talk gRPC to a running monitor and print for people
//! (tables) or scripts (`--json`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgpilot_proto::pb::{self, monitor_client::MonitorClient};
use pgpilot_proto::ReplicationState as S;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::fsm::format_lsn;

/// An operator command's failure, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Exit 1: the operation failed or timed out.
    #[error("{0}")]
    Failed(String),
    /// Exit 2: bad input.
    #[error("{0}")]
    Usage(String),
    /// Exit 3: the monitor cannot be reached.
    #[error("{0}")]
    Unreachable(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Unreachable(_) => 3,
        }
    }

    fn from_status(status: tonic::Status, monitor: &str) -> CliError {
        use tonic::Code;
        let msg = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::NotFound => CliError::Usage(msg),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
                if msg.contains("transport") || msg.contains("connect") || msg.contains("dns") =>
            {
                CliError::Unreachable(format!("the monitor at {monitor} is unreachable: {msg}"))
            }
            Code::Unavailable | Code::DeadlineExceeded => {
                CliError::Unreachable(format!("the monitor at {monitor} did not answer: {msg}"))
            }
            _ => CliError::Failed(msg),
        }
    }
}

pub struct Client {
    inner: MonitorClient<Channel>,
    url: String,
}

impl Client {
    pub async fn connect(url: &str) -> Result<Client, CliError> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| {
                CliError::Usage(format!(
                    "{url:?} is not a valid monitor URL ({e}): use e.g. http://127.0.0.1:7430"
                ))
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        let channel = endpoint.connect().await.map_err(|e| {
            CliError::Unreachable(format!(
                "the monitor at {url} is unreachable ({}): check that it runs and that --monitor / PGPILOT_MONITOR points at it",
                error_chain(&e)
            ))
        })?;
        Ok(Client {
            inner: MonitorClient::new(channel),
            url: url.to_string(),
        })
    }

    pub async fn state(&mut self, formation: &str) -> Result<pb::FormationState, CliError> {
        self.inner
            .get_formation_state(pb::GetFormationStateRequest {
                formation: formation.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| CliError::from_status(s, &self.url))
    }

    pub async fn events(
        &mut self,
        formation: &str,
        count: u32,
    ) -> Result<Vec<pb::Event>, CliError> {
        self.inner
            .list_events(pb::ListEventsRequest {
                formation: formation.to_string(),
                count,
            })
            .await
            .map(|r| r.into_inner().events)
            .map_err(|s| CliError::from_status(s, &self.url))
    }

    pub async fn perform_failover(
        &mut self,
        formation: &str,
        group: u32,
        target: Option<&str>,
    ) -> Result<String, CliError> {
        let request = pb::PerformFailoverRequest {
            formation: formation.to_string(),
            group_id: group,
            target_node: target.unwrap_or_default().to_string(),
        };
        let reply = self.inner.perform_failover(request).await;
        self.message(reply)
    }

    pub async fn set_number_sync_standbys(
        &mut self,
        formation: &str,
        value: u32,
    ) -> Result<String, CliError> {
        let request = pb::SetNumberSyncStandbysRequest {
            formation: formation.to_string(),
            number_sync_standbys: value,
        };
        let reply = self.inner.set_number_sync_standbys(request).await;
        self.message(reply)
    }

    pub async fn set_node_settings(
        &mut self,
        formation: &str,
        node: &str,
        candidate_priority: Option<u32>,
        replication_quorum: Option<bool>,
    ) -> Result<String, CliError> {
        let request = pb::SetNodeSettingsRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            candidate_priority,
            replication_quorum,
        };
        let reply = self.inner.set_node_settings(request).await;
        self.message(reply)
    }

    pub async fn set_maintenance(
        &mut self,
        formation: &str,
        node: &str,
        enabled: bool,
    ) -> Result<String, CliError> {
        let request = pb::SetMaintenanceRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            enabled,
        };
        let reply = self.inner.set_maintenance(request).await;
        self.message(reply)
    }

    pub async fn drop_node(
        &mut self,
        formation: &str,
        node: &str,
        force: bool,
    ) -> Result<String, CliError> {
        let request = pb::DropNodeRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            force,
        };
        let reply = self.inner.drop_node(request).await;
        self.message(reply)
    }

    fn message(
        &self,
        reply: Result<tonic::Response<pb::OperationReply>, tonic::Status>,
    ) -> Result<String, CliError> {
        reply
            .map(|r| r.into_inner().message)
            .map_err(|s| CliError::from_status(s, &self.url))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

fn state_name(v: i32) -> String {
    S::from_wire(v)
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `show-state --json`: the documented, stable shape scripts depend on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateJson {
    pub formation: String,
    pub number_sync_standbys: u32,
    pub nodes: Vec<NodeJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeJson {
    pub node_id: i64,
    pub name: String,
    pub group_id: u32,
    pub host: String,
    pub port: u32,
    pub timeline: u32,
    /// "X/Y" as PostgreSQL prints it.
    pub lsn: String,
    pub reported_state: String,
    pub goal_state: String,
    pub pg_running: bool,
    pub health: String,
    /// Milliseconds since the last heartbeat; null if none yet.
    pub heartbeat_age_ms: Option<i64>,
    pub candidate_priority: u32,
    pub replication_quorum: bool,
    pub waiting_reason: Option<String>,
}

impl From<&pb::FormationState> for StateJson {
    fn from(s: &pb::FormationState) -> Self {
        StateJson {
            formation: s.formation.clone(),
            number_sync_standbys: s.number_sync_standbys,
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeJson {
                    node_id: n.node_id,
                    name: n.name.clone(),
                    group_id: n.group_id,
                    host: n.host.clone(),
                    port: n.port,
                    timeline: n.timeline,
                    lsn: format_lsn(n.lsn),
                    reported_state: state_name(n.reported_state),
                    goal_state: state_name(n.goal_state),
                    pg_running: n.pg_running,
                    health: n.health.clone(),
                    heartbeat_age_ms: (n.heartbeat_age_ms >= 0).then_some(n.heartbeat_age_ms),
                    candidate_priority: n.candidate_priority,
                    replication_quorum: n.replication_quorum,
                    waiting_reason: (!n.waiting_reason.is_empty())
                        .then(|| n.waiting_reason.clone()),
                })
                .collect(),
        }
    }
}

/// The state table operators read.
pub fn state_table(s: &pb::FormationState) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "Node",
        "Host:Port",
        "TLI:LSN",
        "Reported",
        "Goal",
        "PostgreSQL",
        "Health",
        "Heartbeat",
    ]);
    for n in &s.nodes {
        let reported = state_name(n.reported_state);
        let goal = state_name(n.goal_state);
        table.add_row(vec![
            format!("{} ({})", n.name, n.node_id),
            format!("{}:{}", n.host, n.port),
            format!("{}:{}", n.timeline, format_lsn(n.lsn)),
            reported.clone(),
            if goal == reported {
                goal
            } else {
                format!("→ {goal}")
            },
            if n.pg_running {
                "running".into()
            } else {
                "down".into()
            },
            n.health.clone(),
            if n.heartbeat_age_ms < 0 {
                "never".into()
            } else {
                format!("{:.1}s ago", n.heartbeat_age_ms as f64 / 1000.0)
            },
        ]);
    }
    let mut out = format!(
        "formation {} (number_sync_standbys = {})\n{table}\n",
        s.formation, s.number_sync_standbys
    );
    let mut reasons: Vec<&str> = s
        .nodes
        .iter()
        .map(|n| n.waiting_reason.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    reasons.dedup();
    for r in reasons {
        out.push_str(&format!("waiting: {r}\n"));
    }
    out
}

/// `show-settings`: the formation's and every node's replication settings.
pub fn settings_table(s: &pb::FormationState) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "Node",
        "Candidate priority",
        "Replication quorum",
        "Streams as",
    ]);
    for n in &s.nodes {
        table.add_row(vec![
            n.name.clone(),
            n.candidate_priority.to_string(),
            n.replication_quorum.to_string(),
            format!("pgpilot_{}", n.node_id),
        ]);
    }
    let sync = if s.synchronous_standby_names.is_empty() {
        "'' (off)".to_string()
    } else {
        format!("'{}'", s.synchronous_standby_names)
    };
    format!(
        "formation {}\n  number_sync_standbys = {}\n  synchronous_standby_names = {sync}\n{table}\n",
        s.formation, s.number_sync_standbys
    )
}

/// The multi-host connection string that always reaches the writable primary.
pub fn multi_host_uri(s: &pb::FormationState, user: &str) -> String {
    let hosts: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{}:{}", n.host, n.port))
        .collect();
    format!(
        "postgresql://{user}@{}/postgres?target_session_attrs=read-write",
        hosts.join(",")
    )
}

pub fn events_table(events: &[pb::Event]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(vec![
        "Time",
        "Node",
        "Reported",
        "Goal change",
        "Reason",
    ]);
    for e in events {
        table.add_row(vec![
            e.at.clone(),
            e.node_name.clone(),
            state_name(e.reported_state),
            format!("{} → {}", state_name(e.goal_from), state_name(e.goal_to)),
            e.reason.clone(),
        ]);
    }
    table.to_string()
}

/// Whether node `n` has reached one of `states` (reported and goal).
pub fn settled(n: &pb::NodeStatus, states: &[S]) -> bool {
    states
        .iter()
        .any(|s| s.to_wire() == n.reported_state && s.to_wire() == n.goal_state)
}

/// Every node has reached its goal and a writable primary exists.
pub fn converged(state: &pb::FormationState) -> bool {
    state.nodes.iter().all(|n| n.reported_state == n.goal_state)
        && state
            .nodes
            .iter()
            .any(|n| settled(n, &[S::Single, S::WaitPrimary, S::Primary]))
}

/// Poll the formation until `done` holds, printing every state change of
/// every node as it happens; fail after `timeout` with the state table.
pub async fn wait_until(
    client: &mut Client,
    formation: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&pb::FormationState) -> bool,
) -> Result<(), CliError> {
    let started = Instant::now();
    let mut seen: HashMap<i64, (i32, i32)> = HashMap::new();
    loop {
        let state = client.state(formation).await?;
        for n in &state.nodes {
            let now = (n.reported_state, n.goal_state);
            if seen.insert(n.node_id, now) != Some(now) {
                println!(
                    "{:>8.1}s  {:<12} reported {:<18} goal {}",
                    started.elapsed().as_secs_f64(),
                    n.name,
                    state_name(n.reported_state),
                    state_name(n.goal_state)
                );
            }
        }
        if done(&state) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(CliError::Failed(format!(
                "{what} did not finish within {}:\n{}",
                humantime::format_duration(timeout),
                state_table(&state)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A hand-over finished: another node (the target, when named) is the
/// settled writable primary and the old primary has reached `old_ends`.
pub fn handed_over(
    state: &pb::FormationState,
    old: i64,
    target: Option<&str>,
    old_ends: S,
) -> bool {
    let new_primary = state.nodes.iter().any(|n| {
        n.node_id != old
            && target.is_none_or(|t| n.name == t)
            && settled(n, &[S::WaitPrimary, S::Primary])
    });
    let old_done = state
        .nodes
        .iter()
        .any(|n| n.node_id == old && settled(n, &[old_ends]));
    new_primary && old_done && converged(state)
}

/// Find the node currently holding the primary goal.
pub fn primary_of(state: &pb::FormationState, group: u32) -> Option<&pb::NodeStatus> {
    state.nodes.iter().find(|n| {
        n.group_id == group && S::from_wire(n.goal_state).is_ok_and(|s| s.is_writable_primary())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::FormationState {
        pb::FormationState {
            formation: "default".into(),
            number_sync_standbys: 0,
            synchronous_standby_names: String::new(),
            nodes: vec![pb::NodeStatus {
                node_id: 1,
                name: "node1".into(),
                host: "127.0.0.1".into(),
                port: 6001,
                reported_state: S::Primary.to_wire(),
                goal_state: S::Primary.to_wire(),
                lsn: 0x1_0000_0010,
                timeline: 2,
                health: "good".into(),
                heartbeat_age_ms: 300,
                pg_running: true,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn table_has_every_column() {
        let t = state_table(&sample());
        for col in [
            "Node",
            "Host:Port",
            "TLI:LSN",
            "Reported",
            "Goal",
            "Health",
            "Heartbeat",
        ] {
            assert!(t.contains(col), "{t}");
        }
        assert!(t.contains("2:1/10"), "{t}");
    }

    #[test]
    fn json_round_trips() {
        let j = StateJson::from(&sample());
        let text = serde_json::to_string(&j).unwrap();
        let back: StateJson = serde_json::from_str(&text).unwrap();
        assert_eq!(back, j);
        assert_eq!(back.nodes[0].reported_state, "primary");
    }

    #[test]
    fn uri_lists_every_node() {
        let mut s = sample();
        s.nodes.push(pb::NodeStatus {
            host: "127.0.0.1".into(),
            port: 6002,
            ..Default::default()
        });
        assert_eq!(
            multi_host_uri(&s, "postgres"),
            "postgresql://postgres@127.0.0.1:6001,127.0.0.1:6002/postgres?target_session_attrs=read-write"
        );
    }
}
