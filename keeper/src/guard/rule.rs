//! The fence guard's decisions, pure: which lease it holds (a restarted
//! keeper never extends it before the monitor answered), whether the fence
//! rule is armed, and when the guard has nothing left to guard. Times are
//! readings of one system-wide clock (CLOCK_BOOTTIME, see
//! [`super::wire::clock_now`]) passed in as arguments.

use std::time::Duration;

use pgpilot_proto::ReplicationState as S;

use crate::fence::fence_armed;

/// The lease as the guard holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardLease {
    /// The keeper had heard from the monitor when it sent this lease.
    /// An unconfirmed lease (a keeper that just started) counts from the
    /// keeper's start and names no standby, like the keeper's own.
    pub confirmed: bool,
    /// When the last heartbeat that got an answer was sent (clock reading).
    pub last_answer: Duration,
    /// The node's state; the rule applies on the primary side only.
    pub current: S,
    /// Application names of the standbys that count, and how many must stream.
    pub fence_set: Vec<String>,
    pub required: u32,
    /// The keeper's `fence_timeout`.
    pub fence_timeout: Duration,
}

impl GuardLease {
    /// When the lease runs out (clock reading).
    pub fn expires_at(&self) -> Duration {
        self.last_answer.saturating_add(self.fence_timeout)
    }
}

/// What a lease sent by a keeper did to the one the guard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adopted {
    /// The guard held none: this one is taken as it is.
    First,
    /// A confirmed lease replaced the held one (its clock never moves back).
    Renewed,
    /// An unconfirmed lease while one is held: ignored, so a restarted
    /// keeper does not extend the lease before the monitor answers it.
    Ignored,
}

/// The lease the guard holds after `incoming` arrives, and what happened.
/// The clock of the last answer only moves forward: a late message cannot
/// take back time the guard already counted.
pub fn adopt(held: Option<&GuardLease>, incoming: GuardLease) -> (GuardLease, Adopted) {
    match held {
        None => (incoming, Adopted::First),
        Some(held) if !incoming.confirmed => (held.clone(), Adopted::Ignored),
        Some(held) => {
            let last_answer = held.last_answer.max(incoming.last_answer);
            (
                GuardLease {
                    last_answer,
                    ..incoming
                },
                Adopted::Renewed,
            )
        }
    }
}

/// How long no keeper may be connected before a guard with nothing to
/// guard exits: room for a keeper to connect to the guard it just started,
/// or for a restarted keeper to come back to it.
pub const UNATTENDED_GRACE: Duration = Duration::from_secs(2);

/// Why the guard exits by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// No keeper ever handed it a lease.
    NoLease,
    /// The node is not on the primary side: nothing to fence.
    NotPrimarySide(S),
    /// No postmaster is alive: nothing takes writes.
    PostgresStopped,
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::NoLease => f.write_str("no keeper handed over a lease"),
            ExitReason::NotPrimarySide(s) => {
                write!(f, "the node is in {s}, not on the primary side")
            }
            ExitReason::PostgresStopped => f.write_str("PostgreSQL is not running"),
        }
    }
}

/// The guard's whole state: the lease it holds and its keepers.
#[derive(Debug, Clone)]
pub struct GuardState {
    lease: Option<GuardLease>,
    keepers: usize,
    /// Since when no keeper is connected (None while one is).
    unattended_since: Option<Duration>,
}

impl GuardState {
    /// A guard just started at `now`: no lease, no keeper yet.
    pub fn new(now: Duration) -> Self {
        GuardState {
            lease: None,
            keepers: 0,
            unattended_since: Some(now),
        }
    }

    pub fn lease(&self) -> Option<&GuardLease> {
        self.lease.as_ref()
    }

    pub fn keepers(&self) -> usize {
        self.keepers
    }

    pub fn keeper_connected(&mut self) {
        self.keepers += 1;
        self.unattended_since = None;
    }

    /// A keeper's connection closed (it stopped, or died): the lease is
    /// kept, and the guard goes on applying it.
    pub fn keeper_left(&mut self, now: Duration) {
        self.keepers = self.keepers.saturating_sub(1);
        if self.keepers == 0 {
            self.unattended_since = Some(now);
        }
    }

    /// A keeper sent `incoming`.
    pub fn receive(&mut self, incoming: GuardLease) -> Adopted {
        let (lease, adopted) = adopt(self.lease.as_ref(), incoming);
        self.lease = Some(lease);
        adopted
    }

    /// Whether the fence rule must look at PostgreSQL at `now`, and with
    /// which fence set: exactly the keeper's [`fence_armed`].
    pub fn armed(&self, now: Duration) -> Option<(&[String], u32)> {
        let l = self.lease.as_ref()?;
        let since = now.saturating_sub(l.last_answer);
        fence_armed(l.current, since, l.fence_timeout).then_some((&l.fence_set[..], l.required))
    }

