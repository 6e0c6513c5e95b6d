//! The cluster's transport security (see `crate::security`): certificates
//! and token, the security lines of the config files, and clients of the
//! monitor as the operator or as any other identity.

use std::time::Duration;

use anyhow::{Context, Result};
use tonic::transport::Endpoint;

use crate::security::{Security, TlsFiles};

use super::options::ClusterOptions;
use super::Cluster;

impl Cluster {
    /// Make the certificates and token the chosen [`Security`] needs and
    /// point the monitor URL at https:// when it serves TLS.
    pub(super) async fn set_up_security(&mut self, opts: &ClusterOptions) -> Result<()> {
        self.tls = TlsFiles::generate(
            &self.tools,
            &self.root,
            opts.security,
            &self.formation,
            opts.nodes,
        )
        .await?;
        if self.tls.is_some() {
            for m in &mut self.monitors {
                m.url = format!("https://127.0.0.1:{}", m.port);
            }
        }
        Ok(())
    }

    /// The security lines of `monitor.toml`.
    pub(super) fn monitor_security_toml(&self) -> String {
        match &self.tls {
            None => "plaintext = true\n".to_string(),
            Some(tls) => tls.monitor_toml(),
        }
    }

    /// The security lines of the keeper of `node`.
    pub(super) fn keeper_security_toml(&self, node: &str) -> String {
        self.tls
            .as_ref()
            .map(|tls| tls.keeper_toml(node))
            .unwrap_or_default()
    }

    /// The keepers' replication password, when the cluster has one.
    pub fn replication_password(&self) -> Option<&str> {
        self.replication_password.as_ref().map(|(p, _)| p.as_str())
    }

    /// The monitor database's password, when the cluster has one.
    pub fn monitor_db_password(&self) -> Option<&str> {
        self.monitor_db_password.as_deref()
    }

    /// How the harness reaches the monitor: as the operator `harness`.
    pub fn operator_security(&self) -> pgpilot_proto::security::ClientSecurity {
        self.tls
            .as_ref()
            .map(TlsFiles::operator_security)
            .unwrap_or_default()
    }

    /// A gRPC client of this monitor as whoever `sec` and `credentials`
    /// make it (another identity, none, the wrong one), each call bounded
    /// by `call_timeout`; replies may exceed tonic's 4 MiB default.
    pub async fn grpc_as(
        &self,
        sec: &pgpilot_proto::security::ClientSecurity,
        credentials: pgpilot_proto::security::Credentials,
        call_timeout: Duration,
    ) -> Result<pgpilot_proto::security::Client> {
        let channel = sec
            .endpoint(self.monitor_url(), &pgpilot_proto::security::CLI_NAMES)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(call_timeout)
            .connect()
            .await
            .context("connecting to the monitor")?;
        Ok(pgpilot_proto::security::client(channel, credentials)
            .max_decoding_message_size(64 * 1024 * 1024))
    }

    pub(super) fn endpoint_of(&self, url: &str) -> Result<Endpoint> {
        Ok(self
            .operator_security()
            .endpoint(url, &pgpilot_proto::security::CLI_NAMES)?)
    }

    pub(super) fn credentials(&self) -> Result<pgpilot_proto::security::Credentials> {
        Ok(self.operator_security().credentials(self.monitor_url())?)
    }

    /// Environment that lets `pgpilot-monitor` operator commands reach
    /// this monitor as the operator `harness` (empty in plaintext).
    pub fn cli_env(&self) -> Result<Vec<(&'static str, String)>> {
        match &self.tls {
            None => Ok(Vec::new()),
            Some(tls) => tls.cli_env(),
        }
    }

    /// The certificates and token of this cluster (None in plaintext).
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The security mode this cluster runs in.
    pub fn security(&self) -> Security {
        self.tls.as_ref().map_or(Security::Plaintext, |t| t.mode)
    }
}
