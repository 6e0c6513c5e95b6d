//! Long work on real PostgreSQL, watched for progress rather than timed.
//!
//! A standby rebuilt (`reinit`) from a primary holding tens of megabytes,
//! with `clone_max_rate` and `clone_in_place` set on its keeper (the old
//! data directory is gone while the copy runs): while pg_basebackup runs, the
//! monitor shows the clone's progress (`show-state`, its JSON); when it is
//! done an event says what was copied in how long, and the average rate
//! stays within the throttle. A second rebuild whose upstream goes silent
//! (the primary's ingress blackholed mid-copy) is stopped after the
//! keeper's `stall_timeout`, an event says so, and once the link is back
//! the next attempt finishes.
//!
//! Needs `cargo build --workspace` first and PostgreSQL's server programs.

use std::time::{Duration, Instant};

use anyhow::Result;
use pgpilot_proto::pb;
use pgpilot_tests::operator::{cli_ok, events};
use pgpilot_tests::{Cluster, ClusterOptions, FormationStateExt, NodeStatusExt, ReplicationState};

/// Two nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// A throttled rebuild of ~50 MiB at 8 MiB/s, with room for a loaded machine.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(180);
/// Rows of about 1 kB written to the primary before the rebuilds.
const FILLER_ROWS: u32 = 40_000;
/// The standby's keeper settings for the test.
const THROTTLE: &str = "clone_max_rate = \"8MB\"\nstall_timeout = \"3s\"\nclone_in_place = true\n";
const MAX_RATE_BYTES: f64 = 8.0 * 1024.0 * 1024.0;

fn work_of<'a>(s: &'a pb::FormationState, name: &str) -> Option<&'a pb::WorkProgress> {
    s.nodes.iter().find(|n| n.name == name)?.work.as_ref()
}

fn settled_pair(s: &pb::FormationState, primary: &str, standby: &str) -> bool {
    s.node(primary)
        .is_some_and(|n| n.settled_in(ReplicationState::Primary))
        && s.node(standby)
            .is_some_and(|n| n.settled_in(ReplicationState::Secondary))
}

/// The events of `kind` about `node` newer than `after`.
async fn events_of(cluster: &Cluster, node: &str, kind: &str, after: i64) -> Result<Vec<String>> {
    Ok(events(cluster)
        .await?
        .into_iter()
        .filter(|e| {
            e["node_name"] == node
                && e["kind"] == kind
                && e["event_id"].as_i64().unwrap_or(0) > after
        })
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect())
}

async fn newest_event(cluster: &Cluster) -> Result<i64> {
    Ok(pgpilot_tests::operator::last_event_id(
        &events(cluster).await?,
    ))
}

