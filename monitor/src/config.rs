//! The monitor's TOML configuration. Unknown keys are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot_proto::config_file;
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
/// Connection timeout of one health check.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Added to the fence deadline: clock-rate drift and the time to stop PostgreSQL.
pub const DEFAULT_FENCE_MARGIN: Duration = Duration::from_millis(500);
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7430";
pub const DATABASE_URL_ENV: &str = "PGPILOT_DATABASE_URL";

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
    /// User name the health check presents to each node's PostgreSQL.
    #[serde(default = "d_hc_user")]
    pub health_check_user: String,
    /// Address of the Prometheus `/metrics` server, e.g. "127.0.0.1:9187";
    /// absent: no metrics server.
    #[serde(default, deserialize_with = "d_metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
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
fn d_hc_user() -> String {
    "postgres".into()
}

pub use pgpilot_proto::config_file::ConfigError;

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
        Ok(())
    }

    /// The database URL from the config, its file, or the environment.
    pub fn resolve_database_url(&self) -> Result<String, ConfigError> {
        if let Some(url) = &self.database_url {
            return Ok(url.clone());
        }
        if let Some(path) = &self.database_url_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
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
        MonitorConfig::parse(text).unwrap();
    }
}
