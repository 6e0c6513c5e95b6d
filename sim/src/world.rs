//! The simulated world: nodes (a keeper and a PostgreSQL each), the
//! monitor, the network between them, a client, the faults, and the
//! invariant checks. Everything happens on one virtual clock, in the order
//! of one event queue, with every random choice drawn from one seeded
//! generator: the same seed replays the same run.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use pgpilot_keeper::agent::{fence_armed, fence_step, FenceStep, FENCE_REQUIRED_UNTIL_ANSWERED};
use pgpilot_keeper::config as keeper_config;
use pgpilot_keeper::plan::{self, Action};
use pgpilot_monitor::config as monitor_config;
use pgpilot_monitor::fsm::{Health, KeeperTimings, Report};
use pgpilot_monitor::store::MachineSettings;
use pgpilot_proto::ReplicationState as S;

use crate::monitor::{Heartbeat, Monitor, MonitorFlaw, Reply};
use crate::rng::Rng;
use crate::Ms;

/// How often WAL moves from upstreams to standbys, and commits are acknowledged.
const PUMP_MS: Ms = 20;
/// The keeper's fence task period.
const FENCE_TICK_MS: Ms = 100;
const LSN_BASE: u64 = 0x300_0000;
/// WAL bytes per client write.
const RECORD_BYTES: u64 = 128;
/// A client gives up on a commit after this long.
const CLIENT_TIMEOUT_MS: Ms = 5_000;
/// The group must form within this long of the start.
const FORM_DEADLINE_MS: Ms = 30_000;
/// After the faults stop, the group must settle within this long.
const LIVENESS_MS: Ms = 60_000;
/// An election still stuck this long after the faults stopped is forced,
/// as an operator would.
const STUCK_FORCE_MS: Ms = 15_000;
/// Trace lines kept for a failure report (all of them with a full trace).
const TRACE_TAIL: usize = 80;

/// A deliberately broken keeper, to show the invariant checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeeperFlaw {
    #[default]
    None,
    /// The fence task never stops PostgreSQL.
    NoFence,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub monitor_flaw: MonitorFlaw,
    pub keeper_flaw: KeeperFlaw,
    /// Keep every trace line, not only the last ones.
    pub full_trace: bool,
    /// Virtual length of the fault phase (0: the default).
    pub fault_ms: Ms,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub at: Ms,
    /// 1–5 as in DESIGN §5; 0 for "the monitor assigned a goal the keeper has no edge to".
    pub invariant: u8,
    pub what: String,
    /// The open bug it matches, when it does.
    pub known: Option<KnownBug>,
}

/// Open bugs the simulation found and that are not fixed yet (README,
/// "Limitations"). A violation is matched to one only by its precise
/// signature; anything else is a new finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KnownBug {
    /// A commit that no member of the old primary's fence set held (the set
    /// shrank past the standbys that confirmed it, or a new primary's
    /// standbys had not caught up with it yet) is lost when that primary
    /// is replaced.
    FenceSetShrank,
    /// A goal was set from a reported state the keeper had already left
    /// (its goal changed twice between two of its heartbeats, or an
    /// operator command acted on a node still moving): the keeper has no
    /// edge from where it is.
    GoalFromStaleView,
    /// A primary whose keeper is dead cannot fence: cut off from the
    /// monitor and its standbys it keeps its role while a standby is
    /// promoted after the fence deadline.
    KeeperDeadNoFence,
    /// The documented wait of a fast-forward whose source standby stopped
    /// (a standby of an unfinished election cannot restart: no primary is
    /// named to it).
    FastForwardWaits,
    /// A standby that received WAL the new primary never had cannot follow
    /// it, and nothing rewinds or re-clones it.
    DivergedStandby,
}

