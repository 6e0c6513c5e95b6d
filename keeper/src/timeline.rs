//! Whether a standby's WAL diverged from its upstream's: a pure comparison
//! of timelines.
//!
//! A standby can follow an upstream only if everything it holds is part of
//! the upstream's history. The upstream's history is its current timeline
//! and, for each earlier timeline, the LSN where it switched away from it
//! (its `<tli>.history` file). A standby on timeline `t` holding WAL up to
//! `lsn` diverged when `t` is not the upstream's current timeline and
//! either `t` is not in the upstream's history at all, or `lsn` is past
//! the point where the upstream left `t`: the standby then holds WAL the
//! upstream never had (an asynchronous standby that received more than the
//! elected one, or any node after a forced election). Its WAL receiver
//! fails for ever ("requested starting point … is not in this server's
//! history"); only pg_rewind, or a fresh clone, brings it back.
//!
//! Exactly at the switch point is not a divergence: the switch point is
//! where the upstream's new timeline begins, the end of the last record
//! both share.

use std::fmt;

use pgpilot_proto::lsn::{format_lsn, parse_lsn};

/// Where this node's WAL ends: its timeline and the furthest LSN it holds
/// (received or replayed while it runs; from the control file when stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPosition {
    pub timeline: u32,
    pub lsn: u64,
}

/// An upstream's timeline history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimelineHistory {
    /// The timeline the upstream writes (or replays) now.
    pub current: u32,
    /// Each earlier timeline of its history and the LSN where the upstream
    /// switched away from it, oldest first (the lines of its history file).
    pub switches: Vec<(u32, u64)>,
}

/// How a standby's WAL diverged from its upstream's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    /// The standby's position.
    pub local: WalPosition,
    /// The upstream's current timeline.
    pub upstream_timeline: u32,
    /// Where the upstream left the standby's timeline; None when that
    /// timeline is not in the upstream's history at all.
    pub fork_lsn: Option<u64>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WalPosition { timeline, lsn } = self.local;
        match self.fork_lsn {
            Some(fork) => write!(
                f,
                "this standby holds WAL up to {} on timeline {timeline}, but the upstream (now on timeline {}) left timeline {timeline} at {}",
                format_lsn(lsn),
                self.upstream_timeline,
                format_lsn(fork)
            ),
            None => write!(
                f,
                "this standby is on timeline {timeline} (WAL up to {}), which is not in the history of the upstream (now on timeline {})",
                format_lsn(lsn),
                self.upstream_timeline
            ),
        }
    }
}

/// Whether `local` diverged from `upstream`'s history (see the module
/// comment). Unknown facts (timeline 0) never count as a divergence.
pub fn divergence(local: WalPosition, upstream: &TimelineHistory) -> Option<Divergence> {
    if local.timeline == 0 || upstream.current == 0 || local.timeline == upstream.current {
        return None;
    }
    let fork_lsn = upstream
        .switches
        .iter()
        .find(|(tli, _)| *tli == local.timeline)
        .map(|(_, lsn)| *lsn);
    let diverged = match fork_lsn {
        Some(fork) => local.lsn > fork,
        None => true,
    };
    diverged.then_some(Divergence {
        local,
        upstream_timeline: upstream.current,
        fork_lsn,
    })
}

