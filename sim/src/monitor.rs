//! The monitor as the simulation runs it: the real state machine
//! ([`pgpilot_monitor::fsm`]) over a group held in memory, with the store's
//! way of applying a heartbeat, an outcome and each operator command
//! (`monitor/src/store.rs`) reproduced step by step — the stored fence set
//! and required count, one event with its reason per goal change, the
//! stuck-election event, the election override, and the refusals.
//!
//! The store's unlocked heartbeat fast path is not modelled: it writes
//! nothing the state machine reads and falls back to the locked path
//! whenever the state machine would decide anything.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_monitor::fsm::{
    self, Decision, Health, KeeperTimings, NodeSnapshot, Reason, ReplicationPlan,
};
use pgpilot_monitor::store::MachineSettings;
use pgpilot_proto::ReplicationState as S;

use crate::Ms;

/// Virtual milliseconds to the wall-clock type the state machine reads.
pub fn at(ms: Ms) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms as i64).expect("in range")
}

/// A deliberately broken monitor, to show the invariant checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MonitorFlaw {
    #[default]
    None,
    /// Promote as soon as one standby reports its stream gone: no fence
    /// deadline (the timings and the margin read as zero) and no quorum of
    /// fence-set reports (as if every election were forced).
    SkipFenceRule,
}

/// One event row.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub at: Ms,
    pub node: String,
    pub reported: S,
    pub from: S,
    pub to: S,
    pub reason: String,
}

/// A keeper's heartbeat as the monitor receives it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub node_id: i64,
    pub reported: S,
    pub pg_running: bool,
    pub lsn: u64,
    pub wal_receiver_streaming: bool,
    /// Failed starts of PostgreSQL in a row.
    pub pg_start_failures: u32,
    pub timings: KeeperTimings,
    /// The `synchronous_standby_names` its PostgreSQL runs with (None while
    /// it does not run).
    pub synchronous_standby_names: Option<String>,
}

/// What the reply to a heartbeat carries.
#[derive(Debug, Clone)]
pub struct Reply {
    pub goal: S,
    /// The node id to follow (standbys) or clone from.
    pub primary: Option<i64>,
    pub plan: ReplicationPlan,
}

pub struct Monitor {
    /// The group, ordered by node id (as `lock_group` reads it).
    pub nodes: Vec<NodeSnapshot>,
    pub number_sync_standbys: u32,
    pub election_forced_at: Option<DateTime<Utc>>,
    pub settings: MachineSettings,
    pub events: Vec<EventRow>,
    pub flaw: MonitorFlaw,
    /// Run the operator commands exactly as `store.rs` has them. Off, they
    /// also refuse a goal the node's keeper has no edge to from the state
    /// it reported (the fix proposed for the store; see the README).
    pub as_shipped: bool,
    /// Why the group waited at the last evaluation.
    pub waiting: Vec<String>,
    next_id: i64,
}

fn is_handing_over(state: S) -> bool {
    matches!(state, S::Draining | S::PrepareMaintenance)
}

impl Monitor {
    pub fn new(settings: MachineSettings, flaw: MonitorFlaw) -> Monitor {
        Monitor {
            nodes: Vec::new(),
            number_sync_standbys: 0,
            election_forced_at: None,
            settings,
            events: Vec::new(),
            flaw,
            as_shipped: false,
            waiting: Vec::new(),
            next_id: 1,
        }
    }

