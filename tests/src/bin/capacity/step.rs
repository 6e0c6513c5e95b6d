//! One step of the run: add nodes, measure the heartbeats and the monitor
//! for a window, then check that a primary that stops heartbeating is
//! replaced within its bound.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pgpilot_proto::pb::monitor_client::MonitorClient;
use pgpilot_proto::ReplicationState as S;
use pgpilot_tests::process::postmaster_pid;
use pgpilot_tests::Cluster;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

use crate::measure::{rss_mb, Probe, Snapshot};
use crate::report::{print_row_line, print_table, print_window};
use crate::sim::{
    fake_postgres, heartbeat_loop, phase, register, Group, GroupFlags, NodeView, Sim, SimNode,
    Stats, WindowStats,
};
use crate::{
    Args, CLOCK_TICKS_PER_SEC, REGISTER_PHASE_LIMIT, SAMPLE_INTERVAL, STANDBY_LAG_BYTES,
    STOP_TIMEOUT,
};

/// Heartbeat streams per gRPC connection at most.
const STREAMS_PER_CHANNEL: usize = 100;

pub(crate) struct FailoverResult {
    /// From the primary's last heartbeat (sent) until a standby's reply said
    /// prepare_promotion / fast_forward.
    pub(crate) seen: Option<Duration>,
    /// The same on the monitor's clock: event time minus the primary's
    /// last_heartbeat, and when the election (report_lsn) began.
    pub(crate) decided_db: Option<f64>,
    pub(crate) election_db: Option<f64>,
    pub(crate) goal: Option<S>,
    pub(crate) note: String,
}

pub(crate) struct Row {
    pub(crate) nodes: usize,
    pub(crate) groups: usize,
    pub(crate) registered_per_s: f64,
    pub(crate) settled: usize,
    pub(crate) settle: Option<Duration>,
    pub(crate) target_hb_s: f64,
    pub(crate) achieved_hb_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) errors: u64,
    pub(crate) max_gap: Duration,
    pub(crate) monitor_cpu: f64,
    pub(crate) monitor_rss: f64,
    pub(crate) db_cpu: f64,
    pub(crate) me_cpu: f64,
    pub(crate) host_busy: f64,
    pub(crate) xact_s: f64,
    pub(crate) rollback_s: f64,
    /// New connections per second to the monitor's database.
    pub(crate) sessions_s: f64,
    pub(crate) db_exec_s: f64,
    /// Goal changes, and elections started, during the window (no primary
    /// was stopped then: every election is spurious).
    pub(crate) goal_changes: i64,
    pub(crate) elections: i64,
    pub(crate) failover: Option<FailoverResult>,
}

pub(crate) fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

