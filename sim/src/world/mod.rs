//! The simulated world: nodes (a keeper and a PostgreSQL each), the
//! monitor, the network between them, a client, the faults, and the
//! invariant checks. Everything happens on one virtual clock, in the order
//! of one event queue, with every random choice drawn from one seeded
//! generator: the same seed replays the same run.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use pgpilot_keeper::agent::{
    answer_renews, fence_armed, fence_step, FenceStep, FENCE_REQUIRED_UNTIL_ANSWERED,
};
use pgpilot_keeper::plan::{self, Action};
use pgpilot_keeper::stopping::{self as stop_rule, StopKind, StopReply, Verdict};
use pgpilot_monitor::fsm::{Health, KeeperClock, Report};
use pgpilot_proto::ReplicationState as S;

use crate::monitor::{Heartbeat, Monitor, MonitorFlaw, Reply};
use crate::rng::Rng;
use crate::Ms;
use timings::Timings;

mod actions;
mod checks;
mod faults;
mod keeper;
mod monitor_link;
mod timings;
mod wal;

/// How often WAL moves from upstreams to standbys, and commits are acknowledged.
const PUMP_MS: Ms = 20;
/// The keeper's fence task period.
const FENCE_TICK_MS: Ms = 100;
/// A refused promotion is asked of the hook again after this long
/// (`pgpilot_keeper::hooks::REFUSAL_RETRY`).
const REFUSAL_RETRY_MS: Ms = pgpilot_keeper::hooks::REFUSAL_RETRY.as_millis() as Ms;
const LSN_BASE: u64 = 0x300_0000;
/// WAL bytes per client write.
const RECORD_BYTES: u64 = 128;
/// A client gives up on a commit after this long.
const CLIENT_TIMEOUT_MS: Ms = 5_000;
/// The group must form within this long of the start.
const FORM_DEADLINE_MS: Ms = 30_000;
/// The longest crash recovery the faults give a PostgreSQL (its next
/// start takes that much longer).
const MAX_CRASH_RECOVERY_MS: Ms = 25_000;
/// An election still stuck this long after the faults stopped is forced,
/// as an operator would.
const STUCK_FORCE_MS: Ms = 15_000;
/// An operator forces a stuck election at most this many times after the
/// faults stop (the liveness bound grows by `STUCK_FORCE_MS` each time).
const MAX_FORCES: u32 = 3;
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
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub writes: u64,
    pub acked: u64,
    pub acked_sync: u64,
    pub promotions: u64,
    /// Promotions a `before_promotion` hook refused.
    pub refusals: u64,
    pub fences: u64,
    pub faults: u64,
    pub operator_ok: u64,
    pub operator_refused: u64,
    pub events: u64,
    /// How long the group took to settle after the faults stopped.
    pub settle_ms: Ms,
    /// The stuck election an operator had to force after the faults.
    pub forced: bool,
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

