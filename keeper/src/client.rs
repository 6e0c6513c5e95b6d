//! The keeper's side of the monitor's gRPC service: registering once,
//! the `NodeActive` heartbeat, the keepalives sent while the executor
//! works, the RPC timeout, and which answers are refusals.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_proto::pb;
use pgpilot_proto::security;
use pgpilot_proto::ReplicationState as S;

use crate::config::KeeperConfig;
use crate::error::KeeperError;
use crate::fence::{self, SharedLease};
use crate::pg::{LocalPostgres, Observation};
use crate::status::SharedStatus;

/// A lazy client of the monitor: it connects on first use and reconnects
/// by itself.
pub struct MonitorClient {
    config: KeeperConfig,
    client: Option<security::Client>,
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
    pub fn new(config: KeeperConfig) -> Self {
        MonitorClient {
            config,
            client: None,
        }
    }

    /// Build the client: reads the TLS files and the token (a
    /// world-readable key or token file is refused).
    pub fn connect(&mut self) -> Result<(), KeeperError> {
        self.client = Some(self.build()?);
        Ok(())
    }

    fn build(&self) -> Result<security::Client, KeeperError> {
        let url = self.config.monitor.clone();
        if security::url_uses_tls(&url) == Some(false) {
            tracing::warn!(monitor = %url, "talking to the monitor in plaintext (http://): anyone on the network can read and forge this node's heartbeats; use https://");
        }
        let rpc_timeout = rpc_timeout(&self.config);
        self.config
            .client_security()
            .lazy_client(&url, &security::CONFIG_NAMES, |e| {
                e.connect_timeout(Duration::from_secs(1))
                    .timeout(rpc_timeout)
            })
            .map_err(|e| KeeperError::Security(e.to_string()))
    }

    fn client(&mut self) -> Result<&mut security::Client, KeeperError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => self.build()?,
        };
        Ok(self.client.insert(client))
    }

    /// Register this node, retrying an unreachable monitor until
    /// `register_timeout`; a refusal ends at once.
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
            candidate_priority: c.candidate_priority,
            replication_quorum: c.replication_quorum,
            timings: Some(timings(c)),
        };
        let deadline = Instant::now() + c.register_timeout;
        let register_timeout = c.register_timeout;
        let retry_after = c.heartbeat_interval.max(Duration::from_millis(500));
        let url = c.monitor.clone();
        loop {
            match self.client()?.register_node(request.clone()).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) if is_refusal(&status) => {
                    return Err(KeeperError::Refused(status.message().to_string()));
                }
                Err(status) => {
                    if Instant::now() >= deadline {
                        return Err(KeeperError::MonitorUnreachable {
                            url,
                            reason: format!(
                                "{} (gave up registering after {})",
                                status.message(),
                                humantime::format_duration(register_timeout)
                            ),
                        });
                    }
                    tracing::warn!(monitor = %url, error = %status.message(), "monitor unreachable, retrying registration");
                    tokio::time::sleep(retry_after).await;
                }
            }
        }
    }

    /// One heartbeat.
    pub async fn node_active(
        &mut self,
        request: pb::NodeActiveRequest,
    ) -> Result<pb::NodeActiveReply, KeeperError> {
        let url = self.config.monitor.clone();
        match self.client()?.node_active(request).await {
            Ok(reply) => Ok(reply.into_inner()),
            // The monitor does not accept this keeper's credentials: keep
            // trying (an operator may be rotating them) and let the fence
            // task stop a primary meanwhile, as for an unreachable monitor.
            Err(status) if is_auth_refusal(&status) => Err(KeeperError::MonitorUnreachable {
                url,
                reason: format!("the monitor refused this keeper: {}", status.message()),
            }),
            Err(status) if is_refusal(&status) => {
                Err(KeeperError::Refused(status.message().to_string()))
            }
            Err(status) => Err(KeeperError::MonitorUnreachable {
                url,
                reason: status.message().to_string(),
            }),
        }
    }

    /// A handle on the same connection, for the keepalives.
    pub fn handle(&mut self) -> Result<security::Client, KeeperError> {
        Ok(self.client()?.clone())
    }
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
    pub client: security::Client,
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
}

impl<P: LocalPostgres + Send + Sync + 'static> Keepalive<P> {
    /// Send a keepalive every interval; never returns (dropped when the
    /// plan is done, which abandons a keepalive in flight unanswered).
    pub async fn run(mut self) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(self.interval).await;
            let o = self.pg.observe().await;
            let held = self.lease.lock().await.held();
            let request = node_active_request(
                self.node_id,
                self.current,
                Some(self.acting_toward),
                held,
                &self.timings,
                &o,
                &self.start_failures,
            );
            let sent = Instant::now();
            match self.client.node_active(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let goal = S::from_wire(reply.goal_state).unwrap_or(self.acting_toward);
                    let replication = reply.replication.unwrap_or_default();
                    fence::renew(&self.lease, &self.status, sent, goal, &replication).await;
                }
                Err(status) => {
                    tracing::debug!(error = %status.message(), "keepalive not answered");
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
