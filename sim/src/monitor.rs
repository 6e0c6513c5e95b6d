//! The monitor as the simulation runs it: an in-memory store. It holds one
//! group and calls the monitor's own decision core
//! ([`pgpilot_monitor::core`]) exactly as the monitor's store does — the
//! heartbeat fold, every operator command and its refusals, the stored
//! fence set, the stuck-election event and the election override — and
//! keeps the events the core's decisions produce.
//!
//! The store's unlocked heartbeat fast path is not modelled: it writes
//! nothing the state machine reads and falls back to the locked path
//! whenever the state machine would decide anything.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpilot_monitor::core::commands::{self, Command};
use pgpilot_monitor::core::group::{self, Evaluation};
use pgpilot_monitor::core::heartbeat::{self, Beat, Folded};
use pgpilot_monitor::core::node_settings::{self, NodeSettings};
use pgpilot_monitor::core::pause::{self, PausedBy};
use pgpilot_monitor::core::restart::{self, Counters};
use pgpilot_monitor::core::stopping::Stop;
use pgpilot_monitor::core::{Env, Refusal};
use pgpilot_monitor::fsm::{
    self, Decision, Health, KeeperTimings, NodeSnapshot, ReplicationPlan, Wait,
};
use pgpilot_monitor::store::{FormationSettings, MachineSettings};
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
    /// The stable kind of the reason.
    pub kind: &'static str,
    pub reason: String,
}

/// A keeper's heartbeat as the monitor receives it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub node_id: i64,
    pub report: fsm::Report,
    /// The `synchronous_standby_names` its PostgreSQL runs with (None while
    /// it does not run).
    pub synchronous_standby_names: Option<String>,
    /// A keepalive: the goal of the plan under way (None from the loop).
    pub acting_toward: Option<S>,
    /// The keeper is stopping its node (SIGTERM).
    pub stopping: bool,
    /// The last restart asked through the monitor it carried out.
    pub restart_done: u64,
}

/// What the reply to a heartbeat carries.
#[derive(Debug, Clone)]
pub struct Reply {
    pub goal: S,
    /// The node id to follow (standbys) or clone from.
    pub primary: Option<i64>,
    pub plan: ReplicationPlan,
    /// To a stopping keeper: whether PostgreSQL may stop now.
    pub stop: Option<Stop>,
    /// The formation is paused.
    pub paused: bool,
    /// Restarts of PostgreSQL asked for this node so far.
    pub restart_requested: u64,
}

pub struct Monitor {
    /// The group, ordered by node id (as `lock_group` reads it).
    pub nodes: Vec<NodeSnapshot>,
    pub number_sync_standbys: u32,
    pub election_forced_at: Option<DateTime<Utc>>,
    /// Who paused the formation (`pause`); None: automatic failover.
    pub paused: Option<PausedBy>,
    pub settings: MachineSettings,
    pub events: Vec<EventRow>,
    pub flaw: MonitorFlaw,
    /// Why the group waited at the last evaluation.
    pub waiting: Vec<Wait>,
    /// Each node's restart counters, by node id (the store's
    /// `restart_requested` / `restart_done` columns).
    pub restarts: std::collections::BTreeMap<i64, Counters>,
    next_id: i64,
}

impl Monitor {
    pub fn new(settings: MachineSettings, flaw: MonitorFlaw) -> Monitor {
        Monitor {
            nodes: Vec::new(),
            number_sync_standbys: 0,
            election_forced_at: None,
            paused: None,
            settings,
            events: Vec::new(),
            flaw,
            waiting: Vec::new(),
            restarts: Default::default(),
            next_id: 1,
        }
    }

