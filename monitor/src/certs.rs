//! `pgpilot-monitor gen-certs`: a throw-away certificate authority and the
//! certificates of a cluster (the monitor's, one per keeper, one per
//! operator), and optionally a shared token, for the lab, tests and first
//! steps. A production cluster may use its own CA: pgpilot needs only that
//! the monitor's certificate names the host clients connect to, and that a
//! client certificate's common name is `keeper:FORMATION/NODE` or
//! `operator:NAME`.
//!
//! Keys and the token are written `0600`, certificates `0644`, each through
//! a temporary file and a rename. An existing `ca.key` is reused to sign
//! new certificates (a node added later), never overwritten.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use pgpilot_proto::security::PeerIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What to make.
#[derive(Debug, Clone)]
pub struct Request {
    pub dir: PathBuf,
    /// Host names and IP addresses clients reach the monitor by; empty: no
    /// monitor certificate (unless none exists yet: then localhost and
    /// 127.0.0.1).
    pub monitor_hosts: Vec<String>,
    /// `FORMATION/NODE` of each keeper.
    pub keepers: Vec<String>,
    pub operators: Vec<String>,
    /// `NODE=HOST[,HOST…]`: a server certificate for a node's PostgreSQL
    /// (`postgres_tls_cert_file`), naming the hosts the other nodes reach
    /// it by.
    pub postgres_servers: Vec<String>,
    /// Also write a random shared token to `token`.
    pub token: bool,
    /// Validity of the certificates (the CA's is ten years).
    pub days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making a certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Days the CA is valid.
const CA_DAYS: u32 = 3650;

/// The names of a request, checked.
struct Checked {
    keepers: Vec<(String, String)>,
    postgres_servers: Vec<(String, Vec<String>)>,
}

/// Check every name of `req` before anything is written.
fn check(req: &Request) -> Result<Checked, CertError> {
    let mut keepers = Vec::new();
    for k in &req.keepers {
        match PeerIdentity::parse(&format!("keeper:{k}")) {
            Some(PeerIdentity::Keeper { formation, node }) => keepers.push((formation, node)),
            _ => {
                return Err(CertError::Invalid(format!(
                    "--keeper {k:?} is not FORMATION/NODE, e.g. default/node1"
                )))
            }
        }
    }
    for o in &req.operators {
        if o.is_empty() || o.contains(char::is_whitespace) {
            return Err(CertError::Invalid(format!(
                "--operator {o:?} is not a name: use letters, digits, '-', '_' or '.'"
            )));
        }
    }
    let mut postgres_servers = Vec::new();
    for p in &req.postgres_servers {
        let parsed = p.split_once('=').and_then(|(node, hosts)| {
            let hosts: Vec<String> = hosts.split(',').map(str::to_string).collect();
            let name_ok = !node.is_empty()
                && node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            (name_ok && hosts.iter().all(|h| !h.is_empty())).then(|| (node.to_string(), hosts))
        });
        match parsed {
            Some(server) => postgres_servers.push(server),
            None => {
                return Err(CertError::Invalid(format!(
                    "--postgres {p:?} is not NODE=HOST[,HOST...], e.g. node1=10.0.0.5"
                )))
            }
        }
    }
    if req.days == 0 {
        return Err(CertError::Invalid("--days must be at least 1".into()));
    }
    Ok(Checked {
        keepers,
        postgres_servers,
    })
}

/// The CA of `dir`: the existing one (its key reused, never overwritten),
/// or a new one written there. True when it is new.
fn ca(
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(Issuer<'static, KeyPair>, bool), CertError> {
    let ca_cert = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    if ca_key.exists() {
        let key = KeyPair::from_pem(&read(&ca_key)?)?;
        return Ok((Issuer::from_ca_cert_pem(&read(&ca_cert)?, key)?, false));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "pgpilot cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_DAYS);
    let cert = params.self_signed(&key)?;
    write(&ca_key, &key.serialize_pem(), 0o600)?;
    write(&ca_cert, &cert.pem(), 0o644)?;
    written.extend([ca_cert, ca_key]);
    Ok((Issuer::new(params, key), true))
}

/// Make what `req` asks for; returns the files written, for printing.
pub fn generate(req: &Request) -> Result<Vec<PathBuf>, CertError> {
    let Checked {
        keepers,
        postgres_servers,
    } = check(req)?;
    std::fs::create_dir_all(&req.dir).map_err(|source| CertError::Write {
        path: req.dir.clone(),
        source,
    })?;
    let mut written = Vec::new();
    let (issuer, new_ca) = ca(&req.dir, &mut written)?;
    let mut hosts = req.monitor_hosts.clone();
    if hosts.is_empty() && (new_ca || !req.dir.join("monitor.crt").exists()) {
        hosts = vec!["localhost".into(), "127.0.0.1".into()];
    }
    if !hosts.is_empty() {
        let mut params = CertificateParams::new(hosts)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "pgpilot monitor");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        written.extend(leaf(&req.dir, "monitor", params, req.days, &issuer)?);
    }
    for (formation, node) in keepers {
        let identity = PeerIdentity::Keeper {
            formation: formation.clone(),
            node: node.clone(),
        };
        written.extend(client(
            &req.dir,
            &format!("keeper-{formation}-{node}"),
            &identity,
            req.days,
            &issuer,
        )?);
    }
    for (node, hosts) in postgres_servers {
        let mut params = CertificateParams::new(hosts)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("pgpilot postgres {node}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        written.extend(leaf(
            &req.dir,
            &format!("postgres-{node}"),
            params,
            req.days,
            &issuer,
        )?);
    }
    for name in &req.operators {
        let identity = PeerIdentity::Operator { name: name.clone() };
        written.extend(client(
            &req.dir,
            &format!("operator-{name}"),
            &identity,
            req.days,
            &issuer,
        )?);
    }
    if req.token {
        let path = req.dir.join("token");
        write(&path, &format!("{}\n", random_token()?), 0o600)?;
        written.push(path);
    }
    Ok(written)
}

fn client(
    dir: &Path,
    stem: &str,
    identity: &PeerIdentity,
    days: u32,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Vec<PathBuf>, CertError> {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.to_string());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf(dir, stem, params, days, issuer)
}

fn leaf(
    dir: &Path,
    stem: &str,
    mut params: CertificateParams,
    days: u32,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<Vec<PathBuf>, CertError> {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let cert_path = dir.join(format!("{stem}.crt"));
    let key_path = dir.join(format!("{stem}.key"));
    write(&key_path, &key.serialize_pem(), 0o600)?;
    write(&cert_path, &cert.pem(), 0o644)?;
    Ok(vec![cert_path, key_path])
}

/// Valid from yesterday (clocks differ) for `days` days.
fn validity(params: &mut CertificateParams, days: u32) {
    let today = chrono::Utc::now().date_naive();
    let ymd = |d: chrono::NaiveDate| {
        use chrono::Datelike;
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(today - chrono::Days::new(1));
    params.not_after = ymd(today + chrono::Days::new(u64::from(days)));
}

/// 32 random bytes from the kernel, hex-encoded.
fn random_token() -> Result<String, CertError> {
    use std::io::Read as _;
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 32];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| CertError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Write through a temporary file created with `mode`, then rename.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(dir: &Path, name: &str) -> u32 {
        std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn makes_a_ca_and_certificates_with_identities() {
        let dir = tempfile::tempdir().unwrap();
        let req = Request {
            dir: dir.path().to_path_buf(),
            monitor_hosts: vec![],
            keepers: vec!["default/node1".into()],
            operators: vec!["ann".into()],
            postgres_servers: vec!["node1=127.0.0.1,node1.example".into()],
            token: true,
            days: 30,
        };
        let files = generate(&req).unwrap();
        assert_eq!(files.len(), 2 + 2 + 2 + 2 + 2 + 1, "{files:?}");
        assert_eq!(mode_of(dir.path(), "postgres-node1.key"), 0o600);
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("keeper-default-node1.key"), 0o600);
        assert_eq!(mode("token"), 0o600);
        assert_eq!(mode("monitor.crt"), 0o644);
        let der = |name: &str| {
            let pem = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            x509_der(&b64)
        };
        assert_eq!(
            crate::auth::identity_of(&der("keeper-default-node1.crt")),
            PeerIdentity::parse("keeper:default/node1")
        );
        assert_eq!(
            crate::auth::identity_of(&der("operator-ann.crt")),
            PeerIdentity::parse("operator:ann")
        );
        assert_eq!(crate::auth::identity_of(&der("monitor.crt")), None);

        // A second run reuses the CA and adds a node.
        let ca = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        let again = Request {
            keepers: vec!["default/node2".into()],
            operators: vec![],
            postgres_servers: vec![],
            token: false,
            ..req
        };
        let files = generate(&again).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
            ca
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let req = Request {
            dir: dir.path().to_path_buf(),
            monitor_hosts: vec![],
            keepers: vec!["node1".into()],
            operators: vec![],
            postgres_servers: vec![],
            token: false,
            days: 30,
        };
        let err = generate(&req).unwrap_err().to_string();
        assert!(err.contains("FORMATION/NODE"), "{err}");
        for bad in ["node1", "=10.0.0.1", "node1=", "node1=a,,b", "a b=h"] {
            let req = Request {
                keepers: vec![],
                postgres_servers: vec![bad.into()],
                ..req.clone()
            };
            let err = generate(&req).unwrap_err().to_string();
            assert!(err.contains("NODE=HOST"), "{bad}: {err}");
        }
    }

    /// Standard base64 decoding (test helper).
    fn x509_der(b64: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = 0u32;
        let mut bits = 0;
        for c in b64.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => continue,
            };
            buf = (buf << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
            }
        }
        out
    }
}
