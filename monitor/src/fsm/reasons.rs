//! Why the state machine changes a goal ([`Reason`]) and why a group
//! waits ([`Wait`]): typed, each with a stable snake_case `kind` (stored
//! in the event table and shown beside the text) and the sentence a person
//! reads.

use std::fmt;

use pgpilot_proto::lsn::format_lsn;

use super::START_FAILURES_BEFORE_FAILOVER;

/// Why a goal changed: stored with every event, as its [`Reason::kind`]
/// and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    FirstNode,
    JoinAsStandby {
        primary: String,
    },
    AcceptStandby {
        standby: String,
    },
    CloneFromPrimary {
        primary: String,
    },
    CaughtUp {
        lag_bytes: u64,
    },
    SyncReplicationOn {
        standby: String,
    },
    NoQuorumStandby,
    StandbyLost {
        why: String,
    },
    PrimaryUnhealthy {
        primary: String,
        why: String,
    },
    PrimaryPostgresDown {
        primary: String,
        why: String,
    },
    PrimaryBack {
        primary: String,
    },
    Elected {
        lsn: u64,
        reporters: usize,
        rule: &'static str,
    },
    OldPrimaryReplaced {
        new_primary: String,
    },
    Promotion {
        step: &'static str,
    },
    NewPrimary {
        primary: String,
    },
    FollowingNewPrimary,
    Rejoin {
        primary: String,
    },
    PlannedFailover,
    PlannedSwitchover {
        to: String,
    },
    FastForward {
        from: String,
        timeline: u32,
        lsn: u64,
    },
    SettingsApplied,
    SettingsChanged {
        what: String,
    },
    MaintenanceRequested,
    MaintenanceReady,
    MaintenanceOfPrimary,
    MaintenanceOver,
    Dropped,
    Reinit,
    /// The keeper reported a state from which its goal has no edge: the
    /// goal was set from an older report. The goal goes back to where the
    /// keeper is, and the group is decided again from there.
    GoalUnreachable {
        reported: pgpilot_proto::ReplicationState,
        goal: pgpilot_proto::ReplicationState,
    },
    /// The WAL the elected standby lacks is on no node that can serve it,
    /// now or after a restart under way: the election runs again from the
    /// nodes there are, under the promotion rule.
    FastForwardSourceLost {
        why: String,
    },
    /// The elected standby's `before_promotion` hook refused; another
    /// candidate can be elected.
    PromotionRefused {
        node: String,
    },
    /// The node's keeper is stopping it on purpose (SIGTERM): a primary
    /// hands over as in a planned failover, a secondary leaves the
    /// synchronous set before its PostgreSQL stops.
    KeeperStopping {
        node: String,
    },
}

