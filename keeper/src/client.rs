//! The keeper's side of the monitor's gRPC service: registering once,
//! the `NodeActive` heartbeat, the keepalives sent while the executor
//! works, the RPC timeout, which answers are refusals and which move the
//! keeper to the next monitor (see [`crate::monitors`]).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;

use crate::config::KeeperConfig;
use crate::error::KeeperError;
use crate::fence::{self, SharedLease};
use crate::monitors::{InUse, Monitors};
use crate::pg::{LocalPostgres, Observation};
use crate::status::SharedStatus;

/// The keeper's client of the monitor: it talks to the monitor in use
/// (see [`crate::monitors`]), connects on first use, reconnects by itself,
/// and moves to the next monitor of the list after an error it retries.
pub struct MonitorClient {
    config: KeeperConfig,
    monitors: Monitors,
    /// The loop's heartbeat stream, while it is open.
    stream: Option<BeatStream>,
    /// Monitors (by URL) that answered `Heartbeats` with Unimplemented:
    /// an older monitor, heartbeated with unary calls.
    unary_only: std::collections::HashSet<String>,
}

/// The loop's open `Heartbeats` stream to one monitor: one request sent,
/// one reply read, in turn. A stream that failed, timed out or was cut in
/// the middle of a heartbeat is dropped, never reused, so a late reply is
/// never read as the answer to a later heartbeat.
struct BeatStream {
    url: String,
    requests: tokio::sync::mpsc::Sender<pb::NodeActiveRequest>,
    replies: tonic::Streaming<pb::NodeActiveReply>,
}

/// The keeper's timings, as every heartbeat reports them.
pub fn timings(c: &KeeperConfig) -> pb::KeeperTimings {
    pb::KeeperTimings {
        heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u64,
        fence_timeout_ms: c.fence_timeout.as_millis() as u64,
        wal_sender_timeout_ms: c.wal_sender_timeout.as_millis() as u64,
    }
}

/// How long one call to the monitor may take: a heartbeat interval (at
/// least 500 ms), and at most half the fence timeout, so that a call gives
/// up well before the fence would arm.
pub fn rpc_timeout(c: &KeeperConfig) -> Duration {
    c.heartbeat_interval
        .max(Duration::from_millis(500))
        .min(c.fence_timeout / 2)
}

impl MonitorClient {
    /// A client of the configured monitors; `status` is told which one is
    /// in use.
    pub fn new(config: KeeperConfig, status: SharedStatus) -> Result<Self, KeeperError> {
        let monitors = Monitors::new(&config, status)?;
        Ok(MonitorClient {
            config,
            monitors,
            stream: None,
            unary_only: Default::default(),
        })
    }

    /// Build a client of every monitor: reads the TLS files and the token
    /// (a world-readable key or token file is refused).
    pub fn connect(&mut self) -> Result<(), KeeperError> {
        self.monitors.connect()
    }

    /// Register this node, retrying until `register_timeout` while no
    /// monitor answers: the next monitor of the list at once, and after a
    /// pause once every one failed. A refusal ends at once.
    pub async fn register(
        &mut self,
        system_identifier: u64,
    ) -> Result<pb::RegisterNodeReply, KeeperError> {
        let c = &self.config;
        let request = pb::RegisterNodeRequest {
            formation: c.formation.clone(),
            name: c.name.clone(),
            host: c.host.clone(),
            port: u32::from(c.advertised_port()),
            system_identifier,
            candidate_priority: c.candidate_priority(),
            replication_quorum: c.replication_quorum(),
            apply_delay_ms: c.apply_delay_ms(),
            timings: Some(timings(c)),
        };
        let deadline = Instant::now() + c.register_timeout;
        let register_timeout = c.register_timeout;
        let retry_after = c.heartbeat_interval.max(Duration::from_millis(500));
        loop {
            let mut in_use = self.monitors.current()?;
            match in_use.client.register_node(request.clone()).await {
                Ok(reply) => {
                    self.monitors.answered();
                    return Ok(reply.into_inner());
                }
                Err(status) if is_refusal(&status) => {
                    return Err(KeeperError::Refused(status.message().to_string()));
                }
                Err(status) => {
                    let reason = status.message().to_string();
                    let failed = self.monitors.failed(&in_use, &reason);
                    if Instant::now() >= deadline {
                        let reason = format!(
                            "{reason} (gave up registering after {})",
                            humantime::format_duration(register_timeout)
                        );
                        return Err(self.monitors.unreachable(&in_use, reason, &failed));
                    }
                    tracing::warn!(monitor = %in_use.url, error = %reason, "monitor unreachable, retrying registration");
                    if failed.all {
                        tokio::time::sleep(retry_after).await;
                    }
                }
            }
        }
    }

