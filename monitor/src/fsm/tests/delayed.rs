//! Delayed standbys (an apply delay above 0): never elected, never in the
//! synchronous set, whatever their stored priority and quorum say; still
//! the most advanced reporter a candidate fast-forwards from.

use super::*;

const HOUR_MS: u64 = 3_600_000;

/// c is delayed as the commands store it: priority 0, quorum off.
fn delay(n: &mut NodeSnapshot) {
    n.apply_delay_ms = HOUR_MS;
    n.candidate_priority = 0;
    n.replication_quorum = false;
}

/// a (the primary) is dead; b and c (delayed) report, c holding the most
/// WAL: its stream from a lasted longest.
fn delayed_c_ahead(c: impl FnOnce(&mut NodeSnapshot)) -> Group {
    group()
        .primary("a")
        .secondary("b")
        .secondary("c")
        .with("c", c)
        .fence_for(0)
        .dead("a", 10)
        .with("b", |n| n.reported = S::ReportLsn)
        .with("b", |n| n.goal = S::ReportLsn)
        .with("c", |n| n.reported = S::ReportLsn)
        .with("c", |n| n.goal = S::ReportLsn)
        .with("c", |n| n.lsn += 100)
        .stream_lost("b", 10)
        .stream_lost("c", 10)
}

#[test]
fn a_delayed_standby_holding_the_most_wal_is_the_source_never_the_winner() {
    let g = delayed_c_ahead(delay);
    // The fence set is b alone: c never counts for synchronous commit.
    assert_eq!(g.nodes[0].fence_set, vec![application_name(2)]);
    let o = g.decide();
    expect(&g, &o, &[("b", S::FastForward), ("a", S::Demoted)]);
    assert!(
        o.decisions[0].reason.to_string().contains("from c"),
        "{:?}",
        o.decisions
    );
    // b fetches the WAL c received (and has not applied), from c.
    let mut g = g.with("b", |n| n.goal = S::FastForward);
    g.nodes[0].goal = S::Demoted;
    assert_eq!(fast_forward_source(&g.nodes, 1), Some(2));
    let g = g.with("b", |n| n.reported = S::FastForward);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting
            .iter()
            .any(|w| w.to_string().contains("fetching WAL")),
        "{:?}",
        o.waiting
    );
    // Once b has it, b is promoted; c never is.
    let g = g.with("b", |n| n.lsn += 100);
    expect(&g, &g.decide(), &[("b", S::PreparePromotion)]);
}

#[test]
fn a_delayed_standby_is_never_elected_whatever_its_stored_priority_says() {
    // A row that disagrees (priority 90, quorum on, and a delay): the delay
    // wins. c is not in the synchronous set, and b is still elected.
    let g = delayed_c_ahead(|n| {
        n.apply_delay_ms = HOUR_MS;
        n.candidate_priority = 90;
    });
    assert_eq!(g.nodes[0].fence_set, vec![application_name(2)]);
    let plan = replication_plan(&g.nodes, 0, 0);
    assert_eq!(plan.synchronous_standby_names, "ANY 1 (pgpilot_2)");
    expect(&g, &g.decide(), &[("b", S::FastForward), ("a", S::Demoted)]);
    // Without b, no one can be elected: the group waits and says why.
    let g = g.with("b", |n| n.candidate_priority = 0);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting[0].to_string().contains("priority above 0"),
        "{:?}",
        o.waiting
    );
}

#[test]
fn a_delayed_standby_alone_starts_no_election() {
    let g = group()
        .primary("a")
        .secondary("c")
        .with("c", |n| {
            n.apply_delay_ms = HOUR_MS;
            n.candidate_priority = 90;
        })
        .dead("a", 10);
    let o = g.decide();
    expect(&g, &o, &[]);
    assert!(
        o.waiting.iter().any(|w| w.kind() == "no_candidate"),
        "{:?}",
        o.waiting
    );
}

#[test]
fn a_delayed_standby_does_not_count_as_a_candidate_or_for_the_quorum() {
    let g = group().primary("a").secondary("b").secondary("c");
    let delayed = |names: &[&str]| {
        let mut nodes = g.nodes.clone();
        for n in nodes
            .iter_mut()
            .filter(|n| names.contains(&n.name.as_str()))
        {
            n.apply_delay_ms = HOUR_MS;
        }
        nodes
    };
    assert!(check_settings(&delayed(&["c"]), 0).is_ok());
    let err = check_settings(&delayed(&["b", "c"]), 0).unwrap_err();
    assert!(err.contains("no one could be promoted"), "{err}");
    // number_sync_standbys 1 needs two quorum standbys; c no longer counts.
    assert!(check_settings(&delayed(&[]), 1).is_ok());
    let err = check_settings(&delayed(&["c"]), 1).unwrap_err();
    assert!(err.starts_with("number_sync_standbys = 1"), "{err}");
    // A wait_primary turns synchronous replication on only for a
    // quorum standby that is not delayed.
    let g = group()
        .at("a", S::WaitPrimary)
        .secondary("c")
        .with("c", |n| n.apply_delay_ms = HOUR_MS);
    expect(&g, &g.decide(), &[]);
}
