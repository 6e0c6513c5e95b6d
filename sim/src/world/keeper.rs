//! The simulated keepers: heartbeats and their replies, keepalives while a
//! plan runs, plans carried out action by action (the PostgreSQL actions
//! they stand for, in actions.rs), the fence task, crashes and restarts from the state
//! file.

use super::*;

impl World {
    // ------------------------------------------------------------------
    // Keepers
    // ------------------------------------------------------------------

    pub(super) fn observe(&self, i: usize) -> (bool, u64, bool, Vec<String>) {
        let pg = &self.pgs[i];
        if !pg.running {
            return (false, 0, false, Vec::new());
        }
        let streaming = pg
            .senders
            .keys()
            .map(|&s| pgpilot_proto::lsn::application_name(self.keepers[s].node_id))
            .collect();
        (true, pg.lsn(), pg.in_recovery && pg.receiving, streaming)
    }

    pub(super) fn net_delay(&mut self) -> Ms {
        if self.slow {
            self.rng.range(100, 900)
        } else {
            self.rng.range(1, 8)
        }
    }

    /// The heartbeat the keeper sends with what it observes now (the loop's
    /// and a keepalive's alike: agent.rs `node_active_request`).
    pub(super) fn heartbeat_now(&mut self, i: usize, acting_toward: Option<S>) -> Heartbeat {
        let (running, lsn, streaming, _) = self.observe(i);
        let applied = running.then(|| sync_text(self.pgs[i].sync.as_ref()));
        let k = &mut self.keepers[i];
        if running {
            k.start_failures = 0;
        }
        Heartbeat {
            node_id: k.node_id,
            report: Report {
                reported: k.current,
                pg_running: running,
                lsn,
                // The timeline of its newest WAL, as the keeper reads it
                // from pg_wal (`pg::wal_timeline`).
                timeline: if running { self.pgs[i].timeline } else { 0 },
                wal_receiver_streaming: streaming,
                pg_start_failures: k.start_failures,
                timings: self.t.keeper,
                // fence.rs `Lease::held`.
                fence_required_held: k
                    .lease
                    .current
                    .must_fence_when_isolated()
                    .then_some(k.lease.required),
                // One boot per simulated host; keeper restarts keep it.
                // Built in this millisecond, after the events before it.
                sent: Some(KeeperClock {
                    boot: i as u128 + 1,
                    ns: self.now * 1_000_000 + self.seq % 1_000_000,
                }),
                // Only the loop's heartbeats say it (agent.rs `heartbeat`).
                promotion_refused: acting_toward.is_none() && k.promotion_refused.is_some(),
                acting_toward,
            },
            synchronous_standby_names: applied,
            acting_toward,
            // Only the loop's heartbeats say it (agent.rs `heartbeat`).
            stopping: acting_toward.is_none() && k.stopping.is_some(),
            // Keepalives send 0 (the monitor never takes it back).
            restart_done: if acting_toward.is_none() {
                k.restart_done
            } else {
                0
            },
        }
    }

