//! Unit tests of the operator views on a made-up formation: tables, node
//! lookup, connection and lag, the client's refusals, JSON and the URI.

use pgpilot_proto::pb;
use pgpilot_proto::security::ClientSecurity;
use pgpilot_proto::ReplicationState as S;

use super::*;

mod schema;

fn sample() -> pb::FormationState {
    pb::FormationState {
        formation: "default".into(),
        number_sync_standbys: 0,
        synchronous_standby_names: String::new(),
        nodes: vec![pb::NodeStatus {
            node_id: 1,
            name: "node1".into(),
            host: "127.0.0.1".into(),
            port: 6001,
            reported_state: S::Primary.to_wire(),
            goal_state: S::Primary.to_wire(),
            lsn: 0x1_0000_0010,
            timeline: 2,
            health: "good".into(),
            heartbeat_age_ms: 300,
            pg_running: true,
            ..Default::default()
        }],
        monitors: vec![
            pb::MonitorStatus {
                monitor_id: "m1-00ff".into(),
                url: "https://m1:7430".into(),
                seen_ago_ms: 120,
                holds_lease: true,
            },
            pb::MonitorStatus {
                monitor_id: "m2-11ee".into(),
                url: "https://m2:7430".into(),
                seen_ago_ms: 480,
                holds_lease: false,
            },
        ],
        answered_by: "m2-11ee".into(),
        paused_by: "operator:alice".into(),
        paused_at: "2026-12-07T12:00:00.000Z".into(),
        parameters_version: 0,
        permanent_slots: vec![pb::PermanentSlot {
            name: "cdc".into(),
            kind: "logical".into(),
            plugin: "pgoutput".into(),
            database: "app".into(),
        }],
    }
}

/// `sample()` plus a streaming standby 4 KiB behind and a stopped node.
fn three() -> pb::FormationState {
    let mut s = sample();
    s.nodes.push(pb::NodeStatus {
        node_id: 2,
        name: "node2".into(),
        host: "127.0.0.1".into(),
        port: 6002,
        reported_state: S::Secondary.to_wire(),
        goal_state: S::Secondary.to_wire(),
        lsn: 0x1_0000_0010 - 4096,
        timeline: 2,
        health: "good".into(),
        heartbeat_age_ms: 200,
        pg_running: true,
        wal_receiver_streaming: true,
        system_identifier: 7_312_345_678_901_234_567,
        candidate_priority: 50,
        replication_quorum: true,
        ..Default::default()
    });
    s.nodes.push(pb::NodeStatus {
        node_id: 3,
        name: "node3".into(),
        host: "127.0.0.1".into(),
        port: 6003,
        reported_state: S::Secondary.to_wire(),
        goal_state: S::Maintenance.to_wire(),
        pg_running: false,
        health: "bad".into(),
        heartbeat_age_ms: -1,
        waiting_reason: "waiting for node3".into(),
        ..Default::default()
    });
    s
}

#[test]
fn table_has_every_column() {
    let t = state_table(&three());
    for col in STATE_COLUMNS {
        assert!(t.contains(col), "{t}");
    }
    assert!(t.contains("2:1/10"), "{t}");
    assert!(t.contains("read-write") && t.contains("read-only"), "{t}");
    assert!(t.contains("4.0 KiB") && t.contains("→ maintenance"), "{t}");
    assert!(t.contains("waiting: waiting for node3"), "{t}");
}

#[test]
fn connection_follows_state_and_postgres() {
    let node = |state: S, running: bool| pb::NodeStatus {
        reported_state: state.to_wire(),
        pg_running: running,
        ..Default::default()
    };
    for s in [
        S::Single,
        S::WaitPrimary,
        S::Primary,
        S::JoinPrimary,
        S::ApplySettings,
    ] {
        assert_eq!(connection(&node(s, true)), Connection::ReadWrite, "{s}");
        assert_eq!(connection(&node(s, false)), Connection::Down, "{s}");
    }
    for s in [S::Secondary, S::Catchingup, S::ReportLsn, S::WaitStandby] {
        assert_eq!(connection(&node(s, true)), Connection::ReadOnly, "{s}");
        assert_eq!(connection(&node(s, false)), Connection::Down, "{s}");
    }
    for s in [
        S::Init,
        S::Draining,
        S::Demoted,
        S::DemoteTimeout,
        S::Dropped,
    ] {
        assert_eq!(connection(&node(s, true)), Connection::Down, "{s}");
    }
    assert_eq!(connection(&pb::NodeStatus::default()), Connection::Down);
}

