//! The configuration files the keeper owns or edits inside PGDATA:
//! rendering `pgpilot.conf` (with postgresql.conf and conninfo quoting),
//! the include line in postgresql.conf, the settings removed from
//! postgresql.auto.conf, the keeper's block of pg_hba.conf, standby.signal.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use pgpilot_proto::delay;
use tracing::{info, warn};

use super::{
    io_error, ManagedConfig, PgController, PgError, PostgresTls, INCLUDE_LINE, PGPILOT_CONF,
    STANDBY_SIGNAL,
};
use crate::access::{self, HbaRules};
use crate::durable::{fsync_dir, write_atomic};

/// Parameters that postgresql.auto.conf must not set: it is read after
/// postgresql.conf (and so after pgpilot.conf) and would override ours.
/// `pg_basebackup -R` and `ALTER SYSTEM` are the usual sources.
pub(super) const AUTO_CONF_FORBIDDEN: &[&str] = &[
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_min_apply_delay",
];

impl PostgresTls {
    /// The libpq connection options for an upstream.
    fn conninfo(&self) -> String {
        format!(
            " sslmode=verify-full sslrootcert={}",
            conninfo_value(&self.ca_file.to_string_lossy())
        )
    }
}

impl PgController {
    pub(super) async fn write_config(&self, config: &ManagedConfig) -> Result<bool, PgError> {
        self.require_cluster("write pgpilot.conf")?;
        let pgdata = &self.settings.pgdata;
        let passfile = self.settings.passfile();
        let replication = ReplicationLogin {
            user: &self.settings.replication_user,
            passfile: self
                .settings
                .replication_password
                .as_ref()
                .map(|_| passfile.as_path()),
            tls: self.settings.postgres_tls.as_ref(),
            restore_command: self.settings.restore_command.as_deref(),
        };
        let rendered = render_config(config, &self.settings.socket_dir, &replication);
        // The password file first: primary_conninfo names it.
        let mut changed = self.refresh_passfile()?;
        changed |= write_if_changed(&pgdata.join(PGPILOT_CONF), &rendered)?;
        changed |= ensure_include_line(&pgdata.join("postgresql.conf"))?;
        changed |= strip_auto_conf(&pgdata.join("postgresql.auto.conf"))?;
        changed |= ensure_hba(
            &pgdata.join("pg_hba.conf"),
            &self.hba_rules(config.group_hosts.as_deref().unwrap_or_default()),
            config.group_hosts.is_some(),
        )?;
        let signal = pgdata.join(STANDBY_SIGNAL);
        match (
            config.standby || config.standby_of.is_some(),
            signal.exists(),
        ) {
            (true, false) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&signal)
                    .map_err(|e| io_error(&signal, e))?;
                file.sync_all().map_err(|e| io_error(&signal, e))?;
                fsync_dir(pgdata)?;
                changed = true;
            }
            (false, true) => {
                std::fs::remove_file(&signal).map_err(|e| io_error(&signal, e))?;
                fsync_dir(pgdata)?;
                changed = true;
            }
            _ => {}
        }
        if changed {
            info!(
                standby_of = ?config.standby_of.as_ref().map(|u| format!("{}:{}", u.host, u.port)),
                synchronous_standby_names = %config.synchronous_standby_names,
                recovery_min_apply_delay = %delay::setting(config.apply_delay_ms),
                "postgres: configuration written"
            );
        }
        Ok(changed)
    }
}

/// How the nodes talk: the replication role a standby logs in as, the
/// password file when there is a password, and PostgreSQL's TLS when
/// configured (this server's certificate, the upstream checked).
pub(super) struct ReplicationLogin<'a> {
    pub(super) user: &'a str,
    pub(super) passfile: Option<&'a Path>,
    pub(super) tls: Option<&'a PostgresTls>,
    /// WAL from the archive when the upstream no longer has it.
    pub(super) restore_command: Option<&'a str>,
}

