//! `pgpilot-bench clone`: how long pgpilot takes to build a standby of a
//! database with data in it, beside a bare `pg_basebackup` of the same
//! primary on the same machine.
//!
//! A two-node group; the primary is filled with `pgbench -i -s SCALE`
//! (scale 200 is about 3 GB). Each run times, alternating which goes
//! first:
//! - **bare**: a standby built by hand: `pg_basebackup -X stream
//!   --checkpoint=fast -R` of the primary into a scratch directory, then
//!   `pg_ctl start`, until its WAL receiver streams;
//! - **pgpilot**: `reinit` of the standby, from the command to the standby
//!   settled `secondary` again (stop, clone with progress, start, catch up,
//!   report), and the copy alone as the keeper's `work_done` event says.
//!
//! One untimed standby by hand comes first (the first copy after the
//! fill is the slowest whoever makes it). The ratio pgpilot / by hand
//! (medians) is what pgpilot adds. With
//! `--max-rate`, the standby's keeper has `clone_max_rate` set and the
//! table shows the average rate its clones kept.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgpilot_tests::operator::{cli_ok, events, last_event_id};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

use crate::{percentile, settled};

/// A rebuild of a large database on a slow disk: generous.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(3600);
/// Both ways of building a standby are polled this often for their end.
const POLL: Duration = Duration::from_millis(20);

pub struct CloneArgs {
    pub scale: u32,
    pub runs: usize,
    /// `clone_max_rate` for the standby's keeper (e.g. "50MB").
    pub max_rate: Option<String>,
}

struct Run {
    bare: Duration,
    pgpilot: Duration,
    /// The copy alone, from the work_done event's text.
    copy: String,
}

pub async fn run(args: CloneArgs) -> Result<()> {
    let started = Instant::now();
    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: true,
        ..ClusterOptions::nodes(2)
    })
    .await?;
    settled(&cluster).await?;
    let (primary, standby) = ("node1", "node2");
    eprintln!("filling {primary} with pgbench -i -s {} …", args.scale);
    let fill = Instant::now();
    pgpilot_tests::pgbench::init(&cluster, primary, args.scale).await?;
    let size = cluster
        .psql(
            primary,
            "CHECKPOINT; SELECT sum(pg_database_size(oid)) FROM pg_database",
        )
        .await?;
    let size: u64 = size.trim().parse().context("reading the databases' size")?;
    eprintln!(
        "filled in {:.0} s: {} in all databases",
        fill.elapsed().as_secs_f64(),
        pgpilot_proto::work::bytes(size)
    );
    if let Some(rate) = &args.max_rate {
        cluster.stop_keeper(standby).await?;
        let config = cluster.keeper_config_path(standby)?;
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("clone_max_rate = {rate:?}\n"));
        std::fs::write(&config, text)?;
        cluster.start_keeper(standby)?;
        settled(&cluster).await?;
    }
    // Untimed: the first copy after the fill reads what no copy read yet.
    let warm_up = bare_standby(&cluster, primary).await?;
    eprintln!(
        "warm-up standby by hand: {:.1} s (not counted)",
        warm_up.as_secs_f64()
    );
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let (bare, pgpilot, copy) = if i % 2 == 1 {
            let bare = bare_standby(&cluster, primary).await?;
            let (pgpilot, copy) = rebuild(&cluster, primary, standby).await?;
            (bare, pgpilot, copy)
        } else {
            let (pgpilot, copy) = rebuild(&cluster, primary, standby).await?;
            (bare_standby(&cluster, primary).await?, pgpilot, copy)
        };
        eprintln!(
            "run {i}/{}: standby by hand {:.1} s, pgpilot rebuild {:.1} s ({copy})",
            args.runs,
            bare.as_secs_f64(),
            pgpilot.as_secs_f64()
        );
        runs.push(Run {
            bare,
            pgpilot,
            copy,
        });
    }
    cluster.shutdown().await?;

    let mut bare: Vec<f64> = runs.iter().map(|r| r.bare.as_secs_f64()).collect();
    let mut ours: Vec<f64> = runs.iter().map(|r| r.pgpilot.as_secs_f64()).collect();
    bare.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    println!();
    println!(
        "standby of pgbench -s {} ({} in all databases), {} runs{}; total run {:.0} s",
        args.scale,
        pgpilot_proto::work::bytes(size),
        runs.len(),
        args.max_rate
            .as_ref()
            .map(|r| format!(", clone_max_rate = {r}"))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<48} {:>8} {:>8} {:>8}",
        "seconds", "min", "median", "max"
    );
    for (label, values) in [
        ("by hand: pg_basebackup -R, pg_ctl start, streams", &bare),
        ("pgpilot reinit until secondary", &ours),
    ] {
        println!(
            "{label:<48} {:>8.1} {:>8.1} {:>8.1}",
            values[0],
            percentile(values, 0.5),
            values[values.len() - 1]
        );
    }
    println!(
        "ratio pgpilot / bare (medians): {:.2}",
        percentile(&ours, 0.5) / percentile(&bare, 0.5)
    );
    for (i, r) in runs.iter().enumerate() {
        println!("run {}: the keeper's copy: {}", i + 1, r.copy);
    }
    Ok(())
}

