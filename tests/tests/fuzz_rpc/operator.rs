//! The operator commands on formations and parameters (SetParameter,
//! ListParameters, ReloadFormation, CreateFormation, DropFormation,
//! ListFormations): how the fuzzer draws them, what the monitor must
//! answer to each, and the formations of the fuzzer's own.
//!
//! CreateFormation and DropFormation only ever name a formation of the
//! fuzzer's own (`fz-…`), a name refused before the database (an invalid
//! one), or `default` (which exists and is never dropped); no other call
//! names an `fz-` formation, so [`known_formation`] stays the formations
//! the nodes are registered in. Whether each `fz-` formation exists is
//! tracked: a request claims the name it works on until its answer is
//! recorded, so no two requests in flight race on one name and the answer
//! expected is exact.
//!
//! SetParameter sends settings that are harmless when accepted (work_mem,
//! statement_timeout, application_name, …), settings that need a restart
//! only with values the monitor refuses, settings the keeper or the
//! monitor manage, read-only and unknown ones: the cluster runs no node,
//! but nothing stored could stop PostgreSQL on one.

use std::collections::{BTreeMap, BTreeSet};

use pgpilot_proto::pb;
use pgpilot_sim::rng::Rng;
use tonic::Code;

use crate::calls::{lock, Call, Reply, Shared};
use crate::generator::Generator;
use crate::oracle::REFUSALS;
use crate::rules::{is_setting_name, known_formation, valid_formation, valid_name};
use crate::FORMATIONS;

/// The prefix of the formations CreateFormation and DropFormation work on.
pub(crate) const OWN_PREFIX: &str = "fz-";

/// What a setting does to the answer of SetParameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Some of its values are accepted; none needs a restart or can stop
    /// PostgreSQL.
    Settable,
    /// Needs a restart: only values the monitor refuses are sent.
    RestartInvalid,
    /// Managed by the keeper or the monitor, or read-only: always
    /// refused with FailedPrecondition.
    Managed,
    /// No setting of PostgreSQL: NotFound.
    Unknown,
}

/// The settings SetParameter names, with the values it sends.
const SETTINGS: &[(&str, Kind, &[&str])] = &[
    (
        "work_mem",
        Kind::Settable,
        &["4MB", "64kB", "4096", "1kB", "-1", "lots", "8ms", "4 MB"],
    ),
    (
        "statement_timeout",
        Kind::Settable,
        &["30s", "0", "1 h", "-5", "30MB", "soon"],
    ),
    ("application_name", Kind::Settable, &["fz-app", "", "a b c"]),
    ("jit", Kind::Settable, &["on", "off", "TRUE", "maybe", ""]),
    (
        "log_min_messages",
        Kind::Settable,
        &["warning", "DEBUG1", "loud"],
    ),
    ("TimeZone", Kind::Settable, &["UTC"]),
    ("timezone", Kind::Settable, &["UTC", "Etc/UTC"]),
    ("lock_timeout", Kind::Settable, &["5s", "0", "-1", "1e3"]),
    (
        "shared_buffers",
        Kind::RestartInvalid,
        &["lots", "1kB", "8ms", "-1"],
    ),
    (
        "max_connections",
        Kind::RestartInvalid,
        &["0", "-1", "none", "1.5e99"],
    ),
    (
        "wal_level",
        Kind::RestartInvalid,
        &["minimal", "archive", "MINIMAL"],
    ),
    ("max_wal_senders", Kind::RestartInvalid, &["-1", "many"]),
    ("port", Kind::Managed, &["5433"]),
    ("primary_conninfo", Kind::Managed, &["host=evil"]),
    ("Primary_Conninfo", Kind::Managed, &["host=evil"]),
    ("synchronous_standby_names", Kind::Managed, &["*"]),
    ("hba_file", Kind::Managed, &["/tmp/hba"]),
    ("block_size", Kind::Managed, &["8192"]),
    ("server_version", Kind::Managed, &["99"]),
    ("shared_bufers", Kind::Unknown, &["1GB"]),
    ("fz.custom", Kind::Unknown, &["1"]),
    ("pgpilot_no_such_setting", Kind::Unknown, &["on"]),
];