/// The switch points of a timeline history file: one line per earlier
/// timeline, `<tli>\t<X/Y>\t<reason>`; blank lines and `#` comments are
/// skipped (PostgreSQL's `readTimeLineHistory` does the same). A line it
/// cannot read is an error: better no check than a wrong one.
pub fn parse_history(text: &str) -> Result<Vec<(u32, u64)>, String> {
    let mut switches = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let tli = fields.next().and_then(|f| f.parse::<u32>().ok());
        let lsn = fields.next().and_then(parse_lsn);
        match (tli, lsn) {
            (Some(tli), Some(lsn)) => switches.push((tli, lsn)),
            _ => return Err(format!("unreadable timeline history line: {line:?}")),
        }
    }
    Ok(switches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(timeline: u32, lsn: &str) -> WalPosition {
        WalPosition {
            timeline,
            lsn: parse_lsn(lsn).unwrap(),
        }
    }

    fn history(current: u32, switches: &[(u32, &str)]) -> TimelineHistory {
        TimelineHistory {
            current,
            switches: switches
                .iter()
                .map(|(t, l)| (*t, parse_lsn(l).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn the_same_timeline_never_diverged() {
        let up = history(2, &[(1, "0/3000000")]);
        assert_eq!(divergence(at(2, "0/3000000"), &up), None);
        assert_eq!(divergence(at(2, "5/0"), &up), None);
        assert_eq!(divergence(at(1, "0/100"), &history(1, &[])), None);
    }

    #[test]
    fn ahead_of_the_switch_point_diverged() {
        let up = history(2, &[(1, "0/3000000")]);
        let d = divergence(at(1, "0/3000028"), &up).unwrap();
        assert_eq!(d.fork_lsn, parse_lsn("0/3000000"));
        assert_eq!(d.upstream_timeline, 2);
        assert_eq!(
            d.to_string(),
            "this standby holds WAL up to 0/3000028 on timeline 1, but the upstream (now on timeline 2) left timeline 1 at 0/3000000"
        );
    }

    #[test]
    fn exactly_at_or_behind_the_switch_point_follows() {
        let up = history(2, &[(1, "0/3000000")]);
        assert_eq!(divergence(at(1, "0/3000000"), &up), None);
        assert_eq!(divergence(at(1, "0/2FFFFFF"), &up), None);
        assert_eq!(divergence(at(1, "0/0"), &up), None);
    }

    #[test]
    fn a_timeline_missing_from_the_history_diverged() {
        // A sibling timeline (another node promoted from timeline 1).
        let up = history(3, &[(1, "0/3000000")]);
        let d = divergence(at(2, "0/3000000"), &up).unwrap();
        assert_eq!(d.fork_lsn, None);
        assert!(d.to_string().contains("not in the history"), "{d}");
        // A standby on a later timeline than the upstream's.
        assert!(divergence(at(4, "0/100"), &history(3, &[(1, "0/1"), (2, "0/2")])).is_some());
        // An upstream without history (timeline 1) and a standby elsewhere.
        assert!(divergence(at(2, "0/100"), &history(1, &[])).is_some());
    }

    #[test]
    fn several_switches_are_each_checked_against_their_own_point() {
        let up = history(4, &[(1, "0/3000000"), (2, "0/5000000"), (3, "0/7000000")]);
        assert_eq!(divergence(at(1, "0/3000000"), &up), None);
        assert!(divergence(at(1, "0/3000001"), &up).is_some());
        // Past timeline 1's switch point but timeline 2 lasted longer.
        assert_eq!(divergence(at(2, "0/4FFFFFF"), &up), None);
        assert_eq!(divergence(at(2, "0/5000000"), &up), None);
        let d = divergence(at(2, "0/5000100"), &up).unwrap();
        assert_eq!(d.fork_lsn, parse_lsn("0/5000000"));
        assert_eq!(divergence(at(3, "0/7000000"), &up), None);
        assert!(divergence(at(3, "0/8000000"), &up).is_some());
        assert_eq!(divergence(at(4, "9/0"), &up), None);
    }

    #[test]
    fn unknown_facts_are_no_divergence() {
        let up = history(2, &[(1, "0/3000000")]);
        assert_eq!(divergence(at(0, "0/9000000"), &up), None);
        assert_eq!(divergence(at(1, "0/9000000"), &history(0, &[])), None);
    }

    #[test]
    fn history_files_are_parsed_like_postgres_does() {
        let text = "1\t0/3000100\tno recovery target specified\n\n# a comment\n2\t0/50000A8\tat restore point \"x\"\n";
        assert_eq!(
            parse_history(text).unwrap(),
            vec![
                (1, parse_lsn("0/3000100").unwrap()),
                (2, parse_lsn("0/50000A8").unwrap())
            ]
        );
        assert_eq!(parse_history("").unwrap(), vec![]);
        assert!(parse_history("1\tnot-an-lsn\treason\n").is_err());
        assert!(parse_history("x\t0/1\treason\n").is_err());
    }
}
