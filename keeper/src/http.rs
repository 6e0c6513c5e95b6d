//! The keeper's HTTP server (`http_listen`), for load balancers and
//! Prometheus:
//!
//! - `GET /metrics`: Prometheus text (see `metrics.rs`);
//! - `GET /health`: 200 while the local PostgreSQL runs, else 503;
//! - `GET /primary`: 200 only when the local PostgreSQL accepts writes, the
//!   keeper's reported state and goal are both a writable-primary state and
//!   the node is not fenced, else 503;
//! - `GET /replica[?lag=16MB]`: 200 on a running standby streaming from its
//!   primary (and at most `lag` bytes behind it), else 503; a bad `lag` is
//!   400 with one sentence;
//! - `GET /read-only[?lag=…]`: 200 on the primary or on such a standby;
//! - `GET /sync[?lag=…]`, `GET /async[?lag=…]`: 200 on such a standby that
//!   is (is not) in its primary's synchronous set, as the monitor last said;
//! - `GET /readiness`: 200 while PostgreSQL takes the connections its role
//!   should (the primary writes, a standby streams), else 503;
//! - `GET /liveness`: 200 while the keeper's loop runs (it began a step or
//!   sent a keepalive within [`liveness_limit`]); PostgreSQL is not asked.
//!
//! With `noloadbalance = true` the standby answers of `/replica`,
//! `/read-only`, `/sync` and `/async` are 503: the node stays out of the
//! read pools (it still answers `/primary` when it is the primary). So
//! does a delayed standby (an apply delay above 0): its data is that old.
//!
//! Each answers with a JSON body: state, goal, pg_running, in_recovery,
//! streaming, fenced, lag_bytes, and `monitor`, the URL of the monitor the
//! keeper talks to (one of its `monitor` list).
//!
//! PostgreSQL is observed live on every request (its own connection, so a
//! long action of the keeper's loop never delays a check); what the keeper
//! knows (state, goal, fenced, the primary's LSN) comes from the shared
//! [`crate::status::KeeperStatus`] its loop keeps up to date. The decisions are pure
//! functions of both, tested below.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use pgpilot_proto::ReplicationState as S;
use serde::Deserialize;

use crate::pg::LocalPostgres;
use crate::status::{facts, lock, Facts, SharedStatus};

/// How long one request waits for PostgreSQL to answer before it calls it
/// down.
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn is_healthy(f: &Facts) -> bool {
    f.pg_running
}

/// Writable, and meant to be: a node the monitor is taking the primary
/// role from (goal draining, demoted, …) is no longer advertised.
pub fn is_primary(f: &Facts) -> bool {
    f.pg_running
        && !f.in_recovery
        && !f.fenced
        && f.state.is_writable_primary()
        && f.goal.is_writable_primary()
}

/// A running standby streaming from its primary, at most `max_lag` bytes
/// behind it when a limit is given.
pub fn is_replica(f: &Facts, max_lag: Option<u64>) -> bool {
    f.pg_running
        && f.in_recovery
        && f.streaming
        && f.state.is_following()
        && f.state != S::PreparePromotion
        && match max_lag {
            None => true,
            Some(limit) => f.lag_bytes.is_some_and(|lag| lag <= limit),
        }
}

/// What the endpoints are configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Keep this node's standby answers out of the read pools.
    pub noloadbalance: bool,
    /// `/liveness` fails once the loop was last seen longer ago.
    pub liveness_limit: Duration,
}

impl Settings {
    pub fn of(config: &crate::config::KeeperConfig) -> Settings {
        Settings {
            noloadbalance: config.noloadbalance,
            liveness_limit: liveness_limit(config.heartbeat_interval),
        }
    }
}

/// How long the loop may go unseen before `/liveness` fails: ten
/// heartbeat intervals, at least 10 s (a plan's actions send keepalives
/// every interval, so only a loop that hangs stays silent this long).
pub fn liveness_limit(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval * 10).max(Duration::from_secs(10))
}

/// A standby a load balancer may send reads to.
pub fn is_balanced_replica(f: &Facts, max_lag: Option<u64>, s: Settings) -> bool {
    !s.noloadbalance && !f.delayed && is_replica(f, max_lag)
}

