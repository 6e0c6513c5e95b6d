//! Who may connect to the local PostgreSQL, and how the keeper and its
//! PostgreSQL authenticate to the other nodes: the replication role and its
//! SCRAM password, the libpq password file, and the block of pg_hba.conf
//! the keeper owns. Pure functions, except for reading the password.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use pgpilot_proto::security;

/// Environment variable holding the replication password when no
/// `replication_password_file` is configured.
pub const PASSWORD_ENV: &str = "PGPILOT_REPLICATION_PASSWORD";

/// A password: kept out of `Debug` output, so no log line can carry it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where the replication password comes from. The file is read again each
/// time the password is needed, so a rotated password is picked up
/// without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    /// [`PASSWORD_ENV`], read once at start.
    Env(Secret),
}

impl PasswordSource {
    /// The configured source: `file`, else [`PASSWORD_ENV`] when set and
    /// not empty, else none (replication without a password: trust).
    pub fn configured(file: Option<PathBuf>) -> Result<Option<PasswordSource>, String> {
        if let Some(path) = file {
            let source = PasswordSource::File(path);
            source.password()?;
            return Ok(Some(source));
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(text) if !text.trim().is_empty() => {
                let secret = check_password(&text, PASSWORD_ENV)?;
                Ok(Some(PasswordSource::Env(secret)))
            }
            _ => Ok(None),
        }
    }

    /// The password now (the file's content without surrounding whitespace).
    pub fn password(&self) -> Result<Secret, String> {
        match self {
            PasswordSource::Env(secret) => Ok(secret.clone()),
            PasswordSource::File(path) => {
                let text = security::read_secret(path).map_err(|e| e.to_string())?;
                check_password(
                    &text,
                    &format!("replication_password_file {}", path.display()),
                )
            }
        }
    }

    /// Where the password comes from, for log lines (never the password).
    pub fn origin(&self) -> String {
        match self {
            PasswordSource::File(path) => path.display().to_string(),
            PasswordSource::Env(_) => PASSWORD_ENV.to_string(),
        }
    }
}

/// Shortest replication password accepted.
pub const MIN_PASSWORD_LEN: usize = 12;

fn check_password(text: &str, origin: &str) -> Result<Secret, String> {
    let password = text.trim();
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "the replication password in {origin} is shorter than {MIN_PASSWORD_LEN} characters: use a long random one (e.g. `openssl rand -base64 24`)"
        ));
    }
    if password.chars().any(char::is_control) {
        return Err(format!(
            "the replication password in {origin} holds a line break or another control character: keep it on one line"
        ));
    }
    Ok(Secret(password.to_string()))
}

/// The libpq password file (`PGPASSFILE`, `passfile=`) giving `password`
/// to `user` for every host, port and database.
pub fn passfile(user: &str, password: &Secret) -> String {
    fn escape(value: &str) -> String {
        value.replace('\\', "\\\\").replace(':', "\\:")
    }
    format!("*:*:*:{}:{}\n", escape(user), escape(password.expose()))
}

/// How the replication role authenticates from the group's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// No password configured.
    Trust,
    ScramSha256,
}

impl Method {
    fn hba(self) -> &'static str {
        match self {
            Method::Trust => "trust",
            Method::ScramSha256 => "scram-sha-256",
        }
    }
}

/// What the keeper's block of pg_hba.conf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRules {
    pub replication_user: String,
    /// The superuser: when it is also the replication user, it keeps its
    /// other connections (only replication is limited to the group).
    pub superuser: String,
    pub method: Method,
    /// Hosts of the group's nodes (this one included), as the monitor
    /// knows them.
    pub group_hosts: Vec<String>,
    /// Networks trusted for every role and for replication.
    pub trust_networks: Vec<String>,
    /// The replication role comes in over TLS only (`hostssl`).
    pub tls_only: bool,
}

/// First and last line of the block of pg_hba.conf the keeper owns.
const HBA_BEGIN: &str =
    "# pgpilot: rewritten by the keeper (replication from the group's hosts only)";
const HBA_END: &str = "# end of the pgpilot block";
/// The markers of an older keeper's block, removed when found.
const OLD_HBA_BEGIN: &str = "# pgpilot trust_networks: rewritten by the keeper before every start";
const OLD_HBA_END: &str = "# end of pgpilot trust_networks";

/// Whether `hba` holds the keeper's block.
pub fn has_block(hba: &str) -> bool {
    hba.lines().any(|line| line.trim_end() == HBA_BEGIN)
}

/// A pg_hba.conf address for a node's host: an IP address as a one-host
/// CIDR, a DNS name as it is; `None` for anything else (which would let a
/// crafted host add fields to the line).
pub fn hba_address(host: &str) -> Option<String> {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(format!("{ip}/32")),
        Ok(IpAddr::V6(ip)) => Some(format!("{ip}/128")),
        Err(_) => {
            let name_like = !host.is_empty()
                && host.len() <= 253
                && !host.starts_with(['-', '.'])
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
                && !matches!(host, "all" | "samehost" | "samenet");
            name_like.then(|| host.to_string())
        }
    }
}

