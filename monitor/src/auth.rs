//! Who is calling, and what they may do. Every gRPC handler asks this
//! module first, before it touches the store.
//!
//! - Mutual TLS: rustls has checked that the client's certificate is
//!   signed by the cluster CA; its common name says who the client is:
//!   `keeper:FORMATION/NODE` may register and heartbeat only as that node,
//!   `operator:NAME` may run the operator commands (and nothing a keeper
//!   does).
//! - Shared token: every request carries `authorization: Bearer TOKEN`,
//!   compared in constant time; whoever holds the token may do everything.
//! - With both, both are required. With neither (plaintext, or TLS that
//!   authenticates only the monitor), everyone who reaches the port may do
//!   everything; the monitor warns about it at start.

use pgpilot_proto::security::{PeerIdentity, TOKEN_HEADER};
use subtle::ConstantTimeEq;
use tonic::Request;

use crate::config::{Transport, TransportMode};
use crate::error::Error;

/// The caller of one request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No client authentication is configured, or the shared token was
    /// given without a client certificate mode: may do everything.
    Trusted,
    Keeper {
        formation: String,
        node: String,
    },
    Operator {
        name: String,
    },
}

#[derive(Clone)]
pub struct Authenticator {
    client_certs: bool,
    token: Option<Vec<u8>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("client_certs", &self.client_certs)
            .field("token", &self.token.as_ref().map(|_| "****"))
            .finish()
    }
}

impl Authenticator {
    pub fn new(transport: &Transport) -> Authenticator {
        Authenticator {
            client_certs: matches!(
                transport.mode,
                TransportMode::Tls {
                    client_certs: true,
                    ..
                }
            ),
            token: transport.token.as_ref().map(|t| t.as_bytes().to_vec()),
        }
    }

    /// Anyone may do anything (plaintext; in-process tests).
    pub fn open() -> Authenticator {
        Authenticator {
            client_certs: false,
            token: None,
        }
    }

    /// Authenticate the caller of `request`.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Error> {
        if let Some(expected) = &self.token {
            let given = request
                .metadata()
                .get(TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let Some(given) = given else {
                return Err(Error::Unauthenticated(
                    "this monitor needs its token: give it with --token-file FILE or PGPILOT_TOKEN (keepers: token_file)".into(),
                ));
            };
            if !bool::from(given.as_bytes().ct_eq(expected)) {
                return Err(Error::Unauthenticated(
                    "the token is not this monitor's: check the token file or PGPILOT_TOKEN against the monitor's token_file".into(),
                ));
            }
        }
        if !self.client_certs {
            return Ok(Caller::Trusted);
        }
        let certs = request.peer_certs().ok_or_else(|| {
            Error::Unauthenticated(
                "this monitor accepts only clients with a certificate signed by the cluster CA: give --tls-cert and --tls-key (keepers: tls_cert_file, tls_key_file)".into(),
            )
        })?;
        let leaf = certs.first().ok_or_else(|| {
            Error::Unauthenticated("the client sent no certificate: give --tls-cert and --tls-key (keepers: tls_cert_file, tls_key_file)".into())
        })?;
        match identity_of(leaf.as_ref()) {
            Some(PeerIdentity::Keeper { formation, node }) => Ok(Caller::Keeper { formation, node }),
            Some(PeerIdentity::Operator { name }) => Ok(Caller::Operator { name }),
            None => Err(Error::PermissionDenied(
                "the client certificate's common name is not a pgpilot identity: it must be keeper:FORMATION/NODE or operator:NAME (pgpilot-monitor gen-certs makes such certificates)".into(),
            )),
        }
    }
}

/// The identity in a DER certificate's common name.
pub fn identity_of(der: &[u8]) -> Option<PeerIdentity> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    PeerIdentity::parse(cn)
}

