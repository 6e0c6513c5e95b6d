//! `pgpilot-capacity`: how many keepers one monitor serves on this machine.
//!
//! Starts a throw-away PostgreSQL for the monitor and the real
//! `pgpilot-monitor run` as a child process (through the test harness), then
//! simulates keepers with the real gRPC client. Each simulated node registers
//! once, then heartbeats (`NodeActive`) every `--interval`, following the
//! goal the monitor replies with the way a keeper does: the goal of one reply
//! is the state it reports on its next heartbeat. The node count is stepped
//! up (default 100, 1000, 3000, 10000; nodes are added, never removed).
//!
//! The monitor puts every node of a formation in group 0 and `RegisterNode`
//! does not create formations, so each group of `--nodes-per-group` nodes is
//! its own formation, inserted with SQL into the monitor's database before
//! its nodes register (`--single-formation` instead puts every node in
//! "default": one huge group, today's only alternative).
//!
//! Per step: heartbeats/s achieved against the target, heartbeat latency
//! (p50/p99/max), errors, the longest silence of any node, the CPU of the
//! monitor, of its database and of this load generator (from /proc), the
//! monitor's RSS, the database's transactions/s (`pg_stat_database`), the
//! busiest statements (`pg_stat_statements`) and what the database's
//! backends were doing. Then one simulated primary stops heartbeating, its
//! standbys report their stream gone, and the time until the monitor assigns
//! a standby `prepare_promotion` or `fast_forward` is compared with its bound.
//!
//! Only 127.0.0.1 is used. Each fake node's PostgreSQL port (20000 + n) is a
//! listener of this program that answers a startup packet the way a running
//! server does (AuthenticationOk), so the monitor's health check of a node
//! whose heartbeat runs late passes, as it would in a real fleet; a stopped
//! ("dead") node's listener hangs up instead, so its check fails.
//!
//! Example:
//!   cargo build --release -p pgpilot-monitor -p pgpilot-keeper
//!   cargo run --release -p pgpilot-tests --bin pgpilot-capacity -- --quick

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use pgpilot_proto::pb::monitor_client::MonitorClient;
use pgpilot_proto::pb::{self, NodeActiveRequest, RegisterNodeRequest};
use pgpilot_proto::ReplicationState as S;
use pgpilot_tests::process::{children_of, postmaster_pid};
use pgpilot_tests::{Cluster, ClusterOptions};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tonic::transport::{Channel, Endpoint};

/// The monitor's node_timeout, written into its config (also its default).
const NODE_TIMEOUT: Duration = Duration::from_secs(2);
/// The monitor's default fence_margin (not set by the harness; mirrors
/// `pgpilot_monitor::config::DEFAULT_FENCE_MARGIN`).
const FENCE_MARGIN: Duration = Duration::from_millis(500);
/// The keeper's default fence_timeout and wal_sender_timeout
/// (`pgpilot_keeper::config`); fence_timeout is raised to twice the
/// heartbeat interval when that is longer, as the keeper requires.
const KEEPER_FENCE_TIMEOUT: Duration = Duration::from_millis(1500);
const KEEPER_WAL_SENDER_TIMEOUT: Duration = Duration::from_secs(2);
/// First fake PostgreSQL port; node n uses FAKE_PORT_BASE + n. Below the
/// kernel's ephemeral range (32768…), where nothing listens here.
const FAKE_PORT_BASE: u32 = 20_000;
const MAX_NODES: usize = 12_000;
/// Bytes of WAL a simulated primary writes per millisecond (1 MB/s).
const WAL_BYTES_PER_MS: u64 = 1_000;
const LSN_BASE: u64 = 0x0100_0000;
/// How far behind its primary a simulated standby reports, per standby rank.
const STANDBY_LAG_BYTES: u64 = 4_096;
/// Bound on one RegisterNode call, and attempts per node.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
const REGISTER_ATTEMPTS: u32 = 3;
/// Bound on registering one step's new nodes.
const REGISTER_PHASE_LIMIT: Duration = Duration::from_secs(180);
/// How often the state of the simulated groups and the database is sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// Bound on the final teardown of the heartbeat tasks.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// /proc/<pid>/stat counts CPU time in USER_HZ ticks, 100 per second on Linux.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// A fake node's PostgreSQL as the monitor's health check sees it: the
/// startup packet is answered with AuthenticationOk while the node runs;
/// a paused node hangs up.
async fn fake_postgres(node: Arc<SimNode>, mut stop: watch::Receiver<bool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", node.port() as u16)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "{}: cannot listen on 127.0.0.1:{} ({e}); its health checks will fail",
                node.name,
                node.port()
            );
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|&s| s) => return,
        };
        let Ok((mut conn, _)) = accepted else {
            continue;
        };
        if node.paused.load(Ordering::SeqCst) {
            continue;
        }
        tokio::spawn(async move {
            let answer = async {
                let len = conn.read_i32().await?;
                let mut rest = vec![0u8; (len.clamp(4, 10_000) - 4) as usize];
                conn.read_exact(&mut rest).await?;
                conn.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
        });
    }
}

