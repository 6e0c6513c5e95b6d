//! Failpoints: a testing facility that SIGKILLs this keeper at a chosen
//! point of a transition plan, so that tests can check DESIGN §5 invariant 4
//! ("a keeper killed at any point, then restarted, converges to its goal")
//! on real processes.
//!
//! `PGPILOT_KEEPER_FAILPOINTS` holds a comma-separated list of points:
//!
//! - `FROM->TO:K` — right before action `K` (0-based) of the plan
//!   `FROM → TO`; `K` equal to the number of actions means after the last
//!   action, before the state file records `TO`.
//! - `FROM->TO:K+DURATION` (e.g. `demoted->catchingup:1+300ms`) — while
//!   action `K` runs: `DURATION` after it began, or when it ends if that is
//!   sooner. This kills the keeper while a program it runs (pg_rewind,
//!   pg_basebackup, pg_ctl) is still at work.
//!
//! The kill is `raise(SIGKILL)`: no destructor, no flush, no cleanup — a
//! real crash. PostgreSQL, started by `pg_ctl` as a daemon, keeps running, as
//! it would after a real keeper crash. Before the kill the keeper writes one
//! log line naming the point (`failpoint reached`), so that a supervisor can
//! tell which point fired. Unset or empty: no point, and every check is one
//! comparison of an empty list.

use std::str::FromStr;
use std::time::Duration;

use pgpilot_proto::ReplicationState as S;

use crate::plan;

/// The environment variable that lists the failpoints.
pub const ENV: &str = "PGPILOT_KEEPER_FAILPOINTS";

/// Where in a plan a point fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Right before action `k` (`k` = number of actions: after the last).
    Before(usize),
    /// While action `k` runs: `after` it began, or when it ends if sooner.
    During(usize, Duration),
}

/// One point: a transition and where in its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    pub from: S,
    pub to: S,
    pub at: At,
}

impl std::fmt::Display for Failpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}->{}:", self.from, self.to)?;
        match self.at {
            At::Before(k) => write!(f, "{k}"),
            At::During(k, after) => {
                write!(f, "{k}+{}", humantime::format_duration(after))
            }
        }
    }
}

/// A point that does not parse, or names no point of a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{ENV}: {0}")]
pub struct FailpointError(String);

impl FromStr for Failpoint {
    type Err = FailpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| {
            FailpointError(format!(
                "{text:?} {why} (expected FROM->TO:K or FROM->TO:K+DURATION, e.g. \
                 \"prepare_promotion->stop_replication:1\")"
            ))
        };
        let (edge, point) = text
            .rsplit_once(':')
            .ok_or_else(|| bad("has no \":K\"".into()))?;
        let (from, to) = edge
            .split_once("->")
            .ok_or_else(|| bad("has no \"->\" between two states".into()))?;
        let state = |name: &str| {
            S::from_str(name.trim()).map_err(|_| bad(format!("names no state {:?}", name.trim())))
        };
        let (from, to) = (state(from)?, state(to)?);
        if from == to {
            return Err(bad(format!(
                "is no transition: a point needs two different states, not {from} twice"
            )));
        }
        let (k, during) = match point.split_once('+') {
            Some((k, after)) => (k, Some(after)),
            None => (point, None),
        };
        let k: usize = k
            .trim()
            .parse()
            .map_err(|_| bad(format!("has {:?} where an action number belongs", k.trim())))?;
        let actions = plan::plan(from, to)
            .map_err(|e| bad(format!("names no plan: {e}")))?
            .len();
        let at = match during {
            None if k <= actions => At::Before(k),
            None => {
                return Err(bad(format!(
                    "is past the plan's end: {from} -> {to} has {actions} action(s), so K is \
                     0 to {actions}"
                )))
            }
            Some(after) => {
                let after = humantime::parse_duration(after.trim())
                    .map_err(|e| bad(format!("has a bad duration {:?}: {e}", after.trim())))?;
                if actions == 0 {
                    return Err(bad(format!(
                        "names no running action: {from} -> {to} has no action, so its only \
                         point is {from}->{to}:0"
                    )));
                }
                if k >= actions {
                    return Err(bad(format!(
                        "names no running action: {from} -> {to} has {actions} action(s), \
                         so K+DURATION needs K from 0 to {}",
                        actions - 1
                    )));
                }
                At::During(k, after)
            }
        };
        Ok(Failpoint { from, to, at })
    }
}

/// The points this process was started with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints(Vec<Failpoint>);

