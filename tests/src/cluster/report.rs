//! What a failing test prints: the state table, recent events, the status
//! of every process and the tail of every log.

use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;

use crate::process::{self, postmaster_pid};
use crate::state::FormationStateExt;
use crate::tools::KEEP_DIRS_ENV;

use super::{lock, Cluster};

/// Lines of each log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

impl Cluster {
    /// An error with `message` followed by [`Cluster::diagnostics`].
    pub async fn failure(&self, message: impl Into<String>) -> anyhow::Error {
        anyhow!("{}\n\n{}", message.into(), self.diagnostics().await)
    }

    /// The state table, recent events, process status and log tails.
    pub async fn diagnostics(&self) -> String {
        let mut out = format!(
            "cluster directory: {} (set {KEEP_DIRS_ENV}=1 to keep it)\n\n",
            self.root.display()
        );
        out.push_str("==== monitor state ====\n");
        if self.monitor_started() {
            match tokio::time::timeout(Duration::from_secs(10), self.state()).await {
                Ok(Ok(state)) => out.push_str(&state.table()),
                Ok(Err(err)) => out.push_str(&format!("(unavailable: {err:#})\n")),
                Err(_) => out.push_str("(no answer within 10s)\n"),
            }
            out.push_str("\n==== recent events ====\n");
            match tokio::time::timeout(Duration::from_secs(10), self.events(30)).await {
                Ok(Ok(table)) => out.push_str(&table),
                Ok(Err(err)) => out.push_str(&format!("(unavailable: {err:#})\n")),
                Err(_) => out.push_str("(no answer within 10s)\n"),
            }
        } else {
            out.push_str("(the monitor was not started)\n");
        }
        let hooks = self.root.join("hooks");
        if let Ok(changes) = std::fs::read_to_string(hooks.join("role-changes.log")) {
            let vip = std::fs::read_to_string(hooks.join("vip")).unwrap_or_default();
            out.push_str(&format!(
                "\n==== role changes (on_role_change hook; virtual IP on {:?}) ====\n{changes}",
                vip.trim()
            ));
        }
        if let Ok(answers) = std::fs::read_to_string(hooks.join("promotions.log")) {
            out.push_str(&format!(
                "\n==== before_promotion hook answers ====\n{answers}"
            ));
        }
        out.push_str("\n==== processes ====\n");
        out.push_str(&self.process_status());
        out.push_str(&self.log_tails());
        out
    }

    fn process_status(&self) -> String {
        let describe = |slot: &Mutex<Option<Child>>| match lock(slot).as_mut() {
            None => "not running (never started, or killed by the harness)".to_string(),
            Some(child) => match child.try_wait() {
                Ok(None) => format!("running, pid {}", child.id()),
                Ok(Some(status)) => format!("EXITED: {status}"),
                Err(err) => format!("unknown: {err}"),
            },
        };
        let mut out = self.monitor_status_lines(describe);
        let monitor_db = match postmaster_pid(&self.monitor_db_pgdata) {
            Some(pid) if process::is_alive(pid) => format!("postmaster pid {pid} alive"),
            Some(pid) => format!("postmaster.pid names {pid}, not alive"),
            None => "no postmaster.pid (stopped)".to_string(),
        };
        out.push_str(&format!(
            "monitor database (port {}): {monitor_db}\n",
            self.monitor_db_port
        ));
        for node in &self.nodes {
            let postmaster = match postmaster_pid(&node.pgdata) {
                Some(pid) if process::is_alive(pid) => format!("postmaster pid {pid} alive"),
                Some(pid) => format!("postmaster.pid names {pid}, not alive"),
                None => "no postmaster.pid".to_string(),
            };
            out.push_str(&format!(
                "{} (port {}): keeper {}; {postmaster}\n",
                node.name,
                node.port,
                describe(&node.keeper)
            ));
            if let Some(proxy) = &node.monitor_link {
                out.push_str(&format!("{} link to the monitor: {proxy}\n", node.name));
            }
            if let Some(proxy) = &node.ingress {
                out.push_str(&format!("{} ingress: {proxy}\n", node.name));
            }
        }
        out
    }

    /// The last lines of every log file the cluster has.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for file in self.log_files() {
            if !file.exists() {
                continue;
            }
            out.push_str(&format!(
                "\n==== {} (last {LOG_TAIL_LINES} lines) ====\n{}\n",
                file.display(),
                process::tail(&file, LOG_TAIL_LINES)
            ));
        }
        out
    }
}
