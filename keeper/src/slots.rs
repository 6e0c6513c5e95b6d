//! Permanent slots (the formation's `create-slot`): what this node does
//! about them, as a pure plan from what the monitor declared, what the
//! local PostgreSQL holds, and what the node it follows reported.
//!
//! - A **primary** creates each declared slot; its keeper reports each
//!   slot's position and, for a logical slot, its on-disk state file.
//! - A **standby** creates a physical slot and moves it to where its
//!   upstream holds it. A logical slot cannot be created in recovery
//!   before PostgreSQL 17, so the standby writes the upstream's state file
//!   into `pg_replslot/<name>/state` and restarts PostgreSQL once (the
//!   server reads slots at start), then moves the copy forward with
//!   `pg_replication_slot_advance` to the position the primary's consumer
//!   confirmed, never past its own replay. A copy therefore never stands
//!   later than what the consumer confirmed, and keeps the WAL (its
//!   `restart_lsn`) and, through `hot_standby_feedback` on its physical
//!   slot upstream, the catalog rows decoding from it needs.
//! - Only a copy this keeper made is trusted on a standby ([`Marks`]): a
//!   slot left from the time the node was a primary (its consumer may
//!   have confirmed WAL of a timeline the group abandoned) is dropped and
//!   copied again.
//! - A slot this keeper made that is no longer declared is dropped once
//!   no consumer is connected to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pgpilot_proto::lsn::format_lsn;
use pgpilot_proto::pb;
use serde::{Deserialize, Serialize};

pub const LOGICAL: &str = "logical";
pub const PHYSICAL: &str = "physical";

/// A replication slot the local PostgreSQL holds (pg_replication_slots).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    pub name: String,
    pub logical: bool,
    pub plugin: String,
    pub database: String,
    pub active: bool,
    pub restart_lsn: u64,
    pub confirmed_flush_lsn: u64,
    pub catalog_xmin: u64,
}

/// The permanent slots this keeper made, kept beside its state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// Every slot it created or copied (and has not dropped since).
    pub managed: BTreeSet<String>,
    /// The logical slots it copied from its upstream as a standby.
    pub copies: BTreeSet<String>,
}

/// The marks as kept in memory and beside the state file
/// (`<state file>.slots`), with the last report made.
#[derive(Debug, Default)]
pub struct Kept {
    pub marks: Marks,
    /// The report for the next loop heartbeat (`None`: nothing to say).
    pub report: Option<Vec<pb::SlotPosition>>,
}

impl Kept {
    fn path(state_file: &Path) -> std::path::PathBuf {
        crate::durable::sibling_path(state_file, ".slots")
    }

    /// The marks saved beside `state_file` (none when there is no file; an
    /// unreadable one is logged and treated as none: every slot found is
    /// then dropped and copied afresh on a standby, kept on a primary).
    pub fn load(state_file: &Path) -> Kept {
        let path = Kept::path(state_file);
        let marks = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "unreadable permanent slot marks; starting without");
                Marks::default()
            }),
            Err(_) => Marks::default(),
        };
        Kept {
            marks,
            report: None,
        }
    }

    /// Keep `marks`, written beside `state_file` when they changed.
    pub fn save_marks(
        &mut self,
        state_file: &Path,
        marks: Marks,
    ) -> Result<(), crate::durable::DurableError> {
        if marks == self.marks {
            return Ok(());
        }
        let json = serde_json::to_vec(&marks).unwrap_or_default();
        crate::durable::write_atomic(&Kept::path(state_file), &json)?;
        self.marks = marks;
        Ok(())
    }
}

/// What the plan reads of the local server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub standby: bool,
    /// The server runs with wal_level = logical.
    pub wal_level_logical: bool,
    /// The number of the oldest WAL segment in pg_wal (`None`: unknown).
    pub oldest_segment: Option<u64>,
    pub segment_size: u64,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreatePhysical {
        name: String,
    },
    CreateLogical {
        name: String,
        plugin: String,
        database: String,
    },
    /// Write the upstream's state file as this node's copy (the server
    /// reads it at its next start).
    Copy {
        name: String,
        state: Vec<u8>,
    },
    /// pg_replication_slot_advance to `to`, never past the local replay
    /// (a logical slot from its own database).
    Advance {
        name: String,
        database: Option<String>,
        to: u64,
    },
    Drop {
        name: String,
    },
}

