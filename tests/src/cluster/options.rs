//! What a test cluster is asked to be ([`ClusterOptions`]) and the
//! configuration files it writes for the monitor and the keepers.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::security::Security;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// Monitor processes over the one monitor database (at least 1); the
    /// keepers are given every monitor's URL.
    pub monitors: usize,
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
    /// Give the monitor database a synchronous standby and the monitors a
    /// multi-host `database_url` naming both; see
    /// [`Cluster::fail_over_monitor_db`].
    pub monitor_db_standby: bool,
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
    /// `apply_delay` per node (node1 first, e.g. `Some("1h")`): a delayed
    /// standby; `None` or missing → not delayed.
    pub apply_delays: Vec<Option<String>>,
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
    /// An existing data directory (a PostgreSQL that pgpilot did not make,
    /// stopped) moved into node1's place before its keeper starts, so that
    /// node1 adopts it instead of running initdb.
    pub first_node_pgdata: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 2,
            monitors: 1,
            candidate_priorities: Vec::new(),
            formation: "default".to_string(),
            dir: None,
            node_timeout: None,
            health_check_interval: None,
            first_node_alone: true,
            monitor_db_settings: Vec::new(),
            http: false,
            monitor_db_password: None,
            monitor_db_standby: false,
            monitor_link_proxies: false,
            ingress_proxies: false,
            replication_quorums: Vec::new(),
            apply_delays: Vec::new(),
            security: Security::Plaintext,
            replication_password: false,
            postgres_tls: false,
            first_node_pgdata: None,
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

    /// See [`ClusterOptions::monitor_db_standby`].
    pub fn monitor_db_standby(mut self) -> Self {
        self.monitor_db_standby = true;
        self
    }

    /// See [`ClusterOptions::monitors`].
    pub fn monitors(mut self, monitors: usize) -> Self {
        self.monitors = monitors;
        self
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
pub(super) struct MonitorToml {
    pub(super) database_url: String,
    pub(super) listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metrics_listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) advertise_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) node_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) health_check_interval: Option<String>,
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
    /// One URL is written as a string, several as a list.
    #[serde(serialize_with = "one_or_list")]
    pub monitor: Vec<String>,
    pub pg_bin_dir: String,
    pub pg_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_quorum: Option<bool>,
    /// A delayed standby's `apply_delay` (e.g. "1h").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_delay: Option<String>,
    /// How long a keeper that never registered keeps trying (e.g. "5s").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_timeout: Option<String>,
}

fn one_or_list<S: serde::Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
    match urls {
        [one] => s.serialize_str(one),
        many => serde::Serialize::serialize(many, s),
    }
}

impl KeeperToml {
    pub fn render(&self) -> Result<String> {
        toml::to_string(self).context("rendering a keeper config")
    }
}
