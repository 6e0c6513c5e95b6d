//! The tables and text people read: `show-state`, `show-nodes`,
//! `show-node`, `show-settings`, `show-events` and the one-line events of
//! `show-events --follow`.

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use pgpilot_proto::delay;
use pgpilot_proto::lsn::{application_name, format_lsn};
use pgpilot_proto::pb;
use pgpilot_proto::work;
use pgpilot_proto::ReplicationState as S;

use super::render::{connection, format_bytes, lag_bytes, state_name};

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

/// An unreachable node's last report is not repeated as if it held.
fn running_cell(n: &pb::NodeStatus) -> String {
    match (n.unreachable, n.pg_running) {
        (true, true) => "unknown (last seen running)",
        (true, false) => "unknown (last seen down)",
        (false, true) => "running",
        (false, false) => "down",
    }
    .to_string()
}

/// The reported state, marked as a last report when the node is unreachable.
fn reported_cell(n: &pb::NodeStatus) -> String {
    let reported = state_name(n.reported_state);
    if n.unreachable {
        format!("{reported} (last report)")
    } else {
        reported
    }
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

/// A node's apply delay: "-" when it is not delayed.
fn apply_delay_cell(n: &pb::NodeStatus) -> String {
    if n.apply_delay_ms == 0 {
        "-".into()
    } else {
        delay::describe(n.apply_delay_ms)
    }
}

/// A line per delayed standby (none when no node is delayed).
fn delayed_lines(s: &pb::FormationState) -> String {
    s.nodes
        .iter()
        .filter(|n| n.apply_delay_ms > 0)
        .map(|n| {
            format!(
                "delayed: {} applies WAL {} late (recovery_min_apply_delay): never promoted, not counted for synchronous commit\n",
                n.name,
                delay::describe(n.apply_delay_ms)
            )
        })
        .collect()
}

fn system_identifier_cell(n: &pb::NodeStatus) -> String {
    if n.system_identifier == 0 {
        "-".into()
    } else {
        n.system_identifier.to_string()
    }
}

/// An empty table with `header`, in the style of every table here.
fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header(header);
    table
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
    let mut table = table(STATE_COLUMNS);
    for n in &s.nodes {
        table.add_row(vec![
            format!("{} ({})", n.name, n.node_id),
            format!("{}:{}", n.host, n.port),
            format!("{}:{}", n.timeline, format_lsn(n.lsn)),
            connection(n).as_str().to_string(),
            lag_cell(s, n),
            reported_cell(n),
            goal_cell(n),
            running_cell(n),
            n.health.clone(),
            heartbeat_cell(n),
        ]);
    }
    let mut out = format!(
        "formation {} (number_sync_standbys = {}){}\n{table}\n",
        s.formation,
        s.number_sync_standbys,
        paused_note(&s.paused_by, &s.paused_at)
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
    for n in &s.nodes {
        if let Some(w) = &n.work {
            out.push_str(&format!("working: {} {}\n", n.name, work::describe(w)));
        }
    }
    out.push_str(&restart_lines(s));
    out.push_str(&cascade_lines(s));
    out.push_str(&slot_lines(s));
    out.push_str(&delayed_lines(s));
    if !s.monitors.is_empty() {
        out.push_str(&monitors_table(s));
    }
    out
}

/// A line per cascading standby: the standby it is set to stream from,
/// and where it streams from now when that differs.
fn cascade_lines(s: &pb::FormationState) -> String {
    let mut out = String::new();
    for n in s.nodes.iter().filter(|n| !n.upstream.is_empty()) {
        out.push_str(&format!(
            "cascading: {} streams from {}",
            n.name, n.upstream
        ));
        if n.streams_from != n.upstream {
            out.push_str(&format!(
                " when it can serve; now from {}",
                if n.streams_from.is_empty() {
                    "no node"
                } else {
                    &n.streams_from
                }
            ));
        }
        out.push('\n');
    }
    out
}

/// A line per permanent slot: which nodes hold it, and which do not
/// (show-slots has the positions).
fn slot_lines(s: &pb::FormationState) -> String {
    let mut out = String::new();
    for slot in &s.permanent_slots {
        let (held, missing): (Vec<&pb::NodeStatus>, Vec<&pb::NodeStatus>) = s
            .nodes
            .iter()
            .partition(|n| super::commands::slot_held(n, &slot.name));
        let names = |nodes: &[&pb::NodeStatus]| {
            nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "slot: {}; held by {}",
            super::commands::describe_slot(slot),
            if held.is_empty() {
                "no node".to_string()
            } else {
                names(&held)
            }
        ));
        if !missing.is_empty() {
            out.push_str(&format!("; not by {} (show-slots)", names(&missing)));
        }
        out.push('\n');
    }
    out
}