impl Step {
    /// The slot it acts on.
    pub fn slot_name(&self) -> &str {
        match self {
            Step::CreatePhysical { name }
            | Step::CreateLogical { name, .. }
            | Step::Copy { name, .. }
            | Step::Advance { name, .. }
            | Step::Drop { name } => name,
        }
    }
}

/// What to do, why some slots cannot be held, and the marks after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// A copy was written: restart PostgreSQL once, after the steps.
    pub restart: bool,
    /// Per declared slot, why it is not held (or cannot move) now.
    pub problems: BTreeMap<String, String>,
    pub marks: Marks,
}

/// The plan for `declared` slots, given the `local` ones, the `upstream`
/// node's report (standbys) and this keeper's `marks`.
pub fn plan(
    facts: Facts,
    declared: &[pb::PermanentSlot],
    local: &[Local],
    upstream: &[pb::SlotPosition],
    marks: &Marks,
) -> Plan {
    let mut out = Plan {
        marks: marks.clone(),
        ..Plan::default()
    };
    for d in declared {
        let here = local.iter().find(|l| l.name == d.name);
        let logical = d.kind == LOGICAL;
        let from = upstream.iter().find(|p| p.name == d.name);
        if let Some(l) = here {
            if !matches_declaration(l, d) {
                if out.marks.managed.contains(&d.name) && !l.active {
                    out.drop_slot(&d.name);
                } else {
                    out.problem(&d.name, format!(
                        "this node holds a {} slot named {} that is not the one declared: drop it (pg_drop_replication_slot) or declare another name",
                        if l.logical { LOGICAL } else { PHYSICAL },
                        d.name
                    ));
                }
                continue;
            }
        }
        if !facts.standby {
            out.primary(d, here, logical, facts);
        } else if !logical {
            out.standby_physical(d, here, from);
        } else {
            out.standby_logical(d, here, from, facts);
        }
    }
    // Slots this keeper made that are no longer declared.
    for name in marks.managed.clone() {
        if declared.iter().any(|d| d.name == name) {
            continue;
        }
        match local.iter().find(|l| l.name == name) {
            None => out.forget(&name),
            // A consumer still streams: dropped once it disconnects.
            Some(l) if l.active => {}
            Some(_) => out.drop_slot(&name),
        }
    }
    out
}

/// `local` is the slot `d` declares (kind, and a logical slot's plugin and
/// database).
fn matches_declaration(local: &Local, d: &pb::PermanentSlot) -> bool {
    if d.kind == LOGICAL {
        local.logical && local.plugin == d.plugin && local.database == d.database
    } else {
        !local.logical
    }
}

impl Plan {
    fn problem(&mut self, name: &str, why: String) {
        self.problems.insert(name.to_string(), why);
    }

    fn drop_slot(&mut self, name: &str) {
        self.steps.push(Step::Drop {
            name: name.to_string(),
        });
        self.forget(name);
    }

    fn forget(&mut self, name: &str) {
        self.marks.managed.remove(name);
        self.marks.copies.remove(name);
    }

    fn primary(&mut self, d: &pb::PermanentSlot, here: Option<&Local>, logical: bool, f: Facts) {
        // A copy held as a standby is this primary's slot now.
        self.marks.copies.remove(&d.name);
        if here.is_some() {
            self.marks.managed.insert(d.name.clone());
            return;
        }
        if logical && !f.wal_level_logical {
            self.problem(&d.name, not_logical());
            return;
        }
        self.marks.managed.insert(d.name.clone());
        self.steps.push(if logical {
            Step::CreateLogical {
                name: d.name.clone(),
                plugin: d.plugin.clone(),
                database: d.database.clone(),
            }
        } else {
            Step::CreatePhysical {
                name: d.name.clone(),
            }
        });
    }

