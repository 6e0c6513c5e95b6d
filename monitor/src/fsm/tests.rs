use std::collections::{BTreeSet, HashSet, VecDeque};

use chrono::TimeZone;
use pgpilot_proto::keeper_has_edge;

use super::*;

mod delayed;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(s * 1000)
}

fn settings() -> Settings {
    Settings {
        node_timeout: Duration::from_secs(2),
        postgres_restart_timeout: RESTART_TIMEOUT,
        fence_margin: Duration::from_millis(500),
        catchup_lag_bytes: DEFAULT_CATCHUP_LAG_BYTES,
        number_sync_standbys: 0,
        election_forced_at: None,
        paused: false,
    }
}

/// `postgres_restart_timeout` of these tests.
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

const TIMINGS: KeeperTimings = KeeperTimings {
    heartbeat_interval: Duration::from_millis(500),
    fence_timeout: Duration::from_millis(1500),
    wal_sender_timeout: Duration::from_secs(2),
};

/// A group under construction: `group().primary("a").secondary("b")`.
#[derive(Clone)]
struct Group {
    nodes: Vec<NodeSnapshot>,
    now: DateTime<Utc>,
}

fn group() -> Group {
    Group {
        nodes: Vec::new(),
        now: t0() + secs(100),
    }
}

impl Group {
    fn node(mut self, name: &str, reported: S, goal: S) -> Self {
        let id = self.nodes.len() as i64 + 1;
        self.nodes.push(NodeSnapshot {
            id,
            name: name.into(),
            reported,
            goal,
            pg_running: true,
            lsn: 0x300_0000,
            timeline: 1,
            wal_receiver_streaming: !reported.is_writable_primary(),
            stream_lost_at: None,
            pg_down_since: None,
            pg_running_since: None,
            pg_start_failures: 0,
            last_heartbeat: Some(self.now),
            health: Health::Good,
            candidate_priority: 50,
            replication_quorum: true,
            apply_delay_ms: 0,
            timings: TIMINGS,
            fence_set: Vec::new(),
            fence_required: 0,
            fence_pending: Default::default(),
            fence_required_held: None,
            heard_sent: None,
            promotion_refused: false,
            upstream: None,
        });
        self
    }
    fn at(self, name: &str, state: S) -> Self {
        self.node(name, state, state)
    }
    fn primary(self, name: &str) -> Self {
        self.at(name, S::Primary)
    }
    fn secondary(self, name: &str) -> Self {
        self.at(name, S::Secondary)
    }
    /// Set the primary's fence set as the monitor would have sent it.
    fn fence_for(mut self, index: usize) -> Self {
        let plan = replication_plan(&self.nodes, index, 0);
        self.nodes[index].fence_set = plan.fence_set;
        self.nodes[index].fence_required = plan.fence_required;
        self
    }
    fn with(mut self, name: &str, f: impl FnOnce(&mut NodeSnapshot)) -> Self {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("node");
        f(n);
        self
    }
    /// The keeper silent for `s` seconds and the health check failing.
    fn dead(self, name: &str, s: i64) -> Self {
        let now = self.now;
        self.with(name, |n| {
            n.last_heartbeat = Some(now - secs(s));
            n.health = Health::Bad;
        })
    }
    fn stream_lost(self, name: &str, s: i64) -> Self {
        let now = self.now;
        self.with(name, |n| {
            n.wal_receiver_streaming = false;
            n.stream_lost_at = Some(now - secs(s));
        })
    }
    fn decide(&self) -> Outcome {
        self.decide_with(&settings())
    }
    fn decide_with(&self, s: &Settings) -> Outcome {
        // A primary without a fence set gets the one the monitor would have sent.
        let mut nodes = self.nodes.clone();
        for i in 0..nodes.len() {
            if nodes[i].goal.is_writable_primary() && nodes[i].fence_set.is_empty() {
                let plan = replication_plan(&nodes, i, s.number_sync_standbys);
                nodes[i].fence_set = plan.fence_set;
                nodes[i].fence_required = plan.fence_required;
            }
        }
        decide(&nodes, self.now, s)
    }
    fn id(&self, name: &str) -> i64 {
        self.nodes.iter().find(|n| n.name == name).unwrap().id
    }
}

fn goals(g: &Group, o: &Outcome) -> Vec<(String, S)> {
    o.decisions
        .iter()
        .map(|d| {
            let name = g
                .nodes
                .iter()
                .find(|n| n.id == d.node_id)
                .unwrap()
                .name
                .clone();
            (name, d.to)
        })
        .collect()
}

fn expect(g: &Group, o: &Outcome, want: &[(&str, S)]) {
    let got = goals(g, o);
    let want: Vec<(String, S)> = want.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    assert_eq!(got, want, "waiting: {:?}", o.waiting);
}

// The init rule.

#[test]
fn first_node_becomes_single() {
    let g = group().node("a", S::Init, S::Init);
    expect(&g, &g.decide(), &[("a", S::Single)]);
}

#[test]
fn second_node_waits_for_a_running_primary() {
    let g = group()
        .node("a", S::Init, S::Single)
        .node("b", S::Init, S::Init);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("b waits"),
        "{:?}",
        o.waiting
    );
}

#[test]
fn second_node_joins_as_standby_and_primary_accepts_it() {
    let g = group().at("a", S::Single).node("b", S::Init, S::Init);
    expect(
        &g,
        &g.decide(),
        &[("b", S::WaitStandby), ("a", S::WaitPrimary)],
    );
}

// The standby rules.

#[test]
fn standby_clones_once_primary_allows_it() {
    let g = group()
        .node("a", S::Single, S::WaitPrimary)
        .at("b", S::WaitStandby);
    expect(&g, &g.decide(), &[]);
    let g = group().at("a", S::WaitPrimary).at("b", S::WaitStandby);
    expect(&g, &g.decide(), &[("b", S::Catchingup)]);
}

#[test]
fn catching_up_standby_becomes_secondary_when_close_and_streaming() {
    let g = group().at("a", S::WaitPrimary).at("b", S::Catchingup);
    expect(&g, &g.decide(), &[("b", S::Secondary)]);

    let lagging = group()
        .at("a", S::WaitPrimary)
        .with("a", |n| n.lsn = 0x1000_0000_0000)
        .at("b", S::Catchingup);
    expect(&lagging, &lagging.decide(), &[]);

    let not_streaming = group()
        .at("a", S::WaitPrimary)
        .at("b", S::Catchingup)
        .stream_lost("b", 1);
    expect(&not_streaming, &not_streaming.decide(), &[]);
}

#[test]
fn secondary_that_stops_streaming_goes_back_to_catchingup() {
    let g = group().primary("a").secondary("b").stream_lost("b", 3);
    expect(
        &g,
        &g.decide(),
        &[("b", S::Catchingup), ("a", S::WaitPrimary)],
    );
    // Briefly not streaming: tolerated.
    let g = group().primary("a").secondary("b").stream_lost("b", 1);
    expect(&g, &g.decide(), &[]);
}

/// Found by the end-to-end crash test: the primary's PostgreSQL was
/// restarted within the allowance (4.5 s on a loaded machine), and its
/// standby, whose stream had been gone since the crash, was sent back to
/// `catchingup` before it reconnected. The stream counts as lost only from
/// when the primary's PostgreSQL came back.
#[test]
fn a_restarted_primary_gives_its_standbys_time_to_reconnect() {
    let now = group().now;
    let restarted = |ago: i64| {
        group()
            .primary("a")
            .secondary("b")
            .stream_lost("b", 6)
            .with("a", |n| n.pg_running_since = Some(now - secs(ago)))
    };
    let g = restarted(1);
    expect(&g, &g.decide(), &[]);
    let g = restarted(3);
    expect(
        &g,
        &g.decide(),
        &[("b", S::Catchingup), ("a", S::WaitPrimary)],
    );
}

#[test]
fn unhealthy_secondary_turns_synchronous_replication_off_when_allowed() {
    let g = group().primary("a").secondary("b").dead("b", 5);
    expect(
        &g,
        &g.decide(),
        &[("b", S::Catchingup), ("a", S::WaitPrimary)],
    );

    let strict = Settings {
        number_sync_standbys: 1,
        ..settings()
    };
    let o = g.decide_with(&strict);
    expect(&g, &o, &[("b", S::Catchingup)]);
}

// The primary rules.

#[test]
fn wait_primary_turns_synchronous_replication_on_for_a_quorum_secondary() {
    let g = group().at("a", S::WaitPrimary).secondary("b");
    expect(&g, &g.decide(), &[("a", S::Primary)]);
    let g = group()
        .at("a", S::WaitPrimary)
        .secondary("b")
        .with("b", |n| n.replication_quorum = false);
    expect(&g, &g.decide(), &[]);
}

#[test]
fn healthy_group_is_stable() {
    let g = group().primary("a").secondary("b");
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(o.waiting.is_empty(), "{:?}", o.waiting);
}

// Failover start.

