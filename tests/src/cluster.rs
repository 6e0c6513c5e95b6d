//! [`Cluster`]: a monitor database, a monitor and N nodes on 127.0.0.1.
//!
//! Layout of a cluster directory:
//!
//! ```text
//! monitor.toml  monitor.log
//! monitor-db/data  monitor-db/data.log     the monitor's own PostgreSQL
//! node1/keeper.toml  node1/keeper.log      keeper config and output
//! node1/data  node1/data.log               PGDATA and PostgreSQL's log (the keeper's)
//! node1/data.pgpilot-state.json            the keeper's state file
//! ```

use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use pgpilot_proto::pb::{FormationState, GetFormationStateRequest, ListEventsRequest};
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::process::{self, free_port, postmaster_pid};
use crate::proxy::Proxy;
use crate::security::{Security, TlsFiles};
use crate::state::{events_table, FormationStateExt, NodeStatusExt};
use crate::tools::{Tools, KEEP_DIRS_ENV};
use crate::wait::{poll_until, GiveUp, TimedOut, POLL_INTERVAL};

mod supervise;
pub use supervise::FiredFailpoint;

/// Lines of each log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// How long the harness waits for the monitor to answer after its start.
const MONITOR_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the first node gets to become a primary on its own.
const FIRST_NODE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one psql run.
const PSQL_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on one operator command (perform-failover waits up to its own --timeout).
const CLI_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a graceful shutdown waits for a process before SIGKILL.
const GRACEFUL_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// Candidate priority per node (node1 first); missing → the keeper's default.
    pub candidate_priorities: Vec<u32>,
    pub formation: String,
    /// Directory for everything (must be empty or absent); default a
    /// temporary directory removed on drop.
    pub dir: Option<PathBuf>,
    /// Monitor settings; `None` → the monitor's defaults.
    pub node_timeout: Option<String>,
    pub health_check_interval: Option<String>,
    /// Start node1 alone and wait until it is a writable primary before
    /// starting the others (so node1 is the first primary).
    pub first_node_alone: bool,
    /// Extra `name=value` settings of the monitor's own PostgreSQL, each
    /// passed as `-c name=value` (e.g. `shared_preload_libraries=pg_stat_statements`).
    pub monitor_db_settings: Vec<String>,
    /// Give every keeper an HTTP server (`http_listen`) and the monitor a
    /// metrics server (`metrics_listen`), each on a free 127.0.0.1 port.
    pub http: bool,
    /// The monitor connects to its database as role `pgpilot` with this
    /// password (scram-sha-256) instead of as `postgres` without one.
    pub monitor_db_password: Option<String>,
    /// Route each keeper's link to the monitor through its own fault
    /// [`Proxy`] (the keeper's `monitor` URL names the proxy); see
    /// [`Cluster::monitor_link`].
    pub monitor_link_proxies: bool,
    /// Put a fault [`Proxy`] in front of each node's PostgreSQL and have its
    /// keeper advertise the proxy's port (`advertise_port`): the monitor's
    /// health checks, the standbys' streams and [`Cluster::advertised_uri`]
    /// clients all reach the node through it; see [`Cluster::ingress`].
    pub ingress_proxies: bool,
    /// `replication_quorum` per node (node1 first); missing → the keeper's default.
    pub replication_quorums: Vec<bool>,
    /// How the monitor serves gRPC; the default is plaintext (written as
    /// `plaintext = true`), see [`Security`].
    pub security: Security,
    /// Give the keepers a random replication password (a file, mode 0600):
    /// the nodes replicate, clone and rewind as the replication role with
    /// SCRAM-SHA-256, initdb sets scram-sha-256 for TCP clients, and the
    /// harness's own TCP clients (psql, writers, probes, as postgres) are
    /// let in by `trust_networks = ["127.0.0.1/32"]`, which matches after
    /// the replication role's lines.
    pub replication_password: bool,
    /// PostgreSQL's TLS between the nodes (`postgres_tls_*_file`, the
    /// certificates `gen-certs --postgres nodeN=127.0.0.1` makes): ssl = on,
    /// the replication role over TLS only, upstreams verified. Needs a
    /// `security` other than plaintext (the certificates come with it).
    pub postgres_tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 2,
            candidate_priorities: Vec::new(),
            formation: "default".to_string(),
            dir: None,
            node_timeout: None,
            health_check_interval: None,
            first_node_alone: true,
            monitor_db_settings: Vec::new(),
            http: false,
            monitor_db_password: None,
            monitor_link_proxies: false,
            ingress_proxies: false,
            replication_quorums: Vec::new(),
            security: Security::Plaintext,
            replication_password: false,
            postgres_tls: false,
        }
    }
}

