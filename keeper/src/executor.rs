//! The executor: carries out a plan's actions (see [`crate::plan`])
//! against the local PostgreSQL, in order, with the configuration the
//! monitor's instructions call for. Every action is idempotent, so a plan
//! cut short is simply run again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pgpilot_proto::lsn::{application_name, slot_name};
use pgpilot_proto::notes;
use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;

use crate::adoption;
use crate::client::Keepalive;
use crate::config::KeeperConfig;
use crate::error::KeeperError;
use crate::failpoint::Failpoints;
use crate::fence::SharedLease;
use crate::hooks;
use crate::notes::Notes;
use crate::pg::{LocalPostgres, ManagedConfig, PgError, Rewound, Upstream};
use crate::plan::Action;
use crate::timeline::{self, Divergence};

/// How long a standby about to be promoted may take to replay the WAL it
/// already received.
const REPLAY_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// The latest reply of the monitor, with what the executor needs from it.
#[derive(Debug, Clone, Default)]
pub struct Instructions {
    pub primary: Option<pb::NodeAddress>,
    /// The standby a clone copies from instead of the primary, when the
    /// monitor names one (see the keeper's `clone_from`).
    pub clone_source: Option<pb::NodeAddress>,
    pub synchronous_standby_names: String,
    /// A slot for every other node of the group, with that node's LSN.
    pub slots: Vec<(String, u64, bool)>,
    /// Hosts of the other nodes of the group; `None` until the monitor
    /// first answered.
    pub peer_hosts: Option<Vec<String>>,
    /// The formation's permanent slots; `None` until a monitor that
    /// keeps them answered (see [`crate::slots`]).
    pub permanent_slots: Option<Vec<pb::PermanentSlot>>,
    /// Where the node this one follows holds them.
    pub upstream_slots: Vec<pb::SlotPosition>,
    /// `primary` is the standby this cascading standby streams from.
    pub upstream_is_standby: bool,
}

/// Where the node is headed: what a plan's actions configure.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub node_id: i64,
    pub goal: S,
    pub instructions: &'a Instructions,
    /// A reinit: a clone replaces the data directory even when it belongs
    /// to the group.
    pub reclone: bool,
    /// The formation's parameters, written into pgpilot.conf.
    pub parameters: &'a std::collections::BTreeMap<String, String>,
    /// A parameters version not applied yet: `Reload` reloads even when
    /// pgpilot.conf did not change (`reload` asks exactly that, for files
    /// edited by hand: postgresql.conf, pg_hba.conf).
    pub new_parameters_version: bool,
    /// The node's apply delay in milliseconds (0: not delayed), as the
    /// monitor last said (else the keeper's `apply_delay`).
    pub apply_delay_ms: u64,
}

/// Runs actions against `pg`.
pub struct Executor<P> {
    pg: Arc<P>,
    config: KeeperConfig,
    lease: SharedLease,
    /// Failed starts of PostgreSQL in a row since it last ran (reported in
    /// every heartbeat; shared with the keepalive).
    start_failures: Arc<AtomicU32>,
    /// Testing only: where to SIGKILL this process (none in production).
    failpoints: Failpoints,
    /// What the monitor must hear of (a diverged standby rewound).
    notes: Notes,
    /// This process has reloaded PostgreSQL's configuration at least once.
    /// A keeper killed between writing the configuration and reloading it
    /// leaves a server running the old one while the file already says the
    /// new: the next process cannot tell, so its first reload is not
    /// skipped.
    reloaded: std::sync::atomic::AtomicBool,
    /// The permanent slots this keeper made and its last report of them.
    permanent: std::sync::Mutex<crate::slots::Kept>,
}

