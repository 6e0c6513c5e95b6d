//! The group state machine: a pure function of (the group's nodes as stored,
//! the time now, the settings) to the goal-state changes to make, each with
//! the reason that becomes an event. No I/O and no clock reads happen here.
//!
//! Rules are evaluated in this fixed priority order; each node gets at most
//! one new goal per evaluation, and later rules see the goals earlier rules
//! assigned. They are named, not numbered:
//!
//! - **init**: the first node becomes `single`; later ones `wait_standby`
//!   once there is a primary.
//! - **promotion steps** (`election.rs`): `prepare_promotion` →
//!   `stop_replication` → `wait_primary`; once the winner is promoted the
//!   other reporters `join_secondary`, then `secondary`.
//! - **failover start** (`election.rs`): the primary is unhealthy → its
//!   secondaries go `report_lsn` (an election); a primary whose keeper
//!   lives but whose PostgreSQL stays down — past
//!   `postgres_restart_timeout`, or after
//!   [`START_FAILURES_BEFORE_FAILOVER`] failed starts in a row — is also
//!   assigned `draining` at once. Within that allowance the group waits
//!   for the keeper to restart it.
//! - **failover cancelled** (`election.rs`): the primary is healthy again
//!   before anyone was promoted → the `report_lsn` nodes go back to
//!   `secondary`.
//! - **election** (`election.rs`, see [promotion rule](#the-promotion-rule)).
//! - **rejoin**: a `demoted` node becomes `catchingup` of the new primary
//!   (the keeper rewinds, or clones when rewind fails).
//! - **standbys**: `wait_standby` → `catchingup` once the primary allows
//!   it; `catchingup` → `secondary` once streaming and close enough;
//!   `secondary` → `catchingup` when it stops streaming or is unhealthy.
//! - **the primary**: `single` → `wait_primary` when a standby arrives;
//!   `wait_primary` → `primary` when a quorum standby is `secondary`
//!   (synchronous replication on); `primary` → `wait_primary` when no
//!   quorum standby is left and `number_sync_standbys` is 0 (writes go on
//!   without synchronous replication — availability over durability; with
//!   `number_sync_standbys` ≥ 1 the primary stays `primary` and writes wait).
//!
//! Every goal change carries a [`Reason`] and every wait a [`Wait`], each
//! with a stable `kind` (`reasons.rs`). The replication settings a primary
//! applies are in `replication_plan.rs`, the fence set stored for it in
//! `fence.rs`.
//!
//! # The promotion rule
//!
//! An isolated primary keeps serving only while at least `r` of the
//! standbys in its *fence set* `F` stream from it; otherwise it fences
//! itself within its fence timeout (DESIGN §4). The monitor stores `F` and
//! `r` exactly as it last sent them to the primary. It promotes only when
//! (a) the old primary confirmed it stopped (`draining`/`demoted` reached),
//! or (b) the fence deadline passed **and** at least `|F| − r + 1` members
//! of `F` reported, in `report_lsn`, that their stream is gone: then fewer
//! than `r` can still stream, so the old primary has fenced. A commit
//! acknowledged under `ANY r (F)` reached `r` members of `F`, and any
//! `|F| − r + 1` reporters include one of them, so the most advanced
//! reporter holds every acknowledged commit; the winner must be that
//! advanced. For `wait_primary` (synchronous replication off) `F` is every
//! other node and `r` is 1: the monitor must hear from all of them.
//! `single` has `r` = 0 and never fences: it has no standby to promote.
//!
//! When `F` changes, an election keeps counting what earlier sets held
//! until the new set holds the primary's commits ([`fence_update`],
//! [`NodeSnapshot::election_fence`]): `F` and `r` above are then
//! `F ∪ pending` and the smallest `r` in force since the change.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_proto::lsn::application_name;
use pgpilot_proto::ReplicationState as S;

/// The monitor's own connection check of a node's PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Unknown,
    Good,
    Bad,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Good => "good",
            Health::Bad => "bad",
        }
    }

    pub fn parse(s: &str) -> Health {
        match s {
            "good" => Health::Good,
            "bad" => Health::Bad,
            _ => Health::Unknown,
        }
    }
}

