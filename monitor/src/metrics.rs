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
//!   events written since the previous one ([`classify`], pure). Every
//!   monitor process counts every event (from its own start), so aggregate
//!   them with `max`, not `sum`.
//! - **Requests, heartbeats, health checks and transition durations** are
//!   recorded where they happen, in this process: aggregate them with `sum`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use pgpilot_proto::ReplicationState as S;

use crate::fsm::{Health, Reason};
use crate::store::{EventRow, Store, StoredNode};

pub const FAILOVERS: &str = "pgpilot_failovers_total";
pub const SWITCHOVERS: &str = "pgpilot_switchovers_total";
pub const GOAL_CHANGES: &str = "pgpilot_goal_changes_total";
pub const HEALTH_CHECKS: &str = "pgpilot_health_checks_total";
pub const HEALTH_CHECK_FAILURES: &str = "pgpilot_health_check_failures_total";
pub const GRPC_REQUESTS: &str = "pgpilot_grpc_requests_total";
pub const GRPC_SECONDS: &str = "pgpilot_grpc_request_duration_seconds";
pub const HEARTBEAT_SECONDS: &str = "pgpilot_heartbeat_duration_seconds";
pub const TRANSITION_SECONDS: &str = "pgpilot_transition_duration_seconds";

/// Reasons of `pgpilot_failovers_total`.
pub const FAILOVER_REASONS: [&str; 2] = ["primary_unhealthy", "postgres_down"];
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

/// At most this many new events are counted per scrape (the rest on the
/// next one).
const EVENTS_PER_SCRAPE: i64 = 10_000;

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
    counter!(HEALTH_CHECKS).increment(0);
    counter!(HEALTH_CHECK_FAILURES).increment(0);
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

/// One heartbeat handled.
pub fn heartbeat_handled(took: Duration) {
    histogram!(HEARTBEAT_SECONDS).record(took.as_secs_f64());
}

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

/// A node reached its goal `to` from `from`, `took` after the goal was
/// assigned (measured on the database's clock, so across monitors).
pub fn goal_reached(from: S, to: S, took: Duration) {
    histogram!(TRANSITION_SECONDS, "from" => from.as_str(), "to" => to.as_str())
        .record(took.as_secs_f64());
}

// ---- gRPC requests: a tower layer ------------------------------------------

/// Counts and times every gRPC request by method and status code.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// The method of a gRPC path, from the protocol's own list (anything else
/// is "unknown", so a scanner cannot grow the label set).
pub fn grpc_method(path: &str) -> &'static str {
    const METHODS: [&str; 10] = [
        "RegisterNode",
        "NodeActive",
        "GetFormationState",
        "ListEvents",
        "PerformFailover",
        "SetNumberSyncStandbys",
        "SetNodeSettings",
        "SetMaintenance",
        "DropNode",
        "ReinitNode",
    ];
    path.strip_prefix("/pgpilot.v1.Monitor/")
        .and_then(|m| METHODS.iter().find(|k| **k == m).copied())
        .unwrap_or("unknown")
}

/// The name of a gRPC status code (as in `grpc-status`).
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Cancelled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = grpc_method(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            // A unary reply's status is in the trailers when it succeeded
            // and in the headers ("trailers-only") when it failed.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(grpc_code_name)
                    .unwrap_or("OK"),
                Err(_) => "transport_error",
            };
            counter!(GRPC_REQUESTS, "method" => method, "code" => code).increment(1);
            histogram!(GRPC_SECONDS, "method" => method).record(started.elapsed().as_secs_f64());
            result
        })
    }
}

// ---- counted from the event table ------------------------------------------

/// What an event says about the primary role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    Failover(&'static str),
    Switchover(&'static str),
}

