//! The monitor database behind a multi-host URL
//! (`postgres://u@db1:5432,db2:5432/pgpilot?target_session_attrs=read-write`),
//! as libpq reads one: the monitor writes only to a server that is not in
//! recovery, and when that server fails over (promoted by whatever manages
//! it: Patroni, CloudNativePG, a managed service), the monitor finds the
//! new primary among the hosts and drops every connection to the old one.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use super::{Error, Result};

/// How often the monitor checks that it writes to the primary.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long one check or one probe of a host may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One URL per host of `url`, in order, without `target_session_attrs`
/// (the monitor always needs a server that takes writes): the URL itself
/// when it names one host. A `target_session_attrs` that asks for a
/// standby is refused.
pub fn split_hosts(url: &str) -> std::result::Result<Vec<String>, String> {
    // A URL with no host list (one host, a Unix socket in `?host=`, or
    // not a URL at all) is the driver's to read, as it is.
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(vec![url.to_string()]);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !authority.contains(',') {
        return Ok(vec![url.to_string()]);
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let mut kept = Vec::new();
    for pair in query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
    {
        match pair.split_once('=') {
            Some(("target_session_attrs", v)) => {
                if !matches!(v, "read-write" | "primary" | "any") {
                    return Err(format!(
                        "database_url asks for target_session_attrs={v}: the monitor writes to its database, use target_session_attrs=read-write"
                    ));
                }
            }
            _ => kept.push(pair),
        }
    }
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    let hosts: Vec<&str> = hosts.split(',').collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(
            "database_url has an empty host in its host list: write HOST:PORT,HOST:PORT".into(),
        );
    }
    Ok(hosts
        .iter()
        .map(|h| format!("{scheme}://{userinfo}{h}{path}{query}"))
        .collect())
}

/// The hosts of the monitor database and which one is in use.
pub struct Targets {
    options: Vec<PgConnectOptions>,
    /// Shown in logs: HOST:PORT of each.
    labels: Vec<String>,
    current: AtomicUsize,
    /// When the monitor last moved to another host (ms since `base`):
    /// connections opened before are closed instead of used.
    switched_ms: AtomicU64,
    base: Instant,
}

impl Targets {
    pub fn parse(url: &str) -> Result<Targets> {
        let urls = split_hosts(url).map_err(Error::Unavailable)?;
        let mut options = Vec::new();
        let mut labels = Vec::new();
        for u in &urls {
            let o = PgConnectOptions::from_str(u)
                .map_err(|e| Error::Unavailable(format!("database_url is not valid: {e}")))?;
            labels.push(format!("{}:{}", o.get_host(), o.get_port()));
            options.push(o);
        }
        Ok(Targets {
            options,
            labels,
            current: AtomicUsize::new(0),
            switched_ms: AtomicU64::new(0),
            base: Instant::now(),
        })
    }

    pub fn many(&self) -> bool {
        self.options.len() > 1
    }

    fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// A connection of this age was opened before the last move.
    fn stale(&self, age: Duration) -> bool {
        let switched = self.switched_ms.load(Ordering::Relaxed);
        switched > 0 && self.base.elapsed().saturating_sub(age).as_millis() < u128::from(switched)
    }

    fn moved_to(&self, i: usize) {
        self.current.store(i, Ordering::Relaxed);
        self.switched_ms.store(
            self.base.elapsed().as_millis().max(1) as u64,
            Ordering::Relaxed,
        );
    }
}

/// A pool of up to `max` connections to the host in use: connections to a
/// server in recovery are refused, and with several hosts connections
/// opened before a move are closed. `session` (SQL, may be empty) runs on
/// every new connection.
pub async fn pool(targets: &Arc<Targets>, max: u32, session: &'static str) -> Result<PgPool> {
    let stale = targets.clone();
    let options = PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if !session.is_empty() {
                    sqlx::raw_sql(session).execute(&mut *conn).await?;
                }
                let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut *conn)
                    .await?;
                if standby {
                    return Err(sqlx::Error::Configuration(
                        "this monitor database server is a standby (in recovery): the monitor writes only to the primary".into(),
                    ));
                }
                Ok(())
            })
        })
        .before_acquire(move |_conn, meta| {
            let keep = !stale.stale(meta.age);
            Box::pin(async move { Ok(keep) })
        });
    let first = targets.options[targets.current()].clone();
    if !targets.many() {
        return Ok(options.connect_with(first).await?);
    }
    // Start on whichever host is the primary now.
    let pool = options.connect_lazy_with(first);
    if !writes_to_primary(&pool).await {
        find_primary(targets, std::slice::from_ref(&pool)).await;
    }
    Ok(pool)
}

