//! The pgpilot protocol (generated from `pgpilot.proto`) and the domain types
//! that the monitor and the keeper share: replication states and the keeper's
//! table of edges (reported state → goal state) it knows how to walk.

use std::fmt;
use std::str::FromStr;

pub mod config_file;
pub mod delay;
pub mod logs;
pub mod lsn;
pub mod notes;
pub mod security;
pub mod work;

/// Generated gRPC code.
pub mod pb {
    tonic::include_proto!("pgpilot.v1");
}

/// A node's replication state, reported by its keeper or assigned by the monitor.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ReplicationState {
    Init,
    Single,
    WaitPrimary,
    Primary,
    JoinPrimary,
    ApplySettings,
    WaitStandby,
    Catchingup,
    Secondary,
    ReportLsn,
    FastForward,
    PreparePromotion,
    StopReplication,
    Draining,
    DemoteTimeout,
    Demoted,
    JoinSecondary,
    WaitMaintenance,
    PrepareMaintenance,
    Maintenance,
    Dropped,
}

use ReplicationState as S;

impl ReplicationState {
    pub const ALL: [ReplicationState; 21] = [
        S::Init,
        S::Single,
        S::WaitPrimary,
        S::Primary,
        S::JoinPrimary,
        S::ApplySettings,
        S::WaitStandby,
        S::Catchingup,
        S::Secondary,
        S::ReportLsn,
        S::FastForward,
        S::PreparePromotion,
        S::StopReplication,
        S::Draining,
        S::DemoteTimeout,
        S::Demoted,
        S::JoinSecondary,
        S::WaitMaintenance,
        S::PrepareMaintenance,
        S::Maintenance,
        S::Dropped,
    ];

    /// The name used in configs, the database, logs and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            S::Init => "init",
            S::Single => "single",
            S::WaitPrimary => "wait_primary",
            S::Primary => "primary",
            S::JoinPrimary => "join_primary",
            S::ApplySettings => "apply_settings",
            S::WaitStandby => "wait_standby",
            S::Catchingup => "catchingup",
            S::Secondary => "secondary",
            S::ReportLsn => "report_lsn",
            S::FastForward => "fast_forward",
            S::PreparePromotion => "prepare_promotion",
            S::StopReplication => "stop_replication",
            S::Draining => "draining",
            S::DemoteTimeout => "demote_timeout",
            S::Demoted => "demoted",
            S::JoinSecondary => "join_secondary",
            S::WaitMaintenance => "wait_maintenance",
            S::PrepareMaintenance => "prepare_maintenance",
            S::Maintenance => "maintenance",
            S::Dropped => "dropped",
        }
    }

    /// States in which the node is the group's writable primary.
    pub fn is_writable_primary(self) -> bool {
        matches!(
            self,
            S::Single | S::WaitPrimary | S::Primary | S::JoinPrimary | S::ApplySettings
        )
    }

    /// States of a running standby that streams from the primary.
    pub fn is_following(self) -> bool {
        matches!(
            self,
            S::Catchingup | S::Secondary | S::ReportLsn | S::JoinSecondary | S::PreparePromotion
        )
    }

    /// States of a standby taking part in an election, up to the
    /// winner's last step before it promotes: while its goal is one of
    /// them, a keeper remembers a refusal of its `before_promotion` hook.
    pub fn is_in_election(self) -> bool {
        matches!(self, S::ReportLsn | S::FastForward | S::PreparePromotion)
    }

    /// States in which the keeper fences PostgreSQL when the monitor is out
    /// of reach and too few standbys stream from it (DESIGN §4).
    pub fn must_fence_when_isolated(self) -> bool {
        matches!(
            self,
            S::WaitPrimary | S::Primary | S::JoinPrimary | S::ApplySettings
        )
    }
}

