//! The monitor's TOML configuration. Unknown keys are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot_proto::config_file;
use pgpilot_proto::security;
use serde::Deserialize;

/// How long a keeper may stay silent before its node can be declared
/// unhealthy (its PostgreSQL must also fail the monitor's check). Shorter
/// detects a dead primary sooner; too short risks failing over on a
/// keeper that merely stalled, which the health check guards against.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a keeper that heartbeats but reports its PostgreSQL down (it
/// crashed and is being restarted, or crash recovery is still running) gets
/// to bring it back before the standbys are sent to an election. A restart
/// takes well under a second on a quiet machine, crash recovery of a busy
/// server or a loaded host several seconds; a failover instead costs every
/// client its connections and the old primary a rewind. Longer avoids
/// needless failovers; shorter bounds the write outage when PostgreSQL
/// hangs while starting. A server that cannot start at all is not waited
/// for: the keeper reports each failed start and the election begins after
/// a few (`fsm::START_FAILURES_BEFORE_FAILOVER`). At least `node_timeout`.
pub const DEFAULT_POSTGRES_RESTART_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the monitor checks each node's PostgreSQL itself.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How long a monitor holds the lease on the background duties (health
/// checks, periodic evaluation) without renewing it; it renews every
/// `health_check_interval`. When the holder dies or loses the database,
/// another monitor takes over within `lease_timeout` plus one
/// `health_check_interval`.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long events are kept; the lease holder deletes older ones.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Bounds of `event_retention`.
pub const MIN_EVENT_RETENTION: Duration = Duration::from_secs(3600);
pub const MAX_EVENT_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Connection timeout of one health check.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Added to the fence deadline: clock-rate drift and the time to stop PostgreSQL.
pub const DEFAULT_FENCE_MARGIN: Duration = Duration::from_millis(500);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7430";
pub const DATABASE_URL_ENV: &str = "PGPILOT_DATABASE_URL";
/// The largest gRPC request the monitor decodes. The largest real request
/// (a heartbeat naming every streaming standby) is well under 4 KiB; a
/// bigger one is refused before it costs memory.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Bounds of `max_message_bytes`.
pub const MIN_MAX_MESSAGE_BYTES: usize = 4096;
pub const MAX_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The longest duration any setting may have. The monitor adds its
/// durations to timestamps and timers; a year-long value would overflow
/// them (a panic in the state machine or the health check), and nothing
/// useful waits longer than a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// A TLS handshake that takes longer than this is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The monitor's own database. Alternatively `database_url_file` or the
    /// `PGPILOT_DATABASE_URL` environment variable.
    #[serde(default)]
    pub database_url: Option<String>,
    #[serde(default)]
    pub database_url_file: Option<PathBuf>,
    /// gRPC listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "d_node_timeout", with = "humantime_serde")]
    pub node_timeout: Duration,
    /// Time a live keeper gets to restart its crashed PostgreSQL before
    /// the election starts.
    #[serde(default = "d_postgres_restart_timeout", with = "humantime_serde")]
    pub postgres_restart_timeout: Duration,
    #[serde(default = "d_hc_interval", with = "humantime_serde")]
    pub health_check_interval: Duration,
    #[serde(default = "d_hc_timeout", with = "humantime_serde")]
    pub health_check_timeout: Duration,
    #[serde(default = "d_fence_margin", with = "humantime_serde")]
    pub fence_margin: Duration,
    /// How long the lease on the background duties lasts unrenewed.
    #[serde(default = "d_lease_timeout", with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// Events older than this are deleted (by the lease holder).
    #[serde(default = "d_event_retention", with = "humantime_serde")]
    pub event_retention: Duration,
    /// The URL keepers and operators use to reach this monitor, as
    /// show-state lists it; default: the scheme and `listen`.
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// User name the health check presents to each node's PostgreSQL.
    #[serde(default = "d_hc_user")]
    pub health_check_user: String,
    /// Address of the Prometheus `/metrics` server, e.g. "127.0.0.1:9187";
    /// absent: no metrics server.
    #[serde(default, deserialize_with = "d_metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Serve gRPC without TLS and without client authentication. Only on a
    /// network where everyone who can reach the port may run every
    /// operator command; the monitor warns at start.
    #[serde(default)]
    pub plaintext: bool,
    /// The monitor's certificate (PEM) and its private key (not
    /// world-readable).
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Mutual TLS: accept only clients whose certificate this CA signed;
    /// the certificate's common name says who they are
    /// (`keeper:FORMATION/NODE` or `operator:NAME`).
    #[serde(default)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Shared-token mode: every client must send this token (the file is
    /// not world-readable); else `PGPILOT_TOKEN` when set.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Larger gRPC requests are refused.
    #[serde(default = "d_max_message")]
    pub max_message_bytes: usize,
}

