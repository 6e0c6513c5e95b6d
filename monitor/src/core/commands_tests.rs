//! Operator commands against groups built by hand: what they refuse.

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::core::test_support::{env, timings};
use crate::fsm::Health;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn node(id: i64, state: S, timeline: u32) -> NodeSnapshot {
    let mut n = NodeSnapshot::registered(id, &format!("node{id}"), 50, true, timings());
    n.reported = state;
    n.goal = state;
    n.pg_running = true;
    n.lsn = 0x300_0000;
    n.timeline = timeline;
    n.wal_receiver_streaming = !state.is_writable_primary();
    n.last_heartbeat = Some(now());
    n.health = Health::Good;
    n
}

/// Found by the simulation (seed 371049): a planned failover right after a
/// promotion handed over to a standby that had not streamed from the new
/// primary yet (still on the old timeline); the clean stop handed the last
/// WAL to nobody and a synchronous commit was lost. A handover goes only to
/// a secondary that streams on the primary's timeline.
#[test]
fn a_handover_goes_only_to_a_standby_streaming_on_the_primarys_timeline() {
    let group = || {
        vec![
            node(1, S::WaitPrimary, 2),
            node(2, S::Secondary, 1),
            node(3, S::Secondary, 2),
        ]
    };
    let env = env(now());
    let refused = perform_failover(&mut group(), "default", Some("node2"), &env).unwrap_err();
    assert!(
        matches!(refused, Refusal::NotFollowingPrimary { .. }),
        "{refused}"
    );
    assert!(refused
        .to_string()
        .contains("wait until show-state shows node2 streaming"));
    // Untargeted: only node3 is asked to report.
    let done = perform_failover(&mut group(), "default", None, &env).unwrap();
    let asked: Vec<i64> = done
        .decisions
        .iter()
        .filter(|d| d.to == S::ReportLsn)
        .map(|d| d.node_id)
        .collect();
    assert_eq!(asked, vec![3]);
    // A secondary on the timeline that does not stream is no candidate
    // either; with none left, the command says so.
    let mut quiet = group();
    quiet[2].wal_receiver_streaming = false;
    let refused = perform_failover(&mut quiet, "default", None, &env).unwrap_err();
    assert_eq!(refused, Refusal::NoCandidate);
    // Once node2 streams on timeline 2 the switchover goes ahead.
    let mut caught_up = group();
    caught_up[1].timeline = 2;
    perform_failover(&mut caught_up, "default", Some("node2"), &env).unwrap();
}

/// Found by the simulation (seed 313731): `--allow-data-loss` promoted
/// beside a primary whose keeper held no fence quorum, and two nodes took
/// writes. The override is refused there, saying what to do instead.
#[test]
fn allow_data_loss_is_refused_beside_a_primary_that_may_not_fence() {
    let t = now();
    let mut primary = node(1, S::Primary, 1);
    primary.last_heartbeat = Some(t - chrono::Duration::seconds(30));
    primary.health = Health::Bad;
    primary.fence_set = vec![pgpilot_proto::lsn::application_name(2)];
    primary.fence_required = 1;
    primary.fence_required_held = Some(0);
    let mut standby = node(2, S::ReportLsn, 1);
    standby.wal_receiver_streaming = false;
    standby.stream_lost_at = Some(t - chrono::Duration::seconds(30));
    let mut nodes = vec![primary, standby];
    let refused = force_election(&mut nodes, &env(t)).unwrap_err();
    assert!(
        matches!(refused, Refusal::UnfencedPrimary { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("start its keeper again"));
    assert_eq!(nodes[1].goal, S::ReportLsn, "nothing was promoted");
}

/// Found through the simulation (seed 120725): a standby waiting for its
/// primary to stop counting it (`wait_maintenance`, the primary keeping it
/// under `number_sync_standbys`) could not be called back. It can: it
/// catches up again.
#[test]
fn maintenance_is_called_back_before_the_standby_stopped() {
    let env = env(now());
    let mut group = vec![
        node(1, S::Primary, 1),
        node(2, S::WaitMaintenance, 1),
        node(3, S::Secondary, 1),
    ];
    let done = set_maintenance(&mut group, "default", "node2", false, &env).unwrap();
    assert_eq!(done.decisions.len(), 1);
    assert_eq!(
        (done.decisions[0].from, done.decisions[0].to),
        (S::WaitMaintenance, S::Catchingup)
    );
    assert_eq!(group[1].goal, S::Catchingup);
    // A primary handing over for maintenance is not called back.
    let mut group = vec![node(1, S::PrepareMaintenance, 1), node(2, S::Secondary, 1)];
    let refused = set_maintenance(&mut group, "default", "node1", false, &env).unwrap_err();
    assert!(
        matches!(refused, Refusal::NotInMaintenance { .. }),
        "{refused}"
    );
}
