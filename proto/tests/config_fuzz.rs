//! Random bytes and random text into the TOML reader both programs use
//! (`config_file::parse` and `config_file::load`): no panic, and every
//! refusal a `ConfigError` that names its origin and says what is wrong
//! on one line.
//!
//! proptest prints the smallest failing input; the seed is fixed unless
//! `PROPTEST_RNG_SEED` is set.

use std::path::Path;

use pgpilot_proto::config_file::{self, ConfigError};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// The seed of a run without `PROPTEST_RNG_SEED`.
const SEED: u64 = 0x0070_726f_746f;

fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(SEED);
    }
    c.failure_persistence = None;
    c
}

/// A configuration of a few types, unknown keys refused, as both programs
/// declare theirs.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Sample {
    name: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    list: Vec<String>,
}

fn refusal(e: &ConfigError, origin: &str) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!text.contains('\n'), "an error of several lines: {text:?}");
    match e {
        ConfigError::Parse { path, message } => {
            prop_assert_eq!(path.as_path(), Path::new(origin));
            prop_assert!(
                !message.trim().is_empty(),
                "a parse error without a message"
            );
        }
        ConfigError::Read { path, .. } => prop_assert_eq!(path.as_path(), Path::new(origin)),
        ConfigError::Invalid(m) => prop_assert!(!m.trim().is_empty()),
    }
    Ok(())
}

/// Text that is TOML-ish: keys, values, brackets, quotes, newlines.
fn tomlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("name = \"x\"\n".to_string()),
            Just("port = 70000\n".to_string()),
            Just("[table]\n".to_string()),
            Just("[[array]]\n".to_string()),
            Just("list = [\"a\", 1]\n".to_string()),
            Just("enabled = tru\n".to_string()),
            Just("\"\"\"".to_string()),
            Just("'''".to_string()),
            Just("= =\n".to_string()),
            Just("a.b.c = { d = [ { e = 1 } ] }\n".to_string()),
            Just("name = \"x\"\nname = \"y\"\n".to_string()),
            "[ -~]{0,20}",
            "\\PC{0,10}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn random_text_parses_or_is_refused_in_one_line(text in prop_oneof!["\\PC{0,400}", tomlish()]) {
        for result in [
            config_file::parse::<Sample>(&text, Path::new("x.toml")).map(|_| ()),
            config_file::parse::<toml::Table>(&text, Path::new("x.toml")).map(|_| ()),
        ] {
            if let Err(e) = result {
                refusal(&e, "x.toml")?;
            }
        }
    }

    #[test]
    fn random_files_are_read_or_refused_in_one_line(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let path = dir.path().join("random.toml");
        std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if let Err(e) = config_file::load::<Sample>(&path) {
            refusal(&e, &path.display().to_string())?;
            if std::str::from_utf8(&bytes).is_err() {
                prop_assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
            }
        }
    }
}
