//! The group state machine: a pure function of (the group's nodes as stored,
//! the time now, the settings) to the goal-state changes to make, each with
//! the reason that becomes an event. No I/O and no clock reads happen here.
//!
//! Rules are evaluated in this fixed priority order; each node gets at most
//! one new goal per evaluation, and later rules see the goals earlier rules
//! assigned:
//!
//! 1. `init`: the first node becomes `single`; later ones `wait_standby`
//!    once there is a primary.
//! 2. Promotion steps: `prepare_promotion` → `stop_replication` →
//!    `wait_primary`; once the winner is promoted the other reporters
//!    `join_secondary`, then `secondary`.
//! 3. Failover start: the primary is unhealthy → its secondaries go
//!    `report_lsn` (an election); a primary whose keeper lives but whose
//!    PostgreSQL stays down — past `postgres_restart_timeout`, or after
//!    [`START_FAILURES_BEFORE_FAILOVER`] failed starts in a row — is also
//!    assigned `draining` at once. Within that allowance the group waits
//!    for the keeper to restart it.
//! 4. Failover cancelled: the primary is healthy again before anyone was
//!    promoted → the `report_lsn` nodes go back to `secondary`.
//! 5. Election (see [promotion rule](#the-promotion-rule)).
//! 6. Rejoin: a `demoted` node becomes `catchingup` of the new primary
//!    (the keeper rewinds, or clones when rewind fails).
//! 7. Standbys: `wait_standby` → `catchingup` once the primary allows it;
//!    `catchingup` → `secondary` once streaming and close enough;
//!    `secondary` → `catchingup` when it stops streaming or is unhealthy.
//! 8. The primary: `single` → `wait_primary` when a standby arrives;
//!    `wait_primary` → `primary` when a quorum standby is `secondary`
//!    (synchronous replication on); `primary` → `wait_primary` when no
//!    quorum standby is left and `number_sync_standbys` is 0 (writes go on
//!    without synchronous replication — availability over durability; with
//!    `number_sync_standbys` ≥ 1 the primary stays `primary` and writes wait).
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
    pub timings: KeeperTimings,
    /// Primary only: the standbys (names) it was last told to count, and how
    /// many of them must stream for it to keep serving while isolated.
    pub fence_set: Vec<String>,
    pub fence_required: u32,
    /// Primary only: what an election must still count beyond the fence
    /// set, from before its last change (see [`fence_update`]).
    pub fence_pending: FencePending,
}

/// Members and quorum of earlier fence sets that an election still counts
/// until the current set holds the commits acknowledged under them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FencePending {
    /// Names that left the fence set (and the primary's own, for a primary
    /// whose commits may so far be on no member of its fence set).
    pub names: Vec<String>,
    /// The smallest `r` in force since the change.
    pub required: u32,
    /// The primary's LSN at the latest change; `None` when nothing is
    /// pending. The pending part is dropped once `r` members of the fence
    /// set stream and report an LSN at least this far.
    pub cover_lsn: Option<u64>,
}

impl NodeSnapshot {
    /// The fence set and quorum an election about this (old) primary
    /// counts, given the group as it is now: its fence set, and what is
    /// still pending from earlier ones unless `r` members of the set now
    /// hold the primary's commits up to the pending LSN (the primary, once
    /// stopped, no longer heartbeats to drop it).
    pub fn election_fence(&self, nodes: &[NodeSnapshot]) -> (Vec<String>, u32) {
        let pending = &self.fence_pending;
        let covered = pending
            .cover_lsn
            .filter(|&l| l != COVER_AT_NEXT_HEARTBEAT)
            .is_some_and(|l| fence_covered(nodes, &self.fence_set, self.fence_required, l));
        if pending.cover_lsn.is_none() || covered {
            return (self.fence_set.clone(), self.fence_required);
        }
        let mut names = self.fence_set.clone();
        for name in &pending.names {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        (names, self.fence_required.min(pending.required))
    }
}

/// What one heartbeat tells the state machine about its node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub reported: S,
    pub pg_running: bool,
    pub lsn: u64,
    pub wal_receiver_streaming: bool,
    pub pg_start_failures: u32,
    pub timings: KeeperTimings,
}

