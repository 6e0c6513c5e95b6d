//! Transition plans: a pure function from (reported state, goal state) to
//! the ordered actions that walk the local PostgreSQL from one to the other.
//! Every action is idempotent, so a keeper killed half-way simply runs the
//! same plan again after a restart.

use pgpilot_proto::{keeper_has_edge, ReplicationState as S};

/// One step the executor carries out on the local PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// initdb when PGDATA holds no cluster.
    InitDb,
    /// Write pgpilot.conf as a primary (synchronous_standby_names from the monitor).
    ConfigurePrimary,
    /// Write pgpilot.conf and standby.signal to follow the monitor's primary.
    ConfigureStandby,
    /// Start PostgreSQL when it is not running.
    Start,
    /// Reload the configuration.
    Reload,
    /// Fast shutdown (a primary first sends its remaining WAL to connected standbys).
    Stop,
    /// A primary about to hand over: CHECKPOINT while it still takes
    /// writes, so that the shutdown checkpoint of the `Stop` that follows,
    /// during which no write is taken, has little left to write. Best
    /// effort: skipped when PostgreSQL does not answer.
    Checkpoint,
    /// Replace PGDATA by a clone (of the monitor's clone source, else the
    /// primary) — unless the node is joining (not reinitialised) and its
    /// data directory already belongs to the group (see
    /// [`crate::adoption`]): then it is kept, rewound first if its WAL
    /// forked.
    AdoptOrClone,
    /// pg_rewind to the primary, falling back to a fresh clone when it fails.
    RewindOrClone,
    /// A standby whose WAL diverged from the primary's timeline history
    /// (see [`crate::timeline`]) is rewound, or cloned afresh when that
    /// fails, and the monitor is told; nothing otherwise. Checked only while
    /// the WAL receiver does not stream: a streaming standby is never
    /// stopped to check.
    RewindIfDiverged,
    /// Run the `before_promotion` hook (when set): a refusal ends the
    /// plan, and the monitor hears of it (see [`crate::hooks`]).
    BeforePromotion,
    /// Replay every WAL record already received.
    WaitReplayCaughtUp,
    /// pg_promote() and check that writes are accepted.
    Promote,
    /// Keep a replication slot for every other node, drop the rest.
    SyncSlots,
    /// The first node: restart PostgreSQL once when settings pgpilot.conf
    /// set need a restart (an existing server adopted as it ran), and tell
    /// the monitor when the data directory was adopted.
    RestartIfPending,
}

use Action::*;

/// The keeper has no edge from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the keeper cannot go from {from} to {to}: no such transition")]
pub struct NoEdge {
    pub from: S,
    pub to: S,
}

/// The actions that take the node from `from` to `to`.
pub fn plan(from: S, to: S) -> Result<Vec<Action>, NoEdge> {
    if !keeper_has_edge(from, to) {
        return Err(NoEdge { from, to });
    }
    if from == to {
        return Ok(steady(to));
    }
    let actions = match (from, to) {
        // initdb when PGDATA is empty; an existing cluster is adopted (its
        // server restarted once if pgpilot.conf's settings need it).
        (S::Init, S::Single) => {
            vec![
                InitDb,
                ConfigurePrimary,
                Start,
                Reload,
                RestartIfPending,
                SyncSlots,
            ]
        }
        // Nothing to do until the primary lets us clone it.
        (S::Init, S::WaitStandby) => vec![],
        // reinit: stop; the clone follows with wait_standby -> catchingup.
        (_, S::WaitStandby) => vec![Stop],
        (S::WaitStandby, S::Catchingup) => vec![Stop, AdoptOrClone, ConfigureStandby, Start],
        // The node was a primary on an older timeline (or stopped for
        // maintenance): rewind it, or clone when that fails.
        (S::Demoted | S::Maintenance, S::Catchingup) => {
            vec![Stop, RewindOrClone, ConfigureStandby, Start]
        }
        // Primary-side settings changes: apply and reload.
        (_, S::Single | S::WaitPrimary | S::Primary | S::JoinPrimary | S::ApplySettings)
            if from.is_writable_primary() =>
        {
            vec![ConfigurePrimary, Start, Reload, SyncSlots]
        }
        // A planned hand-over: the writes go on through the checkpoint.
        (_, S::Draining | S::PrepareMaintenance) if from.is_writable_primary() => {
            vec![Checkpoint, Stop]
        }
        (
            _,
            S::Draining
            | S::Demoted
            | S::DemoteTimeout
            | S::PrepareMaintenance
            | S::Maintenance
            | S::Dropped,
        ) => vec![Stop],
        // Nothing changes locally: the primary stops counting this standby.
        (S::Secondary, S::ReportLsn | S::WaitMaintenance) => vec![],
        // Start first: PostgreSQL may have stopped (crashed) since the
        // node reported its LSN, and replay and promotion need it running.
        (_, S::PreparePromotion) => vec![BeforePromotion, Start, WaitReplayCaughtUp],
        (S::PreparePromotion, S::StopReplication) => {
            vec![Start, Promote, ConfigurePrimary, Reload]
        }
        (S::StopReplication, S::WaitPrimary) => vec![ConfigurePrimary, Reload, SyncSlots],
        // Follow a new primary (join_secondary), or catch up again after the
        // stream was lost (catchingup): the standby may hold WAL the primary
        // never had (it received more than the elected standby, or the
        // election was forced); then it must be rewound before it can
        // follow. Checked before it starts, so that a stopped standby is
        // judged on its control file and never replays further.
        (_, S::Catchingup | S::JoinSecondary) => {
            vec![ConfigureStandby, RewindIfDiverged, Start, Reload]
        }
        // Follow the upstream the monitor names (for fast_forward, the most
        // advanced standby).
        (_, S::Secondary | S::ReportLsn | S::FastForward) => {
            vec![ConfigureStandby, Start, Reload]
        }
        _ => unreachable!("edge {from} -> {to} has no plan: add one"),
    };
    Ok(actions)
}

