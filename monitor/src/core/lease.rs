//! The lease on the monitor's background duties, as the holding monitor
//! sees it: what one renewal attempt changes, and whether the duties may
//! run now.
//!
//! The database decides who holds the lease (its clock sets the expiry);
//! a monitor trusts its own hold only until `sent + ttl`, where `sent` is
//! taken before the renewal left. The database's expiry is set after the
//! statement arrived, so the local view ends first whatever the two clocks
//! read, as long as they run at the same rate. Every duty's write also
//! carries the token, which the database checks: a holder that stalled
//! past its view (a paused process) still cannot write.

use std::time::{Duration, Instant};

/// What one renewal attempt returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// This monitor holds the lease with this token.
    Granted(i64),
    /// Another monitor holds it.
    HeldBy(String),
    /// The database did not answer: nothing is known.
    Failed,
}

/// A change worth logging and counting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Acquired with a new token (taken over or first held).
    Acquired(i64),
    /// No longer held: another monitor has it, or the hold ran out
    /// without a renewal.
    Lost,
}

/// The lease as one monitor sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseView {
    held: Option<(i64, Instant)>,
}

impl LeaseView {
    /// Fold in a renewal sent at `sent` for `ttl`.
    pub fn after(&mut self, sent: Instant, ttl: Duration, renewal: &Renewal) -> Option<Change> {
        let before = self.held.map(|(token, _)| token);
        match renewal {
            Renewal::Granted(token) => {
                self.held = Some((*token, sent + ttl));
                (before != Some(*token)).then_some(Change::Acquired(*token))
            }
            Renewal::HeldBy(_) => {
                self.held = None;
                before.map(|_| Change::Lost)
            }
            // Keep the hold until it runs out by itself.
            Renewal::Failed => None,
        }
    }

    /// The token the duties may write with at `now`, if the hold lasts.
    pub fn token_at(&self, now: Instant) -> Option<i64> {
        self.held
            .filter(|&(_, until)| now < until)
            .map(|(token, _)| token)
    }

    /// Forget a hold that ran out by `now`; `Lost` when there was one.
    pub fn expire(&mut self, now: Instant) -> Option<Change> {
        match self.held {
            Some((_, until)) if now >= until => {
                self.held = None;
                Some(Change::Lost)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(2);

    #[test]
    fn a_grant_holds_until_sent_plus_ttl() {
        let t0 = Instant::now();
        let mut v = LeaseView::default();
        assert_eq!(v.token_at(t0), None);
        assert_eq!(
            v.after(t0, TTL, &Renewal::Granted(7)),
            Some(Change::Acquired(7))
        );
        assert_eq!(v.token_at(t0 + Duration::from_millis(1999)), Some(7));
        assert_eq!(v.token_at(t0 + TTL), None);
    }

    #[test]
    fn a_renewal_with_the_same_token_is_no_change_and_extends_the_hold() {
        let t0 = Instant::now();
        let mut v = LeaseView::default();
        v.after(t0, TTL, &Renewal::Granted(7));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(v.after(t1, TTL, &Renewal::Granted(7)), None);
        assert_eq!(v.token_at(t0 + Duration::from_millis(2500)), Some(7));
        // A new token (the hold ran out in the database meanwhile) is a
        // new acquisition.
        assert_eq!(
            v.after(t1, TTL, &Renewal::Granted(8)),
            Some(Change::Acquired(8))
        );
    }

    #[test]
    fn a_failed_renewal_keeps_the_hold_only_until_it_runs_out() {
        let t0 = Instant::now();
        let mut v = LeaseView::default();
        v.after(t0, TTL, &Renewal::Granted(7));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(v.after(t1, TTL, &Renewal::Failed), None);
        assert_eq!(v.token_at(t1), Some(7));
        assert_eq!(v.expire(t1), None);
        assert_eq!(v.token_at(t0 + TTL), None);
        assert_eq!(v.expire(t0 + TTL), Some(Change::Lost));
        assert_eq!(v.expire(t0 + TTL), None);
    }

    #[test]
    fn another_holder_ends_the_hold_at_once() {
        let t0 = Instant::now();
        let mut v = LeaseView::default();
        assert_eq!(v.after(t0, TTL, &Renewal::HeldBy("m2".into())), None);
        v.after(t0, TTL, &Renewal::Granted(7));
        assert_eq!(
            v.after(t0, TTL, &Renewal::HeldBy("m2".into())),
            Some(Change::Lost)
        );
        assert_eq!(v.token_at(t0), None);
    }
}
