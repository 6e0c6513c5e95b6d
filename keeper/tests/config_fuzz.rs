//! Random bytes, random text and mutated valid files into the keeper's
//! configuration parser (`KeeperConfig::parse`): it never panics, every
//! refusal is a `ConfigError` of one line, and every configuration it
//! accepts keeps the rules it checks.
//!
//! proptest prints the smallest failing input; the seed is fixed unless
//! `PROPTEST_RNG_SEED` is set.
//!
//! Two refusals it once got wrong are held by their own tests below: a
//! `heartbeat_interval` too long to double, and a value holding a line
//! break shown as it is.

use std::time::Duration;

use pgpilot_keeper::config::KeeperConfig;
use proptest::prelude::*;

#[path = "../../tests/support/config_fuzz.rs"]
#[macro_use]
mod support;
use support::one_line;

/// The seed of a run without `PROPTEST_RNG_SEED`.
const SEED: u64 = 0x6b65_6570_6572;

/// Valid files to start from: the shipped examples and more keys set.
const BASES: [&str; 4] = [
    include_str!("../../compose/keeper.toml"),
    include_str!("../../compose/lab/node1.toml"),
    r#"name = "n"
host = "127.0.0.1"
port = 6001
pgdata = "/tmp/x/data"
monitor = "http://127.0.0.1:7430"
"#,
    r#"name = "node-2.b_c"
formation = "other"
host = "db2.example"
port = 5432
advertise_port = 15432
pgdata = "/var/lib/pgpilot/data"
monitor = "https://monitor.example:7430"
tls_ca_file = "/etc/pgpilot/tls/ca.crt"
tls_cert_file = "/etc/pgpilot/tls/keeper.crt"
tls_key_file = "/etc/pgpilot/tls/keeper.key"
tls_server_name = "monitor"
token_file = "/etc/pgpilot/tls/token"
pg_bin_dir = "/usr/lib/postgresql/15/bin"
pg_user = "postgres"
listen_addresses = "*"
trust_networks = ["samenet", "10.0.0.0/8", "fd00::/64"]
socket_dir = "/run/postgresql"
state_file = "/var/lib/pgpilot/state.json"
candidate_priority = 0
replication_quorum = false
apply_delay = "1h"
heartbeat_interval = "100ms"
fence_timeout = "2s"
wal_sender_timeout = "3s"
wal_receiver_timeout = "3s"
register_timeout = "5m"
http_listen = "[::1]:8008"
"#,
];

const KEYS: [&str; 34] = [
    "name",
    "formation",
    "host",
    "port",
    "advertise_port",
    "pgdata",
    "monitor",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "tls_server_name",
    "token_file",
    "pg_bin_dir",
    "pg_user",
    "replication_user",
    "replication_password_file",
    "postgres_tls_cert_file",
    "postgres_tls_key_file",
    "postgres_tls_ca_file",
    "listen_addresses",
    "trust_networks",
    "socket_dir",
    "state_file",
    "candidate_priority",
    "replication_quorum",
    "apply_delay",
    "heartbeat_interval",
    "fence_timeout",
    "wal_sender_timeout",
    "wal_receiver_timeout",
    "register_timeout",
    "http_listen",
    "plaintext",
    "colour",
];

