//! Random and malformed requests to every RPC of a real monitor, over real
//! gRPC, with its real database.
//!
//! Each request is built valid and then has some of its fields replaced
//! by wild values (empty, huge, non-ASCII or NUL-holding names and
//! formations, ports 0 and above 65535, unknown state numbers, node ids
//! that are negative, unknown or from another formation, timings out of
//! bounds, requests above `max_message_bytes`), from a seed that is
//! printed (`PGPILOT_RPC_FUZZ_SEED=N` replays it; `PGPILOT_RPC_FUZZ_CASES`
//! sets how many requests). Every answer must be a success or a refusal
//! with a proper code (InvalidArgument, NotFound, FailedPrecondition,
//! OutOfRange, …: never Internal, Unknown or Unavailable) and one
//! sentence; a request that breaks a documented rule must be refused,
//! a request larger than the limit with OutOfRange. The operator
//! commands on parameters and formations are held to their codes (see
//! `operator`): they create and drop only formations of the fuzzer's own
//! (`fz-…`), which the monitor lists exactly after the run. Then raw
//! bytes on the gRPC port, hand-written HTTP/2 requests with broken
//! framing or bodies that are no protobuf message, and racing
//! registrations of one host and port. At the end the monitor still runs, its log holds no
//! panic, and its state reads back consistent: every stored node valid,
//! at most one writable primary goal per group, a reason on every event.
//!
//! A second test runs the same generator against a monitor with mutual
//! TLS, from an operator, two keepers of different formations and a client
//! without a certificate: the wrong caller is always refused with
//! Unauthenticated or PermissionDenied.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_proto::security::{ClientSecurity, Credentials};
use pgpilot_sim::rng::Rng;
use pgpilot_tests::Security;

use crate::calls::{lock, Shared};
use crate::generator::{Generator, Who};
use crate::operator::check_own_formations;
use crate::raw::raw_fuzz;
use crate::regressions::{racing_registrations, regressions};
use crate::rules::{valid_host, valid_name};
use crate::run::{
    check_monitor, fuzz, monitor_addr, monitor_db, monitor_only, register_keepers, Client, Tally,
};

mod calls;
mod generator;
mod operator;
mod oracle;
mod raw;
mod regressions;
mod rules;
mod run;

const SEED_ENV: &str = "PGPILOT_RPC_FUZZ_SEED";
const CASES_ENV: &str = "PGPILOT_RPC_FUZZ_CASES";
/// Requests of the plaintext run (the mutual TLS run sends half as many).
const DEFAULT_CASES: usize = 3000;
/// Requests in flight at once.
const WORKERS: u64 = 4;
/// The monitor's `max_message_bytes` (the harness keeps the default).
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// The monitor's `node_timeout` (the harness keeps the default): a keeper's
/// fence_timeout may not be longer.
const NODE_TIMEOUT_MS: u64 = 2000;
/// Longest keeper timing the monitor accepts (one hour).
const MAX_TIMING_MS: u64 = 3_600_000;
/// Bound on one answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// A refusal is one sentence, not a dump of the request.
const MAX_REFUSAL_CHARS: usize = 600;
/// Failures kept for the report (the run goes on after the first).
const MAX_FAILURES: usize = 20;
/// Node names of each formation the valid requests use.
const POOL: usize = 24;
/// A valid name that is never registered: NotFound is required.
const UNREGISTERED: &str = "unregistered-";
/// The identity of the keeper certificates of the mutual TLS run.
const KEEPER_NAME: &str = "fz-keeper";
/// Formations that exist: the migrations make `default`, the test `other`.
const FORMATIONS: [&str; 2] = ["default", "other"];

fn seed() -> Result<u64> {
    match std::env::var(SEED_ENV) {
        Ok(text) => text
            .parse::<u64>()
            .map_err(|e| anyhow!("{SEED_ENV}={text:?}: {e}")),
        Err(_) => Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000),
    }
}

fn cases(default: usize) -> Result<usize> {
    match std::env::var(CASES_ENV) {
        Ok(text) => text
            .parse::<usize>()
            .map_err(|e| anyhow!("{CASES_ENV}={text:?}: {e}")),
        Err(_) => Ok(default),
    }
}

fn report(
    title: &str,
    seed: u64,
    started: Instant,
    tally: &Tally,
    extra: &[String],
) -> Option<String> {
    eprintln!(
        "{title}: seed {seed} (replay with {SEED_ENV}={seed}), {} requests in {:.1}s\n{}",
        tally.answers.values().sum::<usize>(),
        started.elapsed().as_secs_f64(),
        tally.table()
    );
    if tally.failed == 0 && extra.is_empty() {
        return None;
    }
    let mut out = format!(
        "{title}: {} of the requests were answered wrongly (seed {seed}; replay with {SEED_ENV}={seed}):\n",
        tally.failed
    );
    for f in tally.failures.iter().chain(extra) {
        let _ = writeln!(out, "- {f}");
    }
    Some(out)
}

// ---- the tests ------------------------------------------------------------------------

