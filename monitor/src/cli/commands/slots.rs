//! `create-slot`, `drop-slot` and `show-slots`: the monitor checks and
//! stores the declaration; the CLI waits until every node that answers
//! holds the slot (or dropped it), and shows where each node holds each
//! slot.

use pgpilot_proto::lsn::format_lsn;
use pgpilot_proto::pb::{self, FormationState};
use serde::Serialize;

use super::super::args::Wait;
use super::super::error::CliError;
use super::super::wait::wait_until;
use super::{print_view, Operator};

/// `show-slots --json`.
#[derive(Debug, Serialize)]
struct SlotsJson {
    formation: String,
    slots: Vec<SlotJson>,
}

#[derive(Debug, Serialize)]
struct SlotJson {
    name: String,
    kind: String,
    plugin: String,
    database: String,
    nodes: Vec<HeldJson>,
}

#[derive(Debug, Serialize)]
struct HeldJson {
    node: String,
    /// The node holds the slot and moves it as it should.
    held: bool,
    restart_lsn: Option<String>,
    confirmed_flush_lsn: Option<String>,
    catalog_xmin: Option<u64>,
    active: bool,
    /// Why it does not hold it (or cannot move it); empty when fine.
    problem: String,
}

impl Operator {
    pub(super) async fn create_slot(
        &mut self,
        slot: pb::PermanentSlot,
        wait: Wait,
    ) -> Result<(), CliError> {
        let name = slot.name.clone();
        let message = self.client.create_slot(&self.formation, slot).await?;
        println!("{message}");
        if wait.no_wait {
            return Ok(());
        }
        let what = format!("every node holding slot {name}");
        wait_until(
            &mut self.client,
            &self.formation,
            wait.timeout,
            &what,
            |s| held_everywhere(s, &name),
        )
        .await?;
        println!("slot {name} held by every node");
        Ok(())
    }

    pub(super) async fn drop_slot(&mut self, name: &str, wait: Wait) -> Result<(), CliError> {
        let message = self.client.drop_slot(&self.formation, name).await?;
        println!("{message}");
        if wait.no_wait {
            return Ok(());
        }
        let what = format!("every node dropping slot {name}");
        wait_until(
            &mut self.client,
            &self.formation,
            wait.timeout,
            &what,
            |s| dropped_everywhere(s, name),
        )
        .await?;
        println!("slot {name} dropped by every node");
        Ok(())
    }

    pub(super) async fn show_slots(&mut self, json: bool) -> Result<(), CliError> {
        let state = self.state().await?;
        print_view(json, || view(&state), || text(&state));
        Ok(())
    }
}

/// What node `n` last reported of slot `name`.
fn position<'a>(n: &'a pb::NodeStatus, name: &str) -> Option<&'a pb::SlotPosition> {
    n.slots.iter().find(|p| p.name == name)
}

/// Node `n` holds slot `name` and reports no problem with it.
pub(crate) fn holds(n: &pb::NodeStatus, name: &str) -> bool {
    position(n, name).is_some_and(|p| p.restart_lsn > 0 && p.problem.is_empty())
}

/// Every node that answers holds slot `name`.
fn held_everywhere(state: &FormationState, name: &str) -> bool {
    state
        .nodes
        .iter()
        .filter(|n| !n.unreachable)
        .all(|n| holds(n, name))
}

/// No node that answers reports slot `name` any more.
fn dropped_everywhere(state: &FormationState, name: &str) -> bool {
    state
        .nodes
        .iter()
        .filter(|n| !n.unreachable)
        .all(|n| position(n, name).is_none())
}