pub(crate) async fn drive(
    args: &Args,
    cluster: &Cluster,
    sim: Arc<Sim>,
    budget_end: Instant,
) -> Result<()> {
    let monitor_pids = (0..cluster.monitor_count())
        .map(|i| {
            cluster
                .monitor_pid_at(i)
                .map(|pid| pid as i32)
                .ok_or_else(|| anyhow!("monitor {i} is not running"))
        })
        .collect::<Result<Vec<i32>>>()?;
    let postmaster = postmaster_pid(cluster.monitor_db_pgdata())
        .ok_or_else(|| anyhow!("the monitor's PostgreSQL has no postmaster.pid"))?;
    let (db, connection) =
        tokio_postgres::connect(&cluster.monitor_database_url(), tokio_postgres::NoTls)
            .await
            .context("connecting to the monitor's database")?;
    let connection = tokio::spawn(connection);
    db.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .context("CREATE EXTENSION pg_stat_statements")?;
    let probe = Probe {
        db,
        monitor_pids: monitor_pids.clone(),
        postmaster,
    };

    // A server takes a bounded number of streams per HTTP/2 connection
    // (hyper's default is 200): open enough connections for the streams.
    let channels = if args.unary {
        args.channels
    } else {
        let largest = args.steps.iter().copied().max().unwrap_or(0);
        args.channels.max(largest.div_ceil(STREAMS_PER_CHANNEL))
    };
    let urls = cluster.monitor_urls();
    let clients: Vec<MonitorClient<Channel>> = (0..channels)
        .map(|i| {
            Ok(MonitorClient::new(
                // Connections spread over the monitors, round robin.
                Endpoint::from_shared(urls[i % urls.len()].clone())?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy(),
            ))
        })
        .collect::<Result<_>>()?;
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut heartbeats: JoinSet<()> = JoinSet::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut all_nodes: Vec<Arc<SimNode>> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let npg = if args.single_formation {
        usize::MAX
    } else {
        args.nodes_per_group
    };

    println!(
        "pgpilot-capacity: monitor pid(s) {monitor_pids:?}, their PostgreSQL pid {postmaster}, {} CPUs; \
         heartbeat every {} ms per node ({}), RPC timeout {} ms, {} gRPC connections; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sim.interval.as_millis(),
        if sim.unary {
            "a NodeActive call each"
        } else {
            "over one Heartbeats stream per node"
        },
        sim.rpc_timeout.as_millis(),
        channels,
        if args.single_formation {
            "every node in the formation \"default\" (one group)".to_string()
        } else {
            format!(
                "groups of {} nodes, one formation each",
                args.nodes_per_group
            )
        }
    );

    let mut outcome = Ok(());
    for &target in &args.steps {
        if Instant::now() + Duration::from_secs(args.seconds_per_step) > budget_end {
            println!("step {target}: skipped, the --time-limit would be exceeded");
            break;
        }
        let cx = StepContext {
            args,
            sim: &sim,
            probe: &probe,
            clients: &clients,
            stats: &stats,
            stop_rx: &stop_rx,
            budget_end,
        };
        let step = run_step(
            &cx,
            &mut heartbeats,
            &mut groups,
            &mut all_nodes,
            npg,
            target,
        )
        .await;
        match step {
            Ok(row) => {
                print_row_line(&row, &sim);
                rows.push(row);
            }
            Err(err) => {
                outcome = Err(err.context(format!("step {target}")));
                break;
            }
        }
    }

    let _ = stop_tx.send(true);
    let stopping = tokio::time::timeout(STOP_TIMEOUT, async {
        while heartbeats.join_next().await.is_some() {}
    })
    .await;
    if stopping.is_err() {
        heartbeats.abort_all();
    }
    drop(probe);
    connection.abort();

    print_table(&rows, &sim, args);
    outcome
}

/// What every phase of a step works with.
pub(crate) struct StepContext<'a> {
    pub(crate) args: &'a Args,
    pub(crate) sim: &'a Arc<Sim>,
    pub(crate) probe: &'a Probe,
    pub(crate) clients: &'a [MonitorClient<Channel>],
    pub(crate) stats: &'a Arc<Stats>,
    pub(crate) stop_rx: &'a watch::Receiver<bool>,
    pub(crate) budget_end: Instant,
}

/// One step: grow the fleet to `target` nodes, let the groups settle,
/// measure a window, then fail over one settled group.
pub(crate) async fn run_step(
    cx: &StepContext<'_>,
    heartbeats: &mut JoinSet<()>,
    groups: &mut Vec<Group>,
    all_nodes: &mut Vec<Arc<SimNode>>,
    npg: usize,
    target: usize,
) -> Result<Row> {
    let (args, sim, probe, budget_end) = (cx.args, cx.sim, cx.probe, cx.budget_end);
    let first_new = all_nodes.len();
    let new_nodes = add_nodes(cx, heartbeats, groups, first_new, npg, target).await?;
    eprintln!("step {target}: registering {} new nodes …", new_nodes.len());
    let (registered, register_secs) = register_nodes(cx, heartbeats, &new_nodes, target).await;
    all_nodes.extend(new_nodes.iter().cloned());
    let registered_per_s = registered as f64 / register_secs.max(1e-3);

    // Wait for the groups to settle (bounded).
    let settle_started = Instant::now();
    let settle_deadline = (settle_started + args.settle_timeout).min(budget_end);
    let mut settled;
    loop {
        settled = groups.iter().filter(|g| g.settled()).count();
        if settled == groups.len() || Instant::now() >= settle_deadline {
            break;
        }
        tokio::time::sleep(SAMPLE_INTERVAL).await;
    }
    let settle = (settled == groups.len()).then(|| settle_started.elapsed());
    eprintln!(
        "step {target}: registered {registered} in {register_secs:.1} s, {settled}/{} groups settled in {:.1} s; measuring for {} s …",
        groups.len(),
        settle_started.elapsed().as_secs_f64(),
        args.seconds_per_step
    );

    let Measured {
        before,
        after,
        goal_changes,
        elections,
        db_exec_ms,
        window,
    } = measure_window(cx, all_nodes, target).await?;
    let secs = (after.at - before.at).as_secs_f64();
    let cpu = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / CLOCK_TICKS_PER_SEC / secs * 100.0;
    let host_busy = {
        let busy = after.host.0.saturating_sub(before.host.0) as f64;
        let total = after.host.1.saturating_sub(before.host.1).max(1) as f64;
        busy / total * 100.0 * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
    };
    let errors: u64 = window.errors.values().sum();

    let mut row = Row {
        nodes: registered + first_new,
        groups: groups.len(),
        registered_per_s,
        settled,
        settle,
        target_hb_s: all_nodes
            .iter()
            .filter(|n| !n.paused.load(Ordering::SeqCst))
            .count() as f64
            / sim.interval.as_secs_f64(),
        achieved_hb_s: window.latencies_us.len() as f64 / secs,
        p50_ms: percentile_ms(&window.latencies_us, 0.50),
        p99_ms: percentile_ms(&window.latencies_us, 0.99),
        max_ms: window
            .latencies_us
            .last()
            .map_or(f64::NAN, |&us| us as f64 / 1000.0),
        errors,
        max_gap: window.max_gap,
        monitor_cpu: cpu(before.monitor, after.monitor),
        monitor_rss: probe
            .monitor_pids
            .iter()
            .map(|&pid| rss_mb(pid).unwrap_or(f64::NAN))
            .sum(),
        db_cpu: cpu(before.db, after.db),
        me_cpu: cpu(before.me, after.me),
        host_busy,
        xact_s: (after.commits - before.commits) as f64 / secs,
        rollback_s: (after.rollbacks - before.rollbacks) as f64 / secs,
        sessions_s: (after.sessions - before.sessions) as f64 / secs,
        db_exec_s: db_exec_ms / 1000.0 / secs,
        goal_changes,
        elections,
        failover: None,
    };

    // The failover check, on one settled group not used before.
    if Instant::now() + Duration::from_secs(5) < budget_end {
        row.failover = Some(failover_step(cx, groups).await?);
    }
    Ok(row)
}

