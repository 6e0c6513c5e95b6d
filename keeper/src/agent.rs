//! The keeper's loop: observe PostgreSQL, heartbeat, walk towards the goal
//! one plan at a time, keep the steady state. It talks to the monitor
//! through [`crate::client`], carries out plans with [`crate::executor`],
//! and runs the fence task of [`crate::fence`] beside it (DESIGN §4).
//!
//! While the executor carries out actions (a `pg_ctl start` through crash
//! recovery, a clone, a rewind) the loop keeps heartbeating with
//! keepalives (see [`crate::client::Keepalive`]), so the monitor hears a
//! keeper at work rather than a silent one; a keepalive never changes what
//! the loop is doing.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_proto::lsn::application_name;
use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;

use crate::client::{self, Keepalive, MonitorClient};
use crate::config::KeeperConfig;
use crate::executor::{Executor, Instructions, Target};
use crate::failpoint::Failpoints;
use crate::fence::{self, Fence, Lease, SharedLease};
use crate::guard::{self, GuardArgs};
use crate::hooks::Hooks;
use crate::pg::{LocalPostgres, Observation};
use crate::plan::{self, Action};
use crate::state_file::{self, KeeperState};
use crate::status::{self, KeeperStatus, SharedStatus};
use crate::stopping::{self, StopKind, StopReply, Verdict};

pub use crate::error::KeeperError;
pub use crate::fence::{
    answer_renews, fence_armed, fence_step, FenceStep, FENCE_REQUIRED_UNTIL_ANSWERED,
};

pub struct Keeper<P: LocalPostgres> {
    config: KeeperConfig,
    pg: Arc<P>,
    state: KeeperState,
    lease: SharedLease,
    client: MonitorClient,
    executor: Executor<P>,
    /// The fence task, until the loop starts it.
    fence: Option<Fence<P>>,
    /// The link to the fence guard, until the loop starts it (none
    /// without [`Keeper::with_guard`]).
    guard: Option<guard::Link>,
    instructions: Instructions,
    last_error: Option<String>,
    /// What the HTTP server reports (state, goal, fence, heartbeat age).
    status: SharedStatus,
    /// Failed starts of PostgreSQL in a row since it last ran (reported in
    /// every heartbeat; shared with the executor and the keepalive).
    start_failures: Arc<AtomicU32>,
    /// Whether the formation is paused, as the monitor last said.
    paused: Option<bool>,
    /// Stopping the node: since when, and what the monitor said so far.
    stopping: Option<(Instant, Option<StopReply>)>,
    /// `on_role_change` and `before_stop` (started with the loop).
    hooks: Hooks,
    /// Restarts of PostgreSQL asked through the monitor, as it last said.
    restart_requested: u64,
    /// The parameters version last written into pgpilot.conf by a plan
    /// that finished (reported as `parameters_applied`).
    parameters_written: u64,
    /// When the `before_promotion` hook last refused the promotion this
    /// node was asked (reported while it stays in the election).
    promotion_refused: Option<Instant>,
}