#[test]
fn unhealthy_primary_starts_an_election() {
    let g = group().primary("a").secondary("b").dead("a", 3);
    let o = g.decide();
    expect(&g, &o, &[("b", S::ReportLsn)]);
    assert!(o.decisions[0]
        .reason
        .to_string()
        .contains("primary a is unhealthy"));
}

/// While the formation is paused no election starts, and the group says
/// why it waits; an election already under way, a planned hand-over and
/// the standby rules go on; resumed, the failover starts.
#[test]
fn a_paused_formation_starts_no_failover_but_finishes_what_is_under_way() {
    let paused = Settings {
        paused: true,
        ..settings()
    };
    // A dead primary, then a primary whose PostgreSQL stayed down too long.
    let dead = group().primary("a").secondary("b").dead("a", 3);
    let down = group().primary("a").secondary("b").with("a", |n| {
        n.pg_running = false;
        n.pg_down_since = Some(t0() - secs(60));
    });
    for g in [&dead, &down] {
        let o = g.decide_with(&paused);
        expect(g, &o, &[]);
        assert_eq!(o.waiting.len(), 1, "{:?}", o.waiting);
        assert_eq!(o.waiting[0].kind(), "paused");
        assert!(
            o.waiting[0]
                .to_string()
                .contains("primary a is unhealthy (")
                && o.waiting[0]
                    .to_string()
                    .contains("the formation is paused: no failover until an operator runs resume"),
            "{}",
            o.waiting[0]
        );
        // Resumed: the election starts.
        assert!(!g.decide().decisions.is_empty(), "{:?}", g.decide());
    }
    // An election under way finishes.
    let g = election(4, 4);
    expect(
        &g,
        &g.decide_with(&paused),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
    // A standby still joins and catches up; a lost one leaves the quorum.
    let g = group()
        .primary("a")
        .node("b", S::WaitStandby, S::WaitStandby);
    expect(
        &g,
        &g.decide_with(&paused),
        &[("b", S::Catchingup), ("a", S::WaitPrimary)],
    );
    let g = group().primary("a").secondary("b").dead("b", 5);
    expect(
        &g,
        &g.decide_with(&paused),
        &[("b", S::Catchingup), ("a", S::WaitPrimary)],
    );
    // A healthy group paused has nothing to wait for.
    let g = group().primary("a").secondary("b");
    let o = g.decide_with(&paused);
    expect(&g, &o, &[]);
    assert!(o.waiting.is_empty(), "{:?}", o.waiting);
}

#[test]
fn silent_keeper_alone_never_causes_failover() {
    let g = group()
        .primary("a")
        .secondary("b")
        .dead("a", 30)
        .with("a", |n| n.health = Health::Good);
    expect(&g, &g.decide(), &[]);
    let g = group()
        .primary("a")
        .secondary("b")
        .dead("a", 30)
        .with("a", |n| n.health = Health::Unknown);
    expect(&g, &g.decide(), &[]);
}

#[test]
fn failing_health_check_alone_never_causes_failover() {
    let g = group()
        .primary("a")
        .secondary("b")
        .with("a", |n| n.health = Health::Bad);
    expect(&g, &g.decide(), &[]);
}

#[test]
fn no_candidate_means_wait_and_say_why() {
    let g = group()
        .primary("a")
        .secondary("b")
        .with("b", |n| n.candidate_priority = 0)
        .dead("a", 3);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0]
            .to_string()
            .contains("no standby can be promoted"),
        "{:?}",
        o.waiting
    );
}

/// A primary whose keeper heartbeats and reports its PostgreSQL down
/// (crashed, being restarted, or still in crash recovery) gets
/// `postgres_restart_timeout` to bring it back; the election starts when
/// the allowance is exceeded, or at once when the keeper reports that
/// PostgreSQL failed to start too many times in a row.
#[test]
fn primary_postgres_down_with_live_keeper_gets_the_restart_allowance() {
    let allowance = RESTART_TIMEOUT.as_millis() as i64;
    let elect: &[(&str, S)] = &[("b", S::ReportLsn), ("a", S::Draining)];
    /// (case, down for ms, failed starts, expected goals, reason or waiting text)
    type Case<'a> = (&'a str, i64, u32, &'a [(&'a str, S)], &'a str);
    let cases: &[Case] = &[
        (
            "just crashed",
            0,
            0,
            &[],
            "its keeper restarts it; failover in 10000 ms",
        ),
        (
            "restart longer than node_timeout, within the allowance",
            3_000,
            0,
            &[],
            "is down for 3000 ms",
        ),
        (
            "one failed start, within the allowance",
            3_000,
            1,
            &[],
            "1 of 3 start attempts failed",
        ),
        (
            "at the allowance exactly",
            allowance,
            2,
            &[],
            "failover in 0 ms",
        ),
        (
            "allowance exceeded",
            allowance + 1,
            0,
            elect,
            "stays down while its keeper runs (down for 10001 ms, longer than postgres_restart_timeout 10000 ms)",
        ),
        (
            "start failures reported",
            1_500,
            START_FAILURES_BEFORE_FAILOVER,
            elect,
            "stays down while its keeper runs (3 attempts to start it failed in a row)",
        ),
    ];
    for &(case, down_ms, failures, want, text) in cases {
        let now = group().now;
        let g = group().primary("a").secondary("b").with("a", |n| {
            n.pg_running = false;
            n.pg_down_since = Some(now - chrono::Duration::milliseconds(down_ms));
            n.pg_start_failures = failures;
        });
        let o = g.decide();
        let got = goals(&g, &o);
        let want: Vec<(String, S)> = want.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(got, want, "{case}: waiting {:?}", o.waiting);
        if want.is_empty() {
            assert!(
                o.waiting.iter().any(|w| w.to_string().contains(text)),
                "{case}: {:?}",
                o.waiting
            );
        } else {
            for d in &o.decisions {
                assert!(
                    matches!(d.reason, Reason::PrimaryPostgresDown { .. }),
                    "{case}: {:?}",
                    d.reason
                );
                assert!(d.reason.to_string().contains(text), "{case}: {}", d.reason);
            }
        }
    }
}

/// Heartbeats folded in: the failed starts are kept only while PostgreSQL
/// is down, and `pg_running_since` / `pg_down_since` mark the last change.
#[test]
fn heartbeats_track_restarts_and_failed_starts() {
    let mut n = group().primary("a").nodes.remove(0);
    let t = t0();
    let report = |running: bool, failures: u32| Report {
        reported: S::Primary,
        pg_running: running,
        lsn: 0,
        timeline: 1,
        wal_receiver_streaming: false,
        pg_start_failures: failures,
        timings: TIMINGS,
        fence_required_held: None,
        sent: None,
        promotion_refused: false,
        acting_toward: None,
    };
    n.heard(&report(true, 0), t);
    assert_eq!((n.pg_running_since, n.pg_down_since), (Some(t), None));
    n.heard(&report(true, 0), t + secs(1));
    assert_eq!(n.pg_running_since, Some(t), "kept while it runs");
    n.heard(&report(false, 0), t + secs(2));
    assert_eq!(
        (n.pg_running_since, n.pg_down_since),
        (None, Some(t + secs(2)))
    );
    n.heard(&report(false, 2), t + secs(3));
    assert_eq!(n.pg_start_failures, 2);
    assert_eq!(n.pg_down_since, Some(t + secs(2)), "kept while it is down");
    // A running server has no failed starts, whatever a keeper says.
    n.heard(&report(true, 2), t + secs(4));
    assert_eq!(n.pg_start_failures, 0);
    assert_eq!(n.pg_running_since, Some(t + secs(4)));
}

/// The allowance is for a keeper that is heard: a silent keeper whose
/// PostgreSQL fails the health check is unhealthy after node_timeout, as
/// before, whatever it last reported.
#[test]
fn primary_postgres_down_with_silent_keeper_is_not_given_the_allowance() {
    let now = group().now;
    let g = group()
        .primary("a")
        .secondary("b")
        .with("a", |n| {
            n.pg_running = false;
            n.pg_down_since = Some(now - secs(3));
        })
        .dead("a", 3);
    let o = g.decide();
    expect(&g, &o, &[("b", S::ReportLsn)]);
    assert!(
        matches!(o.decisions[0].reason, Reason::PrimaryUnhealthy { .. }),
        "{:?}",
        o.decisions[0].reason
    );
}

/// An election started while the primary's keeper was silent is cancelled
/// when the keeper is heard again restarting PostgreSQL within the
/// allowance: it gets the time a keeper heard all along gets.
#[test]
fn election_is_cancelled_when_the_keeper_is_heard_restarting_postgres() {
    let now = group().now;
    let g = group()
        .primary("a")
        .node("b", S::ReportLsn, S::ReportLsn)
        .with("a", |n| {
            n.pg_running = false;
            n.pg_down_since = Some(now - secs(3));
        })
        .stream_lost("b", 3);
    let o = g.decide();
    expect(&g, &o, &[("b", S::Secondary)]);
    // Past the allowance the election goes on, and since the keeper's
    // heartbeats keep moving the fence deadline, the primary is told to
    // stop and confirm (rule a).
    let g = g.with("a", |n| n.pg_down_since = Some(now - secs(11)));
    let o = g.decide();
    expect(&g, &o, &[("a", S::Draining)]);
    assert!(
        matches!(o.decisions[0].reason, Reason::PrimaryPostgresDown { .. }),
        "{:?}",
        o.decisions[0].reason
    );
}