/// A line per node with a restart under way or settings pending one.
fn restart_lines(s: &pb::FormationState) -> String {
    let mut out = String::new();
    for n in &s.nodes {
        if n.restart_requested > n.restart_done {
            out.push_str(&format!(
                "restarting: {} (asked through the monitor)\n",
                n.name
            ));
        } else if let Some(line) = pending_restart_line(n) {
            out.push_str(&line);
        }
    }
    out
}

/// The settings node `n` has pending a restart, as one line (none when
/// none is).
pub fn pending_restart_line(n: &pb::NodeStatus) -> Option<String> {
    (!n.pending_restart.is_empty()).then(|| {
        format!(
            "pending restart: {} ({}): restart --all --pending-only applies it\n",
            n.name,
            n.pending_restart.join(", ")
        )
    })
}

/// The monitors sharing the monitor database, and who runs the duties.
pub fn monitors_table(s: &pb::FormationState) -> String {
    let mut table = table(["Monitor", "URL", "Lease", "Seen"]);
    for m in &s.monitors {
        let mut id = m.monitor_id.clone();
        if m.monitor_id == s.answered_by {
            id.push_str(" (answered)");
        }
        table.add_row(vec![
            id,
            m.url.clone(),
            if m.holds_lease { "holds" } else { "-" }.to_string(),
            format!("{:.1}s ago", m.seen_ago_ms.max(0) as f64 / 1000.0),
        ]);
    }
    format!("monitors\n{table}\n")
}

/// The columns of `show-nodes`' table.
pub const NODES_COLUMNS: [&str; 16] = [
    "Id",
    "Name",
    "Host:Port",
    "Group",
    "System identifier",
    "Priority",
    "Quorum",
    "Apply delay",
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
    let mut table = table(NODES_COLUMNS);
    for n in &s.nodes {
        table.add_row(vec![
            n.node_id.to_string(),
            n.name.clone(),
            format!("{}:{}", n.host, n.port),
            n.group_id.to_string(),
            system_identifier_cell(n),
            n.candidate_priority.to_string(),
            n.replication_quorum.to_string(),
            apply_delay_cell(n),
            reported_cell(n),
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
    let work = n.work.as_ref().map_or("-".into(), work::describe);
    let rows: [(&str, String); 21] = [
        ("name", n.name.clone()),
        ("node id", n.node_id.to_string()),
        ("formation", s.formation.clone()),
        ("group", n.group_id.to_string()),
        ("host:port", format!("{}:{}", n.host, n.port)),
        ("system identifier", system_identifier_cell(n)),
        ("candidate priority", n.candidate_priority.to_string()),
        ("replication quorum", n.replication_quorum.to_string()),
        ("apply delay", apply_delay_cell(n)),
        ("reported state", reported_cell(n)),
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
        ("work", work),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// `show-settings`: the formation's and every node's replication settings.
pub fn settings_table(s: &pb::FormationState) -> String {
    let mut table = table([
        "Node",
        "Candidate priority",
        "Replication quorum",
        "Apply delay",
        "Streams as",
    ]);
    for n in &s.nodes {
        table.add_row(vec![
            n.name.clone(),
            n.candidate_priority.to_string(),
            n.replication_quorum.to_string(),
            apply_delay_cell(n),
            application_name(n.node_id),
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

pub fn events_table(events: &[pb::Event]) -> String {
    let mut table = table(["Time", "Node", "Reported", "Goal change", "Reason"]);
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

/// `show-formations`: one row per formation.
pub fn formations_table(formations: &[pb::FormationSummary]) -> String {
    let mut table = table(["Formation", "number_sync_standbys", "Nodes", "Failover"]);
    for f in formations {
        table.add_row(vec![
            f.formation.clone(),
            f.number_sync_standbys.to_string(),
            f.nodes.to_string(),
            if f.paused_by.is_empty() {
                "automatic".to_string()
            } else {
                format!("PAUSED by {} since {}", f.paused_by, f.paused_at)
            },
        ]);
    }
    format!("{table}\n")
}

/// The words after the formation's name in show-state when it is paused.
fn paused_note(by: &str, at: &str) -> String {
    if by.is_empty() {
        String::new()
    } else {
        format!(" PAUSED by {by} since {at}: no automatic failover until resume")
    }
}