impl KnownBug {
    pub fn describe(self) -> &'static str {
        match self {
            KnownBug::FenceSetShrank => {
                "open bug: a commit no member of the old primary's fence set had yet is lost"
            }
            KnownBug::GoalFromStaleView => {
                "open bug: a goal set from a reported state the keeper had already left has no keeper edge"
            }
            KnownBug::KeeperDeadNoFence => {
                "open bug: a primary whose keeper is dead cannot fence itself"
            }
            KnownBug::FastForwardWaits => {
                "documented limitation: a fast-forward whose source stopped waits"
            }
            KnownBug::DivergedStandby => {
                "open bug: a standby whose WAL diverged from the new primary never rejoins"
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub writes: u64,
    pub acked: u64,
    pub acked_sync: u64,
    pub promotions: u64,
    pub fences: u64,
    pub faults: u64,
    pub operator_ok: u64,
    pub operator_refused: u64,
    pub events: u64,
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub seed: u64,
    pub setup: String,
    pub violation: Option<Violation>,
    pub trace: Vec<String>,
    /// The state table when the run ended.
    pub state: String,
    pub stats: Stats,
    pub virtual_ms: Ms,
    /// A digest of every trace line: equal digests, equal runs.
    pub digest: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Monitor,
    Client,
    Node(usize),
}

/// The timings every part runs with: the shipped defaults.
#[derive(Debug, Clone, Copy)]
struct Timings {
    heartbeat: Ms,
    fence_timeout: Ms,
    wal_receiver_timeout: Ms,
    wal_sender_timeout: Ms,
    rpc_timeout: Ms,
    health_interval: Ms,
    health_timeout: Ms,
    keeper: KeeperTimings,
    machine: MachineSettings,
}

/// What a restarted keeper's fence task requires before the monitor answers.
fn fence_required_after_restart() -> u32 {
    FENCE_REQUIRED_UNTIL_ANSWERED
}

fn ms(d: Duration) -> Ms {
    d.as_millis() as Ms
}

impl Timings {
    fn defaults() -> Timings {
        let heartbeat = keeper_config::DEFAULT_HEARTBEAT_INTERVAL;
        let fence_timeout = keeper_config::DEFAULT_FENCE_TIMEOUT;
        let wal_sender_timeout = keeper_config::DEFAULT_WAL_SENDER_TIMEOUT;
        // The keeper's RPC timeout (agent.rs `rpc_timeout`).
        let rpc = heartbeat
            .max(Duration::from_millis(500))
            .min(fence_timeout / 2);
        Timings {
            heartbeat: ms(heartbeat),
            fence_timeout: ms(fence_timeout),
            wal_receiver_timeout: ms(keeper_config::DEFAULT_WAL_RECEIVER_TIMEOUT),
            wal_sender_timeout: ms(wal_sender_timeout),
            rpc_timeout: ms(rpc),
            health_interval: ms(monitor_config::DEFAULT_HEALTH_CHECK_INTERVAL),
            health_timeout: ms(monitor_config::DEFAULT_HEALTH_CHECK_TIMEOUT),
            keeper: KeeperTimings {
                heartbeat_interval: heartbeat,
                fence_timeout,
                wal_sender_timeout,
            },
            machine: MachineSettings {
                node_timeout: monitor_config::DEFAULT_NODE_TIMEOUT,
                fence_margin: monitor_config::DEFAULT_FENCE_MARGIN,
                postgres_restart_timeout: monitor_config::DEFAULT_POSTGRES_RESTART_TIMEOUT,
            },
        }
    }
}

/// A walsender on an upstream: the standby it serves.
#[derive(Debug, Clone, Copy)]
struct Sender {
    last_reply: Ms,
    flushed: usize,
}

/// Synchronous replication as PostgreSQL applies it: `ANY n (names)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SyncRep {
    n: u32,
    names: Vec<String>,
}

/// `synchronous_standby_names` as PostgreSQL shows it for `sync` (the
/// monitor's format).
fn sync_text(sync: Option<&SyncRep>) -> String {
    sync.map_or_else(String::new, |s| {
        format!("ANY {} ({})", s.n, s.names.join(", "))
    })
}

/// Parse `synchronous_standby_names` as the monitor writes it.
fn parse_sync(text: &str) -> Option<SyncRep> {
    let rest = text.trim().strip_prefix("ANY ")?;
    let (n, list) = rest.split_once(' ')?;
    let names = list
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    Some(SyncRep {
        n: n.parse().ok()?,
        names,
    })
}

/// One PostgreSQL server.
#[derive(Debug, Clone, Default)]
struct Pg {
    has_data: bool,
    running: bool,
    /// standby.signal present when it last started (a standby).
    in_recovery: bool,
    timeline: u32,
    /// Client write ids, in WAL order; always increasing.
    history: Vec<u64>,
    /// Bumped whenever history is cut or replaced.
    generation: u64,
    /// Bumped at every start and stop.
    incarnation: u64,
    /// pgpilot.conf as written: the node to follow, the sync setting.
    conf_upstream: Option<usize>,
    conf_sync: Option<SyncRep>,
    /// What the running server applies.
    upstream: Option<usize>,
    sync: Option<SyncRep>,
    receiving: bool,
    last_contact: Ms,
    senders: BTreeMap<usize, Sender>,
    /// Its keeper was killed while it ran as a primary, and it has not
    /// stopped since: nothing fenced it meanwhile.
    outlived_keeper: bool,
    /// Extra time the next start takes (crash recovery after a crash).
    recovery_ms: Ms,
    /// A start is under way: the postmaster is alive but does not accept
    /// connections yet (the fence stops it all the same).
    starting: bool,
    /// Starts that will fail before one succeeds (the postmaster exits).
    failing_starts: u32,
}

impl Pg {
    fn lsn(&self) -> u64 {
        LSN_BASE + RECORD_BYTES * self.history.len() as u64
    }
}

/// `a` is a prefix of `b`. A write id appears in one place of one history
/// and is copied only with everything before it, so the last ids decide.
fn is_prefix(a: &[u64], b: &[u64]) -> bool {
    a.len() <= b.len() && (a.is_empty() || a[a.len() - 1] == b[a.len() - 1])
}

/// Length of the longest common prefix.
fn common_prefix(a: &[u64], b: &[u64]) -> usize {
    let (mut lo, mut hi) = (0, a.len().min(b.len()));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if a[mid - 1] == b[mid - 1] {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

#[derive(Debug, Clone)]
enum Phase {
    Dead,
    Sleeping,
    Awaiting {
        step: u64,
        sent: Ms,
    },
    Acting {
        actions: Vec<Action>,
        next: usize,
        transition: Option<(S, S)>,
        config_changed: bool,
        seq: u64,
    },
}

/// One keeper: its state file, its lease (shared with the fence task), the
/// latest instructions, and where its loop is.
#[derive(Debug, Clone)]
struct Keeper {
    alive: bool,
    incarnation: u64,
    node_id: i64,
    current: S,
    goal: S,
    last_ok_sent: Ms,
    lease_current: S,
    fence_set: Vec<String>,
    required: u32,
    fenced: bool,
    confirmed: bool,
    primary: Option<usize>,
    sync_names: String,
    phase: Phase,
    step: u64,
    seq: u64,
    last_error: Option<String>,
    /// Failed starts of PostgreSQL in a row (agent.rs `start_failures`).
    start_failures: u32,
}

#[derive(Debug, Clone)]
struct Pending {
    node: usize,
    index: usize,
    id: u64,
    pg_incarnation: u64,
    at: Ms,
}

#[derive(Debug, Clone)]
enum Ev {
    Register(usize),
    Step(usize, u64),
    HbArrive {
        node: usize,
        inc: u64,
        step: u64,
        hb: Heartbeat,
    },
    ReplyArrive {
        node: usize,
        inc: u64,
        step: u64,
        reply: Reply,
    },
    HbTimeout(usize, u64, u64),
    /// A keepalive is due while the keeper acts (node, incarnation, plan seq).
    Keepalive(usize, u64, u64),
    KeepaliveArrive {
        node: usize,
        inc: u64,
        seq: u64,
        sent: Ms,
        hb: Heartbeat,
    },
    KeepaliveReply {
        node: usize,
        inc: u64,
        seq: u64,
        sent: Ms,
        reply: Reply,
    },
    ActionDone(usize, u64, u64),
    FenceTick(usize, u64),
    Pump,
    HealthTick,
    HealthResult(i64, Health),
    HealthRoundEnd(Ms),
    ClientWrite,
    Fault,
    Heal(u64),
    EndLoss,
    EndSlow,
    KeeperRestart(usize),
    FaultsOver,
    Check,
}

struct Scheduled {
    at: Ms,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // A max-heap: the earliest first.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The run's shape, drawn from the seed.
#[derive(Debug, Clone)]
struct Setup {
    nodes: usize,
    priorities: Vec<u32>,
    quorum: Vec<bool>,
    number_sync_standbys: u32,
    fault_ms: Ms,
    fault_gap: (Ms, Ms),
}

impl Setup {
    fn draw(rng: &mut Rng, fault_ms: Ms) -> Setup {
        let nodes = if rng.chance(0.5) { 2 } else { 3 };
        let mut priorities: Vec<u32> = (0..nodes)
            .map(|_| *rng.pick(&[0, 10, 50, 50, 100]))
            .collect();
        if priorities[1..].iter().all(|p| *p == 0) {
            let i = 1 + rng.below(nodes - 1);
            priorities[i] = 50;
        }
        let quorum: Vec<bool> = (0..nodes).map(|_| !rng.chance(0.2)).collect();
        let number_sync_standbys = if nodes == 3 && rng.chance(0.5) { 1 } else { 0 };
        let fault_gap = *rng.pick(&[(200, 1500), (500, 3000), (1000, 5000)]);
        Setup {
            nodes,
            priorities,
            quorum,
            number_sync_standbys,
            fault_ms: if fault_ms == 0 { 20_000 } else { fault_ms },
            fault_gap,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} nodes, priorities {:?}, replication_quorum {:?}, number_sync_standbys {}, faults for {} s every {}–{} ms",
            self.nodes,
            self.priorities,
            self.quorum,
            self.number_sync_standbys,
            self.fault_ms / 1000,
            self.fault_gap.0,
            self.fault_gap.1
        )
    }
}

pub struct World {
    opts: Options,
    rng: Rng,
    now: Ms,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    t: Timings,
    setup: Setup,
    monitor: Monitor,
    pgs: Vec<Pg>,
    keepers: Vec<Keeper>,
    /// Active partitions: id → cut links.
    partitions: BTreeMap<u64, Vec<(Peer, Peer)>>,
    next_partition: u64,
    loss: f64,
    slow: bool,
    faults_on: bool,
    faults_over_at: Option<Ms>,
    settled: bool,
    next_write: u64,
    pending: Vec<Pending>,
    /// Ids acknowledged under synchronous replication, in order.
    acked_sync: Vec<u64>,
    /// For each of them: the primary that acknowledged it and the standbys
    /// whose confirmation released it.
    acked_by: Vec<(usize, Vec<usize>)>,
    /// For each node: (history generation, acked_sync checked so far).
    checked: Vec<(u64, usize)>,
    data_loss_allowed: bool,
    forced_after_faults: bool,
    /// Whether the group's primary, when last seen, ran with synchronous
    /// replication.
    primary_had_sync: bool,
    /// The group's primary as last seen, and the one before it.
    current_primary: Option<usize>,
    previous_primary: Option<usize>,
    /// Which open bug a violation matches, if any.
    known: Option<KnownBug>,
    /// The nodes whose goal an operator command set last.
    operator_goal: Vec<bool>,
    /// The state the monitor had for each node when it last set its goal.
    goal_set_seeing: Vec<S>,
    violation: Option<Violation>,
    trace: VecDeque<String>,
    digest: u64,
    stats: Stats,
}

/// Run one seed.
pub fn run(seed: u64, opts: Options) -> RunReport {
    let mut w = World::new(seed, opts);
    w.run();
    let state = w.state_table();
    RunReport {
        seed,
        setup: w.setup.describe(),
        violation: w.violation.clone().map(|v| Violation {
            known: w.known,
            ..v
        }),
        trace: w.trace.iter().cloned().collect(),
        state,
        stats: w.stats.clone(),
        virtual_ms: w.now,
        digest: w.digest,
    }
}

fn name(i: usize) -> String {
    format!("node{}", i + 1)
}

impl World {
    fn new(seed: u64, opts: Options) -> World {
        let mut rng = Rng::new(seed);
        let setup = Setup::draw(&mut rng, opts.fault_ms);
        let t = Timings::defaults();
        let n = setup.nodes;
        let keeper = Keeper {
            alive: true,
            incarnation: 0,
            node_id: 0,
            current: S::Init,
            goal: S::Init,
            last_ok_sent: 0,
            lease_current: S::Init,
            fence_set: Vec::new(),
            required: 0,
            fenced: false,
            confirmed: false,
            primary: None,
            sync_names: String::new(),
            phase: Phase::Sleeping,
            step: 0,
            seq: 0,
            last_error: None,
            start_failures: 0,
        };
        let monitor = Monitor::new(t.machine, opts.monitor_flaw);
        World {
            opts,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            t,
            monitor,
            pgs: vec![Pg::default(); n],
            keepers: vec![keeper; n],
            partitions: BTreeMap::new(),
            next_partition: 0,
            loss: 0.0,
            slow: false,
            faults_on: false,
            faults_over_at: None,
            settled: false,
            next_write: 1,
            pending: Vec::new(),
            acked_sync: Vec::new(),
            acked_by: Vec::new(),
            checked: vec![(u64::MAX, 0); n],
            data_loss_allowed: false,
            forced_after_faults: false,
            primary_had_sync: false,
            current_primary: None,
            previous_primary: None,
            known: None,
            operator_goal: vec![false; n],
            goal_set_seeing: vec![S::Init; n],
            violation: None,
            trace: VecDeque::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            stats: Stats::default(),
            setup,
        }
    }

    fn at(&mut self, at: Ms, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn after(&mut self, delay: Ms, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    fn log(&mut self, line: String) {
        let line = format!("{:>8.3}s  {line}", self.now as f64 / 1000.0);
        for b in line.bytes() {
            self.digest = (self.digest ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        self.trace.push_back(line);
        if !self.opts.full_trace && self.trace.len() > TRACE_TAIL {
            self.trace.pop_front();
        }
    }

    fn fail(&mut self, invariant: u8, what: String) {
        if self.violation.is_none() {
            self.log(format!("VIOLATION of invariant {invariant}: {what}"));
            self.violation = Some(Violation {
                at: self.now,
                invariant,
                what,
                known: None,
            });
        }
    }

    fn link(&self, a: Peer, b: Peer) -> bool {
        !self.partitions.values().any(|cut| {
            cut.iter()
                .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
        })
    }

    fn run(&mut self) {
        for i in 0..self.setup.nodes {
            self.at(300 * i as Ms, Ev::Register(i));
        }
        self.at(PUMP_MS, Ev::Pump);
        self.at(self.t.health_interval, Ev::HealthTick);
        self.at(1000, Ev::ClientWrite);
        self.at(500, Ev::Check);
        while let Some(s) = self.queue.pop() {
            if self.violation.is_some() {
                break;
            }
            self.now = s.at;
            self.stats.events += 1;
            self.handle(s.ev);
            if self.violation.is_none() {
                self.check_write_safety();
            }
            if self.settled {
                break;
            }
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Register(i) => self.register(i),
            Ev::Step(i, inc) => {
                if self.keepers[i].alive && self.keepers[i].incarnation == inc {
                    self.keeper_step(i);
                }
            }
            Ev::HbArrive {
                node,
                inc,
                step,
                hb,
            } => self.hb_arrive(node, inc, step, hb),
            Ev::ReplyArrive {
                node,
                inc,
                step,
                reply,
            } => self.reply_arrive(node, inc, step, reply),
            Ev::HbTimeout(i, inc, step) => {
                let k = &self.keepers[i];
                if k.alive
                    && k.incarnation == inc
                    && matches!(k.phase, Phase::Awaiting { step: s, .. } if s == step)
                {
                    self.heartbeat_failed(i);
                }
            }
            Ev::Keepalive(i, inc, seq) => self.keepalive(i, inc, seq),
            Ev::KeepaliveArrive {
                node,
                inc,
                seq,
                sent,
                hb,
            } => self.keepalive_arrive(node, inc, seq, sent, hb),
            Ev::KeepaliveReply {
                node,
                inc,
                seq,
                sent,
                reply,
            } => self.keepalive_reply(node, inc, seq, sent, reply),
            Ev::ActionDone(i, inc, seq) => {
                let k = &self.keepers[i];
                if k.alive
                    && k.incarnation == inc
                    && matches!(k.phase, Phase::Acting { seq: s, .. } if s == seq)
                {
                    self.action_done(i);
                }
            }
            Ev::FenceTick(i, inc) => {
                if self.keepers[i].alive && self.keepers[i].incarnation == inc {
                    self.fence_tick(i);
                    self.after(FENCE_TICK_MS, Ev::FenceTick(i, inc));
                }
            }
            Ev::Pump => {
                self.pump();
                self.after(PUMP_MS, Ev::Pump);
            }
            Ev::HealthTick => self.health_tick(),
            Ev::HealthResult(id, h) => self.monitor_op(|m, now| m.set_health(id, h, now)),
            Ev::HealthRoundEnd(started) => {
                self.monitor_op(|m, now| m.evaluate_all(now));
                let next = (started + self.t.health_interval).max(self.now);
                self.at(next, Ev::HealthTick);
            }
            Ev::ClientWrite => {
                self.client_write();
                let gap = self.rng.range(60, 140);
                self.after(gap, Ev::ClientWrite);
            }
            Ev::Fault => {
                if self.faults_on {
                    self.fault();
                    let (lo, hi) = self.setup.fault_gap;
                    let gap = self.rng.range(lo, hi);
                    self.after(gap, Ev::Fault);
                }
            }
            Ev::Heal(id) => {
                if self.partitions.remove(&id).is_some() {
                    self.log(format!("network: partition {id} healed"));
                }
            }
            Ev::EndLoss => {
                self.loss = 0.0;
            }
            Ev::EndSlow => {
                self.slow = false;
            }
            Ev::KeeperRestart(i) => self.keeper_restart(i),
            Ev::FaultsOver => self.faults_over(),
            Ev::Check => {
                self.periodic_check();
                self.after(250, Ev::Check);
            }
        }
    }

    // ------------------------------------------------------------------
    // The monitor, with the checks every operation is subject to
    // ------------------------------------------------------------------

    /// Run one monitor operation; check that every goal change got an event
    /// with a reason (invariant 5) and that no priority-0 node is elected
    /// (invariant 3).
    /// An operator command: a monitor operation whose goal changes are
    /// remembered as the operator's.
    fn operator_op<T>(&mut self, op: impl FnOnce(&mut Monitor, Ms) -> T) -> T {
        let before: Vec<S> = self.monitor.nodes.iter().map(|n| n.goal).collect();
        let r = self.monitor_op(op);
        for (i, old) in before.into_iter().enumerate() {
            if self.monitor.nodes[i].goal != old {
                self.operator_goal[i] = true;
            }
        }
        r
    }

    fn monitor_op<T>(&mut self, op: impl FnOnce(&mut Monitor, Ms) -> T) -> T {
        let before: Vec<(i64, S)> = self.monitor.nodes.iter().map(|n| (n.id, n.goal)).collect();
        let first_event = self.monitor.events.len();
        let result = op(&mut self.monitor, self.now);
        let events = self.monitor.events[first_event..].to_vec();
        for e in &events {
            if e.from != e.to {
                if let Some(i) = self.monitor.nodes.iter().position(|n| n.name == e.node) {
                    self.goal_set_seeing[i] = e.reported;
                }
            }
            let line = if e.from == e.to {
                format!("monitor: event on {}: {}", e.node, e.reason)
            } else {
                format!(
                    "monitor: {} goal {} -> {} (reported {}): {}",
                    e.node, e.from, e.to, e.reported, e.reason
                )
            };
            self.log(line);
        }
        for (id, old) in before {
            let Some(i) = self.monitor.index(id) else {
                continue;
            };
            if self.monitor.nodes[i].goal != old {
                self.operator_goal[i] = false;
            }
            let node = &self.monitor.nodes[i];
            let new = node.goal;
            if new != old {
                let mine: Vec<_> = events
                    .iter()
                    .filter(|e| e.node == node.name && e.from != e.to)
                    .collect();
                let chained = !mine.is_empty()
                    && mine[0].from == old
                    && mine[mine.len() - 1].to == new
                    && mine.windows(2).all(|w| w[0].to == w[1].from)
                    && mine.iter().all(|e| !e.reason.trim().is_empty());
                if !chained {
                    let what = format!(
                        "{}'s goal changed {old} -> {new} without an event with a reason for each step",
                        node.name
                    );
                    self.fail(5, what);
                }
            }
        }
        for e in &events {
            if matches!(e.to, S::FastForward | S::PreparePromotion) {
                if let Some(n) = self.monitor.nodes.iter().find(|n| n.name == e.node) {
                    if n.candidate_priority == 0 {
                        let what = format!(
                            "{} has candidate priority 0 and was elected ({} -> {})",
                            e.node, e.from, e.to
                        );
                        self.fail(3, what);
                    }
                }
            }
        }
        result
    }

    fn register(&mut self, i: usize) {
        let prio = self.setup.priorities[i];
        let quorum = self.setup.quorum[i];
        let timings = self.t.keeper;
        let id = self.monitor_op(|m, now| m.register(&name(i), prio, quorum, timings, now));
        let goal = self.monitor.nodes[self.monitor.index(id).expect("registered")].goal;
        let k = &mut self.keepers[i];
        k.node_id = id;
        k.goal = goal;
        k.last_ok_sent = self.now;
        let inc = k.incarnation;
        self.log(format!(
            "{}: registered as node id {id}, goal {goal}",
            name(i)
        ));
        self.after(0, Ev::Step(i, inc));
        self.after(FENCE_TICK_MS, Ev::FenceTick(i, inc));
    }

    // ------------------------------------------------------------------
    // Keepers
    // ------------------------------------------------------------------

    fn observe(&self, i: usize) -> (bool, u64, bool, Vec<String>) {
        let pg = &self.pgs[i];
        if !pg.running {
            return (false, 0, false, Vec::new());
        }
        let streaming = pg
            .senders
            .keys()
            .map(|&s| pgpilot_proto::lsn::application_name(self.keepers[s].node_id))
            .collect();
        (true, pg.lsn(), pg.in_recovery && pg.receiving, streaming)
    }

    fn net_delay(&mut self) -> Ms {
        if self.slow {
            self.rng.range(100, 900)
        } else {
            self.rng.range(1, 8)
        }
    }

    /// The heartbeat the keeper sends with what it observes now (the loop's
    /// and a keepalive's alike: agent.rs `node_active_request`).
    fn heartbeat_now(&mut self, i: usize) -> Heartbeat {
        let (running, lsn, streaming, _) = self.observe(i);
        let applied = running.then(|| sync_text(self.pgs[i].sync.as_ref()));
        let k = &mut self.keepers[i];
        if running {
            k.start_failures = 0;
        }
        Heartbeat {
            node_id: k.node_id,
            report: Report {
                reported: k.current,
                pg_running: running,
                lsn,
                wal_receiver_streaming: streaming,
                pg_start_failures: k.start_failures,
                timings: self.t.keeper,
            },
            synchronous_standby_names: applied,
        }
    }

    fn keeper_step(&mut self, i: usize) {
        let hb = self.heartbeat_now(i);
        let k = &mut self.keepers[i];
        k.step += 1;
        let (step, inc) = (k.step, k.incarnation);
        k.phase = Phase::Awaiting {
            step,
            sent: self.now,
        };
        if self.link(Peer::Node(i), Peer::Monitor) && !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::HbArrive {
                    node: i,
                    inc,
                    step,
                    hb,
                },
            );
        }
        let timeout = self.t.rpc_timeout;
        self.after(timeout, Ev::HbTimeout(i, inc, step));
    }

    /// The monitor handles a heartbeat or keepalive (`what`) of node `i`
    /// that reached it; the reply, unless the link is cut or the monitor
    /// refused it (an invariant failure).
    fn monitor_handles(&mut self, i: usize, hb: &Heartbeat, what: &str) -> Option<Reply> {
        if !self.link(Peer::Node(i), Peer::Monitor) {
            return None;
        }
        match self.monitor_op(|m, now| m.node_active(hb, now)) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(
                    0,
                    format!("the monitor refused a {what} of {}: {e}", name(i)),
                );
                None
            }
        }
    }

    fn hb_arrive(&mut self, i: usize, inc: u64, step: u64, hb: Heartbeat) {
        let Some(reply) = self.monitor_handles(i, &hb, "heartbeat") else {
            return;
        };
        if !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::ReplyArrive {
                    node: i,
                    inc,
                    step,
                    reply,
                },
            );
        }
    }

    fn reply_arrive(&mut self, i: usize, inc: u64, step: u64, reply: Reply) {
        if !self.link(Peer::Node(i), Peer::Monitor) {
            return;
        }
        let k = &self.keepers[i];
        let Phase::Awaiting { step: s, sent } = k.phase else {
            return;
        };
        if !k.alive || k.incarnation != inc || s != step {
            return;
        }
        let primary = reply.primary.and_then(|id| self.monitor.index(id));
        let k = &mut self.keepers[i];
        k.primary = primary;
        k.sync_names = reply.plan.synchronous_standby_names.clone();
        k.last_ok_sent = sent;
        k.confirmed = true;
        k.fence_set = reply.plan.fence_set.clone();
        k.required = reply.plan.fence_required;
        k.fenced = false;
        if reply.goal != k.goal {
            k.goal = reply.goal;
        }
        let (from, to) = (k.current, k.goal);
        if from == to {
            self.start_actions(i, plan::steady(from), None);
            return;
        }
        match plan::plan(from, to) {
            Ok(actions) => self.start_actions(i, actions, Some((from, to))),
            Err(e) => {
                let by_operator = self.operator_goal[i];
                let seen = self.goal_set_seeing[i];
                self.fail(
                    0,
                    format!(
                        "{}: {e} (goal set by {} while the monitor saw it {seen})",
                        name(i),
                        if by_operator {
                            "an operator command"
                        } else {
                            "the state machine"
                        }
                    ),
                );
                if seen != from {
                    self.known = Some(KnownBug::GoalFromStaleView);
                }
            }
        }
    }

    /// A keepalive while the keeper acts (agent.rs `Keepalive`): the
    /// current state and what it observes now, sent every heartbeat
    /// interval until the plan is done.
    fn keepalive(&mut self, i: usize, inc: u64, seq: u64) {
        let k = &self.keepers[i];
        if !k.alive
            || k.incarnation != inc
            || !matches!(k.phase, Phase::Acting { seq: s, .. } if s == seq)
        {
            return;
        }
        let hb = self.heartbeat_now(i);
        let sent = self.now;
        if self.link(Peer::Node(i), Peer::Monitor) && !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::KeepaliveArrive {
                    node: i,
                    inc,
                    seq,
                    sent,
                    hb,
                },
            );
        }
        let interval = self.t.heartbeat;
        self.after(interval, Ev::Keepalive(i, inc, seq));
    }

    fn keepalive_arrive(&mut self, i: usize, inc: u64, seq: u64, sent: Ms, hb: Heartbeat) {
        let Some(reply) = self.monitor_handles(i, &hb, "keepalive") else {
            return;
        };
        if !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::KeepaliveReply {
                    node: i,
                    inc,
                    seq,
                    sent,
                    reply,
                },
            );
        }
    }

    /// An answered keepalive renews the lease only, as agent.rs
    /// `renew_lease` does; the goal waits for the loop's next heartbeat.
    /// One answered after its plan ended was abandoned by the keeper (and
    /// one not answered within the RPC timeout, by tonic).
    fn keepalive_reply(&mut self, i: usize, inc: u64, seq: u64, sent: Ms, reply: Reply) {
        if !self.link(Peer::Node(i), Peer::Monitor)
            || self.now.saturating_sub(sent) > self.t.rpc_timeout
        {
            return;
        }
        let k = &mut self.keepers[i];
        if !k.alive
            || k.incarnation != inc
            || !matches!(k.phase, Phase::Acting { seq: s, .. } if s == seq)
        {
            return;
        }
        k.last_ok_sent = k.last_ok_sent.max(sent);
        k.confirmed = true;
        k.fence_set = reply.plan.fence_set.clone();
        k.required = reply.plan.fence_required;
        k.fenced = false;
    }

    fn heartbeat_failed(&mut self, i: usize) {
        let k = &self.keepers[i];
        if !k.current.is_writable_primary() && k.current == k.goal {
            let steady = plan::steady(k.current);
            self.start_actions(i, steady, None);
        } else {
            self.sleep(i);
        }
    }

    fn sleep(&mut self, i: usize) {
        let k = &mut self.keepers[i];
        k.phase = Phase::Sleeping;
        let inc = k.incarnation;
        let hb = self.t.heartbeat;
        self.after(hb, Ev::Step(i, inc));
    }

    fn start_actions(&mut self, i: usize, actions: Vec<Action>, transition: Option<(S, S)>) {
        let k = &mut self.keepers[i];
        k.seq += 1;
        k.phase = Phase::Acting {
            actions,
            next: 0,
            transition,
            config_changed: false,
            seq: k.seq,
        };
        let (inc, seq, interval) = (k.incarnation, k.seq, self.t.heartbeat);
        self.after(interval, Ev::Keepalive(i, inc, seq));
        self.next_action(i);
    }

    /// Schedule the end of the next action, or finish the plan.
    fn next_action(&mut self, i: usize) {
        let Phase::Acting {
            ref actions,
            next,
            transition,
            seq,
            ..
        } = self.keepers[i].phase
        else {
            return;
        };
        if next >= actions.len() {
            match transition {
                Some((from, to)) => {
                    let k = &mut self.keepers[i];
                    k.current = to;
                    k.lease_current = to;
                    k.last_error = None;
                    k.phase = Phase::Sleeping;
                    let inc = k.incarnation;
                    self.log(format!("{}: keeper {from} -> {to} done", name(i)));
                    self.after(0, Ev::Step(i, inc));
                }
                None => self.sleep(i),
            }
            return;
        }
        let action = actions[next];
        let d = self.action_duration(i, action);
        if action == Action::Start && !self.pgs[i].running && self.pgs[i].has_data {
            self.pgs[i].starting = true;
        }
        let inc = self.keepers[i].incarnation;
        self.after(d, Ev::ActionDone(i, inc, seq));
    }

    fn action_duration(&mut self, i: usize, action: Action) -> Ms {
        let pg = &self.pgs[i];
        let (lo, hi) = match action {
            Action::InitDb => (300, 700),
            Action::ConfigurePrimary | Action::ConfigureStandby | Action::SyncSlots => (1, 5),
            Action::Start if !pg.running => (150 + pg.recovery_ms, 500 + pg.recovery_ms),
            Action::Stop if pg.running => (100, 400),
            Action::Start | Action::Stop => (1, 3),
            Action::Reload => (2, 10),
            Action::Clone => (400, 1500),
            Action::RewindOrClone => (300, 1200),
            Action::WaitReplayCaughtUp => (5, 50),
            Action::Promote => (100, 400),
        };
        self.rng.range(lo, hi)
    }

    fn action_done(&mut self, i: usize) {
        let Phase::Acting {
            ref actions,
            next,
            config_changed,
            ..
        } = self.keepers[i].phase
        else {
            return;
        };
        let action = actions[next];
        match self.apply_action(i, action, config_changed) {
            Ok(changed) => {
                if let Phase::Acting {
                    ref mut next,
                    ref mut config_changed,
                    ..
                } = self.keepers[i].phase
                {
                    *next += 1;
                    *config_changed |= changed;
                }
                self.next_action(i);
            }
            Err(e) => {
                if self.keepers[i].last_error.as_deref() != Some(&e) {
                    self.log(format!("{}: keeper step failed: {e}", name(i)));
                    self.keepers[i].last_error = Some(e);
                }
                self.sleep(i);
            }
        }
    }

    /// Carry out one action on the simulated PostgreSQL, as the executor in
    /// agent.rs does; true when the configuration changed.
    fn apply_action(
        &mut self,
        i: usize,
        action: Action,
        config_changed: bool,
    ) -> Result<bool, String> {
        let upstream = self.keepers[i].primary;
        match action {
            Action::InitDb => {
                let pg = &mut self.pgs[i];
                if !pg.has_data {
                    pg.has_data = true;
                    pg.timeline = 1;
                    pg.history.clear();
                    pg.generation += 1;
                }
                Ok(false)
            }
            Action::ConfigurePrimary => {
                let sync = parse_sync(&self.keepers[i].sync_names);
                let pg = &mut self.pgs[i];
                let changed = pg.conf_upstream.is_some() || pg.conf_sync != sync;
                pg.conf_upstream = None;
                pg.conf_sync = sync;
                Ok(changed)
            }
            Action::ConfigureStandby => {
                let u = upstream.ok_or("the monitor names no primary to follow yet")?;
                let pg = &mut self.pgs[i];
                let changed = pg.conf_upstream != Some(u) || pg.conf_sync.is_some();
                pg.conf_upstream = Some(u);
                pg.conf_sync = None;
                Ok(changed)
            }
            Action::Start => {
                let pg = &self.pgs[i];
                let result = if !pg.running && !pg.starting && pg.has_data {
                    // Stopped while it started (the fence, a crash).
                    Err("PostgreSQL exited before accepting connections".to_string())
                } else {
                    self.pg_start(i)
                };
                match result {
                    Ok(()) => {
                        self.keepers[i].start_failures = 0;
                        Ok(false)
                    }
                    Err(e) => {
                        if !self.pgs[i].running && !self.keepers[i].fenced {
                            self.keepers[i].start_failures += 1;
                        }
                        Err(e)
                    }
                }
            }
            Action::Reload => {
                if config_changed {
                    self.pg_reload(i);
                }
                Ok(false)
            }
            Action::Stop => {
                self.pg_stop(i, true);
                Ok(false)
            }
            Action::Clone => {
                let u = upstream.ok_or("the monitor names no primary to follow yet")?;
                self.clone_from(i, u)?;
                Ok(true)
            }
            Action::RewindOrClone => {
                let u = upstream.ok_or("the monitor names no primary to follow yet")?;
                if !self.link(Peer::Node(i), Peer::Node(u)) || !self.pgs[u].running {
                    return Err(format!("cannot reach {} to rewind or clone", name(u)));
                }
                if self.pgs[i].has_data {
                    // pg_rewind: back to the common prefix, then start as a
                    // standby of the upstream.
                    let keep = common_prefix(&self.pgs[i].history, &self.pgs[u].history);
                    let tl = self.pgs[u].timeline;
                    let pg = &mut self.pgs[i];
                    if keep < pg.history.len() {
                        pg.history.truncate(keep);
                        pg.generation += 1;
                    }
                    pg.timeline = tl;
                    pg.in_recovery = true;
                    pg.conf_upstream = Some(u);
                    pg.conf_sync = None;
                    self.pg_start(i)?;
                } else {
                    self.clone_from(i, u)?;
                }
                Ok(true)
            }
            Action::WaitReplayCaughtUp => {
                if self.pgs[i].running {
                    Ok(false)
                } else {
                    Err("PostgreSQL is not running: cannot replay".into())
                }
            }
            Action::Promote => {
                let pg = &mut self.pgs[i];
                if !pg.running {
                    return Err("PostgreSQL is not running: cannot promote".into());
                }
                if pg.in_recovery {
                    pg.in_recovery = false;
                    pg.timeline += 1;
                    pg.upstream = None;
                    pg.conf_upstream = None;
                    pg.receiving = false;
                    let (tl, lsn) = (pg.timeline, pg.lsn());
                    self.stats.promotions += 1;
                    if !self.primary_had_sync {
                        self.forgive_missing_on(i);
                    }
                    self.log(format!(
                        "{}: PostgreSQL promoted at {} on timeline {tl}",
                        name(i),
                        pgpilot_proto::lsn::format_lsn(lsn)
                    ));
                    // The group's primary from now on, even if it fails
                    // before the monitor hears it reached its goal: a
                    // commit lost with it is matched against its fence set.
                    if self.current_primary != Some(i) {
                        self.previous_primary = self.current_primary;
                        self.current_primary = Some(i);
                    }
                }
                Ok(false)
            }
            Action::SyncSlots => Ok(false),
        }
    }

    fn clone_from(&mut self, i: usize, u: usize) -> Result<(), String> {
        if !self.link(Peer::Node(i), Peer::Node(u)) || !self.pgs[u].running {
            return Err(format!("pg_basebackup: cannot reach {}", name(u)));
        }
        if self.pgs[i].running {
            return Err("pg_basebackup: PostgreSQL is running here".into());
        }
        let (history, tl) = (self.pgs[u].history.clone(), self.pgs[u].timeline);
        let pg = &mut self.pgs[i];
        pg.has_data = true;
        pg.history = history;
        pg.timeline = tl;
        pg.generation += 1;
        pg.in_recovery = true;
        Ok(())
    }

    fn pg_start(&mut self, i: usize) -> Result<(), String> {
        let now = self.now;
        let pg = &mut self.pgs[i];
        if !pg.has_data {
            return Err("no data directory to start".into());
        }
        if pg.running {
            return Ok(());
        }
        pg.recovery_ms = 0;
        pg.starting = false;
        if pg.failing_starts > 0 {
            pg.failing_starts -= 1;
            let left = pg.failing_starts;
            self.log(format!(
                "{}: PostgreSQL exited before accepting connections ({left} more starts fail)",
                name(i)
            ));
            return Err("PostgreSQL exited before accepting connections".into());
        }
        let standby = pg.conf_upstream.is_some();
        if pg.in_recovery && !standby {
            // Started without standby.signal: recovery ends, a new timeline.
            pg.timeline += 1;
        }
        pg.running = true;
        pg.in_recovery = standby;
        pg.upstream = pg.conf_upstream;
        pg.sync = pg.conf_sync.clone();
        pg.receiving = false;
        pg.last_contact = now;
        pg.senders.clear();
        pg.incarnation += 1;
        let what = if standby {
            format!("as a standby of {}", name(pg.upstream.unwrap_or(0)))
        } else {
            format!(
                "as a primary, sync {:?}",
                pg.sync.as_ref().map(|s| (s.n, s.names.clone()))
            )
        };
        self.log(format!("{}: PostgreSQL started {what}", name(i)));
        Ok(())
    }

    fn pg_reload(&mut self, i: usize) {
        let pg = &mut self.pgs[i];
        if !pg.running {
            return;
        }
        if pg.sync != pg.conf_sync {
            pg.sync = pg.conf_sync.clone();
            let s = pg.sync.as_ref().map(|s| (s.n, s.names.clone()));
            self.log(format!("{}: synchronous replication now {s:?}", name(i)));
        }
        let pg = &mut self.pgs[i];
        if pg.in_recovery && pg.upstream != pg.conf_upstream {
            pg.upstream = pg.conf_upstream;
            pg.receiving = false;
        }
    }

    /// Stop PostgreSQL: a fast shutdown first hands its WAL to connected
    /// standbys; an immediate one (a crash, the fence) does not.
    fn pg_stop(&mut self, i: usize, fast: bool) {
        if !self.pgs[i].running {
            if self.pgs[i].starting {
                let pg = &mut self.pgs[i];
                pg.starting = false;
                pg.incarnation += 1;
                self.log(format!("{}: PostgreSQL stopped while starting", name(i)));
            }
            return;
        }
        if fast && !self.pgs[i].in_recovery {
            let senders: Vec<usize> = self.pgs[i].senders.keys().copied().collect();
            for s in senders {
                if self.link(Peer::Node(i), Peer::Node(s))
                    && self.pgs[s].running
                    && self.pgs[s].upstream == Some(i)
                    && is_prefix(&self.pgs[s].history, &self.pgs[i].history)
                {
                    let h = self.pgs[i].history.clone();
                    self.pgs[s].history = h;
                }
            }
        }
        let pg = &mut self.pgs[i];
        pg.running = false;
        pg.outlived_keeper = false;
        pg.receiving = false;
        pg.senders.clear();
        pg.incarnation += 1;
        let how = if fast { "stopped" } else { "stopped at once" };
        self.log(format!("{}: PostgreSQL {how}", name(i)));
    }

    fn fence_tick(&mut self, i: usize) {
        let k = &self.keepers[i];
        if self.opts.keeper_flaw == KeeperFlaw::NoFence {
            return;
        }
        let since = Duration::from_millis(self.now.saturating_sub(k.last_ok_sent));
        if !fence_armed(
            k.lease_current,
            since,
            Duration::from_millis(self.t.fence_timeout),
        ) {
            return;
        }
        let (running, _, _, streaming) = self.observe(i);
        let alive = running || self.pgs[i].starting;
        match fence_step(alive, &streaming, &k.fence_set, k.required) {
            FenceStep::AlreadyStopped => self.keepers[i].fenced = true,
            FenceStep::KeepServing => {}
            FenceStep::Stop => {
                self.log(format!(
                    "{}: fence: monitor out of reach and {} of {:?} streaming (need {}): stopping PostgreSQL",
                    name(i),
                    streaming.len(),
                    k.fence_set,
                    k.required
                ));
                self.pg_stop(i, false);
                self.keepers[i].fenced = true;
                self.stats.fences += 1;
            }
        }
    }

    fn keeper_crash(&mut self, i: usize) {
        let k = &self.keepers[i];
        if !k.alive {
            return;
        }
        // Killed in the middle of an action: it may or may not have happened.
        if let Phase::Acting {
            ref actions,
            next,
            config_changed,
            ..
        } = k.phase
        {
            let action = actions[next.min(actions.len().saturating_sub(1))];
            if next < actions.len() && self.rng.chance(0.5) {
                let _ = self.apply_action(i, action, config_changed);
            }
        }
        // A start not done above never happened.
        self.pgs[i].starting = false;
        if self.pgs[i].running && !self.pgs[i].in_recovery {
            self.pgs[i].outlived_keeper = true;
        }
        let k = &mut self.keepers[i];
        k.alive = false;
        k.incarnation += 1;
        k.phase = Phase::Dead;
        let line = format!(
            "{}: keeper killed (state file: {} goal {})",
            name(i),
            k.current,
            k.goal
        );
        self.log(line);
    }

    fn keeper_restart(&mut self, i: usize) {
        if self.keepers[i].alive {
            return;
        }
        let now = self.now;
        let k = &mut self.keepers[i];
        k.alive = true;
        k.incarnation += 1;
        k.last_ok_sent = now;
        k.lease_current = k.current;
        k.fence_set.clear();
        k.required = fence_required_after_restart();
        k.fenced = false;
        k.confirmed = false;
        k.primary = None;
        k.sync_names.clear();
        k.phase = Phase::Sleeping;
        k.last_error = None;
        k.start_failures = 0;
        let inc = k.incarnation;
        self.log(format!("{}: keeper restarted", name(i)));
        self.after(1, Ev::Step(i, inc));
        self.after(FENCE_TICK_MS, Ev::FenceTick(i, inc));
    }

    // ------------------------------------------------------------------
    // PostgreSQL replication and the client
    // ------------------------------------------------------------------

    fn pump(&mut self) {
        let n = self.pgs.len();
        for s in 0..n {
            let pg = &self.pgs[s];
            if !pg.running || !pg.in_recovery {
                continue;
            }
            let Some(u) = pg.upstream else {
                self.pgs[s].receiving = false;
                continue;
            };
            let link = self.link(Peer::Node(s), Peer::Node(u));
            if link && self.pgs[u].running {
                if is_prefix(&self.pgs[s].history, &self.pgs[u].history) {
                    let have = self.pgs[s].history.len();
                    let missing = self.pgs[u].history[have..].to_vec();
                    let pg = &mut self.pgs[s];
                    pg.history.extend(missing);
                    pg.receiving = true;
                    pg.last_contact = self.now;
                    let flushed = pg.history.len();
                    self.pgs[u].senders.insert(
                        s,
                        Sender {
                            last_reply: self.now,
                            flushed,
                        },
                    );
                } else {
                    self.pgs[s].receiving = false;
                }
            } else if link {
                // The upstream is down: the connection is refused at once.
                self.pgs[s].receiving = false;
            } else if self.now.saturating_sub(self.pgs[s].last_contact)
                > self.t.wal_receiver_timeout
            {
                self.pgs[s].receiving = false;
            }
        }
        for u in 0..n {
            if !self.pgs[u].running {
                continue;
            }
            let senders: Vec<(usize, Sender)> =
                self.pgs[u].senders.iter().map(|(&s, &v)| (s, v)).collect();
            for (s, v) in senders {
                let gone_for_sure = self.link(Peer::Node(u), Peer::Node(s))
                    && !(self.pgs[s].running
                        && self.pgs[s].in_recovery
                        && self.pgs[s].upstream == Some(u)
                        && is_prefix(&self.pgs[s].history, &self.pgs[u].history));
                if gone_for_sure
                    || self.now.saturating_sub(v.last_reply) > self.t.wal_sender_timeout
                {
                    self.pgs[u].senders.remove(&s);
                }
            }
        }
        self.acknowledge();
    }

    /// Commits whose synchronous condition holds are acknowledged to the
    /// client (when it can still hear the server).
    fn acknowledge(&mut self) {
        let mut still = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let pg = &self.pgs[p.node];
            let valid = pg.running
                && pg.incarnation == p.pg_incarnation
                && pg.history.get(p.index) == Some(&p.id)
                && self.now - p.at <= CLIENT_TIMEOUT_MS;
            if !valid {
                continue;
            }
            let done = match &pg.sync {
                None => true,
                Some(sync) => {
                    let acks = pg
                        .senders
                        .iter()
                        .filter(|(&s, v)| {
                            v.flushed > p.index
                                && sync.names.contains(&pgpilot_proto::lsn::application_name(
                                    self.keepers[s].node_id,
                                ))
                        })
                        .count() as u32;
                    acks >= sync.n
                }
            };
            if !done {
                still.push(p);
                continue;
            }
            let sync = pg.sync.is_some();
            let ackers: Vec<usize> = match &pg.sync {
                None => Vec::new(),
                Some(rep) => pg
                    .senders
                    .iter()
                    .filter(|(&s, v)| {
                        v.flushed > p.index
                            && rep.names.contains(&pgpilot_proto::lsn::application_name(
                                self.keepers[s].node_id,
                            ))
                    })
                    .map(|(&s, _)| s)
                    .collect(),
            };
            self.record_ack(p.node, p.id, sync, ackers);
        }
        self.pending = still;
    }

    fn record_ack(&mut self, node: usize, id: u64, sync: bool, ackers: Vec<usize>) {
        if !self.link(Peer::Client, Peer::Node(node)) {
            return;
        }
        self.stats.acked += 1;
        if sync {
            self.stats.acked_sync += 1;
            self.acked_sync.push(id);
            self.acked_by.push((node, ackers));
        }
    }

    fn client_write(&mut self) {
        let candidates: Vec<usize> = (0..self.pgs.len())
            .filter(|&i| {
                self.link(Peer::Client, Peer::Node(i))
                    && self.pgs[i].running
                    && !self.pgs[i].in_recovery
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = *self.rng.pick(&candidates);
        let id = self.next_write;
        self.next_write += 1;
        self.stats.writes += 1;
        let pg = &mut self.pgs[i];
        pg.history.push(id);
        let p = Pending {
            node: i,
            index: pg.history.len() - 1,
            id,
            pg_incarnation: pg.incarnation,
            at: self.now,
        };
        if pg.sync.is_none() {
            self.record_ack(i, id, false, Vec::new());
        } else {
            self.pending.push(p);
        }
    }

    // ------------------------------------------------------------------
    // The monitor's health checks
    // ------------------------------------------------------------------

    fn health_tick(&mut self) {
        let started = self.now;
        let targets = self.monitor.health_targets(self.now);
        let mut end = self.now;
        for id in targets {
            let Some(i) = self.monitor.index(id) else {
                continue;
            };
            let (h, d) = if !self.link(Peer::Monitor, Peer::Node(i)) {
                (Health::Bad, self.t.health_timeout)
            } else if self.pgs[i].running {
                (Health::Good, self.rng.range(1, 3))
            } else {
                (Health::Bad, 1)
            };
            end = end.max(self.now + d);
            self.after(d, Ev::HealthResult(id, h));
        }
        self.at(end, Ev::HealthRoundEnd(started));
    }

    // ------------------------------------------------------------------
    // Faults and operator commands
    // ------------------------------------------------------------------

    fn fault(&mut self) {
        self.stats.faults += 1;
        let n = self.pgs.len();
        let x = self.rng.below(n);
        let roll = self.rng.below(100);
        match roll {
            0..=11 => {
                // The next start may take long (crash recovery; sometimes
                // past postgres_restart_timeout) or fail a few times.
                let (recovery, failing) = match self.rng.below(10) {
                    0..=2 => (self.rng.range(1_000, 25_000), 0),
                    3 => (0, self.rng.range(1, 6) as u32),
                    _ => (0, 0),
                };
                self.log(format!(
                    "fault: PostgreSQL on {} crashes (recovery {recovery} ms, {failing} failing starts)",
                    name(x)
                ));
                self.pg_stop(x, false);
                self.pgs[x].recovery_ms = recovery;
                self.pgs[x].failing_starts = failing;
            }
            12..=21 => {
                self.keeper_crash(x);
                let d = self.rng.range(100, 5000);
                self.after(d, Ev::KeeperRestart(x));
            }
            22..=29 => {
                self.log(format!("fault: host of {} crashes", name(x)));
                self.pg_stop(x, false);
                self.keeper_crash(x);
                let d = self.rng.range(500, 6000);
                self.after(d, Ev::KeeperRestart(x));
            }
            30..=54 => self.partition(x),
            55..=61 => {
                self.loss = *self.rng.pick(&[0.2, 0.5, 0.8, 1.0]);
                let d = self.rng.range(500, 5000);
                self.log(format!(
                    "fault: {:.0} % of heartbeats and replies lost for {d} ms",
                    self.loss * 100.0
                ));
                self.after(d, Ev::EndLoss);
            }
            62..=67 => {
                self.slow = true;
                let d = self.rng.range(500, 5000);
                self.log(format!(
                    "fault: monitor messages take 100–900 ms for {d} ms"
                ));
                self.after(d, Ev::EndSlow);
            }
            68..=92 => self.operator(x),
            _ => {}
        }
    }

    fn partition(&mut self, x: usize) {
        let n = self.pgs.len();
        let others: Vec<usize> = (0..n).filter(|&j| j != x).collect();
        let me = Peer::Node(x);
        let (what, cut): (String, Vec<(Peer, Peer)>) = match self.rng.below(6) {
            0 => (format!("{} | monitor", name(x)), vec![(me, Peer::Monitor)]),
            1 => (
                format!("{} | other nodes", name(x)),
                others.iter().map(|&j| (me, Peer::Node(j))).collect(),
            ),
            2 => {
                let mut cut: Vec<(Peer, Peer)> =
                    others.iter().map(|&j| (me, Peer::Node(j))).collect();
                cut.push((me, Peer::Monitor));
                cut.push((me, Peer::Client));
                (format!("{} | everything", name(x)), cut)
            }
            3 => (format!("{} | client", name(x)), vec![(me, Peer::Client)]),
            4 => {
                let y = *self.rng.pick(&others);
                (
                    format!("{} | {}", name(x), name(y)),
                    vec![(me, Peer::Node(y))],
                )
            }
            _ => (
                "monitor | every node".to_string(),
                (0..n).map(|j| (Peer::Monitor, Peer::Node(j))).collect(),
            ),
        };
        let id = self.next_partition;
        self.next_partition += 1;
        let d = self.rng.range(300, 8000);
        self.log(format!("fault: partition {id}: {what} for {d} ms"));
        self.partitions.insert(id, cut);
        self.after(d, Ev::Heal(id));
    }

    /// An operator command, as the CLI sends it; the monitor may refuse it.
    fn operator(&mut self, x: usize) {
        let node = name(x);
        let kind = self.rng.below(10);
        let prio = *self.rng.pick(&[0, 10, 50, 100]);
        let quorum = self.rng.chance(0.5);
        let nss = self.rng.range(0, 2) as u32;
        let in_maintenance = self
            .monitor
            .nodes
            .get(x)
            .is_some_and(|n| n.goal == S::Maintenance);
        let (what, result) = match kind {
            0 | 1 => (
                "perform-failover".to_string(),
                self.operator_op(|m, now| m.perform_failover(None, now)),
            ),
            2 => (
                format!("perform-switchover --to {node}"),
                self.operator_op(|m, now| m.perform_failover(Some(&node), now)),
            ),
            3 if in_maintenance => (
                format!("disable-maintenance {node}"),
                self.operator_op(|m, now| m.set_maintenance(&node, false, now)),
            ),
            3 | 4 => (
                format!("enable-maintenance {node}"),
                self.operator_op(|m, now| m.set_maintenance(&node, true, now)),
            ),
            5 => (
                format!("set-number-sync-standbys {nss}"),
                self.operator_op(|m, now| m.set_number_sync_standbys(nss, now)),
            ),
            6 => (
                format!("set-candidate-priority {node} {prio}"),
                self.operator_op(|m, now| m.set_node_settings(&node, Some(prio), None, now)),
            ),
            7 => (
                format!("set-replication-quorum {node} {quorum}"),
                self.operator_op(|m, now| m.set_node_settings(&node, None, Some(quorum), now)),
            ),
            8 => (
                format!("reinit {node}"),
                self.operator_op(|m, now| m.reinit_node(&node, now)),
            ),
            _ => {
                let r = self.operator_op(|m, now| m.force_election(now));
                if r.is_ok() {
                    self.data_loss_allowed = true;
                }
                ("perform-failover --allow-data-loss".to_string(), r)
            }
        };
        match result {
            Ok(m) => {
                self.stats.operator_ok += 1;
                self.log(format!("operator: {what}: {m}"));
            }
            Err(e) => {
                self.stats.operator_refused += 1;
                self.log(format!("operator: {what}: refused: {e}"));
            }
        }
    }

    fn faults_over(&mut self) {
        self.faults_on = false;
        self.faults_over_at = Some(self.now);
        self.partitions.clear();
        self.loss = 0.0;
        self.slow = false;
        self.log("faults stop: network healed, dead keepers restart".into());
        for i in 0..self.keepers.len() {
            if !self.keepers[i].alive {
                self.keeper_restart(i);
            }
        }
        for i in 0..self.monitor.nodes.len() {
            if self.monitor.nodes[i].goal == S::Maintenance {
                let node = self.monitor.nodes[i].name.clone();
                let _ = self.operator_op(|m, now| m.set_maintenance(&node, false, now));
            }
        }
    }

    // ------------------------------------------------------------------
    // Invariants
    // ------------------------------------------------------------------

    /// Can node `u` acknowledge a commit right now?
    fn accepts_writes(&self, u: usize) -> bool {
        let pg = &self.pgs[u];
        if !pg.running || pg.in_recovery {
            return false;
        }
        let Some(sync) = &pg.sync else {
            return true;
        };
        let streaming = pg
            .senders
            .keys()
            .filter(|&&s| {
                self.link(Peer::Node(u), Peer::Node(s))
                    && self.pgs[s].running
                    && self.pgs[s].upstream == Some(u)
                    && sync.names.contains(&pgpilot_proto::lsn::application_name(
                        self.keepers[s].node_id,
                    ))
            })
            .count() as u32;
        streaming >= sync.n
    }

    /// The nodes the group has as its primary: assigned and reached a
    /// writable primary state, PostgreSQL running out of recovery.
    /// The group's primary ran without synchronous replication (it was
    /// `wait_primary`, or had no quorum standby): a failover from it may
    /// lose any commit, as the operator chose with number_sync_standbys = 0
    /// (DESIGN §5 promises no loss only with synchronous replication on).
    /// Commits the new primary lacks are no longer checked.
    fn forgive_missing_on(&mut self, i: usize) {
        let before = self.acked_sync.len();
        let history = &self.pgs[i].history;
        let keep: Vec<bool> = self
            .acked_sync
            .iter()
            .map(|id| history.binary_search(id).is_ok())
            .collect();
        let mut k = keep.iter();
        self.acked_sync.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        self.acked_by.retain(|_| *k.next().expect("same length"));
        self.checked = vec![(u64::MAX, 0); self.pgs.len()];
        let lost = before - self.acked_sync.len();
        if lost > 0 {
            self.log(format!(
                "{}: promoted after a primary without synchronous replication: {lost} earlier synchronous commits it lacks are not protected",
                name(i)
            ));
        }
    }

    fn group_primaries(&self) -> Vec<usize> {
        (0..self.pgs.len())
            .filter(|&i| {
                let Some(m) = self.monitor.nodes.get(i) else {
                    return false;
                };
                m.goal.is_writable_primary()
                    && m.reported == m.goal
                    && self.pgs[i].running
                    && !self.pgs[i].in_recovery
            })
            .collect()
    }

    fn check_write_safety(&mut self) {
        // 1. At most one node accepts writes.
        let writers: Vec<usize> = (0..self.pgs.len())
            .filter(|&u| self.accepts_writes(u))
            .collect();
        if writers.len() > 1 {
            let names: Vec<String> = writers.iter().map(|&u| name(u)).collect();
            let keeperless: Vec<String> = writers
                .iter()
                .filter(|&&u| self.pgs[u].outlived_keeper)
                .map(|&u| name(u))
                .collect();
            self.fail(
                1,
                format!(
                    "{} accept writes at the same time{}",
                    names.join(" and "),
                    if keeperless.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (the PostgreSQL of {} has run on since its keeper was killed)",
                            keeperless.join(", ")
                        )
                    }
                ),
            );
            if !keeperless.is_empty() {
                self.known = Some(KnownBug::KeeperDeadNoFence);
            }
            return;
        }
        // 2. The group's primary holds every commit acknowledged under
        // synchronous replication.
        if self.data_loss_allowed || self.acked_sync.is_empty() {
            if let Some(&p) = self.group_primaries().first() {
                self.primary_had_sync = self.pgs[p].sync.is_some();
                if self.current_primary != Some(p) {
                    self.previous_primary = self.current_primary;
                    self.current_primary = Some(p);
                }
            }
            return;
        }
        for p in self.group_primaries() {
            self.primary_had_sync = self.pgs[p].sync.is_some();
            if self.current_primary != Some(p) {
                self.previous_primary = self.current_primary;
                self.current_primary = Some(p);
            }
            let gen = self.pgs[p].generation;
            let (checked_gen, from) = self.checked[p];
            let from = if checked_gen == gen { from } else { 0 };
            for k in from..self.acked_sync.len() {
                let id = self.acked_sync[k];
                if self.pgs[p].history.binary_search(&id).is_err() {
                    let (by, ackers) = self.acked_by[k].clone();
                    let names: Vec<String> = ackers.iter().map(|&a| name(a)).collect();
                    // The primary before this one: did any member of its
                    // fence set hold the commit?
                    let q = self.previous_primary.unwrap_or(by);
                    let fence_set = self.monitor.nodes[q].election_fence(&self.monitor.nodes).0;
                    let left = (0..self.pgs.len()).all(|h| {
                        self.pgs[h].history.binary_search(&id).is_err()
                            || !fence_set.contains(&pgpilot_proto::lsn::application_name(
                                self.keepers[h].node_id,
                            ))
                    });
                    let what = format!(
                        "write {id}, acknowledged by {} under synchronous replication (confirmed by {}), is missing on the primary {}{}",
                        name(by),
                        names.join(", "),
                        name(p),
                        if left {
                            format!(
                                "; no member of the fence set of the previous primary {} ({fence_set:?}) had it",
                                name(q)
                            )
                        } else {
                            String::new()
                        }
                    );
                    self.fail(2, what);
                    self.known = left.then_some(KnownBug::FenceSetShrank);
                    return;
                }
            }
            self.checked[p] = (gen, self.acked_sync.len());
        }
    }

    fn periodic_check(&mut self) {
        let converged = self.converged();
        if !self.faults_on && self.faults_over_at.is_none() {
            // Forming the group.
            if converged {
                self.log("group formed: faults start".into());
                if self.setup.number_sync_standbys > 0 {
                    let v = self.setup.number_sync_standbys;
                    let r = self.operator_op(|m, now| m.set_number_sync_standbys(v, now));
                    self.log(format!("operator: set-number-sync-standbys {v}: {r:?}"));
                }
                self.faults_on = true;
                let end = self.now + self.setup.fault_ms;
                self.at(end, Ev::FaultsOver);
                self.after(self.setup.fault_gap.0, Ev::Fault);
            } else if self.now > FORM_DEADLINE_MS {
                self.fail(
                    4,
                    format!(
                        "the group did not form within {} s",
                        FORM_DEADLINE_MS / 1000
                    ),
                );
            }
            return;
        }
        let Some(over) = self.faults_over_at else {
            return;
        };
        let stuck = self.monitor.waiting.iter().any(|w| w.is_election_stuck());
        if stuck && !self.forced_after_faults && self.now > over + STUCK_FORCE_MS {
            // What an operator does with an election that says it is stuck
            // (the documented double-fault case): accept the data loss.
            self.forced_after_faults = true;
            let r = self.operator_op(|m, now| m.force_election(now));
            self.log(format!(
                "operator: perform-failover --allow-data-loss (election stuck since the faults stopped): {r:?}"
            ));
            if r.is_ok() {
                self.data_loss_allowed = true;
            }
        }
        if converged {
            self.log(format!(
                "settled {:.1} s after the faults stopped",
                (self.now - over) as f64 / 1000.0
            ));
            self.settled = true;
        } else if self.now > over + LIVENESS_MS {
            let diverged: Vec<String> = (0..self.pgs.len())
                .filter(|&s| {
                    let pg = &self.pgs[s];
                    pg.running
                        && pg.in_recovery
                        && pg.upstream.is_some_and(|u| {
                            self.pgs[u].running && !is_prefix(&pg.history, &self.pgs[u].history)
                        })
                })
                .map(name)
                .collect();
            self.fail(
                4,
                format!(
                    "the group did not settle within {} s after the faults stopped{}",
                    LIVENESS_MS / 1000,
                    if diverged.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; the WAL of {} diverged from its upstream's",
                            diverged.join(", ")
                        )
                    }
                ),
            );
            if !diverged.is_empty() {
                self.known = Some(KnownBug::DivergedStandby);
            } else if self.monitor.nodes.iter().any(|n| n.goal == S::FastForward) {
                self.known = Some(KnownBug::FastForwardWaits);
            }
        }
    }

    /// Every keeper alive and at its goal, the monitor agreeing, goals
    /// steady, and one running primary.
    fn converged(&self) -> bool {
        if self.monitor.nodes.len() != self.pgs.len() {
            return false;
        }
        let mut primaries = 0;
        for (i, m) in self.monitor.nodes.iter().enumerate() {
            let k = &self.keepers[i];
            if !k.alive || k.current != m.goal || k.goal != m.goal || m.reported != m.goal {
                return false;
            }
            match m.goal {
                S::Single | S::WaitPrimary | S::Primary => {
                    if !self.pgs[i].running || self.pgs[i].in_recovery {
                        return false;
                    }
                    primaries += 1;
                }
                S::Secondary => {
                    if !self.pgs[i].running || !self.pgs[i].receiving {
                        return false;
                    }
                }
                S::Maintenance => {}
                _ => return false,
            }
        }
        primaries == 1
    }

    /// One line per node: the monitor's view, the keeper's, PostgreSQL's.
    pub fn state_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "number_sync_standbys {}; partitions {:?}; loss {}; slow {}",
            self.monitor.number_sync_standbys,
            self.partitions.values().collect::<Vec<_>>(),
            self.loss,
            self.slow
        );
        for i in 0..self.pgs.len() {
            let pg = &self.pgs[i];
            let k = &self.keepers[i];
            let m = self.monitor.nodes.get(i);
            let _ = writeln!(
                out,
                "{}: monitor {} -> {} (prio {}, quorum {}, fence {:?}/{}) | keeper {} {} -> {} {} | pg {} {} tl {} lsn {} upstream {:?} receiving {} senders {:?} sync {:?}",
                name(i),
                m.map(|m| m.reported.as_str()).unwrap_or("-"),
                m.map(|m| m.goal.as_str()).unwrap_or("-"),
                m.map(|m| m.candidate_priority).unwrap_or(0),
                m.map(|m| m.replication_quorum).unwrap_or(false),
                m.map(|m| m.fence_set.clone()).unwrap_or_default(),
                m.map(|m| m.fence_required).unwrap_or(0),
                if k.alive { "alive" } else { "dead" },
                k.current,
                k.goal,
                match &k.phase {
                    Phase::Dead => "(dead)".to_string(),
                    Phase::Sleeping => "(sleeping)".to_string(),
                    Phase::Awaiting { step, .. } => format!("(awaiting reply {step})"),
                    Phase::Acting { actions, next, .. } =>
                        format!("(acting {:?})", actions.get(*next)),
                },
                if pg.running { "running" } else { "stopped" },
                if pg.in_recovery { "standby" } else { "primary" },
                pg.timeline,
                pgpilot_proto::lsn::format_lsn(pg.lsn()),
                pg.upstream.map(name),
                pg.receiving,
                pg.senders.keys().map(|&s| name(s)).collect::<Vec<_>>(),
                pg.sync.as_ref().map(|s| (s.n, s.names.clone())),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
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
        let order: Vec<(Ms, u64)> =
            std::iter::from_fn(|| heap.pop().map(|s| (s.at, s.seq))).collect();
        assert_eq!(order, vec![(1, 2), (3, 3), (5, 0), (5, 1)]);
    }
}