    fn standby_physical(
        &mut self,
        d: &pb::PermanentSlot,
        here: Option<&Local>,
        from: Option<&pb::SlotPosition>,
    ) {
        self.marks.managed.insert(d.name.clone());
        let Some(l) = here else {
            self.steps.push(Step::CreatePhysical {
                name: d.name.clone(),
            });
            return;
        };
        if let Some(p) = from.filter(|p| p.restart_lsn > l.restart_lsn) {
            self.steps.push(Step::Advance {
                name: d.name.clone(),
                database: None,
                to: p.restart_lsn,
            });
        }
    }

    fn standby_logical(
        &mut self,
        d: &pb::PermanentSlot,
        here: Option<&Local>,
        from: Option<&pb::SlotPosition>,
        f: Facts,
    ) {
        if let Some(l) = here {
            if !self.marks.copies.contains(&d.name) {
                // Not a copy this keeper made (left from when this node
                // was a primary): it may stand past what the group kept.
                if l.active {
                    self.problem(&d.name, format!(
                        "a consumer is connected to slot {} on this standby; it is copied afresh once it disconnects",
                        d.name
                    ));
                } else {
                    self.drop_slot(&d.name);
                    self.problem(
                        &d.name,
                        "dropped the slot left from when this node was a primary; copying it afresh from the upstream".into(),
                    );
                }
                return;
            }
            if let Some(p) = from.filter(|p| p.confirmed_flush_lsn > l.confirmed_flush_lsn) {
                self.steps.push(Step::Advance {
                    name: d.name.clone(),
                    database: Some(d.database.clone()),
                    to: p.confirmed_flush_lsn,
                });
            }
            return;
        }
        if !f.wal_level_logical {
            self.problem(&d.name, not_logical());
            return;
        }
        let Some(p) = from.filter(|p| !p.state.is_empty() && p.restart_lsn > 0) else {
            self.problem(
                &d.name,
                "waiting for the node this standby follows to report the slot".into(),
            );
            return;
        };
        if let Some(oldest) = f.oldest_segment.filter(|_| f.segment_size > 0) {
            let needed = p.restart_lsn / f.segment_size;
            if needed < oldest {
                self.problem(&d.name, format!(
                    "this standby no longer holds the WAL from {} the slot needs: it is copied once the consumer confirms past the WAL this standby holds",
                    format_lsn(p.restart_lsn)
                ));
                return;
            }
        }
        self.steps.push(Step::Copy {
            name: d.name.clone(),
            state: p.state.clone(),
        });
        self.restart = true;
        self.marks.managed.insert(d.name.clone());
        self.marks.copies.insert(d.name.clone());
    }
}

fn not_logical() -> String {
    "this node does not run with wal_level = logical yet: restart --all --pending-only applies it"
        .into()
}

