//! Long work a keeper reports (a clone, a rewind: [`pb::WorkProgress`]),
//! in the words the keeper's log, `show-state` and `show-node` use.

use std::time::Duration;

use crate::pb;

/// Time left at the current rate, when both the total and the rate are
/// known.
pub fn time_left(w: &pb::WorkProgress) -> Option<Duration> {
    if w.total_bytes == 0 || w.rate_bytes_per_s == 0 {
        return None;
    }
    Some(Duration::from_secs(
        w.total_bytes.saturating_sub(w.done_bytes) / w.rate_bytes_per_s,
    ))
}

/// "clone from 10.0.0.5:5432: 1.2 GB of 3.0 GB (40 %), 110 MB/s, about 16s
/// left", and how long nothing moved once that is 10 s or more.
pub fn describe(w: &pb::WorkProgress) -> String {
    let mut text = format!("{} from {}: {}", w.work, w.upstream, bytes(w.done_bytes));
    if w.total_bytes > 0 {
        let percent =
            (u128::from(w.done_bytes.min(w.total_bytes)) * 100) / u128::from(w.total_bytes);
        text.push_str(&format!(" of {} ({percent} %)", bytes(w.total_bytes)));
    }
    if w.rate_bytes_per_s > 0 {
        text.push_str(&format!(", {}/s", bytes(w.rate_bytes_per_s)));
    }
    if let Some(left) = time_left(w) {
        text.push_str(&format!(
            ", about {} left",
            humantime::format_duration(left)
        ));
    }
    if w.idle_ms >= 10_000 {
        text.push_str(&format!(
            ", nothing moved for {}",
            humantime::format_duration(Duration::from_secs(w.idle_ms / 1000))
        ));
    }
    text
}

/// "1.5 KiB", "16.0 MiB", "3.0 TiB" (binary units, as PostgreSQL counts).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> pb::WorkProgress {
        pb::WorkProgress {
            work: "clone".into(),
            upstream: "10.0.0.5:5432".into(),
            done_bytes: 2 << 30,
            total_bytes: 3 << 30,
            rate_bytes_per_s: 100 << 20,
            elapsed_ms: 20_000,
            idle_ms: 0,
        }
    }

    #[test]
    fn work_reads_as_a_sentence() {
        assert_eq!(time_left(&sample()), Some(Duration::from_secs(10)));
        assert_eq!(
            describe(&sample()),
            "clone from 10.0.0.5:5432: 2.0 GiB of 3.0 GiB (66 %), 100.0 MiB/s, about 10s left"
        );
        let unknown = pb::WorkProgress {
            total_bytes: 0,
            rate_bytes_per_s: 0,
            idle_ms: 75_000,
            ..sample()
        };
        assert_eq!(time_left(&unknown), None);
        assert_eq!(
            describe(&unknown),
            "clone from 10.0.0.5:5432: 2.0 GiB, nothing moved for 1m 15s"
        );
        let huge = pb::WorkProgress {
            done_bytes: u64::MAX,
            total_bytes: u64::MAX,
            ..sample()
        };
        assert!(describe(&huge).contains("(100 %)"));
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(16 << 20), "16.0 MiB");
        assert_eq!(bytes(3 << 40), "3.0 TiB");
    }
}
