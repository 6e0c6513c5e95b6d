//! The oracle: which requests must be refused and with what, whether a
//! refusal is one sentence, whether a reply is consistent.

use anyhow::Result;
use pgpilot_proto::pb;
use tonic::Code;

use crate::calls::{lock, shorten_debug, Call, Reply, Shared};
use crate::generator::Who;
use crate::operator::{self, Expect};
use crate::rules::{
    known_formation, resolve, valid_formation, valid_host, valid_name, valid_state, valid_timings,
};
use crate::{MAX_MESSAGE_BYTES, MAX_REFUSAL_CHARS, UNREGISTERED};

/// Why the monitor must refuse `call` whoever sends it, if it must.
pub(crate) fn must_refuse(call: &Call, registry: &Shared) -> Option<String> {
    let names = |formation: &str, node: &str| -> Option<String> {
        if !valid_formation(formation) {
            return Some(format!("formation {formation:?} is not a valid name"));
        }
        if !valid_name(node) {
            return Some(format!("node name {node:?} is not valid"));
        }
        if !known_formation(formation) {
            return Some(format!("formation {formation:?} does not exist"));
        }
        node.starts_with(UNREGISTERED)
            .then(|| format!("node {node:?} was never registered"))
    };
    match call {
        Call::RegisterNode(r) => {
            if let Some(why) =
                names(&r.formation, &r.name).filter(|_| !r.name.starts_with(UNREGISTERED))
            {
                return Some(why);
            }
            if !valid_host(&r.host) {
                return Some(format!("host {:?} is not valid", r.host));
            }
            if !(1..=65_535).contains(&r.port) {
                return Some(format!("port {} is out of range", r.port));
            }
            if r.candidate_priority > 100 {
                return Some("candidate priority above 100".into());
            }
            if r.apply_delay_ms > pgpilot_proto::delay::MAX_APPLY_DELAY_MS {
                return Some("apply delay above PostgreSQL's limit".into());
            }
            if r.apply_delay_ms > 0 && (r.candidate_priority > 0 || r.replication_quorum) {
                return Some("a delayed node registering as a candidate or in the quorum".into());
            }
            (!valid_timings(&r.timings)).then(|| "timings out of bounds".into())
        }
        Call::NodeActive(r) => {
            if r.node_id <= 0 {
                return Some("node id not positive".into());
            }
            if !valid_state(r.reported_state) {
                return Some(format!("reported_state {} is unknown", r.reported_state));
            }
            if let Some(s) = r.acting_toward.filter(|&s| !valid_state(s)) {
                return Some(format!("acting_toward {s} is unknown"));
            }
            if let Some(n) = r.fence_required_held.filter(|&n| n > 1000) {
                return Some(format!("fence_required_held {n} is out of range"));
            }
            if !r.keeper_boot_id.is_empty() && r.sent_at_ns != 0 {
                if r.sent_at_ns > i64::MAX as u64 {
                    return Some(format!("sent_at_ns {} is out of range", r.sent_at_ns));
                }
                let hex: String = r.keeper_boot_id.chars().filter(|&c| c != '-').collect();
                if hex.len() != 32 || u128::from_str_radix(&hex, 16).is_err() {
                    return Some(format!(
                        "keeper_boot_id {:?} is malformed",
                        r.keeper_boot_id
                    ));
                }
            }
            if !valid_timings(&r.timings) {
                return Some("timings out of bounds".into());
            }
            if let Some(w) = &r.work {
                if !matches!(w.work.as_str(), "clone" | "rewind" | "restore" | "recovery") {
                    return Some(format!("work {:?} is not a kind of work", w.work));
                }
                if w.upstream.len() > 300 {
                    return Some("the work's upstream is longer than 300 bytes".into());
                }
            }
            if !r.clone_from.is_empty() && !valid_name(&r.clone_from) {
                return Some(format!("clone_from {:?} is not a valid name", r.clone_from));
            }
            if r.slots_reported {
                if r.slots.len() > 64 {
                    return Some(format!("{} slots reported", r.slots.len()));
                }
                let slot_name = |n: &str| {
                    !n.is_empty()
                        && n.len() <= 63
                        && n.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                };
                for p in &r.slots {
                    if !slot_name(&p.name) {
                        return Some(format!("slot name {:?} is not a slot's name", p.name));
                    }
                    if p.kind != "physical" && p.kind != "logical" {
                        return Some(format!("slot kind {:?} is unknown", p.kind));
                    }
                    if p.state.len() > 4096 {
                        return Some("a slot state file larger than 4096 bytes".into());
                    }
                }
            }
            if r.pg_running {
                let bad_name = |n: &String| {
                    n.is_empty()
                        || n.len() > 63
                        || !n
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                };
                if r.pending_restart.len() > 512 || r.pending_restart.iter().any(bad_name) {
                    return Some("pending_restart names a setting that cannot exist".into());
                }
            }
            if r.pg_start_failures > i32::MAX as u32 {
                return Some(format!(
                    "pg_start_failures {} is out of range",
                    r.pg_start_failures
                ));
            }
            if r.node_id >= 1_000_000_000 && !lock(registry).ids.contains_key(&r.node_id) {
                return Some(format!("node id {} was never registered", r.node_id));
            }
            None
        }
        Call::GetFormationState(pb::GetFormationStateRequest { formation })
        | Call::ListEvents(pb::ListEventsRequest { formation, .. })
        | Call::SetNumberSyncStandbys(pb::SetNumberSyncStandbysRequest { formation, .. })
        | Call::SetPaused(pb::SetPausedRequest { formation, .. }) => {
            if !valid_formation(formation) {
                return Some(format!("formation {formation:?} is not a valid name"));
            }
            if !known_formation(formation) {
                return Some(format!("formation {formation:?} does not exist"));
            }
            if let Call::SetNumberSyncStandbys(r) = call {
                if r.number_sync_standbys > 16 {
                    return Some("number_sync_standbys above 16".into());
                }
            }
            None
        }
        Call::PerformFailover(r) => {
            if !valid_formation(&r.formation) {
                return Some(format!("formation {:?} is not a valid name", r.formation));
            }
            if !known_formation(&r.formation) {
                return Some(format!("formation {:?} does not exist", r.formation));
            }
            if r.group_id != 0 {
                return Some(format!("group {} has no node", r.group_id));
            }
            if !r.target_node.is_empty() {
                if r.allow_data_loss {
                    return Some("allow_data_loss with a target".into());
                }
                return names(&r.formation, &r.target_node);
            }
            None
        }
        Call::SetNodeSettings(r) => {
            if let Some(why) = names(&r.formation, &r.node) {
                return Some(why);
            }
            if r.candidate_priority.is_none()
                && r.replication_quorum.is_none()
                && r.apply_delay_ms.is_none()
            {
                return Some("nothing to change".into());
            }
            if r.apply_delay_ms
                .is_some_and(|d| d > pgpilot_proto::delay::MAX_APPLY_DELAY_MS)
            {
                return Some("apply delay above PostgreSQL's limit".into());
            }
            r.candidate_priority
                .is_some_and(|p| p > 100)
                .then(|| "candidate priority above 100".into())
        }
        Call::SetMaintenance(pb::SetMaintenanceRequest {
            formation, node, ..
        })
        | Call::DropNode(pb::DropNodeRequest {
            formation, node, ..
        })
        | Call::ReinitNode(pb::ReinitNodeRequest { formation, node })
        | Call::RestartNode(pb::RestartNodeRequest { formation, node }) => names(formation, node),
        Call::SetParameter(_)
        | Call::ListParameters(_)
        | Call::ReloadFormation(_)
        | Call::CreateFormation(_)
        | Call::DropFormation(_)
        | Call::ListFormations(_) => operator::expect(call, registry).and_then(Expect::refusal),
    }
}