impl Reason {
    /// The stable name of this kind of reason (the event's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Reason::FirstNode => "first_node",
            Reason::JoinAsStandby { .. } => "join_as_standby",
            Reason::AcceptStandby { .. } => "accept_standby",
            Reason::CloneFromPrimary { .. } => "clone_from_primary",
            Reason::CaughtUp { .. } => "caught_up",
            Reason::SyncReplicationOn { .. } => "sync_replication_on",
            Reason::NoQuorumStandby => "no_quorum_standby",
            Reason::StandbyLost { .. } => "standby_lost",
            Reason::PrimaryUnhealthy { .. } => "primary_unhealthy",
            Reason::PrimaryPostgresDown { .. } => "primary_postgres_down",
            Reason::PrimaryBack { .. } => "primary_back",
            Reason::Elected { .. } => "elected",
            Reason::OldPrimaryReplaced { .. } => "old_primary_replaced",
            Reason::Promotion { .. } => "promotion",
            Reason::NewPrimary { .. } => "new_primary",
            Reason::FollowingNewPrimary => "following_new_primary",
            Reason::Rejoin { .. } => "rejoin",
            Reason::PlannedFailover => "planned_failover",
            Reason::PlannedSwitchover { .. } => "planned_switchover",
            Reason::FastForward { .. } => "fast_forward",
            Reason::SettingsApplied => "settings_applied",
            Reason::SettingsChanged { .. } => "settings_changed",
            Reason::MaintenanceRequested => "maintenance_requested",
            Reason::MaintenanceReady => "maintenance_ready",
            Reason::MaintenanceOfPrimary => "maintenance_of_primary",
            Reason::MaintenanceOver => "maintenance_over",
            Reason::Dropped => "dropped",
            Reason::Reinit => "reinit",
            Reason::GoalUnreachable { .. } => "goal_unreachable",
            Reason::FastForwardSourceLost { .. } => "fast_forward_source_lost",
            Reason::PromotionRefused { .. } => "promotion_refused",
            Reason::KeeperStopping { .. } => "keeper_stopping",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::FirstNode => write!(f, "first node of the group: it becomes the primary"),
            Reason::JoinAsStandby { primary } => {
                write!(f, "joining as a standby of {primary}")
            }
            Reason::AcceptStandby { standby } => write!(
                f,
                "standby {standby} is joining: keep writing without synchronous replication until it catches up"
            ),
            Reason::CloneFromPrimary { primary } => {
                write!(f, "primary {primary} is ready: clone it and stream from it")
            }
            Reason::CaughtUp { lag_bytes } => write!(
                f,
                "streaming and {lag_bytes} bytes behind the primary: a healthy standby"
            ),
            Reason::SyncReplicationOn { standby } => write!(
                f,
                "standby {standby} is secondary: synchronous replication on"
            ),
            Reason::NoQuorumStandby => write!(
                f,
                "no quorum standby is secondary and number_sync_standbys is 0: synchronous replication off so writes go on"
            ),
            Reason::StandbyLost { why } => write!(f, "standby no longer healthy: {why}"),
            Reason::PrimaryUnhealthy { primary, why } => write!(
                f,
                "primary {primary} is unhealthy ({why}): election started, report your LSN"
            ),
            Reason::PrimaryPostgresDown { primary, why } => write!(
                f,
                "PostgreSQL on primary {primary} stays down while its keeper runs ({why}): failing over"
            ),
            Reason::PrimaryBack { primary } => write!(
                f,
                "primary {primary} is reachable again before any promotion: failover cancelled"
            ),
            Reason::Elected {
                lsn,
                reporters,
                rule,
            } => write!(
                f,
                "elected with LSN {} among {reporters} reporting standbys ({rule})",
                format_lsn(*lsn)
            ),
            Reason::OldPrimaryReplaced { new_primary } => {
                write!(f, "{new_primary} is being promoted: stay stopped")
            }
            Reason::Promotion { step } => write!(f, "promotion: {step}"),
            Reason::NewPrimary { primary } => {
                write!(f, "{primary} is the new primary: follow it")
            }
            Reason::FollowingNewPrimary => write!(f, "streaming from the new primary"),
            Reason::Rejoin { primary } => write!(
                f,
                "old primary rejoins as a standby of {primary} (pg_rewind, or a fresh clone)"
            ),
            Reason::PlannedFailover => {
                write!(f, "planned failover: stop taking writes, then hand over")
            }
            Reason::PlannedSwitchover { to } => {
                write!(f, "planned switchover to {to}: stop taking writes, then hand over")
            }
            Reason::FastForward {
                from,
                timeline,
                lsn,
            } => write!(
                f,
                "elected, but behind: fetch the WAL up to {} on timeline {timeline} from {from} first",
                format_lsn(*lsn)
            ),
            Reason::SettingsApplied => write!(f, "new replication settings applied"),
            Reason::SettingsChanged { what } => {
                write!(f, "{what}: apply the new synchronous_standby_names")
            }
            Reason::MaintenanceRequested => write!(
                f,
                "maintenance requested: wait until the primary no longer waits for this node"
            ),
            Reason::MaintenanceReady => write!(f, "maintenance: stop PostgreSQL"),
            Reason::MaintenanceOfPrimary => write!(
                f,
                "maintenance of the primary requested: stop taking writes and hand over first"
            ),
            Reason::MaintenanceOver => {
                write!(f, "maintenance over: catch up with the primary again")
            }
            Reason::Dropped => write!(f, "dropped by the operator"),
            Reason::Reinit => write!(
                f,
                "reinit requested: stop, then rebuild from a fresh clone of the primary"
            ),
            Reason::FastForwardSourceLost { why } => write!(
                f,
                "the WAL to fetch before the promotion cannot be had ({why}): electing again among the standbys there are"
            ),
            Reason::PromotionRefused { node } => write!(
                f,
                "the before_promotion hook of {node} refused its promotion: electing again, another candidate first"
            ),
            Reason::GoalUnreachable { reported, goal } => write!(
                f,
                "the keeper reports {reported}, from which it has no path to {goal} (a goal set from an older report): deciding again from {reported}"
            ),
            Reason::KeeperStopping { node } => write!(
                f,
                "the keeper of {node} is stopping it: it hands over before PostgreSQL stops"
            ),
        }
    }
}

