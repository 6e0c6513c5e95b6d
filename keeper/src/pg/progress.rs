//! Long work (a clone, a rewind) watched for progress instead of timed.
//!
//! A copy of hundreds of gigabytes takes hours; a fixed time limit either
//! kills it or waits for nothing when it hangs. pg_basebackup (`-P`) and
//! pg_rewind (`--progress`) print how many kB they copied of how many;
//! with the bytes their processes read and write (`/proc/<pid>/io`, the
//! program and its children: pg_basebackup's WAL streamer, pg_rewind's
//! single-user crash recovery) that is the work's progress. The work is
//! stopped only when none of it moved for `stall_timeout`.
//!
//! The pure part ([`parse_kb`], [`Watch`]) decides; the runner in
//! `programs` reads the program's output and `/proc`, and publishes
//! [`WorkProgress`] on a [`Board`] that the keeper's heartbeats and
//! metrics read.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgpilot_proto::pb;

/// What long work is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// pg_basebackup of the upstream into a fresh directory.
    Clone,
    /// pg_rewind against the upstream.
    Rewind,
    /// `clone_command`: a backup restored into a fresh directory.
    Restore,
    /// Crash recovery of the local server (redo of its own WAL).
    Recovery,
}

impl Work {
    pub fn as_str(self) -> &'static str {
        match self {
            Work::Clone => "clone",
            Work::Rewind => "rewind",
            Work::Restore => "restore",
            Work::Recovery => "recovery",
        }
    }
}

/// Where long work stands, as the keeper reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkProgress {
    pub work: Work,
    /// The upstream copied from ("host:port").
    pub upstream: String,
    /// Bytes copied so far, as the program counts them.
    pub done_bytes: u64,
    /// Bytes to copy in all, when the program has said (its estimate).
    pub total_bytes: Option<u64>,
    /// Since the work began.
    pub elapsed: Duration,
    /// Bytes per second over the last [`RATE_WINDOW`], once measured.
    pub rate_bytes_per_s: Option<u64>,
    /// Since anything last moved (0 while it moves).
    pub idle: Duration,
}

impl WorkProgress {
    /// "clone from 10.0.0.5:5432: 1.2 GiB of 3.0 GiB (40 %), 110.0 MiB/s,
    /// about 16s left" (see [`pgpilot_proto::work::describe`]).
    pub fn describe(&self) -> String {
        pgpilot_proto::work::describe(&self.to_wire())
    }

    /// As the monitor hears of it (with the keepalives).
    pub fn to_wire(&self) -> pb::WorkProgress {
        let ms = |d: Duration| d.as_millis().try_into().unwrap_or(u64::MAX);
        pb::WorkProgress {
            work: self.work.as_str().to_string(),
            upstream: self.upstream.clone(),
            done_bytes: self.done_bytes,
            total_bytes: self.total_bytes.unwrap_or(0),
            rate_bytes_per_s: self.rate_bytes_per_s.unwrap_or(0),
            elapsed_ms: ms(self.elapsed),
            idle_ms: ms(self.idle),
        }
    }

    /// "cloned 48.0 MiB from 10.0.0.5:5432 in 12s (4.0 MiB/s on average)".
    pub fn finished_text(&self) -> String {
        let verb = match self.work {
            Work::Clone => "cloned",
            Work::Rewind => "rewound, copying",
            Work::Restore => "restored",
            Work::Recovery => "crash recovery replayed",
        };
        let secs = self.elapsed.as_secs_f64().max(0.001);
        // Whole seconds, or milliseconds below ten seconds.
        let took = if self.elapsed < Duration::from_secs(10) {
            Duration::from_millis(self.elapsed.as_millis() as u64)
        } else {
            Duration::from_secs(self.elapsed.as_secs())
        };
        format!(
            "{verb} {} from {} in {} ({}/s on average)",
            pgpilot_proto::work::bytes(self.done_bytes),
            self.upstream,
            humantime::format_duration(took),
            pgpilot_proto::work::bytes((self.done_bytes as f64 / secs) as u64)
        )
    }
}

/// The `done/total kB` a progress line of pg_basebackup (`-P`) or
/// pg_rewind (`--progress`) starts with, in bytes:
/// `"  1234/56789 kB (2%), 0/1 tablespace"`, `"1234/56789 kB (2%) copied"`.
pub fn parse_kb(line: &str) -> Option<(u64, u64)> {
    let (numbers, _) = line.trim_start().split_once(" kB")?;
    let (done, total) = numbers.split_once('/')?;
    let done: u64 = done.trim().parse().ok()?;
    let total: u64 = total.trim().parse().ok()?;
    Some((done.saturating_mul(1024), total.saturating_mul(1024)))
}

