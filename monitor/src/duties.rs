//! The background duties (health checks of every node, the periodic
//! evaluation of groups whose keepers are silent, event retention), run
//! by the one monitor
//! holding the lease on them; the others renew their claim and wait.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::core::lease::{Change, LeaseView, Renewal};
use crate::store::Store;

/// Who this monitor is, and how long its lease lasts.
#[derive(Debug, Clone)]
pub struct Duties {
    /// A fresh id per process: two monitors never share one.
    pub me: String,
    /// The URL show-state lists for this monitor.
    pub url: String,
    pub lease_timeout: Duration,
    pub interval: Duration,
    pub check_timeout: Duration,
    pub check_user: String,
    /// Events older than this are deleted.
    pub event_retention: Duration,
}

/// How often the lease holder deletes old events, and at most how many
/// at a time (a first run on a large table takes several rounds).
const RETENTION_EVERY: Duration = Duration::from_secs(60);
const RETENTION_BATCH: i64 = 10_000;

/// A fresh monitor id: the host name and 64 bits of a fresh kernel UUID.
pub fn new_monitor_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
        .take(40)
        .collect();
    let fresh = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let fresh: String = fresh
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    let fresh = if fresh.len() == 16 {
        fresh
    } else {
        // No /proc: the process id and the time are unique enough on one host.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:08x}{:08x}", std::process::id(), t.subsec_nanos())
    };
    let host = if host.is_empty() { "monitor" } else { &host };
    format!("{host}-{fresh}")
}

/// Renew the lease every interval; while it is held, run the duties; until
/// `stop` turns true.
///
/// The renewal runs in its own task, so duties that take longer than the
/// lease (the first health checks of thousands of new nodes) never let it
/// run out; each duty still writes only while the database says the token
/// holds (`lease::check`). On `stop` the duties end and the renewal ends
/// between two renewals, never in the middle of one (a renewal cut short
/// still reaches the database, and could take the lease back after the
/// monitor released it).
pub async fn run(store: Store, duties: Duties, mut stop: watch::Receiver<bool>) {
    let (lease_tx, lease_rx) = watch::channel(LeaseView::default());
    let renewal = tokio::spawn(renew(store.clone(), duties.clone(), lease_tx, stop.clone()));
    tokio::select! {
        _ = work(store, duties, lease_rx) => {}
        _ = stop.wait_for(|&s| s) => {}
    }
    let _ = renewal.await;
}

/// Renew the claim every interval and publish what is known of the lease.
async fn renew(
    store: Store,
    duties: Duties,
    lease: watch::Sender<LeaseView>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(duties.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut view = LeaseView::default();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        let sent = Instant::now();
        let renewal = match store
            .renew_lease(&duties.me, &duties.url, duties.lease_timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease on the background duties");
                Renewal::Failed
            }
        };
        let change = view
            .after(sent, duties.lease_timeout, &renewal)
            .or_else(|| view.expire(Instant::now()));
        report(change, &renewal);
        lease.send_replace(view);
    }
}

/// Every interval, while the lease is held: health checks, the periodic
/// evaluation, and now and then event retention.
async fn work(store: Store, duties: Duties, lease: watch::Receiver<LeaseView>) {
    let mut ticker = tokio::time::interval(duties.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at: Option<Instant> = None;
    loop {
        ticker.tick().await;
        let Some(token) = lease.borrow().token_at(Instant::now()) else {
            continue;
        };
        crate::health::check_all(&store, token, duties.check_timeout, &duties.check_user).await;
        if let Err(e) = store.evaluate_all(token).await {
            tracing::warn!(error = %e, "periodic evaluation failed");
        }
        if pruned_at.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            pruned_at = Some(Instant::now());
            match store
                .prune_events(token, duties.event_retention, RETENTION_BATCH)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "deleted events older than event_retention"),
                Err(e) => tracing::warn!(error = %e, "event retention failed"),
            }
        }
    }
}

fn report(change: Option<Change>, renewal: &Renewal) {
    match change {
        Some(Change::Acquired(token)) => {
            tracing::info!(token, "this monitor holds the lease: it runs the health checks and the periodic evaluation");
            crate::metrics::lease_held(Some(token));
        }
        Some(Change::Lost) => {
            let holder = match renewal {
                Renewal::HeldBy(h) => h.as_str(),
                _ => "nobody known (the database did not answer)",
            };
            tracing::warn!(
                holder,
                "this monitor lost the lease: it stopped its health checks and periodic evaluation"
            );
            crate::metrics::lease_held(None);
        }
        None => {}
    }
}
