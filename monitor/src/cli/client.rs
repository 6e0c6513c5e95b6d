//! The operator's gRPC client of a running monitor: one method per RPC the
//! CLI uses, and every failure turned into a [`CliError`] that says what to
//! check (a wrong URL scheme, a certificate, a monitor that is not there).
//!
//! With several monitors the client uses the first that answers, and
//! moves to the next one when a call fails there: a read whenever the
//! monitor did not answer (cut off, hung, no database), a command only
//! when the monitor answered that it could not serve it (`Unavailable`:
//! nothing was done), so a command is never sent twice when the first
//! monitor may have carried it out.

use std::future::Future;
use std::time::Duration;

use pgpilot_proto::pb;
use pgpilot_proto::security::{self, ClientSecurity};

use super::error::CliError;

/// How long connecting to the monitor may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a read waits for a monitor when another one is left to ask.
const READ_TIMEOUT_BEFORE_MOVING_ON: Duration = Duration::from_secs(5);

pub struct Client {
    inner: security::Client,
    url: String,
    /// Every monitor given, in order (the one in use among them), and how
    /// to reach them: where a failed call moves on to.
    urls: Vec<String>,
    sec: ClientSecurity,
}

/// Whether a call may be sent to another monitor after it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Changes nothing: sent again wherever the monitor did not answer.
    Read,
    /// An operator command: sent again only when the monitor answered
    /// that it did nothing (`Unavailable`).
    Command,
}

