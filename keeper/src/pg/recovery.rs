//! Crash recovery watched, not timed: while the keeper waits for a server
//! it started, the server's log says how far redo got, and that is
//! published on the [`Board`] like a clone's progress (`show-state`,
//! `/metrics`, and a `work_done` event at the end).
//!
//! PostgreSQL logs `redo starts at X/Y` when redo begins and, every
//! `log_startup_progress_interval` (the keeper sets 1 s), `redo in
//! progress, elapsed time: …, current LSN: X/Y` — during crash recovery
//! only, not while a standby streams — and `redo done at X/Y` at the end.
//! The bytes replayed are the current LSN minus the start; how much WAL is
//! left is not known (the end of WAL is found by reading it), so no total.
//! Nothing stops a recovery: the monitor decides, after
//! `postgres_restart_timeout`, whether to fail over instead.
//!
//! The pure part ([`Redo::fold`], [`parse_lsn`]) decides; [`LogTail`] reads
//! the lines the server appended.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::progress::{Board, Watch, Work};

/// Bytes of the log's end read back when the keeper starts watching a
/// server someone else started (to find its `redo starts at` line).
const TAIL_BACK: u64 = 1 << 20;

/// What the server log said of redo so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redo {
    pub start: Option<u64>,
    pub current: Option<u64>,
    pub done: bool,
}

impl Redo {
    /// Fold one log line in.
    pub fn fold(&mut self, line: &str) {
        if line.contains("LOG:  starting PostgreSQL ") {
            // A new start: what an earlier one replayed is not this one's.
            *self = Redo::default();
        } else if let Some(lsn) = after(line, "redo starts at ").and_then(parse_lsn) {
            *self = Redo {
                start: Some(lsn),
                current: Some(lsn),
                done: false,
            };
        } else if let Some(lsn) = after(line, "redo in progress, ")
            .and_then(|rest| after(rest, "current LSN: "))
            .and_then(parse_lsn)
        {
            self.current = Some(lsn);
        } else if let Some(lsn) = after(line, "redo done at ").and_then(parse_lsn) {
            self.current = Some(lsn);
            self.done = true;
        }
    }

    /// Bytes replayed since redo started.
    pub fn replayed(&self) -> Option<u64> {
        Some(self.current?.saturating_sub(self.start?))
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// `"1A/2B00C0D8"` (and whatever follows a space or comma) as a byte
/// position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let token = text.split(|c: char| c.is_whitespace() || c == ',').next()?;
    let (hi, lo) = token.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// `X/Y` of a byte position, as PostgreSQL writes it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The lines appended to a log file since an offset.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    pending: String,
}

impl LogTail {
    /// From the log's current end (a server about to be started).
    pub fn at_end(path: &Path) -> LogTail {
        let offset = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        LogTail {
            path: path.to_path_buf(),
            offset,
            pending: String::new(),
        }
    }

    /// From a little before the log's end (a server already starting).
    pub fn near_end(path: &Path) -> LogTail {
        let mut tail = LogTail::at_end(path);
        tail.offset = tail.offset.saturating_sub(TAIL_BACK);
        tail
    }

    /// Complete lines appended since the last call.
    pub fn read_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.pending.clear();
        }
        let mut buf = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.offset += buf.len() as u64;
        self.pending.push_str(&String::from_utf8_lossy(&buf));
        let mut lines = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            lines.push(line.trim_end().to_string());
        }
        lines
    }
}

/// A start being watched: the log read so far and the progress made.
#[derive(Debug)]
pub struct RecoveryWatch {
    tail: LogTail,
    redo: Redo,
    watch: Option<Watch>,
}

impl RecoveryWatch {
    pub fn new(tail: LogTail) -> RecoveryWatch {
        RecoveryWatch {
            tail,
            redo: Redo::default(),
            watch: None,
        }
    }