    pub(super) fn keeper_step(&mut self, i: usize) {
        if self.stop_check(i) {
            return;
        }
        let hb = self.heartbeat_now(i, None);
        let k = &mut self.keepers[i];
        k.step += 1;
        let (step, inc) = (k.step, k.incarnation);
        k.phase = Phase::Awaiting {
            step,
            sent: self.now,
        };
        if self.link(Peer::Node(i), Peer::Monitor) && !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::HbArrive {
                    node: i,
                    inc,
                    step,
                    hb,
                },
            );
        }
        let timeout = self.t.rpc_timeout;
        self.after(timeout, Ev::HbTimeout(i, inc, step));
    }

    /// The monitor handles a heartbeat or keepalive (`what`) of node `i`
    /// that reached it; the reply, unless the link is cut or the monitor
    /// refused it (an invariant failure).
    pub(super) fn monitor_handles(
        &mut self,
        i: usize,
        hb: &Heartbeat,
        what: &str,
        current: bool,
    ) -> Option<Reply> {
        if !self.link(Peer::Node(i), Peer::Monitor) {
            return None;
        }
        match self.monitor_op(|m, now| m.node_active(hb, now)) {
            Ok(r) => {
                // A keeper at rest is never answered a goal it has no path
                // to from the state it just reported (a keepalive's answer
                // renews the lease only; a heartbeat of a keeper since
                // killed, or one it stopped waiting for, is answered to
                // nobody).
                let reported = hb.report.reported;
                if current
                    && hb.acting_toward.is_none()
                    && !pgpilot_proto::keeper_has_edge(reported, r.goal)
                {
                    let by = if self.operator_goal[i] {
                        "an operator command"
                    } else {
                        "the state machine"
                    };
                    self.fail(
                        0,
                        format!(
                            "the monitor answered a {what} of {} reporting {reported} with goal {} (set by {by}), which it has no path to",
                            name(i),
                            r.goal
                        ),
                    );
                }
                Some(r)
            }
            Err(e) => {
                self.fail(
                    0,
                    format!("the monitor refused a {what} of {}: {e}", name(i)),
                );
                None
            }
        }
    }

    pub(super) fn hb_arrive(&mut self, i: usize, inc: u64, step: u64, hb: Heartbeat) {
        let k = &self.keepers[i];
        let current = k.alive
            && k.incarnation == inc
            && matches!(k.phase, Phase::Awaiting { step: s, .. } if s == step);
        let Some(reply) = self.monitor_handles(i, &hb, "heartbeat", current) else {
            return;
        };
        if !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::ReplyArrive {
                    node: i,
                    inc,
                    step,
                    reply,
                },
            );
        }
    }

    pub(super) fn reply_arrive(&mut self, i: usize, inc: u64, step: u64, reply: Reply) {
        if !self.link(Peer::Node(i), Peer::Monitor) {
            return;
        }
        let k = &self.keepers[i];
        let Phase::Awaiting { step: s, sent } = k.phase else {
            return;
        };
        if !k.alive || k.incarnation != inc || s != step {
            return;
        }
        let primary = reply.primary.and_then(|id| self.monitor.index(id));
        let k = &mut self.keepers[i];
        k.primary = primary;
        k.sync_names = reply.plan.synchronous_standby_names.clone();
        if answer_renews(k.lease.current, reply.goal) {
            k.lease.last_ok_sent = sent;
            k.confirmed = true;
            k.lease.fence_set = reply.plan.fence_set.clone();
            k.lease.required = reply.plan.fence_required;
            k.fenced = false;
            self.guards[i] = k.lease.clone();
        }
        if reply.goal != k.goal {
            k.goal = reply.goal;
        }
        if !k.goal.is_in_election() {
            k.promotion_refused = None;
        }
        k.paused = Some(reply.paused);
        k.restart_requested = reply.restart_requested;
        k.restart_done = k.restart_done.min(reply.restart_requested);
        if k.stopping.is_some() {
            k.stop_reply = reply.stop.as_ref().map(|s| StopReply {
                may_stop: s.may_stop,
                refused: s.refused.clone().unwrap_or_default(),
            });
        }
        if self.stop_check(i) {
            return;
        }
        let k = &self.keepers[i];
        let (from, to) = (k.current, k.goal);
        if from == to && k.restart_requested > k.restart_done {
            self.restart_step(i, from);
            return;
        }
        if from == to {
            self.start_actions(i, plan::steady(from), None);
            return;
        }
        let refused_at = self.keepers[i].promotion_refused;
        if to == S::PreparePromotion
            && refused_at.is_some_and(|at| self.now < at + REFUSAL_RETRY_MS)
        {
            // agent.rs: refused a moment ago; asked again soon.
            self.sleep(i);
            return;
        }
        match plan::plan(from, to) {
            Ok(actions) => self.start_actions(i, actions, Some((from, to))),
            Err(e) => {
                // The keeper stays where it is and says so: its next
                // heartbeat reports that state, and the monitor decides
                // again from it (`core::heartbeat::goal_back_to_reported`).
                if self.keepers[i].last_error.as_deref() != Some(&e.to_string()) {
                    self.log(format!("{}: {e}: reporting {from} again", name(i)));
                    self.keepers[i].last_error = Some(e.to_string());
                }
                self.sleep(i);
            }
        }
    }

    /// A keepalive while the keeper acts (agent.rs `Keepalive`): the
    /// current state and what it observes now, sent every heartbeat
    /// interval until the plan is done.
    pub(super) fn keepalive(&mut self, i: usize, inc: u64, seq: u64) {
        let k = &self.keepers[i];
        if !k.alive
            || k.incarnation != inc
            || !matches!(k.phase, Phase::Acting { seq: s, .. } if s == seq)
        {
            return;
        }
        let toward = match &self.keepers[i].phase {
            Phase::Acting {
                transition: Some((_, to)),
                ..
            } => *to,
            _ => self.keepers[i].current,
        };
        let hb = self.heartbeat_now(i, Some(toward));
        let sent = self.now;
        if self.link(Peer::Node(i), Peer::Monitor) && !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::KeepaliveArrive {
                    node: i,
                    inc,
                    seq,
                    sent,
                    hb,
                },
            );
        }
        let interval = self.t.heartbeat;
        self.after(interval, Ev::Keepalive(i, inc, seq));
    }

    pub(super) fn keepalive_arrive(
        &mut self,
        i: usize,
        inc: u64,
        seq: u64,
        sent: Ms,
        hb: Heartbeat,
    ) {
        let Some(reply) = self.monitor_handles(i, &hb, "keepalive", false) else {
            return;
        };
        if !self.rng.chance(self.loss) {
            let d = self.net_delay();
            self.after(
                d,
                Ev::KeepaliveReply {
                    node: i,
                    inc,
                    seq,
                    sent,
                    reply,
                },
            );
        }
    }

    /// An answered keepalive renews the lease only, as agent.rs
    /// `renew_lease` does; the goal waits for the loop's next heartbeat.
    /// One answered after its plan ended was abandoned by the keeper (and
    /// one not answered within the RPC timeout, by tonic).
    pub(super) fn keepalive_reply(&mut self, i: usize, inc: u64, seq: u64, sent: Ms, reply: Reply) {
        if !self.link(Peer::Node(i), Peer::Monitor)
            || self.now.saturating_sub(sent) > self.t.rpc_timeout
        {
            return;
        }
        let k = &mut self.keepers[i];
        if !k.alive
            || k.incarnation != inc
            || !matches!(k.phase, Phase::Acting { seq: s, .. } if s == seq)
        {
            return;
        }
        if !answer_renews(k.lease.current, reply.goal) {
            return;
        }
        k.lease.last_ok_sent = k.lease.last_ok_sent.max(sent);
        k.confirmed = true;
        k.lease.fence_set = reply.plan.fence_set.clone();
        k.lease.required = reply.plan.fence_required;
        k.fenced = false;
        self.guards[i] = k.lease.clone();
    }

    pub(super) fn heartbeat_failed(&mut self, i: usize) {
        let k = &self.keepers[i];
        if !k.current.is_writable_primary() && k.current == k.goal {
            let steady = plan::steady_without_monitor(k.current);
            self.start_actions(i, steady, None);
        } else {
            self.sleep(i);
        }
    }

    pub(super) fn sleep(&mut self, i: usize) {
        let k = &mut self.keepers[i];
        k.phase = Phase::Sleeping;
        let inc = k.incarnation;
        let hb = self.t.heartbeat;
        self.after(hb, Ev::Step(i, inc));
    }

    pub(super) fn start_actions(
        &mut self,
        i: usize,
        actions: Vec<Action>,
        transition: Option<(S, S)>,
    ) {
        let k = &mut self.keepers[i];
        k.seq += 1;
        k.phase = Phase::Acting {
            actions,
            next: 0,
            transition,
            config_changed: false,
            seq: k.seq,
        };
        let (inc, seq, interval) = (k.incarnation, k.seq, self.t.heartbeat);
        self.after(interval, Ev::Keepalive(i, inc, seq));
        self.next_action(i);
    }

    /// Schedule the end of the next action, or finish the plan.
    pub(super) fn next_action(&mut self, i: usize) {
        let Phase::Acting {
            ref actions,
            next,
            transition,
            seq,
            ..
        } = self.keepers[i].phase
        else {
            return;
        };
        if next >= actions.len() {
            match transition {
                Some((from, to)) => {
                    let k = &mut self.keepers[i];
                    k.current = to;
                    k.lease.current = to;
                    if to == S::PreparePromotion {
                        k.promotion_refused = None;
                    }
                    if k.confirmed {
                        self.guards[i].current = to;
                    }
                    k.last_error = None;
                    k.phase = Phase::Sleeping;
                    let inc = k.incarnation;
                    self.log(format!("{}: keeper {from} -> {to} done", name(i)));
                    self.after(0, Ev::Step(i, inc));
                }
                None => {
                    let k = &mut self.keepers[i];
                    if let Some((plan, asked)) = k.restarting.take() {
                        if plan == seq {
                            k.restart_done = asked;
                            self.log(format!("{}: PostgreSQL restarted as asked", name(i)));
                        }
                    }
                    self.sleep(i)
                }
            }
            return;
        }
        let action = actions[next];
        if action == Action::RewindIfDiverged && !self.diverged_from_upstream(i) {
            // A check that finds nothing takes no virtual time (two cheap
            // queries): the run goes on as if the action were not there.
            if let Phase::Acting { ref mut next, .. } = self.keepers[i].phase {
                *next += 1;
            }
            return self.next_action(i);
        }
        let d = self.action_duration(i, action);
        if action == Action::Start && !self.pgs[i].running && self.pgs[i].has_data {
            self.pgs[i].starting = true;
        }
        let inc = self.keepers[i].incarnation;
        self.after(d, Ev::ActionDone(i, inc, seq, next));
    }

    pub(super) fn action_duration(&mut self, i: usize, action: Action) -> Ms {
        let pg = &self.pgs[i];
        let (lo, hi) = match action {
            Action::InitDb => (300, 700),
            Action::ConfigurePrimary | Action::ConfigureStandby | Action::SyncSlots => (1, 5),
            Action::Start if !pg.running => (150 + pg.recovery_ms, 500 + pg.recovery_ms),
            Action::Stop if pg.running => (100, 400),
            Action::Checkpoint if pg.running => (50, 1500),
            Action::Checkpoint => (1, 3),
            Action::RestartIfPending => (1, 5),
            Action::Start | Action::Stop => (1, 3),
            Action::Reload => (2, 10),
            Action::AdoptOrClone => (400, 1500),
            Action::RewindOrClone => (300, 1200),
            // Only scheduled when it finds a divergence: a rewind follows.
            Action::RewindIfDiverged => (300, 1200),
            Action::WaitReplayCaughtUp => (5, 50),
            Action::BeforePromotion => (5, 300),
            Action::Promote => (100, 400),
        };
        self.rng.range(lo, hi)
    }

    pub(super) fn action_done(&mut self, i: usize) {
        let Phase::Acting {
            ref actions,
            next,
            config_changed,
            ..
        } = self.keepers[i].phase
        else {
            return;
        };
        let action = actions[next];
        match self.apply_action(i, action, config_changed) {
            Ok(changed) => {
                if let Phase::Acting {
                    ref mut next,
                    ref mut config_changed,
                    ..
                } = self.keepers[i].phase
                {
                    *next += 1;
                    *config_changed |= changed;
                }
                self.next_action(i);
            }
            Err(e) => {
                if self.keepers[i].last_error.as_deref() != Some(&e) {
                    self.log(format!("{}: keeper step failed: {e}", name(i)));
                    self.keepers[i].last_error = Some(e);
                }
                self.sleep(i);
            }
        }
    }

    /// The keeper's fence task, with the keeper's own lease.
    pub(super) fn fence_tick(&mut self, i: usize) {
        let lease = self.keepers[i].lease.clone();
        self.fence_with(i, &lease, "fence");
    }

    /// The fence guard: the same rule, with the lease the keeper last
    /// handed it, while the keeper is dead or restarted and not yet
    /// answered (afterwards both hold the same lease, and the keeper's own
    /// fence covers it). It dies with the host.
    pub(super) fn guard_tick(&mut self, i: usize) {
        let k = &self.keepers[i];
        if k.alive && k.confirmed {
            self.guard_ticking[i] = false;
            return;
        }
        let lease = self.guards[i].clone();
        self.fence_with(i, &lease, "fence guard");
        self.after(FENCE_TICK_MS, Ev::GuardTick(i));
    }

    fn fence_with(&mut self, i: usize, lease: &Lease, who: &str) {
        if self.opts.keeper_flaw == KeeperFlaw::NoFence {
            return;
        }
        let since = Duration::from_millis(self.now.saturating_sub(lease.last_ok_sent));
        if !fence_armed(
            lease.current,
            since,
            Duration::from_millis(self.t.fence_timeout),
        ) {
            return;
        }
        let (running, _, _, streaming) = self.observe(i);
        let alive = running || self.pgs[i].starting;
        match fence_step(alive, &streaming, &lease.fence_set, lease.required) {
            FenceStep::AlreadyStopped => self.keepers[i].fenced = true,
            FenceStep::KeepServing => {}
            FenceStep::Stop => {
                self.log(format!(
                    "{}: {who}: monitor out of reach and {} of {:?} streaming (need {}): stopping PostgreSQL",
                    name(i),
                    streaming.len(),
                    lease.fence_set,
                    lease.required
                ));
                self.pg_stop(i, false);
                self.keepers[i].fenced = true;
                self.stats.fences += 1;
            }
        }
    }

    pub(super) fn keeper_crash(&mut self, i: usize) {
        let k = &self.keepers[i];
        if !k.alive {
            return;
        }
        // Killed in the middle of an action: it may or may not have happened.
        if let Phase::Acting {
            ref actions,
            next,
            config_changed,
            ..
        } = k.phase
        {
            let action = actions[next.min(actions.len().saturating_sub(1))];
            if next < actions.len() && self.rng.chance(0.5) {
                let _ = self.apply_action(i, action, config_changed);
            }
        }
        // A start not done above never happened.
        self.pgs[i].starting = false;
        if self.pgs[i].running && !self.pgs[i].in_recovery {
            self.pgs[i].outlived_keeper = true;
        }
        self.keeper_gone(i);
        let k = &self.keepers[i];
        let line = format!(
            "{}: keeper killed (state file: {} goal {})",
            name(i),
            k.current,
            k.goal
        );
        self.log(line);
    }

    /// A node stopped on purpose (SIGTERM to its keeper): from now on its
    /// heartbeats say so, and [`World::stop_check`] ends it.
    pub(super) fn keeper_stop_asked(&mut self, i: usize) {
        let k = &mut self.keepers[i];
        if !k.alive || k.stopping.is_some() {
            return;
        }
        k.stopping = Some(self.now);
        k.stop_reply = None;
        self.log(format!(
            "fault: {} stopped on purpose (SIGTERM to its keeper)",
            name(i)
        ));
    }

    /// The stop rule of a stopping keeper (keeper/src/stopping.rs, as the
    /// real loop applies it): true once the keeper exited, its PostgreSQL
    /// stopped (fast: the standbys connected get its last WAL) unless the
    /// formation is paused.
    pub(super) fn stop_check(&mut self, i: usize) -> bool {
        let k = &self.keepers[i];
        let Some(asked) = k.stopping.filter(|_| k.alive) else {
            return false;
        };
        let verdict = stop_rule::verdict(
            StopKind::Node,
            k.paused,
            k.stop_reply.as_ref(),
            Duration::from_millis(self.now.saturating_sub(asked)),
            self.t.stop_timeout,
        );
        let why = match verdict {
            Verdict::Wait => return false,
            Verdict::StopPostgres(why) => {
                self.pg_stop(i, true);
                why
            }
            Verdict::LeaveRunning(why) => {
                if self.pgs[i].running && !self.pgs[i].in_recovery {
                    self.pgs[i].outlived_keeper = true;
                }
                why
            }
        };
        self.keeper_gone(i);
        self.keepers[i].stopping = None;
        self.log(format!("{}: keeper exits: {why}", name(i)));
        // Started again later, as after patching its host.
        let d = self.rng.range(500, 8_000);
        self.after(d, Ev::KeeperRestart(i));
        true
    }

    /// The keeper process of node `i` is gone (killed or exited): its
    /// fence guard goes on alone.
    fn keeper_gone(&mut self, i: usize) {
        if !self.guard_ticking[i] {
            self.guard_ticking[i] = true;
            self.after(FENCE_TICK_MS, Ev::GuardTick(i));
        }
        let k = &mut self.keepers[i];
        k.alive = false;
        k.incarnation += 1;
        k.phase = Phase::Dead;
    }

    /// agent.rs `restart_step`: restart PostgreSQL at rest in `state`, as
    /// asked through the monitor (a primary checkpoints first); a server
    /// not running has nothing to restart.
    fn restart_step(&mut self, i: usize, state: S) {
        let asked = self.keepers[i].restart_requested;
        if !self.pgs[i].running {
            self.keepers[i].restart_done = asked;
            self.log(format!(
                "{}: nothing to restart (PostgreSQL not running)",
                name(i)
            ));
            self.sleep(i);
            return;
        }
        self.log(format!("{}: restarting PostgreSQL as asked", name(i)));
        self.start_actions(i, plan::restart(state), None);
        let k = &mut self.keepers[i];
        k.restarting = Some((k.seq, asked));
    }

    pub(super) fn keeper_restart(&mut self, i: usize) {
        if self.keepers[i].alive {
            return;
        }
        let now = self.now;
        let k = &mut self.keepers[i];
        k.alive = true;
        k.incarnation += 1;
        k.lease = Lease {
            last_ok_sent: now,
            current: k.current,
            fence_set: Vec::new(),
            required: fence_required_after_restart(),
        };
        k.fenced = false;
        k.confirmed = false;
        k.primary = None;
        k.sync_names.clear();
        k.phase = Phase::Sleeping;
        k.last_error = None;
        k.start_failures = 0;
        k.reloaded = false;
        k.stopping = None;
        k.stop_reply = None;
        k.paused = None;
        k.restarting = None;
        k.promotion_refused = None;
        let inc = k.incarnation;
        self.log(format!("{}: keeper restarted", name(i)));
        self.after(1, Ev::Step(i, inc));
        self.after(FENCE_TICK_MS, Ev::FenceTick(i, inc));
    }
}
