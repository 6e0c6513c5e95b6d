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
//! a request larger than the limit with OutOfRange. Then raw bytes on
//! the gRPC port, hand-written HTTP/2 requests with broken framing or
//! bodies that are no protobuf message, and racing registrations of one
//! host and port. At the end the monitor still runs, its log holds no
//! panic, and its state reads back consistent: every stored node valid,
//! at most one writable primary goal per group, a reason on every event.
//!
//! A second test runs the same generator against a monitor with mutual
//! TLS, from an operator, two keepers of different formations and a client
//! without a certificate: the wrong caller is always refused with
//! Unauthenticated or PermissionDenied.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_proto::pb;
use pgpilot_proto::security::{self, ClientSecurity, Credentials};
use pgpilot_proto::ReplicationState;
use pgpilot_sim::rng::Rng;
use pgpilot_tests::raw_grpc::{self, RawAnswer, RawRequest};
use pgpilot_tests::{Cluster, ClusterOptions, Security};
use prost::Message as _;
use tonic::Code;

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

// ---- what the monitor documents as valid -----------------------------------

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn valid_host(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

fn resolve(formation: &str) -> &str {
    if formation.is_empty() {
        "default"
    } else {
        formation
    }
}

fn valid_formation(s: &str) -> bool {
    s.is_empty() || valid_name(s)
}

fn known_formation(s: &str) -> bool {
    FORMATIONS.contains(&resolve(s))
}

fn valid_timings(t: &Option<pb::KeeperTimings>) -> bool {
    t.as_ref().is_some_and(|t| {
        [
            t.heartbeat_interval_ms,
            t.fence_timeout_ms,
            t.wal_sender_timeout_ms,
        ]
        .iter()
        .all(|ms| (1..=MAX_TIMING_MS).contains(ms))
            && t.fence_timeout_ms <= NODE_TIMEOUT_MS
    })
}

fn valid_state(v: i32) -> bool {
    ReplicationState::from_wire(v).is_ok()
}

// ---- requests ---------------------------------------------------------------

#[derive(Debug, Clone)]
enum Call {
    RegisterNode(pb::RegisterNodeRequest),
    NodeActive(pb::NodeActiveRequest),
    GetFormationState(pb::GetFormationStateRequest),
    ListEvents(pb::ListEventsRequest),
    PerformFailover(pb::PerformFailoverRequest),
    SetNumberSyncStandbys(pb::SetNumberSyncStandbysRequest),
    SetNodeSettings(pb::SetNodeSettingsRequest),
    SetMaintenance(pb::SetMaintenanceRequest),
    DropNode(pb::DropNodeRequest),
    ReinitNode(pb::ReinitNodeRequest),
}

const RPCS: [&str; 10] = [
    "RegisterNode",
    "NodeActive",
    "GetFormationState",
    "ListEvents",
    "PerformFailover",
    "SetNumberSyncStandbys",
    "SetNodeSettings",
    "SetMaintenance",
    "DropNode",
    "ReinitNode",
];

impl Call {
    fn rpc(&self) -> &'static str {
        match self {
            Call::RegisterNode(_) => RPCS[0],
            Call::NodeActive(_) => RPCS[1],
            Call::GetFormationState(_) => RPCS[2],
            Call::ListEvents(_) => RPCS[3],
            Call::PerformFailover(_) => RPCS[4],
            Call::SetNumberSyncStandbys(_) => RPCS[5],
            Call::SetNodeSettings(_) => RPCS[6],
            Call::SetMaintenance(_) => RPCS[7],
            Call::DropNode(_) => RPCS[8],
            Call::ReinitNode(_) => RPCS[9],
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Call::RegisterNode(r) => r.encoded_len(),
            Call::NodeActive(r) => r.encoded_len(),
            Call::GetFormationState(r) => r.encoded_len(),
            Call::ListEvents(r) => r.encoded_len(),
            Call::PerformFailover(r) => r.encoded_len(),
            Call::SetNumberSyncStandbys(r) => r.encoded_len(),
            Call::SetNodeSettings(r) => r.encoded_len(),
            Call::SetMaintenance(r) => r.encoded_len(),
            Call::DropNode(r) => r.encoded_len(),
            Call::ReinitNode(r) => r.encoded_len(),
        }
    }

    fn is_operator_rpc(&self) -> bool {
        !matches!(self, Call::RegisterNode(_) | Call::NodeActive(_))
    }

    /// The request as a person reads it: long strings shortened.
    fn describe(&self) -> String {
        shorten_debug(&format!("{self:?}"))
    }
}

/// `text` (a `Debug` rendering) with every string literal longer than 120
/// characters replaced by its start and its length.
fn shorten_debug(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            out.push(c);
            continue;
        }
        let mut literal = String::new();
        let mut escaped = false;
        for c in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                break;
            }
            literal.push(c);
        }
        if literal.chars().count() > 120 {
            let start: String = literal.chars().take(40).collect();
            let _ = write!(out, "\"{start}…\" ({} chars)", literal.chars().count());
        } else {
            let _ = write!(out, "\"{literal}\"");
        }
    }
    out
}

