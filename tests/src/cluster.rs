//! [`Cluster`]: a monitor database, a monitor and N nodes on 127.0.0.1.
//!
//! Layout of a cluster directory:
//!
//! ```text
//! monitor.toml  monitor.log                the monitor (more: monitor2.toml, monitor2.log, …)
//! monitor-db/data  monitor-db/data.log     the monitor's own PostgreSQL
//! node1/keeper.toml  node1/keeper.log      keeper config and output
//! node1/data  node1/data.log               PGDATA and PostgreSQL's log (the keeper's)
//! node1/data.pgpilot-state.json            the keeper's state file
//! ```
//!
//! This module holds the cluster's parts and what they are called; the
//! submodules add to [`Cluster`] by job: `options` (what to start and the
//! config files), `spawn` (starting it), `faults` (kills and restarts),
//! `query` (state, events, SQL, the CLI), `waiting` (conditions with a
//! deadline), `report` (diagnostics), `teardown`, `security` (certificates
//! and clients), `supervise` (keepers restarted after a failpoint) and
//! `monitors` (several monitor processes, the lease holder, kills).

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::proxy::Proxy;
use crate::security::TlsFiles;
use crate::tools::Tools;

mod faults;
mod monitor_db;
mod monitors;
mod options;
mod query;
mod report;
mod security;
mod spawn;
mod supervise;
mod teardown;
mod waiting;

pub use options::{ClusterOptions, KeeperToml};
pub use supervise::FiredFailpoint;

use monitors::MonitorProc;

struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    pgdata: PathBuf,
    config: PathBuf,
    keeper_log: PathBuf,
    keeper: Mutex<Option<Child>>,
    http_port: Option<u16>,
    /// The fault proxy on this keeper's link to the monitor, if any.
    monitor_link: Option<Proxy>,
    /// The fault proxy in front of this node's PostgreSQL, if any.
    ingress: Option<Proxy>,
}

impl Node {
    fn pg_log(&self) -> PathBuf {
        with_suffix(&self.pgdata, ".log")
    }

    /// The port the node's keeper advertises (its ingress proxy's, if any).
    fn advertised_port(&self) -> u16 {
        self.ingress.as_ref().map_or(self.port, Proxy::port)
    }
}

/// A running test cluster; dropping it kills everything it started.
pub struct Cluster {
    tools: Tools,
    root: PathBuf,
    tempdir: Option<tempfile::TempDir>,
    formation: String,
    started: Instant,
    monitor_db_pgdata: PathBuf,
    monitor_db_port: u16,
    /// The `-c name=value` settings the monitor database starts with.
    monitor_db_settings: Vec<String>,
    /// The monitor processes; the first is "the monitor" of one-monitor
    /// tests.
    monitors: Vec<MonitorProc>,
    monitor_db_password: Option<String>,
    /// The monitor database's synchronous standby, if any.
    monitor_db_standby: Option<monitor_db::MonitorDbStandby>,
    nodes: Vec<Node>,
    /// Keepers started with failpoints, restarted when one fires.
    supervision: Mutex<supervise::Supervision>,
    /// Certificates and token when the monitor serves TLS.
    tls: Option<TlsFiles>,
    /// The keepers' replication password and its file, when configured.
    replication_password: Option<(String, PathBuf)>,
}

impl Cluster {
    /// Names of the nodes, node1 first.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The first node that is not `name` (the other one of a pair).
    pub fn other_node(&self, name: &str) -> Result<String> {
        self.nodes
            .iter()
            .find(|n| n.name != name)
            .map(|n| n.name.clone())
            .ok_or_else(|| anyhow!("no node other than {name}"))
    }

    pub fn node_port(&self, name: &str) -> Result<u16> {
        Ok(self.node(name)?.port)
    }

    pub fn pgdata(&self, name: &str) -> Result<PathBuf> {
        Ok(self.node(name)?.pgdata.clone())
    }

    /// The keeper's log file (its stdout and stderr).
    pub fn keeper_log(&self, name: &str) -> Result<PathBuf> {
        Ok(self.node(name)?.keeper_log.clone())
    }

