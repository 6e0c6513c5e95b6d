//! The invariant checks run after every event (one writer, every
//! acknowledged commit on the primary, priority 0 never elected, the group
//! settles) and the state table printed with a violation.

use super::*;

impl World {
    // ------------------------------------------------------------------
    // Invariants
    // ------------------------------------------------------------------

    /// Can node `u` acknowledge a commit right now?
    pub(super) fn accepts_writes(&self, u: usize) -> bool {
        let pg = &self.pgs[u];
        if !pg.running || pg.in_recovery {
            return false;
        }
        let Some(sync) = &pg.sync else {
            return true;
        };
        let streaming = pg
            .senders
            .keys()
            .filter(|&&s| {
                self.link(Peer::Node(u), Peer::Node(s))
                    && self.pgs[s].running
                    && self.pgs[s].upstream == Some(u)
                    && sync.names.contains(&pgpilot_proto::lsn::application_name(
                        self.keepers[s].node_id,
                    ))
            })
            .count() as u32;
        streaming >= sync.n
    }

    /// The nodes the group has as its primary: assigned and reached a
    /// writable primary state, PostgreSQL running out of recovery.
    /// The group's primary ran without synchronous replication (it was
    /// `wait_primary`, or had no quorum standby): a failover from it may
    /// lose any commit, as the operator chose with number_sync_standbys = 0
    /// (DESIGN §5 promises no loss only with synchronous replication on).
    /// Commits the new primary lacks are no longer checked.
    pub(super) fn forgive_missing_on(&mut self, i: usize) {
        let before = self.acked_sync.len();
        let history = &self.pgs[i].history;
        let keep: Vec<bool> = self
            .acked_sync
            .iter()
            .map(|id| history.binary_search(id).is_ok())
            .collect();
        let mut k = keep.iter();
        self.acked_sync.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        self.acked_by.retain(|_| *k.next().expect("same length"));
        self.checked = vec![(u64::MAX, 0); self.pgs.len()];
        let lost = before - self.acked_sync.len();
        if lost > 0 {
            self.log(format!(
                "{}: promoted after a primary without synchronous replication: {lost} earlier synchronous commits it lacks are not protected",
                name(i)
            ));
        }
    }

    pub(super) fn group_primaries(&self) -> Vec<usize> {
        (0..self.pgs.len())
            .filter(|&i| {
                let Some(m) = self.monitor.nodes.get(i) else {
                    return false;
                };
                m.goal.is_writable_primary()
                    && m.reported == m.goal
                    && self.pgs[i].running
                    && !self.pgs[i].in_recovery
            })
            .collect()
    }

