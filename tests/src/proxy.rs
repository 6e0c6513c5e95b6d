//! [`Proxy`]: a TCP proxy on 127.0.0.1 that injects network faults into one
//! link (e.g. a keeper's link to the monitor), switchable at run time.
//!
//! Modes ([`Mode`]):
//!
//! - `pass` (the default, also [`Proxy::heal`]): bytes flow both ways.
//! - `delay(d)`: every chunk read from either side waits `d` before it is
//!   written to the other side (so a request/answer round trip gains `2·d`).
//! - `drop_new`: new connections are accepted and closed at once (the client
//!   sees end-of-file); established connections keep flowing.
//! - `blackhole`: a cut cable. Established connections stop forwarding bytes
//!   in both directions without being closed; new connections are accepted
//!   (the kernel completes the handshake) but never reach the target. Once
//!   healed, established connections RESUME: the held bytes are delivered and
//!   forwarding goes on, as TCP does when a cable is plugged back in before
//!   either end gave up; new connections held meanwhile are then connected to
//!   the target. An end that gave up meanwhile (a client timeout) closes its
//!   socket, and the proxy closes the other side after the resumed bytes.
//!
//! Bounded: the proxy runs on the tokio runtime it was started on, and
//! dropping the [`Proxy`] ends the accept task and every connection task
//! (their sockets are closed).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Size of one forwarded chunk.
const CHUNK: usize = 16 * 1024;

/// What the proxy does with the bytes and connections of its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Delay(Duration),
    DropNew,
    Blackhole,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Pass => write!(f, "pass"),
            Mode::Delay(d) => write!(f, "delay {d:?} per chunk each way"),
            Mode::DropNew => write!(f, "drop new connections"),
            Mode::Blackhole => write!(f, "blackhole (nothing forwarded, nothing closed)"),
        }
    }
}

