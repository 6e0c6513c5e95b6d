//! A logical consumer: `pg_recvlogical` with `test_decoding` on a
//! permanent slot, reconnected (through the multi-host conninfo, to
//! whichever node takes writes) each time its connection ends, as a
//! change-data-capture consumer would. Every `pgpilot_writes` insert it
//! receives is recorded with when it first arrived and how often.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Cluster;

/// Run the formation with `wal_level = logical` (set, then every node
/// restarted) and declare the logical permanent slot `slot` (test_decoding
/// on `database`); returns once every node holds it.
pub async fn declare_logical_slot(cluster: &Cluster, slot: &str, database: &str) -> Result<()> {
    use crate::operator::cli_ok;
    cli_ok(
        cluster,
        &["set-parameter", "wal_level", "logical", "--timeout", "60s"],
    )
    .await?;
    cli_ok(
        cluster,
        &["restart", "--all", "--pending-only", "--timeout", "180s"],
    )
    .await?;
    cli_ok(cluster, &create_slot_args(slot, database)).await?;
    wait_held_everywhere(cluster, slot).await
}

/// `create-slot` of a logical test_decoding slot.
pub fn create_slot_args<'a>(slot: &'a str, database: &'a str) -> [&'a str; 8] {
    [
        "create-slot",
        slot,
        "--plugin",
        "test_decoding",
        "--database",
        database,
        "--timeout",
        "120s",
    ]
}

/// Wait until every node reports holding `slot` with no problem.
pub async fn wait_held_everywhere(cluster: &Cluster, slot: &str) -> Result<()> {
    use crate::FormationStateExt;
    let names = cluster.node_names();
    cluster
        .wait_state(
            Duration::from_secs(120),
            &format!("every node to hold slot {slot}"),
            |s| {
                names.iter().all(|name| {
                    s.node(name).is_some_and(|n| {
                        n.slots
                            .iter()
                            .any(|p| p.name == slot && p.restart_lsn > 0 && p.problem.is_empty())
                    })
                })
            },
        )
        .await
        .map(|_| ())
}

/// The primary's host dies (keeper and postmaster SIGKILLed); returns
/// the old primary, the new one and when it was killed, once another node
/// is the primary.
pub async fn kill_primary(cluster: &Cluster) -> Result<(String, String, Instant)> {
    use crate::FormationStateExt;
    let old = cluster.primary_name().await?;
    let killed = cluster.kill_node_hard(&old)?;
    let state = cluster
        .wait_other_primary(&old, Duration::from_secs(120))
        .await?;
    let new = state
        .writable_primaries()
        .first()
        .map(|n| n.name.clone())
        .unwrap_or_default();
    Ok((old, new, killed))
}

/// The killed `old` primary's keeper started again: it rejoins as a
/// standby of `new` and holds its copy of `slot` again.
pub async fn rejoin_holding(cluster: &Cluster, old: &str, new: &str, slot: &str) -> Result<()> {
    cluster.start_keeper(old)?;
    cluster
        .wait_rejoined(old, new, Duration::from_secs(180))
        .await?;
    wait_held_everywhere(cluster, slot).await
}

/// How soon a consumer whose connection ended connects again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Seen {
    /// Id → when it first arrived.
    first: HashMap<i64, Instant>,
    /// Arrivals of ids already seen.
    repeats: usize,
    /// Connections made (pg_recvlogical started).
    sessions: usize,
    /// The last lines pg_recvlogical wrote on stderr.
    errors: Vec<String>,
}

/// A running consumer (stopped when dropped).
pub struct LogicalConsumer {
    seen: Arc<Mutex<Seen>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Wait until `consumer` received the inserts `writer` had acknowledged
/// once one was acknowledged after `since`; the consumer's pause across
/// `since` (see [`Received::longest_pause_after`]).
pub async fn wait_consumed_after(
    cluster: &Cluster,
    consumer: &LogicalConsumer,
    writer: &crate::Writer,
    since: Instant,
    what: &str,
) -> Result<Duration> {
    writer
        .wait_ack_after(cluster, since, Duration::from_secs(120), what)
        .await?;
    let last = writer.acked_ids().into_iter().max().unwrap_or_default();
    let waited = cluster
        .wait_for(Duration::from_secs(120), what, || {
            let done = consumer.received().first.contains_key(&last);
            async move { Ok(done.then_some(())) }
        })
        .await;
    if let Err(e) = waited {
        return Err(e.context(format!("pg_recvlogical said:\n{}", consumer.errors())));
    }
    Ok(consumer
        .received()
        .longest_pause_after(since)
        .unwrap_or_default())
}

/// What a consumer received.
#[derive(Debug, Clone)]
pub struct Received {
    pub first: HashMap<i64, Instant>,
    pub repeats: usize,
    pub sessions: usize,
}

impl Received {
    /// Those of `ids` never received.
    pub fn missing(&self, ids: &[i64]) -> Vec<i64> {
        let mut missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| !self.first.contains_key(id))
            .collect();
        missing.sort_unstable();
        missing
    }

