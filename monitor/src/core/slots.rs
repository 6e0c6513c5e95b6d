//! Permanent replication slots (`create-slot`, `drop-slot`): declared on a
//! formation, created by each group's primary, copied to its standbys and
//! moved forward there by their keepers (see the keeper's `slots`), so a
//! logical consumer finds its slot on whichever node is promoted.
//!
//! Here: what a declaration may be, the formation settings it needs
//! (`wal_level = logical` for a logical slot, `hot_standby_feedback` left
//! on so the primary keeps the catalog rows the standbys' copies need), and
//! the JSON the monitor keeps of the slots and of each node's report.

use serde::{Deserialize, Serialize};

use super::Refusal;

/// The event kinds of a slot declared and removed.
pub const CREATED: &str = "slot_created";
pub const DROPPED: &str = "slot_dropped";

/// Longest name PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_NAME: usize = 63;
/// Prefix of the slots the keepers keep for the group's own nodes.
const RESERVED_PREFIX: &str = "pgpilot_";

pub const PHYSICAL: &str = "physical";
pub const LOGICAL: &str = "logical";

/// A permanent slot as declared (stored in `formation.permanent_slots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declared {
    pub name: String,
    /// [`PHYSICAL`] or [`LOGICAL`].
    pub kind: String,
    /// Logical only: the output plugin and the database it decodes.
    #[serde(default)]
    pub plugin: String,
    #[serde(default)]
    pub database: String,
}

impl Declared {
    pub fn is_logical(&self) -> bool {
        self.kind == LOGICAL
    }

    /// How `show-slots` and the events name it.
    pub fn describe(&self) -> String {
        if self.is_logical() {
            format!(
                "logical slot {} (plugin {}, database {})",
                self.name, self.plugin, self.database
            )
        } else {
            format!("physical slot {}", self.name)
        }
    }
}

/// A slot name PostgreSQL accepts: lower-case letters, digits and `_`.
pub fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Check a declaration against the formation's slots `existing` and its
/// parameters (name, value); the slot as stored.
pub fn check_create(
    formation: &str,
    slot: Declared,
    existing: &[Declared],
    parameters: &[(String, String)],
) -> Result<Declared, Refusal> {
    let refuse = |why: String| Err(Refusal::Slot(why));
    if !valid_slot_name(&slot.name) {
        return refuse(format!(
            "{} is not a replication slot name: use lower-case letters, digits and _, at most {MAX_NAME} bytes",
            crate::names::quote(&slot.name)
        ));
    }
    if slot.name.starts_with(RESERVED_PREFIX) {
        return refuse(format!(
            "slot names starting with {RESERVED_PREFIX} are the keepers' own (one per node): choose another name"
        ));
    }
    if let Some(old) = existing.iter().find(|s| s.name == slot.name) {
        return refuse(format!(
            "formation {formation} already has the {}: drop-slot {} first to declare it anew",
            old.describe(),
            slot.name
        ));
    }
    match slot.kind.as_str() {
        PHYSICAL => {
            if !slot.plugin.is_empty() || !slot.database.is_empty() {
                return refuse(
                    "a physical slot has no plugin nor database: leave them out, or declare a logical slot".into(),
                );
            }
        }
        LOGICAL => {
            if !valid_identifier(&slot.plugin) {
                return refuse(format!(
                    "plugin {} is not an output plugin's name (letters, digits and _, e.g. pgoutput or test_decoding)",
                    crate::names::quote(&slot.plugin)
                ));
            }
            if slot.database.is_empty()
                || slot.database.len() > MAX_NAME
                || slot.database.contains('\0')
            {
                return refuse(format!(
                    "database {} is not a database name: name the database the slot decodes (at most {MAX_NAME} bytes)",
                    crate::names::quote(&slot.database)
                ));
            }
            let level = parameter(parameters, "wal_level").unwrap_or("replica");
            if !level.eq_ignore_ascii_case(LOGICAL) {
                return refuse(format!(
                    "a logical slot needs wal_level = logical and formation {formation} runs with {level}: run set-parameter wal_level logical --formation {formation}, then restart --all --pending-only, then create the slot"
                ));
            }
            if parameter(parameters, "hot_standby_feedback").is_some_and(|v| v == "off") {
                return refuse(format!(
                    "formation {formation} sets hot_standby_feedback off: the standbys' copies of a logical slot need it on to keep their catalog rows; reset-parameter hot_standby_feedback first"
                ));
            }
        }
        other => {
            return refuse(format!(
                "{} is not a kind of slot: physical or logical",
                crate::names::quote(other)
            ))
        }
    }
    Ok(slot)
}