impl ClusterOptions {
    pub fn nodes(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            ..Default::default()
        }
    }

    pub fn candidate_priorities(mut self, priorities: &[u32]) -> Self {
        self.candidate_priorities = priorities.to_vec();
        self
    }

    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// See [`ClusterOptions::monitor_link_proxies`].
    pub fn monitor_link_proxies(mut self) -> Self {
        self.monitor_link_proxies = true;
        self
    }

    /// See [`ClusterOptions::ingress_proxies`].
    pub fn ingress_proxies(mut self) -> Self {
        self.ingress_proxies = true;
        self
    }

    /// See [`ClusterOptions::replication_quorums`].
    pub fn replication_quorums(mut self, quorums: &[bool]) -> Self {
        self.replication_quorums = quorums.to_vec();
        self
    }

    /// See [`ClusterOptions::security`].
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// See [`ClusterOptions::replication_password`].
    pub fn replication_password(mut self) -> Self {
        self.replication_password = true;
        self
    }

    /// See [`ClusterOptions::postgres_tls`].
    pub fn postgres_tls(mut self) -> Self {
        self.postgres_tls = true;
        self
    }
}

#[derive(Serialize)]
struct MonitorToml {
    database_url: String,
    listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check_interval: Option<String>,
}

/// A keeper's configuration file.
#[derive(Serialize, Clone, Debug)]
pub struct KeeperToml {
    pub name: String,
    pub formation: String,
    pub host: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_port: Option<u16>,
    pub pgdata: String,
    pub monitor: String,
    pub pg_bin_dir: String,
    pub pg_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_quorum: Option<bool>,
    /// How long a keeper that never registered keeps trying (e.g. "5s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_timeout: Option<String>,
}

impl KeeperToml {
    pub fn render(&self) -> Result<String> {
        toml::to_string(self).context("rendering a keeper config")
    }
}

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
    monitor_url: String,
    monitor_port: u16,
    monitor_config: PathBuf,
    monitor_log: PathBuf,
    monitor: Mutex<Option<Child>>,
    monitor_metrics_port: Option<u16>,
    monitor_db_password: Option<String>,
    channel: Option<Channel>,
    nodes: Vec<Node>,
    /// Keepers started with failpoints, restarted when one fires.
    supervision: Mutex<supervise::Supervision>,
    /// Certificates and token when the monitor serves TLS.
    tls: Option<TlsFiles>,
    /// The keepers' replication password and its file, when configured.
    replication_password: Option<(String, PathBuf)>,
}

impl Cluster {
    /// Start the monitor database, the monitor and `opts.nodes` keepers.
    /// Returns once every keeper is spawned (use [`Cluster::wait_healthy`]).
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let tools = Tools::locate()?;
        process::become_subreaper();
        let (tempdir, root) = match &opts.dir {
            Some(dir) => {
                if dir.exists() && fs::read_dir(dir)?.next().is_some() {
                    bail!(
                        "{} is not empty; give a new or empty directory",
                        dir.display()
                    );
                }
                tools.make_dir(dir)?;
                (None, dir.canonicalize()?)
            }
            None => {
                let dir = tools.scratch_dir("pgpilot-test-")?;
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
        };
        let mut cluster = Cluster {
            monitor_db_pgdata: root.join("monitor-db").join("data"),
            monitor_db_port: 0,
            monitor_db_settings: opts.monitor_db_settings.clone(),
            monitor_url: String::new(),
            monitor_port: 0,
            monitor_config: root.join("monitor.toml"),
            monitor_log: root.join("monitor.log"),
            monitor: Mutex::new(None),
            monitor_metrics_port: None,
            monitor_db_password: None,
            channel: None,
            nodes: Vec::new(),
            supervision: Mutex::default(),
            tls: None,
            replication_password: None,
            tools,
            root,
            tempdir,
            formation: opts.formation.clone(),
            started: Instant::now(),
        };
        match cluster.boot(&opts).await {
            Ok(()) => Ok(cluster),
            Err(err) => {
                let diagnostics = cluster.diagnostics().await;
                Err(anyhow!(
                    "starting the test cluster in {} failed: {err:#}\n\n{diagnostics}",
                    cluster.root.display()
                ))
            }
        }
    }

