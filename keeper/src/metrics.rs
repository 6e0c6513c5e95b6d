//! The keeper's Prometheus metrics. Counters and histograms are recorded
//! where things happen (transitions, fencing); gauges are set from the
//! shared status and a live observation of PostgreSQL when `/metrics` is
//! scraped, so they are never older than the scrape.

use std::time::{Duration, Instant};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use pgpilot_proto::ReplicationState as S;

use crate::pg::progress::Work;
use crate::pg::Observation;
use crate::status::{Facts, KeeperStatus};

pub const POSTGRES_UP: &str = "pgpilot_keeper_postgres_up";
pub const IN_RECOVERY: &str = "pgpilot_keeper_postgres_in_recovery";
pub const INFO: &str = "pgpilot_keeper_info";
pub const STATE: &str = "pgpilot_keeper_state";
pub const GOAL: &str = "pgpilot_keeper_goal_state";
pub const LSN: &str = "pgpilot_keeper_lsn_bytes";
pub const LAG: &str = "pgpilot_keeper_replication_lag_bytes";
pub const TIMELINE: &str = "pgpilot_keeper_timeline";
pub const IN_TRANSITION: &str = "pgpilot_keeper_transition_in_progress_seconds";
pub const HEARTBEAT_AGE: &str = "pgpilot_keeper_heartbeat_age_seconds";
pub const FENCED: &str = "pgpilot_keeper_fenced";
pub const FENCE_EVENTS: &str = "pgpilot_keeper_fence_events_total";
pub const TRANSITIONS: &str = "pgpilot_keeper_transitions_total";
pub const TRANSITION_SECONDS: &str = "pgpilot_keeper_transition_duration_seconds";
pub const MONITOR_IN_USE: &str = "pgpilot_keeper_monitor_in_use";
pub const MONITOR_SWITCHES: &str = "pgpilot_keeper_monitor_switches_total";
pub const WORK_DONE: &str = "pgpilot_keeper_work_done_bytes";
pub const WORK_TOTAL: &str = "pgpilot_keeper_work_total_bytes";
pub const WORK_RATE: &str = "pgpilot_keeper_work_rate_bytes_per_second";
pub const WORK_IDLE: &str = "pgpilot_keeper_work_idle_seconds";

/// Buckets of the transition histogram: from a configuration reload to a
/// clone of a large database.
const TRANSITION_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Install the process-wide recorder and describe every metric (the HELP
/// lines). Call once.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TRANSITION_SECONDS.into()), TRANSITION_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_gauge!(
        POSTGRES_UP,
        "1 when the local PostgreSQL accepts connections, else 0."
    );
    describe_gauge!(
        IN_RECOVERY,
        "1 when the local PostgreSQL runs as a standby (in recovery), else 0."
    );
    describe_gauge!(INFO, "Always 1; labels name the node and its formation.");
    describe_gauge!(STATE, "1 for the replication state the keeper last reached (label state), 0 for every other state.");
    describe_gauge!(
        GOAL,
        "1 for the goal state the monitor last assigned (label state), 0 for every other state."
    );
    describe_gauge!(LSN, Unit::Bytes, "WAL position of the local PostgreSQL: current LSN on a primary, last received or replayed on a standby.");
    describe_gauge!(LAG, Unit::Bytes, "Bytes of WAL this standby is behind its primary's LSN as last reported to the monitor (0 on a primary).");
    describe_gauge!(TIMELINE, "Timeline of the local PostgreSQL.");
    describe_gauge!(
        IN_TRANSITION,
        Unit::Seconds,
        "Time spent so far moving towards a goal not yet reached (0 when settled)."
    );
    describe_gauge!(HEARTBEAT_AGE, Unit::Seconds, "Seconds since the last heartbeat the monitor answered (since keeper start before the first).");
    describe_gauge!(
        FENCED,
        "1 while the fence stopped PostgreSQL (monitor and standbys unreachable), else 0."
    );
    describe_counter!(FENCE_EVENTS, "Times this keeper fenced its primary (stopped PostgreSQL because it lost the monitor and too many standbys).");
    describe_counter!(
        TRANSITIONS,
        "Transitions carried out, by from and to state."
    );
    describe_gauge!(
        MONITOR_IN_USE,
        "1 for the monitor this keeper talks to (label url), 0 for every other configured monitor."
    );
    describe_counter!(
        MONITOR_SWITCHES,
        "Times this keeper moved to the next monitor of its list after an error of the one in use."
    );
    describe_gauge!(WORK_DONE, Unit::Bytes, "Bytes copied so far by the clone (pg_basebackup) or rewind (pg_rewind) under way (label work); 0 when none runs.");
    describe_gauge!(WORK_TOTAL, Unit::Bytes, "Bytes the work under way copies in all, as the program estimates them (label work); 0 when none runs or it has not said.");
    describe_gauge!(
        WORK_RATE,
        "Bytes per second of the work under way over the last 10 s (label work); 0 when none runs."
    );
    describe_gauge!(
        WORK_IDLE,
        Unit::Seconds,
        "Seconds since the work under way last moved (label work); it is stopped at stall_timeout."
    );
    describe_histogram!(
        TRANSITION_SECONDS,
        Unit::Seconds,
        "Time to carry out one transition (the keeper's actions), by from and to state."
    );
}

/// A transition finished.
pub fn transition_done(from: S, to: S, took: Duration) {
    let labels = [("from", from.as_str()), ("to", to.as_str())];
    counter!(TRANSITIONS, &labels).increment(1);
    histogram!(TRANSITION_SECONDS, &labels).record(took.as_secs_f64());
}

/// The fence stopped PostgreSQL.
pub fn fenced() {
    counter!(FENCE_EVENTS).increment(1);
}

