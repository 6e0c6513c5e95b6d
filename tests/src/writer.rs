//! A client that writes all the time, the way an application would: through
//! the multi-host URI with `target_session_attrs=read-write`, reconnecting on
//! any error, remembering which writes were acknowledged and when.
//!
//! Several writers can write into one table at once, each with its own id
//! range ([`WriterOptions::first_id`]). A writer can also behave like an
//! application with a client-side timeout that cancels a slow statement
//! ([`WriterOptions::cancel_after`]): PostgreSQL answers a cancelled commit
//! that was waiting for a synchronous standby with success and a warning
//! that it "committed locally"; such acknowledgements are kept apart
//! ([`Ack::local_only`]).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::Cluster;

/// Time between two writes.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// Bound on one connection attempt through the multi-host URI.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one statement; past it the outcome is unknown and we reconnect.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed connection attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Acknowledged writes [`Writer::start_warm`] waits for.
pub const WARM_UP_ACKS: usize = 25;
/// How long [`Writer::start_warm`] waits for them.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many recent errors are kept.
const KEPT_ERRORS: usize = 200;

pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS pgpilot_writes \
     (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

/// How a writer writes.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// The first id it writes; writers sharing a table need disjoint ranges.
    pub first_id: i64,
    /// Cancel an insert (a cancel request, as a client-side timeout does)
    /// that has no answer after this long, then wait for its outcome.
    pub cancel_after: Option<Duration>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            first_id: 1,
            cancel_after: None,
        }
    }
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub id: i64,
    /// When the client got the acknowledgement.
    pub at: Instant,
    /// Index into [`WriteReport::connections`].
    pub connection: usize,
    /// Acknowledged with PostgreSQL's warning that the commit, cancelled
    /// while it waited for a synchronous standby, "committed locally, but
    /// might not have been replicated": no durability was promised.
    pub local_only: bool,
}

/// One connection the writer opened through the multi-host URI.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub opened: Instant,
    /// `inet_server_port()`: which node it reached.
    pub server_port: Option<u16>,
}

#[derive(Default)]
struct Shared {
    acks: Mutex<Vec<Ack>>,
    errors: Mutex<Vec<(Instant, String)>>,
    error_count: Mutex<u64>,
    connections: Mutex<Vec<Connection>>,
}

impl Shared {
    fn error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() >= KEPT_ERRORS {
            errors.remove(0);
        }
        errors.push((Instant::now(), message));
        *self.error_count.lock().unwrap() += 1;
    }
}

/// The running writer; [`Writer::stop`] ends it and returns its report.
pub struct Writer {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    started: Instant,
}

impl Writer {
    /// Start writing through `uri`; returns once the first write is
    /// acknowledged (or fails after `first_ack_timeout`).
    pub async fn start(uri: &str, first_ack_timeout: Duration) -> Result<Writer> {
        Writer::start_with(uri, first_ack_timeout, WriterOptions::default()).await
    }