/// Add the nodes `first_new..target` to their groups (making the groups,
/// and their formations in the monitor's database, when new) and start
/// their fake PostgreSQL listeners. Returns the new nodes.
async fn add_nodes(
    cx: &StepContext<'_>,
    heartbeats: &mut JoinSet<()>,
    groups: &mut Vec<Group>,
    first_new: usize,
    npg: usize,
    target: usize,
) -> Result<Vec<Arc<SimNode>>> {
    let (probe, stop_rx) = (cx.probe, cx.stop_rx);
    let mut new_formations = Vec::new();
    let mut new_nodes = Vec::new();
    for index in first_new..target {
        let group_index = if npg == usize::MAX { 0 } else { index / npg };
        if group_index == groups.len() {
            let formation = if npg == usize::MAX {
                "default".to_string()
            } else {
                let name = format!("cap{group_index:05}");
                new_formations.push(name.clone());
                name
            };
            groups.push(Group {
                formation,
                flags: Arc::new(GroupFlags {
                    stream_lost: AtomicBool::new(false),
                    frozen_lsn: AtomicU64::new(0),
                    system_identifier: 7_000_000_000_000_000_000 + group_index as u64,
                }),
                nodes: Vec::new(),
                failed_over: false,
            });
        }
        let group = &mut groups[group_index];
        let node = Arc::new(SimNode {
            index,
            name: format!("node{index:05}"),
            formation: group.formation.clone(),
            rank: group.nodes.len(),
            flags: group.flags.clone(),
            view: Mutex::new(NodeView {
                node_id: 0,
                goal: S::Init,
                goal_since: Instant::now(),
                reported: None,
                lsn: 0,
                last_ok_sent: None,
                last_ok: None,
            }),
            in_flight: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            pause_after_next: AtomicBool::new(false),
        });
        group.nodes.push(node.clone());
        heartbeats.spawn(fake_postgres(node.clone(), stop_rx.clone()));
        new_nodes.push(node);
    }
    if !new_formations.is_empty() {
        probe
            .db
            .execute(
                "INSERT INTO formation (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &[&new_formations],
            )
            .await
            .context("creating the simulated groups' formations")?;
    }
    Ok(new_nodes)
}