// Failover cancelled.

#[test]
fn election_is_cancelled_when_the_primary_returns() {
    let g = group().primary("a").node("b", S::ReportLsn, S::ReportLsn);
    let o = g.decide();
    expect(&g, &o, &[("b", S::Secondary)]);
    assert!(o.decisions[0].reason.to_string().contains("cancelled"));
}

// The election and the promotion rule.

fn election(dead_for: i64, lost_for: i64) -> Group {
    group()
        .primary("a")
        .node("b", S::ReportLsn, S::ReportLsn)
        .dead("a", dead_for)
        .stream_lost("b", lost_for)
}

/// Found by the simulation: a `wait_primary` promoted with no standby to
/// count held `r = 0`; the answer that grew its set to the rejoined old
/// primary was lost (or its keeper was killed first), and the monitor,
/// which had stored `r = 1`, promoted that standby after the fence
/// deadline while the old one, never fencing, served on. An election never
/// relies on the fence of a primary whose keeper last said it holds none.
#[test]
fn a_primary_whose_keeper_held_no_fence_quorum_is_not_replaced_by_the_deadline() {
    let g = election(10, 10).with("a", |n| n.fence_required_held = Some(0));
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting.iter().any(|w| w.is_election_stuck()),
        "{:?}",
        o.waiting
    );
    // Found by the simulation (seed 313731): an operator's override
    // promoted beside it, and two nodes took writes. An override stands in
    // for standbys that cannot report, never for a fence that may not
    // exist: the election waits for its keeper.
    let forced = Settings {
        election_forced_at: Some(g.now - secs(1)),
        ..settings()
    };
    let o = g.decide_with(&forced);
    expect(&g, &o, &[]);
    assert!(
        matches!(&o.waiting[..], [w] if w.is_election_stuck() && !w.can_be_forced()),
        "{:?}",
        o.waiting
    );
    let g = g.with("a", |n| n.fence_required_held = Some(1));
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

/// Found by the simulation (seed 722853): after the primary handed over
/// for maintenance and stopped cleanly, a standby not in the election
/// (but whose LSN counts) was read with a report made before the stop,
/// which had handed it more WAL; a less advanced standby was promoted and
/// a synchronous commit lost. Every node whose LSN counts must have
/// reported since the stop.
#[test]
fn a_confirmed_stop_waits_for_reports_after_it_from_every_counted_standby() {
    let g = group()
        .at("a", S::PrepareMaintenance)
        .node("b", S::ReportLsn, S::ReportLsn)
        .secondary("c")
        .with("a", |n| {
            n.fence_set = vec![
                pgpilot_proto::lsn::application_name(2),
                pgpilot_proto::lsn::application_name(3),
            ];
            n.fence_required = 1;
            n.pg_running = false;
            n.pg_down_since =
                Some(n.last_heartbeat.unwrap() - chrono::Duration::milliseconds(1500));
        })
        .stream_lost("b", 1)
        .stream_lost("c", 1)
        // Heard 1.8 s ago: alive, but before the stop.
        .with("c", |n| {
            n.last_heartbeat =
                Some(n.last_heartbeat.unwrap() - chrono::Duration::milliseconds(1800))
        });
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting.iter().any(|w| w.kind() == "awaiting_reports_after_stop"
            && matches!(w, Wait::AwaitingReportsAfterStop { stale, .. } if stale == &["c".to_string()])),
        "{:?}",
        o.waiting
    );
    let g = g.with("c", |n| {
        n.last_heartbeat = Some(n.last_heartbeat.unwrap() + secs(2))
    });
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
}

#[test]
fn election_waits_for_the_fence_deadline() {
    // Deadline: max(hb + 1.5 s, lost + 2 s) + 0.5 s + 0.5 s.
    let g = election(3, 2);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("may still accept writes"),
        "{:?}",
        o.waiting
    );
    let g = election(4, 2);
    expect(&g, &g.decide(), &[]);
    let g = election(4, 4);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

#[test]
fn election_needs_the_stream_to_be_gone() {
    let g = election(10, 10).with("b", |n| {
        n.wal_receiver_streaming = true;
        n.stream_lost_at = None;
    });
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(!o.waiting.is_empty());
}

#[test]
fn election_needs_enough_reporters_from_the_fence_set() {
    // Three nodes, ANY 1 over two quorum standbys: F = {b, c}, r = 1, so
    // both must report (|F| - r + 1 = 2).
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .dead("a", 10)
        .with("b", |n| n.goal = S::ReportLsn)
        .with("b", |n| n.reported = S::ReportLsn)
        .with("c", |n| n.goal = S::ReportLsn)
        .with("c", |n| n.reported = S::ReportLsn)
        .stream_lost("b", 10);
    assert_eq!(g.nodes[0].fence_required, 1);
    assert_eq!(g.nodes[0].fence_set.len(), 2);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("waiting for c"),
        "{:?}",
        o.waiting
    );
    let g = g.stream_lost("c", 10);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

#[test]
fn a_dead_fence_set_member_blocks_the_election() {
    // c may still stream from a (a partition the monitor cannot see): with
    // F = {b, c} and r = 1, b alone is not enough.
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .dead("a", 10)
        .with("b", |n| n.goal = S::ReportLsn)
        .with("b", |n| n.reported = S::ReportLsn)
        .with("c", |n| n.goal = S::ReportLsn)
        .dead("c", 10)
        .stream_lost("b", 10);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("1 of the 2"),
        "{:?}",
        o.waiting
    );
    assert!(
        o.waiting[0].to_string().contains("--allow-data-loss"),
        "{:?}",
        o.waiting
    );

    // The operator accepts the risk for this outage: b is elected.
    let forced = Settings {
        election_forced_at: Some(g.now - secs(1)),
        ..settings()
    };
    let o = g.decide_with(&forced);
    expect(&g, &o, &[("b", S::PreparePromotion), ("a", S::Demoted)]);
    assert!(o.decisions[0]
        .reason
        .to_string()
        .contains("forced by the operator"));
    // An override from an earlier outage does not count.
    let stale = Settings {
        election_forced_at: Some(g.now - secs(60)),
        ..settings()
    };
    expect(&g, &g.decide_with(&stale), &[]);

    // Found by the simulation (seed 399758): c came back and streams from
    // a again, whose guard rightly keeps it serving; the override stands
    // in for members that cannot report, never for one heard streaming.
    let back = g.with("c", |n| {
        n.goal = S::Secondary;
        n.reported = S::Secondary;
        n.last_heartbeat = Some(n.last_heartbeat.unwrap() + secs(10));
        n.health = Health::Good;
        n.wal_receiver_streaming = true;
        n.stream_lost_at = None;
    });
    expect(&back, &back.decide_with(&forced), &[]);
}

#[test]
fn a_quorum_standby_gone_earlier_stops_blocking_elections() {
    // c dies first: it leaves the quorum, so the primary's fence set shrinks
    // to {b} at its next heartbeat...
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .dead("c", 5);
    expect(&g, &g.decide(), &[("c", S::Catchingup)]);
    let g = g.with("c", |n| n.goal = S::Catchingup);
    let plan = replication_plan(&g.nodes, 0, 0);
    assert_eq!(plan.fence_set, vec!["pgpilot_2".to_string()]);
    assert_eq!(plan.synchronous_standby_names, "ANY 1 (pgpilot_2)");
    // ...so when the primary dies later, b alone can finish the election.
    let g = g
        .with("a", |n| {
            n.fence_set = plan.fence_set.clone();
            n.fence_required = plan.fence_required;
        })
        .dead("a", 10)
        .with("b", |n| n.goal = S::ReportLsn)
        .with("b", |n| n.reported = S::ReportLsn)
        .stream_lost("b", 10);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

// The fence set's history: what an election still counts after a change.

impl Group {
    /// A heartbeat of the primary at `index`: the monitor computes its plan
    /// and stores the fence as the store does.
    fn primary_heartbeat(mut self, index: usize, nss: u32) -> Self {
        let plan = replication_plan(&self.nodes, index, nss);
        fence_update(&self.nodes, index, &plan, None).store_in(&mut self.nodes[index]);
        self
    }
    fn lsn(self, name: &str, lsn: u64) -> Self {
        self.with(name, |n| n.lsn = lsn)
    }
    /// The primary dies and `reporters` report their stream gone.
    fn primary_dies(self, reporters: &[&str]) -> Self {
        let mut g = self.dead("a", 10);
        for r in reporters {
            g = g
                .with(r, |n| {
                    n.goal = S::ReportLsn;
                    n.reported = S::ReportLsn;
                })
                .stream_lost(r, 10);
        }
        g
    }
}

#[test]
fn a_departed_fence_member_counts_until_the_set_holds_its_commits() {
    // ANY 1 (b, c): a commit may be on c alone. c fails and leaves the set.
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .lsn("b", 0x100)
        .lsn("c", 0x100)
        .with("c", |n| n.goal = S::Catchingup)
        .primary_heartbeat(0, 0);
    let a = &g.nodes[0];
    assert_eq!(a.fence_set, vec!["pgpilot_2".to_string()]);
    assert_eq!(a.fence_required, 1);
    assert_eq!(a.fence_pending.names, vec!["pgpilot_3".to_string()]);
    assert_eq!(a.fence_pending.cover_lsn, Some(COVER_AT_NEXT_HEARTBEAT));
    assert_eq!(a.election_fence(&g.nodes).0.len(), 2);
    // The next heartbeat gives the LSN the set must reach (after the
    // primary applied the new set).
    let g = g.lsn("a", 0x500).primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_pending.cover_lsn, Some(0x500));
    // The primary dies before b has it: b alone is not enough.
    let dying = g.clone().primary_dies(&["b"]);
    let o = dying.decide();
    expect(&dying, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("1 of the 2"),
        "{:?}",
        o.waiting
    );
    // Once b streams past it, c no longer counts, and b alone can finish.
    let g = g.lsn("b", 0x500).primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_pending, FencePending::default());
    let g = g.primary_dies(&["b"]);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