/// Why a group waits instead of deciding: shown by show-state, and for a
/// stuck election recorded once as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// A new node waits for a running primary to join.
    NoPrimaryToJoin { node: String },
    /// The live keeper of the primary restarts its PostgreSQL.
    PrimaryRestarting {
        primary: String,
        down_ms: u128,
        start_failures: u32,
        left_ms: u128,
    },
    /// A planned hand-over waits for the primary to stop taking writes.
    PrimaryStopping { primary: String },
    /// The primary is unhealthy and no standby can be promoted.
    NoCandidate { primary: String },
    /// The primary is unhealthy but the formation is paused: no failover
    /// starts until an operator resumes it.
    Paused { primary: String, why: String },
    /// The old primary stopped but no standby takes part in the election.
    NoStandbyInElection { primary: String },
    /// The election waits for standbys (`late`; empty: any) to report.
    AwaitingReports { late: Vec<String>, primary: String },
    /// Reports made before the old primary stopped do not count.
    AwaitingReportsAfterStop { stale: Vec<String>, primary: String },
    /// Too few standbys can report for the promotion rule (a double
    /// fault): only an operator can let it finish.
    ElectionStuck {
        primary: String,
        /// The old primary confirmed it stopped.
        primary_stopped: bool,
        reporting: usize,
        needed: usize,
    },
    /// The old primary may not fence (its keeper last held no fence
    /// quorum), so no deadline proves it stopped: only its keeper, heard
    /// again, can let the election finish. Not even an operator's
    /// override promotes beside it.
    UnfencedPrimary { primary: String },
    /// The old primary may still accept writes until its fence deadline.
    FenceDeadline { primary: String, ms: i64 },
    /// No reporting standby may be promoted.
    NoEligibleReporter { max_lsn: u64 },
    /// The elected standby's `before_promotion` hook refused and no other
    /// candidate can be elected: its keeper runs the hook again.
    PromotionRefused { node: String },
    /// The elected standby cannot fetch the WAL it misses.
    FastForwardBlocked { node: String, down: Vec<String> },
    /// The elected standby fetches the WAL it misses.
    FastForwarding {
        node: String,
        timeline: u32,
        target: u64,
    },
}

