//! The pgpilot monitor: owns the truth about every node, runs the group
//! state machine, and serves keepers and operators over gRPC.

pub mod cli;
pub mod config;
pub mod error;
pub mod fsm;
pub mod health;
pub mod names;
pub mod service;
pub mod store;

use std::future::Future;

use pgpilot_proto::pb::monitor_server::MonitorServer;
use tokio::net::TcpListener;

use crate::config::MonitorConfig;
use crate::store::{MachineSettings, Store};

/// Run the monitor on `listener` until `shutdown` resolves.
pub async fn run(
    config: MonitorConfig,
    database_url: &str,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::connect(
        database_url,
        MachineSettings {
            node_timeout: config.node_timeout,
            fence_margin: config.fence_margin,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot use the monitor database: {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "monitor ready");
    let health = tokio::spawn(health::run(
        store.clone(),
        config.health_check_interval,
        config.health_check_timeout,
        config.health_check_user.clone(),
    ));
    let result = tonic::transport::Server::builder()
        .add_service(MonitorServer::new(service::MonitorService::new(store)))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    health.abort();
    result.map_err(|e| anyhow::anyhow!("gRPC server failed: {e}"))
}