    /// One heartbeat of the loop.
    pub async fn node_active(
        &mut self,
        request: pb::NodeActiveRequest,
    ) -> Result<pb::NodeActiveReply, KeeperError> {
        let mut in_use = self.monitors.current()?;
        let answer = if self.unary_only.contains(&in_use.url) {
            unary(&mut in_use, request).await
        } else {
            // One deadline for opening the stream, sending and the reply;
            // a stream cut here is dropped (it was taken out of `self`).
            let timeout = rpc_timeout(&self.config);
            tokio::time::timeout(timeout, self.streamed(&mut in_use, request))
                .await
                .unwrap_or_else(|_| {
                    Err(tonic::Status::deadline_exceeded(format!(
                        "the monitor did not answer the heartbeat within {}",
                        humantime::format_duration(timeout)
                    )))
                })
        };
        match answer {
            Ok(reply) => {
                self.monitors.answered();
                Ok(reply)
            }
            // A monitor that does not accept this keeper's credentials
            // is treated as an unreachable one: keep trying, on the next
            // monitor (an operator may be rotating them, one monitor after
            // the other), and let the fence task stop a primary meanwhile.
            Err(status) if !moves_on(&status) => {
                Err(KeeperError::Refused(status.message().to_string()))
            }
            Err(status) => {
                let reason = if is_auth_refusal(&status) {
                    format!("the monitor refused this keeper: {}", status.message())
                } else {
                    status.message().to_string()
                };
                let failed = self.monitors.failed(&in_use, &reason);
                Err(self.monitors.unreachable(&in_use, reason, &failed))
            }
        }
    }

    /// One heartbeat over the stream to the monitor in use, opened first
    /// when there is none (or it goes to another monitor).
    async fn streamed(
        &mut self,
        in_use: &mut InUse,
        request: pb::NodeActiveRequest,
    ) -> Result<pb::NodeActiveReply, tonic::Status> {
        let open = self.stream.take().filter(|s| s.url == in_use.url);
        let request = pb::NodeActiveRequest {
            wakes: true,
            ..request
        };
        let mut stream = match open {
            Some(stream) => {
                if stream.requests.send(request).await.is_err() {
                    return Err(tonic::Status::unavailable(
                        "the heartbeat stream to the monitor closed",
                    ));
                }
                stream
            }
            None => {
                let (requests, rx) = tokio::sync::mpsc::channel(1);
                // Queued before the call: it goes out with the stream.
                let _ = requests.send(request.clone()).await;
                let opened = in_use
                    .client
                    .heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await;
                match opened {
                    Ok(replies) => BeatStream {
                        url: in_use.url.clone(),
                        requests,
                        replies: replies.into_inner(),
                    },
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        tracing::info!(monitor = %in_use.url, "the monitor has no heartbeat stream: one call per heartbeat");
                        self.unary_only.insert(in_use.url.clone());
                        let request = pb::NodeActiveRequest {
                            wakes: false,
                            ..request
                        };
                        return unary(in_use, request).await;
                    }
                    Err(status) => return Err(status),
                }
            }
        };
        loop {
            match stream.replies.message().await {
                // A wake-up sent before this answer: the answer is newer.
                Ok(Some(reply)) if reply.wake => continue,
                Ok(Some(reply)) => {
                    self.stream = Some(stream);
                    return Ok(reply);
                }
                Ok(None) => {
                    return Err(tonic::Status::unavailable(
                        "the monitor closed the heartbeat stream",
                    ))
                }
                Err(status) => return Err(status),
            }
        }
    }

    /// Resolves when the monitor wakes this keeper: its group changed after
    /// the last answer (never, without an open heartbeat stream). Cancel
    /// safe: the loop races it against its heartbeat timer. A stream that
    /// ends here, or sends anything but a wake-up between two answers, is
    /// dropped and opened again on the next heartbeat.
    pub async fn woken(&mut self) {
        let Some(stream) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        match stream.replies.message().await {
            Ok(Some(reply)) if reply.wake => {}
            _ => {
                self.stream = None;
                std::future::pending().await
            }
        }
    }

    /// The monitors, shared with the keepalives: they talk to the monitor
    /// in use and move it on as the loop does.
    pub fn monitors(&self) -> Monitors {
        self.monitors.clone()
    }
}

