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
//! (medians) is what pgpilot adds, at two ends: when the rebuilt standby's
//! own WAL receiver streams (as the standby by hand is timed), and when
//! the monitor shows the group settled again. With
//! `--max-rate`, the standby's keeper has `clone_max_rate` set and the
//! table shows the average rate its clones kept.
//!
//! `--source standby`: three nodes; node3, with `clone_from = "standby"`,
//! is rebuilt (from node2), and by hand copies node2. `--source restore`:
//! a pg_basebackup directory of the primary made once stands in for a
//! backup; node2's keeper restores it with `clone_command = "cp -a …"`,
//! and by hand the same `cp`, standby settings and `pg_ctl start`.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
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
    pub source: Source,
}

/// What a standby is built from.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum, Debug)]
pub enum Source {
    /// pg_basebackup of the primary.
    Primary,
    /// pg_basebackup of another standby (the keeper's `clone_from`).
    Standby,
    /// A backup restored (the keeper's `clone_command`).
    Restore,
}

/// How the standby by hand is made; each then follows the primary (as
/// the standby pgpilot builds does), not the node it was copied from, and
/// without the replication slot named in the copied `pgpilot.conf` (a
/// real node's, in use).
enum ByHand {
    /// pg_basebackup of the first node, following the second.
    Basebackup(String, String),
    /// `cp -a` of this directory, following this node.
    Copy(std::path::PathBuf, String),
}

struct Run {
    bare: Duration,
    /// Until the rebuilt standby's WAL receiver streams.
    streams: Duration,
    /// Until the group is settled again.
    settled: Duration,
    /// The copy alone, from the work_done event's text.
    copy: String,
}

