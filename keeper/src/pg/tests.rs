//! Tests of the PostgreSQL controller: rendering and editing the
//! configuration files, programs, and `real_postgres_end_to_end` against a
//! real PostgreSQL (run as the postgres user, see scripts/test.sh).

use std::process::Stdio;
use std::time::Instant;

use nix::unistd::Pid;
use tokio::process::Command;

use super::clone::*;
use super::connection::QUERY_TIMEOUT;
use super::lifecycle::*;
use super::programs::*;
use super::render::*;
use super::*;
use crate::access::{HbaRules, Method};
use crate::durable::sibling_path;

fn upstream() -> Upstream {
    Upstream {
        host: "10.0.0.1".into(),
        port: 5433,
        slot_name: "pgpilot_node_2".into(),
    }
}

fn config(standby_of: Option<Upstream>) -> ManagedConfig {
    ManagedConfig {
        standby: standby_of.is_some(),
        port: 5432,
        listen_addresses: "*".into(),
        application_name: "node_2".into(),
        standby_of,
        synchronous_standby_names: "ANY 1 (node_1, node_3)".into(),
        apply_delay_ms: 0,
        wal_sender_timeout: Duration::from_secs(5),
        wal_receiver_timeout: Duration::from_millis(4500),
        group_hosts: Some(vec!["10.0.0.2".into(), "10.0.0.1".into()]),
        parameters: Default::default(),
    }
}

fn lines(rendered: &str) -> Vec<&str> {
    rendered.lines().collect()
}

#[test]
fn quoting_for_postgresql_conf() {
    assert_eq!(quote_conf(""), "''");
    assert_eq!(quote_conf("plain"), "'plain'");
    assert_eq!(quote_conf("it's"), "'it''s'");
    assert_eq!(quote_conf(r"a\b"), r"'a\\b'");
    assert_eq!(quote_conf("a\nb"), r"'a\nb'");
}

#[test]
fn quoting_for_conninfo() {
    assert_eq!(conninfo_value("db1.example"), "db1.example");
    assert_eq!(conninfo_value(""), "''");
    assert_eq!(conninfo_value("my app"), "'my app'");
    assert_eq!(conninfo_value(r"o'k\x"), r"'o\'k\\x'");
    assert_eq!(conninfo_value("a=b"), "'a=b'");
}

#[test]
fn renders_a_standby_config() {
    let rendered = render_config(
        &config(Some(upstream())),
        Path::new("/run/pg"),
        &login("pgpilot_replication", None),
    );
    let l = lines(&rendered);
    for expected in [
        "port = 5432",
        "listen_addresses = '*'",
        "unix_socket_directories = '/run/pg'",
        "cluster_name = 'node_2'",
        "wal_level = replica",
        "hot_standby = on",
        "wal_log_hints = on",
        "max_wal_senders = 16",
        "max_replication_slots = 16",
        "wal_keep_size = '512MB'",
        "wal_sender_timeout = '5000ms'",
        "wal_receiver_timeout = '4500ms'",
        "wal_receiver_status_interval = '1s'",
        "wal_retrieve_retry_interval = '500ms'",
        "hot_standby_feedback = on",
        "recovery_target_timeline = 'latest'",
        "synchronous_standby_names = 'ANY 1 (node_1, node_3)'",
        "primary_conninfo = 'host=10.0.0.1 port=5433 user=pgpilot_replication application_name=node_2 \
         connect_timeout=2 keepalives=1 keepalives_idle=1 keepalives_interval=1 keepalives_count=2'",
        "primary_slot_name = 'pgpilot_node_2'",
    ] {
        assert!(l.contains(&expected), "missing {expected:?} in\n{rendered}");
    }
    // Every setting appears once.
    let names: Vec<&str> = l
        .iter()
        .map(|line| conf_line_name(line))
        .filter(|n| !n.is_empty())
        .collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len());
    assert!(!rendered.contains("passfile"), "no password, no passfile");
}

#[test]
fn postgres_key_permissions_as_postgresql_checks_them() {
    let key = Path::new("/k.key");
    assert_eq!(postgres_key_problem(key, 100, 0o600, 100), None);
    assert_eq!(postgres_key_problem(key, 100, 0o400, 100), None);
    assert_eq!(postgres_key_problem(key, 0, 0o640, 100), None);
    for (owner, mode) in [(100, 0o640), (100, 0o604), (0, 0o644), (0, 0o660)] {
        let problem = postgres_key_problem(key, owner, mode, 100).unwrap();
        assert!(problem.contains("chmod 600"), "{problem}");
    }
    let problem = postgres_key_problem(key, 7, 0o600, 100).unwrap();
    assert!(problem.contains("chown"), "{problem}");
}

