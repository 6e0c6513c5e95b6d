//! Reading the monitor's view of a formation: helpers on the generated
//! messages and the state table printed when a test fails.

use pgpilot_proto::pb::{Event, FormationState, NodeStatus};
use pgpilot_proto::ReplicationState;

pub trait NodeStatusExt {
    fn reported(&self) -> Option<ReplicationState>;
    fn goal(&self) -> Option<ReplicationState>;
    /// Reported and goal are both `state`: the node has settled there.
    fn settled_in(&self, state: ReplicationState) -> bool;
    /// The reported state is one in which the node takes writes.
    fn reports_writable_primary(&self) -> bool;
}

impl NodeStatusExt for NodeStatus {
    fn reported(&self) -> Option<ReplicationState> {
        ReplicationState::from_wire(self.reported_state).ok()
    }

    fn goal(&self) -> Option<ReplicationState> {
        ReplicationState::from_wire(self.goal_state).ok()
    }

    fn settled_in(&self, state: ReplicationState) -> bool {
        self.reported() == Some(state) && self.goal() == Some(state)
    }

    fn reports_writable_primary(&self) -> bool {
        self.reported()
            .is_some_and(ReplicationState::is_writable_primary)
    }
}

pub trait FormationStateExt {
    fn node(&self, name: &str) -> Option<&NodeStatus>;
    /// Nodes whose reported state is a writable-primary state.
    fn writable_primaries(&self) -> Vec<&NodeStatus>;
    /// `nodes` nodes registered, exactly one settled in `primary`, all others
    /// settled in `secondary` (a lone node: settled in `single`).
    fn is_healthy(&self, nodes: usize) -> bool;
    /// The state table, for people.
    fn table(&self) -> String;
}

impl FormationStateExt for FormationState {
    fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn writable_primaries(&self) -> Vec<&NodeStatus> {
        self.nodes
            .iter()
            .filter(|n| n.reports_writable_primary())
            .collect()
    }

    fn is_healthy(&self, nodes: usize) -> bool {
        if nodes == 1 {
            return self.nodes.len() == 1 && self.nodes[0].settled_in(ReplicationState::Single);
        }
        let primaries = self
            .nodes
            .iter()
            .filter(|n| n.settled_in(ReplicationState::Primary))
            .count();
        let secondaries = self
            .nodes
            .iter()
            .filter(|n| n.settled_in(ReplicationState::Secondary))
            .count();
        self.nodes.len() == nodes && primaries == 1 && secondaries + 1 == nodes
    }

    fn table(&self) -> String {
        let header = [
            "name",
            "id",
            "group",
            "port",
            "reported",
            "goal",
            "pg",
            "health",
            "heartbeat",
            "lsn",
            "tl",
            "prio",
            "quorum",
            "streaming",
            "waiting",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for n in &self.nodes {
            rows.push(vec![
                n.name.clone(),
                n.node_id.to_string(),
                n.group_id.to_string(),
                n.port.to_string(),
                state_name(n.reported_state),
                state_name(n.goal_state),
                yes_no(n.pg_running),
                n.health.clone(),
                if n.heartbeat_age_ms < 0 {
                    "never".to_string()
                } else {
                    format!("{:.1}s ago", n.heartbeat_age_ms as f64 / 1000.0)
                },
                format_lsn(n.lsn),
                n.timeline.to_string(),
                n.candidate_priority.to_string(),
                yes_no(n.replication_quorum),
                yes_no(n.wal_receiver_streaming),
                n.waiting_reason.clone(),
            ]);
        }
        let mut out = format!(
            "formation {:?}, number_sync_standbys {}\n",
            self.formation, self.number_sync_standbys
        );
        out.push_str(&render(&rows));
        out
    }
}

/// One line per event, oldest first.
pub fn events_table(events: &[Event]) -> String {
    let mut rows = vec![["at", "node", "reported", "goal", "reason"]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()];
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.event_id);
    for e in sorted {
        rows.push(vec![
            e.at.clone(),
            e.node_name.clone(),
            state_name(e.reported_state),
            format!("{} -> {}", state_name(e.goal_from), state_name(e.goal_to)),
            e.reason.clone(),
        ]);
    }
    render(&rows)
}

pub fn state_name(wire: i32) -> String {
    match ReplicationState::from_wire(wire) {
        Ok(state) => state.as_str().to_string(),
        Err(_) if wire == 0 => "-".to_string(),
        Err(_) => format!("?{wire}"),
    }
}

pub use pgpilot_proto::lsn::format_lsn;

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