/// One heartbeat as a unary `NodeActive` call (a monitor without the
/// heartbeat stream).
async fn unary(
    in_use: &mut InUse,
    request: pb::NodeActiveRequest,
) -> Result<pb::NodeActiveReply, tonic::Status> {
    in_use
        .client
        .node_active(request)
        .await
        .map(|r| r.into_inner())
}

/// The heartbeat request for what the loop or a keepalive observed. A
/// running PostgreSQL clears the count of failed starts. `acting_toward`:
/// a keepalive's plan goal (None from the loop, at rest in `current`).
pub fn node_active_request(
    node_id: i64,
    current: S,
    acting_toward: Option<S>,
    fence_required_held: Option<u32>,
    timings: &pb::KeeperTimings,
    o: &Observation,
    start_failures: &AtomicU32,
) -> pb::NodeActiveRequest {
    if o.running {
        start_failures.store(0, Ordering::SeqCst);
    }
    pb::NodeActiveRequest {
        node_id,
        reported_state: current.to_wire(),
        pg_running: o.running,
        lsn: o.lsn,
        timeline: o.timeline,
        wal_receiver_streaming: o.wal_receiver_streaming,
        system_identifier: o.system_identifier,
        timings: Some(*timings),
        streaming_standbys: o.streaming_standbys.clone(),
        pg_start_failures: if o.running {
            0
        } else {
            start_failures.load(Ordering::SeqCst)
        },
        synchronous_standby_names: o.synchronous_standby_names.clone(),
        acting_toward: acting_toward.map(S::to_wire),
        fence_required_held,
        // When it was built, so that the monitor never folds in a heartbeat
        // that arrives after a later one (a delayed keepalive).
        keeper_boot_id: boot_id().to_string(),
        sent_at_ns: crate::guard::wire::clock_now()
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX),
        // Only the loop's heartbeats carry notes (see `crate::notes`).
        notes: Vec::new(),
        work: o.work.as_ref().map(|w| w.to_wire()),
        // The loop's heartbeat says these (see `crate::agent`).
        clone_from: String::new(),
        stopping: false,
        // Set where the heartbeat goes over a stream (`streamed`).
        wakes: false,
        // The loop's heartbeat says it (the monitor never takes it back).
        restart_done: 0,
        pending_restart: o.pending_restart.clone(),
        // Set by the loop and the keepalives.
        parameters_applied: 0,
        // The loop's heartbeat says it.
        promotion_refused: false,
        // The loop's heartbeat says them (see `crate::slots`).
        slots: Vec::new(),
        slots_reported: false,
    }
}