impl NodeSnapshot {
    /// Fold a heartbeat heard at `now` in, tracking since when the WAL
    /// receiver and PostgreSQL have been down.
    pub fn heard(&mut self, r: &Report, now: DateTime<Utc>) {
        self.reported = r.reported;
        self.pg_running = r.pg_running;
        self.lsn = r.lsn;
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
                    S::ReportLsn | S::JoinSecondary | S::Secondary | S::Catchingup
                )
        })
        .max_by_key(|&j| (nodes[j].lsn, -nodes[j].id))
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

    /// The LSN a fast-forwarding node must reach: the most advanced other
    /// standby's.
    fn fast_forward_target(&self, i: usize) -> u64 {
        fast_forward_source(&self.nodes, i)
            .map(|s| self.nodes[s].lsn)
            .unwrap_or(0)
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

    fn failover_rules(&mut self) {
        if self.nodes.iter().any(|n| {
            matches!(
                n.goal,
                S::FastForward | S::PreparePromotion | S::StopReplication
            )
        }) {
            // An election was decided; the promotion rules carry it out.
            return;
        }
        let Some(p) = self.primary() else { return };
        let primary = self.name(p);
        let electing: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].goal == S::ReportLsn)
            .collect();

        if is_handing_over(self.nodes[p].goal) {
            // Planned failover: the election completes once the primary stopped.
            if self.reached(p) {
                self.elect(p, &electing, "the old primary stopped cleanly");
            } else {
                self.wait(Wait::PrimaryStopping { primary });
            }
            return;
        }

        let why_unhealthy = self.unhealthy(p);
        let pg_down = self.pg_down_too_long(p);

        if electing.is_empty() {
            if why_unhealthy.is_none() && pg_down.is_none() {
                self.wait_for_restart(p);
                return;
            }
            let candidates: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    i != p && self.nodes[i].goal == S::Secondary && self.reached(i) && self.alive(i)
                })
                .collect();
            if !candidates
                .iter()
                .any(|&i| self.nodes[i].candidate_priority > 0)
            {
                self.wait(Wait::NoCandidate { primary });
                return;
            }
            let reason = match (&why_unhealthy, &pg_down) {
                (Some(why), _) => Reason::PrimaryUnhealthy {
                    primary: primary.clone(),
                    why: why.clone(),
                },
                (None, why) => Reason::PrimaryPostgresDown {
                    primary: primary.clone(),
                    why: why.clone().unwrap_or_default(),
                },
            };
            for &i in &candidates {
                self.assign(i, S::ReportLsn, reason.clone());
            }
            if pg_down.is_some() && why_unhealthy.is_none() {
                // The keeper lives: it stops PostgreSQL and confirms, which
                // lets the election finish by rule (a). `draining`, as in a
                // planned failover, so that it stays the group's primary
                // (the node the standbys are told to follow) until then.
                self.assign(p, S::Draining, reason);
            }
            return;
        }

        // An election is under way. It is cancelled only while the primary
        // keeps its role: once it was told to demote, it must go on.
        if why_unhealthy.is_none()
            && pg_down.is_none()
            && self.alive(p)
            && self.nodes[p].goal != S::Demoted
        {
            for &i in &electing {
                self.assign(
                    i,
                    S::Secondary,
                    Reason::PrimaryBack {
                        primary: primary.clone(),
                    },
                );
            }
            return;
        }
        if let (None, Some(why)) = (&why_unhealthy, &pg_down) {
            // The election began while the keeper was silent; now it is
            // heard, with PostgreSQL still down past the allowance. Its
            // heartbeats keep moving the fence deadline, so rule (b) would
            // never be met: have it stop and confirm, as when the election
            // starts this way.
            if self.nodes[p].goal.is_writable_primary() {
                let reason = Reason::PrimaryPostgresDown {
                    primary: primary.clone(),
                    why: why.clone(),
                };
                self.assign(p, S::Draining, reason);
            }
        }
        self.elect(p, &electing, "the fence deadline passed");
    }

    /// Rule 4: promote one of the `report_lsn` nodes when the promotion rule
    /// allows it.
    fn elect(&mut self, p: usize, electing: &[usize], rule_b: &'static str) {
        let primary = self.name(p);
        let confirmed = self.reached(p)
            && matches!(
                self.nodes[p].goal,
                S::Draining | S::PrepareMaintenance | S::Demoted
            );
        // Reporters: in report_lsn, alive, and not streaming.
        let reporters: Vec<usize> = electing
            .iter()
            .copied()
            .filter(|&i| {
                self.nodes[i].reported == S::ReportLsn
                    && self.alive(i)
                    && self.nodes[i].pg_running
                    && !self.nodes[i].wal_receiver_streaming
            })
            .collect();
        if electing.is_empty() {
            if confirmed {
                self.wait(Wait::NoStandbyInElection { primary });
            }
            return;
        }
        // Every live candidate takes part: the highest priority must not
        // lose for being a heartbeat late.
        let late: Vec<String> = electing
            .iter()
            .filter(|&&i| !reporters.contains(&i) && self.alive(i) && self.nodes[i].pg_running)
            .map(|&i| self.name(i))
            .collect();
        if reporters.is_empty() || !late.is_empty() {
            self.wait(Wait::AwaitingReports { late, primary });
            return;
        }

        // Standbys whose LSN the election takes into account: every
        // reporter, and any other live standby whose PostgreSQL runs and
        // no longer streams.
        let considered = |i: usize| {
            i != p
                && (reporters.contains(&i)
                    || (self.alive(i)
                        && self.nodes[i].pg_running
                        && self.nodes[i].reported.is_following()
                        && !self.nodes[i].wal_receiver_streaming))
        };
        let (fence_set, required) = self.nodes[p].election_fence(&self.nodes);
        let fence_set = &fence_set;
        let required = required as usize;
        // Members of the fence set whose stream is gone and whose LSN is
        // known: a commit acknowledged under ANY r (F) is on one of any
        // |F| − r + 1 of them, whether the old primary stopped or fenced.
        // A member still reporting `demoted` (an older primary that has not
        // rejoined yet) or `init` never received this primary's WAL: it
        // counts without an LSN. (Not `wait_standby`: a standby being
        // rebuilt keeps its old data until the clone replaces it.)
        let in_set: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                i != p
                    && fence_set.contains(&application_name(n.id))
                    && n.stream_lost_at.is_some()
                    && (considered(i)
                        || (self.alive(i)
                            && !n.wal_receiver_streaming
                            && matches!(n.reported, S::Demoted | S::Init)))
            })
            .collect();
        let reporting_in_set = in_set.len();
        let needed = (fence_set.len() + 1).saturating_sub(required);
        // The operator's override counts only for this outage.
        let forced = self
            .settings
            .election_forced_at
            .is_some_and(|at| self.nodes[p].last_heartbeat.is_none_or(|hb| at > hb));
        let short = reporting_in_set < needed;
        if confirmed {
            // A reporter may have streamed again from the old primary
            // (restarted by its keeper before it heard it must stop) after
            // it reported: only reports made after the stop count.
            let stopped = self.nodes[p].pg_down_since.or(self.nodes[p].last_heartbeat);
            let stale: Vec<String> = reporters
                .iter()
                .filter(|&&i| {
                    stopped.is_some_and(|t| self.nodes[i].last_heartbeat.is_none_or(|hb| hb < t))
                })
                .map(|&i| self.name(i))
                .collect();
            if !stale.is_empty() {
                self.wait(Wait::AwaitingReportsAfterStop { stale, primary });
                return;
            }
        }
        let rule: &'static str = if confirmed {
            if required > 0 && short && !forced {
                self.wait(Wait::ElectionStuck {
                    primary,
                    primary_stopped: true,
                    reporting: reporting_in_set,
                    needed,
                });
                return;
            }
            if required > 0 && short {
                "forced by the operator: acknowledged commits may be lost"
            } else {
                "the old primary confirmed it stopped"
            }
        } else {
            if (required == 0 || short) && !forced {
                self.wait(Wait::ElectionStuck {
                    primary,
                    primary_stopped: false,
                    reporting: reporting_in_set,
                    needed,
                });
                return;
            }
            let deadline = self.fence_deadline(p, &reporters, &in_set);
            if self.now < deadline {
                let ms = (deadline - self.now).num_milliseconds();
                self.wait(Wait::FenceDeadline { primary, ms });
                return;
            }
            if short {
                "forced by the operator: acknowledged commits may be lost"
            } else {
                rule_b
            }
        };

        // The most advanced standby whose stream is gone: every reporter,
        // and any other running standby that is no longer streaming.
        let most_advanced = (0..self.nodes.len())
            .filter(|&i| considered(i))
            .max_by_key(|&i| (self.nodes[i].lsn, -self.nodes[i].id))
            .expect("reporters is not empty");
        let max_lsn = self.nodes[most_advanced].lsn;
        // Highest candidate priority, then most advanced, then lowest id.
        let winner = reporters
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].candidate_priority > 0)
            .max_by_key(|&i| {
                (
                    self.nodes[i].candidate_priority,
                    self.nodes[i].lsn,
                    -self.nodes[i].id,
                )
            });
        let Some(w) = winner else {
            self.wait(Wait::NoEligibleReporter { max_lsn });
            return;
        };
        let new_primary = self.name(w);
        let elected = Reason::Elected {
            lsn: self.nodes[w].lsn,
            reporters: reporters.len(),
            rule,
        };
        if self.nodes[w].lsn < max_lsn {
            let from = self.name(most_advanced);
            self.assign(
                w,
                S::FastForward,
                Reason::FastForward { from, lsn: max_lsn },
            );
        } else {
            self.assign(w, S::PreparePromotion, elected);
        }
        match self.nodes[p].goal {
            S::PrepareMaintenance => self.assign(
                p,
                S::Maintenance,
                Reason::OldPrimaryReplaced { new_primary },
            ),
            S::Demoted => {}
            _ => self.assign(p, S::Demoted, Reason::OldPrimaryReplaced { new_primary }),
        }
    }

    /// The latest moment the old primary can still accept writes: its last
    /// heartbeat plus its fence timeout, or the loss of the reporters'
    /// streams plus wal_sender_timeout, whichever is later, plus one keeper
    /// loop and a margin.
    fn fence_deadline(&self, p: usize, reporters: &[usize], in_set: &[usize]) -> DateTime<Utc> {
        let node = &self.nodes[p];
        let t = node.timings;
        let from_heartbeat = node.last_heartbeat.unwrap_or(self.now) + t.fence_timeout;
        let from_stream = reporters
            .iter()
            .chain(in_set)
            .filter_map(|&i| self.nodes[i].stream_lost_at)
            .max()
            .map(|lost| lost + t.wal_sender_timeout)
            .unwrap_or(from_heartbeat);
        from_heartbeat.max(from_stream) + t.heartbeat_interval + self.settings.fence_margin
    }

    fn promotion_rules(&mut self) {
        for i in 0..self.nodes.len() {
            if !self.reached(i) {
                continue;
            }
            match self.nodes[i].goal {
                S::FastForward => {
                    // The target is only known while every other standby of
                    // the election runs (a stopped one reports no LSN) and
                    // the source is there: otherwise wait, lest the winner
                    // be promoted without WAL only the source had.
                    let source = fast_forward_source(&self.nodes, i);
                    let unknown: Vec<String> = (0..self.nodes.len())
                        .filter(|&j| {
                            j != i
                                && self.nodes[j].goal == S::ReportLsn
                                && !self.nodes[j].pg_running
                        })
                        .map(|j| self.name(j))
                        .collect();
                    if source.is_none() || !unknown.is_empty() {
                        let node = self.name(i);
                        self.wait(Wait::FastForwardBlocked {
                            node,
                            down: unknown,
                        });
                        continue;
                    }
                    let target = self.fast_forward_target(i);
                    if self.nodes[i].lsn >= target {
                        self.assign(
                            i,
                            S::PreparePromotion,
                            Reason::Promotion {
                                step: "fetched the missing WAL: replay it",
                            },
                        );
                    } else {
                        let node = self.name(i);
                        self.wait(Wait::FastForwarding { node, target });
                    }
                }
                S::PreparePromotion => self.assign(
                    i,
                    S::StopReplication,
                    Reason::Promotion {
                        step: "all received WAL replayed: promote",
                    },
                ),
                S::StopReplication => self.assign(
                    i,
                    S::WaitPrimary,
                    Reason::Promotion {
                        step: "promoted and writable",
                    },
                ),
                _ => {}
            }
        }
        // The winner has been promoted once it reports stop_replication.
        let new_primary = (0..self.nodes.len()).find(|&i| {
            self.nodes[i].reported == S::StopReplication
                && matches!(self.nodes[i].goal, S::StopReplication | S::WaitPrimary)
        });
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.goal == S::ReportLsn {
                if let Some(np) = new_primary {
                    let primary = self.name(np);
                    self.assign(i, S::JoinSecondary, Reason::NewPrimary { primary });
                }
            } else if node.goal == S::JoinSecondary
                && self.reached(i)
                && node.wal_receiver_streaming
            {
                self.assign(i, S::Secondary, Reason::FollowingNewPrimary);
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
            self.nodes[i].replication_quorum
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
                    self.nodes[i].replication_quorum
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
    let quorum = standbys.iter().filter(|n| n.replication_quorum).count() as u32;
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
        n.candidate_priority == 0
            && matches!(
                n.goal,
                S::FastForward | S::PreparePromotion | S::StopReplication
            )
    }) {
        return Err(format!(
            "{} is being promoted: its candidate priority cannot drop to 0 before the promotion is over",
            n.name
        ));
    }
    if !electing.is_empty() && electing.iter().all(|n| n.candidate_priority == 0) {
        return Err(
            "an election is under way and no standby taking part in it would have a candidate priority above 0, so it could never finish: wait until it is over".into(),
        );
    }
    if !standbys.is_empty() && standbys.iter().all(|n| n.candidate_priority == 0) {
        return Err(
            "every standby would have candidate priority 0, so no one could be promoted if the primary failed: keep at least one standby above 0".into(),
        );
    }
    Ok(())
}

