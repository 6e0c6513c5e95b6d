//! The `--json` views scripts read: stable shapes, fields only ever added
//! (`docs/show-state.schema.json`, `docs/show-settings.schema.json`).

use pgpilot_proto::lsn::format_lsn;
use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;
use serde::{Deserialize, Serialize};

use super::render::{connection, lag_bytes, state_name, Connection};

/// `show-state --json`: the documented, stable shape scripts depend on
/// (`docs/show-state.schema.json`). Fields are only ever added.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateJson {
    pub formation: String,
    pub number_sync_standbys: u32,
    pub nodes: Vec<NodeJson>,
    /// The monitor processes sharing the monitor database, the lease
    /// holder first (empty from a monitor that does not list them).
    #[serde(default)]
    pub monitors: Vec<MonitorJson>,
    /// The id of the monitor process that answered; null if it did not say.
    #[serde(default)]
    pub answered_by: Option<String>,
    /// Who paused the formation and when; null when it is not paused.
    #[serde(default)]
    pub paused: Option<PausedJson>,
    /// The formation's permanent slots and the nodes holding each.
    #[serde(default)]
    pub permanent_slots: Vec<SlotJson>,
}

/// A permanent slot of a formation (show-slots has each node's position).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SlotJson {
    pub name: String,
    /// "physical" or "logical".
    pub kind: String,
    /// Logical slots: the output plugin and the database decoded ("" otherwise).
    pub plugin: String,
    pub database: String,
    /// The nodes that hold it with no problem.
    pub held_by: Vec<String>,
}

/// Who paused a formation and when (RFC 3339).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PausedJson {
    pub by: String,
    pub since: String,
}

impl PausedJson {
    fn new(by: &str, since: &str) -> Option<PausedJson> {
        (!by.is_empty()).then(|| PausedJson {
            by: by.to_string(),
            since: since.to_string(),
        })
    }
}

/// One monitor process in [`StateJson`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MonitorJson {
    pub monitor_id: String,
    pub url: String,
    /// Milliseconds since it last renewed or sought the lease.
    pub seen_ago_ms: i64,
    /// It runs the health checks and the periodic evaluation.
    pub holds_lease: bool,
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
    /// A delayed standby's apply delay (recovery_min_apply_delay) in
    /// milliseconds; 0: not delayed. A delayed node is never promoted nor
    /// counted for synchronous commit, and serves reads that old.
    #[serde(default)]
    pub apply_delay_ms: u64,
    /// A cascading standby: the standby it is set to stream from (null:
    /// the primary), and the node it streams from now (null: none).
    pub upstream: Option<String>,
    pub streams_from: Option<String>,
    pub waiting_reason: Option<String>,
    /// The stable kinds of the waits in `waiting_reason` (e.g.
    /// `election_stuck`), in the same order; empty when the group does
    /// not wait. Tools read these, not the text.
    pub waiting_kinds: Vec<String>,
    /// What a client connecting to this node gets.
    pub connection: Connection,
    /// The keeper silent past node_timeout and the monitor's own check
    /// failing: `reported_state` and `pg_running` are its last report.
    #[serde(default)]
    pub unreachable: bool,
    /// Serving standbys: bytes behind the primary's reported LSN; null for
    /// the primary, for nodes that serve no reads and while there is no primary.
    pub lag_bytes: Option<u64>,
    /// The data directory's system identifier as a decimal string (it does
    /// not fit a JSON number exactly); null until the node reported one.
    pub system_identifier: Option<String>,
    /// Standbys: the WAL receiver streams from the primary.
    pub wal_receiver_streaming: bool,
    /// The long work (clone, rewind, restore, crash recovery) the node's
    /// keeper reports under way; null when
    /// none is.
    #[serde(default)]
    pub work: Option<WorkJson>,
    /// Settings its PostgreSQL reports pending a restart
    /// (pg_settings.pending_restart); `restart --pending-only` restarts it.
    #[serde(default)]
    pub pending_restart: Vec<String>,
    /// A restart asked through the monitor (`restart`) its keeper has not
    /// carried out yet.
    #[serde(default)]
    pub restart_under_way: bool,
}

/// Long work under way (see `pb::WorkProgress`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkJson {
    /// "clone", "rewind", "restore" or "recovery".
    pub work: String,
    /// "host:port" copied from.
    pub upstream: String,
    pub done_bytes: u64,
    /// Null until the program has said.
    pub total_bytes: Option<u64>,
    /// Over the last 10 s; null until measured.
    pub rate_bytes_per_s: Option<u64>,
    pub elapsed_ms: u64,
    /// Since anything last moved.
    pub idle_ms: u64,
    /// The same in one sentence.
    pub description: String,
}