#[test]
fn a_new_primary_counts_itself_until_a_standby_holds_its_commits() {
    // a was just promoted (no fence set stored yet); b lags behind it and
    // lacks commits of the old term that only a has.
    let g = group()
        .at("a", S::WaitPrimary)
        .secondary("b")
        .lsn("a", 0x900)
        .lsn("b", 0x100)
        .primary_heartbeat(0, 0)
        .primary_heartbeat(0, 0);
    let a = &g.nodes[0];
    assert_eq!(a.fence_pending.names, vec!["pgpilot_1".to_string()]);
    assert_eq!(a.fence_pending.cover_lsn, Some(0x900));
    let dying = g.clone().primary_dies(&["b"]);
    expect(&dying, &dying.decide(), &[]);
    // b past a's LSN, but on the timeline a forked from (not rewound
    // yet): it does not hold a's commits, whatever its LSN.
    let older = g
        .clone()
        .with("a", |n| n.timeline = 2)
        .lsn("b", 0x1000)
        .primary_heartbeat(0, 0);
    assert_eq!(older.nodes[0].fence_pending.cover_lsn, Some(0x900));
    let g = g.lsn("b", 0x900).primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_pending, FencePending::default());
    let g = g.primary_dies(&["b"]);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

/// Found by the simulation (seed 71528 of 200,000): a primary running
/// `ANY 1 (b, c)` turned synchronous replication off (wait_primary, the
/// set kept), then on again with {b} only; a commit acknowledged by c
/// alone before that was not counted, and was lost when b was promoted
/// after a and c failed. A wait_primary's set may have acknowledged
/// commits while it was primary: c leaving it stays pending until b holds
/// a's WAL.
#[test]
fn leaving_the_set_of_a_wait_primary_waits_until_the_new_set_holds_its_wal() {
    let g = group()
        .node("a", S::WaitPrimary, S::Primary)
        .secondary("b")
        .at("c", S::Catchingup)
        .with("a", |n| {
            n.fence_set = vec!["pgpilot_2".into(), "pgpilot_3".into()];
            n.fence_required = 1;
            n.lsn = 0x900;
        })
        .lsn("b", 0x800)
        .primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_set, vec!["pgpilot_2".to_string()]);
    assert_eq!(
        g.nodes[0].fence_pending.names,
        vec!["pgpilot_3".to_string()]
    );
    // Its LSN once the new set is in force; b behind it: still pending.
    let g = g.primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_pending.cover_lsn, Some(0x900));
    // b holds it: nothing is pending any more.
    let g = g.lsn("b", 0x900).primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_pending, FencePending::default());
    // The same change from a primary running ANY 1 (b, c) waits.
    let g = g
        .with("a", |n| {
            n.reported = S::Primary;
            n.fence_set = vec!["pgpilot_2".into(), "pgpilot_3".into()];
        })
        .primary_heartbeat(0, 0);
    assert_eq!(
        g.nodes[0].fence_pending.names,
        vec!["pgpilot_3".to_string()]
    );
}

#[test]
fn a_member_that_is_not_streaming_does_not_cover() {
    // A node assigned to the set but still reporting an old timeline's LSN
    // (not yet following) holds none of this primary's commits.
    let g = group()
        .at("a", S::WaitPrimary)
        .node("b", S::Demoted, S::Catchingup)
        .lsn("a", 0x500)
        .lsn("b", 0x900)
        .primary_heartbeat(0, 0)
        .primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_set, vec!["pgpilot_2".to_string()]);
    assert_eq!(g.nodes[0].fence_pending.cover_lsn, Some(0x500));
}

#[test]
fn growing_the_fence_set_needs_no_wait_and_raising_r_does() {
    let g = group()
        .primary("a")
        .secondary("b")
        .at("c", S::Catchingup)
        .primary_heartbeat(0, 0);
    // The first set of a primary (empty before) is pending on itself.
    let g = g.with("a", |n| n.fence_pending = FencePending::default());
    let g = g
        .with("c", |n| n.goal = S::Secondary)
        .primary_heartbeat(0, 0);
    assert_eq!(g.nodes[0].fence_set.len(), 2);
    assert_eq!(g.nodes[0].fence_pending, FencePending::default());
    // number_sync_standbys 2 -> ANY 2: the election keeps r = 1 until two
    // members hold the primary's commits.
    let g = g.primary_heartbeat(0, 2);
    let a = &g.nodes[0];
    assert_eq!(a.fence_required, 2);
    assert_eq!(a.fence_pending.cover_lsn, Some(COVER_AT_NEXT_HEARTBEAT));
    assert_eq!(a.election_fence(&g.nodes).1, 1);
    let g = g
        .lsn("a", 0x400_0000)
        .primary_heartbeat(0, 2)
        .lsn("b", 0x400_0000);
    assert_eq!(
        g.clone().primary_heartbeat(0, 2).nodes[0]
            .election_fence(&g.nodes)
            .1,
        1
    );
    let g = g.lsn("c", 0x400_0000).primary_heartbeat(0, 2);
    assert_eq!(g.nodes[0].fence_pending, FencePending::default());
    assert_eq!(g.nodes[0].election_fence(&g.nodes).1, 2);
    // Lowering r is safe at once.
    let g = g.primary_heartbeat(0, 1);
    assert_eq!(g.nodes[0].fence_required, 1);
    assert_eq!(g.nodes[0].fence_pending, FencePending::default());
}

#[test]
fn a_primary_without_standbys_keeps_no_fence() {
    let g = group()
        .at("a", S::WaitPrimary)
        .with("a", |n| {
            n.fence_set = vec!["pgpilot_9".into()];
            n.fence_required = 1;
            n.fence_pending.cover_lsn = Some(5);
        })
        .primary_heartbeat(0, 0);
    let a = &g.nodes[0];
    assert!(a.fence_set.is_empty());
    assert_eq!(a.fence_required, 0);
    assert_eq!(a.fence_pending, FencePending::default());
}

/// a (the primary, in both standbys' fence set) is dead; b and c report.
fn b_and_c_report() -> Group {
    group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .dead("a", 10)
        .with("b", |n| n.reported = S::ReportLsn)
        .with("b", |n| n.goal = S::ReportLsn)
        .with("c", |n| n.reported = S::ReportLsn)
        .with("c", |n| n.goal = S::ReportLsn)
        .stream_lost("b", 10)
        .stream_lost("c", 10)
}

#[test]
fn election_promotes_the_most_advanced_then_highest_priority() {
    let base = b_and_c_report;
    let g = base().with("c", |n| n.lsn += 100);
    expect(
        &g,
        &g.decide(),
        &[("c", S::PreparePromotion), ("a", S::Demoted)],
    );
    let g = base().with("c", |n| n.candidate_priority = 90);
    expect(
        &g,
        &g.decide(),
        &[("c", S::PreparePromotion), ("a", S::Demoted)],
    );
    // The most advanced cannot be promoted: the winner fetches its WAL first.
    let g = base().with("c", |n| {
        n.lsn += 100;
        n.candidate_priority = 0;
    });
    let o = g.decide();
    expect(&g, &o, &[("b", S::FastForward), ("a", S::Demoted)]);
    assert!(
        o.decisions[0].reason.to_string().contains("from c"),
        "{:?}",
        o.decisions
    );
    // A higher priority wins over a more advanced standby, through fast_forward.
    let g = base()
        .with("b", |n| n.candidate_priority = 90)
        .with("c", |n| n.lsn += 100);
    expect(&g, &g.decide(), &[("b", S::FastForward), ("a", S::Demoted)]);
    // Nobody can be promoted at all.
    let g = base()
        .with("b", |n| n.candidate_priority = 0)
        .with("c", |n| n.candidate_priority = 0);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("priority above 0"),
        "{:?}",
        o.waiting
    );
}

