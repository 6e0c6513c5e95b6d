//! A standby built from a backup instead of pg_basebackup: the keeper's
//! `clone_command` restores it (a directory made by pg_basebackup stands
//! in for pgBackRest, WAL-G or Barman, and `cp` for their restore), then the
//! standby catches up by streaming what the primary wrote since the backup,
//! with the configured `restore_command` in force. A backup of another
//! database system is refused with one sentence, and the standby keeps its
//! data until a restore of the right one succeeds. And an existing
//! PostgreSQL's data directory becomes the first node of a new group with
//! its data kept, the operator told so by an event. A standby dropped and
//! registered again keeps its data directory (no clone); one whose keeper
//! asks for `clone_from = "standby"` is cloned from the other standby.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pgpilot_tests::operator::{cli_ok, events, last_event_id};
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState, Tools,
};

const TIMEOUT: Duration = Duration::from_secs(180);
const ROWS_BEFORE: u32 = 5_000;
const ROWS_AFTER: u32 = 7_000;

/// Run a PostgreSQL program as the PostgreSQL user in the cluster's root.
async fn pg_program(cluster: &Cluster, program: &str, args: &[&str]) -> Result<()> {
    run_pg(cluster.tools(), cluster.root(), program, args).await
}

/// Run a PostgreSQL program as the PostgreSQL user in `dir`.
async fn run_pg(tools: &Tools, dir: &Path, program: &str, args: &[&str]) -> Result<()> {
    let out =
        tokio::process::Command::from(tools.command_as_pg_user(tools.pg_program(program), dir))
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Stop `node`'s keeper, set `settings` (`key = value` lines, replacing
/// earlier values of those keys), start it.
async fn set_keeper_settings(cluster: &Cluster, node: &str, settings: &str) -> Result<()> {
    cluster.stop_keeper(node).await?;
    let path = cluster.keeper_config_path(node)?;
    let text = std::fs::read_to_string(&path)?;
    let key = |line: &str| {
        line.split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let keys: Vec<String> = settings.lines().map(key).collect();
    let kept: String = text
        .lines()
        .filter(|l| !keys.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, format!("{kept}{settings}"))?;
    cluster.start_keeper(node)
}

/// node1 the primary of node2, settled, holding `ROWS_BEFORE` rows.
async fn pair_with_rows() -> Result<Cluster> {
    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: true,
        ..ClusterOptions::nodes(2)
    })
    .await?;
    cluster
        .wait_state(TIMEOUT, "a settled pair", settled_pair)
        .await?;
    cluster
        .psql(
            "node1",
            &format!("CREATE TABLE rows AS SELECT i FROM generate_series(1, {ROWS_BEFORE}) i"),
        )
        .await?;
    Ok(cluster)
}

/// `ROWS_AFTER` more rows on the primary, node1.
async fn write_more_rows(cluster: &Cluster) -> Result<()> {
    cluster
        .psql(
            "node1",
            &format!(
                "INSERT INTO rows SELECT i FROM generate_series({}, {}) i",
                ROWS_BEFORE + 1,
                ROWS_BEFORE + ROWS_AFTER
            ),
        )
        .await?;
    Ok(())
}