/// Whether `text` is what `reason` displays, whatever the values marked
/// with [`MARK`] in it.
fn displays_as(text: &str, reason: &Reason) -> bool {
    let template = reason.to_string();
    let mut rest = text;
    let mut parts = template.split(MARK).peekable();
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(after) = rest.strip_prefix(first) else {
        return false;
    };
    rest = after;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

const MARK: &str = "\u{1}";

/// Once per hand-over, when the primary's goal leaves a writable primary
/// goal: a failover when its PostgreSQL stayed down (it is sent to
/// `draining` as the election starts) or when it was lost (`demoted` as a
/// standby wins); else a switchover (`draining`, `prepare_maintenance`).
pub fn classify(goal_from: S, goal_to: S, reason: &str) -> Option<Handover> {
    if !goal_from.is_writable_primary() {
        return None;
    }
    let postgres_down = Reason::PrimaryPostgresDown {
        primary: MARK.into(),
        why: MARK.into(),
    };
    // The second form is the text monitors wrote before the reason said why.
    if matches!(goal_to, S::Draining | S::Demoted)
        && (displays_as(reason, &postgres_down)
            || reason.ends_with(" stays down while its keeper runs: failing over"))
    {
        return Some(Handover::Failover("postgres_down"));
    }
    match goal_to {
        S::Demoted => Some(Handover::Failover("primary_unhealthy")),
        S::Draining | S::PrepareMaintenance => Some(Handover::Switchover(
            if displays_as(reason, &Reason::PlannedFailover) {
                "perform_failover"
            } else if displays_as(reason, &Reason::PlannedSwitchover { to: MARK.into() }) {
                "perform_switchover"
            } else if goal_to == S::PrepareMaintenance {
                "maintenance"
            } else {
                "other"
            },
        )),
        _ => None,
    }
}

fn count_event(e: &EventRow) {
    let (Ok(from), Ok(to)) = (e.goal_from.parse::<S>(), e.goal_to.parse::<S>()) else {
        return;
    };
    counter!(GOAL_CHANGES, "formation" => e.formation.clone(), "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
    match classify(from, to, &e.reason) {
        Some(Handover::Failover(reason)) => {
            counter!(FAILOVERS, "formation" => e.formation.clone(), "reason" => reason).increment(1)
        }
        Some(Handover::Switchover(reason)) => {
            counter!(SWITCHOVERS, "formation" => e.formation.clone(), "reason" => reason)
                .increment(1)
        }
        None => {}
    }
}

/// The failover and switchover counters of a formation exist (at 0) from
/// the first scrape that sees it, so `increase()` sees the first one.
fn touch_formation(formation: &str) {
    for reason in FAILOVER_REASONS {
        counter!(FAILOVERS, "formation" => formation.to_string(), "reason" => reason).increment(0);
    }
    for reason in SWITCHOVER_REASONS {
        counter!(SWITCHOVERS, "formation" => formation.to_string(), "reason" => reason)
            .increment(0);
    }
}

// ---- gauges from a snapshot ------------------------------------------------

/// One node as the gauges show it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub formation: String,
    pub group: i32,
    pub name: String,
    pub reported: S,
    pub goal: S,
    pub pg_running: bool,
    pub health: Health,
    /// Seconds since the last heartbeat (None: never).
    pub heartbeat_age: Option<f64>,
    pub lsn: u64,
    pub timeline: u32,
    pub candidate_priority: u32,
}

impl NodeView {
    pub fn new(n: &StoredNode, now: DateTime<Utc>) -> Self {
        NodeView {
            formation: n.formation.clone(),
            group: n.group_id,
            name: n.snap.name.clone(),
            reported: n.snap.reported,
            goal: n.snap.goal,
            pg_running: n.snap.pg_running,
            health: n.snap.health,
            heartbeat_age: n
                .snap
                .last_heartbeat
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
            lsn: n.snap.lsn,
            timeline: n.timeline,
            candidate_priority: n.snap.candidate_priority,
        }
    }

    /// Reports a writable primary state with PostgreSQL running, and the
    /// monitor has not taken the role away (its goal is one too).
    fn is_writable_primary(&self) -> bool {
        self.pg_running && self.reported.is_writable_primary() && self.goal.is_writable_primary()
    }
}

/// Prometheus label value escaping.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Per node and per formation gauges, Prometheus text. `database_up`:
/// whether the snapshot could be read (else `nodes` is empty).
pub fn render_nodes(nodes: &[NodeView], database_up: bool) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    f.head(
        "pgpilot_monitor_database_up",
        "1 when the monitor could read its database for this scrape, else 0.",
    );
    let _ = writeln!(f.out, "pgpilot_monitor_database_up {}", flag(database_up));

    let group = |n: &NodeView| n.group.to_string();
    type Gauge = (
        &'static str,
        &'static str,
        fn(&NodeView, &[NodeView]) -> Option<f64>,
    );
    let gauges: [Gauge; 10] = [
        ("pgpilot_node_reported_state_code", "Replication state the keeper last reported, as its protocol number (1 init … 21 dropped; see the README).", |n, _| Some(f64::from(n.reported.to_wire()))),
        ("pgpilot_node_goal_state_code", "Goal state the monitor assigned, as its protocol number.", |n, _| Some(f64::from(n.goal.to_wire()))),
        ("pgpilot_node_is_primary", "1 when the node reports a writable primary state with PostgreSQL running and its goal is one too, else 0.", |n, _| Some(flag(n.is_writable_primary()))),
        ("pgpilot_node_postgres_up", "1 when the keeper last reported PostgreSQL running, else 0.", |n, _| Some(flag(n.pg_running))),
        ("pgpilot_node_health", "The monitor's own check of the node's PostgreSQL: 1 good, 0 bad, -1 unknown (not checked yet).", |n, _| Some(match n.health { Health::Good => 1.0, Health::Bad => 0.0, Health::Unknown => -1.0 })),
        ("pgpilot_node_heartbeat_age_seconds", "Seconds since the node's last heartbeat (absent before the first).", |n, _| n.heartbeat_age),
        ("pgpilot_node_reported_lsn_bytes", "WAL position the keeper last reported, in bytes (current LSN of a primary, received/replayed LSN of a standby).", |n, _| Some(n.lsn as f64)),
        ("pgpilot_node_replication_lag_bytes", "Bytes of WAL a running standby is behind the LSN its group's primary last reported (0 for the primary; absent while the group has no writable primary).", |n, all| lag(n, all)),
        ("pgpilot_node_timeline", "Timeline the keeper last reported.", |n, _| Some(f64::from(n.timeline))),
        ("pgpilot_node_candidate_priority", "Candidate priority (0 = never promoted).", |n, _| Some(f64::from(n.candidate_priority))),
    ];
    f.head(
        "pgpilot_node_state",
        "Always 1; the labels reported and goal name the node's states (for tables).",
    );
    for n in nodes {
        let g = group(n);
        f.sample(
            "pgpilot_node_state",
            &[
                ("formation", &n.formation),
                ("group", &g),
                ("node", &n.name),
                ("reported", n.reported.as_str()),
                ("goal", n.goal.as_str()),
            ],
            1.0,
        );
    }
    for (name, help, value) in gauges {
        f.head(name, help);
        for n in nodes {
            if let Some(v) = value(n, nodes) {
                let g = group(n);
                f.sample(
                    name,
                    &[
                        ("formation", &n.formation),
                        ("group", &g),
                        ("node", &n.name),
                    ],
                    v,
                );
            }
        }
    }

    let mut formations: Vec<&str> = nodes.iter().map(|n| n.formation.as_str()).collect();
    formations.sort_unstable();
    formations.dedup();
    f.head(
        "pgpilot_formation_nodes",
        "Nodes of the formation by reported state (every state, 0 included).",
    );
    for formation in &formations {
        for s in S::ALL {
            let count = nodes
                .iter()
                .filter(|n| n.formation == *formation && n.reported == s)
                .count();
            f.sample(
                "pgpilot_formation_nodes",
                &[("formation", formation), ("state", s.as_str())],
                count as f64,
            );
        }
    }
    f.head("pgpilot_formation_writable_primary", "1 when a node of the formation reports a writable primary state with PostgreSQL running and its goal is one too, else 0.");
    for formation in &formations {
        let any = nodes
            .iter()
            .any(|n| n.formation == *formation && n.is_writable_primary());
        f.sample(
            "pgpilot_formation_writable_primary",
            &[("formation", formation)],
            flag(any),
        );
    }
    out
}

