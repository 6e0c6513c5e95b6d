//! The monitor's Prometheus metrics (`metrics_listen`, `GET /metrics`).
//!
//! Three sources, so each number is right with several monitor processes
//! sharing one database (DESIGN §8):
//!
//! - **Per node and per formation gauges** are rendered at scrape time from
//!   one snapshot query of the node table ([`render_nodes`], pure): every
//!   monitor shows the same values, and a dropped node's series disappear.
//! - **Failovers, switchovers and goal changes** are counted from the event
//!   table, which only holds committed decisions: each scrape reads the
//!   events written since the previous one (classified by
//!   [`crate::core::handover::Handover::of`], pure). Every
//!   monitor process counts every event (from its own start), so aggregate
//!   them with `max`, not `sum`.
//! - **Requests, heartbeats, health checks and transition durations** are
//!   recorded where they happen, in this process: aggregate them with `sum`.
//!
//! This module installs the recorder, names every metric and records the
//! small per-process facts; the parts are:
//!
//! - `source`: the narrow read trait [`MetricsSource`] and its
//!   implementation for the store (the only part that knows the store);
//! - `events`: event counting with a cursor;
//! - `render`: node views and the gauges' Prometheus text;
//! - `http`: binding, serving and answering `GET /metrics`;
//! - `grpc`: the tower layer counting gRPC requests;
//! - `transitions`: goal-assigned → goal-reached durations, from the stored
//!   `goal_changed_at`.

mod events;
mod grpc;
mod http;
mod render;
mod source;
mod transitions;

use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::fsm::Health;

pub use grpc::{grpc_code_name, grpc_method, GrpcMetrics, GrpcMetricsLayer};
pub use http::{bind, serve};
pub use render::{render_nodes, NodeView};
pub use source::{GoalChange, MetricsSource};
pub use transitions::goal_reached;

pub const FAILOVERS: &str = "pgpilot_failovers_total";
pub const SWITCHOVERS: &str = "pgpilot_switchovers_total";
pub const GOAL_CHANGES: &str = "pgpilot_goal_changes_total";
pub const HEALTH_CHECKS: &str = "pgpilot_health_checks_total";
pub const HEALTH_CHECK_FAILURES: &str = "pgpilot_health_check_failures_total";
pub const GRPC_REQUESTS: &str = "pgpilot_grpc_requests_total";
pub const GRPC_SECONDS: &str = "pgpilot_grpc_request_duration_seconds";
pub const HEARTBEAT_SECONDS: &str = "pgpilot_heartbeat_duration_seconds";
pub const TRANSITION_SECONDS: &str = "pgpilot_transition_duration_seconds";
pub const LEASE_HELD: &str = "pgpilot_monitor_lease_held";
pub const LEASE_TOKEN: &str = "pgpilot_monitor_lease_token";
pub const LEASE_ACQUISITIONS: &str = "pgpilot_monitor_lease_acquisitions_total";
pub const KEEPERS_WOKEN: &str = "pgpilot_keepers_woken_total";

/// Reasons of `pgpilot_switchovers_total`.
pub const SWITCHOVER_REASONS: [&str; 4] = [
    "perform_failover",
    "perform_switchover",
    "maintenance",
    "other",
];

/// Request and heartbeat latencies: a local round trip to a saturated
/// database.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Goal assigned → reached: from a reload to a clone of a large database.
const TRANSITION_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
];

/// Install the process-wide recorder and describe every recorded metric.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(GRPC_SECONDS.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(HEARTBEAT_SECONDS.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(TRANSITION_SECONDS.into()), TRANSITION_BUCKETS)?
        .install_recorder()?;
    describe_counter!(FAILOVERS, "Unplanned failovers: the primary role taken away because the primary was unreachable (reason primary_unhealthy) or its PostgreSQL stayed down while its keeper ran (postgres_down). Counted from the event table: take max over monitor processes.");
    describe_counter!(SWITCHOVERS, "Planned hand-overs of the primary started: perform-failover, perform-switchover / perform-promotion, maintenance of the primary. Counted from the event table: take max over monitor processes.");
    describe_counter!(GOAL_CHANGES, "Goal states assigned, by from and to goal. Counted from the event table: take max over monitor processes.");
    describe_counter!(
        HEALTH_CHECKS,
        "Health checks of nodes' PostgreSQL made by this monitor process."
    );
    describe_counter!(
        HEALTH_CHECK_FAILURES,
        "Health checks of nodes' PostgreSQL that failed (no answer, refused, or starting up)."
    );
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC requests answered by this monitor process, by method and status code."
    );
    describe_histogram!(
        GRPC_SECONDS,
        Unit::Seconds,
        "Time to answer one gRPC request, by method."
    );
    describe_histogram!(
        HEARTBEAT_SECONDS,
        Unit::Seconds,
        "Time to handle one keeper heartbeat (NodeActive), database work included."
    );
    describe_histogram!(TRANSITION_SECONDS, Unit::Seconds, "Time from a goal state assigned by this monitor process to the heartbeat reporting it reached, by the reported state at assignment (from) and the goal (to).");
    describe_gauge!(LEASE_HELD, "1 while this monitor process holds the lease on the background duties (health checks, periodic evaluation), else 0: exactly one monitor should show 1.");
    describe_gauge!(
        LEASE_TOKEN,
        "The fencing token of the lease this monitor process holds or last held."
    );
    describe_counter!(
        LEASE_ACQUISITIONS,
        "Times this monitor process acquired the lease on the background duties."
    );
    describe_counter!(KEEPERS_WOKEN, "Heartbeat streams of this monitor process told that their node's group changed (a goal committed by any monitor process), so the keeper heartbeats at once instead of on its timer.");
    counter!(HEALTH_CHECKS).increment(0);
    counter!(HEALTH_CHECK_FAILURES).increment(0);
    counter!(KEEPERS_WOKEN).increment(0);
    counter!(LEASE_ACQUISITIONS).increment(0);
    gauge!(LEASE_HELD).set(0.0);
    Ok(handle)
}

// ---- recorded where things happen ------------------------------------------

/// One health check made.
pub fn health_checked(result: Health) {
    counter!(HEALTH_CHECKS).increment(1);
    if result == Health::Bad {
        counter!(HEALTH_CHECK_FAILURES).increment(1);
    }
}

/// The lease on the background duties acquired (with its token) or lost.
pub fn lease_held(token: Option<i64>) {
    gauge!(LEASE_HELD).set(if token.is_some() { 1.0 } else { 0.0 });
    if let Some(token) = token {
        gauge!(LEASE_TOKEN).set(token as f64);
        counter!(LEASE_ACQUISITIONS).increment(1);
    }
}

/// Heartbeat streams woken by one goal change.
pub fn keepers_woken(streams: usize) {
    counter!(KEEPERS_WOKEN).increment(streams as u64);
}

/// One heartbeat handled.
pub fn heartbeat_handled(took: Duration) {
    histogram!(HEARTBEAT_SECONDS).record(took.as_secs_f64());
}
