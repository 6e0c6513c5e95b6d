//! The client side of the monitor's transport security, shared by the
//! keeper, the operator commands and the test harness: one place builds the
//! TLS configuration (the monitor's certificate checked against the cluster
//! CA, optionally a client certificate) and attaches the shared token.
//!
//! Secrets (private keys, tokens) are read from files that other users of
//! the machine cannot read, or from the environment; never from the command
//! line, and never written to a log line or an error message.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::pb::monitor_client::MonitorClient;

/// Environment variable holding the shared token (instead of a token file).
pub const TOKEN_ENV: &str = "PGPILOT_TOKEN";
/// A shared token shorter than this is refused: it could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// The metadata key the token travels in (`authorization: Bearer TOKEN`).
pub const TOKEN_HEADER: &str = "authorization";

/// A secret or certificate file that cannot be used, or settings that do
/// not fit together. Each message is one sentence saying what to change.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds a secret and every user of this machine can read it: run `chmod o-rwx {}` (or `chmod 600`)", path.display(), path.display())]
    WorldReadable { path: PathBuf },
    #[error("{0}")]
    Invalid(String),
}

/// Refuse a secret file that every user of the machine can read.
pub fn check_not_world_readable(path: &Path) -> Result<(), SecurityError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| SecurityError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(SecurityError::WorldReadable {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Read a file holding a secret (a private key, a token, a URL with a
/// password), refusing it when every user can read it.
pub fn read_secret(path: &Path) -> Result<String, SecurityError> {
    check_not_world_readable(path)?;
    read(path)
}

/// Read a file that is not secret (a certificate).
pub fn read(path: &Path) -> Result<String, SecurityError> {
    std::fs::read_to_string(path).map_err(|source| SecurityError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A shared token: long enough, and printable ASCII without spaces (it
/// travels in a gRPC header).
pub fn check_token(token: &str, origin: &str) -> Result<(), SecurityError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(SecurityError::Invalid(format!(
            "the token in {origin} is shorter than {MIN_TOKEN_LEN} characters: use a long random one (`pgpilot-monitor gen-certs --token` writes one)"
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SecurityError::Invalid(format!(
            "the token in {origin} has spaces or characters other than printable ASCII: use letters, digits and punctuation only"
        )));
    }
    Ok(())
}

/// The shared token from `file`, else from `PGPILOT_TOKEN`; `None` when
/// neither is set.
pub fn load_token(file: Option<&Path>) -> Result<Option<String>, SecurityError> {
    if let Some(path) = file {
        let token = read_secret(path)?.trim().to_string();
        check_token(&token, &path.display().to_string())?;
        return Ok(Some(token));
    }
    match std::env::var(TOKEN_ENV) {
        Ok(token) if !token.trim().is_empty() => {
            let token = token.trim().to_string();
            check_token(&token, TOKEN_ENV)?;
            Ok(Some(token))
        }
        _ => Ok(None),
    }
}

/// How a client reaches the monitor: the CA that signed the monitor's
/// certificate, an optional client certificate and key (mutual TLS), an
/// optional name to check the monitor's certificate for, and an optional
/// token file (else `PGPILOT_TOKEN`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSecurity {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// Attaches the shared token to every request; shows no secret in `Debug`.
#[derive(Clone, Default)]
pub struct Credentials {
    token: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "****"))
            .finish()
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request.metadata_mut().insert(TOKEN_HEADER, token.clone());
        }
        Ok(request)
    }
}

impl Credentials {
    pub fn none() -> Self {
        Credentials::default()
    }

    pub fn token(token: &str) -> Result<Self, SecurityError> {
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
            SecurityError::Invalid(
                "the token has characters a gRPC header cannot carry: use printable ASCII".into(),
            )
        })?;
        value.set_sensitive(true);
        Ok(Credentials { token: Some(value) })
    }
}

/// The gRPC client of the monitor used by every pgpilot program.
pub type Client = MonitorClient<InterceptedService<Channel, Credentials>>;