/// Setting names that are no setting's name (`is_setting_name` is false).
const BAD_SETTING_NAMES: &[&str] = &[
    "",
    "work mem",
    "work-mem",
    "max_connections;",
    "search_path=x",
    "wörk_mem",
    "x\0y",
    "work_mem\n",
];

fn setting(name: &str) -> Option<Kind> {
    SETTINGS
        .iter()
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, kind, _)| *kind)
}

/// The formations of the fuzzer's own, shared by the workers.
#[derive(Debug, Default)]
pub(crate) struct OwnFormations {
    /// name → whether it exists, as the recorded answers tell.
    exists: BTreeMap<String, bool>,
    /// Names a request in flight works on: no other request draws them.
    claimed: BTreeSet<String>,
    /// The number of the next fresh name.
    next: u64,
}

impl OwnFormations {
    /// A name never used, claimed (some are exactly 63 bytes long).
    fn fresh(&mut self, rng: &mut Rng) -> String {
        let mut name = format!("{OWN_PREFIX}{}", self.next);
        self.next += 1;
        if rng.chance(0.2) {
            name.push('.');
            while name.len() < 63 {
                name.push(*rng.pick(&['a', 'Z', '9', '_', '-', '.']));
            }
        }
        self.exists.insert(name.clone(), false);
        self.claimed.insert(name.clone());
        name
    }

    /// A name that exists (`exists`) or not and that no request in
    /// flight works on, claimed; else a fresh one.
    fn claim(&mut self, rng: &mut Rng, exists: bool) -> String {
        let names: Vec<&String> = self
            .exists
            .iter()
            .filter(|(n, e)| **e == exists && !self.claimed.contains(*n))
            .map(|(n, _)| n)
            .collect();
        if names.is_empty() {
            return self.fresh(rng);
        }
        let name = rng.pick(&names).to_string();
        self.claimed.insert(name.clone());
        name
    }

    /// The formations that exist, and those whose state is unknown (a
    /// request on them got no proper answer).
    pub(crate) fn existing(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let existing = self
            .exists
            .iter()
            .filter(|(_, e)| **e)
            .map(|(n, _)| n.clone())
            .collect();
        (existing, self.claimed.clone())
    }
}

/// A formation name the monitor refuses before the database.
fn invalid_formation(rng: &mut Rng) -> String {
    loop {
        let name = Generator::wild_string(rng);
        if !valid_name(&name) {
            return name;
        }
    }
}