/// Serves reads: the primary, or a standby in the read pool.
pub fn is_read_only(f: &Facts, max_lag: Option<u64>, s: Settings) -> bool {
    is_primary(f) || is_balanced_replica(f, max_lag, s)
}

/// A standby in the read pool that its primary waits for.
pub fn is_sync(f: &Facts, max_lag: Option<u64>, s: Settings) -> bool {
    is_balanced_replica(f, max_lag, s) && f.synchronous
}

/// A standby in the read pool that its primary does not wait for.
pub fn is_async(f: &Facts, max_lag: Option<u64>, s: Settings) -> bool {
    is_balanced_replica(f, max_lag, s) && !f.synchronous
}

/// PostgreSQL takes the connections its role should.
pub fn is_ready(f: &Facts) -> bool {
    is_primary(f) || is_replica(f, None)
}

/// The keeper's loop runs.
pub fn is_live(loop_seen_ago: Duration, limit: Duration) -> bool {
    loop_seen_ago <= limit
}

/// A byte count as a person writes it: `1048576`, `512kB`, `16MB`, `1GB`,
/// `1TB` (PostgreSQL's units, powers of 1024; `KiB`-style and a space are
/// accepted too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        format!(
            "lag {text:?} is not a size: give bytes like 1048576 or a number with a unit, like 512kB, 16MB or 1GB"
        )
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" | "k" => 1 << 10,
        "mb" | "mib" | "m" => 1 << 20,
        "gb" | "gib" | "g" => 1 << 30,
        "tb" | "tib" | "t" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).ok_or_else(bad)
}

struct AppState<P> {
    pg: Arc<P>,
    status: SharedStatus,
    metrics: Option<PrometheusHandle>,
    settings: Settings,
}

impl<P> Clone for AppState<P> {
    fn clone(&self) -> Self {
        AppState {
            pg: self.pg.clone(),
            status: self.status.clone(),
            metrics: self.metrics.clone(),
            settings: self.settings,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ReplicaQuery {
    lag: Option<String>,
}

/// Serve the endpoints on `listener` until `shutdown` resolves. `pg` should
/// have its own connection (not the loop's). Without a metrics handle
/// `/metrics` answers 404.
pub async fn serve<P: LocalPostgres + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    pg: Arc<P>,
    status: SharedStatus,
    metrics: Option<PrometheusHandle>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler::<P>))
        .route("/health", get(health_handler::<P>))
        .route("/primary", get(primary_handler::<P>))
        .route(
            "/replica",
            get(reads_handler::<P, { Reads::Replica as u8 }>),
        )
        .route(
            "/read-only",
            get(reads_handler::<P, { Reads::ReadOnly as u8 }>),
        )
        .route("/sync", get(reads_handler::<P, { Reads::Sync as u8 }>))
        .route("/async", get(reads_handler::<P, { Reads::Async as u8 }>))
        .route("/readiness", get(readiness_handler::<P>))
        .route("/liveness", get(liveness_handler::<P>))
        .with_state(AppState {
            pg,
            status,
            metrics,
            settings,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Bind `addr`, or say in one sentence why not.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on http_listen {addr}: {e}"))
}

/// The facts an endpoint decides on, and the monitor in use.
async fn observe<P: LocalPostgres + Send + Sync + 'static>(
    state: &AppState<P>,
) -> (Facts, Option<String>) {
    let o = tokio::time::timeout(OBSERVE_TIMEOUT, state.pg.observe())
        .await
        .unwrap_or_default();
    let status = lock(&state.status);
    (facts(&status, &o), status.monitor.clone())
}

/// The JSON every endpoint answers with.
fn body(f: &Facts, monitor: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "state": f.state.as_str(),
        "goal": f.goal.as_str(),
        "pg_running": f.pg_running,
        "in_recovery": f.in_recovery,
        "streaming": f.streaming,
        "fenced": f.fenced,
        "lag_bytes": f.lag_bytes,
        "monitor": monitor,
    })
}

fn answer(ok: bool, f: &Facts, monitor: Option<&str>) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = body(f, monitor);
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn health_handler<P: LocalPostgres + Send + Sync + 'static>(
    State(state): State<AppState<P>>,
) -> Response {
    let (f, monitor) = observe(&state).await;
    answer(is_healthy(&f), &f, monitor.as_deref())
}

