//! The fault schedule (crashes, partitions, lost and slow heartbeats) and
//! the operator commands as the CLI sends them; the end of the faults.

use super::*;

impl World {
    // ------------------------------------------------------------------
    // Faults and operator commands
    // ------------------------------------------------------------------

    pub(super) fn fault(&mut self) {
        self.stats.faults += 1;
        let n = self.pgs.len();
        let x = self.rng.below(n);
        let roll = self.rng.below(100);
        match roll {
            0..=11 => {
                // The next start may take long (crash recovery; sometimes
                // past postgres_restart_timeout) or fail a few times.
                let (recovery, failing) = match self.rng.below(10) {
                    0..=2 => (self.rng.range(1_000, MAX_CRASH_RECOVERY_MS), 0),
                    3 => (0, self.rng.range(1, 6) as u32),
                    _ => (0, 0),
                };
                self.log(format!(
                    "fault: PostgreSQL on {} crashes (recovery {recovery} ms, {failing} failing starts)",
                    name(x)
                ));
                self.pg_stop(x, false);
                self.pgs[x].recovery_ms = recovery;
                self.pgs[x].failing_starts = failing;
            }
            12..=21 => {
                self.keeper_crash(x);
                let d = self.rng.range(100, 5000);
                self.after(d, Ev::KeeperRestart(x));
            }
            22..=29 => {
                self.log(format!("fault: host of {} crashes", name(x)));
                self.pg_stop(x, false);
                self.keeper_crash(x);
                let d = self.rng.range(500, 6000);
                self.after(d, Ev::KeeperRestart(x));
            }
            30..=54 => self.partition(x),
            55..=61 => {
                self.loss = *self.rng.pick(&[0.2, 0.5, 0.8, 1.0]);
                let d = self.rng.range(500, 5000);
                self.log(format!(
                    "fault: {:.0} % of heartbeats and replies lost for {d} ms",
                    self.loss * 100.0
                ));
                self.after(d, Ev::EndLoss);
            }
            62..=67 => {
                self.slow = true;
                let d = self.rng.range(500, 5000);
                self.log(format!(
                    "fault: monitor messages take 100–900 ms for {d} ms"
                ));
                self.after(d, Ev::EndSlow);
            }
            68..=92 => self.operator(x),
            93..=96 => self.keeper_stop_asked(x),
            97 | 98 => {
                self.hook_refuses[x] = true;
                let d = self.rng.range(1_000, 15_000);
                self.log(format!(
                    "fault: the before_promotion hook of {} refuses for {d} ms",
                    name(x)
                ));
                self.after(d, Ev::EndHookRefusal(x));
            }
            _ => {}
        }
    }

    pub(super) fn partition(&mut self, x: usize) {
        let n = self.pgs.len();
        let others: Vec<usize> = (0..n).filter(|&j| j != x).collect();
        let me = Peer::Node(x);
        let (what, cut): (String, Vec<(Peer, Peer)>) = match self.rng.below(6) {
            0 => (format!("{} | monitor", name(x)), vec![(me, Peer::Monitor)]),
            1 => (
                format!("{} | other nodes", name(x)),
                others.iter().map(|&j| (me, Peer::Node(j))).collect(),
            ),
            2 => {
                let mut cut: Vec<(Peer, Peer)> =
                    others.iter().map(|&j| (me, Peer::Node(j))).collect();
                cut.push((me, Peer::Monitor));
                cut.push((me, Peer::Client));
                (format!("{} | everything", name(x)), cut)
            }
            3 if self.current_primary == Some(x) && self.keepers[x].alive => {
                // The primary cut off from everything, and its keeper
                // killed while it is: only its fence guard can stop it.
                let mut cut: Vec<(Peer, Peer)> =
                    others.iter().map(|&j| (me, Peer::Node(j))).collect();
                cut.push((me, Peer::Monitor));
                self.keeper_crash(x);
                let d = self.rng.range(500, 10_000);
                self.after(d, Ev::KeeperRestart(x));
                (
                    format!("{} | everything but the client, its keeper killed", name(x)),
                    cut,
                )
            }
            3 => (format!("{} | client", name(x)), vec![(me, Peer::Client)]),
            4 => {
                let y = *self.rng.pick(&others);
                (
                    format!("{} | {}", name(x), name(y)),
                    vec![(me, Peer::Node(y))],
                )
            }
            _ => (
                "monitor | every node".to_string(),
                (0..n).map(|j| (Peer::Monitor, Peer::Node(j))).collect(),
            ),
        };
        let id = self.next_partition;
        self.next_partition += 1;
        let d = self.rng.range(300, 8000);
        self.log(format!("fault: partition {id}: {what} for {d} ms"));
        self.partitions.insert(id, cut);
        self.after(d, Ev::Heal(id));
    }

