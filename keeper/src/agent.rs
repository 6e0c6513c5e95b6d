//! The keeper's loop: observe PostgreSQL, heartbeat, walk towards the goal,
//! keep the steady state; and beside it the fence task, which stops a
//! primary that lost the monitor and its standbys (DESIGN §4).
//!
//! While the loop carries out actions (a `pg_ctl start` through crash
//! recovery, a clone, a rewind) it keeps heartbeating with *keepalives*
//! (see [`Keepalive`]), so the monitor hears a keeper at work rather than a
//! silent one; a keepalive never changes what the loop is doing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_proto::lsn::{application_name, slot_name};
use pgpilot_proto::pb;
use pgpilot_proto::security;
use pgpilot_proto::ReplicationState as S;
use tokio::sync::Mutex;

use crate::config::KeeperConfig;
use crate::failpoint::Failpoints;
use crate::pg::{LocalPostgres, ManagedConfig, Observation, PgError, Upstream};
use crate::plan::{self, Action};
use crate::state_file::{self, KeeperState};
use crate::status::{self, KeeperStatus, SharedStatus};

#[derive(Debug, thiserror::Error)]
pub enum KeeperError {
    #[error("cannot reach the monitor at {url}: {reason}")]
    MonitorUnreachable { url: String, reason: String },
    #[error("the monitor refused this node: {0}")]
    Refused(String),
    #[error(transparent)]
    State(#[from] state_file::StateFileError),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Plan(#[from] plan::NoEdge),
    #[error("{0}")]
    Waiting(String),
    #[error("this node was dropped from its formation")]
    Dropped,
    #[error("{0}")]
    Security(String),
}

/// What the fence task needs to know, shared with the main loop.
#[derive(Debug)]
struct Lease {
    /// When the last heartbeat that got an answer was sent.
    last_ok_sent: Instant,
    /// The state the node is in (the fence applies to primary-side states).
    current: S,
    /// Application names of the standbys that count, and how many must stream.
    fence_set: Vec<String>,
    required: u32,
    /// PostgreSQL was stopped by the fence; not restarted until the monitor answers.
    fenced: bool,
    /// This process has heard from the monitor at least once.
    confirmed: bool,
}

/// The latest reply, with what the executor needs from it.
#[derive(Debug, Clone, Default)]
struct Instructions {
    primary: Option<pb::NodeAddress>,
    synchronous_standby_names: String,
    /// A slot for every other node of the group, with that node's LSN.
    slots: Vec<(String, u64)>,
    /// Hosts of the other nodes of the group; `None` until the monitor
    /// first answered.
    peer_hosts: Option<Vec<String>>,
}

pub struct Keeper<P: LocalPostgres> {
    config: KeeperConfig,
    pg: Arc<P>,
    state: KeeperState,
    lease: Arc<Mutex<Lease>>,
    client: Option<security::Client>,
    instructions: Instructions,
    last_error: Option<String>,
    /// What the HTTP server reports (state, goal, fence, heartbeat age).
    status: SharedStatus,
    /// Failed starts of PostgreSQL in a row since it last ran (reported in
    /// every heartbeat; shared with the keepalive).
    start_failures: Arc<AtomicU32>,
    /// Testing only: where to SIGKILL this process (none in production).
    failpoints: Failpoints,
}

fn timings(c: &KeeperConfig) -> pb::KeeperTimings {
    pb::KeeperTimings {
        heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u64,
        fence_timeout_ms: c.fence_timeout.as_millis() as u64,
        wal_sender_timeout_ms: c.wal_sender_timeout.as_millis() as u64,
    }
}

impl<P: LocalPostgres + Send + Sync + 'static> Keeper<P> {
    pub fn new(config: KeeperConfig, pg: P) -> Result<Self, KeeperError> {
        let state = state_file::load(&config.state_file())?
            .unwrap_or_else(|| KeeperState::new(&config.formation));
        let lease = Lease {
            last_ok_sent: Instant::now(),
            current: state.current,
            fence_set: Vec::new(),
            required: FENCE_REQUIRED_UNTIL_ANSWERED,
            fenced: false,
            confirmed: false,
        };
        let mut status =
            KeeperStatus::new(&config.name, &config.formation, state.current, state.goal);
        status.node_id = state.node_id;
        Ok(Keeper {
            config,
            pg: Arc::new(pg),
            state,
            lease: Arc::new(Mutex::new(lease)),
            client: None,
            instructions: Instructions::default(),
            last_error: None,
            status: Arc::new(std::sync::Mutex::new(status)),
            start_failures: Arc::new(AtomicU32::new(0)),
            failpoints: Failpoints::default(),
        })
    }