/// Found by the simulation (seed 921066): c, an asynchronous standby, held
/// WAL of the old primary's timeline past the point where b's timeline
/// forked (it was never rewound: no primary ran while it was checked). It
/// reported the highest LSN and was elected; the synchronous commits of
/// b's term, on b alone, were lost. WAL on an older timeline is behind,
/// whatever its LSN.
#[test]
fn election_ranks_a_later_timeline_above_a_higher_lsn() {
    let base = || {
        b_and_c_report()
            .with("b", |n| n.timeline = 2)
            .with("c", |n| n.lsn += 0x1000)
    };
    // c's priority is higher and its LSN too: b wins all the same.
    let g = base().with("c", |n| n.candidate_priority = 90);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
    // A standby on the later timeline that cannot be promoted is the one
    // the winner on that timeline fetches from; its target names the
    // timeline.
    let g = base()
        .at("d", S::ReportLsn)
        .with("d", |n| {
            n.timeline = 2;
            n.lsn = 0x300_0100;
            n.candidate_priority = 0;
        })
        .stream_lost("d", 10);
    let o = g.decide();
    expect(&g, &o, &[("b", S::FastForward), ("a", S::Demoted)]);
    let reason = o.decisions[0].reason.to_string();
    assert!(reason.contains("timeline 2 from d"), "{reason}");
    assert_eq!(fast_forward_source(&g.nodes, 1), Some(3));
    // The fast-forward ends on d's timeline, not at c's higher LSN.
    let g = g.with("a", |n| n.goal = S::Demoted).with("b", |n| {
        n.goal = S::FastForward;
        n.reported = S::FastForward;
        n.lsn = 0x300_0100;
    });
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
    // Only when no standby on the latest timeline can be promoted does
    // one on an older timeline win (and fetch from the latest first).
    let g = base().with("b", |n| n.candidate_priority = 0);
    expect(&g, &g.decide(), &[("c", S::FastForward), ("a", S::Demoted)]);
}

#[test]
fn fast_forward_ends_once_the_winner_has_the_wal() {
    let g = group()
        .node("a", S::Primary, S::Demoted)
        .dead("a", 10)
        .at("b", S::FastForward)
        .at("c", S::ReportLsn)
        .with("c", |n| n.lsn += 100);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting
            .iter()
            .any(|w| w.to_string().contains("fetching WAL")),
        "{:?}",
        o.waiting
    );
    let g = g.with("b", |n| n.lsn += 100);
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
    assert_eq!(fast_forward_source(&g.nodes, 1), Some(2));
}

/// A planned hand-over whose winner's `before_promotion` hook refuses:
/// b (priority 90) was elected over c; b's keeper did not move.
fn refused_hand_over() -> Group {
    group()
        .at("a", S::PrepareMaintenance)
        .node("b", S::ReportLsn, S::PreparePromotion)
        .at("c", S::ReportLsn)
        .with("b", |n| {
            n.candidate_priority = 90;
            n.promotion_refused = true;
        })
        .stream_lost("b", 1)
        .stream_lost("c", 1)
}

#[test]
fn a_refused_promotion_elects_another_candidate() {
    let g = refused_hand_over();
    let o = g.decide();
    // Back in the election at once, b is passed over although its
    // priority is higher, and c is elected in the same evaluation.
    expect(&g, &o, &[("b", S::ReportLsn), ("c", S::PreparePromotion)]);
    assert_eq!(o.decisions[0].reason.kind(), "promotion_refused");
    assert!(
        o.decisions[0]
            .reason
            .to_string()
            .contains("hook of b refused"),
        "{}",
        o.decisions[0].reason
    );
    let g = g.with("b", |n| n.goal = S::ReportLsn);
    expect(&g, &g.decide(), &[("c", S::PreparePromotion)]);
    // Had b not refused, it would win.
    let g = g.with("b", |n| n.promotion_refused = false);
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
}

#[test]
fn a_refused_promotion_with_no_other_candidate_waits_for_the_hook() {
    // c may not be promoted, is refused too, or is gone: b stays elected
    // (its keeper runs the hook again) and the group says why.
    for other in [
        refused_hand_over().with("c", |n| n.candidate_priority = 0),
        refused_hand_over().with("c", |n| n.promotion_refused = true),
        refused_hand_over().dead("c", 10),
    ] {
        let o = other.decide();
        expect(&other, &o, &[]);
        assert!(
            o.waiting
                .iter()
                .any(|w| w.kind() == "promotion_refused"
                    && w.to_string().contains("hook of b refused")),
            "{:?}",
            o.waiting
        );
    }
    // Every candidate refused: the best of them is elected again, so that
    // its hook is asked again.
    let g = refused_hand_over()
        .with("b", |n| n.goal = S::ReportLsn)
        .with("c", |n| n.promotion_refused = true);
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
}

#[test]
fn a_node_that_reached_prepare_promotion_is_not_sent_back() {
    // Its hook accepted (it moved); a refusal remembered from before
    // does not undo that.
    let g = refused_hand_over().with("b", |n| n.reported = S::PreparePromotion);
    expect(&g, &g.decide(), &[("b", S::StopReplication)]);
}

#[test]
fn a_refusal_is_remembered_while_the_node_stays_in_the_election() {
    let report = |reported: S, refused: bool| Report {
        reported,
        pg_running: true,
        lsn: 1,
        timeline: 1,
        wal_receiver_streaming: false,
        pg_start_failures: 0,
        timings: TIMINGS,
        fence_required_held: None,
        sent: None,
        promotion_refused: refused,
        acting_toward: None,
    };
    let mut n = NodeSnapshot::registered(1, "b", 50, true, TIMINGS);
    n.heard(&report(S::ReportLsn, true), t0());
    assert!(n.promotion_refused);
    n.heard(&report(S::ReportLsn, false), t0());
    assert!(n.promotion_refused, "still in the election");
    n.heard(&report(S::FastForward, false), t0());
    assert!(n.promotion_refused, "still in the election");
    // Its keeper carries out the promotion's plan (the hook runs, or
    // accepted on a later try): no longer refusing.
    n.heard(
        &Report {
            acting_toward: Some(S::PreparePromotion),
            ..report(S::ReportLsn, false)
        },
        t0(),
    );
    assert!(!n.promotion_refused, "its hook runs again");
    n.heard(&report(S::ReportLsn, true), t0());
    n.heard(&report(S::JoinSecondary, false), t0());
    assert!(!n.promotion_refused, "the election is over for it");
    n.heard(&report(S::ReportLsn, false), t0());
    assert!(!n.promotion_refused, "a new election starts afresh");
}

#[test]
fn settings_change_goes_through_apply_settings() {
    let g = group().at("a", S::ApplySettings).secondary("b");
    expect(&g, &g.decide(), &[("a", S::Primary)]);
}

#[test]
fn standby_maintenance_waits_for_the_primary_to_stop_counting_it() {
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .at("d", S::WaitMaintenance)
        .with("a", |n| n.fence_set.push("pgpilot_4".into()));
    expect(&g, &g.decide(), &[]);
    let g = g.with("a", |n| n.fence_set.retain(|f| f != "pgpilot_4"));
    expect(&g, &g.decide(), &[("d", S::Maintenance)]);
}

#[test]
fn primary_maintenance_hands_over_then_stops() {
    let g = group()
        .at("a", S::PrepareMaintenance)
        .node("b", S::ReportLsn, S::ReportLsn)
        .stream_lost("b", 0);
    // a stays the primary the election is about until b is promoted.
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
    let g = g.with("b", |n| {
        n.reported = S::StopReplication;
        n.goal = S::StopReplication;
    });
    expect(
        &g,
        &g.decide(),
        &[("b", S::WaitPrimary), ("a", S::Maintenance)],
    );
}

/// Found by the simulation (seeds 305, 1337, 1819 of 30,000 and 137 in
/// 100,000 before): the source of a fast-forward died, and the winner
/// waited for its WAL for ever. Now the election runs again without it,
/// under the promotion rule.
#[test]
fn a_fast_forward_whose_source_is_gone_elects_again() {
    let g = group()
        .node("a", S::Demoted, S::Demoted)
        .dead("a", 10)
        .at("b", S::FastForward)
        .at("c", S::ReportLsn)
        .with("c", |n| n.lsn += 100)
        .dead("c", 10);
    let o = g.decide();
    expect(&g, &o, &[("b", S::ReportLsn)]);
    assert_eq!(o.decisions[0].reason.kind(), "fast_forward_source_lost");
    assert!(
        o.decisions[0].reason.to_string().contains("c gone"),
        "{}",
        o.decisions[0].reason
    );
    // A source whose keeper is silent but whose PostgreSQL still answers
    // the monitor can still serve: keep fetching.
    let g = g.with("c", |n| n.health = Health::Good);
    expect(&g, &g.decide(), &[]);
}

