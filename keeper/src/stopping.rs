//! Stopping the keeper. Two ways, told apart by the signal:
//!
//! - **Stop the node** (SIGTERM, SIGINT: an init system's stop, `docker
//!   stop`, a host shutting down). The keeper tells the monitor it is
//!   stopping (`NodeActiveRequest.stopping`): a primary hands over as in a
//!   planned failover, a secondary leaves the synchronous set. It stops
//!   PostgreSQL once the monitor says it may (or says no standby can take
//!   over), or when `stop_timeout` has passed, then exits (`0s`: at once,
//!   without handing over). While the formation is paused it exits and
//!   leaves PostgreSQL running instead (a keeper restart under `pause`).
//! - **Restart the keeper** (SIGUSR1): the keeper exits at once with
//!   status [`RESTART_EXIT_STATUS`] and PostgreSQL keeps running; a keeper
//!   started again adopts it. For upgrading the keeper without a failover.
//!
//! [`verdict`] is the rule, pure; the loop (`crate::agent`) applies it.

use std::time::Duration;

/// The keeper's exit status after SIGUSR1: it exited to be started again
/// (the systemd unit restarts on it: `RestartForceExitStatus=3`).
pub const RESTART_EXIT_STATUS: u8 = 3;

/// What the signal asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// Stop the node: hand over, stop PostgreSQL, exit.
    Node,
    /// Exit alone; PostgreSQL keeps running.
    KeeperOnly,
}

/// What the monitor last said to a stopping keeper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopReply {
    pub may_stop: bool,
    /// Why no standby takes over ("" when one does).
    pub refused: String,
}

/// What the loop does next while stopping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep heartbeating (the hand-over is under way).
    Wait,
    /// Stop PostgreSQL and exit; the sentence says why.
    StopPostgres(String),
    /// Exit and leave PostgreSQL running; the sentence says why.
    LeaveRunning(String),
}

/// The rule, on a stop of `kind` asked `elapsed` ago: `paused` is what
/// the monitor's latest answer said (None: no answer yet), `reply` what it
/// said to the stopping heartbeats so far (None: none answered yet).
pub fn verdict(
    kind: StopKind,
    paused: Option<bool>,
    reply: Option<&StopReply>,
    elapsed: Duration,
    stop_timeout: Duration,
) -> Verdict {
    if kind == StopKind::KeeperOnly {
        return Verdict::LeaveRunning(
            "keeper restart asked (SIGUSR1): the keeper exits and PostgreSQL keeps running".into(),
        );
    }
    if paused == Some(true) {
        return Verdict::LeaveRunning(
            "the formation is paused: the keeper exits and PostgreSQL keeps running (resume the formation, then stop it again, to hand over)".into(),
        );
    }
    if stop_timeout.is_zero() {
        return Verdict::StopPostgres(
            "stop_timeout is 0s: stopping PostgreSQL without handing over".into(),
        );
    }
    if let Some(r) = reply {
        if !r.refused.is_empty() {
            return Verdict::StopPostgres(format!(
                "no standby can take over ({}): stopping PostgreSQL; the monitor fails over once one can",
                r.refused
            ));
        }
        if r.may_stop {
            return Verdict::StopPostgres(
                "handed over: the monitor no longer needs this node's PostgreSQL".into(),
            );
        }
    }
    if elapsed >= stop_timeout {
        return Verdict::StopPostgres(format!(
            "the hand-over did not finish within stop_timeout ({}): stopping PostgreSQL anyway; the monitor fails over as for a lost node",
            humantime::format_duration(stop_timeout)
        ));
    }
    Verdict::Wait
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(8);

    #[test]
    fn each_way_of_stopping_ends_as_it_should() {
        let asked = Duration::ZERO;
        let soon = Duration::from_millis(500);
        let late = T;
        let leave = |v: &Verdict| matches!(v, Verdict::LeaveRunning(_));
        let stop = |v: &Verdict| matches!(v, Verdict::StopPostgres(_));
        let v = |kind, paused, reply: Option<&StopReply>, elapsed, timeout| {
            verdict(kind, paused, reply, elapsed, timeout)
        };
        // A keeper restart never stops PostgreSQL, whatever else holds.
        assert!(leave(&v(StopKind::KeeperOnly, Some(false), None, soon, T)));
        // Paused: the node keeps running.
        assert!(leave(&v(StopKind::Node, Some(true), None, soon, T)));
        // Not heard yet, or heard and handing over: wait, up to the deadline.
        assert_eq!(v(StopKind::Node, None, None, soon, T), Verdict::Wait);
        let under_way = StopReply::default();
        assert_eq!(
            v(StopKind::Node, Some(false), Some(&under_way), soon, T),
            Verdict::Wait
        );
        assert!(stop(&v(
            StopKind::Node,
            Some(false),
            Some(&under_way),
            late,
            T
        )));
        assert!(stop(&v(StopKind::Node, None, None, late, T)));
        // Told it may stop, or that nobody can take over: stop at once.
        let done = StopReply {
            may_stop: true,
            refused: String::new(),
        };
        assert!(stop(&v(StopKind::Node, Some(false), Some(&done), soon, T)));
        let refused = StopReply {
            may_stop: true,
            refused: "no healthy secondary".into(),
        };
        match v(StopKind::Node, Some(false), Some(&refused), soon, T) {
            Verdict::StopPostgres(why) => assert!(why.contains("no healthy secondary"), "{why}"),
            other => panic!("{other:?}"),
        }
        // 0s: no hand-over at all.
        assert!(stop(&v(
            StopKind::Node,
            Some(false),
            None,
            asked,
            Duration::ZERO
        )));
    }
}
