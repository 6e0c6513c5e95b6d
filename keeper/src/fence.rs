//! The fence: a primary that lost the monitor and its standbys stops
//! taking writes (DESIGN §4). The loop and its keepalives renew a [`Lease`]
//! each time the monitor answers; the fence task, on its own short timer
//! and with its own PostgreSQL handle (never the loop's connection, so a
//! query stuck in the loop cannot delay it), looks at PostgreSQL once the
//! lease ran out and stops it when too few standbys stream. The rule
//! itself ([`fence_armed`], [`fence_step`]) is pure, and shared with the
//! simulation; [`enforce`] applies it, here and in the fence guard
//! ([`crate::guard`]), the process that goes on fencing when the keeper
//! is dead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_proto::pb;
use pgpilot_proto::ReplicationState as S;
use tokio::sync::{Mutex, Notify};

use crate::pg::LocalPostgres;
use crate::status::{self, SharedStatus};

/// What the fence task needs to know, shared with the loop.
#[derive(Debug)]
pub struct Lease {
    /// When the last heartbeat that got an answer was sent.
    pub last_ok_sent: Instant,
    /// The state the node is in (the fence applies to primary-side states).
    pub current: S,
    /// Application names of the standbys that count, and how many must stream.
    pub fence_set: Vec<String>,
    pub required: u32,
    /// PostgreSQL was stopped by the fence; not restarted until the monitor answers.
    pub fenced: bool,
    /// This process has heard from the monitor at least once.
    pub confirmed: bool,
    /// Woken whenever the lease is renewed or the state changes, so the
    /// link to the fence guard ([`crate::guard`]) hands it on at once.
    pub changed: Arc<Notify>,
}

pub type SharedLease = Arc<Mutex<Lease>>;

impl Lease {
    /// The lease of a keeper that has not heard from the monitor yet: the
    /// clock starts now, and no standby counts.
    pub fn new(current: S) -> SharedLease {
        Arc::new(Mutex::new(Lease {
            last_ok_sent: Instant::now(),
            current,
            fence_set: Vec::new(),
            required: FENCE_REQUIRED_UNTIL_ANSWERED,
            fenced: false,
            confirmed: false,
            changed: Arc::new(Notify::new()),
        }))
    }

    /// The node moved to `state`: the fence (and the guard) follow it.
    pub fn set_current(&mut self, state: S) {
        self.current = state;
        self.changed.notify_one();
    }

    /// What the heartbeat says the lease requires to stream, on the
    /// primary side (None elsewhere): the monitor relies on the fence only
    /// once it knows the keeper holds a quorum above 0.
    pub fn held(&self) -> Option<u32> {
        self.current
            .must_fence_when_isolated()
            .then_some(self.required)
    }

    /// Whether the node may act as a primary: the monitor answered since
    /// this process started, and the fence has not stopped PostgreSQL.
    pub fn may_run_primary(&self) -> bool {
        self.confirmed && !self.fenced
    }
}

/// Whether an answer with goal `goal` renews the lease of a node in
/// `current`: not when it takes a primary-side node off the primary side
/// (it is being replaced). Its lease then runs out as if unanswered, so a
/// primary busy with a long action (a start through crash recovery) when
/// it is demoted fences by itself, instead of serving with the empty fence
/// set a demoted node is sent until its loop gets to stop it.
pub fn answer_renews(current: S, goal: S) -> bool {
    !current.must_fence_when_isolated() || goal.must_fence_when_isolated()
}

/// A heartbeat sent at `sent` got an answer with goal `goal` and these
/// `replication` settings: the fence clock restarts from `sent` (never
/// from the answer: the monitor's fence deadline counts from when it heard
/// the heartbeat, which is later), and the fence set is the one the
/// monitor just sent and stored. The shared status says so too. Nothing is
/// renewed by an answer that takes the node off the primary side
/// ([`answer_renews`]).
pub async fn renew(
    lease: &Mutex<Lease>,
    status: &SharedStatus,
    sent: Instant,
    goal: S,
    replication: &pb::ReplicationSettings,
) {
    {
        let mut lease = lease.lock().await;
        if !answer_renews(lease.current, goal) {
            return;
        }
        lease.last_ok_sent = lease.last_ok_sent.max(sent);
        lease.confirmed = true;
        lease.fence_set = replication.quorum_standby_names.clone();
        lease.required = replication.required_streaming_standbys;
        lease.fenced = false;
        lease.changed.notify_one();
    }
    let mut status = status::lock(status);
    status.last_heartbeat_ok = Some(sent);
    status.fenced = false;
}