#[test]
fn tls_between_the_nodes_in_pgpilot_conf() {
    let tls = PostgresTls {
        cert_file: "/tls/pg.crt".into(),
        key_file: "/tls/pg.key".into(),
        ca_file: "/tls/ca.crt".into(),
    };
    let plain = render_config(
        &config(Some(upstream())),
        Path::new("/run/pg"),
        &login("pgpilot_replication", None),
    );
    assert!(!plain.contains("ssl"), "no TLS, ssl left alone:\n{plain}");
    let cfg = config(Some(upstream()));
    let mut l = login("pgpilot_replication", None);
    l.tls = Some(&tls);
    let rendered = render_config(&cfg, Path::new("/run/pg"), &l);
    let lines = lines(&rendered);
    for expected in [
        "ssl = on",
        "ssl_cert_file = '/tls/pg.crt'",
        "ssl_key_file = '/tls/pg.key'",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in\n{rendered}"
        );
    }
    assert!(
        rendered.contains(" sslmode=verify-full sslrootcert=/tls/ca.crt'"),
        "{rendered}"
    );
}

fn login<'a>(user: &'a str, passfile: Option<&'a Path>) -> ReplicationLogin<'a> {
    ReplicationLogin {
        user,
        passfile,
        tls: None,
        restore_command: None,
    }
}

#[test]
fn clone_command_placeholders_are_replaced_and_quoted() {
    let up = Upstream {
        host: "db-1's host".into(),
        port: 5433,
        slot_name: "pgpilot_node_2".into(),
    };
    let line = clone_command_line(
        "pgbackrest --pg1-path=%D --pg1-host=%h --pg1-port=%p restore # 100%% %x",
        Path::new("/data/pg dir.clone-tmp"),
        &up,
    );
    assert_eq!(
        line,
        "pgbackrest --pg1-path='/data/pg dir.clone-tmp' --pg1-host='db-1'\\''s host' --pg1-port=5433 restore # 100% %x"
    );
}

#[test]
fn a_rewound_directory_without_its_start_wal_needs_a_clone() {
    let label = "START WAL LOCATION: 0/6A2ED6E8 (file 00000001000000000000006A)\nCHECKPOINT LOCATION: 0/8A402288\nBACKUP METHOD: pg_rewind\n";
    assert_eq!(
        start_wal_of_label(label),
        Some(("0/6A2ED6E8".into(), "00000001000000000000006A".into()))
    );
    assert_eq!(
        start_wal_of_label("START WAL LOCATION: 0/1 (file x)\n"),
        None
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pg_wal")).unwrap();
    // No backup_label: nothing to check.
    assert_eq!(missing_start_wal(dir.path(), false), None);
    std::fs::write(dir.path().join(BACKUP_LABEL), label).unwrap();
    let why = missing_start_wal(dir.path(), false).expect("the segment is missing");
    assert!(
        why.contains("0/6A2ED6E8")
            && why.contains("00000001000000000000006A")
            && why.contains("fresh clone"),
        "{why}"
    );
    // An archive may have it; so may the directory itself.
    assert_eq!(missing_start_wal(dir.path(), true), None);
    std::fs::write(dir.path().join("pg_wal/00000001000000000000006A"), b"").unwrap();
    assert_eq!(missing_start_wal(dir.path(), false), None);
}

#[test]
fn renders_the_restore_command_only_when_configured() {
    let cfg = config(None);
    let plain = render_config(&cfg, Path::new("/run/pg"), &login("replicator", None));
    assert!(!plain.contains("restore_command"), "{plain}");
    let l = ReplicationLogin {
        restore_command: Some("cp '/archive/%f' %p"),
        ..login("replicator", None)
    };
    let rendered = render_config(&cfg, Path::new("/run/pg"), &l);
    assert!(
        rendered.contains("restore_command = 'cp ''/archive/%f'' %p'\n"),
        "{rendered}"
    );
}

#[test]
fn renders_the_formation_parameters_after_the_defaults_they_override() {
    let mut cfg = config(None);
    cfg.parameters = [
        ("wal_level".to_string(), "logical".to_string()),
        ("search_path".to_string(), "app, 'public'".to_string()),
    ]
    .into();
    let rendered = render_config(&cfg, Path::new("/run/pg"), &login("replicator", None));
    let default = rendered.find("wal_level = replica\n").expect("the default");
    let set = rendered
        .find("wal_level = 'logical'\n")
        .expect("the parameter");
    assert!(default < set, "{rendered}");
    assert!(
        rendered.contains("search_path = 'app, ''public'''\n"),
        "{rendered}"
    );
}

#[test]
fn a_standby_with_a_password_names_the_passfile_never_the_password() {
    let rendered = render_config(
        &config(Some(upstream())),
        Path::new("/run/pg"),
        &login("repl", Some(Path::new("/var/lib/pg/my data.pgpass"))),
    );
    assert!(
        rendered.contains("keepalives_count=2 passfile=''/var/lib/pg/my data.pgpass'''\n"),
        "{rendered}"
    );
    assert!(!rendered.contains("password="), "{rendered}");
}

#[test]
fn renders_a_primary_config_and_quotes_both_layers() {
    let mut cfg = config(None);
    cfg.synchronous_standby_names = "\"it's\"".into();
    let rendered = render_config(&cfg, Path::new("/tmp/o'dd"), &login("postgres", None));
    let l = lines(&rendered);
    assert!(l.contains(&"primary_conninfo = ''"));
    assert!(l.contains(&"primary_slot_name = ''"));
    assert!(l.contains(&"synchronous_standby_names = '\"it''s\"'"));
    assert!(l.contains(&"unix_socket_directories = '/tmp/o''dd'"));

    // An application name and user needing conninfo quoting, inside a
    // postgresql.conf string: `'` → `\'` (conninfo) → `\\''` (conf).
    let mut cfg = config(Some(upstream()));
    cfg.application_name = "it's".into();
    let rendered = render_config(&cfg, Path::new("/run/pg"), &login("super user", None));
    assert!(
        rendered.contains(r"user=''super user'' application_name=''it\\''s'' connect_timeout=2"),
        "{rendered}"
    );
    assert!(rendered.contains("cluster_name = 'it''s'"));
}

#[test]
fn sub_millisecond_timeouts_round_up() {
    assert_eq!(millis_ceil(Duration::from_micros(1)), 1);
    assert_eq!(millis_ceil(Duration::from_millis(1500)), 1500);
    assert_eq!(millis_ceil(Duration::ZERO), 0);
}

#[test]
fn include_line_is_added_once() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("postgresql.conf");

    std::fs::write(&conf, "#port = 5432\nshared_buffers = 128MB").unwrap();
    assert!(ensure_include_line(&conf).unwrap());
    let content = std::fs::read_to_string(&conf).unwrap();
    assert!(content.starts_with("#port = 5432\nshared_buffers = 128MB\n"));
    assert!(content.ends_with(&format!("{INCLUDE_LINE}\n")));
    assert_eq!(content.matches(INCLUDE_LINE).count(), 1);

    // Idempotent.
    assert!(!ensure_include_line(&conf).unwrap());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), content);

    // Duplicates are removed, the first one stays.
    std::fs::write(
        &conf,
        format!("a = 1\n{INCLUDE_LINE}\nb = 2\n  {INCLUDE_LINE}\n"),
    )
    .unwrap();
    assert!(ensure_include_line(&conf).unwrap());
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        format!("a = 1\n{INCLUDE_LINE}\nb = 2\n")
    );
    assert!(!dir.path().join("postgresql.conf.pgpilot-tmp").exists());
}

