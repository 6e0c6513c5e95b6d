//! The monitor as the world reaches it: every operation goes through the
//! checks it is subject to (the monitor up, the link to it), then the
//! in-memory store around the monitor's decision core.

use super::*;

impl World {
    // ------------------------------------------------------------------
    // The monitor, with the checks every operation is subject to
    // ------------------------------------------------------------------

    /// Run one monitor operation; check that every goal change got an event
    /// with a reason (invariant 5) and that no priority-0 node is elected
    /// (invariant 3).
    /// An operator command: a monitor operation whose goal changes are
    /// remembered as the operator's.
    pub(super) fn operator_op<T>(&mut self, op: impl FnOnce(&mut Monitor, Ms) -> T) -> T {
        let before: Vec<S> = self.monitor.nodes.iter().map(|n| n.goal).collect();
        let r = self.monitor_op(op);
        for (i, old) in before.into_iter().enumerate() {
            if self.monitor.nodes[i].goal != old {
                self.operator_goal[i] = true;
            }
        }
        r
    }

    pub(super) fn monitor_op<T>(&mut self, op: impl FnOnce(&mut Monitor, Ms) -> T) -> T {
        let before: Vec<(i64, S)> = self.monitor.nodes.iter().map(|n| (n.id, n.goal)).collect();
        let first_event = self.monitor.events.len();
        let result = op(&mut self.monitor, self.now);
        let events = self.monitor.events[first_event..].to_vec();
        for e in &events {
            let line = if e.from == e.to {
                format!("monitor: event on {}: {}", e.node, e.reason)
            } else {
                format!(
                    "monitor: {} goal {} -> {} (reported {}): {}",
                    e.node, e.from, e.to, e.reported, e.reason
                )
            };
            self.log(line);
        }
        for (id, old) in before {
            let Some(i) = self.monitor.index(id) else {
                continue;
            };
            if self.monitor.nodes[i].goal != old {
                self.operator_goal[i] = false;
            }
            let node = &self.monitor.nodes[i];
            let new = node.goal;
            if new != old {
                let mine: Vec<_> = events
                    .iter()
                    .filter(|e| e.node == node.name && e.from != e.to)
                    .collect();
                let chained = !mine.is_empty()
                    && mine[0].from == old
                    && mine[mine.len() - 1].to == new
                    && mine.windows(2).all(|w| w[0].to == w[1].from)
                    && mine.iter().all(|e| !e.reason.trim().is_empty());
                if !chained {
                    let what = format!(
                        "{}'s goal changed {old} -> {new} without an event with a reason for each step",
                        node.name
                    );
                    self.fail(5, what);
                }
            }
        }
        if let Some(p) = &self.monitor.paused {
            // An election starts by asking the standbys to report; one
            // already under way when the formation was paused goes on.
            if let Some(e) = events.iter().find(|e| {
                e.to == S::ReportLsn
                    && matches!(e.kind, "primary_unhealthy" | "primary_postgres_down")
            }) {
                let what = format!(
                    "a failover started while the formation was paused (by {} since {}): {} {} -> {}: {}",
                    p.by, p.since, e.node, e.from, e.to, e.reason
                );
                self.fail(0, what);
            }
        }
        for e in &events {
            if matches!(e.to, S::FastForward | S::PreparePromotion) {
                if let Some(n) = self.monitor.nodes.iter().find(|n| n.name == e.node) {
                    if n.candidate_priority == 0 {
                        let what = format!(
                            "{} has candidate priority 0 and was elected ({} -> {})",
                            e.node, e.from, e.to
                        );
                        self.fail(3, what);
                    }
                }
            }
        }
        result
    }

    pub(super) fn register(&mut self, i: usize) {
        let prio = self.setup.priorities[i];
        let quorum = self.setup.quorum[i];
        let timings = self.t.keeper;
        let id = self.monitor_op(|m, now| m.register(&name(i), prio, quorum, timings, now));
        let goal = self.monitor.nodes[self.monitor.index(id).expect("registered")].goal;
        let k = &mut self.keepers[i];
        k.node_id = id;
        k.goal = goal;
        k.lease.last_ok_sent = self.now;
        let inc = k.incarnation;
        self.log(format!(
            "{}: registered as node id {id}, goal {goal}",
            name(i)
        ));
        self.after(0, Ev::Step(i, inc));
        self.after(FENCE_TICK_MS, Ev::FenceTick(i, inc));
    }
}