/// Timings a keeper runs with, as it reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeeperTimings {
    pub heartbeat_interval: Duration,
    pub fence_timeout: Duration,
    pub wal_sender_timeout: Duration,
}

/// One node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSnapshot {
    pub id: i64,
    pub name: String,
    pub reported: S,
    pub goal: S,
    pub pg_running: bool,
    pub lsn: u64,
    /// The timeline of the newest WAL it holds, as reported (0: not known).
    /// With `lsn` it places the node in the group's history: see
    /// [`NodeSnapshot::wal_end`].
    pub timeline: u32,
    pub wal_receiver_streaming: bool,
    /// When the node first reported its WAL receiver not streaming, while it
    /// has been so since (None while streaming).
    pub stream_lost_at: Option<DateTime<Utc>>,
    /// When the keeper first reported PostgreSQL not running (None while running).
    pub pg_down_since: Option<DateTime<Utc>>,
    /// When the keeper first reported PostgreSQL running, while it has been
    /// so since (None while down, or not known).
    pub pg_running_since: Option<DateTime<Utc>>,
    /// Failed attempts in a row to start PostgreSQL, as the keeper last
    /// reported them (0 while it runs, or from a keeper that does not count).
    pub pg_start_failures: u32,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub health: Health,
    pub candidate_priority: u32,
    pub replication_quorum: bool,
    /// Its apply delay (`recovery_min_apply_delay` as a standby), in
    /// milliseconds; 0: not delayed. A delayed node is never promoted nor
    /// counted for synchronous commit, whatever its priority and quorum
    /// say: see [`NodeSnapshot::may_be_promoted`],
    /// [`NodeSnapshot::counts_for_quorum`].
    pub apply_delay_ms: u64,
    pub timings: KeeperTimings,
    /// Primary only: the standbys (names) it was last told to count, and how
    /// many of them must stream for it to keep serving while isolated.
    pub fence_set: Vec<String>,
    pub fence_required: u32,
    /// Primary only: what an election must still count beyond the fence
    /// set, from before its last change (see [`fence_update`]).
    pub fence_pending: FencePending,
    /// The fence quorum its keeper's lease held at its last heartbeat, as
    /// it said (None: not said). `Some(0)`: it may not fence at all.
    pub fence_required_held: Option<u32>,
    /// When its keeper built the last heartbeat folded in (None: not said).
    pub heard_sent: Option<KeeperClock>,
    /// Its keeper's `before_promotion` hook refused the promotion it was
    /// asked, and it has stayed in the election since (`report_lsn`,
    /// `fast_forward`): elected again only when no other candidate can be.
    pub promotion_refused: bool,
    /// The standby it is to stream from instead of the primary (a
    /// cascading standby, `set-upstream`), by name; see
    /// `crate::core::cascade`.
    pub upstream: Option<String>,
}

/// When a keeper built a heartbeat: its host's boot and CLOCK_BOOTTIME.
/// Heartbeats of one boot are ordered by `ns`; of different boots, not at
/// all (a reboot outlives any heartbeat in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeeperClock {
    pub boot: u128,
    pub ns: u64,
}

impl KeeperClock {
    /// Built no later than `other`, on the same boot.
    pub fn not_after(self, other: KeeperClock) -> bool {
        self.boot == other.boot && self.ns <= other.ns
    }

    /// From a heartbeat's `keeper_boot_id` (32 hex digits, dashes allowed)
    /// and `sent_at_ns`: None when either is not said, an error sentence
    /// when the boot id is malformed.
    pub fn from_wire(boot_id: &str, ns: u64) -> Result<Option<KeeperClock>, String> {
        if boot_id.is_empty() || ns == 0 {
            return Ok(None);
        }
        if ns > i64::MAX as u64 {
            return Err(format!(
                "sent_at_ns {ns} is out of range: send CLOCK_BOOTTIME in nanoseconds"
            ));
        }
        let hex: String = boot_id.chars().filter(|&c| c != '-').collect();
        let boot = (hex.len() == 32)
            .then(|| u128::from_str_radix(&hex, 16).ok())
            .flatten()
            .ok_or_else(|| {
                format!(
                    "keeper_boot_id {} is not a boot id: send the 32 hex digits of /proc/sys/kernel/random/boot_id, or nothing",
                    crate::names::quote(boot_id)
                )
            })?;
        Ok(Some(KeeperClock { boot, ns }))
    }