impl Call {
    /// The call may go to the next monitor after failing with `status`.
    pub fn may_move_on(self, status: &tonic::Status) -> bool {
        // A status the client's own transport made carries its cause; one
        // the monitor sent does not.
        let answered = std::error::Error::source(status).is_none();
        match self {
            Call::Read => matches!(status_error(status.clone(), ""), CliError::Unreachable(_)),
            Call::Command => answered && status.code() == tonic::Code::Unavailable,
        }
    }
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
            urls: vec![url.to_string()],
            sec: sec.clone(),
        })
    }

    /// Connect to the first of `urls` that answers, in order; a setting
    /// that does not fit a URL ends at once (exit 2), and when none
    /// answers the error names each one.
    pub async fn connect_any(urls: &[String], sec: &ClientSecurity) -> Result<Client, CliError> {
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        let mut client = Client::first_of(&urls, sec, Vec::new()).await?;
        client.urls = urls;
        Ok(client)
    }

    /// Connect to the first of `urls` that answers; `unreachable` holds
    /// what went wrong with monitors already given up on.
    async fn first_of(
        urls: &[String],
        sec: &ClientSecurity,
        mut unreachable: Vec<String>,
    ) -> Result<Client, CliError> {
        for url in urls {
            match Client::connect(url, sec).await {
                Ok(client) => return Ok(client),
                Err(CliError::Unreachable(m)) => unreachable.push(m),
                Err(other) => return Err(other),
            }
        }
        Err(none_answered(unreachable))
    }

    /// Run `rpc` on the monitor in use; when it fails in a way `kind`
    /// allows, on the next monitors given after it, in order, each once.
    /// Says on stderr which monitor it moves to.
    async fn call<T, F, Fut>(&mut self, kind: Call, rpc: F) -> Result<T, CliError>
    where
        F: Fn(security::Client) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut failed = Vec::new();
        loop {
            // The monitors given after the one in use: where a failed call
            // may go next.
            let rest: Vec<String> = match self.urls.iter().position(|u| *u == self.url) {
                Some(i) => self.urls[i + 1..].to_vec(),
                None => Vec::new(),
            };
            let answer = rpc(self.inner.clone());
            let answer = if kind == Call::Read && !rest.is_empty() {
                // Another monitor can answer a read: do not wait out the
                // whole request timeout on a hung one.
                tokio::time::timeout(READ_TIMEOUT_BEFORE_MOVING_ON, answer)
                    .await
                    .unwrap_or_else(|_| {
                        Err(tonic::Status::deadline_exceeded(format!(
                            "no answer within {}s",
                            READ_TIMEOUT_BEFORE_MOVING_ON.as_secs()
                        )))
                    })
            } else {
                answer.await
            };
            let status = match answer {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) => status,
            };
            let movable = kind.may_move_on(&status);
            let error = status_error(status, &self.url);
            if !movable || rest.is_empty() {
                if failed.is_empty() {
                    return Err(error);
                }
                failed.push(error.to_string());
                return Err(none_answered(failed));
            }
            failed.push(error.to_string());
            let next = Client::first_of(&rest, &self.sec, failed.clone()).await?;
            eprintln!("pgpilot: {error}; using the monitor at {}", next.url);
            self.inner = next.inner;
            self.url = next.url;
        }
    }

    pub async fn state(&mut self, formation: &str) -> Result<pb::FormationState, CliError> {
        let request = pb::GetFormationStateRequest {
            formation: formation.to_string(),
        };
        self.call(Call::Read, |mut c| {
            let request = request.clone();
            async move { c.get_formation_state(request).await }
        })
        .await
    }

    pub async fn events(
        &mut self,
        formation: &str,
        count: u32,
    ) -> Result<Vec<pb::Event>, CliError> {
        let request = pb::ListEventsRequest {
            formation: formation.to_string(),
            count,
        };
        let reply = self
            .call(Call::Read, |mut c| {
                let request = request.clone();
                async move { c.list_events(request).await }
            })
            .await?;
        Ok(reply.events)
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
        self.command(
            request,
            |mut c, r| async move { c.perform_failover(r).await },
        )
        .await
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
        self.command(request, |mut c, r| async move {
            c.set_number_sync_standbys(r).await
        })
        .await
    }

    pub async fn set_node_settings(
        &mut self,
        formation: &str,
        node: &str,
        settings: crate::core::node_settings::NodeSettings,
    ) -> Result<String, CliError> {
        let request = pb::SetNodeSettingsRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            candidate_priority: settings.candidate_priority,
            replication_quorum: settings.replication_quorum,
            apply_delay_ms: settings.apply_delay_ms,
        };
        self.command(
            request,
            |mut c, r| async move { c.set_node_settings(r).await },
        )
        .await
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
        self.command(
            request,
            |mut c, r| async move { c.set_maintenance(r).await },
        )
        .await
    }

    pub async fn formations(&mut self) -> Result<Vec<pb::FormationSummary>, CliError> {
        let reply = self
            .call(Call::Read, |mut c| async move {
                c.list_formations(pb::ListFormationsRequest {}).await
            })
            .await?;
        Ok(reply.formations)
    }

    pub async fn create_formation(
        &mut self,
        formation: &str,
        number_sync_standbys: u32,
    ) -> Result<String, CliError> {
        let request = pb::CreateFormationRequest {
            formation: formation.to_string(),
            number_sync_standbys,
        };
        self.command(
            request,
            |mut c, r| async move { c.create_formation(r).await },
        )
        .await
    }

    pub async fn set_paused(&mut self, formation: &str, paused: bool) -> Result<String, CliError> {
        let request = pb::SetPausedRequest {
            formation: formation.to_string(),
            paused,
        };
        self.command(request, |mut c, r| async move { c.set_paused(r).await })
            .await
    }

    pub async fn drop_formation(&mut self, formation: &str) -> Result<String, CliError> {
        let request = pb::DropFormationRequest {
            formation: formation.to_string(),
        };
        self.command(request, |mut c, r| async move { c.drop_formation(r).await })
            .await
    }

    /// Set `name` (reset it when `value` is `None`).
    pub async fn set_parameter(
        &mut self,
        formation: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<String, CliError> {
        let request = pb::SetParameterRequest {
            formation: formation.to_string(),
            name: name.to_string(),
            value: value.unwrap_or_default().to_string(),
            reset: value.is_none(),
        };
        self.command(request, |mut c, r| async move { c.set_parameter(r).await })
            .await
    }

    /// Have every node of `formation` reload its configuration.
    pub async fn reload(&mut self, formation: &str) -> Result<String, CliError> {
        let request = pb::ReloadFormationRequest {
            formation: formation.to_string(),
        };
        self.command(
            request,
            |mut c, r| async move { c.reload_formation(r).await },
        )
        .await
    }

    /// Make `node` stream from `upstream` (`None`: the primary).
    pub async fn set_upstream(
        &mut self,
        formation: &str,
        node: &str,
        upstream: Option<&str>,
    ) -> Result<String, CliError> {
        let request = pb::SetUpstreamRequest {
            formation: formation.to_string(),
            node: node.to_string(),
            upstream: upstream.unwrap_or_default().to_string(),
        };
        self.command(request, |mut c, r| async move { c.set_upstream(r).await })
            .await
    }

    /// Declare `slot` on `formation`.
    pub async fn create_slot(
        &mut self,
        formation: &str,
        slot: pb::PermanentSlot,
    ) -> Result<String, CliError> {
        let request = pb::CreateSlotRequest {
            formation: formation.to_string(),
            slot: Some(slot),
        };
        self.command(request, |mut c, r| async move { c.create_slot(r).await })
            .await
    }

    /// Remove the permanent slot `name` of `formation`.
    pub async fn drop_slot(&mut self, formation: &str, name: &str) -> Result<String, CliError> {
        let request = pb::DropSlotRequest {
            formation: formation.to_string(),
            name: name.to_string(),
        };
        self.command(request, |mut c, r| async move { c.drop_slot(r).await })
            .await
    }

    pub async fn parameters(
        &mut self,
        formation: &str,
    ) -> Result<pb::ListParametersReply, CliError> {
        let request = pb::ListParametersRequest {
            formation: formation.to_string(),
        };
        self.call(Call::Read, |mut c| {
            let request = request.clone();
            async move { c.list_parameters(request).await }
        })
        .await
    }

    pub async fn restart_node(&mut self, formation: &str, node: &str) -> Result<String, CliError> {
        let request = pb::RestartNodeRequest {
            formation: formation.to_string(),
            node: node.to_string(),
        };
        self.command(request, |mut c, r| async move { c.restart_node(r).await })
            .await
    }

    pub async fn reinit_node(&mut self, formation: &str, node: &str) -> Result<String, CliError> {
        let request = pb::ReinitNodeRequest {
            formation: formation.to_string(),
            node: node.to_string(),
        };
        self.command(request, |mut c, r| async move { c.reinit_node(r).await })
            .await
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
        self.command(request, |mut c, r| async move { c.drop_node(r).await })
            .await
    }

    /// An operator command: its reply's message.
    async fn command<R, F, Fut>(&mut self, request: R, rpc: F) -> Result<String, CliError>
    where
        R: Clone,
        F: Fn(security::Client, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::OperationReply>, tonic::Status>>,
    {
        let reply = self
            .call(Call::Command, |c| rpc(c, request.clone()))
            .await?;
        Ok(reply.message)
    }
}

/// The error when no monitor served the request: what went wrong with
/// each one tried (none: no URL was given).
fn none_answered(mut unreachable: Vec<String>) -> CliError {
    match unreachable.len() {
        0 => CliError::Usage(
            "no monitor URL given: set --monitor or PGPILOT_MONITOR, e.g. https://10.0.0.5:7430"
                .into(),
        ),
        1 => CliError::Unreachable(unreachable.remove(0)),
        n => CliError::Unreachable(format!(
            "none of the {n} monitors answered: {}",
            unreachable.join("; ")
        )),
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
