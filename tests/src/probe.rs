//! [`WritableProbe`]: watches every node's PostgreSQL directly (its own
//! port, past any proxy, as an observer on each host would) and checks
//! invariant 1 of the design: at most one node of a group accepts writes at
//! any instant.
//!
//! Each node gets its own connection, which asks `SELECT
//! pg_is_in_recovery()` every [`PROBE_INTERVAL`]; a failed query or
//! connection starts a new session. A server leaves recovery only once
//! (promotion) and returns to it only through a restart, which ends every
//! session, so two consecutive "not in recovery" answers of one session
//! prove the node accepted writes during the whole time between them: from
//! the first answer's arrival to the second query's sending. Those intervals
//! of different nodes must never overlap. The check is sound (an overlap it
//! reports is real) and misses only overlaps shorter than about two probe
//! intervals.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::Cluster;

/// Time between two queries of one node.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// Bound on one connection attempt or query.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One answer from one node.
#[derive(Debug, Clone, Copy)]
struct Sample {
    sent: Instant,
    answered: Instant,
    writable: bool,
    session: u64,
}

/// A time during which a node certainly accepted writes.
#[derive(Debug, Clone)]
pub struct WritablePeriod {
    pub node: String,
    pub from: Instant,
    pub to: Instant,
}

/// What the probe saw of each node.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub started: Instant,
    /// Per node: its name and its answers, in order.
    nodes: Vec<(String, Vec<Sample>)>,
}

/// The running probe; [`WritableProbe::stop`] ends it.
pub struct WritableProbe {
    stop: watch::Sender<bool>,
    tasks: Vec<(String, JoinHandle<Vec<Sample>>)>,
    started: Instant,
}

impl WritableProbe {
    /// Start probing `(node name, PostgreSQL port)` on 127.0.0.1.
    pub fn start(nodes: &[(String, u16)]) -> WritableProbe {
        let (stop, stopped) = watch::channel(false);
        let tasks = nodes
            .iter()
            .map(|(name, port)| {
                let task = tokio::spawn(probe_node(*port, stopped.clone()));
                (name.clone(), task)
            })
            .collect();
        WritableProbe {
            stop,
            tasks,
            started: Instant::now(),
        }
    }

