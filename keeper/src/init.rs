//! `pgpilot-keeper init`: a commented configuration written from flags,
//! checked by parsing it exactly as `run` will, and written only when it
//! passes (never over an existing file unless asked).

use std::io::Write;
use std::path::PathBuf;

use crate::config::{
    KeeperConfig, DEFAULT_CANDIDATE_PRIORITY, DEFAULT_FENCE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_HOOK_TIMEOUT, DEFAULT_REGISTER_TIMEOUT, DEFAULT_REPLICATION_USER,
    DEFAULT_STALL_TIMEOUT, DEFAULT_STOP_TIMEOUT, DEFAULT_WAL_RECEIVER_TIMEOUT,
    DEFAULT_WAL_SENDER_TIMEOUT,
};

/// The flags of `pgpilot-keeper init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Node name, unique in its formation.
    #[arg(long)]
    pub name: String,
    /// The formation to join.
    #[arg(long, default_value = "default")]
    pub formation: String,
    /// Address the monitor and the other nodes reach this PostgreSQL at.
    #[arg(long)]
    pub host: String,
    /// PostgreSQL port.
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// PostgreSQL data directory (absolute; created by initdb or a clone
    /// when empty, kept when it holds a cluster).
    #[arg(long)]
    pub pgdata: PathBuf,
    /// Monitor URL; repeat it for monitors sharing one database.
    #[arg(long = "monitor", required = true)]
    pub monitors: Vec<String>,
    /// CA that signed the monitor's certificate (with --tls-cert-file and
    /// --tls-key-file: mutual TLS).
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// The monitor's shared token (a monitor in token mode).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// File holding the replication role's password (absent: the group's
    /// hosts are trusted).
    #[arg(long)]
    pub replication_password_file: Option<PathBuf>,
    /// 0 to 100; 0: never promoted.
    #[arg(long, default_value_t = DEFAULT_CANDIDATE_PRIORITY)]
    pub candidate_priority: u32,
    /// Whether this node counts toward synchronous commit.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub replication_quorum: bool,
    /// The keeper's HTTP server (IP:PORT) for load balancers and metrics.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Write the configuration here (mode 0600) instead of to standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace --out when it exists.
    #[arg(long)]
    pub force: bool,
}

/// A TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn path(p: &std::path::Path) -> String {
    quoted(&p.to_string_lossy())
}

/// `key = value`, or the key commented out with an example when unset.
fn optional(key: &str, value: Option<String>, example: &str) -> String {
    match value {
        Some(v) => format!("{key} = {v}\n"),
        None => format!("# {key} = {example}\n"),
    }
}