fn lag(n: &NodeView, all: &[NodeView]) -> Option<f64> {
    let primary = all
        .iter()
        .find(|p| p.formation == n.formation && p.group == n.group && p.is_writable_primary())?;
    if std::ptr::eq(primary, n) || primary.name == n.name {
        return Some(0.0);
    }
    if !n.pg_running || n.reported.is_writable_primary() {
        return None;
    }
    Some(primary.lsn.saturating_sub(n.lsn) as f64)
}

// ---- the server --------------------------------------------------------------

#[derive(Clone)]
struct Scraper {
    store: Store,
    handle: PrometheusHandle,
    cursor: Arc<tokio::sync::Mutex<EventCursor>>,
}

/// Which events have been counted: every id up to `settled`, and those
/// above it in `counted` (a later id can commit before an earlier one).
#[derive(Debug, Default)]
struct EventCursor {
    settled: i64,
    counted: std::collections::BTreeSet<i64>,
}

impl EventCursor {
    /// The events of `batch` not counted yet; advances past settled ones.
    fn take<'a>(&mut self, batch: &'a [(EventRow, bool)]) -> Vec<&'a EventRow> {
        let mut new = Vec::new();
        let mut all_settled_so_far = true;
        for (e, settled) in batch {
            if self.counted.insert(e.event_id) {
                new.push(e);
            }
            all_settled_so_far &= *settled;
            if all_settled_so_far {
                self.settled = e.event_id;
            }
        }
        let settled = self.settled;
        self.counted.retain(|id| *id > settled);
        new
    }
}