/// A role name in pg_hba.conf and SQL: double-quoted.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `existing` pg_hba.conf with the keeper's block (and any older keeper's
/// block) replaced by one rendered from `rules`, at the top so that it
/// matches first:
/// - the replication role may connect, with `rules.method`, for
///   replication and to database postgres (pg_rewind), from the group's
///   hosts only;
/// - then `trust_networks` are trusted for everything (the replication
///   role too: whoever is there may already be any role), so a group host
///   that is also in a trusted network still replicates with `method`;
/// - the replication role is rejected from everywhere else.
pub fn render_hba(existing: &str, rules: &HbaRules) -> String {
    let mut kept = String::with_capacity(existing.len());
    let mut inside = false;
    for line in existing.split_inclusive('\n') {
        match line.trim_end() {
            HBA_BEGIN | OLD_HBA_BEGIN => inside = true,
            HBA_END | OLD_HBA_END if inside => inside = false,
            _ if !inside => kept.push_str(line),
            _ => {}
        }
    }
    let user = quoted(&rules.replication_user);
    let method = rules.method.hba();
    let mut out = String::with_capacity(kept.len() + 600);
    out.push_str(HBA_BEGIN);
    out.push('\n');
    let mut addresses: Vec<String> = rules
        .group_hosts
        .iter()
        .filter_map(|h| hba_address(h))
        .collect();
    addresses.sort();
    addresses.dedup();
    let kind = if rules.tls_only { "hostssl" } else { "host" };
    for address in &addresses {
        out.push_str(&format!("{kind} replication {user} {address} {method}\n"));
        out.push_str(&format!("{kind} postgres {user} {address} {method}\n"));
    }
    for network in &rules.trust_networks {
        out.push_str(&format!("host all all {network} trust\n"));
        out.push_str(&format!("host replication all {network} trust\n"));
    }
    out.push_str(&format!("host replication {user} all reject\n"));
    if rules.replication_user != rules.superuser {
        out.push_str(&format!("host all {user} all reject\n"));
    }
    out.push_str(HBA_END);
    out.push('\n');
    out.push_str(&kept);
    out
}