/// A primary whose keeper went silent and whose PostgreSQL the monitor
/// cannot reach is never shown as taking writes from its last report.
#[test]
fn an_unreachable_node_is_not_shown_usable() {
    let mut s = sample();
    s.nodes[0].unreachable = true;
    s.nodes[0].health = "bad".into();
    s.nodes[0].heartbeat_age_ms = 12_300;
    let n = &s.nodes[0];
    assert_eq!(connection(n), Connection::Unreachable);
    let table = state_table(&s);
    assert!(!table.contains("read-write"), "{table}");
    assert!(table.contains("unreachable"), "{table}");
    assert!(table.contains("primary (last report)"), "{table}");
    assert!(table.contains("12.3s ago"), "{table}");
    let detail = node_detail(&s, n);
    assert!(detail.contains("unknown (last seen running)"), "{detail}");
    let json = serde_json::to_value(StateJson::from(&s)).unwrap();
    assert_eq!(json["nodes"][0]["connection"], "unreachable");
    assert_eq!(json["nodes"][0]["unreachable"], true);
    // Nothing serves reads behind an unreachable primary either.
    let s = three();
    let mut gone = s.clone();
    gone.nodes[0].unreachable = true;
    assert_eq!(lag_bytes(&gone, &gone.nodes[1]), None);
    assert!(lag_bytes(&s, &s.nodes[1]).is_some());
}

#[test]
fn lag_is_for_serving_standbys_only() {
    let s = three();
    assert_eq!(lag_bytes(&s, &s.nodes[0]), None, "the primary");
    assert_eq!(lag_bytes(&s, &s.nodes[1]), Some(4096));
    assert_eq!(lag_bytes(&s, &s.nodes[2]), None, "a stopped node");
    // A standby ahead of a stale primary report is not behind.
    let mut ahead = s.clone();
    ahead.nodes[1].lsn = ahead.nodes[0].lsn + 10;
    assert_eq!(lag_bytes(&ahead, &ahead.nodes[1]), Some(0));
    // No primary: no lag.
    let mut headless = s.clone();
    headless.nodes[0].pg_running = false;
    assert_eq!(lag_bytes(&headless, &headless.nodes[1]), None);
    // Another group's primary does not count.
    let mut other = s;
    other.nodes[1].group_id = 1;
    assert_eq!(lag_bytes(&other, &other.nodes[1]), None);
}

#[test]
fn nodes_table_and_node_detail_show_every_field() {
    let s = three();
    let t = nodes_table(&s);
    for col in NODES_COLUMNS {
        assert!(t.contains(col), "{t}");
    }
    assert!(t.contains("7312345678901234567"), "{t}");
    let d = node_detail(&s, &s.nodes[1]);
    for line in [
        "name:               node2",
        "system identifier:  7312345678901234567",
        "candidate priority: 50",
        "replication quorum: true",
        "connection:         read-only",
        "lag:                4.0 KiB (4096 bytes)",
        "streaming:          yes",
        "lsn:                0/FFFFF010",
        "work:               -",
    ] {
        assert!(d.lines().any(|l| l == line), "{line:?} not in\n{d}");
    }
    assert!(d.lines().any(|l| l == "apply delay:        -"), "{d}");
    assert_eq!(d.lines().count(), 21, "{d}");
    let mut cloning = s.clone();
    cloning.nodes[2].work = Some(pb::WorkProgress {
        work: "clone".into(),
        upstream: "127.0.0.1:6001".into(),
        done_bytes: 1 << 30,
        total_bytes: 4 << 30,
        rate_bytes_per_s: 64 << 20,
        elapsed_ms: 16_000,
        idle_ms: 0,
    });
    let said = "clone from 127.0.0.1:6001: 1.0 GiB of 4.0 GiB (25 %), 64.0 MiB/s, about 48s left";
    let d = node_detail(&cloning, &cloning.nodes[2]);
    assert!(d.contains(&format!("work:               {said}")), "{d}");
    let t = state_table(&cloning);
    assert!(t.contains(&format!("working: node3 {said}")), "{t}");
    let j = serde_json::to_value(StateJson::from(&cloning)).unwrap();
    assert_eq!(j["nodes"][2]["work"]["total_bytes"], 4u64 << 30);
    assert_eq!(j["nodes"][2]["work"]["description"], said);
    assert!(j["nodes"][0]["work"].is_null());
}