    pub(super) fn check_write_safety(&mut self) {
        // 1. At most one node accepts writes.
        let writers: Vec<usize> = (0..self.pgs.len())
            .filter(|&u| self.accepts_writes(u))
            .collect();
        if writers.len() > 1 {
            let names: Vec<String> = writers.iter().map(|&u| name(u)).collect();
            let keeperless: Vec<String> = writers
                .iter()
                .filter(|&&u| self.pgs[u].outlived_keeper)
                .map(|&u| name(u))
                .collect();
            self.fail(
                1,
                format!(
                    "{} accept writes at the same time{}",
                    names.join(" and "),
                    if keeperless.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (the PostgreSQL of {} has run on since its keeper was killed)",
                            keeperless.join(", ")
                        )
                    }
                ),
            );
            return;
        }
        // 2. The group's primary holds every commit acknowledged under
        // synchronous replication.
        if self.data_loss_allowed || self.acked_sync.is_empty() {
            if let Some(&p) = self.group_primaries().first() {
                self.primary_had_sync = self.pgs[p].sync.is_some();
                if self.current_primary != Some(p) {
                    self.previous_primary = self.current_primary;
                    self.current_primary = Some(p);
                }
            }
            return;
        }
        for p in self.group_primaries() {
            self.primary_had_sync = self.pgs[p].sync.is_some();
            if self.current_primary != Some(p) {
                self.previous_primary = self.current_primary;
                self.current_primary = Some(p);
            }
            let gen = self.pgs[p].generation;
            let (checked_gen, from) = self.checked[p];
            let from = if checked_gen == gen { from } else { 0 };
            for k in from..self.acked_sync.len() {
                let id = self.acked_sync[k];
                if self.pgs[p].history.binary_search(&id).is_err() {
                    let (by, ackers) = self.acked_by[k].clone();
                    let names: Vec<String> = ackers.iter().map(|&a| name(a)).collect();
                    // The primary before this one: did any member of its
                    // fence set hold the commit?
                    let q = self.previous_primary.unwrap_or(by);
                    let fence_set = self.monitor.nodes[q].election_fence(&self.monitor.nodes).0;
                    let left = (0..self.pgs.len()).all(|h| {
                        self.pgs[h].history.binary_search(&id).is_err()
                            || !fence_set.contains(&pgpilot_proto::lsn::application_name(
                                self.keepers[h].node_id,
                            ))
                    });
                    let what = format!(
                        "write {id}, acknowledged by {} under synchronous replication (confirmed by {}), is missing on the primary {}{}",
                        name(by),
                        names.join(", "),
                        name(p),
                        if left {
                            format!(
                                "; no member of the fence set of the previous primary {} ({fence_set:?}) had it",
                                name(q)
                            )
                        } else {
                            String::new()
                        }
                    );
                    self.fail(2, what);
                    return;
                }
            }
            self.checked[p] = (gen, self.acked_sync.len());
        }
    }

    pub(super) fn periodic_check(&mut self) {
        let converged = self.converged();
        if !self.faults_on && self.faults_over_at.is_none() {
            // Forming the group.
            if converged {
                self.log("group formed: faults start".into());
                if self.setup.number_sync_standbys > 0 {
                    let v = self.setup.number_sync_standbys;
                    let r = self.operator_op(|m, now| m.set_number_sync_standbys(v, now));
                    self.log(format!("operator: set-number-sync-standbys {v}: {r:?}"));
                }
                self.faults_on = true;
                let end = self.now + self.setup.fault_ms;
                self.at(end, Ev::FaultsOver);
                self.after(self.setup.fault_gap.0, Ev::Fault);
            } else if self.now > FORM_DEADLINE_MS {
                self.fail(
                    4,
                    format!(
                        "the group did not form within {} s",
                        FORM_DEADLINE_MS / 1000
                    ),
                );
            }
            return;
        }
        let Some(over) = self.faults_over_at else {
            return;
        };
        let stuck = self.monitor.waiting.iter().any(|w| w.is_election_stuck());
        if stuck
            && self.forces_after_faults < MAX_FORCES
            && self.now > self.last_force.unwrap_or(over) + STUCK_FORCE_MS
        {
            // What an operator does with an election that says it is stuck
            // (the documented double-fault case): accept the data loss —
            // again if it says so again (an override counts for one outage:
            // an old primary heard meanwhile ends it).
            self.last_force = Some(self.now);
            self.forces_after_faults += 1;
            self.stats.forced = true;
            let r = self.operator_op(|m, now| m.force_election(now));
            self.log(format!(
                "operator: perform-failover --allow-data-loss (election stuck since the faults stopped): {r:?}"
            ));
            if r.is_ok() {
                self.data_loss_allowed = true;
            }
        }
        // What an operator does with a node left in maintenance once the
        // work is over: take it out, again until the monitor accepts (it
        // refuses while the node is still on its way in).
        for i in 0..self.monitor.nodes.len() {
            if matches!(
                self.monitor.nodes[i].goal,
                S::Maintenance | S::WaitMaintenance
            ) {
                let node = self.monitor.nodes[i].name.clone();
                if let Ok(m) = self.operator_op(|m, now| m.set_maintenance(&node, false, now)) {
                    self.log(format!("operator: disable-maintenance {node}: {m}"));
                }
            }
        }
        if converged {
            self.stats.settle_ms = self.now - over;
            self.log(format!(
                "settled {:.1} s after the faults stopped",
                (self.now - over) as f64 / 1000.0
            ));
            self.settled = true;
        } else if self.now > over + self.liveness_bound() {
            let diverged: Vec<String> = (0..self.pgs.len())
                .filter(|&s| {
                    let pg = &self.pgs[s];
                    pg.running
                        && pg.in_recovery
                        && pg.upstream.is_some_and(|u| {
                            self.pgs[u].running && !is_prefix(&pg.history, &self.pgs[u].history)
                        })
                })
                .map(name)
                .collect();
            self.fail(
                4,
                format!(
                    "the group did not settle within {:.1} s after the faults stopped (the bound derived from the timeouts{}){}",
                    self.liveness_bound() as f64 / 1000.0,
                    match self.forces_after_faults {
                        0 => String::new(),
                        1 => ", plus the wait before an operator forced the stuck election".to_string(),
                        n => format!(", plus the waits before an operator forced the stuck election {n} times"),
                    },
                    if diverged.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; the WAL of {} diverged from its upstream's",
                            diverged.join(", ")
                        )
                    }
                ),
            );
        }
    }

    /// The liveness bound: derived from the timeouts, plus the wait before
    /// each time an operator forced an election that said it was stuck (a
    /// double fault).
    fn liveness_bound(&self) -> Ms {
        self.t.liveness_ms() + Ms::from(self.forces_after_faults) * STUCK_FORCE_MS
    }

    /// Every keeper alive and at its goal, the monitor agreeing, goals
    /// steady, and one running primary.
    pub(super) fn converged(&self) -> bool {
        if self.monitor.nodes.len() != self.pgs.len() {
            return false;
        }
        let mut primaries = 0;
        for (i, m) in self.monitor.nodes.iter().enumerate() {
            let k = &self.keepers[i];
            if !k.alive || k.current != m.goal || k.goal != m.goal || m.reported != m.goal {
                return false;
            }
            match m.goal {
                S::Single | S::WaitPrimary | S::Primary => {
                    if !self.pgs[i].running || self.pgs[i].in_recovery {
                        return false;
                    }
                    primaries += 1;
                }
                S::Secondary => {
                    if !self.pgs[i].running || !self.pgs[i].receiving {
                        return false;
                    }
                }
                S::Maintenance => {}
                _ => return false,
            }
        }
        primaries == 1
    }

    /// One line per node: the monitor's view, the keeper's, PostgreSQL's.
    pub fn state_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "number_sync_standbys {}; partitions {:?}; loss {}; slow {}",
            self.monitor.number_sync_standbys,
            self.partitions.values().collect::<Vec<_>>(),
            self.loss,
            self.slow
        );
        for w in &self.monitor.waiting {
            let _ = writeln!(out, "waiting ({}): {w}", w.kind());
        }
        for i in 0..self.pgs.len() {
            let pg = &self.pgs[i];
            let k = &self.keepers[i];
            let m = self.monitor.nodes.get(i);
            let _ = writeln!(
                out,
                "{}: monitor {} -> {} (prio {}, quorum {}, fence {:?}/{}) | keeper {} {} -> {} {} | pg {} {} tl {} lsn {} upstream {:?} receiving {} senders {:?} sync {:?}",
                name(i),
                m.map(|m| m.reported.as_str()).unwrap_or("-"),
                m.map(|m| m.goal.as_str()).unwrap_or("-"),
                m.map(|m| m.candidate_priority).unwrap_or(0),
                m.map(|m| m.replication_quorum).unwrap_or(false),
                m.map(|m| m.fence_set.clone()).unwrap_or_default(),
                m.map(|m| m.fence_required).unwrap_or(0),
                if k.alive { "alive" } else { "dead" },
                k.current,
                k.goal,
                match &k.phase {
                    Phase::Dead => "(dead)".to_string(),
                    Phase::Sleeping => "(sleeping)".to_string(),
                    Phase::Awaiting { step, .. } => format!("(awaiting reply {step})"),
                    Phase::Acting { actions, next, .. } =>
                        format!("(acting {:?})", actions.get(*next)),
                },
                if pg.running { "running" } else { "stopped" },
                if pg.in_recovery { "standby" } else { "primary" },
                pg.timeline,
                pgpilot_proto::lsn::format_lsn(pg.lsn()),
                pg.upstream.map(name),
                pg.receiving,
                pg.senders.keys().map(|&s| name(s)).collect::<Vec<_>>(),
                pg.sync.as_ref().map(|s| (s.n, s.names.clone())),
            );
        }
        out
    }
}