    pub fn keeper_config_path(&self, name: &str) -> Result<PathBuf> {
        Ok(self.node(name)?.config.clone())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The URL of the first monitor.
    pub fn monitor_url(&self) -> &str {
        &self.monitors[0].url
    }

    /// Process id of the first running `pgpilot-monitor` (None once stopped).
    pub fn monitor_pid(&self) -> Option<u32> {
        lock(&self.monitors[0].child).as_ref().map(Child::id)
    }

    /// `postgres://postgres@127.0.0.1:<port>/pgpilot`: the monitor's own database.
    pub fn monitor_database_url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/pgpilot",
            self.monitor_db_port
        )
    }

    /// Port of the monitor's metrics server (with [`ClusterOptions::http`]).
    pub fn monitor_metrics_port(&self) -> Option<u16> {
        self.monitors[0].metrics_port
    }

    /// Port of a keeper's HTTP server (with [`ClusterOptions::http`]).
    pub fn keeper_http_port(&self, name: &str) -> Result<u16> {
        self.node(name)?
            .http_port
            .ok_or_else(|| anyhow!("{name} has no HTTP server: start the cluster with http = true"))
    }

    /// The fault proxy on `name`'s link to the monitor (with
    /// [`ClusterOptions::monitor_link_proxies`]).
    pub fn monitor_link(&self, name: &str) -> Result<&Proxy> {
        self.node(name)?.monitor_link.as_ref().ok_or_else(|| {
            anyhow!("{name} has no monitor-link proxy: start the cluster with monitor_link_proxies")
        })
    }

    /// The fault proxy in front of `name`'s PostgreSQL (with
    /// [`ClusterOptions::ingress_proxies`]): the monitor's health checks,
    /// standbys streaming from `name` and [`Cluster::advertised_uri`]
    /// clients pass through it; [`Cluster::psql`] and
    /// [`Cluster::local_uri`] do not.
    pub fn ingress(&self, name: &str) -> Result<&Proxy> {
        self.node(name)?.ingress.as_ref().ok_or_else(|| {
            anyhow!("{name} has no ingress proxy: start the cluster with ingress_proxies")
        })
    }

    /// Every log file of this cluster: the monitor's, its database's, and
    /// each node's keeper and PostgreSQL logs.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.monitors.iter().map(|m| m.log.clone()).collect();
        files.push(with_suffix(&self.monitor_db_pgdata, ".log"));
        files.extend(self.monitor_db_standby_log());
        for node in &self.nodes {
            files.push(node.keeper_log.clone());
            files.push(node.pg_log());
        }
        files
    }

    /// PGDATA of the monitor's own PostgreSQL (its `postmaster.pid` is there).
    pub fn monitor_db_pgdata(&self) -> &Path {
        &self.monitor_db_pgdata
    }

    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// `postgresql://postgres@127.0.0.1:p1,127.0.0.1:p2/postgres?target_session_attrs=read-write&connect_timeout=2`
    /// on each node's own PostgreSQL port (past any ingress proxy).
    pub fn multi_host_uri(&self) -> String {
        uri_of_ports(self.nodes.iter().map(|n| n.port))
    }

    /// The multi-host URI on the ports the nodes advertise: through their
    /// ingress proxies when the cluster has them, like a client on the
    /// network (and like `show-uri`).
    pub fn advertised_uri(&self) -> String {
        uri_of_ports(self.nodes.iter().map(Node::advertised_port))
    }

    /// A URI for `name`'s own PostgreSQL port only, past any proxy: a
    /// client on the same host as the node.
    pub fn local_uri(&self, name: &str) -> Result<String> {
        Ok(uri_of_ports([self.node(name)?.port]))
    }
}

fn uri_of_ports(ports: impl IntoIterator<Item = u16>) -> String {
    let hosts: Vec<String> = ports
        .into_iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    format!(
        "postgresql://postgres@{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        hosts.join(",")
    )
}

/// Run a command to completion; fail with its stderr and stdout when it fails.
async fn run_checked(cmd: std::process::Command, what: &str) -> Result<Output> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let output = cmd
        .output()
        .await
        .with_context(|| format!("{what}: cannot run the program"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(output)
}

fn open_log(path: &Path, message: &str) -> Result<fs::File> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let _ = writeln!(file, "=== harness: {message} ===");
    Ok(file)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Lock a mutex, also after a panic poisoned it (teardown must still work).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("root", &self.root)
            .field("monitor_urls", &self.monitor_urls())
            .field("nodes", &self.node_names())
            .finish()
    }
}

/// 32 random hexadecimal characters from the kernel's generator.
pub fn random_secret() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Write a secret file only its owner can read.
fn write_secret_file(path: &Path, content: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, content.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
