//! Checking what a request carries before the store sees it: names,
//! hosts, timings, states, counts and notes, each refused in one sentence;
//! and the small conversions the handlers share.

use std::time::Duration;

use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;
use tonic::Status;

use crate::error::Error;
use crate::fsm::KeeperTimings;
use crate::names::quote;
use crate::store::{KeeperNote, StoredNode};

/// The formation (the default one when empty) and the node a request
/// names, both checked; the formation's name.
pub(super) fn formation_and_node(formation: &str, node: &str) -> Result<String, Status> {
    let formation = formation_or_default(formation).to_string();
    valid_name("formation", &formation)?;
    valid_name("node name", node)?;
    Ok(formation)
}

/// A PostgreSQL setting's name: letters, digits, `_` and `.` (a custom
/// setting), at most 63 bytes (names are case-insensitive: TimeZone).
pub(super) fn is_setting_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

pub(super) fn refused(e: Error) -> Status {
    tracing::warn!(error = %e, "request refused");
    e.into()
}

/// Longest keeper timing the monitor accepts (one hour); zero is refused.
pub(super) const MAX_TIMING_MS: u64 = 3_600_000;

pub(super) const MAX_NAME: usize = 63;

pub(super) fn valid_name(what: &str, value: &str) -> Result<(), Error> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {} is not valid: use 1 to {MAX_NAME} letters, digits, '_', '-' or '.'",
            quote(value)
        )))
    }
}

/// At most 16: more than any group can have standbys.
pub(super) fn valid_number_sync_standbys(n: u32) -> Result<(), Error> {
    if n > 16 {
        return Err(Error::InvalidArgument(format!(
            "number_sync_standbys {n} is larger than any group can have standbys (at most 16)"
        )));
    }
    Ok(())
}

/// A node's host as other nodes' `primary_conninfo` and the health check
/// use it: a DNS name or an IP address, nothing that could smuggle another
/// connection parameter in.
pub(super) fn valid_host(host: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "host {} is not a host name or IP address: use 1 to 255 letters, digits, '.', '-', '_' or ':'",
            quote(host)
        )))
    }
}

pub(super) fn formation_or_default(f: &str) -> &str {
    if f.is_empty() {
        "default"
    } else {
        f
    }
}

/// The keeper's timings, bounded, and its fence timeout no longer than
/// `node_timeout`: an isolated primary must fence by the time the monitor
/// gives up on it, or every failover waits for the longer fence.
pub(super) fn timings(
    t: Option<pb::KeeperTimings>,
    node_timeout: Duration,
) -> Result<KeeperTimings, Error> {
    let t = t.ok_or_else(|| Error::InvalidArgument("timings are missing".into()))?;
    for (what, ms) in [
        ("heartbeat_interval", t.heartbeat_interval_ms),
        ("fence_timeout", t.fence_timeout_ms),
        ("wal_sender_timeout", t.wal_sender_timeout_ms),
    ] {
        if ms == 0 || ms > MAX_TIMING_MS {
            return Err(Error::InvalidArgument(format!(
                "{what} of {ms} ms is not between 1 ms and one hour: check the keeper's configuration"
            )));
        }
    }
    let fence_timeout = Duration::from_millis(t.fence_timeout_ms);
    if fence_timeout > node_timeout {
        return Err(Error::FailedPrecondition(format!(
            "the keeper's fence_timeout ({}) must not be longer than the monitor's node_timeout ({}): lower fence_timeout in the keeper's configuration or raise node_timeout in the monitor's",
            humantime::format_duration(fence_timeout),
            humantime::format_duration(node_timeout)
        )));
    }
    Ok(KeeperTimings {
        heartbeat_interval: Duration::from_millis(t.heartbeat_interval_ms),
        fence_timeout: Duration::from_millis(t.fence_timeout_ms),
        wal_sender_timeout: Duration::from_millis(t.wal_sender_timeout_ms),
    })
}

pub(super) fn state(value: i32, what: &str) -> Result<S, Error> {
    S::from_wire(value).map_err(|_| {
        Error::InvalidArgument(format!(
            "{what} {value} is not a replication state: send one of the NodeState values {} to {} ({} to {})",
            S::Init.to_wire(),
            S::Dropped.to_wire(),
            S::Init,
            S::Dropped
        ))
    })
}

/// Most failed starts in a row the monitor stores (a database integer).
pub(super) const MAX_START_FAILURES: u32 = i32::MAX as u32;

pub(super) fn start_failures(value: u32) -> Result<u32, Error> {
    if value > MAX_START_FAILURES {
        return Err(Error::InvalidArgument(format!(
            "pg_start_failures {value} is not a count of failed starts in a row: send at most {MAX_START_FAILURES}"
        )));
    }
    Ok(value)
}

/// The most standbys a fence quorum can name (a group's nodes).
pub(super) const MAX_FENCE_REQUIRED: u32 = 1000;

pub(super) fn fence_required_held(value: Option<u32>) -> Result<Option<u32>, Error> {
    match value {
        Some(v) if v > MAX_FENCE_REQUIRED => Err(Error::InvalidArgument(format!(
            "fence_required_held {v} is not a number of standbys: send at most {MAX_FENCE_REQUIRED}"
        ))),
        v => Ok(v),
    }
}

/// A keeper's notes as the monitor records them (see
/// [`pgpilot_proto::notes::recorded`]).
pub(super) fn notes(notes: &[pb::KeeperNote]) -> Result<Vec<KeeperNote>, Error> {
    use pgpilot_proto::notes::{recorded, MAX_PER_HEARTBEAT};
    if notes.len() > MAX_PER_HEARTBEAT {
        return Err(Error::InvalidArgument(format!(
            "{} notes in one heartbeat: send at most {MAX_PER_HEARTBEAT}",
            notes.len()
        )));
    }
    Ok(notes
        .iter()
        .map(|n| {
            let (kind, text) = recorded(&n.kind, &n.text);
            KeeperNote { kind, text }
        })
        .collect())
}

pub(super) fn address(n: &StoredNode) -> pb::NodeAddress {
    pb::NodeAddress {
        node_id: n.snap.id,
        name: n.snap.name.clone(),
        host: n.host.clone(),
        port: u32::from(n.port),
        lsn: n.snap.lsn,
        cascading: n.snap.upstream.is_some(),
    }
}