/// The window the rate is measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Progress and stall of one piece of work, fed with samples.
#[derive(Debug)]
pub struct Watch {
    work: Work,
    upstream: String,
    started: Instant,
    /// When anything last moved.
    moved: Instant,
    /// The last bytes counted by the program and of I/O by its processes.
    done: u64,
    total: Option<u64>,
    io: u64,
    /// (when, done) over the last RATE_WINDOW.
    samples: VecDeque<(Instant, u64)>,
}

impl Watch {
    pub fn new(work: Work, upstream: String, now: Instant) -> Watch {
        Watch {
            work,
            upstream,
            started: now,
            moved: now,
            done: 0,
            total: None,
            io: 0,
            samples: VecDeque::from([(now, 0)]),
        }
    }

    /// The program said it copied `done` of `total` bytes.
    pub fn copied(&mut self, now: Instant, done: u64, total: u64) {
        if done != self.done {
            self.moved = now;
        }
        self.done = done;
        // pg_basebackup's total is an estimate that grows past it.
        self.total = Some(total.max(done));
        self.sample(now);
    }

    /// The processes' read and written bytes together, now. A restore
    /// (a backup tool, which prints no count pgpilot reads) is counted as
    /// half of what its processes read and wrote: a copy reads and writes
    /// each byte once.
    pub fn io(&mut self, now: Instant, io: u64) {
        if io != self.io {
            self.moved = now;
        }
        if self.work == Work::Restore && io > self.io {
            self.done += (io - self.io) / 2;
            self.sample(now);
        }
        self.io = io;
    }

    /// `done` bytes so far of work whose total is not known.
    pub fn copied_without_total(&mut self, now: Instant, done: u64) {
        if done != self.done {
            self.moved = now;
        }
        self.done = done;
        self.sample(now);
    }

    fn sample(&mut self, now: Instant) {
        self.samples.push_back((now, self.done));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    /// How long nothing moved.
    pub fn idle(&self, now: Instant) -> Duration {
        now.duration_since(self.moved)
    }

    pub fn progress(&self, now: Instant) -> WorkProgress {
        let rate = match (self.samples.front(), self.samples.back()) {
            (Some((t0, d0)), Some((t1, d1)))
                if t1.duration_since(*t0) >= Duration::from_secs(1) =>
            {
                Some((d1.saturating_sub(*d0) as f64 / t1.duration_since(*t0).as_secs_f64()) as u64)
            }
            _ => None,
        };
        WorkProgress {
            work: self.work,
            upstream: self.upstream.clone(),
            done_bytes: self.done,
            total_bytes: self.total,
            elapsed: now.duration_since(self.started),
            rate_bytes_per_s: rate,
            idle: self.idle(now),
        }
    }
}

/// Where the work under way stands, shared between the runner and the
/// readers (heartbeats, metrics), and the last work that finished, until
/// it is taken (for the keeper's note).
#[derive(Debug, Clone, Default)]
pub struct Board(Arc<Mutex<Slots>>);

#[derive(Debug, Default)]
struct Slots {
    now: Option<WorkProgress>,
    finished: Option<WorkProgress>,
}

impl Board {
    pub fn set(&self, progress: Option<WorkProgress>) {
        self.lock().now = progress;
    }

    /// Under way now; `None` when no long work runs.
    pub fn get(&self) -> Option<WorkProgress> {
        self.lock().now.clone()
    }

    /// The work under way finished as `last` says.
    pub fn finish(&self, last: WorkProgress) {
        let mut slots = self.lock();
        slots.now = None;
        slots.finished = Some(last);
    }