#[test]
fn a_delayed_standby_is_shown_in_every_view() {
    let mut s = three();
    s.nodes[1].apply_delay_ms = 3_600_000;
    s.nodes[1].candidate_priority = 0;
    s.nodes[1].replication_quorum = false;
    let t = state_table(&s);
    assert!(
        t.contains("delayed: node2 applies WAL 1h late (recovery_min_apply_delay): never promoted, not counted for synchronous commit"),
        "{t}"
    );
    assert!(!t.contains("delayed: node1"), "{t}");
    let d = node_detail(&s, &s.nodes[1]);
    assert!(d.lines().any(|l| l == "apply delay:        1h"), "{d}");
    assert!(nodes_table(&s).contains("1h"));
    let settings = settings_table(&s);
    assert!(
        settings.contains("Apply delay") && settings.contains("1h"),
        "{settings}"
    );
    let j = serde_json::to_value(StateJson::from(&s)).unwrap();
    assert_eq!(j["nodes"][1]["apply_delay_ms"], 3_600_000);
    assert_eq!(j["nodes"][0]["apply_delay_ms"], 0);
    let j = serde_json::to_value(SettingsJson::from(&s)).unwrap();
    assert_eq!(j["nodes"][1]["apply_delay_ms"], 3_600_000);
    assert_eq!(j["nodes"][1]["candidate_priority"], 0);
}

#[test]
fn unknown_node_suggests_the_closest_names() {
    let s = three();
    assert_eq!(find_node(&s, "node2").map(|n| n.node_id).ok(), Some(2));
    let e = find_node(&s, "nod2").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        e.to_string(),
        r#"formation default has no node named "nod2": did you mean node2?"#
    );
    let e = find_node(&s, "node").unwrap_err().to_string();
    assert!(e.ends_with("did you mean node1 or node2 or node3?"), "{e}");
    let e = find_node(&s, "database-server").unwrap_err().to_string();
    assert!(e.ends_with("its nodes are node1, node2, node3"), "{e}");
}

#[tokio::test]
async fn tls_settings_that_do_not_fit_the_url_are_usage_errors() {
    let none = ClientSecurity::default();
    let e = Client::connect("https://127.0.0.1:1", &none)
        .await
        .err()
        .unwrap();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--tls-ca"), "{e}");
    let ca = ClientSecurity {
        ca_file: Some("/nonexistent/ca.crt".into()),
        ..Default::default()
    };
    let e = Client::connect("http://127.0.0.1:1", &ca)
        .await
        .err()
        .unwrap();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("https://"), "{e}");
    let e = Client::connect("https://127.0.0.1:1", &ca)
        .await
        .err()
        .unwrap();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
}

#[test]
fn json_round_trips() {
    let j = StateJson::from(&sample());
    let text = serde_json::to_string(&j).unwrap();
    let back: StateJson = serde_json::from_str(&text).unwrap();
    assert_eq!(back, j);
    assert_eq!(back.nodes[0].reported_state, "primary");
    assert_eq!(back.answered_by.as_deref(), Some("m2-11ee"));
    assert!(back.monitors[0].holds_lease && !back.monitors[1].holds_lease);
}

