//! Transport security end to end, on real processes: mutual TLS with
//! keeper and operator identities, the shared token, plaintext clients
//! against a TLS monitor, secret files others can read, oversized
//! requests, and the two-node failover with TLS on.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_proto::pb;
use pgpilot_proto::security::{ClientSecurity, Credentials};
use pgpilot_tests::operator::describe;
use pgpilot_tests::process::free_port;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, KeeperToml, Security, Tools, Writer,
};

/// Bound on one program run by these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(mut cmd: std::process::Command, what: &str) -> Result<Output> {
    cmd.stdin(Stdio::null());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    tokio::time::timeout(RUN_TIMEOUT, cmd.output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {RUN_TIMEOUT:?}"))?
        .with_context(|| format!("running {what}"))
}

/// `pgpilot-monitor ARGS --monitor URL` with exactly the environment given
/// (no TLS settings inherited).
async fn cli(
    cluster: &Cluster,
    url: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> Result<Output> {
    let mut cmd = cluster.tools().monitor_command();
    cmd.args(args).args(["--monitor", url]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(cmd, &format!("pgpilot-monitor {}", args.join(" "))).await
}

/// Expect exit `code` and every word of `words` on stderr.
fn expect_exit(output: &Output, code: i32, words: &[&str], what: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(code) || !words.iter().all(|w| stderr.contains(w)) {
        bail!(
            "{what}: expected exit {code} and {words:?} on stderr\n{}",
            describe(output)
        );
    }
    if stderr.trim().lines().count() != 1 {
        bail!("{what}: expected one line on stderr\n{}", describe(output));
    }
    Ok(())
}

fn timings() -> pb::KeeperTimings {
    pb::KeeperTimings {
        heartbeat_interval_ms: 500,
        fence_timeout_ms: 1500,
        wal_sender_timeout_ms: 2000,
    }
}

/// Heartbeats sent over one `Heartbeats` stream: every reply, or the
/// status the stream ended with.
async fn over_stream(
    client: &mut pgpilot_proto::security::Client,
    beats: Vec<pb::NodeActiveRequest>,
) -> std::result::Result<Vec<pb::NodeActiveReply>, tonic::Status> {
    let mut replies = client
        .heartbeats(tokio_stream::iter(beats))
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.message().await? {
        got.push(reply);
    }
    Ok(got)
}

fn expect_code<T: std::fmt::Debug>(
    result: std::result::Result<T, tonic::Status>,
    code: tonic::Code,
    words: &[&str],
    what: &str,
) -> Result<()> {
    match result {
        Err(status)
            if status.code() == code && words.iter().all(|w| status.message().contains(w)) =>
        {
            eprintln!("{what}: {:?}: {}", status.code(), status.message());
            Ok(())
        }
        other => bail!("{what}: expected {code:?} with {words:?}, got {other:?}"),
    }
}

/// A keeper config for a node the cluster does not run, pointing at its
/// monitor, with `extra` TOML lines; written with mode 0600 and handed to
/// the PostgreSQL user.
fn stray_keeper(
    cluster: &Cluster,
    dir: &Path,
    name: &str,
    extra: &str,
) -> Result<std::path::PathBuf> {
    let tools = cluster.tools();
    let node_dir = dir.join(name);
    tools.make_dir(&node_dir)?;
    let config = KeeperToml {
        name: name.to_string(),
        formation: "default".to_string(),
        host: "127.0.0.1".to_string(),
        port: free_port()?,
        advertise_port: None,
        pgdata: node_dir.join("data").display().to_string(),
        monitor: vec![cluster.monitor_url().to_string()],
        pg_bin_dir: tools.pg_bin_dir.display().to_string(),
        pg_user: "postgres".to_string(),
        candidate_priority: None,
        replication_quorum: None,
        apply_delay: None,
        register_timeout: Some("3s".to_string()),
    };
    let path = node_dir.join("keeper.toml");
    std::fs::write(&path, config.render()? + extra)?;
    tools.hand_over(&path)?;
    Ok(path)
}

/// A keeper that exits with `code` and `words` in its output (it also logs
/// to stderr, so that is more than one line).
fn expect_keeper_exit(output: &Output, code: i32, words: &[&str], what: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(code) || !words.iter().all(|w| stderr.contains(w)) {
        bail!(
            "{what}: expected exit {code} and {words:?} on stderr\n{}",
            describe(output)
        );
    }
    Ok(())
}

async fn run_keeper(cluster: &Cluster, config: &Path) -> Result<Output> {
    let dir = config.parent().expect("config in a directory");
    run(
        cluster.tools().keeper_command(config, dir),
        "pgpilot-keeper",
    )
    .await
}

/// Mutual TLS: the failover works; a client without a certificate, with a
/// certificate of another CA, or in plaintext is refused; a keeper
/// certificate runs no operator command and cannot act as another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_identities_and_failover() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2).security(Security::MutualTls)).await?;
    let state = cluster.wait_healthy_pair().await?;
    let url = cluster.monitor_url().to_string();
    assert!(url.starts_with("https://"), "{url}");
    let tls = cluster.tls_files().expect("TLS files").clone();
    let ca = tls.ca().display().to_string();

    // The operator (what run_cli passes) may look.
    let ok = cluster.run_cli(&["show-state", "--monitor", &url]).await?;
    if !ok.status.success() || !String::from_utf8_lossy(&ok.stdout).contains("node1") {
        bail!("show-state as the operator failed\n{}", describe(&ok));
    }

    // Only the CA: the monitor wants a client certificate.
    let out = cli(
        &cluster,
        &url,
        &["show-state"],
        &[("PGPILOT_TLS_CA", ca.clone())],
    )
    .await?;
    expect_exit(
        &out,
        2,
        &["refused", "certificate", "--tls-cert"],
        "show-state without a client certificate",
    )?;

    // A keeper's certificate runs no operator command.
    let keeper_env = [
        ("PGPILOT_TLS_CA", ca.clone()),
        (
            "PGPILOT_TLS_CERT",
            tls.keeper_cert("node1").display().to_string(),
        ),
        (
            "PGPILOT_TLS_KEY",
            tls.keeper_key("node1").display().to_string(),
        ),
    ];
    for args in [
        &["show-state"][..],
        &["perform-failover", "--no-wait"][..],
        &["drop-node", "node2", "--force", "--no-wait"][..],
        &["show-formations"][..],
        &["create-formation", "sneaky"][..],
        &["drop-formation", "default"][..],
    ] {
        let out = cli(&cluster, &url, args, &keeper_env).await?;
        expect_exit(
            &out,
            2,
            &["operator command", "keeper of default/node1"],
            &args.join(" "),
        )?;
    }

    // No TLS at all against the TLS monitor.
    let plain = url.replace("https://", "http://");
    let out = cli(&cluster, &plain, &["show-state"], &[]).await?;
    expect_exit(
        &out,
        3,
        &["unreachable"],
        "show-state in plaintext against a TLS monitor",
    )?;
    let plaintext = tonic::transport::Endpoint::from_shared(plain.clone())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let mut client = pb::monitor_client::MonitorClient::new(channel);
        let reply = client
            .get_formation_state(pb::GetFormationStateRequest {
                formation: "default".into(),
            })
            .await;
        if reply.is_ok() {
            bail!("a plaintext gRPC client read the formation state of a TLS monitor");
        }
    }

    // A certificate from another CA, with an operator identity: the
    // handshake fails (and the CLI says what to check).
    let other = cluster.root().join("other-ca");
    let mut gen = cluster.tools().monitor_command();
    gen.arg("gen-certs")
        .arg("--dir")
        .arg(&other)
        .args(["--operator", "mallory"]);
    let out = run(gen, "gen-certs for another CA").await?;
    if !out.status.success() {
        bail!("gen-certs failed\n{}", describe(&out));
    }
    let foreign = [
        ("PGPILOT_TLS_CA", ca.clone()),
        (
            "PGPILOT_TLS_CERT",
            other.join("operator-mallory.crt").display().to_string(),
        ),
        (
            "PGPILOT_TLS_KEY",
            other.join("operator-mallory.key").display().to_string(),
        ),
    ];
    let out = cli(&cluster, &url, &["show-state"], &foreign).await?;
    expect_exit(
        &out,
        3,
        &["unreachable"],
        "show-state with a certificate of another CA",
    )?;
    // The monitor's certificate is checked too: another CA does not verify it.
    let wrong_ca = [("PGPILOT_TLS_CA", other.join("ca.crt").display().to_string())];
    let out = cli(&cluster, &url, &["show-state"], &wrong_ca).await?;
    expect_exit(&out, 3, &["certificate"], "show-state trusting another CA")?;

    // node1's certificate cannot register or heartbeat as node2.
    let node2 = state
        .node("node2")
        .ok_or_else(|| anyhow!("no node2"))?
        .node_id;
    let node1 = state
        .node("node1")
        .ok_or_else(|| anyhow!("no node1"))?
        .node_id;
    let as_node1 = ClientSecurity {
        ca_file: Some(tls.ca()),
        cert_file: Some(tls.keeper_cert("node1")),
        key_file: Some(tls.keeper_key("node1")),
        ..Default::default()
    };
    let mut keeper1 = cluster
        .grpc_as(&as_node1, Credentials::none(), Duration::from_secs(10))
        .await?;
    let beat = |node_id| pb::NodeActiveRequest {
        node_id,
        reported_state: pgpilot_proto::ReplicationState::Secondary.to_wire(),
        pg_running: true,
        timings: Some(timings()),
        ..Default::default()
    };
    expect_code(
        keeper1.node_active(beat(node2)).await,
        tonic::Code::PermissionDenied,
        &["keeper of default/node1", "not of default/node2"],
        "node1's certificate heartbeating as node2",
    )?;
    expect_code(
        keeper1
            .register_node(pb::RegisterNodeRequest {
                formation: "default".into(),
                name: "node2".into(),
                host: "127.0.0.1".into(),
                port: u32::from(cluster.node_port("node2")?),
                candidate_priority: 50,
                replication_quorum: true,
                timings: Some(timings()),
                ..Default::default()
            })
            .await,
        tonic::Code::PermissionDenied,
        &["only as itself"],
        "node1's certificate registering as node2",
    )?;
    // Its own registration with a host that would smuggle connection
    // parameters into the other nodes' primary_conninfo.
    expect_code(
        keeper1
            .register_node(pb::RegisterNodeRequest {
                formation: "default".into(),
                name: "node1".into(),
                host: "127.0.0.1 sslmode=disable".into(),
                port: u32::from(cluster.node_port("node1")?),
                candidate_priority: 50,
                replication_quorum: true,
                timings: Some(timings()),
                ..Default::default()
            })
            .await,
        tonic::Code::InvalidArgument,
        &["is not a host name or IP address"],
        "a registration with a bad host",
    )?;
    // The same refusals over a Heartbeats stream: the first one ends it.
    expect_code(
        over_stream(&mut keeper1, vec![beat(node2), beat(node1 + 1000)]).await,
        tonic::Code::PermissionDenied,
        &["keeper of default/node1", "not of default/node2"],
        "node1's certificate heartbeating as node2 over a stream",
    )?;
    expect_code(
        over_stream(&mut keeper1, vec![beat(node1 + 1000), beat(node2)]).await,
        tonic::Code::NotFound,
        &["not registered"],
        "a streamed heartbeat for a node that does not exist",
    )?;
    expect_code(
        keeper1.node_active(beat(0)).await,
        tonic::Code::InvalidArgument,
        &["node id 0"],
        "a heartbeat without a node id",
    )?;
    expect_code(
        keeper1.node_active(beat(node1 + 1000)).await,
        tonic::Code::NotFound,
        &["not registered"],
        "a heartbeat for a node that does not exist",
    )?;
    // An operator does not heartbeat.
    let mut operator = cluster
        .grpc_as(
            &cluster.operator_security(),
            Credentials::none(),
            Duration::from_secs(10),
        )
        .await?;
    expect_code(
        operator.node_active(beat(node1)).await,
        tonic::Code::PermissionDenied,
        &["operator harness cannot"],
        "the operator heartbeating",
    )?;
    // A request over the configured size is refused before it is read.
    expect_code(
        operator
            .get_formation_state(pb::GetFormationStateRequest {
                formation: "x".repeat(2 * 1024 * 1024),
            })
            .await,
        tonic::Code::OutOfRange,
        &[],
        "a 2 MiB request",
    )?;

    // A keeper without a client certificate is refused at registration.
    let scratch = cluster.tools().scratch_dir("pgpilot-security-")?;
    let config = stray_keeper(
        &cluster,
        scratch.path(),
        "node7",
        &format!("tls_ca_file = {:?}\n", tls.ca()),
    )?;
    let out = run_keeper(&cluster, &config).await?;
    expect_keeper_exit(
        &out,
        1,
        &["refused", "certificate"],
        "a keeper without a certificate",
    )?;

    // The failover works with mutual TLS, and nothing acknowledged is lost.
    let old = cluster.primary_name().await?;
    let new = cluster.other_node(&old)?;
    let writer = Writer::warm(&cluster).await?;
    let killed_at = cluster
        .kill_primary_until_promoted(&old, &new, Duration::from_secs(90))
        .await?;
    let promoted = killed_at.elapsed();
    writer
        .wait_ack_after(
            &cluster,
            killed_at,
            Duration::from_secs(60),
            "a write acknowledged after the kill",
        )
        .await?;
    let report = writer.stop().await;
    report.expect_all_on(&cluster, &new).await?;
    eprintln!(
        "MUTUAL TLS FAILOVER: {new} primary {:.2} s after {old} was killed; {} writes acknowledged, none lost",
        promoted.as_secs_f64(),
        report.acks.len()
    );
    Ok(())
}