#[test]
fn auto_conf_loses_only_our_settings() {
    let dir = tempfile::tempdir().unwrap();
    let auto = dir.path().join("postgresql.auto.conf");
    assert!(!strip_auto_conf(&auto).unwrap(), "a missing file is fine");

    std::fs::write(
        &auto,
        "# Do not edit this file manually!\n\
         work_mem = '8MB'\n\
         synchronous_standby_names = 'x'\n\
         \tPrimary_Conninfo='host=a'\n\
         primary_slot_name = 's'\n",
    )
    .unwrap();
    assert!(strip_auto_conf(&auto).unwrap());
    assert_eq!(
        std::fs::read_to_string(&auto).unwrap(),
        "# Do not edit this file manually!\nwork_mem = '8MB'\n"
    );
    assert!(!strip_auto_conf(&auto).unwrap());
}

#[tokio::test]
async fn write_config_is_idempotent_and_manages_standby_signal() {
    let dir = tempfile::tempdir().unwrap();
    let pgdata = dir.path().join("pgdata");
    let pg = PgController::new(PgSettings {
        pgdata: pgdata.clone(),
        bin_dir: PathBuf::from("/nonexistent"),
        socket_dir: dir.path().to_path_buf(),
        superuser: "postgres".into(),
        port: 5432,
        trust_networks: Vec::new(),
        replication_user: "pgpilot_replication".into(),
        replication_password: None,
        postgres_tls: None,
        stall_timeout: crate::config::DEFAULT_STALL_TIMEOUT,
        clone_max_rate: None,
        clone_in_place: false,
        clone_command: None,
        restore_command: None,
    });
    assert!(
        pg.write_config(&config(None)).await.is_err(),
        "no cluster yet"
    );

    std::fs::create_dir(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(pgdata.join("postgresql.conf"), "# empty\n").unwrap();
    std::fs::write(
        pgdata.join("postgresql.auto.conf"),
        "primary_conninfo = 'host=old'\n",
    )
    .unwrap();

    let standby = config(Some(upstream()));
    assert!(pg.write_config(&standby).await.unwrap());
    assert!(pgdata.join("standby.signal").is_file());
    assert_eq!(
        std::fs::read_to_string(pgdata.join(PGPILOT_CONF)).unwrap(),
        render_config(&standby, dir.path(), &login("pgpilot_replication", None))
    );
    assert_eq!(
        std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap(),
        ""
    );
    assert!(!pg.write_config(&standby).await.unwrap(), "nothing changed");

    assert!(pg.write_config(&config(None)).await.unwrap());
    assert!(!pgdata.join("standby.signal").exists());
    assert!(!pg.write_config(&config(None)).await.unwrap());
    let conf = std::fs::read_to_string(pgdata.join("postgresql.conf")).unwrap();
    assert_eq!(conf.matches(INCLUDE_LINE).count(), 1);
}

fn hba_rules(hosts: &[&str], trust: &[&str]) -> HbaRules {
    HbaRules {
        replication_user: "pgpilot_replication".into(),
        superuser: "postgres".into(),
        method: Method::ScramSha256,
        group_hosts: hosts.iter().map(|h| h.to_string()).collect(),
        trust_networks: trust.iter().map(|h| h.to_string()).collect(),
        tls_only: false,
    }
}

#[test]
fn ensure_hba_writes_only_changes_and_keeps_a_block_while_hosts_are_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pg_hba.conf");
    let initdb = "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n";
    std::fs::write(&path, initdb).unwrap();
    let read = || std::fs::read_to_string(&path).unwrap();
    // Unknown hosts and no block yet: a block for this node only.
    assert!(ensure_hba(&path, &hba_rules(&["10.0.0.1"], &[]), false).unwrap());
    assert!(read().contains("host replication \"pgpilot_replication\" 10.0.0.1/32 scram-sha-256"));
    assert!(
        read().ends_with(initdb),
        "initdb's lines stay after the block"
    );
    let two = hba_rules(&["10.0.0.1", "10.0.0.2"], &["samenet"]);
    assert!(ensure_hba(&path, &two, true).unwrap());
    assert!(!ensure_hba(&path, &two, true).unwrap(), "nothing changed");
    let written = read();
    assert!(written.contains("10.0.0.2/32 scram-sha-256"));
    assert!(written.contains("host replication all samenet trust"));
    // A keeper restarted without the monitor keeps the hosts it had.
    assert!(!ensure_hba(&path, &hba_rules(&["10.0.0.1"], &[]), false).unwrap());
    assert_eq!(read(), written);
    // Lines an operator added stay.
    std::fs::write(
        &path,
        format!("{written}host all all 192.168.0.0/24 scram-sha-256\n"),
    )
    .unwrap();
    assert!(ensure_hba(&path, &hba_rules(&["10.0.0.1"], &[]), true).unwrap());
    assert!(read().contains("192.168.0.0/24 scram-sha-256"));
    assert!(!read().contains("10.0.0.2/32"));
}

