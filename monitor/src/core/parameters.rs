//! PostgreSQL parameters kept for a formation (`set-parameter`,
//! `reset-parameter`): checked here against the setting's row of the
//! monitor database's `pg_settings` before anything is stored, then sent
//! to every keeper, which writes them into `pgpilot.conf` and reloads. A
//! parameter that needs a restart then shows as pending, and
//! `restart --all --pending-only` applies it (see [`super::restart`]).
//!
//! Settings the keeper manages itself (ports, replication, the standby's
//! upstream) are refused; the replication defaults pgpilot writes
//! (`wal_level`, `max_wal_senders`, `max_replication_slots`,
//! `wal_keep_size`, `hot_standby_feedback`) may be changed, within what
//! replication needs.

use super::Refusal;

/// The event kinds of a parameter set and reset, and of a reload asked.
pub const SET: &str = "parameter_set";
pub const RESET: &str = "parameter_reset";
pub const RELOAD: &str = "reload_requested";

/// Settings the keeper writes itself, with why they cannot be set.
const MANAGED: &[(&str, &str)] = &[
    ("port", "the keeper's port setting"),
    ("listen_addresses", "the keeper's listen_addresses setting"),
    ("unix_socket_directories", "the keeper's socket directory"),
    ("cluster_name", "the node's name"),
    ("hot_standby", "standbys must serve reads"),
    ("wal_log_hints", "pg_rewind needs it"),
    (
        "wal_sender_timeout",
        "the keeper's wal_sender_timeout setting",
    ),
    (
        "wal_receiver_timeout",
        "the keeper's wal_receiver_timeout setting",
    ),
    (
        "wal_receiver_status_interval",
        "the fence reads standby feedback",
    ),
    (
        "wal_retrieve_retry_interval",
        "standbys retry their upstream quickly",
    ),
    (
        "recovery_target_timeline",
        "standbys follow the newest timeline",
    ),
    (
        "log_startup_progress_interval",
        "the keeper reads crash recovery's progress",
    ),
    ("restore_command", "the keeper's restore_command setting"),
    (
        "recovery_min_apply_delay",
        "it is each node's apply delay: use set-apply-delay",
    ),
    ("ssl", "the keeper's TLS settings"),
    ("ssl_cert_file", "the keeper's TLS settings"),
    ("ssl_key_file", "the keeper's TLS settings"),
    (
        "synchronous_standby_names",
        "the monitor sets it from the group's state",
    ),
    (
        "primary_conninfo",
        "the monitor names each standby's upstream",
    ),
    (
        "primary_slot_name",
        "the monitor names each standby's upstream",
    ),
    ("data_directory", "the keeper's pgdata setting"),
    ("config_file", "the keeper's pgdata setting"),
    ("hba_file", "the keeper writes pg_hba.conf"),
    ("ident_file", "the keeper's pgdata setting"),
];

/// A setting as the monitor database's `pg_settings` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    /// bool, enum, integer, real or string.
    pub vartype: String,
    /// The unit values without one are read in (`8kB`, `ms`, …).
    pub unit: Option<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub enumvals: Vec<String>,
    /// internal, postmaster, sighup, …
    pub context: String,
}