/// The content of `pgpilot.conf`.
pub(super) fn render_config(
    config: &ManagedConfig,
    socket_dir: &Path,
    login: &ReplicationLogin,
) -> String {
    let mut out = String::from(
        "# Written by the pgpilot keeper before every start; do not edit.\n\
         # Included from postgresql.conf; postgresql.auto.conf must not override it.\n",
    );
    let mut set = |name: &str, value: String| {
        out.push_str(name);
        out.push_str(" = ");
        out.push_str(&value);
        out.push('\n');
    };
    set("port", config.port.to_string());
    set("listen_addresses", quote_conf(&config.listen_addresses));
    set(
        "unix_socket_directories",
        quote_conf(&socket_dir.to_string_lossy()),
    );
    set("cluster_name", quote_conf(&config.application_name));
    set("wal_level", "replica".into());
    set("hot_standby", "on".into());
    set("wal_log_hints", "on".into());
    set("max_wal_senders", "16".into());
    set("max_replication_slots", "16".into());
    set("wal_keep_size", quote_conf("512MB"));
    set(
        "wal_sender_timeout",
        quote_conf(&format!("{}ms", millis_ceil(config.wal_sender_timeout))),
    );
    set(
        "wal_receiver_timeout",
        quote_conf(&format!("{}ms", millis_ceil(config.wal_receiver_timeout))),
    );
    set("wal_receiver_status_interval", quote_conf("1s"));
    set("wal_retrieve_retry_interval", quote_conf("500ms"));
    set("hot_standby_feedback", "on".into());
    set("recovery_target_timeline", quote_conf("latest"));
    // A delayed standby applies each commit only once it is this old; a
    // reload-level setting, always written so that an operator's own
    // value elsewhere never holds back a primary-to-be.
    set(
        "recovery_min_apply_delay",
        quote_conf(&delay::setting(config.apply_delay_ms)),
    );
    // A crash recovery's progress in the server log, once a second (the
    // keeper reports it; see `recovery`).
    set("log_startup_progress_interval", quote_conf("1s"));
    if let Some(command) = login.restore_command {
        set("restore_command", quote_conf(command));
    }
    // Without TLS between the nodes, ssl is left to postgresql.conf (an
    // operator's TLS for clients).
    if let Some(tls) = login.tls {
        set("ssl", "on".into());
        set(
            "ssl_cert_file",
            quote_conf(&tls.cert_file.to_string_lossy()),
        );
        set("ssl_key_file", quote_conf(&tls.key_file.to_string_lossy()));
    }
    set(
        "synchronous_standby_names",
        quote_conf(&config.synchronous_standby_names),
    );
    // The formation's parameters (set-parameter), after the defaults they
    // may override.
    for (name, value) in &config.parameters {
        set(name, quote_conf(value));
    }
    match &config.standby_of {
        Some(upstream) => {
            let mut conninfo = format!(
                "host={} port={} user={} application_name={} connect_timeout=2 \
                 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2",
                conninfo_value(&upstream.host),
                upstream.port,
                conninfo_value(login.user),
                conninfo_value(&config.application_name),
            );
            if let Some(passfile) = login.passfile {
                conninfo.push_str(" passfile=");
                conninfo.push_str(&conninfo_value(&passfile.to_string_lossy()));
            }
            if let Some(tls) = login.tls {
                conninfo.push_str(&tls.conninfo());
            }
            set("primary_conninfo", quote_conf(&conninfo));
            set("primary_slot_name", quote_conf(&upstream.slot_name));
        }
        None => {
            set("primary_conninfo", quote_conf(""));
            set("primary_slot_name", quote_conf(""));
        }
    }
    out
}

/// Rounded up, so that a sub-millisecond timeout never becomes 0 (= disabled).
pub(super) fn millis_ceil(d: Duration) -> u128 {
    d.as_micros().div_ceil(1000)
}