impl Scraper {
    async fn scrape(&self) -> String {
        let mut cursor = self.cursor.lock().await;
        let mut database_up = true;
        match self
            .store
            .events_after(cursor.settled, EVENTS_PER_SCRAPE)
            .await
        {
            Ok(batch) => {
                for e in cursor.take(&batch) {
                    count_event(e);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read new events");
                database_up = false;
            }
        }
        drop(cursor);
        let views = match self.store.metrics_snapshot().await {
            Ok((nodes, now)) => nodes.iter().map(|n| NodeView::new(n, now)).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the nodes");
                database_up = false;
                Vec::new()
            }
        };
        for v in &views {
            touch_formation(&v.formation);
        }
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        text.push_str(&render_nodes(&views, database_up));
        text
    }
}

/// Bind `addr`, or say in one sentence why not.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on metrics_listen {addr}: {e}"))
}

/// Serve `GET /metrics` on `listener` until `shutdown` resolves. Events
/// are counted from those written after this call.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let start = store
        .last_event_id()
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot read the event table: {e}"))?;
    let scraper = Scraper {
        store,
        handle,
        cursor: Arc::new(tokio::sync::Mutex::new(EventCursor {
            settled: start,
            counted: Default::default(),
        })),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .with_state(scraper);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics_handler(State(scraper): State<Scraper>) -> Response {
    let text = scraper.scrape().await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failovers_and_switchovers_are_told_apart() {
        let down = Reason::PrimaryPostgresDown {
            primary: "node1".into(),
            why: "3 attempts to start it failed in a row".into(),
        }
        .to_string();
        let replaced = Reason::OldPrimaryReplaced {
            new_primary: "node2".into(),
        }
        .to_string();
        let planned = Reason::PlannedFailover.to_string();
        let to_node = Reason::PlannedSwitchover { to: "node3".into() }.to_string();
        let maintenance = Reason::MaintenanceOfPrimary.to_string();
        for from in [
            S::Primary,
            S::WaitPrimary,
            S::Single,
            S::ApplySettings,
            S::JoinPrimary,
        ] {
            assert_eq!(
                classify(from, S::Demoted, &down),
                Some(Handover::Failover("postgres_down"))
            );
            // PostgreSQL down, keeper alive: the primary drains while the
            // election runs; a failover, not a switchover.
            assert_eq!(
                classify(from, S::Draining, &down),
                Some(Handover::Failover("postgres_down"))
            );
            // As older monitors wrote it.
            assert_eq!(
                classify(
                    from,
                    S::Draining,
                    "PostgreSQL on primary node1 stays down while its keeper runs: failing over"
                ),
                Some(Handover::Failover("postgres_down"))
            );
            assert_eq!(
                classify(from, S::Demoted, &replaced),
                Some(Handover::Failover("primary_unhealthy"))
            );
            assert_eq!(
                classify(from, S::Draining, &planned),
                Some(Handover::Switchover("perform_failover"))
            );
            assert_eq!(
                classify(from, S::Draining, &to_node),
                Some(Handover::Switchover("perform_switchover"))
            );
            assert_eq!(
                classify(from, S::PrepareMaintenance, &maintenance),
                Some(Handover::Switchover("maintenance"))
            );
            assert_eq!(
                classify(from, S::Draining, "anything else"),
                Some(Handover::Switchover("other"))
            );
        }
        // The second half of a planned hand-over is not another failover.
        assert_eq!(classify(S::Draining, S::Demoted, &replaced), None);
        assert_eq!(
            classify(S::PrepareMaintenance, S::Maintenance, &replaced),
            None
        );
        for from in S::ALL {
            for to in S::ALL {
                let expected = from.is_writable_primary()
                    && matches!(to, S::Demoted | S::Draining | S::PrepareMaintenance);
                assert_eq!(
                    classify(from, to, &planned).is_some(),
                    expected,
                    "{from} → {to}"
                );
            }
        }
    }

    #[test]
    fn templates_match_only_their_own_text() {
        let down = Reason::PrimaryPostgresDown {
            primary: MARK.into(),
            why: MARK.into(),
        };
        assert!(displays_as(
            &Reason::PrimaryPostgresDown {
                primary: "a.b-c".into(),
                why: "down for 20001 ms, longer than postgres_restart_timeout 20000 ms".into(),
            }
            .to_string(),
            &down
        ));
        assert!(!displays_as("PostgreSQL on primary x", &down));
        assert!(!displays_as(&Reason::PlannedFailover.to_string(), &down));
        assert!(displays_as(
            &Reason::PlannedFailover.to_string(),
            &Reason::PlannedFailover
        ));
        assert!(!displays_as("x", &Reason::PlannedFailover));
    }

    fn node(name: &str, reported: S, lsn: u64) -> NodeView {
        NodeView {
            formation: "default".into(),
            group: 0,
            name: name.into(),
            reported,
            goal: reported,
            pg_running: true,
            health: Health::Good,
            heartbeat_age: Some(0.25),
            lsn,
            timeline: 2,
            candidate_priority: 50,
        }
    }

    #[test]
    fn node_gauges() {
        let nodes = vec![
            node("node1", S::Primary, 5000),
            node("node2", S::Secondary, 4000),
        ];
        let text = render_nodes(&nodes, true);
        for line in [
            "pgpilot_monitor_database_up 1",
            "pgpilot_node_state{formation=\"default\",group=\"0\",node=\"node1\",reported=\"primary\",goal=\"primary\"} 1",
            "pgpilot_node_reported_state_code{formation=\"default\",group=\"0\",node=\"node2\"} 9",
            "pgpilot_node_is_primary{formation=\"default\",group=\"0\",node=\"node1\"} 1",
            "pgpilot_node_is_primary{formation=\"default\",group=\"0\",node=\"node2\"} 0",
            "pgpilot_node_replication_lag_bytes{formation=\"default\",group=\"0\",node=\"node1\"} 0",
            "pgpilot_node_replication_lag_bytes{formation=\"default\",group=\"0\",node=\"node2\"} 1000",
            "pgpilot_node_heartbeat_age_seconds{formation=\"default\",group=\"0\",node=\"node2\"} 0.25",
            "pgpilot_node_timeline{formation=\"default\",group=\"0\",node=\"node1\"} 2",
            "pgpilot_formation_nodes{formation=\"default\",state=\"secondary\"} 1",
            "pgpilot_formation_nodes{formation=\"default\",state=\"catchingup\"} 0",
            "pgpilot_formation_writable_primary{formation=\"default\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every family has HELP and TYPE before its samples.
        let mut described = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# HELP ") {
                described.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(described.contains(name), "{name} has no HELP");
                assert!(name.starts_with("pgpilot_"), "{name}");
            }
        }
    }

    #[test]
    fn no_primary_no_lag_and_labels_escaped() {
        let mut down = node("node1", S::Primary, 5000);
        down.pg_running = false;
        let mut odd = node("we\"ird", S::Secondary, 10);
        odd.heartbeat_age = None;
        odd.health = Health::Unknown;
        let text = render_nodes(&[down, odd], true);
        assert!(
            !text.contains("pgpilot_node_replication_lag_bytes{"),
            "{text}"
        );
        assert!(text.contains("pgpilot_formation_writable_primary{formation=\"default\"} 0"));
        assert!(text.contains("node=\"we\\\"ird\""), "{text}");
        assert!(text.contains(
            "pgpilot_node_health{formation=\"default\",group=\"0\",node=\"we\\\"ird\"} -1"
        ));
        assert!(!text.contains(
            "pgpilot_node_heartbeat_age_seconds{formation=\"default\",group=\"0\",node=\"we"
        ));
        // The monitor took the role away: no longer counted as the primary.
        let mut demoted = node("node1", S::Primary, 5000);
        demoted.goal = S::Demoted;
        let text = render_nodes(&[demoted], true);
        assert!(
            text.contains(
                "pgpilot_node_is_primary{formation=\"default\",group=\"0\",node=\"node1\"} 0"
            ),
            "{text}"
        );
        let empty = render_nodes(&[], false);
        assert!(empty.contains("pgpilot_monitor_database_up 0"));
    }

    fn event(id: i64) -> EventRow {
        EventRow {
            event_id: id,
            at: Utc::now(),
            formation: "default".into(),
            group_id: 0,
            node_id: 1,
            node_name: "node1".into(),
            reported: "primary".into(),
            goal_from: "primary".into(),
            goal_to: "draining".into(),
            kind: None,
            reason: String::new(),
        }
    }

    #[test]
    fn every_event_is_counted_once_even_out_of_commit_order() {
        let mut c = EventCursor {
            settled: 10,
            counted: Default::default(),
        };
        // 12 committed before 11.
        let ids = |v: Vec<&EventRow>| v.iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(c.take(&[(event(12), false)])), vec![12]);
        assert_eq!(c.settled, 10);
        assert_eq!(
            ids(c.take(&[(event(11), false), (event(12), false)])),
            vec![11]
        );
        assert_eq!(
            ids(c.take(&[(event(11), true), (event(12), false), (event(13), false)])),
            vec![13]
        );
        assert_eq!(c.settled, 11);
        assert_eq!(
            ids(c.take(&[(event(12), true), (event(13), true)])),
            Vec::<i64>::new()
        );
        assert_eq!(c.settled, 13);
        assert!(c.counted.is_empty());
    }

    #[test]
    fn grpc_labels_are_bounded() {
        assert_eq!(grpc_method("/pgpilot.v1.Monitor/NodeActive"), "NodeActive");
        assert_eq!(grpc_method("/pgpilot.v1.Monitor/Nope"), "unknown");
        assert_eq!(grpc_method("/other/NodeActive"), "unknown");
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(14), "Unavailable");
        assert_eq!(grpc_code_name(99), "Unknown");
    }

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
