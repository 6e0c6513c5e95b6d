//! The failover and election rules of the state machine: starting an
//! election when the primary is lost, cancelling it when it comes back,
//! electing under the promotion rule, and the promotion steps.

use chrono::{DateTime, Utc};
use pgpilot_proto::lsn::application_name;
use pgpilot_proto::ReplicationState as S;

use super::{fast_forward_source, is_handing_over, Eval, Reason, Wait};

impl Eval<'_> {
    pub(super) fn failover_rules(&mut self) {
        if self.nodes.iter().any(|n| {
            matches!(
                n.goal,
                S::FastForward | S::PreparePromotion | S::StopReplication
            )
        }) {
            // An election was decided; the promotion rules carry it out.
            return;
        }
        let Some(p) = self.primary() else { return };
        let primary = self.name(p);
        let electing: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].goal == S::ReportLsn)
            .collect();

        if is_handing_over(self.nodes[p].goal) {
            // Planned failover: the election completes once the primary
            // stopped; if its keeper died first, by the fence deadline,
            // as for a primary that cannot be reached.
            if self.reached(p) {
                self.elect(p, &electing, "the old primary stopped cleanly");
            } else if !self.alive(p) {
                self.elect(p, &electing, "the fence deadline passed");
            } else {
                self.wait(Wait::PrimaryStopping { primary });
            }
            return;
        }

        let why_unhealthy = self.unhealthy(p);
        let pg_down = self.pg_down_too_long(p);

        if electing.is_empty() {
            if why_unhealthy.is_none() && pg_down.is_none() {
                self.wait_for_restart(p);
                return;
            }
            if self.settings.paused {
                let why = why_unhealthy.or(pg_down).unwrap_or_default();
                self.wait(Wait::Paused { primary, why });
                return;
            }
            let candidates: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    i != p && self.nodes[i].goal == S::Secondary && self.reached(i) && self.alive(i)
                })
                .collect();
            if !candidates.iter().any(|&i| self.nodes[i].may_be_promoted()) {
                self.wait(Wait::NoCandidate { primary });
                return;
            }
            let reason = match (&why_unhealthy, &pg_down) {
                (Some(why), _) => Reason::PrimaryUnhealthy {
                    primary: primary.clone(),
                    why: why.clone(),
                },
                (None, why) => Reason::PrimaryPostgresDown {
                    primary: primary.clone(),
                    why: why.clone().unwrap_or_default(),
                },
            };
            for &i in &candidates {
                self.assign(i, S::ReportLsn, reason.clone());
            }
            if pg_down.is_some() && why_unhealthy.is_none() {
                // The keeper lives: it stops PostgreSQL and confirms, which
                // lets the election finish by rule (a). `draining`, as in a
                // planned failover, so that it stays the group's primary
                // (the node the standbys are told to follow) until then.
                self.assign(p, S::Draining, reason);
            }
            return;
        }

        // An election is under way. It is cancelled only while the primary
        // keeps its role: once it was told to demote, it must go on.
        if why_unhealthy.is_none()
            && pg_down.is_none()
            && self.alive(p)
            && self.nodes[p].goal != S::Demoted
        {
            for &i in &electing {
                self.assign(
                    i,
                    S::Secondary,
                    Reason::PrimaryBack {
                        primary: primary.clone(),
                    },
                );
            }
            return;
        }
        if let (None, Some(why)) = (&why_unhealthy, &pg_down) {
            // The election began while the keeper was silent; now it is
            // heard, with PostgreSQL still down past the allowance. Its
            // heartbeats keep moving the fence deadline, so rule (b) would
            // never be met: have it stop and confirm, as when the election
            // starts this way.
            if self.nodes[p].goal.is_writable_primary() {
                let reason = Reason::PrimaryPostgresDown {
                    primary: primary.clone(),
                    why: why.clone(),
                };
                self.assign(p, S::Draining, reason);
            }
        }
        self.elect(p, &electing, "the fence deadline passed");
    }

    /// The election: promote one of the `report_lsn` nodes when the
    /// promotion rule allows it.
    fn elect(&mut self, p: usize, electing: &[usize], rule_b: &'static str) {
        let primary = self.name(p);
        let confirmed = self.reached(p)
            && matches!(
                self.nodes[p].goal,
                S::Draining | S::PrepareMaintenance | S::Demoted
            );
        // Reporters: in report_lsn, alive, and not streaming.
        let reporters: Vec<usize> = electing
            .iter()
            .copied()
            .filter(|&i| {
                self.nodes[i].reported == S::ReportLsn
                    && self.alive(i)
                    && self.nodes[i].pg_running
                    && !self.nodes[i].wal_receiver_streaming
            })
            .collect();
        if electing.is_empty() {
            if confirmed {
                self.wait(Wait::NoStandbyInElection { primary });
            }
            return;
        }
        // Every live candidate takes part: the highest priority must not
        // lose for being a heartbeat late.
        let late: Vec<String> = electing
            .iter()
            .filter(|&&i| !reporters.contains(&i) && self.alive(i) && self.nodes[i].pg_running)
            .map(|&i| self.name(i))
            .collect();
        if reporters.is_empty() || !late.is_empty() {
            self.wait(Wait::AwaitingReports { late, primary });
            return;
        }
        let Some(rule) = self.promotion_rule(p, confirmed, &reporters, rule_b) else {
            return;
        };
        self.promote(p, &reporters, rule);
    }

    /// Whether the LSN of node `i` counts in the election about primary
    /// `p`: every reporter's, and any other live standby's whose PostgreSQL
    /// runs and no longer streams.
    fn considered(&self, p: usize, reporters: &[usize], i: usize) -> bool {
        i != p
            && (reporters.contains(&i)
                || (self.alive(i)
                    && self.nodes[i].pg_running
                    && self.nodes[i].reported.is_following()
                    && !self.nodes[i].wal_receiver_streaming))
    }

    /// Which part of the promotion rule allows the election about primary
    /// `p` to promote now; None while the group waits (and says why).
    fn promotion_rule(
        &mut self,
        p: usize,
        confirmed: bool,
        reporters: &[usize],
        rule_b: &'static str,
    ) -> Option<&'static str> {
        let primary = self.name(p);
        let (fence_set, required) = self.nodes[p].election_fence(&self.nodes);
        let fence_set = &fence_set;
        let required = required as usize;
        // Members of the fence set whose stream is gone and whose LSN is
        // known: a commit acknowledged under ANY r (F) is on one of any
        // |F| − r + 1 of them, whether the old primary stopped or fenced.
        // A member still reporting `demoted` (an older primary that has not
        // rejoined yet) or `init` never received this primary's WAL: it
        // counts without an LSN. (Not `wait_standby`: a standby being
        // rebuilt keeps its old data until the clone replaces it.)
        let in_set: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                i != p
                    && fence_set.contains(&application_name(n.id))
                    && n.stream_lost_at.is_some()
                    && (self.considered(p, reporters, i)
                        || (self.alive(i)
                            && !n.wal_receiver_streaming
                            && matches!(n.reported, S::Demoted | S::Init)))
            })
            .collect();
        let reporting_in_set = in_set.len();
        let needed = (fence_set.len() + 1).saturating_sub(required);
        // The operator's override counts only for this outage.
        let forced = self
            .settings
            .election_forced_at
            .is_some_and(|at| self.nodes[p].last_heartbeat.is_none_or(|hb| at > hb));
        let short = reporting_in_set < needed;
        if confirmed {
            // A reporter may have streamed again from the old primary
            // (restarted by its keeper before it heard it must stop) after
            // it reported, and any standby whose LSN counts received the
            // WAL a clean stop hands over: only reports made after the stop
            // count, for every node whose LSN the election reads.
            let stopped = self.nodes[p].pg_down_since.or(self.nodes[p].last_heartbeat);
            let stale: Vec<String> = (0..self.nodes.len())
                .filter(|&i| self.considered(p, reporters, i))
                .filter(|&i| {
                    stopped.is_some_and(|t| self.nodes[i].last_heartbeat.is_none_or(|hb| hb < t))
                })
                .map(|i| self.name(i))
                .collect();
            if !stale.is_empty() {
                self.wait(Wait::AwaitingReportsAfterStop { stale, primary });
                return None;
            }
        }
        let rule: &'static str = if confirmed {
            if required > 0 && short && !forced {
                self.wait(Wait::ElectionStuck {
                    primary,
                    primary_stopped: true,
                    reporting: reporting_in_set,
                    needed,
                });
                return None;
            }
            if required > 0 && short {
                "forced by the operator: acknowledged commits may be lost"
            } else {
                "the old primary confirmed it stopped"
            }
        } else {
            // A primary with no fence quorum, or whose keeper last said
            // its lease holds none (an answer growing its set may have been
            // lost), never fences: nothing proves it stopped. Forced or
            // not: an override stands in for standbys that cannot report,
            // never for a fence that does not exist.
            if required == 0 || self.nodes[p].fence_required_held == Some(0) {
                self.wait(Wait::UnfencedPrimary { primary });
                return None;
            }
            // The operator's override stands in for members that cannot
            // report, never for one that is heard streaming: the old
            // primary it streams from keeps serving past any deadline.
            let streaming: Vec<String> = (0..self.nodes.len())
                .filter(|&i| {
                    i != p
                        && fence_set.contains(&application_name(self.nodes[i].id))
                        && self.alive(i)
                        && self.nodes[i].wal_receiver_streaming
                })
                .map(|i| self.name(i))
                .collect();
            let forced = forced && streaming.is_empty();
            if short && !forced {
                self.wait(Wait::ElectionStuck {
                    primary,
                    primary_stopped: false,
                    reporting: reporting_in_set,
                    needed,
                });
                return None;
            }
            let deadline = self.fence_deadline(p, reporters, &in_set);
            if self.now < deadline {
                let ms = (deadline - self.now).num_milliseconds();
                self.wait(Wait::FenceDeadline { primary, ms });
                return None;
            }
            if short {
                "forced by the operator: acknowledged commits may be lost"
            } else {
                rule_b
            }
        };
        Some(rule)
    }

    /// Promote the winner among `reporters` (fetching the WAL it misses
    /// first), and replace the old primary `p`.
    fn promote(&mut self, p: usize, reporters: &[usize], rule: &'static str) {
        // The most advanced standby whose stream is gone: every reporter,
        // and any other running standby that is no longer streaming.
        let Some(most_advanced) = (0..self.nodes.len())
            .filter(|&i| self.considered(p, reporters, i))
            .max_by_key(|&i| (self.nodes[i].wal_end(), -self.nodes[i].id))
        else {
            // Never: every reporter is considered, and there is one.
            return;
        };
        let (top_timeline, max_lsn) = self.nodes[most_advanced].wal_end();
        // A reporter on the latest timeline first: one on an older timeline
        // may hold WAL past the fork, which no fast-forward can follow.
        // Then one whose before_promotion hook has not refused (a
        // refused one is elected again only when no other can be), the
        // highest candidate priority, the most advanced, the lowest id.
        // A delayed standby is never elected, whatever its stored
        // priority; it may still be the most advanced reporter the winner
        // fast-forwards from.
        let winner = reporters
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].may_be_promoted())
            .max_by_key(|&i| {
                (
                    self.nodes[i].timeline == top_timeline,
                    !self.nodes[i].promotion_refused,
                    self.nodes[i].candidate_priority,
                    self.nodes[i].wal_end(),
                    -self.nodes[i].id,
                )
            });
        let Some(w) = winner else {
            self.wait(Wait::NoEligibleReporter { max_lsn });
            return;
        };
        let new_primary = self.name(w);
        let elected = Reason::Elected {
            lsn: self.nodes[w].lsn,
            reporters: reporters.len(),
            rule,
        };
        if self.nodes[w].wal_end() < (top_timeline, max_lsn) {
            let from = self.name(most_advanced);
            self.assign(
                w,
                S::FastForward,
                Reason::FastForward {
                    from,
                    timeline: top_timeline,
                    lsn: max_lsn,
                },
            );
        } else {
            self.assign(w, S::PreparePromotion, elected);
        }
        match self.nodes[p].goal {
            // It stays the primary the election is about until the winner
            // is promoted (an election run again after a fast-forward
            // that could not finish needs it), then enters maintenance.
            S::PrepareMaintenance | S::Demoted => {}
            _ => self.assign(p, S::Demoted, Reason::OldPrimaryReplaced { new_primary }),
        }
    }

    /// The latest moment the old primary can still accept writes: its last
    /// heartbeat plus its fence timeout, or the loss of the reporters'
    /// streams plus wal_sender_timeout, whichever is later, plus one keeper
    /// loop and a margin.
    fn fence_deadline(&self, p: usize, reporters: &[usize], in_set: &[usize]) -> DateTime<Utc> {
        let node = &self.nodes[p];
        let t = node.timings;
        let from_heartbeat = node.last_heartbeat.unwrap_or(self.now) + t.fence_timeout;
        let from_stream = reporters
            .iter()
            .chain(in_set)
            .filter_map(|&i| self.nodes[i].stream_lost_at)
            .max()
            .map(|lost| lost + t.wal_sender_timeout)
            .unwrap_or(from_heartbeat);
        from_heartbeat.max(from_stream) + t.heartbeat_interval + self.settings.fence_margin
    }

    /// Other reporters of the election whose PostgreSQL is down while
    /// their keeper restarts it (within the allowance).
    fn restarting_reporters(&self, i: usize) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|&j| {
                j != i
                    && self.nodes[j].goal == S::ReportLsn
                    && !self.nodes[j].pg_running
                    && self.alive(j)
                    && self.pg_down_too_long(j).is_none()
            })
            .map(|j| self.name(j))
            .collect()
    }

    /// Why the fast-forward of node `i` can never finish: a reporter of
    /// the election (whose WAL may be needed) or the source is gone — its
    /// keeper silent and its PostgreSQL not answering the monitor, or its
    /// PostgreSQL down past the allowance — or no node can serve the WAL
    /// and none is restarting. The election then runs again, and the
    /// promotion rule decides without them.
    fn fast_forward_lost(&self, i: usize) -> Option<String> {
        let gone = |j: usize| self.unhealthy(j).is_some() || self.pg_down_too_long(j).is_some();
        let lost: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i && self.nodes[j].goal == S::ReportLsn && gone(j))
            .map(|j| self.name(j))
            .collect();
        if !lost.is_empty() {
            return Some(format!("{} gone", lost.join(", ")));
        }
        match fast_forward_source(&self.nodes, i) {
            Some(s) if gone(s) => Some(format!("source {} gone", self.name(s))),
            None if self.restarting_reporters(i).is_empty() => {
                Some("no standby that holds it is running".to_string())
            }
            _ => None,
        }
    }

    /// Whether a live reporter of the election other than `i` may be
    /// promoted and its hook has not refused.
    fn another_candidate(&self, i: usize) -> bool {
        (0..self.nodes.len()).any(|j| {
            let n = &self.nodes[j];
            j != i
                && n.goal == S::ReportLsn
                && n.reported == S::ReportLsn
                && n.may_be_promoted()
                && !n.promotion_refused
                && self.alive(j)
                && n.pg_running
                && !n.wal_receiver_streaming
        })
    }

    /// The elected node `i` has not moved to `prepare_promotion` because
    /// its `before_promotion` hook refused: it goes back to `report_lsn`
    /// and the election runs again when another candidate can win; else
    /// it stays elected and its keeper runs the hook again.
    fn promotion_refused(&mut self, i: usize) {
        let node = self.name(i);
        if self.another_candidate(i) {
            self.assign(i, S::ReportLsn, Reason::PromotionRefused { node });
        } else {
            self.wait(Wait::PromotionRefused { node });
        }
    }

    pub(super) fn promotion_rules(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].goal == S::PreparePromotion
                && self.nodes[i].promotion_refused
                && !self.reached(i)
            {
                self.promotion_refused(i);
                continue;
            }
            if !self.reached(i) {
                continue;
            }
            match self.nodes[i].goal {
                S::FastForward => {
                    if let Some(why) = self.fast_forward_lost(i) {
                        self.assign(i, S::ReportLsn, Reason::FastForwardSourceLost { why });
                        continue;
                    }
                    // The target is only known while every other standby of
                    // the election runs (a stopped one reports no LSN) and
                    // the source is there: otherwise wait for the restart
                    // under way, lest the winner be promoted without WAL
                    // only the source had.
                    let source = fast_forward_source(&self.nodes, i);
                    let unknown = self.restarting_reporters(i);
                    if source.is_none() || !unknown.is_empty() {
                        let node = self.name(i);
                        self.wait(Wait::FastForwardBlocked {
                            node,
                            down: unknown,
                        });
                        continue;
                    }
                    let target = self.fast_forward_target(i);
                    if self.nodes[i].wal_end() >= target {
                        self.assign(
                            i,
                            S::PreparePromotion,
                            Reason::Promotion {
                                step: "fetched the missing WAL: replay it",
                            },
                        );
                    } else {
                        let node = self.name(i);
                        self.wait(Wait::FastForwarding {
                            node,
                            timeline: target.0,
                            target: target.1,
                        });
                    }
                }
                S::PreparePromotion => self.assign(
                    i,
                    S::StopReplication,
                    Reason::Promotion {
                        step: "all received WAL replayed: promote",
                    },
                ),
                S::StopReplication => self.assign(
                    i,
                    S::WaitPrimary,
                    Reason::Promotion {
                        step: "promoted and writable",
                    },
                ),
                _ => {}
            }
        }
        // The winner has been promoted once it reports stop_replication.
        let new_primary = (0..self.nodes.len()).find(|&i| {
            self.nodes[i].reported == S::StopReplication
                && matches!(self.nodes[i].goal, S::StopReplication | S::WaitPrimary)
        });
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.goal == S::PrepareMaintenance {
                let promoted = new_primary.or_else(|| {
                    (0..self.nodes.len())
                        .find(|&j| j != i && self.nodes[j].goal.is_writable_primary())
                });
                if let Some(np) = promoted {
                    let new_primary = self.name(np);
                    self.assign(
                        i,
                        S::Maintenance,
                        Reason::OldPrimaryReplaced { new_primary },
                    );
                }
            } else if node.goal == S::ReportLsn {
                if let Some(np) = new_primary {
                    let primary = self.name(np);
                    self.assign(i, S::JoinSecondary, Reason::NewPrimary { primary });
                }
            } else if node.goal == S::JoinSecondary
                && self.reached(i)
                && node.wal_receiver_streaming
            {
                self.assign(i, S::Secondary, Reason::FollowingNewPrimary);
            }
        }
    }
}