/// The configuration text: every setting, those not given commented out
/// with their default or an example.
pub fn render(a: &InitArgs) -> String {
    let secs = |d: std::time::Duration| quoted(&humantime::format_duration(d).to_string());
    let monitor = match a.monitors.as_slice() {
        [one] => quoted(one),
        many => format!(
            "[{}]",
            many.iter()
                .map(|m| quoted(m))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut t = String::new();
    t.push_str(&format!(
        "# pgpilot keeper of node {name}, written by `pgpilot-keeper init`.\n\
         # Every setting: docs/configuration.md. Check it with\n\
         # `pgpilot-keeper run --config THIS_FILE` (a bad key or value stops it\n\
         # with one sentence, exit 2).\n\n",
        name = a.name
    ));
    t.push_str("# Who this node is and where its PostgreSQL lives.\n");
    t.push_str(&format!("name = {}\n", quoted(&a.name)));
    t.push_str(&format!("formation = {}\n", quoted(&a.formation)));
    t.push_str(&format!("host = {}\n", quoted(&a.host)));
    t.push_str(&format!("port = {}\n", a.port));
    t.push_str("# advertise_port = 6432            # what others are told, behind a proxy\n");
    t.push_str(&format!("pgdata = {}\n", path(&a.pgdata)));
    t.push_str("# pg_bin_dir = \"/usr/lib/postgresql/15/bin\"  # found on PATH or under /usr/lib/postgresql\n");
    t.push_str("# pg_user = \"postgres\"\n\n");
    t.push_str("# The monitor(s), and how this keeper proves who it is.\n");
    t.push_str(&format!("monitor = {monitor}\n"));
    t.push_str(&optional(
        "tls_ca_file",
        a.tls_ca_file.as_deref().map(path),
        "\"/etc/pgpilot/tls/ca.crt\"",
    ));
    t.push_str(&optional(
        "tls_cert_file",
        a.tls_cert_file.as_deref().map(path),
        "\"/etc/pgpilot/tls/keeper.crt\"",
    ));
    t.push_str(&optional(
        "tls_key_file",
        a.tls_key_file.as_deref().map(path),
        "\"/etc/pgpilot/tls/keeper.key\"",
    ));
    t.push_str(&optional(
        "token_file",
        a.token_file.as_deref().map(path),
        "\"/etc/pgpilot/token\"",
    ));
    t.push_str("\n# Replication between the nodes.\n");
    t.push_str(&format!(
        "# replication_user = {}\n",
        quoted(DEFAULT_REPLICATION_USER)
    ));
    t.push_str(&optional(
        "replication_password_file",
        a.replication_password_file.as_deref().map(path),
        "\"/etc/pgpilot/replication.password\"",
    ));
    t.push_str(&format!("candidate_priority = {}\n", a.candidate_priority));
    t.push_str(&format!("replication_quorum = {}\n", a.replication_quorum));
    t.push_str("\n# Timings (the fence bound is computed from them).\n");
    for (key, value) in [
        ("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL),
        ("fence_timeout", DEFAULT_FENCE_TIMEOUT),
        ("wal_sender_timeout", DEFAULT_WAL_SENDER_TIMEOUT),
        ("wal_receiver_timeout", DEFAULT_WAL_RECEIVER_TIMEOUT),
        ("register_timeout", DEFAULT_REGISTER_TIMEOUT),
        ("stop_timeout", DEFAULT_STOP_TIMEOUT),
    ] {
        t.push_str(&format!("# {key} = {}\n", secs(value)));
    }
    t.push_str("\n# Building this node as a standby.\n");
    t.push_str(&format!(
        "# stall_timeout = {}\n",
        secs(DEFAULT_STALL_TIMEOUT)
    ));
    t.push_str("# clone_from = \"primary\"           # or \"standby\", or a node's name\n");
    t.push_str("# clone_max_rate = \"50MB\"\n");
    t.push_str("# clone_in_place = false\n");
    t.push_str("# clone_command = \"pgbackrest --stanza=main --pg1-path=%D --delta restore\"\n");
    t.push_str("# restore_command = \"pgbackrest --stanza=main archive-get %f %p\"\n");
    t.push_str("\n# Hooks: shell commands with PGPILOT_* in their environment.\n");
    t.push_str("# on_role_change = \"/etc/pgpilot/move-vip.sh\"   # PGPILOT_OLD_ROLE -> PGPILOT_NEW_ROLE\n");
    t.push_str("# before_stop = \"/etc/pgpilot/before-stop.sh\"\n");
    t.push_str(
        "# before_promotion = \"/etc/pgpilot/may-promote.sh\"   # non-zero exit: not this node\n",
    );
    t.push_str(&format!(
        "# hook_timeout = {}\n",
        secs(DEFAULT_HOOK_TIMEOUT)
    ));
    t.push_str("\n# HTTP server for load balancers, orchestrators and Prometheus.\n");
    t.push_str(&optional(
        "http_listen",
        a.http_listen.as_deref().map(quoted),
        "\"127.0.0.1:8008\"",
    ));
    t.push_str("# noloadbalance = false\n");
    t
}

/// Render, check, and write (to `--out`, or standard output); what to tell
/// the operator, or the one sentence why nothing was written.
pub fn run(a: &InitArgs) -> Result<String, String> {
    let text = render(a);
    KeeperConfig::parse(&text).map_err(|e| format!("{e}: nothing was written"))?;
    let Some(out) = &a.out else {
        print!("{text}");
        return Ok(String::new());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if a.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} exists: give --force to replace it, or another --out",
                out.display()
            )
        } else {
            format!("cannot write {}: {e}", out.display())
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(format!(
        "wrote {}; start the keeper with: pgpilot-keeper run --config {}",
        out.display(),
        out.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InitArgs {
        InitArgs {
            name: "node1".into(),
            formation: "default".into(),
            host: "10.0.0.1".into(),
            port: 5432,
            pgdata: "/var/lib/postgresql/15/pgpilot".into(),
            monitors: vec!["https://10.0.0.5:7430".into()],
            tls_ca_file: Some("/etc/pgpilot/tls/ca.crt".into()),
            tls_cert_file: Some("/etc/pgpilot/tls/keeper-default-node1.crt".into()),
            tls_key_file: Some("/etc/pgpilot/tls/keeper-default-node1.key".into()),
            token_file: None,
            replication_password_file: None,
            candidate_priority: 90,
            replication_quorum: false,
            http_listen: Some("0.0.0.0:8008".into()),
            out: None,
            force: false,
        }
    }

    #[test]
    fn what_init_writes_is_what_run_reads() {
        let c = KeeperConfig::parse(&render(&args())).unwrap();
        assert_eq!(
            (c.name.as_str(), c.host.as_str(), c.port),
            ("node1", "10.0.0.1", 5432)
        );
        assert_eq!(c.monitors, vec!["https://10.0.0.5:7430".to_string()]);
        assert_eq!(
            (c.candidate_priority(), c.replication_quorum()),
            (90, false)
        );
        assert_eq!(c.http_listen, Some("0.0.0.0:8008".parse().unwrap()));
        assert_eq!(c.heartbeat_interval, DEFAULT_HEARTBEAT_INTERVAL);
        assert_eq!(c.stall_timeout, DEFAULT_STALL_TIMEOUT);
        assert_eq!(c.clone_from, "primary");
        // Several monitors, and a value that needs quoting.
        let mut a = args();
        a.monitors.push("https://10.0.0.6:7430".into());
        a.pgdata = "/data/pg \"main\"".into();
        let c = KeeperConfig::parse(&render(&a)).unwrap();
        assert_eq!(c.monitors.len(), 2);
        assert_eq!(c.pgdata, PathBuf::from("/data/pg \"main\""));
    }

    #[test]
    fn every_setting_is_named_in_the_file() {
        let text = render(&args());
        for key in [
            "advertise_port",
            "pg_bin_dir",
            "pg_user",
            "token_file",
            "replication_user",
            "replication_password_file",
            "heartbeat_interval",
            "fence_timeout",
            "wal_sender_timeout",
            "wal_receiver_timeout",
            "register_timeout",
            "stall_timeout",
            "stop_timeout",
            "on_role_change",
            "before_stop",
            "before_promotion",
            "hook_timeout",
            "clone_from",
            "clone_max_rate",
            "clone_in_place",
            "clone_command",
            "restore_command",
            "http_listen",
            "noloadbalance",
        ] {
            assert!(
                text.contains(&format!("{key} = ")),
                "{key} missing:\n{text}"
            );
        }
    }

    #[test]
    fn a_bad_value_writes_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keeper.toml");
        let mut a = args();
        a.out = Some(out.clone());
        a.candidate_priority = 101;
        let err = run(&a).unwrap_err();
        assert!(
            err.contains("candidate_priority") && err.ends_with("nothing was written"),
            "{err}"
        );
        assert!(!out.exists());
        a.candidate_priority = 50;
        let said = run(&a).unwrap();
        assert!(said.contains("pgpilot-keeper run --config"), "{said}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = run(&a).unwrap_err();
        assert!(err.contains("exists: give --force"), "{err}");
        a.force = true;
        run(&a).unwrap();
        assert!(KeeperConfig::load(&out).is_ok());
    }
}
