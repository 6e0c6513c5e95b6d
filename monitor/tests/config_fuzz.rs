//! Random bytes, random text and mutated valid files into the monitor's
//! configuration parser (`MonitorConfig::parse`): it never panics, every
//! refusal is a `ConfigError` of one line, and every configuration it
//! accepts keeps the rules it checks (and can be turned into a transport
//! mode without a panic).
//!
//! proptest prints the smallest failing input; the seed is fixed unless
//! `PROPTEST_RNG_SEED` is set.

use std::time::Duration;

use pgpilot_monitor::config::{
    MonitorConfig, MAX_DURATION, MAX_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES,
};
use proptest::prelude::*;

#[path = "../../tests/support/config_fuzz.rs"]
#[macro_use]
mod support;
use support::one_line;

/// The seed of a run without `PROPTEST_RNG_SEED`.
const SEED: u64 = 0x006d_6f6e_6974_6f72;

/// Valid files to start from: the shipped examples and every key set.
const BASES: [&str; 5] = [
    include_str!("../../compose/monitor.toml"),
    include_str!("../../compose/lab/monitor.toml"),
    include_str!("../../compose/lab/monitor2.toml"),
    "plaintext = true\n",
    r#"database_url = "postgres://pgpilot:secret@127.0.0.1:5432/pgpilot"
listen = "0.0.0.0:7430"
node_timeout = "3s"
postgres_restart_timeout = "1m"
health_check_interval = "250ms"
health_check_timeout = "2s"
fence_margin = "1s"
health_check_user = "monitor"
metrics_listen = "127.0.0.1:9187"
plaintext = false
tls_cert_file = "/etc/pgpilot/tls/monitor.crt"
tls_key_file = "/etc/pgpilot/tls/monitor.key"
tls_client_ca_file = "/etc/pgpilot/tls/ca.crt"
token_file = "/etc/pgpilot/tls/token"
max_message_bytes = 65536
"#,
];

const KEYS: [&str; 17] = [
    "database_url",
    "database_url_file",
    "listen",
    "node_timeout",
    "postgres_restart_timeout",
    "health_check_interval",
    "health_check_timeout",
    "fence_margin",
    "health_check_user",
    "metrics_listen",
    "plaintext",
    "tls_cert_file",
    "tls_key_file",
    "tls_client_ca_file",
    "token_file",
    "max_message_bytes",
    "colour",
];

/// TOML values of every type, valid and not, for any key.
fn value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "\"0s\"",
        "\"1ns\"",
        "\"500ms\"",
        "\"2s\"",
        "\"25h\"",
        "\"-1s\"",
        "\"1.5s\"",
        "\"soon\"",
        "\"\"",
        "\"18446744073709551615s\"",
        "\"18446744073709551616s\"",
        "\"584942417355y\"",
        "\"300000y\"",
        "\"1000000000000000000000ns\"",
        "0",
        "-1",
        "4095",
        "4096",
        "67108864",
        "67108865",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551616",
        "1e308",
        "nan",
        "-inf",
        "true",
        "false",
        "[]",
        "[1, \"a\", [true]]",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "\"127.0.0.1:7430\"",
        "\"[::1]:0\"",
        "\"127.0.0.1:99999\"",
        "\"localhost:7430\"",
        "\"a\\u0000b\"",
        "\"nœud 🐘\"",
        "'''multi\nline'''",
        "\"/dev/null\"",
        "\"postgres://u:p%2F@h/d\"",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => fixed,
        1 => "\\PC{0,40}".prop_map(|s| format!("{s:?}")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (1u64..100_000_000, prop::sample::select(vec!["ns", "ms", "s", "m", "h", "d", "y"]))
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
    ]
}

/// The parser's answer must be a config that keeps the rules, or one line.
fn check(text: &str) -> Result<(), TestCaseError> {
    match MonitorConfig::parse(text) {
        Ok(c) => {
            prop_assert!(!c.node_timeout.is_zero() && !c.health_check_interval.is_zero());
            prop_assert!(c.postgres_restart_timeout >= c.node_timeout);
            prop_assert!(
                (MIN_MAX_MESSAGE_BYTES..=MAX_MAX_MESSAGE_BYTES).contains(&c.max_message_bytes)
            );
            prop_assert!(!(c.database_url.is_some() && c.database_url_file.is_some()));
            for (key, d) in [
                ("node_timeout", c.node_timeout),
                ("postgres_restart_timeout", c.postgres_restart_timeout),
                ("health_check_interval", c.health_check_interval),
                ("health_check_timeout", c.health_check_timeout),
                ("fence_margin", c.fence_margin),
            ] {
                prop_assert!(d <= MAX_DURATION, "{key} of {d:?} was accepted");
            }
            // The deadlines the monitor computes from them stay representable.
            let margin = c.node_timeout + c.postgres_restart_timeout + c.fence_margin;
            prop_assert!(chrono_fits(margin + Duration::from_secs(3 * 3600)));
            prop_assert!(std::time::Instant::now()
                .checked_add(c.health_check_interval)
                .is_some());
            if let Err(e) = c.transport_mode() {
                one_line(&e)?;
            }
        }
        Err(e) => one_line(&e)?,
    }
    Ok(())
}

fn chrono_fits(d: Duration) -> bool {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| chrono::Utc::now().checked_add_signed(d))
        .is_some()
}

config_fuzz_properties!(check, BASES, KEYS, value, SEED);

/// Durations the monitor could not compute with (a panic in the state
/// machine or the health check's timer) are refused when the file is read.
#[test]
fn huge_durations_are_refused() {
    for key in [
        "node_timeout",
        "health_check_interval",
        "health_check_timeout",
        "fence_margin",
    ] {
        for value in ["25h", "300000y", "584942417355y"] {
            let text = format!("{key} = \"{value}\"\npostgres_restart_timeout = \"1d\"\n");
            let err = MonitorConfig::parse(&text).unwrap_err().to_string();
            // The largest does not even parse (more seconds than a u64 holds).
            assert!(
                err.contains(key) || err.contains(value),
                "{key} = {value}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
        }
    }
    MonitorConfig::parse("postgres_restart_timeout = \"24h\"\nfence_margin = \"1h\"").unwrap();
}