/// A PostgreSQL program run as the PostgreSQL user in `dir`, its output
/// other than errors discarded; a failure says which program failed.
async fn run_as_pg(cluster: &Cluster, dir: &Path, program: &str, args: &[&OsStr]) -> Result<()> {
    let tools = cluster.tools();
    let status =
        tokio::process::Command::from(tools.command_as_pg_user(tools.pg_program(program), dir))
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .await
            .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} failed: {status}");
    }
    Ok(())
}

/// A standby of `node` built by hand, timed: `pg_basebackup -R` into a
/// scratch directory, `pg_ctl start` on a free port, until its WAL receiver
/// streams; then stopped and removed.
async fn bare_standby(cluster: &Cluster, node: &str) -> Result<Duration> {
    let tools = cluster.tools();
    let scratch = tools.scratch_dir("pgpilot-bench-basebackup")?;
    let target = scratch.path().join("copy");
    let port = pgpilot_tests::process::free_port()?.to_string();
    let started = Instant::now();
    let upstream = cluster.node_port(node)?.to_string();
    run_as_pg(
        cluster,
        scratch.path(),
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "stream",
            "--checkpoint=fast",
            "-R",
            "-p",
            &upstream,
            "-D",
        ]
        .map(OsStr::new)
        .into_iter()
        .chain([target.as_os_str()])
        .collect::<Vec<_>>(),
    )
    .await?;
    let options = format!(
        "-p {port} -k {} -c listen_addresses=''",
        scratch.path().display()
    );
    let log = scratch.path().join("copy.log");
    run_as_pg(
        cluster,
        scratch.path(),
        "pg_ctl",
        &[
            "-D".as_ref(),
            target.as_os_str(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            options.as_ref(),
            "-w".as_ref(),
            "start".as_ref(),
        ],
    )
    .await?;
    let streaming = pgpilot_tests::poll_every(
        POLL,
        REBUILD_TIMEOUT,
        "the hand-built standby streaming",
        || async {
            let out = tokio::process::Command::from(
                tools.command_as_pg_user(tools.pg_program("psql"), scratch.path()),
            )
            .args(["-X", "-A", "-t", "-U", "postgres", "-d", "postgres", "-h"])
            .arg(scratch.path())
            .args(["-p", &port, "-c", "SELECT status FROM pg_stat_wal_receiver"])
            .output()
            .await
            .context("running psql")?;
            Ok((String::from_utf8_lossy(&out.stdout).trim() == "streaming").then_some(()))
        },
    )
    .await;
    let took = started.elapsed();
    let stopped = run_as_pg(
        cluster,
        scratch.path(),
        "pg_ctl",
        &[
            "-D".as_ref(),
            target.as_os_str(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "stop".as_ref(),
        ],
    )
    .await;
    streaming?;
    stopped?;
    remove(&target)?;
    Ok(took)
}

fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// `reinit` of `standby` until it is settled secondary again; the time and
/// the keeper's own account of the copy. The state is polled every 20 ms,
/// as the standby built by hand is.
pub async fn rebuild(
    cluster: &Cluster,
    primary: &str,
    standby: &str,
) -> Result<(Duration, String)> {
    let before = last_event_id(&events(cluster).await?);
    let started = Instant::now();
    // The command commits the standby's new goal before it returns: from
    // then on the pair is not settled until the standby is rebuilt.
    cli_ok(cluster, &["reinit", standby, "--no-wait"]).await?;
    let settled = pgpilot_tests::poll_every(
        POLL,
        REBUILD_TIMEOUT,
        &format!("{standby} rebuilt and the pair settled"),
        || async {
            let s = cluster.state().await?;
            let settled = s
                .node(primary)
                .is_some_and(|n| n.settled_in(ReplicationState::Primary))
                && s.node(standby)
                    .is_some_and(|n| n.settled_in(ReplicationState::Secondary));
            Ok(settled.then_some(()))
        },
    )
    .await;
    if let Err(e) = settled {
        return Err(cluster.failure(format!("{e:#}")).await);
    }
    let took = started.elapsed();
    let copy = cluster
        .wait_for(REBUILD_TIMEOUT, "the clone's work_done event", || async {
            Ok(events(cluster)
                .await?
                .into_iter()
                .find(|e| {
                    e["kind"] == "work_done"
                        && e["node_name"] == standby
                        && e["event_id"].as_i64().unwrap_or(0) > before
                })
                .map(|e| e["reason"].as_str().unwrap_or_default().to_string()))
        })
        .await?;
    Ok((took, copy))
}