/// Check `value` for setting `name` (`setting` is its `pg_settings` row,
/// `None` when the server has no such setting; `server` names that
/// server's version). The value to store.
pub fn check(
    name: &str,
    value: &str,
    setting: Option<&Setting>,
    server: &str,
) -> Result<String, Refusal> {
    let bad = |why: String| Refusal::BadParameterValue {
        name: name.into(),
        value: value.into(),
        why,
    };
    // Setting names are case-insensitive (pg_settings spells TimeZone).
    if let Some((_, why)) = MANAGED.iter().find(|(m, _)| m.eq_ignore_ascii_case(name)) {
        return Err(Refusal::ManagedParameter {
            name: name.into(),
            why: (*why).into(),
        });
    }
    let Some(s) = setting else {
        return Err(Refusal::UnknownParameter {
            name: name.into(),
            server: server.into(),
        });
    };
    if s.context == "internal" {
        return Err(Refusal::ManagedParameter {
            name: name.into(),
            why: "it is read-only (fixed when PostgreSQL was built or initialised)".into(),
        });
    }
    if value.contains(['\n', '\r', '\0']) || value.len() > 4096 {
        return Err(bad("a value is one line of at most 4096 bytes".into()));
    }
    let value = match s.vartype.as_str() {
        "bool" => bool_value(value).ok_or_else(|| bad("use on or off".into()))?,
        "enum" => {
            let lower = value.to_ascii_lowercase();
            if !s.enumvals.iter().any(|v| v.eq_ignore_ascii_case(&lower)) {
                return Err(bad(format!("use one of {}", s.enumvals.join(", "))));
            }
            lower
        }
        "integer" | "real" => {
            let n = in_base_unit(value, s.unit.as_deref()).map_err(bad)?;
            let range =
                |bound: &Option<String>| bound.as_deref().and_then(|b| b.parse::<f64>().ok());
            let (min, max) = (range(&s.min), range(&s.max));
            if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
                let unit = s
                    .unit
                    .as_deref()
                    .map(|u| format!(" {u}"))
                    .unwrap_or_default();
                return Err(bad(format!(
                    "it must lie between {} and {}{unit}",
                    s.min.as_deref().unwrap_or("-"),
                    s.max.as_deref().unwrap_or("-"),
                )));
            }
            value.trim().to_string()
        }
        _ => value.to_string(),
    };
    if name.eq_ignore_ascii_case("wal_level") && value == "minimal" {
        return Err(bad("streaming replication needs replica or logical".into()));
    }
    Ok(value)
}

/// Check that `name` is one of the formation's parameters `set` before a
/// reset (in any case); the name as stored.
pub fn check_reset<'a>(formation: &str, name: &str, set: &'a [String]) -> Result<&'a str, Refusal> {
    if let Some(stored) = set.iter().find(|n| n.eq_ignore_ascii_case(name)) {
        return Ok(stored);
    }
    Err(Refusal::ParameterNotSet {
        formation: formation.into(),
        name: name.into(),
        set: set.to_vec(),
    })
}

/// A boolean as PostgreSQL reads it, written `on` or `off`.
fn bool_value(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    let on = ["on", "true", "yes", "1", "t", "y"];
    let off = ["off", "false", "no", "0", "f", "n"];
    if on.contains(&v.as_str()) {
        Some("on".into())
    } else if off.contains(&v.as_str()) {
        Some("off".into())
    } else {
        None
    }
}

/// Bytes or milliseconds in one unit.
fn unit_factor(unit: &str) -> Option<(char, f64)> {
    Some(match unit {
        "B" => ('m', 1.0),
        "kB" => ('m', 1024.0),
        "8kB" => ('m', 8192.0),
        "16kB" => ('m', 16384.0),
        "32kB" => ('m', 32768.0),
        "64kB" => ('m', 65536.0),
        "MB" => ('m', 1024.0 * 1024.0),
        "16MB" => ('m', 16.0 * 1024.0 * 1024.0),
        "GB" => ('m', 1024.0 * 1024.0 * 1024.0),
        "TB" => ('m', 1024.0 * 1024.0 * 1024.0 * 1024.0),
        "us" => ('t', 0.001),
        "ms" => ('t', 1.0),
        "s" => ('t', 1000.0),
        "min" => ('t', 60_000.0),
        "h" => ('t', 3_600_000.0),
        "d" => ('t', 86_400_000.0),
        _ => return None,
    })
}