/// Why `who` may not send `call`, if it may not: (reason, the one code
/// the refusal must carry once the input itself is valid).
pub(crate) fn forbidden(call: &Call, who: &Who, registry: &Shared) -> Option<(String, Code)> {
    match who {
        Who::Anyone => None,
        Who::NoCertificate => Some((
            "a client without a certificate".into(),
            Code::Unauthenticated,
        )),
        Who::Operator => (!call.is_operator_rpc()).then(|| {
            (
                "an operator acting as a keeper".into(),
                Code::PermissionDenied,
            )
        }),
        Who::Keeper { formation, name } => match call {
            _ if call.is_operator_rpc() => Some((
                format!("the keeper of {formation}/{name} running an operator command"),
                Code::PermissionDenied,
            )),
            Call::RegisterNode(r) => {
                (resolve(&r.formation) != formation || &r.name != name).then(|| {
                    (
                        format!("the keeper of {formation}/{name} registering as another node"),
                        Code::PermissionDenied,
                    )
                })
            }
            Call::NodeActive(r) => {
                let owner = lock(registry).ids.get(&r.node_id).cloned();
                match owner {
                    Some((f, n)) if (&f, &n) != (formation, name) => Some((
                        format!(
                            "the keeper of {formation}/{name} heartbeating as {f}/{n} (node id {})",
                            r.node_id
                        ),
                        Code::PermissionDenied,
                    )),
                    _ => None,
                }
            }
            _ => None,
        },
    }
}