/// Register `new_nodes` (bounded in concurrency and in time); each starts
/// heartbeating once registered. Nodes that did not register are kept
/// (their index and fake port stay taken) but never heartbeat. Returns how
/// many registered and in how many seconds.
async fn register_nodes(
    cx: &StepContext<'_>,
    heartbeats: &mut JoinSet<()>,
    new_nodes: &[Arc<SimNode>],
    target: usize,
) -> (usize, f64) {
    let (args, sim, clients, stats, stop_rx) = (cx.args, cx.sim, cx.clients, cx.stats, cx.stop_rx);
    let budget_end = cx.budget_end;
    let register_started = Instant::now();
    let register_deadline = (register_started + REGISTER_PHASE_LIMIT).min(budget_end);
    let permits = Arc::new(Semaphore::new(args.register_concurrency));
    let mut registrations: JoinSet<(Arc<SimNode>, Result<()>)> = JoinSet::new();
    for node in new_nodes {
        let node = node.clone();
        let client = clients[node.index % clients.len()].clone();
        let sim = sim.clone();
        let permits = permits.clone();
        registrations.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = register(&node, client, &sim).await;
            (node, result)
        });
    }
    let mut registered = 0usize;
    let mut register_errors = Vec::new();
    loop {
        let next =
            tokio::time::timeout_at(register_deadline.into(), registrations.join_next()).await;
        match next {
            Ok(None) => break,
            Ok(Some(Ok((node, Ok(()))))) => {
                registered += 1;
                let first = tokio::time::Instant::now() + phase(node.index, sim.interval);
                heartbeats.spawn(heartbeat_loop(
                    node.clone(),
                    clients[node.index % clients.len()].clone(),
                    sim.clone(),
                    stats.clone(),
                    stop_rx.clone(),
                    first,
                ));
            }
            Ok(Some(Ok((_, Err(err))))) => register_errors.push(format!("{err:#}")),
            Ok(Some(Err(join_error))) => register_errors.push(join_error.to_string()),
            Err(_) => {
                registrations.abort_all();
                register_errors.push(format!(
                    "registration still unfinished after {} s",
                    register_started.elapsed().as_secs()
                ));
                break;
            }
        }
    }
    for node in new_nodes {
        if node.view().node_id == 0 {
            node.paused.store(true, Ordering::SeqCst);
        }
    }
    let register_secs = register_started.elapsed().as_secs_f64();
    if !register_errors.is_empty() {
        eprintln!(
            "step {target}: {} registrations failed, e.g. {}",
            register_errors.len(),
            register_errors[0]
        );
    }
    (registered, register_secs)
}

/// What one measurement window saw.
struct Measured {
    before: Snapshot,
    after: Snapshot,
    goal_changes: i64,
    elections: i64,
    db_exec_ms: f64,
    window: WindowStats,
}

/// Measure for `--seconds-per-step`: counters before and after, the
/// database's backends sampled, the heartbeats' latencies and silences;
/// print what the database spent its time on.
async fn measure_window(
    cx: &StepContext<'_>,
    all_nodes: &[Arc<SimNode>],
    target: usize,
) -> Result<Measured> {
    let (args, probe, stats) = (cx.args, cx.probe, cx.stats);
    probe.reset_statements().await?;
    let _ = stats.take();
    let before = probe.snapshot().await?;
    let first_event = probe.last_event_id().await?;
    let window_end = Instant::now() + Duration::from_secs(args.seconds_per_step);
    let mut activity: BTreeMap<String, i64> = BTreeMap::new();
    let mut activity_samples = 0i64;
    while Instant::now() < window_end {
        let sample_end = Instant::now() + SAMPLE_INTERVAL;
        for (what, count) in probe.activity().await? {
            *activity.entry(what).or_default() += count;
        }
        activity_samples += 1;
        tokio::time::sleep_until(sample_end.min(window_end).into()).await;
    }
    let after = probe.snapshot().await?;
    let (goal_changes, elections) = probe.events_after(first_event).await?;
    let statements = probe.top_statements(8).await?;
    let db_exec_ms = probe.statements_total_ms().await?;
    let mut window = stats.take();
    // A node silent at the end of the window counts too.
    let now = Instant::now();
    for node in all_nodes.iter() {
        if node.paused.load(Ordering::SeqCst) {
            continue;
        }
        if let Some(last) = node.view().last_ok {
            window.max_gap = window.max_gap.max(now - last);
        }
    }
    window.latencies_us.sort_unstable();
    let secs = (after.at - before.at).as_secs_f64();
    print_window(
        target,
        secs,
        &statements,
        &activity,
        activity_samples,
        &window.errors,
    );
    Ok(Measured {
        before,
        after,
        goal_changes,
        elections,
        db_exec_ms,
        window,
    })
}

