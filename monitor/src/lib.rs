//! The pgpilot monitor: owns the truth about every node, runs the group
//! state machine, and serves keepers and operators over gRPC.

pub mod auth;
pub mod certs;
pub mod cli;
pub mod config;
pub mod core;
pub mod duties;
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

use crate::config::{MonitorConfig, Transport, TransportMode};
use crate::store::{MachineSettings, Store};

/// How long shutdown waits for the background duties to stop.
const DUTIES_STOP: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the monitor on `listener` until `shutdown` resolves, serving gRPC
/// as `transport` says; with `metrics`, also serve `/metrics` on its
/// listener.
pub async fn run(
    config: MonitorConfig,
    database_url: &str,
    transport: Transport,
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
    let mut server = tonic::transport::Server::builder();
    match transport.mode {
        TransportMode::Plaintext => tracing::warn!(
            "plaintext = true: gRPC is served without TLS and without client authentication; \
             everyone who can reach the listen address can read the cluster state and promote \
             or demote nodes"
        ),
        TransportMode::Tls {
            client_certs: false,
            token: false,
        } => tracing::warn!(
            "TLS without client authentication: everyone who can reach the listen address can \
             run operator commands; set tls_client_ca_file (mutual TLS) or token_file"
        ),
        TransportMode::Tls { .. } => {}
    }
    if let Some((cert, key)) = &transport.identity {
        let mut tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .timeout(config::TLS_HANDSHAKE_TIMEOUT);
        if let Some(ca) = &transport.client_ca {
            // A certificate not signed by this CA fails the handshake; a
            // client without one reaches the service, which answers
            // Unauthenticated with a sentence (see `auth`).
            tls = tls
                .client_ca_root(tonic::transport::Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        server = server.tls_config(tls).map_err(|e| {
            anyhow::anyhow!(
                "cannot use the TLS certificate and key (tls_cert_file, tls_key_file, tls_client_ca_file): {e}"
            )
        })?;
    }
    let mode = match transport.mode {
        TransportMode::Plaintext => "plaintext",
        TransportMode::Tls {
            client_certs: true,
            token: true,
        } => "mutual TLS and token",
        TransportMode::Tls {
            client_certs: true,
            token: false,
        } => "mutual TLS",
        TransportMode::Tls {
            client_certs: false,
            token: true,
        } => "TLS and token",
        TransportMode::Tls { .. } => "TLS",
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %config::redact_url(database_url),
        transport = mode,
        "monitor ready"
    );
    let local = listener.local_addr()?;
    let duties = duties::Duties {
        me: duties::new_monitor_id(),
        url: config.advertise_url.clone().unwrap_or_else(|| {
            let scheme = match transport.mode {
                TransportMode::Plaintext => "http",
                TransportMode::Tls { .. } => "https",
            };
            format!("{scheme}://{local}")
        }),
        lease_timeout: config.lease_timeout,
        interval: config.health_check_interval,
        check_timeout: config.health_check_timeout,
        check_user: config.health_check_user.clone(),
        event_retention: config.event_retention,
    };
    tracing::info!(monitor_id = %duties.me, url = %duties.url, "monitor identity");
    let me = duties.me.clone();
    let (stop_duties, duties_stop) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(duties::run(store.clone(), duties, duties_stop));
    let (stop_streams, streams_stop) = tokio::sync::watch::channel(false);
    let service =
        service::MonitorService::with_auth(store.clone(), auth::Authenticator::new(&transport))
            .answered_by(&me)
            .stopping(streams_stop)
            .waking_keepers();
    // Graceful shutdown waits for every HTTP/2 stream: the keepers'
    // heartbeat streams are told to end first.
    let shutdown = async move {
        shutdown.await;
        let _ = stop_streams.send(true);
    };
    let result = server
        .layer(metrics::GrpcMetricsLayer)
        .add_service(
            MonitorServer::new(service).max_decoding_message_size(config.max_message_bytes),
        )
        .serve_with_incoming_shutdown(
            // Replies go out at once: with Nagle's algorithm a reply
            // written in two pieces waited for the keeper's delayed ACK
            // (40 ms) about one time in a hundred.
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |accepted| {
                    if let Ok(socket) = &accepted {
                        let _ = socket.set_nodelay(true);
                    }
                    accepted
                },
            ),
            shutdown,
        )
        .await;
    // Stop the duties and wait for the lease renewal to end (a renewal
    // cut in the middle would still reach the database, after the release
    // below), then let the lease go.
    let _ = stop_duties.send(true);
    if tokio::time::timeout(DUTIES_STOP, background).await.is_err() {
        tracing::warn!("the background duties did not stop in time");
    }
    // Let another monitor take the duties at once rather than after the
    // lease runs out.
    if let Err(e) = store.release_lease(&me).await {
        tracing::warn!(error = %e, "cannot release the lease on the background duties");
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    result.map_err(|e| anyhow::anyhow!("gRPC server failed: {e}"))
}
