//! A keeper SIGKILLed at many points of the failover and rejoin paths, then
//! restarted, converges to its goal (DESIGN §5, invariant 4), and the other
//! invariants hold meanwhile.
//!
//! One two-node cluster goes through several failovers, alternately
//! unplanned (the primary killed hard, keeper and PostgreSQL) and planned
//! (`perform-failover`). In each, the standby's keeper is given points of the
//! promotion path (secondary → report_lsn → prepare_promotion →
//! stop_replication → wait_primary → primary) and the old primary's keeper
//! points of the rejoin path (→ demoted → catchingup → secondary, through
//! draining in a planned failover), as `PGPILOT_KEEPER_FAILPOINTS`. The
//! harness restarts a keeper each time a point kills it, without that point
//! (see `Cluster::start_keeper_with_failpoints`). Every point of fixed
//! lists is dealt to one failover, in an order shuffled by a seed that is
//! printed (`PGPILOT_KEEPER_KILLS_SEED=N` replays a run). Then one more
//! unplanned failover whose old primary cannot be rewound (its pg_control
//! removed), so that its keeper is killed on the clone branch of the
//! rejoin, and a `reinit` of the standby, killed in the middle of its
//! pg_basebackup.
//!
//! After each failover: the group is healthy again (one settled primary, one
//! settled secondary, synchronous replication `ANY 1` applied), every point
//! given has fired, the new primary takes writes and holds every write
//! acknowledged so far (invariant 2), `pg_is_in_recovery` is false there
//! and true on the other node; in every state sample of the monitor at most
//! one node has a primary goal and at most one reports a writable primary
//! with its PostgreSQL running and a fresh heartbeat (invariant 1). At the
//! end every goal change has an event with a reason (invariant 5).
//!
//! Needs `cargo build --workspace` first (the tests run the built
//! `pgpilot-monitor` and `pgpilot-keeper`) and PostgreSQL's server programs.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_sim::rng::Rng;
use pgpilot_tests::operator::{cli_ok, event_line, events};
use pgpilot_tests::process::free_port;
use pgpilot_tests::{
    Cluster, ClusterOptions, FormationState, FormationStateExt, KeeperToml, NodeStatusExt,
    ReplicationState, Tools, Writer,
};
use serde_json::Value;

const PRIMARY: ReplicationState = ReplicationState::Primary;
const SECONDARY: ReplicationState = ReplicationState::Secondary;

/// Replays a run: the seed the points were shuffled with.
const SEED_ENV: &str = "PGPILOT_KEEPER_KILLS_SEED";
/// Two nodes cloned and settled on a loaded two-core machine.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// From the fault to the standby reporting a writable primary state.
const PROMOTION_TIMEOUT: Duration = Duration::from_secs(90);
/// From the promotion to both nodes settled (the old primary rejoined).
const REJOIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Writes resume through the multi-host URI after a failover.
const WRITES_RESUME_TIMEOUT: Duration = Duration::from_secs(60);
/// A heartbeat at most this old counts as current (keepers beat every
/// 0.5 s; a killed primary's last one is older than node_timeout, 2 s, before
/// anyone is promoted).
const FRESH_HEARTBEAT_MS: i64 = 2_000;

/// The failovers, in order; the primary alternates. Every point of the
/// lists below is dealt to one of them, so each run fires all of them.
const CYCLES: [Failover; 6] = [
    Failover::Unplanned,
    Failover::Planned,
    Failover::Unplanned,
    Failover::Planned,
    Failover::Unplanned,
    Failover::Planned,
];

