//! Three nodes: quorum failover by candidate priority, fast_forward of a
//! lagging winner, priority 0 never promoted, maintenance of a standby and
//! of the primary, run-time replication settings, switchover to a named node,
//! a diverged standby rejoining by itself. One module per behaviour
//! (`failover`, `maintenance`, `settings`, `switchover`, `membership`,
//! `rejoin`); `helpers` holds the checks they share.
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::time::Duration;

use pgpilot_tests::ReplicationState;

pub(crate) const PRIMARY: ReplicationState = ReplicationState::Primary;
pub(crate) const SECONDARY: ReplicationState = ReplicationState::Secondary;
pub(crate) const MAINTENANCE: ReplicationState = ReplicationState::Maintenance;

/// Three nodes cloned and settled on a loaded two-core machine.
pub(crate) const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// A failover, a rejoin, a settings change reaching the primary.
pub(crate) const FAILOVER_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const REJOIN_TIMEOUT: Duration = Duration::from_secs(180);
pub(crate) const SHORT_TIMEOUT: Duration = Duration::from_secs(60);

mod failover;
mod helpers;
mod maintenance;
mod membership;
mod rejoin;
mod settings;
mod switchover;
