//! What the configuration fuzz tests of the keeper and the monitor share
//! (each includes this file as a module): the proptest settings, the
//! mutations of a valid file, the one-line check of a refusal, and the
//! properties themselves (`config_fuzz_properties!`).

use std::fmt::{Debug, Display};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;

/// `cases` cases with the fixed `seed`, unless `PROPTEST_RNG_SEED` is set.
pub fn proptest_config(cases: u32, seed: u64) -> ProptestConfig {
    let mut c = ProptestConfig::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(seed);
    }
    // The failing input is printed; no file is written beside the sources.
    c.failure_persistence = None;
    c
}

/// A refusal is one non-empty line.
pub fn one_line(e: &(impl Display + Debug)) -> Result<(), TestCaseError> {
    let text = e.to_string();
    prop_assert!(!text.trim().is_empty(), "an empty error: {e:?}");
    prop_assert!(!text.contains('\n'), "an error of several lines: {text:?}");
    Ok(())
}

/// One change to a file.
#[derive(Debug, Clone)]
pub enum Mutation {
    Set { key: String, value: String },
    DeleteLine(usize),
    DuplicateLine(usize),
    InsertLine(usize, String),
    ReplaceByte(usize, u8),
    InsertBytes(usize, Vec<u8>),
    Truncate(usize),
}

/// A change: mostly `keys` set to a `value`, else lines and bytes
/// deleted, repeated, inserted, replaced or cut off.
pub fn mutation(
    keys: &'static [&'static str],
    value: impl Strategy<Value = String> + 'static,
) -> impl Strategy<Value = Mutation> {
    let key = prop_oneof![
        6 => prop::sample::select(keys.to_vec()).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
        1 => "\\PC{1,10}",
    ];
    prop_oneof![
        6 => (key, value).prop_map(|(key, value)| Mutation::Set { key, value }),
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
pub fn mutate(base: &str, mutations: &[Mutation]) -> String {
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

/// The three properties, for a parser checked by `$check` (a config it
/// accepts keeps its rules, a refusal is one line): random bytes, random
/// text, and the files of `$bases` changed by mutations of `$keys` set to
/// `$value()`; 3,000 cases each.
#[macro_export]
macro_rules! config_fuzz_properties {
    ($check:ident, $bases:ident, $keys:ident, $value:ident, $seed:ident) => {
        proptest! {
            #![proptest_config($crate::support::proptest_config(3000, $seed))]

            #[test]
            fn random_bytes_are_refused_in_one_line(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
                $check(&String::from_utf8_lossy(&bytes))?;
            }

            #[test]
            fn random_text_is_refused_in_one_line(text in "\\PC{0,300}") {
                $check(&text)?;
            }

            #[test]
            fn mutated_valid_files_parse_or_are_refused_in_one_line(
                base in 0..$bases.len(),
                mutations in prop::collection::vec($crate::support::mutation(&$keys, $value()), 1..6),
            ) {
                $check(&$crate::support::mutate($bases[base], &mutations))?;
            }
        }
    };
}