/// Codes a refusal may carry.
pub(crate) const REFUSALS: [Code; 8] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::OutOfRange,
    Code::AlreadyExists,
    Code::ResourceExhausted,
];

/// One sentence: something to read, on one line, of a readable length.
pub(crate) fn sentence_problem(message: &str) -> Option<String> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return Some("the message is empty".into());
    }
    if trimmed.contains('\n') {
        return Some("the message spans several lines".into());
    }
    if trimmed.chars().count() > MAX_REFUSAL_CHARS {
        return Some(format!(
            "the message is {} characters long (at most {MAX_REFUSAL_CHARS})",
            trimmed.chars().count()
        ));
    }
    if trimmed.split_whitespace().count() < 3 {
        return Some("the message is not a sentence".into());
    }
    None
}

/// Check one answer; `Err` says what is wrong with it.
pub(crate) fn check(
    call: &Call,
    who: &Who,
    result: &Result<Reply, tonic::Status>,
    registry: &Shared,
) -> std::result::Result<(), String> {
    let oversized = call.encoded_len() > MAX_MESSAGE_BYTES;
    let refuse = must_refuse(call, registry);
    let forbid = forbidden(call, who, registry);
    match result {
        Err(status) => {
            let code = status.code();
            if !REFUSALS.contains(&code) {
                return Err(format!(
                    "answered {code:?} (not a refusal code): {}",
                    status.message()
                ));
            }
            if let Some(problem) = sentence_problem(status.message()) {
                return Err(format!(
                    "{code:?}: {problem}: {:?}",
                    shorten_debug(status.message())
                ));
            }
            if oversized && code != Code::OutOfRange && code != Code::Unauthenticated {
                return Err(format!(
                    "a request of {} bytes (limit {MAX_MESSAGE_BYTES}) answered {code:?}, not OutOfRange: {}",
                    call.encoded_len(),
                    status.message()
                ));
            }
            if code == Code::OutOfRange && !oversized {
                return Err(format!(
                    "a request of {} bytes answered OutOfRange: {}",
                    call.encoded_len(),
                    status.message()
                ));
            }
            if let Some((why, expected)) = forbid.as_ref().filter(|_| !oversized) {
                let input_valid = refuse.is_none() && !oversized;
                let by_authentication = *expected == Code::Unauthenticated;
                if (input_valid || by_authentication) && code != *expected {
                    return Err(format!(
                        "{why} must be refused with {expected:?}, got {code:?}: {}",
                        status.message()
                    ));
                }
            }
            if let Some(problem) = operator::wrong_refusal(call, status, forbid.as_ref(), registry)
                .filter(|_| !oversized)
            {
                return Err(problem);
            }
            if matches!(who, Who::Anyone | Who::Operator)
                && matches!(code, Code::PermissionDenied | Code::Unauthenticated)
                && forbid.is_none()
            {
                return Err(format!(
                    "{who:?} may do this, but it was refused with {code:?}: {}",
                    status.message()
                ));
            }
            Ok(())
        }
        Ok(reply) => {
            if oversized {
                return Err(format!(
                    "a request of {} bytes (limit {MAX_MESSAGE_BYTES}) was accepted",
                    call.encoded_len()
                ));
            }
            if let Some(why) = refuse {
                return Err(format!("accepted, but must be refused: {why}: {reply:?}"));
            }
            if let Some((why, _)) = forbid {
                return Err(format!("accepted, but must be refused: {why}: {reply:?}"));
            }
            check_reply(call, reply)
        }
    }
}