/// What the monitor answered.
#[derive(Debug)]
enum Reply {
    Registered(pb::RegisterNodeReply),
    Assigned(pb::NodeActiveReply),
    State(pb::FormationState),
    Events(pb::ListEventsReply),
    Operation(pb::OperationReply),
}

async fn send(client: &mut security::Client, call: Call) -> Result<Reply, tonic::Status> {
    Ok(match call {
        Call::RegisterNode(r) => Reply::Registered(client.register_node(r).await?.into_inner()),
        Call::NodeActive(r) => Reply::Assigned(client.node_active(r).await?.into_inner()),
        Call::GetFormationState(r) => {
            Reply::State(client.get_formation_state(r).await?.into_inner())
        }
        Call::ListEvents(r) => Reply::Events(client.list_events(r).await?.into_inner()),
        Call::PerformFailover(r) => {
            Reply::Operation(client.perform_failover(r).await?.into_inner())
        }
        Call::SetNumberSyncStandbys(r) => {
            Reply::Operation(client.set_number_sync_standbys(r).await?.into_inner())
        }
        Call::SetNodeSettings(r) => {
            Reply::Operation(client.set_node_settings(r).await?.into_inner())
        }
        Call::SetMaintenance(r) => Reply::Operation(client.set_maintenance(r).await?.into_inner()),
        Call::DropNode(r) => Reply::Operation(client.drop_node(r).await?.into_inner()),
        Call::ReinitNode(r) => Reply::Operation(client.reinit_node(r).await?.into_inner()),
    })
}

// ---- what has been registered ------------------------------------------------

/// Nodes the monitor has confirmed, shared by the workers.
#[derive(Debug, Default)]
struct Registry {
    /// node id → (formation, name).
    ids: BTreeMap<i64, (String, String)>,
}

type Shared = Arc<Mutex<Registry>>;

fn lock(r: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- the generator -------------------------------------------------------------

/// Who sends a request (the mutual TLS run has several; plaintext one).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    /// Plaintext: everyone may do everything.
    Anyone,
    Operator,
    Keeper {
        formation: String,
        name: String,
    },
    /// TLS with the CA only: no client certificate.
    NoCertificate,
}

struct Generator {
    /// Valid node names per formation (the first is [`KEEPER_NAME`]).
    pool: Vec<String>,
}

impl Generator {
    fn new(rng: &mut Rng) -> Generator {
        let alphabet: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(['_', '-', '.'])
            .collect();
        let mut pool = vec![KEEPER_NAME.to_string(), "node1".to_string()];
        while pool.len() < POOL {
            let len = match rng.below(4) {
                0 => 1,
                1 => 63,
                _ => rng.range(2, 20) as usize,
            };
            let name: String = (0..len).map(|_| rng.pick(&alphabet)).collect();
            if !name.starts_with(UNREGISTERED) && !pool.contains(&name) {
                pool.push(name);
            }
        }
        Generator { pool }
    }

    /// The host and port a pool node registers with: one per (formation,
    /// name), so that registering again is idempotent. 127.200.0.0/16
    /// answers nothing, and an IP address needs no name lookup by the
    /// monitor's health check.
    fn address(formation: &str, name: &str) -> (String, u32) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in resolve(formation).bytes().chain([0]).chain(name.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (
            format!("127.200.{}.{}", (h >> 8) % 256, h % 254 + 1),
            (10_000 + (h >> 16) % 50_000) as u32,
        )
    }

    fn wild_string(rng: &mut Rng) -> String {
        match rng.below(16) {
            0 => String::new(),
            1 => "a".repeat(64),
            2 => "x".repeat(rng.range(256, 4096) as usize),
            3 => "y".repeat(rng.range(10_000, 300_000) as usize),
            4 => "nœud-é".to_string(),
            5 => "节点".to_string(),
            6 => "\u{1F418}".repeat(rng.range(1, 40) as usize),
            7 => "a\0b".to_string(),
            8 => "\0".repeat(rng.range(1, 8) as usize),
            9 => "node 1".to_string(),
            10 => "x' password=y host=evil".to_string(),
            11 => "line\nbreak\r\t".to_string(),
            12 => "'; DROP TABLE node; --".to_string(),
            13 => "%s%n%x{}../..\\".to_string(),
            14 => {
                // Any code points at all (no surrogates: a Rust string cannot hold one).
                let len = rng.range(1, 80);
                (0..len)
                    .filter_map(|_| char::from_u32(rng.below(0x11_0000) as u32))
                    .collect()
            }
            _ => format!("{UNREGISTERED}{}", rng.below(1_000_000)),
        }
    }

    fn wild_u32(rng: &mut Rng) -> u32 {
        let random = rng.next_u64() as u32;
        *rng.pick(&[
            0,
            1,
            17,
            101,
            1000,
            65_535,
            65_536,
            i32::MAX as u32,
            i32::MAX as u32 + 1,
            u32::MAX,
            random,
        ])
    }

    fn wild_u64(rng: &mut Rng) -> u64 {
        let random = rng.next_u64();
        *rng.pick(&[
            0,
            1,
            MAX_TIMING_MS + 1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX,
            random,
        ])
    }