    pub fn index(&self, id: i64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn fsm_settings(&self) -> fsm::Settings {
        fsm::Settings {
            node_timeout: self.settings.node_timeout,
            postgres_restart_timeout: self.settings.postgres_restart_timeout,
            fence_margin: match self.flaw {
                MonitorFlaw::None => self.settings.fence_margin,
                MonitorFlaw::SkipFenceRule => Duration::ZERO,
            },
            catchup_lag_bytes: fsm::DEFAULT_CATCHUP_LAG_BYTES,
            number_sync_standbys: self.number_sync_standbys,
            election_forced_at: self.election_forced_at,
        }
    }

    fn decide(&self, now: Ms) -> fsm::Outcome {
        match self.flaw {
            MonitorFlaw::None => fsm::decide(&self.nodes, at(now), &self.fsm_settings()),
            MonitorFlaw::SkipFenceRule => {
                let zero = KeeperTimings {
                    heartbeat_interval: Duration::ZERO,
                    fence_timeout: Duration::ZERO,
                    wal_sender_timeout: Duration::ZERO,
                };
                let nodes: Vec<NodeSnapshot> = self
                    .nodes
                    .iter()
                    .map(|n| NodeSnapshot {
                        timings: zero,
                        ..n.clone()
                    })
                    .collect();
                let settings = fsm::Settings {
                    election_forced_at: Some(at(now)),
                    ..self.fsm_settings()
                };
                fsm::decide(&nodes, at(now), &settings)
            }
        }
    }

    /// `register_node`: a new row in `init`, then the group is evaluated.
    pub fn register(
        &mut self,
        name: &str,
        candidate_priority: u32,
        replication_quorum: bool,
        timings: KeeperTimings,
        now: Ms,
    ) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.push(NodeSnapshot {
            id,
            name: name.to_string(),
            reported: S::Init,
            goal: S::Init,
            pg_running: false,
            lsn: 0,
            wal_receiver_streaming: false,
            stream_lost_at: None,
            pg_down_since: None,
            pg_running_since: None,
            pg_start_failures: 0,
            last_heartbeat: None,
            health: Health::Unknown,
            candidate_priority,
            replication_quorum,
            timings,
            fence_set: Vec::new(),
            fence_required: 0,
            fence_pending: Default::default(),
        });
        self.evaluate(now);
        id
    }

    /// `node_active`: fold the heartbeat in, evaluate, store the fence set
    /// sent to a primary, and reply.
    pub fn node_active(&mut self, hb: &Heartbeat, now: Ms) -> Result<Reply, String> {
        let i = self
            .index(hb.node_id)
            .ok_or_else(|| format!("node id {} is not registered with this monitor", hb.node_id))?;
        let t = at(now);
        self.nodes[i].heard(
            &fsm::Report {
                reported: hb.reported,
                pg_running: hb.pg_running,
                lsn: hb.lsn,
                wal_receiver_streaming: hb.wal_receiver_streaming,
                pg_start_failures: hb.pg_start_failures,
                timings: hb.timings,
            },
            t,
        );
        self.evaluate(now);
        let plan = fsm::replication_plan(&self.nodes, i, self.number_sync_standbys);
        let fence = fsm::fence_update(
            &self.nodes,
            i,
            &plan,
            hb.synchronous_standby_names.as_deref(),
        );
        let me = &mut self.nodes[i];
        if me.goal.is_writable_primary() && !fence.stored_in(me) {
            fence.store_in(me);
        }
        Ok(Reply {
            goal: self.nodes[i].goal,
            primary: self.upstream_of(i).map(|u| self.nodes[u].id),
            plan,
        })
    }

    /// Which node `index` follows (the store's `upstream_of`).
    fn upstream_of(&self, index: usize) -> Option<usize> {
        let me = &self.nodes[index];
        if me.goal.is_writable_primary() || is_handing_over(me.goal) {
            return None;
        }
        if me.goal == S::FastForward {
            return fsm::fast_forward_source(&self.nodes, index);
        }
        (0..self.nodes.len())
            .filter(|&j| j != index)
            .find(|&j| self.nodes[j].goal.is_writable_primary())
            .or_else(|| {
                (0..self.nodes.len()).find(|&j| j != index && is_handing_over(self.nodes[j].goal))
            })
    }

    /// `set_health`: store a changed result and evaluate the group.
    pub fn set_health(&mut self, id: i64, health: Health, now: Ms) {
        let Some(i) = self.index(id) else { return };
        if self.nodes[i].health != health {
            self.nodes[i].health = health;
            self.evaluate(now);
        }
    }

