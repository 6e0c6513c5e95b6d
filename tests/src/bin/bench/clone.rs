//! `pgpilot-bench clone`: how long pgpilot takes to build a standby of a
//! database with data in it, beside a bare `pg_basebackup` of the same
//! primary on the same machine.
//!
//! A two-node group; the primary is filled with `pgbench -i -s SCALE`
//! (scale 200 is about 3 GB). Each run times, alternating which goes
//! first:
//! - **bare**: `pg_basebackup -X stream --checkpoint=fast` of the primary
//!   into a scratch directory (what an operator would run by hand);
//! - **pgpilot**: `reinit` of the standby, from the command to the standby
//!   settled `secondary` again (stop, clone with progress, start, catch up,
//!   report), and the copy alone as the keeper's `work_done` event says.
//!
//! The ratio pgpilot / bare (medians) is what pgpilot adds. With
//! `--max-rate`, the standby's keeper has `clone_max_rate` set and the
//! table shows the average rate its clones kept.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pgpilot_tests::operator::{cli_ok, events, last_event_id};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

use crate::{percentile, settled};

/// A rebuild of a large database on a slow disk: generous.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(3600);

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
    pgbench_init(&cluster, primary, args.scale)?;
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
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let (bare, pgpilot, copy) = if i % 2 == 1 {
            let bare = bare_basebackup(&cluster, primary)?;
            let (pgpilot, copy) = rebuild(&cluster, primary, standby).await?;
            (bare, pgpilot, copy)
        } else {
            let (pgpilot, copy) = rebuild(&cluster, primary, standby).await?;
            (bare_basebackup(&cluster, primary)?, pgpilot, copy)
        };
        eprintln!(
            "run {i}/{}: bare pg_basebackup {:.1} s, pgpilot rebuild {:.1} s ({copy})",
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
        ("bare pg_basebackup -X stream --checkpoint=fast", &bare),
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

fn pgbench_init(cluster: &Cluster, node: &str, scale: u32) -> Result<()> {
    let tools = cluster.tools();
    let status = tools
        .command_as_pg_user(tools.pg_program("pgbench"), cluster.root())
        .args([
            "-i",
            "-q",
            "-s",
            &scale.to_string(),
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg("-p")
        .arg(cluster.node_port(node)?.to_string())
        .arg("postgres")
        .status()
        .context("running pgbench -i")?;
    if !status.success() {
        bail!("pgbench -i failed: {status}");
    }
    Ok(())
}

/// `pg_basebackup` of `node` into a scratch directory, timed.
fn bare_basebackup(cluster: &Cluster, node: &str) -> Result<Duration> {
    let tools = cluster.tools();
    let scratch = tools.scratch_dir("pgpilot-bench-basebackup")?;
    let target = scratch.path().join("copy");
    let started = Instant::now();
    let status = tools
        .command_as_pg_user(tools.pg_program("pg_basebackup"), scratch.path())
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "stream",
            "--checkpoint=fast",
        ])
        .arg("-p")
        .arg(cluster.node_port(node)?.to_string())
        .arg("-D")
        .arg(&target)
        .status()
        .context("running pg_basebackup")?;
    let took = started.elapsed();
    if !status.success() {
        bail!("pg_basebackup failed: {status}");
    }
    remove(&target)?;
    Ok(took)
}

fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

/// `reinit` of `standby` until it is settled secondary again; the time and
/// the keeper's own account of the copy.
async fn rebuild(cluster: &Cluster, primary: &str, standby: &str) -> Result<(Duration, String)> {
    let before = last_event_id(&events(cluster).await?);
    let started = Instant::now();
    cli_ok(cluster, &["reinit", standby, "--no-wait"]).await?;
    // The rebuild begins with a goal change away from secondary; wait for
    // the copy's event first, so a standby still settled from before is
    // not taken for a rebuilt one.
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
    cluster
        .wait_for(REBUILD_TIMEOUT, "the rebuilt standby settled", || async {
            let s = cluster.state().await?;
            let ok = s
                .node(primary)
                .is_some_and(|n| n.settled_in(ReplicationState::Primary))
                && s.node(standby)
                    .is_some_and(|n| n.settled_in(ReplicationState::Secondary));
            Ok(ok.then_some(()))
        })
        .await?;
    Ok((started.elapsed(), copy))
}