/// What one tick of the fence task does, once it looked at PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStep {
    /// No postmaster is alive: the node counts as fenced already.
    AlreadyStopped,
    /// Enough standbys of the fence set stream: keep serving.
    KeepServing,
    /// Too few stream: stop PostgreSQL now.
    Stop,
}

/// How many standbys a restarted keeper requires to stream before the
/// monitor first answers. The fence set it was last told is not kept across
/// a restart, so none counts: a primary whose keeper restarts while it is
/// cut off from the monitor fences after `fence_timeout`, as the monitor's
/// fence deadline (computed from its last heartbeat, before the restart)
/// assumes. With 0 it would never fence, and a `wait_primary` could keep
/// taking writes beside a newly promoted standby.
pub const FENCE_REQUIRED_UNTIL_ANSWERED: u32 = 1;

/// Whether the fence task must look at PostgreSQL: the node is on the
/// primary side and no heartbeat sent in the last `fence_timeout` got an
/// answer (DESIGN §4). Also once fenced: an action already under way when
/// the keeper lost the monitor (a `pg_ctl start` through a long crash
/// recovery) can bring PostgreSQL up after the fence found it stopped, so
/// the fence keeps looking, and stops it again, until the monitor answers.
pub fn fence_armed(current: S, since_last_answer: Duration, fence_timeout: Duration) -> bool {
    since_last_answer >= fence_timeout && current.must_fence_when_isolated()
}

/// The fence rule itself: an armed primary keeps serving only while at
/// least `required` members of `fence_set` stream from it. `running` is
/// whether a postmaster is alive at all — accepting connections, or still
/// starting (crash recovery), which would take writes once done: a
/// starting primary has no standby streaming from it, so it is stopped.
pub fn fence_step(
    running: bool,
    streaming_standbys: &[String],
    fence_set: &[String],
    required: u32,
) -> FenceStep {
    if !running {
        return FenceStep::AlreadyStopped;
    }
    let streaming = streaming_standbys
        .iter()
        .filter(|s| fence_set.contains(s))
        .count() as u32;
    if streaming >= required {
        FenceStep::KeepServing
    } else {
        FenceStep::Stop
    }
}

/// What [`enforce`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    /// No postmaster was alive.
    AlreadyStopped,
    /// Enough standbys of the fence set stream.
    KeepServing,
    /// Too few streamed: PostgreSQL was stopped (immediate mode).
    Stopped,
    /// Too few streamed, and the stop failed (logged; tried again next tick).
    StopFailed,
}

/// One armed look at PostgreSQL: observe it through `pg`, apply
/// [`fence_step`], and stop it at once when the rule says so. Shared by the
/// keeper's fence task and the fence guard ([`crate::guard`]), so both
/// apply the same rule the same way.
pub async fn enforce<P: LocalPostgres>(pg: &P, fence_set: &[String], required: u32) -> Enforced {
    let o = pg.observe().await;
    let alive = o.running || pg.postmaster_alive();
    match fence_step(alive, &o.streaming_standbys, fence_set, required) {
        FenceStep::AlreadyStopped => return Enforced::AlreadyStopped,
        FenceStep::KeepServing => return Enforced::KeepServing,
        FenceStep::Stop => {}
    }
    tracing::warn!(
        streaming = ?o.streaming_standbys,
        required,
        accepting_connections = o.running,
        "monitor unreachable and too few standbys streaming: fencing (stopping PostgreSQL)"
    );
    match pg.stop_immediate().await {
        Ok(()) => {
            tracing::warn!("fenced: PostgreSQL stopped; it restarts only when the monitor says this node is still the primary");
            Enforced::Stopped
        }
        Err(e) => {
            tracing::error!(error = %e, "fencing failed");
            Enforced::StopFailed
        }
    }
}