async fn writes_to_primary(pool: &PgPool) -> bool {
    let check = sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()").fetch_one(pool);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, check).await,
        Ok(Ok(false))
    )
}

/// Probe each host, the one after the current first; point `pools` at the
/// first primary found. Whether one was found.
async fn find_primary(targets: &Targets, pools: &[PgPool]) -> bool {
    let n = targets.options.len();
    let from = targets.current();
    for k in 1..=n {
        let i = (from + k) % n;
        let probe = async {
            let mut conn = targets.options[i].connect().await?;
            let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                .fetch_one(&mut conn)
                .await?;
            let _ = conn.close().await;
            Ok::<bool, sqlx::Error>(standby)
        };
        if let Ok(Ok(false)) = tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            for pool in pools {
                pool.set_connect_options(targets.options[i].clone());
            }
            if i != from {
                targets.moved_to(i);
                tracing::warn!(
                    from = %targets.labels[from],
                    to = %targets.labels[i],
                    "the monitor database moved: writing to the new primary"
                );
            }
            return true;
        }
    }
    false
}

/// Check every interval that `pools` write to the primary; when not, find
/// the primary among the hosts. Runs only with several hosts.
pub async fn follow(targets: Arc<Targets>, pools: Vec<PgPool>) {
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once per outage, not on every check.
    let mut warned = false;
    loop {
        ticker.tick().await;
        if writes_to_primary(&pools[0]).await || find_primary(&targets, &pools).await {
            warned = false;
        } else if !warned {
            warned = true;
            tracing::warn!(hosts = ?targets.labels, "no host of the monitor database takes writes: retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_kept_as_it_is() {
        assert_eq!(
            split_hosts("postgres://u:p@db:5432/pgpilot?sslmode=require").unwrap(),
            ["postgres://u:p@db:5432/pgpilot?sslmode=require"]
        );
    }

    #[test]
    fn several_hosts_become_one_url_each_without_target_session_attrs() {
        assert_eq!(
            split_hosts(
                "postgresql://pgpilot:s%40cret@db1:5432,db2:5433/pgpilot?target_session_attrs=read-write&connect_timeout=2"
            )
            .unwrap(),
            [
                "postgresql://pgpilot:s%40cret@db1:5432/pgpilot?connect_timeout=2",
                "postgresql://pgpilot:s%40cret@db2:5433/pgpilot?connect_timeout=2",
            ]
        );
        assert_eq!(
            split_hosts("postgres://db1,db2").unwrap(),
            ["postgres://db1", "postgres://db2"]
        );
    }

    #[test]
    fn a_standby_target_or_an_empty_host_is_refused() {
        let e = split_hosts("postgres://db1,db2/x?target_session_attrs=standby").unwrap_err();
        assert!(e.contains("target_session_attrs=read-write"), "{e}");
        let e = split_hosts("postgres://db1,,db2/x").unwrap_err();
        assert!(e.contains("empty host"), "{e}");
    }

    #[test]
    fn a_url_without_a_host_list_is_left_to_the_driver() {
        for url in [
            "postgres:///pgpilot?host=/var/run/postgresql",
            "postgres://u@db/x?options=-c%20a%3Db,c",
            "not a url",
        ] {
            assert_eq!(split_hosts(url).unwrap(), [url]);
        }
    }

    #[test]
    fn connections_opened_before_a_move_are_stale() {
        let t = Targets::parse("postgres://u@127.0.0.1:1,127.0.0.1:2/x").unwrap();
        assert!(t.many());
        assert!(!t.stale(Duration::from_secs(100)));
        std::thread::sleep(Duration::from_millis(5));
        t.moved_to(1);
        assert!(t.stale(Duration::from_secs(100)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!t.stale(Duration::from_millis(1)));
    }
}