#[test]
fn parses_pg_controldata() {
    let output = "pg_control version number:            1300\n\
                  Catalog version number:               202209061\n\
                  Database system identifier:           7380981279455316887\n\
                  Database cluster state:               in production\n";
    assert_eq!(
        controldata_field(output, CONTROLDATA_SYSTEM_IDENTIFIER),
        Some("7380981279455316887")
    );
    assert_eq!(
        controldata_field(output, CONTROLDATA_CLUSTER_STATE),
        Some("in production")
    );
    assert_eq!(
        controldata_field("garbage", CONTROLDATA_CLUSTER_STATE),
        None
    );
}

/// A program the keeper runs is SIGKILLed when the keeper goes: here
/// the thread that spawned it ends without reaping it (a killed keeper
/// reaps nothing either).
#[test]
fn programs_die_with_the_keeper() {
    use nix::sys::wait::{waitpid, WaitStatus};
    let spawner = std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut command = Command::new("sleep");
            command.arg("30");
            die_with_keeper(&mut command);
            let child = command.spawn().unwrap();
            let pid = child.id().unwrap() as i32;
            // Neither killed on drop nor reaped: as after a SIGKILL.
            std::mem::forget(child);
            pid
        })
    });
    let pid = spawner.join().unwrap();
    let started = Instant::now();
    let status = waitpid(Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        status,
        WaitStatus::Signaled(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL, false)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_clone_that_never_started_is_not_rewound() {
    use BeforeRewind::*;
    // A keeper killed after the clone fell back from a failed rewind,
    // before the start: backup_label, standby.signal, "in production"
    // (the upstream's state, copied). Rewinding it made it diverge.
    assert_eq!(before_rewind(true, Some("in production")), NothingToRewind);
    assert_eq!(before_rewind(true, None), NothingToRewind);
    assert_eq!(before_rewind(false, None), Rewind);
    assert_eq!(before_rewind(false, Some("shut down")), Rewind);
    assert_eq!(before_rewind(false, Some("shut down in recovery")), Rewind);
    assert_eq!(
        before_rewind(false, Some("in archive recovery")),
        RecoverAsStandby
    );
    assert_eq!(
        before_rewind(false, Some("in production")),
        DropStandbySignal
    );
}

#[tokio::test]
async fn leftover_programs_naming_a_directory_are_killed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("data.clone-tmp");
    let spawn = |arg: &Path| {
        std::process::Command::new("sh")
            // `; :` keeps sh itself running (no exec of the last command).
            .args(["-c", "sleep 30; :", "sh", "-D"])
            .arg(arg)
            .spawn()
            .unwrap()
    };
    let mut ours = spawn(&target);
    let mut other = spawn(&dir.path().join("elsewhere"));
    // Scan only once the child shows as `sh` naming the directory (a
    // loaded machine may show it a moment late).
    let shows = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c.starts_with(b"sh"))
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|a| a == target.as_os_str().as_encoded_bytes())
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !shows(ours.id()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = kill_programs_naming("sh", target.as_os_str(), Duration::from_secs(10)).await;
    // sh's own child may be caught between fork and exec, still `sh`
    // with our arguments: a copy of the program, rightly killed too.
    assert!(killed.contains(&(ours.id() as i32)), "{killed:?}");
    assert!(!killed.contains(&(other.id() as i32)), "{killed:?}");
    let status = ours.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(
        other.try_wait().unwrap().is_none(),
        "another directory's program lives"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

#[test]
fn finds_bin_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lib");
    let touch = |p: PathBuf| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "").unwrap();
    };

    let err = find_bin_dir_in(None, Some(OsString::new()), &root)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PostgreSQL server binaries"), "{err}");
    assert!(err.contains("apt-get install postgresql-15"), "{err}");
    assert!(err.contains("pg_bin_dir"), "{err}");

    for version in ["9.6", "13", "15", "not-a-version"] {
        touch(root.join(version).join("bin/pg_ctl"));
    }
    std::fs::create_dir_all(root.join("16/bin")).unwrap(); // no pg_ctl
    assert_eq!(
        find_bin_dir_in(None, None, &root).unwrap(),
        root.join("15/bin")
    );

    // PATH wins, through a symlink to the real directory.
    let real = dir.path().join("real/bin");
    touch(real.join("pg_ctl"));
    let links = dir.path().join("links");
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(real.join("pg_ctl"), links.join("pg_ctl")).unwrap();
    let path_var = std::env::join_paths([dir.path().join("empty"), links]).unwrap();
    assert_eq!(
        find_bin_dir_in(None, Some(path_var), &root).unwrap(),
        std::fs::canonicalize(&real).unwrap()
    );

    // A configured directory must hold pg_ctl.
    assert_eq!(find_bin_dir_in(Some(&real), None, &root).unwrap(), real);
    let err = find_bin_dir_in(Some(&root), None, &root)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not contain pg_ctl"), "{err}");
}