    /// Read what the log added; publish the progress once redo started.
    pub fn poll(&mut self, board: &Board, now: Instant) {
        for line in self.tail.read_lines() {
            self.redo.fold(&line);
        }
        let (Some(start), Some(replayed)) = (self.redo.start, self.redo.replayed()) else {
            return;
        };
        let watch = self.watch.get_or_insert_with(|| {
            Watch::new(
                Work::Recovery,
                format!("local WAL at {}", format_lsn(start)),
                now,
            )
        });
        watch.copied_without_total(now, replayed);
        board.set(Some(watch.progress(now)));
    }

    /// The server accepts connections: the recovery (if there was one that
    /// replayed anything) is finished, for the keeper's note.
    pub fn finish(mut self, board: &Board, now: Instant) {
        self.poll(board, now);
        match self.watch {
            Some(watch) if self.redo.replayed().unwrap_or(0) > 0 => {
                board.finish(watch.progress(now))
            }
            Some(_) => board.set(None),
            None => {}
        }
    }

    /// The server is gone: nothing to report any more.
    pub fn abandon(self, board: &Board) {
        if self.watch.is_some() {
            board.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lsns_parse_as_postgres_writes_them() {
        assert_eq!(parse_lsn("0/1A000028"), Some(0x1A00_0028));
        assert_eq!(parse_lsn("2/0 system usage"), Some(2 << 32));
        assert_eq!(parse_lsn("1/FF,"), Some((1 << 32) | 0xff));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("1FFFFFFFF/0"), None);
        assert_eq!(format_lsn(0x1_1A00_0028), "1/1A000028");
    }

    #[test]
    fn redo_is_followed_through_the_log_lines_of_a_crash_recovery() {
        let mut r = Redo::default();
        r.fold("2026-12-07 07:05:37.345 UTC [19153] LOG:  database system was interrupted; last known up at 2026-12-07 07:05:00 UTC");
        assert_eq!(r.replayed(), None);
        r.fold("2026-12-07 07:05:37.346 UTC [19153] LOG:  redo starts at 0/1A000028");
        assert_eq!(r.replayed(), Some(0));
        r.fold("2026-12-07 07:05:38.346 UTC [19153] LOG:  redo in progress, elapsed time: 1.00 s, current LSN: 0/2A000028");
        assert_eq!((r.replayed(), r.done), (Some(0x1000_0000), false));
        r.fold("2026-12-07 07:05:38.900 UTC [19153] LOG:  redo done at 0/2B000000 system usage: CPU: user: 0.50 s");
        assert_eq!((r.replayed(), r.done), (Some(0x1100_0000 - 0x28), true));
        // The next crash recovery starts over.
        r.fold("LOG:  redo starts at 0/30000000");
        assert_eq!((r.replayed(), r.done), (Some(0), false));
        // A new start forgets it (read back from the log's end, an older
        // start's recovery is not the one under way).
        r.fold("2026-12-07 07:06:00.001 UTC [19200] LOG:  starting PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu");
        assert_eq!(r, Redo::default());
    }

    #[test]
    fn the_tail_reads_only_complete_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut tail = LogTail::at_end(&path);
        assert!(tail.read_lines().is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"LOG:  redo starts at 0/100\nLOG:  redo in").unwrap();
        assert_eq!(tail.read_lines(), vec!["LOG:  redo starts at 0/100"]);
        std::io::Write::write_all(
            &mut f,
            b" progress, elapsed time: 1.00 s, current LSN: 0/300\n",
        )
        .unwrap();
        let board = Board::default();
        let mut watch = RecoveryWatch::new(LogTail::near_end(&path));
        let t0 = Instant::now();
        watch.poll(&board, t0);
        let shown = board.get().expect("progress published");
        assert_eq!((shown.work, shown.done_bytes), (Work::Recovery, 0x200));
        assert_eq!(shown.upstream, "local WAL at 0/100");
        watch.finish(&board, t0 + Duration::from_secs(1));
        assert_eq!(board.get(), None);
        assert_eq!(board.take_finished().map(|w| w.done_bytes), Some(0x200));
    }
}
