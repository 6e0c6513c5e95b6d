//! Unit tests of the world's helpers.

use super::*;

#[test]
fn parses_synchronous_standby_names() {
    assert_eq!(parse_sync(""), None);
    assert_eq!(
        parse_sync("ANY 1 (pgpilot_2, pgpilot_3)"),
        Some(SyncRep {
            n: 1,
            names: vec!["pgpilot_2".into(), "pgpilot_3".into()]
        })
    );
    assert_eq!(
        parse_sync("ANY 2 (pgpilot_2)"),
        Some(SyncRep {
            n: 2,
            names: vec!["pgpilot_2".into()]
        })
    );
}

#[test]
fn prefixes_of_write_histories() {
    assert!(is_prefix(&[], &[1, 2]));
    assert!(is_prefix(&[1, 2], &[1, 2, 5]));
    assert!(!is_prefix(&[1, 3], &[1, 2, 5]));
    assert!(!is_prefix(&[1, 2, 5, 6], &[1, 2, 5]));
    assert_eq!(common_prefix(&[1, 2, 3, 7], &[1, 2, 3, 4, 5]), 3);
    assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    assert_eq!(common_prefix(&[4], &[1, 2, 3]), 0);
    assert_eq!(common_prefix(&[], &[1]), 0);
}

#[test]
fn timings_are_the_shipped_defaults() {
    let t = Timings::defaults();
    assert_eq!(t.heartbeat, 500);
    assert_eq!(t.fence_timeout, 1500);
    assert_eq!(t.wal_sender_timeout, 2000);
    assert_eq!(t.machine.node_timeout, Duration::from_secs(2));
    assert_eq!(t.machine.fence_margin, Duration::from_millis(500));
    assert_eq!(t.rpc_timeout, 500);
}

#[test]
fn events_run_in_time_then_insertion_order() {
    let mut heap = BinaryHeap::new();
    for (at, seq) in [(5, 1), (1, 2), (5, 0), (3, 3)] {
        heap.push(Scheduled {
            at,
            seq,
            ev: Ev::Pump,
        });
    }
    let order: Vec<(Ms, u64)> = std::iter::from_fn(|| heap.pop().map(|s| (s.at, s.seq))).collect();
    assert_eq!(order, vec![(1, 2), (3, 3), (5, 0), (5, 1)]);
}