/// The fence task: stop PostgreSQL when the node is on the primary side,
/// has not reached the monitor for `fence_timeout`, and fewer than the
/// required standbys stream from it. Runs on its own short timer, with its
/// own handle on PostgreSQL (`pg`: a connection of its own, no lock shared
/// with the loop), so a slow heartbeat, a long action or a stuck query of
/// the loop never delays it.
pub struct Fence<P> {
    pub pg: P,
    pub lease: SharedLease,
    pub fence_timeout: Duration,
    pub status: SharedStatus,
}

/// How often the fence task looks at the lease.
const FENCE_TICK: Duration = Duration::from_millis(100);

impl<P: LocalPostgres + Send + Sync + 'static> Fence<P> {
    /// Run until dropped (the loop aborts it when it ends).
    pub async fn run(self) {
        let mut tick = tokio::time::interval(FENCE_TICK);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    async fn tick(&self) {
        let (must_check, fence_set, required) = {
            let l = self.lease.lock().await;
            (
                fence_armed(l.current, l.last_ok_sent.elapsed(), self.fence_timeout),
                l.fence_set.clone(),
                l.required,
            )
        };
        if !must_check {
            return;
        }
        match enforce(&self.pg, &fence_set, required).await {
            Enforced::KeepServing | Enforced::StopFailed => {}
            Enforced::AlreadyStopped => self.mark_fenced().await,
            Enforced::Stopped => {
                self.mark_fenced().await;
                crate::metrics::fenced();
            }
        }
    }

    async fn mark_fenced(&self) {
        self.lease.lock().await.fenced = true;
        status::lock(&self.status).fenced = true;
    }
}