/// Replication settings the primary must apply, computed from the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationPlan {
    pub synchronous_standby_names: String,
    /// The fence set F and r of the promotion rule.
    pub fence_set: Vec<String>,
    pub fence_required: u32,
}

/// What the node at `index` (a primary) must apply, given the group.
pub fn replication_plan(
    nodes: &[NodeSnapshot],
    index: usize,
    number_sync_standbys: u32,
) -> ReplicationPlan {
    let me = &nodes[index];
    let others = || {
        nodes
            .iter()
            .enumerate()
            .filter(move |(i, n)| *i != index && n.goal != S::Dropped)
            .map(|(_, n)| n)
    };
    match me.goal {
        S::Primary | S::JoinPrimary | S::ApplySettings => {
            let mut quorum: Vec<&NodeSnapshot> = others()
                .filter(|n| n.replication_quorum && matches!(n.goal, S::Secondary | S::ReportLsn))
                .collect();
            if quorum.is_empty() && number_sync_standbys > 0 {
                // Writes must wait rather than go on unreplicated.
                quorum = others().filter(|n| n.replication_quorum).collect();
            }
            if quorum.is_empty() {
                return wait_primary_plan(others());
            }
            let required = number_sync_standbys.clamp(1, quorum.len() as u32);
            let names: Vec<String> = quorum.iter().map(|n| application_name(n.id)).collect();
            ReplicationPlan {
                synchronous_standby_names: format!("ANY {required} ({})", names.join(", ")),
                fence_set: names,
                fence_required: required,
            }
        }
        S::WaitPrimary => wait_primary_plan(others()),
        _ => ReplicationPlan {
            synchronous_standby_names: String::new(),
            fence_set: Vec::new(),
            fence_required: 0,
        },
    }
}

