//! Keepers started with failpoints (`PGPILOT_KEEPER_FAILPOINTS`, see the
//! keeper's `failpoint` module) and restarted when one fires, the way a
//! service manager with `Restart=always` would.
//!
//! A keeper started through [`Cluster::start_keeper_with_failpoints`] (or
//! [`Cluster::restart_keeper_with_failpoints`]) is *supervised*: when it
//! exits by SIGKILL, every wait of the harness (they all go through
//! `check_processes`) notices it, reads which point fired from the last
//! `failpoint reached` line of its log and starts it again with the points
//! that have not fired yet, so each point fires once. Any other exit is
//! reported as usual. No pg_rewind or pg_basebackup process of a killed
//! keeper may outlive it by more than [`ORPHAN_TIMEOUT`] (it dies with it,
//! or the restarted keeper kills it before redoing the work).

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use super::teardown::stop_keeper_only;
use super::{lock, open_log, Cluster, Node};
use crate::process;
use crate::wait::GiveUp;

/// The keeper's environment variable listing its failpoints.
pub const FAILPOINTS_ENV: &str = "PGPILOT_KEEPER_FAILPOINTS";
/// What the keeper logs right before it SIGKILLs itself.
const FIRED_MARK: &str = "failpoint reached: SIGKILL";
/// Start of the line the harness writes to a keeper's log at each start.
const START_MARK: &str = "=== harness: starting the keeper";
/// Programs of a killed keeper that must not outlive it.
const MUST_DIE_WITH_KEEPER: [&str; 2] = ["pg_rewind", "pg_basebackup"];
/// Suffixes of the keeper's temporary directories beside PGDATA.
const LEFTOVER_SUFFIXES: [&str; 3] = [".clone-tmp", ".initdb-tmp", ".old"];
/// How long they get to be gone once the keeper is.
pub const ORPHAN_TIMEOUT: Duration = Duration::from_secs(10);

/// A failpoint that fired: its keeper died there and was started again.
#[derive(Debug, Clone)]
pub struct FiredFailpoint {
    pub node: String,
    /// As the test gave it, e.g. `prepare_promotion->stop_replication:1`.
    pub point: String,
    /// When the harness saw the keeper dead (and started it again).
    pub at: Instant,
    /// The keeper's temporary directories beside PGDATA (an interrupted
    /// clone's `.clone-tmp`, …) as the killed keeper left them.
    pub leftovers: Vec<PathBuf>,
    /// pg_rewind / pg_basebackup processes (pid, name) still running when
    /// the harness saw the keeper dead.
    pub left_running: Vec<(i32, String)>,
}

/// What the harness knows about supervised keepers.
#[derive(Debug, Default)]
pub(super) struct Supervision {
    /// Per supervised node, the points its keeper runs with (not fired yet).
    pending: HashMap<String, Vec<String>>,
    fired: Vec<FiredFailpoint>,
    /// Programs a killed keeper left running: (node, pid, program, deadline).
    orphans: Vec<(String, i32, String, Instant)>,
}

impl Cluster {
    /// Start the keeper of `name` with these failpoints (`FROM->TO:K` or
    /// `FROM->TO:K+DURATION`), supervised: restarted without the point that
    /// fired each time one does.
    pub fn start_keeper_with_failpoints(&self, name: &str, points: &[&str]) -> Result<()> {
        let (node, mut slot) = self.idle_keeper(name)?;
        let points: Vec<String> = points.iter().map(|p| p.to_string()).collect();
        *slot = Some(self.spawn_supervised(node, &points)?);
        lock(&self.supervision)
            .pending
            .insert(name.to_string(), points);
        Ok(())
    }

    /// Stop the running keeper of `name` (SIGUSR1; PostgreSQL keeps running)
    /// and start it again with these failpoints, supervised.
    pub async fn restart_keeper_with_failpoints(&self, name: &str, points: &[&str]) -> Result<()> {
        let node = self.node(name)?;
        let child = lock(&node.keeper).take();
        if let Some(child) = child {
            stop_keeper_only(child).await;
        }
        self.mark_log(
            &node.keeper_log,
            "keeper stopped (SIGUSR1) to set failpoints",
        );
        self.start_keeper_with_failpoints(name, points)
    }

    /// Every failpoint that fired, in order.
    pub fn fired_failpoints(&self) -> Vec<FiredFailpoint> {
        lock(&self.supervision).fired.clone()
    }

