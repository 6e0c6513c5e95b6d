//! Whether a joining node's existing data directory can be kept as a
//! standby instead of being replaced by a clone: a pure judgement of facts
//! read from the local control file and from the primary.
//!
//! A data directory belongs to the group when it holds the same database
//! system as the primary (system identifier), and its WAL is part of the
//! primary's history (see [`crate::timeline`]): then streaming from the
//! primary continues it. Three more things must hold before it is kept:
//! - it is not ahead of the primary on the primary's own timeline (it would
//!   hold WAL the primary never wrote);
//! - a directory that was not shut down cleanly is judged on its control
//!   file, which may lag its WAL: kept only on the primary's current
//!   timeline, where no later WAL can have forked;
//! - the primary still holds the WAL segment of the directory's last
//!   checkpoint's redo point, where its replay resumes (unless a
//!   `restore_command` can fetch older WAL from an archive): without it the
//!   standby would wait for WAL that no longer exists.
//!
//! A directory whose WAL forked from the primary's history is rewound
//! (like an old primary), and one that fails any other check is cloned.

use std::fmt;

use pgpilot_proto::lsn::format_lsn;

use crate::timeline::{divergence, Divergence, TimelineHistory, WalPosition};

/// What the local control file says (PostgreSQL stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalData {
    pub system_identifier: u64,
    /// The timeline and furthest LSN the control file knows.
    pub position: WalPosition,
    /// The last checkpoint's redo point: where replay starts again.
    pub redo_lsn: u64,
    /// "Database cluster state" is "shut down" or "shut down in recovery".
    pub clean_shutdown: bool,
}

/// What the primary says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamData {
    pub system_identifier: u64,
    pub history: TimelineHistory,
    /// pg_current_wal_lsn().
    pub current_lsn: u64,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it: configure it as a standby and start it.
    Adopt,
    /// Its WAL forked from the primary's history: pg_rewind it.
    Rewind(Divergence),
    /// Replace it by a clone, for this reason.
    Clone(NotAdopted),
}

/// Why a data directory is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotAdopted {
    OtherSystem {
        local: u64,
        upstream: u64,
    },
    AheadOfPrimary {
        timeline: u32,
        local: u64,
        upstream: u64,
    },
    UncleanOnOlderTimeline {
        timeline: u32,
        upstream_timeline: u32,
    },
    WalRemoved {
        segment: String,
        redo_lsn: u64,
    },
}

impl fmt::Display for NotAdopted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAdopted::OtherSystem { local, upstream } => write!(
                f,
                "it holds database system {local}, the primary {upstream}"
            ),
            NotAdopted::AheadOfPrimary {
                timeline,
                local,
                upstream,
            } => write!(
                f,
                "it holds WAL up to {} on timeline {timeline}, past the primary's {}",
                format_lsn(*local),
                format_lsn(*upstream)
            ),
            NotAdopted::UncleanOnOlderTimeline {
                timeline,
                upstream_timeline,
            } => write!(
                f,
                "it was not shut down cleanly and is on timeline {timeline} (the primary on {upstream_timeline}): its control file may not show all of its WAL"
            ),
            NotAdopted::WalRemoved { segment, redo_lsn } => write!(
                f,
                "the primary no longer holds WAL segment {segment}, where its replay resumes ({}), and no restore_command is configured",
                format_lsn(*redo_lsn)
            ),
        }
    }
}

/// The first verdict, before the WAL check: `Ok(None)` means "adoptable if
/// the primary still holds [`resume_segment`]".
pub fn judge(local: &LocalData, upstream: &UpstreamData) -> Result<Option<Verdict>, NotAdopted> {
    if local.system_identifier != upstream.system_identifier {
        return Err(NotAdopted::OtherSystem {
            local: local.system_identifier,
            upstream: upstream.system_identifier,
        });
    }
    let on_current = local.position.timeline == upstream.history.current;
    if !local.clean_shutdown && !on_current {
        return Err(NotAdopted::UncleanOnOlderTimeline {
            timeline: local.position.timeline,
            upstream_timeline: upstream.history.current,
        });
    }
    if let Some(d) = divergence(local.position, &upstream.history) {
        return Ok(Some(Verdict::Rewind(d)));
    }
    if on_current && local.position.lsn > upstream.current_lsn {
        return Err(NotAdopted::AheadOfPrimary {
            timeline: local.position.timeline,
            local: local.position.lsn,
            upstream: upstream.current_lsn,
        });
    }
    Ok(None)
}

/// The verdict once the WAL check is done (`segment_present`: the primary
/// holds [`resume_segment`]).
pub fn verdict(
    local: &LocalData,
    upstream: &UpstreamData,
    segment_size: u64,
    segment_present: bool,
    has_restore_command: bool,
) -> Verdict {
    match judge(local, upstream) {
        Err(why) => Verdict::Clone(why),
        Ok(Some(v)) => v,
        Ok(None) if segment_present || has_restore_command => Verdict::Adopt,
        Ok(None) => Verdict::Clone(NotAdopted::WalRemoved {
            segment: resume_segment(local.redo_lsn, &upstream.history, segment_size),
            redo_lsn: local.redo_lsn,
        }),
    }
}