/// What the monitor stores for the primary at `index` after computing its
/// `plan`: the fence set and `r` it sends (the plan's), and what elections
/// must still count from earlier sets.
///
/// The fence set may change at once — `synchronous_standby_names` follows
/// the group, so writes go on when a standby fails — but a commit
/// acknowledged under the old `ANY r (F)` may be on members that left `F`
/// only. Until it is also on the new set, an election keeps counting them:
/// it uses `F ∪ pending` and the smallest `r` in force meanwhile, so any
/// `|F ∪ pending| − r + 1` reporters still include a holder of every
/// acknowledged commit, old or new. Likewise a primary whose set was empty
/// (just promoted, or its first standby) may hold commits none of its
/// standbys has: its own name is pending, so an election cannot finish
/// without it (a double fault, which an operator can force). The pending
/// part is dropped once `r` members of the new set stream and report an
/// LSN at least the primary's at the latest change: they then hold every
/// commit made before it, as if it had been acknowledged under the new set.
/// That LSN is the one the primary reports in the first heartbeat in which
/// its PostgreSQL runs with the new `synchronous_standby_names`
/// (`applied_sync_names`), so commits made under the old set are all
/// before it. From a keeper that does not report it (`None`), the heartbeat
/// after the change: the keeper applies a new set right after the reply.
/// Never from a heartbeat with PostgreSQL down, whose LSN says nothing.
/// For a first set (none before) it is the primary's LSN at once.
/// Growing the set without raising `r` needs no such wait.
pub fn fence_update(
    nodes: &[NodeSnapshot],
    index: usize,
    plan: &ReplicationPlan,
    applied_sync_names: Option<&str>,
) -> NodeFence {
    let me = &nodes[index];
    if plan.fence_set.is_empty() {
        // No standby to count, and none to promote.
        return NodeFence::from_plan(plan);
    }
    let mut pending = me.fence_pending.clone();
    let changed = me.fence_set != plan.fence_set || me.fence_required != plan.fence_required;
    if changed {
        // Growing the set without raising r keeps every earlier commit
        // counted (any |F| − r + 1 reporters still meet its holders), and
        // keeps the LSN a pending part already waits for.
        let grows_only = !me.fence_set.is_empty()
            && me.fence_set.iter().all(|n| plan.fence_set.contains(n))
            && plan.fence_required <= me.fence_required;
        // A primary that ran without synchronous replication (single,
        // wait_primary) acknowledged nothing under its old set: members
        // leaving it hold nothing an election must wait for.
        let old_set_synchronous = !matches!(me.reported, S::Single | S::WaitPrimary);
        if !grows_only && (old_set_synchronous || me.fence_set.is_empty()) {
            let was_pending = pending.cover_lsn.is_some();
            let mut left: Vec<String> = me
                .fence_set
                .iter()
                .filter(|n| !plan.fence_set.contains(n))
                .cloned()
                .collect();
            if me.fence_set.is_empty() {
                left.push(application_name(me.id));
            }
            for name in left {
                if !pending.names.contains(&name) {
                    pending.names.push(name);
                }
            }
            let before = if me.fence_set.is_empty() {
                plan.fence_required
            } else {
                me.fence_required
            };
            pending.required = if was_pending {
                pending.required.min(before)
            } else {
                before
            }
            .min(plan.fence_required);
            // A first set has no earlier set to be applied after: what
            // must be covered is what the primary holds now.
            pending.cover_lsn = if me.fence_set.is_empty() && me.pg_running && me.lsn > 0 {
                Some(me.lsn)
            } else {
                Some(COVER_AT_NEXT_HEARTBEAT)
            };
        }
    } else if pending.cover_lsn == Some(COVER_AT_NEXT_HEARTBEAT)
        && me.pg_running
        && me.lsn > 0
        && applied_sync_names.is_none_or(|names| names == plan.synchronous_standby_names)
    {
        pending.cover_lsn = Some(me.lsn);
    }
    if let Some(lsn) = pending.cover_lsn.filter(|&l| l != COVER_AT_NEXT_HEARTBEAT) {
        if fence_covered(nodes, &plan.fence_set, plan.fence_required, lsn) {
            pending = FencePending::default();
        }
    }
    NodeFence {
        fence_set: plan.fence_set.clone(),
        fence_required: plan.fence_required,
        pending,
    }
}

