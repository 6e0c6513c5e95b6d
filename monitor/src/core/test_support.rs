//! What the decision core's tests share: the keeper timings and the
//! environment they decide in.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Env;
use crate::fsm::{self, KeeperTimings};

pub fn timings() -> KeeperTimings {
    KeeperTimings {
        heartbeat_interval: Duration::from_millis(500),
        fence_timeout: Duration::from_millis(1500),
        wal_sender_timeout: Duration::from_secs(2),
    }
}

pub fn env(now: DateTime<Utc>) -> Env {
    Env::new(
        now,
        fsm::Settings {
            node_timeout: Duration::from_secs(2),
            postgres_restart_timeout: Duration::from_secs(10),
            fence_margin: Duration::from_millis(500),
            catchup_lag_bytes: fsm::DEFAULT_CATCHUP_LAG_BYTES,
            number_sync_standbys: 0,
            election_forced_at: None,
            paused: false,
        },
    )
}

/// A running node `node<id>` (priority 50, in the quorum) reporting and
/// headed for `state`, heard from at `now`.
pub fn settled_node(
    id: i64,
    state: pgpilot_proto::ReplicationState,
    now: DateTime<Utc>,
) -> fsm::NodeSnapshot {
    let mut n = fsm::NodeSnapshot::registered(id, &format!("node{id}"), 50, true, timings());
    n.reported = state;
    n.goal = state;
    n.pg_running = true;
    n.wal_receiver_streaming = state == pgpilot_proto::ReplicationState::Secondary;
    n.timeline = 1;
    n.lsn = 0x500_0000;
    n.health = fsm::Health::Good;
    n.last_heartbeat = Some(now);
    n
}
