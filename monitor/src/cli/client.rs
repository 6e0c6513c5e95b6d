//! The operator's gRPC client of a running monitor: one method per RPC the
//! CLI uses, and every failure turned into a [`CliError`] that says what to
//! check (a wrong URL scheme, a certificate, a monitor that is not there).

use std::time::Duration;

use pgpilot_proto::pb;
use pgpilot_proto::security::{self, ClientSecurity};

use super::error::CliError;

/// How long connecting to the monitor may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Client {
    inner: security::Client,
    url: String,
}

impl Client {
    /// Connect to the monitor at `url` with the TLS settings and token of
    /// `sec` (checked against the URL first: exit 2 when they do not fit).
    pub async fn connect(url: &str, sec: &ClientSecurity) -> Result<Client, CliError> {
        let usage = |e: security::SecurityError| CliError::Usage(e.to_string());
        let endpoint = sec
            .endpoint(url, &security::CLI_NAMES)
            .map_err(usage)?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let credentials = sec.credentials(url).map_err(usage)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable_error(url, &error_chain(&e)))?;
        Ok(Client {
            inner: security::client(channel, credentials),
            url: url.to_string(),
        })
    }

    /// Connect to the first of `urls` that answers, in order; a setting
    /// that does not fit a URL ends at once (exit 2), and when none
    /// answers the error names each one.
    pub async fn connect_any(urls: &[String], sec: &ClientSecurity) -> Result<Client, CliError> {
        let mut unreachable = Vec::new();
        for url in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            match Client::connect(url, sec).await {
                Ok(client) => return Ok(client),
                Err(CliError::Unreachable(m)) => unreachable.push(m),
                Err(other) => return Err(other),
            }
        }
        match unreachable.len() {
            0 => Err(CliError::Usage(
                "no monitor URL given: set --monitor or PGPILOT_MONITOR, e.g. https://10.0.0.5:7430".into(),
            )),
            1 => Err(CliError::Unreachable(unreachable.remove(0))),
            n => Err(CliError::Unreachable(format!(
                "none of the {n} monitors answered: {}",
                unreachable.join("; ")
            ))),
        }
    }

    pub async fn state(&mut self, formation: &str) -> Result<pb::FormationState, CliError> {
        self.inner
            .get_formation_state(pb::GetFormationStateRequest {
                formation: formation.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| status_error(s, &self.url))
    }

    pub async fn events(
        &mut self,
        formation: &str,
        count: u32,
    ) -> Result<Vec<pb::Event>, CliError> {
        self.inner
            .list_events(pb::ListEventsRequest {
                formation: formation.to_string(),
                count,
            })
            .await
            .map(|r| r.into_inner().events)
            .map_err(|s| status_error(s, &self.url))
    }

    /// Planned failover, or a switchover to `target` when named.
    pub async fn perform_failover(
        &mut self,
        formation: &str,
        group: u32,
        target: Option<&str>,
    ) -> Result<String, CliError> {
        self.failover(formation, group, target.unwrap_or_default(), false)
            .await
    }

    /// Let an election stuck after a double fault finish (data may be lost).
    pub async fn force_election(
        &mut self,
        formation: &str,
        group: u32,
    ) -> Result<String, CliError> {
        self.failover(formation, group, "", true).await
    }

    async fn failover(
        &mut self,
        formation: &str,
        group: u32,
        target: &str,
        allow_data_loss: bool,
    ) -> Result<String, CliError> {
        let request = pb::PerformFailoverRequest {
            formation: formation.to_string(),
            group_id: group,
            target_node: target.to_string(),
            allow_data_loss,
        };
        let reply = self.inner.perform_failover(request).await;
        self.message(reply)
    }

    pub async fn set_number_sync_standbys(
        &mut self,
        formation: &str,
        value: u32,
    ) -> Result<String, CliError> {
        let request = pb::SetNumberSyncStandbysRequest {
            formation: formation.to_string(),
            number_sync_standbys: value,
        };
        let reply = self.inner.set_number_sync_standbys(request).await;
        self.message(reply)
    }

    pub async fn set_node_settings(
        &mut self,
        formation: &str,
        node: &str,
        candidate_priority: Option<u32>,
        replication_quorum: Option<bool>,
    ) -> Result<String, CliError> {
        let request = pb::SetNodeSettingsRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            candidate_priority,
            replication_quorum,
        };
        let reply = self.inner.set_node_settings(request).await;
        self.message(reply)
    }

    pub async fn set_maintenance(
        &mut self,
        formation: &str,
        node: &str,
        enabled: bool,
    ) -> Result<String, CliError> {
        let request = pb::SetMaintenanceRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            enabled,
        };
        let reply = self.inner.set_maintenance(request).await;
        self.message(reply)
    }

    pub async fn reinit_node(&mut self, formation: &str, node: &str) -> Result<String, CliError> {
        let request = pb::ReinitNodeRequest {
            formation: formation.to_string(),
            node: node.to_string(),
        };
        let reply = self.inner.reinit_node(request).await;
        self.message(reply)
    }

    pub async fn drop_node(
        &mut self,
        formation: &str,
        node: &str,
        force: bool,
    ) -> Result<String, CliError> {
        let request = pb::DropNodeRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            force,
        };
        let reply = self.inner.drop_node(request).await;
        self.message(reply)
    }

    fn message(
        &self,
        reply: Result<tonic::Response<pb::OperationReply>, tonic::Status>,
    ) -> Result<String, CliError> {
        reply
            .map(|r| r.into_inner().message)
            .map_err(|s| status_error(s, &self.url))
    }
}