/// Simulate many keepers against one real monitor and its database, and
/// report what the monitor keeps up with on this machine.
///
/// Example: pgpilot-capacity --steps 100,1000 --seconds-per-step 20
#[derive(Parser)]
#[command(name = "pgpilot-capacity")]
struct Args {
    /// Simulated node counts, one step each (nodes are added, never removed).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,3000,10000")]
    steps: Vec<usize>,
    /// Length of each step's measurement window, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds_per_step: u64,
    /// Heartbeat interval of every simulated keeper (e.g. "1s", "500ms").
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Nodes per group; each group is its own formation.
    #[arg(long, default_value_t = 3)]
    nodes_per_group: usize,
    /// Steps 100,1000 with 10 s each.
    #[arg(long)]
    quick: bool,
    /// Put every node in the formation "default", which the monitor makes
    /// one group: every heartbeat then locks every node's row.
    #[arg(long)]
    single_formation: bool,
    /// gRPC connections shared by all simulated keepers (HTTP/2 multiplexes).
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 16)]
    register_concurrency: usize,
    /// How long a step waits for every group to settle (one primary, the
    /// others secondary) before it measures anyway.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    settle_timeout: Duration,
    /// How long the failover check waits for the monitor's decision.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    failover_timeout: Duration,
    /// The whole run stops starting new phases after this long.
    #[arg(long, default_value = "8m", value_parser = humantime::parse_duration)]
    time_limit: Duration,
}

// ---- simulated keepers ------------------------------------------------------

/// Settings every simulated keeper shares.
struct Sim {
    interval: Duration,
    rpc_timeout: Duration,
    timings: pb::KeeperTimings,
    started: Instant,
}

impl Sim {
    fn new(interval: Duration) -> Sim {
        let fence_timeout = KEEPER_FENCE_TIMEOUT.max(interval * 2);
        Sim {
            interval,
            // What the keeper uses (keeper/src/agent.rs `rpc_timeout`).
            rpc_timeout: interval
                .max(Duration::from_millis(500))
                .min(fence_timeout / 2),
            timings: pb::KeeperTimings {
                heartbeat_interval_ms: interval.as_millis() as u64,
                fence_timeout_ms: fence_timeout.as_millis() as u64,
                wal_sender_timeout_ms: KEEPER_WAL_SENDER_TIMEOUT.as_millis() as u64,
            },
            started: Instant::now(),
        }
    }

    fn fence_timeout(&self) -> Duration {
        Duration::from_millis(self.timings.fence_timeout_ms)
    }

    /// The WAL position every simulated primary is at now.
    fn wal_lsn(&self, at: Instant) -> u64 {
        LSN_BASE + at.duration_since(self.started).as_millis() as u64 * WAL_BYTES_PER_MS
    }

    /// The latest moment the monitor's own rules let it decide the failover
    /// check's election, counted from the primary's last heartbeat: the fence
    /// deadline (the later of its fence timeout and the standbys' stream loss
    /// — reported at most one interval later — plus wal_sender_timeout, then
    /// one keeper loop and the fence margin; the election itself started after
    /// node_timeout and one round trip of the standbys), plus one standby
    /// heartbeat to hear it.
    fn failover_bound(&self) -> Duration {
        let wal_sender_timeout = Duration::from_millis(self.timings.wal_sender_timeout_ms);
        let fence_deadline = self.fence_timeout().max(self.interval + wal_sender_timeout)
            + self.interval
            + FENCE_MARGIN;
        fence_deadline.max(NODE_TIMEOUT + self.interval * 2) + self.interval
    }
}

/// What a group's nodes share: whether their primary's stream is gone.
struct GroupFlags {
    stream_lost: AtomicBool,
    frozen_lsn: AtomicU64,
    system_identifier: u64,
}