/// How the monitor serves gRPC, checked without reading a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportMode {
    /// No TLS, no client authentication (`plaintext = true`).
    Plaintext,
    /// TLS; `client_certs`: mutual TLS with identities; `token`: a shared token.
    Tls { client_certs: bool, token: bool },
}

/// The monitor's transport security, files read.
#[derive(Clone)]
pub struct Transport {
    pub mode: TransportMode,
    /// Certificate and key (PEM), with TLS.
    pub identity: Option<(String, String)>,
    /// The CA that signs client certificates, with mutual TLS.
    pub client_ca: Option<String>,
    /// The shared token, in token mode.
    pub token: Option<String>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("mode", &self.mode)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// No TLS, no authentication (in-process tests).
    pub fn plaintext() -> Transport {
        Transport {
            mode: TransportMode::Plaintext,
            identity: None,
            client_ca: None,
            token: None,
        }
    }
}

/// `metrics_listen` as IP:PORT, refused in one sentence otherwise.
fn d_metrics_listen<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| {
        t.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "metrics_listen {t:?} is not an address: give IP:PORT, e.g. \"127.0.0.1:9187\" or \"0.0.0.0:9187\""
            ))
        })
    })
    .transpose()
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address")
}
fn d_node_timeout() -> Duration {
    DEFAULT_NODE_TIMEOUT
}
fn d_postgres_restart_timeout() -> Duration {
    DEFAULT_POSTGRES_RESTART_TIMEOUT
}
fn d_hc_interval() -> Duration {
    DEFAULT_HEALTH_CHECK_INTERVAL
}
fn d_hc_timeout() -> Duration {
    DEFAULT_HEALTH_CHECK_TIMEOUT
}
fn d_fence_margin() -> Duration {
    DEFAULT_FENCE_MARGIN
}
fn d_lease_timeout() -> Duration {
    DEFAULT_LEASE_TIMEOUT
}
fn d_event_retention() -> Duration {
    DEFAULT_EVENT_RETENTION
}
fn d_hc_user() -> String {
    "postgres".into()
}
fn d_max_message() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

pub use pgpilot_proto::config_file::ConfigError;

fn security_error(e: security::SecurityError) -> ConfigError {
    ConfigError::Invalid(e.to_string())
}

/// The password of a `postgres://user:password@host/db` URL, if it has one.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

/// The URL with its password replaced by `****`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    redact(url, url)
}