    /// SIGKILL this process at these points of its transitions (a testing
    /// facility, see [`crate::failpoint`]).
    pub fn with_failpoints(mut self, failpoints: Failpoints) -> Self {
        self.failpoints = failpoints;
        self
    }

    /// The status the loop keeps up to date, for the HTTP server.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// Build the monitor client: reads the TLS files and the token (a
    /// world-readable key or token file is refused). Lazy: it connects on
    /// first use and reconnects by itself.
    pub fn connect(&mut self) -> Result<(), KeeperError> {
        let url = self.config.monitor.clone();
        if security::url_uses_tls(&url) == Some(false) {
            tracing::warn!(monitor = %url, "talking to the monitor in plaintext (http://): anyone on the network can read and forge this node's heartbeats; use https://");
        }
        let rpc_timeout = self.rpc_timeout();
        let client = self
            .config
            .client_security()
            .lazy_client(&url, &security::CONFIG_NAMES, |e| {
                e.connect_timeout(Duration::from_secs(1))
                    .timeout(rpc_timeout)
            })
            .map_err(|e| KeeperError::Security(e.to_string()))?;
        self.client = Some(client);
        Ok(())
    }

    async fn client(&mut self) -> Result<&mut security::Client, KeeperError> {
        if self.client.is_none() {
            self.connect()?;
        }
        Ok(self.client.as_mut().expect("just set"))
    }

    fn rpc_timeout(&self) -> Duration {
        self.config
            .heartbeat_interval
            .max(Duration::from_millis(500))
            .min(self.config.fence_timeout / 2)
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
        let request = pb::RegisterNodeRequest {
            formation: self.config.formation.clone(),
            name: self.config.name.clone(),
            host: self.config.host.clone(),
            port: u32::from(self.config.advertised_port()),
            system_identifier: sysid,
            candidate_priority: self.config.candidate_priority,
            replication_quorum: self.config.replication_quorum,
            timings: Some(timings(&self.config)),
        };
        let deadline = Instant::now() + self.config.register_timeout;
        let url = self.config.monitor.clone();
        loop {
            let result = self.client().await?.register_node(request.clone()).await;
            match result {
                Ok(reply) => {
                    let reply = reply.into_inner();
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
                    return Ok(());
                }
                Err(status) if is_refusal(&status) => {
                    return Err(KeeperError::Refused(status.message().to_string()));
                }
                Err(status) => {
                    if Instant::now() >= deadline {
                        return Err(KeeperError::MonitorUnreachable {
                            url,
                            reason: format!(
                                "{} (gave up registering after {})",
                                status.message(),
                                humantime::format_duration(self.config.register_timeout)
                            ),
                        });
                    }
                    tracing::warn!(monitor = %url, error = %status.message(), "monitor unreachable, retrying registration");
                    tokio::time::sleep(
                        self.config
                            .heartbeat_interval
                            .max(Duration::from_millis(500)),
                    )
                    .await;
                }
            }
        }
    }

    /// Run until `shutdown` resolves.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), KeeperError> {
        self.register().await?;
        let fence = tokio::spawn(fence_task(
            self.pg.clone(),
            self.lease.clone(),
            self.config.fence_timeout,
            self.status.clone(),
        ));
        tokio::pin!(shutdown);
        let result = loop {
            let moved = match self.step().await {
                Ok(moved) => moved,
                Err(KeeperError::Refused(m)) => break Err(KeeperError::Refused(m)),
                Err(KeeperError::Dropped) => {
                    tracing::info!(
                        "node dropped from the formation: PostgreSQL stopped, keeper exits"
                    );
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
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                _ = tokio::time::sleep(self.config.heartbeat_interval) => {}
            }
        };
        fence.abort();
        result
    }