/// The promotion path, every action boundary (`K` = the plan's length: after
/// its last action, before the state file records the new state), and kills
/// while `WaitReplayCaughtUp` and `Promote` run.
const PROMOTION_PATH: &[&str] = &[
    "secondary->report_lsn:0",
    "report_lsn->prepare_promotion:0",
    "report_lsn->prepare_promotion:1",
    "report_lsn->prepare_promotion:1+100ms",
    "report_lsn->prepare_promotion:2",
    "prepare_promotion->stop_replication:0",
    "prepare_promotion->stop_replication:1",
    "prepare_promotion->stop_replication:1+50ms",
    "prepare_promotion->stop_replication:2",
    "prepare_promotion->stop_replication:3",
    "prepare_promotion->stop_replication:4",
    "stop_replication->wait_primary:0",
    "stop_replication->wait_primary:1",
    "stop_replication->wait_primary:2",
    "stop_replication->wait_primary:3",
    "wait_primary->primary:0",
    "wait_primary->primary:1",
    "wait_primary->primary:2",
    "wait_primary->primary:3",
    "wait_primary->primary:4",
];
/// The rejoin path common to both kinds of failover, with kills while the
/// rewind (or clone) runs and while the rejoining standby starts.
const REJOIN_PATH: &[&str] = &[
    "demoted->catchingup:0",
    "demoted->catchingup:1",
    "demoted->catchingup:1+300ms",
    "demoted->catchingup:1+1s",
    "demoted->catchingup:2",
    "demoted->catchingup:3",
    "demoted->catchingup:3+200ms",
    "demoted->catchingup:4",
    "catchingup->secondary:0",
    "catchingup->secondary:1",
    "catchingup->secondary:2",
    "catchingup->secondary:3",
];
/// The old primary's first steps: after a hard kill it comes back as
/// `primary` with goal `demoted`; in a planned failover it drains first.
const DEMOTION_UNPLANNED: &[&str] = &["primary->demoted:0", "primary->demoted:1"];
const DEMOTION_PLANNED: &[&str] = &[
    "primary->draining:0",
    "primary->draining:1",
    "draining->demoted:0",
    "draining->demoted:1",
];

/// After the failovers, the standby is rebuilt (`reinit`) and its keeper
/// killed on the way, once in the middle of the clone (pg_basebackup): the
/// restarted keeper must cope with the interrupted clone's temporary
/// directory, and no pg_basebackup may outlive the killed keeper.
const REINIT_PATH: &[&str] = &[
    "secondary->wait_standby:1",
    "wait_standby->catchingup:1+300ms",
    "wait_standby->catchingup:3",
];

/// After the six failovers, one more unplanned one whose old primary
/// cannot be rewound (its `global/pg_control` is removed while it is down),
/// so that its keeper takes the clone branch of `demoted → catchingup`: it
/// is killed while that runs (the failed rewind or the pg_basebackup, as
/// the machine's speed has it), and after the clone, before its start. The
/// restarted keeper must start that clone as a standby, not rewind it.
const CLONE_PATH: &[&str] = &["demoted->catchingup:1+700ms", "demoted->catchingup:3"];
/// What the keeper logs when it takes the clone branch, and when it finds
/// an unstarted clone where it would rewind.
const CLONED_INSTEAD: &str = "cloning the primary instead";
const UNSTARTED_CLONE: &str = "PGDATA is a clone that never started";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failover {
    /// The primary's keeper and PostgreSQL SIGKILLed, the keeper restarted
    /// once the standby is promoted.
    Unplanned,
    /// `perform-failover`.
    Planned,
    /// Unplanned, and the old primary's pg_control removed before its
    /// keeper restarts: pg_rewind fails, the keeper clones instead.
    UnplannedRewindFails,
}