impl<P: LocalPostgres + Send + Sync + 'static> Executor<P> {
    pub fn new(
        pg: Arc<P>,
        config: KeeperConfig,
        lease: SharedLease,
        start_failures: Arc<AtomicU32>,
    ) -> Self {
        Executor {
            pg,
            lease,
            start_failures,
            failpoints: Failpoints::default(),
            notes: Notes::default(),
            reloaded: std::sync::atomic::AtomicBool::new(false),
            permanent: std::sync::Mutex::new(crate::slots::Kept::load(&config.state_file())),
            config,
        }
    }

    /// The report of the permanent slots for the next loop heartbeat
    /// (`None`: nothing to say).
    pub fn slot_report(&self) -> Option<Vec<pb::SlotPosition>> {
        self.permanent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report
            .clone()
    }

    /// The notes for the monitor this executor queues.
    pub fn notes(&self) -> &Notes {
        &self.notes
    }

    pub fn set_failpoints(&mut self, failpoints: Failpoints) {
        self.failpoints = failpoints;
    }

    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    /// [`Self::execute`], with `keepalive` sending heartbeats every
    /// heartbeat interval while it runs.
    pub async fn execute_with_keepalive(
        &self,
        actions: &[Action],
        transition: Option<(S, S)>,
        target: Target<'_>,
        keepalive: Keepalive<P>,
    ) -> Result<(), KeeperError> {
        let beats = keepalive.run();
        tokio::pin!(beats);
        tokio::select! {
            biased;
            result = self.execute(actions, transition, target) => result,
            never = &mut beats => match never {},
        }
    }

    /// Run `actions` in order; `transition` names the plan they are (none
    /// for a steady state's).
    pub async fn execute(
        &self,
        actions: &[Action],
        transition: Option<(S, S)>,
        target: Target<'_>,
    ) -> Result<(), KeeperError> {
        let pg = &self.pg;
        let mut config_changed = false;
        // The system identifier of a data directory found, not made.
        let mut adopted: Option<u64> = None;
        for (k, action) in actions.iter().enumerate() {
            if let Some((from, to)) = transition {
                self.failpoints.before_action(from, to, k);
            }
            match action {
                Action::InitDb => {
                    if pg.holds_foreign_cluster() {
                        let id = pg.system_identifier().await?.unwrap_or(0);
                        tracing::warn!(
                            system_identifier = id,
                            "adopting the data directory found in pgdata: no initdb"
                        );
                        adopted = Some(id);
                    }
                    pg.initdb().await?
                }
                Action::RestartIfPending => {
                    let restarted = pg.restart_for_pending_settings().await?;
                    if let Some(id) = adopted {
                        self.notes.push(
                            notes::EXISTING_DATA_ADOPTED,
                            adoption_text(id, restarted.as_deref()),
                        );
                    }
                }
                Action::ConfigurePrimary => {
                    config_changed |= pg
                        .write_config(&self.managed_config(target, None, false))
                        .await?;
                }
                Action::ConfigureStandby => {
                    let standby_of = match upstream(target) {
                        Ok(upstream) => Some(upstream),
                        // No primary is named during an election once the
                        // old one was replaced: a standby stays one but
                        // follows nobody — it never streams again from the
                        // replaced primary, and a PostgreSQL stopped
                        // meanwhile comes back to report its LSN (or to
                        // serve a fast-forward).
                        Err(_) if pg.is_configured_standby() => None,
                        Err(e) => return Err(e),
                    };
                    config_changed |= pg
                        .write_config(&self.managed_config(target, standby_of, true))
                        .await?;
                }
                Action::Start => self.start_postgres().await?,
                Action::Reload => {
                    if config_changed
                        || target.new_parameters_version
                        || !self.reloaded.load(Ordering::SeqCst)
                    {
                        pg.reload().await?;
                        self.reloaded.store(true, Ordering::SeqCst);
                    }
                }
                // A standby sent back to wait_standby for a rebuild: its
                // data directory is about to be replaced, so its shutdown
                // restartpoint would be written for nothing.
                Action::Stop if rebuilt_standby(transition, target) => pg.stop_immediate().await?,
                Action::Stop => pg.stop().await?,
                Action::Checkpoint => pg.checkpoint_before_stop().await,
                Action::AdoptOrClone => {
                    let primary = upstream(target)?;
                    if target.reclone || !self.adopted(target, &primary).await {
                        self.clone_data(target, &primary).await?;
                    }
                    config_changed = true;
                }
                Action::RewindOrClone => {
                    let upstream = upstream(target)?;
                    if let Err(e) = self.rewind_and_start(target, &upstream).await {
                        tracing::warn!(error = %e, "rewinding did not give a standby that starts; cloning the primary instead");
                        pg.stop().await?;
                        self.copying(pg.base_backup(&upstream)).await?;
                    }
                    config_changed = true;
                }
                Action::RewindIfDiverged => {
                    config_changed |= self.rewind_if_diverged(target).await?;
                }
                Action::BeforePromotion => self.before_promotion(transition, target).await?,
                Action::WaitReplayCaughtUp => {
                    pg.wait_replay_caught_up(REPLAY_CATCH_UP_TIMEOUT).await?
                }
                Action::Promote => pg.promote().await?,
                Action::SyncSlots => {
                    pg.sync_slots(&target.instructions.slots).await?;
                    pg.ensure_replication_role().await?;
                    self.sync_permanent_slots(target).await?;
                }
            }
            if let Some((from, to)) = transition {
                self.failpoints.after_action(from, to, k);
            }
        }
        Ok(())
    }

    /// Keep the formation's permanent slots (see [`crate::slots`]): the
    /// plan's steps carried out, PostgreSQL restarted once when a standby
    /// wrote a copy, the marks saved and the report kept for the next
    /// heartbeat. A step that fails is reported, not fatal.
    async fn sync_permanent_slots(&self, target: Target<'_>) -> Result<(), KeeperError> {
        let Some(declared) = &target.instructions.permanent_slots else {
            return Ok(());
        };
        let marks = self.kept().marks.clone();
        if declared.is_empty() && marks.managed.is_empty() && self.kept().report.is_none() {
            return Ok(());
        }
        let (facts, local) = self.pg.slot_facts().await?;
        let upstream = &target.instructions.upstream_slots;
        let mut plan = crate::slots::plan(facts, declared, &local, upstream, &marks);
        for step in &plan.steps {
            if let Err(e) = self.pg.slot_step(step).await {
                let name = step.slot_name();
                tracing::warn!(slot = %name, error = %e, "permanent slot step failed; retried on the next loop");
                plan.problems.insert(name.to_string(), e.to_string());
                if let crate::slots::Step::Copy { .. } = step {
                    plan.marks.copies.remove(name);
                }
            }
        }
        self.kept()
            .save_marks(&self.config.state_file(), plan.marks.clone())
            .map_err(|e| PgError::Other(e.to_string()))?;
        if plan.restart {
            tracing::info!("restarting PostgreSQL to load the slot copies just written");
            self.pg.stop().await?;
            self.start_postgres().await?;
        }
        let local = match self.pg.slot_facts().await {
            Ok((_, local)) => local,
            Err(_) => Vec::new(),
        };
        let pg = &self.pg;
        let report = crate::slots::report(
            declared,
            &local,
            &plan.problems,
            |name| pg.slot_state(name),
            !facts.standby,
        );
        let mut kept = self.kept();
        kept.report = (!report.is_empty() || kept.report.as_ref().is_some_and(|r| !r.is_empty()))
            .then_some(report);
        Ok(())
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, crate::slots::Kept> {
        self.permanent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run the `before_promotion` hook, when set, and wait for it: a
    /// non-zero exit or one killed at `hook_timeout` refuses the
    /// promotion.
    async fn before_promotion(
        &self,
        transition: Option<(S, S)>,
        target: Target<'_>,
    ) -> Result<(), KeeperError> {
        let Some(command) = &self.config.before_promotion else {
            return Ok(());
        };
        let (from, to) = transition.unwrap_or((target.goal, target.goal));
        let env = hooks::promotion_environment(&self.config, target.node_id, from, to);
        let timeout = self.config.hook_timeout;
        match hooks::run("before_promotion", command, &env, timeout).await {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(KeeperError::PromotionRefused(format!(
                "the before_promotion hook refused this node's promotion ({status}): the monitor elects another standby when one can take over, else the hook runs again in {}s",
                hooks::REFUSAL_RETRY.as_secs()
            ))),
            None => Err(KeeperError::PromotionRefused(format!(
                "the before_promotion hook did not finish within hook_timeout ({}) or could not start: taken as a refusal; the hook runs again in {}s unless another standby is elected",
                humantime::format_duration(timeout),
                hooks::REFUSAL_RETRY.as_secs()
            ))),
        }
    }

    /// Start PostgreSQL, counting a start that failed with no postmaster
    /// left (one that only ran out of time is still starting: not a
    /// failure; nor is a start the fence cut short).
    async fn start_postgres(&self) -> Result<(), KeeperError> {
        match self.pg.start().await {
            Ok(()) => {
                self.start_failures.store(0, Ordering::SeqCst);
                // A crash recovery that replayed WAL on the way is news.
                if let Some(done) = self.pg.take_finished_work().filter(|d| d.done_bytes > 0) {
                    self.notes.push(notes::WORK_DONE, done.finished_text());
                }
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

    /// Run a clone or rewind, and tell the operator how it ended: a note of
    /// what it copied in how long, or of its stall.
    async fn copying<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, PgError> {
        let result = work.await;
        match &result {
            Ok(_) => {
                // A rewind that found nothing to copy is not news.
                if let Some(done) = self.pg.take_finished_work().filter(|d| d.done_bytes > 0) {
                    self.notes.push(notes::WORK_DONE, done.finished_text());
                }
            }
            Err(e @ PgError::Stalled { .. }) => {
                self.notes.push(notes::WORK_STALLED, e.to_string());
            }
            Err(_) => {}
        }
        result
    }

    /// A joining node's data directory kept (see [`crate::adoption`]):
    /// true when it was kept as it is or rewound, and the monitor is told;
    /// false when it must be cloned (why is logged).
    async fn adopted(&self, target: Target<'_>, primary: &Upstream) -> bool {
        let from = primary_label(target, primary);
        let verdict = match self.adoption_verdict(primary).await {
            Ok(Some(v)) => v,
            Ok(None) => return false,
            Err(e) => {
                tracing::warn!(error = %e, "could not check whether the existing data directory belongs to the group; cloning");
                return false;
            }
        };
        let (local, verdict) = verdict;
        let (kind, text) = match verdict {
            adoption::Verdict::Adopt => (
                notes::EXISTING_DATA_ADOPTED,
                adoption::adopted_text(&local, &from),
            ),
            adoption::Verdict::Rewind(divergence) => {
                match self.rewind_and_start(target, primary).await {
                    Ok(_) => (
                        notes::STANDBY_REWOUND,
                        format!("joined with a data directory of the group whose WAL forked from {from}: {divergence}; rewound with pg_rewind instead of cloning"),
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "rewinding the existing data directory did not give a standby that starts; cloning");
                        if let Err(e) = self.pg.stop().await {
                            tracing::warn!(error = %e, "stopping PostgreSQL before the clone failed");
                        }
                        return false;
                    }
                }
            }
            adoption::Verdict::Clone(why) => {
                tracing::info!("the existing data directory is not kept ({why}); cloning");
                return false;
            }
        };
        tracing::info!(kind, "{text}");
        self.notes.push(kind, text);
        true
    }

    /// The adoption verdict on this node's data directory, with the local
    /// facts; None without one.
    async fn adoption_verdict(
        &self,
        primary: &Upstream,
    ) -> Result<Option<(adoption::LocalData, adoption::Verdict)>, PgError> {
        let Some((local, up, segment_size)) = self.pg.adoption_facts(primary).await? else {
            return Ok(None);
        };
        let present = match adoption::judge(&local, &up) {
            Ok(None) => {
                let segment = adoption::resume_segment(local.redo_lsn, &up.history, segment_size);
                self.pg.upstream_has_wal_file(primary, &segment).await?
            }
            _ => false,
        };
        let has_restore_command = self.config.restore_command.is_some();
        let verdict = adoption::verdict(&local, &up, segment_size, present, has_restore_command);
        Ok(Some((local, verdict)))
    }

    /// Replace PGDATA by a clone of the monitor's clone source, or of the
    /// primary: at once when the clone from a standby fails.
    async fn clone_data(&self, target: Target<'_>, primary: &Upstream) -> Result<(), KeeperError> {
        if let Some(source) = &target.instructions.clone_source {
            let standby = Upstream {
                host: source.host.clone(),
                port: source.port as u16,
                slot_name: String::new(),
            };
            tracing::info!(from = %format!("{} ({}:{})", source.name, source.host, source.port), "cloning a standby with pg_basebackup");
            match self.copying(self.pg.base_backup(&standby)).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, standby = %source.name, "cloning the standby failed; cloning the primary instead");
                    self.pg.stop().await?;
                }
            }
        }
        tracing::info!(from = %format!("{}:{}", primary.host, primary.port), "cloning the primary with pg_basebackup");
        self.copying(self.pg.base_backup(primary)).await?;
        Ok(())
    }

    /// pg_rewind, then start as a standby of `upstream`: a rewound data
    /// directory is only good once PostgreSQL accepts it.
    async fn rewind_and_start(
        &self,
        target: Target<'_>,
        upstream: &Upstream,
    ) -> Result<Rewound, KeeperError> {
        if !self.pg.has_data_directory() {
            return Err(KeeperError::Waiting("no data directory to rewind".into()));
        }
        let rewound = self.copying(self.pg.rewind_reporting(upstream)).await?;
        self.pg
            .write_config(&self.managed_config(target, Some(upstream.clone()), true))
            .await?;
        self.pg.start().await?;
        Ok(rewound)
    }

    /// `Action::RewindIfDiverged`: when this standby's WAL diverged from
    /// the upstream's timeline history, rewind it (or clone afresh when
    /// that fails) and queue a note for the monitor. True when PGDATA was
    /// rewritten.
    async fn rewind_if_diverged(&self, target: Target<'_>) -> Result<bool, KeeperError> {
        if target.instructions.upstream_is_standby {
            // A cascading standby's upstream is itself in recovery: its
            // history is the primary's, checked when it follows the
            // primary (which it does whenever its upstream cannot serve).
            return Ok(false);
        }
        let upstream = upstream(target)?;
        let Some(divergence) = self.divergence(&upstream).await else {
            return Ok(false);
        };
        let from = primary_label(target, &upstream);
        tracing::warn!(upstream = %from, "{divergence}: the standby cannot follow; rewinding it");
        let (kind, how) = match self.rewind_and_start(target, &upstream).await {
            Ok(Rewound::Rewound) => (
                pgpilot_proto::notes::STANDBY_REWOUND,
                "rewound with pg_rewind".to_string(),
            ),
            Ok(Rewound::NothingToRewind) => {
                // Its control file, once stopped, showed it already on the
                // upstream's history (a running standby's timeline is known
                // only from its last restartpoint): nothing happened to tell.
                tracing::info!(upstream = %from, "pg_rewind found nothing to rewind: the standby already follows the upstream's timeline");
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(error = %e, "rewinding did not give a standby that starts; cloning the primary instead");
                self.pg.stop().await?;
                self.copying(self.pg.base_backup(&upstream)).await?;
                (
                    pgpilot_proto::notes::STANDBY_RECLONED,
                    format!("pg_rewind failed ({e}); cloned afresh with pg_basebackup"),
                )
            }
        };
        let text = format!("diverged from {from}: {divergence}; {how}");
        tracing::info!(kind, "{text}");
        self.notes.push(kind, text);
        Ok(true)
    }

    /// Whether this standby's WAL diverged from `upstream`'s history.
    /// None also when either fact cannot be read (PostgreSQL starting, the
    /// upstream unreachable or not a primary): the steady state checks
    /// again on the next loop.
    async fn divergence(&self, upstream: &Upstream) -> Option<Divergence> {
        let local = match self.pg.wal_position().await {
            Ok(Some(local)) => local,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "divergence check: this node's WAL position is unknown");
                return None;
            }
        };
        let history = match self.pg.upstream_history(upstream).await {
            Ok(history) => history,
            Err(e) => {
                tracing::debug!(error = %e, "divergence check: the upstream's timeline history is unknown");
                return None;
            }
        };
        timeline::divergence(local, &history)
    }

    fn managed_config(
        &self,
        target: Target<'_>,
        standby_of: Option<Upstream>,
        standby: bool,
    ) -> ManagedConfig {
        let config = &self.config;
        ManagedConfig {
            standby,
            port: config.port,
            listen_addresses: config.listen_addresses(),
            application_name: application_name(target.node_id),
            synchronous_standby_names: if standby {
                String::new()
            } else {
                target.instructions.synchronous_standby_names.clone()
            },
            apply_delay_ms: if standby { standby_delay(target) } else { 0 },
            standby_of,
            wal_sender_timeout: config.wal_sender_timeout,
            wal_receiver_timeout: config.wal_receiver_timeout,
            group_hosts: target.instructions.peer_hosts.as_ref().map(|peers| {
                std::iter::once(config.host.clone())
                    .chain(peers.iter().cloned())
                    .collect()
            }),
            parameters: target.parameters.clone(),
        }
    }
}