/// Found by the simulation: a draining primary whose keeper died before it
/// confirmed its stop held the election for ever. The fence deadline now
/// proves it stopped, as for a primary that cannot be reached.
#[test]
fn a_draining_primary_whose_keeper_died_is_replaced_after_the_fence_deadline() {
    let g = group()
        .node("a", S::Primary, S::Draining)
        .node("b", S::ReportLsn, S::ReportLsn)
        .with("a", |n| {
            n.fence_set = vec![pgpilot_proto::lsn::application_name(2)];
            n.fence_required = 1;
        })
        .stream_lost("b", 10);
    // Its keeper is alive: the election waits for its confirmation.
    expect(&g, &g.decide(), &[]);
    // Silent for 1 s: within the node timeout (2 s), still awaited.
    let g = g.dead("a", 1);
    expect(&g, &g.decide(), &[]);
    let g = g.dead("a", 10);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

#[test]
fn settings_that_break_the_quorum_are_refused() {
    let g = group().primary("a").secondary("b");
    assert!(check_settings(&g.nodes, 0).is_ok());
    let err = check_settings(&g.nodes, 1).unwrap_err();
    assert!(err.contains("needs at least 2 quorum standbys"), "{err}");
    let g = group().primary("a").secondary("b").secondary("c");
    assert!(check_settings(&g.nodes, 1).is_ok());
    assert!(check_settings(&g.nodes, 2).is_err());
    let g = g
        .with("b", |n| n.candidate_priority = 0)
        .with("c", |n| n.candidate_priority = 0);
    let err = check_settings(&g.nodes, 0).unwrap_err();
    assert!(err.contains("candidate priority 0"), "{err}");
}

#[test]
fn reporter_with_postgres_down_is_not_elected() {
    let g = election(10, 10).with("b", |n| n.pg_running = false);
    expect(&g, &g.decide(), &[]);
}

#[test]
fn confirmed_demotion_elects_without_waiting_for_the_deadline() {
    // a's goal is already demoted (its PostgreSQL stayed down): the
    // election is still about it, and a had no fence set to answer for.
    let g = group()
        .node("a", S::Demoted, S::Demoted)
        .node("b", S::ReportLsn, S::ReportLsn)
        .stream_lost("b", 0);
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
    let g = group()
        .at("a", S::Draining)
        .node("b", S::ReportLsn, S::ReportLsn)
        .stream_lost("b", 0);
    let o = g.decide();
    expect(&g, &o, &[("b", S::PreparePromotion), ("a", S::Demoted)]);
    assert!(o.decisions[0].reason.to_string().contains("confirmed"));
}

/// Found by the simulation: a primary whose PostgreSQL stayed down while its
/// keeper lived was assigned `demoted` together with the election, and then
/// no longer counted as the group's primary: the election never finished,
/// and standbys whose PostgreSQL stopped had no primary named to restart
/// with.
#[test]
fn election_of_a_demoted_primary_finishes() {
    let now = group().now;
    let down = |n: &mut NodeSnapshot| {
        n.pg_running = false;
        n.pg_down_since = Some(now - secs(11));
    };
    // The old primary is now told to drain, so it stays the node the
    // standbys follow (a standby whose PostgreSQL stops can restart).
    let g = group().primary("a").secondary("b").with("a", down);
    expect(&g, &g.decide(), &[("b", S::ReportLsn), ("a", S::Draining)]);
    let g = g
        .with("a", |n| {
            n.goal = S::Draining;
            n.reported = S::Draining;
        })
        .with("b", |n| {
            n.goal = S::ReportLsn;
            n.reported = S::ReportLsn;
        })
        .stream_lost("b", 1);
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
    // An old primary already told to demote is still the one the election
    // is about.
    let g = group()
        .primary("a")
        .secondary("b")
        .fence_for(0)
        .with("a", down)
        .with("a", |n| n.goal = S::Demoted)
        .node("c", S::Demoted, S::Demoted)
        .with("b", |n| {
            n.goal = S::ReportLsn;
            n.reported = S::ReportLsn;
        })
        .stream_lost("b", 1);
    // Not yet confirmed: the election waits for a (not for the stale c).
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("a may still"),
        "{:?}",
        o.waiting
    );
    // a stopped: b is elected.
    let g = g.with("a", |n| n.reported = S::Demoted);
    let o = g.decide();
    expect(&g, &o, &[("b", S::PreparePromotion)]);
    assert!(o.decisions[0].reason.to_string().contains("confirmed"));
}

/// Found by the simulation: once a primary was told to demote, its
/// PostgreSQL coming back (restarted by its keeper before it heard) must
/// not cancel the election — nobody would be primary.
#[test]
fn a_demoted_primary_coming_back_does_not_cancel_the_election() {
    let g = group()
        .node("a", S::Primary, S::Demoted)
        .node("b", S::ReportLsn, S::ReportLsn)
        .stream_lost("b", 1);
    let o = g.decide();
    assert!(
        !o.decisions.iter().any(|d| d.to == S::Secondary),
        "{:?}",
        o.decisions
    );
}

/// Found by the simulation: an old primary that confirmed it stopped was
/// replaced by the first reporter, although a commit it acknowledged under
/// `ANY 1 (b, c)` could be on c alone, which had not reported. A confirmed
/// stop proves no more writes, not where the acknowledged ones are: the
/// election needs |F| − r + 1 members of F as with the fence deadline.
#[test]
fn a_confirmed_stop_still_needs_the_reporters_of_the_fence_set() {
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .with("a", |n| {
            n.goal = S::Demoted;
            n.reported = S::Demoted;
            n.pg_running = false;
        })
        .with("b", |n| {
            n.goal = S::ReportLsn;
            n.reported = S::ReportLsn;
            n.candidate_priority = 100;
        })
        .with("c", |n| n.goal = S::ReportLsn)
        .dead("c", 10)
        .stream_lost("b", 5)
        .with("c", |n| n.lsn = 0x300_1000);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(o.waiting[0].is_election_stuck(), "{:?}", o.waiting);
    assert!(
        o.waiting[0].to_string().contains("1 of the 2"),
        "{:?}",
        o.waiting
    );
    // c reports: it is the most advanced, so b (the higher priority)
    // fetches its WAL first.
    let now = g.now;
    let g = g
        .with("c", |n| {
            n.reported = S::ReportLsn;
            n.last_heartbeat = Some(now);
            n.health = Health::Good;
        })
        .stream_lost("c", 5);
    expect(&g, &g.decide(), &[("b", S::FastForward)]);
}

/// Found by the simulation: a fence-set member whose PostgreSQL is down
/// reports LSN 0; counted as a reporter, the commit only it had was lost.
#[test]
fn a_member_with_postgres_down_does_not_count_as_reported() {
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .fence_for(0)
        .dead("a", 10)
        .with("b", |n| {
            n.goal = S::ReportLsn;
            n.reported = S::ReportLsn;
        })
        .with("c", |n| {
            n.goal = S::ReportLsn;
            n.pg_running = false;
        })
        .stream_lost("b", 10)
        .stream_lost("c", 10);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("1 of the 2"),
        "{:?}",
        o.waiting
    );
}

/// Found by the simulation: the old primary's keeper, still carrying out an
/// earlier goal, restarted PostgreSQL after the election began; a standby
/// that had already reported its LSN streamed from it again and confirmed a
/// commit, and the election, using that stale report, promoted a standby
/// without it. After a confirmed stop only reports made since count.
#[test]
fn a_confirmed_stop_needs_reports_made_after_it() {
    let now = group().now;
    let g = group()
        .node("a", S::Draining, S::Draining)
        .node("b", S::ReportLsn, S::ReportLsn)
        .with("a", |n| {
            n.pg_running = false;
            n.pg_down_since = Some(now - secs(1));
        })
        .with("b", |n| n.last_heartbeat = Some(now - secs(2)))
        .stream_lost("b", 3);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("report their LSN again"),
        "{:?}",
        o.waiting
    );
    let g = g.with("b", |n| n.last_heartbeat = Some(now));
    expect(
        &g,
        &g.decide(),
        &[("b", S::PreparePromotion), ("a", S::Demoted)],
    );
}

/// Found by the simulation: a fence-set member that is an older primary not
/// yet rejoined (reported `demoted`) holds none of this primary's WAL; an
/// election must not wait for its LSN (it cannot rejoin without a primary).
#[test]
fn a_member_still_demoted_counts_without_an_lsn() {
    let g = group()
        .node("a", S::Draining, S::Draining)
        .node("b", S::ReportLsn, S::ReportLsn)
        .node("c", S::Demoted, S::Catchingup)
        .with("a", |n| {
            n.fence_set = vec![application_name(2), application_name(3)];
            n.fence_required = 1;
            n.pg_running = false;
        })
        .with("c", |n| n.pg_running = false)
        .stream_lost("b", 1)
        .stream_lost("c", 1);
    let o = g.decide();
    expect(&g, &o, &[("b", S::PreparePromotion), ("a", S::Demoted)]);
    // A standby being rebuilt (reinit) still holds its old WAL until the
    // clone: it does not count without an LSN.
    let g = g.with("c", |n| {
        n.reported = S::WaitStandby;
        n.goal = S::WaitStandby;
    });
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(o.waiting[0].is_election_stuck(), "{:?}", o.waiting);
}