/// A successful answer must be well-formed.
pub(crate) fn check_reply(call: &Call, reply: &Reply) -> std::result::Result<(), String> {
    let state_ok = |what: &str, v: i32| {
        valid_state(v)
            .then_some(())
            .ok_or_else(|| format!("the reply's {what} {v} is not a replication state"))
    };
    if let Some(verdict) = operator::check_reply(call, reply) {
        return verdict;
    }
    match (call, reply) {
        (Call::RegisterNode(r), Reply::Registered(a)) => {
            if a.node_id <= 0 || a.formation != resolve(&r.formation) {
                return Err(format!("registration answered {a:?}"));
            }
            state_ok("goal_state", a.goal_state)
        }
        (Call::NodeActive(_), Reply::Assigned(a)) => state_ok("goal_state", a.goal_state),
        (Call::GetFormationState(r), Reply::State(s)) => {
            if s.formation != resolve(&r.formation) {
                return Err(format!(
                    "show-state of {:?} answered {:?}",
                    r.formation, s.formation
                ));
            }
            for n in &s.nodes {
                state_ok("reported_state", n.reported_state)?;
                state_ok("goal_state", n.goal_state)?;
            }
            Ok(())
        }
        (Call::ListEvents(r), Reply::Events(e)) => {
            let limit = if r.count == 0 {
                20
            } else {
                r.count.min(10_000)
            };
            if e.events.len() > limit as usize {
                return Err(format!(
                    "{} events for a count of {}",
                    e.events.len(),
                    r.count
                ));
            }
            for event in &e.events {
                state_ok("goal_to", event.goal_to)?;
                if event.reason.trim().is_empty() {
                    return Err(format!("an event without a reason: {event:?}"));
                }
            }
            Ok(())
        }
        (_, Reply::Operation(o)) => sentence_problem(&o.message)
            .map_or(Ok(()), |p| Err(format!("the operation's message: {p}"))),
        (call, reply) => Err(format!("{} answered {reply:?}", call.rpc())),
    }
}

pub(crate) fn record(call: &Call, result: &Result<Reply, tonic::Status>, registry: &Shared) {
    operator::record(call, result, registry);
    if let (Call::RegisterNode(r), Ok(Reply::Registered(a))) = (call, result) {
        let mut registry = lock(registry);
        let formation = resolve(&r.formation).to_string();
        registry.registered_in.insert(formation.clone());
        registry.ids.insert(a.node_id, (formation, r.name.clone()));
    }
    if let (Call::DropNode(r), Ok(Reply::Operation(_))) = (call, result) {
        if r.force {
            // The row is gone: its id is not drawn any more.
            lock(registry).ids.retain(|_, (f, n)| {
                (f.as_str(), n.as_str()) != (resolve(&r.formation), r.node.as_str())
            });
        }
    }
}
