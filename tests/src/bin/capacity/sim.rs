//! The simulated keepers: each registers once, then heartbeats every interval
//! and follows the goal the monitor replies with, while a fake PostgreSQL
//! listener answers the monitor's health checks of its node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use pgpilot_proto::pb::monitor_client::MonitorClient;
use pgpilot_proto::pb::{self, NodeActiveRequest, RegisterNodeRequest};
use pgpilot_proto::ReplicationState as S;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

use crate::{
    lock, FAKE_PORT_BASE, FENCE_MARGIN, KEEPER_FENCE_TIMEOUT, KEEPER_WAL_SENDER_TIMEOUT, LSN_BASE,
    NODE_TIMEOUT, REGISTER_ATTEMPTS, REGISTER_TIMEOUT, STANDBY_LAG_BYTES, WAL_BYTES_PER_MS,
};

/// A fake node's PostgreSQL as the monitor's health check sees it: the
/// startup packet is answered with AuthenticationOk while the node runs;
/// a paused node hangs up.
pub(crate) async fn fake_postgres(node: Arc<SimNode>, mut stop: watch::Receiver<bool>) {
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

/// Settings every simulated keeper shares.
pub(crate) struct Sim {
    pub(crate) interval: Duration,
    /// A `NodeActive` call per heartbeat instead of a stream per keeper.
    pub(crate) unary: bool,
    pub(crate) rpc_timeout: Duration,
    pub(crate) timings: pb::KeeperTimings,
    pub(crate) started: Instant,
}

impl Sim {
    pub(crate) fn new(interval: Duration, unary: bool) -> Sim {
        let fence_timeout = KEEPER_FENCE_TIMEOUT.max(interval * 2);
        Sim {
            interval,
            unary,
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

    pub(crate) fn fence_timeout(&self) -> Duration {
        Duration::from_millis(self.timings.fence_timeout_ms)
    }

    /// The WAL position every simulated primary is at now.
    pub(crate) fn wal_lsn(&self, at: Instant) -> u64 {
        LSN_BASE + at.duration_since(self.started).as_millis() as u64 * WAL_BYTES_PER_MS
    }

    /// The latest moment the monitor's own rules let it decide the failover
    /// check's election, counted from the primary's last heartbeat: the fence
    /// deadline (the later of its fence timeout and the standbys' stream loss
    /// — reported at most one interval later — plus wal_sender_timeout, then
    /// one keeper loop and the fence margin; the election itself started after
    /// node_timeout and one round trip of the standbys), plus one standby
    /// heartbeat to hear it.
    pub(crate) fn failover_bound(&self) -> Duration {
        let wal_sender_timeout = Duration::from_millis(self.timings.wal_sender_timeout_ms);
        let fence_deadline = self.fence_timeout().max(self.interval + wal_sender_timeout)
            + self.interval
            + FENCE_MARGIN;
        fence_deadline.max(NODE_TIMEOUT + self.interval * 2) + self.interval
    }
}

/// What a group's nodes share: whether their primary's stream is gone.
pub(crate) struct GroupFlags {
    pub(crate) stream_lost: AtomicBool,
    pub(crate) frozen_lsn: AtomicU64,
    pub(crate) system_identifier: u64,
}

/// One simulated node as its heartbeat task and the controller see it.
#[derive(Debug, Clone)]
pub(crate) struct NodeView {
    pub(crate) node_id: i64,
    /// The goal of the last reply: the state reported on the next heartbeat.
    pub(crate) goal: S,
    /// When the current goal was first received.
    pub(crate) goal_since: Instant,
    /// What the last successful heartbeat reported.
    pub(crate) reported: Option<S>,
    pub(crate) lsn: u64,
    /// Send and reply time of the last successful heartbeat.
    pub(crate) last_ok_sent: Option<Instant>,
    pub(crate) last_ok: Option<Instant>,
}

pub(crate) struct SimNode {
    pub(crate) index: usize,
    pub(crate) name: String,
    pub(crate) formation: String,
    /// Rank in its group (0 registers first).
    pub(crate) rank: usize,
    pub(crate) flags: Arc<GroupFlags>,
    pub(crate) view: Mutex<NodeView>,
    /// A heartbeat is on the wire.
    pub(crate) in_flight: AtomicBool,
    /// The keeper is "dead": no heartbeats.
    pub(crate) paused: AtomicBool,
    /// Pause right after the next successful heartbeat.
    pub(crate) pause_after_next: AtomicBool,
}

impl SimNode {
    pub(crate) fn view(&self) -> MutexGuard<'_, NodeView> {
        lock(&self.view)
    }

    pub(crate) fn port(&self) -> u32 {
        FAKE_PORT_BASE + self.index as u32
    }

    /// The next heartbeat: report the last goal as reached.
    pub(crate) fn next_request(&self, sim: &Sim, now: Instant) -> NodeActiveRequest {
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
            acting_toward: None,
            fence_required_held: None,
            work: None,
            // Ordered as a real keeper's heartbeats are.
            keeper_boot_id: "0123456789abcdef0123456789abcdef".into(),
            sent_at_ns: sent_at_ns(now),
            notes: Vec::new(),
            clone_from: String::new(),
            stopping: false,
            // Simulated keepers heartbeat on their timers only: the
            // capacity measured is the monitor's, without wake-ups.
            wakes: false,
            restart_done: 0,
            pending_restart: Vec::new(),
            parameters_applied: 0,
            slots: Vec::new(),
            slots_reported: false,
            promotion_refused: false,
        }
    }
}

/// A group of simulated nodes: one formation (or all of "default").
pub(crate) struct Group {
    pub(crate) formation: String,
    pub(crate) flags: Arc<GroupFlags>,
    pub(crate) nodes: Vec<Arc<SimNode>>,
    pub(crate) failed_over: bool,
}

impl Group {
    /// One node reports and is assigned `primary`, every other `secondary`
    /// (a group of one node: `single`). Groups with a node that never
    /// registered count as settled when the others are.
    pub(crate) fn settled(&self) -> bool {
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
pub(crate) struct Stats {
    pub(crate) latencies_us: Mutex<Vec<u32>>,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
    /// Longest time between two successful heartbeats of one node.
    pub(crate) max_gap: Mutex<Duration>,
}

pub(crate) struct WindowStats {
    pub(crate) latencies_us: Vec<u32>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) max_gap: Duration,
}

impl Stats {
    pub(crate) fn ok(&self, latency: Duration, gap: Option<Duration>) {
        lock(&self.latencies_us).push(latency.as_micros().min(u32::MAX as u128) as u32);
        if let Some(gap) = gap {
            let mut max = lock(&self.max_gap);
            *max = (*max).max(gap);
        }
    }

    pub(crate) fn error(&self, kind: String) {
        *lock(&self.errors).entry(kind).or_default() += 1;
    }

    pub(crate) fn take(&self) -> WindowStats {
        WindowStats {
            latencies_us: std::mem::take(&mut *lock(&self.latencies_us)),
            errors: std::mem::take(&mut *lock(&self.errors)),
            max_gap: std::mem::take(&mut *lock(&self.max_gap)),
        }
    }
}

pub(crate) fn status_kind(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(80).collect();
    format!("{:?}: {message}", status.code())
}

/// One simulated keeper: heartbeat every interval (first at `first`) until
/// `stop` turns true.
pub(crate) async fn heartbeat_loop(
    node: Arc<SimNode>,
    client: MonitorClient<Channel>,
    sim: Arc<Sim>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    first: tokio::time::Instant,
) {
    let mut beater = Beater {
        client,
        stream: None,
        unary: sim.unary,
    };
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
        let call = tokio::time::timeout(sim.rpc_timeout, beater.beat(request));
        let result = tokio::select! {
            r = call => r,
            _ = stop.wait_for(|&s| s) => return,
        };
        if !matches!(result, Ok(Ok(_))) {
            // Failed or timed out in the middle: never reused.
            beater.stream = None;
        }
        let now = Instant::now();
        match result {
            Ok(Ok(reply)) => {
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

/// How a simulated keeper heartbeats: over one `Heartbeats` stream, as
/// the keeper does, or (`--unary`) with a `NodeActive` call per beat.
struct Beater {
    client: MonitorClient<Channel>,
    stream: Option<(
        mpsc::Sender<NodeActiveRequest>,
        tonic::Streaming<pb::NodeActiveReply>,
    )>,
    unary: bool,
}

impl Beater {
    async fn beat(
        &mut self,
        request: NodeActiveRequest,
    ) -> Result<pb::NodeActiveReply, tonic::Status> {
        if self.unary {
            return self
                .client
                .node_active(request)
                .await
                .map(|r| r.into_inner());
        }
        let closed = || tonic::Status::unavailable("the monitor closed the heartbeat stream");
        let (requests, mut replies) = match self.stream.take() {
            Some((requests, replies)) => {
                requests.send(request).await.map_err(|_| closed())?;
                (requests, replies)
            }
            None => {
                let (requests, rx) = mpsc::channel(1);
                let _ = requests.send(request).await;
                let replies = self
                    .client
                    .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                (requests, replies)
            }
        };
        let reply = replies.message().await?.ok_or_else(closed)?;
        self.stream = Some((requests, replies));
        Ok(reply)
    }
}

/// Register one node (bounded attempts); store its id and first goal.
pub(crate) async fn register(
    node: &SimNode,
    mut client: MonitorClient<Channel>,
    sim: &Sim,
) -> Result<()> {
    let request = RegisterNodeRequest {
        formation: node.formation.clone(),
        name: node.name.clone(),
        host: "127.0.0.1".to_string(),
        port: node.port(),
        system_identifier: 0,
        candidate_priority: 50,
        replication_quorum: true,
        apply_delay_ms: 0,
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
pub(crate) fn phase(index: usize, interval: Duration) -> Duration {
    let frac = (index as f64 * 0.618_033_988_749_895).fract();
    interval.mul_f64(frac)
}

/// Nanoseconds since the generator started (one clock for every virtual
/// keeper, like CLOCK_BOOTTIME for a host's keepers), never 0.
fn sent_at_ns(now: Instant) -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| now - std::time::Duration::from_secs(1));
    now.saturating_duration_since(start).as_nanos() as u64
}