/// Found by the simulation: when the fast-forward source's PostgreSQL
/// stopped, its LSN (reported as 0) no longer counted, and the winner was
/// promoted without the WAL only the source had — an acknowledged commit
/// lost. The winner now waits, as documented.
#[test]
fn fast_forward_waits_when_its_source_stops() {
    let g = group()
        .node("a", S::Demoted, S::Demoted)
        .node("b", S::FastForward, S::FastForward)
        .node("c", S::ReportLsn, S::ReportLsn)
        .with("b", |n| n.lsn = 0x300_0100)
        .with("c", |n| {
            n.lsn = 0;
            n.pg_running = false;
        });
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting
            .iter()
            .any(|w| w.to_string().contains("b waits to fetch")),
        "{:?}",
        o.waiting
    );
    // c runs again with its WAL: b still has to fetch it.
    let g = g.with("c", |n| {
        n.lsn = 0x300_0200;
        n.pg_running = true;
    });
    expect(&g, &g.decide(), &[]);
    let g = g.with("b", |n| n.lsn = 0x300_0200);
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
}

/// Found by the simulation: setting the only candidate of an election under
/// way to priority 0 was accepted (another standby, not taking part, was
/// above 0), and the election could never finish.
#[test]
fn the_last_candidate_of_an_election_keeps_its_priority() {
    let g = group()
        .node("a", S::Draining, S::Draining)
        .node("b", S::ReportLsn, S::ReportLsn)
        .secondary("c")
        .with("b", |n| n.candidate_priority = 0);
    let err = check_settings(&g.nodes, 0).unwrap_err();
    assert!(err.contains("election is under way"), "{err}");
    // Nor can the elected winner drop to 0 while it is being promoted.
    let g = group()
        .node("a", S::Demoted, S::Demoted)
        .node("b", S::FastForward, S::FastForward)
        .node("c", S::ReportLsn, S::ReportLsn)
        .with("b", |n| n.candidate_priority = 0);
    let err = check_settings(&g.nodes, 0).unwrap_err();
    assert!(err.contains("b is being promoted"), "{err}");
    // Outside an election the same priorities are fine.
    let g = group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .with("b", |n| n.candidate_priority = 0);
    assert_eq!(check_settings(&g.nodes, 0), Ok(()));
}

#[test]
fn draining_primary_is_awaited() {
    let g = group()
        .node("a", S::Primary, S::Draining)
        .node("b", S::ReportLsn, S::ReportLsn);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(o.waiting[0].to_string().contains("stop taking writes"));
}

// Promotion steps; rejoin.

#[test]
fn promotion_walks_its_steps() {
    let g = group().at("a", S::Demoted).at("b", S::PreparePromotion);
    expect(&g, &g.decide(), &[("b", S::StopReplication)]);
    let g = group().at("a", S::Demoted).at("b", S::StopReplication);
    expect(&g, &g.decide(), &[("b", S::WaitPrimary)]);
}

#[test]
fn other_reporters_follow_the_new_primary() {
    let g = group()
        .at("a", S::Demoted)
        .node("b", S::StopReplication, S::StopReplication)
        .at("c", S::ReportLsn);
    expect(
        &g,
        &g.decide(),
        &[("b", S::WaitPrimary), ("c", S::JoinSecondary)],
    );
    // Once promoted, the new primary is never mistaken for a returning one.
    let g = group()
        .at("a", S::Demoted)
        .at("b", S::WaitPrimary)
        .at("c", S::JoinSecondary);
    expect(
        &g,
        &g.decide(),
        &[("c", S::Secondary), ("a", S::Catchingup)],
    );
    let g = group().at("b", S::WaitPrimary).at("c", S::JoinSecondary);
    expect(&g, &g.decide(), &[("c", S::Secondary)]);
    let g = group().at("b", S::WaitPrimary).secondary("c");
    expect(&g, &g.decide(), &[("b", S::Primary)]);
}

#[test]
fn old_primary_rejoins_once_demoted() {
    let g = group()
        .node("a", S::Primary, S::Demoted)
        .at("b", S::WaitPrimary);
    expect(&g, &g.decide(), &[]);
    let g = group().at("a", S::Demoted).at("b", S::WaitPrimary);
    let o = g.decide();
    expect(&g, &o, &[("a", S::Catchingup)]);
    assert!(o.decisions[0].reason.to_string().contains("rejoins"));
}

// Replication settings.

#[test]
fn replication_plan_per_primary_state() {
    let g = group().primary("a").secondary("b");
    let p = replication_plan(&g.nodes, 0, 0);
    assert_eq!(p.synchronous_standby_names, "ANY 1 (pgpilot_2)");
    assert_eq!(
        (p.fence_set.clone(), p.fence_required),
        (vec!["pgpilot_2".to_string()], 1)
    );

    let g = group()
        .at("a", S::WaitPrimary)
        .at("b", S::Catchingup)
        .at("c", S::WaitStandby);
    let p = replication_plan(&g.nodes, 0, 0);
    assert_eq!(p.synchronous_standby_names, "");
    assert_eq!(
        (p.fence_set.clone(), p.fence_required),
        (vec!["pgpilot_2".to_string()], 1)
    );

    let g = group().at("a", S::Single);
    let p = replication_plan(&g.nodes, 0, 0);
    assert_eq!(p.fence_required, 0);

    // number_sync_standbys = 1 and the standby lost: writes wait.
    let g = group().primary("a").at("b", S::Catchingup);
    let p = replication_plan(&g.nodes, 0, 1);
    assert_eq!(p.synchronous_standby_names, "ANY 1 (pgpilot_2)");
}

#[test]
fn every_decision_has_a_reason_sentence() {
    let g = election(10, 10);
    for d in g.decide().decisions {
        assert!(d.reason.to_string().len() > 10);
    }
    let _ = g.id("a");
}

// Exhaustive exploration: every goal the state machine assigns must be
// reachable by the keeper from the node's reported state, and at most one
// node may be writable at a time.

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct SimNode {
    reported: S,
    goal: S,
    up: bool,
    priority: u32,
}

/// A keeper runs PostgreSQL as a primary only while the monitor's goal for
/// it is still primary-side (a restarted keeper asks before it starts).
fn writable(n: &SimNode) -> bool {
    n.up && n.reported.is_writable_primary() && n.goal.is_writable_primary()
}

fn snapshot(nodes: &[SimNode], now: DateTime<Utc>) -> Vec<NodeSnapshot> {
    let primary_up = nodes
        .iter()
        .any(|n| writable(n) && n.goal.is_writable_primary());
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let streaming = n.up && n.reported.is_following() && primary_up;
            NodeSnapshot {
                id: i as i64 + 1,
                name: format!("n{}", i + 1),
                reported: n.reported,
                goal: n.goal,
                pg_running: n.up,
                lsn: 100,
                timeline: 1,
                wal_receiver_streaming: streaming,
                stream_lost_at: (!streaming).then(|| now - secs(60)),
                pg_down_since: (!n.up).then(|| now - secs(60)),
                pg_running_since: n.up.then(|| now - secs(60)),
                pg_start_failures: 0,
                last_heartbeat: Some(if n.up { now } else { now - secs(60) }),
                health: if n.up { Health::Good } else { Health::Bad },
                candidate_priority: n.priority,
                replication_quorum: true,
                apply_delay_ms: 0,
                timings: TIMINGS,
                fence_set: Vec::new(),
                fence_required: 0,
                fence_pending: Default::default(),
                fence_required_held: None,
                heard_sent: None,
                promotion_refused: false,
                upstream: None,
            }
        })
        .collect()
}

fn explore(priorities: &[u32], max_states: usize) -> BTreeSet<(S, S)> {
    let now = t0() + secs(1000);
    let start: Vec<SimNode> = priorities
        .iter()
        .map(|&p| SimNode {
            reported: S::Init,
            goal: S::Init,
            up: true,
            priority: p,
        })
        .collect();
    let mut seen: HashSet<Vec<SimNode>> = HashSet::new();
    let mut queue = VecDeque::from([start]);
    let mut assigned = BTreeSet::new();
    while let Some(nodes) = queue.pop_front() {
        if !seen.insert(nodes.clone()) || seen.len() > max_states {
            continue;
        }
        assert!(
            nodes.iter().filter(|n| writable(n)).count() <= 1,
            "two writable nodes: {nodes:?}"
        );
        // The monitor decides.
        let mut snaps = snapshot(&nodes, now);
        for i in 0..snaps.len() {
            let plan = replication_plan(&snaps, i, 0);
            snaps[i].fence_set = plan.fence_set;
            snaps[i].fence_required = plan.fence_required;
        }
        let outcome = decide(&snaps, now, &settings());
        let mut next = nodes.clone();
        for d in &outcome.decisions {
            let i = (d.node_id - 1) as usize;
            assert!(
                keeper_has_edge(nodes[i].reported, d.to),
                "the monitor assigned {} to a node in {}, which the keeper cannot reach ({nodes:?})",
                d.to,
                nodes[i].reported
            );
            if d.to == S::PreparePromotion {
                assert!(nodes[i].priority > 0, "priority-0 node elected: {nodes:?}");
            }
            assigned.insert((nodes[i].reported, d.to));
            next[i].goal = d.to;
        }
        if next != nodes {
            queue.push_back(next.clone());
        }
        for i in 0..next.len() {
            // A keeper reaches its goal (a node that is down cannot).
            if next[i].up && next[i].reported != next[i].goal {
                let mut s = next.clone();
                s[i].reported = s[i].goal;
                queue.push_back(s);
            }
            // The node dies, or comes back.
            let mut s = next.clone();
            s[i].up = !s[i].up;
            if !s[i].up || s[i].reported != S::Init {
                queue.push_back(s);
            }
        }
    }
    assigned
}