/// Fail over one settled group not used before (or say there is none).
async fn failover_step(cx: &StepContext<'_>, groups: &mut [Group]) -> Result<FailoverResult> {
    let candidate = groups
        .iter_mut()
        .rev()
        .find(|g| !g.failed_over && g.nodes.len() >= 2 && g.settled());
    Ok(match candidate {
        Some(group) => {
            group.failed_over = true;
            failover_check(
                group,
                cx.sim,
                cx.probe,
                cx.args
                    .failover_timeout
                    .min(cx.budget_end.saturating_duration_since(Instant::now())),
            )
            .await?
        }
        None => FailoverResult {
            seen: None,
            decided_db: None,
            election_db: None,
            goal: None,
            note: "no settled group to fail over".to_string(),
        },
    })
}

/// Stop the heartbeats of one group's primary right after one of them; its
/// standbys report their stream gone; wait until the monitor tells one of
/// them to promote (`prepare_promotion` or `fast_forward`). Then the old
/// primary's keeper comes back and the group heals by itself.
pub(crate) async fn failover_check(
    group: &Group,
    sim: &Sim,
    probe: &Probe,
    timeout: Duration,
) -> Result<FailoverResult> {
    let Some(primary) = group
        .nodes
        .iter()
        .find(|n| n.view().goal == S::Primary)
        .cloned()
    else {
        bail!("group {} has no primary", group.formation);
    };
    let standbys: Vec<Arc<SimNode>> = group
        .nodes
        .iter()
        .filter(|n| n.index != primary.index)
        .cloned()
        .collect();
    eprintln!(
        "failover check: {} of {} stops heartbeating …",
        primary.name, group.formation
    );
    let deadline = Instant::now() + timeout;
    primary.pause_after_next.store(true, Ordering::SeqCst);
    while !primary.paused.load(Ordering::SeqCst) || primary.in_flight.load(Ordering::SeqCst) {
        if Instant::now() >= deadline {
            primary.pause_after_next.store(false, Ordering::SeqCst);
            return Ok(FailoverResult {
                seen: None,
                decided_db: None,
                election_db: None,
                goal: None,
                note: format!("{} never got a heartbeat through", primary.name),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let last_sent = primary
        .view()
        .last_ok_sent
        .ok_or_else(|| anyhow!("{} has no successful heartbeat", primary.name))?;
    group.flags.frozen_lsn.store(
        sim.wal_lsn(Instant::now())
            .saturating_sub(STANDBY_LAG_BYTES),
        Ordering::SeqCst,
    );
    group.flags.stream_lost.store(true, Ordering::SeqCst);

    let mut decided: Option<(Instant, S)> = None;
    while Instant::now() < deadline {
        decided = standbys.iter().find_map(|n| {
            let v = n.view();
            matches!(v.goal, S::PreparePromotion | S::FastForward).then_some((v.goal_since, v.goal))
        });
        if decided.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The same on the monitor's own clock, from its event log.
    let primary_id = primary.view().node_id;
    let standby_ids: Vec<i64> = standbys.iter().map(|n| n.view().node_id).collect();
    let db_times = probe
        .db
        .query_one(
            "SELECT (SELECT extract(epoch FROM min(e.at) - n.last_heartbeat)::float8
                       FROM event e WHERE e.node_id = ANY($2)
                        AND e.goal_to IN ('prepare_promotion', 'fast_forward')
                        AND e.at > n.last_heartbeat),
                    (SELECT extract(epoch FROM min(e.at) - n.last_heartbeat)::float8
                       FROM event e WHERE e.node_id = ANY($2)
                        AND e.goal_to = 'report_lsn' AND e.at > n.last_heartbeat)
               FROM node n WHERE n.node_id = $1",
            &[&primary_id, &standby_ids],
        )
        .await
        .context("reading the failover's events")?;

    // Heal: the standbys stream again, the old primary's keeper returns.
    group.flags.stream_lost.store(false, Ordering::SeqCst);
    primary.view().last_ok = None;
    primary.paused.store(false, Ordering::SeqCst);

    Ok(FailoverResult {
        seen: decided.map(|(at, _)| at.saturating_duration_since(last_sent)),
        decided_db: db_times.get(0),
        election_db: db_times.get(1),
        goal: decided.map(|(_, g)| g),
        note: if decided.is_none() {
            format!("no decision within {:.0} s", timeout.as_secs_f64())
        } else {
            String::new()
        },
    })
}