/// Plaintext: every caller may do everything, so every refusal is about
/// the input or the state of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_malformed_input_in_a_sentence() -> Result<()> {
    let seed = seed()?;
    let cases = cases(DEFAULT_CASES)?;
    eprintln!("rpc fuzz: seed {seed} (replay with {SEED_ENV}={seed}), {cases} requests");
    let cluster = monitor_only(Security::Plaintext).await?;
    let started = Instant::now();
    let mut client = cluster
        .grpc_as(
            &ClientSecurity::default(),
            Credentials::none(),
            CALL_TIMEOUT,
        )
        .await?;
    let registry = Shared::default();
    let generator = Arc::new(Generator::new(&mut Rng::new(seed)));

    let mut extra = regressions(&client).await;
    let tally = fuzz(
        seed,
        cases,
        generator,
        vec![Client {
            who: Who::Anyone,
            client: client.clone(),
        }],
        registry.clone(),
    )
    .await;
    check_own_formations(&client, &registry, &mut extra).await;

    extra.extend(racing_registrations(&client, 10).await);
    let raw_started = Instant::now();
    let (raw, raw_failures) = raw_fuzz(seed, monitor_addr(&cluster)?, cases / 10).await;
    eprintln!(
        "raw HTTP/2: {} requests in {:.1}s: {raw:?}",
        raw.values().sum::<usize>(),
        raw_started.elapsed().as_secs_f64()
    );
    extra.extend(raw_failures);
    check_monitor(&cluster, &mut client, &mut extra).await;
    {
        // What the database holds must be what the monitor accepts.
        let db = monitor_db(&cluster).await?;
        let rows = db
            .query(
                "SELECT formation, name, host, port, candidate_priority FROM node",
                &[],
            )
            .await?;
        eprintln!("nodes registered at the end: {}", rows.len());
        for row in rows {
            let (formation, name, host): (String, String, String) =
                (row.get(0), row.get(1), row.get(2));
            let priority: i32 = row.get(4);
            if !valid_name(&formation)
                || !valid_name(&name)
                || !valid_host(&host)
                || !(0..=100).contains(&priority)
            {
                extra.push(format!("the database holds an invalid node: {formation}/{name} at {host}, priority {priority}"));
            }
        }
    }
    if let Some(failure) = report("rpc fuzz (plaintext)", seed, started, &tally, &extra) {
        bail!(cluster.failure(failure).await);
    }
    cluster.shutdown().await
}

/// Mutual TLS: an operator, a keeper of each formation and a client
/// without a certificate send the generator's requests; the wrong caller
/// is refused with Unauthenticated or PermissionDenied, and a keeper can
/// never act for a node of another formation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_the_wrong_caller_under_mutual_tls() -> Result<()> {
    let seed = seed()?;
    let cases = cases(DEFAULT_CASES)? / 2;
    eprintln!(
        "rpc fuzz, mutual TLS: seed {seed} (replay with {SEED_ENV}={seed}), {cases} requests"
    );
    let cluster = monitor_only(Security::MutualTls).await?;
    let started = Instant::now();
    let tls = cluster.tls_files().context("TLS files")?.clone();
    // Keeper certificates for one node of each formation, from the cluster's CA.
    let mut gen = tokio::process::Command::from(cluster.tools().monitor_command());
    gen.arg("gen-certs").arg("--dir").arg(&tls.dir);
    for f in FORMATIONS {
        gen.arg("--keeper").arg(format!("{f}/{KEEPER_NAME}"));
    }
    let out = gen
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("running gen-certs")?;
    if !out.status.success() {
        bail!("gen-certs failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut operator = cluster
        .grpc_as(
            &cluster.operator_security(),
            Credentials::none(),
            CALL_TIMEOUT,
        )
        .await?;
    let mut clients = vec![Client {
        who: Who::Operator,
        client: operator.clone(),
    }];
    for f in FORMATIONS {
        let sec = ClientSecurity {
            ca_file: Some(tls.ca()),
            cert_file: Some(tls.dir.join(format!("keeper-{f}-{KEEPER_NAME}.crt"))),
            key_file: Some(tls.dir.join(format!("keeper-{f}-{KEEPER_NAME}.key"))),
            ..Default::default()
        };
        clients.push(Client {
            who: Who::Keeper {
                formation: f.to_string(),
                name: KEEPER_NAME.to_string(),
            },
            client: cluster
                .grpc_as(&sec, Credentials::none(), CALL_TIMEOUT)
                .await?,
        });
    }
    let ca_only = ClientSecurity {
        ca_file: Some(tls.ca()),
        ..Default::default()
    };
    clients.push(Client {
        who: Who::NoCertificate,
        client: cluster
            .grpc_as(&ca_only, Credentials::none(), CALL_TIMEOUT)
            .await?,
    });

    let registry = Shared::default();
    let mut extra = register_keepers(&clients, &registry).await;
    let generator = Arc::new(Generator::new(&mut Rng::new(seed)));
    let tally = fuzz(seed, cases, generator, clients, registry.clone()).await;
    check_own_formations(&operator, &registry, &mut extra).await;

    let formations = lock(&registry).registered_in.clone();
    if formations.len() < 2 {
        extra.push(format!(
            "the keepers registered in {formations:?} only: the cross-formation heartbeats were not tried"
        ));
    }
    check_monitor(&cluster, &mut operator, &mut extra).await;
    if let Some(failure) = report("rpc fuzz (mutual TLS)", seed, started, &tally, &extra) {
        bail!(cluster.failure(failure).await);
    }
    cluster.shutdown().await
}
