//! Per node and per formation gauges: the view of one node the gauges
//! show, and the pure renderer of their Prometheus text.

use std::fmt::Write as _;

use pgpilot_proto::ReplicationState as S;

use crate::fsm::Health;

/// One node as the gauges show it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub formation: String,
    pub group: i32,
    pub name: String,
    pub reported: S,
    pub goal: S,
    pub pg_running: bool,
    pub health: Health,
    /// Seconds since the last heartbeat (None: never).
    pub heartbeat_age: Option<f64>,
    pub lsn: u64,
    pub timeline: u32,
    pub candidate_priority: u32,
    /// Its formation is paused (no automatic failover).
    pub formation_paused: bool,
    /// Settings its PostgreSQL last reported pending a restart.
    pub pending_restart: u32,
}

impl NodeView {
    /// Reports a writable primary state with PostgreSQL running, and the
    /// monitor has not taken the role away (its goal is one too).
    fn is_writable_primary(&self) -> bool {
        self.pg_running && self.reported.is_writable_primary() && self.goal.is_writable_primary()
    }
}

/// Prometheus label value escaping.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Per node and per formation gauges, Prometheus text. `database_up`:
/// whether the snapshot could be read (else `nodes` is empty).
pub fn render_nodes(nodes: &[NodeView], database_up: bool) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head(
        "pgpilot_monitor_database_up",
        "1 when the monitor could read its database for this scrape, else 0.",
    );
    let _ = writeln!(f.out, "pgpilot_monitor_database_up {}", flag(database_up));

    let group = |n: &NodeView| n.group.to_string();
    type Gauge = (
        &'static str,
        &'static str,
        fn(&NodeView, &[NodeView]) -> Option<f64>,
    );
    let gauges: [Gauge; 11] = [
        ("pgpilot_node_reported_state_code", "Replication state the keeper last reported, as its protocol number (1 init … 21 dropped; see the README).", |n, _| Some(f64::from(n.reported.to_wire()))),
        ("pgpilot_node_goal_state_code", "Goal state the monitor assigned, as its protocol number.", |n, _| Some(f64::from(n.goal.to_wire()))),
        ("pgpilot_node_is_primary", "1 when the node reports a writable primary state with PostgreSQL running and its goal is one too, else 0.", |n, _| Some(flag(n.is_writable_primary()))),
        ("pgpilot_node_postgres_up", "1 when the keeper last reported PostgreSQL running, else 0.", |n, _| Some(flag(n.pg_running))),
        ("pgpilot_node_health", "The monitor's own check of the node's PostgreSQL: 1 good, 0 bad, -1 unknown (not checked yet).", |n, _| Some(match n.health { Health::Good => 1.0, Health::Bad => 0.0, Health::Unknown => -1.0 })),
        ("pgpilot_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat (absent before the first).", |n, _| n.heartbeat_age),
        ("pgpilot_node_reported_lsn_bytes", "WAL position the keeper last reported, in bytes (current LSN of a primary, received/replayed LSN of a standby).", |n, _| Some(n.lsn as f64)),
        ("pgpilot_node_replication_lag_bytes", "Bytes of WAL a running standby is behind the LSN its group's primary last reported (0 for the primary; absent while the group has no writable primary).", |n, all| lag(n, all)),
        ("pgpilot_node_timeline", "Timeline the keeper last reported.", |n, _| Some(f64::from(n.timeline))),
        ("pgpilot_node_candidate_priority", "Candidate priority (0 = never promoted).", |n, _| Some(f64::from(n.candidate_priority))),
        ("pgpilot_node_pending_restart_settings", "Settings the node's PostgreSQL last reported pending a restart (pg_settings.pending_restart); restart --all --pending-only applies them.", |n, _| Some(f64::from(n.pending_restart))),
    ];
    f.head(
        "pgpilot_node_state",
        "Always 1; the labels reported and goal name the node's states (for tables).",
    );
    for n in nodes {
        let g = group(n);
        f.sample(
            "pgpilot_node_state",
            &[
                ("formation", &n.formation),
                ("group", &g),
                ("node", &n.name),
                ("reported", n.reported.as_str()),
                ("goal", n.goal.as_str()),
            ],
            1.0,
        );
    }
    for (name, help, value) in gauges {
        f.head(name, help);
        for n in nodes {
            if let Some(v) = value(n, nodes) {
                let g = group(n);
                f.sample(
                    name,
                    &[
                        ("formation", &n.formation),
                        ("group", &g),
                        ("node", &n.name),
                    ],
                    v,
                );
            }
        }
    }

    let mut formations: Vec<&str> = nodes.iter().map(|n| n.formation.as_str()).collect();
    formations.sort_unstable();
    formations.dedup();
    f.head(
        "pgpilot_formation_nodes",
        "Nodes of the formation by reported state (every state, 0 included).",
    );
    for formation in &formations {
        for s in S::ALL {
            let count = nodes
                .iter()
                .filter(|n| n.formation == *formation && n.reported == s)
                .count();
            f.sample(
                "pgpilot_formation_nodes",
                &[("formation", formation), ("state", s.as_str())],
                count as f64,
            );
        }
    }
    f.head("pgpilot_formation_writable_primary", "1 when a node of the formation reports a writable primary state with PostgreSQL running and its goal is one too, else 0.");
    for formation in &formations {
        let any = nodes
            .iter()
            .any(|n| n.formation == *formation && n.is_writable_primary());
        f.sample(
            "pgpilot_formation_writable_primary",
            &[("formation", formation)],
            flag(any),
        );
    }
    f.head("pgpilot_formation_paused", "1 while an operator has paused the formation (pause): the monitor starts no failover in it; else 0.");
    for formation in &formations {
        let paused = nodes
            .iter()
            .any(|n| n.formation == *formation && n.formation_paused);
        f.sample(
            "pgpilot_formation_paused",
            &[("formation", formation)],
            flag(paused),
        );
    }
    out
}