/// "… (4.0 MiB/s on average)" → bytes per second.
fn average_rate(text: &str) -> Option<f64> {
    let head = text.strip_suffix("/s on average)")?;
    let (_, number_unit) = head.rsplit_once('(')?;
    let (number, unit) = number_unit.split_once(' ')?;
    let factor = match unit {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * factor)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_clone_shows_progress_and_a_stalled_one_is_stopped() -> Result<()> {
    let cluster = Cluster::start(ClusterOptions {
        ingress_proxies: true,
        ..ClusterOptions::nodes(2)
    })
    .await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let (primary, standby) = ("node1".to_string(), "node2".to_string());
    cluster
        .psql(
            &primary,
            &format!(
                "CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 32) AS pad \
                 FROM generate_series(1, {FILLER_ROWS}) g"
            ),
        )
        .await?;
    cluster.stop_keeper(&standby).await?;
    let config = cluster.keeper_config_path(&standby)?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(THROTTLE);
    std::fs::write(&config, text)?;
    cluster.start_keeper(&standby)?;

    // A throttled rebuild, watched.
    let before = newest_event(&cluster).await?;
    let started = Instant::now();
    cli_ok(&cluster, &["reinit", &standby, "--no-wait"]).await?;
    let seen = cluster
        .wait_for(
            REBUILD_TIMEOUT,
            "the clone's progress in show-state",
            || async {
                let s = cluster.state().await?;
                Ok(work_of(&s, &standby)
                    .filter(|w| w.work == "clone" && w.total_bytes > 0 && w.done_bytes > 0)
                    .cloned())
            },
        )
        .await?;
    eprintln!(
        "seen after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        pgpilot_proto::work::describe(&seen)
    );
    // clone_in_place: the old data directory is gone while the copy runs
    // (checked, then the copy seen still running: the check fell in it).
    let pgdata = cluster.pgdata(&standby)?;
    let there = pgdata.join("PG_VERSION").exists();
    let still = work_of(&cluster.state().await?, &standby).is_some();
    if there && still {
        return Err(cluster
            .failure(format!(
                "with clone_in_place the old {} should be gone during the clone",
                pgdata.display()
            ))
            .await);
    }
    let table = cli_ok(&cluster, &["show-state"]).await?;
    if !table.contains(&format!("working: {standby} clone from"))
        && seen.done_bytes < seen.total_bytes
    {
        // The clone may have finished in between; only a clone still under
        // way must show.
        let s = cluster.state().await?;
        if work_of(&s, &standby).is_some() {
            return Err(cluster
                .failure(format!(
                    "show-state does not show the clone under way:\n{table}"
                ))
                .await);
        }
    }
    cluster
        .wait_for(
            REBUILD_TIMEOUT,
            "the standby rebuilt and settled",
            || async {
                let s = cluster.state().await?;
                Ok(
                    (settled_pair(&s, &primary, &standby) && work_of(&s, &standby).is_none())
                        .then_some(()),
                )
            },
        )
        .await?;
    let done = cluster
        .wait_for(REBUILD_TIMEOUT, "the work_done event", || async {
            Ok(events_of(&cluster, &standby, "work_done", before)
                .await?
                .into_iter()
                .next())
        })
        .await?;
    eprintln!(
        "rebuilt in {:.1} s: {done}",
        started.elapsed().as_secs_f64()
    );
    let rate = average_rate(&done);
    if !done.starts_with("cloned ") || rate.is_none_or(|r| r > MAX_RATE_BYTES * 1.15) {
        return Err(cluster
            .failure(format!(
                "the clone's event should say what it copied at no more than 8 MiB/s on average: {done:?}"
            ))
            .await);
    }

    // A rebuild whose upstream goes silent mid-copy.
    let before = newest_event(&cluster).await?;
    cli_ok(&cluster, &["reinit", &standby, "--no-wait"]).await?;
    cluster
        .wait_for(REBUILD_TIMEOUT, "the second clone copying", || async {
            let s = cluster.state().await?;
            Ok(work_of(&s, &standby)
                .filter(|w| w.done_bytes > 0)
                .map(|_| ()))
        })
        .await?;
    let ingress = cluster.ingress(&primary)?;
    ingress.blackhole();
    let stalled = cluster
        .wait_for(REBUILD_TIMEOUT, "the work_stalled event", || async {
            Ok(events_of(&cluster, &standby, "work_stalled", before)
                .await?
                .into_iter()
                .next())
        })
        .await;
    ingress.heal();
    let stalled = stalled?;
    eprintln!("stalled: {stalled}");
    if !stalled.contains("made no progress for 3s") {
        return Err(cluster
            .failure(format!(
                "the stall event should name the stall_timeout: {stalled:?}"
            ))
            .await);
    }
    cluster
        .wait_for(
            REBUILD_TIMEOUT,
            "the standby rebuilt after the stall",
            || async {
                let s = cluster.state().await?;
                Ok(settled_pair(&s, &primary, &standby).then_some(()))
            },
        )
        .await?;
    let rows = cluster
        .psql(&standby, "SELECT count(*) FROM filler")
        .await?;
    if rows != FILLER_ROWS.to_string() {
        return Err(cluster
            .failure(format!(
                "the rebuilt standby has {rows} filler rows, not {FILLER_ROWS}"
            ))
            .await);
    }
    cluster.shutdown().await
}
