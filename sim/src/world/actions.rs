//! The simulated PostgreSQL actions a keeper's plan carries out (the
//! executor of keeper/src/executor.rs, on the simulated servers): start,
//! stop, reload, configure, clone, rewind, the divergence check, promote.

use super::*;

impl World {
    /// Carry out one action on the simulated PostgreSQL, as the executor in
    /// agent.rs does; true when the configuration changed.
    pub(super) fn apply_action(
        &mut self,
        i: usize,
        action: Action,
        config_changed: bool,
    ) -> Result<bool, String> {
        let upstream = self.keepers[i].primary;
        match action {
            Action::InitDb => {
                let pg = &mut self.pgs[i];
                if !pg.has_data {
                    pg.has_data = true;
                    pg.timeline = 1;
                    pg.history.clear();
                    pg.generation += 1;
                }
                Ok(false)
            }
            Action::ConfigurePrimary => {
                let sync = parse_sync(&self.keepers[i].sync_names);
                let pg = &mut self.pgs[i];
                let changed = pg.conf_standby || pg.conf_sync != sync;
                pg.conf_upstream = None;
                pg.conf_standby = false;
                pg.conf_sync = sync;
                Ok(changed)
            }
            Action::ConfigureStandby => {
                // No primary named: a standby stays one and follows nobody
                // (executor.rs, `is_configured_standby`).
                let standby = self.pgs[i].has_data && self.pgs[i].conf_standby;
                if upstream.is_none() && !standby {
                    return Err("the monitor names no primary to follow yet".into());
                }
                let pg = &mut self.pgs[i];
                let changed =
                    pg.conf_upstream != upstream || !pg.conf_standby || pg.conf_sync.is_some();
                pg.conf_upstream = upstream;
                pg.conf_standby = true;
                pg.conf_sync = None;
                Ok(changed)
            }
            Action::Start => self.start_action(i),
            // Changes nothing the simulation models; it only takes time.
            Action::Checkpoint => Ok(false),
            // The simulated first node always starts with its settings.
            Action::RestartIfPending => Ok(false),
            Action::Reload => {
                if config_changed || !self.keepers[i].reloaded {
                    self.pg_reload(i);
                    self.keepers[i].reloaded = true;
                }
                Ok(false)
            }
            Action::Stop => {
                self.pg_stop(i, true);
                Ok(false)
            }
            // Simulated nodes join with empty data directories: a join
            // never finds data to keep, so every one is a clone.
            Action::AdoptOrClone => {
                let u = upstream.ok_or("the monitor names no primary to follow yet")?;
                self.clone_from(i, u)?;
                Ok(true)
            }
            Action::RewindOrClone => self.rewind_or_clone_action(i, upstream),
            Action::RewindIfDiverged => self.rewind_if_diverged_action(i, upstream),
            Action::BeforePromotion => {
                if self.hook_refuses[i] {
                    self.keepers[i].promotion_refused = Some(self.now);
                    self.stats.refusals += 1;
                    Err("the before_promotion hook refused this node's promotion".into())
                } else {
                    Ok(false)
                }
            }
            Action::WaitReplayCaughtUp => {
                if self.pgs[i].running {
                    Ok(false)
                } else {
                    Err("PostgreSQL is not running: cannot replay".into())
                }
            }
            Action::Promote => self.promote_action(i),
            Action::SyncSlots => Ok(false),
        }
    }

    /// `Action::Start`: a failed start counts toward the monitor's limit
    /// unless the fence stopped it.
    pub(super) fn start_action(&mut self, i: usize) -> Result<bool, String> {
        let pg = &self.pgs[i];
        let result = if !pg.running && !pg.starting && pg.has_data {
            // Stopped while it started (the fence, a crash).
            Err("PostgreSQL exited before accepting connections".to_string())
        } else {
            self.pg_start(i)
        };
        match result {
            Ok(()) => {
                self.keepers[i].start_failures = 0;
                Ok(false)
            }
            Err(e) => {
                if !self.pgs[i].running && !self.keepers[i].fenced {
                    self.keepers[i].start_failures += 1;
                }
                Err(e)
            }
        }
    }