/// Whether a monitor URL asks for TLS; `None` when it is not http(s)://.
pub fn url_uses_tls(url: &str) -> Option<bool> {
    let scheme = url.split_once("://")?.0.to_ascii_lowercase();
    match scheme.as_str() {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

impl ClientSecurity {
    /// Whether any TLS setting is given.
    pub fn has_tls_settings(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some()
    }

    /// Check the settings against the monitor URL without reading a file.
    /// `names` are how the person wrote the settings (`--tls-ca` or
    /// `tls_ca_file`), for the messages.
    pub fn check(&self, url: &str, names: &SettingNames) -> Result<(), SecurityError> {
        let bad = |m: String| Err(SecurityError::Invalid(m));
        match url_uses_tls(url) {
            None => bad(format!(
                "{url:?} is not a monitor URL: use https://HOST:PORT (or http:// for a monitor that runs with plaintext = true)"
            )),
            Some(false) if self.has_tls_settings() => bad(format!(
                "{} and the other TLS settings need an https:// monitor URL, and {url:?} is http://",
                names.ca
            )),
            Some(false) if self.token_file.is_some() => bad(format!(
                "{} would send the token in clear over {url:?}: use an https:// monitor URL",
                names.token_file
            )),
            Some(true) if self.ca_file.is_none() => bad(format!(
                "the https:// monitor {url:?} needs {} FILE: the CA certificate that signed the monitor's certificate",
                names.ca
            )),
            Some(true) if self.cert_file.is_some() != self.key_file.is_some() => bad(format!(
                "{} and {} go together: give both (mutual TLS) or neither",
                names.cert, names.key
            )),
            _ => Ok(()),
        }
    }

    /// The endpoint for `url`, with TLS set up when it is https://.
    /// Reads the CA, certificate and key files (the key must not be
    /// world-readable).
    pub fn endpoint(&self, url: &str, names: &SettingNames) -> Result<Endpoint, SecurityError> {
        self.check(url, names)?;
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| {
            SecurityError::Invalid(format!(
                "{url:?} is not a valid monitor URL ({e}): use e.g. https://127.0.0.1:7430"
            ))
        })?;
        if url_uses_tls(url) != Some(true) {
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new().timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read_secret(key)?));
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint.tls_config(tls).map_err(|e| {
            SecurityError::Invalid(format!(
                "cannot set up TLS to {url:?}: {e}: check {} and the certificate files",
                names.ca
            ))
        })
    }

    /// The token to send: from the token file, else from `PGPILOT_TOKEN`
    /// (only over https://: a token never crosses the network in clear).
    pub fn credentials(&self, url: &str) -> Result<Credentials, SecurityError> {
        let token = load_token(self.token_file.as_deref())?;
        match token {
            None => Ok(Credentials::none()),
            Some(_) if url_uses_tls(url) != Some(true) => Err(SecurityError::Invalid(format!(
                "{TOKEN_ENV} is set but {url:?} is http://: a token is only sent over TLS; use an https:// monitor URL or unset {TOKEN_ENV}"
            ))),
            Some(token) => Credentials::token(&token),
        }
    }

    /// A client of `url` on a lazily connected channel (it connects on
    /// first use and reconnects by itself).
    pub fn lazy_client(
        &self,
        url: &str,
        names: &SettingNames,
        configure: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Client, SecurityError> {
        let endpoint = configure(self.endpoint(url, names)?);
        let credentials = self.credentials(url)?;
        Ok(client(endpoint.connect_lazy(), credentials))
    }
}

/// A client on `channel` sending `credentials`.
pub fn client(channel: Channel, credentials: Credentials) -> Client {
    MonitorClient::with_interceptor(channel, credentials)
}

/// How a program names its security settings, for messages.
#[derive(Debug, Clone, Copy)]
pub struct SettingNames {
    pub ca: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
    pub token_file: &'static str,
}

/// The operator commands' flags.
pub const CLI_NAMES: SettingNames = SettingNames {
    ca: "--tls-ca",
    cert: "--tls-cert",
    key: "--tls-key",
    token_file: "--token-file",
};

/// The keeper's configuration keys.
pub const CONFIG_NAMES: SettingNames = SettingNames {
    ca: "tls_ca_file",
    cert: "tls_cert_file",
    key: "tls_key_file",
    token_file: "token_file",
};

/// The identity a client certificate carries in its common name: a keeper
/// may act only as its own node, an operator may run operator commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    Keeper { formation: String, node: String },
    Operator { name: String },
}

