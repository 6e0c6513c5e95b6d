//! Why the monitor refuses an operator command or a registration: one
//! variant per case, displayed as the one sentence the person sees.

use std::fmt;

use pgpilot_proto::delay;
use pgpilot_proto::ReplicationState as S;

/// How a refusal reaches the caller (the gRPC service maps it to a code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// It names something that does not exist.
    NotFound,
    /// Well-formed, but the group is not in a state that allows it.
    FailedPrecondition,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownNode {
        formation: String,
        name: String,
        known: Vec<String>,
    },
    NameTaken {
        name: String,
        host: String,
        port: i32,
    },
    AddressTaken {
        host: String,
        port: u16,
        other: String,
    },
    NoPrimary,
    PrimaryNotSettled {
        name: String,
        reported: S,
        goal: S,
    },
    AlreadyPrimary {
        name: String,
    },
    PriorityZero {
        name: String,
    },
    /// A delayed standby named for a promotion.
    DelayedNeverPromoted {
        name: String,
        apply_delay_ms: u64,
    },
    /// A delayed standby asked to be a candidate or to count for the
    /// quorum (`asked`: "candidate_priority 50", "replication_quorum true").
    DelayedCandidate {
        name: String,
        apply_delay_ms: u64,
        asked: String,
    },
    /// A keeper registering with an apply delay and a candidate priority
    /// above 0 or the replication quorum on.
    DelayedRegistration {
        name: String,
        apply_delay_ms: u64,
        candidate_priority: u32,
        replication_quorum: bool,
    },

    NotHealthySecondary {
        name: String,
        reported: S,
        goal: S,
    },
    NotFollowingPrimary {
        name: String,
        primary: String,
    },
    NoCandidate,
    NotStuck,
    UnfencedPrimary {
        name: String,
    },
    /// Settings the group could not live with (the sentence of
    /// [`crate::fsm::check_settings`]).
    Settings(String),
    DropRefused {
        name: String,
        why: String,
    },
    DropPrimary {
        name: String,
    },
    NotInMaintenance {
        name: String,
        goal: S,
    },
    PrimaryMaintenanceNoCandidate {
        name: String,
    },
    OnlyCandidate {
        name: String,
    },
    WouldStopWrites {
        what: &'static str,
        name: String,
        quorum_left: u32,
        number_sync_standbys: u32,
    },
    MaintenanceFrom {
        name: String,
        reported: S,
        goal: S,
    },
    ReinitPrimary {
        name: String,
    },
    ReinitFrom {
        name: String,
        reported: S,
        goal: S,
    },
    NoSettledPrimary,
    FormationExists {
        name: String,
    },
    DropDefaultFormation,
    FormationNotEmpty {
        name: String,
        nodes: Vec<String>,
    },
    Unreachable {
        name: String,
        reported: S,
        goal: S,
        to: S,
    },
    AlreadyPaused {
        formation: String,
        by: String,
        since: String,
    },
    NotPaused {
        formation: String,
    },
    RestartUnderWay {
        name: String,
    },
    RestartNotRunning {
        name: String,
        reported: S,
        goal: S,
        pg_running: bool,
    },
    UnknownParameter {
        name: String,
        server: String,
    },
    ManagedParameter {
        name: String,
        why: String,
    },
    BadParameterValue {
        name: String,
        value: String,
        why: String,
    },
    ParameterNotSet {
        formation: String,
        name: String,
        set: Vec<String>,
    },
    /// A permanent slot that cannot be declared, or a change its slots
    /// could not live with (the sentence says which).
    Slot(String),
    /// A cascading standby's upstream that cannot be, or a setting its
    /// upstream forbids (the sentence says which).
    Cascade(String),
    UnknownSlot {
        formation: String,
        name: String,
        known: Vec<String>,
    },
}

