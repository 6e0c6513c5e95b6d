//! Kinds of the notes a keeper sends with its heartbeats
//! ([`crate::pb::KeeperNote`]): things it did on its own that an operator
//! should hear of. The monitor records each note as an event whose `kind`
//! is the note's.

/// A standby whose WAL diverged from its upstream's was rewound with
/// pg_rewind.
pub const STANDBY_REWOUND: &str = "standby_rewound";
/// A standby whose WAL diverged from its upstream's could not be rewound
/// and was cloned afresh with pg_basebackup.
pub const STANDBY_RECLONED: &str = "standby_recloned";
/// A clone or rewind finished: how much it copied, in how long.
pub const WORK_DONE: &str = "work_done";
/// A clone or rewind made no progress for the keeper's stall_timeout and
/// was stopped (the next attempt starts over).
pub const WORK_STALLED: &str = "work_stalled";
/// The first node of a group found a data directory it had not made (an
/// existing PostgreSQL) and kept it: its system identifier, and whether
/// PostgreSQL was restarted once to apply settings that need a restart.
pub const EXISTING_DATA_ADOPTED: &str = "existing_data_adopted";
/// PostgreSQL restarted by its keeper, as asked through the monitor
/// (`restart`): how long it took and which settings were pending.
pub const POSTGRES_RESTARTED: &str = "postgres_restarted";
/// The kind a monitor records a note of a kind it does not know under.
pub const UNKNOWN: &str = "keeper_note";

/// Every kind a keeper sends.
pub const ALL: [&str; 6] = [
    STANDBY_REWOUND,
    STANDBY_RECLONED,
    WORK_DONE,
    WORK_STALLED,
    EXISTING_DATA_ADOPTED,
    POSTGRES_RESTARTED,
];

/// The most notes one heartbeat carries (a keeper keeps no more).
pub const MAX_PER_HEARTBEAT: usize = 16;
/// The longest text of a note, in bytes (a longer one is cut).
pub const MAX_TEXT: usize = 2000;

/// The kind and text a monitor records for a note: a known kind as it is,
/// any other as [`UNKNOWN`] with the kind at the head of the text; the
/// text cut to [`MAX_TEXT`] bytes (at a character boundary).
pub fn recorded(kind: &str, text: &str) -> (&'static str, String) {
    let text = cut(text, MAX_TEXT);
    match ALL.iter().find(|k| **k == kind) {
        Some(k) => (k, text.to_string()),
        None => (UNKNOWN, format!("[{}] {text}", cut(kind, 64))),
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_kinds_are_kept_and_others_named_in_the_text() {
        assert_eq!(
            recorded(STANDBY_REWOUND, "rewound"),
            (STANDBY_REWOUND, "rewound".to_string())
        );
        assert_eq!(
            recorded("future_kind", "did a thing"),
            (UNKNOWN, "[future_kind] did a thing".to_string())
        );
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT);
        let (_, kept) = recorded(STANDBY_RECLONED, &text);
        assert!(kept.len() <= MAX_TEXT && kept.chars().all(|c| c == 'é'));
    }
}