    /// `Action::RewindOrClone`: pg_rewind back to the common prefix, then
    /// start as a standby of the upstream; a fresh clone without data.
    pub(super) fn rewind_or_clone_action(
        &mut self,
        i: usize,
        upstream: Option<usize>,
    ) -> Result<bool, String> {
        let u = upstream.ok_or("the monitor names no primary to follow yet")?;
        if !self.link(Peer::Node(i), Peer::Node(u)) || !self.pgs[u].running {
            return Err(format!("cannot reach {} to rewind or clone", name(u)));
        }
        if self.pgs[i].has_data {
            // pg_rewind: back to the common prefix, then start as a
            // standby of the upstream.
            let keep = common_prefix(&self.pgs[i].history, &self.pgs[u].history);
            let tl = self.pgs[u].timeline;
            let pg = &mut self.pgs[i];
            if keep < pg.history.len() {
                pg.history.truncate(keep);
                pg.generation += 1;
            }
            pg.timeline = tl;
            pg.in_recovery = true;
            pg.conf_upstream = Some(u);
            pg.conf_standby = true;
            pg.conf_sync = None;
            self.pg_start(i)?;
        } else {
            self.clone_from(i, u)?;
        }
        Ok(true)
    }

    /// `Action::RewindIfDiverged`: what `RewindOrClone` does, when the
    /// upstream is reachable, runs as a primary, and this node holds WAL
    /// its history does not (its history is no prefix of the upstream's);
    /// nothing otherwise — the keeper's check cannot be made then, and a
    /// later steady state checks again.
    pub(super) fn rewind_if_diverged_action(
        &mut self,
        i: usize,
        upstream: Option<usize>,
    ) -> Result<bool, String> {
        let u = upstream.ok_or("the monitor names no primary to follow yet")?;
        if !self.diverged_from_upstream(i) {
            return Ok(false);
        }
        self.log(format!("{}: diverged from {}: rewinding", name(i), name(u)));
        self.rewind_or_clone_action(i, Some(u))
    }

    /// Whether the keeper's divergence check would find node `i`'s WAL
    /// diverged from its upstream's: the upstream reachable and running as
    /// a primary, and node `i`'s history no prefix of the upstream's.
    pub(super) fn diverged_from_upstream(&self, i: usize) -> bool {
        let Some(u) = self.keepers[i].primary else {
            return false;
        };
        self.link(Peer::Node(i), Peer::Node(u))
            && self.pgs[u].running
            && !self.pgs[u].in_recovery
            && self.pgs[i].has_data
            && !is_prefix(&self.pgs[i].history, &self.pgs[u].history)
    }

    /// `Action::Promote`: the group's primary from now on.
    pub(super) fn promote_action(&mut self, i: usize) -> Result<bool, String> {
        let pg = &mut self.pgs[i];
        if !pg.running {
            return Err("PostgreSQL is not running: cannot promote".into());
        }
        if pg.in_recovery {
            pg.in_recovery = false;
            pg.timeline += 1;
            pg.upstream = None;
            pg.conf_upstream = None;
            pg.conf_standby = false;
            pg.receiving = false;
            let (tl, lsn) = (pg.timeline, pg.lsn());
            self.stats.promotions += 1;
            if !self.primary_had_sync {
                self.forgive_missing_on(i);
            }
            self.log(format!(
                "{}: PostgreSQL promoted at {} on timeline {tl}",
                name(i),
                pgpilot_proto::lsn::format_lsn(lsn)
            ));
            // The group's primary from now on, even if it fails
            // before the monitor hears it reached its goal: a
            // commit lost with it is matched against its fence set.
            if self.current_primary != Some(i) {
                self.previous_primary = self.current_primary;
                self.current_primary = Some(i);
            }
        }
        Ok(false)
    }

    pub(super) fn clone_from(&mut self, i: usize, u: usize) -> Result<(), String> {
        if !self.link(Peer::Node(i), Peer::Node(u)) || !self.pgs[u].running {
            return Err(format!("pg_basebackup: cannot reach {}", name(u)));
        }
        if self.pgs[i].running {
            return Err("pg_basebackup: PostgreSQL is running here".into());
        }
        let (history, tl) = (self.pgs[u].history.clone(), self.pgs[u].timeline);
        let pg = &mut self.pgs[i];
        pg.has_data = true;
        pg.history = history;
        pg.timeline = tl;
        pg.generation += 1;
        pg.in_recovery = true;
        pg.conf_standby = true;
        Ok(())
    }

