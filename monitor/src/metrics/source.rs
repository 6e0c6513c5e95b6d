//! What the metrics endpoint reads from the monitor's database, as a narrow
//! trait ([`MetricsSource`]) implemented here for the [`Store`]: the rest
//! of the metrics code depends on the trait, never on the store, and tests
//! feed it a fake source.

use std::fmt::Display;
use std::future::Future;

use chrono::{DateTime, Utc};

use super::render::NodeView;
use crate::store::{EventRow, Store, StoredNode};

/// One goal change of the event table, as the counters read it.
#[derive(Debug, Clone, PartialEq)]
pub struct GoalChange {
    pub event_id: i64,
    pub formation: String,
    pub goal_from: String,
    pub goal_to: String,
    /// The kind of the event's reason (None for events recorded before
    /// kinds were stored).
    pub kind: Option<String>,
    /// Recorded long enough ago that no event with a smaller id can still
    /// appear (ids are taken at insert but become visible at commit, which
    /// can be out of order).
    pub settled: bool,
}

/// The reads a scrape makes: plain snapshots, no lock.
pub trait MetricsSource: Send + Sync + 'static {
    /// Why a read failed, in one sentence.
    type Error: Display + Send;

    /// Every node of every formation as the gauges show it, heartbeat ages
    /// measured on the database's clock (heartbeats are stamped with it).
    fn snapshot(&self) -> impl Future<Output = Result<Vec<NodeView>, Self::Error>> + Send;

    /// The id of the newest event (0 when there is none).
    fn last_event_id(&self) -> impl Future<Output = Result<i64, Self::Error>> + Send;

    /// Up to `limit` events newer than `after`, oldest first.
    fn events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<GoalChange>, Self::Error>> + Send;
}

impl NodeView {
    /// The view of `n` at the database's time `now`.
    pub fn new(n: &StoredNode, now: DateTime<Utc>) -> Self {
        NodeView {
            formation: n.formation.clone(),
            group: n.group_id,
            name: n.snap.name.clone(),
            reported: n.snap.reported,
            goal: n.snap.goal,
            pg_running: n.snap.pg_running,
            health: n.snap.health,
            heartbeat_age: n
                .snap
                .last_heartbeat
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
            lsn: n.snap.lsn,
            timeline: n.snap.timeline,
            candidate_priority: n.snap.candidate_priority,
            formation_paused: false,
            pending_restart: n.pending_restart.len() as u32,
        }
    }
}

impl GoalChange {
    fn new(e: EventRow, settled: bool) -> Self {
        GoalChange {
            event_id: e.event_id,
            formation: e.formation,
            goal_from: e.goal_from,
            goal_to: e.goal_to,
            kind: e.kind,
            settled,
        }
    }
}

impl MetricsSource for Store {
    type Error = crate::store::Error;

    async fn snapshot(&self) -> Result<Vec<NodeView>, Self::Error> {
        let (nodes, now, paused) = self.metrics_snapshot().await?;
        Ok(nodes
            .iter()
            .map(|n| NodeView {
                formation_paused: paused.contains(&n.formation),
                ..NodeView::new(n, now)
            })
            .collect())
    }

    async fn last_event_id(&self) -> Result<i64, Self::Error> {
        Store::last_event_id(self).await
    }

    async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<GoalChange>, Self::Error> {
        let batch = Store::events_after(self, after, limit).await?;
        Ok(batch
            .into_iter()
            .map(|(e, settled)| GoalChange::new(e, settled))
            .collect())
    }
}