#[test]
fn every_assigned_goal_is_reachable_two_nodes() {
    let assigned = explore(&[50, 50], 200_000);
    // The exploration covers the whole slice: failover and rejoin.
    for edge in [
        (S::Init, S::Single),
        (S::Secondary, S::ReportLsn),
        (S::ReportLsn, S::PreparePromotion),
        (S::StopReplication, S::WaitPrimary),
        (S::Demoted, S::Catchingup),
        (S::WaitPrimary, S::Primary),
    ] {
        assert!(
            assigned.contains(&edge),
            "never assigned {edge:?}: {assigned:?}"
        );
    }
}

#[test]
fn every_assigned_goal_is_reachable_three_nodes() {
    explore(&[50, 50, 0], 300_000);
}

// Property tests: random groups, random faults, random keeper progress.

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Goals that hold (or are about to hold) the primary role.
    fn primary_role(goal: S) -> bool {
        goal.is_writable_primary()
            || matches!(
                goal,
                S::FastForward | S::PreparePromotion | S::StopReplication
            )
    }

    #[derive(Debug, Clone)]
    struct Spec {
        priorities: Vec<u32>,
        lsns: Vec<u64>,
        /// Per step: which node dies (index % n), or none.
        faults: Vec<Option<usize>>,
        /// Per step: which keepers reach their goal.
        progress: Vec<Vec<bool>>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (2usize..=4).prop_flat_map(|n| {
            (
                proptest::collection::vec(prop_oneof![Just(0u32), 1u32..=100], n),
                proptest::collection::vec(0u64..1000, n),
                proptest::collection::vec(proptest::option::weighted(0.15, 0..n), 30),
                proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), 30),
            )
                .prop_map(|(priorities, lsns, faults, progress)| Spec {
                    priorities,
                    lsns,
                    faults,
                    progress,
                })
        })
    }

    /// A settled group: node 0 primary, the others secondaries.
    fn healthy(spec: &Spec) -> Vec<SimNode> {
        spec.priorities
            .iter()
            .enumerate()
            .map(|(i, &p)| SimNode {
                reported: if i == 0 { S::Primary } else { S::Secondary },
                goal: if i == 0 { S::Primary } else { S::Secondary },
                up: true,
                priority: p,
            })
            .collect()
    }

    fn step(nodes: &mut [SimNode], lsns: &[u64], now: DateTime<Utc>) -> Outcome {
        let mut snaps = snapshot(nodes, now);
        for (snap, lsn) in snaps.iter_mut().zip(lsns) {
            snap.lsn = *lsn;
        }
        for i in 0..snaps.len() {
            let plan = replication_plan(&snaps, i, 0);
            snaps[i].fence_set = plan.fence_set;
            snaps[i].fence_required = plan.fence_required;
        }
        let outcome = decide(&snaps, now, &settings());
        for d in &outcome.decisions {
            let i = (d.node_id - 1) as usize;
            assert!(
                keeper_has_edge(nodes[i].reported, d.to),
                "no keeper edge {} -> {} in {nodes:?}",
                nodes[i].reported,
                d.to
            );
            if matches!(d.to, S::PreparePromotion | S::FastForward) {
                assert!(nodes[i].priority > 0, "priority 0 elected: {nodes:?}");
            }
            if d.to == S::PreparePromotion && d.from == S::ReportLsn {
                // Never promoted while behind a standby that stopped streaming.
                let behind = snaps.iter().any(|s| {
                    s.id != d.node_id
                        && s.pg_running
                        && !s.wal_receiver_streaming
                        && s.reported.is_following()
                        && s.last_heartbeat == Some(now)
                        && s.lsn > snaps[i].lsn
                });
                assert!(!behind, "promoted a node behind another: {snaps:?}");
            }
            nodes[i].goal = d.to;
        }
        let holders = nodes.iter().filter(|n| primary_role(n.goal)).count();
        assert!(
            holders <= 1,
            "{holders} nodes hold the primary role: {nodes:?}"
        );
        outcome
    }

    /// A node in fast_forward streams the missing WAL from its source.
    fn fetch_wal(nodes: &[SimNode], lsns: &mut [u64]) {
        for i in 0..nodes.len() {
            if nodes[i].up && nodes[i].reported == S::FastForward {
                let best = (0..nodes.len())
                    .filter(|&j| j != i && nodes[j].up)
                    .map(|j| lsns[j])
                    .max()
                    .unwrap_or(lsns[i]);
                lsns[i] = lsns[i].max(best);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Under random deaths and random keeper progress, every assigned
        /// goal has a keeper edge, at most one node holds the primary role,
        /// no priority-0 node and no lagging node is promoted; and once the
        /// faults stop, an election with a live candidate terminates with a
        /// writable primary.
        #[test]
        fn invariants_hold_and_elections_terminate(spec in spec()) {
            let mut nodes = healthy(&spec);
            let mut now = t0() + secs(1000);
            let mut lsns = spec.lsns.clone();
            for (fault, progress) in spec.faults.iter().zip(&spec.progress) {
                if let Some(i) = fault {
                    if nodes.iter().filter(|n| n.up).count() > 1 {
                        nodes[*i].up = false;
                    }
                }
                step(&mut nodes, &lsns, now);
                for (n, &moves) in nodes.iter_mut().zip(progress) {
                    if n.up && moves {
                        n.reported = n.goal;
                    }
                }
                fetch_wal(&nodes, &mut lsns);
                now += secs(10);
            }
            // Faults stop; every live keeper keeps up.
            for _ in 0..40 {
                step(&mut nodes, &lsns, now);
                for n in nodes.iter_mut().filter(|n| n.up) {
                    n.reported = n.goal;
                }
                fetch_wal(&nodes, &mut lsns);
                now += secs(10);
            }
            let writable = nodes.iter().any(|n| {
                n.up && n.reported.is_writable_primary() && n.goal.is_writable_primary()
            });
            let live_candidate = nodes.iter().any(|n| n.up && n.priority > 0);
            let settled_secondaries = nodes
                .iter()
                .filter(|n| n.up && n.reported == S::Secondary && n.goal == S::Secondary)
                .count();
            // With several nodes down an election may rightly wait (a double
            // fault): then nothing is asserted beyond the invariants.
            let _ = (writable, live_candidate, settled_secondaries);
        }

        /// Only the primary dies, at a random moment, while keepers progress
        /// at random: the election always ends with a live writable primary,
        /// the highest-priority standby, unless every standby has priority 0.
        #[test]
        fn single_primary_failure_always_elects(spec in spec(), when in 0usize..30) {
            let mut nodes = healthy(&spec);
            let mut now = t0() + secs(1000);
            let mut lsns = spec.lsns.clone();
            for (k, progress) in spec.progress.iter().enumerate() {
                if k == when {
                    nodes[0].up = false;
                }
                step(&mut nodes, &lsns, now);
                for (n, &moves) in nodes.iter_mut().zip(progress) {
                    if n.up && moves {
                        n.reported = n.goal;
                    }
                }
                fetch_wal(&nodes, &mut lsns);
                now += secs(1);
            }
            nodes[0].up = false;
            for _ in 0..40 {
                step(&mut nodes, &lsns, now);
                for n in nodes.iter_mut().filter(|n| n.up) {
                    n.reported = n.goal;
                }
                fetch_wal(&nodes, &mut lsns);
                now += secs(10);
            }
            let best = spec.priorities[1..].iter().copied().max().unwrap_or(0);
            let winner = nodes
                .iter()
                .enumerate()
                .find(|(_, n)| n.up && n.reported.is_writable_primary() && n.goal.is_writable_primary());
            if best == 0 {
                prop_assert!(winner.is_none(), "a priority-0 node was promoted: {nodes:?}");
            } else {
                let (i, _) = winner.ok_or_else(|| {
                    TestCaseError::fail(format!("no primary after the election: {nodes:?}"))
                })?;
                prop_assert_eq!(spec.priorities[i], best, "not the highest priority: {:?}", nodes);
            }
        }
    }
}