/// The [`CliError`] for a failed call to the monitor at `monitor`.
fn status_error(status: tonic::Status, monitor: &str) -> CliError {
    use tonic::Code;
    let msg = status.message().to_string();
    // A status with a source error was made by the client's own
    // transport: the monitor never answered (refused TLS, plaintext
    // against TLS, connection cut).
    if let Some(source) = std::error::Error::source(&status) {
        return unreachable_error(monitor, &format!("{msg}: {}", error_chain(source)));
    }
    match status.code() {
        Code::InvalidArgument | Code::NotFound => CliError::Usage(msg),
        Code::Unauthenticated | Code::PermissionDenied => {
            CliError::Usage(format!("the monitor at {monitor} refused: {msg}"))
        }
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal
            if is_transport_error(&msg) =>
        {
            CliError::Unreachable(format!(
                "the monitor at {monitor} is unreachable: {msg}: {}",
                connect_hint(monitor, &msg)
            ))
        }
        Code::Unavailable | Code::DeadlineExceeded => {
            CliError::Unreachable(format!("the monitor at {monitor} did not answer: {msg}"))
        }
        _ => CliError::Failed(msg),
    }
}

/// "The monitor is unreachable (what went wrong): what to check".
fn unreachable_error(monitor: &str, chain: &str) -> CliError {
    CliError::Unreachable(format!(
        "the monitor at {monitor} is unreachable ({chain}): {}",
        connect_hint(monitor, chain)
    ))
}

/// A status made by the client's transport (no answer from the service).
fn is_transport_error(msg: &str) -> bool {
    let lower = msg.to_ascii_lowercase();
    [
        "transport",
        "connect",
        "dns",
        "h2 protocol",
        "http2",
        "tls",
        "certificate",
        "broken pipe",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// What to check when the monitor cannot be reached, from the error.
fn connect_hint(url: &str, chain: &str) -> &'static str {
    let tls = security::url_uses_tls(url) == Some(true);
    let lower = chain.to_ascii_lowercase();
    if tls && (lower.contains("certificate") || lower.contains("invalid peer")) {
        "the monitor's certificate is not signed by the --tls-ca given, or does not name this host (see --tls-server-name)"
    } else if tls
        && (lower.contains("handshake")
            || lower.contains("tls")
            || lower.contains("corrupt message")
            || lower.contains("invalid content type"))
    {
        "TLS failed: if the monitor runs with plaintext = true use an http:// URL; if it requires client certificates give --tls-cert and --tls-key"
    } else if !tls
        && (lower.contains("reset")
            || lower.contains("broken pipe")
            || lower.contains("frame")
            || lower.contains("h2 protocol")
            || lower.contains("http2"))
    {
        "the connection was cut: if the monitor serves TLS (the default) use an https:// URL with --tls-ca"
    } else {
        "check that it runs and that --monitor / PGPILOT_MONITOR points at it"
    }
}

/// An error and its sources, joined by ": " (repeats dropped).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}