async fn primary_handler<P: LocalPostgres + Send + Sync + 'static>(
    State(state): State<AppState<P>>,
) -> Response {
    let (f, monitor) = observe(&state).await;
    answer(is_primary(&f), &f, monitor.as_deref())
}

/// The endpoints for reads, each with an optional `lag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Reads {
    Replica,
    ReadOnly,
    Sync,
    Async,
}

impl Reads {
    const ALL: [Reads; 4] = [Reads::Replica, Reads::ReadOnly, Reads::Sync, Reads::Async];

    fn path(self) -> &'static str {
        match self {
            Reads::Replica => "/replica",
            Reads::ReadOnly => "/read-only",
            Reads::Sync => "/sync",
            Reads::Async => "/async",
        }
    }

    fn decide(self, f: &Facts, max_lag: Option<u64>, s: Settings) -> bool {
        match self {
            Reads::Replica => is_balanced_replica(f, max_lag, s),
            Reads::ReadOnly => is_read_only(f, max_lag, s),
            Reads::Sync => is_sync(f, max_lag, s),
            Reads::Async => is_async(f, max_lag, s),
        }
    }
}

async fn reads_handler<P: LocalPostgres + Send + Sync + 'static, const R: u8>(
    State(state): State<AppState<P>>,
    query: Result<Query<ReplicaQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let reads = Reads::ALL[usize::from(R)];
    let max_lag = match query {
        Ok(Query(q)) => match q.lag.as_deref().map(parse_size).transpose() {
            Ok(limit) => limit,
            Err(sentence) => {
                return (StatusCode::BAD_REQUEST, format!("{sentence}\n")).into_response()
            }
        },
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "bad query string ({e}): the only parameter is lag, e.g. {}?lag=16MB\n",
                    reads.path()
                ),
            )
                .into_response()
        }
    };
    let (f, monitor) = observe(&state).await;
    answer(
        reads.decide(&f, max_lag, state.settings),
        &f,
        monitor.as_deref(),
    )
}

async fn readiness_handler<P: LocalPostgres + Send + Sync + 'static>(
    State(state): State<AppState<P>>,
) -> Response {
    let (f, monitor) = observe(&state).await;
    answer(is_ready(&f), &f, monitor.as_deref())
}

