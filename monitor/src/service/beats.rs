//! The keeper heartbeat as gRPC carries it: a unary `NodeActive` call per
//! beat, or one `Heartbeats` stream per keeper. Both check the caller,
//! parse and bound the request, shed load past a limit, and answer what
//! the store decided. A stream saves the monitor (and the keeper) a new
//! HTTP/2 stream, its headers, its trailers and a task per beat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pgpilot_proto::pb;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{
    address, fence_required_held, is_setting_name, notes, refused, start_failures, state, timings,
    valid_name,
};
use crate::auth::Caller;
use crate::error::Error;
use crate::store::wakes::Wakes;
use crate::store::{Assignment, Heartbeat, Store};

/// Heartbeats handled at once. Steady-state heartbeats are written in
/// batches of up to `batch::MAX_BATCH` by `batch::WORKERS` statements, so
/// this many drain in a few statements; more would only queue past the
/// keepers' RPC timeout.
const MAX_HEARTBEATS_IN_FLIGHT: usize = 2048;

/// Replies a stream holds for a keeper that does not read them: a keeper
/// sends its next heartbeat only after the last reply.
const STREAM_REPLIES: usize = 4;

/// How long a stream that ended with an error waits for its status to be
/// sent before it lets go of the keeper's side.
const STATUS_SENT: std::time::Duration = std::time::Duration::from_secs(5);

/// What every heartbeat, unary or streamed, goes through.
#[derive(Clone)]
pub(super) struct Beats {
    store: Store,
    /// Heartbeats being handled at once; beyond it the monitor sheds load.
    in_flight: Arc<Semaphore>,
    /// Node id → (formation, name), to check that a keeper heartbeats as
    /// itself without a query per heartbeat (ids are never reused).
    identities: Arc<Mutex<HashMap<i64, (String, String)>>>,
    /// Turns true when the monitor shuts down: open streams end.
    stop: watch::Receiver<bool>,
    /// Goal changes of the nodes whose keepers stream here (none: keepers
    /// are never woken).
    wakes: Option<Arc<Wakes>>,
}

impl Beats {
    pub(super) fn new(store: Store) -> Beats {
        Beats {
            store,
            in_flight: Arc::new(Semaphore::new(MAX_HEARTBEATS_IN_FLIGHT)),
            identities: Default::default(),
            stop: watch::channel(false).1,
            wakes: None,
        }
    }

    pub(super) fn waking(mut self, wakes: Arc<Wakes>) -> Beats {
        self.wakes = Some(wakes);
        self
    }

    pub(super) fn stopping(mut self, stop: watch::Receiver<bool>) -> Beats {
        self.stop = stop;
        self
    }

