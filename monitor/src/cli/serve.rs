//! The `run` subcommand: from a configuration file to a serving monitor —
//! load and check the settings, bind the listeners, and serve until
//! SIGTERM or Ctrl-C.

use std::path::Path;

use tokio::signal::unix::{signal, SignalKind};

use super::error::CliError;
use crate::config::MonitorConfig;

/// Serve as the configuration at `config_path` says until SIGTERM or
/// Ctrl-C. Settings that cannot be used are usage errors (exit 2); a
/// listener that cannot be bound or a server that fails is exit 1.
pub async fn run(config_path: &Path) -> Result<(), CliError> {
    let usage = |e: crate::config::ConfigError| CliError::Usage(e.to_string());
    let config = MonitorConfig::load(config_path).map_err(usage)?;
    let url = config.resolve_database_url().map_err(usage)?;
    let transport = config.transport().map_err(usage)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| CliError::Failed(format!("cannot listen on {}: {e}", config.listen)))?;
    let metrics = match config.metrics_listen {
        None => None,
        Some(addr) => {
            let metrics_listener = crate::metrics::bind(addr).await.map_err(CliError::Failed)?;
            let handle = crate::metrics::install()
                .map_err(|e| CliError::Failed(format!("cannot set up metrics: {e}")))?;
            Some((metrics_listener, handle))
        }
    };
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::Failed(format!("cannot catch SIGTERM: {e}")))?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
    };
    crate::run(config, &url, transport, listener, metrics, shutdown)
        .await
        .map_err(|e| CliError::Failed(e.to_string()))
}