/// [`FencePending::cover_lsn`] right after a change: no LSN is known yet
/// that every commit made under the old set precedes (never reached).
pub const COVER_AT_NEXT_HEARTBEAT: u64 = i64::MAX as u64;

/// Whether `required` members of `fence_set` follow the primary and report
/// an LSN at least `lsn`: they hold every commit before it. (A node not
/// following yet, e.g. an old primary before its rewind, may report an LSN
/// of another timeline.)
fn fence_covered(nodes: &[NodeSnapshot], fence_set: &[String], required: u32, lsn: u64) -> bool {
    let holders = nodes
        .iter()
        .filter(|n| {
            fence_set.contains(&application_name(n.id)) && n.reported.is_following() && n.lsn >= lsn
        })
        .count() as u32;
    holders >= required
}

/// A primary's fence as the monitor stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFence {
    pub fence_set: Vec<String>,
    pub fence_required: u32,
    pub pending: FencePending,
}

impl NodeFence {
    fn from_plan(plan: &ReplicationPlan) -> NodeFence {
        NodeFence {
            fence_set: plan.fence_set.clone(),
            fence_required: plan.fence_required,
            pending: FencePending::default(),
        }
    }

    /// Whether `node` stores this fence already.
    pub fn stored_in(&self, node: &NodeSnapshot) -> bool {
        node.fence_set == self.fence_set
            && node.fence_required == self.fence_required
            && node.fence_pending == self.pending
    }

    /// Store it in `node` (the simulation's copy of the store).
    pub fn store_in(&self, node: &mut NodeSnapshot) {
        node.fence_set = self.fence_set.clone();
        node.fence_required = self.fence_required;
        node.fence_pending = self.pending.clone();
    }
}

/// Synchronous replication off: the fence set is every standby that
/// streams or could be a candidate, and one of them must keep streaming.
fn wait_primary_plan<'a>(others: impl Iterator<Item = &'a NodeSnapshot>) -> ReplicationPlan {
    let fence_set: Vec<String> = others
        .filter(|n| {
            matches!(
                n.goal,
                S::Catchingup | S::Secondary | S::ReportLsn | S::JoinSecondary
            )
        })
        .map(|n| application_name(n.id))
        .collect();
    ReplicationPlan {
        synchronous_standby_names: String::new(),
        fence_required: u32::from(!fence_set.is_empty()),
        fence_set,
    }
}

mod reasons;

pub use reasons::{Reason, Wait};

#[cfg(test)]
mod tests;
