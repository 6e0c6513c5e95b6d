//! Steady-state heartbeats, many per statement (group commit).
//!
//! A heartbeat that changes nothing the state machine reads from its node
//! (same reported state, PostgreSQL running or not, streaming or not, same
//! count of failed starts, same timings, keeper not coming back from
//! silence), in a group where the
//! state machine has nothing to decide, only moves liveness and the LSN
//! forward. That is every heartbeat of a healthy fleet, and most of them
//! while a node works towards its goal (a clone, a catch-up). Such heartbeats are
//! queued here; a few workers each take whatever is queued (up to
//! [`MAX_BATCH`]), write it in ONE statement and commit once, then answer
//! every heartbeat of the batch. Under load a batch holds tens of
//! heartbeats (about 12 at 10,000 nodes a second), one commit for all of
//! them; when idle, a batch is a single heartbeat and adds no delay.
//!
//! Safety is unchanged from one heartbeat per transaction:
//! - a keeper is answered only after its liveness is committed, so the
//!   stored last heartbeat is never earlier than the one the keeper's fence
//!   clock counts from (the promotion deadline stays conservative, also for
//!   another monitor reading the same database);
//! - no goal is ever written here: the state machine runs in memory on what
//!   was read, and any heartbeat it would decide about, or whose primary's
//!   fence set would change, is answered "not here" and takes the locked
//!   path;
//! - rows are taken `FOR UPDATE SKIP LOCKED`: a node whose group a locked
//!   transaction holds is skipped (it takes the locked path, which waits),
//!   so a batch never waits on a lock and cannot deadlock; and a locked
//!   transaction that reaches a row a batch holds waits for the batch's
//!   commit and then reads its liveness, so no decision is taken on a
//!   heartbeat older than one already answered.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pgpilot_proto::ReplicationState as S;
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::error::{Error, Result};
use super::rows::GroupRow;
use super::{millis, snaps, Assignment, FormationSettings, Heartbeat, MachineSettings, StoredNode};
use crate::core::{heartbeat, Env};

/// A row of a group one of the batch's heartbeats belongs to.
#[derive(Debug, sqlx::FromRow)]
struct BatchRow {
    #[sqlx(flatten)]
    group: GroupRow,
    /// The row is one this batch updated.
    beat: bool,
}

/// The batch connections' settings. The statement is always keyed by node
/// ids; left to its statistics, the planner of a table rewritten every
/// second (dead rows, stale counts) at times chose a scan of every node
/// with a hash join, evaluating the liveness filter on every row: a
/// batch cost milliseconds at 3,000 nodes. On these connections only
/// index lookups and nested loops are considered.
pub const SESSION: &str =
    "SET enable_seqscan = off; SET enable_hashjoin = off; SET enable_mergejoin = off";

/// Heartbeats written by one statement at most.
pub const MAX_BATCH: usize = 512;
/// Statements in flight at once (each on its own pooled connection).
pub const WORKERS: usize = 4;
/// Heartbeats waiting for a worker before new ones are refused.
const QUEUE: usize = 8192;

/// Answer for one queued heartbeat: the assignment, or `None` when it must
/// take the locked path.
type Reply = oneshot::Sender<Result<Option<Assignment>>>;

/// The queue in front of the workers.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<(Heartbeat, Reply)>,
}

impl Batcher {
    /// Start the workers on the current runtime.
    pub fn start(pool: PgPool, settings: MachineSettings) -> Batcher {
        let (queue, rx) = mpsc::channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            tokio::spawn(worker(pool.clone(), settings, rx.clone()));
        }
        Batcher { queue }
    }

    /// Write `hb` in the next batch; `None` when the heartbeat must take the
    /// locked path.
    pub async fn submit(&self, hb: Heartbeat) -> Result<Option<Assignment>> {
        let (tx, rx) = oneshot::channel();
        if self.queue.send((hb, tx)).await.is_err() {
            return Err(Error::Unavailable(
                "the monitor is shutting down: retry against another monitor".into(),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "heartbeat batch lost: retry on the next loop".into(),
            ))
        })
    }
}