/// The keeper moved to the next monitor of its list.
pub fn monitor_switched() {
    counter!(MONITOR_SWITCHES).increment(1);
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Set the gauges from `status` and the observation, then render.
pub fn render(
    handle: &PrometheusHandle,
    status: &KeeperStatus,
    f: &Facts,
    o: &Observation,
    now: Instant,
) -> String {
    let node = status.name.clone();
    gauge!(INFO, "node" => node, "formation" => status.formation.clone(), "node_id" => status.node_id.map(|i| i.to_string()).unwrap_or_default()).set(1.0);
    gauge!(POSTGRES_UP).set(flag(f.pg_running));
    gauge!(IN_RECOVERY).set(flag(f.in_recovery));
    for s in S::ALL {
        gauge!(STATE, "state" => s.as_str()).set(flag(s == status.state));
        gauge!(GOAL, "state" => s.as_str()).set(flag(s == status.goal));
    }
    if o.running {
        gauge!(LSN).set(o.lsn as f64);
        gauge!(TIMELINE).set(f64::from(o.timeline));
    }
    gauge!(LAG).set(f.lag_bytes.unwrap_or(0) as f64);
    gauge!(IN_TRANSITION).set(
        status
            .transition_started
            .map(|t| now.saturating_duration_since(t).as_secs_f64())
            .unwrap_or(0.0),
    );
    gauge!(HEARTBEAT_AGE).set(
        now.saturating_duration_since(status.last_heartbeat_ok.unwrap_or(status.started))
            .as_secs_f64(),
    );
    gauge!(FENCED).set(flag(status.fenced));
    for url in &status.monitors {
        gauge!(MONITOR_IN_USE, "url" => url.clone())
            .set(flag(status.monitor.as_ref() == Some(url)));
    }
    for work in [Work::Clone, Work::Rewind, Work::Restore, Work::Recovery] {
        let now = o.work.as_ref().filter(|w| w.work == work);
        let label = [("work", work.as_str())];
        gauge!(WORK_DONE, &label).set(now.map_or(0.0, |w| w.done_bytes as f64));
        gauge!(WORK_TOTAL, &label).set(now.and_then(|w| w.total_bytes).unwrap_or(0) as f64);
        gauge!(WORK_RATE, &label).set(now.and_then(|w| w.rate_bytes_per_s).unwrap_or(0) as f64);
        gauge!(WORK_IDLE, &label).set(now.map_or(0.0, |w| w.idle.as_secs_f64()));
    }
    // Counters appear before their first increment, so dashboards and
    // alerts see 0 rather than nothing.
    counter!(FENCE_EVENTS).increment(0);
    counter!(MONITOR_SWITCHES).increment(0);
    handle.run_upkeep();
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test that installs the process-wide recorder.
    #[test]
    fn every_metric_is_described_and_named_by_convention() {
        let handle = install().unwrap();
        let mut status = KeeperStatus::new("node1", "default", S::Secondary, S::ReportLsn);
        status.primary_lsn = Some(2000);
        status.node_id = Some(7);
        status.monitors = vec!["https://m1:7430".into(), "https://m2:7430".into()];
        status.monitor = Some("https://m2:7430".into());
        let o = Observation {
            running: true,
            in_recovery: true,
            lsn: 1500,
            timeline: 3,
            wal_receiver_streaming: true,
            work: Some(crate::pg::progress::WorkProgress {
                work: Work::Rewind,
                upstream: "127.0.0.1:5432".into(),
                done_bytes: 4096,
                total_bytes: Some(8192),
                elapsed: Duration::from_secs(3),
                rate_bytes_per_s: Some(1024),
                idle: Duration::from_secs(2),
            }),
            ..Observation::default()
        };
        let f = crate::status::facts(&status, &o);
        transition_done(S::Catchingup, S::Secondary, Duration::from_millis(300));
        let text = render(&handle, &status, &f, &o, Instant::now());
        for line in [
            "pgpilot_keeper_postgres_up 1",
            "pgpilot_keeper_replication_lag_bytes 500",
            "pgpilot_keeper_lsn_bytes 1500",
            "pgpilot_keeper_timeline 3",
            "pgpilot_keeper_state{state=\"secondary\"} 1",
            "pgpilot_keeper_state{state=\"primary\"} 0",
            "pgpilot_keeper_goal_state{state=\"report_lsn\"} 1",
            "pgpilot_keeper_fence_events_total 0",
            "pgpilot_keeper_info{node=\"node1\",formation=\"default\",node_id=\"7\"} 1",
            "pgpilot_keeper_monitor_in_use{url=\"https://m1:7430\"} 0",
            "pgpilot_keeper_monitor_in_use{url=\"https://m2:7430\"} 1",
            "pgpilot_keeper_work_done_bytes{work=\"rewind\"} 4096",
            "pgpilot_keeper_work_total_bytes{work=\"rewind\"} 8192",
            "pgpilot_keeper_work_rate_bytes_per_second{work=\"rewind\"} 1024",
            "pgpilot_keeper_work_idle_seconds{work=\"rewind\"} 2",
            "pgpilot_keeper_work_done_bytes{work=\"clone\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let mut described = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                described.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') && !l.is_empty() {
                let name = l.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| described.contains(*f)))
                    .unwrap_or(name);
                assert!(described.contains(family), "{name} has no HELP in\n{text}");
                assert!(family.starts_with("pgpilot_keeper_"), "{name}");
            }
        }
        // Other tests of this process may have counted switches.
        assert!(
            text.lines()
                .any(|l| l.starts_with("pgpilot_keeper_monitor_switches_total ")),
            "{text}"
        );
        assert!(text.contains("pgpilot_keeper_transition_duration_seconds_bucket{from=\"catchingup\",to=\"secondary\",le=\"0.5\"} 1"), "{text}");
    }
}
