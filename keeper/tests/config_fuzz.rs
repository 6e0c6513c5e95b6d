//! Random bytes, random text and mutated valid files into the keeper's
//! configuration parser (`KeeperConfig::parse`): it never panics, every
//! refusal is a `ConfigError` of one line, and every configuration it
//! accepts keeps the rules it checks.
//!
//! proptest prints the smallest failing input; the seed is fixed unless
//! `PROPTEST_RNG_SEED` is set.
//!
//! Known and not fixed yet, each held by an ignored test and left out of
//! the generator:
//! - a `heartbeat_interval` longer than half of `u64::MAX` seconds
//!   (`"300000000000y"`, `"18446744073709551615s"`) makes the parser panic
//!   (`heartbeat_interval * 2` overflows while it checks `fence_timeout`);
//! - a value holding a line break (a TOML multi-line string) is shown as
//!   it is in some refusals (`pgdata`, and `monitor` when TLS settings are
//!   given with an http:// URL), which then span several lines.

use std::time::Duration;

use pgpilot_keeper::config::{ConfigError, KeeperConfig};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// The seed of a run without `PROPTEST_RNG_SEED`.
const SEED: u64 = 0x6b65_6570_6572;

fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    // The failing input is printed; no file is written beside the sources.
    c.failure_persistence = None;
    c
}

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
heartbeat_interval = "100ms"
fence_timeout = "2s"
wal_sender_timeout = "3s"
wal_receiver_timeout = "3s"
register_timeout = "5m"
http_listen = "[::1]:8008"
"#,
];

const KEYS: [&str; 28] = [
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
    "listen_addresses",
    "trust_networks",
    "socket_dir",
    "state_file",
    "candidate_priority",
    "replication_quorum",
    "heartbeat_interval",
    "fence_timeout",
    "wal_sender_timeout",
    "wal_receiver_timeout",
    "register_timeout",
    "http_listen",
    "plaintext",
    "colour",
];

/// TOML values of every type, valid and not, for any key. No duration
/// above half of u64::MAX seconds and no line break (see the module
/// comment).
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

/// One change to a file.
#[derive(Debug, Clone)]
enum Mutation {
    Set { key: String, value: String },
    DeleteLine(usize),
    DuplicateLine(usize),
    InsertLine(usize, String),
    ReplaceByte(usize, u8),
    InsertBytes(usize, Vec<u8>),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![
        6 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
        1 => "\\PC{1,10}",
    ];
    prop_oneof![
        6 => (key, value()).prop_map(|(key, value)| Mutation::Set { key, value }),
        1 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        1 => (any::<usize>(), "\\PC{0,60}").prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::ReplaceByte(i, b)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::InsertBytes(i, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

/// Apply `mutations` to `base`; bytes that stop being UTF-8 are replaced
/// (the parser takes text; the file reader refuses such a file first).
fn mutate(base: &str, mutations: &[Mutation]) -> String {
    let mut text = base.to_string();
    for m in mutations {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::Set { key, value } => {
                let line = format!("{key} = {value}");
                match lines
                    .iter()
                    .position(|l| l.split('=').next().map(str::trim) == Some(key.as_str()))
                {
                    Some(i) => lines[i] = line,
                    None => lines.push(line),
                }
                text = lines.join("\n");
            }
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(at(*i, lines.len()));
                text = lines.join("\n");
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let line = lines[at(*i, lines.len())].clone();
                lines.push(line);
                text = lines.join("\n");
            }
            Mutation::InsertLine(i, line) => {
                lines.insert(at(*i, lines.len() + 1), line.clone());
                text = lines.join("\n");
            }
            Mutation::ReplaceByte(i, b) if !text.is_empty() => {
                let mut bytes = text.into_bytes();
                let i = at(*i, bytes.len());
                bytes[i] = *b;
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            Mutation::InsertBytes(i, b) => {
                let mut bytes = text.into_bytes();
                let i = at(*i, bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            Mutation::Truncate(i) => {
                let mut bytes = text.into_bytes();
                bytes.truncate(at(*i, bytes.len() + 1));
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            _ => {}
        }
    }
    text
}

/// The parser's answer must be a config that keeps the rules, or one line.
fn check(text: &str) -> Result<(), TestCaseError> {
    match KeeperConfig::parse(text) {
        Ok(c) => {
            prop_assert!(!c.name.is_empty() && c.name.len() <= 63);
            prop_assert!(c.port != 0 && c.advertised_port() != 0);
            prop_assert!(c.candidate_priority <= 100);
            prop_assert!(c.pgdata.is_absolute());
            prop_assert!(c.monitor.starts_with("http://") || c.monitor.starts_with("https://"));
            prop_assert!(c.heartbeat_interval >= Duration::from_millis(50));
            prop_assert!(c
                .heartbeat_interval
                .checked_mul(2)
                .is_some_and(|twice| c.fence_timeout >= twice));
            prop_assert!(c.wal_sender_timeout >= Duration::from_secs(1));
            prop_assert!(c.wal_receiver_timeout >= Duration::from_secs(1));
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

fn one_line(e: &ConfigError) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!text.trim().is_empty(), "an empty error: {e:?}");
    prop_assert!(!text.contains('\n'), "an error of several lines: {text:?}");
    Ok(())
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn random_bytes_are_refused_in_one_line(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn random_text_is_refused_in_one_line(text in "\\PC{0,300}") {
        check(&text)?;
    }

    #[test]
    fn mutated_valid_files_parse_or_are_refused_in_one_line(
        base in 0..BASES.len(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        check(&mutate(BASES[base], &mutations))?;
    }
}

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