/// One simulated node as its heartbeat task and the controller see it.
#[derive(Debug, Clone)]
struct NodeView {
    node_id: i64,
    /// The goal of the last reply: the state reported on the next heartbeat.
    goal: S,
    /// When the current goal was first received.
    goal_since: Instant,
    /// What the last successful heartbeat reported.
    reported: Option<S>,
    lsn: u64,
    /// Send and reply time of the last successful heartbeat.
    last_ok_sent: Option<Instant>,
    last_ok: Option<Instant>,
}

struct SimNode {
    index: usize,
    name: String,
    formation: String,
    /// Rank in its group (0 registers first).
    rank: usize,
    flags: Arc<GroupFlags>,
    view: Mutex<NodeView>,
    /// A heartbeat is on the wire.
    in_flight: AtomicBool,
    /// The keeper is "dead": no heartbeats.
    paused: AtomicBool,
    /// Pause right after the next successful heartbeat.
    pause_after_next: AtomicBool,
}

impl SimNode {
    fn view(&self) -> MutexGuard<'_, NodeView> {
        lock(&self.view)
    }

    fn port(&self) -> u32 {
        FAKE_PORT_BASE + self.index as u32
    }

    /// The next heartbeat: report the last goal as reached.
    fn next_request(&self, sim: &Sim, now: Instant) -> NodeActiveRequest {
        let mut v = self.view();
        let reported = v.goal;
        let lsn = if reported.is_writable_primary() {
            sim.wal_lsn(now)
        } else if matches!(reported, S::Init | S::WaitStandby) {
            0
        } else if self.flags.stream_lost.load(Ordering::SeqCst) {
            self.flags.frozen_lsn.load(Ordering::SeqCst)
        } else {
            sim.wal_lsn(now)
                .saturating_sub(STANDBY_LAG_BYTES * self.rank.max(1) as u64)
        };
        v.lsn = v.lsn.max(lsn);
        let pg_running = !matches!(
            reported,
            S::Init | S::WaitStandby | S::Demoted | S::DemoteTimeout | S::Maintenance | S::Dropped
        );
        NodeActiveRequest {
            node_id: v.node_id,
            reported_state: reported.to_wire(),
            pg_running,
            lsn: v.lsn,
            timeline: 1,
            wal_receiver_streaming: reported.is_following()
                && !self.flags.stream_lost.load(Ordering::SeqCst),
            system_identifier: if pg_running {
                self.flags.system_identifier
            } else {
                0
            },
            timings: Some(sim.timings),
            streaming_standbys: Vec::new(),
            // Not reported: the monitor takes the next heartbeat instead.
            synchronous_standby_names: None,
            pg_start_failures: 0,
        }
    }
}

/// A group of simulated nodes: one formation (or all of "default").
struct Group {
    formation: String,
    flags: Arc<GroupFlags>,
    nodes: Vec<Arc<SimNode>>,
    failed_over: bool,
}

impl Group {
    /// One node reports and is assigned `primary`, every other `secondary`
    /// (a group of one node: `single`). Groups with a node that never
    /// registered count as settled when the others are.
    fn settled(&self) -> bool {
        let nodes: Vec<&Arc<SimNode>> = self
            .nodes
            .iter()
            .filter(|n| n.view().node_id != 0)
            .collect();
        if let [only] = nodes.as_slice() {
            let v = only.view();
            return v.reported == Some(S::Single) && v.goal == S::Single;
        }
        let mut primaries = 0;
        for node in nodes {
            let v = node.view();
            match (v.reported, v.goal) {
                (Some(S::Primary), S::Primary) => primaries += 1,
                (Some(S::Secondary), S::Secondary) => {}
                _ => return false,
            }
        }
        primaries == 1
    }
}

/// Heartbeat results of the current measurement window.
#[derive(Default)]
struct Stats {
    latencies_us: Mutex<Vec<u32>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Longest time between two successful heartbeats of one node.
    max_gap: Mutex<Duration>,
}

struct WindowStats {
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
    max_gap: Duration,
}

impl Stats {
    fn ok(&self, latency: Duration, gap: Option<Duration>) {
        lock(&self.latencies_us).push(latency.as_micros().min(u32::MAX as u128) as u32);
        if let Some(gap) = gap {
            let mut max = lock(&self.max_gap);
            *max = (*max).max(gap);
        }
    }

    fn error(&self, kind: String) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    fn take(&self) -> WindowStats {
        WindowStats {
            latencies_us: std::mem::take(&mut *lock(&self.latencies_us)),
            errors: std::mem::take(&mut *lock(&self.errors)),
            max_gap: std::mem::take(&mut *lock(&self.max_gap)),
        }
    }
}

