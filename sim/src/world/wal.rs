//! WAL moving from upstreams to standbys, commits acknowledged under
//! `ANY n`, the client writing unique ids, and the monitor's health
//! checks.

use super::*;

impl World {
    // ------------------------------------------------------------------
    // PostgreSQL replication and the client
    // ------------------------------------------------------------------

    pub(super) fn pump(&mut self) {
        let n = self.pgs.len();
        for s in 0..n {
            let pg = &self.pgs[s];
            if !pg.running || !pg.in_recovery {
                continue;
            }
            let Some(u) = pg.upstream else {
                self.pgs[s].receiving = false;
                continue;
            };
            let link = self.link(Peer::Node(s), Peer::Node(u));
            if link && self.pgs[u].running {
                if is_prefix(&self.pgs[s].history, &self.pgs[u].history) {
                    let have = self.pgs[s].history.len();
                    let missing = self.pgs[u].history[have..].to_vec();
                    // Streaming, it holds the upstream's WAL to its end:
                    // past a timeline switch, on the upstream's timeline
                    // (the switch's end-of-recovery record comes with it).
                    let tl = self.pgs[u].timeline;
                    let pg = &mut self.pgs[s];
                    pg.history.extend(missing);
                    pg.timeline = tl;
                    pg.receiving = true;
                    pg.last_contact = self.now;
                    let flushed = pg.history.len();
                    self.pgs[u].senders.insert(
                        s,
                        Sender {
                            last_reply: self.now,
                            flushed,
                        },
                    );
                } else {
                    self.pgs[s].receiving = false;
                }
            } else if link {
                // The upstream is down: the connection is refused at once.
                self.pgs[s].receiving = false;
            } else if self.now.saturating_sub(self.pgs[s].last_contact)
                > self.t.wal_receiver_timeout
            {
                self.pgs[s].receiving = false;
            }
        }
        for u in 0..n {
            if !self.pgs[u].running {
                continue;
            }
            let senders: Vec<(usize, Sender)> =
                self.pgs[u].senders.iter().map(|(&s, &v)| (s, v)).collect();
            for (s, v) in senders {
                let gone_for_sure = self.link(Peer::Node(u), Peer::Node(s))
                    && !(self.pgs[s].running
                        && self.pgs[s].in_recovery
                        && self.pgs[s].upstream == Some(u)
                        && is_prefix(&self.pgs[s].history, &self.pgs[u].history));
                if gone_for_sure
                    || self.now.saturating_sub(v.last_reply) > self.t.wal_sender_timeout
                {
                    self.pgs[u].senders.remove(&s);
                }
            }
        }
        self.acknowledge();
    }

    /// Commits whose synchronous condition holds are acknowledged to the
    /// client (when it can still hear the server).
    pub(super) fn acknowledge(&mut self) {
        let mut still = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let pg = &self.pgs[p.node];
            let valid = pg.running
                && pg.incarnation == p.pg_incarnation
                && pg.history.get(p.index) == Some(&p.id)
                && self.now - p.at <= CLIENT_TIMEOUT_MS;
            if !valid {
                continue;
            }
            let done = match &pg.sync {
                None => true,
                Some(sync) => {
                    let acks = pg
                        .senders
                        .iter()
                        .filter(|(&s, v)| {
                            v.flushed > p.index
                                && sync.names.contains(&pgpilot_proto::lsn::application_name(
                                    self.keepers[s].node_id,
                                ))
                        })
                        .count() as u32;
                    acks >= sync.n
                }
            };
            if !done {
                still.push(p);
                continue;
            }
            let sync = pg.sync.is_some();
            let ackers: Vec<usize> = match &pg.sync {
                None => Vec::new(),
                Some(rep) => pg
                    .senders
                    .iter()
                    .filter(|(&s, v)| {
                        v.flushed > p.index
                            && rep.names.contains(&pgpilot_proto::lsn::application_name(
                                self.keepers[s].node_id,
                            ))
                    })
                    .map(|(&s, _)| s)
                    .collect(),
            };
            self.record_ack(p.node, p.id, sync, ackers);
        }
        self.pending = still;
    }

    pub(super) fn record_ack(&mut self, node: usize, id: u64, sync: bool, ackers: Vec<usize>) {
        if !self.link(Peer::Client, Peer::Node(node)) {
            return;
        }
        self.stats.acked += 1;
        if sync {
            self.stats.acked_sync += 1;
            self.acked_sync.push(id);
            self.acked_by.push((node, ackers));
        }
    }

    pub(super) fn client_write(&mut self) {
        let candidates: Vec<usize> = (0..self.pgs.len())
            .filter(|&i| {
                self.link(Peer::Client, Peer::Node(i))
                    && self.pgs[i].running
                    && !self.pgs[i].in_recovery
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = *self.rng.pick(&candidates);
        let id = self.next_write;
        self.next_write += 1;
        self.stats.writes += 1;
        let pg = &mut self.pgs[i];
        pg.history.push(id);
        let p = Pending {
            node: i,
            index: pg.history.len() - 1,
            id,
            pg_incarnation: pg.incarnation,
            at: self.now,
        };
        if pg.sync.is_none() {
            self.record_ack(i, id, false, Vec::new());
        } else {
            self.pending.push(p);
        }
    }

    // ------------------------------------------------------------------
    // The monitor's health checks
    // ------------------------------------------------------------------

    pub(super) fn health_tick(&mut self) {
        let started = self.now;
        let targets = self.monitor.health_targets(self.now);
        let mut end = self.now;
        for id in targets {
            let Some(i) = self.monitor.index(id) else {
                continue;
            };
            let (h, d) = if !self.link(Peer::Monitor, Peer::Node(i)) {
                (Health::Bad, self.t.health_timeout)
            } else if self.pgs[i].running {
                (Health::Good, self.rng.range(1, 3))
            } else {
                (Health::Bad, 1)
            };
            end = end.max(self.now + d);
            self.after(d, Ev::HealthResult(id, h));
        }
        self.at(end, Ev::HealthRoundEnd(started));
    }
}