/// A postgresql.conf string literal: single quotes doubled, backslashes
/// doubled (the file parser reads backslash escapes), line breaks escaped.
pub(super) fn quote_conf(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A libpq conninfo value: bare when safe, else single-quoted with `\'` and `\\`.
pub(super) fn conninfo_value(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '\'' && c != '\\' && c != '=');
    if bare {
        return value.to_string();
    }
    let mut out = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Make sure postgresql.conf holds [`INCLUDE_LINE`] exactly once (appended
/// when missing, duplicates removed). Returns whether the file changed.
pub(super) fn ensure_include_line(path: &Path) -> Result<bool, PgError> {
    let content = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let mut seen = false;
    let mut out = String::with_capacity(content.len() + INCLUDE_LINE.len() + 2);
    for line in content.split_inclusive('\n') {
        if line.trim() == INCLUDE_LINE {
            if seen {
                continue;
            }
            seen = true;
        }
        out.push_str(line);
    }
    if !seen {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n# pgpilot's settings; keep this the last line.\n");
        out.push_str(INCLUDE_LINE);
        out.push('\n');
    }
    if out == content {
        return Ok(false);
    }
    write_atomic(path, out.as_bytes())?;
    Ok(true)
}

/// Remove from postgresql.auto.conf the settings pgpilot owns
/// ([`AUTO_CONF_FORBIDDEN`]). Returns whether the file changed.
pub(super) fn strip_auto_conf(path: &Path) -> Result<bool, PgError> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(io_error(path, err)),
    };
    let mut out = String::with_capacity(content.len());
    let mut removed = Vec::new();
    for line in content.split_inclusive('\n') {
        let name = conf_line_name(line);
        if AUTO_CONF_FORBIDDEN
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f))
        {
            removed.push(name.to_string());
            continue;
        }
        out.push_str(line);
    }
    if removed.is_empty() {
        return Ok(false);
    }
    warn!(
        removed = ?removed,
        "postgres: removed settings from postgresql.auto.conf that would override pgpilot.conf"
    );
    write_atomic(path, out.as_bytes())?;
    Ok(true)
}

/// Keep the keeper's block of pg_hba.conf in line with `rules`. Returns
/// whether the file changed.
/// When the group's hosts are not `known` yet, a block already there is
/// kept (one is written for `rules`' hosts otherwise).
pub(super) fn ensure_hba(path: &Path, rules: &HbaRules, known: bool) -> Result<bool, PgError> {
    let content = match std::fs::read_to_string(path) {
        Ok(content) => content,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(io_error(path, err)),
    };
    if !known && access::has_block(&content) {
        return Ok(false);
    }
    let out = access::render_hba(&content, rules);
    if out == content {
        return Ok(false);
    }
    write_atomic(path, out.as_bytes())?;
    info!(
        replication_user = %rules.replication_user,
        method = ?rules.method,
        group_hosts = ?rules.group_hosts,
        trust_networks = ?rules.trust_networks,
        "postgres: pg_hba.conf block written"
    );
    Ok(true)
}

/// The parameter name a postgresql.conf line sets ("" for comments/blank).
pub(super) fn conf_line_name(line: &str) -> &str {
    let line = line.trim_start();
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=' || c == '#')
        .unwrap_or(line.len());
    &line[..end]
}

/// Write `content` unless the file already holds exactly that.
pub(super) fn write_if_changed(path: &Path, content: &str) -> Result<bool, PgError> {
    match std::fs::read(path) {
        Ok(old) if old == content.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_error(path, err)),
    }
    write_atomic(path, content.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pg::Upstream;

    fn config(standby_of: Option<Upstream>, apply_delay_ms: u64) -> ManagedConfig {
        ManagedConfig {
            standby: standby_of.is_some(),
            port: 5432,
            listen_addresses: "*".into(),
            application_name: "pgpilot_3".into(),
            standby_of,
            synchronous_standby_names: String::new(),
            apply_delay_ms,
            wal_sender_timeout: Duration::from_secs(2),
            wal_receiver_timeout: Duration::from_secs(2),
            group_hosts: None,
            parameters: BTreeMap::new(),
        }
    }

    fn render(config: &ManagedConfig) -> String {
        let login = ReplicationLogin {
            user: "pgpilot_replication",
            passfile: None,
            tls: None,
            restore_command: None,
        };
        render_config(config, Path::new("/run/pg"), &login)
    }

    #[test]
    fn renders_the_apply_delay_of_a_delayed_standby_and_none_otherwise() {
        let upstream = Upstream {
            host: "10.0.0.1".into(),
            port: 5432,
            slot_name: "pgpilot_3".into(),
        };
        let delayed = render(&config(Some(upstream.clone()), 3_600_000));
        assert!(
            delayed
                .lines()
                .any(|l| l == "recovery_min_apply_delay = '3600000ms'"),
            "{delayed}"
        );
        let plain = render(&config(Some(upstream), 0));
        assert!(
            plain.lines().any(|l| l == "recovery_min_apply_delay = '0'"),
            "{plain}"
        );
        // Exactly once, so nothing else in the file can hold it back.
        assert_eq!(delayed.matches("recovery_min_apply_delay").count(), 1);
        // postgresql.auto.conf (ALTER SYSTEM) must not override it.
        assert!(AUTO_CONF_FORBIDDEN.contains(&"recovery_min_apply_delay"));
    }
}