fn status_kind(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(80).collect();
    format!("{:?}: {message}", status.code())
}

/// One simulated keeper: heartbeat every interval (first at `first`) until
/// `stop` turns true.
async fn heartbeat_loop(
    node: Arc<SimNode>,
    mut client: MonitorClient<Channel>,
    sim: Arc<Sim>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    first: tokio::time::Instant,
) {
    let mut ticker = tokio::time::interval_at(first, sim.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|&s| s) => return,
        }
        if node.paused.load(Ordering::SeqCst) {
            continue;
        }
        let sent = Instant::now();
        let request = node.next_request(&sim, sent);
        let reported = S::from_wire(request.reported_state).unwrap_or(S::Init);
        node.in_flight.store(true, Ordering::SeqCst);
        let call = tokio::time::timeout(sim.rpc_timeout, client.node_active(request));
        let result = tokio::select! {
            r = call => r,
            _ = stop.wait_for(|&s| s) => return,
        };
        let now = Instant::now();
        match result {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                let goal = S::from_wire(reply.goal_state).unwrap_or(S::Init);
                let gap = {
                    let mut v = node.view();
                    let gap = v.last_ok.map(|t| now - t);
                    if goal != v.goal {
                        v.goal_since = now;
                    }
                    v.goal = goal;
                    v.reported = Some(reported);
                    v.last_ok_sent = Some(sent);
                    v.last_ok = Some(now);
                    gap
                };
                stats.ok(now - sent, gap);
                if node.pause_after_next.swap(false, Ordering::SeqCst) {
                    node.paused.store(true, Ordering::SeqCst);
                }
            }
            Ok(Err(status)) => stats.error(status_kind(&status)),
            Err(_) => stats.error(format!(
                "no reply within the keeper's RPC timeout of {} ms",
                sim.rpc_timeout.as_millis()
            )),
        }
        node.in_flight.store(false, Ordering::SeqCst);
    }
}

/// Register one node (bounded attempts); store its id and first goal.
async fn register(node: &SimNode, mut client: MonitorClient<Channel>, sim: &Sim) -> Result<()> {
    let request = RegisterNodeRequest {
        formation: node.formation.clone(),
        name: node.name.clone(),
        host: "127.0.0.1".to_string(),
        port: node.port(),
        system_identifier: 0,
        candidate_priority: 50,
        replication_quorum: true,
        timings: Some(sim.timings),
    };
    let mut last_error = String::new();
    for _attempt in 0..REGISTER_ATTEMPTS {
        match tokio::time::timeout(REGISTER_TIMEOUT, client.register_node(request.clone())).await {
            Ok(Ok(reply)) => {
                let reply = reply.into_inner();
                let mut v = node.view();
                v.node_id = reply.node_id;
                v.goal = S::from_wire(reply.goal_state).unwrap_or(S::Init);
                v.goal_since = Instant::now();
                return Ok(());
            }
            Ok(Err(status)) => last_error = status_kind(&status),
            Err(_) => last_error = format!("no reply within {} s", REGISTER_TIMEOUT.as_secs()),
        }
    }
    bail!("registering {} failed: {last_error}", node.name)
}

/// Spread first heartbeats evenly over the interval, for any node count
/// (golden-ratio sequence).
fn phase(index: usize, interval: Duration) -> Duration {
    let frac = (index as f64 * 0.618_033_988_749_895).fract();
    interval.mul_f64(frac)
}

// ---- measurements from /proc and the database ----------------------------------

/// utime + stime of a process, in ticks; with `children` also the CPU time
/// of its reaped children (cutime + cstime).
fn cpu_ticks(pid: i32, children: bool) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // Fields after the state: ppid(0) … utime(10) stime(11) cutime(12) cstime(13).
    let own = fields.get(10)? + fields.get(11)?;
    Some(if children {
        own + fields.get(12)? + fields.get(13)?
    } else {
        own
    })
}

/// CPU ticks of a postmaster and all its live children, plus the reaped ones.
fn postgres_ticks(postmaster: i32) -> u64 {
    cpu_ticks(postmaster, true).unwrap_or(0)
        + children_of(postmaster)
            .into_iter()
            .filter_map(|pid| cpu_ticks(pid, false))
            .sum::<u64>()
}