/// The loop's liveness only: PostgreSQL is not asked (a keeper waiting on a
/// stopped PostgreSQL is alive).
async fn liveness_handler<P: LocalPostgres + Send + Sync + 'static>(
    State(state): State<AppState<P>>,
) -> Response {
    let seen_ago = lock(&state.status).loop_seen.elapsed();
    let limit = state.settings.liveness_limit;
    let code = if is_live(seen_ago, limit) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "loop_seen_ms_ago": seen_ago.as_millis() as u64,
        "limit_ms": limit.as_millis() as u64,
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn metrics_handler<P: LocalPostgres + Send + Sync + 'static>(
    State(state): State<AppState<P>>,
) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response();
    };
    let o = tokio::time::timeout(OBSERVE_TIMEOUT, state.pg.observe())
        .await
        .unwrap_or_default();
    let snapshot = lock(&state.status).clone();
    let f = facts(&snapshot, &o);
    let text = crate::metrics::render(handle, &snapshot, &f, &o, Instant::now());
    (
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

    fn all_facts() -> Vec<Facts> {
        let mut out = Vec::new();
        for state in S::ALL {
            for goal in S::ALL {
                for bits in 0..128u32 {
                    let b = |i: u32| bits & (1 << i) != 0;
                    out.push(Facts {
                        state,
                        goal,
                        pg_running: b(0),
                        in_recovery: b(1),
                        streaming: b(2),
                        fenced: b(3),
                        lag_bytes: if b(4) { Some(100) } else { None },
                        synchronous: b(5),
                        delayed: b(6),
                    });
                }
            }
        }
        out
    }

    #[test]
    fn primary_needs_writes_both_states_and_no_fence() {
        for f in all_facts() {
            let expected = f.pg_running
                && !f.in_recovery
                && !f.fenced
                && matches!(
                    f.state,
                    S::Single | S::WaitPrimary | S::Primary | S::JoinPrimary | S::ApplySettings
                )
                && matches!(
                    f.goal,
                    S::Single | S::WaitPrimary | S::Primary | S::JoinPrimary | S::ApplySettings
                );
            assert_eq!(is_primary(&f), expected, "{f:?}");
        }
    }

    #[test]
    fn never_primary_and_replica_at_once() {
        for f in all_facts() {
            assert!(!(is_primary(&f) && is_replica(&f, None)), "{f:?}");
            if is_primary(&f) || is_replica(&f, None) {
                assert!(is_healthy(&f), "{f:?}");
            }
        }
    }

    #[test]
    fn replica_needs_a_streaming_standby_within_the_lag() {
        for f in all_facts() {
            let base = f.pg_running
                && f.in_recovery
                && f.streaming
                && matches!(
                    f.state,
                    S::Catchingup | S::Secondary | S::ReportLsn | S::JoinSecondary
                );
            assert_eq!(is_replica(&f, None), base, "{f:?}");
            assert_eq!(
                is_replica(&f, Some(100)),
                base && f.lag_bytes.is_some(),
                "{f:?}"
            );
            assert!(!is_replica(&f, Some(99)), "{f:?}");
        }
    }

    #[test]
    fn read_pools_split_by_role_and_synchronous_set_and_honour_noloadbalance() {
        let pool = Settings {
            noloadbalance: false,
            liveness_limit: Duration::from_secs(10),
        };
        let kept_out = Settings {
            noloadbalance: true,
            ..pool
        };
        for f in all_facts() {
            for lag in [None, Some(100), Some(99)] {
                // A delayed standby serves old data: out of the read pools.
                let replica = is_replica(&f, lag) && !f.delayed;
                assert_eq!(Reads::Replica.decide(&f, lag, pool), replica, "{f:?}");
                assert_eq!(
                    Reads::ReadOnly.decide(&f, lag, pool),
                    is_primary(&f) || replica,
                    "{f:?}"
                );
                assert_eq!(Reads::Sync.decide(&f, lag, pool), replica && f.synchronous);
                assert_eq!(
                    Reads::Async.decide(&f, lag, pool),
                    replica && !f.synchronous
                );
                // A standby kept out of the pools answers none of them; a
                // primary still serves reads.
                assert!(!Reads::Replica.decide(&f, lag, kept_out));
                assert!(!Reads::Sync.decide(&f, lag, kept_out));
                assert!(!Reads::Async.decide(&f, lag, kept_out));
                assert_eq!(Reads::ReadOnly.decide(&f, lag, kept_out), is_primary(&f));
            }
            assert_eq!(
                is_ready(&f),
                is_primary(&f) || is_replica(&f, None),
                "{f:?}"
            );
            if f.delayed {
                assert!(!Reads::Replica.decide(&f, None, pool), "{f:?}");
            }
            if is_ready(&f) {
                assert!(is_healthy(&f), "{f:?}");
            }
        }
    }

    #[test]
    fn liveness_is_the_loop_seen_within_ten_intervals() {
        assert_eq!(
            liveness_limit(Duration::from_millis(500)),
            Duration::from_secs(10)
        );
        assert_eq!(
            liveness_limit(Duration::from_secs(2)),
            Duration::from_secs(20)
        );
        let limit = Duration::from_secs(10);
        assert!(is_live(Duration::from_secs(3), limit));
        assert!(is_live(limit, limit));
        assert!(!is_live(limit + Duration::from_millis(1), limit));
        for r in Reads::ALL {
            assert_eq!(Reads::ALL[r as usize], r);
        }
    }

    #[test]
    fn the_answer_names_the_monitor_in_use() {
        let f = all_facts().remove(0);
        let b = body(&f, Some("https://m2:7430"));
        assert_eq!(b["monitor"], "https://m2:7430");
        assert_eq!(b["state"], f.state.as_str());
        assert!(body(&f, None)["monitor"].is_null());
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512kB", 512 << 10),
            ("16MB", 16 << 20),
            ("16 MB", 16 << 20),
            ("16mib", 16 << 20),
            ("1GB", 1 << 30),
            ("2TB", 2 << 40),
            ("10B", 10),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for text in [
            "",
            "MB",
            "-1",
            "1.5MB",
            "16XB",
            "ten",
            "99999999999999999999",
            "99999999TB",
        ] {
            let err = parse_size(text).unwrap_err();
            assert!(err.contains("is not a size"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