    async fn boot(&mut self, opts: &ClusterOptions) -> Result<()> {
        if opts.replication_password {
            let password = random_secret()?;
            let path = self.root.join("replication.password");
            write_secret_file(&path, &format!("{password}\n"))?;
            self.tools.hand_over(&path)?;
            self.replication_password = Some((password, path));
        }
        self.init_monitor_db(opts.monitor_db_password.as_deref())
            .await?;
        self.start_monitor(opts).await?;
        for i in 1..=opts.nodes {
            self.add_node(i, opts)?;
            if i == 1 && opts.first_node_alone && opts.nodes > 1 {
                self.spawn_keeper_of("node1")?;
                self.wait_state(
                    FIRST_NODE_TIMEOUT,
                    "node1 to become a writable primary on its own",
                    |s| {
                        s.node("node1")
                            .is_some_and(|n| n.reports_writable_primary())
                    },
                )
                .await?;
            }
        }
        for node in &self.nodes {
            if lock(&node.keeper).is_none() {
                self.spawn_keeper_of(&node.name)?;
            }
        }
        Ok(())
    }

    // ---- the monitor's own PostgreSQL -------------------------------------

    async fn init_monitor_db(&mut self, password: Option<&str>) -> Result<()> {
        let dir = self.root.join("monitor-db");
        self.tools.make_dir(&dir)?;
        let pgdata = self.monitor_db_pgdata.clone();
        let mut initdb = self
            .tools
            .command_as_pg_user(self.tools.pg_program("initdb"), &dir);
        initdb
            .arg("-D")
            .arg(&pgdata)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .stdin(Stdio::null());
        run_checked(initdb, "initdb of the monitor database").await?;

        let log = with_suffix(&pgdata, ".log");
        let mut last_error = None;
        for _attempt in 0..3 {
            let port = free_port()?;
            match self.pg_ctl_start_monitor_db(port).await {
                Ok(()) => {
                    self.monitor_db_port = port;
                    last_error = None;
                    break;
                }
                Err(err) => {
                    let log_text = fs::read_to_string(&log).unwrap_or_default();
                    let port_taken = log_text.contains("could not bind")
                        || log_text.contains("Address already in use");
                    last_error = Some(err);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        if let Some(err) = last_error {
            return Err(err);
        }

        let (client, connection) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10",
                self.monitor_db_port
            ),
            tokio_postgres::NoTls,
        )
        .await
        .context("connecting to the monitor database")?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute("CREATE DATABASE pgpilot")
            .await
            .context("creating database pgpilot")?;
        if let Some(password) = password {
            // Role pgpilot must give its password (scram-sha-256) over TCP;
            // the harness's own connections stay trusted.
            let hba = pgdata.join("pg_hba.conf");
            let rest =
                fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
            fs::write(
                &hba,
                format!("host all pgpilot 127.0.0.1/32 scram-sha-256\n{rest}"),
            )
            .with_context(|| format!("writing {}", hba.display()))?;
            let literal = password.replace('\'', "''");
            client
                .batch_execute(&format!(
                    "SET password_encryption = 'scram-sha-256';
                     CREATE ROLE pgpilot LOGIN PASSWORD '{literal}';
                     ALTER DATABASE pgpilot OWNER TO pgpilot;
                     SELECT pg_reload_conf();"
                ))
                .await
                .context("creating role pgpilot")?;
            self.monitor_db_password = Some(password.to_string());
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// `pg_ctl start` of the monitor database on `port` (waits until it
    /// has started).
    async fn pg_ctl_start_monitor_db(&self, port: u16) -> Result<()> {
        let dir = self.root.join("monitor-db");
        let pgdata = &self.monitor_db_pgdata;
        let mut pg_ctl = self
            .tools
            .command_as_pg_user(self.tools.pg_program("pg_ctl"), &dir);
        pg_ctl
            .arg("-D")
            .arg(pgdata)
            .arg("-l")
            .arg(with_suffix(pgdata, ".log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -c port={port} \
                 -c unix_socket_directories='{}' -c fsync=off -c full_page_writes=off{}",
                dir.display(),
                self.monitor_db_settings
                    .iter()
                    .map(|setting| format!(" -c {setting}"))
                    .collect::<String>()
            ))
            .arg("start")
            .stdin(Stdio::null());
        run_checked(pg_ctl, "pg_ctl start of the monitor database").await?;
        Ok(())
    }

    // ---- the monitor -------------------------------------------------------

    async fn start_monitor(&mut self, opts: &ClusterOptions) -> Result<()> {
        let port = free_port()?;
        self.monitor_port = port;
        self.monitor_url = format!("http://127.0.0.1:{port}");
        self.set_up_security(opts).await?;
        if opts.http {
            self.monitor_metrics_port = Some(free_port()?);
        }
        let database_url = match &self.monitor_db_password {
            Some(password) => format!(
                "postgres://pgpilot:{password}@127.0.0.1:{}/pgpilot",
                self.monitor_db_port
            ),
            None => format!(
                "postgres://postgres@127.0.0.1:{}/pgpilot",
                self.monitor_db_port
            ),
        };
        let config = MonitorToml {
            database_url,
            metrics_listen: self.monitor_metrics_port.map(|p| format!("127.0.0.1:{p}")),
            listen: format!("127.0.0.1:{port}"),
            node_timeout: opts.node_timeout.clone(),
            health_check_interval: opts.health_check_interval.clone(),
        };
        let text = toml::to_string(&config)? + &self.monitor_security_toml();
        fs::write(&self.monitor_config, text)
            .with_context(|| format!("writing {}", self.monitor_config.display()))?;
        self.restrict_monitor_config()?;
        self.spawn_monitor()?;

        self.channel = Some(
            self.endpoint()?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .connect_lazy(),
        );
        self.wait_monitor_answers().await
    }

    fn spawn_monitor(&self) -> Result<()> {
        let log = open_log(&self.monitor_log, "starting the monitor")?;
        let mut cmd = self.tools.monitor_command();
        cmd.arg("run")
            .arg("--config")
            .arg(&self.monitor_config)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.tools.monitor.display()))?;
        *lock(&self.monitor) = Some(child);
        Ok(())
    }

    async fn wait_monitor_answers(&self) -> Result<()> {
        let this: &Cluster = self;
        poll_until(
            MONITOR_START_TIMEOUT,
            "the monitor to answer GetFormationState",
            || async move {
                this.check_processes()?;
                match this
                    .client()?
                    .get_formation_state(this.state_request())
                    .await
                {
                    Ok(_) => Ok(Some(())),
                    // Answered, even if only to say the formation has no node yet.
                    Err(status) if status.code() != tonic::Code::Unavailable => Ok(Some(())),
                    Err(status) => Err(anyhow!("{}", status.message())),
                }
            },
        )
        .await
    }

    fn client(&self) -> Result<pgpilot_proto::security::Client> {
        let channel = self
            .channel
            .clone()
            .ok_or_else(|| anyhow!("the monitor is not started"))?;
        Ok(pgpilot_proto::security::client(
            channel,
            self.credentials()?,
        ))
    }

    fn state_request(&self) -> GetFormationStateRequest {
        GetFormationStateRequest {
            formation: self.formation.clone(),
        }
    }

    // ---- nodes -------------------------------------------------------------

    fn add_node(&mut self, i: usize, opts: &ClusterOptions) -> Result<()> {
        let name = format!("node{i}");
        let dir = self.root.join(&name);
        self.tools.make_dir(&dir)?;
        let port = free_port()?;
        let http_port = if opts.http { Some(free_port()?) } else { None };
        let pgdata = dir.join("data");
        let config = dir.join("keeper.toml");
        let monitor_link = if opts.monitor_link_proxies {
            Some(Proxy::start(self.monitor_port)?)
        } else {
            None
        };
        let ingress = if opts.ingress_proxies {
            Some(Proxy::start(port)?)
        } else {
            None
        };
        let keeper = KeeperToml {
            name: name.clone(),
            formation: self.formation.clone(),
            host: "127.0.0.1".to_string(),
            port,
            advertise_port: ingress.as_ref().map(Proxy::port),
            pgdata: pgdata.display().to_string(),
            monitor: match &monitor_link {
                Some(proxy) => format!("http://127.0.0.1:{}", proxy.port()),
                None => self.monitor_url.clone(),
            },
            pg_bin_dir: self.tools.pg_bin_dir.display().to_string(),
            pg_user: "postgres".to_string(),
            candidate_priority: opts.candidate_priorities.get(i - 1).copied(),
            replication_quorum: opts.replication_quorums.get(i - 1).copied(),
            register_timeout: None,
        };
        let mut text = keeper.render()?;
        text.push_str(&self.keeper_security_toml(&name));
        if opts.postgres_tls {
            let tls = self
                .tls
                .as_ref()
                .context("postgres_tls needs a security mode other than plaintext")?;
            text.push_str(&tls.postgres_toml(&name));
        }
        if let Some((_, path)) = &self.replication_password {
            text.push_str(&format!(
                "replication_password_file = {:?}\ntrust_networks = [\"127.0.0.1/32\"]\n",
                path.display().to_string()
            ));
        }
        if let Some(p) = http_port {
            text.push_str(&format!("http_listen = \"127.0.0.1:{p}\"\n"));
        }
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        self.nodes.push(Node {
            keeper_log: dir.join("keeper.log"),
            name,
            port,
            dir,
            pgdata,
            config,
            keeper: Mutex::new(None),
            http_port,
            monitor_link,
            ingress,
        });
        Ok(())
    }

    fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| anyhow!("no node named {name:?} in this cluster"))
    }

    fn spawn_keeper_of(&self, name: &str) -> Result<()> {
        let node = self.node(name)?;
        let mut slot = lock(&node.keeper);
        if let Some(child) = slot.as_mut() {
            if child.try_wait()?.is_none() {
                bail!(
                    "the keeper of {name} is already running (pid {})",
                    child.id()
                );
            }
        }
        let log = open_log(&node.keeper_log, "starting the keeper")?;
        let mut cmd = self.tools.keeper_command(&node.config, &node.dir);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.tools.keeper.display()))?;
        *slot = Some(child);
        Ok(())
    }

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

    pub fn monitor_url(&self) -> &str {
        &self.monitor_url
    }

    /// Process id of the running `pgpilot-monitor` (None once stopped).
    pub fn monitor_pid(&self) -> Option<u32> {
        lock(&self.monitor).as_ref().map(Child::id)
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
        self.monitor_metrics_port
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
        let mut files = vec![
            self.monitor_log.clone(),
            with_suffix(&self.monitor_db_pgdata, ".log"),
        ];
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

    // ---- faults and restarts ----------------------------------------------

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

    /// SIGKILL the monitor (its process group); returns when it is gone.
    /// [`Cluster::restart_monitor`] starts it again.
    pub fn kill_monitor(&self) -> Result<Instant> {
        let mut child = lock(&self.monitor)
            .take()
            .ok_or_else(|| anyhow!("the monitor is not running"))?;
        let pid = child.id();
        process::kill_child_group(&mut child);
        let gone_at = Instant::now();
        self.mark_log(
            &self.monitor_log,
            &format!("monitor pid {pid} killed (SIGKILL)"),
        );
        Ok(gone_at)
    }

    /// Start the monitor again with the same configuration and wait until
    /// it answers.
    pub async fn restart_monitor(&self) -> Result<()> {
        if lock(&self.monitor).is_some() {
            bail!("the monitor is already running");
        }
        self.spawn_monitor()?;
        self.wait_monitor_answers().await
    }

    /// Stop the monitor's own PostgreSQL (`pg_ctl stop -m fast`); returns
    /// when it has stopped. The monitor keeps running without its database.
    /// [`Cluster::start_monitor_db`] starts it again.
    pub async fn stop_monitor_db(&self) -> Result<Instant> {
        let mut pg_ctl = self
            .tools
            .command_as_pg_user(self.tools.pg_program("pg_ctl"), &self.root);
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(&self.monitor_db_pgdata)
            .args(["-m", "fast", "-w", "-t", "30"])
            .stdin(Stdio::null());
        run_checked(pg_ctl, "pg_ctl stop of the monitor database").await?;
        let stopped_at = Instant::now();
        self.mark_log(
            &self.monitor_log,
            "monitor database stopped (pg_ctl stop -m fast)",
        );
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
        self.mark_log(&self.monitor_log, "monitor database started again");
        Ok(())
    }

    /// Start the keeper of `name` again, with the same configuration.
    pub fn start_keeper(&self, name: &str) -> Result<()> {
        self.spawn_keeper_of(name)
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

    fn mark_log(&self, path: &Path, message: &str) {
        if let Ok(mut file) = OpenOptions::new().append(true).open(path) {
            let _ = writeln!(
                file,
                "=== harness +{:.3}s: {message} ===",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    // ---- talking to the monitor and the nodes -----------------------------

    /// The monitor's view of the formation (GetFormationState).
    pub async fn state(&self) -> Result<FormationState> {
        let reply = self
            .client()?
            .get_formation_state(self.state_request())
            .await
            .map_err(|status| {
                anyhow!(
                    "GetFormationState failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok(reply.into_inner())
    }

    /// The recent events of the formation, as a table.
    pub async fn events(&self, count: u32) -> Result<String> {
        let reply = self
            .client()?
            .list_events(ListEventsRequest {
                formation: self.formation.clone(),
                count,
            })
            .await
            .map_err(|status| {
                anyhow!(
                    "ListEvents failed: {:?}: {}",
                    status.code(),
                    status.message()
                )
            })?;
        Ok(events_table(&reply.into_inner().events))
    }

    /// The one node whose reported state is a writable-primary state.
    pub async fn primary_name(&self) -> Result<String> {
        let state = self.state().await?;
        let primaries = state.writable_primaries();
        match primaries.as_slice() {
            [one] => Ok(one.name.clone()),
            _ => bail!(
                "expected exactly one writable primary, found {}:\n{}",
                primaries.len(),
                state.table()
            ),
        }
    }

    /// Run `pgpilot-monitor <args>` and return its output (any exit status).
    pub async fn run_cli(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = tokio::process::Command::from(self.tools.monitor_command());
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        cmd.envs(self.cli_env()?);
        tokio::time::timeout(CLI_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("pgpilot-monitor {args:?} did not finish within {CLI_TIMEOUT:?}"))?
            .with_context(|| format!("running pgpilot-monitor {args:?}"))
    }

    /// Run SQL on one node with psql (unaligned, tuples only) and return its
    /// trimmed output; an error carries psql's stderr.
    pub async fn psql(&self, node: &str, sql: &str) -> Result<String> {
        let port = self.node(node)?.port;
        let mut cmd = tokio::process::Command::new(self.tools.pg_program("psql"));
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(port.to_string())
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "3")
        .stdin(Stdio::null())
        .kill_on_drop(true);
        let output = tokio::time::timeout(PSQL_TIMEOUT, cmd.output())
            .await
            .map_err(|_| anyhow!("psql on {node} did not finish within {PSQL_TIMEOUT:?}: {sql}"))?
            .context("running psql")?;
        if !output.status.success() {
            bail!(
                "psql on {node} (port {port}) failed ({}): {}: {sql}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    /// Whether `node`'s PostgreSQL is in recovery (a standby).
    pub async fn is_in_recovery(&self, node: &str) -> Result<bool> {
        Ok(self.psql(node, "SELECT pg_is_in_recovery()").await? == "t")
    }

    /// Those of `ids` that are not in `pgpilot_writes` on `node`.
    pub async fn missing_ids(&self, node: &str, ids: &[i64]) -> Result<Vec<i64>> {
        let text = self.psql(node, "SELECT id FROM pgpilot_writes").await?;
        let present = text
            .lines()
            .map(|line| line.trim().parse::<i64>())
            .collect::<Result<std::collections::HashSet<_>, _>>()
            .context("parsing ids from pgpilot_writes")?;
        Ok(crate::writer::missing_from(ids, &present))
    }

    // ---- waiting -----------------------------------------------------------

    /// Poll the monitor's state until the async predicate holds; on timeout
    /// the error carries the state table, recent events and log tails. Fails
    /// at once if the monitor or a keeper the harness did not kill exits.
    pub async fn wait_until<F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        mut predicate: F,
    ) -> Result<FormationState>
    where
        F: FnMut(FormationState) -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut attempts = 0;
        let mut last;
        loop {
            attempts += 1;
            if let Err(err) = self.check_processes() {
                return Err(self
                    .failure(format!("gave up waiting for {what}: {err:#}"))
                    .await);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let check = async {
                let state = self.state().await?;
                let holds = predicate(state.clone()).await?;
                Ok::<_, anyhow::Error>((holds, state))
            };
            match tokio::time::timeout(remaining.max(Duration::from_millis(100)), check).await {
                Ok(Ok((true, state))) => return Ok(state),
                Ok(Ok((false, _))) => last = "condition not met".to_string(),
                Ok(Err(err)) => last = format!("{err:#}"),
                Err(_) => last = "the check did not finish before the deadline".to_string(),
            }
            if Instant::now() >= deadline {
                let timed_out = TimedOut {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    attempts,
                    last,
                };
                return Err(self.failure(timed_out.to_string()).await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// [`Cluster::wait_until`] with a plain predicate on the state.
    pub async fn wait_state<F>(
        &self,
        timeout: Duration,
        what: &str,
        mut predicate: F,
    ) -> Result<FormationState>
    where
        F: FnMut(&FormationState) -> bool,
    {
        self.wait_until(timeout, what, |state| {
            let holds = predicate(&state);
            async move { Ok(holds) }
        })
        .await
    }

    /// Poll any check (`Ok(Some(v))` = done, `Ok(None)`/`Err` = not yet)
    /// with the same failure report as [`Cluster::wait_until`].
    pub async fn wait_for<T, F, Fut>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>>>,
    {
        let result = poll_until(timeout, what, || {
            let processes = self.check_processes();
            let fut = check();
            async move {
                processes?;
                fut.await
            }
        })
        .await;
        match result {
            Ok(value) => Ok(value),
            Err(err) => Err(self.failure(format!("{err:#}")).await),
        }
    }

    /// One node settled in `primary`, all others in `secondary`.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<FormationState> {
        let n = self.nodes.len();
        self.wait_state(
            timeout,
            &format!(
                "a healthy group: 1 primary and {} secondaries, reported == goal",
                n - 1
            ),
            |s| s.is_healthy(n),
        )
        .await
    }

    /// A two-node cluster with one primary and one secondary, settled.
    pub async fn wait_healthy_pair(&self) -> Result<FormationState> {
        if self.nodes.len() != 2 {
            bail!(
                "wait_healthy_pair needs 2 nodes, this cluster has {}",
                self.nodes.len()
            );
        }
        self.wait_healthy(Duration::from_secs(120)).await
    }

    /// The monitor or a keeper that should be running has exited.
    /// (Supervised keepers a failpoint killed are started again first.)
    fn check_processes(&self) -> Result<()> {
        self.restart_killed_keepers()?;
        if let Some(child) = lock(&self.monitor).as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(GiveUp(format!("the monitor exited ({status})")).into());
            }
        }
        for node in &self.nodes {
            if let Some(child) = lock(&node.keeper).as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(
                        GiveUp(format!("the keeper of {} exited ({status})", node.name)).into(),
                    );
                }
            }
        }
        Ok(())
    }

    // ---- reporting ---------------------------------------------------------

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
        if self.channel.is_some() {
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
        let mut out = format!("monitor: {}\n", describe(&self.monitor));
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

    // ---- teardown ------------------------------------------------------------

    /// Stop everything gracefully (SIGTERM, then SIGKILL after a while;
    /// PostgreSQL with `pg_ctl stop -m fast`), then drop.
    pub async fn shutdown(self) -> Result<()> {
        for node in &self.nodes {
            let child = lock(&node.keeper).take();
            if let Some(child) = child {
                stop_gracefully(child).await;
            }
        }
        let monitor = lock(&self.monitor).take();
        if let Some(child) = monitor {
            stop_gracefully(child).await;
        }
        for pgdata in self.all_pgdata() {
            if !pgdata.join("postmaster.pid").exists() {
                continue;
            }
            let mut pg_ctl = self
                .tools
                .command_as_pg_user(self.tools.pg_program("pg_ctl"), &self.root);
            pg_ctl
                .arg("stop")
                .arg("-D")
                .arg(&pgdata)
                .args(["-m", "fast", "-w", "-t", "30"])
                .stdin(Stdio::null());
            if let Err(err) = run_checked(pg_ctl, "pg_ctl stop").await {
                eprintln!("{err:#}");
            }
        }
        Ok(())
    }

    fn all_pgdata(&self) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = self.nodes.iter().map(|n| n.pgdata.clone()).collect();
        all.push(self.monitor_db_pgdata.clone());
        all
    }
}

// ---- transport security (see `crate::security`) ----------------------------

impl Cluster {
    /// Make the certificates and token the chosen [`Security`] needs and
    /// point the monitor URL at https:// when it serves TLS.
    async fn set_up_security(&mut self, opts: &ClusterOptions) -> Result<()> {
        self.tls = TlsFiles::generate(
            &self.tools,
            &self.root,
            opts.security,
            &self.formation,
            opts.nodes,
        )
        .await?;
        if self.tls.is_some() {
            self.monitor_url = format!("https://127.0.0.1:{}", self.monitor_port);
        }
        Ok(())
    }

    /// The security lines of `monitor.toml`.
    fn monitor_security_toml(&self) -> String {
        match &self.tls {
            None => "plaintext = true\n".to_string(),
            Some(tls) => tls.monitor_toml(),
        }
    }

    /// The security lines of the keeper of `node`.
    fn keeper_security_toml(&self, node: &str) -> String {
        self.tls
            .as_ref()
            .map(|tls| tls.keeper_toml(node))
            .unwrap_or_default()
    }

    /// The keepers' replication password, when the cluster has one.
    pub fn replication_password(&self) -> Option<&str> {
        self.replication_password.as_ref().map(|(p, _)| p.as_str())
    }

    /// The monitor database's password, when the cluster has one.
    pub fn monitor_db_password(&self) -> Option<&str> {
        self.monitor_db_password.as_deref()
    }

    /// `monitor.toml` may hold the database password: only its owner reads it.
    fn restrict_monitor_config(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&self.monitor_config, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", self.monitor_config.display()))
    }

    /// How the harness reaches the monitor: as the operator `harness`.
    pub fn operator_security(&self) -> pgpilot_proto::security::ClientSecurity {
        self.tls
            .as_ref()
            .map(TlsFiles::operator_security)
            .unwrap_or_default()
    }

    /// A gRPC client of this monitor as whoever `sec` and `credentials`
    /// make it (another identity, none, the wrong one), each call bounded
    /// by `call_timeout`; replies may exceed tonic's 4 MiB default.
    pub async fn grpc_as(
        &self,
        sec: &pgpilot_proto::security::ClientSecurity,
        credentials: pgpilot_proto::security::Credentials,
        call_timeout: Duration,
    ) -> Result<pgpilot_proto::security::Client> {
        let channel = sec
            .endpoint(&self.monitor_url, &pgpilot_proto::security::CLI_NAMES)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(call_timeout)
            .connect()
            .await
            .context("connecting to the monitor")?;
        Ok(pgpilot_proto::security::client(channel, credentials)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    fn endpoint(&self) -> Result<Endpoint> {
        Ok(self
            .operator_security()
            .endpoint(&self.monitor_url, &pgpilot_proto::security::CLI_NAMES)?)
    }

    fn credentials(&self) -> Result<pgpilot_proto::security::Credentials> {
        Ok(self.operator_security().credentials(&self.monitor_url)?)
    }

    /// Environment that lets `pgpilot-monitor` operator commands reach
    /// this monitor as the operator `harness` (empty in plaintext).
    pub fn cli_env(&self) -> Result<Vec<(&'static str, String)>> {
        match &self.tls {
            None => Ok(Vec::new()),
            Some(tls) => tls.cli_env(),
        }
    }

    /// The certificates and token of this cluster (None in plaintext).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The security mode this cluster runs in.
    pub fn security(&self) -> Security {
        self.tls.as_ref().map_or(Security::Plaintext, |t| t.mode)
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
        if let Some(mut child) = lock(&self.monitor).take() {
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

async fn stop_gracefully(mut child: Child) {
    let pid = child.id() as i32;
    let _ = process::signal(pid, Signal::SIGTERM);
    let deadline = Instant::now() + GRACEFUL_STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process::kill_child_group(&mut child);
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
            .field("monitor_url", &self.monitor_url)
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
