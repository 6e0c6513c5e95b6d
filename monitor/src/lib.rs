//! The pgpilot monitor: owns the truth about every node, runs the group
//! state machine, and serves keepers and operators over gRPC.

pub mod cli;
pub mod config;
pub mod error;
pub mod fsm;
pub mod health;
pub mod metrics;
pub mod names;
pub mod service;
pub mod store;

use std::future::Future;

use pgpilot_proto::pb::monitor_server::MonitorServer;
use tokio::net::TcpListener;

use crate::config::MonitorConfig;
use crate::store::{MachineSettings, Store};

/// Run the monitor on `listener` until `shutdown` resolves; with
/// `metrics`, also serve `/metrics` on its listener.
pub async fn run(
    config: MonitorConfig,
    database_url: &str,
    listener: TcpListener,
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::connect(
        database_url,
        MachineSettings {
            node_timeout: config.node_timeout,
            fence_margin: config.fence_margin,
            postgres_restart_timeout: config.postgres_restart_timeout,
        },
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot use the monitor database {}: {}",
            config::redact_url(database_url),
            config::redact(&e.to_string(), database_url)
        )
    })?;
    let metrics_server = match metrics {
        None => None,
        Some((metrics_listener, handle)) => {
            tracing::info!(metrics_listen = %metrics_listener.local_addr()?, "metrics at /metrics");
            let server = metrics::serve(
                metrics_listener,
                store.clone(),
                handle,
                std::future::pending(),
            );
            Some(tokio::spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "metrics server failed");
                }
            }))
        }
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %config::redact_url(database_url),
        "monitor ready"
    );
    let health = tokio::spawn(health::run(
        store.clone(),
        config.health_check_interval,
        config.health_check_timeout,
        config.health_check_user.clone(),
    ));
    let result = tonic::transport::Server::builder()
        .layer(metrics::GrpcMetricsLayer)
        .add_service(MonitorServer::new(service::MonitorService::new(store)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    health.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    result.map_err(|e| anyhow::anyhow!("gRPC server failed: {e}"))
}