/// One of the six operator requests (`which` below 6).
pub(crate) fn call(
    generator: &Generator,
    rng: &mut Rng,
    which: usize,
    wild: f64,
    registry: &Shared,
) -> Call {
    let w = |rng: &mut Rng| rng.chance(wild);
    match which {
        0 => {
            let (name, kind, values) = *rng.pick(SETTINGS);
            let name = if w(rng) {
                if rng.chance(0.5) {
                    rng.pick(BAD_SETTING_NAMES).to_string()
                } else {
                    Generator::wild_string(rng)
                }
            } else {
                name.to_string()
            };
            let value = if kind != Kind::RestartInvalid && w(rng) {
                Generator::wild_string(rng)
            } else {
                rng.pick(values).to_string()
            };
            Call::SetParameter(pb::SetParameterRequest {
                formation: generator.formation(rng, wild),
                name,
                value,
                reset: rng.chance(0.2),
            })
        }
        1 => Call::ListParameters(pb::ListParametersRequest {
            formation: generator.formation(rng, wild),
        }),
        2 => Call::ReloadFormation(pb::ReloadFormationRequest {
            formation: generator.formation(rng, wild),
        }),
        3 => {
            let formation = if w(rng) {
                invalid_formation(rng)
            } else {
                let own = &mut lock(registry).own;
                match rng.below(10) {
                    0..=3 => own.fresh(rng),
                    4 | 5 => own.claim(rng, true),
                    6 => own.claim(rng, false),
                    _ => rng.pick(&FORMATIONS).to_string(),
                }
            };
            Call::CreateFormation(pb::CreateFormationRequest {
                formation,
                number_sync_standbys: if w(rng) {
                    Generator::wild_u32(rng)
                } else {
                    rng.range(0, 16) as u32
                },
            })
        }
        4 => {
            let formation = if w(rng) {
                invalid_formation(rng)
            } else {
                let own = &mut lock(registry).own;
                match rng.below(10) {
                    0..=4 => own.claim(rng, true),
                    5 | 6 => own.claim(rng, false),
                    7 => own.fresh(rng),
                    // Never "other": its nodes' formation, empty at times.
                    _ => "default".to_string(),
                }
            };
            Call::DropFormation(pb::DropFormationRequest { formation })
        }
        _ => Call::ListFormations(pb::ListFormationsRequest {}),
    }
}

/// What the monitor must answer to an operator request from a caller
/// allowed to send it (once it is no larger than the limit).
#[derive(Debug)]
pub(crate) enum Expect {
    Success,
    /// Refused, with one of `codes`.
    Refused {
        why: String,
        codes: &'static [Code],
    },
    /// A success, or a refusal with one of these codes.
    Either(&'static [Code]),
}

const INVALID: &[Code] = &[Code::InvalidArgument];
const NOT_FOUND: &[Code] = &[Code::NotFound];
const PRECONDITION: &[Code] = &[Code::FailedPrecondition];
/// The refusals of a value checked against `pg_settings`.
const PG_SETTINGS: &[Code] = &[
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::NotFound,
];

impl Expect {
    fn refused(why: String, codes: &'static [Code]) -> Option<Expect> {
        Some(Expect::Refused { why, codes })
    }

