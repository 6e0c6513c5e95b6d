//! Requests that once went wrong, and racing registrations of one host
//! and port.

use anyhow::Result;
use pgpilot_proto::pb;
use pgpilot_proto::security::{self};
use pgpilot_proto::ReplicationState;
use tonic::Code;

use crate::calls::{send, shorten_debug, Call, Reply};
use crate::oracle::sentence_problem;
use crate::FORMATIONS;

/// Fixed requests that each once got a wrong answer (a database error, an
/// empty reply for a formation that does not exist, a panic), run on a
/// fresh monitor before the random ones.
pub(crate) async fn regressions(client: &security::Client) -> Vec<String> {
    let mut failures = Vec::new();
    let mut c = client.clone();
    let mut expect =
        |what: &str, result: Result<Reply, tonic::Status>, code: Code, words: &str| match result {
            Err(s) if s.code() == code && s.message().contains(words) => {
                if let Some(p) = sentence_problem(s.message()) {
                    failures.push(format!("{what}: {p}: {:?}", shorten_debug(s.message())));
                }
            }
            Ok(Reply::Assigned(a))
                if code == Code::Ok
                    && ReplicationState::from_wire(a.goal_state)
                        .ok()
                        .map(|s| s.as_str())
                        == Some(words) => {}
            Ok(Reply::Operation(_)) if code == Code::Ok => {}
            other => failures.push(format!(
                "{what}: expected {code:?} ({words:?}), got {}",
                shorten_debug(&format!("{other:?}"))
            )),
        };
    let nosuch = "nosuch".to_string();
    let timings = pb::KeeperTimings {
        heartbeat_interval_ms: 500,
        fence_timeout_ms: 1500,
        wal_sender_timeout_ms: 2000,
    };
    let calls = [
        (
            "show-events of a formation that does not exist",
            Call::ListEvents(pb::ListEventsRequest {
                formation: nosuch.clone(),
                count: 0,
            }),
            Code::NotFound,
            "does not exist",
        ),
        (
            "perform-failover in a formation that does not exist",
            Call::PerformFailover(pb::PerformFailoverRequest {
                formation: nosuch.clone(),
                group_id: 0,
                target_node: String::new(),
                allow_data_loss: false,
            }),
            Code::NotFound,
            "does not exist",
        ),
        (
            "perform-failover --allow-data-loss in a formation that does not exist",
            Call::PerformFailover(pb::PerformFailoverRequest {
                formation: nosuch.clone(),
                group_id: 0,
                target_node: String::new(),
                allow_data_loss: true,
            }),
            Code::NotFound,
            "does not exist",
        ),
        (
            "enable-maintenance in a formation that does not exist",
            Call::SetMaintenance(pb::SetMaintenanceRequest {
                formation: nosuch.clone(),
                node: "node1".into(),
                enabled: true,
            }),
            Code::NotFound,
            "does not exist",
        ),
        (
            "show-state of a 200,000-character formation",
            Call::GetFormationState(pb::GetFormationStateRequest {
                formation: "f".repeat(200_000),
            }),
            Code::InvalidArgument,
            "(200000 characters) is not valid",
        ),
        (
            "drop-node of a name of 500 unprintable characters",
            Call::DropNode(pb::DropNodeRequest {
                formation: String::new(),
                node: "\u{e0001}".repeat(500),
                force: false,
            }),
            Code::InvalidArgument,
            "(500 characters) is not valid",
        ),
    ];
    for (what, call, code, words) in calls {
        expect(what, send(&mut c, call).await, code, words);
    }
    // A node registered, then heartbeating out of range, then dropped: its
    // keeper's last heartbeat (reported dropped) is answered its goal.
    let registered = c
        .register_node(pb::RegisterNodeRequest {
            formation: String::new(),
            name: "regress-1".into(),
            host: "127.202.0.1".into(),
            port: 5432,
            system_identifier: 0,
            candidate_priority: 50,
            replication_quorum: true,
            apply_delay_ms: 0,
            timings: Some(timings),
        })
        .await;
    let id = match registered {
        Ok(r) => r.into_inner().node_id,
        Err(s) => {
            failures.push(format!("registering regress-1: {s:?}"));
            return failures;
        }
    };
    let beat = |reported_state: i32, pg_start_failures: u32| {
        Call::NodeActive(Box::new(pb::NodeActiveRequest {
            node_id: id,
            reported_state,
            pg_running: false,
            timeline: 1,
            timings: Some(timings),
            pg_start_failures,
            ..Default::default()
        }))
    };
    let beats = [
        (
            "a heartbeat counting u32::MAX failed starts",
            beat(ReplicationState::Init.to_wire(), u32::MAX),
            Code::InvalidArgument,
            "pg_start_failures 4294967295",
        ),
        (
            "a heartbeat with reported_state 99",
            beat(99, 0),
            Code::InvalidArgument,
            "reported_state 99 is not a replication state",
        ),
        (
            "drop-node regress-1",
            Call::DropNode(pb::DropNodeRequest {
                formation: "default".into(),
                node: "regress-1".into(),
                force: false,
            }),
            Code::Ok,
            "",
        ),
        (
            "the dropped node's last heartbeat",
            beat(ReplicationState::Dropped.to_wire(), 0),
            Code::Ok,
            "dropped",
        ),
        (
            "a heartbeat after the node was removed",
            beat(ReplicationState::Dropped.to_wire(), 0),
            Code::NotFound,
            "is not registered",
        ),
    ];
    for (what, call, code, words) in beats {
        expect(what, send(&mut c, call).await, code, words);
    }
    failures
}

// ---- racing registrations -----------------------------------------------------------

/// Registrations of one host and port under different names, in both
/// formations at once: one may win, the others are refused in a sentence.
pub(crate) async fn racing_registrations(client: &security::Client, rounds: u32) -> Vec<String> {
    let mut failures = Vec::new();
    for round in 0..rounds {
        let port = 60_000 + round;
        let mut racers = tokio::task::JoinSet::new();
        for i in 0..8u32 {
            let mut client = client.clone();
            racers.spawn(async move {
                let request = pb::RegisterNodeRequest {
                    formation: FORMATIONS[i as usize % 2].to_string(),
                    name: format!("racer-{round}-{i}"),
                    host: "127.201.0.1".to_string(),
                    port,
                    system_identifier: 0,
                    candidate_priority: 50,
                    replication_quorum: true,
                    apply_delay_ms: 0,
                    timings: Some(pb::KeeperTimings {
                        heartbeat_interval_ms: 500,
                        fence_timeout_ms: 1500,
                        wal_sender_timeout_ms: 2000,
                    }),
                };
                (i, client.register_node(request).await)
            });
        }
        let mut won = 0;
        while let Some(Ok((i, result))) = racers.join_next().await {
            match result {
                Ok(_) => won += 1,
                Err(s)
                    if s.code() == Code::FailedPrecondition
                        && sentence_problem(s.message()).is_none() => {}
                Err(s) => failures.push(format!(
                    "racing registration {i} of 127.201.0.1:{port} (round {round}): {:?}: {}",
                    s.code(),
                    s.message()
                )),
            }
        }
        if won != 1 {
            failures.push(format!(
                "{won} racing registrations of 127.201.0.1:{port} succeeded (round {round}), not 1"
            ));
        }
    }
    failures
}