/// The formation's slots without `name`, or why it cannot be dropped.
pub fn check_drop(
    formation: &str,
    name: &str,
    existing: &[Declared],
) -> Result<(Declared, Vec<Declared>), Refusal> {
    let Some(found) = existing.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = existing.iter().map(|s| s.name.as_str()).collect();
        return Err(Refusal::UnknownSlot {
            formation: formation.into(),
            name: name.into(),
            known: known.iter().map(|s| s.to_string()).collect(),
        });
    };
    let rest = existing
        .iter()
        .filter(|s| s.name != name)
        .cloned()
        .collect();
    Ok((found.clone(), rest))
}

/// A parameter change the formation's slots could not live with: turning
/// `wal_level` below logical, or `hot_standby_feedback` off, while a
/// logical slot is declared. `value` None: a reset (to pgpilot's default:
/// `replica`, `on`).
pub fn check_parameter(
    formation: &str,
    name: &str,
    value: Option<&str>,
    existing: &[Declared],
) -> Result<(), Refusal> {
    let Some(logical) = existing.iter().find(|s| s.is_logical()) else {
        return Ok(());
    };
    let breaks = if name.eq_ignore_ascii_case("wal_level") {
        !value.is_some_and(|v| v.eq_ignore_ascii_case(LOGICAL))
    } else if name.eq_ignore_ascii_case("hot_standby_feedback") {
        value == Some("off")
    } else {
        false
    };
    if !breaks {
        return Ok(());
    }
    Err(Refusal::Slot(format!(
        "formation {formation} declares the {}, which needs wal_level = logical and hot_standby_feedback on: drop-slot {} first",
        logical.describe(),
        logical.name
    )))
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where a node holds one permanent slot, as its keeper reported it
/// (stored in `node.slots`; a primary's logical slots carry their state
/// file, hex-encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub name: String,
    pub kind: String,
    pub restart_lsn: u64,
    pub confirmed_flush_lsn: u64,
    pub catalog_xmin: u64,
    pub active: bool,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub problem: String,
}

/// Most permanent slots a keeper may report in one heartbeat.
pub const MAX_REPORTED: usize = 64;
/// Largest slot state file accepted (PostgreSQL 15 writes ~200 bytes).
pub const MAX_STATE: usize = 4096;
/// Longest problem text kept.
pub const MAX_PROBLEM: usize = 500;

impl Position {
    /// A keeper's report, checked.
    pub fn from_wire(p: &pgpilot_proto::pb::SlotPosition) -> Result<Position, String> {
        if !valid_slot_name(&p.name) {
            return Err(format!(
                "a reported slot is named {}, not a replication slot name",
                crate::names::quote(&p.name)
            ));
        }
        if p.kind != PHYSICAL && p.kind != LOGICAL {
            return Err(format!(
                "slot {} is reported of kind {}: physical or logical",
                p.name,
                crate::names::quote(&p.kind)
            ));
        }
        if p.state.len() > MAX_STATE {
            return Err(format!(
                "the state of slot {} is {} bytes: at most {MAX_STATE}",
                p.name,
                p.state.len()
            ));
        }
        let mut problem = p.problem.clone();
        if problem.len() > MAX_PROBLEM {
            let mut end = MAX_PROBLEM;
            while !problem.is_char_boundary(end) {
                end -= 1;
            }
            problem.truncate(end);
        }
        Ok(Position {
            name: p.name.clone(),
            kind: p.kind.clone(),
            restart_lsn: p.restart_lsn,
            confirmed_flush_lsn: p.confirmed_flush_lsn,
            catalog_xmin: p.catalog_xmin,
            active: p.active,
            state: hex(&p.state),
            problem,
        })
    }

    /// As sent on the wire; the state file only when `with_state`.
    pub fn to_wire(&self, with_state: bool) -> pgpilot_proto::pb::SlotPosition {
        pgpilot_proto::pb::SlotPosition {
            name: self.name.clone(),
            kind: self.kind.clone(),
            restart_lsn: self.restart_lsn,
            confirmed_flush_lsn: self.confirmed_flush_lsn,
            catalog_xmin: self.catalog_xmin,
            active: self.active,
            state: if with_state {
                unhex(&self.state).unwrap_or_default()
            } else {
                Vec::new()
            },
            problem: self.problem.clone(),
        }
    }
}

