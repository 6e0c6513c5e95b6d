use super::*;

const MINIMAL: &str = r#"
    name = "node1"
    host = "127.0.0.1"
    port = 6001
    pgdata = "/tmp/x/data"
    monitor = "http://127.0.0.1:7430"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = KeeperConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.formation, "default");
    assert_eq!(c.fence_timeout, DEFAULT_FENCE_TIMEOUT);
    assert_eq!(
        c.state_file(),
        PathBuf::from("/tmp/x/data.pgpilot-state.json")
    );
    assert_eq!(c.socket_dir(), PathBuf::from("/tmp/x"));
    assert_eq!(c.listen_addresses(), "127.0.0.1");
    assert_eq!(c.http_listen, None);
    assert_eq!(c.advertised_port(), 6001);
}

#[test]
fn advertise_port_is_what_the_monitor_is_told() {
    let c = KeeperConfig::parse(&format!("{MINIMAL}\nadvertise_port = 7001\n")).unwrap();
    assert_eq!((c.port, c.advertised_port()), (6001, 7001));
    let err = KeeperConfig::parse(&format!("{MINIMAL}\nadvertise_port = 0\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("advertise_port"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn http_listen_is_an_address() {
    let c = KeeperConfig::parse(&format!("{MINIMAL}\nhttp_listen = \"0.0.0.0:8008\"\n")).unwrap();
    assert_eq!(c.http_listen, Some("0.0.0.0:8008".parse().unwrap()));
    let err = KeeperConfig::parse(&format!("{MINIMAL}\nhttp_listen = \"localhost\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http_listen"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn long_work_settings_have_defaults_and_bounds() {
    let c = KeeperConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.stall_timeout, DEFAULT_STALL_TIMEOUT);
    assert_eq!(c.clone_max_rate, None);
    let c = KeeperConfig::parse(&format!(
        "{MINIMAL}\nstall_timeout = \"30s\"\nclone_max_rate = \"50MB\"\n"
    ))
    .unwrap();
    assert_eq!(c.stall_timeout, Duration::from_secs(30));
    assert_eq!(c.clone_max_rate, Some(50 << 20));
    assert_eq!(parse_rate("512kB"), Ok(512 << 10));
    assert_eq!(parse_rate("1GB"), Ok(1 << 30));
    assert_eq!(parse_rate("65536"), Ok(65536));
    for bad in ["10kB", "2GB", "fast", "50 MB/s", "-5MB", ""] {
        let err = parse_rate(bad).unwrap_err();
        assert!(
            err.contains("clone_max_rate") && err.contains("32kB"),
            "{err}"
        );
    }
    let err = KeeperConfig::parse(&format!("{MINIMAL}\nclone_max_rate = \"1TB\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clone_max_rate") && !err.contains('\n'),
        "{err}"
    );
    let c = KeeperConfig::parse(&format!(
        "{MINIMAL}\nclone_command = \"cp -a /backup/. %D\"\nrestore_command = \"cp /archive/%f %p\"\n"
    ))
    .unwrap();
    assert_eq!(c.clone_command.as_deref(), Some("cp -a /backup/. %D"));
    assert_eq!(c.restore_command.as_deref(), Some("cp /archive/%f %p"));
    for (key, value, says) in [
        ("clone_command", "cp -a /backup/. /data", "%D"),
        ("restore_command", "cp /archive/x %p", "%f and %p"),
    ] {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\n{key} = {value:?}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains(says) && !err.contains('\n'),
            "{err}"
        );
    }
    let err = KeeperConfig::parse(&format!("{MINIMAL}\nstall_timeout = \"200ms\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("stall_timeout"), "{err}");
}

#[test]
fn unknown_key_is_named_on_one_line() {
    let err = KeeperConfig::parse(&format!("{MINIMAL}\ncolour = \"blue\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("colour"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn missing_key_is_named() {
    let err = KeeperConfig::parse("name = \"a\"").unwrap_err().to_string();
    assert!(err.contains("host") || err.contains("missing"), "{err}");
}

#[test]
fn timeouts_are_checked_against_each_other() {
    let err = KeeperConfig::parse(&format!(
        "{MINIMAL}\nheartbeat_interval = \"1s\"\nfence_timeout = \"1500ms\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("fence_timeout"), "{err}");
}

#[test]
fn an_apply_delay_makes_a_delayed_standby_never_a_candidate() {
    let c = KeeperConfig::parse(MINIMAL).unwrap();
    assert_eq!(
        (
            c.apply_delay_ms(),
            c.candidate_priority(),
            c.replication_quorum()
        ),
        (0, DEFAULT_CANDIDATE_PRIORITY, true)
    );
    let c = KeeperConfig::parse(&format!("{MINIMAL}\napply_delay = \"1h\"\n")).unwrap();
    assert_eq!(
        (
            c.apply_delay_ms(),
            c.candidate_priority(),
            c.replication_quorum()
        ),
        (3_600_000, 0, false)
    );
    let c = KeeperConfig::parse(&format!(
        "{MINIMAL}\napply_delay = \"30min\"\ncandidate_priority = 0\nreplication_quorum = false\n"
    ))
    .unwrap();
    assert_eq!(c.apply_delay_ms(), 1_800_000);
    for (extra, word) in [
        (
            "candidate_priority = 50",
            "candidate_priority = 50 contradicts it",
        ),
        (
            "replication_quorum = true",
            "replication_quorum = true contradicts it",
        ),
    ] {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\napply_delay = \"1h\"\n{extra}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("delayed standby") && err.contains(word),
            "{err}"
        );
    }
    let err = KeeperConfig::parse(&format!("{MINIMAL}\napply_delay = \"30days\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("apply_delay") && err.contains("longer than PostgreSQL allows"),
        "{err}"
    );
    let err = KeeperConfig::parse(&format!("{MINIMAL}\napply_delay = \"soon\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected a duration"), "{err}");
}

#[test]
fn invalid_values_get_a_sentence() {
    for (extra, word) in [
        ("candidate_priority = 101", "candidate_priority"),
        ("wal_sender_timeout = \"100ms\"", "wal_sender_timeout"),
    ] {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\n{extra}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(word), "{err}");
    }
    let err = KeeperConfig::parse(&MINIMAL.replace("http://127.0.0.1:7430", "127.0.0.1:7430"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("monitor"), "{err}");
}

/// MINIMAL with `monitor = <value>` instead of its one URL.
fn with_monitor(value: &str) -> String {
    MINIMAL.replace(
        "monitor = \"http://127.0.0.1:7430\"",
        &format!("monitor = {value}"),
    )
}

#[test]
fn monitor_is_one_url_or_a_list() {
    let c = KeeperConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.monitors, ["http://127.0.0.1:7430"]);
    let c = KeeperConfig::parse(&with_monitor(
        r#"["http://m1:7430", "http://m2:7430", "http://m3:7430"]"#,
    ))
    .unwrap();
    assert_eq!(
        c.monitors,
        ["http://m1:7430", "http://m2:7430", "http://m3:7430"]
    );
    let https = format!(
        "{}\ntls_ca_file = \"/ca.crt\"\n",
        with_monitor(r#"["https://m1:7430", "https://m2:7430"]"#)
    );
    assert_eq!(KeeperConfig::parse(&https).unwrap().monitors.len(), 2);
    let err = KeeperConfig::parse(&MINIMAL.replace("monitor = \"http://127.0.0.1:7430\"", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `monitor`"), "{err}");
}

#[test]
fn bad_monitor_lists_get_one_sentence() {
    for (value, words) in [
        ("[]", &["empty list", "monitor = ["][..]),
        (
            r#"["http://m1:7430", "http://m2:7430", "http://m1:7430"]"#,
            &["\"http://m1:7430\" is listed twice", "once"],
        ),
        (
            r#"["http://m1:7430", "http://M1:7430/"]"#,
            &["listed twice"],
        ),
        (
            r#"["http://m1:7430", "https://m2:7430"]"#,
            &["mixes http:// and https://", "\"https://m2:7430\""],
        ),
        (
            r#"["http://m1:7430", "m2:7430"]"#,
            &["monitor \"m2:7430\"", "must be a URL"],
        ),
        ("7430", &["monitor is an integer", "monitor = [\""]),
        ("[7430]", &["monitor lists an integer", "URL string"]),
        (
            r#"["http://m1:7430", ["http://m2:7430"]]"#,
            &["monitor lists a list"],
        ),
        ("{ url = \"http://m1:7430\" }", &["monitor is a table"]),
        ("true", &["monitor is a boolean"]),
    ] {
        let err = KeeperConfig::parse(&with_monitor(value))
            .unwrap_err()
            .to_string();
        for word in words {
            assert!(err.contains(word), "{value}: {err}");
        }
        assert!(!err.contains('\n'), "{err}");
    }
    let err = KeeperConfig::parse(&format!("{MINIMAL}\nmonitors = [\"http://m2:7430\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("monitors"), "unknown keys stay refused: {err}");
}

#[test]
fn tls_settings_are_checked_for_every_monitor() {
    let list = with_monitor(r#"["https://m1:7430", "https://m2:7430"]"#);
    let err = KeeperConfig::parse(&list).unwrap_err().to_string();
    assert!(err.contains("tls_ca_file"), "{err}");
    let err = KeeperConfig::parse(&format!(
        "{list}\ntls_ca_file = \"/ca\"\ntls_cert_file = \"/c\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls_key_file"), "{err}");
    let plain = with_monitor(r#"["http://m1:7430", "http://m2:7430"]"#);
    let err = KeeperConfig::parse(&format!("{plain}\ntoken_file = \"/t\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token_file") && err.contains("https://"),
        "{err}"
    );
}

#[test]
fn shipped_example_parses() {
    let c = KeeperConfig::parse(include_str!("../../../compose/keeper.toml")).unwrap();
    assert!(c.monitors[0].starts_with("https://") && c.tls_ca_file.is_some());
}

#[test]
fn tls_settings_must_fit_the_monitor_url() {
    let https = MINIMAL.replace("http://", "https://");
    let err = KeeperConfig::parse(&https).unwrap_err().to_string();
    assert!(err.contains("tls_ca_file"), "{err}");
    let c = KeeperConfig::parse(&format!("{https}\ntls_ca_file = \"/ca.crt\"\n")).unwrap();
    assert_eq!(c.client_security().ca_file, Some(PathBuf::from("/ca.crt")));
    let err = KeeperConfig::parse(&format!("{MINIMAL}\ntls_ca_file = \"/ca.crt\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("https://"), "{err}");
    let err = KeeperConfig::parse(&format!(
        "{https}\ntls_ca_file = \"/ca\"\ntls_cert_file = \"/c\"\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("tls_key_file"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[test]
fn compose_lab_configs_parse() {
    for (name, text) in [
        ("node1", include_str!("../../../compose/lab/node1.toml")),
        ("node2", include_str!("../../../compose/lab/node2.toml")),
        ("node3", include_str!("../../../compose/lab/node3.toml")),
    ] {
        let c = KeeperConfig::parse(text).unwrap();
        assert_eq!((c.name.as_str(), c.host.as_str()), (name, name));
        assert_eq!(c.trust_networks, ["samenet"]);
        assert!(c.http_listen.is_some());
        assert_eq!(
            c.monitors,
            ["https://monitor:7430", "https://monitor2:7430"]
        );
        assert!(c.tls_cert_file.is_some() && c.tls_key_file.is_some());
        assert!(c.postgres_tls().is_some());
    }
}

#[test]
fn role_names_are_checked() {
    let c = KeeperConfig::parse(MINIMAL).unwrap();
    assert_eq!(c.replication_user, DEFAULT_REPLICATION_USER);
    assert_eq!(c.replication_password_file, None);
    let c = KeeperConfig::parse(&format!(
        "{MINIMAL}\nreplication_user = \"repl_2\"\nreplication_password_file = \"/etc/pgpilot/repl\"\n"
    ))
    .unwrap();
    assert_eq!(c.replication_user, "repl_2");
    for bad in [
        "",
        "Repl",
        "pg_repl",
        "2repl",
        "a b",
        "a\\\"b",
        &"r".repeat(64),
    ] {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\nreplication_user = {bad:?}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("replication_user") && err.contains("role name"),
            "{err}"
        );
    }
}

#[test]
fn postgres_tls_files_go_together_and_are_absolute() {
    let all = "postgres_tls_cert_file = \"/tls/pg.crt\"\npostgres_tls_key_file = \"/tls/pg.key\"\npostgres_tls_ca_file = \"/tls/ca.crt\"\n";
    let c = KeeperConfig::parse(&format!("{MINIMAL}\n{all}")).unwrap();
    let tls = c.postgres_tls().unwrap();
    assert_eq!(tls.ca_file, Path::new("/tls/ca.crt"));
    assert_eq!(KeeperConfig::parse(MINIMAL).unwrap().postgres_tls(), None);
    for line in all.lines() {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\n{line}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("go together"), "{err}");
    }
    let relative = all.replace("/tls/pg.key", "tls/pg.key");
    let err = KeeperConfig::parse(&format!("{MINIMAL}\n{relative}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("postgres_tls_key_file") && err.contains("absolute"),
        "{err}"
    );
}

#[test]
fn trust_networks_are_cidrs_or_samenet() {
    let c = KeeperConfig::parse(&format!(
        "{MINIMAL}\ntrust_networks = [\"samenet\", \"10.0.0.0/8\", \"fd00::/64\"]\n"
    ))
    .unwrap();
    assert_eq!(c.trust_networks, ["samenet", "10.0.0.0/8", "fd00::/64"]);
    assert!(KeeperConfig::parse(MINIMAL)
        .unwrap()
        .trust_networks
        .is_empty());
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "all",
        "host/8",
        "0.0.0.0/x",
        "fd00::/129",
    ] {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\ntrust_networks = [{bad:?}]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("trust_networks") && err.contains(bad), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn clone_from_names_the_primary_a_standby_or_a_node() {
    assert_eq!(KeeperConfig::parse(MINIMAL).unwrap().clone_from, "primary");
    for value in ["standby", "node2", "primary"] {
        let c = KeeperConfig::parse(&format!("{MINIMAL}\nclone_from = \"{value}\"\n")).unwrap();
        assert_eq!(c.clone_from, value);
    }
    for (value, says) in [
        ("", "clone_from \"\" is not valid"),
        ("node 2", "not valid"),
        ("node1", "names this node itself"),
    ] {
        let err = KeeperConfig::parse(&format!("{MINIMAL}\nclone_from = \"{value}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says) && !err.contains('\n'), "{err}");
    }
}