fn settled_pair(s: &pgpilot_tests::FormationState) -> bool {
    s.node("node1")
        .is_some_and(|n| n.settled_in(ReplicationState::Primary))
        && s.node("node2")
            .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_is_restored_from_a_backup_by_clone_command_then_streams() -> Result<()> {
    let cluster = pair_with_rows().await?;

    // The "backup": pg_basebackup of the primary; then more writes that
    // only streaming can bring.
    let backup = cluster.root().join("backup");
    let port = cluster.node_port("node1")?.to_string();
    let backup_arg = backup.to_string_lossy().to_string();
    pg_program(
        &cluster,
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-X",
            "stream",
            "--checkpoint=fast",
            "-D",
            &backup_arg,
        ],
    )
    .await?;
    write_more_rows(&cluster).await?;

    // A backup of another database system: refused, node2 keeps its data.
    let other = cluster.root().join("other");
    let other_arg = other.to_string_lossy().to_string();
    pg_program(
        &cluster,
        "initdb",
        &["-D", &other_arg, "-A", "trust", "-U", "postgres"],
    )
    .await?;
    set_keeper_settings(
        &cluster,
        "node2",
        &format!("clone_command = \"cp -a {other_arg}/. %D\"\n"),
    )
    .await?;
    let log = cluster.keeper_log("node2")?;
    cli_ok(&cluster, &["reinit", "node2", "--no-wait"]).await?;
    cluster
        .wait_until(
            TIMEOUT,
            "node2's keeper to refuse the other system's backup",
            |_| {
                let refused = std::fs::read_to_string(&log).is_ok_and(|t| {
                    t.contains("clone_command restored a backup of database system")
                        && t.contains("point the command at this group's backups")
                });
                async move { Ok(refused) }
            },
        )
        .await?;
    let kept = cluster.pgdata("node2")?.join("PG_VERSION");
    if !kept.exists() {
        return Err(cluster
            .failure("a refused restore removed node2's data directory")
            .await);
    }

    // The right backup: restored, then streaming.
    let baseline = last_event_id(&events(&cluster).await?);
    let archive = cluster.root().join("archive");
    cluster.tools().make_dir(&archive)?;
    let restore_command = format!("cp {}/%f %p", archive.display());
    set_keeper_settings(
        &cluster,
        "node2",
        &format!(
            "clone_command = \"cp -a {backup_arg}/. %D\"\nrestore_command = \"{restore_command}\"\n"
        ),
    )
    .await?;
    cluster
        .wait_state(
            TIMEOUT,
            "node2 restored and settled secondary",
            settled_pair,
        )
        .await?;
    let restored = cluster
        .wait_for(TIMEOUT, "the restore's work_done event", || async {
            Ok(events(&cluster).await?.into_iter().find(|e| {
                e["kind"] == "work_done"
                    && e["node_name"] == "node2"
                    && e["event_id"].as_i64().unwrap_or(0) > baseline
            }))
        })
        .await?;
    let text = restored["reason"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("restored ") && text.contains("clone_command `cp`"),
        "the event should say the standby was restored by clone_command: {text}"
    );
    let expected = (ROWS_BEFORE + ROWS_AFTER).to_string();
    cluster
        .wait_for(
            TIMEOUT,
            "node2 to hold the rows written after the backup",
            || async {
                let n = cluster.psql("node2", "SELECT count(*) FROM rows").await?;
                Ok((n.trim() == expected).then_some(()))
            },
        )
        .await?;
    let shown = cluster.psql("node2", "SHOW restore_command").await?;
    assert_eq!(shown.trim(), restore_command);
    cluster.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_existing_data_directory_becomes_the_first_node_with_its_data() -> Result<()> {
    let tools = Tools::locate()?;
    let scratch = tools.scratch_dir("pgpilot-existing-")?;
    let dir = scratch.path();
    let pgdata = dir.join("data");
    let pgdata_arg = pgdata.to_string_lossy().to_string();
    let socket = dir.to_string_lossy().to_string();
    let port = pgpilot_tests::process::free_port()?.to_string();
    // A PostgreSQL pgpilot did not make: initdb, some data, stopped.
    run_pg(
        &tools,
        dir,
        "initdb",
        &["-D", &pgdata_arg, "-A", "trust", "-U", "postgres"],
    )
    .await?;
    let options = format!("-p {port} -k {socket} -c listen_addresses=''");
    // With a log file: the server must not hold pg_ctl's output open.
    let log = dir.join("existing.log").to_string_lossy().to_string();
    run_pg(
        &tools,
        dir,
        "pg_ctl",
        &["-D", &pgdata_arg, "-l", &log, "-o", &options, "-w", "start"],
    )
    .await?;
    let filled = run_pg(
        &tools,
        dir,
        "psql",
        &[
            "-h",
            &socket,
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "CREATE TABLE kept AS SELECT i FROM generate_series(1, 1234) i",
        ],
    )
    .await;
    run_pg(
        &tools,
        dir,
        "pg_ctl",
        &["-D", &pgdata_arg, "-m", "fast", "-w", "stop"],
    )
    .await?;
    filled?;

    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: true,
        first_node_pgdata: Some(pgdata.clone()),
        ..ClusterOptions::nodes(2)
    })
    .await?;
    cluster
        .wait_state(TIMEOUT, "a settled pair", settled_pair)
        .await?;
    for node in ["node1", "node2"] {
        let rows = cluster.psql(node, "SELECT count(*) FROM kept").await?;
        assert_eq!(rows.trim(), "1234", "{node} should hold the adopted data");
    }
    let adopted = cluster
        .wait_for(TIMEOUT, "the adoption's event", || async {
            Ok(events(&cluster)
                .await?
                .into_iter()
                .find(|e| e["kind"] == "existing_data_adopted" && e["node_name"] == "node1"))
        })
        .await?;
    let text = adopted["reason"].as_str().unwrap_or_default();
    assert!(
        text.contains("kept the existing data directory")
            && text.contains("instead of running initdb"),
        "{text}"
    );
    cluster.shutdown().await
}

/// The harness keeps a keeper's state file beside its data directory.
fn state_file(cluster: &Cluster, node: &str) -> Result<std::path::PathBuf> {
    let pgdata = cluster.pgdata(node)?;
    Ok(std::path::PathBuf::from(format!(
        "{}.pgpilot-state.json",
        pgdata.display()
    )))
}

async fn count_rows(cluster: &Cluster, node: &str, expected: u32) -> Result<()> {
    let expected = expected.to_string();
    cluster
        .wait_for(
            TIMEOUT,
            &format!("{node} to hold {expected} rows"),
            || async {
                let n = cluster.psql(node, "SELECT count(*) FROM rows").await?;
                Ok((n.trim() == expected).then_some(()))
            },
        )
        .await
}