    fn wild_state(rng: &mut Rng) -> i32 {
        let random = rng.next_u64() as i32;
        *rng.pick(&[0, 22, 23, 100, -1, i32::MIN, i32::MAX, random])
    }

    fn wild_id(rng: &mut Rng) -> i64 {
        let negative = -(rng.range(1, 1 << 40) as i64);
        // Far beyond any id this run registers.
        let unknown = 1_000_000_000 + rng.below(1 << 40) as i64;
        *rng.pick(&[0, -1, negative, i64::MIN, i64::MAX, unknown])
    }

    fn wild_timings(rng: &mut Rng) -> Option<pb::KeeperTimings> {
        if rng.chance(0.2) {
            return None;
        }
        let mut t = plausible_timings(rng);
        match rng.below(4) {
            0 => t.heartbeat_interval_ms = Generator::wild_u64(rng),
            1 => t.fence_timeout_ms = Generator::wild_u64(rng),
            2 => t.wal_sender_timeout_ms = Generator::wild_u64(rng),
            // Longer than the monitor's node_timeout.
            _ => t.fence_timeout_ms = rng.range(NODE_TIMEOUT_MS + 1, MAX_TIMING_MS),
        }
        Some(t)
    }

    fn formation(&self, rng: &mut Rng, wild: f64) -> String {
        if rng.chance(wild) {
            if rng.chance(0.3) {
                return "nosuch".to_string();
            }
            return Generator::wild_string(rng);
        }
        rng.pick(&["default", "other", ""]).to_string()
    }

    fn name(&self, rng: &mut Rng, wild: f64) -> String {
        if rng.chance(wild) {
            return Generator::wild_string(rng);
        }
        rng.pick(&self.pool).to_string()
    }

    /// A node id the monitor gave out (any formation), else a wild one.
    fn node_id(&self, rng: &mut Rng, wild: f64, registry: &Shared) -> i64 {
        if !rng.chance(wild) {
            let ids: Vec<i64> = lock(registry).ids.keys().copied().collect();
            if !ids.is_empty() {
                return *rng.pick(&ids);
            }
        }
        Generator::wild_id(rng)
    }

    /// One request from `who`. `wild` is the chance that each field is
    /// replaced by a wild value.
    fn call(&self, rng: &mut Rng, who: &Who, registry: &Shared) -> Call {
        let wild = *rng.pick(&[0.0, 0.0, 0.1, 0.3, 0.6, 1.0]);
        let w = |rng: &mut Rng| rng.chance(wild);
        let mut call = match rng.below(10) {
            0 => {
                let (mut formation, mut name) = (self.formation(rng, wild), self.name(rng, wild));
                if let Who::Keeper {
                    formation: f,
                    name: n,
                } = who
                {
                    if rng.chance(0.7) {
                        (formation, name) = (f.clone(), n.clone());
                    }
                }
                if name.starts_with(UNREGISTERED) {
                    // Such names stay unregistered: other requests expect NotFound.
                    name = rng.pick(&self.pool).to_string();
                }
                let (host, port) = Generator::address(&formation, &name);
                Call::RegisterNode(pb::RegisterNodeRequest {
                    host: if w(rng) {
                        Generator::wild_string(rng)
                    } else if rng.chance(0.05) {
                        // Another node's address: already taken.
                        Generator::address(&formation, &rng.pick(&self.pool)).0
                    } else {
                        host
                    },
                    port: if w(rng) {
                        Generator::wild_u32(rng)
                    } else {
                        port
                    },
                    system_identifier: if w(rng) {
                        Generator::wild_u64(rng)
                    } else {
                        rng.range(0, 2)
                    },
                    candidate_priority: if w(rng) {
                        Generator::wild_u32(rng)
                    } else {
                        rng.range(0, 100) as u32
                    },
                    replication_quorum: rng.chance(0.7),
                    timings: if w(rng) {
                        Generator::wild_timings(rng)
                    } else {
                        Some(plausible_timings(rng))
                    },
                    formation,
                    name,
                })
            }
            1 => Call::NodeActive(pb::NodeActiveRequest {
                node_id: self.node_id(rng, wild, registry),
                reported_state: if w(rng) {
                    Generator::wild_state(rng)
                } else {
                    rng.range(1, 21) as i32
                },
                pg_running: rng.chance(0.7),
                lsn: if w(rng) {
                    Generator::wild_u64(rng)
                } else {
                    rng.range(0, u64::from(u32::MAX))
                },
                timeline: if w(rng) {
                    Generator::wild_u32(rng)
                } else {
                    rng.range(1, 3) as u32
                },
                wal_receiver_streaming: rng.chance(0.5),
                system_identifier: if w(rng) {
                    Generator::wild_u64(rng)
                } else {
                    rng.range(0, 2)
                },
                timings: if w(rng) {
                    Generator::wild_timings(rng)
                } else {
                    Some(plausible_timings(rng))
                },
                streaming_standbys: if w(rng) {
                    (0..rng.below(50))
                        .map(|_| Generator::wild_string(rng))
                        .collect()
                } else {
                    (0..rng.below(3))
                        .map(|i| format!("pgpilot_{}", i + 1))
                        .collect()
                },
                pg_start_failures: if w(rng) {
                    Generator::wild_u32(rng)
                } else {
                    rng.below(4) as u32
                },
                synchronous_standby_names: match rng.below(4) {
                    0 => None,
                    1 => Some(String::new()),
                    2 if w(rng) => Some(Generator::wild_string(rng)),
                    _ => Some("ANY 1 (pgpilot_1, pgpilot_2)".to_string()),
                },
            }),
            2 => Call::GetFormationState(pb::GetFormationStateRequest {
                formation: self.formation(rng, wild),
            }),
            3 => Call::ListEvents(pb::ListEventsRequest {
                formation: self.formation(rng, wild),
                count: if w(rng) {
                    Generator::wild_u32(rng)
                } else {
                    rng.below(50) as u32
                },
            }),
            4 => Call::PerformFailover(pb::PerformFailoverRequest {
                formation: self.formation(rng, wild),
                group_id: if w(rng) { Generator::wild_u32(rng) } else { 0 },
                target_node: if rng.chance(0.5) {
                    String::new()
                } else {
                    self.name(rng, wild)
                },
                allow_data_loss: rng.chance(0.2),
            }),
            5 => Call::SetNumberSyncStandbys(pb::SetNumberSyncStandbysRequest {
                formation: self.formation(rng, wild),
                number_sync_standbys: if w(rng) {
                    Generator::wild_u32(rng)
                } else {
                    rng.below(3) as u32
                },
            }),
            6 => Call::SetNodeSettings(pb::SetNodeSettingsRequest {
                formation: self.formation(rng, wild),
                node: self.name(rng, wild),
                candidate_priority: match rng.below(3) {
                    0 => None,
                    _ if w(rng) => Some(Generator::wild_u32(rng)),
                    _ => Some(rng.range(0, 100) as u32),
                },
                replication_quorum: match rng.below(3) {
                    0 => None,
                    _ => Some(rng.chance(0.5)),
                },
            }),
            7 => Call::SetMaintenance(pb::SetMaintenanceRequest {
                formation: self.formation(rng, wild),
                node: self.name(rng, wild),
                enabled: rng.chance(0.6),
            }),
            8 => Call::DropNode(pb::DropNodeRequest {
                formation: self.formation(rng, wild),
                node: self.name(rng, wild),
                // Rarely, so that the formations keep some nodes.
                force: rng.chance(0.05),
            }),
            _ => Call::ReinitNode(pb::ReinitNodeRequest {
                formation: self.formation(rng, wild),
                node: self.name(rng, wild),
            }),
        };
        if rng.chance(0.005) {
            oversize(&mut call, rng);
        }
        call
    }
}