fn lag(n: &NodeView, all: &[NodeView]) -> Option<f64> {
    let primary = all
        .iter()
        .find(|p| p.formation == n.formation && p.group == n.group && p.is_writable_primary())?;
    if std::ptr::eq(primary, n) || primary.name == n.name {
        return Some(0.0);
    }
    if !n.pg_running || n.reported.is_writable_primary() {
        return None;
    }
    Some(primary.lsn.saturating_sub(n.lsn) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, reported: S, lsn: u64) -> NodeView {
        NodeView {
            formation: "default".into(),
            group: 0,
            name: name.into(),
            reported,
            goal: reported,
            pg_running: true,
            health: Health::Good,
            heartbeat_age: Some(0.25),
            lsn,
            timeline: 2,
            candidate_priority: 50,
            formation_paused: false,
            pending_restart: 0,
        }
    }

    #[test]
    fn node_gauges() {
        let nodes = vec![
            node("node1", S::Primary, 5000),
            node("node2", S::Secondary, 4000),
        ];
        let text = render_nodes(&nodes, true);
        for line in [
            "pgpilot_monitor_database_up 1",
            "pgpilot_node_state{formation=\"default\",group=\"0\",node=\"node1\",reported=\"primary\",goal=\"primary\"} 1",
            "pgpilot_node_reported_state_code{formation=\"default\",group=\"0\",node=\"node2\"} 9",
            "pgpilot_node_pending_restart_settings{formation=\"default\",group=\"0\",node=\"node2\"} 0",
            "pgpilot_node_is_primary{formation=\"default\",group=\"0\",node=\"node1\"} 1",
            "pgpilot_node_is_primary{formation=\"default\",group=\"0\",node=\"node2\"} 0",
            "pgpilot_node_replication_lag_bytes{formation=\"default\",group=\"0\",node=\"node1\"} 0",
            "pgpilot_node_replication_lag_bytes{formation=\"default\",group=\"0\",node=\"node2\"} 1000",
            "pgpilot_node_heartbeat_age_seconds{formation=\"default\",group=\"0\",node=\"node2\"} 0.25",
            "pgpilot_node_timeline{formation=\"default\",group=\"0\",node=\"node1\"} 2",
            "pgpilot_formation_nodes{formation=\"default\",state=\"secondary\"} 1",
            "pgpilot_formation_nodes{formation=\"default\",state=\"catchingup\"} 0",
            "pgpilot_formation_writable_primary{formation=\"default\"} 1",
            "pgpilot_formation_paused{formation=\"default\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every family has HELP and TYPE before its samples.
        let mut described = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                described.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(described.contains(name), "{name} has no HELP");
                assert!(name.starts_with("pgpilot_"), "{name}");
            }
        }
    }

    #[test]
    fn no_primary_no_lag_and_labels_escaped() {
        let mut down = node("node1", S::Primary, 5000);
        down.pg_running = false;
        let mut odd = node("we\"ird", S::Secondary, 10);
        odd.heartbeat_age = None;
        odd.health = Health::Unknown;
        let text = render_nodes(&[down, odd], true);
        assert!(
            !text.contains("pgpilot_node_replication_lag_bytes{"),
            "{text}"
        );
        assert!(text.contains("pgpilot_formation_writable_primary{formation=\"default\"} 0"));
        assert!(text.contains("node=\"we\\\"ird\""), "{text}");
        assert!(text.contains(
            "pgpilot_node_health{formation=\"default\",group=\"0\",node=\"we\\\"ird\"} -1"
        ));
        assert!(!text.contains(
            "pgpilot_node_heartbeat_age_seconds{formation=\"default\",group=\"0\",node=\"we"
        ));
        let mut paused = node("node1", S::Primary, 5000);
        paused.formation_paused = true;
        assert!(render_nodes(&[paused], true)
            .contains("pgpilot_formation_paused{formation=\"default\"} 1"));
        // The monitor took the role away: no longer counted as the primary.
        let mut demoted = node("node1", S::Primary, 5000);
        demoted.goal = S::Demoted;
        let text = render_nodes(&[demoted], true);
        assert!(
            text.contains(
                "pgpilot_node_is_primary{formation=\"default\",group=\"0\",node=\"node1\"} 0"
            ),
            "{text}"
        );
        let empty = render_nodes(&[], false);
        assert!(empty.contains("pgpilot_monitor_database_up 0"));
    }
}