/// The `recovery_min_apply_delay` of a standby headed for `target.goal`:
/// the node's apply delay, except on the way to a promotion, which must
/// replay everything received (the monitor never elects a delayed node;
/// should it, the promotion is not held up by the delay).
fn standby_delay(target: Target<'_>) -> u64 {
    if matches!(
        target.goal,
        S::FastForward | S::PreparePromotion | S::StopReplication
    ) {
        0
    } else {
        target.apply_delay_ms
    }
}

/// The primary to follow, clone or rewind from.
fn upstream(target: Target<'_>) -> Result<Upstream, KeeperError> {
    target
        .instructions
        .primary
        .as_ref()
        .map(|p| Upstream {
            host: p.host.clone(),
            port: p.port as u16,
            // A fast-forward source is a standby: it keeps no slot for us.
            slot_name: if target.goal == S::FastForward {
                String::new()
            } else {
                slot_name(target.node_id)
            },
        })
        .ok_or_else(|| KeeperError::Waiting("the monitor names no primary to follow yet".into()))
}

/// The primary as notes name it: "node1 (host:port)".
fn primary_label(target: Target<'_>, upstream: &Upstream) -> String {
    let address = format!("{}:{}", upstream.host, upstream.port);
    match &target.instructions.primary {
        Some(p) if !p.name.is_empty() => format!("{} ({address})", p.name),
        _ => address,
    }
}