/// A restart of PostgreSQL asked through the monitor, at rest in `state`:
/// a primary checkpoints first, so that its stop has little left to write.
pub fn restart(state: S) -> Vec<Action> {
    if state.is_writable_primary() {
        vec![Checkpoint, Stop, Start]
    } else {
        vec![Stop, Start]
    }
}

/// What the keeper keeps true while it stays in `state`.
pub fn steady(state: S) -> Vec<Action> {
    match state {
        s if s.is_writable_primary() => vec![ConfigurePrimary, Start, Reload, SyncSlots],
        // A healthy standby also keeps slots for the others, for the day
        // it is promoted; one that does not stream is checked for
        // divergence too (it may be elected before the monitor moves it to
        // catchingup).
        S::Secondary => vec![ConfigureStandby, RewindIfDiverged, Start, Reload, SyncSlots],
        // A standby that does not stream may have diverged (it learns of
        // the new primary's timeline only now, or was stopped when it
        // changed): check again while it does not stream.
        S::Catchingup | S::JoinSecondary => vec![ConfigureStandby, RewindIfDiverged, Start, Reload],
        S::ReportLsn | S::FastForward | S::WaitMaintenance => {
            vec![ConfigureStandby, Start, Reload]
        }
        S::WaitStandby
        | S::Draining
        | S::Demoted
        | S::DemoteTimeout
        | S::PrepareMaintenance
        | S::Maintenance
        | S::Dropped => vec![Stop],
        _ => vec![],
    }
}