/// What a restarted keeper's fence task requires before the monitor answers.
fn fence_required_after_restart() -> u32 {
    FENCE_REQUIRED_UNTIL_ANSWERED
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
    /// standby.signal as written: a standby, following `conf_upstream`
    /// or (while no primary is named) nobody.
    conf_standby: bool,
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

/// What the fence reads (keeper/src/fence.rs `Lease`): when the last
/// answered heartbeat was sent, the node's state, the fence set and how
/// many of it must stream.
#[derive(Debug, Clone)]
struct Lease {
    last_ok_sent: Ms,
    current: S,
    fence_set: Vec<String>,
    required: u32,
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
    lease: Lease,
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
    /// This keeper process reloaded PostgreSQL once (executor.rs
    /// `reloaded`): its first reload is never skipped.
    reloaded: bool,
    /// Stopping its node on purpose (SIGTERM) since then
    /// (keeper/src/stopping.rs), and what the monitor said to it.
    stopping: Option<Ms>,
    stop_reply: Option<StopReply>,
    /// Whether the formation is paused, as the monitor last said.
    paused: Option<bool>,
    /// Restarts asked through the monitor, as it last said; the last one
    /// carried out (in the state file); the steady plan (by seq) that
    /// restarts PostgreSQL for the restart it names (agent.rs
    /// `restart_step`).
    restart_requested: u64,
    restart_done: u64,
    restarting: Option<(u64, u64)>,
    /// When its `before_promotion` hook last refused the promotion it was
    /// asked (agent.rs `promotion_refused`).
    promotion_refused: Option<Ms>,
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
    /// The action at index `next` of plan `seq` ends (node, incarnation,
    /// plan seq, next).
    ActionDone(usize, u64, u64, usize),
    FenceTick(usize, u64),
    /// The node's fence guard looks at its lease (keeper/src/guard.rs):
    /// while the keeper is dead, or restarted and not answered yet.
    GuardTick(usize),
    Pump,
    HealthTick,
    HealthResult(i64, Health),
    HealthRoundEnd(Ms),
    ClientWrite,
    Fault,
    Heal(u64),
    EndLoss,
    EndSlow,
    EndHookRefusal(usize),
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
    /// Each node's fence guard: the lease its keeper last handed it, and
    /// whether its tick runs (the keeper's own fence covers the rest).
    guards: Vec<Lease>,
    guard_ticking: Vec<bool>,
    /// Active partitions: id → cut links.
    partitions: BTreeMap<u64, Vec<(Peer, Peer)>>,
    next_partition: u64,
    loss: f64,
    slow: bool,
    /// Each node's `before_promotion` hook refuses (a fault of its host's
    /// surroundings: the keeper's restart does not change it).
    hook_refuses: Vec<bool>,
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
    /// When the operator last forced a stuck election after the faults
    /// stopped, and how many times it did.
    last_force: Option<Ms>,
    forces_after_faults: u32,
    /// Whether the group's primary, when last seen, ran with synchronous
    /// replication.
    primary_had_sync: bool,
    /// The group's primary as last seen, and the one before it.
    current_primary: Option<usize>,
    previous_primary: Option<usize>,
    /// The nodes whose goal an operator command set last.
    operator_goal: Vec<bool>,
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
        violation: w.violation.clone(),
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
            lease: Lease {
                last_ok_sent: 0,
                current: S::Init,
                fence_set: Vec::new(),
                required: 0,
            },
            fenced: false,
            confirmed: false,
            primary: None,
            sync_names: String::new(),
            phase: Phase::Sleeping,
            step: 0,
            seq: 0,
            last_error: None,
            start_failures: 0,
            reloaded: false,
            stopping: None,
            stop_reply: None,
            paused: None,
            restart_requested: 0,
            restart_done: 0,
            restarting: None,
            promotion_refused: None,
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
            guards: vec![keeper.lease.clone(); n],
            guard_ticking: vec![false; n],
            keepers: vec![keeper; n],
            partitions: BTreeMap::new(),
            next_partition: 0,
            loss: 0.0,
            slow: false,
            hook_refuses: vec![false; n],
            faults_on: false,
            faults_over_at: None,
            settled: false,
            next_write: 1,
            pending: Vec::new(),
            acked_sync: Vec::new(),
            acked_by: Vec::new(),
            checked: vec![(u64::MAX, 0); n],
            data_loss_allowed: false,
            last_force: None,
            forces_after_faults: 0,
            primary_had_sync: false,
            current_primary: None,
            previous_primary: None,
            operator_goal: vec![false; n],
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
            Ev::ActionDone(i, inc, seq, n) => {
                let k = &self.keepers[i];
                if k.alive
                    && k.incarnation == inc
                    && matches!(k.phase, Phase::Acting { seq: s, next, .. } if s == seq && next == n)
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
            Ev::GuardTick(i) => self.guard_tick(i),
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
            Ev::EndHookRefusal(i) => {
                self.hook_refuses[i] = false;
                self.log(format!("{}: before_promotion hook accepts again", name(i)));
            }
            Ev::KeeperRestart(i) => self.keeper_restart(i),
            Ev::FaultsOver => self.faults_over(),
            Ev::Check => {
                self.periodic_check();
                self.after(250, Ev::Check);
            }
        }
    }
}

#[cfg(test)]
mod tests;