    /// An operator command, as the CLI sends it; the monitor may refuse it.
    pub(super) fn operator(&mut self, x: usize) {
        let node = name(x);
        let kind = self.rng.below(12);
        let prio = *self.rng.pick(&[0, 10, 50, 100]);
        let quorum = self.rng.chance(0.5);
        let nss = self.rng.range(0, 2) as u32;
        let in_maintenance = self
            .monitor
            .nodes
            .get(x)
            .is_some_and(|n| n.goal == S::Maintenance);
        let (what, result) = match kind {
            0 | 1 => (
                "perform-failover".to_string(),
                self.operator_op(|m, now| m.perform_failover(None, now)),
            ),
            2 => (
                format!("perform-switchover --to {node}"),
                self.operator_op(|m, now| m.perform_failover(Some(&node), now)),
            ),
            3 if in_maintenance => (
                format!("disable-maintenance {node}"),
                self.operator_op(|m, now| m.set_maintenance(&node, false, now)),
            ),
            3 | 4 => (
                format!("enable-maintenance {node}"),
                self.operator_op(|m, now| m.set_maintenance(&node, true, now)),
            ),
            5 => (
                format!("set-number-sync-standbys {nss}"),
                self.operator_op(|m, now| m.set_number_sync_standbys(nss, now)),
            ),
            6 => (
                format!("set-candidate-priority {node} {prio}"),
                self.operator_op(|m, now| m.set_node_settings(&node, Some(prio), None, now)),
            ),
            7 => (
                format!("set-replication-quorum {node} {quorum}"),
                self.operator_op(|m, now| m.set_node_settings(&node, None, Some(quorum), now)),
            ),
            8 => (
                format!("reinit {node}"),
                self.operator_op(|m, now| m.reinit_node(&node, now)),
            ),
            9 => (
                format!("restart {node}"),
                self.operator_op(|m, now| m.restart_node(&node, now)),
            ),
            10 => {
                let pause = self.monitor.paused.is_none();
                (
                    if pause { "pause" } else { "resume" }.to_string(),
                    self.operator_op(|m, now| m.set_paused(pause, now)),
                )
            }
            _ => {
                let r = self.operator_op(|m, now| m.force_election(now));
                if r.is_ok() {
                    self.data_loss_allowed = true;
                }
                ("perform-failover --allow-data-loss".to_string(), r)
            }
        };
        match result {
            Ok(m) => {
                self.stats.operator_ok += 1;
                self.log(format!("operator: {what}: {m}"));
            }
            Err(e) => {
                self.stats.operator_refused += 1;
                self.log(format!("operator: {what}: refused: {e}"));
            }
        }
    }

    pub(super) fn faults_over(&mut self) {
        self.faults_on = false;
        self.faults_over_at = Some(self.now);
        self.partitions.clear();
        self.loss = 0.0;
        self.slow = false;
        self.hook_refuses.fill(false);
        self.log("faults stop: network healed, dead keepers restart".into());
        for i in 0..self.keepers.len() {
            if !self.keepers[i].alive {
                self.keeper_restart(i);
            }
        }
        if self.monitor.paused.is_some() {
            let r = self.operator_op(|m, now| m.set_paused(false, now));
            self.log(format!("operator: resume: {r:?}"));
        }
        for i in 0..self.monitor.nodes.len() {
            if self.monitor.nodes[i].goal == S::Maintenance {
                let node = self.monitor.nodes[i].name.clone();
                let _ = self.operator_op(|m, now| m.set_maintenance(&node, false, now));
            }
        }
    }
}