fn plausible_timings(rng: &mut Rng) -> pb::KeeperTimings {
    let heartbeat = rng.range(50, 500);
    pb::KeeperTimings {
        heartbeat_interval_ms: heartbeat,
        fence_timeout_ms: rng.range(heartbeat * 2, NODE_TIMEOUT_MS),
        wal_sender_timeout_ms: rng.range(1000, 5000),
    }
}

/// Make `call` larger than the monitor's `max_message_bytes`.
fn oversize(call: &mut Call, rng: &mut Rng) {
    let big = "z".repeat(MAX_MESSAGE_BYTES + rng.range(1, 100_000) as usize);
    match call {
        Call::RegisterNode(r) => r.host = big,
        Call::NodeActive(r) => r.synchronous_standby_names = Some(big),
        Call::GetFormationState(r) => r.formation = big,
        Call::ListEvents(r) => r.formation = big,
        Call::PerformFailover(r) => r.target_node = big,
        Call::SetNumberSyncStandbys(r) => r.formation = big,
        Call::SetNodeSettings(r) => r.node = big,
        Call::SetMaintenance(r) => r.node = big,
        Call::DropNode(r) => r.formation = big,
        Call::ReinitNode(r) => r.node = big,
    }
}

// ---- the oracle ------------------------------------------------------------------

