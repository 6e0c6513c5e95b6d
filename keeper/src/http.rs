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
//!   400 with one sentence.
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
}

impl<P> Clone for AppState<P> {
    fn clone(&self) -> Self {
        AppState {
            pg: self.pg.clone(),
            status: self.status.clone(),
            metrics: self.metrics.clone(),
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
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler::<P>))
        .route("/health", get(health_handler::<P>))
        .route("/primary", get(primary_handler::<P>))
        .route("/replica", get(replica_handler::<P>))
        .with_state(AppState {
            pg,
            status,
            metrics,
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

async fn replica_handler<P: LocalPostgres + Send + Sync + 'static>(
    State(state): State<AppState<P>>,
    query: Result<Query<ReplicaQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
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
                    "bad query string ({e}): the only parameter is lag, e.g. /replica?lag=16MB\n"
                ),
            )
                .into_response()
        }
    };
    let (f, monitor) = observe(&state).await;
    answer(is_replica(&f, max_lag), &f, monitor.as_deref())
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
                for bits in 0..32u32 {
                    let b = |i: u32| bits & (1 << i) != 0;
                    out.push(Facts {
                        state,
                        goal,
                        pg_running: b(0),
                        in_recovery: b(1),
                        streaming: b(2),
                        fenced: b(3),
                        lag_bytes: if b(4) { Some(100) } else { None },
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
