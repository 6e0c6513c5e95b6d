//! The request generator: valid requests with some fields replaced by wild
//! values, from callers of every kind.

use pgpilot_proto::pb;
use pgpilot_sim::rng::Rng;

use crate::calls::{lock, Call, Shared};
use crate::operator;
use crate::rules::resolve;
use crate::{KEEPER_NAME, MAX_MESSAGE_BYTES, MAX_TIMING_MS, NODE_TIMEOUT_MS, POOL, UNREGISTERED};

/// Who sends a request (the mutual TLS run has several; plaintext one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Who {
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

pub(crate) struct Generator {
    /// Valid node names per formation (the first is [`KEEPER_NAME`]).
    pub(crate) pool: Vec<String>,
}

impl Generator {
    pub(crate) fn new(rng: &mut Rng) -> Generator {
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
    pub(crate) fn address(formation: &str, name: &str) -> (String, u32) {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in resolve(formation).bytes().chain([0]).chain(name.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (
            format!("127.200.{}.{}", (h >> 8) % 256, h % 254 + 1),
            (10_000 + (h >> 16) % 50_000) as u32,
        )
    }

    pub(crate) fn wild_string(rng: &mut Rng) -> String {
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

    pub(crate) fn wild_u32(rng: &mut Rng) -> u32 {
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

    pub(crate) fn wild_u64(rng: &mut Rng) -> u64 {
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

    /// An apply delay: mostly none, some within PostgreSQL's limit, some
    /// past it.
    pub(crate) fn apply_delay(rng: &mut Rng) -> u64 {
        if rng.chance(0.7) {
            return 0;
        }
        let max = pgpilot_proto::delay::MAX_APPLY_DELAY_MS;
        let random = rng.next_u64();
        *rng.pick(&[1, 3_600_000, max, max + 1, random])
    }

    pub(crate) fn wild_state(rng: &mut Rng) -> i32 {
        let random = rng.next_u64() as i32;
        *rng.pick(&[0, 22, 23, 100, -1, i32::MIN, i32::MAX, random])
    }

    pub(crate) fn wild_id(rng: &mut Rng) -> i64 {
        let negative = -(rng.range(1, 1 << 40) as i64);
        // Far beyond any id this run registers.
        let unknown = 1_000_000_000 + rng.below(1 << 40) as i64;
        *rng.pick(&[0, -1, negative, i64::MIN, i64::MAX, unknown])
    }

    pub(crate) fn wild_timings(rng: &mut Rng) -> Option<pb::KeeperTimings> {
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

    pub(crate) fn formation(&self, rng: &mut Rng, wild: f64) -> String {
        if rng.chance(wild) {
            if rng.chance(0.3) {
                return "nosuch".to_string();
            }
            return Generator::wild_string(rng);
        }
        rng.pick(&["default", "other", ""]).to_string()
    }

    pub(crate) fn name(&self, rng: &mut Rng, wild: f64) -> String {
        if rng.chance(wild) {
            return Generator::wild_string(rng);
        }
        rng.pick(&self.pool).to_string()
    }

    /// A node id the monitor gave out (any formation), else a wild one.
    pub(crate) fn node_id(&self, rng: &mut Rng, wild: f64, registry: &Shared) -> i64 {
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
    pub(crate) fn call(&self, rng: &mut Rng, who: &Who, registry: &Shared) -> Call {
        let wild = *rng.pick(&[0.0, 0.0, 0.1, 0.3, 0.6, 1.0]);
        let w = |rng: &mut Rng| rng.chance(wild);
        let mut call = match rng.below(18) {
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
                        Generator::address(&formation, rng.pick(&self.pool).as_str()).0
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
                    apply_delay_ms: Generator::apply_delay(rng),
                    timings: if w(rng) {
                        Generator::wild_timings(rng)
                    } else {
                        Some(plausible_timings(rng))
                    },
                    formation,
                    name,
                })
            }
            1 => Call::NodeActive(Box::new(pb::NodeActiveRequest {
                slots_reported: rng.chance(0.3),
                slots: (0..if w(rng) { rng.below(80) } else { rng.below(3) })
                    .map(|i| pb::SlotPosition {
                        name: if w(rng) {
                            Generator::wild_string(rng)
                        } else {
                            format!("slot{i}")
                        },
                        kind: ["logical", "physical", "temporary"][rng.below(3)].to_string(),
                        restart_lsn: Generator::wild_u64(rng),
                        confirmed_flush_lsn: rng.range(0, u64::from(u32::MAX)),
                        catalog_xmin: rng.range(0, 1000),
                        active: rng.chance(0.5),
                        state: vec![
                            0;
                            if w(rng) {
                                rng.below(5000)
                            } else {
                                rng.below(200)
                            }
                        ],
                        problem: if w(rng) {
                            Generator::wild_string(rng)
                        } else {
                            String::new()
                        },
                    })
                    .collect(),
                stopping: rng.chance(0.2),
                wakes: rng.chance(0.5),
                promotion_refused: rng.chance(0.1),
                parameters_applied: rng.range(0, 3),
                restart_done: if w(rng) {
                    Generator::wild_u64(rng)
                } else {
                    rng.range(0, 3)
                },
                pending_restart: if w(rng) {
                    (0..rng.below(600))
                        .map(|_| Generator::wild_string(rng))
                        .collect()
                } else {
                    (0..rng.below(3))
                        .map(|k| ["shared_buffers", "max_connections", "port"][k].to_string())
                        .collect()
                },
                clone_from: if w(rng) {
                    Generator::wild_string(rng)
                } else {
                    ["", "primary", "standby", "node1"][rng.below(4)].to_string()
                },
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
                acting_toward: if w(rng) {
                    Some(Generator::wild_state(rng))
                } else if rng.chance(0.5) {
                    Some(rng.range(1, 21) as i32)
                } else {
                    None
                },
                fence_required_held: if w(rng) {
                    Some(Generator::wild_u32(rng))
                } else if rng.chance(0.5) {
                    Some(rng.below(3) as u32)
                } else {
                    None
                },
                keeper_boot_id: match rng.below(4) {
                    0 => String::new(),
                    1 if w(rng) => Generator::wild_string(rng),
                    _ => "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".to_string(),
                },
                sent_at_ns: if w(rng) {
                    Generator::wild_u64(rng)
                } else {
                    rng.range(0, 1 << 40)
                },
                notes: Vec::new(),
                work: match rng.below(6) {
                    0 if w(rng) => Some(pb::WorkProgress {
                        work: Generator::wild_string(rng),
                        upstream: Generator::wild_string(rng),
                        done_bytes: Generator::wild_u64(rng),
                        total_bytes: Generator::wild_u64(rng),
                        rate_bytes_per_s: Generator::wild_u64(rng),
                        elapsed_ms: Generator::wild_u64(rng),
                        idle_ms: Generator::wild_u64(rng),
                    }),
                    1 => Some(pb::WorkProgress {
                        work: "clone".into(),
                        upstream: "127.0.0.1:5432".into(),
                        done_bytes: rng.range(0, 1 << 30),
                        total_bytes: 1 << 30,
                        rate_bytes_per_s: rng.range(0, 1 << 27),
                        elapsed_ms: rng.range(0, 1 << 20),
                        idle_ms: rng.range(0, 1 << 16),
                    }),
                    _ => None,
                },
            })),
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
                apply_delay_ms: rng.chance(0.3).then(|| Generator::apply_delay(rng)),
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
            9 => Call::ReinitNode(pb::ReinitNodeRequest {
                formation: self.formation(rng, wild),
                node: self.name(rng, wild),
            }),
            10 => Call::RestartNode(pb::RestartNodeRequest {
                formation: self.formation(rng, wild),
                node: self.name(rng, wild),
            }),
            11 => Call::SetPaused(pb::SetPausedRequest {
                formation: self.formation(rng, wild),
                paused: rng.chance(0.5),
            }),
            n => operator::call(self, rng, n - 12, wild, registry),
        };
        if rng.chance(0.005) {
            oversize(&mut call, rng);
        }
        call
    }
}

pub(crate) fn plausible_timings(rng: &mut Rng) -> pb::KeeperTimings {
    let heartbeat = rng.range(50, 500);
    pb::KeeperTimings {
        heartbeat_interval_ms: heartbeat,
        fence_timeout_ms: rng.range(heartbeat * 2, NODE_TIMEOUT_MS),
        wal_sender_timeout_ms: rng.range(1000, 5000),
    }
}

/// Make `call` larger than the monitor's `max_message_bytes`.
pub(crate) fn oversize(call: &mut Call, rng: &mut Rng) {
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
        Call::SetPaused(r) => r.formation = big,
        Call::RestartNode(r) => r.node = big,
        Call::SetParameter(r) => {
            if rng.chance(0.5) {
                r.value = big
            } else {
                r.name = big
            }
        }
        Call::ListParameters(r) => r.formation = big,
        Call::ReloadFormation(r) => r.formation = big,
        // Its name stays claimed: no other request draws it.
        Call::CreateFormation(r) => r.formation = big,
        Call::DropFormation(r) => r.formation = big,
        // No field to fill.
        Call::ListFormations(_) => {}
    }
}