/// Why the monitor must refuse `call` whoever sends it, if it must.
fn must_refuse(call: &Call, registry: &Shared) -> Option<String> {
    let names = |formation: &str, node: &str| -> Option<String> {
        if !valid_formation(formation) {
            return Some(format!("formation {formation:?} is not a valid name"));
        }
        if !valid_name(node) {
            return Some(format!("node name {node:?} is not valid"));
        }
        if !known_formation(formation) {
            return Some(format!("formation {formation:?} does not exist"));
        }
        node.starts_with(UNREGISTERED)
            .then(|| format!("node {node:?} was never registered"))
    };
    match call {
        Call::RegisterNode(r) => {
            if let Some(why) =
                names(&r.formation, &r.name).filter(|_| !r.name.starts_with(UNREGISTERED))
            {
                return Some(why);
            }
            if !valid_host(&r.host) {
                return Some(format!("host {:?} is not valid", r.host));
            }
            if !(1..=65_535).contains(&r.port) {
                return Some(format!("port {} is out of range", r.port));
            }
            if r.candidate_priority > 100 {
                return Some("candidate priority above 100".into());
            }
            (!valid_timings(&r.timings)).then(|| "timings out of bounds".into())
        }
        Call::NodeActive(r) => {
            if r.node_id <= 0 {
                return Some("node id not positive".into());
            }
            if !valid_state(r.reported_state) {
                return Some(format!("reported_state {} is unknown", r.reported_state));
            }
            if !valid_timings(&r.timings) {
                return Some("timings out of bounds".into());
            }
            if r.pg_start_failures > i32::MAX as u32 {
                return Some(format!(
                    "pg_start_failures {} is out of range",
                    r.pg_start_failures
                ));
            }
            if r.node_id >= 1_000_000_000 && !lock(registry).ids.contains_key(&r.node_id) {
                return Some(format!("node id {} was never registered", r.node_id));
            }
            None
        }
        Call::GetFormationState(pb::GetFormationStateRequest { formation })
        | Call::ListEvents(pb::ListEventsRequest { formation, .. })
        | Call::SetNumberSyncStandbys(pb::SetNumberSyncStandbysRequest { formation, .. }) => {
            if !valid_formation(formation) {
                return Some(format!("formation {formation:?} is not a valid name"));
            }
            if !known_formation(formation) {
                return Some(format!("formation {formation:?} does not exist"));
            }
            if let Call::SetNumberSyncStandbys(r) = call {
                if r.number_sync_standbys > 16 {
                    return Some("number_sync_standbys above 16".into());
                }
            }
            None
        }
        Call::PerformFailover(r) => {
            if !valid_formation(&r.formation) {
                return Some(format!("formation {:?} is not a valid name", r.formation));
            }
            if !known_formation(&r.formation) {
                return Some(format!("formation {:?} does not exist", r.formation));
            }
            if r.group_id != 0 {
                return Some(format!("group {} has no node", r.group_id));
            }
            if !r.target_node.is_empty() {
                if r.allow_data_loss {
                    return Some("allow_data_loss with a target".into());
                }
                return names(&r.formation, &r.target_node);
            }
            None
        }
        Call::SetNodeSettings(r) => {
            if let Some(why) = names(&r.formation, &r.node) {
                return Some(why);
            }
            if r.candidate_priority.is_none() && r.replication_quorum.is_none() {
                return Some("nothing to change".into());
            }
            r.candidate_priority
                .is_some_and(|p| p > 100)
                .then(|| "candidate priority above 100".into())
        }
        Call::SetMaintenance(pb::SetMaintenanceRequest {
            formation, node, ..
        })
        | Call::DropNode(pb::DropNodeRequest {
            formation, node, ..
        })
        | Call::ReinitNode(pb::ReinitNodeRequest { formation, node }) => names(formation, node),
    }
}

/// Why `who` may not send `call`, if it may not: (reason, the one code
/// the refusal must carry once the input itself is valid).
fn forbidden(call: &Call, who: &Who, registry: &Shared) -> Option<(String, Code)> {
    match who {
        Who::Anyone => None,
        Who::NoCertificate => Some((
            "a client without a certificate".into(),
            Code::Unauthenticated,
        )),
        Who::Operator => (!call.is_operator_rpc()).then(|| {
            (
                "an operator acting as a keeper".into(),
                Code::PermissionDenied,
            )
        }),
        Who::Keeper { formation, name } => match call {
            _ if call.is_operator_rpc() => Some((
                format!("the keeper of {formation}/{name} running an operator command"),
                Code::PermissionDenied,
            )),
            Call::RegisterNode(r) => {
                (resolve(&r.formation) != formation || &r.name != name).then(|| {
                    (
                        format!("the keeper of {formation}/{name} registering as another node"),
                        Code::PermissionDenied,
                    )
                })
            }
            Call::NodeActive(r) => {
                let owner = lock(registry).ids.get(&r.node_id).cloned();
                match owner {
                    Some((f, n)) if (&f, &n) != (formation, name) => Some((
                        format!(
                            "the keeper of {formation}/{name} heartbeating as {f}/{n} (node id {})",
                            r.node_id
                        ),
                        Code::PermissionDenied,
                    )),
                    _ => None,
                }
            }
            _ => None,
        },
    }
}

/// Codes a refusal may carry.
const REFUSALS: [Code; 8] = [
    Code::InvalidArgument,
    Code::NotFound,
    Code::FailedPrecondition,
    Code::PermissionDenied,
    Code::Unauthenticated,
    Code::OutOfRange,
    Code::AlreadyExists,
    Code::ResourceExhausted,
];

/// One sentence: something to read, on one line, of a readable length.
fn sentence_problem(message: &str) -> Option<String> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return Some("the message is empty".into());
    }
    if trimmed.contains('\n') {
        return Some("the message spans several lines".into());
    }
    if trimmed.chars().count() > MAX_REFUSAL_CHARS {
        return Some(format!(
            "the message is {} characters long (at most {MAX_REFUSAL_CHARS})",
            trimmed.chars().count()
        ));
    }
    if trimmed.split_whitespace().count() < 3 {
        return Some("the message is not a sentence".into());
    }
    None
}