impl Wait {
    /// The stable name of this kind of wait.
    pub fn kind(&self) -> &'static str {
        match self {
            Wait::NoPrimaryToJoin { .. } => "no_primary_to_join",
            Wait::PrimaryRestarting { .. } => "primary_restarting",
            Wait::PrimaryStopping { .. } => "primary_stopping",
            Wait::NoCandidate { .. } => "no_candidate",
            Wait::Paused { .. } => "paused",
            Wait::NoStandbyInElection { .. } => "no_standby_in_election",
            Wait::AwaitingReports { .. } => "awaiting_reports",
            Wait::AwaitingReportsAfterStop { .. } => "awaiting_reports_after_stop",
            Wait::ElectionStuck { .. } | Wait::UnfencedPrimary { .. } => Wait::ELECTION_STUCK,
            Wait::FenceDeadline { .. } => "fence_deadline",
            Wait::NoEligibleReporter { .. } => "no_eligible_reporter",
            Wait::PromotionRefused { .. } => "promotion_refused",
            Wait::FastForwardBlocked { .. } => "fast_forward_blocked",
            Wait::FastForwarding { .. } => "fast_forwarding",
        }
    }

    /// The kind of a stuck election, the one wait an operator must act on.
    pub const ELECTION_STUCK: &'static str = "election_stuck";

    /// Whether this is a stuck election.
    pub fn is_election_stuck(&self) -> bool {
        matches!(
            self,
            Wait::ElectionStuck { .. } | Wait::UnfencedPrimary { .. }
        )
    }

    /// Whether `perform-failover --allow-data-loss` can let this stuck
    /// election finish.
    pub fn can_be_forced(&self) -> bool {
        matches!(self, Wait::ElectionStuck { .. })
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::NoPrimaryToJoin { node } => {
                write!(f, "{node} waits for the group to have a running primary")
            }
            Wait::PrimaryRestarting {
                primary,
                down_ms,
                start_failures,
                left_ms,
            } => {
                let failures = if *start_failures > 0 {
                    format!(
                        ", {start_failures} of {START_FAILURES_BEFORE_FAILOVER} start attempts failed"
                    )
                } else {
                    String::new()
                };
                write!(
                    f,
                    "PostgreSQL on primary {primary} is down for {down_ms} ms{failures}: its keeper restarts it; failover in {left_ms} ms unless it comes back"
                )
            }
            Wait::PrimaryStopping { primary } => {
                write!(f, "waiting for {primary} to stop taking writes")
            }
            Wait::NoCandidate { primary } => write!(
                f,
                "primary {primary} is unhealthy but no standby can be promoted: none is a healthy secondary with candidate priority above 0"
            ),
            Wait::Paused { primary, why } => write!(
                f,
                "primary {primary} is unhealthy ({why}) but the formation is paused: no failover until an operator runs resume"
            ),
            Wait::NoStandbyInElection { primary } => write!(
                f,
                "{primary} stopped but no standby is taking part in the election"
            ),
            Wait::AwaitingReports { late, primary } => write!(
                f,
                "election: waiting for {} to report their LSN with their stream from {primary} gone",
                if late.is_empty() {
                    "the standbys".to_string()
                } else {
                    late.join(", ")
                }
            ),
            Wait::AwaitingReportsAfterStop { stale, primary } => write!(
                f,
                "election: waiting for {} to report their LSN again now that {primary} stopped",
                stale.join(", ")
            ),
            Wait::ElectionStuck {
                primary,
                primary_stopped: true,
                reporting,
                needed,
            } => write!(
                f,
                "election stuck: {primary} stopped, but only {reporting} of the {needed} standbys needed have reported their LSN, so an acknowledged commit may be only on the others; bring them back, or run perform-failover --allow-data-loss to accept losing acknowledged commits"
            ),
            Wait::ElectionStuck {
                primary,
                primary_stopped: false,
                reporting,
                needed,
            } => write!(
                f,
                "election stuck: only {reporting} of the {needed} standbys needed have reported their stream from {primary} gone, so {primary} may still be serving; bring them back, or run perform-failover --allow-data-loss to accept losing acknowledged commits"
            ),
            Wait::UnfencedPrimary { primary } => write!(
                f,
                "election stuck: {primary} may still accept writes: its keeper last held no fence quorum, so nothing stops it when it is cut off and no deadline proves it stopped; bring its keeper back (it stops PostgreSQL, or confirms the stop)"
            ),
            Wait::FenceDeadline { primary, ms } => write!(
                f,
                "election: {primary} may still accept writes for {ms} ms before it has fenced itself"
            ),
            Wait::NoEligibleReporter { max_lsn } => write!(
                f,
                "election: no reporting standby has a candidate priority above 0 (most advanced LSN {})",
                format_lsn(*max_lsn)
            ),
            Wait::PromotionRefused { node } => write!(
                f,
                "election: the before_promotion hook of {node} refused its promotion and no other standby can be elected; its keeper runs the hook again"
            ),
            Wait::FastForwardBlocked { node, down } => write!(
                f,
                "{node} waits to fetch the missing WAL: {}",
                if down.is_empty() {
                    "no standby to fetch it from is running".to_string()
                } else {
                    format!("PostgreSQL of {} is down", down.join(", "))
                }
            ),
            Wait::FastForwarding {
                node,
                timeline,
                target,
            } => write!(
                f,
                "{node} is fetching WAL up to {} on timeline {timeline} before its promotion",
                format_lsn(*target)
            ),
        }
    }
}
