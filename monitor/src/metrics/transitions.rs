//! Transition durations: the time from a goal this monitor process
//! assigned to the heartbeat reporting it reached, kept in a
//! process-global map of pending goals.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use metrics::histogram;
use pgpilot_proto::ReplicationState as S;

use super::TRANSITION_SECONDS;

/// A goal assigned but not yet reached.
#[derive(Debug, Clone, Copy)]
struct Pending {
    from: S,
    goal: S,
    since: Instant,
}

fn pending() -> &'static Mutex<HashMap<i64, Pending>> {
    static PENDING: std::sync::OnceLock<Mutex<HashMap<i64, Pending>>> = std::sync::OnceLock::new();
    PENDING.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A goal was written for `node_id`, whose keeper reported `reported`.
pub fn goal_assigned(node_id: i64, reported: S, goal: S) {
    let mut map = pending().lock().unwrap_or_else(|e| e.into_inner());
    if reported == goal {
        map.remove(&node_id);
    } else {
        map.insert(
            node_id,
            Pending {
                from: reported,
                goal,
                since: Instant::now(),
            },
        );
    }
}

/// A heartbeat of `node_id` reported `reported` and was answered with
/// `goal`: when it reports the goal this process assigned, the transition
/// took from then to now.
pub fn heartbeat_answered(node_id: i64, reported: S, goal: S) {
    let mut map = pending().lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = map.get(&node_id).copied() else {
        return;
    };
    if p.goal != goal {
        // Replaced by a goal another monitor process assigned.
        map.remove(&node_id);
    } else if reported == goal {
        map.remove(&node_id);
        histogram!(TRANSITION_SECONDS, "from" => p.from.as_str(), "to" => p.goal.as_str())
            .record(p.since.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_durations_need_the_assigned_goal_reached() {
        goal_assigned(-7, S::Secondary, S::ReportLsn);
        heartbeat_answered(-7, S::Secondary, S::ReportLsn);
        assert!(pending().lock().unwrap().contains_key(&-7));
        heartbeat_answered(-7, S::ReportLsn, S::ReportLsn);
        assert!(!pending().lock().unwrap().contains_key(&-7));
        goal_assigned(-8, S::Secondary, S::ReportLsn);
        heartbeat_answered(-8, S::Secondary, S::Secondary);
        assert!(
            !pending().lock().unwrap().contains_key(&-8),
            "another monitor replaced the goal"
        );
    }
}
