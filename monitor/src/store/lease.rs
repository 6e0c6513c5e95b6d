//! The monitors sharing this database, and the lease on the background
//! duties: taking and renewing it (the database's clock sets the expiry),
//! letting it go at shutdown, and the check every duty's write makes.

use std::time::Duration;

use super::{Error, Result, Store, Tx};
use crate::core::lease::Renewal;

/// The one duty under a lease today: health checks, periodic evaluation
/// and retention, for every group.
pub const BACKGROUND: &str = "background";

/// A monitor seen not longer ago than this is listed by show-state; an
/// older row is deleted by the lease holder.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// One monitor process over this database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorInstance {
    pub id: String,
    pub url: String,
    /// Milliseconds since it last renewed or sought the lease.
    pub seen_ago_ms: i64,
    pub holds_lease: bool,
}

impl Store {
    /// Say this monitor is alive, and take or renew the lease for `ttl`.
    pub async fn renew_lease(&self, me: &str, url: &str, ttl: Duration) -> Result<Renewal> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO monitor_instance (monitor_id, url) VALUES ($1, $2)
             ON CONFLICT (monitor_id) DO UPDATE SET url = $2, last_seen = clock_timestamp()",
        )
        .bind(me)
        .bind(url)
        .execute(&mut *tx)
        .await?;
        // The token grows on every change of hands and on every new hold
        // after a hold ran out, never on a renewal in time.
        let granted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO monitor_lease AS l (duty, holder, token, acquired_at, expires_at)
             VALUES ($1, $2, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $3))
             ON CONFLICT (duty) DO UPDATE SET
                 holder = $2,
                 token = CASE WHEN l.holder = $2 AND l.expires_at > clock_timestamp()
                              THEN l.token ELSE l.token + 1 END,
                 acquired_at = CASE WHEN l.holder = $2 AND l.expires_at > clock_timestamp()
                                    THEN l.acquired_at ELSE clock_timestamp() END,
                 expires_at = clock_timestamp() + make_interval(secs => $3)
             WHERE l.holder = $2 OR l.expires_at <= clock_timestamp()
             RETURNING token",
        )
        .bind(BACKGROUND)
        .bind(me)
        .bind(ttl.as_secs_f64())
        .fetch_optional(&mut *tx)
        .await?;
        let renewal = match granted {
            Some(token) => {
                sqlx::query(
                    "DELETE FROM monitor_instance
                      WHERE last_seen < clock_timestamp() - make_interval(secs => $1)",
                )
                .bind(FORGET_AFTER.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                Renewal::Granted(token)
            }
            None => Renewal::HeldBy(
                sqlx::query_scalar("SELECT holder FROM monitor_lease WHERE duty = $1")
                    .bind(BACKGROUND)
                    .fetch_one(&mut *tx)
                    .await?,
            ),
        };
        tx.commit().await?;
        Ok(renewal)
    }

    /// Let the lease go at once (a clean shutdown), so that another
    /// monitor takes it at its next renewal instead of after the expiry.
    pub async fn release_lease(&self, me: &str) -> Result<()> {
        sqlx::query(
            "UPDATE monitor_lease SET expires_at = clock_timestamp()
              WHERE duty = $1 AND holder = $2",
        )
        .bind(BACKGROUND)
        .bind(me)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM monitor_instance WHERE monitor_id = $1")
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The monitors seen within the last hour, the lease holder first.
    pub async fn monitors(&self) -> Result<Vec<MonitorInstance>> {
        let rows: Vec<(String, String, i64, bool)> = sqlx::query_as(
            "SELECT i.monitor_id, i.url,
                    (extract(epoch FROM clock_timestamp() - i.last_seen) * 1000)::bigint,
                    coalesce(l.holder = i.monitor_id AND l.expires_at > clock_timestamp(), false)
               FROM monitor_instance i
               LEFT JOIN monitor_lease l ON l.duty = $1
              ORDER BY 4 DESC, i.started_at, i.monitor_id",
        )
        .bind(BACKGROUND)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, url, seen_ago_ms, holds_lease)| MonitorInstance {
                id,
                url,
                seen_ago_ms,
                holds_lease,
            })
            .collect())
    }
}

impl Store {
    /// Retention: delete up to `batch` events older than `keep`, while the
    /// lease is held with `lease`; how many were deleted.
    pub async fn prune_events(&self, lease: i64, keep: Duration, batch: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        check(&mut tx, lease).await?;
        let deleted = sqlx::query(
            "DELETE FROM event WHERE event_id IN (
                 SELECT event_id FROM event
                  WHERE at < clock_timestamp() - make_interval(secs => $1)
                  ORDER BY at LIMIT $2)",
        )
        .bind(keep.as_secs_f64())
        .bind(batch)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

/// Inside a duty's transaction, before it writes: the lease must still be
/// held with `token`. The row is taken FOR SHARE, so a takeover (which
/// updates it) waits until this transaction ends.
pub(super) async fn check(tx: &mut Tx<'_>, token: i64) -> Result<()> {
    let held: Option<bool> = sqlx::query_scalar(
        "SELECT expires_at > clock_timestamp() FROM monitor_lease
          WHERE duty = $1 AND token = $2 FOR SHARE",
    )
    .bind(BACKGROUND)
    .bind(token)
    .fetch_optional(&mut **tx)
    .await?;
    if held == Some(true) {
        Ok(())
    } else {
        Err(Error::LeaseLost(token))
    }
}