    /// A node just registered: its keeper may heartbeat as it.
    pub(super) fn remember(&self, node_id: i64, formation: &str, name: &str) {
        self.identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id, (formation.to_string(), name.to_string()));
    }

    /// One unary heartbeat. The database work runs in its own task: a
    /// keeper that gives up (RPC timeout) must not cut a transaction in
    /// half, which would throw the pooled connection away and feed an
    /// overload.
    pub(super) async fn unary(
        &self,
        caller: &Caller,
        r: pb::NodeActiveRequest,
    ) -> Result<pb::NodeActiveReply, Status> {
        let beats = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move { beats.answer(&caller, r).await })
            .await
            .map_err(|e| Status::internal(format!("heartbeat task failed: {e}")))?
    }

    /// A keeper's stream: its heartbeats answered one after the other by a
    /// task of its own (which a keeper that goes away never cuts in the
    /// middle of a transaction). The first error, a request that cannot be
    /// read included, ends the stream with its status. Between two answers,
    /// a keeper that asked for wake-ups is sent one when its group changes.
    pub(super) fn stream(
        &self,
        caller: Caller,
        mut inbound: Streaming<pb::NodeActiveRequest>,
    ) -> ReceiverStream<Result<pb::NodeActiveReply, Status>> {
        let (tx, rx) = mpsc::channel(STREAM_REPLIES);
        let beats = self.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut woken: Option<watch::Receiver<u64>> = None;
            loop {
                // A request that cannot be read (too large, not a message)
                // is answered with the status a unary call would get. A
                // shutdown ends the stream between two heartbeats.
                let next = tokio::select! {
                    next = inbound.message() => next,
                    _ = stop.wait_for(|&s| s) => Err(Status::unavailable(
                        "the monitor is shutting down: retry against another monitor",
                    )),
                    Some(()) = changed(&mut woken) => {
                        // Never waits: a keeper that does not read its
                        // replies gets no more wake-ups.
                        let _ = tx.try_send(Ok(wake()));
                        continue;
                    }
                };
                let answer = match next {
                    Ok(Some(r)) => {
                        let (node_id, wakes) = (r.node_id, r.wakes);
                        let answer = beats.answer(&caller, r).await;
                        if answer.is_ok() {
                            woken = beats.subscribe(woken, node_id, wakes);
                        }
                        answer
                    }
                    Ok(None) => break,
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() {
                    break;
                }
                if failed {
                    // Keep the reading side open until the status has gone out:
                    // dropping it first resets the HTTP/2 stream, and the
                    // keeper could see the reset before the status.
                    let _ = tokio::time::timeout(STATUS_SENT, tx.closed()).await;
                    break;
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// The wake-ups of a stream after an answered heartbeat of `node_id`:
    /// what it had, or a subscription once its keeper asks; a goal change
    /// before this answer is in it, so older wake-ups are marked seen.
    fn subscribe(
        &self,
        had: Option<watch::Receiver<u64>>,
        node_id: i64,
        asked: bool,
    ) -> Option<watch::Receiver<u64>> {
        if !asked {
            return None;
        }
        let mut woken = match had {
            Some(had) => had,
            None => self.wakes.as_ref()?.subscribe(node_id),
        };
        woken.borrow_and_update();
        Some(woken)
    }

    /// Check, parse, shed or handle one heartbeat.
    async fn answer(
        &self,
        caller: &Caller,
        r: pb::NodeActiveRequest,
    ) -> Result<pb::NodeActiveReply, Status> {
        caller.require_keeper().map_err(refused)?;
        let slot_report = super::slots::reported(&r)?;
        let hb = self.parse(r)?;
        self.check_caller(caller, hb.node_id).await?;
        // Over capacity: say so at once; the keeper retries on its next loop.
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(Status::unavailable(
                "the monitor is overloaded: heartbeat shed, retry on the next loop",
            ));
        };
        let started = std::time::Instant::now();
        let result = self.store.node_active(&hb).await;
        crate::metrics::heartbeat_handled(started.elapsed());
        let a = result?;
        // After the commit: the transition is durable, whoever assigned it.
        if let Some(r) = a.reached {
            crate::metrics::goal_reached(r.from, r.to, r.took);
        }
        // A keeper behind the formation's parameters gets them all (a
        // read only when they changed since it last applied them).
        let parameters = if hb.parameters_applied != a.parameters_version {
            Some(self.store.parameters(&a.node.formation).await?)
        } else {
            None
        };
        // Permanent slots: the keeper's report kept, and (only where the
        // formation declares slots) the list and the upstream's positions.
        let slots = if slot_report.is_some() || a.slot_count > 0 {
            let upstream = a
                .primary
                .as_ref()
                .map(|p| p.snap.id)
                .filter(|&id| id != a.node.snap.id);
            Some(
                self.store
                    .slot_exchange(
                        hb.node_id,
                        slot_report.as_deref(),
                        &a.node.formation,
                        upstream,
                    )
                    .await?,
            )
        } else {
            None
        };
        let mut answer = reply(a, parameters);
        answer.slots_included = true;
        if let Some((declared, upstream)) = slots {
            answer.permanent_slots = declared.iter().map(Into::into).collect();
            answer.upstream_slots = upstream.iter().map(|p| p.to_wire(true)).collect();
        }
        Ok(answer)
    }

    fn parse(&self, r: pb::NodeActiveRequest) -> Result<Heartbeat, Error> {
        if r.node_id <= 0 {
            return Err(Error::InvalidArgument(format!(
                "node id {} is not valid: a keeper heartbeats with the id RegisterNode gave it",
                r.node_id
            )));
        }
        if !r.clone_from.is_empty() {
            valid_name("clone_from", &r.clone_from)?;
        }
        Ok(Heartbeat {
            node_id: r.node_id,
            reported: state(r.reported_state, "reported_state")?,
            pg_running: r.pg_running,
            lsn: r.lsn,
            timeline: r.timeline,
            wal_receiver_streaming: r.wal_receiver_streaming,
            system_identifier: r.system_identifier,
            timings: timings(r.timings, self.store.node_timeout())?,
            synchronous_standby_names: r.synchronous_standby_names,
            pg_start_failures: start_failures(r.pg_start_failures)?,
            acting_toward: r
                .acting_toward
                .map(|w| state(w, "acting_toward"))
                .transpose()?,
            fence_required_held: fence_required_held(r.fence_required_held)?,
            sent: crate::fsm::KeeperClock::from_wire(&r.keeper_boot_id, r.sent_at_ns)
                .map_err(Error::InvalidArgument)?,
            notes: notes(&r.notes)?,
            work: r.work.map(crate::store::work::check).transpose()?,
            pending_restart: r
                .pg_running
                .then(|| pending_restart(&r.pending_restart))
                .transpose()?,
            restart_done: r.restart_done,
            parameters_applied: r.parameters_applied,
            promotion_refused: r.promotion_refused,
            clone_from: r.clone_from,
            stopping: r.stopping,
        })
    }

    /// Refuse a keeper heartbeating as a node other than its own, and an
    /// operator heartbeating at all.
    async fn check_caller(&self, caller: &Caller, node_id: i64) -> Result<(), Status> {
        if *caller == Caller::Trusted {
            return Ok(());
        }
        let cached = self
            .identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node_id)
            .cloned();
        let (formation, name) = match cached {
            Some(known) => known,
            None => {
                let found = self.store.node_identity(node_id).await?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "node id {node_id} is not registered with this monitor: remove the keeper's state file to register again"
                    ))
                })?;
                self.remember(node_id, &found.0, &found.1);
                found
            }
        };
        caller.require_node(&formation, &name).map_err(refused)
    }
}

