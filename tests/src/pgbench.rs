//! A real write load: `pgbench -i` to fill a node, and `pgbench -c N -j M`
//! through the multi-host URI while a scenario runs.
//!
//! PostgreSQL 15's pgbench does not reconnect: when its primary goes away
//! its clients abort and it exits. The load therefore runs pgbench in
//! short rounds (`-T`), one after the other, as an application's
//! connection pool reconnects: a round that ends early (clients aborted,
//! or no primary to connect to) is followed by the next at once, or after
//! [`RETRY_PAUSE`] when it could not connect at all. What pgbench itself
//! counted — transactions processed, clients aborted, failed connection
//! attempts — is summed over the rounds.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::task::JoinHandle;

use crate::{Cluster, Tools};

/// Length of one pgbench round: the load stops at most this long after
/// [`PgbenchLoad::stop`].
pub const ROUND: Duration = Duration::from_secs(5);
/// Pause after a round that could not connect (no primary yet).
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What pgbench counted, over all rounds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PgbenchTotals {
    pub rounds: u64,
    /// "number of transactions actually processed".
    pub transactions: u64,
    /// "client N aborted in command …" lines: clients whose connection
    /// broke mid-transaction (their transaction is not counted).
    pub aborted_clients: u64,
    /// Rounds that could not connect to a writable server.
    pub failed_connects: u64,
}

impl PgbenchTotals {
    /// Fold one finished round's output in.
    pub fn add_round(&mut self, stdout: &str, stderr: &str) {
        self.rounds += 1;
        self.transactions += stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.split('/').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        self.aborted_clients += stderr
            .lines()
            .filter(|l| l.contains(" aborted in command "))
            .count() as u64;
        if stderr.contains("connection to server") && !stdout.contains("transaction type:") {
            self.failed_connects += 1;
        }
    }
}

/// `pgbench -i -q -s SCALE` on `node`.
pub async fn init(cluster: &Cluster, node: &str, scale: u32) -> Result<()> {
    let (scale, port) = (scale.to_string(), cluster.node_port(node)?.to_string());
    let args = [
        "-i",
        "-q",
        "-s",
        &scale,
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-p",
        &port,
        "postgres",
    ];
    let out = tokio::process::Command::from(
        cluster
            .tools()
            .command_as_pg_user(cluster.tools().pg_program("pgbench"), cluster.root()),
    )
    .args(args)
    .output()
    .await
    .context("running pgbench -i")?;
    if !out.status.success() {
        bail!(
            "pgbench -i -s {scale} on {node} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// pgbench rounds running in the background until [`PgbenchLoad::stop`].
pub struct PgbenchLoad {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<PgbenchTotals>>,
}

impl PgbenchLoad {
    /// Start `clients` clients on `jobs` threads against `uri` (a libpq
    /// URI, e.g. [`Cluster::multi_host_uri`]).
    pub fn start(cluster: &Cluster, uri: &str, clients: u32, jobs: u32) -> PgbenchLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(rounds(
            cluster.tools().clone(),
            cluster.root().to_path_buf(),
            uri.to_string(),
            clients,
            jobs,
            stop.clone(),
        ));
        PgbenchLoad { stop, task }
    }

    /// Let the running round finish (at most [`ROUND`]) and return the totals.
    pub async fn stop(self) -> Result<PgbenchTotals> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.context("the pgbench task panicked")?
    }
}

async fn rounds(
    tools: Tools,
    dir: std::path::PathBuf,
    uri: String,
    clients: u32,
    jobs: u32,
    stop: Arc<AtomicBool>,
) -> Result<PgbenchTotals> {
    let mut totals = PgbenchTotals::default();
    while !stop.load(Ordering::SeqCst) {
        let out = round(&tools, &dir, &uri, clients, jobs).await?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let before = totals.failed_connects;
        totals.add_round(&stdout, &stderr);
        if totals.failed_connects > before {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    Ok(totals)
}

async fn round(
    tools: &Tools,
    dir: &Path,
    uri: &str,
    clients: u32,
    jobs: u32,
) -> Result<std::process::Output> {
    let seconds = ROUND.as_secs().to_string();
    tokio::process::Command::from(tools.command_as_pg_user(tools.pg_program("pgbench"), dir))
        .args(["-n", "-c", &clients.to_string(), "-j", &jobs.to_string()])
        .args(["-T", &seconds, uri])
        .kill_on_drop(true)
        .output()
        .await
        .context("running pgbench")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 1\nnumber of clients: 8\nnumber of threads: 2\nduration: 5 s\nnumber of transactions actually processed: 4321\nnumber of failed transactions: 0 (0.000%)\n";

    #[test]
    fn a_round_adds_its_transactions_and_aborted_clients() {
        let mut t = PgbenchTotals::default();
        t.add_round(SUMMARY, "");
        let aborted = "pgbench: error: client 3 script 0 aborted in command 5 query 0: FATAL:  terminating connection\npgbench: error: client 7 script 0 aborted in command 8 query 0: server closed the connection unexpectedly\npgbench: fatal: Run was aborted; the above results are incomplete.\n";
        t.add_round(SUMMARY, aborted);
        assert_eq!(
            t,
            PgbenchTotals {
                rounds: 2,
                transactions: 8642,
                aborted_clients: 2,
                failed_connects: 0
            }
        );
    }

    #[test]
    fn a_round_without_a_writable_server_is_a_failed_connect() {
        let mut t = PgbenchTotals::default();
        t.add_round(
            "",
            "pgbench: error: connection to server at \"127.0.0.1\", port 5433 failed: Connection refused\n",
        );
        assert_eq!((t.rounds, t.transactions, t.failed_connects), (1, 0, 1));
    }
}