    /// The boot id as stored: 32 lower-case hex digits.
    pub fn boot_hex(&self) -> String {
        format!("{:032x}", self.boot)
    }
}

/// What one heartbeat tells the state machine about its node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub reported: S,
    pub pg_running: bool,
    pub lsn: u64,
    pub timeline: u32,
    pub wal_receiver_streaming: bool,
    pub pg_start_failures: u32,
    pub timings: KeeperTimings,
    /// Primary side: the fence quorum the keeper's lease holds (None: not
    /// reported).
    pub fence_required_held: Option<u32>,
    /// When the keeper built it (None: not said).
    pub sent: Option<KeeperClock>,
    /// The keeper's `before_promotion` hook refused the promotion asked.
    pub promotion_refused: bool,
    /// A keepalive: the goal of the plan under way (None from the loop).
    pub acting_toward: Option<S>,
}

impl NodeSnapshot {
    /// A node just registered: in `init`, nothing heard from it yet.
    pub fn registered(
        id: i64,
        name: &str,
        candidate_priority: u32,
        replication_quorum: bool,
        timings: KeeperTimings,
    ) -> NodeSnapshot {
        NodeSnapshot {
            id,
            name: name.to_string(),
            reported: S::Init,
            goal: S::Init,
            pg_running: false,
            lsn: 0,
            timeline: 0,
            wal_receiver_streaming: false,
            stream_lost_at: None,
            pg_down_since: None,
            pg_running_since: None,
            pg_start_failures: 0,
            last_heartbeat: None,
            health: Health::Unknown,
            candidate_priority,
            replication_quorum,
            apply_delay_ms: 0,
            timings,
            fence_set: Vec::new(),
            fence_required: 0,
            fence_pending: FencePending::default(),
            fence_required_held: None,
            heard_sent: None,
            promotion_refused: false,
            upstream: None,
        }
    }

    /// Where its WAL ends, ordered as elections compare nodes: the later
    /// timeline first, then the higher LSN. WAL on an older timeline past
    /// the point where a newer one forked was never acknowledged under
    /// synchronous replication (the node promoted onto the newer timeline
    /// held every such commit), so a node holding it is behind, whatever
    /// its LSN: it must be rewound, never followed.
    pub fn wal_end(&self) -> (u32, u64) {
        (self.timeline, self.lsn)
    }

    /// Fold a heartbeat heard at `now` in, tracking since when the WAL
    /// receiver and PostgreSQL have been down.
    pub fn heard(&mut self, r: &Report, now: DateTime<Utc>) {
        self.reported = r.reported;
        self.pg_running = r.pg_running;
        self.lsn = r.lsn;
        self.timeline = r.timeline;
        self.wal_receiver_streaming = r.wal_receiver_streaming;
        self.stream_lost_at = if r.wal_receiver_streaming {
            None
        } else {
            self.stream_lost_at.or(Some(now))
        };
        self.pg_down_since = if r.pg_running {
            None
        } else {
            self.pg_down_since.or(Some(now))
        };
        self.pg_running_since = if r.pg_running {
            self.pg_running_since.or(Some(now))
        } else {
            None
        };
        self.pg_start_failures = if r.pg_running { 0 } else { r.pg_start_failures };
        self.last_heartbeat = Some(now);
        self.timings = r.timings;
        self.fence_required_held = r.fence_required_held;
        self.heard_sent = r.sent;
        // A refusal is said while the keeper is asked to promote; it is
        // remembered for as long as the node stays in the election, so that
        // the next election passes it over — unless its keeper is heard
        // carrying out the promotion's plan (its hook runs, or accepted).
        self.promotion_refused = r.promotion_refused
            || (self.promotion_refused
                && matches!(r.reported, S::ReportLsn | S::FastForward)
                && r.acting_toward != Some(S::PreparePromotion));
    }
}