    /// One loop: observe, heartbeat, act. True when a transition finished
    /// (the next heartbeat goes out at once).
    async fn step(&mut self) -> Result<bool, KeeperError> {
        let observation = self.pg.observe().await;
        let sent = Instant::now();
        match self.heartbeat(&observation).await {
            Ok(reply) => {
                let goal = S::from_wire(reply.goal_state).unwrap_or(self.state.goal);
                let replication = reply.replication.unwrap_or_default();
                {
                    let own_id = self.state.node_id;
                    let mut status = status::lock(&self.status);
                    status.last_heartbeat_ok = Some(sent);
                    status.fenced = false;
                    status.primary_lsn = reply
                        .primary
                        .as_ref()
                        .filter(|p| Some(p.node_id) != own_id)
                        .map(|p| p.lsn);
                    status.set_goal(goal, Instant::now());
                }
                self.instructions = Instructions {
                    primary: reply.primary,
                    synchronous_standby_names: replication.synchronous_standby_names,
                    slots: replication
                        .standbys
                        .iter()
                        .map(|n| (application_name(n.node_id), n.lsn))
                        .collect(),
                    peer_hosts: Some(
                        replication
                            .standbys
                            .iter()
                            .map(|n| n.host.clone())
                            .collect(),
                    ),
                };
                renew_lease(
                    &self.lease,
                    sent,
                    replication.quorum_standby_names,
                    replication.required_streaming_standbys,
                )
                .await;
                if goal != self.state.goal {
                    tracing::info!(from = %self.state.current, goal = %goal, "new goal from the monitor");
                    self.state.goal = goal;
                    state_file::save(&self.config.state_file(), &mut self.state)?;
                }
            }
            Err(KeeperError::Refused(m)) => return Err(KeeperError::Refused(m)),
            Err(e) => {
                // Without the monitor: keep the steady state of standbys only;
                // a primary is left to the fence task.
                if !self.state.current.is_writable_primary()
                    && self.state.current == self.state.goal
                {
                    self.execute(&plan::steady(self.state.current), None)
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
            if !self.may_run_primary().await && from.is_writable_primary() {
                return Ok(false);
            }
            self.execute_with_keepalive(&plan::steady(from), None)
                .await?;
            return Ok(false);
        }
        let actions = plan::plan(from, to)?;
        let started = Instant::now();
        self.execute_with_keepalive(&actions, Some((from, to)))
            .await?;
        self.failpoints.before_action(from, to, actions.len());
        self.state.current = to;
        state_file::save(&self.config.state_file(), &mut self.state)?;
        self.lease.lock().await.current = to;
        status::lock(&self.status).set_state(to, Instant::now());
        crate::metrics::transition_done(from, to, started.elapsed());
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

    async fn may_run_primary(&self) -> bool {
        let lease = self.lease.lock().await;
        lease.confirmed && !lease.fenced
    }

    async fn heartbeat(&mut self, o: &Observation) -> Result<pb::NodeActiveReply, KeeperError> {
        let request = node_active_request(
            self.state.node_id.unwrap_or_default(),
            self.state.current,
            &timings(&self.config),
            o,
            &self.start_failures,
        );
        let url = self.config.monitor.clone();
        match self.client().await?.node_active(request).await {
            Ok(reply) => Ok(reply.into_inner()),
            // The monitor does not accept this keeper's credentials: keep
            // trying (an operator may be rotating them) and let the fence
            // task stop a primary meanwhile, as for an unreachable monitor.
            Err(status) if is_auth_refusal(&status) => Err(KeeperError::MonitorUnreachable {
                url,
                reason: format!("the monitor refused this keeper: {}", status.message()),
            }),
            Err(status) if is_refusal(&status) => {
                Err(KeeperError::Refused(status.message().to_string()))
            }
            Err(status) => Err(KeeperError::MonitorUnreachable {
                url,
                reason: status.message().to_string(),
            }),
        }
    }

    fn upstream(&self) -> Result<Upstream, KeeperError> {
        let node_id = self.state.node_id.unwrap_or_default();
        self.instructions
            .primary
            .as_ref()
            .map(|p| Upstream {
                host: p.host.clone(),
                port: p.port as u16,
                // A fast-forward source is a standby: it keeps no slot for us.
                slot_name: if self.state.goal == S::FastForward {
                    String::new()
                } else {
                    slot_name(node_id)
                },
            })
            .ok_or_else(|| {
                KeeperError::Waiting("the monitor names no primary to follow yet".into())
            })
    }

    fn managed_config(&self, standby_of: Option<Upstream>) -> ManagedConfig {
        let node_id = self.state.node_id.unwrap_or_default();
        ManagedConfig {
            port: self.config.port,
            listen_addresses: self.config.listen_addresses(),
            application_name: application_name(node_id),
            synchronous_standby_names: if standby_of.is_some() {
                String::new()
            } else {
                self.instructions.synchronous_standby_names.clone()
            },
            standby_of,
            wal_sender_timeout: self.config.wal_sender_timeout,
            wal_receiver_timeout: self.config.wal_receiver_timeout,
            group_hosts: self.instructions.peer_hosts.as_ref().map(|peers| {
                std::iter::once(self.config.host.clone())
                    .chain(peers.iter().cloned())
                    .collect()
            }),
        }
    }

    /// [`Self::execute`], with keepalives sent every heartbeat interval
    /// while it runs (the first one interval after the step's heartbeat).
    async fn execute_with_keepalive(
        &mut self,
        actions: &[Action],
        transition: Option<(S, S)>,
    ) -> Result<(), KeeperError> {
        let keepalive = Keepalive {
            client: self.client().await?.clone(),
            pg: self.pg.clone(),
            lease: self.lease.clone(),
            status: self.status.clone(),
            start_failures: self.start_failures.clone(),
            node_id: self.state.node_id.unwrap_or_default(),
            current: self.state.current,
            timings: timings(&self.config),
            interval: self.config.heartbeat_interval,
        };
        let beats = keepalive.run();
        tokio::pin!(beats);
        tokio::select! {
            biased;
            result = self.execute(actions, transition) => result,
            never = &mut beats => match never {},
        }
    }

    /// Start PostgreSQL, counting a start that failed with no postmaster
    /// left (one that only ran out of time is still starting: not a
    /// failure; nor is a start the fence cut short).
    async fn start_postgres(&self) -> Result<(), KeeperError> {
        match self.pg.start().await {
            Ok(()) => {
                self.start_failures.store(0, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                if !self.pg.postmaster_alive() && !self.lease.lock().await.fenced {
                    let n = self.start_failures.fetch_add(1, Ordering::SeqCst) + 1;
                    tracing::warn!(
                        failed_starts = n,
                        "PostgreSQL did not start; the monitor is told"
                    );
                }
                Err(e.into())
            }
        }
    }

    /// Run `actions` in order; `transition` names the plan they are (none
    /// for a steady state's).
    async fn execute(
        &mut self,
        actions: &[Action],
        transition: Option<(S, S)>,
    ) -> Result<(), KeeperError> {
        let pg = self.pg.clone();
        let mut config_changed = false;
        for (k, action) in actions.iter().enumerate() {
            if let Some((from, to)) = transition {
                self.failpoints.before_action(from, to, k);
            }
            match action {
                Action::InitDb => pg.initdb().await?,
                Action::ConfigurePrimary => {
                    config_changed |= pg.write_config(&self.managed_config(None)).await?;
                }
                Action::ConfigureStandby => {
                    let upstream = self.upstream()?;
                    config_changed |= pg
                        .write_config(&self.managed_config(Some(upstream)))
                        .await?;
                }
                Action::Start => self.start_postgres().await?,
                Action::Reload => {
                    if config_changed {
                        pg.reload().await?;
                    }
                }
                Action::Stop => pg.stop().await?,
                Action::Clone => {
                    let upstream = self.upstream()?;
                    tracing::info!(from = %format!("{}:{}", upstream.host, upstream.port), "cloning the primary with pg_basebackup");
                    pg.base_backup(&upstream).await?;
                    config_changed = true;
                }
                Action::RewindOrClone => {
                    let upstream = self.upstream()?;
                    if let Err(e) = self.rewind_and_start(&upstream).await {
                        tracing::warn!(error = %e, "rewinding did not give a standby that starts; cloning the primary instead");
                        pg.stop().await?;
                        pg.base_backup(&upstream).await?;
                    }
                    config_changed = true;
                }
                Action::WaitReplayCaughtUp => {
                    pg.wait_replay_caught_up(Duration::from_secs(60)).await?
                }
                Action::Promote => pg.promote().await?,
                Action::SyncSlots => {
                    let slots = self.instructions.slots.clone();
                    pg.sync_slots(&slots).await?;
                    pg.ensure_replication_role().await?;
                }
            }
            if let Some((from, to)) = transition {
                self.failpoints.after_action(from, to, k);
            }
        }
        Ok(())
    }
}

impl<P: LocalPostgres + Send + Sync + 'static> Keeper<P> {
    /// pg_rewind, then start as a standby of `upstream`: a rewound data
    /// directory is only good once PostgreSQL accepts it.
    async fn rewind_and_start(&self, upstream: &Upstream) -> Result<(), KeeperError> {
        if !self.pg.has_data_directory() {
            return Err(KeeperError::Waiting("no data directory to rewind".into()));
        }
        self.pg.rewind(upstream).await?;
        self.pg
            .write_config(&self.managed_config(Some(upstream.clone())))
            .await?;
        self.pg.start().await?;
        Ok(())
    }
}

/// The heartbeat request for what the loop or a keepalive observed. A
/// running PostgreSQL clears the count of failed starts.
fn node_active_request(
    node_id: i64,
    current: S,
    timings: &pb::KeeperTimings,
    o: &Observation,
    start_failures: &AtomicU32,
) -> pb::NodeActiveRequest {
    if o.running {
        start_failures.store(0, Ordering::SeqCst);
    }
    pb::NodeActiveRequest {
        node_id,
        reported_state: current.to_wire(),
        pg_running: o.running,
        lsn: o.lsn,
        timeline: o.timeline,
        wal_receiver_streaming: o.wal_receiver_streaming,
        system_identifier: o.system_identifier,
        timings: Some(*timings),
        streaming_standbys: o.streaming_standbys.clone(),
        pg_start_failures: if o.running {
            0
        } else {
            start_failures.load(Ordering::SeqCst)
        },
        synchronous_standby_names: o.synchronous_standby_names.clone(),
    }
}

/// A heartbeat sent at `sent` got an answer: the fence clock restarts from
/// `sent` (never from the answer: the monitor's fence deadline counts from
/// when it heard the heartbeat, which is later), and the fence set is the
/// one the monitor just sent and stored.
async fn renew_lease(lease: &Mutex<Lease>, sent: Instant, fence_set: Vec<String>, required: u32) {
    let mut lease = lease.lock().await;
    lease.last_ok_sent = lease.last_ok_sent.max(sent);
    lease.confirmed = true;
    lease.fence_set = fence_set;
    lease.required = required;
    lease.fenced = false;
}

/// Heartbeats sent while the loop carries out a plan (a `pg_ctl start`
/// through crash recovery can take many seconds), so the monitor hears the
/// keeper instead of a silence: it then gives a PostgreSQL being restarted
/// its `postgres_restart_timeout`, and the node's liveness and observed
/// facts stay current.
///
/// A keepalive reports the state the keeper is in (it only changes when
/// the plan is done) and what it observes of PostgreSQL right now; it is an
/// ordinary `NodeActive` heartbeat to the monitor. Of the answer it uses
/// only what keeps the fence rule true: an answered keepalive renews the
/// lease exactly as an answered heartbeat of the loop does (the fence clock
/// from its send time, the fence set the monitor stored as sent — ignoring
/// that set would let the keeper count standbys the monitor no longer
/// assumes). A keepalive that got no answer renews nothing, so the fence
/// still arms `fence_timeout` after the last answered heartbeat. The goal,
/// the primary to follow and the replication settings of the answer are
/// left to the loop's next heartbeat, once the plan is done: a keeper never
/// changes goal in the middle of a plan. The monitor sends the current
/// goal in every answer, so nothing is lost by not reading it here.
struct Keepalive<P> {
    client: security::Client,
    pg: Arc<P>,
    lease: Arc<Mutex<Lease>>,
    status: SharedStatus,
    start_failures: Arc<AtomicU32>,
    node_id: i64,
    current: S,
    timings: pb::KeeperTimings,
    interval: Duration,
}

impl<P: LocalPostgres + Send + Sync + 'static> Keepalive<P> {
    /// Send a keepalive every interval; never returns (dropped when the
    /// plan is done, which abandons a keepalive in flight unanswered).
    async fn run(mut self) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(self.interval).await;
            let o = self.pg.observe().await;
            let request = node_active_request(
                self.node_id,
                self.current,
                &self.timings,
                &o,
                &self.start_failures,
            );
            let sent = Instant::now();
            match self.client.node_active(request).await {
                Ok(reply) => {
                    let replication = reply.into_inner().replication.unwrap_or_default();
                    renew_lease(
                        &self.lease,
                        sent,
                        replication.quorum_standby_names,
                        replication.required_streaming_standbys,
                    )
                    .await;
                    let mut status = status::lock(&self.status);
                    status.last_heartbeat_ok = Some(sent);
                    status.fenced = false;
                }
                Err(status) => {
                    tracing::debug!(error = %status.message(), "keepalive not answered");
                }
            }
        }
    }
}