fn rss_mb(pid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// (busy, total) jiffies of the whole machine from /proc/stat.
fn host_jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Counters read at the start and the end of a window.
struct Snapshot {
    at: Instant,
    monitor: u64,
    db: u64,
    me: u64,
    host: (u64, u64),
    commits: i64,
    rollbacks: i64,
    /// Connections ever opened to the monitor's database.
    sessions: i64,
}

struct Probe {
    db: tokio_postgres::Client,
    monitor_pid: i32,
    postmaster: i32,
}

impl Probe {
    async fn snapshot(&self) -> Result<Snapshot> {
        let row = self
            .db
            .query_one(
                "SELECT xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname = 'pgpilot'",
                &[],
            )
            .await
            .context("reading pg_stat_database")?;
        Ok(Snapshot {
            at: Instant::now(),
            monitor: cpu_ticks(self.monitor_pid, true).unwrap_or(0),
            db: postgres_ticks(self.postmaster),
            me: cpu_ticks(std::process::id() as i32, false).unwrap_or(0),
            host: host_jiffies(),
            commits: row.get(0),
            rollbacks: row.get(1),
            sessions: row.get(2),
        })
    }

    /// What the monitor database's backends do right now: active ones by
    /// wait event ("CPU" when none), and those idle inside a transaction
    /// (waiting for the monitor's next statement).
    async fn activity(&self) -> Result<Vec<(String, i64)>> {
        let rows = self
            .db
            .query(
                "SELECT CASE WHEN state = 'active'
                             THEN coalesce(wait_event_type || ':' || wait_event, 'CPU')
                             ELSE state END AS what,
                        count(*)
                   FROM pg_stat_activity
                  WHERE datname = 'pgpilot' AND pid <> pg_backend_pid()
                    AND state IN ('active', 'idle in transaction')
                  GROUP BY 1",
                &[],
            )
            .await
            .context("reading pg_stat_activity")?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The newest event's id (0 when none).
    async fn last_event_id(&self) -> Result<i64> {
        let row = self
            .db
            .query_one("SELECT coalesce(max(event_id), 0) FROM event", &[])
            .await
            .context("reading the event log")?;
        Ok(row.get(0))
    }

    /// Goal changes after event `after`, and how many of them started an
    /// election (`report_lsn`).
    async fn events_after(&self, after: i64) -> Result<(i64, i64)> {
        let row = self
            .db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE goal_to = 'report_lsn')
                   FROM event WHERE event_id > $1",
                &[&after],
            )
            .await
            .context("reading the event log")?;
        Ok((row.get(0), row.get(1)))
    }

    async fn reset_statements(&self) -> Result<()> {
        self.db
            .execute("SELECT pg_stat_statements_reset()", &[])
            .await
            .context("resetting pg_stat_statements")?;
        Ok(())
    }

    /// The statements the database spent most time on since the reset.
    async fn top_statements(&self, limit: i64) -> Result<Vec<Statement>> {
        let rows = self
            .db
            .query(
                "SELECT calls, total_exec_time, mean_exec_time,
                        left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
                   FROM pg_stat_statements
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'pgpilot')
                    AND query NOT LIKE '%pg_stat%'
                  ORDER BY total_exec_time DESC
                  LIMIT $1",
                &[&limit],
            )
            .await
            .context("reading pg_stat_statements")?;
        Ok(rows
            .iter()
            .map(|r| Statement {
                calls: r.get(0),
                total_ms: r.get(1),
                mean_ms: r.get(2),
                query: r.get(3),
            })
            .collect())
    }

    async fn statements_total_ms(&self) -> Result<f64> {
        let row = self
            .db
            .query_one(
                "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'pgpilot')
                    AND query NOT LIKE '%pg_stat%'",
                &[],
            )
            .await
            .context("reading pg_stat_statements")?;
        Ok(row.get(0))
    }
}

struct Statement {
    calls: i64,
    total_ms: f64,
    mean_ms: f64,
    query: String,
}

// ---- one step's results ---------------------------------------------------------

struct FailoverResult {
    /// From the primary's last heartbeat (sent) until a standby's reply said
    /// prepare_promotion / fast_forward.
    seen: Option<Duration>,
    /// The same on the monitor's clock: event time minus the primary's
    /// last_heartbeat, and when the election (report_lsn) began.
    decided_db: Option<f64>,
    election_db: Option<f64>,
    goal: Option<S>,
    note: String,
}