// -----------------------------------------------------------------------
// Real PostgreSQL
// -----------------------------------------------------------------------

/// Stops both servers (immediate) however the test ends.
struct StopOnDrop(Vec<(PathBuf, PathBuf)>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for (bin_dir, pgdata) in &self.0 {
            if std::thread::panicking() {
                let log = sibling_path(pgdata, ".log");
                eprintln!("--- {} ---\n{}", log.display(), log_tail(&log, 60));
            }
            if pgdata.join("postmaster.pid").exists() {
                let _ = std::process::Command::new(bin_dir.join("pg_ctl"))
                    .args(["-m", "immediate", "-w", "stop", "-D"])
                    .arg(pgdata)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut cond: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        if started.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

fn node_config(port: u16, name: &str, standby_of: Option<Upstream>) -> ManagedConfig {
    ManagedConfig {
        standby: standby_of.is_some(),
        port,
        listen_addresses: "127.0.0.1".into(),
        application_name: name.into(),
        standby_of,
        synchronous_standby_names: String::new(),
        apply_delay_ms: 0,
        wal_sender_timeout: Duration::from_secs(5),
        wal_receiver_timeout: Duration::from_secs(5),
        group_hosts: Some(vec!["127.0.0.1".into()]),
        parameters: Default::default(),
    }
}

/// initdb → primary → observe → slots → clone → standby streams →
/// synchronous commit → promote → rewind the old primary → it streams
/// from the new one → stop. PostgreSQL refuses to run as root; to run
/// it by hand: `runuser -u postgres -- <test binary> real_postgres --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_postgres_end_to_end() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_ansi(false)
        .with_env_filter("pgpilot_keeper=debug")
        .try_init();
    if nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipping real_postgres_end_to_end: PostgreSQL refuses to run as root; \
             the end-to-end suite covers it (or run this test as an unprivileged user)"
        );
        return Ok(());
    }
    let bin_dir = match find_bin_dir(None) {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("skipping real_postgres_end_to_end: {err}");
            return Ok(());
        }
    };
    let dir = tempfile::tempdir()?;
    let settings = |name: &str, port: u16| PgSettings {
        pgdata: dir.path().join(name).join("pgdata"),
        bin_dir: bin_dir.clone(),
        socket_dir: dir.path().to_path_buf(),
        superuser: "pgpilot".into(),
        port,
        trust_networks: Vec::new(),
        replication_user: "pgpilot_replication".into(),
        replication_password: None,
        postgres_tls: None,
        stall_timeout: crate::config::DEFAULT_STALL_TIMEOUT,
        clone_max_rate: None,
        clone_in_place: false,
        clone_command: None,
        restore_command: None,
    };
    let (port_a, port_b) = (free_port(), free_port());
    let a = PgController::new(settings("a", port_a));
    let b = PgController::new(settings("b", port_b));
    let _guard = StopOnDrop(vec![
        (bin_dir.clone(), a.settings().pgdata.clone()),
        (bin_dir.clone(), b.settings().pgdata.clone()),
    ]);
    let result = scenario(&a, &b, port_a, port_b).await;
    if result.is_err() {
        for pg in [&a, &b] {
            eprintln!(
                "--- {} ---\n{}",
                pg.log_file().display(),
                log_tail(&pg.log_file(), 40)
            );
        }
    }
    a.stop_immediate().await?;
    b.stop_immediate().await?;
    result
}