    pub fn index(&self, id: i64) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    pub fn by_name(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// What the decision core reads besides the group, at `now`.
    fn env(&self, now: Ms) -> Env {
        let settings = self.settings.fsm(FormationSettings {
            number_sync_standbys: self.number_sync_standbys,
            election_forced_at: self.election_forced_at,
            paused: self.paused.is_some(),
            parameters_version: 0,
            slot_count: 0,
        });
        Env {
            decide: match self.flaw {
                MonitorFlaw::None => fsm::decide,
                MonitorFlaw::SkipFenceRule => decide_without_fence_rule,
            },
            ..Env::new(at(now), settings)
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
        self.nodes.push(NodeSnapshot::registered(
            id,
            name,
            candidate_priority,
            replication_quorum,
            timings,
        ));
        self.evaluate(now);
        id
    }

    /// `node_active`: fold the heartbeat in, evaluate, store the fence set
    /// sent to a primary, and reply.
    pub fn node_active(&mut self, hb: &Heartbeat, now: Ms) -> Result<Reply, String> {
        let i = self
            .index(hb.node_id)
            .ok_or_else(|| format!("node id {} is not registered with this monitor", hb.node_id))?;
        let beat = Beat {
            report: hb.report,
            synchronous_standby_names: hb.synchronous_standby_names.clone(),
            goal_changed_at: None,
            acting_toward: hb.acting_toward,
            // Every simulated keeper asks for a standby to clone: the
            // choice runs in every reply.
            clone_from: "standby".into(),
            stopping: hb.stopping,
        };
        let env = self.env(now);
        match heartbeat::fold(&mut self.nodes, i, &beat, &env) {
            Folded::Forget => {
                let node = self.nodes.remove(i);
                Ok(Reply {
                    goal: node.goal,
                    primary: None,
                    plan: heartbeat::dropped_reply(&node).plan,
                    stop: None,
                    paused: false,
                    restart_requested: 0,
                })
            }
            Folded::Answer(answer) => {
                self.record(&answer.evaluation, now);
                // As the store writes it: never backwards, never past asked.
                let c = self.restarts.entry(hb.node_id).or_default();
                c.done = c.done.max(hb.restart_done.min(c.requested));
                let restart_requested = c.requested;
                Ok(Reply {
                    restart_requested,
                    goal: self.nodes[i].goal,
                    primary: answer.reply.upstream.map(|u| self.nodes[u].id),
                    plan: answer.reply.plan,
                    stop: answer.reply.stop,
                    paused: answer.reply.paused,
                })
            }
        }
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

    /// `evaluate`: run the state machine and keep its outcome.
    fn evaluate(&mut self, now: Ms) {
        let env = self.env(now);
        let evaluation = group::evaluate(&mut self.nodes, &env);
        self.record(&evaluation, now);
    }

    /// Keep the events of an evaluation (the goals are already applied).
    fn record(&mut self, evaluation: &Evaluation, now: Ms) {
        self.record_decisions(&evaluation.decisions, now);
        self.waiting = evaluation.waiting.clone();
        if let Some(note) = &evaluation.note {
            let latest = self.events.last().map(|e| (e.kind, e.reason.as_str()));
            if group::record_note(note, latest) {
                let p = &self.nodes[note.index];
                self.events.push(EventRow {
                    at: now,
                    node: p.name.clone(),
                    reported: p.reported,
                    from: note.goal,
                    to: note.goal,
                    kind: note.wait.kind(),
                    reason: note.wait.to_string(),
                });
            }
        }
    }

    /// One event per goal change.
    fn record_decisions(&mut self, decisions: &[Decision], now: Ms) {
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
                kind: d.reason.kind(),
                reason: d.reason.to_string(),
            });
        }
    }

    /// Keep the events of a command, or say why it was refused.
    fn command(&mut self, result: Result<Command, Refusal>, now: Ms) -> Result<String, String> {
        let command = result.map_err(|r| r.to_string())?;
        self.record_decisions(&command.decisions, now);
        Ok(command.message)
    }

    /// `perform_failover` (and `perform-switchover --to`).
    pub fn perform_failover(&mut self, target: Option<&str>, now: Ms) -> Result<String, String> {
        let env = self.env(now);
        let r = commands::perform_failover(&mut self.nodes, FORMATION, target, &env);
        self.command(r, now)
    }

    /// `pause` (`paused`) or `resume`, by the simulation's operator: the
    /// event goes to the node the monitor's store records it on.
    pub fn set_paused(&mut self, paused: bool, now: Ms) -> Result<String, String> {
        let operator = "operator:sim";
        let change = if paused {
            pause::pause(FORMATION, self.paused.as_ref(), operator)
        } else {
            pause::resume(FORMATION, self.paused.as_ref(), operator)
        }
        .map_err(|r| r.to_string())?;
        self.paused = paused.then(|| PausedBy {
            by: operator.to_string(),
            since: format!("{now} ms"),
        });
        let group: Vec<(i32, &NodeSnapshot)> = self.nodes.iter().map(|n| (0, n)).collect();
        let kind = if paused {
            pause::PAUSED
        } else {
            pause::RESUMED
        };
        let carriers = pause::event_nodes(&group);
        for i in carriers {
            self.note(i, kind, change.event.clone(), now);
        }
        Ok(change.message)
    }

