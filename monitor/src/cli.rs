//! Operator subcommands: talk gRPC to a running monitor and print for people
//! (tables) or scripts (`--json`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgpilot_proto::pb;
use pgpilot_proto::security::{self, ClientSecurity};
use pgpilot_proto::ReplicationState as S;
use serde::{Deserialize, Serialize};

use pgpilot_proto::lsn::format_lsn;

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
        // A status with a source error was made by the client's own
        // transport: the monitor never answered (refused TLS, plaintext
        // against TLS, connection cut).
        if let Some(source) = std::error::Error::source(&status) {
            let chain = format!("{msg}: {}", error_chain(source));
            return CliError::Unreachable(format!(
                "the monitor at {monitor} is unreachable ({chain}): {}",
                connect_hint(monitor, &chain)
            ));
        }
        match status.code() {
            Code::InvalidArgument | Code::NotFound => CliError::Usage(msg),
            Code::Unauthenticated | Code::PermissionDenied => {
                CliError::Usage(format!("the monitor at {monitor} refused: {msg}"))
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal
                if is_transport_error(&msg) =>
            {
                CliError::Unreachable(format!(
                    "the monitor at {monitor} is unreachable: {msg}: {}",
                    connect_hint(monitor, &msg)
                ))
            }
            Code::Unavailable | Code::DeadlineExceeded => {
                CliError::Unreachable(format!("the monitor at {monitor} did not answer: {msg}"))
            }
            _ => CliError::Failed(msg),
        }
    }
}

pub struct Client {
    inner: security::Client,
    url: String,
}