#[test]
fn show_state_lists_the_monitors_and_the_lease_holder() {
    let text = state_table(&sample());
    let m1 = text.lines().find(|l| l.contains("m1-00ff")).unwrap();
    assert!(
        m1.contains("https://m1:7430") && m1.contains("holds"),
        "{text}"
    );
    let m2 = text.lines().find(|l| l.contains("m2-11ee")).unwrap();
    assert!(m2.contains("(answered)") && !m2.contains("holds"), "{text}");
    let mut alone = sample();
    alone.monitors.clear();
    assert!(!state_table(&alone).contains("monitors"));
}

#[tokio::test]
async fn the_cli_names_every_monitor_it_could_not_reach() {
    let none = ClientSecurity::default();
    let urls = vec![
        "http://127.0.0.1:1".to_string(),
        "http://127.0.0.1:2".to_string(),
    ];
    let e = Client::connect_any(&urls, &none).await.err().unwrap();
    assert_eq!(e.exit_code(), 3);
    let text = e.to_string();
    assert!(
        text.contains("none of the 2 monitors") && text.contains("127.0.0.1:2"),
        "{text}"
    );
    let e = Client::connect_any(&[], &none).await.err().unwrap();
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn uri_lists_every_node() {
    let mut s = sample();
    s.nodes.push(pb::NodeStatus {
        host: "127.0.0.1".into(),
        port: 6002,
        ..Default::default()
    });
    assert_eq!(
        multi_host_uri(&s, "postgres", false),
        "postgresql://postgres@127.0.0.1:6001,127.0.0.1:6002/postgres?target_session_attrs=read-write"
    );
    assert!(multi_host_uri(&s, "postgres", true).ends_with("target_session_attrs=prefer-standby"));
}

#[test]
fn a_read_moves_on_when_the_monitor_did_not_answer_a_command_only_when_it_did_nothing() {
    use super::client::Call;
    use tonic::{Code, Status};
    let no_database = Status::unavailable("database error: connection refused");
    let late = Status::deadline_exceeded("Timeout expired");
    let cut = Status::from_error(Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by peer",
    )));
    for (status, read, command) in [
        (&no_database, true, true),
        (&late, true, false),
        (&cut, true, false),
        (&Status::not_found("unknown node"), false, false),
        (&Status::invalid_argument("bad"), false, false),
        (&Status::failed_precondition("no candidate"), false, false),
        (&Status::new(Code::Internal, "corrupt row"), false, false),
    ] {
        assert_eq!(Call::Read.may_move_on(status), read, "{status:?}");
        assert_eq!(Call::Command.may_move_on(status), command, "{status:?}");
    }
}

#[test]
fn a_paused_formation_says_so_in_every_view() {
    let paused = sample();
    let table = state_table(&paused);
    assert!(
        table.starts_with(
            "formation default (number_sync_standbys = 0) PAUSED by operator:alice since 2026-12-07T12:00:00.000Z: no automatic failover until resume"
        ),
        "{table}"
    );
    let json = serde_json::to_value(StateJson::from(&paused)).unwrap();
    assert_eq!(json["paused"]["by"], "operator:alice");
    let running = pb::FormationState {
        paused_by: String::new(),
        paused_at: String::new(),
        ..sample()
    };
    assert!(!state_table(&running).contains("PAUSED"));
    assert!(serde_json::to_value(StateJson::from(&running)).unwrap()["paused"].is_null());
    let formations = [
        pb::FormationSummary {
            formation: "default".into(),
            nodes: 2,
            paused_by: "operator:alice".into(),
            paused_at: "2026-12-07T12:00:00.000Z".into(),
            ..Default::default()
        },
        pb::FormationSummary {
            formation: "other".into(),
            ..Default::default()
        },
    ];
    let table = formations_table(&formations);
    assert!(
        table.contains("PAUSED by operator:alice since 2026-12-07T12:00:00.000Z")
            && table.contains("automatic"),
        "{table}"
    );
}
