//! The keeper's TOML configuration. Unknown keys are refused, and the
//! timeouts are checked against each other at load.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot_proto::config_file;
use pgpilot_proto::delay;
use pgpilot_proto::security;
use serde::Deserialize;

/// How often the keeper observes PostgreSQL and heartbeats. Shorter
/// transitions and detection; more monitor load (one transaction each).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A primary that has not reached the monitor for this long, and has too
/// few streaming standbys, stops PostgreSQL (fences). Must be shorter than
/// the monitor's node_timeout; longer means a longer failover.
pub const DEFAULT_FENCE_TIMEOUT: Duration = Duration::from_millis(1500);
/// PostgreSQL's wal_sender_timeout: how long a primary keeps counting a
/// silent standby as streaming. Part of the fence bound.
pub const DEFAULT_WAL_SENDER_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL's wal_receiver_timeout: how long a standby waits on a silent
/// primary before it reports its stream gone.
pub const DEFAULT_WAL_RECEIVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a keeper that was never registered retries the monitor before
/// it gives up (a registered keeper retries forever).
pub const DEFAULT_REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// A clone or rewind that makes no progress at all (no byte counted by the
/// program, none read or written by its processes) for this long is
/// stopped; one that moves runs as long as it takes.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(300);
/// A node stopped on purpose hands over within this long, or stops anyway:
/// a switchover takes about a second, and container runtimes kill what is
/// still running 10 s after their SIGTERM (`docker stop`).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(8);
/// A hook (`on_role_change`, `before_stop`) is killed after this long.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// pg_basebackup's bounds on `--max-rate`, in bytes per second.
pub const MIN_CLONE_MAX_RATE: u64 = 32 * 1024;
pub const MAX_CLONE_MAX_RATE: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_CANDIDATE_PRIORITY: u32 = 50;
pub const DEFAULT_REPLICATION_USER: &str = "pgpilot_replication";
/// Longest duration any setting accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperConfig {
    /// Node name, unique in its formation.
    pub name: String,
    #[serde(default = "d_formation")]
    pub formation: String,
    /// Address other nodes and the monitor use to reach this PostgreSQL.
    pub host: String,
    /// PostgreSQL port.
    pub port: u16,
    /// Port the monitor, the other nodes and clients are told to use for
    /// this PostgreSQL (default: `port`). Set it when a proxy or a port
    /// forward stands in front of PostgreSQL.
    #[serde(default)]
    pub advertise_port: Option<u16>,
    /// PostgreSQL data directory.
    pub pgdata: PathBuf,
    /// The `monitor` key: the monitor's gRPC URL, https://HOST:7430 (TLS)
    /// or http:// for a monitor that runs with plaintext = true; or a list
    /// of such URLs, the monitors sharing one database, all of one scheme.
    /// The keeper talks to the first and moves to the next after an error
    /// (see [`crate::monitors`]).
    #[serde(
        rename = "monitor",
        deserialize_with = "crate::monitors::deserialize_urls"
    )]
    pub monitors: Vec<String>,
    /// CA certificate that signed the monitor's certificate (https:// only).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// This keeper's certificate (CN keeper:FORMATION/NAME) and key, for a
    /// monitor that requires mutual TLS; the key must not be world-readable.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Name the monitor's certificate must carry (default: the URL's host).
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// File holding the monitor's shared token (not world-readable); else
    /// PGPILOT_TOKEN when set.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Directory of pg_ctl, initdb, … (found on PATH or under /usr/lib/postgresql when unset).
    #[serde(default)]
    pub pg_bin_dir: Option<PathBuf>,
    /// PostgreSQL superuser name, which the keeper connects as over the
    /// local socket.
    #[serde(default = "d_pg_user")]
    pub pg_user: String,
    /// Role the other nodes of the group stream, clone and rewind as. The
    /// primary's keeper creates it (LOGIN REPLICATION, pg_checkpoint and
    /// the file functions pg_rewind needs) and pg_hba.conf lets it in from
    /// the group's hosts only.
    #[serde(default = "d_replication_user")]
    pub replication_user: String,
    /// File holding the replication role's password (SCRAM-SHA-256; not
    /// world-readable; read again on each use, so a rotation needs no
    /// restart); else PGPILOT_REPLICATION_PASSWORD when set. Neither: the
    /// group's hosts replicate without a password (trust).
    #[serde(default)]
    pub replication_password_file: Option<PathBuf>,
    /// PostgreSQL's own TLS between the nodes: this server's certificate
    /// (naming the host other nodes reach it by) and key (owned by the
    /// PostgreSQL user, not readable by others), and the CA the other
    /// nodes' certificates are checked against. All three or none: with
    /// them PostgreSQL runs with ssl = on, the replication role is let in
    /// over TLS only (hostssl), and standbys, pg_basebackup, pg_rewind and
    /// the keeper connect to their upstream with sslmode=verify-full.
    #[serde(default)]
    pub postgres_tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub postgres_tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub postgres_tls_ca_file: Option<PathBuf>,
    /// listen_addresses of PostgreSQL (default: the host).
    #[serde(default)]
    pub listen_addresses: Option<String>,
    /// Networks whose connections PostgreSQL trusts without a password,
    /// for clients and replication: CIDRs ("172.20.0.0/16") or "samenet".
    /// Written to pg_hba.conf. Only for a private network such as the
    /// docker compose lab's.
    #[serde(default)]
    pub trust_networks: Vec<String>,
    /// Unix socket directory (default: the directory holding PGDATA).
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
    /// Local state file (default: `<pgdata>.pgpilot-state.json`).
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// 0–100, 0: never promoted. Absent: [`DEFAULT_CANDIDATE_PRIORITY`],
    /// or 0 with an `apply_delay`; read it with
    /// [`KeeperConfig::candidate_priority`].
    #[serde(default)]
    pub candidate_priority: Option<u32>,
    /// Absent: true, or false with an `apply_delay`; read it with
    /// [`KeeperConfig::replication_quorum`].
    #[serde(default)]
    pub replication_quorum: Option<bool>,
    /// A delayed standby: as a standby this node applies each commit only
    /// once it is this old (`recovery_min_apply_delay`). "0s": not
    /// delayed. Sent at registration; afterwards the monitor's value
    /// (`set-apply-delay`) counts. A delayed node is never promoted nor
    /// counted for synchronous commit.
    #[serde(default, with = "humantime_serde")]
    pub apply_delay: Duration,
    #[serde(default = "d_hb", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(default = "d_fence", with = "humantime_serde")]
    pub fence_timeout: Duration,
    #[serde(default = "d_wst", with = "humantime_serde")]
    pub wal_sender_timeout: Duration,
    #[serde(default = "d_wrt", with = "humantime_serde")]
    pub wal_receiver_timeout: Duration,
    #[serde(default = "d_register", with = "humantime_serde")]
    pub register_timeout: Duration,
    /// A clone (pg_basebackup) or rewind (pg_rewind) is stopped when
    /// nothing moved for this long; there is no limit on how long one
    /// that moves may take.
    #[serde(default = "d_stall", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How long a keeper stopped on purpose (SIGTERM, SIGINT) lets its node
    /// hand over before it stops PostgreSQL anyway: a primary waits until a
    /// standby is being promoted and its own PostgreSQL stopped cleanly, a
    /// secondary until its primary no longer waits for it. "0s": stop at
    /// once, without handing over.
    #[serde(default = "d_stop", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Most bytes per second a clone of this node reads from its upstream
    /// (pg_basebackup `--max-rate`), e.g. "50MB" or "512kB"; absent: no
    /// limit.
    #[serde(default, deserialize_with = "d_rate")]
    pub clone_max_rate: Option<u64>,
    /// Remove the data directory before cloning into its place, so that a
    /// rebuild needs room for one copy, not two; the node then has no data
    /// until the clone is complete.
    #[serde(default)]
    pub clone_in_place: bool,
    /// A shell command that fills the empty directory `%D` with a restored
    /// backup of this group's database (pgBackRest, WAL-G, Barman, …), run
    /// instead of pg_basebackup to build this node as a standby; `%h` and
    /// `%p` are the clone source's host and port (the primary's unless
    /// `clone_from` picks a standby). Absent: pg_basebackup.
    #[serde(default)]
    pub clone_command: Option<String>,
    /// PostgreSQL's `restore_command` for this node: WAL from the archive
    /// when a standby falls behind what its upstream still holds.
    #[serde(default)]
    pub restore_command: Option<String>,
    /// Where a clone of this node copies from: "primary" (the default),
    /// "standby" (the standby the monitor finds least busy, the primary
    /// when none can serve), or the name of one node of the group (that
    /// node while it is a healthy standby, the primary otherwise). A clone
    /// from a standby that fails is followed at once by one from the
    /// primary.
    #[serde(default = "d_clone_from")]
    pub clone_from: String,
    /// A shell command run after a transition that changes this node's
    /// role (primary, standby, none), with `PGPILOT_OLD_ROLE`,
    /// `PGPILOT_NEW_ROLE`, `PGPILOT_NODE`, … in its environment (see
    /// `crate::hooks`): e.g. to move a virtual IP. Never waited for.
    #[serde(default)]
    pub on_role_change: Option<String>,
    /// A shell command run before a keeper stopped on purpose stops
    /// PostgreSQL (after its node handed over); waited for, `hook_timeout`
    /// at most.
    #[serde(default)]
    pub before_stop: Option<String>,
    /// A shell command run when this node is elected, before it is
    /// promoted; waited for, `hook_timeout` at most. A non-zero exit (or
    /// one killed at the timeout) refuses the promotion: the monitor
    /// elects another candidate when one can take over, else the keeper
    /// runs it again.
    #[serde(default)]
    pub before_promotion: Option<String>,
    /// A hook still running after this long is killed (its whole process
    /// group).
    #[serde(default = "d_hook", with = "humantime_serde")]
    pub hook_timeout: Duration,
    /// Keep this node out of the load balancers' read pools: its HTTP
    /// /replica, /read-only (as a standby), /sync and /async answer 503.
    #[serde(default)]
    pub noloadbalance: bool,
    /// Address of the keeper's HTTP server (/metrics, /health, /primary,
    /// /replica, …), e.g. "127.0.0.1:8008"; absent: no HTTP server.
    #[serde(default, deserialize_with = "d_http_listen")]
    pub http_listen: Option<std::net::SocketAddr>,
}