impl Caller {
    /// Operator commands (and reading the formation's state and events).
    pub fn require_operator(&self, what: &str) -> Result<(), Error> {
        match self {
            Caller::Trusted | Caller::Operator { .. } => Ok(()),
            Caller::Keeper { formation, node } => Err(Error::PermissionDenied(format!(
                "{what} is an operator command and this client is the keeper of {formation}/{node}: use an operator certificate (CN operator:NAME)"
            ))),
        }
    }

    /// Acting as some keeper (register, heartbeat): refused to an operator
    /// before the request is looked at, so that the answer is the same
    /// whatever the request names.
    pub fn require_keeper(&self) -> Result<(), Error> {
        match self {
            Caller::Trusted | Caller::Keeper { .. } => Ok(()),
            Caller::Operator { name } => Err(Error::PermissionDenied(format!(
                "operator {name} cannot register or heartbeat as a node: keepers use a certificate with CN keeper:FORMATION/NODE"
            ))),
        }
    }

    /// Acting as the keeper of `formation`/`node` (register, heartbeat).
    pub fn require_node(&self, formation: &str, node: &str) -> Result<(), Error> {
        match self {
            Caller::Trusted => Ok(()),
            Caller::Keeper {
                formation: f,
                node: n,
            } if f == formation && n == node => Ok(()),
            Caller::Keeper {
                formation: f,
                node: n,
            } => Err(Error::PermissionDenied(format!(
                "this client's certificate is for the keeper of {f}/{n}, not of {formation}/{node}: a keeper may register and heartbeat only as itself"
            ))),
            Caller::Operator { name } => Err(Error::PermissionDenied(format!(
                "operator {name} cannot register or heartbeat as a node: keepers use a certificate with CN keeper:{formation}/{node}"
            ))),
        }
    }
}

impl Caller {
    /// Who an operator is, as events record it.
    pub fn operator_identity(&self) -> String {
        match self {
            Caller::Trusted => {
                "an operator (this monitor does not identify its clients)".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Trusted => f.write_str("trusted client"),
            Caller::Keeper { formation, node } => write!(f, "keeper:{formation}/{node}"),
            Caller::Operator { name } => write!(f, "operator:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut()
                .insert(TOKEN_HEADER, format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    #[test]
    fn the_token_must_match() {
        let auth = Authenticator {
            client_certs: false,
            token: Some(b"0123456789abcdef".to_vec()),
        };
        assert_eq!(
            auth.caller(&with_token(Some("0123456789abcdef"))).unwrap(),
            Caller::Trusted
        );
        for bad in [None, Some("0123456789abcdeX"), Some("short")] {
            let err = auth.caller(&with_token(bad)).unwrap_err();
            assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
            assert!(!err.to_string().contains("0123456789abcdef"));
        }
        assert_eq!(
            Authenticator::open().caller(&with_token(None)).unwrap(),
            Caller::Trusted
        );
    }

    #[test]
    fn client_certs_are_required_in_mutual_tls() {
        let auth = Authenticator {
            client_certs: true,
            token: None,
        };
        let err = auth.caller(&with_token(None)).unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
    }

    #[test]
    fn keepers_act_only_as_themselves() {
        let keeper = Caller::Keeper {
            formation: "default".into(),
            node: "node1".into(),
        };
        assert!(keeper.require_node("default", "node1").is_ok());
        let err = keeper.require_node("default", "node2").unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
        assert!(keeper.require_node("other", "node1").is_err());
        let err = keeper.require_operator("perform-failover").unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
        let operator = Caller::Operator { name: "ann".into() };
        assert!(operator.require_operator("x").is_ok());
        assert!(operator.require_node("default", "node1").is_err());
        assert!(Caller::Trusted.require_node("a", "b").is_ok());
        // An operator is refused before anything the request names is read.
        let err = operator.require_keeper().unwrap_err();
        assert!(matches!(err, Error::PermissionDenied(_)), "{err}");
        assert!(err.to_string().contains("operator ann cannot"), "{err}");
        assert!(keeper.require_keeper().is_ok());
        assert!(Caller::Trusted.require_keeper().is_ok());
    }
}
