//! The timings every simulated part runs with (the shipped defaults) and
//! the liveness bound derived from them.

use std::time::Duration;

use pgpilot_keeper::config as keeper_config;
use pgpilot_monitor::config as monitor_config;
use pgpilot_monitor::fsm::KeeperTimings;
use pgpilot_monitor::store::MachineSettings;

use super::MAX_CRASH_RECOVERY_MS;
use crate::Ms;

/// The timings every part runs with: the shipped defaults.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timings {
    pub(super) heartbeat: Ms,
    pub(super) fence_timeout: Ms,
    pub(super) wal_receiver_timeout: Ms,
    pub(super) wal_sender_timeout: Ms,
    pub(super) rpc_timeout: Ms,
    pub(super) health_interval: Ms,
    pub(super) health_timeout: Ms,
    pub(super) keeper: KeeperTimings,
    pub(super) machine: MachineSettings,
    /// How long a keeper stopped on purpose lets its node hand over.
    pub(super) stop_timeout: Duration,
}

fn ms(d: Duration) -> Ms {
    d.as_millis() as Ms
}

impl Timings {
    /// How long the group may take to settle once the faults stop,
    /// derived from the timeouts: a crash recovery the faults started
    /// runs out, then the primary's PostgreSQL gets its
    /// `postgres_restart_timeout`, then one failover — the keeper's
    /// silence noticed (node timeout and a health check), the fence
    /// deadline (fence timeout, the standbys' streams gone after
    /// `wal_sender_timeout`, a keeper loop and the margin) — and ten
    /// keeper loops for the promotion steps, the rejoin and the catch-up.
    pub(super) fn liveness_ms(&self) -> Ms {
        MAX_CRASH_RECOVERY_MS
            + ms(self.machine.postgres_restart_timeout)
            + ms(self.machine.node_timeout)
            + self.health_timeout
            + self.fence_timeout
            + self.wal_sender_timeout
            + ms(self.machine.fence_margin)
            + 10 * self.heartbeat
    }

    pub(super) fn defaults() -> Timings {
        let heartbeat = keeper_config::DEFAULT_HEARTBEAT_INTERVAL;
        let fence_timeout = keeper_config::DEFAULT_FENCE_TIMEOUT;
        let wal_sender_timeout = keeper_config::DEFAULT_WAL_SENDER_TIMEOUT;
        // The keeper's RPC timeout (agent.rs `rpc_timeout`).
        let rpc = heartbeat
            .max(Duration::from_millis(500))
            .min(fence_timeout / 2);
        Timings {
            heartbeat: ms(heartbeat),
            fence_timeout: ms(fence_timeout),
            wal_receiver_timeout: ms(keeper_config::DEFAULT_WAL_RECEIVER_TIMEOUT),
            wal_sender_timeout: ms(wal_sender_timeout),
            rpc_timeout: ms(rpc),
            health_interval: ms(monitor_config::DEFAULT_HEALTH_CHECK_INTERVAL),
            health_timeout: ms(monitor_config::DEFAULT_HEALTH_CHECK_TIMEOUT),
            keeper: KeeperTimings {
                heartbeat_interval: heartbeat,
                fence_timeout,
                wal_sender_timeout,
            },
            machine: MachineSettings {
                node_timeout: monitor_config::DEFAULT_NODE_TIMEOUT,
                fence_margin: monitor_config::DEFAULT_FENCE_MARGIN,
                postgres_restart_timeout: monitor_config::DEFAULT_POSTGRES_RESTART_TIMEOUT,
            },
            stop_timeout: keeper_config::DEFAULT_STOP_TIMEOUT,
        }
    }
}