    /// Whether the guard should exit at `now`: never while a keeper is
    /// connected or within [`UNATTENDED_GRACE`] of the last one leaving;
    /// after that, once nothing is left to guard (no lease, a node off the
    /// primary side, or no postmaster alive). A primary-side PostgreSQL
    /// that runs stays guarded as long as it runs.
    pub fn exit_reason(&self, now: Duration, postmaster_alive: bool) -> Option<ExitReason> {
        let since = self.unattended_since?;
        if now.saturating_sub(since) < UNATTENDED_GRACE {
            return None;
        }
        match &self.lease {
            None => Some(ExitReason::NoLease),
            Some(l) if !l.current.must_fence_when_isolated() => {
                Some(ExitReason::NotPrimarySide(l.current))
            }
            Some(_) if !postmaster_alive => Some(ExitReason::PostgresStopped),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_millis(1500);

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn lease(confirmed: bool, last_answer: f64, current: S) -> GuardLease {
        GuardLease {
            confirmed,
            last_answer: secs(last_answer),
            current,
            fence_set: vec!["pgpilot_2".to_string()],
            required: 1,
            fence_timeout: T,
        }
    }

    #[test]
    fn a_restarted_keeper_does_not_extend_the_lease_until_answered() {
        let held = lease(true, 10.0, S::Primary);
        // The new keeper's own lease starts at its start, later.
        let (kept, how) = adopt(Some(&held), lease(false, 20.0, S::Primary));
        assert_eq!(how, Adopted::Ignored);
        assert_eq!(kept, held);
        assert_eq!(kept.expires_at(), secs(11.5));
        // Once the monitor answered it, its lease counts.
        let (renewed, how) = adopt(Some(&kept), lease(true, 21.0, S::Primary));
        assert_eq!(how, Adopted::Renewed);
        assert_eq!(renewed.last_answer, secs(21.0));
    }

    #[test]
    fn the_clock_of_the_last_answer_never_moves_back() {
        let held = lease(true, 10.0, S::Primary);
        let (l, _) = adopt(Some(&held), lease(true, 9.0, S::Demoted));
        assert_eq!(l.last_answer, secs(10.0));
        // Everything else is the newer message's.
        assert_eq!(l.current, S::Demoted);
    }

    #[test]
    fn a_guard_without_a_lease_takes_even_an_unconfirmed_one() {
        // A keeper restarted with no guard left: the guard counts from the
        // keeper's start, as the keeper's own fence does, naming nobody.
        let (l, how) = adopt(None, lease(false, 5.0, S::WaitPrimary));
        assert_eq!(how, Adopted::First);
        assert_eq!(l.last_answer, secs(5.0));
    }

    #[test]
    fn armed_exactly_as_the_keepers_fence() {
        let mut g = GuardState::new(secs(0.0));
        assert!(g.armed(secs(100.0)).is_none(), "no lease, nothing armed");
        g.receive(lease(true, 10.0, S::Primary));
        assert!(g.armed(secs(11.499)).is_none());
        let (set, required) = g.armed(secs(11.5)).expect("armed at the deadline");
        assert_eq!((set.len(), required), (1, 1));
        g.receive(lease(true, 10.0, S::Secondary));
        assert!(g.armed(secs(100.0)).is_none(), "a standby is never fenced");
    }

    #[test]
    fn on_eof_the_lease_is_kept_and_applied() {
        let mut g = GuardState::new(secs(0.0));
        g.keeper_connected();
        g.receive(lease(true, 10.0, S::Primary));
        g.keeper_left(secs(10.2));
        assert_eq!(g.keepers(), 0);
        assert_eq!(g.lease().map(|l| l.last_answer), Some(secs(10.0)));
        assert!(g.armed(secs(11.6)).is_some());
        // A keeper gone while the node is a running primary: stay.
        assert_eq!(g.exit_reason(secs(60.0), true), None);
    }

    #[test]
    fn exits_only_unattended_and_with_nothing_to_guard() {
        let mut g = GuardState::new(secs(0.0));
        // Just started: room for the keeper to connect.
        assert_eq!(g.exit_reason(secs(1.0), false), None);
        assert_eq!(g.exit_reason(secs(2.0), false), Some(ExitReason::NoLease));

        g.keeper_connected();
        g.receive(lease(true, 10.0, S::Primary));
        // Never while a keeper is connected, even with PostgreSQL stopped.
        assert_eq!(g.exit_reason(secs(100.0), false), None);
        g.keeper_left(secs(100.0));
        assert_eq!(g.exit_reason(secs(101.0), false), None, "grace");
        assert_eq!(
            g.exit_reason(secs(102.0), false),
            Some(ExitReason::PostgresStopped)
        );
        assert_eq!(g.exit_reason(secs(102.0), true), None, "still a writer");

        // A keeper that comes back within the grace keeps its guard.
        g.keeper_connected();
        assert_eq!(g.exit_reason(secs(500.0), false), None);
        g.receive(lease(true, 400.0, S::Secondary));
        g.keeper_left(secs(500.0));
        assert_eq!(
            g.exit_reason(secs(502.0), true),
            Some(ExitReason::NotPrimarySide(S::Secondary))
        );
    }

    #[test]
    fn two_connections_one_closing_is_still_attended() {
        let mut g = GuardState::new(secs(0.0));
        g.keeper_connected();
        g.keeper_connected();
        g.keeper_left(secs(1.0));
        assert_eq!(g.exit_reason(secs(100.0), false), None);
        g.keeper_left(secs(100.0));
        g.keeper_left(secs(100.0)); // a stray extra close changes nothing
        assert_eq!(g.keepers(), 0);
        assert_eq!(g.exit_reason(secs(102.0), false), Some(ExitReason::NoLease));
    }
}