fn view(state: &FormationState) -> SlotsJson {
    SlotsJson {
        formation: state.formation.clone(),
        slots: state
            .permanent_slots
            .iter()
            .map(|s| SlotJson {
                name: s.name.clone(),
                kind: s.kind.clone(),
                plugin: s.plugin.clone(),
                database: s.database.clone(),
                nodes: state
                    .nodes
                    .iter()
                    .map(|n| {
                        let p = position(n, &s.name);
                        let lsn = |v: u64| (v > 0).then(|| format_lsn(v));
                        HeldJson {
                            node: n.name.clone(),
                            held: holds(n, &s.name),
                            restart_lsn: p.and_then(|p| lsn(p.restart_lsn)),
                            confirmed_flush_lsn: p.and_then(|p| lsn(p.confirmed_flush_lsn)),
                            catalog_xmin: p.map(|p| p.catalog_xmin).filter(|&x| x > 0),
                            active: p.is_some_and(|p| p.active),
                            problem: p.map(|p| p.problem.clone()).unwrap_or_default(),
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn text(state: &FormationState) -> String {
    if state.permanent_slots.is_empty() {
        return "no permanent slots (create-slot NAME --plugin PLUGIN --database DB)\n".into();
    }
    let width = state.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in &state.permanent_slots {
        out.push_str(&describe(s));
        out.push('\n');
        for n in &state.nodes {
            let line = match position(n, &s.name) {
                None => "not reported yet".to_string(),
                Some(p) if p.restart_lsn == 0 => format!("not held: {}", p.problem),
                Some(p) => {
                    let mut line = format!("restart {}", format_lsn(p.restart_lsn));
                    if s.kind == "logical" {
                        line.push_str(&format!(
                            "  confirmed {}",
                            format_lsn(p.confirmed_flush_lsn)
                        ));
                    }
                    if p.active {
                        line.push_str("  active");
                    }
                    if !p.problem.is_empty() {
                        line.push_str(&format!("  ({})", p.problem));
                    }
                    line
                }
            };
            out.push_str(&format!("  {:<width$}  {line}\n", n.name));
        }
    }
    out
}

/// One line naming a declared slot.
pub(crate) fn describe(s: &pb::PermanentSlot) -> String {
    if s.kind == "logical" {
        format!(
            "{}  logical  plugin {}  database {}",
            s.name, s.plugin, s.database
        )
    } else {
        format!("{}  physical", s.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FormationState {
        FormationState {
            formation: "default".into(),
            permanent_slots: vec![pb::PermanentSlot {
                name: "cdc".into(),
                kind: "logical".into(),
                plugin: "test_decoding".into(),
                database: "app".into(),
            }],
            nodes: vec![
                pb::NodeStatus {
                    name: "node1".into(),
                    slots: vec![pb::SlotPosition {
                        name: "cdc".into(),
                        kind: "logical".into(),
                        restart_lsn: 0x3016490,
                        confirmed_flush_lsn: 0x3016578,
                        catalog_xmin: 724,
                        active: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                pb::NodeStatus {
                    name: "node2".into(),
                    slots: vec![pb::SlotPosition {
                        name: "cdc".into(),
                        kind: "logical".into(),
                        problem: "waiting for the primary's report".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_slot_is_held_once_every_node_that_answers_reports_it_without_problem() {
        let mut s = state();
        assert!(!held_everywhere(&s, "cdc"));
        s.nodes[1].unreachable = true;
        assert!(held_everywhere(&s, "cdc"));
        assert!(!dropped_everywhere(&s, "cdc"));
        s.nodes[0].slots.clear();
        assert!(dropped_everywhere(&s, "cdc"));
    }

    #[test]
    fn the_view_shows_each_node_position_or_problem() {
        let out = text(&state());
        assert!(
            out.contains("cdc  logical  plugin test_decoding  database app"),
            "{out}"
        );
        assert!(
            out.contains("node1  restart 0/3016490  confirmed 0/3016578  active"),
            "{out}"
        );
        assert!(
            out.contains("node2  not held: waiting for the primary's report"),
            "{out}"
        );
        let json = view(&state());
        assert!(json.slots[0].nodes[0].held);
        assert_eq!(
            json.slots[0].nodes[0].confirmed_flush_lsn.as_deref(),
            Some("0/3016578")
        );
        assert!(!json.slots[0].nodes[1].held);
        assert!(text(&FormationState::default()).contains("no permanent slots"));
    }
}