/// The SQL that makes the replication role exist with what it needs:
/// LOGIN and REPLICATION (streaming, pg_basebackup), pg_checkpoint and the
/// file functions pg_rewind calls; with `verifier` (a SCRAM verifier, never
/// the password itself) as its password. A superuser used for replication
/// only gets the password.
pub fn replication_role_sql(user: &str, superuser: &str, verifier: Option<&str>) -> String {
    let role = quoted(user);
    let password = verifier.map(|v| format!(" PASSWORD '{}'", v.replace('\'', "''")));
    if user == superuser {
        return match password {
            Some(password) => format!("ALTER ROLE {role}{password};"),
            None => String::new(),
        };
    }
    let literal = user.replace('\'', "''");
    format!(
        "DO $pgpilot$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{literal}') THEN \
             CREATE ROLE {role}; \
           END IF; \
         END $pgpilot$;\n\
         ALTER ROLE {role} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE{};\n\
         GRANT pg_checkpoint TO {role};\n\
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {role};\n\
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {role};\n\
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {role};\n\
         GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {role};",
        password.unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(method: Method, hosts: &[&str], trust: &[&str]) -> HbaRules {
        HbaRules {
            replication_user: "pgpilot_replication".into(),
            superuser: "postgres".into(),
            method,
            group_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            trust_networks: trust.iter().map(|h| h.to_string()).collect(),
            tls_only: false,
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("hunter2hunter2".into());
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let source = PasswordSource::Env(s);
        assert!(!format!("{source:?}").contains("hunter2"));
        assert_eq!(source.origin(), PASSWORD_ENV);
    }

    #[test]
    fn passwords_are_checked_and_trimmed() {
        assert_eq!(
            check_password("  long enough password\n", "f")
                .unwrap()
                .expose(),
            "long enough password"
        );
        let short = check_password("short", "f").unwrap_err();
        assert!(short.contains("shorter than 12"), "{short}");
        let multi = check_password("first line is long\nsecond", "f").unwrap_err();
        assert!(multi.contains("one line"), "{multi}");
    }

    #[test]
    fn password_file_must_not_be_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "correct horse battery staple\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = PasswordSource::configured(Some(path.clone())).unwrap_err();
        assert!(err.contains("chmod"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let source = PasswordSource::configured(Some(path.clone()))
            .unwrap()
            .unwrap();
        assert_eq!(
            source.password().unwrap().expose(),
            "correct horse battery staple"
        );
        // Rotation: the file is read again.
        std::fs::write(&path, "a brand new long password").unwrap();
        assert_eq!(
            source.password().unwrap().expose(),
            "a brand new long password"
        );
        let missing = PasswordSource::configured(Some(dir.path().join("none"))).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
    }

    #[test]
    fn passfile_escapes_colons_and_backslashes() {
        let line = passfile("repl", &Secret(r"a:b\c".into()));
        assert_eq!(line, "*:*:*:repl:a\\:b\\\\c\n");
    }

    #[test]
    fn hba_addresses_are_cidrs_or_names_and_nothing_else() {
        assert_eq!(hba_address("10.0.0.7").as_deref(), Some("10.0.0.7/32"));
        assert_eq!(hba_address("fd00::1").as_deref(), Some("fd00::1/128"));
        assert_eq!(hba_address("db-2.example").as_deref(), Some("db-2.example"));
        for bad in [
            "",
            "all",
            "samenet",
            "10.0.0.7 trust",
            "a\nhost all all all trust",
            "-x",
            "10.0.0.0/8",
            "\"q\"",
        ] {
            assert_eq!(hba_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hba_block_goes_first_and_limits_the_replication_role_to_the_group() {
        let initdb = "# comment\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n";
        let out = render_hba(
            initdb,
            &rules(
                Method::ScramSha256,
                &["10.0.0.2", "10.0.0.1", "10.0.0.2", "bad host"],
                &[],
            ),
        );
        assert_eq!(
            out,
            format!(
                "{HBA_BEGIN}\n\
                 host replication \"pgpilot_replication\" 10.0.0.1/32 scram-sha-256\n\
                 host postgres \"pgpilot_replication\" 10.0.0.1/32 scram-sha-256\n\
                 host replication \"pgpilot_replication\" 10.0.0.2/32 scram-sha-256\n\
                 host postgres \"pgpilot_replication\" 10.0.0.2/32 scram-sha-256\n\
                 host replication \"pgpilot_replication\" all reject\n\
                 host all \"pgpilot_replication\" all reject\n\
                 {HBA_END}\n{initdb}"
            )
        );
        // Idempotent, and a new host list replaces the block.
        assert_eq!(
            render_hba(
                &out,
                &rules(Method::ScramSha256, &["10.0.0.2", "10.0.0.1"], &[])
            ),
            out
        );
        let three = render_hba(
            &out,
            &rules(
                Method::ScramSha256,
                &["10.0.0.1", "10.0.0.2", "10.0.0.3"],
                &[],
            ),
        );
        assert!(three.contains("10.0.0.3/32 scram-sha-256"));
        assert!(three.ends_with(initdb));
        assert_eq!(three.matches(HBA_BEGIN).count(), 1);
    }

    #[test]
    fn hba_trust_networks_and_an_older_block() {
        let old = format!(
            "local all all trust\n{OLD_HBA_BEGIN}\nhost all all samenet trust\n{OLD_HBA_END}\n"
        );
        let out = render_hba(&old, &rules(Method::Trust, &["172.20.0.5"], &["samenet"]));
        assert_eq!(
            out,
            format!(
                "{HBA_BEGIN}\n\
                 host replication \"pgpilot_replication\" 172.20.0.5/32 trust\n\
                 host postgres \"pgpilot_replication\" 172.20.0.5/32 trust\n\
                 host all all samenet trust\n\
                 host replication all samenet trust\n\
                 host replication \"pgpilot_replication\" all reject\n\
                 host all \"pgpilot_replication\" all reject\n\
                 {HBA_END}\n\
                 local all all trust\n"
            )
        );
    }

    #[test]
    fn hba_with_tls_between_the_nodes_lets_the_role_in_over_tls_only() {
        let mut r = rules(Method::ScramSha256, &["10.0.0.1"], &["samenet"]);
        r.tls_only = true;
        let out = render_hba("", &r);
        assert_eq!(
            out,
            format!(
                "{HBA_BEGIN}\n\
                 hostssl replication \"pgpilot_replication\" 10.0.0.1/32 scram-sha-256\n\
                 hostssl postgres \"pgpilot_replication\" 10.0.0.1/32 scram-sha-256\n\
                 host all all samenet trust\n\
                 host replication all samenet trust\n\
                 host replication \"pgpilot_replication\" all reject\n\
                 host all \"pgpilot_replication\" all reject\n\
                 {HBA_END}\n"
            )
        );
    }

    #[test]
    fn a_superuser_replicating_keeps_its_other_connections() {
        let mut r = rules(Method::ScramSha256, &["10.0.0.1"], &[]);
        r.replication_user = "postgres".into();
        let out = render_hba("", &r);
        assert!(out.contains("host replication \"postgres\" all reject\n"));
        assert!(!out.contains("host all \"postgres\" all reject"));
    }

    #[test]
    fn role_sql() {
        let sql = replication_role_sql("pgpilot_replication", "postgres", Some("SCRAM-SHA-256$x"));
        assert!(sql.contains("CREATE ROLE \"pgpilot_replication\""));
        assert!(sql.contains(
            "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'SCRAM-SHA-256$x';"
        ));
        assert!(sql.contains("GRANT pg_checkpoint TO \"pgpilot_replication\""));
        assert_eq!(sql.matches("GRANT EXECUTE").count(), 4);
        // Without a password the role's password is left alone.
        let trust = replication_role_sql("pgpilot_replication", "postgres", None);
        assert!(!trust.contains("PASSWORD"));
        // The superuser replicating only gets its password set.
        assert_eq!(
            replication_role_sql("postgres", "postgres", Some("v")),
            "ALTER ROLE \"postgres\" PASSWORD 'v';"
        );
        assert_eq!(replication_role_sql("postgres", "postgres", None), "");
    }
}