    /// Every node of `cluster`, on its own port.
    pub fn of_cluster(cluster: &Cluster) -> Result<WritableProbe> {
        let nodes = cluster
            .node_names()
            .into_iter()
            .map(|name| Ok((name.clone(), cluster.node_port(&name)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(WritableProbe::start(&nodes))
    }

    pub async fn stop(self) -> ProbeReport {
        let _ = self.stop.send(true);
        let mut nodes = Vec::new();
        for (name, task) in self.tasks {
            let samples = task.await.unwrap_or_default();
            nodes.push((name, samples));
        }
        ProbeReport {
            started: self.started,
            nodes,
        }
    }
}

async fn probe_node(port: u16, mut stopped: watch::Receiver<bool>) -> Vec<Sample> {
    let uri = format!(
        "postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=1&application_name=pgpilot_probe"
    );
    let mut samples = Vec::new();
    let mut session = 0u64;
    while !*stopped.borrow() {
        session += 1;
        let connected = tokio::time::timeout(PROBE_TIMEOUT, tokio_postgres::connect(&uri, NoTls));
        let Ok(Ok((client, connection))) = connected.await else {
            pause(&mut stopped).await;
            continue;
        };
        let connection = tokio::spawn(connection);
        loop {
            let sent = Instant::now();
            let query = client.query_one("SELECT pg_is_in_recovery()", &[]);
            let in_recovery = match tokio::time::timeout(PROBE_TIMEOUT, query).await {
                Ok(Ok(row)) => row.get::<_, bool>(0),
                _ => break,
            };
            samples.push(Sample {
                sent,
                answered: Instant::now(),
                writable: !in_recovery,
                session,
            });
            if pause(&mut stopped).await {
                break;
            }
        }
        connection.abort();
    }
    samples
}

/// Wait one probe interval; true when the probe is stopped.
async fn pause(stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = stopped.changed() => true,
        _ = tokio::time::sleep(PROBE_INTERVAL) => *stopped.borrow(),
    }
}

impl ProbeReport {
    /// The periods during which each node certainly accepted writes.
    pub fn writable_periods(&self) -> Vec<WritablePeriod> {
        let mut periods = Vec::new();
        for (node, samples) in &self.nodes {
            let mut run: Option<(Sample, Sample)> = None;
            let mut close = |run: Option<(Sample, Sample)>| {
                if let Some((first, last)) = run {
                    if first.answered < last.sent {
                        periods.push(WritablePeriod {
                            node: node.clone(),
                            from: first.answered,
                            to: last.sent,
                        });
                    }
                }
            };
            for &sample in samples {
                run = match run {
                    Some((first, _)) if sample.writable && sample.session == first.session => {
                        Some((first, sample))
                    }
                    _ => {
                        close(run);
                        sample.writable.then_some((sample, sample))
                    }
                };
            }
            close(run);
        }
        periods
    }

    /// Pairs of periods of different nodes that overlap: two writable
    /// nodes at once.
    pub fn overlaps(&self) -> Vec<(WritablePeriod, WritablePeriod)> {
        let periods = self.writable_periods();
        let mut out = Vec::new();
        for (i, a) in periods.iter().enumerate() {
            for b in &periods[i + 1..] {
                if a.node != b.node && a.from < b.to && b.from < a.to {
                    out.push((a.clone(), b.clone()));
                }
            }
        }
        out
    }

    /// The last time `node` was seen accepting writes (an answer arrived).
    pub fn last_writable(&self, node: &str) -> Option<Instant> {
        self.samples(node)
            .iter()
            .rev()
            .find(|s| s.writable)
            .map(|s| s.answered)
    }

    /// The first time `node` was seen accepting writes after `after`
    /// (when that query was sent: it was writable by its answer).
    pub fn first_writable_after(&self, node: &str, after: Instant) -> Option<Instant> {
        self.samples(node)
            .iter()
            .find(|s| s.writable && s.sent > after)
            .map(|s| s.sent)
    }

    /// How many answers came from `node`.
    pub fn answers(&self, node: &str) -> usize {
        self.samples(node).len()
    }

    fn samples(&self, node: &str) -> &[Sample] {
        self.nodes
            .iter()
            .find(|(name, _)| name == node)
            .map_or(&[], |(_, samples)| samples.as_slice())
    }

    /// Fail, with the cluster's state, if two nodes accepted writes at once
    /// or a node never answered.
    pub async fn expect_one_writer(&self, cluster: &Cluster) -> Result<()> {
        let overlaps = self.overlaps();
        let silent: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(_, samples)| samples.is_empty())
            .map(|(name, _)| name.as_str())
            .collect();
        if overlaps.is_empty() && silent.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = overlaps
            .iter()
            .map(|(a, b)| format!("{} and {}", self.describe(a), self.describe(b)))
            .collect();
        Err(cluster
            .failure(format!(
                "the probe saw two nodes accepting writes at once:\n{}\nnodes that never \
                 answered the probe: {silent:?}\n{self}",
                lines.join("\n")
            ))
            .await)
    }

    fn describe(&self, p: &WritablePeriod) -> String {
        let at = |t: Instant| t.saturating_duration_since(self.started).as_secs_f64();
        format!("{} writable +{:.3}s..+{:.3}s", p.node, at(p.from), at(p.to))
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "writable periods seen by the probe (since its start):")?;
        for p in self.writable_periods() {
            writeln!(f, "  {}", self.describe(&p))?;
        }
        for (name, samples) in &self.nodes {
            writeln!(f, "  {name}: {} answers", samples.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (sent ms, answered ms, writable, session) of one answer.
    type At = (u64, u64, bool, u64);

    fn report(nodes: Vec<(&str, Vec<At>)>) -> (ProbeReport, Instant) {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let nodes = nodes
            .into_iter()
            .map(|(name, samples)| {
                let samples = samples
                    .into_iter()
                    .map(|(sent, answered, writable, session)| Sample {
                        sent: ms(sent),
                        answered: ms(answered),
                        writable,
                        session,
                    })
                    .collect();
                (name.to_string(), samples)
            })
            .collect();
        (ProbeReport { started: t0, nodes }, t0)
    }

    #[test]
    fn a_handover_without_overlap_passes() {
        // a is writable until 100 ms, then stops (its session ends); b is
        // promoted at about 200 ms.
        let (r, _) = report(vec![
            (
                "a",
                vec![(0, 5, true, 1), (50, 55, true, 1), (100, 105, true, 1)],
            ),
            (
                "b",
                vec![
                    (0, 5, false, 1),
                    (150, 155, false, 1),
                    (200, 205, true, 1),
                    (250, 255, true, 1),
                ],
            ),
        ]);
        assert_eq!(r.writable_periods().len(), 2);
        assert!(r.overlaps().is_empty());
    }

    #[test]
    fn two_writable_nodes_at_once_are_caught() {
        let (r, _) = report(vec![
            (
                "a",
                vec![(0, 5, true, 1), (50, 55, true, 1), (100, 105, true, 1)],
            ),
            ("b", vec![(40, 45, true, 1), (90, 95, true, 1)]),
        ]);
        let overlaps = r.overlaps();
        assert_eq!(overlaps.len(), 1, "{r}");
    }

    #[test]
    fn a_new_session_breaks_a_period() {
        // a's answers come from two sessions (a restart between them): it
        // is not proven writable in between, so no overlap with b.
        let (r, _) = report(vec![
            ("a", vec![(0, 5, true, 1), (200, 205, true, 2)]),
            ("b", vec![(60, 65, true, 1), (120, 125, true, 1)]),
        ]);
        assert!(r.overlaps().is_empty(), "{r}");
        // A single answer proves no interval.
        assert_eq!(r.writable_periods().len(), 1);
    }

    #[test]
    fn last_and_first_writable() {
        let (r, t0) = report(vec![
            ("a", vec![(0, 5, true, 1), (50, 55, false, 2)]),
            ("b", vec![(0, 5, false, 1), (60, 65, true, 1)]),
        ]);
        assert_eq!(r.last_writable("a"), Some(t0 + Duration::from_millis(5)));
        assert_eq!(
            r.first_writable_after("b", t0),
            Some(t0 + Duration::from_millis(60))
        );
        assert_eq!(r.answers("b"), 2);
        assert_eq!(r.answers("c"), 0);
    }
}