/// A running proxy; see the module documentation.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    mode: watch::Sender<Mode>,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listen on a free 127.0.0.1 port and forward to `127.0.0.1:target_port`,
    /// in mode `pass`. Must be called within a tokio runtime.
    pub fn start(target_port: u16) -> Result<Proxy> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the proxy to a free 127.0.0.1 port")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = TcpListener::from_std(listener).context("registering the proxy socket")?;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
        let (mode, mode_rx) = watch::channel(Mode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(listener, target, mode_rx, accepted.clone()));
        Ok(Proxy {
            addr,
            target,
            mode,
            accepted,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Connections accepted so far (also those dropped or held).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn pass(&self) {
        self.set_mode(Mode::Pass);
    }

    pub fn delay(&self, delay: Duration) {
        self.set_mode(Mode::Delay(delay));
    }

    pub fn drop_new(&self) {
        self.set_mode(Mode::DropNew);
    }

    pub fn blackhole(&self) {
        self.set_mode(Mode::Blackhole);
    }

    /// Back to `pass`; black-holed connections resume.
    pub fn heal(&self) {
        self.pass();
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "proxy 127.0.0.1:{} -> {}: {} ({} connections accepted)",
            self.port(),
            self.target,
            self.mode(),
            self.accepted()
        )
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks: aborting it
        // drops the set, which aborts them all. Dropping the mode sender also
        // ends any task waiting for a blackhole to lift.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            result = listener.accept() => {
                let stream = match result {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors or the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                if *mode.borrow() == Mode::DropNew {
                    drop(stream);
                    continue;
                }
                connections.spawn(serve(stream, target, mode.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A connection accepted during a blackhole reaches the target only once
    // it is healed; if it is then dropping new connections, it is dropped.
    let now = match mode.wait_for(|m| *m != Mode::Blackhole).await {
        Ok(m) => *m,
        Err(_) => return,
    };
    if now == Mode::DropNew {
        return;
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::join!(
        pump(client_read, upstream_write, mode.clone()),
        pump(upstream_read, client_write, mode),
    );
}

/// Forward one direction until end-of-file or an error, then half-close.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Hold the chunk (and so everything behind it) while black-holed.
        let now = match mode.wait_for(|m| *m != Mode::Blackhole).await {
            Ok(m) => *m,
            Err(_) => return,
        };
        if let Mode::Delay(delay) = now {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Bound on anything that should happen promptly.
    const DEADLINE: Duration = Duration::from_secs(10);
    /// How long "nothing arrives" is watched for (the measured interval).
    const QUIET: Duration = Duration::from_millis(500);

    /// An echo server on a free port; it ends with the runtime.
    async fn echo_server() -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    async fn connect(port: u16) -> TcpStream {
        tokio::time::timeout(DEADLINE, TcpStream::connect((Ipv4Addr::LOCALHOST, port)))
            .await
            .expect("connecting timed out")
            .expect("connecting failed")
    }

    /// Send `msg` and read the same number of bytes back within `within`.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8], within: Duration) -> Result<Vec<u8>> {
        stream.write_all(msg).await?;
        read_exact_within(stream, msg.len(), within).await
    }

    async fn read_exact_within(
        stream: &mut TcpStream,
        len: usize,
        within: Duration,
    ) -> Result<Vec<u8>> {
        let mut back = vec![0u8; len];
        tokio::time::timeout(within, stream.read_exact(&mut back))
            .await
            .context("no answer in time")??;
        Ok(back)
    }

    /// Whether the peer closed `stream` (end-of-file or reset) within DEADLINE.
    async fn closed_by_peer(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn pass_forwards_both_ways() {
        let proxy = Proxy::start(echo_server().await).unwrap();
        assert_eq!(proxy.mode(), Mode::Pass);
        let mut stream = connect(proxy.port()).await;
        let back = round_trip(&mut stream, b"hello", DEADLINE).await.unwrap();
        assert_eq!(back, b"hello");
        // A larger payload than one chunk.
        let big = vec![7u8; 3 * CHUNK + 5];
        let back = round_trip(&mut stream, &big, DEADLINE).await.unwrap();
        assert_eq!(back, big);
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn delay_is_added_each_way() {
        let proxy = Proxy::start(echo_server().await).unwrap();
        let mut stream = connect(proxy.port()).await;
        round_trip(&mut stream, b"warm", DEADLINE).await.unwrap();
        let delay = Duration::from_millis(300);
        proxy.delay(delay);
        let start = Instant::now();
        let back = round_trip(&mut stream, b"slow", DEADLINE).await.unwrap();
        let took = start.elapsed();
        assert_eq!(back, b"slow");
        assert!(
            took >= 2 * delay,
            "round trip took {took:?}, expected >= {:?}",
            2 * delay
        );
        proxy.heal();
        let start = Instant::now();
        round_trip(&mut stream, b"fast", DEADLINE).await.unwrap();
        assert!(
            start.elapsed() < 2 * delay,
            "still delayed after heal: {:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn drop_new_closes_new_connections_only() {
        let proxy = Proxy::start(echo_server().await).unwrap();
        let mut old = connect(proxy.port()).await;
        round_trip(&mut old, b"before", DEADLINE).await.unwrap();
        proxy.drop_new();
        let mut new = connect(proxy.port()).await;
        assert!(
            closed_by_peer(&mut new).await,
            "a new connection was not closed"
        );
        let back = round_trip(&mut old, b"still", DEADLINE).await.unwrap();
        assert_eq!(back, b"still", "the established connection stopped");
        proxy.heal();
        let mut after = connect(proxy.port()).await;
        assert_eq!(
            round_trip(&mut after, b"again", DEADLINE).await.unwrap(),
            b"again"
        );
    }

    #[tokio::test]
    async fn blackhole_holds_everything_and_heal_resumes() {
        let proxy = Proxy::start(echo_server().await).unwrap();
        let mut old = connect(proxy.port()).await;
        round_trip(&mut old, b"before", DEADLINE).await.unwrap();
        proxy.blackhole();
        // Nothing comes back on the established connection for QUIET, and
        // it is not closed either (the read times out rather than ending).
        assert!(round_trip(&mut old, b"held", QUIET).await.is_err());
        // A new connection is accepted but gets nothing back either.
        let mut new = connect(proxy.port()).await;
        assert!(round_trip(&mut new, b"waiting", QUIET).await.is_err());
        proxy.heal();
        // Both resume: the held bytes arrive, and traffic flows again.
        assert_eq!(
            read_exact_within(&mut old, 4, DEADLINE).await.unwrap(),
            b"held"
        );
        assert_eq!(
            read_exact_within(&mut new, 7, DEADLINE).await.unwrap(),
            b"waiting"
        );
        assert_eq!(
            round_trip(&mut old, b"after", DEADLINE).await.unwrap(),
            b"after"
        );
        assert_eq!(
            round_trip(&mut new, b"after", DEADLINE).await.unwrap(),
            b"after"
        );
    }

    #[tokio::test]
    async fn dropping_the_proxy_ends_everything() {
        let proxy = Proxy::start(echo_server().await).unwrap();
        let port = proxy.port();
        let mut open = connect(port).await;
        round_trip(&mut open, b"x", DEADLINE).await.unwrap();
        let mut held = connect(port).await;
        proxy.blackhole();
        held.write_all(b"held").await.unwrap();
        drop(proxy);
        assert!(
            closed_by_peer(&mut open).await,
            "an established connection outlived the proxy"
        );
        assert!(
            closed_by_peer(&mut held).await,
            "a held connection outlived the proxy"
        );
        let deadline = Instant::now() + DEADLINE;
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .is_err()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy still accepts after being dropped"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