/// Check one answer; `Err` says what is wrong with it.
fn check(
    call: &Call,
    who: &Who,
    result: &Result<Reply, tonic::Status>,
    registry: &Shared,
) -> std::result::Result<(), String> {
    let oversized = call.encoded_len() > MAX_MESSAGE_BYTES;
    let refuse = must_refuse(call, registry);
    let forbid = forbidden(call, who, registry);
    match result {
        Err(status) => {
            let code = status.code();
            if !REFUSALS.contains(&code) {
                return Err(format!(
                    "answered {code:?} (not a refusal code): {}",
                    status.message()
                ));
            }
            if let Some(problem) = sentence_problem(status.message()) {
                return Err(format!(
                    "{code:?}: {problem}: {:?}",
                    shorten_debug(status.message())
                ));
            }
            if oversized && code != Code::OutOfRange && code != Code::Unauthenticated {
                return Err(format!(
                    "a request of {} bytes (limit {MAX_MESSAGE_BYTES}) answered {code:?}, not OutOfRange: {}",
                    call.encoded_len(),
                    status.message()
                ));
            }
            if code == Code::OutOfRange && !oversized {
                return Err(format!(
                    "a request of {} bytes answered OutOfRange: {}",
                    call.encoded_len(),
                    status.message()
                ));
            }
            if let Some((why, expected)) = forbid.as_ref().filter(|_| !oversized) {
                let input_valid = refuse.is_none() && !oversized;
                let by_authentication = *expected == Code::Unauthenticated;
                if (input_valid || by_authentication) && code != *expected {
                    return Err(format!(
                        "{why} must be refused with {expected:?}, got {code:?}: {}",
                        status.message()
                    ));
                }
            }
            if matches!(who, Who::Anyone | Who::Operator)
                && matches!(code, Code::PermissionDenied | Code::Unauthenticated)
                && forbid.is_none()
            {
                return Err(format!(
                    "{who:?} may do this, but it was refused with {code:?}: {}",
                    status.message()
                ));
            }
            Ok(())
        }
        Ok(reply) => {
            if oversized {
                return Err(format!(
                    "a request of {} bytes (limit {MAX_MESSAGE_BYTES}) was accepted",
                    call.encoded_len()
                ));
            }
            if let Some(why) = refuse {
                return Err(format!("accepted, but must be refused: {why}: {reply:?}"));
            }
            if let Some((why, _)) = forbid {
                return Err(format!("accepted, but must be refused: {why}: {reply:?}"));
            }
            check_reply(call, reply)
        }
    }
}

/// A successful answer must be well-formed.
fn check_reply(call: &Call, reply: &Reply) -> std::result::Result<(), String> {
    let state_ok = |what: &str, v: i32| {
        valid_state(v)
            .then_some(())
            .ok_or_else(|| format!("the reply's {what} {v} is not a replication state"))
    };
    match (call, reply) {
        (Call::RegisterNode(r), Reply::Registered(a)) => {
            if a.node_id <= 0 || a.formation != resolve(&r.formation) {
                return Err(format!("registration answered {a:?}"));
            }
            state_ok("goal_state", a.goal_state)
        }
        (Call::NodeActive(_), Reply::Assigned(a)) => state_ok("goal_state", a.goal_state),
        (Call::GetFormationState(r), Reply::State(s)) => {
            if s.formation != resolve(&r.formation) {
                return Err(format!(
                    "show-state of {:?} answered {:?}",
                    r.formation, s.formation
                ));
            }
            for n in &s.nodes {
                state_ok("reported_state", n.reported_state)?;
                state_ok("goal_state", n.goal_state)?;
            }
            Ok(())
        }
        (Call::ListEvents(r), Reply::Events(e)) => {
            let limit = if r.count == 0 {
                20
            } else {
                r.count.min(10_000)
            };
            if e.events.len() > limit as usize {
                return Err(format!(
                    "{} events for a count of {}",
                    e.events.len(),
                    r.count
                ));
            }
            for event in &e.events {
                state_ok("goal_to", event.goal_to)?;
                if event.reason.trim().is_empty() {
                    return Err(format!("an event without a reason: {event:?}"));
                }
            }
            Ok(())
        }
        (_, Reply::Operation(o)) => sentence_problem(&o.message)
            .map_or(Ok(()), |p| Err(format!("the operation's message: {p}"))),
        (call, reply) => Err(format!("{} answered {reply:?}", call.rpc())),
    }
}

fn record(call: &Call, result: &Result<Reply, tonic::Status>, registry: &Shared) {
    if let (Call::RegisterNode(r), Ok(Reply::Registered(a))) = (call, result) {
        lock(registry).ids.insert(
            a.node_id,
            (resolve(&r.formation).to_string(), r.name.clone()),
        );
    }
    if let (Call::DropNode(r), Ok(Reply::Operation(_))) = (call, result) {
        if r.force {
            // The row is gone: its id is not drawn any more.
            lock(registry).ids.retain(|_, (f, n)| {
                (f.as_str(), n.as_str()) != (resolve(&r.formation), r.node.as_str())
            });
        }
    }
}