/// TOML values of every type, valid and not, for any key.
fn value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "\"0s\"",
        "\"1ns\"",
        "\"49ms\"",
        "\"50ms\"",
        "\"500ms\"",
        "\"1s\"",
        "\"1500ms\"",
        "\"-1s\"",
        "\"soon\"",
        "\"\"",
        "\"100000000000y\"",
        "\"584942417355y\"",
        "\"18446744073709551616s\"",
        "0",
        "1",
        "-1",
        "100",
        "101",
        "65535",
        "65536",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "1e308",
        "nan",
        "true",
        "false",
        "[]",
        "[\"samenet\", \"10.0.0.0/33\", \"::/129\", \"x\"]",
        "[\"172.20.0.0/16\"]",
        "{ a = 1 }",
        "1979-05-27T07:32:00Z",
        "\"http://127.0.0.1:7430\"",
        "\"https://[::1]:7430\"",
        "[\"http://m1:7430\", \"http://m2:7430\"]",
        "[\"http://m1:7430\", \"https://m2:7430\"]",
        "[\"https://m1:7430\", \"https://M1:7430/\"]",
        "[\"https://m1:7430\", 7430]",
        "\"ftp://x\"",
        "\"http://\"",
        "\"127.0.0.1:8008\"",
        "\"localhost:8008\"",
        "\"/abs/path\"",
        "\"relative/path\"",
        "\"/\"",
        "\"a\\u0000b\"",
        "\"nœud 🐘\"",
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
    match KeeperConfig::parse(text) {
        Ok(c) => {
            prop_assert!(!c.name.is_empty() && c.name.len() <= 63);
            prop_assert!(c.port != 0 && c.advertised_port() != 0);
            prop_assert!(c.candidate_priority() <= 100);
            prop_assert!(
                c.apply_delay.is_zero() || (c.candidate_priority() == 0 && !c.replication_quorum())
            );
            prop_assert!(c.pgdata.is_absolute());
            prop_assert!(!c.monitors.is_empty());
            prop_assert!(c
                .monitors
                .iter()
                .all(|m| m.starts_with("http://") || m.starts_with("https://")));
            let tls = |m: &String| m.starts_with("https://");
            prop_assert!(c.monitors.iter().all(|m| tls(m) == tls(&c.monitors[0])));
            let distinct: std::collections::HashSet<String> =
                c.monitors.iter().map(|m| m.to_ascii_lowercase()).collect();
            prop_assert_eq!(distinct.len(), c.monitors.len());
            prop_assert!(c.heartbeat_interval >= Duration::from_millis(50));
            prop_assert!(c
                .heartbeat_interval
                .checked_mul(2)
                .is_some_and(|twice| c.fence_timeout >= twice));
            prop_assert!(c.wal_sender_timeout >= Duration::from_secs(1));
            prop_assert!(c.wal_receiver_timeout >= Duration::from_secs(1));
            let tls_files = [
                &c.postgres_tls_cert_file,
                &c.postgres_tls_key_file,
                &c.postgres_tls_ca_file,
            ];
            match c.postgres_tls() {
                Some(tls) => prop_assert!([tls.cert_file, tls.key_file, tls.ca_file]
                    .iter()
                    .all(|p| p.is_absolute())),
                None => prop_assert!(tls_files.iter().all(|f| f.is_none())),
            }
            // What the keeper derives from it does not panic either.
            let _ = (
                c.state_file(),
                c.socket_dir(),
                c.listen_addresses(),
                c.client_security(),
            );
        }
        Err(e) => one_line(&e)?,
    }
    Ok(())
}

config_fuzz_properties!(check, BASES, KEYS, value, SEED);

/// Durations too long to double are refused (`heartbeat_interval * 2` must not overflow).
#[test]
fn a_heartbeat_interval_of_300000000000_years_is_refused() {
    for value in ["300000000000y", "18446744073709551615s"] {
        let text = format!("{}heartbeat_interval = \"{value}\"\n", BASES[2]);
        let err = KeeperConfig::parse(&text).unwrap_err().to_string();
        assert!(err.contains("heartbeat_interval"), "{err}");
    }
}

/// Refusals quote values, so a line break in one stays on one line.
#[test]
fn refusals_of_values_with_a_line_break_fit_on_one_line() {
    let cases = [
        BASES[2].replace("\"/tmp/x/data\"", "'''relative\npath'''"),
        format!(
            "{}tls_ca_file = \"/ca.crt\"\n",
            BASES[2].replace("\"http://127.0.0.1:7430\"", "'''http://m\nx'''")
        ),
    ];
    for text in cases {
        let err = KeeperConfig::parse(&text).unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err:?}");
    }
}