/// A number with an optional unit, in the setting's own unit `base`.
fn in_base_unit(value: &str, base: Option<&str>) -> Result<f64, String> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| "it does not start with a number".to_string())?;
    let unit = unit.trim();
    if unit.is_empty() {
        return Ok(number);
    }
    let base = base
        .and_then(unit_factor)
        .ok_or_else(|| "this setting takes a number without a unit".to_string())?;
    let given = unit_factor(unit).ok_or_else(|| format!("{unit:?} is not a unit"))?;
    if given.0 != base.0 {
        let kind = if base.0 == 'm' { "memory" } else { "time" };
        return Err(format!("use a {kind} unit"));
    }
    Ok(number * given.1 / base.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(vartype: &str, unit: Option<&str>, min: &str, max: &str) -> Setting {
        Setting {
            name: "x".into(),
            vartype: vartype.into(),
            unit: unit.map(String::from),
            min: Some(min.into()),
            max: Some(max.into()),
            enumvals: vec![],
            context: "user".into(),
        }
    }

    #[test]
    fn values_are_checked_as_postgresql_reads_them() {
        let work_mem = setting("integer", Some("kB"), "64", "2147483647");
        assert_eq!(
            check("work_mem", "8MB", Some(&work_mem), "15").unwrap(),
            "8MB"
        );
        assert_eq!(
            check("work_mem", "4096", Some(&work_mem), "15").unwrap(),
            "4096"
        );
        let low = check("work_mem", "1kB", Some(&work_mem), "15").unwrap_err();
        assert!(
            low.to_string().contains("between 64 and 2147483647 kB"),
            "{low}"
        );
        let unit = check("work_mem", "8ms", Some(&work_mem), "15").unwrap_err();
        assert!(unit.to_string().contains("memory unit"), "{unit}");
        let nan = check("work_mem", "lots", Some(&work_mem), "15").unwrap_err();
        assert!(
            nan.to_string().contains("does not start with a number"),
            "{nan}"
        );
        // A huge value is shown by its start only: the refusal stays one
        // sentence.
        let huge = "x".repeat(5000);
        let long = check("work_mem", &huge, Some(&work_mem), "15").unwrap_err();
        assert!(long.to_string().len() < 300, "{long}");

        let shared = setting("integer", Some("8kB"), "16", "1073741823");
        assert!(check("shared_buffers", "256MB", Some(&shared), "15").is_ok());
        assert!(check("shared_buffers", "64kB", Some(&shared), "15").is_err());

        let timeout = setting("integer", Some("ms"), "0", "2147483647");
        assert!(check("statement_timeout", "30s", Some(&timeout), "15").is_ok());
        assert!(check("statement_timeout", "30MB", Some(&timeout), "15").is_err());

        let flag = Setting {
            vartype: "bool".into(),
            ..setting("bool", None, "", "")
        };
        assert_eq!(check("jit", "TRUE", Some(&flag), "15").unwrap(), "on");
        assert!(check("jit", "maybe", Some(&flag), "15").is_err());

        let level = Setting {
            enumvals: vec!["minimal".into(), "replica".into(), "logical".into()],
            ..setting("enum", None, "", "")
        };
        assert_eq!(
            check("wal_level", "Logical", Some(&level), "15").unwrap(),
            "logical"
        );
        let minimal = check("wal_level", "minimal", Some(&level), "15").unwrap_err();
        assert!(
            minimal.to_string().contains("replica or logical"),
            "{minimal}"
        );
        assert!(check("wal_level", "archive", Some(&level), "15").is_err());

        let text = setting("string", None, "", "");
        assert!(check("application_name", "a\nb", Some(&text), "15").is_err());
    }

    #[test]
    fn unknown_managed_and_read_only_settings_are_refused() {
        let unknown = check("shared_bufers", "1GB", None, "15.4").unwrap_err();
        assert!(unknown.to_string().contains("15.4"), "{unknown}");
        assert!(check("Primary_Conninfo", "host=x", None, "15").is_err());
        let managed = check("primary_conninfo", "host=x", None, "15").unwrap_err();
        assert!(
            managed
                .to_string()
                .contains("the monitor names each standby"),
            "{managed}"
        );
        let delay = check("recovery_min_apply_delay", "1h", None, "15").unwrap_err();
        assert!(delay.to_string().contains("set-apply-delay"), "{delay}");
        let internal = Setting {
            context: "internal".into(),
            ..setting("integer", None, "0", "1")
        };
        assert!(check("block_size", "8192", Some(&internal), "15").is_err());
    }

    #[test]
    fn only_a_parameter_that_is_set_can_be_reset() {
        let set = vec!["work_mem".to_string(), "TimeZone".to_string()];
        assert!(check_reset("default", "work_mem", &set).is_ok());
        assert_eq!(check_reset("default", "timezone", &set), Ok("TimeZone"));
        let e = check_reset("default", "jit", &set).unwrap_err();
        assert!(e.to_string().contains("work_mem"), "{e}");
    }
}