    /// [`Writer::start`] with options.
    pub async fn start_with(
        uri: &str,
        first_ack_timeout: Duration,
        options: WriterOptions,
    ) -> Result<Writer> {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(uri.to_string(), shared.clone(), stopped, options));
        let writer = Writer {
            shared,
            stop,
            task: Some(task),
            started: Instant::now(),
        };
        let deadline = Instant::now() + first_ack_timeout;
        while writer.ack_count() == 0 {
            if Instant::now() >= deadline {
                bail!(
                    "the writer got no write acknowledged within {:?} through {uri}; recent errors:\n{}",
                    first_ack_timeout,
                    writer.recent_errors(10)
                );
            }
            tokio::time::sleep(WRITE_INTERVAL).await;
        }
        Ok(writer)
    }

    /// Start writing through `uri` and return once [`WARM_UP_ACKS`] writes
    /// are acknowledged, so the writer is in full swing before a fault.
    pub async fn start_warm(
        cluster: &Cluster,
        uri: &str,
        options: WriterOptions,
    ) -> Result<Writer> {
        let writer = Writer::start_with(uri, WARM_UP_TIMEOUT, options).await?;
        cluster
            .wait_for(WARM_UP_TIMEOUT, "the writer to warm up", || {
                let ready = writer.ack_count() >= WARM_UP_ACKS;
                async move { Ok(ready.then_some(())) }
            })
            .await?;
        Ok(writer)
    }

    /// [`Writer::start_warm`] through the cluster's multi-host URI.
    pub async fn warm(cluster: &Cluster) -> Result<Writer> {
        Writer::start_warm(cluster, &cluster.multi_host_uri(), WriterOptions::default()).await
    }

    pub fn ack_count(&self) -> usize {
        self.shared.acks.lock().unwrap().len()
    }

    /// Wait (up to `timeout`) until some write is acknowledged after
    /// `instant`; on time-out the error carries the writer's recent errors
    /// and the cluster's state.
    pub async fn wait_ack_after(
        &self,
        cluster: &Cluster,
        instant: Instant,
        timeout: Duration,
        what: &str,
    ) -> Result<()> {
        cluster
            .wait_for(timeout, what, || {
                let done = self.has_ack_after(instant);
                async move { Ok(done.then_some(())) }
            })
            .await
            .map_err(|err| {
                err.context(format!(
                    "writer errors:
{}",
                    self.recent_errors(15)
                ))
            })
    }

    /// Whether some write was acknowledged after `instant`.
    pub fn has_ack_after(&self, instant: Instant) -> bool {
        self.shared
            .acks
            .lock()
            .unwrap()
            .last()
            .is_some_and(|ack| ack.at > instant)
    }

    /// Acknowledged ids so far (without [`Ack::local_only`] ones).
    pub fn acked_ids(&self) -> Vec<i64> {
        durable_ids(&self.shared.acks.lock().unwrap())
    }

    /// The last `n` errors, one per line, with their time since the start.
    pub fn recent_errors(&self, n: usize) -> String {
        format_errors(&self.shared.errors.lock().unwrap(), self.started, n)
    }

    /// Stop writing and report.
    pub async fn stop(mut self) -> WriteReport {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STATEMENT_TIMEOUT * 2, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        WriteReport {
            acks: self.shared.acks.lock().unwrap().clone(),
            errors: self.shared.errors.lock().unwrap().clone(),
            error_count: *self.shared.error_count.lock().unwrap(),
            connections: self.shared.connections.lock().unwrap().clone(),
            started: self.started,
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn run(
    uri: String,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    options: WriterOptions,
) {
    let mut next_id: i64 = options.first_id;
    while !*stopped.borrow() {
        let (client, connection) = match connect(&uri).await {
            Ok(pair) => pair,
            Err(message) => {
                shared.error(format!("connect: {message}"));
                pause(&mut stopped, RECONNECT_PAUSE).await;
                continue;
            }
        };
        let opened = Instant::now();
        // Drive the connection and keep the server's notices (warnings).
        let (notice_tx, mut notices) = tokio::sync::mpsc::unbounded_channel::<String>();
        let connection = tokio::spawn(async move {
            let mut connection = connection;
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(tokio_postgres::AsyncMessage::Notice(notice)) => {
                        let text = format!(
                            "{} {}",
                            notice.message(),
                            notice.detail().unwrap_or_default()
                        );
                        let _ = notice_tx.send(text);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let mut session_state = Session {
            client: &client,
            shared: &shared,
            notices: &mut notices,
            options,
            opened,
        };
        session_state.run(&mut stopped, &mut next_id).await;
        drop(client);
        connection.abort();
    }
}

type PgConnection =
    tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

/// Connect the way libpq does with a multi-host URI: one host after the
/// other, each attempt — TCP connect, start-up and the
/// `target_session_attrs` check — bounded by the URI's `connect_timeout`
/// (else [`CONNECT_TIMEOUT`]). (tokio-postgres bounds only the TCP connect,
/// so a host that accepts the connection and then never answers would
/// hold the client for ever.)
async fn connect(uri: &str) -> Result<(tokio_postgres::Client, PgConnection), String> {
    let config: tokio_postgres::Config = uri
        .parse()
        .map_err(|e: tokio_postgres::Error| format!("bad URI {uri}: {e}"))?;
    let per_host = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT);
    let ports = config.get_ports();
    let mut errors = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let tokio_postgres::config::Host::Tcp(host) = host else {
            errors.push("unix-socket hosts are not supported".to_string());
            continue;
        };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let mut one = tokio_postgres::Config::new();
        one.host(host.as_str())
            .port(port)
            .target_session_attrs(config.get_target_session_attrs())
            .connect_timeout(per_host);
        if let Some(user) = config.get_user() {
            one.user(user);
        }
        if let Some(dbname) = config.get_dbname() {
            one.dbname(dbname);
        }
        match tokio::time::timeout(per_host, one.connect(NoTls)).await {
            Ok(Ok(pair)) => return Ok(pair),
            Ok(Err(err)) => errors.push(format!("{host}:{port}: {}", error_chain(&err))),
            Err(_) => errors.push(format!("{host}:{port}: no answer within {per_host:?}")),
        }
    }
    Err(errors.join("; "))
}

/// One connection of the writer.
struct Session<'a> {
    client: &'a tokio_postgres::Client,
    shared: &'a Shared,
    notices: &'a mut tokio::sync::mpsc::UnboundedReceiver<String>,
    options: WriterOptions,
    opened: Instant,
}

/// The outcome of one insert.
enum Outcome {
    Acked { local_only: bool },
    Failed(String),
}

impl Session<'_> {
    /// Write on this connection until an error or a stop.
    async fn run(&mut self, stopped: &mut watch::Receiver<bool>, next_id: &mut i64) {
        let client = self.client;
        let setup = async {
            client.batch_execute(CREATE_TABLE).await?;
            let port: Option<i32> = client
                .query_one("SELECT inet_server_port()", &[])
                .await?
                .get(0);
            let insert = client
                .prepare("INSERT INTO pgpilot_writes (id) VALUES ($1)")
                .await?;
            Ok::<_, tokio_postgres::Error>((insert, port))
        };
        let (insert, connection) = match tokio::time::timeout(STATEMENT_TIMEOUT, setup).await {
            Ok(Ok((statement, port))) => {
                let mut connections = self.shared.connections.lock().unwrap();
                connections.push(Connection {
                    opened: self.opened,
                    server_port: port.and_then(|p| u16::try_from(p).ok()),
                });
                (statement, connections.len() - 1)
            }
            Ok(Err(err)) => {
                self.shared.error(format!("setup: {}", error_chain(&err)));
                pause(stopped, RECONNECT_PAUSE).await;
                return;
            }
            Err(_) => {
                self.shared
                    .error(format!("setup: no answer within {STATEMENT_TIMEOUT:?}"));
                return;
            }
        };
        let mut ticker = tokio::time::interval(WRITE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                _ = ticker.tick() => {}
            }
            if *stopped.borrow() {
                return;
            }
            // Every attempt gets a fresh id: an attempt whose answer was lost
            // may or may not have committed, and only acknowledged ids are
            // checked.
            let id = *next_id;
            *next_id += 1;
            match self.insert(&insert, id).await {
                Outcome::Acked { local_only } => self.shared.acks.lock().unwrap().push(Ack {
                    id,
                    at: Instant::now(),
                    connection,
                    local_only,
                }),
                Outcome::Failed(message) => {
                    self.shared.error(format!("insert {id}: {message}"));
                    return;
                }
            }
        }
    }

    async fn insert(&mut self, insert: &tokio_postgres::Statement, id: i64) -> Outcome {
        while self.notices.try_recv().is_ok() {}
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
        let execute = self.client.execute(insert, &params);
        tokio::pin!(execute);
        let first_wait = self.options.cancel_after.unwrap_or(STATEMENT_TIMEOUT);
        let result = match tokio::time::timeout(first_wait, &mut execute).await {
            Ok(result) => result,
            Err(_) if self.options.cancel_after.is_some() => {
                // What an application with a client-side timeout does.
                if let Err(err) = self.client.cancel_token().cancel_query(NoTls).await {
                    return Outcome::Failed(format!("cancel: {}", error_chain(&err)));
                }
                match tokio::time::timeout(STATEMENT_TIMEOUT, &mut execute).await {
                    Ok(result) => result,
                    Err(_) => {
                        return Outcome::Failed(format!(
                            "no answer within {STATEMENT_TIMEOUT:?} after the cancel"
                        ))
                    }
                }
            }
            Err(_) => return Outcome::Failed(format!("no answer within {STATEMENT_TIMEOUT:?}")),
        };
        match result {
            Ok(_) => {
                // The server sends its warning before the command's answer.
                let mut local_only = false;
                while let Ok(notice) = self.notices.try_recv() {
                    local_only |= notice.contains("committed locally");
                }
                Outcome::Acked { local_only }
            }
            Err(err) => Outcome::Failed(error_chain(&err)),
        }
    }
}