/// A standby dropped from the group, then registered again with the data
/// directory it had (its keeper, started again, registers anew: the
/// dropped keeper moved its state file aside), is kept as it is: it
/// streams what the primary wrote meanwhile and is never cloned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_standby_rejoins_with_its_data_directory_kept() -> Result<()> {
    let cluster = pair_with_rows().await?;
    count_rows(&cluster, "node2", ROWS_BEFORE).await?;

    cli_ok(&cluster, &["drop-node", "node2"]).await?;
    // (Not `wait_until`: it stops at a keeper that exited.)
    pgpilot_tests::poll_until(TIMEOUT, "node2's keeper to exit once dropped", || async {
        Ok((!cluster.keeper_running("node2")?).then_some(()))
    })
    .await?;
    write_more_rows(&cluster).await?;
    // A file only this data directory holds: a clone would not have it.
    let marker = cluster.pgdata("node2")?.join("pgpilot-test-marker");
    std::fs::write(&marker, "kept").context("writing the marker")?;
    // The dropped keeper moved its state file aside: started again, it
    // registers anew.
    let state = state_file(&cluster, "node2")?;
    assert!(
        !state.exists(),
        "the dropped keeper left {}",
        state.display()
    );
    assert!(
        std::path::PathBuf::from(format!("{}.dropped", state.display())).exists(),
        "no {}.dropped",
        state.display()
    );
    let baseline = last_event_id(&events(&cluster).await?);
    cluster.start_keeper("node2")?;
    cluster
        .wait_state(TIMEOUT, "node2 back as a settled secondary", settled_pair)
        .await?;
    let adopted = cluster
        .wait_for(TIMEOUT, "node2's adoption event", || async {
            Ok(events(&cluster).await?.into_iter().find(|e| {
                e["kind"] == "existing_data_adopted"
                    && e["node_name"] == "node2"
                    && e["event_id"].as_i64().unwrap_or(0) > baseline
            }))
        })
        .await?;
    let text = adopted["reason"].as_str().unwrap_or_default();
    assert!(
        text.contains("as a standby of node1") && text.contains("instead of cloning"),
        "{text}"
    );
    count_rows(&cluster, "node2", ROWS_BEFORE + ROWS_AFTER).await?;
    if !marker.exists() {
        return Err(cluster
            .failure("node2's data directory was replaced although it belonged to the group")
            .await);
    }
    let cloned: Vec<_> = events(&cluster)
        .await?
        .into_iter()
        .filter(|e| {
            e["kind"] == "work_done"
                && e["node_name"] == "node2"
                && e["event_id"].as_i64().unwrap_or(0) > baseline
        })
        .collect();
    assert!(cloned.is_empty(), "node2 was copied: {cloned:?}");
    cluster.shutdown().await
}

/// A standby whose keeper says `clone_from = "standby"` is rebuilt
/// (`reinit`, which clones even a directory that belongs to the group)
/// from the other standby, not the primary, then streams from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_is_cloned_from_another_standby_when_its_keeper_asks() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: true,
        ..ClusterOptions::nodes(3)
    })
    .await?;
    let state = cluster.wait_healthy(TIMEOUT).await?;
    cluster
        .psql(
            "node1",
            &format!("CREATE TABLE rows AS SELECT i FROM generate_series(1, {ROWS_BEFORE}) i"),
        )
        .await?;
    count_rows(&cluster, "node2", ROWS_BEFORE).await?;
    let node2 = state.node("node2").context("node2 in show-state")?;
    let source = format!("{}:{}", node2.host, node2.port);

    set_keeper_settings(&cluster, "node3", "clone_from = \"standby\"\n").await?;
    let baseline = last_event_id(&events(&cluster).await?);
    let marker = cluster.pgdata("node3")?.join("pgpilot-test-marker");
    std::fs::write(&marker, "replaced").context("writing the marker")?;
    cli_ok(&cluster, &["reinit", "node3"]).await?;
    let cloned = cluster
        .wait_for(TIMEOUT, "node3's clone event", || async {
            Ok(events(&cluster).await?.into_iter().find(|e| {
                e["kind"] == "work_done"
                    && e["node_name"] == "node3"
                    && e["event_id"].as_i64().unwrap_or(0) > baseline
            }))
        })
        .await?;
    let text = cloned["reason"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("cloned ") && text.contains(&format!("from {source} ")),
        "node3 should have been cloned from node2 ({source}): {text}"
    );
    assert!(!marker.exists(), "reinit kept node3's data directory");
    write_more_rows(&cluster).await?;
    count_rows(&cluster, "node3", ROWS_BEFORE + ROWS_AFTER).await?;
    let state = cluster.wait_healthy(TIMEOUT).await?;
    let node3 = state.node("node3").context("node3 in show-state")?;
    assert!(
        node3.wal_receiver_streaming,
        "node3 should stream:\n{}",
        state.table()
    );
    cluster.shutdown().await
}
