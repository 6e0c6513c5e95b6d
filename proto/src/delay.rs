//! The apply delay of a delayed standby: PostgreSQL's
//! `recovery_min_apply_delay`, which the keeper writes for a standby. A
//! delayed standby keeps receiving WAL as fast as any other but applies
//! each commit only once it is that old, so a mistake made on the primary
//! (a dropped table, a bad update) can still be read from it for that long.
//!
//! It is never a failover candidate (its data is behind by design) and never
//! counts for synchronous commit (its acknowledgement says nothing about
//! what a reader of it would see); the monitor keeps its candidate priority
//! at 0 and its replication quorum off while the delay is above 0.

use std::time::Duration;

/// PostgreSQL's largest `recovery_min_apply_delay` (an int of
/// milliseconds): about 24 days.
pub const MAX_APPLY_DELAY_MS: u64 = i32::MAX as u64;

/// A delay as the monitor stores it, in whole milliseconds (rounded up, so
/// that a delay above 0 never becomes 0), or the sentence refusing it.
pub fn to_millis(delay: Duration) -> Result<u64, String> {
    let ms = delay.as_micros().div_ceil(1000);
    if ms > u128::from(MAX_APPLY_DELAY_MS) {
        return Err(too_long(delay));
    }
    Ok(ms as u64)
}

/// Refuse a delay in milliseconds that PostgreSQL would not take.
pub fn check_millis(ms: u64) -> Result<(), String> {
    if ms > MAX_APPLY_DELAY_MS {
        return Err(too_long(Duration::from_millis(ms)));
    }
    Ok(())
}

fn too_long(delay: Duration) -> String {
    format!(
        "an apply delay of {} is longer than PostgreSQL allows (recovery_min_apply_delay is at most {} ms, about 24 days): give a shorter one",
        humantime::format_duration(delay),
        MAX_APPLY_DELAY_MS
    )
}

/// A delay in milliseconds as people read it: "1h", "90s", "0s".
pub fn describe(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// The `recovery_min_apply_delay` value for a delay in milliseconds.
pub fn setting(ms: u64) -> String {
    if ms == 0 {
        "0".to_string()
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_milliseconds_within_postgres_limit() {
        assert_eq!(to_millis(Duration::ZERO), Ok(0));
        assert_eq!(to_millis(Duration::from_micros(1)), Ok(1));
        assert_eq!(to_millis(Duration::from_secs(3600)), Ok(3_600_000));
        assert_eq!(
            to_millis(Duration::from_millis(MAX_APPLY_DELAY_MS)),
            Ok(MAX_APPLY_DELAY_MS)
        );
        let err = to_millis(Duration::from_secs(30 * 24 * 3600)).unwrap_err();
        assert!(
            err.starts_with("an apply delay of 30days is longer"),
            "{err}"
        );
        assert!(check_millis(MAX_APPLY_DELAY_MS + 1).is_err());
        assert!(check_millis(0).is_ok());
    }

    #[test]
    fn delays_read_as_people_and_postgres_write_them() {
        assert_eq!(describe(0), "0s");
        assert_eq!(describe(3_600_000), "1h");
        assert_eq!(describe(90_500), "1m 30s 500ms");
        assert_eq!(setting(0), "0");
        assert_eq!(setting(3_600_000), "3600000ms");
    }
}
