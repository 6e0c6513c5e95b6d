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
