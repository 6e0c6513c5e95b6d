//! Stopping a cluster: gracefully with [`Cluster::shutdown`], or at once
//! (SIGKILL, `pg_ctl stop -m immediate`) when it is dropped, also after a panic.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::process::{self, postmaster_pid};
use crate::tools::KEEP_DIRS_ENV;

use super::{lock, run_checked, Cluster};

/// How long a graceful shutdown waits for a process before SIGKILL.
const GRACEFUL_STOP_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Stop everything gracefully (the keepers alone with SIGUSR1, the
    /// monitors with SIGTERM, SIGKILL after a while; PostgreSQL with
    /// `pg_ctl stop -m fast`), then drop.
    pub async fn shutdown(self) -> Result<()> {
        for node in &self.nodes {
            let child = lock(&node.keeper).take();
            if let Some(child) = child {
                stop_keeper_only(child).await;
            }
        }
        for child in self.take_monitor_children() {
            stop_gracefully(child).await;
        }
        for pgdata in self.all_pgdata() {
            if !pgdata.join("postmaster.pid").exists() {
                continue;
            }
            if let Err(err) = self.pg_ctl_stop_fast(&pgdata, "pg_ctl stop").await {
                eprintln!("{err:#}");
            }
        }
        Ok(())
    }

    /// `pg_ctl stop -m fast` of the PostgreSQL in `pgdata`; returns when it
    /// has stopped.
    pub(super) async fn pg_ctl_stop_fast(&self, pgdata: &Path, what: &str) -> Result<()> {
        self.pg_ctl_stop(pgdata, "fast", what).await
    }

    /// `pg_ctl stop -m MODE` of the PostgreSQL in `pgdata`; returns when it
    /// has stopped.
    pub(super) async fn pg_ctl_stop(&self, pgdata: &Path, mode: &str, what: &str) -> Result<()> {
        let mut pg_ctl = self
            .tools
            .command_as_pg_user(self.tools.pg_program("pg_ctl"), &self.root);
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(pgdata)
            .args(["-m", mode, "-w", "-t", "30"])
            .stdin(Stdio::null());
        run_checked(pg_ctl, what).await?;
        Ok(())
    }

    fn all_pgdata(&self) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = self.nodes.iter().map(|n| n.pgdata.clone()).collect();
        all.push(self.monitor_db_pgdata.clone());
        all.extend(self.monitor_db_standby_pgdata());
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test panicked; cluster directory {}\n{}",
                self.root.display(),
                self.log_tails()
            );
        }
        for node in &self.nodes {
            if let Some(mut child) = lock(&node.keeper).take() {
                process::kill_child_group(&mut child);
            }
        }
        for mut child in self.take_monitor_children() {
            process::kill_child_group(&mut child);
        }
        for pgdata in self.all_pgdata() {
            if !pgdata.join("postmaster.pid").exists() {
                continue;
            }
            let pid = postmaster_pid(&pgdata);
            let _ = self
                .tools
                .command_as_pg_user(self.tools.pg_program("pg_ctl"), &self.root)
                .arg("stop")
                .arg("-D")
                .arg(&pgdata)
                .args(["-m", "immediate", "-w", "-t", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Some(pid) = pid {
                if process::is_alive(pid) && process::comm(pid).as_deref() == Some("postgres") {
                    let killed = process::kill_postmaster_tree(pid);
                    process::reap(&killed, Duration::from_secs(5));
                } else {
                    process::reap(&[pid], Duration::from_millis(500));
                }
            }
        }
        let keep = std::env::var_os(KEEP_DIRS_ENV).is_some();
        if let Some(dir) = self.tempdir.take() {
            if keep {
                eprintln!("kept test directory {}", dir.keep().display());
            }
        }
    }
}

pub(super) async fn stop_gracefully(child: Child) {
    stop_with(child, Signal::SIGTERM).await;
}

/// A keeper exits at once on SIGUSR1 and leaves PostgreSQL running (a
/// keeper restart); SIGTERM would stop its node, handing over first.
pub(super) async fn stop_keeper_only(child: Child) {
    stop_with(child, Signal::SIGUSR1).await;
}

/// Send `signal`, then SIGKILL after [`GRACEFUL_STOP_TIMEOUT`]; returns
/// once the process has exited.
pub(super) async fn stop_with(mut child: Child, signal: Signal) {
    let pid = child.id() as i32;
    let _ = process::signal(pid, signal);
    let deadline = Instant::now() + GRACEFUL_STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process::kill_child_group(&mut child);
}