async fn worker(
    pool: PgPool,
    settings: MachineSettings,
    rx: Arc<Mutex<mpsc::Receiver<(Heartbeat, Reply)>>>,
) {
    loop {
        // Hold the receiver only while collecting: the next worker collects
        // the next batch while this one's statement runs.
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(item) => batch.push(item),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        // A node twice in one batch (a keeper retrying) goes the locked way
        // the second time: one row is updated once per statement.
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(batch.len());
        for (hb, reply) in batch {
            if seen.insert(hb.node_id) {
                items.push((hb, reply));
            } else {
                let _ = reply.send(Ok(None));
            }
        }
        let heartbeats: Vec<&Heartbeat> = items.iter().map(|(hb, _)| hb).collect();
        match write(&pool, &settings, &heartbeats).await {
            Ok(mut answers) => {
                for (hb, reply) in items {
                    let _ = reply.send(Ok(answers.remove(&hb.node_id)));
                }
            }
            Err(e) => {
                // Every heartbeat of a failed batch tries the locked path.
                tracing::warn!(error = %e, heartbeats = items.len(), "heartbeat batch failed");
                for (_, reply) in items {
                    let _ = reply.send(Ok(None));
                }
            }
        }
    }
}

/// Write one batch; the assignments of the heartbeats answered here.
async fn write(
    pool: &PgPool,
    settings: &MachineSettings,
    heartbeats: &[&Heartbeat],
) -> Result<BTreeMap<i64, Assignment>> {
    let col = |f: fn(&Heartbeat) -> i64| heartbeats.iter().map(|h| f(h)).collect::<Vec<i64>>();
    let rows: Vec<BatchRow> = sqlx::query_as(
        "WITH hb AS (
             SELECT * FROM unnest($1::int8[], $2::int8[], $3::int4[], $4::text[], $5::bool[],
                                  $6::bool[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                                  $12::int4[], $13::int4[], $14::text[], $15::int8[],
                                  $16::int8[], $17::text[], $18::int8[])
                 AS h(node_id, lsn, timeline, reported, pg_running, streaming, sysid,
                      hb_ms, fence_ms, wal_ms, start_failures, held, boot, sent,
                      restart_done, pending, params)
         ), mine AS (
             SELECT n.node_id, hb.lsn, hb.timeline, hb.boot, hb.sent
               FROM node n JOIN hb ON hb.node_id = n.node_id
              WHERE n.reported_state = hb.reported AND n.goal_state <> 'dropped'
                AND n.pg_running = hb.pg_running AND n.wal_receiver_streaming = hb.streaming
                AND (n.system_identifier = hb.sysid OR hb.sysid = 0)
                AND n.heartbeat_interval_ms = hb.hb_ms AND n.fence_timeout_ms = hb.fence_ms
                AND n.wal_sender_timeout_ms = hb.wal_ms
                AND n.pg_start_failures = hb.start_failures
                -- Stored work is cleared by the locked path.
                AND n.work IS NULL
                AND n.fence_held_required IS NOT DISTINCT FROM hb.held
                -- A restart carried out, or other settings pending: stored
                -- by the locked path (a keepalive's 0 changes nothing).
                AND least(hb.restart_done, n.restart_requested) <= n.restart_done
                AND (hb.pending IS NULL OR n.pending_restart = hb.pending)
                AND n.parameters_applied >= hb.params
                -- Built before the one folded in: the locked path answers it.
                AND NOT coalesce(n.keeper_boot_id = hb.boot AND n.keeper_sent_ns >= hb.sent,
                                 false)
                AND n.last_heartbeat > clock_timestamp() - make_interval(secs => $11)
                                       - make_interval(secs => n.heartbeat_interval_ms / 1000.0)
              ORDER BY n.node_id
                FOR UPDATE OF n SKIP LOCKED
         ), me AS (
             UPDATE node n SET last_heartbeat = clock_timestamp(), lsn = mine.lsn,
                               timeline = mine.timeline, keeper_boot_id = mine.boot,
                               keeper_sent_ns = mine.sent
               FROM mine WHERE n.node_id = mine.node_id
             RETURNING n.node_id, n.formation, n.group_id
         )
         SELECT n.*, f.number_sync_standbys, f.election_forced_at, f.paused_by, f.parameters_version, jsonb_array_length(f.permanent_slots) AS slot_count, clock_timestamp() AS now,
                n.node_id IN (SELECT node_id FROM me) AS beat
           FROM (SELECT DISTINCT formation, group_id FROM me) g
           JOIN node n ON n.formation = g.formation AND n.group_id = g.group_id
           JOIN formation f ON f.name = g.formation
          ORDER BY n.formation, n.group_id, n.node_id",
    )
    .bind(col(|h| h.node_id))
    .bind(col(|h| h.lsn as i64))
    .bind(
        heartbeats
            .iter()
            .map(|h| h.timeline as i32)
            .collect::<Vec<_>>(),
    )
    .bind(
        heartbeats
            .iter()
            .map(|h| h.reported.as_str().to_string())
            .collect::<Vec<_>>(),
    )
    .bind(heartbeats.iter().map(|h| h.pg_running).collect::<Vec<_>>())
    .bind(
        heartbeats
            .iter()
            .map(|h| h.wal_receiver_streaming)
            .collect::<Vec<_>>(),
    )
    .bind(col(|h| h.system_identifier as i64))
    .bind(col(|h| millis(h.timings.heartbeat_interval)))
    .bind(col(|h| millis(h.timings.fence_timeout)))
    .bind(col(|h| millis(h.timings.wal_sender_timeout)))
    .bind(settings.heartbeat_grace().as_secs_f64())
    .bind(
        heartbeats
            .iter()
            // As stored: a running server has no failed starts.
            .map(|h| {
                if h.pg_running {
                    0
                } else {
                    h.pg_start_failures as i32
                }
            })
            .collect::<Vec<_>>(),
    )
    .bind(
        heartbeats
            .iter()
            .map(|h| h.fence_required_held.map(|v| v as i32))
            .collect::<Vec<_>>(),
    )
    .bind(
        heartbeats
            .iter()
            .map(|h| h.sent.map(|c| c.boot_hex()))
            .collect::<Vec<_>>(),
    )
    .bind(
        heartbeats
            .iter()
            .map(|h| h.sent.map(|c| c.ns as i64))
            .collect::<Vec<_>>(),
    )
    .bind(col(|h| h.restart_done.min(i64::MAX as u64) as i64))
    .bind(
        heartbeats
            .iter()
            .map(|h| h.pending_restart.clone())
            .collect::<Vec<_>>(),
    )
    .bind(col(|h| h.parameters_applied.min(i64::MAX as u64) as i64))
    .fetch_all(pool)
    .await?;
    answers(settings, heartbeats, rows)
}

/// The assignments of the heartbeats of a written batch that need no
/// decision, from the rows of their groups (ordered by group).
fn answers(
    settings: &MachineSettings,
    heartbeats: &[&Heartbeat],
    rows: Vec<BatchRow>,
) -> Result<BTreeMap<i64, Assignment>> {
    let by_id: BTreeMap<i64, &Heartbeat> = heartbeats.iter().map(|h| (h.node_id, *h)).collect();
    let mut answers = BTreeMap::new();
    let mut rows = rows.into_iter().peekable();
    while let Some(first) = rows.next() {
        let key = (
            first.group.node.formation().to_string(),
            first.group.node.group_id(),
        );
        let mut group = vec![first];
        while let Some(next) =
            rows.next_if(|r| r.group.node.formation() == key.0 && r.group.node.group_id() == key.1)
        {
            group.push(next);
        }
        let now: DateTime<Utc> = group[0].group.formation.now;
        let formation = group[0].group.formation.settings()?;
        let mut nodes = Vec::with_capacity(group.len());
        let mut beat = Vec::new();
        for row in group {
            let mut node = StoredNode::try_from(row.group.node)?;
            if row.beat {
                // The row read is the one before the update: fold it in.
                if let Some(hb) = by_id.get(&node.snap.id) {
                    node.snap.last_heartbeat = Some(now);
                    node.snap.lsn = hb.lsn;
                    node.snap.timeline = hb.timeline;
                    node.snap.heard_sent = hb.sent;
                    beat.push(node.snap.id);
                }
            }
            if node.snap.goal != S::Dropped {
                nodes.push(node);
            }
        }
        for id in beat {
            let hb = by_id.get(&id);
            let applied = hb.and_then(|h| h.synchronous_standby_names.as_deref());
            let clone_from = hb.map_or("", |h| h.clone_from.as_str());
            let answer =
                settled_assignment(settings, &nodes, id, now, formation, applied, clone_from);
            if let Some(a) = answer {
                answers.insert(id, a);
            }
        }
    }
    Ok(answers)
}

/// The reply for node `id`, or `None` when the state machine would decide
/// something in its group (now, on the rows just read) or the primary's
/// fence set would change. Nothing is written from here but liveness: a
/// decision is always taken under the group's locks, on the locked path.
fn settled_assignment(
    settings: &MachineSettings,
    nodes: &[StoredNode],
    id: i64,
    now: DateTime<Utc>,
    formation: FormationSettings,
    applied_sync_names: Option<&str>,
    clone_from: &str,
) -> Option<Assignment> {
    let index = nodes.iter().position(|n| n.snap.id == id)?;
    let env = Env::new(now, settings.fsm(formation));
    let reply = heartbeat::settled(&snaps(nodes), index, &env, applied_sync_names, clone_from)?;
    Some(Assignment {
        parameters_version: formation.parameters_version,
        slot_count: formation.slot_count,
        ..Assignment::new(nodes, index, reply)
    })
}