struct Row {
    nodes: usize,
    groups: usize,
    registered_per_s: f64,
    settled: usize,
    settle: Option<Duration>,
    target_hb_s: f64,
    achieved_hb_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    max_gap: Duration,
    monitor_cpu: f64,
    monitor_rss: f64,
    db_cpu: f64,
    me_cpu: f64,
    host_busy: f64,
    xact_s: f64,
    rollback_s: f64,
    /// New connections per second to the monitor's database.
    sessions_s: f64,
    db_exec_s: f64,
    /// Goal changes, and elections started, during the window (no primary
    /// was stopped then: every election is spurious).
    goal_changes: i64,
    elections: i64,
    failover: Option<FailoverResult>,
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

// ---- the run ----------------------------------------------------------------------

fn main() -> Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.steps = vec![100, 1000];
        args.seconds_per_step = 10;
    }
    if args.steps.is_empty() || args.steps.windows(2).any(|w| w[0] >= w[1]) {
        bail!("--steps must be increasing node counts, e.g. 100,1000");
    }
    if args.steps.iter().any(|&n| n > MAX_NODES) {
        bail!("at most {MAX_NODES} simulated nodes (their fake ports stay below 32768)");
    }
    if args.nodes_per_group < 2 && !args.single_formation {
        bail!("--nodes-per-group must be at least 2 (a primary and a standby)");
    }
    if args.channels == 0 || args.register_concurrency == 0 || args.seconds_per_step == 0 {
        bail!("--channels, --register-concurrency and --seconds-per-step must be at least 1");
    }
    if args.interval < Duration::from_millis(50) {
        bail!("--interval must be at least 50ms, like a keeper's heartbeat_interval");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let run_started = Instant::now();
    let budget_end = run_started + args.time_limit;
    let sim = Arc::new(Sim::new(args.interval));

    eprintln!("starting the monitor's PostgreSQL and the monitor …");
    let cluster = Cluster::start(ClusterOptions {
        nodes: 0,
        first_node_alone: false,
        node_timeout: Some(format!("{}ms", NODE_TIMEOUT.as_millis())),
        // Durable like a production monitor database (the test harness
        // turns fsync off for speed; a capacity figure must not).
        monitor_db_settings: vec![
            "fsync=on".to_string(),
            "full_page_writes=on".to_string(),
            "shared_preload_libraries=pg_stat_statements".to_string(),
            "pg_stat_statements.max=1000".to_string(),
        ],
        ..ClusterOptions::default()
    })
    .await?;
    let result = drive(&args, &cluster, sim, budget_end).await;
    if let Err(err) = &result {
        eprintln!("capacity run failed: {err:#}\n\n{}", cluster.log_tails());
    }
    if let Err(err) = cluster.shutdown().await {
        eprintln!("shutting the monitor down: {err:#}");
    }
    eprintln!(
        "total run time {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
    result
}

async fn drive(args: &Args, cluster: &Cluster, sim: Arc<Sim>, budget_end: Instant) -> Result<()> {
    let monitor_pid = cluster
        .monitor_pid()
        .ok_or_else(|| anyhow!("the monitor is not running"))? as i32;
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
        monitor_pid,
        postmaster,
    };

    let clients: Vec<MonitorClient<Channel>> = (0..args.channels)
        .map(|_| {
            Ok(MonitorClient::new(
                Endpoint::from_shared(cluster.monitor_url().to_string())?
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
        "pgpilot-capacity: monitor pid {monitor_pid}, its PostgreSQL pid {postmaster}, {} CPUs; \
         heartbeat every {} ms per node, RPC timeout {} ms, {} gRPC connections; {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sim.interval.as_millis(),
        sim.rpc_timeout.as_millis(),
        args.channels,
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
        let step = run_step(
            args,
            &sim,
            &probe,
            &clients,
            &stats,
            &stop_rx,
            &mut heartbeats,
            &mut groups,
            &mut all_nodes,
            npg,
            target,
            budget_end,
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

#[allow(clippy::too_many_arguments)]
async fn run_step(
    args: &Args,
    sim: &Arc<Sim>,
    probe: &Probe,
    clients: &[MonitorClient<Channel>],
    stats: &Arc<Stats>,
    stop_rx: &watch::Receiver<bool>,
    heartbeats: &mut JoinSet<()>,
    groups: &mut Vec<Group>,
    all_nodes: &mut Vec<Arc<SimNode>>,
    npg: usize,
    target: usize,
    budget_end: Instant,
) -> Result<Row> {
    // New nodes and, when needed, their groups and formations.
    let first_new = all_nodes.len();
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

    // Register them; each starts heartbeating once registered.
    eprintln!("step {target}: registering {} new nodes …", new_nodes.len());
    let register_started = Instant::now();
    let register_deadline = (register_started + REGISTER_PHASE_LIMIT).min(budget_end);
    let permits = Arc::new(Semaphore::new(args.register_concurrency));
    let mut registrations: JoinSet<(Arc<SimNode>, Result<()>)> = JoinSet::new();
    for node in &new_nodes {
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
    // Nodes that did not register are kept (their index and fake port stay
    // taken) but never heartbeat.
    for node in &new_nodes {
        if node.view().node_id == 0 {
            node.paused.store(true, Ordering::SeqCst);
        }
    }
    all_nodes.extend(new_nodes.iter().cloned());
    let register_secs = register_started.elapsed().as_secs_f64();
    if !register_errors.is_empty() {
        eprintln!(
            "step {target}: {} registrations failed, e.g. {}",
            register_errors.len(),
            register_errors[0]
        );
    }
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

    // The measurement window.
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
    let cpu = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / CLOCK_TICKS_PER_SEC / secs * 100.0;
    let host_busy = {
        let busy = after.host.0.saturating_sub(before.host.0) as f64;
        let total = after.host.1.saturating_sub(before.host.1).max(1) as f64;
        busy / total * 100.0 * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
    };
    let errors: u64 = window.errors.values().sum();

    println!();
    println!(
        "step {target}: what the database spent its time on ({secs:.0} s window, pg_stat_statements, execution time only):"
    );
    println!(
        "  {:>9} {:>10} {:>9}  statement",
        "calls", "total ms", "mean ms"
    );
    for s in &statements {
        println!(
            "  {:>9} {:>10.0} {:>9.3}  {}",
            s.calls, s.total_ms, s.mean_ms, s.query
        );
    }
    let mut line = String::new();
    for (what, count) in &activity {
        let _ = write!(
            line,
            "{what} {:.2}, ",
            *count as f64 / activity_samples.max(1) as f64
        );
    }
    println!(
        "  monitor database backends on average (sampled every {} ms): {}",
        SAMPLE_INTERVAL.as_millis(),
        if line.is_empty() {
            "none busy".to_string()
        } else {
            line.trim_end_matches(", ").to_string()
        }
    );
    if !window.errors.is_empty() {
        println!("  heartbeat errors:");
        for (kind, count) in &window.errors {
            println!("    {count:>7}  {kind}");
        }
    }

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
        monitor_rss: rss_mb(probe.monitor_pid).unwrap_or(f64::NAN),
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
        let candidate = groups
            .iter_mut()
            .rev()
            .find(|g| !g.failed_over && g.nodes.len() >= 2 && g.settled());
        row.failover = Some(match candidate {
            Some(group) => {
                group.failed_over = true;
                failover_check(
                    group,
                    sim,
                    probe,
                    args.failover_timeout
                        .min(budget_end.saturating_duration_since(Instant::now())),
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
        });
    }
    Ok(row)
}

/// Stop the heartbeats of one group's primary right after one of them; its
/// standbys report their stream gone; wait until the monitor tells one of
/// them to promote (`prepare_promotion` or `fast_forward`). Then the old
/// primary's keeper comes back and the group heals by itself.
async fn failover_check(
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

// ---- output -------------------------------------------------------------------------

fn fmt_opt_secs(d: Option<f64>) -> String {
    d.map_or_else(|| "-".to_string(), |s| format!("{s:.2}"))
}

fn failover_cell(f: &Option<FailoverResult>, sim: &Sim) -> (String, String) {
    let bound = sim.failover_bound().as_secs_f64();
    match f {
        None => ("-".to_string(), "-".to_string()),
        Some(r) => match r.seen {
            Some(seen) => {
                let seen = seen.as_secs_f64();
                (
                    format!(
                        "{seen:.2} (db {} / {}) ≤ {bound:.1}",
                        fmt_opt_secs(r.election_db),
                        fmt_opt_secs(r.decided_db)
                    ),
                    if seen <= bound { "yes" } else { "LATE" }.to_string(),
                )
            }
            None => (format!("{} ≤ {bound:.1}", r.note), "NO".to_string()),
        },
    }
}

fn print_row_line(row: &Row, sim: &Sim) {
    let (failover, in_time) = failover_cell(&row.failover, sim);
    println!(
        "step {} nodes: {:.0}/{:.0} heartbeats/s, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms, \
         {} errors, longest silence {:.2} s, monitor CPU {:.0}% RSS {:.0} MB, database CPU {:.0}%, \
         load generator CPU {:.0}%, {:.0} xact/s, {} goal changes and {} elections while no primary was stopped; \
         failover decided {failover} s: {in_time}{}",
        row.nodes,
        row.achieved_hb_s,
        row.target_hb_s,
        row.p50_ms,
        row.p99_ms,
        row.max_ms,
        row.errors,
        row.max_gap.as_secs_f64(),
        row.monitor_cpu,
        row.monitor_rss,
        row.db_cpu,
        row.me_cpu,
        row.xact_s,
        row.goal_changes,
        row.elections,
        row.failover
            .as_ref()
            .and_then(|f| f.goal)
            .map(|g| format!(" ({g})"))
            .unwrap_or_default()
    );
    println!();
}

fn print_table(rows: &[Row], sim: &Sim, args: &Args) {
    println!();
    println!(
        "pgpilot-capacity: one monitor (node_timeout {} ms) and its PostgreSQL on this {}-CPU machine; \
         simulated keepers heartbeat every {} ms; {} s per step; {}",
        NODE_TIMEOUT.as_millis(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sim.interval.as_millis(),
        args.seconds_per_step,
        if args.single_formation {
            "all nodes in one formation (one group)".to_string()
        } else {
            format!("{} nodes per group, one formation each", args.nodes_per_group)
        }
    );
    println!(
        "{:>6} {:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>8} {:>7} {:>6} {:>6}  {:<34} {:>7}",
        "nodes",
        "groups",
        "reg/s",
        "settled",
        "target",
        "hb/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "silence",
        "mon%",
        "monMB",
        "db%",
        "gen%",
        "host%",
        "xact/s",
        "dbexec",
        "goals",
        "elect",
        "failover decided s (db: elect/decide)",
        "in time"
    );
    for r in rows {
        let (failover, in_time) = failover_cell(&r.failover, sim);
        println!(
            "{:>6} {:>6} {:>7.0} {:>9} {:>8.0} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>8.2} {:>6.0} {:>6.0} {:>6.0} {:>6.0} {:>6.0} {:>8.0} {:>7.2} {:>6} {:>6}  {:<34} {:>7}",
            r.nodes,
            r.groups,
            r.registered_per_s,
            match r.settle {
                Some(d) => format!("{:.0}s", d.as_secs_f64()),
                None => format!("{}/{}", r.settled, r.groups),
            },
            r.target_hb_s,
            r.achieved_hb_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.max_gap.as_secs_f64(),
            r.monitor_cpu,
            r.monitor_rss,
            r.db_cpu,
            r.me_cpu,
            r.host_busy,
            r.xact_s,
            r.db_exec_s,
            r.goal_changes,
            r.elections,
            failover,
            in_time
        );
        if r.rollback_s > 0.5 || r.sessions_s > 0.5 {
            println!(
                "{:>6} ({:.1} rollbacks/s, {:.1} new database connections/s)",
                "", r.rollback_s, r.sessions_s
            );
        }
    }
    println!(
        "columns: reg/s = registrations per second; settled = time until every group had one primary and only \
         secondaries (or settled/total at the timeout); target/hb/s = heartbeats per second wanted/answered; \
         latency of NodeActive as the client sees it; errors = failed or timed-out heartbeats; silence = longest \
         time any node went without an answered heartbeat (node_timeout is {} s); mon%/db%/gen% = CPU of the \
         monitor, its PostgreSQL (all backends) and this load generator, 100 = one core; host% = the whole machine \
         ({} = all cores); xact/s = commits/s of the monitor's database; dbexec = seconds of statement execution \
         per second (pg_stat_statements); goals/elect = goal changes and elections \
         (report_lsn) in the window, when no primary was stopped; failover = from the primary's last heartbeat until a standby's reply \
         said prepare_promotion/fast_forward (db: the monitor's own clock, election start / decision), against \
         the bound {:.1} s = fence deadline (max(fence_timeout {} ms, interval + wal_sender_timeout {} ms) + \
         interval + fence_margin {} ms) + one heartbeat.",
        NODE_TIMEOUT.as_secs(),
        100 * std::thread::available_parallelism().map_or(1, |n| n.get()),
        sim.failover_bound().as_secs_f64(),
        sim.timings.fence_timeout_ms,
        sim.timings.wal_sender_timeout_ms,
        FENCE_MARGIN.as_millis()
    );
}

/// Lock a mutex, also after a panic poisoned it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
