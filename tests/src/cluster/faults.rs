//! Faults and restarts a test inflicts: a node's host killed, the monitor
//! or its database stopped and started again, keepers restarted or signalled.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;

use crate::process::{self, postmaster_pid};
use crate::wait::poll_until;

use super::spawn::MONITOR_START_TIMEOUT;
use super::{lock, Cluster};

impl Cluster {
    /// "The host is gone": SIGKILL the keeper, then the postmaster (from
    /// `<pgdata>/postmaster.pid`) and every process it forked. Everything is
    /// first frozen with SIGSTOP, so the node stops answering at one instant,
    /// which is returned (measure outages from it).
    pub fn kill_node_hard(&self, name: &str) -> Result<Instant> {
        let node = self.node(name)?;
        let keeper = lock(&node.keeper).take();
        let keeper_pid = keeper.as_ref().map(Child::id);
        if let Some(pid) = keeper_pid {
            let _ = process::signal(-(pid as i32), Signal::SIGSTOP);
        }
        let tree = match postmaster_pid(&node.pgdata) {
            Some(pid)
                if process::is_alive(pid) && process::comm(pid).as_deref() == Some("postgres") =>
            {
                process::freeze_postmaster_tree(pid)
            }
            _ => Vec::new(),
        };
        let gone_at = Instant::now();
        if let Some(mut child) = keeper {
            process::kill_child_group(&mut child);
        }
        process::kill_all(&tree);
        process::reap(&tree, Duration::from_secs(10));
        self.mark_log(
            &node.keeper_log,
            &format!(
                "node killed hard: keeper pid {keeper_pid:?}, postgres pids {tree:?} (SIGKILL)"
            ),
        );
        Ok(gone_at)
    }

    /// An unplanned failover: [`Cluster::kill_node_hard`] the primary `old`,
    /// then wait until `new` reports a writable primary state. Returns the
    /// instant of the kill (measure outages from it).
    pub async fn kill_primary_until_promoted(
        &self,
        old: &str,
        new: &str,
        timeout: Duration,
    ) -> Result<Instant> {
        let killed_at = self.kill_node_hard(old)?;
        self.wait_writable_primary(
            new,
            timeout,
            &format!("{new} to become the writable primary after {old} was killed"),
        )
        .await?;
        Ok(killed_at)
    }

    /// SIGKILL the (first) monitor (its process group); returns when it
    /// is gone. [`Cluster::restart_monitor`] starts it again.
    pub fn kill_monitor(&self) -> Result<Instant> {
        self.kill_monitor_at(0)
    }

    /// Start the (first) monitor again with the same configuration and
    /// wait until it answers.
    pub async fn restart_monitor(&self) -> Result<()> {
        self.restart_monitor_at(0).await
    }

    /// Stop the monitor's own PostgreSQL (`pg_ctl stop -m fast`); returns
    /// when it has stopped. The monitor keeps running without its database.
    /// [`Cluster::start_monitor_db`] starts it again.
    pub async fn stop_monitor_db(&self) -> Result<Instant> {
        self.pg_ctl_stop_fast(
            &self.monitor_db_pgdata,
            "pg_ctl stop of the monitor database",
        )
        .await?;
        let stopped_at = Instant::now();
        for m in &self.monitors {
            self.mark_log(&m.log, "monitor database stopped (pg_ctl stop -m fast)");
        }
        Ok(stopped_at)
    }

    /// Start the monitor's own PostgreSQL again, on the same port and data
    /// directory, and wait until it accepts connections.
    pub async fn start_monitor_db(&self) -> Result<()> {
        if self.monitor_db_pgdata.join("postmaster.pid").exists() {
            bail!("the monitor database is already running");
        }
        self.pg_ctl_start_monitor_db(self.monitor_db_port).await?;
        let conninfo = format!(
            "host=127.0.0.1 port={} user=postgres dbname=pgpilot connect_timeout=2",
            self.monitor_db_port
        );
        poll_until(
            MONITOR_START_TIMEOUT,
            "the monitor database to accept connections",
            || {
                let conninfo = conninfo.clone();
                async move {
                    let (client, connection) =
                        tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
                    let connection = tokio::spawn(connection);
                    client.simple_query("SELECT 1").await?;
                    drop(client);
                    let _ = connection.await;
                    Ok(Some(()))
                }
            },
        )
        .await?;
        for m in &self.monitors {
            self.mark_log(&m.log, "monitor database started again");
        }
        Ok(())
    }