/// [`steady`] while the monitor does not answer: nothing that replaces
/// local WAL, whose upstream is only known from an old answer.
pub fn steady_without_monitor(state: S) -> Vec<Action> {
    steady(state)
        .into_iter()
        .filter(|a| !matches!(a, RewindIfDiverged | RewindOrClone | AdoptOrClone))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_proto::KEEPER_EDGES;

    #[test]
    fn every_edge_has_a_plan() {
        for &(from, to) in KEEPER_EDGES {
            assert!(plan(from, to).is_ok(), "{from} -> {to}");
        }
    }

    #[test]
    fn non_edges_are_refused() {
        for from in S::ALL {
            for to in S::ALL {
                let ok = plan(from, to).is_ok();
                assert_eq!(ok, keeper_has_edge(from, to), "{from} -> {to}");
            }
        }
        assert_eq!(
            plan(S::Secondary, S::Single).unwrap_err().to_string(),
            "the keeper cannot go from secondary to single: no such transition"
        );
    }

    #[test]
    fn a_standby_clones_before_it_starts() {
        let p = plan(S::WaitStandby, S::Catchingup).unwrap();
        let pos = |a| p.iter().position(|x| *x == a).unwrap();
        assert!(pos(Stop) < pos(AdoptOrClone));
        assert!(pos(AdoptOrClone) < pos(ConfigureStandby));
        assert!(pos(ConfigureStandby) < pos(Start));
    }

    #[test]
    fn the_old_primary_rewinds_while_stopped() {
        let p = plan(S::Demoted, S::Catchingup).unwrap();
        assert_eq!(p, vec![Stop, RewindOrClone, ConfigureStandby, Start]);
    }

    #[test]
    fn a_standby_checks_for_divergence_before_it_starts_following() {
        let expected = vec![ConfigureStandby, RewindIfDiverged, Start, Reload];
        for (from, to) in [
            (S::ReportLsn, S::JoinSecondary),
            (S::Secondary, S::Catchingup),
            (S::JoinSecondary, S::Catchingup),
            (S::Secondary, S::JoinSecondary),
        ] {
            if keeper_has_edge(from, to) {
                assert_eq!(plan(from, to).unwrap(), expected, "{from} -> {to}");
            }
        }
        assert_eq!(plan(S::ReportLsn, S::JoinSecondary).unwrap(), expected);
        assert_eq!(plan(S::Secondary, S::Catchingup).unwrap(), expected);
        // The steady state of a standby that may not stream checks again
        // (the action itself skips a streaming standby).
        assert_eq!(steady(S::Catchingup), expected);
        assert_eq!(steady(S::JoinSecondary), expected);
        // A secondary checks too (it may not stream; a streaming one is
        // skipped by the action itself), but never a node of an election.
        assert!(steady(S::Secondary).contains(&RewindIfDiverged));
        for state in [S::ReportLsn, S::FastForward, S::WaitMaintenance] {
            assert!(!steady(state).contains(&RewindIfDiverged), "{state}");
        }
        for to in [
            S::Secondary,
            S::ReportLsn,
            S::FastForward,
            S::PreparePromotion,
        ] {
            // (secondary -> secondary is the steady state, checked above.)
            for from in S::ALL.into_iter().filter(|&from| from != to) {
                if let Ok(p) = plan(from, to) {
                    assert!(!p.contains(&RewindIfDiverged), "{from} -> {to}");
                }
            }
        }
        // The first clone and the old primary's rejoin keep their own.
        assert!(!plan(S::WaitStandby, S::Catchingup)
            .unwrap()
            .contains(&RewindIfDiverged));
        assert!(!plan(S::Demoted, S::Catchingup)
            .unwrap()
            .contains(&RewindIfDiverged));
    }

    #[test]
    fn without_the_monitor_nothing_replaces_local_wal() {
        for state in S::ALL {
            let p = steady_without_monitor(state);
            assert!(
                !p.iter()
                    .any(|a| matches!(a, RewindIfDiverged | RewindOrClone | AdoptOrClone)),
                "{state}"
            );
        }
        assert_eq!(
            steady_without_monitor(S::Catchingup),
            vec![ConfigureStandby, Start, Reload]
        );
        assert_eq!(
            steady_without_monitor(S::Secondary),
            vec![ConfigureStandby, Start, Reload, SyncSlots]
        );
    }

    #[test]
    fn promotion_replays_then_promotes() {
        assert_eq!(
            plan(S::ReportLsn, S::PreparePromotion).unwrap(),
            vec![BeforePromotion, Start, WaitReplayCaughtUp]
        );
        let p = plan(S::PreparePromotion, S::StopReplication).unwrap();
        assert_eq!(p[..2], [Start, Promote]);
    }

    #[test]
    fn the_old_primary_stops_for_any_demotion() {
        for from in [S::WaitPrimary, S::Primary, S::JoinPrimary] {
            assert_eq!(plan(from, S::Demoted).unwrap(), vec![Stop]);
            // A hand-over checkpoints first, while writes are still taken.
            assert_eq!(plan(from, S::Draining).unwrap(), vec![Checkpoint, Stop]);
        }
        assert_eq!(
            plan(S::Primary, S::PrepareMaintenance).unwrap(),
            vec![Checkpoint, Stop]
        );
    }

    #[test]
    fn fast_forward_follows_then_replays() {
        assert_eq!(
            plan(S::ReportLsn, S::FastForward).unwrap(),
            vec![ConfigureStandby, Start, Reload]
        );
        assert_eq!(
            plan(S::FastForward, S::PreparePromotion).unwrap(),
            vec![BeforePromotion, Start, WaitReplayCaughtUp]
        );
    }

    #[test]
    fn maintenance_and_drop_stop_postgres() {
        for (from, to) in [
            (S::Secondary, S::Maintenance),
            (S::WaitMaintenance, S::Maintenance),
            (S::Secondary, S::Dropped),
            (S::Catchingup, S::Dropped),
        ] {
            assert_eq!(plan(from, to).unwrap(), vec![Stop], "{from} -> {to}");
        }
        assert!(plan(S::Primary, S::Dropped).is_err());
        assert_eq!(
            plan(S::Maintenance, S::Catchingup).unwrap(),
            vec![Stop, RewindOrClone, ConfigureStandby, Start]
        );
    }

    #[test]
    fn standbys_never_get_primary_actions() {
        for state in [
            S::Catchingup,
            S::Secondary,
            S::ReportLsn,
            S::JoinSecondary,
            S::FastForward,
            S::WaitMaintenance,
        ] {
            let p = steady(state);
            assert!(
                !p.contains(&ConfigurePrimary) && !p.contains(&Promote),
                "{state}"
            );
        }
    }
}