    pub fn take_finished(&self) -> Option<WorkProgress> {
        self.lock().finished.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_counts_half_of_its_processes_io_and_never_goes_back() {
        let t0 = Instant::now();
        let mut w = Watch::new(Work::Restore, "clone_command `cp`".into(), t0);
        w.io(t0 + Duration::from_secs(1), 2000);
        // A child exited: the tree's counters drop, the count does not.
        w.io(t0 + Duration::from_secs(2), 500);
        w.io(t0 + Duration::from_secs(3), 1500);
        let p = w.progress(t0 + Duration::from_secs(3));
        assert_eq!((p.done_bytes, p.total_bytes), (1500, None));
        assert_eq!(p.rate_bytes_per_s, Some(500));
        // A clone's count is pg_basebackup's own, not its I/O.
        let mut c = Watch::new(Work::Clone, "a:1".into(), t0);
        c.io(t0 + Duration::from_secs(1), 2000);
        assert_eq!(c.progress(t0 + Duration::from_secs(1)).done_bytes, 0);
    }

    #[test]
    fn progress_lines_of_both_programs_parse() {
        assert_eq!(
            parse_kb("  1234/56789 kB (2%), 0/1 tablespace"),
            Some((1234 * 1024, 56789 * 1024))
        );
        assert_eq!(
            parse_kb("30/30 kB (100%), 1/1 tablespace (...ata/base/1/2601)"),
            Some((30 * 1024, 30 * 1024))
        );
        assert_eq!(
            parse_kb("1024/2048 kB (50%) copied"),
            Some((1 << 20, 2 << 20))
        );
        for other in [
            "pg_basebackup: initiating base backup, waiting for checkpoint to complete",
            "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1",
            "",
            "x/y kB",
        ] {
            assert_eq!(parse_kb(other), None, "{other}");
        }
    }

    #[test]
    fn work_stalls_only_when_nothing_moves() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::new(Work::Clone, "a:5432".into(), t0);
        w.copied(t0 + s(1), 1000, 10_000);
        w.io(t0 + s(1), 50);
        assert_eq!(w.idle(t0 + s(1)), Duration::ZERO);
        // The program's count stands still while its processes still read
        // and write (the WAL streamer, a final fsync of what was written):
        // not a stall.
        w.copied(t0 + s(30), 1000, 10_000);
        w.io(t0 + s(30), 80);
        assert_eq!(w.idle(t0 + s(30)), Duration::ZERO);
        // Nothing moves any more.
        w.copied(t0 + s(60), 1000, 10_000);
        w.io(t0 + s(60), 80);
        assert_eq!(w.idle(t0 + s(60)), s(30));
        // It moves again: the idle time starts over.
        w.copied(t0 + s(61), 2000, 10_000);
        assert_eq!(w.idle(t0 + s(61)), Duration::ZERO);
    }

    #[test]
    fn finished_work_is_kept_until_taken() {
        let board = Board::default();
        let w = Watch::new(Work::Clone, "a:1".into(), Instant::now());
        let mut p = w.progress(Instant::now());
        board.set(Some(p.clone()));
        assert!(board.get().is_some());
        p.done_bytes = 48 << 20;
        p.elapsed = Duration::from_secs(12);
        board.finish(p);
        assert_eq!(board.get(), None);
        let done = board.take_finished().unwrap();
        assert_eq!(
            done.finished_text(),
            "cloned 48.0 MiB from a:1 in 12s (4.0 MiB/s on average)"
        );
        let quick = WorkProgress {
            elapsed: Duration::from_millis(380),
            ..done
        };
        assert_eq!(
            quick.finished_text(),
            "cloned 48.0 MiB from a:1 in 380ms (126.3 MiB/s on average)"
        );
        assert_eq!(board.take_finished(), None);
    }

    #[test]
    fn rate_time_left_and_description() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::new(Work::Clone, "10.0.0.5:5432".into(), t0);
        assert_eq!(w.progress(t0).rate_bytes_per_s, None);
        for i in 1..=20u64 {
            w.copied(t0 + s(i), i * 100_000_000, 3_000_000_000);
        }
        let p = w.progress(t0 + s(20));
        assert_eq!(p.rate_bytes_per_s, Some(100_000_000));
        assert_eq!(p.elapsed, s(20));
        assert_eq!(
            p.describe(),
            "clone from 10.0.0.5:5432: 1.9 GiB of 2.8 GiB (66 %), 95.4 MiB/s, about 10s left"
        );
        // A total estimate passed by the copy is raised to it.
        w.copied(t0 + s(21), 3_100_000_000, 3_000_000_000);
        assert_eq!(w.progress(t0 + s(21)).total_bytes, Some(3_100_000_000));
        let idle = WorkProgress {
            idle: s(75),
            rate_bytes_per_s: None,
            ..p
        };
        assert!(
            idle.describe().ends_with("nothing moved for 1m 15s"),
            "{}",
            idle.describe()
        );
    }
}