impl PeerIdentity {
    /// Parse `keeper:FORMATION/NODE` or `operator:NAME`.
    pub fn parse(text: &str) -> Option<PeerIdentity> {
        if let Some(rest) = text.strip_prefix("keeper:") {
            let (formation, node) = rest.split_once('/')?;
            if formation.is_empty() || node.is_empty() || node.contains('/') {
                return None;
            }
            return Some(PeerIdentity::Keeper {
                formation: formation.to_string(),
                node: node.to_string(),
            });
        }
        let name = text.strip_prefix("operator:")?;
        (!name.is_empty()).then(|| PeerIdentity::Operator {
            name: name.to_string(),
        })
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::Keeper { formation, node } => write!(f, "keeper:{formation}/{node}"),
            PeerIdentity::Operator { name } => write!(f, "operator:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identities_parse() {
        assert_eq!(
            PeerIdentity::parse("keeper:default/node1"),
            Some(PeerIdentity::Keeper {
                formation: "default".into(),
                node: "node1".into()
            })
        );
        assert_eq!(
            PeerIdentity::parse("operator:alice"),
            Some(PeerIdentity::Operator {
                name: "alice".into()
            })
        );
        for bad in [
            "keeper:default",
            "keeper:/node1",
            "keeper:default/",
            "keeper:a/b/c",
            "operator:",
            "admin:x",
            "node1",
        ] {
            assert_eq!(PeerIdentity::parse(bad), None, "{bad}");
        }
        let id = PeerIdentity::parse("keeper:f/n").unwrap();
        assert_eq!(id.to_string(), "keeper:f/n");
    }

    #[test]
    fn world_readable_secrets_are_refused_in_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret(&path).unwrap_err().to_string();
        assert!(err.contains("chmod o-rwx"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!err.contains("0123456789"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            load_token(Some(&path)).unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
    }

    #[test]
    fn short_or_odd_tokens_are_refused() {
        assert!(check_token("short", "x").is_err());
        assert!(check_token("has a space in it, long enough", "x").is_err());
        assert!(check_token("0123456789abcdef", "x").is_ok());
    }

    #[test]
    fn settings_must_fit_the_url() {
        let none = ClientSecurity::default();
        assert!(none.check("http://127.0.0.1:7430", &CLI_NAMES).is_ok());
        let err = none
            .check("https://127.0.0.1:7430", &CLI_NAMES)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-ca"), "{err}");
        let ca = ClientSecurity {
            ca_file: Some("/ca.crt".into()),
            ..Default::default()
        };
        assert!(ca.check("https://m:7430", &CLI_NAMES).is_ok());
        let err = ca
            .check("http://m:7430", &CONFIG_NAMES)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls_ca_file") && err.contains("https://"),
            "{err}"
        );
        let half = ClientSecurity {
            cert_file: Some("/c".into()),
            ..ca.clone()
        };
        assert!(half.check("https://m:7430", &CLI_NAMES).is_err());
        assert!(none.check("m:7430", &CLI_NAMES).is_err());
    }

    #[test]
    fn credentials_hide_the_token() {
        let c = Credentials::token("0123456789abcdefXYZ").unwrap();
        assert!(!format!("{c:?}").contains("XYZ"));
    }
}
