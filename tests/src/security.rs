//! The transport security of a test cluster: which mode the monitor runs
//! in, and the throw-away CA, certificates and token made for it with
//! `pgpilot-monitor gen-certs`.
//!
//! Layout (under the cluster directory):
//!
//! ```text
//! tls/ca.crt tls/ca.key                      the cluster CA
//! tls/monitor.crt tls/monitor.key            the monitor (localhost, 127.0.0.1)
//! tls/keeper-FORMATION-nodeN.crt/.key        one per node (owned by the PostgreSQL user)
//! tls/operator-harness.crt/.key              what the harness and run_cli use
//! tls/token                                  the shared token (token mode)
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use pgpilot_proto::security::ClientSecurity;

use crate::tools::Tools;

/// How the monitor serves gRPC in a test cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// `plaintext = true`: no TLS, no client authentication (the default
    /// of the harness, so most tests need no certificates).
    #[default]
    Plaintext,
    /// TLS, the monitor authenticated by the CA; no client authentication.
    Tls,
    /// Mutual TLS: keepers and the harness present certificates with
    /// their identities.
    MutualTls,
    /// TLS and a shared token (keepers read `token_file`; the CLI gets
    /// `PGPILOT_TOKEN`).
    Token,
}

/// The operator identity the harness (its own client and `run_cli`) uses.
pub const HARNESS_OPERATOR: &str = "harness";

/// The certificates and token of a cluster whose monitor serves TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub mode: Security,
    pub dir: PathBuf,
    formation: String,
}

impl TlsFiles {
    /// Make the CA, the monitor's certificate, a certificate per node
    /// (`node1`..`nodeN`), the harness's operator certificate and a token,
    /// with `pgpilot-monitor gen-certs`; `None` for [`Security::Plaintext`].
    pub async fn generate(
        tools: &Tools,
        root: &Path,
        mode: Security,
        formation: &str,
        nodes: usize,
    ) -> Result<Option<TlsFiles>> {
        if mode == Security::Plaintext {
            return Ok(None);
        }
        let dir = root.join("tls");
        let mut cmd = tokio::process::Command::from(tools.monitor_command());
        cmd.arg("gen-certs").arg("--dir").arg(&dir);
        for i in 1..=nodes {
            cmd.arg("--keeper").arg(format!("{formation}/node{i}"));
            cmd.arg("--postgres").arg(format!("node{i}=127.0.0.1"));
        }
        cmd.args(["--operator", HARNESS_OPERATOR, "--token"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = cmd
            .output()
            .await
            .context("running pgpilot-monitor gen-certs")?;
        if !output.status.success() {
            bail!(
                "pgpilot-monitor gen-certs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let files = TlsFiles {
            mode,
            dir,
            formation: formation.to_string(),
        };
        // Keepers run as the PostgreSQL user: their keys and the token are
        // theirs (still 0600: no other user can read them).
        for i in 1..=nodes {
            tools.hand_over(&files.keeper_key(&format!("node{i}")))?;
            tools.hand_over(&files.dir.join(format!("postgres-node{i}.key")))?;
        }
        tools.hand_over(&files.token_file())?;
        Ok(Some(files))
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn keeper_cert(&self, node: &str) -> PathBuf {
        self.dir
            .join(format!("keeper-{}-{node}.crt", self.formation))
    }

    pub fn keeper_key(&self, node: &str) -> PathBuf {
        self.dir
            .join(format!("keeper-{}-{node}.key", self.formation))
    }

    pub fn operator_cert(&self) -> PathBuf {
        self.dir.join(format!("operator-{HARNESS_OPERATOR}.crt"))
    }

    pub fn operator_key(&self) -> PathBuf {
        self.dir.join(format!("operator-{HARNESS_OPERATOR}.key"))
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// The shared token (token mode).
    pub fn token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.token_file())
            .context("reading the token")?
            .trim()
            .to_string())
    }

    /// Lines for `monitor.toml`.
    pub fn monitor_toml(&self) -> String {
        let mut text = format!(
            "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
            self.dir.join("monitor.crt"),
            self.dir.join("monitor.key")
        );
        match self.mode {
            Security::MutualTls => {
                text.push_str(&format!("tls_client_ca_file = {:?}\n", self.ca()));
            }
            Security::Token => {
                text.push_str(&format!("token_file = {:?}\n", self.token_file()));
            }
            Security::Tls | Security::Plaintext => {}
        }
        text
    }

    /// Lines for the keeper of `node`.
    pub fn keeper_toml(&self, node: &str) -> String {
        let mut text = format!("tls_ca_file = {:?}\n", self.ca());
        match self.mode {
            Security::MutualTls => text.push_str(&format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                self.keeper_cert(node),
                self.keeper_key(node)
            )),
            Security::Token => {
                text.push_str(&format!("token_file = {:?}\n", self.token_file()));
            }
            Security::Tls | Security::Plaintext => {}
        }
        text
    }

    /// Lines for the keeper of `node`: PostgreSQL's TLS between the nodes.
    pub fn postgres_toml(&self, node: &str) -> String {
        format!(
            "postgres_tls_cert_file = {:?}\npostgres_tls_key_file = {:?}\npostgres_tls_ca_file = {:?}\n",
            self.dir.join(format!("postgres-{node}.crt")),
            self.dir.join(format!("postgres-{node}.key")),
            self.ca()
        )
    }

    /// How the harness's own client reaches the monitor (as the operator).
    pub fn operator_security(&self) -> ClientSecurity {
        let mutual = self.mode == Security::MutualTls;
        ClientSecurity {
            ca_file: Some(self.ca()),
            cert_file: mutual.then(|| self.operator_cert()),
            key_file: mutual.then(|| self.operator_key()),
            server_name: None,
            token_file: (self.mode == Security::Token).then(|| self.token_file()),
        }
    }

    /// Environment for `pgpilot-monitor` operator commands (the token
    /// travels in `PGPILOT_TOKEN`, as an operator's shell would pass it).
    pub fn cli_env(&self) -> Result<Vec<(&'static str, String)>> {
        let mut env = vec![("PGPILOT_TLS_CA", self.ca().display().to_string())];
        match self.mode {
            Security::MutualTls => {
                env.push((
                    "PGPILOT_TLS_CERT",
                    self.operator_cert().display().to_string(),
                ));
                env.push(("PGPILOT_TLS_KEY", self.operator_key().display().to_string()));
            }
            Security::Token => env.push(("PGPILOT_TOKEN", self.token()?)),
            Security::Tls | Security::Plaintext => {}
        }
        Ok(env)
    }
}