/// `text` with the password of `url` (as written, and percent-decoded)
/// replaced by `****`.
pub fn redact(text: &str, url: &str) -> String {
    let Some(password) = url_password(url) else {
        return text.to_string();
    };
    let mut out = text.replace(password, "****");
    let decoded = percent_decode(password);
    if !decoded.is_empty() && decoded != password {
        out = out.replace(&decoded, "****");
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl MonitorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: MonitorConfig = config_file::load(path)?;
        config.validate()?;
        if config
            .database_url
            .as_deref()
            .is_some_and(|u| url_password(u).is_some())
        {
            // The file holds the database password.
            security::check_not_world_readable(path).map_err(security_error)?;
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: MonitorConfig = config_file::parse(text, Path::new("<config>"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.is_some() && self.database_url_file.is_some() {
            return Err(ConfigError::Invalid(
                "set only one of database_url and database_url_file".into(),
            ));
        }
        for (key, value) in [
            ("node_timeout", self.node_timeout),
            ("postgres_restart_timeout", self.postgres_restart_timeout),
            ("health_check_interval", self.health_check_interval),
            ("health_check_timeout", self.health_check_timeout),
            ("fence_margin", self.fence_margin),
            ("lease_timeout", self.lease_timeout),
        ] {
            if value > MAX_DURATION {
                return Err(ConfigError::Invalid(format!(
                    "{key} ({}) is longer than {}: give a shorter duration",
                    humantime::format_duration(value),
                    humantime::format_duration(MAX_DURATION)
                )));
            }
        }
        if self.health_check_interval.is_zero() || self.node_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "node_timeout and health_check_interval must be greater than zero".into(),
            ));
        }
        if self.postgres_restart_timeout < self.node_timeout {
            return Err(ConfigError::Invalid(format!(
                "postgres_restart_timeout ({}) must be at least node_timeout ({}): a keeper restarting its PostgreSQL must not get less time than a silent one",
                humantime::format_duration(self.postgres_restart_timeout),
                humantime::format_duration(self.node_timeout)
            )));
        }
        if self.lease_timeout < 2 * self.health_check_interval {
            return Err(ConfigError::Invalid(format!(
                "lease_timeout ({}) must be at least twice health_check_interval ({}): the lease is renewed every interval, and one late renewal must not lose it",
                humantime::format_duration(self.lease_timeout),
                humantime::format_duration(self.health_check_interval)
            )));
        }
        if !(MIN_EVENT_RETENTION..=MAX_EVENT_RETENTION).contains(&self.event_retention) {
            return Err(ConfigError::Invalid(format!(
                "event_retention ({}) must be between {} and {}",
                humantime::format_duration(self.event_retention),
                humantime::format_duration(MIN_EVENT_RETENTION),
                humantime::format_duration(MAX_EVENT_RETENTION)
            )));
        }
        if let Some(url) = &self.advertise_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 255 {
                return Err(ConfigError::Invalid(format!(
                    "advertise_url {} is not a URL: give the address keepers use, like https://monitor1:7430",
                    crate::names::quote(url)
                )));
            }
        }
        if !(MIN_MAX_MESSAGE_BYTES..=MAX_MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return Err(ConfigError::Invalid(format!(
                "max_message_bytes {} is not between {MIN_MAX_MESSAGE_BYTES} and {MAX_MAX_MESSAGE_BYTES}",
                self.max_message_bytes
            )));
        }
        Ok(())
    }

    /// How the monitor serves gRPC: TLS unless `plaintext = true`; checked
    /// without reading a file (the shipped examples are checked with it).
    pub fn transport_mode(&self) -> Result<TransportMode, ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        let tls_keys = self.tls_cert_file.is_some()
            || self.tls_key_file.is_some()
            || self.tls_client_ca_file.is_some();
        if self.plaintext {
            if tls_keys {
                return bad("plaintext = true cannot go with tls_cert_file, tls_key_file or tls_client_ca_file: remove one or the other");
            }
            if self.token_file.is_some() {
                return bad("token_file needs TLS (a token sent in plaintext can be read on the network): set tls_cert_file and tls_key_file instead of plaintext = true");
            }
            return Ok(TransportMode::Plaintext);
        }
        if self.tls_cert_file.is_none() || self.tls_key_file.is_none() {
            return bad("the monitor serves gRPC over TLS: set tls_cert_file and tls_key_file (`pgpilot-monitor gen-certs` makes a throw-away set), or plaintext = true on a network you trust");
        }
        Ok(TransportMode::Tls {
            client_certs: self.tls_client_ca_file.is_some(),
            token: self.token_file.is_some(),
        })
    }

    /// [`MonitorConfig::transport_mode`] with its files read: the key and
    /// token files must not be world-readable. A token in `PGPILOT_TOKEN`
    /// turns the token mode on when no `token_file` is set.
    pub fn transport(&self) -> Result<Transport, ConfigError> {
        let mut mode = self.transport_mode()?;
        let token = match mode {
            TransportMode::Plaintext => {
                if std::env::var_os(security::TOKEN_ENV).is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "{} is set but the monitor runs with plaintext = true: a token needs TLS; unset it or configure tls_cert_file and tls_key_file",
                        security::TOKEN_ENV
                    )));
                }
                None
            }
            TransportMode::Tls { .. } => {
                security::load_token(self.token_file.as_deref()).map_err(security_error)?
            }
        };
        if let TransportMode::Tls { client_certs, .. } = mode {
            mode = TransportMode::Tls {
                client_certs,
                token: token.is_some(),
            };
        }
        let identity = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some((
                security::read(cert).map_err(security_error)?,
                security::read_secret(key).map_err(security_error)?,
            )),
            _ => None,
        };
        let client_ca = self
            .tls_client_ca_file
            .as_deref()
            .map(security::read)
            .transpose()
            .map_err(security_error)?;
        Ok(Transport {
            mode,
            identity,
            client_ca,
            token,
        })
    }

    /// The database URL from the config, its file, or the environment.
    pub fn resolve_database_url(&self) -> Result<String, ConfigError> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        if let Some(path) = &self.database_url_file {
            let text = security::read_secret(path).map_err(security_error)?;
            return Ok(text.trim().to_string());
        }
        std::env::var(DATABASE_URL_ENV).map_err(|_| {
            ConfigError::Invalid(format!(
                "no monitor database configured: set database_url or database_url_file in the config, or {DATABASE_URL_ENV}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply() {
        let c = MonitorConfig::parse("database_url = \"postgres://x@127.0.0.1/m\"").unwrap();
        assert_eq!(c.node_timeout, DEFAULT_NODE_TIMEOUT);
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn the_lease_outlasts_two_renewals() {
        let c = MonitorConfig::parse("").unwrap();
        assert_eq!(c.lease_timeout, DEFAULT_LEASE_TIMEOUT);
        assert!(DEFAULT_LEASE_TIMEOUT >= 2 * DEFAULT_HEALTH_CHECK_INTERVAL);
        let err = MonitorConfig::parse("lease_timeout = \"600ms\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice health_check_interval"), "{err}");
        let err = MonitorConfig::parse("advertise_url = \"monitor1:7430\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://monitor1:7430"), "{err}");
        let c = MonitorConfig::parse("event_retention = \"30days\"").unwrap();
        assert_eq!(c.event_retention, Duration::from_secs(30 * 24 * 3600));
        assert_eq!(
            MonitorConfig::parse("").unwrap().event_retention,
            DEFAULT_EVENT_RETENTION
        );
        let err = MonitorConfig::parse("event_retention = \"1m\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("event_retention"), "{err}");
        let c = MonitorConfig::parse("advertise_url = \"https://m1:7430\"").unwrap();
        assert_eq!(c.advertise_url.as_deref(), Some("https://m1:7430"));
    }

    #[test]
    fn durations_are_human_readable() {
        let c = MonitorConfig::parse("node_timeout = \"3s\"\nhealth_check_interval = \"250ms\"")
            .unwrap();
        assert_eq!(c.node_timeout, Duration::from_secs(3));
        assert_eq!(c.health_check_interval, Duration::from_millis(250));
    }

    #[test]
    fn postgres_restart_timeout_is_at_least_node_timeout() {
        let c = MonitorConfig::parse("").unwrap();
        assert_eq!(c.postgres_restart_timeout, DEFAULT_POSTGRES_RESTART_TIMEOUT);
        assert!(DEFAULT_POSTGRES_RESTART_TIMEOUT >= DEFAULT_NODE_TIMEOUT);
        let c = MonitorConfig::parse("postgres_restart_timeout = \"1m\"").unwrap();
        assert_eq!(c.postgres_restart_timeout, Duration::from_secs(60));
        let err = MonitorConfig::parse("postgres_restart_timeout = \"1s\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("postgres_restart_timeout (1s) must be at least node_timeout (2s)"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = MonitorConfig::parse("node_timeout = \"30s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres_restart_timeout"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = MonitorConfig::parse("colour = \"blue\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn bad_duration_is_refused() {
        let err = MonitorConfig::parse("node_timeout = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("node_timeout") || err.contains("soon"),
            "{err}"
        );
    }

    #[test]
    fn database_url_sources() {
        let c = MonitorConfig::parse("database_url = \"u\"\ndatabase_url_file = \"/f\"");
        assert!(c.is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "postgres://a@127.0.0.1/m\n").unwrap();
        let c = MonitorConfig::parse(&format!("database_url_file = {:?}", f)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = c.resolve_database_url().unwrap_err().to_string();
        assert!(err.contains("chmod"), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            c.resolve_database_url().unwrap(),
            "postgres://a@127.0.0.1/m"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        let url = "postgres://pgpilot:s3cr%2Ft@127.0.0.1:5432/pgpilot?sslmode=disable";
        assert_eq!(
            redact_url(url),
            "postgres://pgpilot:****@127.0.0.1:5432/pgpilot?sslmode=disable"
        );
        assert_eq!(
            redact("password for s3cr/t was wrong", url),
            "password for **** was wrong"
        );
        let plain = "postgres://postgres@127.0.0.1:5432/pgpilot";
        assert_eq!(redact_url(plain), plain);
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("postgres://u:@h/d"), "postgres://u:@h/d");
    }

    #[test]
    fn metrics_listen_is_an_address() {
        let c = MonitorConfig::parse("").unwrap();
        assert_eq!(c.metrics_listen, None);
        let c = MonitorConfig::parse("metrics_listen = \"0.0.0.0:9187\"").unwrap();
        assert_eq!(c.metrics_listen, Some("0.0.0.0:9187".parse().unwrap()));
        let err = MonitorConfig::parse("metrics_listen = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("metrics_listen"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../compose/monitor.toml");
        let c = MonitorConfig::parse(text).unwrap();
        assert_eq!(
            c.transport_mode().unwrap(),
            TransportMode::Tls {
                client_certs: true,
                token: false
            }
        );
        for (text, url) in [
            (
                include_str!("../../compose/lab/monitor.toml"),
                "https://monitor:7430",
            ),
            (
                include_str!("../../compose/lab/monitor2.toml"),
                "https://monitor2:7430",
            ),
        ] {
            let lab = MonitorConfig::parse(text).unwrap();
            assert_eq!(
                lab.transport_mode().unwrap(),
                TransportMode::Tls {
                    client_certs: true,
                    token: false
                }
            );
            assert_eq!(lab.advertise_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn tls_is_required_unless_plaintext_is_explicit() {
        let err = MonitorConfig::parse("")
            .unwrap()
            .transport_mode()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("plaintext = true") && err.contains("tls_cert_file"),
            "{err}"
        );
        let c = MonitorConfig::parse("plaintext = true").unwrap();
        assert_eq!(c.transport_mode().unwrap(), TransportMode::Plaintext);
        for text in [
            "plaintext = true\ntls_cert_file = \"/c\"",
            "plaintext = true\ntoken_file = \"/t\"",
            "tls_cert_file = \"/c\"",
        ] {
            let err = MonitorConfig::parse(text)
                .unwrap()
                .transport_mode()
                .unwrap_err()
                .to_string();
            assert!(!err.contains('\n'), "{err}");
        }
        let c = MonitorConfig::parse(
            "tls_cert_file = \"/c\"\ntls_key_file = \"/k\"\ntoken_file = \"/t\"",
        )
        .unwrap();
        assert_eq!(
            c.transport_mode().unwrap(),
            TransportMode::Tls {
                client_certs: false,
                token: true
            }
        );
    }

    #[test]
    fn durations_are_at_most_a_day() {
        MonitorConfig::parse("postgres_restart_timeout = \"1d\"").unwrap();
        // 300,000 years overflows a timestamp once added to one.
        let err = MonitorConfig::parse("fence_margin = \"300000y\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("fence_margin (300000years) is longer than 1day"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
        let err = MonitorConfig::parse("health_check_interval = \"25h\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("health_check_interval"), "{err}");
    }

    #[test]
    fn max_message_bytes_is_bounded() {
        assert_eq!(
            MonitorConfig::parse("").unwrap().max_message_bytes,
            DEFAULT_MAX_MESSAGE_BYTES
        );
        let err = MonitorConfig::parse("max_message_bytes = 10")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_message_bytes"), "{err}");
    }

    #[test]
    fn a_world_readable_config_with_a_password_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("monitor.toml");
        std::fs::write(&f, "database_url = \"postgres://u:s3cret@h/d\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MonitorConfig::load(&f).unwrap_err().to_string();
        assert!(err.contains("chmod o-rwx"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        MonitorConfig::load(&f).unwrap();
        std::fs::write(&f, "database_url = \"postgres://u@h/d\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        MonitorConfig::load(&f).unwrap();
    }
}