    /// The points the keeper of `name` still runs with.
    pub fn pending_failpoints(&self, name: &str) -> Vec<String> {
        lock(&self.supervision)
            .pending
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// Start again every supervised keeper that a failpoint killed. Called
    /// by every wait; a test may call it too. An error (a keeper killed
    /// without a failpoint, one that fired a point it was not given, a
    /// program that outlived it) ends the wait at once.
    pub fn restart_killed_keepers(&self) -> Result<()> {
        self.expect_no_orphans()?;
        for node in &self.nodes {
            let mut slot = lock(&node.keeper);
            let Some(child) = slot.as_mut() else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let mut supervision = lock(&self.supervision);
            let Some(pending) = supervision.pending.get_mut(&node.name) else {
                continue;
            };
            if status.signal() != Some(nix::sys::signal::Signal::SIGKILL as i32) {
                // Not a failpoint: check_processes reports it.
                continue;
            }
            let fired = fired_point(&node.keeper_log).ok_or_else(|| {
                GiveUp(format!(
                    "the keeper of {} was SIGKILLed, but its log names no failpoint \
                     (a line with {FIRED_MARK:?})",
                    node.name
                ))
            })?;
            let Some(index) = pending.iter().position(|p| *p == fired) else {
                return Err(GiveUp(format!(
                    "the keeper of {} fired failpoint {fired}, which it was not given \
                     (pending: {pending:?})",
                    node.name
                ))
                .into());
            };
            pending.remove(index);
            let rest = pending.clone();
            let at = Instant::now();
            let leftovers = LEFTOVER_SUFFIXES
                .iter()
                .map(|suffix| super::with_suffix(&node.pgdata, suffix))
                .filter(|dir| dir.exists())
                .collect();
            let left_running = orphans_now();
            supervision.orphans.extend(
                left_running.iter().map(|(pid, comm)| {
                    (node.name.clone(), *pid, comm.clone(), at + ORPHAN_TIMEOUT)
                }),
            );
            supervision.fired.push(FiredFailpoint {
                node: node.name.clone(),
                point: fired.clone(),
                at,
                leftovers,
                left_running,
            });
            drop(supervision);
            eprintln!(
                "+{:.1}s {}: failpoint {fired} fired (keeper SIGKILLed); starting it again \
                 with {rest:?}",
                self.started.elapsed().as_secs_f64(),
                node.name
            );
            self.mark_log(
                &node.keeper_log,
                &format!("keeper killed by failpoint {fired}"),
            );
            *slot = Some(self.spawn_supervised(node, &rest)?);
        }
        Ok(())
    }

    fn spawn_supervised(&self, node: &Node, points: &[String]) -> Result<Child> {
        let log = open_log(
            &node.keeper_log,
            &format!("starting the keeper with failpoints {points:?}"),
        )?;
        let mut cmd = self.tools.keeper_command(&node.config, &node.dir);
        cmd.env(FAILPOINTS_ENV, points.join(","))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn()
            .with_context(|| format!("spawning {}", self.tools.keeper.display()))
    }
}

/// The point named by the last `failpoint reached` line since the keeper's
/// last start.
fn fired_point(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let since_start = text.rfind(START_MARK).map_or(&text[..], |i| &text[i..]);
    let line = since_start.lines().rev().find(|l| l.contains(FIRED_MARK))?;
    let value = line.split("failpoint=").nth(1)?;
    Some(
        value
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

impl Cluster {
    /// Fail once a program a killed keeper left running has outlived it
    /// by more than [`ORPHAN_TIMEOUT`].
    fn expect_no_orphans(&self) -> Result<()> {
        let mut supervision = lock(&self.supervision);
        supervision.orphans.retain(|(_, pid, _, _)| {
            // Ours to reap: the harness is the subreaper of what it starts.
            let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
            process::is_alive(*pid)
        });
        let now = Instant::now();
        let late: Vec<String> = supervision
            .orphans
            .iter()
            .filter(|(_, _, _, deadline)| now >= *deadline)
            .map(|(node, pid, comm, _)| format!("{comm} (pid {pid}) of {node}'s keeper"))
            .collect();
        if late.is_empty() {
            return Ok(());
        }
        Err(anyhow!(GiveUp(format!(
            "programs outlive their killed keeper by more than {ORPHAN_TIMEOUT:?}: {}",
            late.join(", ")
        ))))
    }
}

/// pg_rewind and pg_basebackup processes whose parent died: they are our
/// children now, the harness being the subreaper of everything it starts.
fn orphans_now() -> Vec<(i32, String)> {
    process::children_of(std::process::id() as i32)
        .into_iter()
        .filter_map(|pid| Some((pid, process::comm(pid)?)))
        .filter(|(_, comm)| MUST_DIE_WITH_KEEPER.contains(&comm.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_point_that_fired_since_the_last_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("keeper.log");
        std::fs::write(
            &log,
            "=== harness: starting the keeper with failpoints [\"a->b:1\"] ===\n\
             2026-12-02T19:00:00Z  WARN keeper{node=node1 formation=default}: \
             pgpilot_keeper::failpoint: failpoint reached: SIGKILL failpoint=secondary->report_lsn:0 \
             when=\"before the action\"\n\
             === harness: starting the keeper with failpoints [] ===\n\
             2026-12-02T19:00:01Z  INFO keeper: transition done\n",
        )
        .unwrap();
        assert_eq!(fired_point(&log), None, "fired before the last start");
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(
            "2026-12-02T19:00:02Z  WARN keeper{node=node1}: pgpilot_keeper::failpoint: \
             failpoint reached: SIGKILL failpoint=demoted->catchingup:1+300ms when=\"while the action ran\"\n",
        );
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            fired_point(&log).as_deref(),
            Some("demoted->catchingup:1+300ms")
        );
    }
}