impl From<&pb::WorkProgress> for WorkJson {
    fn from(w: &pb::WorkProgress) -> WorkJson {
        WorkJson {
            work: w.work.clone(),
            upstream: w.upstream.clone(),
            done_bytes: w.done_bytes,
            total_bytes: (w.total_bytes > 0).then_some(w.total_bytes),
            rate_bytes_per_s: (w.rate_bytes_per_s > 0).then_some(w.rate_bytes_per_s),
            elapsed_ms: w.elapsed_ms,
            idle_ms: w.idle_ms,
            description: pgpilot_proto::work::describe(w),
        }
    }
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
            apply_delay_ms: n.apply_delay_ms,
            upstream: (!n.upstream.is_empty()).then(|| n.upstream.clone()),
            streams_from: (!n.streams_from.is_empty()).then(|| n.streams_from.clone()),
            waiting_reason: (!n.waiting_reason.is_empty()).then(|| n.waiting_reason.clone()),
            waiting_kinds: n.waiting_kinds.clone(),
            connection: connection(n),
            unreachable: n.unreachable,
            lag_bytes: lag_bytes(s, n),
            system_identifier: (n.system_identifier != 0).then(|| n.system_identifier.to_string()),
            wal_receiver_streaming: n.wal_receiver_streaming,
            work: n.work.as_ref().map(WorkJson::from),
            pending_restart: n.pending_restart.clone(),
            restart_under_way: n.restart_requested > n.restart_done,
        }
    }
}

impl From<&pb::FormationState> for StateJson {
    fn from(s: &pb::FormationState) -> Self {
        StateJson {
            formation: s.formation.clone(),
            number_sync_standbys: s.number_sync_standbys,
            nodes: s.nodes.iter().map(|n| NodeJson::new(s, n)).collect(),
            monitors: s
                .monitors
                .iter()
                .map(|m| MonitorJson {
                    monitor_id: m.monitor_id.clone(),
                    url: m.url.clone(),
                    seen_ago_ms: m.seen_ago_ms,
                    holds_lease: m.holds_lease,
                })
                .collect(),
            answered_by: (!s.answered_by.is_empty()).then(|| s.answered_by.clone()),
            paused: PausedJson::new(&s.paused_by, &s.paused_at),
            permanent_slots: s
                .permanent_slots
                .iter()
                .map(|slot| SlotJson {
                    name: slot.name.clone(),
                    kind: slot.kind.clone(),
                    plugin: slot.plugin.clone(),
                    database: slot.database.clone(),
                    held_by: s
                        .nodes
                        .iter()
                        .filter(|n| super::commands::slot_held(n, &slot.name))
                        .map(|n| n.name.clone())
                        .collect(),
                })
                .collect(),
        }
    }
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
    /// The stable kind of the reason (e.g. `planned_failover`,
    /// `election_stuck`); null for events recorded before kinds were stored.
    pub kind: Option<String>,
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
            kind: (!e.kind.is_empty()).then(|| e.kind.clone()),
            reason: e.reason.clone(),
        }
    }
}

/// `show-settings --json` (`docs/show-settings.schema.json`): the
/// formation's synchronous replication and every node's settings. Fields
/// are printed in this order (alphabetical, as first released).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SettingsJson {
    pub formation: String,
    pub nodes: Vec<NodeSettingsJson>,
    pub number_sync_standbys: u32,
    /// What the primary applies; empty while synchronous replication is off.
    pub synchronous_standby_names: String,
}

/// One node's replication settings in [`SettingsJson`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeSettingsJson {
    /// Milliseconds (0: not delayed); see [`NodeJson::apply_delay_ms`].
    #[serde(default)]
    pub apply_delay_ms: u64,
    pub candidate_priority: u32,
    pub name: String,
    pub node_id: i64,
    pub replication_quorum: bool,
}

impl From<&pb::FormationState> for SettingsJson {
    fn from(s: &pb::FormationState) -> Self {
        SettingsJson {
            formation: s.formation.clone(),
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeSettingsJson {
                    apply_delay_ms: n.apply_delay_ms,
                    candidate_priority: n.candidate_priority,
                    name: n.name.clone(),
                    node_id: n.node_id,
                    replication_quorum: n.replication_quorum,
                })
                .collect(),
            number_sync_standbys: s.number_sync_standbys,
            synchronous_standby_names: s.synchronous_standby_names.clone(),
        }
    }
}

/// `value` as indented JSON, the way every `--json` view prints it.
pub fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).expect("serializable")
}

/// One formation of `show-formations --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FormationJson {
    pub formation: String,
    pub number_sync_standbys: u32,
    pub nodes: u32,
    /// Who paused it and when; null when it is not paused.
    pub paused: Option<PausedJson>,
}

impl From<&pb::FormationSummary> for FormationJson {
    fn from(f: &pb::FormationSummary) -> Self {
        FormationJson {
            formation: f.formation.clone(),
            number_sync_standbys: f.number_sync_standbys,
            nodes: f.nodes,
            paused: PausedJson::new(&f.paused_by, &f.paused_at),
        }
    }
}