    pub(super) fn pg_start(&mut self, i: usize) -> Result<(), String> {
        let now = self.now;
        let pg = &mut self.pgs[i];
        if !pg.has_data {
            return Err("no data directory to start".into());
        }
        if pg.running {
            return Ok(());
        }
        pg.recovery_ms = 0;
        pg.starting = false;
        if pg.failing_starts > 0 {
            pg.failing_starts -= 1;
            let left = pg.failing_starts;
            self.log(format!(
                "{}: PostgreSQL exited before accepting connections ({left} more starts fail)",
                name(i)
            ));
            return Err("PostgreSQL exited before accepting connections".into());
        }
        let standby = pg.conf_standby;
        if pg.in_recovery && !standby {
            // Started without standby.signal: recovery ends, a new timeline.
            pg.timeline += 1;
        }
        pg.running = true;
        pg.in_recovery = standby;
        pg.upstream = pg.conf_upstream;
        pg.sync = pg.conf_sync.clone();
        pg.receiving = false;
        pg.last_contact = now;
        pg.senders.clear();
        pg.incarnation += 1;
        let what = if standby {
            match pg.upstream {
                Some(u) => format!("as a standby of {}", name(u)),
                None => "as a standby following nobody".to_string(),
            }
        } else {
            format!(
                "as a primary, sync {:?}",
                pg.sync.as_ref().map(|s| (s.n, s.names.clone()))
            )
        };
        self.log(format!("{}: PostgreSQL started {what}", name(i)));
        Ok(())
    }

    pub(super) fn pg_reload(&mut self, i: usize) {
        let pg = &mut self.pgs[i];
        if !pg.running {
            return;
        }
        if pg.sync != pg.conf_sync {
            pg.sync = pg.conf_sync.clone();
            let s = pg.sync.as_ref().map(|s| (s.n, s.names.clone()));
            self.log(format!("{}: synchronous replication now {s:?}", name(i)));
        }
        let pg = &mut self.pgs[i];
        if pg.in_recovery && pg.upstream != pg.conf_upstream {
            pg.upstream = pg.conf_upstream;
            pg.receiving = false;
        }
    }

    /// Stop PostgreSQL: a fast shutdown first hands its WAL to connected
    /// standbys; an immediate one (a crash, the fence) does not.
    pub(super) fn pg_stop(&mut self, i: usize, fast: bool) {
        if !self.pgs[i].running {
            if self.pgs[i].starting {
                let pg = &mut self.pgs[i];
                pg.starting = false;
                pg.incarnation += 1;
                self.log(format!("{}: PostgreSQL stopped while starting", name(i)));
                // `pg_ctl start` returns once its postmaster is gone: the
                // start under way fails now, not at the end of its recovery.
                let k = &self.keepers[i];
                if let Phase::Acting {
                    seq,
                    next,
                    ref actions,
                    ..
                } = k.phase
                {
                    if k.alive && actions.get(next) == Some(&Action::Start) {
                        let inc = k.incarnation;
                        self.after(PUMP_MS, Ev::ActionDone(i, inc, seq, next));
                    }
                }
            }
            return;
        }
        if fast && !self.pgs[i].in_recovery {
            let senders: Vec<usize> = self.pgs[i].senders.keys().copied().collect();
            for s in senders {
                if self.link(Peer::Node(i), Peer::Node(s))
                    && self.pgs[s].running
                    && self.pgs[s].upstream == Some(i)
                    && is_prefix(&self.pgs[s].history, &self.pgs[i].history)
                {
                    let h = self.pgs[i].history.clone();
                    self.pgs[s].history = h;
                }
            }
        }
        let pg = &mut self.pgs[i];
        pg.running = false;
        pg.outlived_keeper = false;
        pg.receiving = false;
        pg.senders.clear();
        pg.incarnation += 1;
        let how = if fast { "stopped" } else { "stopped at once" };
        self.log(format!("{}: PostgreSQL {how}", name(i)));
    }
}