impl<P: LocalPostgres + Send + Sync + 'static> Keeper<P> {
    /// A keeper driving `pg`. `fence_pg` is the fence task's own handle on
    /// the same PostgreSQL: it must not share a connection or a lock with
    /// `pg`, so that nothing the loop waits for can delay a fence.
    pub fn new(config: KeeperConfig, pg: P, fence_pg: P) -> Result<Self, KeeperError> {
        let state = state_file::load(&config.state_file())?
            .unwrap_or_else(|| KeeperState::new(&config.formation));
        let lease = Lease::new(state.current);
        let mut status =
            KeeperStatus::new(&config.name, &config.formation, state.current, state.goal);
        status.node_id = state.node_id;
        let status = Arc::new(std::sync::Mutex::new(status));
        let pg = Arc::new(pg);
        let start_failures = Arc::new(AtomicU32::new(0));
        Ok(Keeper {
            client: MonitorClient::new(config.clone(), status.clone())?,
            executor: Executor::new(
                pg.clone(),
                config.clone(),
                lease.clone(),
                start_failures.clone(),
            ),
            fence: Some(Fence {
                pg: fence_pg,
                lease: lease.clone(),
                fence_timeout: config.fence_timeout,
                status: status.clone(),
            }),
            guard: None,
            config,
            pg,
            state,
            lease,
            instructions: Instructions::default(),
            last_error: None,
            status,
            start_failures,
            paused: None,
            stopping: None,
            hooks: Hooks::none(),
            promotion_refused: None,
            restart_requested: 0,
            parameters_written: 0,
        })
    }

    /// SIGKILL this process at these points of its transitions (a testing
    /// facility, see [`crate::failpoint`]).
    pub fn with_failpoints(mut self, failpoints: Failpoints) -> Self {
        self.executor.set_failpoints(failpoints);
        self
    }

    /// Keep a fence guard ([`crate::guard`]) started with `args` and hand
    /// it the lease, so that PostgreSQL is fenced even if this process dies.
    pub fn with_guard(mut self, args: GuardArgs) -> Self {
        self.guard = Some(guard::Link {
            args,
            lease: self.lease.clone(),
            fence_timeout: self.config.fence_timeout,
        });
        self
    }

    /// The status the loop keeps up to date, for the HTTP server.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Build the monitor clients (one per configured monitor): reads the
    /// TLS files and the token (a world-readable key or token file is
    /// refused). Lazy: each connects on first use and reconnects by itself.
    pub fn connect(&mut self) -> Result<(), KeeperError> {
        self.client.connect()
    }

    /// Register once (bounded retries for a node that never registered).
    async fn register(&mut self) -> Result<(), KeeperError> {
        if self.state.node_id.is_some() {
            return Ok(());
        }
        let sysid = self
            .pg
            .system_identifier()
            .await
            .ok()
            .flatten()
            .unwrap_or(0);
        let reply = self.client.register(sysid).await?;
        let goal = S::from_wire(reply.goal_state).unwrap_or(S::Init);
        self.state.node_id = Some(reply.node_id);
        self.state.group_id = reply.group_id;
        self.state.formation = reply.formation;
        self.state.goal = goal;
        state_file::save(&self.config.state_file(), &mut self.state)?;
        {
            let mut status = status::lock(&self.status);
            status.node_id = Some(reply.node_id);
            status.formation = self.state.formation.clone();
            status.set_goal(goal, Instant::now());
        }
        tracing::info!(node_id = reply.node_id, goal = %goal, "registered with the monitor");
        Ok(())
    }

    /// Run until `shutdown` resolves and its stop is done (see
    /// [`crate::stopping`]).
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = StopKind>,
    ) -> Result<(), KeeperError> {
        self.register().await?;
        self.hooks = Hooks::start(&self.config);
        let fence = self.fence.take().map(|f| tokio::spawn(f.run()));
        let guard = self.guard.take().map(|g| tokio::spawn(g.run()));
        tokio::pin!(shutdown);
        let mut asked: Option<StopKind> = None;
        let result = loop {
            if let Some(kind) = asked {
                if let Some(done) = self.stop_step(kind).await {
                    break done;
                }
            }
            let moved = match self.step().await {
                Ok(moved) => moved,
                Err(KeeperError::Refused(m)) => break Err(KeeperError::Refused(m)),
                Err(KeeperError::Dropped) => {
                    tracing::info!(
                        "node dropped from the formation: PostgreSQL stopped, keeper exits"
                    );
                    self.retire_state_file();
                    break Ok(());
                }
                Err(e) => {
                    let text = e.to_string();
                    if self.last_error.as_deref() != Some(&text) {
                        tracing::warn!(error = %text, state = %self.state.current, goal = %self.state.goal, "keeper step failed; retrying");
                        self.last_error = Some(text);
                    }
                    false
                }
            };
            if moved {
                continue;
            }
            if asked.is_some() {
                tokio::time::sleep(self.config.heartbeat_interval).await;
                continue;
            }
            tokio::select! {
                kind = &mut shutdown => {
                    asked = Some(kind);
                    if kind == StopKind::Node {
                        self.stopping = Some((Instant::now(), None));
                    }
                }
                _ = tokio::time::sleep(self.config.heartbeat_interval) => {}
                // The monitor changed this node's group: heartbeat now.
                _ = self.client.woken() => {}
            }
        };
        if let Some(fence) = fence {
            fence.abort();
        }
        // The guard keeps the lease and goes on applying it; a restarted
        // keeper connects to it again.
        if let Some(guard) = guard {
            guard.abort();
        }
        result
    }

    /// One loop: observe, heartbeat, act. True when a transition finished
    /// (the next heartbeat goes out at once).
    async fn step(&mut self) -> Result<bool, KeeperError> {
        status::lock(&self.status).loop_seen = Instant::now();
        let observation = self.pg.observe().await;
        let sent = Instant::now();
        match self.heartbeat(&observation).await {
            Ok(reply) => self.follow(reply, sent).await?,
            Err(KeeperError::Refused(m)) => return Err(KeeperError::Refused(m)),
            Err(e) => {
                // Without the monitor: keep the steady state of standbys only;
                // a primary is left to the fence task.
                if !self.state.current.is_writable_primary()
                    && self.state.current == self.state.goal
                {
                    self.executor
                        .execute(
                            &plan::steady_without_monitor(self.state.current),
                            None,
                            self.target(),
                        )
                        .await?;
                }
                return Err(e);
            }
        }
        let (from, to) = (self.state.current, self.state.goal);
        if from == S::Dropped && to == S::Dropped {
            // The monitor has heard it: nothing is left to do.
            return Err(KeeperError::Dropped);
        }
        if from == to {
            if !self.lease.lock().await.may_run_primary() && from.is_writable_primary() {
                return Ok(false);
            }
            if self.restart_requested > self.state.restart_done {
                self.restart_step(from, &observation).await?;
                return Ok(true);
            }
            let version = self.state.parameters_version;
            self.execute_with_keepalive(&plan::steady(from), None)
                .await?;
            self.parameters_written = version;
            return Ok(false);
        }
        if to == S::PreparePromotion
            && self
                .promotion_refused
                .is_some_and(|at| at.elapsed() < crate::hooks::REFUSAL_RETRY)
        {
            // Refused a moment ago: the monitor elects another standby
            // when one can take over; else the hook is asked again soon.
            return Ok(false);
        }
        let actions = plan::plan(from, to)?;
        if to == S::WaitStandby && from != S::Init && !self.state.reclone {
            // A reinit: the clone that follows must not keep the data.
            self.state.reclone = true;
            state_file::save(&self.config.state_file(), &mut self.state)?;
        }
        let started = Instant::now();
        let done = self
            .execute_with_keepalive(&actions, Some((from, to)))
            .await;
        if let Err(KeeperError::PromotionRefused(why)) = &done {
            tracing::warn!(state = %from, "{why}");
            self.promotion_refused = Some(Instant::now());
            return Ok(false);
        }
        done?;
        if to == S::PreparePromotion {
            self.promotion_refused = None;
        }
        self.executor
            .failpoints()
            .before_action(from, to, actions.len());
        self.state.current = to;
        if from == S::WaitStandby {
            self.state.reclone = false;
        }
        state_file::save(&self.config.state_file(), &mut self.state)?;
        self.lease.lock().await.set_current(to);
        status::lock(&self.status).set_state(to, Instant::now());
        crate::metrics::transition_done(from, to, started.elapsed());
        self.hooks
            .transition(&self.config, self.state.node_id, from, to);
        self.last_error = None;
        tracing::info!(
            node = %self.config.name,
            from = %from,
            to = %to,
            ms = started.elapsed().as_millis() as u64,
            "transition done"
        );
        Ok(true)
    }

    /// Restart PostgreSQL at rest in `state`, as asked through the monitor
    /// (`restart`), with keepalives going out meanwhile: a primary
    /// checkpoints first (its stop has little left to write), then a fast
    /// stop and a start. Its heartbeats say PostgreSQL is down while its
    /// keeper runs, which the monitor waits `postgres_restart_timeout` for
    /// before any failover. The restart done is saved in the state file
    /// and told in a note.
    async fn restart_step(&mut self, state: S, o: &Observation) -> Result<(), KeeperError> {
        let asked = self.restart_requested;
        let started = Instant::now();
        let text = if o.running {
            tracing::info!(state = %state, pending_restart = ?o.pending_restart, "restarting PostgreSQL as asked through the monitor");
            self.execute_with_keepalive(&plan::restart(state), None)
                .await?;
            let pending = if o.pending_restart.is_empty() {
                "no setting was pending a restart".to_string()
            } else {
                format!("pending before: {}", o.pending_restart.join(", "))
            };
            format!(
                "PostgreSQL restarted as asked, as {state}, in {} ({pending})",
                humantime::format_duration(Duration::from_millis(
                    started.elapsed().as_millis() as u64
                ))
            )
        } else {
            "PostgreSQL was not running when its restart was asked: nothing to restart (its next start reads the configuration)".to_string()
        };
        self.state.restart_done = asked;
        state_file::save(&self.config.state_file(), &mut self.state)?;
        tracing::info!("{text}");
        self.executor
            .notes()
            .push(pgpilot_proto::notes::POSTGRES_RESTARTED, text);
        Ok(())
    }

    /// The monitor answered a heartbeat sent at `sent`: renew the lease,
    /// keep its instructions, and take its goal.
    async fn follow(
        &mut self,
        reply: pb::NodeActiveReply,
        sent: Instant,
    ) -> Result<(), KeeperError> {
        let goal = S::from_wire(reply.goal_state).unwrap_or(self.state.goal);
        if !goal.is_in_election() {
            // Out of the election: a refusal of its promotion is forgotten.
            self.promotion_refused = None;
        }
        self.paused = Some(reply.paused);
        self.restart_requested = reply.restart_requested;
        if reply.parameters_included && reply.parameters_version != self.state.parameters_version {
            tracing::info!(version = reply.parameters_version, parameters = ?reply.parameters, "new formation parameters from the monitor");
            self.state.parameters = reply.parameters.clone().into_iter().collect();
            self.state.parameters_version = reply.parameters_version;
            state_file::save(&self.config.state_file(), &mut self.state)?;
        }
        if let Some(ms) = reply
            .apply_delay_ms
            .filter(|&ms| self.state.apply_delay_ms != Some(ms))
        {
            tracing::info!(
                apply_delay = %pgpilot_proto::delay::describe(ms),
                "apply delay from the monitor (recovery_min_apply_delay as a standby)"
            );
            self.state.apply_delay_ms = Some(ms);
            state_file::save(&self.config.state_file(), &mut self.state)?;
        }
        if reply.restart_requested < self.state.restart_done {
            // The monitor counts from less (its node row is new): follow it.
            self.state.restart_done = reply.restart_requested;
            state_file::save(&self.config.state_file(), &mut self.state)?;
        }
        if let Some((_, said)) = &mut self.stopping {
            *said = Some(StopReply {
                may_stop: reply.may_stop,
                refused: reply.stop_refused.clone(),
            });
        }
        let replication = reply.replication.unwrap_or_default();
        fence::renew(&self.lease, &self.status, sent, goal, &replication).await;
        {
            let own_id = self.state.node_id;
            let mut status = status::lock(&self.status);
            status.primary_lsn = reply
                .primary
                .as_ref()
                .filter(|p| Some(p.node_id) != own_id)
                .map(|p| p.lsn);
            status.synchronous_standby = reply.synchronous_standby;
            status.delayed = self.apply_delay_ms() > 0;
            status.set_goal(goal, Instant::now());
        }
        self.instructions = Instructions {
            primary: reply.primary,
            clone_source: reply.clone_source,
            synchronous_standby_names: replication.synchronous_standby_names,
            // A primary moves only a cascading standby's slot (it streams
            // from another standby); a standby moves every slot it keeps.
            slots: replication
                .standbys
                .iter()
                .map(|n| (application_name(n.node_id), n.lsn, n.cascading))
                .collect(),
            peer_hosts: Some(
                replication
                    .standbys
                    .iter()
                    .map(|n| n.host.clone())
                    .collect(),
            ),
            permanent_slots: reply.slots_included.then_some(reply.permanent_slots),
            upstream_slots: reply.upstream_slots,
            upstream_is_standby: reply.upstream_is_standby,
        };
        if goal != self.state.goal {
            tracing::info!(from = %self.state.current, goal = %goal, "new goal from the monitor");
            self.state.goal = goal;
            state_file::save(&self.config.state_file(), &mut self.state)?;
        }
        Ok(())
    }

    /// A dropped node's state file is moved aside (`<state file>.dropped`):
    /// the monitor forgot the node id it holds, so starting the keeper
    /// again registers the node anew, keeping its data directory when it
    /// still belongs to the group.
    fn retire_state_file(&self) {
        let path = self.config.state_file();
        let retired = crate::durable::sibling_path(&path, ".dropped");
        let moved = std::fs::rename(&path, &retired)
            .map_err(|e| e.to_string())
            .and_then(|()| crate::durable::fsync_parent(&retired).map_err(|e| e.to_string()));
        match moved {
            Ok(()) => tracing::info!(
                state_file = %retired.display(),
                "state file moved aside: starting the keeper again registers this node anew (its data directory is kept when it still belongs to the group)"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "could not move the state file {} aside: remove it before starting the keeper again",
                path.display()
            ),
        }
    }

    /// Apply the stop rule ([`stopping::verdict`]): `Some` once the keeper
    /// is to exit (PostgreSQL stopped first unless it is to keep running).
    async fn stop_step(&mut self, kind: StopKind) -> Option<Result<(), KeeperError>> {
        let (asked, reply) = self
            .stopping
            .clone()
            .unwrap_or_else(|| (Instant::now(), None));
        match stopping::verdict(
            kind,
            self.paused,
            reply.as_ref(),
            asked.elapsed(),
            self.config.stop_timeout,
        ) {
            Verdict::Wait => None,
            Verdict::LeaveRunning(why) => {
                tracing::info!("{why}");
                Some(Ok(()))
            }
            Verdict::StopPostgres(why) => {
                tracing::info!("{why}");
                self.hooks
                    .before_stop(&self.config, self.state.node_id, self.state.current)
                    .await;
                let stopped = self.pg.stop().await;
                Some(match stopped {
                    Ok(()) => {
                        tracing::info!("PostgreSQL stopped; keeper exits");
                        Ok(())
                    }
                    Err(e) => Err(KeeperError::from(e)),
                })
            }
        }
    }

    /// The loop's heartbeat, carrying the notes not yet delivered (see
    /// [`crate::notes`]).
    async fn heartbeat(&mut self, o: &Observation) -> Result<pb::NodeActiveReply, KeeperError> {
        let mut request = client::node_active_request(
            self.state.node_id.unwrap_or_default(),
            self.state.current,
            None,
            self.lease.lock().await.held(),
            &client::timings(&self.config),
            o,
            &self.start_failures,
        );
        request.clone_from = self.config.clone_from.clone();
        request.stopping = self.stopping.is_some();
        request.restart_done = self.state.restart_done;
        request.parameters_applied = self.parameters_written;
        request.promotion_refused = self.promotion_refused.is_some();
        if let Some(report) = self.executor.slot_report() {
            request.slots = report;
            request.slots_reported = true;
        }
        let notes = self.executor.notes().clone();
        request.notes = notes.pending();
        let sent = request.notes.clone();
        let reply = self.client.node_active(request).await?;
        notes.delivered(&sent);
        Ok(reply)
    }

    fn target(&self) -> Target<'_> {
        Target {
            node_id: self.state.node_id.unwrap_or_default(),
            goal: self.state.goal,
            instructions: &self.instructions,
            reclone: self.state.reclone,
            parameters: &self.state.parameters,
            new_parameters_version: self.state.parameters_version != self.parameters_written,
            apply_delay_ms: self.apply_delay_ms(),
        }
    }

    /// The node's apply delay: the monitor's last value, else (never
    /// answered yet) the keeper's `apply_delay`.
    fn apply_delay_ms(&self) -> u64 {
        self.state
            .apply_delay_ms
            .unwrap_or_else(|| self.config.apply_delay_ms())
    }

    /// Carry out `actions`, with keepalives sent every heartbeat interval
    /// while they run (the first one interval after the step's heartbeat).
    async fn execute_with_keepalive(
        &mut self,
        actions: &[Action],
        transition: Option<(S, S)>,
    ) -> Result<(), KeeperError> {
        let keepalive = Keepalive {
            monitors: self.client.monitors(),
            pg: self.pg.clone(),
            lease: self.lease.clone(),
            status: self.status.clone(),
            start_failures: self.start_failures.clone(),
            node_id: self.state.node_id.unwrap_or_default(),
            current: self.state.current,
            acting_toward: transition.map_or(self.state.current, |(_, to)| to),
            timings: client::timings(&self.config),
            interval: self.config.heartbeat_interval,
            parameters_applied: self.parameters_written,
        };
        self.executor
            .execute_with_keepalive(actions, transition, self.target(), keepalive)
            .await
    }
}