/// Settings the state machine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A keeper silent this long (and failing the health check) is unhealthy.
    pub node_timeout: Duration,
    /// A keeper that heartbeats and reports its PostgreSQL down (stopped,
    /// or still starting: crash recovery) gets this long to bring it back
    /// before the election starts; see the config's
    /// `DEFAULT_POSTGRES_RESTART_TIMEOUT` for the trade-off.
    pub postgres_restart_timeout: Duration,
    /// Added to the fence deadline for clock rate differences and stop time.
    pub fence_margin: Duration,
    /// A `catchingup` standby this close (bytes) to its primary becomes `secondary`.
    pub catchup_lag_bytes: u64,
    pub number_sync_standbys: u32,
    /// When an operator allowed an election to finish without the promotion
    /// rule's quorum of reports (`perform-failover --allow-data-loss`).
    pub election_forced_at: Option<DateTime<Utc>>,
    /// The formation is paused: no failover starts (an election already
    /// under way, an operator's switchover and every standby rule go on).
    pub paused: bool,
}

pub const DEFAULT_CATCHUP_LAG_BYTES: u64 = 16 * 1024 * 1024;

/// Failed starts in a row after which a live keeper's PostgreSQL counts as
/// unable to start, and the election begins without waiting out
/// `postgres_restart_timeout`. Not 1: right after a crash a first start can
/// fail for a passing reason (backends of the dead postmaster still hold
/// its shared memory for a moment), and the keeper retries every heartbeat
/// interval, so three failures take about two seconds — a server that
/// fails that often does not come back by itself (bad configuration, full
/// disk, damaged data directory).
pub const START_FAILURES_BEFORE_FAILOVER: u32 = 3;

/// A planned hand-over of the primary: it stops, then a standby is promoted.
pub fn is_handing_over(state: S) -> bool {
    matches!(state, S::Draining | S::PrepareMaintenance)
}

/// Where a fast-forwarding node fetches its missing WAL: the most advanced
/// other running standby.
pub fn fast_forward_source(nodes: &[NodeSnapshot], i: usize) -> Option<usize> {
    (0..nodes.len())
        .filter(|&j| {
            j != i
                && nodes[j].pg_running
                && matches!(
                    nodes[j].goal,
                    S::ReportLsn
                        | S::JoinSecondary
                        | S::Secondary
                        | S::Catchingup
                        | S::WaitMaintenance
                )
        })
        .max_by_key(|&j| (nodes[j].wal_end(), -nodes[j].id))
}

/// One goal change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub node_id: i64,
    pub from: S,
    pub to: S,
    pub reason: Reason,
}

/// What one evaluation decided, and why the group waits when it does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub decisions: Vec<Decision>,
    pub waiting: Vec<Wait>,
}

struct Eval<'a> {
    nodes: Vec<NodeSnapshot>,
    changed: Vec<bool>,
    now: DateTime<Utc>,
    settings: &'a Settings,
    out: Outcome,
}

/// Evaluate the rules for one group.
pub fn decide(nodes: &[NodeSnapshot], now: DateTime<Utc>, settings: &Settings) -> Outcome {
    let mut eval = Eval {
        nodes: nodes
            .iter()
            .filter(|n| n.goal != S::Dropped)
            .cloned()
            .collect(),
        changed: vec![false; nodes.len()],
        now,
        settings,
        out: Outcome::default(),
    };
    eval.changed.truncate(eval.nodes.len());
    eval.init_rules();
    eval.promotion_rules();
    eval.failover_rules();
    eval.rejoin_rules();
    eval.standby_rules();
    eval.primary_rules();
    eval.out
}