fn d_clone_from() -> String {
    "primary".into()
}
fn d_formation() -> String {
    "default".into()
}
fn d_pg_user() -> String {
    "postgres".into()
}
fn d_replication_user() -> String {
    DEFAULT_REPLICATION_USER.into()
}
fn d_hb() -> Duration {
    DEFAULT_HEARTBEAT_INTERVAL
}
fn d_fence() -> Duration {
    DEFAULT_FENCE_TIMEOUT
}
fn d_wst() -> Duration {
    DEFAULT_WAL_SENDER_TIMEOUT
}
fn d_wrt() -> Duration {
    DEFAULT_WAL_RECEIVER_TIMEOUT
}
fn d_register() -> Duration {
    DEFAULT_REGISTER_TIMEOUT
}
fn d_stall() -> Duration {
    DEFAULT_STALL_TIMEOUT
}
fn d_stop() -> Duration {
    DEFAULT_STOP_TIMEOUT
}
fn d_hook() -> Duration {
    DEFAULT_HOOK_TIMEOUT
}

/// `clone_max_rate` as bytes per second, from "50MB", "512kB", "1GB"
/// (PostgreSQL's units: 1 kB = 1024 bytes) or a bare number of bytes, within
/// pg_basebackup's bounds; refused in one sentence otherwise.
fn d_rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| parse_rate(&t).map_err(serde::de::Error::custom))
        .transpose()
}

pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1024,
        "MB" => 1024 * 1024,
        "GB" => 1024 * 1024 * 1024,
        _ => 0,
    };
    let value = number.parse::<u64>().ok().map(|n| n.saturating_mul(factor));
    match value {
        Some(v) if (MIN_CLONE_MAX_RATE..=MAX_CLONE_MAX_RATE).contains(&v) => Ok(v),
        _ => Err(format!(
            "clone_max_rate {text:?} is not a rate pg_basebackup takes: give bytes per second between 32kB and 1GB, e.g. \"50MB\""
        )),
    }
}

/// `http_listen` as IP:PORT, refused in one sentence otherwise.
fn d_http_listen<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| {
        t.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "http_listen {t:?} is not an address: give IP:PORT, e.g. \"127.0.0.1:8008\" or \"0.0.0.0:8008\""
            ))
        })
    })
    .transpose()
}

pub use pgpilot_proto::config_file::ConfigError;

/// A PostgreSQL role name that needs no quoting anywhere (and is not one
/// of the reserved `pg_` roles).
/// 1 to 63 letters, digits, '_', '-' or '.' (a node name).
fn is_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn is_role_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
        && !name.starts_with("pg_")
}

/// A pg_hba.conf address the keeper may write: `samenet`, `samehost`, or an
/// IPv4/IPv6 address with a prefix length that fits it.
fn is_trust_network(entry: &str) -> bool {
    if entry == "samenet" || entry == "samehost" {
        return true;
    }
    let Some((addr, prefix)) = entry.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

impl KeeperConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: KeeperConfig = config_file::load(path)?;
        config.validate()?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: KeeperConfig = config_file::parse(text, Path::new("<config>"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !is_node_name(&self.name) {
            return bad(format!(
                "name {:?} is not valid: use 1 to 63 letters, digits, '_', '-' or '.'",
                self.name
            ));
        }
        if !is_node_name(&self.clone_from) {
            return bad(format!(
                "clone_from {:?} is not valid: write \"primary\", \"standby\" or the name of a node of the group",
                self.clone_from
            ));
        }
        if self.clone_from == self.name {
            return bad(format!(
                "clone_from names this node itself ({:?}): name another node, \"standby\" or \"primary\"",
                self.name
            ));
        }
        for (key, role) in [
            ("pg_user", &self.pg_user),
            ("replication_user", &self.replication_user),
        ] {
            if !is_role_name(role) {
                return bad(format!(
                    "{key} {role:?} is not a role name pgpilot can use: 1 to 63 lower-case letters, digits or '_', starting with a letter or '_', and not starting with \"pg_\""
                ));
            }
        }
        if self.port == 0 {
            return bad("port must be between 1 and 65535".into());
        }
        if self.advertise_port == Some(0) {
            return bad(
                "advertise_port must be between 1 and 65535 (leave it out to advertise port)"
                    .into(),
            );
        }
        if let Some(p) = self.candidate_priority.filter(|&p| p > 100) {
            return bad(format!("candidate_priority {p} is not between 0 and 100"));
        }
        self.check_apply_delay()?;
        if !self.pgdata.is_absolute() {
            return bad(format!("pgdata {:?} must be an absolute path", self.pgdata));
        }
        crate::monitors::check_urls(&self.monitors, &self.client_security())
            .map_err(ConfigError::Invalid)?;
        for (key, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("fence_timeout", self.fence_timeout),
            ("wal_sender_timeout", self.wal_sender_timeout),
            ("wal_receiver_timeout", self.wal_receiver_timeout),
            ("register_timeout", self.register_timeout),
            ("stall_timeout", self.stall_timeout),
            ("stop_timeout", self.stop_timeout),
            ("hook_timeout", self.hook_timeout),
        ] {
            if value > MAX_DURATION {
                return bad(format!(
                    "{key} ({}) is longer than {}: give a shorter duration",
                    humantime::format_duration(value),
                    humantime::format_duration(MAX_DURATION)
                ));
            }
        }
        if self.stall_timeout < Duration::from_secs(1) {
            return bad(
                "stall_timeout must be at least 1s: a clone is sampled once a second".into(),
            );
        }
        if self.hook_timeout.is_zero() {
            return bad("hook_timeout must be above 0s: a hook needs time to run".into());
        }
        for (key, command) in [
            ("on_role_change", &self.on_role_change),
            ("before_stop", &self.before_stop),
            ("before_promotion", &self.before_promotion),
        ] {
            if command.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return bad(format!(
                    "{key} is empty: give a shell command, or remove the setting"
                ));
            }
        }
        if let Some(command) = &self.clone_command {
            if !command.contains("%D") {
                return bad(format!(
                    "clone_command {command:?} does not name the directory to fill: write it as %D, e.g. \"pgbackrest --stanza=main --pg1-path=%D restore\""
                ));
            }
        }
        if let Some(command) = &self.restore_command {
            if !(command.contains("%f") && command.contains("%p")) {
                return bad(format!(
                    "restore_command {command:?} must name the WAL file and where to put it as %f and %p, e.g. \"pgbackrest --stanza=main archive-get %f %p\""
                ));
            }
        }
        if self.heartbeat_interval < Duration::from_millis(50) {
            return bad("heartbeat_interval must be at least 50ms".into());
        }
        if self.fence_timeout < self.heartbeat_interval * 2 {
            return bad(format!(
                "fence_timeout ({}) must be at least twice heartbeat_interval ({}), or a primary fences itself after one slow heartbeat",
                humantime::format_duration(self.fence_timeout),
                humantime::format_duration(self.heartbeat_interval)
            ));
        }
        if self.wal_sender_timeout < Duration::from_secs(1)
            || self.wal_receiver_timeout < Duration::from_secs(1)
        {
            return bad("wal_sender_timeout and wal_receiver_timeout must be at least 1s (standbys reply once a second)".into());
        }
        match (
            &self.postgres_tls_cert_file,
            &self.postgres_tls_key_file,
            &self.postgres_tls_ca_file,
        ) {
            (None, None, None) => {}
            (Some(cert), Some(key), Some(ca)) => {
                if let Some((name, path)) = [
                    ("postgres_tls_cert_file", cert),
                    ("postgres_tls_key_file", key),
                    ("postgres_tls_ca_file", ca),
                ]
                .into_iter()
                .find(|(_, p)| !p.is_absolute())
                {
                    return bad(format!("{name} {path:?} must be an absolute path (PostgreSQL reads it from PGDATA)"));
                }
            }
            _ => {
                return bad("postgres_tls_cert_file, postgres_tls_key_file and postgres_tls_ca_file go together: set all three for TLS between the nodes, or none".into());
            }
        }
        if let Some(entry) = self.trust_networks.iter().find(|n| !is_trust_network(n)) {
            return bad(format!(
                "trust_networks entry {entry:?} is not a network: write a CIDR like \"172.20.0.0/16\" or \"samenet\""
            ));
        }
        Ok(())
    }

    /// `apply_delay` within PostgreSQL's limit, and a delayed node neither
    /// a candidate nor in the quorum.
    fn check_apply_delay(&self) -> Result<(), ConfigError> {
        let ms = delay::to_millis(self.apply_delay)
            .map_err(|why| ConfigError::Invalid(format!("apply_delay: {why}")))?;
        if ms == 0 {
            return Ok(());
        }
        let contradiction = match (self.candidate_priority, self.replication_quorum) {
            (Some(p), _) if p > 0 => Some(format!("candidate_priority = {p}")),
            (_, Some(true)) => Some("replication_quorum = true".to_string()),
            _ => None,
        };
        match contradiction {
            Some(what) => Err(ConfigError::Invalid(format!(
                "apply_delay = \"{}\" makes this node a delayed standby, which is never promoted nor counted for synchronous commit, so {what} contradicts it: remove {what} (with a delay it defaults to 0 / false) or remove apply_delay",
                humantime::format_duration(self.apply_delay)
            ))),
            None => Ok(()),
        }
    }

    /// The candidate priority registered: as set, else 0 for a delayed
    /// node and [`DEFAULT_CANDIDATE_PRIORITY`] otherwise.
    pub fn candidate_priority(&self) -> u32 {
        let default = if self.apply_delay.is_zero() {
            DEFAULT_CANDIDATE_PRIORITY
        } else {
            0
        };
        self.candidate_priority.unwrap_or(default)
    }

    /// The replication quorum registered: as set, else off for a delayed
    /// node and on otherwise.
    pub fn replication_quorum(&self) -> bool {
        self.replication_quorum
            .unwrap_or(self.apply_delay.is_zero())
    }

    /// The apply delay registered, in milliseconds (checked at load).
    pub fn apply_delay_ms(&self) -> u64 {
        delay::to_millis(self.apply_delay).unwrap_or(delay::MAX_APPLY_DELAY_MS)
    }

    /// How the keeper reaches the monitor (TLS settings and token file).
    pub fn client_security(&self) -> security::ClientSecurity {
        security::ClientSecurity {
            ca_file: self.tls_ca_file.clone(),
            cert_file: self.tls_cert_file.clone(),
            key_file: self.tls_key_file.clone(),
            server_name: self.tls_server_name.clone(),
            token_file: self.token_file.clone(),
        }
    }

    /// PostgreSQL's TLS between the nodes, when configured.
    pub fn postgres_tls(&self) -> Option<crate::pg::PostgresTls> {
        Some(crate::pg::PostgresTls {
            cert_file: self.postgres_tls_cert_file.clone()?,
            key_file: self.postgres_tls_key_file.clone()?,
            ca_file: self.postgres_tls_ca_file.clone()?,
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| {
            let mut s = self.pgdata.clone().into_os_string();
            s.push(".pgpilot-state.json");
            PathBuf::from(s)
        })
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.socket_dir.clone().unwrap_or_else(|| {
            self.pgdata
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
        })
    }

    /// The port registered with the monitor: `advertise_port`, else `port`.
    pub fn advertised_port(&self) -> u16 {
        self.advertise_port.unwrap_or(self.port)
    }

    pub fn listen_addresses(&self) -> String {
        self.listen_addresses
            .clone()
            .unwrap_or_else(|| self.host.clone())
    }
}

#[cfg(test)]
mod tests;
