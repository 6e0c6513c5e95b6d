//! Commands the keeper runs on its node's events, for what pgpilot does
//! not do itself (moving a virtual IP, telling a service registry, paging):
//!
//! - `on_role_change`: after a transition that changes the node's role
//!   (`primary`: takes writes; `standby`: replays the primary's WAL;
//!   `none`: neither — stopped, draining, demoted, in maintenance);
//! - `before_stop`: before a keeper stopped on purpose (SIGTERM) stops
//!   PostgreSQL, once its node has handed over;
//! - `before_promotion`: when the monitor elected this node, before it
//!   does anything toward its promotion (the plan's first action). A
//!   non-zero exit, or a hook killed at `hook_timeout`, refuses: the
//!   keeper stays where it was and says so in its heartbeats; the monitor
//!   elects another candidate when one can take over, else the keeper
//!   asks the hook again after [`REFUSAL_RETRY`].
//!
//! Each runs as `/bin/sh -c COMMAND` under the keeper's user, with the
//! event in its environment (`PGPILOT_*`, see [`environment`]), in a
//! process group of its own, killed at `hook_timeout`; every line it
//! prints is logged. Role changes run one after another on a task of
//! their own, in the order they happened: neither the loop nor the fence
//! ever waits for a hook.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pgpilot_proto::ReplicationState as S;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::config::KeeperConfig;

/// How long a keeper whose `before_promotion` hook refused waits before
/// it runs the hook again, while it is still the one elected.
pub const REFUSAL_RETRY: Duration = Duration::from_secs(5);

/// What a node does, as a hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It takes writes.
    Primary,
    /// It replays a primary's WAL (or is being built or promoted as one).
    Standby,
    /// Neither: stopped, stopping writes, demoted, in maintenance, new.
    None,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::None => "none",
        }
    }
}

/// The role of a node in `state`.
pub fn role(state: S) -> Role {
    if state.is_writable_primary() {
        return Role::Primary;
    }
    match state {
        S::Catchingup
        | S::Secondary
        | S::ReportLsn
        | S::JoinSecondary
        | S::FastForward
        | S::PreparePromotion
        | S::StopReplication
        | S::WaitStandby => Role::Standby,
        _ => Role::None,
    }
}

/// The environment of a hook about node `config` moving `from` → `to`.
pub fn environment(
    config: &KeeperConfig,
    node_id: Option<i64>,
    hook: &str,
    from: S,
    to: S,
) -> Vec<(&'static str, String)> {
    vec![
        ("PGPILOT_HOOK", hook.to_string()),
        ("PGPILOT_FORMATION", config.formation.clone()),
        ("PGPILOT_NODE", config.name.clone()),
        (
            "PGPILOT_NODE_ID",
            node_id.map(|id| id.to_string()).unwrap_or_default(),
        ),
        ("PGPILOT_HOST", config.host.clone()),
        ("PGPILOT_PORT", config.port.to_string()),
        ("PGPILOT_PGDATA", config.pgdata.display().to_string()),
        ("PGPILOT_OLD_ROLE", role(from).as_str().to_string()),
        ("PGPILOT_NEW_ROLE", role(to).as_str().to_string()),
        ("PGPILOT_OLD_STATE", from.as_str().to_string()),
        ("PGPILOT_NEW_STATE", to.as_str().to_string()),
    ]
}

/// The environment of `before_promotion` for node `config` elected while
/// in `from`: the new role is the one it is about to take, `primary`.
pub fn promotion_environment(
    config: &KeeperConfig,
    node_id: i64,
    from: S,
    to: S,
) -> Vec<(&'static str, String)> {
    let mut env = environment(config, Some(node_id), "before_promotion", from, to);
    for (key, value) in env.iter_mut() {
        if *key == "PGPILOT_NEW_ROLE" {
            *value = Role::Primary.as_str().to_string();
        }
    }
    env
}