    /// Why the request must be refused, if it must.
    pub(crate) fn refusal(self) -> Option<String> {
        match self {
            Expect::Refused { why, .. } => Some(why),
            _ => None,
        }
    }
}

/// A formation the request resolves ("" is `default`): refused when its
/// name is invalid or it does not exist.
fn formation_refusal(formation: &str) -> Option<Expect> {
    if !valid_formation(formation) {
        return Expect::refused(
            format!("formation {formation:?} is not a valid name"),
            INVALID,
        );
    }
    if !known_formation(formation) {
        return Expect::refused(format!("formation {formation:?} does not exist"), NOT_FOUND);
    }
    None
}

/// The answer expected to `call`; `None` for the calls that are not
/// these six operator commands.
pub(crate) fn expect(call: &Call, registry: &Shared) -> Option<Expect> {
    Some(match call {
        Call::SetParameter(r) => {
            if !valid_formation(&r.formation) {
                return formation_refusal(&r.formation);
            }
            if !is_setting_name(&r.name) {
                return Expect::refused(format!("{:?} is not a setting's name", r.name), INVALID);
            }
            if let Some(refused) = formation_refusal(&r.formation) {
                return Some(refused);
            }
            match (setting(&r.name), r.reset) {
                // Set before, or not.
                (Some(Kind::Settable) | None, true) => Expect::Either(NOT_FOUND),
                (Some(_), true) => {
                    return Expect::refused(format!("{} is never set", r.name), NOT_FOUND)
                }
                (Some(Kind::Settable) | None, false) => Expect::Either(PG_SETTINGS),
                (Some(Kind::RestartInvalid), false) => {
                    return Expect::refused(
                        format!("{:?} is no valid value for {}", r.value, r.name),
                        PG_SETTINGS,
                    )
                }
                (Some(Kind::Managed), false) => {
                    return Expect::refused(
                        format!("{} is managed or read-only", r.name),
                        PRECONDITION,
                    )
                }
                (Some(Kind::Unknown), false) => {
                    return Expect::refused(format!("{} is no setting", r.name), NOT_FOUND)
                }
            }
        }
        Call::ListParameters(pb::ListParametersRequest { formation })
        | Call::ReloadFormation(pb::ReloadFormationRequest { formation }) => {
            formation_refusal(formation).unwrap_or(Expect::Success)
        }
        Call::CreateFormation(r) => {
            if !valid_name(&r.formation) {
                return Expect::refused(
                    format!("formation {:?} is not a valid name", r.formation),
                    INVALID,
                );
            }
            if r.number_sync_standbys > 16 {
                return Expect::refused("number_sync_standbys above 16".into(), INVALID);
            }
            let own = lock(registry).own.exists.get(&r.formation).copied();
            if FORMATIONS.contains(&r.formation.as_str()) || own == Some(true) {
                return Expect::refused(
                    format!("formation {} already exists", r.formation),
                    PRECONDITION,
                );
            }
            Expect::Success
        }
        Call::DropFormation(r) => {
            if !valid_name(&r.formation) {
                return Expect::refused(
                    format!("formation {:?} is not a valid name", r.formation),
                    INVALID,
                );
            }
            match r.formation.as_str() {
                "default" => {
                    return Expect::refused("default is never dropped".into(), PRECONDITION)
                }
                // Not drawn (see `call`).
                f if FORMATIONS.contains(&f) => Expect::Either(PRECONDITION),
                f if lock(registry).own.exists.get(f) == Some(&true) => Expect::Success,
                f => return Expect::refused(format!("formation {f} does not exist"), NOT_FOUND),
            }
        }
        Call::ListFormations(_) => Expect::Success,
        _ => return None,
    })
}

/// What is wrong with `status` as the answer to `call` (an operator
/// command no larger than the limit) from a caller refused `forbid`, if
/// anything. `None` for the other calls.
pub(crate) fn wrong_refusal(
    call: &Call,
    status: &tonic::Status,
    forbid: Option<&(String, Code)>,
    registry: &Shared,
) -> Option<String> {
    let expect = expect(call, registry)?;
    let (code, message) = (status.code(), status.message());
    if let Some((why, expected)) = forbid {
        // These handlers check the caller before anything else.
        return (code != *expected).then(|| {
            format!("{why} must be refused with {expected:?} whatever the input, got {code:?}: {message}")
        });
    }
    match expect {
        Expect::Success => Some(format!(
            "must succeed, but was refused with {code:?}: {message}"
        )),
        Expect::Refused { why, codes } if !codes.contains(&code) => Some(format!(
            "{why}: must be refused with {codes:?}, got {code:?}: {message}"
        )),
        Expect::Either(codes) if !codes.contains(&code) => Some(format!(
            "refused with {code:?}, not one of {codes:?}: {message}"
        )),
        _ => None,
    }
}

/// A value as the monitor stores it: one line of at most 4096 bytes.
fn stored_value(value: &str) -> bool {
    value.len() <= 4096 && !value.contains(['\n', '\r', '\0'])
}

/// A successful answer to one of these six, if `call` is one.
pub(crate) fn check_reply(call: &Call, reply: &Reply) -> Option<Result<(), String>> {
    Some(match (call, reply) {
        (Call::ListParameters(_), Reply::Parameters(p)) => check_parameters(p),
        (Call::ListFormations(_), Reply::Formations(f)) => check_formations(f),
        (
            Call::CreateFormation(pb::CreateFormationRequest { formation: f, .. })
            | Call::DropFormation(pb::DropFormationRequest { formation: f }),
            Reply::Operation(o),
        ) if !o.message.contains(f.as_str()) => {
            Err(format!("the answer does not name formation {f}: {o:?}"))
        }
        _ => return None,
    })
}

fn check_parameters(reply: &pb::ListParametersReply) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for p in &reply.parameters {
        if setting(&p.name) != Some(Kind::Settable) {
            return Err(format!("a parameter the fuzzer cannot have set: {p:?}"));
        }
        if !seen.insert(p.name.to_ascii_lowercase()) {
            return Err(format!("parameter {} is listed twice", p.name));
        }
        if !stored_value(&p.value) {
            return Err(format!("a value that is no line: {p:?}"));
        }
    }
    Ok(())
}