impl Eval<'_> {
    fn assign(&mut self, i: usize, to: S, reason: Reason) {
        if self.changed[i] || self.nodes[i].goal == to {
            return;
        }
        let node = &mut self.nodes[i];
        self.out.decisions.push(Decision {
            node_id: node.id,
            from: node.goal,
            to,
            reason,
        });
        node.goal = to;
        self.changed[i] = true;
    }

    fn wait(&mut self, why: Wait) {
        self.out.waiting.push(why);
    }

    fn since(&self, t: Option<DateTime<Utc>>) -> Option<Duration> {
        t.map(|t| (self.now - t).to_std().unwrap_or(Duration::ZERO))
    }

    /// The keeper heartbeats within the node timeout.
    fn alive(&self, i: usize) -> bool {
        self.since(self.nodes[i].last_heartbeat)
            .is_some_and(|age| age <= self.settings.node_timeout)
    }

    /// Unhealthy: the keeper silent past the timeout *and* the monitor's own
    /// check of PostgreSQL failing; or the keeper alive but PostgreSQL down
    /// for longer than the timeout.
    fn unhealthy(&self, i: usize) -> Option<String> {
        let node = &self.nodes[i];
        if !self.alive(i) && node.health == Health::Bad {
            let age = self
                .since(node.last_heartbeat)
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or_else(|| "never".into());
            return Some(format!(
                "keeper silent for {age} and PostgreSQL not answering"
            ));
        }
        None
    }

    /// Why the live keeper of node `i` no longer gets time to restart its
    /// PostgreSQL: down past `postgres_restart_timeout`, or too many failed
    /// starts in a row. None while it runs, while its keeper is silent
    /// (that is [`Self::unhealthy`]'s case), or within the allowance.
    fn pg_down_too_long(&self, i: usize) -> Option<String> {
        let node = &self.nodes[i];
        if !self.alive(i) || node.pg_running {
            return None;
        }
        let down = self.since(node.pg_down_since).unwrap_or(Duration::ZERO);
        let allowance = self.settings.postgres_restart_timeout;
        if node.pg_start_failures >= START_FAILURES_BEFORE_FAILOVER {
            Some(format!(
                "{} attempts to start it failed in a row",
                node.pg_start_failures
            ))
        } else if down > allowance {
            Some(format!(
                "down for {} ms, longer than postgres_restart_timeout {} ms",
                down.as_millis(),
                allowance.as_millis()
            ))
        } else {
            None
        }
    }

    /// The group waits while the live keeper of primary `p` restarts its
    /// PostgreSQL (the allowance of [`Self::pg_down_too_long`]).
    fn wait_for_restart(&mut self, p: usize) {
        let node = &self.nodes[p];
        if !self.alive(p) || node.pg_running {
            return;
        }
        let down = self.since(node.pg_down_since).unwrap_or(Duration::ZERO);
        let left = self.settings.postgres_restart_timeout.saturating_sub(down);
        let why = Wait::PrimaryRestarting {
            primary: node.name.clone(),
            down_ms: down.as_millis(),
            start_failures: node.pg_start_failures,
            left_ms: left.as_millis(),
        };
        self.wait(why);
    }

    fn reached(&self, i: usize) -> bool {
        self.nodes[i].reported == self.nodes[i].goal
    }

    /// The node the group treats as its primary: goal on the primary side;
    /// during an election, the old primary already assigned `demoted` (its
    /// PostgreSQL stayed down while its keeper lived) — the election is
    /// still about it.
    fn primary(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.goal.is_writable_primary() || is_handing_over(n.goal))
            .or_else(|| self.demoted_primary())
    }

    /// The old primary of an election under way whose goal is already
    /// `demoted`: the one still on its way there, else the one heard last.
    fn demoted_primary(&self) -> Option<usize> {
        if !self.nodes.iter().any(|n| n.goal == S::ReportLsn) {
            return None;
        }
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].goal == S::Demoted)
            .max_by_key(|&i| {
                (
                    self.nodes[i].reported != S::Demoted,
                    self.nodes[i].last_heartbeat,
                    -self.nodes[i].id,
                )
            })
    }

    /// Where a fast-forwarding node's WAL must reach: the most advanced
    /// other standby's end (see [`NodeSnapshot::wal_end`]).
    fn fast_forward_target(&self, i: usize) -> (u32, u64) {
        fast_forward_source(&self.nodes, i)
            .map(|s| self.nodes[s].wal_end())
            .unwrap_or((0, 0))
    }

    fn writable_primary_reached(&self) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].goal.is_writable_primary() && self.reached(i))
    }

    fn name(&self, i: usize) -> String {
        self.nodes[i].name.clone()
    }

    fn init_rules(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].goal != S::Init {
                continue;
            }
            let nobody_past_init = self
                .nodes
                .iter()
                .all(|n| n.goal == S::Init || n.goal == S::Single && n.id == self.nodes[i].id);
            let first_init = self
                .nodes
                .iter()
                .filter(|n| n.goal == S::Init)
                .map(|n| n.id)
                .min()
                == Some(self.nodes[i].id);
            if nobody_past_init && first_init {
                self.assign(i, S::Single, Reason::FirstNode);
            } else if let Some(p) = self.writable_primary_reached() {
                let primary = self.name(p);
                self.assign(i, S::WaitStandby, Reason::JoinAsStandby { primary });
            } else {
                let node = self.name(i);
                self.wait(Wait::NoPrimaryToJoin { node });
            }
        }
    }

    fn rejoin_rules(&mut self) {
        let Some(np) = (0..self.nodes.len()).find(|&i| {
            matches!(self.nodes[i].reported, S::WaitPrimary | S::Primary)
                && self.nodes[i].goal.is_writable_primary()
        }) else {
            return;
        };
        for i in 0..self.nodes.len() {
            if i != np && self.nodes[i].goal == S::Demoted && self.reached(i) {
                let primary = self.name(np);
                self.assign(i, S::Catchingup, Reason::Rejoin { primary });
            }
        }
    }

    fn standby_rules(&mut self) {
        let Some(p) = self.writable_primary_reached() else {
            return;
        };
        let primary_name = self.name(p);
        let primary_lsn = self.nodes[p].lsn;
        let primary_ok = self.alive(p) && self.nodes[p].pg_running;
        // A standby's stream counts as lost only from when the primary's
        // PostgreSQL last came up: while a crashed primary was restarted
        // (see `postgres_restart_timeout`) no standby could stream.
        let primary_up_since = self.nodes[p].pg_running_since;
        for i in 0..self.nodes.len() {
            if i == p || !self.reached(i) {
                continue;
            }
            match self.nodes[i].goal {
                S::WaitStandby
                    if matches!(
                        self.nodes[p].reported,
                        S::WaitPrimary | S::Primary | S::JoinPrimary
                    ) =>
                {
                    self.assign(
                        i,
                        S::Catchingup,
                        Reason::CloneFromPrimary {
                            primary: primary_name.clone(),
                        },
                    );
                }
                S::WaitMaintenance => {
                    // Neither the primary nor an election about it counts
                    // it any more: safe to stop.
                    let app = application_name(self.nodes[i].id);
                    if !self.nodes[p].election_fence(&self.nodes).0.contains(&app) || !self.alive(p)
                    {
                        self.assign(i, S::Maintenance, Reason::MaintenanceReady);
                    }
                }
                S::Catchingup => {
                    let node = &self.nodes[i];
                    let lag = primary_lsn.saturating_sub(node.lsn);
                    if self.alive(i)
                        && node.wal_receiver_streaming
                        && lag <= self.settings.catchup_lag_bytes
                    {
                        self.assign(i, S::Secondary, Reason::CaughtUp { lag_bytes: lag });
                    }
                }
                S::Secondary => {
                    let why = if let Some(why) = self.unhealthy(i) {
                        Some(why)
                    } else if primary_ok
                        && self
                            .since(
                                self.nodes[i]
                                    .stream_lost_at
                                    .map(|lost| primary_up_since.map_or(lost, |up| lost.max(up))),
                            )
                            .is_some_and(|d| d > self.settings.node_timeout)
                    {
                        Some(format!("not streaming from {primary_name}"))
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        self.assign(i, S::Catchingup, Reason::StandbyLost { why });
                    }
                }
                _ => {}
            }
        }
    }

    fn primary_rules(&mut self) {
        let Some(p) = self.writable_primary_reached() else {
            return;
        };
        let standbys = (0..self.nodes.len()).filter(|&i| i != p);
        let quorum_secondary = standbys.clone().find(|&i| {
            self.nodes[i].counts_for_quorum()
                && self.nodes[i].goal == S::Secondary
                && self.reached(i)
        });
        match self.nodes[p].goal {
            S::Single => {
                if let Some(i) = standbys
                    .clone()
                    .find(|&i| self.nodes[i].goal == S::WaitStandby)
                {
                    let standby = self.name(i);
                    self.assign(p, S::WaitPrimary, Reason::AcceptStandby { standby });
                }
            }
            S::ApplySettings => {
                self.assign(p, S::Primary, Reason::SettingsApplied);
            }
            S::WaitPrimary => {
                if let Some(i) = quorum_secondary {
                    let standby = self.name(i);
                    self.assign(p, S::Primary, Reason::SyncReplicationOn { standby });
                }
            }
            S::Primary => {
                // Standbys in an election still count: the primary keeps its
                // goal until the election ends one way or the other.
                let any_quorum_secondary = standbys.clone().any(|i| {
                    self.nodes[i].counts_for_quorum()
                        && matches!(self.nodes[i].goal, S::Secondary | S::ReportLsn)
                });
                if !any_quorum_secondary && self.settings.number_sync_standbys == 0 && self.alive(p)
                {
                    self.assign(p, S::WaitPrimary, Reason::NoQuorumStandby);
                }
            }
            _ => {}
        }
    }
}