/// WAL written with no checkpoint after it, the postmaster SIGKILLed: the
/// next start replays it, and the keeper reports what it replayed.
async fn crash_recovery_is_reported(a: &PgController) -> anyhow::Result<()> {
    a.execute_batch(
        "CHECKPOINT; CREATE TABLE crash_filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g",
    )
    .await?;
    let pid = match a.pid_state() {
        PidState::Alive(pid) => pid,
        other => anyhow::bail!("a's postmaster is not running: {other:?}"),
    };
    // The whole tree at once, as a crash of the host's PostgreSQL: a
    // backend left attached to the shared memory would block the start.
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))?;
    let mut tree = vec![pid];
    tree.extend(
        children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok()),
    );
    for p in &tree {
        let _ = nix::sys::signal::kill(Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
    }
    wait_until("a's processes gone", Duration::from_secs(30), || {
        let gone = tree
            .iter()
            .all(|p| nix::sys::signal::kill(Pid::from_raw(*p), None).is_err());
        async move { gone }
    })
    .await?;
    let t = Instant::now();
    a.start().await?;
    eprintln!("start after a crash: {:?}", t.elapsed());
    let done = a
        .board
        .take_finished()
        .ok_or_else(|| anyhow::anyhow!("no crash recovery reported"))?;
    assert_eq!(done.work, progress::Work::Recovery);
    // The table alone is over 20 MB of WAL.
    assert!(done.done_bytes > 20 << 20, "{done:?}");
    assert!(
        done.finished_text().starts_with("crash recovery replayed "),
        "{}",
        done.finished_text()
    );
    assert_eq!(a.board.get(), None);
    a.execute_batch("DROP TABLE crash_filler").await?;
    Ok(())
}

/// A setting that needs a restart, changed while the server runs (as an
/// adopted server's pgpilot.conf does): one restart applies it; then
/// there is nothing left to restart for.
async fn pending_settings_are_applied_by_one_restart(a: &PgController) -> anyhow::Result<()> {
    assert_eq!(a.restart_for_pending_settings().await?, None);
    a.execute_batch("ALTER SYSTEM SET max_connections = 90")
        .await?;
    a.execute_batch("SELECT pg_reload_conf()").await?;
    let restarted = std::sync::Mutex::new(None);
    wait_until(
        "max_connections pending a restart",
        Duration::from_secs(30),
        || async {
            let names = a.restart_for_pending_settings().await.ok().flatten();
            let found = names.is_some();
            *restarted.lock().unwrap() = names;
            found
        },
    )
    .await?;
    let restarted = restarted.into_inner().unwrap().unwrap_or_default();
    assert_eq!(restarted, "max_connections");
    let (shown,): (String,) = a.fetch_one("SHOW max_connections", &[]).await?;
    assert_eq!(shown, "90");
    assert_eq!(a.restart_for_pending_settings().await?, None);
    a.execute_batch("ALTER SYSTEM RESET max_connections")
        .await?;
    Ok(())
}