/// Refusals end the keeper; anything else is retried.
fn is_auth_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
    )
}

/// What one tick of the fence task does, once it looked at PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStep {
    /// No postmaster is alive: the node counts as fenced already.
    AlreadyStopped,
    /// Enough standbys of the fence set stream: keep serving.
    KeepServing,
    /// Too few stream: stop PostgreSQL now.
    Stop,
}

/// How many standbys a restarted keeper requires to stream before the
/// monitor first answers. The fence set it was last told is not kept across
/// a restart, so none counts: a primary whose keeper restarts while it is
/// cut off from the monitor fences after `fence_timeout`, as the monitor's
/// fence deadline (computed from its last heartbeat, before the restart)
/// assumes. With 0 it would never fence, and a `wait_primary` could keep
/// taking writes beside a newly promoted standby.
pub const FENCE_REQUIRED_UNTIL_ANSWERED: u32 = 1;

/// Whether the fence task must look at PostgreSQL: the node is on the
/// primary side and no heartbeat sent in the last `fence_timeout` got an
/// answer (DESIGN §4). Also once fenced: an action already under way when
/// the keeper lost the monitor (a `pg_ctl start` through a long crash
/// recovery) can bring PostgreSQL up after the fence found it stopped, so
/// the fence keeps looking, and stops it again, until the monitor answers.
pub fn fence_armed(current: S, since_last_answer: Duration, fence_timeout: Duration) -> bool {
    since_last_answer >= fence_timeout && current.must_fence_when_isolated()
}