    fn quiet(&self, n: &NodeSnapshot, now: Ms) -> bool {
        let grace = self.settings.heartbeat_grace() + n.timings.heartbeat_interval;
        match n.last_heartbeat {
            None => true,
            Some(hb) => (at(now) - hb).to_std().unwrap_or_default() > grace,
        }
    }

    /// `evaluate_all`: evaluate the group when time can change a decision.
    pub fn evaluate_all(&mut self, now: Ms) {
        let due = self.nodes.iter().any(|n| {
            n.goal != S::Dropped
                && (n.reported != n.goal
                    || !matches!(
                        n.goal,
                        S::Single | S::Primary | S::Secondary | S::Maintenance
                    )
                    || self.quiet(n, now)
                    || !n.pg_running
                    || (n.goal == S::Secondary && !n.wal_receiver_streaming))
        });
        if due {
            self.evaluate(now);
        }
    }

    /// `health_targets`: nodes whose keeper is quiet, or whose health is unknown.
    pub fn health_targets(&self, now: Ms) -> Vec<i64> {
        self.nodes
            .iter()
            .filter(|n| n.goal != S::Dropped && (n.health == Health::Unknown || self.quiet(n, now)))
            .map(|n| n.id)
            .collect()
    }

    /// `evaluate`: run the state machine and apply its outcome.
    fn evaluate(&mut self, now: Ms) {
        let outcome = self.decide(now);
        self.apply(&outcome.decisions, now);
        self.waiting = outcome.waiting.clone();
        if let Some(stuck) = outcome
            .waiting
            .iter()
            .find(|w| w.starts_with("election stuck"))
        {
            self.record_once(stuck, now);
        }
    }

    /// An operator command's goal changes: refused, unless run as shipped,
    /// when a keeper has no edge to its new goal from its reported state.
    fn apply_command(&mut self, decisions: &[Decision], now: Ms) -> Result<(), String> {
        if !self.as_shipped {
            for d in decisions {
                if let Some(i) = self.index(d.node_id) {
                    let n = &self.nodes[i];
                    // The keeper is at its reported state or, having
                    // finished the transition, at its goal.
                    if !pgpilot_proto::keeper_has_edge(n.reported, d.to)
                        || !pgpilot_proto::keeper_has_edge(n.goal, d.to)
                    {
                        return Err(format!(
                            "{} is still {} (goal {}): wait until it settles",
                            n.name, n.reported, n.goal
                        ));
                    }
                }
            }
        }
        self.apply(decisions, now);
        Ok(())
    }

    /// `apply`: write each goal change with its event.
    fn apply(&mut self, decisions: &[Decision], now: Ms) {
        for d in decisions {
            let Some(i) = self.index(d.node_id) else {
                continue;
            };
            self.events.push(EventRow {
                at: now,
                node: self.nodes[i].name.clone(),
                reported: self.nodes[i].reported,
                from: d.from,
                to: d.to,
                reason: d.reason.to_string(),
            });
            self.nodes[i].goal = d.to;
        }
    }

    fn record_once(&mut self, reason: &str, now: Ms) {
        let Some(p) = self.nodes.iter().find(|n| n.goal.is_writable_primary()) else {
            return;
        };
        if self.events.last().map(|e| e.reason.as_str()) == Some(reason) {
            return;
        }
        self.events.push(EventRow {
            at: now,
            node: p.name.clone(),
            reported: p.reported,
            from: p.goal,
            to: p.goal,
            reason: reason.to_string(),
        });
    }

    fn alive(&self, i: usize, now: Ms) -> bool {
        self.nodes[i].last_heartbeat.is_some_and(|t| {
            (at(now) - t).to_std().unwrap_or_default() <= self.settings.node_timeout
        })
    }

    fn decision(&self, i: usize, to: S, reason: Reason) -> Decision {
        Decision {
            node_id: self.nodes[i].id,
            from: self.nodes[i].goal,
            to,
            reason,
        }
    }