pub async fn run(args: CloneArgs) -> Result<()> {
    let started = Instant::now();
    let nodes = if args.source == Source::Standby { 3 } else { 2 };
    let cluster = Cluster::start(ClusterOptions {
        first_node_alone: true,
        ..ClusterOptions::nodes(nodes)
    })
    .await?;
    settled(&cluster).await?;
    let primary = "node1";
    let standby = if args.source == Source::Standby {
        "node3"
    } else {
        "node2"
    };
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
    let mut settings = String::new();
    if let Some(rate) = &args.max_rate {
        settings.push_str(&format!("clone_max_rate = {rate:?}\n"));
    }
    let by_hand = match args.source {
        Source::Primary => ByHand::Basebackup(primary.into(), primary.into()),
        Source::Standby => {
            settings.push_str("clone_from = \"standby\"\n");
            eprintln!(
                "node2, the standby to copy, is 127.0.0.1:{}",
                cluster.node_port("node2")?
            );
            ByHand::Basebackup("node2".into(), primary.into())
        }
        Source::Restore => {
            let backup = cluster.root().join("bench-backup");
            eprintln!("making the backup to restore (pg_basebackup of {primary}) …");
            basebackup(&cluster, primary, cluster.root(), &backup, false).await?;
            settings.push_str(&format!(
                "clone_command = \"cp -a {}/. %D\"\n",
                backup.display()
            ));
            ByHand::Copy(backup, primary.into())
        }
    };
    if !settings.is_empty() {
        cluster.stop_keeper(standby).await?;
        let config = cluster.keeper_config_path(standby)?;
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&settings);
        std::fs::write(&config, text)?;
        cluster.start_keeper(standby)?;
        settled(&cluster).await?;
    }
    // Untimed: the first copy after the fill reads what no copy read yet.
    let warm_up = bare_standby(&cluster, &by_hand).await?;
    eprintln!(
        "warm-up standby by hand: {:.1} s (not counted)",
        warm_up.as_secs_f64()
    );
    let mut runs = Vec::new();
    for i in 1..=args.runs {
        let (bare, (streams, settled, copy)) = if i % 2 == 1 {
            let bare = bare_standby(&cluster, &by_hand).await?;
            (bare, rebuild_timed(&cluster, primary, standby).await?)
        } else {
            let rebuilt = rebuild_timed(&cluster, primary, standby).await?;
            (bare_standby(&cluster, &by_hand).await?, rebuilt)
        };
        eprintln!(
            "run {i}/{}: standby by hand {:.1} s, pgpilot rebuild streams after {:.1} s, settled after {:.1} s ({copy})",
            args.runs,
            bare.as_secs_f64(),
            streams.as_secs_f64(),
            settled.as_secs_f64()
        );
        runs.push(Run {
            bare,
            streams,
            settled,
            copy,
        });
    }
    cluster.shutdown().await?;

    let sorted = |f: fn(&Run) -> Duration| {
        let mut v: Vec<f64> = runs.iter().map(|r| f(r).as_secs_f64()).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let bare = sorted(|r| r.bare);
    let streams = sorted(|r| r.streams);
    let ours = sorted(|r| r.settled);
    println!();
    println!(
        "standby of pgbench -s {} ({} in all databases) from {}, {} runs{}; total run {:.0} s",
        args.scale,
        pgpilot_proto::work::bytes(size),
        match args.source {
            Source::Primary => "the primary",
            Source::Standby => "a standby",
            Source::Restore => "a backup (cp -a)",
        },
        runs.len(),
        args.max_rate
            .as_ref()
            .map(|r| format!(", clone_max_rate = {r}"))
            .unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8}",
        "seconds", "min", "median", "max"
    );
    let hand = match by_hand {
        ByHand::Basebackup(..) => "by hand: pg_basebackup, pg_ctl start, streams",
        ByHand::Copy(..) => "by hand: cp -a, standby settings, start, streams",
    };
    for (label, values) in [
        (hand, &bare),
        ("pgpilot reinit until the standby streams", &streams),
        ("pgpilot reinit until the group is settled", &ours),
    ] {
        println!(
            "{label:<52} {:>8.1} {:>8.1} {:>8.1}",
            values[0],
            percentile(values, 0.5),
            values[values.len() - 1]
        );
    }
    println!(
        "ratio pgpilot / by hand (medians): until it streams {:.2}, until settled {:.2}",
        percentile(&streams, 0.5) / percentile(&bare, 0.5),
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

/// `pg_basebackup -X stream --checkpoint=fast` of `node` into `target`
/// (`-R`: with the standby settings), as the PostgreSQL user in `dir`.
async fn basebackup(
    cluster: &Cluster,
    node: &str,
    dir: &Path,
    target: &Path,
    standby_settings: bool,
) -> Result<()> {
    let upstream = cluster.node_port(node)?.to_string();
    let mut args: Vec<&OsStr> = [
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-X",
        "stream",
        "--checkpoint=fast",
        "-p",
        &upstream,
    ]
    .map(OsStr::new)
    .to_vec();
    if standby_settings {
        args.push(OsStr::new("-R"));
    }
    args.extend([OsStr::new("-D"), target.as_os_str()]);
    run_as_pg(cluster, dir, "pg_basebackup", &args).await
}

/// A standby built by hand, timed: copied (see [`ByHand`]) into a
/// scratch directory, `pg_ctl start` on a free port, until its WAL
/// receiver streams; then stopped and removed.
async fn bare_standby(cluster: &Cluster, how: &ByHand) -> Result<Duration> {
    let tools = cluster.tools();
    let scratch = tools.scratch_dir("pgpilot-bench-basebackup")?;
    let target = scratch.path().join("copy");
    let port = pgpilot_tests::process::free_port()?.to_string();
    let started = Instant::now();
    let copy = match how {
        ByHand::Basebackup(from, follow) if from == follow => {
            basebackup(cluster, from, scratch.path(), &target, true).await?;
            None
        }
        ByHand::Basebackup(from, follow) => {
            basebackup(cluster, from, scratch.path(), &target, false).await?;
            Some(("true".to_string(), follow))
        }
        ByHand::Copy(backup, follow) => Some((
            format!("cp -a {}/. {}", backup.display(), target.display()),
            follow,
        )),
    };
    if let Some((copy, follow)) = copy {
        let upstream = cluster.node_port(follow)?;
        let script = format!(
            "{copy} && touch {target}/standby.signal && printf \"primary_conninfo = 'host=127.0.0.1 port={upstream} user=postgres'\\nprimary_slot_name = ''\\n\" >> {target}/postgresql.auto.conf",
            target = target.display()
        );
        let status =
            tokio::process::Command::from(tools.command_as_pg_user("/bin/sh", scratch.path()))
                .args(["-c", &script])
                .status()
                .await
                .context("running the copy by hand")?;
        if !status.success() {
            bail!("the copy by hand failed: {status}");
        }
    }
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
/// the keeper's own account of the copy.
pub async fn rebuild(
    cluster: &Cluster,
    primary: &str,
    standby: &str,
) -> Result<(Duration, String)> {
    let (_, settled, copy) = rebuild_timed(cluster, primary, standby).await?;
    Ok((settled, copy))
}

/// `reinit` of `standby`: the time until its own WAL receiver streams
/// again (after it was seen not streaming), until the group is settled
/// again (both polled every 20 ms, as the standby built by hand is), and
/// the keeper's own account of the copy.
async fn rebuild_timed(
    cluster: &Cluster,
    primary: &str,
    standby: &str,
) -> Result<(Duration, Duration, String)> {
    let before = last_event_id(&events(cluster).await?);
    let started = Instant::now();
    // The command commits the standby's new goal before it returns: from
    // then on the pair is not settled until the standby is rebuilt.
    cli_ok(cluster, &["reinit", standby, "--no-wait"]).await?;
    let left = AtomicBool::new(false);
    let streams = Mutex::new(None);
    let settled = pgpilot_tests::poll_every(
        POLL,
        REBUILD_TIMEOUT,
        &format!("{standby} rebuilt and the group settled"),
        || async {
            if lock(&streams).is_none() {
                let streaming = cluster
                    .psql(standby, "SELECT status FROM pg_stat_wal_receiver")
                    .await
                    .is_ok_and(|out| out.trim() == "streaming");
                if !streaming {
                    left.store(true, Ordering::SeqCst);
                } else if left.load(Ordering::SeqCst) {
                    *lock(&streams) = Some(started.elapsed());
                }
                return Ok(None);
            }
            let s = cluster.state().await?;
            let settled = s
                .node(primary)
                .is_some_and(|n| n.settled_in(ReplicationState::Primary))
                && s.nodes
                    .iter()
                    .filter(|n| n.name != primary)
                    .all(|n| n.settled_in(ReplicationState::Secondary));
            Ok(settled.then_some(()))
        },
    )
    .await;
    if let Err(e) = settled {
        return Err(cluster.failure(format!("{e:#}")).await);
    }
    let took = started.elapsed();
    let streams = lock(&streams).unwrap_or(took);
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
    Ok((streams, took, copy))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
