//! The HTTP endpoint `GET /metrics`: binding `metrics_listen`, the scraper
//! that counts new events and renders the gauges on each request, and the
//! server that answers with the Prometheus text.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::events::{touch_formation, EventCursor};
use super::render::render_nodes;
use super::source::MetricsSource;

/// Renders one scrape: the recorder's metrics, after counting the events
/// written since the previous scrape, and the gauges of a fresh snapshot.
struct Scraper<M> {
    source: Arc<M>,
    handle: PrometheusHandle,
    cursor: Arc<tokio::sync::Mutex<EventCursor>>,
}

impl<M> Clone for Scraper<M> {
    fn clone(&self) -> Self {
        Scraper {
            source: Arc::clone(&self.source),
            handle: self.handle.clone(),
            cursor: Arc::clone(&self.cursor),
        }
    }
}

impl<M: MetricsSource> Scraper<M> {
    async fn scrape(&self) -> String {
        let mut database_up = self.cursor.lock().await.count_new(&*self.source).await;
        let views = match self.source.snapshot().await {
            Ok(views) => views,
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

/// Serve `GET /metrics` on `listener` from `source` until `shutdown`
/// resolves. Events are counted from those written after this call.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: impl MetricsSource,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let start = source
        .last_event_id()
        .await
        .map_err(|e| anyhow::anyhow!("metrics: cannot read the event table: {e}"))?;
    let scraper = Scraper {
        source: Arc::new(source),
        handle,
        cursor: Arc::new(tokio::sync::Mutex::new(EventCursor::after(start))),
    };
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .with_state(scraper);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics_handler<M: MetricsSource>(State(scraper): State<Scraper<M>>) -> Response {
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
    use std::sync::OnceLock;

    use pgpilot_proto::ReplicationState as S;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::fsm::{Health, Reason};
    use crate::metrics::{install, GoalChange, NodeView};

    /// The process-wide recorder, installed once for this test binary.
    fn handle() -> PrometheusHandle {
        static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
        HANDLE
            .get_or_init(|| install().expect("the recorder installs once"))
            .clone()
    }

    /// A database held in memory; `up: false` fails every read.
    struct FakeSource {
        up: bool,
        nodes: Vec<NodeView>,
        events: Vec<GoalChange>,
    }

    impl MetricsSource for FakeSource {
        type Error = &'static str;

        async fn snapshot(&self) -> Result<Vec<NodeView>, Self::Error> {
            self.check()?;
            Ok(self.nodes.clone())
        }

        async fn last_event_id(&self) -> Result<i64, Self::Error> {
            self.check()?;
            Ok(10)
        }

        async fn events_after(
            &self,
            after: i64,
            limit: i64,
        ) -> Result<Vec<GoalChange>, Self::Error> {
            self.check()?;
            Ok(self
                .events
                .iter()
                .filter(|e| e.event_id > after)
                .take(limit as usize)
                .cloned()
                .collect())
        }
    }

    impl FakeSource {
        fn check(&self) -> Result<(), &'static str> {
            if self.up {
                Ok(())
            } else {
                Err("the database is down")
            }
        }
    }

    fn node(formation: &str, name: &str, reported: S, goal: S) -> NodeView {
        NodeView {
            formation: formation.into(),
            group: 0,
            name: name.into(),
            reported,
            goal,
            pg_running: true,
            health: Health::Good,
            heartbeat_age: Some(1.5),
            lsn: 7000,
            timeline: 3,
            candidate_priority: 50,
            formation_paused: false,
            pending_restart: 0,
        }
    }

    fn change(id: i64, formation: &str, from: S, to: S, reason: &Reason) -> GoalChange {
        GoalChange {
            event_id: id,
            formation: formation.into(),
            goal_from: from.as_str().into(),
            goal_to: to.as_str().into(),
            kind: Some(reason.kind().to_string()),
            settled: true,
        }
    }

    async fn get_metrics(addr: SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: monitor\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn scrapes_count_new_events_once_and_show_the_nodes() {
        let f = "fake-formation";
        let replaced = Reason::OldPrimaryReplaced {
            new_primary: "node2".into(),
        };
        let source = FakeSource {
            up: true,
            nodes: vec![
                node(f, "node1", S::Primary, S::Demoted),
                node(f, "node2", S::Secondary, S::PreparePromotion),
            ],
            events: vec![
                // Written before the server started: not counted.
                change(9, f, S::Primary, S::Demoted, &replaced),
                change(10, f, S::Primary, S::Demoted, &replaced),
                change(11, f, S::Primary, S::Demoted, &replaced),
                change(12, f, S::Secondary, S::PreparePromotion, &replaced),
            ],
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, source, handle(), async {
            let _ = stopped.await;
        }));
        let mut reply = String::new();
        // The second scrape must not count the same events again.
        for _ in 0..2 {
            reply = get_metrics(addr).await;
        }
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("text/plain; version=0.0.4"), "{reply}");
        for line in [
            "pgpilot_monitor_database_up 1",
            "pgpilot_node_state{formation=\"fake-formation\",group=\"0\",node=\"node1\",reported=\"primary\",goal=\"demoted\"} 1",
            "pgpilot_node_is_primary{formation=\"fake-formation\",group=\"0\",node=\"node1\"} 0",
            "pgpilot_node_heartbeat_age_seconds{formation=\"fake-formation\",group=\"0\",node=\"node2\"} 1.5",
            "pgpilot_failovers_total{formation=\"fake-formation\",reason=\"primary_unhealthy\"} 1",
            "pgpilot_failovers_total{formation=\"fake-formation\",reason=\"postgres_down\"} 0",
            "pgpilot_switchovers_total{formation=\"fake-formation\",reason=\"perform_failover\"} 0",
            "pgpilot_goal_changes_total{formation=\"fake-formation\",from=\"primary\",to=\"demoted\"} 1",
            "pgpilot_goal_changes_total{formation=\"fake-formation\",from=\"secondary\",to=\"prepare_promotion\"} 1",
        ] {
            assert!(
                reply.lines().any(|l| l == line),
                "missing {line:?} in\n{reply}"
            );
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_unreadable_database_is_said_not_hidden() {
        let down = || FakeSource {
            up: false,
            nodes: vec![node("unread", "node1", S::Primary, S::Primary)],
            events: Vec::new(),
        };
        let scraper = Scraper {
            source: Arc::new(down()),
            handle: handle(),
            cursor: Arc::new(tokio::sync::Mutex::new(EventCursor::after(0))),
        };
        let text = scraper.scrape().await;
        assert!(
            text.lines().any(|l| l == "pgpilot_monitor_database_up 0"),
            "{text}"
        );
        assert!(!text.contains("node=\"node1\""), "{text}");

        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let error = serve(listener, down(), handle(), std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "metrics: cannot read the event table: the database is down"
        );
    }
}