impl Client {
    /// Connect to the monitor at `url` with the TLS settings and token of
    /// `sec` (checked against the URL first: exit 2 when they do not fit).
    pub async fn connect(url: &str, sec: &ClientSecurity) -> Result<Client, CliError> {
        let usage = |e: security::SecurityError| CliError::Usage(e.to_string());
        let endpoint = sec
            .endpoint(url, &security::CLI_NAMES)
            .map_err(usage)?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        let credentials = sec.credentials(url).map_err(usage)?;
        let channel = endpoint.connect().await.map_err(|e| {
            let chain = error_chain(&e);
            CliError::Unreachable(format!(
                "the monitor at {url} is unreachable ({chain}): {}",
                connect_hint(url, &chain)
            ))
        })?;
        Ok(Client {
            inner: security::client(channel, credentials),
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
            // The override of a blocked election has no CLI flag yet.
            allow_data_loss: false,
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

    /// Let an election stuck after a double fault finish (data may be lost).
    pub async fn force_election(
        &mut self,
        formation: &str,
        group: u32,
    ) -> Result<String, CliError> {
        let request = pb::PerformFailoverRequest {
            formation: formation.to_string(),
            group_id: group,
            target_node: String::new(),
            allow_data_loss: true,
        };
        let reply = self.inner.perform_failover(request).await;
        self.message(reply)
    }

    pub async fn reinit_node(&mut self, formation: &str, node: &str) -> Result<String, CliError> {
        let request = pb::ReinitNodeRequest {
            formation: formation.to_string(),
            node: node.to_string(),
        };
        let reply = self.inner.reinit_node(request).await;
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

/// A status made by the client's transport (no answer from the service).
fn is_transport_error(msg: &str) -> bool {
    let lower = msg.to_ascii_lowercase();
    [
        "transport",
        "connect",
        "dns",
        "h2 protocol",
        "http2",
        "tls",
        "certificate",
        "broken pipe",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// What to check when the monitor cannot be reached, from the error.
fn connect_hint(url: &str, chain: &str) -> &'static str {
    let tls = security::url_uses_tls(url) == Some(true);
    let lower = chain.to_ascii_lowercase();
    if tls && (lower.contains("certificate") || lower.contains("invalid peer")) {
        "the monitor's certificate is not signed by the --tls-ca given, or does not name this host (see --tls-server-name)"
    } else if tls
        && (lower.contains("handshake")
            || lower.contains("tls")
            || lower.contains("corrupt message")
            || lower.contains("invalid content type"))
    {
        "TLS failed: if the monitor runs with plaintext = true use an http:// URL; if it requires client certificates give --tls-cert and --tls-key"
    } else if !tls
        && (lower.contains("reset")
            || lower.contains("broken pipe")
            || lower.contains("frame")
            || lower.contains("h2 protocol")
            || lower.contains("http2"))
    {
        "the connection was cut: if the monitor serves TLS (the default) use an https:// URL with --tls-ca"
    } else {
        "check that it runs and that --monitor / PGPILOT_MONITOR points at it"
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
}

impl Connection {
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::ReadWrite => "read-write",
            Connection::ReadOnly => "read-only",
            Connection::Down => "down",
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

/// `show-state --json`: the documented, stable shape scripts depend on
/// (`docs/show-state.schema.json`). Fields are only ever added.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateJson {
    pub formation: String,
    pub number_sync_standbys: u32,
    pub nodes: Vec<NodeJson>,
}

/// One node as the monitor knows it; also what `show-node --json` prints.
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
    /// What a client connecting to this node gets.
    pub connection: Connection,
    /// Serving standbys: bytes behind the primary's reported LSN; null for
    /// the primary, for nodes that serve no reads and while there is no primary.
    pub lag_bytes: Option<u64>,
    /// The data directory's system identifier as a decimal string (it does
    /// not fit a JSON number exactly); null until the node reported one.
    pub system_identifier: Option<String>,
    /// Standbys: the WAL receiver streams from the primary.
    pub wal_receiver_streaming: bool,
}

impl NodeJson {
    pub fn new(s: &pb::FormationState, n: &pb::NodeStatus) -> NodeJson {
        NodeJson {
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
            waiting_reason: (!n.waiting_reason.is_empty()).then(|| n.waiting_reason.clone()),
            connection: connection(n),
            lag_bytes: lag_bytes(s, n),
            system_identifier: (n.system_identifier != 0).then(|| n.system_identifier.to_string()),
            wal_receiver_streaming: n.wal_receiver_streaming,
        }
    }
}

impl From<&pb::FormationState> for StateJson {
    fn from(s: &pb::FormationState) -> Self {
        StateJson {
            formation: s.formation.clone(),
            number_sync_standbys: s.number_sync_standbys,
            nodes: s.nodes.iter().map(|n| NodeJson::new(s, n)).collect(),
        }
    }
}

/// Bytes for people: exact below 1 KiB, else one decimal in KiB/MiB/GiB/TiB.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn lag_cell(s: &pb::FormationState, n: &pb::NodeStatus) -> String {
    lag_bytes(s, n).map_or_else(|| "-".to_string(), format_bytes)
}

fn heartbeat_cell(n: &pb::NodeStatus) -> String {
    if n.heartbeat_age_ms < 0 {
        "never".into()
    } else {
        format!("{:.1}s ago", n.heartbeat_age_ms as f64 / 1000.0)
    }
}

fn running_cell(n: &pb::NodeStatus) -> String {
    if n.pg_running { "running" } else { "down" }.to_string()
}

fn goal_cell(n: &pb::NodeStatus) -> String {
    let (reported, goal) = (state_name(n.reported_state), state_name(n.goal_state));
    if goal == reported {
        goal
    } else {
        format!("→ {goal}")
    }
}

/// Standbys: whether the WAL receiver streams; "-" for a writable primary.
fn streaming_cell(n: &pb::NodeStatus) -> String {
    if S::from_wire(n.reported_state).is_ok_and(S::is_writable_primary) {
        "-".into()
    } else if n.wal_receiver_streaming {
        "yes".into()
    } else {
        "no".into()
    }
}

fn system_identifier_cell(n: &pb::NodeStatus) -> String {
    if n.system_identifier == 0 {
        "-".into()
    } else {
        n.system_identifier.to_string()
    }
}

/// The columns of `show-state`'s table.
pub const STATE_COLUMNS: [&str; 10] = [
    "Node",
    "Host:Port",
    "TLI:LSN",
    "Connection",
    "Lag",
    "Reported",
    "Goal",
    "PostgreSQL",
    "Health",
    "Heartbeat",
];

/// The state table operators read.
pub fn state_table(s: &pb::FormationState) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(STATE_COLUMNS);
    for n in &s.nodes {
        table.add_row(vec![
            format!("{} ({})", n.name, n.node_id),
            format!("{}:{}", n.host, n.port),
            format!("{}:{}", n.timeline, format_lsn(n.lsn)),
            connection(n).as_str().to_string(),
            lag_cell(s, n),
            state_name(n.reported_state),
            goal_cell(n),
            running_cell(n),
            n.health.clone(),
            heartbeat_cell(n),
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

/// The columns of `show-nodes`' table.
pub const NODES_COLUMNS: [&str; 15] = [
    "Id",
    "Name",
    "Host:Port",
    "Group",
    "System identifier",
    "Priority",
    "Quorum",
    "Reported",
    "Goal",
    "PostgreSQL",
    "Connection",
    "Health",
    "Heartbeat",
    "TLI:LSN",
    "Streaming",
];

/// `show-nodes`: one row per node with every field the monitor knows.
pub fn nodes_table(s: &pb::FormationState) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(NODES_COLUMNS);
    for n in &s.nodes {
        table.add_row(vec![
            n.node_id.to_string(),
            n.name.clone(),
            format!("{}:{}", n.host, n.port),
            n.group_id.to_string(),
            system_identifier_cell(n),
            n.candidate_priority.to_string(),
            n.replication_quorum.to_string(),
            state_name(n.reported_state),
            goal_cell(n),
            running_cell(n),
            connection(n).as_str().to_string(),
            n.health.clone(),
            heartbeat_cell(n),
            format!("{}:{}", n.timeline, format_lsn(n.lsn)),
            streaming_cell(n),
        ]);
    }
    format!("formation {}\n{table}\n", s.formation)
}

/// `show-node NAME`: one `key: value` line per field.
pub fn node_detail(s: &pb::FormationState, n: &pb::NodeStatus) -> String {
    let lag = match lag_bytes(s, n) {
        Some(bytes) => format!("{} ({bytes} bytes)", format_bytes(bytes)),
        None => "-".into(),
    };
    let waiting = if n.waiting_reason.is_empty() {
        "-"
    } else {
        n.waiting_reason.as_str()
    };
    let rows: [(&str, String); 19] = [
        ("name", n.name.clone()),
        ("node id", n.node_id.to_string()),
        ("formation", s.formation.clone()),
        ("group", n.group_id.to_string()),
        ("host:port", format!("{}:{}", n.host, n.port)),
        ("system identifier", system_identifier_cell(n)),
        ("candidate priority", n.candidate_priority.to_string()),
        ("replication quorum", n.replication_quorum.to_string()),
        ("reported state", state_name(n.reported_state)),
        ("goal state", state_name(n.goal_state)),
        ("postgresql", running_cell(n)),
        ("connection", connection(n).as_str().to_string()),
        ("health", n.health.clone()),
        ("heartbeat", heartbeat_cell(n)),
        ("timeline", n.timeline.to_string()),
        ("lsn", format_lsn(n.lsn)),
        ("lag", lag),
        ("streaming", streaming_cell(n)),
        ("waiting", waiting.to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

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

/// One event of `show-events --json` (an array of these; one per line
/// with `--follow`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventJson {
    pub event_id: i64,
    /// RFC 3339.
    pub at: String,
    pub formation: String,
    pub group_id: u32,
    pub node_id: i64,
    pub node_name: String,
    pub reported_state: String,
    pub goal_from: String,
    pub goal_to: String,
    pub reason: String,
}

impl From<&pb::Event> for EventJson {
    fn from(e: &pb::Event) -> Self {
        let name = |v: i32| S::from_wire(v).map(|s| s.to_string()).unwrap_or_default();
        EventJson {
            event_id: e.event_id,
            at: e.at.clone(),
            formation: e.formation.clone(),
            group_id: e.group_id,
            node_id: e.node_id,
            node_name: e.node_name.clone(),
            reported_state: name(e.reported_state),
            goal_from: name(e.goal_from),
            goal_to: name(e.goal_to),
            reason: e.reason.clone(),
        }
    }
}

/// One event on one line, as `show-events --follow` prints them.
pub fn event_line(e: &pb::Event) -> String {
    let change = format!("{} → {}", state_name(e.goal_from), state_name(e.goal_to));
    format!(
        "{}  {:<12} {:<18} {:<38} {}\n",
        e.at,
        e.node_name,
        state_name(e.reported_state),
        change,
        e.reason
    )
}

/// The most events one ListEvents call returns.
pub const MAX_EVENTS: u32 = 10_000;
/// How often `show-events --follow` asks for new events.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Events fetched per `--follow` poll; when all of them are new, some may
/// have been missed and the poll is repeated with [`MAX_EVENTS`].
const FOLLOW_BATCH: u32 = 100;

/// The latest `count` events (of `node` only, when given), and the highest
/// event id the monitor returned, filtered out or not.
pub async fn recent_events(
    client: &mut Client,
    formation: &str,
    count: u32,
    node: Option<&str>,
) -> Result<(Vec<pb::Event>, i64), CliError> {
    let all = client
        .events(formation, if node.is_some() { MAX_EVENTS } else { count })
        .await?;
    if all.is_empty() {
        // ListEvents answers an unknown formation with no events; a typo
        // should not print an empty table (or follow nothing forever).
        client.state(formation).await?;
    }
    let last = all.last().map_or(0, |e| e.event_id);
    let Some(name) = node else {
        return Ok((all, last));
    };
    let mut mine: Vec<pb::Event> = all.into_iter().filter(|e| e.node_name == name).collect();
    if mine.is_empty() {
        // A typo would otherwise print nothing (forever, with --follow).
        let state = client.state(formation).await?;
        find_node(&state, name)?;
    }
    let skip = mine.len().saturating_sub(count as usize);
    mine.drain(..skip);
    Ok((mine, last))
}

/// Write to stdout; `Ok(false)` when the reader has gone away (a closed pipe,
/// e.g. `show-events --follow | head`), which ends a follow or watch quietly.
pub fn emit(text: &str) -> Result<bool, CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(CliError::Failed(format!("cannot write to stdout: {e}"))),
    }
}

fn event_text(e: &pb::Event, json: bool) -> String {
    if json {
        let mut line = serde_json::to_string(&EventJson::from(e)).expect("serializable");
        line.push('\n');
        line
    } else {
        event_line(e)
    }
}

/// `show-events --follow`: print the latest `count` events, then every new
/// one as the monitor records it, polling every [`FOLLOW_INTERVAL`]. Runs
/// until interrupted; a monitor that stops answering is reported once on
/// stderr and polled again.
pub async fn follow_events(
    client: &mut Client,
    formation: &str,
    count: u32,
    node: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let (backlog, mut last) = recent_events(client, formation, count, node).await?;
    for e in &backlog {
        if !emit(&event_text(e, json))? {
            return Ok(());
        }
    }
    let mut failing = false;
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let mut batch = match client.events(formation, FOLLOW_BATCH).await {
            Ok(batch) => batch,
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e) => {
                if !failing {
                    eprintln!("{e} (still following; retrying every second)");
                    failing = true;
                }
                continue;
            }
        };
        if failing {
            eprintln!("the monitor answers again");
            failing = false;
        }
        if batch.len() == FOLLOW_BATCH as usize && batch.first().is_some_and(|e| e.event_id > last)
        {
            batch = client.events(formation, MAX_EVENTS).await?;
        }
        for e in batch.iter().filter(|e| e.event_id > last) {
            if node.is_none_or(|name| e.node_name == name) && !emit(&event_text(e, json))? {
                return Ok(());
            }
        }
        last = batch.last().map_or(last, |e| e.event_id.max(last));
    }
}

/// Clears a terminal and moves the cursor home.
pub const CLEAR_SCREEN: &str = "\x1b[2J\x1b[H";

/// `show-state --watch`: redraw the state table every `interval` until
/// interrupted. A monitor that stops answering is shown in the frame and
/// asked again; an unknown formation ends the watch (exit 2).
pub async fn watch_state(
    client: &mut Client,
    formation: &str,
    interval: Duration,
) -> Result<(), CliError> {
    loop {
        let body = match client.state(formation).await {
            Ok(state) => state_table(&state),
            Err(e @ CliError::Usage(_)) => return Err(e),
            Err(e) => format!("error: {e}\n"),
        };
        let frame = format!(
            "{CLEAR_SCREEN}every {}: pgpilot-monitor show-state --formation {formation}    {}    (Ctrl-C to stop)\n\n{body}",
            humantime::format_duration(interval),
            chrono::Local::now().format("%H:%M:%S"),
        );
        if !emit(&frame)? {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

/// Run `work` until it ends or Ctrl-C (SIGINT) arrives; Ctrl-C is success.
pub async fn until_interrupted(
    work: impl std::future::Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|e| CliError::Failed(format!("cannot catch Ctrl-C: {e}")))?;
    tokio::select! {
        result = work => result,
        _ = interrupt.recv() => Ok(()),
    }
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

/// The group converged, with the node `name` settled in `state`.
pub fn converged_with(s: &pb::FormationState, name: &str, state: S) -> bool {
    converged(s)
        && s.nodes
            .iter()
            .any(|n| n.name == name && settled(n, &[state]))
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

    /// `sample()` plus a streaming standby 4 KiB behind and a stopped node.
    fn three() -> pb::FormationState {
        let mut s = sample();
        s.nodes.push(pb::NodeStatus {
            node_id: 2,
            name: "node2".into(),
            host: "127.0.0.1".into(),
            port: 6002,
            reported_state: S::Secondary.to_wire(),
            goal_state: S::Secondary.to_wire(),
            lsn: 0x1_0000_0010 - 4096,
            timeline: 2,
            health: "good".into(),
            heartbeat_age_ms: 200,
            pg_running: true,
            wal_receiver_streaming: true,
            system_identifier: 7_312_345_678_901_234_567,
            candidate_priority: 50,
            replication_quorum: true,
            ..Default::default()
        });
        s.nodes.push(pb::NodeStatus {
            node_id: 3,
            name: "node3".into(),
            host: "127.0.0.1".into(),
            port: 6003,
            reported_state: S::Secondary.to_wire(),
            goal_state: S::Maintenance.to_wire(),
            pg_running: false,
            health: "bad".into(),
            heartbeat_age_ms: -1,
            waiting_reason: "waiting for node3".into(),
            ..Default::default()
        });
        s
    }

    #[test]
    fn table_has_every_column() {
        let t = state_table(&three());
        for col in STATE_COLUMNS {
            assert!(t.contains(col), "{t}");
        }
        assert!(t.contains("2:1/10"), "{t}");
        assert!(t.contains("read-write") && t.contains("read-only"), "{t}");
        assert!(t.contains("4.0 KiB") && t.contains("→ maintenance"), "{t}");
        assert!(t.contains("waiting: waiting for node3"), "{t}");
    }

    #[test]
    fn connection_follows_state_and_postgres() {
        let node = |state: S, running: bool| pb::NodeStatus {
            reported_state: state.to_wire(),
            pg_running: running,
            ..Default::default()
        };
        for s in [
            S::Single,
            S::WaitPrimary,
            S::Primary,
            S::JoinPrimary,
            S::ApplySettings,
        ] {
            assert_eq!(connection(&node(s, true)), Connection::ReadWrite, "{s}");
            assert_eq!(connection(&node(s, false)), Connection::Down, "{s}");
        }
        for s in [S::Secondary, S::Catchingup, S::ReportLsn, S::WaitStandby] {
            assert_eq!(connection(&node(s, true)), Connection::ReadOnly, "{s}");
            assert_eq!(connection(&node(s, false)), Connection::Down, "{s}");
        }
        for s in [
            S::Init,
            S::Draining,
            S::Demoted,
            S::DemoteTimeout,
            S::Dropped,
        ] {
            assert_eq!(connection(&node(s, true)), Connection::Down, "{s}");
        }
        assert_eq!(connection(&pb::NodeStatus::default()), Connection::Down);
    }

    #[test]
    fn lag_is_for_serving_standbys_only() {
        let s = three();
        assert_eq!(lag_bytes(&s, &s.nodes[0]), None, "the primary");
        assert_eq!(lag_bytes(&s, &s.nodes[1]), Some(4096));
        assert_eq!(lag_bytes(&s, &s.nodes[2]), None, "a stopped node");
        // A standby ahead of a stale primary report is not behind.
        let mut ahead = s.clone();
        ahead.nodes[1].lsn = ahead.nodes[0].lsn + 10;
        assert_eq!(lag_bytes(&ahead, &ahead.nodes[1]), Some(0));
        // No primary: no lag.
        let mut headless = s.clone();
        headless.nodes[0].pg_running = false;
        assert_eq!(lag_bytes(&headless, &headless.nodes[1]), None);
        // Another group's primary does not count.
        let mut other = s;
        other.nodes[1].group_id = 1;
        assert_eq!(lag_bytes(&other, &other.nodes[1]), None);
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(16 << 20), "16.0 MiB");
        assert_eq!(format_bytes(3 << 40), "3.0 TiB");
    }

    #[test]
    fn nodes_table_and_node_detail_show_every_field() {
        let s = three();
        let t = nodes_table(&s);
        for col in NODES_COLUMNS {
            assert!(t.contains(col), "{t}");
        }
        assert!(t.contains("7312345678901234567"), "{t}");
        let d = node_detail(&s, &s.nodes[1]);
        for line in [
            "name:               node2",
            "system identifier:  7312345678901234567",
            "candidate priority: 50",
            "replication quorum: true",
            "connection:         read-only",
            "lag:                4.0 KiB (4096 bytes)",
            "streaming:          yes",
            "lsn:                0/FFFFF010",
        ] {
            assert!(d.lines().any(|l| l == line), "{line:?} not in\n{d}");
        }
        assert_eq!(d.lines().count(), 19, "{d}");
    }

    #[test]
    fn unknown_node_suggests_the_closest_names() {
        let s = three();
        assert_eq!(find_node(&s, "node2").map(|n| n.node_id).ok(), Some(2));
        let e = find_node(&s, "nod2").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            r#"formation default has no node named "nod2": did you mean node2?"#
        );
        let e = find_node(&s, "node").unwrap_err().to_string();
        assert!(e.ends_with("did you mean node1 or node2 or node3?"), "{e}");
        let e = find_node(&s, "database-server").unwrap_err().to_string();
        assert!(e.ends_with("its nodes are node1, node2, node3"), "{e}");
    }

    #[tokio::test]
    async fn tls_settings_that_do_not_fit_the_url_are_usage_errors() {
        let none = ClientSecurity::default();
        let e = Client::connect("https://127.0.0.1:1", &none)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--tls-ca"), "{e}");
        let ca = ClientSecurity {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let e = Client::connect("http://127.0.0.1:1", &ca)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("https://"), "{e}");
        let e = Client::connect("https://127.0.0.1:1", &ca)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
    }

    /// Check `value` against the subset of JSON Schema the documented
    /// schema uses: local `$ref`, `type`, `enum`, `required`, `properties`,
    /// `additionalProperties: false`, `items`, `minimum`, `maximum`.
    fn check(
        value: &serde_json::Value,
        schema: &serde_json::Value,
        root: &serde_json::Value,
        at: &str,
    ) -> Vec<String> {
        use serde_json::Value;
        let mut errors = Vec::new();
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let path = r.strip_prefix('#').expect("local $ref");
                let target = root
                    .pointer(path)
                    .unwrap_or_else(|| panic!("$ref {r} resolves"));
                errors.extend(check(value, target, root, at));
                schema
            }
            None => schema,
        };
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => panic!("bad type {other} at {at}"),
            };
            let fits = |t: &str| match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                other => panic!("unknown type {other} at {at}"),
            };
            if !types.iter().any(|t| fits(t)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            if !allowed.contains(value) {
                errors.push(format!("{at}: {value} is not one of {allowed:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if schema
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                errors.push(format!("{at}: {n} is below the minimum"));
            }
            if schema
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                errors.push(format!("{at}: {n} is above the maximum"));
            }
        }
        if let Some(object) = value.as_object() {
            let properties = schema.get("properties").and_then(Value::as_object);
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let key = key.as_str().expect("required names are strings");
                if !object.contains_key(key) {
                    errors.push(format!("{at}: required key {key:?} is missing"));
                }
            }
            for (key, v) in object {
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => errors.extend(check(v, sub, root, &format!("{at}.{key}"))),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        errors.push(format!("{at}: key {key:?} is not in the schema"))
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, v) in array.iter().enumerate() {
                errors.extend(check(v, items, root, &format!("{at}[{i}]")));
            }
        }
        errors
    }

    fn schema() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/show-state.schema.json"
        );
        let text = std::fs::read_to_string(path).expect("docs/show-state.schema.json is readable");
        serde_json::from_str(&text).expect("docs/show-state.schema.json is JSON")
    }

