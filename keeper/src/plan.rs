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
    /// Replace PGDATA by a clone of the primary.
    Clone,
    /// pg_rewind to the primary, falling back to a fresh clone when it fails.
    RewindOrClone,
    /// Replay every WAL record already received.
    WaitReplayCaughtUp,
    /// pg_promote() and check that writes are accepted.
    Promote,
    /// Keep a replication slot for every other node, drop the rest.
    SyncSlots,
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
        (S::Init, S::Single) => vec![InitDb, ConfigurePrimary, Start, SyncSlots],
        // Nothing to do until the primary lets us clone it.
        (S::Init, S::WaitStandby) => vec![],
        // reinit: stop; the clone follows with wait_standby -> catchingup.
        (_, S::WaitStandby) => vec![Stop],
        (S::WaitStandby, S::Catchingup) => vec![Stop, Clone, ConfigureStandby, Start],
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
        (_, S::PreparePromotion) => vec![Start, WaitReplayCaughtUp],
        (S::PreparePromotion, S::StopReplication) => {
            vec![Start, Promote, ConfigurePrimary, Reload]
        }
        (S::StopReplication, S::WaitPrimary) => vec![ConfigurePrimary, Reload, SyncSlots],
        // Follow the upstream the monitor names (for fast_forward, the most
        // advanced standby).
        (_, S::Secondary | S::Catchingup | S::JoinSecondary | S::ReportLsn | S::FastForward) => {
            vec![ConfigureStandby, Start, Reload]
        }
        _ => unreachable!("edge {from} -> {to} has no plan: add one"),
    };
    Ok(actions)
}

/// What the keeper keeps true while it stays in `state`.
pub fn steady(state: S) -> Vec<Action> {
    match state {
        s if s.is_writable_primary() => vec![ConfigurePrimary, Start, Reload, SyncSlots],
        // A healthy standby also keeps slots for the others, for the day
        // it is promoted.
        S::Secondary => vec![ConfigureStandby, Start, Reload, SyncSlots],
        S::Catchingup | S::ReportLsn | S::JoinSecondary | S::FastForward | S::WaitMaintenance => {
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
        assert!(pos(Stop) < pos(Clone));
        assert!(pos(Clone) < pos(ConfigureStandby));
        assert!(pos(ConfigureStandby) < pos(Start));
    }

    #[test]
    fn the_old_primary_rewinds_while_stopped() {
        let p = plan(S::Demoted, S::Catchingup).unwrap();
        assert_eq!(p, vec![Stop, RewindOrClone, ConfigureStandby, Start]);
    }

    #[test]
    fn promotion_replays_then_promotes() {
        assert_eq!(
            plan(S::ReportLsn, S::PreparePromotion).unwrap(),
            vec![Start, WaitReplayCaughtUp]
        );
        let p = plan(S::PreparePromotion, S::StopReplication).unwrap();
        assert_eq!(p[..2], [Start, Promote]);
    }

    #[test]
    fn the_old_primary_stops_for_any_demotion() {
        for from in [S::WaitPrimary, S::Primary, S::JoinPrimary] {
            assert_eq!(plan(from, S::Demoted).unwrap(), vec![Stop]);
            assert_eq!(plan(from, S::Draining).unwrap(), vec![Stop]);
        }
    }

    #[test]
    fn fast_forward_follows_then_replays() {
        assert_eq!(
            plan(S::ReportLsn, S::FastForward).unwrap(),
            vec![ConfigureStandby, Start, Reload]
        );
        assert_eq!(
            plan(S::FastForward, S::PreparePromotion).unwrap(),
            vec![Start, WaitReplayCaughtUp]
        );
    }

    #[test]
    fn maintenance_and_drop_stop_postgres() {
        for (from, to) in [
            (S::Secondary, S::Maintenance),
            (S::WaitMaintenance, S::Maintenance),
            (S::Primary, S::PrepareMaintenance),
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
