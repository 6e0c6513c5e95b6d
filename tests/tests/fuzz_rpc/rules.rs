//! What the monitor documents as valid input: names, hosts, formations,
//! timings and state numbers.

use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState;

use crate::{FORMATIONS, MAX_TIMING_MS, NODE_TIMEOUT_MS};

pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A PostgreSQL setting's name as the monitor accepts one: letters,
/// digits, `_` and `.`, at most 63 bytes.
pub(crate) fn is_setting_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

pub(crate) fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

pub(crate) fn resolve(formation: &str) -> &str {
    if formation.is_empty() {
        "default"
    } else {
        formation
    }
}

pub(crate) fn valid_formation(s: &str) -> bool {
    s.is_empty() || valid_name(s)
}

pub(crate) fn known_formation(s: &str) -> bool {
    FORMATIONS.contains(&resolve(s))
}

pub(crate) fn valid_timings(t: &Option<pb::KeeperTimings>) -> bool {
    t.as_ref().is_some_and(|t| {
        [
            t.heartbeat_interval_ms,
            t.fence_timeout_ms,
            t.wal_sender_timeout_ms,
        ]
        .iter()
        .all(|ms| (1..=MAX_TIMING_MS).contains(ms))
            && t.fence_timeout_ms <= NODE_TIMEOUT_MS
    })
}

pub(crate) fn valid_state(v: i32) -> bool {
    ReplicationState::from_wire(v).is_ok()
}