    #[test]
    fn state_json_matches_the_documented_schema() {
        let schema = schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let doc = serde_json::to_value(StateJson::from(&three())).unwrap();
        let errors = check(&doc, &schema, &schema, "$");
        assert!(errors.is_empty(), "{errors:#?}\n{doc:#}");
        // Every documented node key is produced, and nothing else: required
        // equals the properties (null is how a value is absent).
        let node = &schema["$defs"]["node"];
        let mut required: Vec<&str> = node["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let mut properties: Vec<&str> = node["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        required.sort();
        properties.sort();
        assert_eq!(required, properties);
    }

    #[test]
    fn the_schema_check_catches_drift() {
        let schema = schema();
        let mut doc = serde_json::to_value(StateJson::from(&three())).unwrap();
        doc["nodes"][0]
            .as_object_mut()
            .unwrap()
            .remove("connection");
        doc["nodes"][1]["lag_bytes"] = "4096".into();
        doc["nodes"][2]["connection"] = "maybe".into();
        doc["nodes"][2]["colour"] = "blue".into();
        let errors = check(&doc, &schema, &schema, "$");
        assert_eq!(errors.len(), 4, "{errors:#?}");
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
            multi_host_uri(&s, "postgres", false),
            "postgresql://postgres@127.0.0.1:6001,127.0.0.1:6002/postgres?target_session_attrs=read-write"
        );
        assert!(
            multi_host_uri(&s, "postgres", true).ends_with("target_session_attrs=prefer-standby")
        );
    }
}