/// The hooks of one keeper.
#[derive(Debug, Clone)]
pub struct Hooks {
    role_changes: Option<mpsc::UnboundedSender<Vec<(&'static str, String)>>>,
    before_stop: Option<String>,
    timeout: Duration,
}

impl Hooks {
    /// Start the task that runs role-change hooks (when one is set).
    pub fn start(config: &KeeperConfig) -> Hooks {
        let timeout = config.hook_timeout;
        let role_changes = config.on_role_change.clone().map(|command| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<(&'static str, String)>>();
            tokio::spawn(async move {
                while let Some(env) = rx.recv().await {
                    run("on_role_change", &command, &env, timeout).await;
                }
            });
            tx
        });
        Hooks {
            role_changes,
            before_stop: config.before_stop.clone(),
            timeout,
        }
    }

    /// No hooks at all.
    pub fn none() -> Hooks {
        Hooks {
            role_changes: None,
            before_stop: None,
            timeout: Duration::ZERO,
        }
    }

    /// The node moved `from` → `to`: queue `on_role_change` when its role
    /// changed.
    pub fn transition(&self, config: &KeeperConfig, node_id: Option<i64>, from: S, to: S) {
        let Some(tx) = &self.role_changes else { return };
        if role(from) == role(to) {
            return;
        }
        let _ = tx.send(environment(config, node_id, "on_role_change", from, to));
    }

    /// Run `before_stop` (when set) and wait for it, `hook_timeout` at most.
    pub async fn before_stop(&self, config: &KeeperConfig, node_id: Option<i64>, state: S) {
        if let Some(command) = &self.before_stop {
            let env = environment(config, node_id, "before_stop", state, state);
            run("before_stop", command, &env, self.timeout).await;
        }
    }
}

/// Run one hook and log what it printed and how it ended; never fails.
pub async fn run(
    hook: &str,
    command: &str,
    env: &[(&'static str, String)],
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    let mut child = match tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(hook, error = %e, "hook could not be started: {command}");
            return None;
        }
    };
    let pid = child.id();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(log_lines(hook.to_string(), "stdout", out)));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(log_lines(hook.to_string(), "stderr", err)));
    }
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            tracing::warn!(hook, error = %e, "waiting for the hook failed");
            None
        }
        Err(_) => {
            if let Some(pid) = pid {
                // The whole group: the shell and whatever it started.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            tracing::warn!(
                hook,
                "hook killed after hook_timeout ({}): {command}",
                humantime::format_duration(timeout)
            );
            None
        }
    };
    for r in readers {
        let _ = r.await;
    }
    let ms = started.elapsed().as_millis() as u64;
    match status {
        Some(s) if s.success() => tracing::info!(hook, ms, "hook done: {command}"),
        Some(s) => tracing::warn!(hook, ms, status = %s, "hook failed: {command}"),
        None => {}
    }
    status
}

async fn log_lines(hook: String, stream: &'static str, pipe: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(hook = %hook, stream, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_the_role_a_virtual_ip_needs() {
        for s in [
            S::Single,
            S::WaitPrimary,
            S::Primary,
            S::JoinPrimary,
            S::ApplySettings,
        ] {
            assert_eq!(role(s), Role::Primary, "{s}");
        }
        for s in [
            S::Catchingup,
            S::Secondary,
            S::ReportLsn,
            S::PreparePromotion,
            S::StopReplication,
            S::FastForward,
        ] {
            assert_eq!(role(s), Role::Standby, "{s}");
        }
        for s in [
            S::Init,
            S::Draining,
            S::Demoted,
            S::DemoteTimeout,
            S::Maintenance,
            S::WaitMaintenance,
            S::Dropped,
        ] {
            assert_eq!(role(s), Role::None, "{s}");
        }
    }

    #[tokio::test]
    async fn a_hook_gets_its_environment_and_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("seen");
        let env = vec![
            ("PGPILOT_NODE", "node2".to_string()),
            ("PGPILOT_NEW_ROLE", "primary".to_string()),
        ];
        let command = format!(
            "echo \"$PGPILOT_NODE $PGPILOT_NEW_ROLE\" > {}",
            out.display()
        );
        let status = run("on_role_change", &command, &env, Duration::from_secs(10)).await;
        assert!(status.is_some_and(|s| s.success()));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "node2 primary\n");
        let status = run("on_role_change", "exit 3", &env, Duration::from_secs(10)).await;
        assert_eq!(status.and_then(|s| s.code()), Some(3));
        let started = Instant::now();
        let status = run("before_stop", "sleep 30", &env, Duration::from_millis(300)).await;
        assert!(status.is_none());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