/// The fence rule itself: an armed primary keeps serving only while at
/// least `required` members of `fence_set` stream from it. `running` is
/// whether a postmaster is alive at all — accepting connections, or still
/// starting (crash recovery), which would take writes once done: a
/// starting primary has no standby streaming from it, so it is stopped.
pub fn fence_step(
    running: bool,
    streaming_standbys: &[String],
    fence_set: &[String],
    required: u32,
) -> FenceStep {
    if !running {
        return FenceStep::AlreadyStopped;
    }
    let streaming = streaming_standbys
        .iter()
        .filter(|s| fence_set.contains(s))
        .count() as u32;
    if streaming >= required {
        FenceStep::KeepServing
    } else {
        FenceStep::Stop
    }
}

/// Stop PostgreSQL when the node is on the primary side, has not reached
/// the monitor for `fence_timeout`, and fewer than the required standbys
/// stream from it. Runs on its own short timer, so a slow heartbeat or a
/// long action never delays it.
async fn fence_task<P: LocalPostgres + Send + Sync + 'static>(
    pg: Arc<P>,
    lease: Arc<Mutex<Lease>>,
    fence_timeout: Duration,
    status: SharedStatus,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let (must_check, fence_set, required) = {
            let l = lease.lock().await;
            (
                fence_armed(l.current, l.last_ok_sent.elapsed(), fence_timeout),
                l.fence_set.clone(),
                l.required,
            )
        };
        if !must_check {
            continue;
        }
        let o = pg.observe().await;
        let alive = o.running || pg.postmaster_alive();
        match fence_step(alive, &o.streaming_standbys, &fence_set, required) {
            FenceStep::AlreadyStopped => {
                lease.lock().await.fenced = true;
                status::lock(&status).fenced = true;
                continue;
            }
            FenceStep::KeepServing => continue,
            FenceStep::Stop => {}
        }
        tracing::warn!(
            streaming = ?o.streaming_standbys,
            required,
            accepting_connections = o.running,
            "monitor unreachable and too few standbys streaming: fencing (stopping PostgreSQL)"
        );
        match pg.stop_immediate().await {
            Ok(()) => {
                lease.lock().await.fenced = true;
                status::lock(&status).fenced = true;
                crate::metrics::fenced();
                tracing::warn!("fenced: PostgreSQL stopped; it restarts only when the monitor says this node is still the primary");
            }
            Err(e) => tracing::error!(error = %e, "fencing failed"),
        }
    }
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[test]
    fn heartbeats_report_failed_starts_until_postgres_runs() {
        let failures = AtomicU32::new(2);
        let t = pb::KeeperTimings::default();
        let down = Observation::default();
        let r = node_active_request(7, S::Primary, &t, &down, &failures);
        assert_eq!(
            (r.node_id, r.pg_running, r.pg_start_failures),
            (7, false, 2)
        );
        assert_eq!(r.reported_state, S::Primary.to_wire());
        let up = Observation {
            running: true,
            ..Observation::default()
        };
        let r = node_active_request(7, S::Primary, &t, &up, &failures);
        assert_eq!((r.pg_running, r.pg_start_failures), (true, 0));
        assert_eq!(
            failures.load(Ordering::SeqCst),
            0,
            "a running server resets the count"
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn armed_only_on_the_primary_side_after_the_timeout() {
        let t = Duration::from_millis(1500);
        for state in S::ALL {
            assert_eq!(
                fence_armed(state, t, t),
                state.must_fence_when_isolated(),
                "{state}"
            );
            // Still armed once fenced: an action in flight may start it again.
            assert_eq!(
                fence_armed(state, t * 2, t),
                state.must_fence_when_isolated(),
                "{state} fenced"
            );
            assert!(
                !fence_armed(state, t - Duration::from_millis(1), t),
                "{state} early"
            );
        }
        assert!(fence_armed(S::WaitPrimary, t, t));
        assert!(!fence_armed(S::Single, t * 10, t));
        assert!(!fence_armed(S::StopReplication, t * 10, t));
    }

    #[test]
    fn stops_when_too_few_of_the_fence_set_stream() {
        let set = names(&["pgpilot_2", "pgpilot_3"]);
        assert_eq!(fence_step(false, &[], &set, 1), FenceStep::AlreadyStopped);
        assert_eq!(
            fence_step(true, &names(&["pgpilot_2"]), &set, 1),
            FenceStep::KeepServing
        );
        assert_eq!(
            fence_step(true, &names(&["pgpilot_2"]), &set, 2),
            FenceStep::Stop
        );
        assert_eq!(fence_step(true, &[], &set, 1), FenceStep::Stop);
        // A standby outside the fence set does not count.
        assert_eq!(
            fence_step(true, &names(&["pgpilot_9"]), &set, 1),
            FenceStep::Stop
        );
        assert_eq!(
            fence_step(true, &names(&["pgpilot_2", "pgpilot_3"]), &set, 2),
            FenceStep::KeepServing
        );
        // Nothing required (no standby to count): keep serving.
        assert_eq!(fence_step(true, &[], &[], 0), FenceStep::KeepServing);
        // A restarted keeper that has not heard from the monitor yet
        // counts nobody, however many stream.
        assert_eq!(
            fence_step(
                true,
                &names(&["pgpilot_2"]),
                &[],
                FENCE_REQUIRED_UNTIL_ANSWERED
            ),
            FenceStep::Stop
        );
    }
}