/// The name of the primary's WAL file holding `lsn`: on the timeline of
/// its history that covers `lsn` (a switch point belongs to the next
/// timeline, whose first segment PostgreSQL copies from the old one).
pub fn resume_segment(lsn: u64, history: &TimelineHistory, segment_size: u64) -> String {
    let timeline = history
        .switches
        .iter()
        .find(|(_, switch)| lsn < *switch)
        .map(|(tli, _)| *tli)
        .unwrap_or(history.current);
    let segment_size = segment_size.max(1);
    let segno = lsn / segment_size;
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// The note of a data directory kept as a standby.
pub fn adopted_text(local: &LocalData, primary: &str) -> String {
    format!(
        "kept the existing data directory (database system {}, timeline {} at {}) as a standby of {primary} instead of cloning it",
        local.system_identifier,
        local.position.timeline,
        format_lsn(local.position.lsn)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_proto::lsn::parse_lsn;

    const SEG: u64 = 16 * 1024 * 1024;

    fn lsn(s: &str) -> u64 {
        parse_lsn(s).unwrap()
    }

    fn local(timeline: u32, at: &str, clean: bool) -> LocalData {
        LocalData {
            system_identifier: 7,
            position: WalPosition {
                timeline,
                lsn: lsn(at),
            },
            redo_lsn: lsn(at).saturating_sub(0x100),
            clean_shutdown: clean,
        }
    }

    fn upstream(current: u32, switches: &[(u32, &str)], at: &str) -> UpstreamData {
        UpstreamData {
            system_identifier: 7,
            history: TimelineHistory {
                current,
                switches: switches.iter().map(|(t, l)| (*t, lsn(l))).collect(),
            },
            current_lsn: lsn(at),
        }
    }

    #[test]
    fn a_standby_of_the_same_timeline_behind_the_primary_is_kept() {
        let v = verdict(
            &local(1, "0/5000000", true),
            &upstream(1, &[], "0/9000000"),
            SEG,
            true,
            false,
        );
        assert_eq!(v, Verdict::Adopt);
        // Exactly where the primary is: nothing to stream yet, still kept.
        let v = verdict(
            &local(1, "0/9000000", false),
            &upstream(1, &[], "0/9000000"),
            SEG,
            true,
            false,
        );
        assert_eq!(v, Verdict::Adopt);
    }

    #[test]
    fn another_database_system_is_cloned() {
        let mut other = local(1, "0/5000000", true);
        other.system_identifier = 8;
        let v = verdict(&other, &upstream(1, &[], "0/9000000"), SEG, true, false);
        assert_eq!(
            v,
            Verdict::Clone(NotAdopted::OtherSystem {
                local: 8,
                upstream: 7
            })
        );
        assert!(matches!(v, Verdict::Clone(why) if why.to_string().contains("database system 8")));
    }

    #[test]
    fn ahead_of_the_primary_on_its_timeline_is_cloned() {
        let v = verdict(
            &local(1, "0/A000000", true),
            &upstream(1, &[], "0/9000000"),
            SEG,
            true,
            false,
        );
        assert!(matches!(
            v,
            Verdict::Clone(NotAdopted::AheadOfPrimary { timeline: 1, .. })
        ));
    }

    #[test]
    fn wal_forked_from_the_history_is_rewound() {
        // An old primary: timeline 1 past the point where the primary left it.
        let v = verdict(
            &local(1, "0/3000100", true),
            &upstream(2, &[(1, "0/3000000")], "0/9000000"),
            SEG,
            true,
            false,
        );
        assert!(matches!(v, Verdict::Rewind(d) if d.fork_lsn == Some(lsn("0/3000000"))));
        // A sibling timeline.
        let v = verdict(
            &local(2, "0/3000100", true),
            &upstream(3, &[(1, "0/3000000")], "0/9000000"),
            SEG,
            true,
            false,
        );
        assert!(matches!(v, Verdict::Rewind(d) if d.fork_lsn.is_none()));
    }

    #[test]
    fn an_older_timeline_within_the_history_is_kept_when_shut_down_cleanly() {
        let up = upstream(2, &[(1, "0/3000000")], "0/9000000");
        assert_eq!(
            verdict(&local(1, "0/2000000", true), &up, SEG, true, false),
            Verdict::Adopt
        );
        // Not shut down cleanly: its WAL may run past the control file.
        assert!(matches!(
            verdict(&local(1, "0/2000000", false), &up, SEG, true, false),
            Verdict::Clone(NotAdopted::UncleanOnOlderTimeline {
                timeline: 1,
                upstream_timeline: 2
            })
        ));
    }

    #[test]
    fn removed_wal_is_cloned_unless_an_archive_can_restore_it() {
        let l = local(1, "0/5000000", true);
        let up = upstream(1, &[], "0/9000000");
        let v = verdict(&l, &up, SEG, false, false);
        match &v {
            Verdict::Clone(why @ NotAdopted::WalRemoved { segment, .. }) => {
                assert_eq!(segment, "000000010000000000000004");
                assert!(why.to_string().contains("no restore_command"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(verdict(&l, &up, SEG, false, true), Verdict::Adopt);
    }

    #[test]
    fn the_resume_segment_is_named_on_the_timeline_that_covers_it() {
        let up = upstream(3, &[(1, "0/3000000"), (2, "1/20000000")], "2/0");
        assert_eq!(
            resume_segment(lsn("0/2FFFFFF"), &up.history, SEG),
            "000000010000000000000002"
        );
        // A switch point belongs to the next timeline.
        assert_eq!(
            resume_segment(lsn("0/3000000"), &up.history, SEG),
            "000000020000000000000003"
        );
        assert_eq!(
            resume_segment(lsn("1/20000000"), &up.history, SEG),
            "000000030000000100000020"
        );
        // Other segment sizes (initdb --wal-segsize).
        assert_eq!(
            resume_segment(lsn("1/40000000"), &up.history, 1 << 30),
            "000000030000000100000001"
        );
    }

    #[test]
    fn the_note_says_what_was_kept() {
        let text = adopted_text(&local(2, "0/5000000", true), "node1 (127.0.0.1:5432)");
        assert_eq!(
            text,
            "kept the existing data directory (database system 7, timeline 2 at 0/5000000) as a standby of node1 (127.0.0.1:5432) instead of cloning it"
        );
    }
}