impl fmt::Display for ReplicationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`ReplicationState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown replication state {:?}", self.0)
    }
}

impl std::error::Error for UnknownState {}

impl FromStr for ReplicationState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        S::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl From<ReplicationState> for pb::NodeState {
    fn from(state: ReplicationState) -> Self {
        use pb::NodeState as P;
        match state {
            S::Init => P::Init,
            S::Single => P::Single,
            S::WaitPrimary => P::WaitPrimary,
            S::Primary => P::Primary,
            S::JoinPrimary => P::JoinPrimary,
            S::ApplySettings => P::ApplySettings,
            S::WaitStandby => P::WaitStandby,
            S::Catchingup => P::Catchingup,
            S::Secondary => P::Secondary,
            S::ReportLsn => P::ReportLsn,
            S::FastForward => P::FastForward,
            S::PreparePromotion => P::PreparePromotion,
            S::StopReplication => P::StopReplication,
            S::Draining => P::Draining,
            S::DemoteTimeout => P::DemoteTimeout,
            S::Demoted => P::Demoted,
            S::JoinSecondary => P::JoinSecondary,
            S::WaitMaintenance => P::WaitMaintenance,
            S::PrepareMaintenance => P::PrepareMaintenance,
            S::Maintenance => P::Maintenance,
            S::Dropped => P::Dropped,
        }
    }
}

impl TryFrom<pb::NodeState> for ReplicationState {
    type Error = UnknownState;

    fn try_from(state: pb::NodeState) -> Result<Self, Self::Error> {
        use pb::NodeState as P;
        Ok(match state {
            P::Unspecified => return Err(UnknownState("unspecified".into())),
            P::Init => S::Init,
            P::Single => S::Single,
            P::WaitPrimary => S::WaitPrimary,
            P::Primary => S::Primary,
            P::JoinPrimary => S::JoinPrimary,
            P::ApplySettings => S::ApplySettings,
            P::WaitStandby => S::WaitStandby,
            P::Catchingup => S::Catchingup,
            P::Secondary => S::Secondary,
            P::ReportLsn => S::ReportLsn,
            P::FastForward => S::FastForward,
            P::PreparePromotion => S::PreparePromotion,
            P::StopReplication => S::StopReplication,
            P::Draining => S::Draining,
            P::DemoteTimeout => S::DemoteTimeout,
            P::Demoted => S::Demoted,
            P::JoinSecondary => S::JoinSecondary,
            P::WaitMaintenance => S::WaitMaintenance,
            P::PrepareMaintenance => S::PrepareMaintenance,
            P::Maintenance => S::Maintenance,
            P::Dropped => S::Dropped,
        })
    }
}

impl ReplicationState {
    /// Decode the `i32` a prost message carries.
    pub fn from_wire(value: i32) -> Result<Self, UnknownState> {
        pb::NodeState::try_from(value)
            .map_err(|_| UnknownState(value.to_string()))
            .and_then(ReplicationState::try_from)
    }

    pub fn to_wire(self) -> i32 {
        pb::NodeState::from(self) as i32
    }
}

/// Every transition (reported → goal) the keeper knows how to carry out.
///
/// The monitor must never assign a goal that has no edge from the node's
/// reported state; a test in the monitor enumerates the goals its state
/// machine can assign and checks each against this table.
pub const KEEPER_EDGES: &[(ReplicationState, ReplicationState)] = &[
    // A new node: the first becomes the primary, the others standbys.
    (S::Init, S::Single),
    (S::Init, S::WaitStandby),
    // The primary accepts a standby, turns synchronous replication on and off.
    (S::Single, S::WaitPrimary),
    (S::WaitPrimary, S::Primary),
    (S::WaitPrimary, S::Single),
    (S::Primary, S::WaitPrimary),
    (S::Primary, S::JoinPrimary),
    (S::JoinPrimary, S::Primary),
    (S::JoinPrimary, S::WaitPrimary),
    // The old primary: planned (draining) or unplanned (demoted).
    (S::Single, S::Draining),
    (S::WaitPrimary, S::Draining),
    (S::Primary, S::Draining),
    (S::JoinPrimary, S::Draining),
    (S::WaitPrimary, S::Demoted),
    (S::Primary, S::Demoted),
    (S::JoinPrimary, S::Demoted),
    (S::Draining, S::Demoted),
    (S::DemoteTimeout, S::Demoted),
    // Standbys.
    (S::WaitStandby, S::Catchingup),
    (S::Catchingup, S::Secondary),
    (S::Secondary, S::Catchingup),
    (S::Secondary, S::ReportLsn),
    (S::ReportLsn, S::Secondary),
    (S::ReportLsn, S::PreparePromotion),
    (S::ReportLsn, S::JoinSecondary),
    // A standby that had not yet reached report_lsn when the winner was promoted.
    (S::Secondary, S::JoinSecondary),
    (S::JoinSecondary, S::Secondary),
    (S::JoinSecondary, S::Catchingup),
    // Promotion, fetching missing WAL from a more advanced standby first.
    (S::ReportLsn, S::FastForward),
    // The WAL to fetch cannot be had: back to the election; and a winner
    // sent back whose election then promoted another follows it.
    (S::FastForward, S::ReportLsn),
    (S::FastForward, S::JoinSecondary),
    (S::FastForward, S::PreparePromotion),
    (S::PreparePromotion, S::StopReplication),
    // An elected standby taken back (its before_promotion hook had
    // refused and another candidate was chosen while its keeper, the hook
    // accepting on a later try, went on): it never promoted.
    (S::PreparePromotion, S::ReportLsn),
    (S::StopReplication, S::WaitPrimary),
    // The old primary rejoins as a standby (pg_rewind or a fresh clone).
    (S::Demoted, S::Catchingup),
    // Settings changes on the primary.
    (S::Primary, S::ApplySettings),
    (S::ApplySettings, S::Primary),
    (S::ApplySettings, S::WaitPrimary),
    (S::ApplySettings, S::Draining),
    (S::ApplySettings, S::Demoted),
    // Maintenance: a standby stops (after the primary dropped it from
    // synchronous replication); a primary hands over first.
    (S::Secondary, S::WaitMaintenance),
    (S::Secondary, S::Maintenance),
    (S::Catchingup, S::Maintenance),
    (S::WaitMaintenance, S::Maintenance),
    // Maintenance called back before the standby stopped.
    (S::WaitMaintenance, S::Catchingup),
    (S::Primary, S::PrepareMaintenance),
    (S::WaitPrimary, S::PrepareMaintenance),
    (S::ApplySettings, S::PrepareMaintenance),
    (S::PrepareMaintenance, S::Maintenance),
    // A primary told to hand over for maintenance whose keeper died before
    // it stopped: replaced under the fence deadline, it stops when back.
    (S::Primary, S::Maintenance),
    (S::WaitPrimary, S::Maintenance),
    (S::ApplySettings, S::Maintenance),
    (S::Maintenance, S::Catchingup),
    // reinit: stop, then clone the primary afresh (wait_standby -> catchingup).
    (S::Secondary, S::WaitStandby),
    (S::Catchingup, S::WaitStandby),
    (S::Maintenance, S::WaitStandby),
    (S::Demoted, S::WaitStandby),
];

/// Whether the keeper can walk from `reported` to `goal`.
///
/// Any node but a writable primary can be dropped: the keeper stops
/// PostgreSQL and exits.
pub fn keeper_has_edge(reported: ReplicationState, goal: ReplicationState) -> bool {
    reported == goal
        || KEEPER_EDGES.contains(&(reported, goal))
        || (goal == S::Dropped && !reported.is_writable_primary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in ReplicationState::ALL {
            assert_eq!(state.as_str().parse::<ReplicationState>(), Ok(state));
            assert_eq!(ReplicationState::from_wire(state.to_wire()), Ok(state));
        }
        assert!("primry".parse::<ReplicationState>().is_err());
        assert!(ReplicationState::from_wire(0).is_err());
        assert!(ReplicationState::from_wire(999).is_err());
    }

    #[test]
    fn edges_have_no_duplicates_or_loops() {
        for (i, edge) in KEEPER_EDGES.iter().enumerate() {
            assert_ne!(edge.0, edge.1, "self loop {edge:?}");
            assert!(!KEEPER_EDGES[i + 1..].contains(edge), "duplicate {edge:?}");
        }
    }
}