impl Failpoints {
    /// Parse a comma-separated list (empty or blank: no point).
    pub fn parse(list: &str) -> Result<Self, FailpointError> {
        list.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Failpoint::from_str)
            .collect::<Result<Vec<_>, _>>()
            .map(Failpoints)
    }

    /// The points in [`ENV`]; none when it is unset.
    pub fn from_env() -> Result<Self, FailpointError> {
        match std::env::var(ENV) {
            Ok(list) => Self::parse(&list),
            Err(std::env::VarError::NotPresent) => Ok(Self::default()),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(FailpointError("is not valid UTF-8".into()))
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn points(&self) -> &[Failpoint] {
        &self.0
    }

    /// The `Before(k)` point of `from → to`, if one is set.
    pub fn before(&self, from: S, to: S, k: usize) -> Option<Failpoint> {
        self.0
            .iter()
            .find(|p| p.from == from && p.to == to && p.at == At::Before(k))
            .copied()
    }

    /// The `During(k, _)` point of `from → to`, if one is set.
    pub fn during(&self, from: S, to: S, k: usize) -> Option<Failpoint> {
        self.0
            .iter()
            .find(|p| p.from == from && p.to == to && matches!(p.at, At::During(j, _) if j == k))
            .copied()
    }

    /// Before action `k` of `from → to`: kill this process if a point says
    /// so, and arm the timer of a point on action `k` itself.
    pub fn before_action(&self, from: S, to: S, k: usize) {
        if self.0.is_empty() {
            return;
        }
        if let Some(point) = self.before(from, to, k) {
            kill(point, "before the action");
        }
        if let Some(
            point @ Failpoint {
                at: At::During(_, after),
                ..
            },
        ) = self.during(from, to, k)
        {
            let spawned = std::thread::Builder::new()
                .name("failpoint".into())
                .spawn(move || {
                    std::thread::sleep(after);
                    kill(point, "while the action ran");
                });
            if let Err(e) = spawned {
                tracing::error!(failpoint = %point, error = %e, "cannot arm the failpoint timer");
            }
        }
    }

    /// Action `k` of `from → to` ended: a point on it that has not fired
    /// yet fires now.
    pub fn after_action(&self, from: S, to: S, k: usize) {
        if self.0.is_empty() {
            return;
        }
        if let Some(point) = self.during(from, to, k) {
            kill(point, "when the action ended, before its delay");
        }
    }
}

/// Say which point fired, then SIGKILL this process.
fn kill(point: Failpoint, when: &str) -> ! {
    tracing::warn!(failpoint = %point, when, "failpoint reached: SIGKILL");
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    // SIGKILL cannot be caught; this only runs if raise itself failed.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Failpoint, String> {
        text.parse::<Failpoint>().map_err(|e| e.to_string())
    }

    #[test]
    fn parses_points_and_prints_them_back() {
        let p = one("prepare_promotion->stop_replication:1").unwrap();
        assert_eq!(
            p,
            Failpoint {
                from: S::PreparePromotion,
                to: S::StopReplication,
                at: At::Before(1)
            }
        );
        assert_eq!(p.to_string(), "prepare_promotion->stop_replication:1");
        let p = one(" demoted -> catchingup : 1 + 300ms ").unwrap();
        assert_eq!(
            p.at,
            At::During(1, Duration::from_millis(300)),
            "spaces are allowed"
        );
        assert_eq!(p.to_string(), "demoted->catchingup:1+300ms");
        for text in [
            "secondary->report_lsn:0",
            "wait_primary->primary:4",
            "demoted->catchingup:1+2s",
        ] {
            assert_eq!(one(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn the_plan_end_is_a_point_and_past_it_is_not() {
        let actions = plan::plan(S::PreparePromotion, S::StopReplication)
            .unwrap()
            .len();
        assert_eq!(actions, 4);
        assert!(one("prepare_promotion->stop_replication:4").is_ok());
        let err = one("prepare_promotion->stop_replication:5").unwrap_err();
        assert!(err.contains("has 4 action(s), so K is 0 to 4"), "{err}");
        // A plan without actions has one point: before the state file.
        assert!(one("secondary->report_lsn:0").is_ok());
        let err = one("secondary->report_lsn:0+1s").unwrap_err();
        assert!(
            err.contains("its only point is secondary->report_lsn:0"),
            "{err}"
        );
        let err = one("demoted->catchingup:4+1s").unwrap_err();
        assert!(err.contains("needs K from 0 to 3"), "{err}");
    }

    #[test]
    fn mistakes_get_one_sentence_naming_them() {
        for (text, says) in [
            ("secondary->report_lsn", "has no \":K\""),
            ("secondary-report_lsn:0", "has no \"->\""),
            ("secondery->report_lsn:0", "names no state \"secondery\""),
            (
                "secondary->report_lsn:x",
                "has \"x\" where an action number belongs",
            ),
            ("secondary->single:0", "names no plan"),
            ("secondary->secondary:0", "is no transition"),
            ("demoted->catchingup:1+soon", "has a bad duration \"soon\""),
        ] {
            let err = one(text).unwrap_err();
            assert!(err.starts_with(ENV), "{err}");
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.contains("expected FROM->TO:K"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn lists_match_only_their_own_points() {
        let points = Failpoints::parse(
            "prepare_promotion->stop_replication:2, demoted->catchingup:1+200ms,,",
        )
        .unwrap();
        assert_eq!(points.points().len(), 2);
        assert!(points
            .before(S::PreparePromotion, S::StopReplication, 2)
            .is_some());
        assert!(points
            .before(S::PreparePromotion, S::StopReplication, 1)
            .is_none());
        assert!(points
            .before(S::ReportLsn, S::PreparePromotion, 2)
            .is_none());
        assert!(points.during(S::Demoted, S::Catchingup, 1).is_some());
        assert!(points.before(S::Demoted, S::Catchingup, 1).is_none());
        assert!(points.during(S::Demoted, S::Catchingup, 2).is_none());
        assert!(Failpoints::parse("").unwrap().is_empty());
        assert!(Failpoints::parse(" , ").unwrap().is_empty());
        let err = Failpoints::parse("secondary->report_lsn:0,nonsense").unwrap_err();
        assert!(err.to_string().contains("\"nonsense\""), "{err}");
    }

    #[test]
    fn no_points_never_kill() {
        let none = Failpoints::default();
        for from in S::ALL {
            for to in S::ALL {
                for k in 0..6 {
                    none.before_action(from, to, k);
                    none.after_action(from, to, k);
                }
            }
        }
    }
}