    /// Start the keeper of `name` again, with the same configuration.
    pub fn start_keeper(&self, name: &str) -> Result<()> {
        self.spawn_keeper_of(name)
    }

    /// Whether the keeper of `name` runs (false once it exited, e.g.
    /// after its node was dropped).
    pub fn keeper_running(&self, name: &str) -> Result<bool> {
        let node = self.node(name)?;
        let mut slot = lock(&node.keeper);
        Ok(match slot.as_mut() {
            Some(child) => child.try_wait()?.is_none(),
            None => false,
        })
    }

    /// SIGKILL the keeper of `name` — its process group, as an OOM kill of
    /// the keeper and what it ran — and nothing else: PostgreSQL and the
    /// fence guard (each in a session of its own) keep running. Returns
    /// when it is gone.
    pub fn kill_keeper(&self, name: &str) -> Result<Instant> {
        let node = self.node(name)?;
        let mut child = lock(&node.keeper)
            .take()
            .ok_or_else(|| anyhow!("the keeper of {name} is not running"))?;
        let pid = child.id();
        process::kill_child_group(&mut child);
        let gone_at = Instant::now();
        self.mark_log(
            &node.keeper_log,
            &format!("keeper pid {pid} killed (SIGKILL)"),
        );
        Ok(gone_at)
    }

    /// Stop the keeper of `name` alone, as for a keeper restart (SIGUSR1,
    /// SIGKILL after a while) and wait until it has exited; PostgreSQL
    /// keeps running. Returns when the signal was sent.
    pub async fn stop_keeper(&self, name: &str) -> Result<Instant> {
        self.signal_and_reap(name, Signal::SIGUSR1).await
    }

    /// Stop the node `name` as an init system, `docker stop` or a host
    /// shutdown does: SIGTERM to its keeper, which hands over (a primary)
    /// or leaves the synchronous set (a standby), stops PostgreSQL and
    /// exits; waited for (SIGKILL after a while). Returns when the signal
    /// was sent.
    pub async fn stop_node(&self, name: &str) -> Result<Instant> {
        self.signal_and_reap(name, Signal::SIGTERM).await
    }

    async fn signal_and_reap(&self, name: &str, signal: Signal) -> Result<Instant> {
        let node = self.node(name)?;
        let child = lock(&node.keeper)
            .take()
            .ok_or_else(|| anyhow!("the keeper of {name} is not running"))?;
        let pid = child.id();
        let sent_at = Instant::now();
        super::teardown::stop_with(child, signal).await;
        self.mark_log(
            &node.keeper_log,
            &format!("keeper pid {pid} stopped ({signal:?})"),
        );
        Ok(sent_at)
    }

    /// Process ids of the fence guards watching `name`'s PostgreSQL.
    pub fn fence_guards(&self, name: &str) -> Result<Vec<i32>> {
        Ok(process::fence_guards_of(&self.node(name)?.pgdata))
    }

    /// Send a signal to the keeper of `name` (e.g. SIGSTOP / SIGCONT).
    pub fn signal_keeper(&self, name: &str, signal: Signal) -> Result<()> {
        let node = self.node(name)?;
        let slot = lock(&node.keeper);
        let child = slot
            .as_ref()
            .ok_or_else(|| anyhow!("the keeper of {name} is not running"))?;
        process::signal(child.id() as i32, signal)
            .with_context(|| format!("sending {signal} to the keeper of {name}"))?;
        Ok(())
    }

    pub(super) fn mark_log(&self, path: &Path, message: &str) {
        if let Ok(mut file) = OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                file,
                "=== harness +{:.3}s: {message} ===",
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}