/// Token mode: keepers with the token file form a group; the CLI with the
/// token in PGPILOT_TOKEN works, without it or with another it is refused;
/// a keeper with a wrong token is refused; the token is in no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mode() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions::nodes(2).security(Security::Token)).await?;
    cluster.wait_healthy_pair().await?;
    let url = cluster.monitor_url().to_string();
    let tls = cluster.tls_files().expect("TLS files").clone();
    let token = tls.token()?;
    let ca = ("PGPILOT_TLS_CA", tls.ca().display().to_string());

    let out = cli(
        &cluster,
        &url,
        &["show-nodes"],
        &[ca.clone(), ("PGPILOT_TOKEN", token.clone())],
    )
    .await?;
    if !out.status.success() {
        bail!("show-nodes with the token failed\n{}", describe(&out));
    }
    let out = cli(&cluster, &url, &["show-nodes"], std::slice::from_ref(&ca)).await?;
    expect_exit(
        &out,
        2,
        &["needs its token"],
        "show-nodes without the token",
    )?;
    let wrong = "0123456789abcdef-not-the-token".to_string();
    let out = cli(
        &cluster,
        &url,
        &["show-nodes"],
        &[ca.clone(), ("PGPILOT_TOKEN", wrong.clone())],
    )
    .await?;
    expect_exit(
        &out,
        2,
        &["not this monitor's"],
        "show-nodes with a wrong token",
    )?;
    // A token is never sent in clear.
    let plain = url.replace("https://", "http://");
    let out = cli(
        &cluster,
        &plain,
        &["show-nodes"],
        &[("PGPILOT_TOKEN", token.clone())],
    )
    .await?;
    expect_exit(
        &out,
        2,
        &["only sent over TLS"],
        "a token with an http:// URL",
    )?;

    // A keeper with a wrong token is refused at registration.
    let scratch = cluster.tools().scratch_dir("pgpilot-security-")?;
    let bad_token = scratch.path().join("bad-token");
    std::fs::write(&bad_token, &wrong)?;
    std::fs::set_permissions(&bad_token, std::fs::Permissions::from_mode(0o600))?;
    cluster.tools().hand_over(&bad_token)?;
    let config = stray_keeper(
        &cluster,
        scratch.path(),
        "node7",
        &format!(
            "tls_ca_file = {:?}\ntoken_file = {:?}\n",
            tls.ca(),
            bad_token
        ),
    )?;
    let out = run_keeper(&cluster, &config).await?;
    expect_keeper_exit(
        &out,
        1,
        &["refused", "token"],
        "a keeper with a wrong token",
    )?;
    // A token file others can read is refused before anything is sent.
    std::fs::set_permissions(&bad_token, std::fs::Permissions::from_mode(0o644))?;
    let out = run_keeper(&cluster, &config).await?;
    expect_keeper_exit(
        &out,
        2,
        &["chmod o-rwx", &bad_token.display().to_string()],
        "a world-readable token file",
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains(&wrong) {
        bail!("the keeper printed its token\n{}", describe(&out));
    }

    // Operator commands through the harness (PGPILOT_TOKEN) drive a switchover.
    let old = cluster.primary_name().await?;
    let out = cluster
        .run_cli(&["perform-failover", "--monitor", &url, "--timeout", "120s"])
        .await?;
    if !out.status.success() {
        return Err(cluster
            .failure(format!(
                "perform-failover with the token failed\n{}",
                describe(&out)
            ))
            .await);
    }
    let new = cluster.primary_name().await?;
    if new == old {
        bail!("perform-failover returned but {old} is still the primary");
    }

    // The token is in no log line.
    for file in cluster.log_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains(&token) {
            bail!("the token appears in {}", file.display());
        }
    }
    Ok(())
}