    /// An event of node `i` that leaves its goal as it is.
    fn note(&mut self, i: usize, kind: &'static str, reason: String, now: Ms) {
        let n = &self.nodes[i];
        self.events.push(EventRow {
            at: now,
            node: n.name.clone(),
            reported: n.reported,
            from: n.goal,
            to: n.goal,
            kind,
            reason,
        });
    }

    /// `force_election` (`perform-failover --allow-data-loss`).
    pub fn force_election(&mut self, now: Ms) -> Result<String, String> {
        let env = self.env(now);
        let evaluation =
            commands::force_election(&mut self.nodes, &env).map_err(|r| r.to_string())?;
        self.election_forced_at = Some(at(now));
        self.record(&evaluation, now);
        Ok(commands::ELECTION_FORCED.to_string())
    }

    /// `set_number_sync_standbys`.
    pub fn set_number_sync_standbys(&mut self, value: u32, now: Ms) -> Result<String, String> {
        let r = commands::set_number_sync_standbys(&mut self.nodes, FORMATION, value);
        if r.is_ok() {
            self.number_sync_standbys = value;
        }
        self.command(r, now)
    }

    /// `set_node_settings`.
    pub fn set_node_settings(
        &mut self,
        name: &str,
        candidate_priority: Option<u32>,
        replication_quorum: Option<bool>,
        now: Ms,
    ) -> Result<String, String> {
        let asked = NodeSettings {
            candidate_priority,
            replication_quorum,
            apply_delay_ms: None,
        };
        let r = node_settings::set_node_settings(
            &mut self.nodes,
            FORMATION,
            name,
            asked,
            self.number_sync_standbys,
        );
        self.command(r, now)
    }

    /// `set_maintenance`.
    pub fn set_maintenance(
        &mut self,
        name: &str,
        enabled: bool,
        now: Ms,
    ) -> Result<String, String> {
        let env = self.env(now);
        let r = commands::set_maintenance(&mut self.nodes, FORMATION, name, enabled, &env);
        self.command(r, now)
    }

    /// `reinit_node`.
    /// `restart_node`: the restart asked for (the core's refusals), the
    /// counter raised and the event recorded.
    pub fn restart_node(&mut self, name: &str, now: Ms) -> Result<String, String> {
        let counters: Vec<Counters> = self
            .nodes
            .iter()
            .map(|n| self.restarts.get(&n.id).copied().unwrap_or_default())
            .collect();
        let asked = restart::request(&self.nodes, &counters, FORMATION, name, "operator:sim")
            .map_err(|r| r.to_string())?;
        let id = self.nodes[asked.index].id;
        self.restarts.entry(id).or_default().requested += 1;
        self.note(asked.index, restart::REQUESTED, asked.event, now);
        Ok(asked.message)
    }

    pub fn reinit_node(&mut self, name: &str, now: Ms) -> Result<String, String> {
        let r = commands::reinit_node(&mut self.nodes, FORMATION, name, self.number_sync_standbys);
        self.command(r, now)
    }
}

/// The formation the simulated group belongs to.
const FORMATION: &str = "default";

/// [`MonitorFlaw::SkipFenceRule`]: promote as soon as one standby reports —
/// no fence deadline (the timings and the margin read as zero) and no
/// quorum of fence-set reports (as if every election were forced).
fn decide_without_fence_rule(
    nodes: &[NodeSnapshot],
    now: DateTime<Utc>,
    settings: &fsm::Settings,
) -> fsm::Outcome {
    let zero = KeeperTimings {
        heartbeat_interval: Duration::ZERO,
        fence_timeout: Duration::ZERO,
        wal_sender_timeout: Duration::ZERO,
    };
    let nodes: Vec<NodeSnapshot> = nodes
        .iter()
        .map(|n| NodeSnapshot {
            timings: zero,
            ..n.clone()
        })
        .collect();
    let settings = fsm::Settings {
        fence_margin: Duration::ZERO,
        election_forced_at: Some(now),
        ..*settings
    };
    fsm::decide(&nodes, now, &settings)
}
