//! Measurements from /proc and from the monitor's database: CPU and memory of
//! the monitor, its database and this program, transactions, busy statements.

use std::time::Instant;

use anyhow::{Context, Result};
use pgpilot_tests::process::children_of;

/// utime + stime of a process, in ticks; with `children` also the CPU time
/// of its reaped children (cutime + cstime).
pub(crate) fn cpu_ticks(pid: i32, children: bool) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields after the state: ppid(0) … utime(10) stime(11) cutime(12) cstime(13).
    let own = fields.get(10)? + fields.get(11)?;
    Some(if children {
        own + fields.get(12)? + fields.get(13)?
    } else {
        own
    })
}

/// CPU ticks of a postmaster and all its live children, plus the reaped ones.
pub(crate) fn postgres_ticks(postmaster: i32) -> u64 {
    cpu_ticks(postmaster, true).unwrap_or(0)
        + children_of(postmaster)
            .into_iter()
            .filter_map(|pid| cpu_ticks(pid, false))
            .sum::<u64>()
}

pub(crate) fn rss_mb(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
pub(crate) fn host_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Counters read at the start and the end of a window.
pub(crate) struct Snapshot {
    pub(crate) at: Instant,
    pub(crate) monitor: u64,
    pub(crate) db: u64,
    pub(crate) me: u64,
    pub(crate) host: (u64, u64),
    pub(crate) commits: i64,
    pub(crate) rollbacks: i64,
    /// Connections ever opened to the monitor's database.
    pub(crate) sessions: i64,
}

pub(crate) struct Probe {
    pub(crate) db: tokio_postgres::Client,
    /// Every monitor process (their CPU is added up).
    pub(crate) monitor_pids: Vec<i32>,
    pub(crate) postmaster: i32,
}

impl Probe {
    pub(crate) async fn snapshot(&self) -> Result<Snapshot> {
        let row = self
            .db
            .query_one(
                "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname = 'pgpilot'",
                &[],
            )
            .await
            .context("reading pg_stat_database")?;
        Ok(Snapshot {
            at: Instant::now(),
            monitor: self
                .monitor_pids
                .iter()
                .map(|&pid| cpu_ticks(pid, true).unwrap_or(0))
                .sum(),
            db: postgres_ticks(self.postmaster),
            me: cpu_ticks(std::process::id() as i32, false).unwrap_or(0),
            host: host_jiffies(),
            commits: row.get(0),
            rollbacks: row.get(1),
            sessions: row.get(2),
        })
    }

    /// What the monitor database's backends do right now: active ones by
    /// wait event ("CPU" when none), and those idle inside a transaction
    /// (waiting for the monitor's next statement).
    pub(crate) async fn activity(&self) -> Result<Vec<(String, i64)>> {
        let rows = self
            .db
            .query(
                "SELECT CASE WHEN state = 'active'
                             THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
                             ELSE state END AS what,
                        count(*)
                   FROM pg_stat_activity
                  WHERE datname = 'pgpilot' AND pid <> pg_backend_pid()
                    AND state IN ('active', 'idle in transaction')
                  GROUP BY 1",
                &[],
            )
            .await
            .context("reading pg_stat_activity")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The newest event's id (0 when none).
    pub(crate) async fn last_event_id(&self) -> Result<i64> {
        let row = self
            .db
            .query_one("SELECT coalesce(max(event_id), 0) FROM event", &[])
            .await
            .context("reading the event log")?;
        Ok(row.get(0))
    }

    /// Goal changes after event `after`, and how many of them started an
    /// election (`report_lsn`).
    pub(crate) async fn events_after(&self, after: i64) -> Result<(i64, i64)> {
        let row = self
            .db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE goal_to = 'report_lsn')
                   FROM event WHERE event_id > $1",
                &[&after],
            )
            .await
            .context("reading the event log")?;
        Ok((row.get(0), row.get(1)))
    }

    pub(crate) async fn reset_statements(&self) -> Result<()> {
        self.db
            .execute("SELECT pg_stat_statements_reset()", &[])
            .await
            .context("resetting pg_stat_statements")?;
        Ok(())
    }

    /// The statements the database spent most time on since the reset.
    pub(crate) async fn top_statements(&self, limit: i64) -> Result<Vec<Statement>> {
        let rows = self
            .db
            .query(
                "SELECT calls, total_exec_time, mean_exec_time,
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
                   FROM pg_stat_statements
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'pgpilot')
                    AND query NOT LIKE '%pg_stat%'
                  ORDER BY total_exec_time DESC
                  LIMIT $1",
                &[&limit],
            )
            .await
            .context("reading pg_stat_statements")?;
        Ok(rows
            .iter()
            .map(|r| Statement {
                calls: r.get(0),
                total_ms: r.get(1),
                mean_ms: r.get(2),
                query: r.get(3),
            })
            .collect())
    }

    pub(crate) async fn statements_total_ms(&self) -> Result<f64> {
        let row = self
            .db
            .query_one(
                "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'pgpilot')
                    AND query NOT LIKE '%pg_stat%'",
                &[],
            )
            .await
            .context("reading pg_stat_statements")?;
        Ok(row.get(0))
    }
}

pub(crate) struct Statement {
    pub(crate) calls: i64,
    pub(crate) total_ms: f64,
    pub(crate) mean_ms: f64,
    pub(crate) query: String,
}