/// Most settings a heartbeat may say are pending a restart (PostgreSQL 15
/// has about 350 settings).
const MAX_PENDING_RESTART: usize = 512;

/// The settings a heartbeat says are pending a restart, as stored: sorted,
/// comma-separated. A name that is not a setting's (letters, digits, `_`
/// and `.`, at most 63 bytes) is refused.
fn pending_restart(names: &[String]) -> Result<String, Error> {
    if names.len() > MAX_PENDING_RESTART {
        return Err(Error::InvalidArgument(format!(
            "{} settings pending a restart in one heartbeat: send at most {MAX_PENDING_RESTART}",
            names.len()
        )));
    }
    let mut sorted: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        if !is_setting_name(name) {
            return Err(Error::InvalidArgument(format!(
                "pending_restart names {:?}, which is not a PostgreSQL setting's name (letters, digits, _ and ., at most 63 bytes)",
                name.chars().take(80).collect::<String>()
            )));
        }
        sorted.push(name);
    }
    sorted.sort_unstable();
    sorted.dedup();
    Ok(sorted.join(","))
}

/// The next wake-up of a stream (never, without a subscription).
async fn changed(woken: &mut Option<watch::Receiver<u64>>) -> Option<()> {
    match woken {
        Some(w) => w.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// A wake-up: not an answer; the keeper heartbeats at once.
fn wake() -> pb::NodeActiveReply {
    pb::NodeActiveReply {
        wake: true,
        ..Default::default()
    }
}

/// The reply a keeper reads its goal and replication settings from, with
/// the formation's parameters (and their version) when it is behind.
fn reply(a: Assignment, parameters: Option<(u64, Vec<(String, String)>)>) -> pb::NodeActiveReply {
    let (parameters_version, parameters_included, parameters) = match parameters {
        Some((version, set)) => (version, true, set.into_iter().collect()),
        None => (a.parameters_version, false, Default::default()),
    };
    // A cascading standby pointed at its upstream (see core::cascade).
    let upstream_is_standby = a
        .primary
        .as_ref()
        .is_some_and(|p| a.node.snap.upstream.as_deref() == Some(p.snap.name.as_str()));
    pb::NodeActiveReply {
        parameters_version,
        parameters_included,
        parameters,
        goal_state: a.node.snap.goal.to_wire(),
        primary: a.primary.as_ref().map(address),
        clone_source: a.clone_source.as_ref().map(address),
        synchronous_standby: a.synchronous_standby,
        replication: Some(pb::ReplicationSettings {
            synchronous_standby_names: a.plan.synchronous_standby_names,
            standbys: a.others.iter().map(address).collect(),
            required_streaming_standbys: a.plan.fence_required,
            quorum_standby_names: a.plan.fence_set,
        }),
        group_id: a.node.group_id as u32,
        formation: a.node.formation,
        may_stop: a.stop.as_ref().is_some_and(|s| s.may_stop),
        stop_refused: a.stop.and_then(|s| s.refused).unwrap_or_default(),
        paused: a.paused,
        wake: false,
        restart_requested: a.node.restart.requested,
        slots_included: false,
        permanent_slots: Vec::new(),
        upstream_slots: Vec::new(),
        upstream_is_standby,
        apply_delay_ms: Some(a.node.snap.apply_delay_ms),
    }
}