/// A fake PostgreSQL for the fence's and the guard's unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use crate::pg::{LocalPostgres, ManagedConfig, Observation, PgError, Upstream};

    /// A primary no standby streams from; it records the fence's stop.
    #[derive(Default)]
    pub(crate) struct Isolated {
        pub(crate) stopped: AtomicBool,
    }

    impl LocalPostgres for Isolated {
        fn has_data_directory(&self) -> bool {
            true
        }
        async fn initdb(&self) -> Result<(), PgError> {
            Ok(())
        }
        async fn write_config(&self, _: &ManagedConfig) -> Result<bool, PgError> {
            Ok(false)
        }
        async fn start(&self) -> Result<(), PgError> {
            Ok(())
        }
        fn postmaster_alive(&self) -> bool {
            !self.stopped.load(Ordering::SeqCst)
        }
        async fn stop(&self) -> Result<(), PgError> {
            self.stop_immediate().await
        }
        async fn stop_immediate(&self) -> Result<(), PgError> {
            self.stopped.store(true, Ordering::SeqCst);
            Ok(())
        }
        async fn reload(&self) -> Result<(), PgError> {
            Ok(())
        }
        async fn base_backup(&self, _: &Upstream) -> Result<(), PgError> {
            Ok(())
        }
        async fn rewind(&self, _: &Upstream) -> Result<(), PgError> {
            Ok(())
        }
        async fn wait_replay_caught_up(&self, _: Duration) -> Result<(), PgError> {
            Ok(())
        }
        async fn promote(&self) -> Result<(), PgError> {
            Ok(())
        }
        async fn ensure_replication_role(&self) -> Result<(), PgError> {
            Ok(())
        }
        async fn sync_slots(&self, _: &[(String, u64, bool)]) -> Result<(), PgError> {
            Ok(())
        }
        async fn observe(&self) -> Observation {
            Observation {
                running: self.postmaster_alive(),
                ..Observation::default()
            }
        }
        async fn system_identifier(&self) -> Result<Option<u64>, PgError> {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::fake::Isolated;
    use super::*;
    use crate::status::KeeperStatus;

    fn fence(fence_timeout: Duration) -> Fence<Isolated> {
        let status = KeeperStatus::new("n", "default", S::Primary, S::Primary);
        Fence {
            pg: Isolated::default(),
            lease: Lease::new(S::Primary),
            fence_timeout,
            status: Arc::new(std::sync::Mutex::new(status)),
        }
    }

    #[tokio::test]
    async fn an_isolated_primary_is_stopped_once_the_lease_ran_out() {
        let live = fence(Duration::from_secs(3600));
        live.tick().await;
        assert!(!live.pg.stopped.load(Ordering::SeqCst), "lease still valid");
        assert!(!live.lease.lock().await.fenced);

        let expired = fence(Duration::ZERO);
        expired.tick().await;
        assert!(expired.pg.stopped.load(Ordering::SeqCst));
        assert!(expired.lease.lock().await.fenced);
        assert!(status::lock(&expired.status).fenced);
        assert!(!expired.lease.lock().await.may_run_primary());
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Found by the simulation: a primary replaced while it was starting
    /// through a long crash recovery had its lease renewed by the answers
    /// to its keepalives, with the empty fence set of a demoted node, and
    /// served beside the new primary once its start finished.
    #[tokio::test]
    async fn an_answer_that_demotes_a_primary_does_not_renew_its_lease() {
        for current in S::ALL {
            for goal in S::ALL {
                assert_eq!(
                    answer_renews(current, goal),
                    !current.must_fence_when_isolated() || goal.must_fence_when_isolated(),
                    "{current} -> {goal}"
                );
            }
        }
        assert!(!answer_renews(S::Primary, S::Demoted));
        assert!(!answer_renews(S::WaitPrimary, S::Draining));
        assert!(answer_renews(S::WaitPrimary, S::Primary));
        assert!(answer_renews(S::StopReplication, S::WaitPrimary));

        let f = fence(Duration::from_millis(1500));
        let before = f.lease.lock().await.last_ok_sent;
        let empty = pb::ReplicationSettings::default();
        let later = before + Duration::from_secs(5);
        renew(&f.lease, &f.status, later, S::Demoted, &empty).await;
        let lease = f.lease.lock().await;
        assert_eq!(lease.last_ok_sent, before, "not renewed by a demotion");
        assert_eq!(lease.required, FENCE_REQUIRED_UNTIL_ANSWERED);
        assert!(!lease.confirmed);
        drop(lease);
        renew(&f.lease, &f.status, later, S::Primary, &empty).await;
        assert_eq!(f.lease.lock().await.last_ok_sent, later);
        // What the heartbeat says it holds.
        assert_eq!(f.lease.lock().await.held(), Some(0));
    }

    #[test]
    fn armed_only_on_the_primary_side_after_the_timeout() {
        let t = Duration::from_millis(1500);
        for state in S::ALL {
            assert_eq!(
                fence_armed(state, t, t),
                state.must_fence_when_isolated(),
                "{state}"
            );
            // Still armed once fenced: an action in flight may start it again.
            assert_eq!(
                fence_armed(state, t * 2, t),
                state.must_fence_when_isolated(),
                "{state} fenced"
            );
            assert!(
                !fence_armed(state, t - Duration::from_millis(1), t),
                "{state} early"
            );
        }
        assert!(fence_armed(S::WaitPrimary, t, t));
        assert!(!fence_armed(S::Single, t * 10, t));
        assert!(!fence_armed(S::StopReplication, t * 10, t));
    }

    #[test]
    fn stops_when_too_few_of_the_fence_set_stream() {
        let set = names(&["pgpilot_2", "pgpilot_3"]);
        assert_eq!(fence_step(false, &[], &set, 1), FenceStep::AlreadyStopped);
        assert_eq!(
            fence_step(true, &names(&["pgpilot_2"]), &set, 1),
            FenceStep::KeepServing
        );
        assert_eq!(
            fence_step(true, &names(&["pgpilot_2"]), &set, 2),
            FenceStep::Stop
        );
        assert_eq!(fence_step(true, &[], &set, 1), FenceStep::Stop);
        // A standby outside the fence set does not count.
        assert_eq!(
            fence_step(true, &names(&["pgpilot_9"]), &set, 1),
            FenceStep::Stop
        );
        assert_eq!(
            fence_step(true, &names(&["pgpilot_2", "pgpilot_3"]), &set, 2),
            FenceStep::KeepServing
        );
        // Nothing required (no standby to count): keep serving.
        assert_eq!(fence_step(true, &[], &[], 0), FenceStep::KeepServing);
        // A restarted keeper that has not heard from the monitor yet
        // counts nobody, however many stream.
        assert_eq!(
            fence_step(
                true,
                &names(&["pgpilot_2"]),
                &[],
                FENCE_REQUIRED_UNTIL_ANSWERED
            ),
            FenceStep::Stop
        );
    }
}