/// The note of an adopted data directory.
fn adoption_text(system_identifier: u64, restarted_for: Option<&str>) -> String {
    let how = match restarted_for {
        Some(settings) => format!(
            "PostgreSQL was restarted once to apply settings that need a restart: {settings}"
        ),
        None => "no restart was needed".to_string(),
    };
    format!(
        "kept the existing data directory (database system {system_identifier}) as this group's primary instead of running initdb; {how}"
    )
}

/// The plan stops a standby that the monitor sent back to `wait_standby`
/// to be cloned afresh (a `reinit`): its data directory is thrown away, so
/// an immediate stop is enough (a node that was a primary, which still
/// owes its standbys WAL, is never stopped this way).
fn rebuilt_standby(transition: Option<(S, S)>, target: Target<'_>) -> bool {
    transition.is_some_and(|(from, to)| {
        to == S::WaitStandby
            && target.reclone
            && matches!(from, S::Secondary | S::Catchingup | S::Maintenance)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_keeps_its_delay_except_on_the_way_to_a_promotion() {
        let instructions = Instructions::default();
        let parameters = Default::default();
        let target = |goal| Target {
            node_id: 3,
            goal,
            instructions: &instructions,
            reclone: false,
            parameters: &parameters,
            new_parameters_version: false,
            apply_delay_ms: 3_600_000,
        };
        for goal in [
            S::Catchingup,
            S::Secondary,
            S::ReportLsn,
            S::JoinSecondary,
            S::WaitMaintenance,
        ] {
            assert_eq!(standby_delay(target(goal)), 3_600_000, "{goal}");
        }
        for goal in [S::FastForward, S::PreparePromotion, S::StopReplication] {
            assert_eq!(standby_delay(target(goal)), 0, "{goal}");
        }
    }
}