/// `items` in an order drawn from `rng` (Fisher-Yates).
fn shuffled(rng: &mut Rng, items: &[&'static str]) -> Vec<&'static str> {
    let mut v = items.to_vec();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

/// What one failover does to each keeper.
#[derive(Debug)]
struct Cycle {
    kind: Failover,
    /// For the standby being promoted.
    promoted: Vec<&'static str>,
    /// For the old primary coming back.
    rejoin: Vec<&'static str>,
}

/// Every point, shuffled by `seed`, dealt round-robin to the failovers
/// that go through it.
fn deal(seed: u64) -> Vec<Cycle> {
    let mut rng = Rng::new(seed);
    let mut cycles: Vec<Cycle> = CYCLES
        .iter()
        .map(|&kind| Cycle {
            kind,
            promoted: Vec::new(),
            rejoin: Vec::new(),
        })
        .collect();
    let all: Vec<usize> = (0..cycles.len()).collect();
    let of_kind =
        |kind| -> Vec<usize> { all.iter().copied().filter(|&i| CYCLES[i] == kind).collect() };
    let deals: [(&[&'static str], Vec<usize>, bool); 4] = [
        (PROMOTION_PATH, all.clone(), true),
        (REJOIN_PATH, all.clone(), false),
        (DEMOTION_UNPLANNED, of_kind(Failover::Unplanned), false),
        (DEMOTION_PLANNED, of_kind(Failover::Planned), false),
    ];
    for (points, to, promoted) in deals {
        // Each list starts at a random failover, so that the first ones
        // do not get every point left over from an even deal.
        let offset = rng.below(to.len());
        for (n, point) in shuffled(&mut rng, points).into_iter().enumerate() {
            let cycle = &mut cycles[to[(n + offset) % to.len()]];
            if promoted {
                cycle.promoted.push(point);
            } else {
                cycle.rejoin.push(point);
            }
        }
    }
    cycles
}

/// Invariant 1 as far as the monitor's samples show it; violations are
/// collected while a wait polls and reported after it.
#[derive(Default)]
struct OneWritable {
    samples: Mutex<u64>,
    violations: Mutex<Vec<String>>,
}

impl OneWritable {
    fn check(&self, s: &FormationState) {
        *self.samples.lock().unwrap() += 1;
        let primary_goals: Vec<&str> = s
            .nodes
            .iter()
            .filter(|n| n.goal().is_some_and(ReplicationState::is_writable_primary))
            .map(|n| n.name.as_str())
            .collect();
        let writable_now: Vec<&str> = s
            .nodes
            .iter()
            .filter(|n| {
                n.reports_writable_primary()
                    && n.pg_running
                    && (0..FRESH_HEARTBEAT_MS).contains(&n.heartbeat_age_ms)
            })
            .map(|n| n.name.as_str())
            .collect();
        if primary_goals.len() > 1 || writable_now.len() > 1 {
            self.violations.lock().unwrap().push(format!(
                "primary goals {primary_goals:?}, writable with a fresh heartbeat \
                 {writable_now:?}:\n{}",
                s.table()
            ));
        }
    }

    async fn expect_none(&self, cluster: &Cluster) -> Result<()> {
        let violations = self.violations.lock().unwrap().clone();
        if violations.is_empty() {
            return Ok(());
        }
        Err(cluster
            .failure(format!(
                "two nodes could take writes at once in {} of the monitor's samples; first:\n{}",
                violations.len(),
                violations[0]
            ))
            .await)
    }
}

/// Poll the monitor until `done`, checking every sample for two writable
/// nodes.
async fn wait_checked<F>(
    cluster: &Cluster,
    one: &OneWritable,
    timeout: Duration,
    what: &str,
    mut done: F,
) -> Result<FormationState>
where
    F: FnMut(&FormationState) -> bool,
{
    cluster
        .wait_state(timeout, what, |s| {
            one.check(s);
            done(s)
        })
        .await
}

fn settled_pair(s: &FormationState, primary: &str, secondary: &str) -> bool {
    s.nodes.len() == 2
        && s.node(primary).is_some_and(|n| n.settled_in(PRIMARY))
        && s.node(secondary).is_some_and(|n| n.settled_in(SECONDARY))
        && s.synchronous_standby_names.starts_with("ANY 1")
}

/// The keepers of `points` (node, points) have fired all their points, and
/// `fired_before` + the number of them is the count of points fired so far.
async fn expect_all_fired(
    cluster: &Cluster,
    points: &[(&str, &[&str])],
    fired_before: usize,
) -> Result<()> {
    let pending: Vec<String> = points
        .iter()
        .flat_map(|(n, _)| {
            cluster
                .pending_failpoints(n)
                .into_iter()
                .map(move |p| format!("{n}: {p}"))
        })
        .collect();
    let given: usize = points.iter().map(|(_, p)| p.len()).sum();
    let fired = cluster.fired_failpoints().len() - fired_before;
    if !pending.is_empty() || fired != given {
        return Err(cluster
            .failure(format!(
                "every failpoint given should have fired (killed its keeper) by the time the \
                 group settled; {fired} of {given} fired, never fired: {pending:?}"
            ))
            .await);
    }
    Ok(())
}

/// One failover with points on both keepers.
#[allow(clippy::too_many_arguments)]
async fn failover(
    cluster: &Cluster,
    writer: &Writer,
    one: &OneWritable,
    kind: Failover,
    old: &str,
    new: &str,
    promoted_points: &[&str],
    rejoin_points: &[&str],
) -> Result<()> {
    let fired_before = cluster.fired_failpoints().len();
    cluster
        .restart_keeper_with_failpoints(new, promoted_points)
        .await?;
    let fault_at = match kind {
        Failover::Unplanned | Failover::UnplannedRewindFails => {
            let killed_at = cluster.kill_node_hard(old)?;
            if kind == Failover::UnplannedRewindFails {
                let control = cluster.pgdata(old)?.join("global").join("pg_control");
                std::fs::remove_file(&control)
                    .with_context(|| format!("removing {}", control.display()))?;
            }
            wait_checked(
                cluster,
                one,
                PROMOTION_TIMEOUT,
                &format!("{new} to report a writable primary state after {old} was killed"),
                |s| s.node(new).is_some_and(|n| n.reports_writable_primary()),
            )
            .await?;
            cluster.start_keeper_with_failpoints(old, rejoin_points)?;
            killed_at
        }
        Failover::Planned => {
            cluster
                .restart_keeper_with_failpoints(old, rejoin_points)
                .await?;
            // The operator command is refused unless the group is settled;
            // the keepers just restarted, so make sure both heartbeat.
            wait_checked(
                cluster,
                one,
                HEALTHY_TIMEOUT,
                &format!("{old} and {new} settled, heartbeating after their restart"),
                |s| {
                    settled_pair(s, old, new)
                        && s.nodes
                            .iter()
                            .all(|n| (0..FRESH_HEARTBEAT_MS).contains(&n.heartbeat_age_ms))
                },
            )
            .await?;
            let started = Instant::now();
            cli_ok(cluster, &["perform-failover", "--no-wait"]).await?;
            started
        }
    };
    wait_checked(
        cluster,
        one,
        REJOIN_TIMEOUT,
        &format!("{new} settled primary and {old} settled secondary, synchronous replication on"),
        |s| settled_pair(s, new, old),
    )
    .await?;
    expect_all_fired(
        cluster,
        &[(new, promoted_points), (old, rejoin_points)],
        fired_before,
    )
    .await?;
    writer
        .wait_ack_after(
            cluster,
            fault_at,
            WRITES_RESUME_TIMEOUT,
            &format!("a write acknowledged by {new} after the failover"),
        )
        .await?;
    cluster
        .expect_ids_on(new, &writer.acked_ids())
        .await
        .context("right after the failover")?;
    let (new_recovery, old_recovery) = (
        cluster.is_in_recovery(new).await?,
        cluster.is_in_recovery(old).await?,
    );
    if new_recovery || !old_recovery {
        return Err(cluster
            .failure(format!(
                "after the failover {new} should take writes and {old} be in recovery; \
                 pg_is_in_recovery: {new} {new_recovery}, {old} {old_recovery}"
            ))
            .await);
    }
    one.expect_none(cluster).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepers_killed_along_failover_and_rejoin_converge() -> Result<()> {
    let seed = match std::env::var(SEED_ENV) {
        Ok(text) => text
            .parse::<u64>()
            .map_err(|e| anyhow!("{SEED_ENV}={text:?}: {e}"))?,
        Err(_) => SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 % 1_000_000,
    };
    eprintln!("keeper kills: seed {seed} (replay with {SEED_ENV}={seed})");
    let cycles = deal(seed);

    let test_started = Instant::now();
    let cluster = Cluster::start(ClusterOptions::nodes(2)).await?;
    cluster.wait_healthy(HEALTHY_TIMEOUT).await?;
    let writer = Writer::warm(&cluster).await?;
    let one = OneWritable::default();
    let mut old = cluster.primary_name().await?;
    eprintln!(
        "cluster healthy after {:.1} s; {old} is the primary",
        test_started.elapsed().as_secs_f64()
    );

    for (i, cycle) in cycles.iter().enumerate() {
        let new = cluster.other_node(&old)?;
        let started = Instant::now();
        eprintln!(
            "failover {} ({:?}): {old} -> {new}; {new} gets {:?}, {old} gets {:?}",
            i + 1,
            cycle.kind,
            cycle.promoted,
            cycle.rejoin
        );
        failover(
            &cluster,
            &writer,
            &one,
            cycle.kind,
            &old,
            &new,
            &cycle.promoted,
            &cycle.rejoin,
        )
        .await?;
        eprintln!(
            "failover {} done in {:.1} s: {new} primary, {old} secondary, {} writes acknowledged, \
             none lost",
            i + 1,
            started.elapsed().as_secs_f64(),
            writer.ack_count()
        );
        old = new;
    }

    let new = cluster.other_node(&old)?;
    let keeper_log = cluster.root().join(&old).join("keeper.log");
    let count = |needle: &str| {
        std::fs::read_to_string(&keeper_log).map_or(0, |text| text.matches(needle).count())
    };
    let (cloned_before, unstarted_before) = (count(CLONED_INSTEAD), count(UNSTARTED_CLONE));
    let started = Instant::now();
    eprintln!(
        "failover {} (UnplannedRewindFails): {old} -> {new}; {old}'s pg_control removed, it \
         gets {CLONE_PATH:?}",
        cycles.len() + 1
    );
    failover(
        &cluster,
        &writer,
        &one,
        Failover::UnplannedRewindFails,
        &old,
        &new,
        &[],
        CLONE_PATH,
    )
    .await?;
    let (cloned, unstarted) = (
        count(CLONED_INSTEAD) - cloned_before,
        count(UNSTARTED_CLONE) - unstarted_before,
    );
    if cloned == 0 || unstarted == 0 {
        return Err(cluster
            .failure(format!(
                "{old}, which could not be rewound, should have been cloned ({cloned} times \
                 {CLONED_INSTEAD:?}) and its unstarted clone started as it is ({unstarted} \
                 times {UNSTARTED_CLONE:?}) in {}",
                keeper_log.display()
            ))
            .await);
    }
    eprintln!(
        "failover {} done in {:.1} s: {old} cloned {cloned} time(s), an unstarted clone found \
         {unstarted} time(s); {new} primary, {old} secondary, none lost",
        cycles.len() + 1,
        started.elapsed().as_secs_f64()
    );
    old = new;

    let primary = old;
    let standby = cluster.other_node(&primary)?;
    eprintln!("reinit of {standby}: it gets {REINIT_PATH:?}");
    let fired_before = cluster.fired_failpoints().len();
    let reinit_at = Instant::now();
    cluster
        .restart_keeper_with_failpoints(&standby, REINIT_PATH)
        .await?;
    cli_ok(&cluster, &["reinit", &standby, "--no-wait"]).await?;
    // The pair is settled before the rebuild too: wait until the points
    // fired as well (a point that never fires ends in the timeout).
    wait_checked(
        &cluster,
        &one,
        REJOIN_TIMEOUT,
        &format!(
            "{standby} rebuilt with every point fired, settled secondary again, {primary} \
             settled primary"
        ),
        |s| cluster.pending_failpoints(&standby).is_empty() && settled_pair(s, &primary, &standby),
    )
    .await?;
    expect_all_fired(&cluster, &[(&standby, REINIT_PATH)], fired_before).await?;
    if !cluster.is_in_recovery(&standby).await? || cluster.is_in_recovery(&primary).await? {
        return Err(cluster
            .failure(format!(
                "after the rebuild {primary} should take writes and {standby} be in recovery"
            ))
            .await);
    }
    eprintln!("reinit done in {:.1} s", reinit_at.elapsed().as_secs_f64());
    one.expect_none(&cluster).await?;

    let report = writer.stop().await;
    report.expect_all_on(&cluster, &primary).await?;

    let changes: Vec<Value> = events(&cluster)
        .await?
        .into_iter()
        .filter(|e| e["goal_from"] != e["goal_to"])
        .collect();
    let unexplained: Vec<String> = changes
        .iter()
        .filter(|e| e["reason"].as_str().is_none_or(|r| r.trim().is_empty()))
        .map(event_line)
        .collect();
    if changes.is_empty() || !unexplained.is_empty() {
        return Err(cluster
            .failure(format!(
                "every goal change should be an event with a reason; {} goal changes, \
                 without a reason:\n{}",
                changes.len(),
                unexplained.join("\n")
            ))
            .await);
    }

    let fired = cluster.fired_failpoints();
    let mut fired_points: Vec<&str> = fired.iter().map(|f| f.point.as_str()).collect();
    fired_points.sort_unstable();
    let mut listed: Vec<&str> = [
        PROMOTION_PATH,
        REJOIN_PATH,
        DEMOTION_UNPLANNED,
        DEMOTION_PLANNED,
        CLONE_PATH,
        REINIT_PATH,
    ]
    .concat();
    listed.sort_unstable();
    if fired_points != listed {
        return Err(cluster
            .failure(format!(
                "each listed point should have fired once (as often as it is listed); \
                 listed {listed:?}, fired {fired_points:?}"
            ))
            .await);
    }
    let mut distinct = fired_points.clone();
    distinct.dedup();
    eprintln!(
        "keeper kills: seed {seed}: {} failpoints fired ({} distinct) in {} failovers and a \
         rebuild, \
         {} writes acknowledged, none lost, {} goal changes all with a reason, {} monitor \
         samples with at most one writable node; {:.1} s in all. In order:",
        fired.len(),
        distinct.len(),
        CYCLES.len() + 1,
        report.acks.len(),
        changes.len(),
        *one.samples.lock().unwrap(),
        test_started.elapsed().as_secs_f64()
    );
    for f in &fired {
        let left: Vec<String> = f
            .leftovers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let running: Vec<String> = f
            .left_running
            .iter()
            .map(|(pid, name)| format!("{name} pid {pid}"))
            .collect();
        eprintln!(
            "  +{:6.1}s  {:6}  {}{}{}",
            f.at.duration_since(test_started).as_secs_f64(),
            f.node,
            f.point,
            if left.is_empty() {
                String::new()
            } else {
                format!("  (left behind: {})", left.join(", "))
            },
            if running.is_empty() {
                String::new()
            } else {
                format!("  (still running: {})", running.join(", "))
            }
        );
    }
    cluster.shutdown().await
}

/// A failpoint list that does not parse stops the keeper at start, before
/// it does anything, with one sentence naming the point and exit code 2.
#[tokio::test]
async fn a_bad_failpoint_list_stops_the_keeper_at_start() -> Result<()> {
    let tools = Tools::locate()?;
    let dir = tools.scratch_dir("pgpilot-failpoints-")?;
    let config = dir.path().join("keeper.toml");
    let toml = KeeperToml {
        name: "node1".to_string(),
        formation: "default".to_string(),
        host: "127.0.0.1".to_string(),
        port: free_port()?,
        advertise_port: None,
        pgdata: dir.path().join("data").display().to_string(),
        monitor: vec![format!("http://127.0.0.1:{}", free_port()?)],
        pg_bin_dir: tools.pg_bin_dir.display().to_string(),
        pg_user: "postgres".to_string(),
        candidate_priority: None,
        replication_quorum: None,
        apply_delay: None,
        register_timeout: Some("5s".to_string()),
    };
    std::fs::write(&config, toml.render()?)?;
    for (list, says) in [
        (
            "secondary->report_lsn:0,prepare_promotion->stop_replication:9",
            "has 4 action(s), so K is 0 to 4",
        ),
        ("demoted->catchingup", "has no \":K\""),
    ] {
        let mut cmd = tokio::process::Command::from(tools.keeper_command(&config, dir.path()));
        cmd.env("PGPILOT_KEEPER_FAILPOINTS", list)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .context("the keeper with a bad failpoint list did not exit within 30 s")??;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if output.status.code() != Some(2)
            || lines.len() != 1
            || !lines[0].contains("PGPILOT_KEEPER_FAILPOINTS")
            || !lines[0].contains(says)
        {
            bail!(
                "PGPILOT_KEEPER_FAILPOINTS={list:?}: expected exit 2 and one line saying \
                 {says:?}; got {}, stderr:\n{stderr}",
                output.status
            );
        }
        if dir.path().join("data").exists() {
            bail!("the keeper with a bad failpoint list created PGDATA");
        }
        eprintln!("refused as expected: {}", lines[0]);
    }
    Ok(())
}