/// This host's boot id (empty where the kernel does not say): with
/// CLOCK_BOOTTIME it orders the heartbeats of every keeper process of the
/// node, restarted ones too.
fn boot_id() -> &'static str {
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// Heartbeats sent while the loop carries out a plan (a `pg_ctl start`
/// through crash recovery can take many seconds), so the monitor hears the
/// keeper instead of a silence: it then gives a PostgreSQL being restarted
/// its `postgres_restart_timeout`, and the node's liveness and observed
/// facts stay current.
///
/// A keepalive reports the state the keeper is in (it only changes when
/// the plan is done) and what it observes of PostgreSQL right now; it is an
/// ordinary `NodeActive` heartbeat to the monitor. Of the answer it uses
/// only what keeps the fence rule true: an answered keepalive renews the
/// lease exactly as an answered heartbeat of the loop does (the fence clock
/// from its send time, the fence set the monitor stored as sent — ignoring
/// that set would let the keeper count standbys the monitor no longer
/// assumes). A keepalive that got no answer renews nothing, so the fence
/// still arms `fence_timeout` after the last answered heartbeat. The goal,
/// the primary to follow and the replication settings of the answer are
/// left to the loop's next heartbeat, once the plan is done: a keeper never
/// changes goal in the middle of a plan. The monitor sends the current
/// goal in every answer, so nothing is lost by not reading it here.
pub struct Keepalive<P> {
    /// The monitor in use, shared with the loop's client.
    pub monitors: Monitors,
    pub pg: Arc<P>,
    pub lease: SharedLease,
    pub status: SharedStatus,
    /// Failed starts of PostgreSQL in a row, as the loop reports them.
    pub start_failures: Arc<AtomicU32>,
    pub node_id: i64,
    /// The state the keeper is in until the plan is done.
    pub current: S,
    /// Where the plan under way leads (`current` for a steady plan).
    pub acting_toward: S,
    pub timings: pb::KeeperTimings,
    pub interval: Duration,
    /// The parameters version the loop last wrote (see the loop's heartbeat).
    pub parameters_applied: u64,
}

impl<P: LocalPostgres + Send + Sync + 'static> Keepalive<P> {
    /// Send a keepalive every interval; never returns (dropped when the
    /// plan is done, which abandons a keepalive in flight unanswered).
    pub async fn run(self) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(self.interval).await;
            crate::status::lock(&self.status).loop_seen = Instant::now();
            let o = self.pg.observe().await;
            let held = self.lease.lock().await.held();
            let mut request = node_active_request(
                self.node_id,
                self.current,
                Some(self.acting_toward),
                held,
                &self.timings,
                &o,
                &self.start_failures,
            );
            request.parameters_applied = self.parameters_applied;
            let mut in_use = match self.monitors.current() {
                Ok(in_use) => in_use,
                Err(e) => {
                    tracing::debug!(error = %e, "keepalive not sent");
                    continue;
                }
            };
            let sent = Instant::now();
            match in_use.client.node_active(request).await {
                Ok(reply) => {
                    self.monitors.answered();
                    let reply = reply.into_inner();
                    let goal = S::from_wire(reply.goal_state).unwrap_or(self.acting_toward);
                    let replication = reply.replication.unwrap_or_default();
                    fence::renew(&self.lease, &self.status, sent, goal, &replication).await;
                }
                Err(status) => {
                    tracing::debug!(monitor = %in_use.url, error = %status.message(), "keepalive not answered");
                    if moves_on(&status) {
                        self.monitors.failed(&in_use, status.message());
                    }
                }
            }
        }
    }
}

/// The monitor does not accept this keeper's credentials (an operator may
/// be rotating them: the keeper keeps trying).
pub fn is_auth_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
    )
}

/// A heartbeat that failed this way is retried, and on the next monitor
/// of the list: anything but a refusal of the node (a monitor that does not
/// accept this keeper's credentials included, as the loop keeps trying it).
pub fn moves_on(status: &tonic::Status) -> bool {
    is_auth_refusal(status) || !is_refusal(status)
}