    /// The longest time between two arrivals of new inserts after `since`
    /// (how long the consumer saw nothing new across a failover).
    pub fn longest_pause_after(&self, since: Instant) -> Option<Duration> {
        let mut times: Vec<Instant> = self.first.values().copied().collect();
        times.sort_unstable();
        let before = times.iter().rev().find(|t| **t <= since).copied();
        let after: Vec<Instant> = times.into_iter().filter(|t| *t > since).collect();
        let mut prev = before?;
        let mut longest = Duration::ZERO;
        for t in after {
            longest = longest.max(t - prev);
            prev = t;
        }
        Some(longest)
    }
}

impl LogicalConsumer {
    /// Start consuming slot `slot` of database `database` of `cluster`
    /// (pg_recvlogical writes what arrives to its standard output, read
    /// line by line as it comes).
    pub fn start(cluster: &Cluster, slot: &str, database: &str) -> Result<Self> {
        let ports: Vec<String> = cluster
            .node_names()
            .iter()
            .map(|n| cluster.node_port(n).map(|p| p.to_string()))
            .collect::<Result<_>>()?;
        let conninfo = format!(
            "host={} port={} dbname={database} user=postgres target_session_attrs=read-write connect_timeout=2",
            vec!["127.0.0.1"; ports.len()].join(","),
            ports.join(",")
        );
        let program = cluster.tools().pg_program("pg_recvlogical");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (stop, stopped) = watch::channel(false);
        let run = tokio::spawn(supervise(
            program,
            conninfo,
            slot.to_string(),
            seen.clone(),
            stopped,
        ));
        Ok(LogicalConsumer {
            seen,
            stop,
            tasks: vec![run],
        })
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        let seen = self.seen.lock().unwrap();
        Received {
            first: seen.first.clone(),
            repeats: seen.repeats,
            sessions: seen.sessions,
        }
    }

    /// pg_recvlogical's last error lines.
    pub fn errors(&self) -> String {
        self.seen.lock().unwrap().errors.join("\n")
    }

    pub async fn stop(mut self) -> Received {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.received()
    }
}

impl Drop for LogicalConsumer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Run pg_recvlogical until stopped, starting it again each time it
/// ends, recording each insert it prints.
async fn supervise(
    program: PathBuf,
    conninfo: String,
    slot: String,
    seen: Arc<Mutex<Seen>>,
    mut stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        seen.lock().unwrap().sessions += 1;
        let child = tokio::process::Command::new(&program)
            .args(["-d", &conninfo, "-S", &slot, "--start", "--no-loop"])
            // Confirm what was written at once, every second.
            .args(["-F", "0", "-s", "1", "-f", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                seen.lock().unwrap().errors.push(format!("spawn: {e}"));
                return;
            }
        };
        let mut stderr = child.stderr.take();
        if let Some(out) = child.stdout.take() {
            let mut lines = BufReader::new(out).lines();
            loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => record(&seen, &line),
                        // The connection ended: pg_recvlogical exits.
                        _ => break,
                    },
                    _ = stopped.changed() => {
                        let _ = child.start_kill();
                        break;
                    }
                }
            }
        }
        let _ = child.wait().await;
        let mut text = String::new();
        if let Some(err) = stderr.as_mut() {
            let _ = err.read_to_string(&mut text).await;
        }
        if !text.trim().is_empty() {
            let mut seen = seen.lock().unwrap();
            seen.errors.extend(text.lines().map(str::to_string));
            let excess = seen.errors.len().saturating_sub(20);
            seen.errors.drain(..excess);
        }
        // The scenario: a consumer reconnects a moment after its
        // connection ended (as CDC consumers do), not at once.
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
            _ = stopped.changed() => {}
        }
    }
}

/// Record one line pg_recvlogical printed.
fn record(seen: &Mutex<Seen>, line: &str) {
    let Some(id) = inserted_id(line) else {
        return;
    };
    let mut seen = seen.lock().unwrap();
    let now = Instant::now();
    match seen.first.entry(id) {
        std::collections::hash_map::Entry::Occupied(_) => seen.repeats += 1,
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(now);
        }
    }
}

/// The id of a test_decoding line for an insert into pgpilot_writes.
fn inserted_id(line: &str) -> Option<i64> {
    if !line.starts_with("table public.pgpilot_writes: INSERT:") {
        return None;
    }
    let rest = line.split("id[bigint]:").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decoding_inserts_are_read() {
        assert_eq!(
            inserted_id("table public.pgpilot_writes: INSERT: id[bigint]:42 at[timestamp with time zone]:'2026-12-07'"),
            Some(42)
        );
        assert_eq!(inserted_id("BEGIN 725"), None);
        assert_eq!(
            inserted_id("table public.other: INSERT: id[bigint]:1"),
            None
        );
    }

    #[test]
    fn the_pause_is_the_longest_gap_after_the_event() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let r = Received {
            first: HashMap::from([(1, at(0)), (2, at(100)), (3, at(2100)), (4, at(2200))]),
            repeats: 0,
            sessions: 1,
        };
        assert_eq!(
            r.longest_pause_after(at(150)),
            Some(Duration::from_millis(2000))
        );
        assert_eq!(r.missing(&[1, 5, 2, 0]), vec![0, 5]);
    }
}