impl Refusal {
    pub fn code(&self) -> RefusalCode {
        match self {
            Refusal::UnknownNode { .. }
            | Refusal::UnknownParameter { .. }
            | Refusal::ParameterNotSet { .. }
            | Refusal::UnknownSlot { .. } => RefusalCode::NotFound,
            _ => RefusalCode::FailedPrecondition,
        }
    }
}

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownNode {
                formation,
                name,
                known,
            } => {
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                f.write_str(&crate::names::unknown_node(formation, name, &known))
            }
            Refusal::NameTaken { name, host, port } => write!(
                f,
                "a node named {name:?} is already registered at {host}:{port}: choose another name, or drop that node first"
            ),
            Refusal::AddressTaken { host, port, other } => write!(
                f,
                "{host}:{port} is already registered as node {other:?}: a node's host and port must be unique"
            ),
            Refusal::NoPrimary => f.write_str(
                "the group has no primary right now (a failover may be under way): wait until show-state shows one",
            ),
            Refusal::PrimaryNotSettled { name, reported, goal } => write!(
                f,
                "primary {name} is not settled and healthy (reported {reported}, goal {goal}): wait until it is, or let automatic failover act"
            ),
            Refusal::AlreadyPrimary { name } => {
                write!(f, "{name} is already the primary: name a standby to promote")
            }
            Refusal::PriorityZero { name } => write!(
                f,
                "{name} has candidate priority 0 and is never promoted: raise it with set-candidate-priority first"
            ),
            Refusal::DelayedNeverPromoted {
                name,
                apply_delay_ms,
            } => write!(
                f,
                "{name} is a delayed standby (apply delay {}) and is never promoted: set its apply delay to 0 first (set-apply-delay {name} 0), then raise its candidate priority",
                delay::describe(*apply_delay_ms)
            ),
            Refusal::DelayedCandidate {
                name,
                apply_delay_ms,
                asked,
            } => write!(
                f,
                "with an apply delay of {}, {name} is a delayed standby, which is never promoted nor counted for synchronous commit, so {asked} is refused: set its apply delay to 0 first (set-apply-delay {name} 0)",
                delay::describe(*apply_delay_ms)
            ),
            Refusal::DelayedRegistration {
                name,
                apply_delay_ms,
                candidate_priority,
                replication_quorum,
            } => write!(
                f,
                "node {name} registers with apply_delay {} and candidate_priority {candidate_priority}, replication_quorum {replication_quorum}, but a delayed standby is never promoted nor counted for synchronous commit: set candidate_priority = 0 and replication_quorum = false in its keeper configuration, or remove apply_delay",
                delay::describe(*apply_delay_ms)
            ),
            Refusal::NotHealthySecondary { name, reported, goal } => write!(
                f,
                "{name} is not a healthy secondary (reported {reported}, goal {goal}): wait until show-state shows it secondary"
            ),
            Refusal::NotFollowingPrimary { name, primary } => write!(
                f,
                "{name} does not stream from {primary} on its timeline yet, and a stopping primary hands its last WAL only to the standbys that stream from it: wait until show-state shows {name} streaming"
            ),
            Refusal::NoCandidate => f.write_str(
                "no healthy secondary streaming from the primary with candidate priority above 0 can take over: add a standby or wait until one is secondary and streaming",
            ),
            Refusal::NotStuck => f.write_str(
                "no election is stuck: --allow-data-loss only unblocks an election that waits for standbys that cannot report (see show-state)",
            ),
            Refusal::UnfencedPrimary { name } => write!(
                f,
                "{name} may still accept writes: its keeper last held no fence quorum, so nothing stops it when it is cut off, and promoting another node would make two primaries; start its keeper again (it stops PostgreSQL, or confirms the stop), then the election goes on by itself"
            ),
            Refusal::Settings(why) => f.write_str(why),
            Refusal::DropRefused { name, why } => write!(f, "dropping {name} is refused: {why}"),
            Refusal::DropPrimary { name } => write!(
                f,
                "{name} is the primary: run perform-failover first, then drop it as a standby"
            ),
            Refusal::NotInMaintenance { name, goal } => write!(
                f,
                "{name} is not in maintenance (goal {goal}): nothing to disable"
            ),
            Refusal::PrimaryMaintenanceNoCandidate { name } => write!(
                f,
                "maintenance of primary {name} needs a switchover first, and no healthy secondary with candidate priority above 0 can take over: add or repair a standby first"
            ),
            Refusal::OnlyCandidate { name } => write!(
                f,
                "{name} is the only standby that could be promoted: maintenance would leave no failover candidate; add a standby or raise another's candidate priority first"
            ),
            Refusal::WouldStopWrites {
                what,
                name,
                quorum_left,
                number_sync_standbys,
            } => write!(
                f,
                "{what} of {name} would leave {quorum_left} quorum standbys for number_sync_standbys = {number_sync_standbys}: writes would stop; lower number_sync_standbys first"
            ),
            Refusal::MaintenanceFrom { name, reported, goal } => write!(
                f,
                "{name} is {reported} (goal {goal}): maintenance starts only from primary, secondary or catchingup; wait until the group settles"
            ),
            Refusal::ReinitPrimary { name } => write!(
                f,
                "{name} is the primary: run perform-failover first, then reinit it as a standby"
            ),
            Refusal::ReinitFrom { name, reported, goal } => write!(
                f,
                "{name} is {reported} (goal {goal}): reinit applies to a secondary, catchingup, demoted or maintenance node; wait until the group settles"
            ),
            Refusal::NoSettledPrimary => f.write_str(
                "the group has no settled primary to clone from: wait until show-state shows one",
            ),
            Refusal::FormationExists { name } => write!(
                f,
                "formation {name} already exists: show-formations lists the formations"
            ),
            Refusal::DropDefaultFormation => f.write_str(
                "the formation \"default\" cannot be dropped: keepers without a formation setting join it",
            ),
            Refusal::FormationNotEmpty { name, nodes } => write!(
                f,
                "formation {name} still has {} nodes ({}): drop-node each of them first",
                nodes.len(),
                nodes.join(", ")
            ),
            Refusal::Unreachable {
                name,
                reported,
                goal,
                to,
            } => write!(
                f,
                "{name} is still {reported} (goal {goal}) and cannot go to {to} from there: wait until show-state shows it settled, then retry"
            ),
            Refusal::AlreadyPaused {
                formation,
                by,
                since,
            } => write!(
                f,
                "formation {formation} is already paused (by {by} since {since}): resume it with resume"
            ),
            Refusal::NotPaused { formation } => write!(
                f,
                "formation {formation} is not paused: nothing to resume"
            ),
            Refusal::RestartUnderWay { name } => write!(
                f,
                "a restart of {name} is already under way: wait until show-state shows it done"
            ),
            Refusal::RestartNotRunning {
                name,
                reported,
                goal,
                pg_running,
            } => {
                let running = if *pg_running { "running" } else { "not running" };
                write!(
                    f,
                    "{name} is {reported} (goal {goal}, PostgreSQL {running}): only a node settled as primary or standby with PostgreSQL running is restarted; wait until it settles, or start it"
                )
            }
            Refusal::UnknownParameter { name, server } => write!(
                f,
                "{name} is not a setting of PostgreSQL {server} (the monitor database's server): check its name in pg_settings"
            ),
            Refusal::ManagedParameter { name, why } => write!(
                f,
                "{name} cannot be set for a formation: {why}"
            ),
            Refusal::BadParameterValue { name, value, why } => write!(
                f,
                "{} is not a valid value for {name}: {why}",
                crate::names::quote(value)
            ),
            Refusal::ParameterNotSet {
                formation,
                name,
                set,
            } => {
                if set.is_empty() {
                    write!(f, "{name} is not set for formation {formation}: it has no parameters (show-parameters)")
                } else {
                    write!(
                        f,
                        "{name} is not set for formation {formation}: it has {} (show-parameters)",
                        set.join(", ")
                    )
                }
            }
            Refusal::Slot(why) | Refusal::Cascade(why) => write!(f, "{why}"),
            Refusal::UnknownSlot {
                formation,
                name,
                known,
            } => {
                let name = crate::names::quote(name);
                if known.is_empty() {
                    write!(f, "formation {formation} has no permanent slot {name}: it has no permanent slot (show-slots)")
                } else {
                    write!(
                        f,
                        "formation {formation} has no permanent slot {name}: it has {} (show-slots)",
                        known.join(", ")
                    )
                }
            }
        }
    }
}