impl From<&Declared> for pgpilot_proto::pb::PermanentSlot {
    fn from(d: &Declared) -> Self {
        pgpilot_proto::pb::PermanentSlot {
            name: d.name.clone(),
            kind: d.kind.clone(),
            plugin: d.plugin.clone(),
            database: d.database.clone(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(name: &str) -> Declared {
        Declared {
            name: name.into(),
            kind: LOGICAL.into(),
            plugin: "test_decoding".into(),
            database: "app".into(),
        }
    }

    fn logical_level() -> Vec<(String, String)> {
        vec![("wal_level".into(), "logical".into())]
    }

    fn refused(r: Result<impl std::fmt::Debug, Refusal>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_logical_slot_needs_wal_level_logical() {
        let why = refused(check_create("f", logical("cdc"), &[], &[]));
        assert!(why.contains("set-parameter wal_level logical"), "{why}");
        let replica = vec![("wal_level".into(), "replica".into())];
        assert!(check_create("f", logical("cdc"), &[], &replica).is_err());
        assert_eq!(
            check_create("f", logical("cdc"), &[], &logical_level()).unwrap(),
            logical("cdc")
        );
    }

    #[test]
    fn a_logical_slot_needs_hot_standby_feedback() {
        let mut params = logical_level();
        params.push(("hot_standby_feedback".into(), "off".into()));
        let why = refused(check_create("f", logical("cdc"), &[], &params));
        assert!(why.contains("hot_standby_feedback"), "{why}");
    }

    #[test]
    fn names_kinds_and_duplicates_are_checked() {
        let params = logical_level();
        for bad in ["", "Cdc", "a-b", "pgpilot_x", &"x".repeat(64)] {
            let mut slot = logical("x");
            slot.name = bad.into();
            assert!(check_create("f", slot, &[], &params).is_err(), "{bad:?}");
        }
        let mut slot = logical("cdc");
        slot.plugin = "bad plugin".into();
        assert!(check_create("f", slot, &[], &params).is_err());
        let mut slot = logical("cdc");
        slot.database = String::new();
        assert!(check_create("f", slot, &[], &params).is_err());
        let mut slot = logical("cdc");
        slot.kind = "temporary".into();
        assert!(check_create("f", slot, &[], &params).is_err());
        let physical = Declared {
            name: "archive".into(),
            kind: PHYSICAL.into(),
            plugin: String::new(),
            database: String::new(),
        };
        // A physical slot needs no wal_level.
        assert!(check_create("f", physical.clone(), &[], &[]).is_ok());
        let mut with_plugin = physical.clone();
        with_plugin.plugin = "pgoutput".into();
        assert!(check_create("f", with_plugin, &[], &[]).is_err());
        let why = refused(check_create(
            "f",
            logical("cdc"),
            &[logical("cdc")],
            &params,
        ));
        assert!(why.contains("drop-slot cdc"), "{why}");
    }

    #[test]
    fn dropping_names_a_declared_slot() {
        let (dropped, rest) = check_drop("f", "a", &[logical("a"), logical("b")]).unwrap();
        assert_eq!(dropped.name, "a");
        assert_eq!(rest, vec![logical("b")]);
        let why = refused(check_drop("f", "c", &[logical("a")]));
        assert!(why.contains("c") && why.contains("a"), "{why}");
        assert!(refused(check_drop("f", "c", &[])).contains("no permanent slot"));
    }

    #[test]
    fn parameters_a_logical_slot_needs_cannot_be_turned_off() {
        let slots = [logical("cdc")];
        assert!(check_parameter("f", "wal_level", Some("replica"), &slots).is_err());
        assert!(check_parameter("f", "WAL_LEVEL", None, &slots).is_err());
        assert!(check_parameter("f", "wal_level", Some("logical"), &slots).is_ok());
        assert!(check_parameter("f", "hot_standby_feedback", Some("off"), &slots).is_err());
        assert!(check_parameter("f", "hot_standby_feedback", None, &slots).is_ok());
        assert!(check_parameter("f", "work_mem", Some("8MB"), &slots).is_ok());
        assert!(check_parameter("f", "wal_level", Some("replica"), &[]).is_ok());
    }

    #[test]
    fn reports_are_checked_and_keep_the_state_file() {
        let wire = pgpilot_proto::pb::SlotPosition {
            name: "cdc".into(),
            kind: LOGICAL.into(),
            restart_lsn: 10,
            confirmed_flush_lsn: 20,
            catalog_xmin: 7,
            active: true,
            state: vec![0, 1, 254, 255],
            problem: "é".repeat(400),
        };
        let p = Position::from_wire(&wire).unwrap();
        assert_eq!(p.state, "0001feff");
        assert!(p.problem.len() <= MAX_PROBLEM);
        assert_eq!(p.to_wire(true).state, wire.state);
        assert!(p.to_wire(false).state.is_empty());
        let mut bad = wire.clone();
        bad.name = "X".into();
        assert!(Position::from_wire(&bad).is_err());
        let mut bad = wire.clone();
        bad.kind = "other".into();
        assert!(Position::from_wire(&bad).is_err());
        let mut bad = wire;
        bad.state = vec![0; MAX_STATE + 1];
        assert!(Position::from_wire(&bad).is_err());
    }
}