/// Refuse settings that would leave the group unable to meet its own quorum
/// or to promote anyone. `nodes` is the group as it would be.
pub fn check_settings(nodes: &[NodeSnapshot], number_sync_standbys: u32) -> Result<(), String> {
    let standbys: Vec<&NodeSnapshot> = nodes
        .iter()
        .filter(|n| {
            n.goal != S::Dropped && !n.goal.is_writable_primary() && !is_handing_over(n.goal)
        })
        .collect();
    let quorum = standbys.iter().filter(|n| n.counts_for_quorum()).count() as u32;
    if number_sync_standbys > 0 && number_sync_standbys > quorum.saturating_sub(1) {
        return Err(format!(
            "number_sync_standbys = {number_sync_standbys} needs at least {} quorum standbys and the group would have {quorum}: writes would stop as soon as one standby fails; add standbys or lower number_sync_standbys",
            number_sync_standbys + 1
        ));
    }
    let electing: Vec<&&NodeSnapshot> = standbys
        .iter()
        .filter(|n| {
            matches!(
                n.goal,
                S::ReportLsn | S::FastForward | S::PreparePromotion | S::StopReplication
            )
        })
        .collect();
    if let Some(n) = electing.iter().find(|n| {
        !n.may_be_promoted()
            && matches!(
                n.goal,
                S::FastForward | S::PreparePromotion | S::StopReplication
            )
    }) {
        return Err(format!(
            "{} is being promoted: its candidate priority cannot drop to 0 (nor can it be delayed) before the promotion is over",
            n.name
        ));
    }
    if !electing.is_empty() && electing.iter().all(|n| !n.may_be_promoted()) {
        return Err(
            "an election is under way and no standby taking part in it could be promoted (each would have candidate priority 0 or an apply delay), so it could never finish: wait until it is over".into(),
        );
    }
    if !standbys.is_empty() && standbys.iter().all(|n| !n.may_be_promoted()) {
        return Err(
            "every standby would have candidate priority 0 or an apply delay, so no one could be promoted if the primary failed: keep at least one undelayed standby above 0".into(),
        );
    }
    Ok(())
}

mod election;
mod fence;
mod reasons;
mod replication_plan;
mod roles;

pub use fence::{fence_update, FencePending, NodeFence, COVER_AT_NEXT_HEARTBEAT};
pub use reasons::{Reason, Wait};
pub use replication_plan::{replication_plan, ReplicationPlan};

#[cfg(test)]
mod tests;