fn check_formations(reply: &pb::ListFormationsReply) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for f in &reply.formations {
        if !seen.insert(f.formation.as_str()) {
            return Err(format!("formation {} is listed twice", f.formation));
        }
        let own = f.formation.starts_with(OWN_PREFIX);
        if !valid_name(&f.formation) || !(own || FORMATIONS.contains(&f.formation.as_str())) {
            return Err(format!("a formation nobody created: {f:?}"));
        }
        if f.number_sync_standbys > 16 {
            return Err(format!("number_sync_standbys above 16: {f:?}"));
        }
        if own && f.nodes != 0 {
            return Err(format!("nodes in a formation no node joins: {f:?}"));
        }
        if f.paused_by.is_empty() != f.paused_at.is_empty() {
            return Err(format!(
                "paused by someone at no time, or the converse: {f:?}"
            ));
        }
    }
    match FORMATIONS.iter().find(|f| !seen.contains(**f)) {
        Some(missing) => Err(format!("formation {missing} is not listed")),
        None => Ok(()),
    }
}

/// Record the answer to a CreateFormation or DropFormation, and free its
/// name (a request with no proper answer keeps it: its state is unknown).
pub(crate) fn record(call: &Call, result: &Result<Reply, tonic::Status>, registry: &Shared) {
    let (name, created) = match call {
        Call::CreateFormation(r) => (&r.formation, true),
        Call::DropFormation(r) => (&r.formation, false),
        _ => return,
    };
    let own = &mut lock(registry).own;
    if !own.claimed.contains(name) {
        return;
    }
    match result {
        Ok(_) => {
            own.exists.insert(name.clone(), created);
        }
        Err(s) if REFUSALS.contains(&s.code()) => {}
        Err(_) => return,
    }
    own.claimed.remove(name);
}

/// After the run (nothing in flight): ListFormations lists exactly the
/// formations that exist. Problems are appended to `failures`.
pub(crate) async fn check_own_formations(
    client: &pgpilot_proto::security::Client,
    registry: &Shared,
    failures: &mut Vec<String>,
) {
    let (existing, unknown) = lock(registry).own.existing();
    let reply = match send(client, Call::ListFormations(pb::ListFormationsRequest {})).await {
        Ok(Reply::Formations(f)) => f,
        other => {
            failures.push(format!("show-formations failed afterwards: {other:?}"));
            return;
        }
    };
    if let Err(problem) = check_formations(&reply) {
        failures.push(format!("show-formations afterwards: {problem}"));
    }
    let listed: BTreeSet<String> = reply
        .formations
        .iter()
        .map(|f| f.formation.clone())
        .filter(|f| f.starts_with(OWN_PREFIX) && !unknown.contains(f))
        .collect();
    let expected: BTreeSet<String> = existing.difference(&unknown).cloned().collect();
    if listed != expected {
        failures.push(format!(
            "show-formations lists {:?} of the fuzzer's own formations, {:?} were created and not dropped",
            listed, expected
        ));
    }
    eprintln!(
        "formations of the fuzzer's own at the end: {} ({} names drawn)",
        listed.len(),
        lock(registry).own.next
    );
}

async fn send(
    client: &pgpilot_proto::security::Client,
    call: Call,
) -> Result<Reply, tonic::Status> {
    crate::calls::send(&mut client.clone(), call).await
}
