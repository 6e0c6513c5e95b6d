//! Running many requests from several clients at once, against a monitor
//! started alone, and checking the monitor and its database afterwards.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use pgpilot_proto::pb;
use pgpilot_proto::security::{self};
use pgpilot_proto::ReplicationState;
use pgpilot_sim::rng::Rng;
use pgpilot_tests::{Cluster, ClusterOptions, Security};

use crate::calls::{send, shorten_debug, Call, Shared, RPCS};
use crate::generator::{plausible_timings, Generator, Who};
use crate::oracle::{check, record};
use crate::rules::{valid_host, valid_name};
use crate::{CALL_TIMEOUT, FORMATIONS, MAX_FAILURES, WORKERS};

#[derive(Default)]
pub(crate) struct Tally {
    /// (rpc, answer) → count; the answer is "OK" or a code.
    pub(crate) answers: BTreeMap<(&'static str, String), usize>,
    /// One message per (rpc, code), for the summary.
    pub(crate) samples: BTreeMap<(&'static str, String), String>,
    pub(crate) failures: Vec<String>,
    pub(crate) failed: usize,
}

impl Tally {
    pub(crate) fn table(&self) -> String {
        let mut per_rpc: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((rpc, answer), n) in &self.answers {
            per_rpc
                .entry(rpc)
                .or_default()
                .push(format!("{answer} {n}"));
        }
        let mut out = String::new();
        for rpc in RPCS {
            let line = per_rpc.get(rpc).map(|v| v.join(", ")).unwrap_or_default();
            let _ = writeln!(out, "  {rpc:<22} {line}");
        }
        if std::env::var_os("PGPILOT_RPC_FUZZ_SAMPLES").is_some() {
            for ((rpc, code), message) in &self.samples {
                let _ = writeln!(out, "  {rpc} {code}: {message}");
            }
        }
        out
    }
}

pub(crate) struct Client {
    pub(crate) who: Who,
    pub(crate) client: security::Client,
}

/// Send `cases` generated requests from `clients` (chosen at random),
/// `WORKERS` at a time.
pub(crate) async fn fuzz(
    seed: u64,
    cases: usize,
    generator: Arc<Generator>,
    clients: Vec<Client>,
    registry: Shared,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients = Arc::new(clients);
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..WORKERS {
        let (generator, clients, registry, tally) = (
            generator.clone(),
            clients.clone(),
            registry.clone(),
            tally.clone(),
        );
        let share =
            cases / WORKERS as usize + usize::from((worker as usize) < cases % WORKERS as usize);
        workers.spawn(async move {
            let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(worker + 1));
            for i in 0..share {
                let c = &clients[rng.below(clients.len())];
                let call = generator.call(&mut rng, &c.who, &registry);
                let mut client = c.client.clone();
                let result =
                    match tokio::time::timeout(CALL_TIMEOUT, send(&mut client, call.clone())).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within {CALL_TIMEOUT:?} (the test's own deadline)"
                        ))),
                    };
                let verdict = check(&call, &c.who, &result, &registry);
                record(&call, &result, &registry);
                let answer = match &result {
                    Ok(_) => "OK".to_string(),
                    Err(s) => format!("{:?}", s.code()),
                };
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(status) = &result {
                    t.samples
                        .entry((call.rpc(), answer.clone()))
                        .or_insert_with(|| shorten_debug(&format!("{:?}", status.message())));
                }
                *t.answers.entry((call.rpc(), answer)).or_default() += 1;
                if let Err(problem) = verdict {
                    t.failed += 1;
                    if t.failures.len() < MAX_FAILURES {
                        t.failures.push(format!(
                            "seed {seed} worker {worker} case {i} ({:?}): {}\n    {problem}",
                            c.who,
                            call.describe()
                        ));
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    Arc::try_unwrap(tally)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default()
}

/// Each keeper registers its own node once, with plausible values, before
/// the random requests: the heartbeats across formations are then tried
/// whatever the seed draws. A refusal here is a failure.
pub(crate) async fn register_keepers(clients: &[Client], registry: &Shared) -> Vec<String> {
    let mut failures = Vec::new();
    let mut rng = Rng::new(1);
    for c in clients {
        let Who::Keeper { formation, name } = &c.who else {
            continue;
        };
        let (host, port) = Generator::address(formation, name);
        let call = Call::RegisterNode(pb::RegisterNodeRequest {
            formation: formation.clone(),
            name: name.clone(),
            host,
            port,
            system_identifier: 0,
            candidate_priority: 50,
            replication_quorum: true,
            apply_delay_ms: 0,
            timings: Some(plausible_timings(&mut rng)),
        });
        let mut client = c.client.clone();
        let result = match tokio::time::timeout(CALL_TIMEOUT, send(&mut client, call.clone())).await
        {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
        };
        record(&call, &result, registry);
        if let Err(status) = result {
            failures.push(format!(
                "the keeper of {formation}/{name} could not register its own node: {status:?}"
            ));
        }
    }
    failures
}

// ---- the cluster --------------------------------------------------------------------

/// Run SQL on the monitor's own database.
pub(crate) async fn monitor_db(cluster: &Cluster) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&cluster.monitor_database_url(), tokio_postgres::NoTls)
            .await
            .context("connecting to the monitor database")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A cluster of no nodes (the monitor and its database) and formation
/// `other` beside `default`.
pub(crate) async fn monitor_only(security: Security) -> Result<Cluster> {
    let cluster = Cluster::start(ClusterOptions::nodes(0).security(security)).await?;
    monitor_db(&cluster)
        .await?
        .batch_execute("INSERT INTO formation (name) VALUES ('other')")
        .await
        .context("creating formation other")?;
    Ok(cluster)
}

pub(crate) fn monitor_addr(cluster: &Cluster) -> Result<SocketAddr> {
    let url = cluster.monitor_url();
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("monitor URL {url} has no scheme"))?;
    rest.trim_end_matches('/')
        .parse()
        .with_context(|| format!("monitor URL {url}"))
}

/// The monitor still runs, answers, logged no panic, and its state reads
/// back consistent. Problems are appended to `failures`.
pub(crate) async fn check_monitor(
    cluster: &Cluster,
    client: &mut security::Client,
    failures: &mut Vec<String>,
) {
    match cluster.monitor_pid() {
        Some(pid) if pgpilot_tests::process::is_alive(pid as i32) => {}
        other => failures.push(format!("the monitor process is gone (pid {other:?})")),
    }
    let log = std::fs::read_to_string(&cluster.log_files()[0]).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("panicked")) {
        failures.push(format!("the monitor's log holds a panic: {line}"));
    }
    for formation in FORMATIONS {
        let state = match client
            .get_formation_state(pb::GetFormationStateRequest {
                formation: formation.to_string(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) => {
                failures.push(format!(
                    "show-state of {formation} failed afterwards: {s:?}"
                ));
                continue;
            }
        };
        let mut writable: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for n in &state.nodes {
            if !valid_name(&n.name) || !valid_host(&n.host) || !(1..=65_535).contains(&n.port) {
                failures.push(format!("{formation} holds an invalid node: {n:?}"));
            }
            match ReplicationState::from_wire(n.goal_state) {
                Ok(goal) if goal.is_writable_primary() => {
                    writable.entry(n.group_id).or_default().push(n.name.clone());
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("{formation}/{}: goal {e}", n.name)),
            }
        }
        for (group, names) in writable.iter().filter(|(_, v)| v.len() > 1) {
            failures.push(format!(
                "{formation} group {group} has several writable primary goals: {names:?}"
            ));
        }
        match client
            .list_events(pb::ListEventsRequest {
                formation: formation.to_string(),
                count: 10_000,
            })
            .await
        {
            Ok(events) => {
                for e in events
                    .into_inner()
                    .events
                    .iter()
                    .filter(|e| e.reason.trim().is_empty())
                {
                    failures.push(format!("an event without a reason: {e:?}"));
                }
            }
            Err(s) => failures.push(format!(
                "show-events of {formation} failed afterwards: {s:?}"
            )),
        }
    }
}