    /// `perform_failover` (and `perform-switchover --to`).
    pub fn perform_failover(&mut self, target: Option<&str>, now: Ms) -> Result<String, String> {
        let primary = (0..self.nodes.len())
            .find(|&i| self.nodes[i].goal.is_writable_primary())
            .ok_or("the group has no primary right now")?;
        let p = &self.nodes[primary];
        if p.reported != p.goal || !self.alive(primary, now) {
            return Err(format!("primary {} is not settled and healthy", p.name));
        }
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].goal == S::Secondary
                    && self.nodes[i].reported == S::Secondary
                    && self.alive(i, now)
            })
            .collect();
        let (candidates, reason) = match target {
            None => (candidates, Reason::PlannedFailover),
            Some(name) => {
                let i = self.by_name(name).ok_or("unknown node")?;
                if i == primary {
                    return Err(format!("{name} is already the primary"));
                }
                if self.nodes[i].candidate_priority == 0 {
                    return Err(format!("{name} has candidate priority 0"));
                }
                if !candidates.contains(&i) {
                    return Err(format!("{name} is not a healthy secondary"));
                }
                (
                    vec![i],
                    Reason::PlannedSwitchover {
                        to: name.to_string(),
                    },
                )
            }
        };
        if !candidates
            .iter()
            .any(|&i| self.nodes[i].candidate_priority > 0)
        {
            return Err("no healthy secondary with candidate priority above 0".into());
        }
        let mut decisions = vec![self.decision(primary, S::Draining, reason.clone())];
        decisions.extend(
            candidates
                .iter()
                .map(|&i| self.decision(i, S::ReportLsn, reason.clone())),
        );
        self.apply_command(&decisions, now)?;
        Ok("planned failover started".into())
    }

    /// `force_election` (`perform-failover --allow-data-loss`).
    pub fn force_election(&mut self, now: Ms) -> Result<String, String> {
        let outcome = self.decide(now);
        if !outcome
            .waiting
            .iter()
            .any(|w| w.starts_with("election stuck"))
        {
            return Err("no election is stuck".into());
        }
        self.election_forced_at = Some(at(now));
        self.evaluate(now);
        Ok("election forced".into())
    }

    /// `set_number_sync_standbys`.
    pub fn set_number_sync_standbys(&mut self, value: u32, now: Ms) -> Result<String, String> {
        fsm::check_settings(&self.nodes, value)?;
        self.number_sync_standbys = value;
        let what = format!("number_sync_standbys set to {value}");
        self.apply_settings_on_primary(&what, now);
        Ok(what)
    }

    /// `set_node_settings`.
    pub fn set_node_settings(
        &mut self,
        name: &str,
        candidate_priority: Option<u32>,
        replication_quorum: Option<bool>,
        now: Ms,
    ) -> Result<String, String> {
        let i = self.by_name(name).ok_or("unknown node")?;
        let mut hypothetical = self.nodes.clone();
        if let Some(p) = candidate_priority {
            hypothetical[i].candidate_priority = p;
        }
        if let Some(q) = replication_quorum {
            hypothetical[i].replication_quorum = q;
        }
        fsm::check_settings(&hypothetical, self.number_sync_standbys)?;
        let quorum_changed =
            replication_quorum.is_some_and(|q| q != self.nodes[i].replication_quorum);
        self.nodes[i].candidate_priority = hypothetical[i].candidate_priority;
        self.nodes[i].replication_quorum = hypothetical[i].replication_quorum;
        let what = format!("settings of {name} changed");
        if quorum_changed {
            self.apply_settings_on_primary(&what, now);
        }
        Ok(what)
    }

    fn apply_settings_decision(&self, what: &str) -> Option<Decision> {
        let p = (0..self.nodes.len())
            .find(|&i| self.nodes[i].goal == S::Primary && self.nodes[i].reported == S::Primary)?;
        Some(self.decision(
            p,
            S::ApplySettings,
            Reason::SettingsChanged {
                what: what.to_string(),
            },
        ))
    }

    fn apply_settings_on_primary(&mut self, what: &str, now: Ms) {
        if let Some(d) = self.apply_settings_decision(what) {
            // A settled primary always has this edge.
            self.apply(&[d], now);
        }
    }

    /// `set_maintenance`.
    pub fn set_maintenance(
        &mut self,
        name: &str,
        enabled: bool,
        now: Ms,
    ) -> Result<String, String> {
        let i = self.by_name(name).ok_or("unknown node")?;
        let healthy_candidates = |exclude: usize| -> Vec<usize> {
            (0..self.nodes.len())
                .filter(|&j| {
                    j != exclude
                        && self.nodes[j].goal == S::Secondary
                        && self.nodes[j].reported == S::Secondary
                        && self.nodes[j].candidate_priority > 0
                        && self.alive(j, now)
                })
                .collect()
        };
        let node = &self.nodes[i];
        let mut decisions = Vec::new();
        if !enabled {
            if node.goal != S::Maintenance {
                return Err(format!("{name} is not in maintenance"));
            }
            decisions.push(self.decision(i, S::Catchingup, Reason::MaintenanceOver));
        } else if matches!(
            node.goal,
            S::Maintenance | S::WaitMaintenance | S::PrepareMaintenance
        ) {
            return Ok(format!("{name} is already in maintenance"));
        } else if node.goal.is_writable_primary() {
            let candidates = healthy_candidates(i);
            if candidates.is_empty() || node.reported != node.goal || !self.alive(i, now) {
                return Err(format!(
                    "maintenance of primary {name} needs a switchover first"
                ));
            }
            decisions.push(self.decision(i, S::PrepareMaintenance, Reason::MaintenanceOfPrimary));
            decisions.extend(
                candidates
                    .iter()
                    .map(|&c| self.decision(c, S::ReportLsn, Reason::MaintenanceOfPrimary)),
            );
        } else if matches!(node.goal, S::Secondary | S::Catchingup) {
            if node.goal == S::Secondary
                && node.candidate_priority > 0
                && healthy_candidates(i).is_empty()
            {
                return Err(format!("{name} is the only standby that could be promoted"));
            }
            let quorum_left = (0..self.nodes.len())
                .filter(|&j| {
                    j != i && self.nodes[j].goal == S::Secondary && self.nodes[j].replication_quorum
                })
                .count() as u32;
            if self.number_sync_standbys > quorum_left {
                return Err(format!("maintenance of {name} would stop writes"));
            }
            let app = pgpilot_proto::lsn::application_name(node.id);
            let counted = self
                .nodes
                .iter()
                .any(|n| n.goal.is_writable_primary() && n.fence_set.contains(&app));
            decisions.push(if counted {
                self.decision(i, S::WaitMaintenance, Reason::MaintenanceRequested)
            } else {
                self.decision(i, S::Maintenance, Reason::MaintenanceReady)
            });
        } else {
            return Err(format!("{name} is not primary, secondary or catchingup"));
        }
        self.apply_command(&decisions, now)?;
        Ok(format!("maintenance of {name}: {enabled}"))
    }

    /// `reinit_node`.
    pub fn reinit_node(&mut self, name: &str, now: Ms) -> Result<String, String> {
        let i = self.by_name(name).ok_or("unknown node")?;
        let node = &self.nodes[i];
        if node.goal.is_writable_primary() || is_handing_over(node.goal) {
            return Err(format!("{name} is the primary"));
        }
        if !matches!(
            node.goal,
            S::Secondary | S::Catchingup | S::Maintenance | S::Demoted
        ) {
            return Err(format!("{name} is {}", node.goal));
        }
        if !self
            .nodes
            .iter()
            .any(|n| n.goal.is_writable_primary() && n.reported == n.goal)
        {
            return Err("the group has no settled primary to clone from".into());
        }
        let quorum_left = (0..self.nodes.len())
            .filter(|&j| {
                j != i && self.nodes[j].goal == S::Secondary && self.nodes[j].replication_quorum
            })
            .count() as u32;
        if self.number_sync_standbys > quorum_left {
            return Err(format!("reinit of {name} would stop writes"));
        }
        let d = self.decision(i, S::WaitStandby, Reason::Reinit);
        self.apply_command(&[d], now)?;
        Ok(format!("{name} is being rebuilt"))
    }
}
