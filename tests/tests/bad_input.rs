//! What an operator sees when they get something wrong: a closed monitor
//! address, a typo in a config file. Each answer must be one clear sentence
//! and a documented exit code (0 ok, 1 failed, 2 usage / invalid input,
//! 3 monitor unreachable).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_tests::operator::describe;
use pgpilot_tests::process::free_port;
use pgpilot_tests::KeeperToml;
use pgpilot_tests::Tools;

/// Run a command to completion within `timeout` (killed past it).
async fn run_within(cmd: Command, timeout: Duration, what: &str) -> Result<Output> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
    tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{what} was still running after {timeout:?}"))?
        .with_context(|| format!("waiting for {what}"))
}

/// A keeper config pointing at `monitor`, with its data under `dir`.
fn keeper_config(tools: &Tools, dir: &Path, monitor: &str) -> Result<KeeperToml> {
    Ok(KeeperToml {
        name: "node1".to_string(),
        formation: "default".to_string(),
        host: "127.0.0.1".to_string(),
        port: free_port()?,
        advertise_port: None,
        pgdata: dir.join("data").display().to_string(),
        monitor: vec![monitor.to_string()],
        pg_bin_dir: tools.pg_bin_dir.display().to_string(),
        pg_user: "postgres".to_string(),
        candidate_priority: None,
        replication_quorum: None,
        apply_delay: None,
        // The keeper's documented default is 30 s; shorter keeps the test quick.
        register_timeout: Some("5s".to_string()),
    })
}

/// The keeper retries an unreachable monitor for a bounded time, then exits
/// non-zero with a sentence naming the address it tried.
#[tokio::test]
async fn keeper_gives_up_on_unreachable_monitor() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tools.scratch_dir("pgpilot-bad-input-")?;
    let monitor = format!("http://127.0.0.1:{}", free_port()?);
    let config = dir.path().join("keeper.toml");
    std::fs::write(
        &config,
        keeper_config(&tools, dir.path(), &monitor)?.render()?,
    )?;

    let output = run_within(
        tools.keeper_command(&config, dir.path()),
        Duration::from_secs(60),
        "pgpilot-keeper with an unreachable monitor",
    )
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let address = monitor.trim_start_matches("http://");
    if output.status.success() || output.status.code().is_none() || !stderr.contains(address) {
        bail!(
            "expected a non-zero exit and a sentence naming the monitor address {address} on \
             stderr\n{}",
            describe(&output)
        );
    }
    Ok(())
}

#[tokio::test]
async fn keeper_rejects_unknown_config_key() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tools.scratch_dir("pgpilot-bad-input-")?;
    let monitor = format!("http://127.0.0.1:{}", free_port()?);
    let config = dir.path().join("keeper.toml");
    let mut text = keeper_config(&tools, dir.path(), &monitor)?.render()?;
    text.push_str("colour = \"blue\"\n");
    std::fs::write(&config, text)?;

    expect_unknown_key_refused(
        tools.keeper_command(&config, dir.path()),
        "pgpilot-keeper with an unknown config key",
    )
    .await
}

#[tokio::test]
async fn monitor_rejects_unknown_config_key() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("monitor.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"postgres://postgres@127.0.0.1:{}/pgpilot\"\n\
             listen = \"127.0.0.1:{}\"\n\
             colour = \"blue\"\n",
            free_port()?,
            free_port()?
        ),
    )?;
    let mut cmd = tools.monitor_command();
    cmd.arg("run").arg("--config").arg(&config);
    expect_unknown_key_refused(cmd, "pgpilot-monitor with an unknown config key").await
}

/// A program given a config file with the unknown key `colour` exits 2
/// and names the key on stderr.
async fn expect_unknown_key_refused(cmd: std::process::Command, what: &str) -> Result<()> {
    let output = run_within(cmd, Duration::from_secs(30), what).await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(2) || !stderr.contains("colour") {
        bail!(
            "expected exit 2 and stderr naming the unknown key `colour`\n{}",
            describe(&output)
        );
    }
    Ok(())
}

#[tokio::test]
async fn show_state_with_unreachable_monitor() -> Result<()> {
    let tools = Tools::locate()?;
    let address = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = tools.monitor_command();
    cmd.args(["show-state", "--monitor", &format!("http://{address}")]);
    let output = run_within(
        cmd,
        Duration::from_secs(30),
        "pgpilot-monitor show-state with an unreachable monitor",
    )
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(3)
        || !stderr.contains(&address)
        || !stderr.to_lowercase().contains("unreachable")
    {
        bail!(
            "expected exit 3 and a sentence saying the monitor at {address} is unreachable\n{}",
            describe(&output)
        );
    }
    Ok(())
}

/// A PostgreSQL TLS key that others may read is refused before PostgreSQL
/// is asked to start (it would refuse it too, but only in its own log).
#[tokio::test]
async fn keeper_refuses_a_postgres_tls_key_others_can_read() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tools = Tools::locate()?;
    let dir = tools.scratch_dir("pgpilot-bad-input-")?;
    let monitor = format!("http://127.0.0.1:{}", free_port()?);
    let config = dir.path().join("keeper.toml");
    let (cert, key, ca) = (
        dir.path().join("pg.crt"),
        dir.path().join("pg.key"),
        dir.path().join("ca.crt"),
    );
    for file in [&cert, &key, &ca] {
        std::fs::write(file, "not used: the keeper stops first\n")?;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644))?;
    }
    let mut text = keeper_config(&tools, dir.path(), &monitor)?.render()?;
    text.push_str(&format!(
        "postgres_tls_cert_file = {cert:?}\npostgres_tls_key_file = {key:?}\npostgres_tls_ca_file = {ca:?}\n"
    ));
    std::fs::write(&config, text)?;

    let output = run_within(
        tools.keeper_command(&config, dir.path()),
        Duration::from_secs(30),
        "pgpilot-keeper with a world-readable PostgreSQL key",
    )
    .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() != Some(2)
        || !stderr.contains("postgres_tls_key_file")
        || !stderr.contains(&format!("chmod 600 {}", key.display()))
        || stderr.trim().lines().count() != 1
    {
        bail!(
            "expected exit 2 and one sentence saying to chmod 600 {}\n{}",
            key.display(),
            describe(&output)
        );
    }
    Ok(())
}