/// The report of the `declared` slots from what the server holds now,
/// the plan's problems and the step errors; a primary adds each logical
/// slot's state file (`state_of`).
pub fn report(
    declared: &[pb::PermanentSlot],
    local: &[Local],
    problems: &BTreeMap<String, String>,
    mut state_of: impl FnMut(&str) -> Option<Vec<u8>>,
    primary: bool,
) -> Vec<pb::SlotPosition> {
    declared
        .iter()
        .map(|d| {
            let l = local
                .iter()
                .find(|l| l.name == d.name && matches_declaration(l, d));
            pb::SlotPosition {
                name: d.name.clone(),
                kind: d.kind.clone(),
                restart_lsn: l.map_or(0, |l| l.restart_lsn),
                confirmed_flush_lsn: l.map_or(0, |l| l.confirmed_flush_lsn),
                catalog_xmin: l.map_or(0, |l| l.catalog_xmin),
                active: l.is_some_and(|l| l.active),
                state: match l {
                    Some(l) if primary && l.logical => state_of(&d.name).unwrap_or_default(),
                    _ => Vec::new(),
                },
                problem: problems.get(&d.name).cloned().unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn facts(standby: bool) -> Facts {
        Facts {
            standby,
            wal_level_logical: true,
            oldest_segment: Some(1),
            segment_size: SEG,
        }
    }

    fn cdc() -> pb::PermanentSlot {
        pb::PermanentSlot {
            name: "cdc".into(),
            kind: LOGICAL.into(),
            plugin: "test_decoding".into(),
            database: "app".into(),
        }
    }

    fn archive() -> pb::PermanentSlot {
        pb::PermanentSlot {
            name: "archive".into(),
            kind: PHYSICAL.into(),
            ..Default::default()
        }
    }

    fn local_cdc(confirmed: u64) -> Local {
        Local {
            name: "cdc".into(),
            logical: true,
            plugin: "test_decoding".into(),
            database: "app".into(),
            restart_lsn: SEG * 2,
            confirmed_flush_lsn: confirmed,
            ..Default::default()
        }
    }

    fn upstream(confirmed: u64) -> pb::SlotPosition {
        pb::SlotPosition {
            name: "cdc".into(),
            kind: LOGICAL.into(),
            restart_lsn: SEG * 2,
            confirmed_flush_lsn: confirmed,
            state: vec![1, 2, 3],
            ..Default::default()
        }
    }

    fn marks(managed: &[&str], copies: &[&str]) -> Marks {
        Marks {
            managed: managed.iter().map(|s| s.to_string()).collect(),
            copies: copies.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_primary_creates_what_is_declared_and_manages_it() {
        let p = plan(
            facts(false),
            &[cdc(), archive()],
            &[],
            &[],
            &Marks::default(),
        );
        assert_eq!(
            p.steps,
            vec![
                Step::CreateLogical {
                    name: "cdc".into(),
                    plugin: "test_decoding".into(),
                    database: "app".into()
                },
                Step::CreatePhysical {
                    name: "archive".into()
                },
            ]
        );
        assert_eq!(p.marks, marks(&["archive", "cdc"], &[]));
        assert!(!p.restart);
    }

    #[test]
    fn a_primary_without_wal_level_logical_says_so() {
        let f = Facts {
            wal_level_logical: false,
            ..facts(false)
        };
        let p = plan(f, &[cdc()], &[], &[], &Marks::default());
        assert!(p.steps.is_empty());
        assert!(p.problems["cdc"].contains("wal_level = logical"));
    }

    #[test]
    fn a_promoted_standby_keeps_its_copies_as_its_own_slots() {
        let m = marks(&["cdc"], &["cdc"]);
        let p = plan(facts(false), &[cdc()], &[local_cdc(SEG * 3)], &[], &m);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(p.marks, marks(&["cdc"], &[]));
    }

    #[test]
    fn a_standby_copies_a_logical_slot_and_restarts_once() {
        let p = plan(
            facts(true),
            &[cdc()],
            &[],
            &[upstream(SEG * 3)],
            &Marks::default(),
        );
        assert_eq!(
            p.steps,
            vec![Step::Copy {
                name: "cdc".into(),
                state: vec![1, 2, 3]
            }]
        );
        assert!(p.restart);
        assert_eq!(p.marks, marks(&["cdc"], &["cdc"]));
    }

    #[test]
    fn a_standby_moves_its_copy_forward_only() {
        let m = marks(&["cdc"], &["cdc"]);
        let p = plan(
            facts(true),
            &[cdc()],
            &[local_cdc(SEG * 3)],
            &[upstream(SEG * 4)],
            &m,
        );
        assert_eq!(
            p.steps,
            vec![Step::Advance {
                name: "cdc".into(),
                database: Some("app".into()),
                to: SEG * 4
            }]
        );
        assert!(!p.restart);
        // Behind or level with the copy: nothing.
        let p = plan(
            facts(true),
            &[cdc()],
            &[local_cdc(SEG * 3)],
            &[upstream(SEG * 3)],
            &m,
        );
        assert!(p.steps.is_empty());
    }

    #[test]
    fn a_standby_drops_a_slot_it_did_not_copy_and_copies_it_afresh() {
        // The old primary rejoined as a standby: its own slot may stand
        // past the new primary's history.
        let m = marks(&["cdc"], &[]);
        let p = plan(
            facts(true),
            &[cdc()],
            &[local_cdc(SEG * 9)],
            &[upstream(SEG * 3)],
            &m,
        );
        assert_eq!(p.steps, vec![Step::Drop { name: "cdc".into() }]);
        assert!(!p.marks.copies.contains("cdc"));
        assert!(p.problems["cdc"].contains("copying it afresh"));
        // Next loop: gone, copied.
        let p = plan(facts(true), &[cdc()], &[], &[upstream(SEG * 3)], &p.marks);
        assert!(matches!(p.steps[..], [Step::Copy { .. }]));
    }

    #[test]
    fn a_standby_waits_for_the_upstream_report_and_for_wal_it_holds() {
        let p = plan(facts(true), &[cdc()], &[], &[], &Marks::default());
        assert!(p.steps.is_empty());
        assert!(p.problems["cdc"].contains("waiting"));
        let f = Facts {
            oldest_segment: Some(5),
            ..facts(true)
        };
        let p = plan(f, &[cdc()], &[], &[upstream(SEG * 3)], &Marks::default());
        assert!(p.steps.is_empty());
        assert!(p.problems["cdc"].contains("no longer holds the WAL"));
        assert!(!p.restart);
    }

    #[test]
    fn a_standby_keeps_physical_slots_where_the_upstream_has_them() {
        let up = pb::SlotPosition {
            name: "archive".into(),
            kind: PHYSICAL.into(),
            restart_lsn: SEG * 5,
            ..Default::default()
        };
        let p = plan(
            facts(true),
            &[archive()],
            &[],
            std::slice::from_ref(&up),
            &Marks::default(),
        );
        assert_eq!(
            p.steps,
            vec![Step::CreatePhysical {
                name: "archive".into()
            }]
        );
        let here = Local {
            name: "archive".into(),
            restart_lsn: SEG * 4,
            ..Default::default()
        };
        let p = plan(facts(true), &[archive()], &[here], &[up], &p.marks);
        assert_eq!(
            p.steps,
            vec![Step::Advance {
                name: "archive".into(),
                database: None,
                to: SEG * 5
            }]
        );
    }

    #[test]
    fn slots_no_longer_declared_are_dropped_once_inactive() {
        let m = marks(&["cdc", "old"], &["cdc"]);
        let mut busy = local_cdc(SEG * 3);
        busy.active = true;
        let p = plan(facts(false), &[], &[busy], &[], &m);
        assert!(p.steps.is_empty(), "an active slot is kept for now");
        assert!(p.marks.managed.contains("cdc"));
        assert!(!p.marks.managed.contains("old"), "gone already: forgotten");
        let p = plan(facts(false), &[], &[local_cdc(SEG * 3)], &[], &m);
        assert_eq!(p.steps, vec![Step::Drop { name: "cdc".into() }]);
        assert_eq!(p.marks, Marks::default());
    }

    #[test]
    fn a_foreign_slot_of_the_same_name_is_never_touched() {
        let mut other = local_cdc(SEG);
        other.plugin = "pgoutput".into();
        let p = plan(facts(false), &[cdc()], &[other], &[], &Marks::default());
        assert!(p.steps.is_empty());
        assert!(p.problems["cdc"].contains("not the one declared"));
    }

    #[test]
    fn the_report_names_every_declared_slot_with_the_primary_state() {
        let problems = BTreeMap::from([("archive".to_string(), "no".to_string())]);
        let r = report(
            &[cdc(), archive()],
            &[local_cdc(SEG * 3)],
            &problems,
            |_| Some(vec![9]),
            true,
        );
        assert_eq!(r[0].confirmed_flush_lsn, SEG * 3);
        assert_eq!(r[0].state, vec![9]);
        assert_eq!(r[1].restart_lsn, 0);
        assert_eq!(r[1].problem, "no");
        let r = report(
            &[cdc()],
            &[local_cdc(SEG * 3)],
            &problems,
            |_| Some(vec![9]),
            false,
        );
        assert!(r[0].state.is_empty(), "standbys send no state");
    }
}
