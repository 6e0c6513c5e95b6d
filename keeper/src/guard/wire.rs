//! What the keeper and its fence guard say to each other over the guard's
//! unix socket: one JSON object per line. The guard greets each connection
//! with a [`Hello`]; the keeper sends a [`LeaseMessage`] whenever its lease
//! is renewed or its state changes. Times travel as readings of
//! CLOCK_BOOTTIME, one clock for every process of the host, so a message
//! that waits in the socket (a guard descheduled for a while) cannot
//! stretch the lease, and the time a host spends suspended counts as time
//! without an answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};
use pgpilot_proto::ReplicationState as S;
use serde::{Deserialize, Serialize};

use super::rule::GuardLease;
use crate::fence::Lease;

/// The version of these messages; a message of another version is refused.
pub const VERSION: u32 = 1;

/// The longest path a unix socket address holds on Linux (`sun_path` is
/// 108 bytes, one of them the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The guard's greeting, first line on each connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub pid: u32,
    /// The PGDATA the guard watches: a keeper checks it is its own.
    pub pgdata: PathBuf,
}

/// The keeper's lease, as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseMessage {
    pub version: u32,
    /// The keeper heard from the monitor since it started.
    pub confirmed: bool,
    /// CLOCK_BOOTTIME, in nanoseconds, when the last heartbeat that got an
    /// answer was sent (for an unconfirmed lease: when the keeper started).
    pub last_answer_ns: u64,
    pub state: String,
    pub fence_set: Vec<String>,
    pub required: u32,
    pub fence_timeout_ms: u64,
}

impl LeaseMessage {
    /// The message for `lease`, read at `now` (an [`Instant`]) and
    /// `clock_now` (the same moment on CLOCK_BOOTTIME).
    pub fn of(lease: &Lease, fence_timeout: Duration, now: Instant, clock_now: Duration) -> Self {
        LeaseMessage {
            version: VERSION,
            confirmed: lease.confirmed,
            last_answer_ns: as_nanos(clock_reading_of(lease.last_ok_sent, now, clock_now)),
            state: lease.current.as_str().to_string(),
            fence_set: lease.fence_set.clone(),
            required: lease.required,
            fence_timeout_ms: fence_timeout.as_millis().try_into().unwrap_or(u64::MAX),
        }
    }

    /// The lease the guard holds, or why this message is refused.
    pub fn into_lease(self) -> Result<GuardLease, String> {
        if self.version != VERSION {
            return Err(format!(
                "lease message of version {} refused: this guard speaks version {VERSION}",
                self.version
            ));
        }
        let current: S = self.state.parse().map_err(|e| format!("{e}"))?;
        Ok(GuardLease {
            confirmed: self.confirmed,
            last_answer: Duration::from_nanos(self.last_answer_ns),
            current,
            fence_set: self.fence_set,
            required: self.required,
            fence_timeout: Duration::from_millis(self.fence_timeout_ms),
        })
    }
}

/// The clock reading of `instant`, given that `now` is `clock_now` on the
/// clock: never later than `clock_now`, never before the clock's zero.
pub fn clock_reading_of(instant: Instant, now: Instant, clock_now: Duration) -> Duration {
    clock_now.saturating_sub(now.saturating_duration_since(instant))
}

fn as_nanos(d: Duration) -> u64 {
    d.as_nanos().try_into().unwrap_or(u64::MAX)
}

/// CLOCK_BOOTTIME now (CLOCK_MONOTONIC where the kernel lacks it).
pub fn clock_now() -> Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .map(|t| Duration::new(t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u32))
        .unwrap_or_default()
}

/// The guard's socket: `pgpilot-guard.<port>.sock` in the directory of the
/// keeper's state file (the port tells apart the nodes of one host), or
/// why it cannot be one.
pub fn socket_path(state_file: &Path, port: u16) -> Result<PathBuf, String> {
    let dir = match state_file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let path = dir.join(format!("pgpilot-guard.{port}.sock"));
    check_socket_path(&path)?;
    Ok(path)
}

/// A unix socket path must fit in `sun_path`.
pub fn check_socket_path(path: &Path) -> Result<(), String> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(format!(
            "the fence guard's socket {} is {len} bytes long, over the {MAX_SOCKET_PATH} a unix socket path may have: put the keeper's state file (state_file) in a directory with a shorter path",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_map_onto_the_clock_without_moving_later() {
        let now = Instant::now();
        let earlier = now - Duration::from_millis(300);
        let clock = Duration::from_secs(100);
        assert_eq!(
            clock_reading_of(earlier, now, clock),
            Duration::from_millis(99_700)
        );
        // An instant after `now` (a renewal raced the reading) maps to now.
        assert_eq!(
            clock_reading_of(now + Duration::from_secs(1), now, clock),
            clock
        );
        assert_eq!(
            clock_reading_of(earlier, now, Duration::from_millis(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_lease_round_trips_through_its_message() {
        let lease = Lease::new(S::WaitPrimary);
        let mut l = lease.try_lock().expect("unlocked");
        l.confirmed = true;
        l.fence_set = vec!["pgpilot_2".into()];
        l.required = 1;
        let now = l.last_ok_sent + Duration::from_millis(200);
        let m = LeaseMessage::of(
            &l,
            Duration::from_millis(1500),
            now,
            Duration::from_secs(50),
        );
        let text = serde_json::to_string(&m).expect("serializes");
        let back: LeaseMessage = serde_json::from_str(&text).expect("parses");
        let g = back.into_lease().expect("valid");
        assert!(g.confirmed);
        assert_eq!(g.current, S::WaitPrimary);
        assert_eq!(g.last_answer, Duration::from_millis(49_800));
        assert_eq!(g.expires_at(), Duration::from_millis(51_300));
        assert_eq!(g.fence_set, vec!["pgpilot_2".to_string()]);
    }

    #[test]
    fn bad_messages_get_a_sentence() {
        let mut m = LeaseMessage {
            version: VERSION + 1,
            confirmed: true,
            last_answer_ns: 1,
            state: "primary".into(),
            fence_set: vec![],
            required: 0,
            fence_timeout_ms: 1500,
        };
        assert!(m.clone().into_lease().unwrap_err().contains("version"));
        m.version = VERSION;
        m.state = "boss".into();
        assert!(m.into_lease().unwrap_err().contains("boss"));
    }

    #[test]
    fn socket_paths_are_short_or_refused() {
        let p = socket_path(Path::new("/var/lib/pgpilot/data.pgpilot-state.json"), 5432)
            .expect("short");
        assert_eq!(p, PathBuf::from("/var/lib/pgpilot/pgpilot-guard.5432.sock"));
        assert_eq!(
            socket_path(Path::new("state.json"), 1).expect("relative"),
            PathBuf::from("./pgpilot-guard.1.sock")
        );
        let long = format!("/{}/state.json", "d".repeat(100));
        let err = socket_path(Path::new(&long), 5432).unwrap_err();
        assert!(err.contains("state_file") && err.contains("107"), "{err}");
    }
}