// ---- running many requests ------------------------------------------------------

#[derive(Default)]
struct Tally {
    /// (rpc, answer) → count; the answer is "OK" or a code.
    answers: BTreeMap<(&'static str, String), usize>,
    /// One message per (rpc, code), for the summary.
    samples: BTreeMap<(&'static str, String), String>,
    failures: Vec<String>,
    failed: usize,
}

impl Tally {
    fn table(&self) -> String {
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

struct Client {
    who: Who,
    client: security::Client,
}

/// Send `cases` generated requests from `clients` (chosen at random),
/// `WORKERS` at a time.
async fn fuzz(
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

// ---- the cluster --------------------------------------------------------------------

/// Run SQL on the monitor's own database.
async fn monitor_db(cluster: &Cluster) -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&cluster.monitor_database_url(), tokio_postgres::NoTls)
            .await
            .context("connecting to the monitor database")?;
    tokio::spawn(connection);
    Ok(client)
}

/// A cluster of no nodes (the monitor and its database) and formation
/// `other` beside `default`.
async fn monitor_only(security: Security) -> Result<Cluster> {
    let cluster = Cluster::start(ClusterOptions::nodes(0).security(security)).await?;
    monitor_db(&cluster)
        .await?
        .batch_execute("INSERT INTO formation (name) VALUES ('other')")
        .await
        .context("creating formation other")?;
    Ok(cluster)
}

fn monitor_addr(cluster: &Cluster) -> Result<SocketAddr> {
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
async fn check_monitor(
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

// ---- raw HTTP/2 ---------------------------------------------------------------------

/// A protobuf field: key and value.
fn field_bytes(number: u32, wire_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(number << 3 | u32::from(wire_type)), &mut out);
    out.extend_from_slice(payload);
    out
}

fn length_delimited(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    prost::encoding::encode_varint(bytes.len() as u64, &mut payload);
    payload.extend_from_slice(bytes);
    field_bytes(number, 2, &payload)
}

/// A body no generated client sends, and what it is.
fn raw_case(rng: &mut Rng, rpc: &str) -> (&'static str, RawRequest) {
    let valid = pb::GetFormationStateRequest {
        formation: "default".into(),
    }
    .encode_to_vec();
    let random: Vec<u8> = (0..rng.range(0, 300))
        .map(|_| rng.next_u64() as u8)
        .collect();
    match rng.below(14) {
        0 => (
            "random protobuf bytes",
            RawRequest::grpc(rpc, raw_grpc::frame(&random)),
        ),
        1 => (
            "a string field that is not UTF-8",
            RawRequest::grpc(
                rpc,
                raw_grpc::frame(&length_delimited(1, &[0xff, 0xfe, b'a', 0xc3])),
            ),
        ),
        2 => (
            "a field with a wire type its type does not have",
            RawRequest::grpc(rpc, raw_grpc::frame(&field_bytes(1, 5, &[1, 2, 3, 4]))),
        ),
        3 => (
            "a truncated varint",
            RawRequest::grpc(rpc, raw_grpc::frame(&field_bytes(4, 0, &[0xff, 0xff]))),
        ),
        4 => (
            "a length-delimited field longer than the message",
            RawRequest::grpc(rpc, raw_grpc::frame(&field_bytes(2, 2, &[0x7f, b'a']))),
        ),
        5 => (
            "unknown fields and a nested message full of junk",
            RawRequest::grpc(
                rpc,
                raw_grpc::frame(
                    &[length_delimited(99, &random), length_delimited(8, &random)].concat(),
                ),
            ),
        ),
        6 => ("a compressed flag without grpc-encoding", {
            let mut framed = raw_grpc::frame(&valid);
            framed[0] = 1;
            RawRequest::grpc(rpc, framed)
        }),
        7 => ("an unknown grpc-encoding", {
            let mut r = RawRequest::grpc(rpc, raw_grpc::frame(&valid));
            r.headers.push(("grpc-encoding".into(), "snappy-x".into()));
            r.body[0] = 1;
            r
        }),
        8 => ("a frame longer than its data", {
            let mut framed = raw_grpc::frame(&valid);
            framed[1..5].copy_from_slice(&((valid.len() + 50) as u32).to_be_bytes());
            RawRequest::grpc(rpc, framed)
        }),
        9 => ("a frame announcing 4 GiB", {
            let mut framed = raw_grpc::frame(&valid);
            framed[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
            RawRequest::grpc(rpc, framed)
        }),
        10 => ("no message at all", RawRequest::grpc(rpc, Vec::new())),
        11 => (
            "two messages to a unary method",
            RawRequest::grpc(
                rpc,
                [raw_grpc::frame(&valid), raw_grpc::frame(&valid)].concat(),
            ),
        ),
        12 => ("another content type", {
            let mut r = RawRequest::grpc(rpc, raw_grpc::frame(&valid));
            r.content_type = Some(
                rng.pick(&["text/plain", "application/json", "application/grpc-web"])
                    .to_string(),
            );
            r
        }),
        _ => ("an unknown method", {
            let mut r = RawRequest::grpc(rpc, raw_grpc::frame(&valid));
            r.path = rng
                .pick(&[
                    "/pgpilot.v1.Monitor/DropEverything",
                    "/other.Service/Call",
                    "/",
                    "/pgpilot.v1.Monitor/",
                ])
                .to_string();
            r
        }),
    }
}

/// What tonic itself answers, before any handler of the monitor runs, to a
/// request that is no well-formed gRPC message: gRPC's codes for it
/// (Internal for a body that does not parse, Unimplemented for a
/// compression it lacks), each with its reason.
const TRANSPORT_REFUSALS: [(Code, &str); 5] = [
    (Code::Internal, "failed to decode Protobuf message: "),
    (Code::Internal, "Unexpected EOF decoding stream."),
    (
        Code::Internal,
        "received message with compressed-flag but no grpc-encoding was specified",
    ),
    (Code::Internal, "Missing request message."),
    (Code::Unimplemented, "which isn't supported"),
];

/// Check a raw answer: a body that parses reaches a handler, which must
/// answer as to any request; one that does not is refused by tonic with
/// its reason; an unknown method is Unimplemented.
fn check_raw(what: &str, answer: &RawAnswer) -> std::result::Result<(), String> {
    let RawAnswer::Status { code, message, .. } = answer else {
        return Err(format!("answered {answer:?}"));
    };
    if what == "a frame announcing 4 GiB" && *code != Code::OutOfRange {
        return Err(format!("answered {code:?}, not OutOfRange: {message}"));
    }
    match code {
        Code::Ok => Ok(()),
        _ if REFUSALS.contains(code) => {
            sentence_problem(message).map_or(Ok(()), |p| Err(format!("{code:?}: {p}: {message:?}")))
        }
        _ if TRANSPORT_REFUSALS
            .iter()
            .any(|(c, m)| c == code && message.contains(m)) =>
        {
            Ok(())
        }
        Code::Unimplemented if what == "an unknown method" => Ok(()),
        _ => Err(format!("answered {code:?}: {message}")),
    }
}

async fn raw_fuzz(
    seed: u64,
    addr: SocketAddr,
    cases: usize,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut rng = Rng::new(seed ^ 0x7261_7721);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut samples: BTreeMap<(&str, String), String> = BTreeMap::new();
    let mut failures = Vec::new();
    for i in 0..cases {
        let rpc = rng.pick(&RPCS);
        let (what, request) = raw_case(&mut rng, rpc);
        let answer = raw_grpc::call(addr, &request, CALL_TIMEOUT).await;
        let verdict = match &answer {
            Ok(a) => check_raw(what, a),
            Err(e) => Err(format!("{e:#}")),
        };
        let key = match &answer {
            Ok(RawAnswer::Status { code, .. }) => format!("{code:?}"),
            Ok(RawAnswer::Http { status }) => format!("HTTP {status}"),
            Ok(RawAnswer::Reset(_)) => "reset".to_string(),
            Err(_) => "error".to_string(),
        };
        if let Ok(RawAnswer::Status { message, .. } | RawAnswer::Reset(message)) = &answer {
            samples
                .entry((what, key.clone()))
                .or_insert_with(|| message.clone());
        }
        *answers.entry(key).or_default() += 1;
        if let Err(problem) = verdict {
            failures.push(format!(
                "seed {seed} raw case {i}: {what} to {} ({} body bytes {:02x?}): {problem}",
                request.path,
                request.body.len(),
                &request.body[..request.body.len().min(24)]
            ));
        }
    }
    for ((what, code), message) in &samples {
        eprintln!("  raw: {what}: {code}: {message}");
    }
    // Bytes that are no HTTP/2 at all, and the HTTP/2 preface followed by junk.
    for _ in 0..cases / 10 {
        let mut bytes: Vec<u8> = (0..rng.range(1, 65_536))
            .map(|_| rng.next_u64() as u8)
            .collect();
        if rng.chance(0.5) {
            bytes.splice(0..0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".iter().copied());
        }
        let _ = raw_grpc::send_bytes(addr, &bytes, Duration::from_secs(2)).await;
    }
    (answers, failures)
}

// ---- requests that once went wrong ---------------------------------------------------

/// Fixed requests that each once got a wrong answer (a database error, an
/// empty reply for a formation that does not exist, a panic), run on a
/// fresh monitor before the random ones.
async fn regressions(client: &security::Client) -> Vec<String> {
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
        Call::NodeActive(pb::NodeActiveRequest {
            node_id: id,
            reported_state,
            pg_running: false,
            timeline: 1,
            timings: Some(timings),
            pg_start_failures,
            ..Default::default()
        })
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
async fn racing_registrations(client: &security::Client, rounds: u32) -> Vec<String> {
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
    let generator = Arc::new(Generator::new(&mut Rng::new(seed)));
    let tally = fuzz(seed, cases, generator, clients, registry.clone()).await;

    let mut extra = Vec::new();
    let ids = lock(&registry).ids.clone();
    let formations: BTreeSet<&String> = ids.values().map(|(f, _)| f).collect();
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