/// A monitor whose key file others can read refuses to start (exit 2, one
/// sentence naming the file and the chmod); one with neither TLS nor
/// `plaintext = true` refuses too.
#[tokio::test]
async fn monitor_refuses_unsafe_settings() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tempfile::tempdir()?;
    let mut gen = tools.monitor_command();
    gen.arg("gen-certs").arg("--dir").arg(dir.path());
    let out = run(gen, "gen-certs").await?;
    if !out.status.success() {
        bail!("gen-certs failed\n{}", describe(&out));
    }
    let key = dir.path().join("monitor.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644))?;
    let config = dir.path().join("monitor.toml");
    let base = format!(
        "database_url = \"postgres://postgres@127.0.0.1:{}/pgpilot\"\nlisten = \"127.0.0.1:{}\"\n",
        free_port()?,
        free_port()?
    );
    let started = Instant::now();
    for (extra, words) in [
        (
            format!(
                "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
                dir.path().join("monitor.crt"),
                key
            ),
            vec!["chmod o-rwx".to_string(), key.display().to_string()],
        ),
        (
            String::new(),
            vec!["plaintext = true".to_string(), "tls_cert_file".to_string()],
        ),
    ] {
        std::fs::write(&config, format!("{base}{extra}"))?;
        let mut cmd = tools.monitor_command();
        cmd.arg("run").arg("--config").arg(&config);
        let out = run(cmd, "pgpilot-monitor run").await?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        expect_exit(&out, 2, &words, "pgpilot-monitor run with unsafe settings")?;
    }
    eprintln!("refusals took {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The two-node failover drill with mutual TLS, SCRAM-SHA-256 replication
/// over PostgreSQL's TLS (verify-full) and a monitor database password: the
/// replication role is no superuser and needs its password (a wrong one is
/// refused), standbys name a password file and stream over TLS (also after
/// the old primary is rewound over TLS), and no secret shows in `ps` (sampled all along), in any
/// log of the run or in `show-state` / `show-events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_scram_failover_without_secrets_in_ps_or_logs() -> Result<()> {
    let mut opts = ClusterOptions::nodes(2)
        .security(Security::MutualTls)
        .replication_password()
        .postgres_tls();
    let db_password = pgpilot_tests::random_secret()?;
    opts.monitor_db_password = Some(db_password.clone());
    let ps = PsSampler::start();
    let cluster = Cluster::start(opts).await?;
    let password = cluster
        .replication_password()
        .ok_or_else(|| anyhow!("the cluster has no replication password"))?
        .to_string();
    let secrets = [password.clone(), db_password];
    let state = cluster.wait_healthy_pair().await?;
    let primary = cluster.primary_name().await?;
    let standby = cluster.other_node(&primary)?;

    let role = cluster
        .psql(
            &primary,
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%', rolsuper, rolreplication \
               FROM pg_authid WHERE rolname = 'pgpilot_replication'",
        )
        .await?;
    if role != "t|f|t" {
        return Err(cluster
            .failure(format!(
                "the replication role should have a SCRAM password, no superuser and REPLICATION; pg_authid says {role:?}"
            ))
            .await);
    }
    let streaming_as = cluster
        .psql(
            &primary,
            "SELECT r.usename, s.ssl FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)",
        )
        .await?;
    let conninfo = cluster.psql(&standby, "SHOW primary_conninfo").await?;
    if streaming_as != "pgpilot_replication|t"
        || !conninfo.contains("user=pgpilot_replication")
        || !conninfo.contains("passfile=")
        || !conninfo.contains("sslmode=verify-full")
        || conninfo.contains("password=")
    {
        return Err(cluster
            .failure(format!(
                "{standby} should stream over TLS (verify-full) as pgpilot_replication with a passfile: pg_stat_replication/pg_stat_ssl say {streaming_as:?}, primary_conninfo is {conninfo:?}"
            ))
            .await);
    }
    let port = cluster.node_port(&primary)?;
    let wrong = replication_login(&cluster, port, "not the password at all").await?;
    if wrong.status.success()
        || !String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed")
    {
        return Err(cluster
            .failure(format!(
                "a replication connection with a wrong password was not refused by password authentication\n{}",
                describe(&wrong)
            ))
            .await);
    }
    let right = replication_login(&cluster, port, &password).await?;
    if !right.status.success()
        || !String::from_utf8_lossy(&right.stdout)
            .contains(&state.nodes[0].system_identifier.to_string())
    {
        return Err(cluster
            .failure(format!(
                "IDENTIFY_SYSTEM as pgpilot_replication with the password failed\n{}",
                describe(&right)
            ))
            .await);
    }

    pgpilot_tests::drills::unplanned_failover_and_rejoin(&cluster).await?;
    // The old primary came back by pg_rewind as the replication role (the
    // fallback, a fresh clone, would hide a missing grant).
    let rejoined = std::fs::read_to_string(cluster.keeper_log(&primary)?)?;
    if !rejoined.contains("postgres: pg_rewind") || rejoined.contains("cloning the primary instead")
    {
        return Err(cluster
            .failure(format!(
                "{primary} did not rejoin by pg_rewind as the replication role"
            ))
            .await);
    }

    // Rotation: a new password in the file is applied by the primary's
    // keeper (no restart); the old one stops working; the standby's
    // password file follows, so a reconnecting standby streams again.
    let rotated = pgpilot_tests::random_secret()?;
    let file = cluster.root().join("replication.password");
    std::fs::write(&file, format!("{rotated}\n"))?;
    let new_primary = cluster.primary_name().await?;
    let new_port = cluster.node_port(&new_primary)?;
    let c = &cluster;
    let (rotated_ref, old_ref) = (rotated.as_str(), password.as_str());
    let primary_ref = new_primary.as_str();
    cluster
        .wait_for(
            Duration::from_secs(60),
            "the rotated replication password to be accepted and the old one refused",
            || async move {
                let new_ok = replication_login(c, new_port, rotated_ref)
                    .await?
                    .status
                    .success();
                let old_ok = replication_login(c, new_port, old_ref)
                    .await?
                    .status
                    .success();
                Ok((new_ok && !old_ok).then_some(()))
            },
        )
        .await?;
    // Cut the standby's stream: it reconnects with the new password.
    cluster
        .psql(
            &new_primary,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_replication",
        )
        .await?;
    cluster
        .wait_for(
            Duration::from_secs(60),
            "the standby (the old primary, rewound over TLS) to stream again, over TLS, after the rotation",
            || async move {
                let n = c
                    .psql(
                        primary_ref,
                        "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
                          WHERE r.state = 'streaming' AND s.ssl",
                    )
                    .await?;
                Ok((n == "1").then_some(()))
            },
        )
        .await?;
    let secrets = [secrets[0].clone(), secrets[1].clone(), rotated];

    let mut shown = String::new();
    for args in [&["show-state"][..], &["show-events", "--count", "200"][..]] {
        let out = cluster.run_cli(args).await?;
        shown.push_str(&String::from_utf8_lossy(&out.stdout));
        shown.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    let (samples, ps_lines) = ps.stop().await?;
    let mut leaks = Vec::new();
    for secret in &secrets {
        for line in ps_lines.iter().filter(|l| l.contains(secret.as_str())) {
            leaks.push(format!("ps: {line}"));
        }
        if shown.contains(secret.as_str()) {
            leaks.push("show-state or show-events output".to_string());
        }
        for file in cluster.log_files() {
            let text = std::fs::read(&file).unwrap_or_default();
            if String::from_utf8_lossy(&text).contains(secret.as_str()) {
                leaks.push(format!("log {}", file.display()));
            }
        }
    }
    if !leaks.is_empty() {
        return Err(cluster
            .failure(format!(
                "a configured secret is visible: {}",
                leaks.join("; ")
            ))
            .await);
    }
    eprintln!(
        "no secret in {samples} ps samples ({} distinct command lines), {} log files or the show-* output",
        ps_lines.len(),
        cluster.log_files().len()
    );
    cluster.shutdown().await
}

/// `psql` as the replication role in replication mode (IDENTIFY_SYSTEM),
/// the password in the environment (which `ps` does not show), over TLS
/// only: with libpq's default `prefer`, a refused TLS login is tried again
/// without TLS, which the harness's `trust_networks` let in.
async fn replication_login(cluster: &Cluster, port: u16, password: &str) -> Result<Output> {
    let mut cmd = std::process::Command::new(cluster.tools().pg_program("psql"));
    cmd.args(["-X", "-A", "-t", "-w"])
        .arg(format!(
            "host=127.0.0.1 port={port} user=pgpilot_replication dbname=postgres replication=true connect_timeout=5 sslmode=require"
        ))
        .args(["-c", "IDENTIFY_SYSTEM"])
        .env("PGPASSWORD", password);
    run(cmd, "psql as pgpilot_replication").await
}

/// Samples every process's command line (`ps -eww -o args=`) five times a
/// second until stopped.
struct PsSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl PsSampler {
    fn start() -> PsSampler {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = 0;
            let mut lines = std::collections::BTreeSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let out = tokio::process::Command::new("ps")
                    .args(["-eww", "-o", "args="])
                    .output()
                    .await;
                if let Ok(out) = out {
                    samples += 1;
                    lines.extend(
                        String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .map(str::to_string),
                    );
                }
            }
            (samples, lines.into_iter().collect())
        });
        PsSampler { stop, task }
    }

    /// How many samples were taken, and every distinct command line seen.
    async fn stop(self) -> Result<(usize, Vec<String>)> {
        let _ = self.stop.send(true);
        self.task.await.context("the ps sampler failed")
    }
}