async fn pause(stopped: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = stopped.changed() => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn format_errors(errors: &[(Instant, String)], started: Instant, n: usize) -> String {
    let start = errors.len().saturating_sub(n);
    if errors.is_empty() {
        return "(none)".to_string();
    }
    errors[start..]
        .iter()
        .map(|(at, message)| {
            format!(
                "  +{:.3}s {message}",
                at.saturating_duration_since(started).as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the writer saw.
#[derive(Debug, Clone)]
pub struct WriteReport {
    /// Acknowledged writes, in order.
    pub acks: Vec<Ack>,
    /// The most recent errors (at most 200) and when.
    pub errors: Vec<(Instant, String)>,
    pub error_count: u64,
    /// Connections that got as far as writing, in order.
    pub connections: Vec<Connection>,
    pub started: Instant,
}

/// Ids of the acknowledgements that promised durability (not
/// [`Ack::local_only`]).
fn durable_ids(acks: &[Ack]) -> Vec<i64> {
    acks.iter()
        .filter(|ack| !ack.local_only)
        .map(|ack| ack.id)
        .collect()
}

impl WriteReport {
    /// Acknowledged ids, without [`Ack::local_only`] ones.
    pub fn acked_ids(&self) -> Vec<i64> {
        durable_ids(&self.acks)
    }

    /// Acknowledgements that came with the "committed locally" warning.
    pub fn local_only(&self) -> Vec<Ack> {
        self.acks.iter().copied().filter(|a| a.local_only).collect()
    }

    /// Ids acknowledged before `instant` (without [`Ack::local_only`] ones).
    pub fn acked_before(&self, instant: Instant) -> Vec<i64> {
        self.acks
            .iter()
            .filter(|ack| ack.at < instant && !ack.local_only)
            .map(|ack| ack.id)
            .collect()
    }

    /// The write outage around an event (a kill, a failover): from the last
    /// write acknowledged on a connection opened before the event (answers
    /// already in flight at the event count as before it) to the first write
    /// acknowledged on a connection opened after it. Without any such
    /// connection (the event broke nothing), the first ack after the event.
    pub fn outage_around(&self, event: Instant) -> Option<Outage> {
        let opened = |ack: &Ack| self.connections[ack.connection].opened;
        let port = |ack: &Ack| self.connections[ack.connection].server_port;
        let before = self.acks.iter().rev().find(|ack| opened(ack) <= event);
        let after = self
            .acks
            .iter()
            .find(|ack| opened(ack) > event)
            .or_else(|| self.acks.iter().find(|ack| ack.at > event))?;
        Some(Outage {
            event,
            last_ack_before: before.map(|ack| ack.at),
            first_ack_after: after.at,
            port_before: before.and_then(port),
            port_after: port(after),
        })
    }

    /// The longest time between two consecutive acknowledgements after `since`.
    pub fn longest_gap_after(&self, since: Instant) -> Option<Duration> {
        self.acks
            .windows(2)
            .filter(|pair| pair[1].at > since)
            .map(|pair| pair[1].at.saturating_duration_since(pair[0].at))
            .max()
    }

    /// Acknowledged ids that are not in `pgpilot_writes` on `node`.
    pub async fn missing_ids(&self, cluster: &Cluster, node: &str) -> Result<Vec<i64>> {
        cluster.missing_ids(node, &self.acked_ids()).await
    }

    /// Fail, with the cluster's state, unless every acknowledged write is
    /// on `node`.
    pub async fn expect_all_on(&self, cluster: &Cluster, node: &str) -> Result<()> {
        cluster.expect_ids_on(node, &self.acked_ids()).await
    }

    pub fn recent_errors(&self, n: usize) -> String {
        format_errors(&self.errors, self.started, n)
    }
}

/// A gap in acknowledged writes around an event (a kill, a failover).
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub event: Instant,
    pub last_ack_before: Option<Instant>,
    pub first_ack_after: Instant,
    /// The PostgreSQL port that acknowledged the last write before / first after.
    pub port_before: Option<u16>,
    pub port_after: Option<u16>,
}

impl Outage {
    /// Last ack before the event → first ack after it.
    pub fn gap(&self) -> Duration {
        self.first_ack_after
            .saturating_duration_since(self.last_ack_before.unwrap_or(self.event))
    }

    /// The event → first ack after it.
    pub fn since_event(&self) -> Duration {
        self.first_ack_after.saturating_duration_since(self.event)
    }
}

impl fmt::Display for Outage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.3} s between the last acknowledged write before the event (port {}) and the \
             first on a new connection after it (port {}); {:.3} s from the event itself",
            self.gap().as_secs_f64(),
            port_text(self.port_before),
            port_text(self.port_after),
            self.since_event().as_secs_f64()
        )
    }
}

fn port_text(port: Option<u16>) -> String {
    port.map_or_else(|| "?".to_string(), |p| p.to_string())
}

/// `ids` that are not in `present`, in order.
pub fn missing_from(ids: &[i64], present: &HashSet<i64>) -> Vec<i64> {
    ids.iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect()
}
