//! Waking keepers whose group changed, so that a goal reaches a keeper as
//! soon as it is committed instead of on the keeper's next heartbeat.
//!
//! A transaction that changes a goal notifies channel `pgpilot_goals` with
//! the ids of its group's nodes (a node whose goal stays the same may still
//! get a new reply: a primary's `synchronous_standby_names` follows its
//! standbys' goals). PostgreSQL delivers the notification at commit, to
//! every monitor process over the database, whichever of them the keepers
//! stream their heartbeats to. Each monitor listens on one connection and
//! bumps a counter per node; a heartbeat stream whose keeper asked for
//! wake-ups sends it a `wake` between two answers, and the keeper
//! heartbeats at once. A notification lost (the listening connection cut)
//! costs at most one heartbeat interval: the keeper's own timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{Result, Store, StoredNode, Tx};

/// The channel goal changes are notified on.
const CHANNEL: &str = "pgpilot_goals";

/// How long the listener waits before it connects again after an error.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Notify, at the commit of `tx`, that the replies of `nodes` changed.
pub(super) async fn notify(tx: &mut Tx<'_>, nodes: &[StoredNode]) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload(nodes.iter().map(|n| n.snap.id)))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The payload naming `ids`: decimal ids separated by commas (a group has
/// a handful of nodes; PostgreSQL takes 8000 bytes).
fn payload(ids: impl Iterator<Item = i64>) -> String {
    ids.map(|id| id.to_string()).collect::<Vec<_>>().join(",")
}

/// The node ids a payload names; anything else in it is skipped (another
/// program may notify on the channel).
fn parse(payload: &str) -> impl Iterator<Item = i64> + '_ {
    payload
        .split(',')
        .filter_map(|id| id.trim().parse::<i64>().ok())
        .filter(|&id| id > 0)
}

/// The wake-up counters of the nodes whose keepers stream to this monitor.
#[derive(Default)]
pub struct Wakes {
    nodes: Mutex<HashMap<i64, watch::Sender<u64>>>,
}

impl Wakes {
    /// Wake-ups of `node_id` from now on (a stream subscribes once it
    /// knows whose keeper it serves).
    pub fn subscribe(&self, node_id: i64) -> watch::Receiver<u64> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes
            .entry(node_id)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wake the streams of the nodes `payload` names; returns how many
    /// streams were woken. A node no stream serves any more is forgotten.
    pub fn wake(&self, payload: &str) -> usize {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let mut woken = 0;
        for id in parse(payload) {
            let Some(sender) = nodes.get(&id) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                nodes.remove(&id);
                continue;
            }
            sender.send_modify(|n| *n += 1);
            woken += sender.receiver_count();
        }
        woken
    }
}

impl Store {
    /// Listen for goal changes and wake the streams in `wakes`, for as long
    /// as the monitor runs; the connection is opened again after an error.
    pub async fn listen_for_wakes(&self, wakes: Arc<Wakes>) {
        let mut warned = false;
        loop {
            match self.listen_once(&wakes).await {
                Ok(()) => return,
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "listening for goal changes failed: keepers learn of new goals on their next heartbeat until it works again");
                        warned = true;
                    }
                    tokio::time::sleep(RECONNECT_AFTER).await;
                }
            }
        }
    }

    async fn listen_once(&self, wakes: &Wakes) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.listen_pool).await?;
        listener.listen(CHANNEL).await?;
        loop {
            let note = listener.recv().await?;
            let woken = wakes.wake(note.payload());
            crate::metrics::keepers_woken(woken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_ids_and_reads_back() {
        assert_eq!(payload([3, 17, 4].into_iter()), "3,17,4");
        assert_eq!(parse("3,17,4").collect::<Vec<_>>(), vec![3, 17, 4]);
        assert_eq!(parse("").count(), 0);
        assert_eq!(parse("x, 5 ,-2,0,9").collect::<Vec<_>>(), vec![5, 9]);
    }

    #[test]
    fn a_wake_reaches_the_subscribed_streams_only() {
        let wakes = Wakes::default();
        let mut a = wakes.subscribe(1);
        let b = wakes.subscribe(2);
        assert_eq!(wakes.wake("1,3"), 1);
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.borrow_and_update();
        assert!(!a.has_changed().unwrap());
        // Two streams of one node (a keeper reconnecting): both woken.
        let c = wakes.subscribe(2);
        assert_eq!(wakes.wake("2"), 2);
        assert!(c.has_changed().unwrap());
        // A node whose streams ended is forgotten.
        drop(a);
        assert_eq!(wakes.wake("1"), 0);
        assert!(!wakes.nodes.lock().unwrap().contains_key(&1));
    }
}
