//! PostgreSQL's write-ahead-log position (LSN) and the names a node goes by
//! in replication: facts of the protocol that the monitor, the keeper, the
//! simulation and the tests all read the same way.

use std::fmt;
use std::str::FromStr;

/// A WAL position, as PostgreSQL prints it (`16/B374D848`): the high and low
/// 32 bits in upper-case hexadecimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Text that is no LSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLsn(pub String);

impl fmt::Display for BadLsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an LSN (expected PostgreSQL's X/X notation, e.g. 16/B374D848)",
            self.0
        )
    }
}

impl std::error::Error for BadLsn {}

impl FromStr for Lsn {
    type Err = BadLsn;

    /// Parses PostgreSQL's notation; surrounding white space is allowed,
    /// each half is 1 to 8 hexadecimal digits.
    fn from_str(s: &str) -> Result<Lsn, BadLsn> {
        let bad = || BadLsn(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let part = |p: &str| -> Option<u64> {
            if p.is_empty() || p.len() > 8 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u64::from_str_radix(p, 16).ok()
        };
        Ok(Lsn(
            (part(hi).ok_or_else(bad)? << 32) | part(lo).ok_or_else(bad)?
        ))
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Lsn {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(value: Lsn) -> u64 {
        value.0
    }
}

/// Parses PostgreSQL's LSN notation to a byte position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    s.parse::<Lsn>().ok().map(u64::from)
}

/// Formats a byte position in PostgreSQL's LSN notation.
pub fn format_lsn(lsn: u64) -> String {
    Lsn(lsn).to_string()
}

/// The `application_name` a node's standby connection carries, which is
/// also the name `synchronous_standby_names` and the fence set list it by.
pub fn application_name(node_id: i64) -> String {
    format!("pgpilot_{node_id}")
}

/// The physical replication slot a node's upstream keeps for it (the same
/// name as its application name).
pub fn slot_name(node_id: i64) -> String {
    application_name(node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_notation() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
        assert_eq!(parse_lsn(" 1/a \n"), Some((1 << 32) | 0xA));
        for lsn in [0, 1, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX] {
            assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "x/1",
            "1/1/1",
            "123456789/0",
            "-1/0",
            "+1/0",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
        assert!("zz"
            .parse::<Lsn>()
            .unwrap_err()
            .to_string()
            .contains("not an LSN"));
    }

    #[test]
    fn names_of_a_node() {
        assert_eq!(application_name(7), "pgpilot_7");
        assert_eq!(slot_name(7), "pgpilot_7");
    }
}