/// The monitor refuses this node: the keeper ends. Anything else is
/// retried.
pub fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{lock, KeeperStatus};

    #[test]
    fn heartbeats_move_on_after_every_error_but_a_refusal_of_the_node() {
        use tonic::Code;
        for (code, refusal, moves) in [
            (Code::Unavailable, false, true),
            (Code::DeadlineExceeded, false, true),
            (Code::Cancelled, false, true),
            (Code::Unknown, false, true),
            (Code::Internal, false, true),
            (Code::ResourceExhausted, false, true),
            (Code::Unauthenticated, true, true),
            (Code::PermissionDenied, true, true),
            (Code::InvalidArgument, true, false),
            (Code::NotFound, true, false),
            (Code::FailedPrecondition, true, false),
        ] {
            let status = tonic::Status::new(code, "x");
            assert_eq!(is_refusal(&status), refusal, "{code:?}");
            assert_eq!(moves_on(&status), moves, "{code:?}");
        }
    }

    /// Two monitor URLs on which nothing listens (refused at once).
    fn two_closed_monitors(extra: &str) -> (KeeperConfig, String, String) {
        let closed = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (m1, m2) = (closed(), closed());
        let text = format!(
            "name = \"n\"\nhost = \"127.0.0.1\"\nport = 6001\npgdata = \"/tmp/x/data\"\nmonitor = [\"{m1}\", \"{m2}\"]\n{extra}"
        );
        (KeeperConfig::parse(&text).unwrap(), m1, m2)
    }

    fn shared_status() -> SharedStatus {
        let status = KeeperStatus::new("n", "default", S::Secondary, S::Secondary);
        Arc::new(std::sync::Mutex::new(status))
    }

    #[tokio::test]
    async fn a_failed_heartbeat_sends_the_next_call_to_the_next_monitor() {
        let (config, m1, m2) = two_closed_monitors("");
        let status = shared_status();
        let mut client = MonitorClient::new(config, status.clone()).unwrap();
        client.connect().unwrap();
        assert_eq!(lock(&status).monitor.as_deref(), Some(m1.as_str()));
        assert_eq!(lock(&status).monitors, [m1.clone(), m2.clone()]);
        let request = pb::NodeActiveRequest::default;
        let err = client.node_active(request()).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot reach the monitor at {m1}: ")),
            "{err}"
        );
        assert_eq!(lock(&status).monitor.as_deref(), Some(m2.as_str()));
        // The keepalives share the monitor in use.
        assert_eq!(client.monitors().current().unwrap().url, m2);
        let err = client.node_active(request()).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot reach any of the monitors {m1}, {m2}: ")),
            "{err}"
        );
        assert_eq!(lock(&status).monitor.as_deref(), Some(m1.as_str()));
        assert!(!err.contains('\n'), "{err}");
    }

    #[tokio::test]
    async fn registration_tries_every_monitor_and_names_them_when_it_gives_up() {
        let (config, m1, m2) = two_closed_monitors("register_timeout = \"100ms\"\n");
        let mut client = MonitorClient::new(config, shared_status()).unwrap();
        let err = client.register(1).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot reach any of the monitors {m1}, {m2}: ")),
            "{err}"
        );
        assert!(err.ends_with("(gave up registering after 100ms)"), "{err}");
    }

    #[test]
    fn heartbeats_report_failed_starts_until_postgres_runs() {
        let failures = AtomicU32::new(2);
        let t = pb::KeeperTimings::default();
        let down = Observation::default();
        let r = node_active_request(7, S::Primary, None, None, &t, &down, &failures);
        assert_eq!(
            (r.node_id, r.pg_running, r.pg_start_failures),
            (7, false, 2)
        );
        assert_eq!(r.reported_state, S::Primary.to_wire());
        let up = Observation {
            running: true,
            ..Observation::default()
        };
        let r = node_active_request(7, S::Primary, None, None, &t, &up, &failures);
        assert_eq!((r.pg_running, r.pg_start_failures), (true, 0));
        assert_eq!(
            failures.load(Ordering::SeqCst),
            0,
            "a running server resets the count"
        );
    }
}