async fn slots(pg: &PgController) -> Result<Vec<String>, PgError> {
    let rows = pg
        .fetch_all::<(String,)>(
            "SELECT slot_name::text FROM pg_replication_slots ORDER BY 1",
            &[],
            QUERY_TIMEOUT,
        )
        .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

async fn scenario(
    a: &PgController,
    b: &PgController,
    port_a: u16,
    port_b: u16,
) -> anyhow::Result<()> {
    let t = Instant::now();
    a.initdb().await?;
    eprintln!("initdb: {:?}", t.elapsed());
    a.initdb().await?; // idempotent
    assert_eq!(b.system_identifier().await?, None);
    let sysid = a.system_identifier().await?.expect("a has a cluster");

    assert!(a.write_config(&node_config(port_a, "a", None)).await?);
    assert!(!a.write_config(&node_config(port_a, "a", None)).await?);
    assert!(!a.observe().await.running);
    assert_eq!(a.observe().await.system_identifier, sysid);
    let t = Instant::now();
    a.start().await?;
    eprintln!("start primary: {:?}", t.elapsed());
    a.start().await?; // idempotent

    crash_recovery_is_reported(a).await?;
    pending_settings_are_applied_by_one_restart(a).await?;

    let obs = a.observe().await;
    assert!(obs.running && !obs.in_recovery, "{obs:?}");
    assert_eq!(obs.timeline, 1);
    assert!(obs.lsn > 0);
    assert_eq!(obs.system_identifier, sysid);
    assert!(!obs.wal_receiver_streaming);
    assert!(obs.streaming_standbys.is_empty());

    a.sync_slots(&[
        ("pgpilot_b".into(), 0, false),
        ("pgpilot_gone".into(), 0, false),
    ])
    .await?;
    assert_eq!(slots(a).await?, ["pgpilot_b", "pgpilot_gone"]);
    a.sync_slots(&[("pgpilot_b".into(), 0, false)]).await?;
    a.sync_slots(&[("pgpilot_b".into(), 0, false)]).await?;
    // The role b clones, streams and (later) rewinds as: no superuser.
    a.ensure_replication_role().await?;
    a.ensure_replication_role().await?;
    assert_eq!(slots(a).await?, ["pgpilot_b"]);

    // Clone and stream.
    let from_a = Upstream {
        host: "127.0.0.1".into(),
        port: port_a,
        slot_name: "pgpilot_b".into(),
    };
    let t = Instant::now();
    b.base_backup(&from_a).await?;
    eprintln!("base backup: {:?}", t.elapsed());
    assert_eq!(b.system_identifier().await?, Some(sysid));
    assert!(
        b.write_config(&node_config(port_b, "b", Some(from_a.clone())))
            .await?
    );
    let t = Instant::now();
    b.start().await?;
    eprintln!("start standby: {:?}", t.elapsed());
    let took = wait_until("b streams from a", Duration::from_secs(30), || async {
        b.observe().await.wal_receiver_streaming && a.observe().await.streaming_standbys == ["b"]
    })
    .await?;
    eprintln!("standby streaming after start: {took:?}");
    let obs = b.observe().await;
    assert!(obs.running && obs.in_recovery, "{obs:?}");
    assert_eq!(obs.timeline, 1);
    assert_eq!(obs.system_identifier, sysid);
    // A standby keeps slots too, advanced no further than its replay.
    b.sync_slots(&[("pgpilot_x".into(), obs.lsn, false)])
        .await?;
    b.sync_slots(&[("pgpilot_x".into(), obs.lsn, false)])
        .await?;
    assert_eq!(slots(b).await?, ["pgpilot_x"]);
    b.sync_slots(&[]).await?;
    assert_eq!(slots(b).await?, Vec::<String>::new());

    // Synchronous replication through pgpilot.conf + reload.
    let mut sync_cfg = node_config(port_a, "a", None);
    sync_cfg.synchronous_standby_names = "ANY 1 (b)".into();
    assert!(a.write_config(&sync_cfg).await?);
    a.reload().await?;
    wait_until("b is a quorum standby", Duration::from_secs(10), || async {
        a.fetch_all::<(String,)>(
            "SELECT sync_state::text FROM pg_stat_replication WHERE application_name = 'b'",
            &[],
            QUERY_TIMEOUT,
        )
        .await
        .is_ok_and(|rows| rows.iter().any(|(s,)| s == "quorum"))
    })
    .await?;
    a.fetch_all::<(i32,)>("CREATE TABLE t AS SELECT 1 AS x", &[], QUERY_TIMEOUT)
        .await?;
    let primary_lsn = a.observe().await.lsn;
    b.wait_replay_caught_up(Duration::from_secs(10)).await?;
    assert!(b.observe().await.lsn >= primary_lsn);
    let rows = b
        .fetch_all::<(i32,)>("SELECT x FROM t", &[], QUERY_TIMEOUT)
        .await?;
    assert_eq!(rows, [(1,)]);

    // Fail over: fence a, promote b.
    let t = Instant::now();
    a.stop_immediate().await?;
    a.stop_immediate().await?; // idempotent
    eprintln!("stop immediate: {:?}", t.elapsed());
    assert!(!a.observe().await.running);
    b.wait_replay_caught_up(Duration::from_secs(10)).await?;
    let t = Instant::now();
    b.promote().await?;
    eprintln!("promote: {:?}", t.elapsed());
    b.promote().await?; // idempotent
    let obs = b.observe().await;
    assert!(obs.running && !obs.in_recovery, "{obs:?}");
    assert_eq!(obs.timeline, 2);
    b.fetch_all::<(i32,)>("INSERT INTO t VALUES (2)", &[], QUERY_TIMEOUT)
        .await?;

    // The old primary rejoins: rewind (after a crash), then stream from b.
    b.sync_slots(&[("pgpilot_a".into(), 0, false)]).await?;
    let from_b = Upstream {
        host: "127.0.0.1".into(),
        port: port_b,
        slot_name: "pgpilot_a".into(),
    };
    let t = Instant::now();
    a.rewind(&from_b).await?;
    eprintln!("rewind: {:?}", t.elapsed());
    a.write_config(&node_config(port_a, "a", Some(from_b.clone())))
        .await?;
    let t = Instant::now();
    a.start().await?;
    eprintln!("start rewound standby: {:?}", t.elapsed());
    let took = wait_until("a streams from b", Duration::from_secs(30), || async {
        a.observe().await.wal_receiver_streaming && b.observe().await.streaming_standbys == ["a"]
    })
    .await?;
    eprintln!("rewound standby streaming after start: {took:?}");
    a.wait_replay_caught_up(Duration::from_secs(10)).await?;
    let obs = a.observe().await;
    assert!(obs.in_recovery && obs.timeline == 2, "{obs:?}");
    let rows = a
        .fetch_all::<(i32,)>("SELECT x FROM t ORDER BY x", &[], QUERY_TIMEOUT)
        .await?;
    assert_eq!(rows, [(1,), (2,)]);

    // The facts of the divergence check: b's timeline history (read as the
    // replication role), a's position (none to check while it streams).
    let history = a.upstream_history(&from_b).await?;
    assert_eq!(history.current, 2, "{history:?}");
    assert_eq!(history.switches.len(), 1, "{history:?}");
    assert_eq!(history.switches[0].0, 1);
    assert!(history.switches[0].1 >= primary_lsn, "{history:?}");
    assert_eq!(a.wal_position().await?, None);
    let from_a = Upstream {
        host: "127.0.0.1".into(),
        port: port_a,
        slot_name: String::new(),
    };
    let refused = b.upstream_history(&from_a).await;
    assert!(
        refused.is_err(),
        "a standby's history is never followed: {refused:?}"
    );

    // b goes away: a runs on without a stream and still says it holds WAL
    // of timeline 2, as elections need (its last restartpoint, from the
    // rewind, is on timeline 1; no WAL receiver names the timeline now).
    b.stop_immediate().await?;
    wait_until(
        "a's stream from b is gone",
        Duration::from_secs(30),
        || async { !a.observe().await.wal_receiver_streaming },
    )
    .await?;
    let obs = a.observe().await;
    assert!(obs.running && obs.in_recovery, "{obs:?}");
    assert_eq!(obs.timeline, 2, "{obs:?}");
    b.start().await?;

    // A crashed standby can be "rewound" too (nothing to do), and streams again.
    a.stop_immediate().await?;
    let t = Instant::now();
    a.rewind(&from_b).await?;
    eprintln!("rewind of a crashed standby: {:?}", t.elapsed());
    a.write_config(&node_config(port_a, "a", Some(from_b.clone())))
        .await?;
    a.start().await?;
    wait_until(
        "a streams from b again",
        Duration::from_secs(30),
        || async { a.observe().await.wal_receiver_streaming },
    )
    .await?;

    let t = Instant::now();
    b.stop().await?;
    eprintln!("stop fast: {:?}", t.elapsed());
    b.stop().await?; // idempotent
    a.stop().await?;
    a.reload().await?; // not running: fine
    assert!(!a.observe().await.running);
    // Stopped: from the control file, on b's timeline, not diverged.
    let stopped = a.wal_position().await?.expect("a has a data directory");
    assert_eq!(stopped.timeline, 2, "{stopped:?}");
    assert!(stopped.lsn > history.switches[0].1, "{stopped:?}");
    assert_eq!(crate::timeline::divergence(stopped, &history), None);
    Ok(())
}
